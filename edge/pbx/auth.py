"""Digest authentication of incoming requests (RFC 3261 §22, RFC 7616, RFC 8760).

`DigestAuthenticator.authenticate(request, peer, now)` decides one of four outcomes:
`Authenticated` (with the user), `Challenge` (401 for REGISTER, 407 otherwise, offering SHA-256
then MD5 in two headers, RFC 8760 §2.4), `Rejected` (a final status: 400, 402, 403, 503) or
`Drop` (answer nothing). `outcome_response` turns the last three into the SIP response.

Nonces are stateless (RFC 7616 §3.3, §5.4): any edge holding the secret can check one. Format:

    nonce = base64url_nopad( issued_at ‖ random ‖ mac )           (43 characters)
    issued_at = Unix seconds, 8 bytes big-endian;  random = 8 bytes
    mac = HMAC-SHA256(secret, "sdpbx-nonce-1" ‖ issued_at ‖ random ‖ realm)[:16]

The MAC is checked in constant time and only the canonical encoding is accepted (base64 has
spare bits: four spellings would otherwise name one nonce). A nonce older than
`nonce_lifetime_s` is stale: with a correct response the client gets a new challenge with
`stale=true`, so it retries without asking its user for the password again.

Nonce-count replay (RFC 7616 §3.4: "if the same nc-value is seen twice, then the request is a
replay"): the highest nc accepted per nonce is remembered in a bounded LRU map whose entries die
with their nonce. Only a fully verified request updates it, so a forged request can never move a
legitimate client's count. A repeated or lower nc with a *correct* response is answered with a
fresh challenge with `stale=true` and is not counted as a brute-force failure: the response
proves the password (RFC 7616 §3.3 sets stale exactly when "the nonce is invalid but with a valid
digest for that nonce"), a replaying attacker cannot answer the new nonce, and an honest client
that reuses a nonce with a stale count (a known client bug) recovers in one round trip instead
of prompting its user. A request without qop (RFC 2069 form) has no nc: its nonce is single use.
If the map has to forget a live nonce for room, nonces issued up to that one are treated as
replayed (stale), so pressure on the map never re-opens a replay.

Realm: with `[proxy] realms`, the host of the To URI (REGISTER) or From URI (other methods) when
it is one of them, else the first realm. Without realms, that host itself (there is no other
name for the domain), so a realm is never chosen by a peer when realms are configured.

Unknown users and wrong passwords are indistinguishable to the peer (both re-challenge) and both
count as failures for the brute-force guard. A nonce that is not ours (bad MAC, another secret)
is re-challenged without asking any user backend and without counting a failure. Passwords and
HA1s never appear in logs: username, realm, source and outcome do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from edge.pbx.users import LookupResult, Refused, Unavailable, UserRecord
from edge.sip.digest import (
    DigestCredentials,
    UnsupportedSchemeError,
    canonical_algorithm,
    parse_credentials,
    verify_credentials,
)
from edge.sip.errors import SipParseError
from edge.sip.events import Peer
from edge.sip.grammar import host_key
from edge.sip.message import Request, Response, make_response
from edge.sip.uri import SipUri, parse_uri, uri_equal

log = logging.getLogger("sdpbx.pbx.auth")

DEFAULT_ALGORITHMS: tuple[str, ...] = ("SHA-256", "MD5")  # RFC 8760 §2.4: strongest first


# --- outcomes -------------------------------------------------------------------------------


@dataclass(slots=True, frozen=True, kw_only=True)
class Authenticated:
    user: UserRecord
    username: str
    realm: str


@dataclass(slots=True, frozen=True, kw_only=True)
class Challenge:
    """Answer `status` (401 or 407) with `headers` (one challenge per algorithm)."""

    status: int
    headers: tuple[tuple[str, str], ...]
    stale: bool = False


@dataclass(slots=True, frozen=True, kw_only=True)
class Rejected:
    """Answer a final `status` (400, 402, 403, 503) with `reason` as the reason phrase."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(slots=True, frozen=True, kw_only=True)
class Drop:
    """Send nothing (a blocked source with `auth_block_action = "drop"`, a backend's `spam`)."""

    reason: str


AuthOutcome = Authenticated | Challenge | Rejected | Drop


def outcome_response(request: Request, outcome: Challenge | Rejected, to_tag: str) -> Response:
    """The SIP response for a challenge or a rejection."""
    if isinstance(outcome, Challenge):
        return make_response(request, outcome.status, to_tag=to_tag, headers=list(outcome.headers))
    return make_response(
        request, outcome.status, outcome.reason, to_tag=to_tag, headers=list(outcome.headers)
    )


# --- what the authenticator needs from others ------------------------------------------------


class FailureGuard(Protocol):
    """Brute-force protection by source address (`edge.pbx.security.BruteForceGuard`)."""

    def blocked(self, ip: str, now: float) -> bool: ...
    def failure(self, ip: str, now: float) -> object: ...
    def success(self, ip: str) -> None: ...


class UserLookup(Protocol):
    """The user backends (`edge.pbx.users.UserBackendChain`)."""

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult: ...


# --- nonces ---------------------------------------------------------------------------------

_NONCE_CONTEXT = b"sdpbx-nonce-1"
_MAX_FUTURE_SKEW_S = 30.0  # edges sharing the secret may disagree a little on the time

NonceState = Literal["fresh", "stale", "invalid"]
# 43 base64url characters, the last one canonical: 32 bytes leave 2 spare bits in it, which
# must be zero (otherwise four spellings would name one nonce).
_NONCE_RE = re.compile("[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]", re.ASCII)
_FROM_URLSAFE = str.maketrans("-_", "+/")


def nonce_secret(master: str | bytes | None) -> bytes:
    """The nonce key: derived from a configured secret (so every edge and every restart accepts
    the others' nonces), or random for this process when there is none."""
    if master is None:
        return os.urandom(32)
    key = master.encode() if isinstance(master, str) else master
    return hmac.digest(key, b"sdpbx digest nonce key", hashlib.sha256)


class _RandomBuffer:
    """`os.urandom` read 4 KiB at a time and sliced: the same CSPRNG bytes, one getrandom()
    system call per 512 nonces instead of one each (as `edge.io.tokens.TokenSource`)."""

    __slots__ = ("_buffer", "_offset")

    def __init__(self) -> None:
        self._buffer = b""
        self._offset = 0

    def __call__(self, count: int) -> bytes:
        offset = self._offset
        if offset + count > len(self._buffer):
            self._buffer = os.urandom(max(4096, count))
            offset = 0
        self._offset = offset + count
        return self._buffer[offset:offset + count]


class StatelessNonces:
    """Issues and checks the HMAC nonces described in the module docstring."""

    def __init__(
        self,
        secret: bytes,
        lifetime_s: float,
        *,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret
        self.lifetime_s = lifetime_s
        self._random = random_bytes if random_bytes is not None else _RandomBuffer()
        # HMAC keyed once with the context prefix: each nonce copies it (OpenSSL 3 makes a
        # one-shot hmac.digest look the hash up again every time, twice the cost).
        self._keyed = hmac.new(secret, _NONCE_CONTEXT, hashlib.sha256)

    def _mac(self, body: bytes, realm: str) -> bytes:
        mac = self._keyed.copy()
        mac.update(body + realm.encode("utf-8", "surrogateescape"))
        return mac.digest()[:16]

    def issue(self, realm: str, now: float) -> str:
        body = struct.pack(">Q", max(0, int(now))) + self._random(8)
        raw = body + self._mac(body, realm)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    def check(self, nonce: str, realm: str, now: float) -> tuple[NonceState, float]:
        """("fresh" | "stale" | "invalid", issued_at)."""
        if _NONCE_RE.fullmatch(nonce) is None:
            return "invalid", 0.0
        try:
            raw = binascii.a2b_base64(nonce.translate(_FROM_URLSAFE) + "=")
        except binascii.Error:  # pragma: no cover - the regex admits only valid base64url
            return "invalid", 0.0
        body = raw[:16]
        if not hmac.compare_digest(raw[16:], self._mac(body, realm)):
            return "invalid", 0.0
        issued_at = float(struct.unpack(">Q", body[:8])[0])
        if issued_at > now + _MAX_FUTURE_SKEW_S:
            return "invalid", issued_at
        if now - issued_at > self.lifetime_s:
            return "stale", issued_at
        return "fresh", issued_at


class NonceCounts:
    """The highest nonce-count accepted per nonce: a bounded LRU map (see module docstring)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        # nonce -> (highest nc accepted, issued_at, expires_at)
        self._entries: OrderedDict[str, tuple[int, float, float]] = OrderedDict()
        self._forgotten_up_to = -1.0  # issued_at of the newest live nonce evicted for room

    def __len__(self) -> int:
        return len(self._entries)

    def replayed(self, nonce: str, nc: int, issued_at: float) -> bool:
        entry = self._entries.get(nonce)
        if entry is None:
            return issued_at <= self._forgotten_up_to
        return nc <= entry[0]

    def record(self, nonce: str, nc: int, issued_at: float, expires_at: float, now: float) -> None:
        entries = self._entries
        entry = entries.get(nonce)
        if entry is not None:
            entries[nonce] = (max(nc, entry[0]), issued_at, expires_at)
            entries.move_to_end(nonce)
            return
        entries[nonce] = (nc, issued_at, expires_at)
        # Least recently used first: expired entries gather there; drop a few per insert.
        for _ in range(4):
            oldest = next(iter(entries.values()))
            if oldest[2] > now or len(entries) == 1:
                break
            entries.popitem(last=False)
        while len(entries) > self._max:
            _nonce, (_nc, old_issued, old_expires) = entries.popitem(last=False)
            if old_expires > now and old_issued > self._forgotten_up_to:
                self._forgotten_up_to = old_issued


# --- the authenticator ----------------------------------------------------------------------


def _quote(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise ValueError("CR or LF in a realm")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class DigestAuthenticator:
    """Authenticates requests with Digest; see the module docstring for the decisions.

    `guard` is the brute-force guard (None: no limit); `block_action` what a blocked source gets
    ("403" or "drop"). `now` passed to `authenticate` is Unix time (nonces carry it, so edges
    sharing the secret must agree on it).
    """

    def __init__(
        self,
        users: UserLookup,
        *,
        secret: bytes,
        realms: Sequence[str] = (),
        nonce_lifetime_s: float = 300.0,
        algorithms: Sequence[str] = DEFAULT_ALGORITHMS,
        guard: FailureGuard | None = None,
        block_action: Literal["403", "drop"] = "403",
        max_tracked_nonces: int = 100_000,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self._users = users
        self._nonces = StatelessNonces(secret, nonce_lifetime_s, random_bytes=random_bytes)
        self._counts = NonceCounts(max_tracked_nonces)
        self._realms = tuple(realms)
        # lower-cased host -> the realm as configured (HA1s were computed with that spelling)
        self._realm_by_host = {realm.lower(): realm for realm in self._realms}
        self._algorithms = tuple(canonical_algorithm(name) for name in algorithms)
        if not self._algorithms:
            raise ValueError("at least one digest algorithm is needed")
        self._accepted_bases = frozenset(a.removesuffix("-sess") for a in self._algorithms)
        self._guard = guard
        self._block_action = block_action
        self._quoted: dict[str, str] = {}
        # What follows the nonce in each challenge, one per algorithm offered.
        self._tails = tuple(f', algorithm={a}, qop="auth"' for a in self._algorithms)
        self._stale_tails = tuple(f", stale=true{tail}" for tail in self._tails)

    # -- realm and challenges

    def realm_for(self, request: Request) -> str:
        """The realm this request is challenged in (module docstring)."""
        address = request.to_addr if request.method == "REGISTER" else request.from_addr
        uri = address.uri
        host = host_key(uri.host) if isinstance(uri, SipUri) else ""
        if self._realms:
            return self._realm_by_host.get(host, self._realms[0])
        if host:
            return host
        target = request.request_uri
        return host_key(target.host) if isinstance(target, SipUri) else "sdpbx"

    def challenge(self, request: Request, now: float, *, stale: bool = False) -> Challenge:
        """A fresh challenge for `request` (401 + WWW-Authenticate for REGISTER, else 407)."""
        return self._challenge(self.realm_for(request), request.method == "REGISTER", now, stale)

    def _challenge(self, realm: str, register: bool, now: float, stale: bool) -> Challenge:
        quoted = self._quoted.get(realm)
        if quoted is None:
            quoted = _quote(realm)
            if len(self._quoted) < 10_000:
                self._quoted[realm] = quoted
        nonce = self._nonces.issue(realm, now)
        name = "WWW-Authenticate" if register else "Proxy-Authenticate"
        head = f'Digest realm={quoted}, nonce="{nonce}"'
        tails = self._stale_tails if stale else self._tails
        return Challenge(
            status=401 if register else 407,
            headers=tuple([(name, head + tail) for tail in tails]),
            stale=stale,
        )

    # -- the decision

    async def authenticate(
        self, request: Request, peer: Peer, now: float, *, monotonic: float | None = None
    ) -> AuthOutcome:
        """Authenticate `request` from `peer` at Unix time `now`.

        `monotonic` is the loop clock the brute-force guard runs on (the transport's admission
        checks the same guard with it); without it the guard gets `now`.
        """
        ip = peer.address[0]
        guard = self._guard
        guard_now = now if monotonic is None else monotonic
        if guard is not None and guard.blocked(ip, guard_now):
            log.info(
                "authentication refused: source blocked after repeated failures",
                extra={"source": ip, "outcome": "blocked"},
            )
            if self._block_action == "drop":
                return Drop(reason="source blocked after repeated authentication failures")
            return Rejected(status=403, reason="Too many failed authentications")

        register = request.method == "REGISTER"
        realm = self.realm_for(request)
        try:
            credentials = self._credentials(request, register, realm)
        except SipParseError as exc:
            return Rejected(status=400, reason=exc.reason)
        if credentials is None:
            return self._challenge(realm, register, now, False)

        username = credentials.username
        source = f"{ip}:{peer.address[1]}"
        algorithm = canonical_algorithm(credentials.algorithm)  # checked in _credentials
        if algorithm.removesuffix("-sess") not in self._accepted_bases:
            self._note("algorithm not offered", username, realm, source)
            return self._challenge(realm, register, now, False)
        if credentials.uri != request.uri and not _same_uri(credentials.uri, request.uri):
            # RFC 2617 §3.2.2.5: the digest-uri must name the Request-URI's resource.
            self._note("digest uri mismatch", username, realm, source)
            return Rejected(status=400, reason="Digest uri does not match the Request-URI")
        nc = _nonce_count(credentials)
        if nc is None:
            return Rejected(status=400, reason="malformed digest nc")
        state, issued_at = self._nonces.check(credentials.nonce, realm, now)
        if state == "invalid":
            self._note("nonce not issued here", username, realm, source)
            return self._challenge(realm, register, now, False)

        found = await self._users.lookup(username, realm, request.uri)
        if isinstance(found, Unavailable):
            self._note("user backend unavailable", username, realm, source)
            return Rejected(
                status=503, reason="User backend unavailable", headers=(("Retry-After", "5"),)
            )
        if isinstance(found, Refused):
            return self._refused(found, username, realm, source, ip, register, now, guard_now)
        if found is None:
            return self._failed("unknown user", username, realm, source, ip, register, now,
                                guard_now)
        ha1 = found.ha1_for(algorithm, realm)
        if ha1 is None:
            log.warning(
                "no HA1 for the algorithm the client chose",
                extra={"username": username, "realm": realm, "source": source,
                       "algorithm": algorithm, "backend": found.backend},
            )
            return self._challenge(realm, register, now, False)
        if not verify_credentials(
            credentials, method=request.method, ha1=ha1, expected_realm=realm, body=request.body
        ):
            return self._failed("wrong password", username, realm, source, ip, register, now,
                                guard_now)

        # The response is right: whatever follows, the client knows the password.
        if state == "stale":
            self._note("stale nonce", username, realm, source)
            return self._challenge(realm, register, now, True)
        nonce = credentials.nonce
        if self._counts.replayed(nonce, nc, issued_at):
            self._note("nonce count replayed", username, realm, source)
            return self._challenge(realm, register, now, True)
        if not found.enabled:
            self._note("user disabled", username, realm, source)
            return Rejected(status=403, reason="User disabled")
        if register and not _registers_own_aor(request, username):
            # RFC 3261 §10.3 step 4: an authenticated user may not bind another user's AOR.
            self._note("AOR of another user", username, realm, source)
            return Rejected(status=403, reason="Credentials do not match the AOR")
        self._counts.record(nonce, nc, issued_at, issued_at + self._nonces.lifetime_s, now)
        if guard is not None:
            guard.success(ip)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "authenticated",
                extra={"username": username, "realm": realm, "source": source,
                       "outcome": "authenticated", "backend": found.backend},
            )
        return Authenticated(user=found, username=username, realm=realm)

    def _credentials(
        self, request: Request, register: bool, realm: str
    ) -> DigestCredentials | None:
        """The Digest credentials for `realm`, or None (then the request is challenged)."""
        name = "Authorization" if register else "Proxy-Authorization"
        for value in request.headers.get_lines(name):
            try:
                credentials = parse_credentials(value)
            except UnsupportedSchemeError:
                continue  # Basic & co: answered with a Digest challenge (RFC 4475 §3.3.7)
            except SipParseError as exc:
                detail = exc.reason.removeprefix("malformed credentials: ")
                raise SipParseError(f"malformed {name}: {detail}") from None
            if credentials.realm != realm:
                continue  # credentials for another server on the path (RFC 3261 §22.3)
            try:
                canonical_algorithm(credentials.algorithm)
            except SipParseError:
                return None  # an algorithm we do not know: challenge with ours
            return credentials
        return None

    def _refused(
        self, refused: Refused, username: str, realm: str, source: str, ip: str,
        register: bool, now: float, guard_now: float,
    ) -> AuthOutcome:
        reason = refused.reason
        if reason == "invalid_password":
            return self._failed("backend: invalid password", username, realm, source, ip,
                                register, now, guard_now)
        self._note(f"backend: {reason}", username, realm, source)
        if reason == "spam":
            return Drop(reason="user backend answered spam")
        if reason == "payment_required":
            return Rejected(status=402, reason="Payment Required")
        return Rejected(status=403, reason="User disabled" if reason == "disabled" else "Blocked")

    def _failed(
        self, what: str, username: str, realm: str, source: str, ip: str, register: bool,
        now: float, guard_now: float,
    ) -> Challenge:
        if self._guard is not None:
            self._guard.failure(ip, guard_now)
        self._note(what, username, realm, source)
        return self._challenge(realm, register, now, False)

    @staticmethod
    def _note(outcome: str, username: str, realm: str, source: str) -> None:
        log.info(
            "authentication failed: %s", outcome,
            extra={"username": username, "realm": realm, "source": source, "outcome": outcome},
        )


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _nonce_count(credentials: DigestCredentials) -> int | None:
    """The nc as a number; 1 without qop (RFC 2069 form: the nonce is single use)."""
    nc = credentials.nc
    if nc is None:
        return 1
    # nc = 8LHEX (RFC 7616 §3.4); int() alone would also take "0x1", "+1" or "1_0".
    if not 1 <= len(nc) <= 8 or not _HEX_DIGITS.issuperset(nc):
        return None
    return int(nc, 16)


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    try:
        return uri_equal(parse_uri(digest_uri), parse_uri(request_uri))
    except SipParseError:
        return False


def _registers_own_aor(request: Request, username: str) -> bool:
    uri = request.to_addr.uri
    return isinstance(uri, SipUri) and uri.user == username
