"""API authentication and scopes: `Authorization: Bearer sdpbx_<key_id>_<secret>` (RFC 6750).

A token is checked against the stored key (`passwords.verify_api_key`: SHA-256 of the secret,
constant-time compare) and then cached for `ttl_s` under the token's SHA-256, so a burst of
requests reads the store once. The price: a deleted key keeps working for up to `ttl_s`.

Scopes are enforced per route: `read` (GETs), `write` (directory mutations), `calls` (call
control), `admin` (API keys, reload); `admin` implies every other scope.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Iterable

from starlette.requests import Request

from control.api.errors import ApiError
from control.store.models import ApiKey
from control.store.passwords import verify_api_key

ADMIN = "admin"
SCOPES: tuple[str, ...] = ("read", "write", "calls", ADMIN)
REALM = "sdpbx"


def has_scope(granted: Iterable[str], needed: str) -> bool:
    granted = tuple(granted)
    return needed in granted or ADMIN in granted


def _challenge(error: str | None = None, scope: str | None = None) -> dict[str, str]:
    # RFC 6750 §3: the challenge names the error (and, for 403, the scope that was missing).
    parts = [f'Bearer realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return {"WWW-Authenticate": ", ".join(parts)}


class Authenticator:
    """Verifies bearer tokens with a small time-bounded cache of the verified ones."""

    __slots__ = ("_cache", "_clock", "_lookup", "_max_entries", "_ttl_s")

    def __init__(
        self,
        lookup: Callable[[], Awaitable[Callable[[str], Awaitable[ApiKey]]]],
        *,
        clock: Callable[[], float],
        ttl_s: float = 30.0,
        max_entries: int = 1024,
    ) -> None:
        """`lookup()` returns the key getter (`stores.directory.get_api_key`): the stores may
        be opened lazily, on the first request."""
        self._lookup = lookup
        self._clock = clock
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._cache: dict[str, tuple[ApiKey, float]] = {}

    async def authenticate(self, request: Request) -> ApiKey:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(401, "an API key is required (Authorization: Bearer ...)",
                           headers=_challenge())
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(401, "the Authorization header must be 'Bearer <token>'",
                           headers=_challenge("invalid_request"))
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        now = self._clock()
        cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        key = await verify_api_key(token, await self._lookup())
        if key is None:
            self._cache.pop(digest, None)
            raise ApiError(401, "the API key is not valid", headers=_challenge("invalid_token"))
        if len(self._cache) >= self._max_entries:
            self._cache.clear()  # crude but bounded: the cache only saves store reads
        self._cache[digest] = (key, now + self._ttl_s)
        return key

    def forget(self, key_id: str) -> None:
        """Stop trusting a revoked key at once (this container's cache; others within ttl_s)."""
        for digest in [d for d, (key, _) in self._cache.items() if key.key_id == key_id]:
            del self._cache[digest]

    async def require(self, request: Request, scope: str) -> ApiKey:
        """The request's key if it grants `scope`: 401 without a valid key, else 403."""
        key = await self.authenticate(request)
        if not has_scope(key.scopes, scope):
            raise ApiError(403, f"this API key lacks the {scope!r} scope",
                           headers=_challenge("insufficient_scope", scope))
        return key
