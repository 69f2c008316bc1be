"""Time stamps as the PBX writes them (CDRs, events, blob keys): RFC 3339 UTC to the
millisecond. Stdlib only, so blob keys need no pydantic (Lambda cold starts)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_milliseconds(timestamp: float) -> int:
    """`timestamp` (Unix seconds) rounded to whole milliseconds: the precision of a CDR time.
    Keys and strings derive from this one value, so a start at 23:59:59.9996 is on the next
    day in both."""
    return round(timestamp * 1000)


# Whole second -> its "YYYY-MM-DDTHH:MM:SS" and back: an edge writes a few times per call (CDR,
# events, keys), nearly all in the last few seconds, and the CDR model parses them again to
# validate. Bounded (cleared whole when full), like every cache on a hot path here.
_SECOND_TEXT: dict[int, str] = {}
_TEXT_SECOND: dict[str, int] = {}
_CACHED_SECONDS = 4096


def rfc3339(timestamp: float) -> str:
    """Unix seconds as a CDR time: `2026-11-27T23:59:01.123Z` (UTC, always 3 digits)."""
    seconds, millis = divmod(utc_milliseconds(timestamp), 1000)
    text = _SECOND_TEXT.get(seconds)
    if text is None:
        text = f"{datetime.fromtimestamp(seconds, tz=UTC):%Y-%m-%dT%H:%M:%S}"
        _remember(seconds, text)
    return f"{text}.{millis:03d}Z"


def utc_seconds(text: str) -> int:
    """`YYYY-MM-DDTHH:MM:SS` (UTC, already checked by the caller's pattern) as Unix seconds;
    ValueError for a date or time that does not exist (month 13, 25 o'clock)."""
    seconds = _TEXT_SECOND.get(text)
    if seconds is None:
        seconds = int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp())
        _remember(seconds, text)
    return seconds


def _remember(seconds: int, text: str) -> None:
    if len(_SECOND_TEXT) >= _CACHED_SECONDS:
        _SECOND_TEXT.clear()
        _TEXT_SECOND.clear()
    _SECOND_TEXT[seconds] = text
    _TEXT_SECOND[text] = seconds


__all__ = ["rfc3339", "utc_milliseconds", "utc_seconds"]
