"""Who may authenticate: the user backends, chained, first hit wins (COMPAT.md, `user_backends`).

`memory` holds the users of the config, `directory` reads the store's users (HA1 only) through a
small cache that a directory revision change empties, and `http` asks the business system
exactly as RustPBX does (GET query or POST form; a JSON answer with `password` or `ha1`; an error
`reason` mapped to an outcome). A backend answers a `UserRecord`, a `Refused` (the user exists
but may not authenticate), `Unavailable` (the backend could not answer) or None (not here: ask
the next one).

Everything is async with a timeout, so a slow or dead backend delays only the lookups that reach
it. Passwords and HA1s are never logged, and never part of a record's repr.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import httpx
from pydantic import ValidationError

from control.contracts.user_backend import UserBackendAnswer, UserBackendRefusal
from control.store.errors import NotFound, StoreError
from control.store.models import User
from control.store.ports import DirectoryStore
from edge.io.control_client import (
    RequestSigner,
    SigV4Settings,
    build_client,
    internal_url,
    sigv4_auth,
)
from edge.sip.digest import compute_ha1
from edge.sip.errors import SipParseError

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from edge.config import HttpUserBackend as HttpUserBackendConfig
    from edge.config import MemoryUserBackend as MemoryUserBackendConfig
    from edge.config import UserBackendConfig

log = logging.getLogger("sdpbx.pbx.users")

Clock = Callable[[], float]
RefusalReason = Literal["invalid_password", "disabled", "blocked", "spam", "payment_required"]


def _base_algorithm(algorithm: str) -> str:
    """`MD5`, `SHA-256`...: the HA1 of a -sess algorithm is the plain one (RFC 7616 §3.4.2)."""
    upper = algorithm.upper()
    if upper.endswith("-SESS"):
        upper = upper[:-5]
    return "SHA-256" if upper == "SHA-256" else ("MD5" if upper == "MD5" else upper)


@dataclass(slots=True, frozen=True, kw_only=True)
class UserRecord:
    """A user as a backend knows it. `realm` "" means any realm (a memory user without one).

    `ha1s` maps a digest algorithm (`MD5`, `SHA-256`) to H(username:realm:password) for `realm`;
    `password`, when known, lets `ha1_for` compute the HA1 of any algorithm and realm.
    """

    username: str
    realm: str = ""
    password: str | None = field(default=None, repr=False)
    ha1s: Mapping[str, str] = field(default_factory=dict, repr=False)
    enabled: bool = True
    display_name: str = ""
    allow_guest_calls: bool = False
    backend: str = ""

    def ha1_for(self, algorithm: str, realm: str) -> str | None:
        """The HA1 to verify a response made with `algorithm` in `realm`, or None."""
        base = _base_algorithm(algorithm)
        ha1 = self.ha1s.get(base)
        if ha1 is not None:
            return ha1
        if self.password is None:
            return None
        try:
            return compute_ha1(self.username, realm, self.password, base)
        except SipParseError:  # an algorithm the digest helpers do not compute
            return None


@dataclass(slots=True, frozen=True)
class Refused:
    """The user exists (or the backend says so) but may not authenticate."""

    reason: RefusalReason
    message: str = ""


@dataclass(slots=True, frozen=True)
class Unavailable:
    """The backend could not answer (timeout, transport error, 5xx, an answer we cannot use)."""

    reason: str


LookupResult = UserRecord | Refused | Unavailable | None


class UserBackend(Protocol):
    name: str

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        """The user `username` in `realm`; None when this backend does not know them."""
        ...

    async def aclose(self) -> None: ...


def _ha1s_by_length(ha1: str | None) -> dict[str, str]:
    # A bare `ha1` says its algorithm by its length: 32 hex digits MD5, 64 SHA-256.
    if not ha1:
        return {}
    ha1 = ha1.strip().lower()
    return {"MD5" if len(ha1) == 32 else "SHA-256": ha1}


K = TypeVar("K")
V = TypeVar("V")


class _Bounded(Generic[K, V]):
    """A dict of at most about `max_size` entries, in two generations of `max_size / 2`.

    New entries go to the young generation, which becomes the old one when full (the old one
    is dropped whole); a hit in the old generation moves the entry back to the young one.
    Every step is O(1): evicting the oldest key of one big dict instead
    (``del d[next(iter(d))]``) makes CPython scan the holes left at the front of the dict,
    thousands of slots per insert once it is full (as `edge.sip.grammar.bounded_memo`).
    """

    __slots__ = ("_half", "_old", "_young")

    def __init__(self, max_size: int) -> None:
        self._half = max(1, max_size // 2)
        self._young: dict[K, V] = {}
        self._old: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        value = self._young.get(key)
        if value is None:
            value = self._old.pop(key, None)
            if value is not None:
                self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        young = self._young
        if key not in young and len(young) >= self._half:
            self._old = young
            young = self._young = {}
        young[key] = value

    def pop(self, key: K) -> None:
        self._young.pop(key, None)
        self._old.pop(key, None)

    def clear(self) -> None:
        self._young = {}
        self._old = {}

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


# --- memory ---------------------------------------------------------------------------------


class MemoryUserBackend:
    """The users of `[[proxy.user_backends]] type = "memory"`.

    A user with a realm matches only that realm; one without matches any realm, and the HA1s of
    its password are computed once per realm asked about (a bounded cache, since without
    configured realms the realm comes from the request).
    """

    name = "memory"

    def __init__(self, users: Iterable[UserRecord], *, max_derived: int = 10_000) -> None:
        self._exact: dict[tuple[str, str], UserRecord] = {}
        self._any_realm: dict[str, UserRecord] = {}
        self._derived: _Bounded[tuple[str, str], UserRecord] = _Bounded(max_derived)
        for user in users:
            if user.realm:
                self._exact[(user.username, user.realm)] = _with_password_ha1s(user, user.realm)
            else:
                self._any_realm[user.username] = user

    @classmethod
    def from_config(cls, config: MemoryUserBackendConfig) -> MemoryUserBackend:
        return cls(
            UserRecord(
                username=user.username,
                realm=user.realm or "",
                password=user.password,
                ha1s=_ha1s_by_length(user.ha1),
                enabled=user.enabled,
                display_name=user.display_name or "",
                allow_guest_calls=user.allow_guest_calls,
                backend="memory",
            )
            for user in config.users
        )

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        return self.get(username, realm)

    def get(self, username: str, realm: str) -> UserRecord | None:
        """The synchronous lookup (the memory backend never waits)."""
        key = (username, realm)
        user = self._exact.get(key)
        if user is not None:
            return user
        user = self._derived.get(key)
        if user is not None:
            return user
        wildcard = self._any_realm.get(username)
        if wildcard is None:
            return None
        user = _with_password_ha1s(wildcard, realm)
        self._derived.put(key, user)
        return user

    async def aclose(self) -> None:
        return None


def _with_password_ha1s(user: UserRecord, realm: str) -> UserRecord:
    """`user` for `realm`, with the HA1s of its password precomputed (hot path: no hashing)."""
    if user.password is None:
        return UserRecord(
            username=user.username, realm=realm, ha1s=user.ha1s, enabled=user.enabled,
            display_name=user.display_name, allow_guest_calls=user.allow_guest_calls,
            backend=user.backend,
        )
    ha1s = {
        algorithm: compute_ha1(user.username, realm, user.password, algorithm)
        for algorithm in ("MD5", "SHA-256")
    }
    ha1s.update(user.ha1s)
    return UserRecord(
        username=user.username, realm=realm, password=user.password, ha1s=ha1s,
        enabled=user.enabled, display_name=user.display_name,
        allow_guest_calls=user.allow_guest_calls, backend=user.backend,
    )


# --- directory ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Cached:
    value: UserRecord | None
    until: float


class DirectoryUserBackend:
    """The store's users (`DirectoryStore.get_user`), cached.

    An entry lives `ttl_s` (a miss `negative_ttl_s`); at most every `revision_poll_s` a
    background check compares the directory's `revision()` and empties the cache when it moved,
    so a changed password or a disabled user takes effect within a few seconds without a store
    round trip per REGISTER. Concurrent lookups of one user share one store read.
    """

    name = "directory"

    def __init__(
        self,
        store: DirectoryStore,
        *,
        ttl_s: float = 60.0,
        negative_ttl_s: float = 5.0,
        revision_poll_s: float = 2.0,
        max_cached: int = 100_000,
        clock: Clock = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_s
        self._negative_ttl = negative_ttl_s
        self._poll_interval = revision_poll_s
        self._clock = clock
        self._cache: _Bounded[tuple[str, str], _Cached] = _Bounded(max_cached)
        self._inflight: dict[tuple[str, str], asyncio.Task[LookupResult]] = {}
        self._revision: int | None = None
        self._next_poll = 0.0
        self._poll_task: asyncio.Task[None] | None = None
        # Bumped whenever the cache is emptied: a read that started before must not refill it.
        self._generation = 0

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        now = self._clock()
        if now >= self._next_poll and self._poll_task is None:
            self._poll_task = asyncio.get_running_loop().create_task(self._poll_revision())
        key = (username, realm)
        cached = self._cache.get(key)
        if cached is not None and cached.until > now:
            return cached.value
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(key, self._generation))
            self._inflight[key] = task
            task.add_done_callback(lambda _done: self._inflight.pop(key, None))
        # shield: a caller giving up (its transaction died) must not cancel the shared read.
        return await asyncio.shield(task)

    async def _fetch(self, key: tuple[str, str], generation: int) -> LookupResult:
        username, realm = key
        try:
            user = await self._store.get_user(username, realm)
        except NotFound:
            self._remember(key, None, self._negative_ttl, generation)
            return None
        except StoreError as exc:
            return Unavailable(f"directory: {type(exc).__name__}")
        record = _record_from_user(user)
        self._remember(key, record, self._ttl, generation)
        return record

    def _remember(
        self, key: tuple[str, str], value: UserRecord | None, ttl: float, generation: int
    ) -> None:
        if ttl <= 0 or generation != self._generation:
            return
        self._cache.put(key, _Cached(value, self._clock() + ttl))

    async def _poll_revision(self) -> None:
        try:
            revision = await self._store.revision()
        except StoreError as exc:
            log.debug("directory revision check failed: %s", type(exc).__name__)
            return
        finally:
            self._next_poll = self._clock() + self._poll_interval
            self._poll_task = None
        if self._revision is not None and revision != self._revision:
            self.invalidate()
        self._revision = revision

    def invalidate(self) -> None:
        """Forget every cached user (the directory changed)."""
        self._cache.clear()
        self._generation += 1

    async def aclose(self) -> None:
        tasks: list[asyncio.Task[Any]] = [*self._inflight.values()]
        if self._poll_task is not None:
            tasks.append(self._poll_task)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


def _record_from_user(user: User) -> UserRecord:
    ha1s = {}
    if user.ha1_md5:
        ha1s["MD5"] = user.ha1_md5.lower()
    if user.ha1_sha256:
        ha1s["SHA-256"] = user.ha1_sha256.lower()
    return UserRecord(
        username=user.username,
        realm=user.realm,
        ha1s=ha1s,
        enabled=user.enabled,
        display_name=user.display_name,
        allow_guest_calls=user.allow_guest_calls,
        backend="directory",
    )


# --- http -----------------------------------------------------------------------------------


class HttpUserBackend:
    """Asks an HTTP endpoint about a user, exactly as COMPAT.md describes.

    Request: GET `url?username=..&realm=..&request_uri=..` or a POST form with those keys (field
    names configurable), plus the configured headers. Answer: 2xx JSON `UserBackendAnswer`; a
    non-2xx status with a JSON `{reason, message}`:

    - `not_found` (or a bare 404): not here, the next backend is asked (and a miss is remembered
      for `negative_ttl_s`, which shields the endpoint from scanners guessing usernames);
    - `invalid_password`: an authentication failure like a wrong password;
    - `disabled`, `blocked`: 403; `spam`: the request is dropped; `payment_required`: 402;
    - anything else, a timeout or an answer that does not parse: `Unavailable`.

    Each attempt is bounded by `timeout_s`; a 5xx or a transport error (not a timeout) is
    retried once. One pooled `httpx.AsyncClient` serves every lookup; pass one to share it,
    otherwise the backend owns its own (`edge.io.control_client.build_client`: `url` may be
    `lambda:` or `control:` too, the latter reaching `control_app`; `signer` signs each request)
    and `aclose()` closes it. `sigv4` adds an AWS SigV4 signature to https requests.
    """

    name = "http"

    def __init__(
        self,
        url: str,
        *,
        method: str = "GET",
        username_field: str = "username",
        realm_field: str = "realm",
        request_uri_field: str = "request_uri",
        timeout_s: float = 5.0,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        negative_ttl_s: float = 5.0,
        max_cached: int = 10_000,
        clock: Clock = time.monotonic,
        sigv4: SigV4Settings | None = None,
        signer: RequestSigner | None = None,
        control_app: ASGIApp | None = None,
    ) -> None:
        self._url = url
        self._post = method.upper() == "POST"
        self._fields = (username_field, realm_field, request_uri_field)
        self._timeout = httpx.Timeout(timeout_s)
        self._headers = dict(headers or {})
        self._owns_client = client is None
        internal_url(url)  # a `lambda:` URL without a function fails now
        self._client = client if client is not None else build_client(
            control_app=control_app, signer=signer, timeout=self._timeout,
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        self._auth = sigv4_auth(sigv4)
        self._negative_ttl = negative_ttl_s
        self._clock = clock
        self._misses: _Bounded[tuple[str, str], float] = _Bounded(max_cached)
        self._inflight: dict[tuple[str, str, str], asyncio.Task[LookupResult]] = {}

    @classmethod
    def from_config(
        cls, config: HttpUserBackendConfig, *, client: httpx.AsyncClient | None = None
    ) -> HttpUserBackend:
        return cls(
            config.url,
            method=config.method,
            username_field=config.username_field,
            realm_field=config.realm_field,
            request_uri_field=config.request_uri_field,
            timeout_s=config.http_timeout_ms / 1000,
            headers=config.headers,
            client=client,
            sigv4=config.sigv4,
        )

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        miss_key = (username, realm)
        until = self._misses.get(miss_key)
        if until is not None:
            if until > self._clock():
                return None
            self._misses.pop(miss_key)
        key = (username, realm, request_uri)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(username, realm, request_uri))
            self._inflight[key] = task
            task.add_done_callback(lambda _done: self._inflight.pop(key, None))
        return await asyncio.shield(task)

    async def _ask(self, username: str, realm: str, request_uri: str) -> LookupResult:
        username_field, realm_field, request_uri_field = self._fields
        form = {username_field: username, realm_field: realm, request_uri_field: request_uri}
        for attempt in (1, 2):
            try:
                if self._post:
                    response = await self._client.post(
                        self._url, data=form, headers=self._headers, timeout=self._timeout,
                        auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                    )
                else:
                    response = await self._client.get(
                        self._url, params=form, headers=self._headers, timeout=self._timeout,
                        auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                    )
            except httpx.TimeoutException:
                # Not retried: a retry would double the time the REGISTER waits.
                return Unavailable("timeout")
            except httpx.HTTPError as exc:
                if attempt == 1:
                    continue  # e.g. a pooled keep-alive connection the server had closed
                return Unavailable(f"transport error: {type(exc).__name__}")
            if response.status_code >= 500 and attempt == 1:
                continue
            return self._interpret(response, username, realm)
        raise AssertionError("unreachable")  # pragma: no cover

    def _interpret(self, response: httpx.Response, username: str, realm: str) -> LookupResult:
        status = response.status_code
        if 200 <= status < 300:
            try:
                answer = UserBackendAnswer.model_validate_json(response.content)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(part) for part in problem["loc"]) or "body"
                return Unavailable(f"invalid answer: {where}: {problem['msg']}")
            if not answer.is_enabled:
                return Refused("disabled", "enabled is false")
            if not answer.has_secret:
                return Unavailable("invalid answer: neither password nor ha1")
            return UserRecord(
                username=username,
                realm=answer.realm or realm,
                password=answer.password,
                ha1s=answer.ha1_by_algorithm(),
                display_name=answer.display_name or "",
                allow_guest_calls=bool(answer.allow_guest_calls),
                backend="http",
            )
        try:
            refusal = UserBackendRefusal.model_validate_json(response.content)
        except ValidationError:
            refusal = UserBackendRefusal()
        reason = refusal.known_reason or _REASON_BY_STATUS.get(status)
        if reason is None:
            detail = f" ({refusal.reason})" if refusal.reason else ""
            return Unavailable(f"HTTP {status}{detail}")
        if reason == "not_found":
            self._remember_miss((username, realm))
            return None
        return Refused(reason, refusal.message or "")

    def _remember_miss(self, key: tuple[str, str]) -> None:
        if self._negative_ttl <= 0:
            return
        self._misses.put(key, self._clock() + self._negative_ttl)

    async def aclose(self) -> None:
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()


# A non-2xx answer without a known `reason`: what its status alone says.
_REASON_BY_STATUS: dict[int, Literal["not_found"] | RefusalReason] = {
    404: "not_found",
    402: "payment_required",
    403: "blocked",
}


# --- the chain ------------------------------------------------------------------------------


class UserBackendChain:
    """The configured backends in order: the first that knows the user answers.

    A refusal stops the chain (the user exists and is refused); `Unavailable` lets the next
    backend try, and is the answer only when no later backend knows the user.
    """

    def __init__(self, backends: Sequence[UserBackend]) -> None:
        self.backends = tuple(backends)
        self._last_warning: dict[str, float] = {}

    @classmethod
    def from_config(
        cls,
        configs: Sequence[UserBackendConfig],
        *,
        directory: DirectoryStore | None = None,
        http_client: httpx.AsyncClient | None = None,
    ) -> UserBackendChain:
        """Build the chain of `[[proxy.user_backends]]`; `directory` serves `type = "directory"`."""
        backends: list[UserBackend] = []
        for config in configs:
            if config.type == "memory":
                backends.append(MemoryUserBackend.from_config(config))
            elif config.type == "http":
                backends.append(HttpUserBackend.from_config(config, client=http_client))
            else:
                if directory is None:
                    raise ValueError("a directory user backend needs the directory store")
                backends.append(DirectoryUserBackend(directory))
        return cls(backends)

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        unavailable: Unavailable | None = None
        for backend in self.backends:
            result = await backend.lookup(username, realm, request_uri)
            if result is None:
                continue
            if isinstance(result, Unavailable):
                self._warn(backend.name, username, realm, result.reason)
                unavailable = unavailable or result
                continue
            return result
        return unavailable

    def _warn(self, backend: str, username: str, realm: str, reason: str) -> None:
        # At most one warning per backend every 10 s: a dead backend at 2,000 REGISTERs per
        # second must not turn into 2,000 log lines per second.
        now = time.monotonic()
        if now - self._last_warning.get(backend, -1e9) < 10.0:
            return
        self._last_warning[backend] = now
        log.warning(
            "user backend %s unavailable: %s", backend, reason,
            extra={"backend": backend, "username": username, "realm": realm, "reason": reason},
        )

    async def aclose(self) -> None:
        for backend in self.backends:
            await backend.aclose()
