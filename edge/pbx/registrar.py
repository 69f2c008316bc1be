"""The registrar (RFC 3261 §10.3): REGISTER adds, refreshes, removes and lists bindings.

Steps, in the RFC's order: the Request-URI must name a domain served here (404; with no realms
configured every domain is, and the AOR keeps the To host as written); the request is
authenticated (401 challenge, 403...); the AOR comes from To (`aor_key`: scheme, user and host,
host lower-cased, no port and no parameters; a registration to one of our own addresses counts
for the first realm); `Contact: *` needs `Expires: 0` and no other Contact (400); each contact's
expiry is its `expires` parameter, else the Expires header, else `registrar_expires`; one below
`min_registrar_expires` (but not 0) is refused with 423 and Min-Expires, one above
`max_registrar_expires` is shortened. For a contact already bound, the same Call-ID with a CSeq
not higher aborts the whole request (§10.3 step 7: "the update MUST be aborted and the request
fails"; 500, as for any failed commit) and a different Call-ID replaces the binding. More than
`max_contacts_per_aor` bindings is refused with 403. Path (RFC 3327) and `+sip.instance` /
`reg-id` (RFC 5626; the pair identifies a binding whatever its URI) are stored; the 200 lists
every binding of the AOR with its remaining expiry and a Date header, and echoes Path when the
client supports it. A REGISTER without Contact lists the bindings (§10.2.3).

State: the `RegistrationStore` holds the bindings (with expiry, source address, transport, user
agent and this edge's id); this edge keeps the AORs it registered in memory (`BindingCache`)
with the NAT map, so a refresh costs one store round trip (the writes, done concurrently), and
the first REGISTER of an AOR one more (the read). The in-memory view is authoritative for the
AORs it holds when one edge owns its users (the embedded default); with several edges sharing
the store set `cache_authoritative=False` and every REGISTER and lookup reads the store first.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Protocol

from control.store.errors import StoreError
from control.store.models import Binding
from control.store.ports import RegistrationStore
from edge.pbx.auth import Authenticated, AuthOutcome, Drop, outcome_response
from edge.pbx.bindings import (
    BindingCache,
    KeyedLocks,
    LiveBinding,
    Target,
    format_source,
    peer_from_binding,
    target_peer,
)
from edge.pbx.core import SipTransport
from edge.sip.address import NameAddr, parse_contact
from edge.sip.errors import SipParseError
from edge.sip.events import Peer, RequestReceived
from edge.sip.grammar import escape, format_host, host_key, unquote
from edge.sip.message import Request, Response, make_response
from edge.sip.uri import SipUri, Uri, parse_uri

log = logging.getLogger("sdpbx.pbx.registrar")

MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 §20.19: larger values are taken as this
_MAX_AORS = 65_536
_USER_SAFE = "&=+$,;?/"  # RFC 3261 §25.1 user-unreserved: not escaped in a canonical AOR
_MAX_USER_AGENT = 256


class LocatorNotifier(Protocol):
    """The locator webhook (`edge.pbx.locator.LocatorNotifier`): every call returns at once."""

    def registered(self, binding: Binding) -> None: ...
    def unregistered(self, binding: Binding) -> None: ...
    def offline(self, bindings: Sequence[Binding]) -> None: ...


class Authenticator(Protocol):
    """`edge.pbx.auth.DigestAuthenticator`, as the registrar uses it."""

    async def authenticate(
        self, request: Request, peer: Peer, now: float, *, monotonic: float | None = None
    ) -> AuthOutcome: ...


def aor_key(uri: SipUri, host: str | None = None) -> str:
    """The canonical AOR of `uri` (RFC 3261 §10.3 step 5): scheme and host lower-cased, the
    user unescaped then written in one canonical escaping, no port, no parameters.

    `host` replaces the URI's host (the registrar maps its own addresses to its realm).
    """
    user = uri.user
    where = format_host(host if host is not None else host_key(uri.host))
    scheme = "sips" if uri.scheme.lower() == "sips" else "sip"
    if user is None:
        return f"{scheme}:{where}"
    if not user.isalnum():
        user = escape(user, _USER_SAFE)
    return f"{scheme}:{user}@{where}"


class Registrar:
    """The REGISTER handler (`edge.pbx.core.RequestHandler`); see the module docstring.

    `realms` are the domains served (empty: any); `local_hosts` this edge's own addresses
    (a REGISTER to `sip:203.0.113.7` is for the first realm). `wall_clock` gives Unix time.
    """

    def __init__(
        self,
        transport: SipTransport,
        *,
        store: RegistrationStore,
        authenticator: Authenticator | None,
        notifier: LocatorNotifier | None = None,
        edge_id: str,
        wall_clock: Callable[[], float],
        realms: Sequence[str] = (),
        local_hosts: Iterable[str] = (),
        default_expires: int = 3600,
        min_expires: int = 60,
        max_expires: int = 7200,
        max_contacts: int = 10,
        cache_authoritative: bool = True,
        token: Callable[[], str] | None = None,
    ) -> None:
        self._transport = transport
        self._store = store
        self._auth = authenticator
        self._notifier = notifier
        self.edge_id = edge_id
        self._wall_clock = wall_clock
        self._realms = tuple(realms)
        self._realm_hosts = {realm.lower(): realm.lower() for realm in self._realms}
        self._local_hosts = frozenset(host_key(host.strip("[]")) for host in local_hosts)
        # Without realms every domain is served (the Request-URI is not checked).
        self._served = (
            frozenset(self._realm_hosts) | self._local_hosts if self._realms else frozenset()
        )
        self._default_expires = default_expires
        self._min_expires = min_expires
        self._max_expires = max_expires
        self._max_contacts = max_contacts
        self._authoritative = cache_authoritative
        self._token = token or (lambda: secrets.token_hex(6))
        self.cache = BindingCache()
        self._locks = KeyedLocks()
        self._date: tuple[int, str] = (-1, "")
        # To URI text -> its AOR key: a phone registers the same AOR again and again.
        # Bounded; cleared whole when full.
        self._aors: dict[str, str] = {}

    # ------------------------------------------------------------------ the handler

    async def handle(self, event: RequestReceived) -> None:
        request = event.request
        transaction_id = event.transaction_id
        if transaction_id is None:
            return
        try:
            response = await self._register(request, event.peer)
        except SipParseError as exc:
            response = make_response(request, exc.status, exc.reason, to_tag=self._token())
        except StoreError as failure:  # not `exc` again: mypyc types a name once per function
            log.warning(
                "registration store failed: %s", type(failure).__name__,
                extra={"call_id": request.headers.get("Call-ID"), "reason": str(failure)},
            )
            response = make_response(
                request, 500, "Registration store unavailable", to_tag=self._token(),
                headers=[("Retry-After", "5")],
            )
        if response is None:
            self._transport.drop(transaction_id)
            return
        self._transport.respond(transaction_id, response)

    async def _register(self, request: Request, peer: Peer) -> Response | None:
        target = request.request_uri
        if not isinstance(target, SipUri):
            raise SipParseError("REGISTER needs a sip or sips Request-URI", 416)
        if self._served and host_key(target.host) not in self._served:
            return self._reply(request, 404, "Domain not served here")
        now = self._wall_clock()
        if self._auth is not None:
            outcome = await self._auth.authenticate(
                request, peer, now, monotonic=self._transport.now()
            )
            if isinstance(outcome, Drop):
                return None
            if not isinstance(outcome, Authenticated):
                return outcome_response(request, outcome, self._token())
        to_uri = request.to_addr.uri
        if not isinstance(to_uri, SipUri):
            return self._reply(request, 404, "Not a SIP address-of-record")
        if to_uri.user is None:
            return self._reply(request, 400, "To URI has no user part")
        to_text = str(to_uri)
        aor = self._aors.get(to_text)
        if aor is None:
            aor = self.aor_for(to_uri)
            if aor is not None:
                if len(self._aors) >= _MAX_AORS:
                    self._aors.clear()
                self._aors[to_text] = aor
        if aor is None:
            return self._reply(request, 404, "Address-of-record not in a domain served here")

        values = request.headers.get_all("Contact")
        expires_header = _expires_header(request)
        if not values:
            # §10.2.3: no Contact is a query; the 200 lists the current bindings.
            return self._ok(request, aor, await self._load(aor, now), now)
        contacts = [parse_contact(value) for value in values]
        if any(type(contact) is str for contact in contacts):  # "*"
            if len(contacts) != 1 or expires_header != 0:
                return self._reply(request, 400, "Contact * needs Expires: 0 and no other Contact")
            async with self._locks.hold(aor):
                return await self._remove_all(request, aor, now)
        wanted: list[tuple[NameAddr, int]] = []
        for contact in contacts:
            assert isinstance(contact, NameAddr)
            requested = _contact_expires(contact)
            if requested is None:
                requested = expires_header if expires_header is not None else self._default_expires
            if 0 < requested < self._min_expires:
                # §10.3 step 7 / §21.4.17: too brief; tell the client the floor.
                return self._reply(
                    request, 423, headers=[("Min-Expires", str(self._min_expires))]
                )
            wanted.append((contact, min(requested, self._max_expires)))
        async with self._locks.hold(aor):
            return await self._update(request, peer, aor, wanted, now)

    # ------------------------------------------------------------------ AORs

    def aor_for(self, uri: Uri) -> str | None:
        """The AOR key of `uri` as this registrar files it, or None when its domain is not
        served here (B2BUA: pass a Request-URI to find the registered user)."""
        if not isinstance(uri, SipUri):
            return None
        host = host_key(uri.host)
        if self._realm_hosts:
            realm = self._realm_hosts.get(host)
            if realm is None:
                if host not in self._local_hosts:
                    return None
                realm = self._realm_hosts[self._realms[0].lower()]
            host = realm
        return aor_key(uri, host)

    # ------------------------------------------------------------------ binding updates

    async def _update(
        self,
        request: Request,
        peer: Peer,
        aor: str,
        wanted: list[tuple[NameAddr, int]],
        now: float,
    ) -> Response:
        call_id = request.call_id
        cseq = request.cseq.seq
        before = self._cached(aor, now)
        if before is None:
            before = await self._load(aor, now)
        current = list(before)
        puts: list[LiveBinding] = []
        removed: list[Binding] = []
        fresh: dict[int, Binding | None] = {}  # id of a binding made here -> its origin
        user_agent = (request.headers.get("User-Agent") or "")[:_MAX_USER_AGENT]
        path = tuple(request.headers.get_all("Path"))
        source = format_source(peer.address)
        for contact, expires in wanted:
            uri = contact.uri
            text = str(uri)
            instance_id, reg_id = _outbound_params(contact)
            index = next(
                (i for i, live in enumerate(current)
                 if live.matches(text, uri, instance_id, reg_id)),
                None,
            )
            existing = current[index].binding if index is not None else None
            # The stored binding this contact updates (None: a new binding).
            origin: Binding | None = None
            if existing is not None:
                assert index is not None
                del current[index]
                if id(existing) in fresh:
                    # The same contact twice in this request: the last one counts.
                    puts = [live for live in puts if live.binding is not existing]
                    origin = fresh.pop(id(existing))
                else:
                    if existing.call_id == call_id and cseq <= existing.cseq:
                        return self._out_of_order(request, aor, existing)
                    origin = existing
            if expires == 0:
                if origin is not None:
                    removed.append(origin)
                continue
            q = contact.q
            binding = Binding(
                aor=aor,
                contact=text,
                expires_at=now + expires,
                q=1.0 if q is None else q,
                call_id=call_id,
                cseq=cseq,
                source=source,
                transport=peer.transport,
                user_agent=user_agent,
                edge_id=self.edge_id,
                path=path,
                instance_id=instance_id,
                reg_id=reg_id,
                registered_at=existing.registered_at if existing is not None else now,
            )
            if origin is not None and origin.contact != text:
                removed.append(origin)  # matched by instance and reg-id: another store key
                origin = None
            fresh[id(binding)] = origin
            target, fixed = target_peer(uri, peer)
            live = LiveBinding(binding=binding, uri=uri, peer=target, nat_fixed=fixed)
            current.append(live)
            puts.append(live)
        if len(current) > self._max_contacts and len(current) > len(before):
            log.info(
                "registration refused: too many contacts",
                extra={"aor": aor, "contacts": len(current), "max": self._max_contacts},
            )
            return self._reply(
                request, 403, f"Too many contacts (at most {self._max_contacts} per AOR)"
            )
        # A contact re-bound in this request is written, not removed (its key did not change).
        written = {live.binding.contact for live in puts}
        removed = [b for b in removed if b.contact not in written]
        operations: list[Awaitable[None]] = [self._store.put(live.binding) for live in puts]
        operations += [self._store.remove(aor, b.contact) for b in removed]
        await self._commit(aor, operations)
        self.cache.put(aor, current)
        notifier = self._notifier
        if notifier is not None:
            for live in puts:
                notifier.registered(live.binding)
            for binding in removed:
                notifier.unregistered(binding)
        return self._ok(request, aor, current, now)

    async def _remove_all(self, request: Request, aor: str, now: float) -> Response:
        call_id = request.call_id
        cseq = request.cseq.seq
        current = await self._load(aor, now)
        for live in current:
            # §10.3 step 6: a binding of this Call-ID is removed only by a higher CSeq.
            if live.binding.call_id == call_id and cseq <= live.binding.cseq:
                return self._out_of_order(request, aor, live.binding)
        await self._commit(aor, [self._store.remove_all(aor)])
        self.cache.discard(aor)
        if self._notifier is not None:
            for live in current:
                self._notifier.unregistered(live.binding)
        return self._ok(request, aor, [], now)

    async def _commit(self, aor: str, operations: list[Awaitable[None]]) -> None:
        """Run the store writes concurrently (one round trip); on failure forget the cached
        AOR, since some writes may have landed: the next REGISTER re-reads the store."""
        try:
            if len(operations) == 1:
                await operations[0]
            elif operations:
                results = await asyncio.gather(*operations, return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result
        except BaseException:
            self.cache.discard(aor)
            raise

    def _out_of_order(self, request: Request, aor: str, existing: Binding) -> Response:
        log.info(
            "registration refused: CSeq not higher than the binding's for this Call-ID",
            extra={"aor": aor, "call_id": existing.call_id, "cseq": existing.cseq},
        )
        return self._reply(request, 500, "Out-of-order CSeq for this Call-ID")

    def _cached(self, aor: str, now: float) -> list[LiveBinding] | None:
        """`_load` when it needs no store read (this edge holds the AOR); else None."""
        cached = self.cache.get(aor)
        if cached is not None and self._authoritative:
            return [live for live in cached if live.binding.expires_at > now]
        return None

    async def _load(self, aor: str, now: float) -> list[LiveBinding]:
        """The AOR's unexpired bindings: from memory when this edge holds the AOR, else from
        the store (with the NAT peers this edge knows for its own bindings)."""
        cached = self.cache.get(aor)
        if cached is not None and self._authoritative:
            return [live for live in cached if live.binding.expires_at > now]
        stored = await self._store.bindings(aor, now)
        known = {live.binding.contact: live for live in cached or ()}
        out: list[LiveBinding] = []
        for binding in stored:
            mine = known.get(binding.contact)
            if mine is not None and binding.edge_id == self.edge_id:
                out.append(LiveBinding(binding=binding, uri=mine.uri, peer=mine.peer,
                                       nat_fixed=mine.nat_fixed))
                continue
            uri = _parse_or_none(binding.contact)
            out.append(LiveBinding(binding=binding, uri=uri,
                                   peer=peer_from_binding(binding, uri)))
        return out

    # ------------------------------------------------------------------ responses

    def _ok(
        self, request: Request, aor: str, bindings: Sequence[LiveBinding], now: float
    ) -> Response:
        headers: list[tuple[str, str]] = []
        for live in _ordered(bindings):
            binding = live.binding
            value = f"<{binding.contact}>;expires={binding.remaining(now)}"
            if binding.q != 1.0:
                value += f";q={_format_q(binding.q)}"
            if binding.instance_id:
                value += f';+sip.instance="{binding.instance_id}"'
            if binding.reg_id is not None:
                value += f";reg-id={binding.reg_id}"
            headers.append(("Contact", value))
        headers.append(("Date", self._http_date(now)))
        if "Path" in request.headers and "path" in _option_tags(request):
            # RFC 3327 §5.3: the registrar echoes Path to a client that supports it.
            headers.extend(("Path", value) for value in request.headers.get_lines("Path"))
        return make_response(request, 200, to_tag=self._token(), headers=headers)

    def _reply(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        return make_response(request, status, reason, to_tag=self._token(), headers=headers)

    def _http_date(self, now: float) -> str:
        # RFC 3261 §20.17: the rfc1123-date form, always GMT; computed once per second.
        second = int(now)
        if self._date[0] != second:
            self._date = (second, email.utils.formatdate(second, usegmt=True))
        return self._date[1]

    # ------------------------------------------------------------------ for the B2BUA and the lead

    async def lookup(self, aor: str | Uri) -> list[Target]:
        """Where requests for `aor` (an AOR key or a URI) go now: one target per unexpired
        binding, highest q first, then the most recently registered."""
        key = aor if isinstance(aor, str) else self.aor_for(aor)
        if key is None:
            return []
        now = self._wall_clock()
        return [
            Target(
                aor=key,
                contact=live.binding.contact,
                peer=live.peer,
                q=live.binding.q,
                path=live.binding.path,
                edge_id=live.binding.edge_id,
                local=live.binding.edge_id == self.edge_id,
                instance_id=live.binding.instance_id,
                reg_id=live.binding.reg_id,
                expires_at=live.binding.expires_at,
                nat_fixed=live.nat_fixed,
            )
            for live in _ordered(await self._load(key, now))
        ]

    async def sweep(self, now: float, *, batch: int = 500, max_batches: int = 20) -> list[Binding]:
        """Remove this edge's bindings that expired before `now` (Unix time) and report them to
        the locator notifier as one `offline` batch; returns them. Run every few seconds."""
        gone: list[Binding] = []
        for _ in range(max_batches):
            expired = await self._store.expired(self.edge_id, now, batch)
            if not expired:
                break
            removed = await asyncio.gather(*(self._expire(b, now) for b in expired))
            gone.extend(b for b, done in zip(expired, removed, strict=True) if done)
            if len(expired) < batch or not any(removed):
                break
        if gone and self._notifier is not None:
            self._notifier.offline(gone)
        if gone:
            log.info("bindings expired", extra={"count": len(gone)})
        return gone

    async def _expire(self, binding: Binding, now: float) -> bool:
        async with self._locks.hold(binding.aor):
            cached = self.cache.get(binding.aor)
            if cached is not None:
                for live in cached:
                    if live.binding.contact == binding.contact and live.binding.expires_at > now:
                        return False  # refreshed after the store listed it
            try:
                await self._store.remove(binding.aor, binding.contact)
            except StoreError as exc:
                log.warning("could not remove an expired binding: %s", type(exc).__name__,
                            extra={"aor": binding.aor})
                return False
            self.cache.remove_binding(binding.aor, binding.contact)
            return True


# --- helpers --------------------------------------------------------------------------------


def _delta_seconds(value: str, what: str) -> int:
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise SipParseError(f"malformed {what}: not delta-seconds")
    # RFC 3261 §20.19: larger than 2**32-1 means 2**32-1 (RFC 4475 §3.1.2.4: however long).
    return min(int(value), MAX_DELTA_SECONDS) if len(value) <= 12 else MAX_DELTA_SECONDS


def _expires_header(request: Request) -> int | None:
    value = request.headers.get("Expires")
    return None if value is None else _delta_seconds(value, "Expires")


def _contact_expires(contact: NameAddr) -> int | None:
    value = contact.param("expires")
    return None if value is None else _delta_seconds(value, "Contact expires")


def _outbound_params(contact: NameAddr) -> tuple[str, int | None]:
    """`+sip.instance` (unquoted) and `reg-id` of a Contact (RFC 5626 §4.1)."""
    instance = contact.param("+sip.instance")
    if instance:
        instance = unquote(instance) if instance.startswith('"') else instance
    reg_id_text = contact.param("reg-id")
    reg_id: int | None = None
    if reg_id_text is not None:
        if not reg_id_text.isascii() or not reg_id_text.isdigit() or len(reg_id_text) > 10:
            raise SipParseError("malformed Contact: reg-id is not a number")
        reg_id = int(reg_id_text)
    return instance or "", reg_id


def _ordered(bindings: Sequence[LiveBinding]) -> list[LiveBinding]:
    if len(bindings) < 2:
        return list(bindings)
    return sorted(
        bindings, key=lambda live: (-live.binding.q, -live.binding.registered_at)
    )


def _format_q(q: float) -> str:
    return f"{q:.3f}".rstrip("0").rstrip(".") if q not in (0.0, 1.0) else str(int(q))


def _option_tags(request: Request) -> set[str]:
    return {tag.strip().lower() for tag in request.headers.get_all("Supported")}


def _parse_or_none(text: str) -> Uri | None:
    try:
        return parse_uri(text)
    except SipParseError:
        return None
