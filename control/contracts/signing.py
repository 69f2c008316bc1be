"""Webhook signatures: how every webhook the PBX sends is signed, and how a receiver checks one.

The scheme (docs/webhooks.md is the receiver's guide) follows the shape Stripe and Standard
Webhooks settled on: an HMAC-SHA256 over the timestamp and the exact body bytes, so a receiver
can reject a replay by its age and a forgery by its MAC, in one header:

    X-Sdpbx-Signature: t=<unix seconds>,kid=<key id>,v1=<hex HMAC-SHA256>
    v1 = HMAC-SHA256(secret, f"{t}.".encode() + body)

`kid` names the secret that signed, so a receiver can hold the old and the new secret while a
secret is rotated (it picks the secret by `kid` instead of trying each). The timestamp is the
signing time (the delivery), not the event time (that one is in the body). Unknown `key=value`
fields are ignored so a later scheme (`v2=`) can be added next to `v1` without breaking
receivers. Pure and stdlib only: the edge, the control plane and receivers' tests import it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

SIGNATURE_HEADER = "X-Sdpbx-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300  # what Stripe and Standard Webhooks recommend: 5 minutes either way

# A timestamp of more digits is not a Unix time in seconds (and int() on a huge string is slow).
_MAX_TIMESTAMP_DIGITS = 12
# Characters that would make the header ambiguous if a key id contained them.
_KEY_ID_FORBIDDEN = frozenset(",=; \t\r\n\"")


def _key_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def compute_signature(body: bytes, *, secret: str | bytes, timestamp: int) -> str:
    """The `v1` value: hex HMAC-SHA256 of `b"<timestamp>." + body` under `secret`."""
    message = f"{timestamp}.".encode("ascii") + body
    return hmac.new(_key_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(body: bytes, *, secret: str | bytes, key_id: str, now: float) -> dict[str, str]:
    """The headers to add to a webhook whose body is `body`, signed at Unix time `now`.

    Raises `ValueError` for an empty secret or a key id the header could not carry.
    """
    if not secret:
        raise ValueError("webhook signing secret is empty")
    if not key_id or not key_id.isascii() or _KEY_ID_FORBIDDEN.intersection(key_id):
        raise ValueError(
            f"webhook key id {key_id!r} must be non-empty ASCII without , = ; quotes or spaces"
        )
    timestamp = int(now)
    signature = compute_signature(body, secret=secret, timestamp=timestamp)
    return {SIGNATURE_HEADER: f"t={timestamp},kid={key_id},{SCHEME}={signature}"}


def _header_value(headers: Mapping[str, str], name: str) -> str | None:
    # Receivers hand us whatever their framework has: Starlette's Headers are case-insensitive,
    # a plain dict keeps the sender's spelling. Try the exact name, then any case.
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, candidate in headers.items():
        if key.lower() == wanted:
            return candidate
    return None


def verification_failure(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: Mapping[str, str | bytes],
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> str | None:
    """Why the webhook does not verify (a short reason to log), or None when it does.

    `secrets` maps key id -> secret (hold several while rotating). `now` is the receiver's Unix
    time; a timestamp more than `tolerance_s` away from it, in either direction, is refused
    (a replay, or a clock too far off to tell).
    """
    value = _header_value(headers, SIGNATURE_HEADER)
    if value is None:
        return f"missing {SIGNATURE_HEADER} header"
    timestamp_text: str | None = None
    key_id: str | None = None
    candidates: list[str] = []
    for item in value.split(","):
        name, sep, field = item.strip().partition("=")
        if not sep:
            return "malformed signature header: expected key=value items"
        if name == "t":
            if timestamp_text is not None:
                return "malformed signature header: more than one t"
            timestamp_text = field
        elif name == "kid":
            if key_id is not None:
                return "malformed signature header: more than one kid"
            key_id = field
        elif name == SCHEME:
            candidates.append(field)
        # Anything else is a scheme or field from a later version: ignored on purpose.
    if timestamp_text is None:
        return "malformed signature header: missing t"
    if not (timestamp_text.isascii() and timestamp_text.isdigit()
            and len(timestamp_text) <= _MAX_TIMESTAMP_DIGITS):
        return "malformed signature header: t is not a Unix time in seconds"
    if key_id is None:
        return "malformed signature header: missing kid"
    if not candidates:
        return f"no {SCHEME} signature in the header"
    secret = secrets.get(key_id)
    if not secret:
        return f"unknown key id {key_id!r}"
    timestamp = int(timestamp_text)
    if abs(now - timestamp) > tolerance_s:
        return f"timestamp {timestamp} is more than {tolerance_s:g} s from now ({int(now)})"
    expected = compute_signature(body, secret=secret, timestamp=timestamp).encode("ascii")
    # Compare every candidate (no early exit) in constant time per comparison, as bytes:
    # compare_digest refuses non-ASCII str, and a header may carry anything.
    matched = False
    for candidate in candidates:
        raw = candidate.encode("utf-8", "surrogateescape")
        matched |= hmac.compare_digest(expected, raw)
    return None if matched else "signature does not match"


def verify(
    body: bytes,
    headers: Mapping[str, str],
    *,
    secrets: Mapping[str, str | bytes],
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> bool:
    """True when `headers` carry a valid, fresh signature of exactly `body` (the raw bytes,
    before any JSON parsing) by one of `secrets` (key id -> secret)."""
    return verification_failure(
        body, headers, secrets=secrets, now=now, tolerance_s=tolerance_s
    ) is None
