"""Test kit for the PBX layer: a real `SipEndpoint` + `PbxCore` wired to the registrar through
an in-memory transport, an in-memory `RegistrationStore`, and a SIP client's helpers (REGISTER
builder, digest answers). No sockets; the clocks are floats the test moves."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from control.store.errors import StoreUnavailable
from control.store.models import Binding
from edge.pbx.core import PbxCore
from edge.pbx.registrar import Registrar
from edge.sip.digest import build_authorization, parse_challenge
from edge.sip.endpoint import EndpointConfig, SipEndpoint
from edge.sip.events import Address, Peer, Transmit
from edge.sip.message import Request, Response, parse_message

PBX: Address = ("127.0.0.1", 5060)
PHONE: Address = ("192.0.2.10", 5060)
T0 = 1_800_000_000.0  # a Unix time: nonces and binding expiries are wall-clock based


class Clock:
    """A settable clock (Unix seconds)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class MemoryRegistrationStore:
    """A `RegistrationStore` in a dict, counting calls (round trips) by method."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Binding]] = {}
        self.calls: dict[str, int] = {}
        self.fail = False

    def _call(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1
        if self.fail:
            raise StoreUnavailable(f"{name} failed (test)")

    async def bindings(self, aor: str, now: float) -> list[Binding]:
        self._call("bindings")
        found = [b for b in self.data.get(aor, {}).values() if b.expires_at > now]
        return sorted(found, key=lambda b: -b.q)

    async def put(self, binding: Binding) -> None:
        self._call("put")
        self.data.setdefault(binding.aor, {})[binding.contact] = binding

    async def remove(self, aor: str, contact: str) -> None:
        self._call("remove")
        self.data.get(aor, {}).pop(contact, None)

    async def remove_all(self, aor: str) -> None:
        self._call("remove_all")
        self.data.pop(aor, None)

    async def expired(self, edge_id: str, now: float, limit: int = 500) -> list[Binding]:
        self._call("expired")
        out = [
            b for bindings in self.data.values() for b in bindings.values()
            if b.edge_id == edge_id and b.expires_at <= now
        ]
        return out[:limit]

    async def count(self, now: float) -> int:
        self._call("count")
        return sum(1 for bs in self.data.values() for b in bs.values() if b.expires_at > now)

    def all(self, aor: str) -> list[Binding]:
        return list(self.data.get(aor, {}).values())


@dataclass
class RecordingNotifier:
    events: list[tuple[str, list[Binding]]] = field(default_factory=list)

    def registered(self, binding: Binding) -> None:
        self.events.append(("registered", [binding]))

    def unregistered(self, binding: Binding) -> None:
        self.events.append(("unregistered", [binding]))

    def offline(self, bindings: Sequence[Binding]) -> None:
        self.events.append(("offline", list(bindings)))

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.events]


class EndpointTransport:
    """`SipTransport` over a sans-IO endpoint; records responses in the order they are sent."""

    def __init__(self, endpoint: SipEndpoint, clock: Clock) -> None:
        self.endpoint = endpoint
        self.clock = clock
        self.responded: list[Response] = []
        self.dropped: list[int] = []

    def respond(self, transaction_id: int, response: Response) -> None:
        self.responded.append(response)
        self.endpoint.respond(transaction_id, response, self.clock())

    def send_request(self, request: Request, peer: Peer) -> int:
        return self.endpoint.send_request(request, peer, self.clock())

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        self.endpoint.send_stateless(message, peer)

    def now(self) -> float:
        return self.clock()

    def drop(self, transaction_id: int) -> None:
        self.dropped.append(transaction_id)


class Harness:
    """Endpoint + core + registrar; `send()` delivers a request and returns what went out."""

    def __init__(self, build: Callable[[EndpointTransport], Registrar], clock: Clock) -> None:
        counter = itertools.count(1)
        self.clock = clock
        self.endpoint = SipEndpoint(
            EndpointConfig(methods=("REGISTER",), supported=("path",)),
            token=lambda: f"tok{next(counter)}",
        )
        self.endpoint.set_local_addresses(udp=PBX, tcp=PBX)
        self.transport = EndpointTransport(self.endpoint, clock)
        self.registrar = build(self.transport)
        self.core = PbxCore(self.transport, {"REGISTER": self.registrar})
        self._connections: dict[int, Address] = {}

    def feed(
        self, data: bytes, source: Address = PHONE, *, connection: int | None = None
    ) -> None:
        """Deliver bytes from `source` (over TCP `connection` when given); start the handlers."""
        if connection is None:
            self.endpoint.receive_datagram(data, source, self.clock())
        else:
            if connection not in self._connections:
                self.endpoint.connection_made(connection, source)
                self._connections[connection] = source
            self.endpoint.receive_stream_data(connection, data, self.clock())
        while (event := self.endpoint.next_event()) is not None:
            self.core.on_event(event)

    async def settle(self) -> None:
        while self.core._tasks:
            await asyncio.gather(*list(self.core._tasks))

    def sent(self) -> list[tuple[Response, Peer]]:
        out: list[tuple[Response, Peer]] = []
        for item in self.endpoint.outputs():
            assert isinstance(item, Transmit)
            message = parse_message(item.data)
            assert isinstance(message, Response)
            out.append((message, item.peer))
        return out

    async def send(
        self, data: bytes, source: Address = PHONE, *, connection: int | None = None
    ) -> Response | None:
        """Deliver a request; the one response sent back (None if nothing was sent)."""
        self.feed(data, source, connection=connection)
        await self.settle()
        sent = [response for response, _peer in self.sent() if response.status >= 200]
        assert len(sent) <= 1, sent
        return sent[0] if sent else None


_branches = itertools.count(1)


def register(
    *,
    user: str = "alice",
    domain: str = "pbx.test",
    uri: str | None = None,
    contacts: Sequence[str] | None = ("<sip:alice@192.0.2.10:5060>",),
    call_id: str = "reg-1@phone",
    cseq: int = 1,
    expires: int | str | None = None,
    via: str = "192.0.2.10:5060",
    transport: str = "UDP",
    extra: Sequence[str] = (),
) -> bytes:
    """A REGISTER as a phone sends it (one Contact line per entry of `contacts`)."""
    lines = [
        f"REGISTER {uri or f'sip:{domain}'} SIP/2.0",
        f"Via: SIP/2.0/{transport} {via};branch=z9hG4bK-reg-{next(_branches)};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@{domain}>;tag=ft-{call_id.replace('@', '.')}",
        f"To: <sip:{user}@{domain}>",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} REGISTER",
        *(f"Contact: {contact}" for contact in contacts or ()),
        *([f"Expires: {expires}"] if expires is not None else []),
        "User-Agent: TestPhone/1.0",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return "\r\n".join(lines).encode()


def answer(
    response: Response,
    *,
    user: str,
    password: str,
    uri: str,
    method: str = "REGISTER",
    algorithm: str = "SHA-256",
    nc: int = 1,
    cnonce: str = "0a4f113b",
    nonce: str | None = None,
) -> str:
    """The Authorization (or Proxy-Authorization) header line answering `response`'s challenge
    for `algorithm` (as `edge.sip.digest.build_authorization` writes it)."""
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    challenges = [parse_challenge(value) for value in response.headers.get_lines(name)]
    challenge = next(c for c in challenges if (c.algorithm or "MD5") == algorithm)
    if nonce is not None:
        challenge = replace(challenge, nonce=nonce)
    credentials = build_authorization(
        challenge, method=method, uri=uri, username=user, password=password, cnonce=cnonce,
        nc=nc,
    )
    header = "Authorization" if response.status == 401 else "Proxy-Authorization"
    return f"{header}: {credentials.to_header()}"


def contacts_of(response: Response) -> list[str]:
    return response.headers.get_all("Contact")
