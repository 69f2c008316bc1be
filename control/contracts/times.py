"""Time stamps as the PBX writes them (CDRs, events, blob keys): RFC 3339 UTC to the
millisecond. Stdlib only, so blob keys need no pydantic (Lambda cold starts)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_milliseconds(timestamp: float) -> int:
    """`timestamp` (Unix seconds) rounded to whole milliseconds: the precision of a CDR time.
    Keys and strings derive from this one value, so a start at 23:59:59.9996 is on the next
    day in both."""
    return round(timestamp * 1000)


def rfc3339(timestamp: float) -> str:
    """Unix seconds as a CDR time: `2026-11-27T23:59:01.123Z` (UTC, always 3 digits)."""
    seconds, millis = divmod(utc_milliseconds(timestamp), 1000)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"


__all__ = ["rfc3339", "utc_milliseconds"]
