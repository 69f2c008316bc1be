"""Where a call's blobs live: `cdr/YYYY/MM/DD/{call_id}.json`, `recordings/YYYY/MM/DD/{call_id}.wav`
(the whole-call recording) and `recordings/calls/{call_id}/{n}.wav` (a `record` step's).

The edge writes them and the control plane reads them, so both compute keys here. Keys are dated
by the UTC day of the call's start (as the CDR's `startTime` shows it, to the millisecond). A
Call-ID may hold any `word` character of RFC 3261 §25.1 (`@`, `/`, `%`, `:`, `<`, ...), so in a
key it is percent-encoded (`safe_call_id`): every byte of its UTF-8 outside `[A-Za-z0-9._@-]`
becomes `%XX` (upper-case hex; `%` itself is `%25`), which keeps it one safe segment and keeps
two Call-IDs apart. An encoded id longer than 160 characters is cut to (at most) 120 plus `~`
and 32 hex digits of its SHA-256 (a `~` never appears otherwise: it is encoded), so a file name
stays well under the 255 bytes of common file systems. Stdlib only (Lambda code imports it).
"""

from __future__ import annotations

import hashlib

from control.contracts.times import rfc3339

_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._@-")
_MAX_SAFE_ID = 160
_KEPT_PREFIX = 120


def safe_call_id(call_id: str) -> str:
    """`call_id` as one safe key segment (see the module docstring); ValueError when empty."""
    if not call_id:
        raise ValueError("a CDR needs a Call-ID")
    raw = call_id.encode("utf-8", "surrogateescape")  # odd bytes from the wire stay distinct
    encoded = "".join(chr(byte) if byte in _SAFE else f"%{byte:02X}" for byte in raw)
    if len(encoded) > _MAX_SAFE_ID:
        digest = hashlib.sha256(raw).hexdigest()[:32]
        cut = _KEPT_PREFIX
        percent = encoded.rfind("%", cut - 2, cut)
        if percent != -1:
            cut = percent  # never half of a %XX
        encoded = f"{encoded[:cut]}~{digest}"
    return encoded


def _day_path(start_time: float) -> str:
    return rfc3339(start_time)[:10].replace("-", "/")  # YYYY/MM/DD, UTC, as startTime shows


def cdr_key(call_id: str, start_time: float) -> str:
    """`cdr/YYYY/MM/DD/{call_id}.json` (UTC day of `start_time`, Call-ID made key-safe)."""
    return f"cdr/{_day_path(start_time)}/{safe_call_id(call_id)}.json"


def recording_key(call_id: str, start_time: float) -> str:
    """`recordings/YYYY/MM/DD/{call_id}.wav`, dated and encoded as `cdr_key`."""
    return f"recordings/{_day_path(start_time)}/{safe_call_id(call_id)}.wav"


def step_recording_key(call_id: str, index: int) -> str:
    """`recordings/calls/{call_id}/{index}.wav`: the `index`-th `record` step of a call (not
    dated, so its URL works while the call still runs)."""
    return f"recordings/calls/{safe_call_id(call_id)}/{index}.wav"


__all__ = ["cdr_key", "recording_key", "safe_call_id", "step_recording_key"]
