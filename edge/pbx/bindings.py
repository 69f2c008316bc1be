"""The registrar's memory: the bindings of the AORs this edge holds, and where each really is.

A `LiveBinding` is a stored `Binding` plus what only this process knows: the parsed contact URI
(for RFC 3261 §19.1.4 comparison) and the `Peer` a request to that contact must go to, with the
TCP connection it registered over. That is the NAT map: a phone behind NAT is reached at the
address its REGISTER came from (RFC 3581 `received`/`rport`), over the same connection when it
came over TCP, whatever its Contact says.

Which peer a contact gets (`target_peer`):
- over TCP, the connection the REGISTER came on (the phone's listening port is usually not
  reachable from outside, RFC 5626 §3.3 flows);
- over UDP, the source address when the Contact host is not an IP address (no DNS on this
  path), is the source itself, or is a private address (RFC 1918, 100.64/10 of RFC 6598,
  link-local, loopback, IPv6 ULA/link-local) while the source is another address: the contact
  is "fixed" to the source, and the stored contact keeps its original text;
- otherwise the Contact's own address (a public contact: plain RFC 3261 routing).
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from control.store.models import Binding
from edge.sip.events import Address, Peer
from edge.sip.grammar import format_host, host_key
from edge.sip.uri import SipUri, Uri, uri_equal

_PRIVATE_NETWORKS = tuple(
    ipaddress.ip_network(network)
    for network in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
        "127.0.0.0/8", "fc00::/7", "fe80::/10", "::1/128",
    )
)


def is_private_address(host: str) -> bool:
    """True when `host` is an IP address that is not reachable from the Internet."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _PRIVATE_NETWORKS)


def _is_ip_literal(host: str) -> bool:
    if ":" in host:
        return True
    return host.replace(".", "").isdigit()


def format_source(address: Address) -> str:
    """`ip:port`, IPv6 in brackets (the form `Binding.source` and the locator webhook use)."""
    return f"{format_host(address[0])}:{address[1]}"


def parse_source(text: str) -> Address | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def target_peer(contact: Uri | None, received_on: Peer) -> tuple[Peer, bool]:
    """Where requests to `contact` go, registered from `received_on`; and whether the contact
    was fixed for NAT (module docstring)."""
    if received_on.reliable or not isinstance(contact, SipUri):
        return received_on, False
    host = contact.host
    if not _is_ip_literal(host):
        return received_on, False
    port = contact.port or 5060
    source_host, source_port = received_on.address
    if host_key(host) == host_key(source_host) and port == source_port:
        return received_on, False
    if is_private_address(host):
        return received_on, True
    transport = (contact.transport or "udp").upper()
    return Peer(transport=transport, address=(host, port)), False


def peer_from_binding(binding: Binding, contact: Uri | None) -> Peer:
    """The peer of a binding known only from the store (another edge's, or from before a
    restart): its recorded source, else the contact's own address."""
    source = parse_source(binding.source) if binding.source else None
    if source is not None:
        return Peer(transport=binding.transport or "UDP", address=source)
    if isinstance(contact, SipUri):
        transport = (contact.transport or binding.transport or "udp").upper()
        return Peer(transport=transport, address=(contact.host, contact.port or 5060))
    return Peer(transport=binding.transport or "UDP", address=("", 0))


@dataclass(slots=True)
class LiveBinding:
    """A binding with its parsed contact and the peer that reaches it."""

    binding: Binding
    uri: Uri | None
    peer: Peer
    nat_fixed: bool = False

    def matches(self, contact: str, uri: Uri | None, instance_id: str, reg_id: int | None) -> bool:
        """Whether a Contact of a new REGISTER names this binding.

        RFC 5626 §6: with `+sip.instance` and `reg-id` the pair identifies the binding (the
        phone's address may have changed); otherwise the URIs are compared (RFC 3261 §10.3
        step 7, §19.1.4).
        """
        mine = self.binding
        if instance_id and reg_id is not None:
            return mine.instance_id == instance_id and mine.reg_id == reg_id
        if mine.contact == contact:
            return True
        if uri is None or self.uri is None:
            return False
        return uri_equal(uri, self.uri)


@dataclass(slots=True, frozen=True, kw_only=True)
class Target:
    """Where a request for an AOR goes: one per current binding.

    `contact` is the registered contact URI (the new request's Request-URI); `peer` where to
    send it (through `path`, RFC 3327, when the binding has one: the B2BUA then routes to the
    first Path URI). `local` is False when another edge (`edge_id`) holds the binding's NAT
    mapping or connection.
    """

    aor: str
    contact: str
    peer: Peer
    q: float
    path: tuple[str, ...]
    edge_id: str
    local: bool
    instance_id: str
    reg_id: int | None
    expires_at: float
    nat_fixed: bool


class BindingCache:
    """AOR -> its current bindings, for the AORs whose REGISTERs this edge handled."""

    def __init__(self) -> None:
        self._aors: dict[str, list[LiveBinding]] = {}

    def __len__(self) -> int:
        return len(self._aors)

    def __contains__(self, aor: object) -> bool:
        return aor in self._aors

    def __iter__(self) -> Iterator[str]:
        return iter(self._aors)

    def get(self, aor: str) -> list[LiveBinding] | None:
        return self._aors.get(aor)

    def put(self, aor: str, bindings: list[LiveBinding]) -> None:
        if bindings:
            self._aors[aor] = bindings
        else:
            self._aors.pop(aor, None)

    def discard(self, aor: str) -> None:
        self._aors.pop(aor, None)

    def remove_binding(self, aor: str, contact: str) -> None:
        bindings = self._aors.get(aor)
        if bindings is None:
            return
        kept = [live for live in bindings if live.binding.contact != contact]
        self.put(aor, kept)


class KeyedLocks:
    """One lock per key (an AOR's read-modify-write), existing only while someone holds it.

    Nearly every acquisition finds its key free: that costs one dict entry and no lock object.
    Only a second holder of a busy key waits, on a future, in arrival order; the holder's
    release hands the key straight to the first waiter still waiting.
    """

    def __init__(self) -> None:
        # held key -> its waiters (None until a second holder turns up)
        self._held: dict[str, deque[asyncio.Future[None]] | None] = {}

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, key: str) -> _Held:
        return _Held(self, key)

    async def _acquire(self, key: str) -> None:
        held = self._held
        if key not in held:
            held[key] = None
            return
        waiters = held[key]
        if waiters is None:
            waiters = held[key] = deque()
        waiter = asyncio.get_running_loop().create_future()
        waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(key)  # the key was handed over as we were cancelled: pass it on
            elif waiter in waiters:
                waiters.remove(waiter)
            raise

    def _release(self, key: str) -> None:
        waiters = self._held[key]
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the key stays held, by that waiter now
                return
        del self._held[key]


class _Held:
    __slots__ = ("_key", "_locks")

    def __init__(self, locks: KeyedLocks, key: str) -> None:
        self._locks = locks
        self._key = key

    async def __aenter__(self) -> None:
        held = self._locks._held
        if self._key not in held:  # free: taken at once (what `_acquire` does first)
            held[self._key] = None
            return
        await self._locks._acquire(self._key)

    async def __aexit__(self, *exc_info: object) -> None:
        self._locks._release(self._key)
