"""Cutting a byte stream (TCP, TLS) into SIP messages.

On a stream the Content-Length header is mandatory and is the only way to find where a message
ends (RFC 3261 §18.3). Between messages a peer may send keep-alives (RFC 5626 §3.5.1): a
double CRLF "ping", answered by a single CRLF "pong"; lone CRLFs before a start line are ignored
(RFC 3261 §7.5). Once framing is lost it cannot be regained, so a framing error means the
connection must be closed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from edge.sip.errors import SipParseError

PING = b"\r\n\r\n"
PONG = b"\r\n"

# A Content-Length (or compact "l") header line; LWS is allowed before the colon.
_CONTENT_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


@dataclass(slots=True, frozen=True)
class KeepAlivePing:
    """The peer sent a CRLFCRLF ping; the transport answers with `PONG`."""


KEEPALIVE_PING = KeepAlivePing()


class StreamFramer:
    """Accumulates stream bytes and yields whole messages (as bytes) and keep-alive pings.

    Feeding the same bytes in any split yields the same items. Raises SipParseError when the
    stream cannot be framed (missing or bad Content-Length, a message over `max_size`).
    """

    __slots__ = ("_buffer", "max_size")

    def __init__(self, max_size: int = 65535) -> None:
        self._buffer = bytearray()
        self.max_size = max_size

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | KeepAlivePing]:
        buffer = self._buffer
        buffer += data
        items: list[bytes | KeepAlivePing] = []
        while buffer:
            if buffer[0] in (13, 10):
                if not self._consume_crlf(items):
                    break
                continue
            header_end = buffer.find(b"\r\n\r\n")
            if header_end < 0:
                if len(buffer) > self.max_size:
                    raise SipParseError("message headers exceed the maximum message size", 513)
                break
            match = _CONTENT_LENGTH.search(buffer, 0, header_end + 2)
            if match is None:
                raise SipParseError("missing Content-Length on a stream transport")
            declared = match.group(1).strip()
            if not declared.isdigit():
                raise SipParseError("malformed Content-Length")
            total = header_end + 4 + int(declared)
            if total > self.max_size:
                raise SipParseError("message exceeds the maximum message size", 513)
            if len(buffer) < total:
                break
            items.append(bytes(buffer[:total]))
            del buffer[:total]
        return items

    def _consume_crlf(self, items: list[bytes | KeepAlivePing]) -> bool:
        """Consume keep-alives at the head of the buffer; False when more bytes are needed."""
        buffer = self._buffer
        while buffer and buffer[0] in (13, 10):
            if buffer.startswith(PING):
                items.append(KEEPALIVE_PING)
                del buffer[:4]
            elif len(buffer) < 4 and PING.startswith(bytes(buffer)):
                return False  # maybe the start of a ping: wait for the rest
            elif buffer.startswith(b"\r\n"):
                del buffer[:2]  # a lone CRLF (a pong, or §7.5 leading CRLF): ignored
            else:
                # a stray CR or LF that is not part of CRLF: skip it rather than stall
                del buffer[:1]
        return True
