"""The CDR push's wire format (COMPAT.md "CDR"): `multipart/form-data` (RFC 7578) with the text
field `calllog.json` = the CDR and, with a recording, the fields `call_id` and `track_id` and the
file part `recording`. The edge's pusher (`edge.io.cdr_push`, streaming the WAV from disk) and
the cloud's CDR consumer (`control.cdr_consumer`) both build their bodies from these pieces.
"""

from __future__ import annotations

CALLLOG_FIELD = "calllog.json"
RECORDING_FIELD = "recording"
WAV_CONTENT_TYPE = "audio/wav"


def _quote(value: str) -> str:
    # A Content-Disposition parameter value as browsers write it (WHATWG HTML, "multipart/
    # form-data encoding algorithm"; RFC 7578 §4.2): `"`, CR and LF percent-encoded.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def utf8(text: str) -> bytes:
    return text.encode("utf-8", "replace")  # a lone surrogate from the wire becomes "?"


def part_head(boundary: str, name: str, *, filename: str | None = None,
              content_type: str | None = None) -> bytes:
    """The delimiter and headers of one part, up to its content."""
    disposition = f'form-data; name="{_quote(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quote(filename)}"'
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    return utf8(head + "\r\n")


def text_part(boundary: str, name: str, value: bytes) -> bytes:
    return part_head(boundary, name) + value + b"\r\n"


def recording_heads(boundary: str, call_id: str, track_id: str) -> bytes:
    """The `call_id` and `track_id` fields and the head of the `recording` file part; the WAV
    bytes and a CRLF follow."""
    return (text_part(boundary, "call_id", utf8(call_id))
            + text_part(boundary, "track_id", utf8(track_id))
            + part_head(boundary, RECORDING_FIELD, filename=f"{call_id}.wav",
                        content_type=WAV_CONTENT_TYPE))


def closing(boundary: str) -> bytes:
    return f"--{boundary}--\r\n".encode("ascii")


__all__ = [
    "CALLLOG_FIELD",
    "RECORDING_FIELD",
    "WAV_CONTENT_TYPE",
    "closing",
    "part_head",
    "recording_heads",
    "text_part",
    "utf8",
]
