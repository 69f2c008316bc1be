"""Logging set-up for the sdpbx process: standard `logging`, written as JSON lines or text.

Code logs with `logging.getLogger(__name__)` and puts context in `extra`
(`log.info("call rejected", extra={"call_id": cid, "peer": "1.2.3.4:5060", "reason": "acl"})`);
the formatters here write those fields next to `ts`, `level`, `logger` and `msg`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, Literal, TextIO

LogFormat = Literal["json", "text"]

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def _timestamp(record: logging.LogRecord) -> str:
    # RFC 3339 in UTC with milliseconds: sortable, and what log pipelines parse without a hint.
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value for key, value in vars(record).items()
        if key not in _RECORD_ATTRIBUTES and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `ts`, `level`, `logger`, `msg`, then the record's extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in _extras(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`ts LEVEL logger: msg key=value ...`, for a person reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = " ".join(f"{key}={_text_value(value)}" for key, value in _extras(record).items())
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            line = f"{line}\n{self.formatStack(record.stack_info)}"
        return line


def _text_value(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Quote what would otherwise split into two fields or be ambiguous to a reader.
    if not text or any(char.isspace() or char in "\"=" for char in text):
        return json.dumps(text, ensure_ascii=False)
    return text


class _SdpbxHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we install, so configuring again replaces it instead of adding one."""


def configure_logging(level: str = "info", fmt: LogFormat = "text",
                      stream: TextIO | None = None) -> None:
    """Send all logging to `stream` (default stderr) at `level`, as JSON lines or text."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _SdpbxHandler)]:
        root.removeHandler(handler)
        handler.close()
    handler = _SdpbxHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's start/stop chatter repeats our start-up line: shown only when debugging.
    uvicorn_level = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    logging.getLogger("uvicorn.error").setLevel(uvicorn_level)
