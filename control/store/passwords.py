"""Secrets at rest: digest HA1s for users and hashed API keys; plain secrets are never kept.

A user's password is turned into H(username ":" realm ":" password) for each digest algorithm we
offer (RFC 7616 §3.4.2; MD5 and SHA-256 per RFC 8760) and then forgotten. An API key is handed out
once as `sdpbx_<key_id>_<secret>`; the store keeps only the SHA-256 of the secret, which is enough
because the secret is 256 random bits (no slow hash needed to resist guessing).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from control.store.errors import NotFound
from control.store.models import ApiKey, User

TOKEN_PREFIX = "sdpbx"
_KEY_ID_BYTES = 8  # 16 hex digits: unique enough to be a primary key, short enough to type
_SECRET_BYTES = 32
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
_SECRET = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, base64url without padding
_SCOPE = re.compile(r"^[a-z][a-z0-9:._-]{0,63}$")


def _utf8(text: str) -> bytes:
    # The edge's digest code encodes the same way (surrogateescape keeps undecodable argv bytes).
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def ha1_md5(username: str, realm: str, password: str) -> str:
    """MD5 HA1 (RFC 7616 §3.4.2; RFC 2617 for old phones): hex of MD5(user:realm:password)."""
    data = _utf8(f"{username}:{realm}:{password}")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def ha1_sha256(username: str, realm: str, password: str) -> str:
    """SHA-256 HA1 (RFC 7616 §3.4.2, RFC 8760): hex of SHA-256(user:realm:password)."""
    return hashlib.sha256(_utf8(f"{username}:{realm}:{password}")).hexdigest()


def make_user(username: str, realm: str, password: str, **fields: Any) -> User:
    """A `User` with both HA1s for `password`; `fields` are User's other fields
    (enabled, display_name, allow_guest_calls, version)."""
    if not username:
        raise ValueError("username is empty")
    if not realm:
        raise ValueError("realm is empty")
    if ":" in username or ":" in realm:
        # A colon would make H(user:realm:password) ambiguous between two users.
        raise ValueError("username and realm must not contain ':'")
    return User(
        username=username,
        realm=realm,
        ha1_md5=ha1_md5(username, realm, password),
        ha1_sha256=ha1_sha256(username, realm, password),
        **fields,
    )


def secret_digest(secret: str) -> str:
    """What the store keeps of an API key's secret: hex SHA-256."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    """The scopes, deduplicated in order; ValueError names a malformed one."""
    result: list[str] = []
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise ValueError(f"bad scope {scope!r} (lower-case letters, digits, ':._-')")
        if scope not in result:
            result.append(scope)
    if not result:
        raise ValueError("an API key needs at least one scope")
    return tuple(result)


def new_api_key(
    scopes: Iterable[str],
    name: str,
    now: float,
    *,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> tuple[str, ApiKey]:
    """A fresh key: (the token to show once, the record to store)."""
    key_id = random_bytes(_KEY_ID_BYTES).hex()
    secret = base64.urlsafe_b64encode(random_bytes(_SECRET_BYTES)).rstrip(b"=").decode("ascii")
    record = ApiKey(
        key_id=key_id,
        secret_sha256=secret_digest(secret),
        scopes=check_scopes(scopes),
        name=name,
        created_at=now,
    )
    return f"{TOKEN_PREFIX}_{key_id}_{secret}", record


def parse_token(token: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed token, else None."""
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")  # the secret itself may contain '_'
    if prefix != TOKEN_PREFIX or not _KEY_ID.match(key_id) or not _SECRET.match(secret):
        return None
    return key_id, secret


async def verify_api_key(
    token: str, lookup: Callable[[str], Awaitable[ApiKey]]
) -> ApiKey | None:
    """The stored key `token` proves, or None (malformed, unknown, or wrong secret).

    `lookup` is e.g. `stores.directory.get_api_key`; its NotFound means "unknown key", and its
    StoreUnavailable propagates (the API answers 503, not 401).
    """
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    try:
        record = await lookup(key_id)
    except NotFound:
        return None
    # Constant-time comparison, so response timing does not leak how much of a guess matched.
    if not hmac.compare_digest(record.secret_sha256, secret_digest(secret)):
        return None
    return record
