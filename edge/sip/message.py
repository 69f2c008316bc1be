"""SIP messages: parse a datagram into a Request or Response, and serialize one back to bytes.

Parsing is two-level. `parse_message` frames the message (RFC 3261 §18.3), reads the start line,
unfolds and splits the header lines; the structure of individual headers (Via, From, CSeq...) is
parsed only when a property asks for it. `validate_request`/`validate_response` check the
mandatory headers that a transaction needs (§8.1.1) before the message goes any further.

Text is decoded as UTF-8 with `surrogateescape`, so any octets a peer sends go back out unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from edge.sip.address import NameAddr, parse_name_addr
from edge.sip.errors import SipParseError
from edge.sip.grammar import split_comma_list
from edge.sip.headers import Headers, canonical_name, lookup_key
from edge.sip.uri import SipUri, Uri, parse_uri
from edge.sip.via import Via, parse_via

SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**32 - 1  # RFC 3261 §8.1.1.5: the sequence number is a 32-bit unsigned integer

# RFC 3261 §25.1: token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_VERSION = re.compile(r"SIP/\d+\.\d+", re.IGNORECASE)
# Request methods in use (RFC 3261 and extensions): tokens, so no need to check them again.
_METHODS = frozenset((
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY",
    "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
))

REASON_PHRASES: dict[int, str] = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 199: "Early Dialog Terminated", 200: "OK", 202: "Accepted",
    204: "No Notification", 300: "Multiple Choices", 301: "Moved Permanently",
    302: "Moved Temporarily", 305: "Use Proxy", 380: "Alternative Service", 400: "Bad Request",
    401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 412: "Conditional Request Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 417: "Unknown Resource-Priority", 420: "Bad Extension",
    421: "Extension Required", 422: "Session Interval Too Small", 423: "Interval Too Brief",
    428: "Use Identity Header", 429: "Provide Referrer Identity", 433: "Anonymity Disallowed",
    436: "Bad Identity-Info", 437: "Unsupported Certificate", 438: "Invalid Identity Header",
    439: "First Hop Lacks Outbound Support", 470: "Consent Needed",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 493: "Undecipherable",
    494: "Security Agreement Required", 500: "Server Internal Error", 501: "Not Implemented",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 580: "Precondition Failure",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere",
    606: "Not Acceptable", 607: "Unwanted",
}


@dataclass(slots=True, init=False, unsafe_hash=True)
class CSeq:
    """The CSeq header (RFC 3261 §20.16): a 32-bit sequence number and a method."""

    seq: Final[int]
    method: Final[str]

    # Written out rather than generated: see the "Compiled build" rules (docs/architecture.md).
    def __init__(self, seq: int, method: str) -> None:
        self.seq = seq
        self.method = method

    @classmethod
    def parse(cls, value: str) -> CSeq:
        number, _, method = value.strip().partition(" ")
        method = method.strip()
        if not number.isdigit() or not number.isascii():
            raise SipParseError("malformed CSeq: sequence number is not a number")
        seq = int(number)
        if seq > MAX_CSEQ:
            raise SipParseError("malformed CSeq: sequence number exceeds 2**32-1")
        if method not in _METHODS and not _TOKEN.fullmatch(method):
            raise SipParseError("malformed CSeq: bad method")
        return cls(seq, method)

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


class _MessageBase:
    """Header accessors shared by requests and responses (parsed on each call)."""

    __slots__ = ()
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        value = self.headers.get("Call-ID")
        if not value:
            raise SipParseError("missing Call-ID header")
        return value

    # The accessors below look in the headers' memo first, inline: each is read several times
    # per message (transactions, endpoint, TU), and a hit should cost one dict lookup.

    @property
    def cseq(self) -> CSeq:
        parsed = self.headers._parsed
        if parsed is not None:
            cseq: CSeq | None = parsed.get("CSeq")
            if cseq is not None:
                return cseq
        return self.headers.memo("CSeq", self._parse_cseq)

    def _parse_cseq(self) -> CSeq:
        value = self.headers.get("CSeq")
        if value is None:
            raise SipParseError("missing CSeq header")
        return CSeq.parse(value)

    @property
    def vias(self) -> list[Via]:
        """Every Via value, parsed, top first (read-only: change the headers instead)."""
        return self.headers.memo("Via", self._parse_vias)

    def _parse_vias(self) -> list[Via]:
        lines = self.headers.get_lines("Via")
        if not lines:
            return []
        if len(lines) == 1 and "," not in lines[0]:
            return [self.top_via]  # one Via value, the usual case: parsed once, shared
        values = [value for line in lines for value in split_comma_list(line)]
        # The top one is usually parsed already (transactions match on it): reuse it.
        return [self.top_via, *(parse_via(value) for value in values[1:])]

    @property
    def top_via(self) -> Via:
        """The first Via value (the one transactions match on), parsed alone."""
        parsed = self.headers._parsed
        if parsed is not None:
            via: Via | None = parsed.get("Via:top")
            if via is not None:
                return via
        return self.headers.memo("Via:top", self._parse_top_via)

    def _parse_top_via(self) -> Via:
        line = self.headers.get("Via")
        if line is None:
            raise SipParseError("missing Via header")
        # Most Via lines hold one value; split only when a comma says there may be more.
        return parse_via(split_comma_list(line)[0] if "," in line else line)

    def replace_top_via(self, via: Via) -> None:
        """Replace the top Via (a server stamping `received`/`rport`), keeping the parse."""
        headers = self.headers
        parsed = headers._parsed
        vias = parsed.get("Via") if parsed else None
        headers.replace_first("Via", str(via))
        headers.set_memo("Via:top", via)
        if isinstance(vias, list) and vias:
            headers.set_memo("Via", [via, *vias[1:]])

    @property
    def from_addr(self) -> NameAddr:
        parsed = self.headers._parsed
        if parsed is not None:
            address: NameAddr | None = parsed.get("From")
            if address is not None:
                return address
        return self.headers.memo("From", self._parse_from)

    def _parse_from(self) -> NameAddr:
        value = self.headers.get("From")
        if value is None:
            raise SipParseError("missing From header")
        return parse_name_addr(value)

    @property
    def to_addr(self) -> NameAddr:
        parsed = self.headers._parsed
        if parsed is not None:
            address: NameAddr | None = parsed.get("To")
            if address is not None:
                return address
        return self.headers.memo("To", self._parse_to)

    def _parse_to(self) -> NameAddr:
        value = self.headers.get("To")
        if value is None:
            raise SipParseError("missing To header")
        return parse_name_addr(value)

    @property
    def max_forwards(self) -> int | None:
        value = self.headers.get("Max-Forwards")
        if value is None:
            return None
        value = value.strip()
        # Leading zeros are legal (RFC 4475 §3.1.1.1: "0068"); the value is 0-255 (§20.22).
        if not value.isdigit() or not value.isascii() or len(value) > 10 or int(value) > 255:
            raise SipParseError("malformed Max-Forwards")
        return int(value)

    def _serialize(self, start_line: str) -> bytes:
        # Content-Length is always recomputed from the body, in place if the header was there.
        body = self.body
        entries = self.headers._entries
        lines = [f"{name}: {value}" for key, name, value in entries if key != "content-length"]
        if len(lines) == len(entries):  # no Content-Length yet (any we build): it goes last
            text = f"{start_line}\r\n{_CRLF.join(lines)}\r\nContent-Length: {len(body)}\r\n\r\n"
            return text.encode("utf-8", "surrogateescape") + body
        lines = [start_line]
        has_length = False
        for key, name, value in self.headers._entries:
            if key == "content-length":  # also the compact "l", whatever its case
                if not has_length:
                    lines.append(f"{name}: {len(body)}")
                    has_length = True
            else:
                lines.append(f"{name}: {value}")
        if not has_length:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("")
        lines.append("")
        return "\r\n".join(lines).encode("utf-8", "surrogateescape") + body


@dataclass(slots=True, eq=False, init=False)
class Request(_MessageBase):
    """A SIP request. `uri` is the Request-URI text as received (parse it with `parse_uri`)."""

    method: str
    uri: str
    headers: Headers
    body: bytes
    version: str
    _parsed_uri: tuple[str, Uri] | None = field(repr=False)

    def __init__(self, method: str, uri: str, headers: Headers | None = None, body: bytes = b"",
                 version: str = SIP_VERSION) -> None:
        self.method = method
        self.uri = uri
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version
        self._parsed_uri = None

    @property
    def request_uri(self) -> Uri:
        """The Request-URI, parsed (once per value of `uri`)."""
        cached = self._parsed_uri
        if cached is not None and cached[0] == self.uri:
            return cached[1]
        parsed = parse_uri(self.uri)
        self._parsed_uri = (self.uri, parsed)
        return parsed

    def to_bytes(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} {self.version}")

    def forget_parsed(self) -> None:
        """Drop the parsed Request-URI and headers (parsed again when read): a request kept
        only in case it is needed again holds fewer objects (see `Headers.forget_parsed`)."""
        self._parsed_uri = None
        self.headers.forget_parsed()

    def copy(self) -> Request:
        return Request(self.method, self.uri, self.headers.copy(), self.body, self.version)


@dataclass(slots=True, eq=False, init=False)
class Response(_MessageBase):
    """A SIP response."""

    status: int
    reason: str
    headers: Headers
    body: bytes
    version: str

    def __init__(self, status: int, reason: str, headers: Headers | None = None,
                 body: bytes = b"", version: str = SIP_VERSION) -> None:
        self.status = status
        self.reason = reason
        self.headers = Headers() if headers is None else headers
        self.body = body
        self.version = version

    def to_bytes(self) -> bytes:
        return self._serialize(f"{self.version} {self.status} {self.reason}")

    def copy(self) -> Response:
        return Response(self.status, self.reason, self.headers.copy(), self.body, self.version)


Message = Request | Response


def parse_message(data: bytes, *, stream: bool = False) -> Request | Response:
    """Parse one SIP message.

    Datagram rules (RFC 3261 §18.3): octets after the body that Content-Length declares are
    discarded; a body shorter than Content-Length is an error; without Content-Length the body
    is the rest of the datagram. With `stream=True` (the framer already cut the message) a
    missing Content-Length means an empty body... and the framer enforces its presence.
    """
    # §7.5: CRLFs before the start line are ignored (they are keep-alives on streams).
    start = 0
    length = len(data)
    if data[:1] in (b"\r", b"\n"):
        while start < length and data[start] in (13, 10):
            start += 1
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("incomplete message: no empty line after the headers")
    try:
        head = data[start:end].decode("utf-8", "surrogateescape")
    except UnicodeDecodeError:  # pragma: no cover - surrogateescape never fails
        raise SipParseError("undecodable header section") from None
    lines = head.split("\r\n")
    start_line = lines[0]
    headers = _parse_header_lines(lines)
    message: Request | Response
    if start_line[:1] in ("S", "s") and start_line[:4].upper() == "SIP/":
        message = _parse_status_line(start_line, headers)
    else:
        message = _parse_request_line(start_line, headers)
    body_start = end + 4
    declared = headers.get("Content-Length")
    if declared is None:
        message.body = data[body_start:] if not stream else b""
    else:
        declared = declared.strip()
        if not declared.isdigit() or not declared.isascii():
            raise SipParseError("malformed Content-Length")
        size = int(declared)
        available = length - body_start
        if size > available:
            raise SipParseError("Content-Length larger than the message")
        message.body = data[body_start : body_start + size]
    return message


def parse_message_head(data: bytes) -> Request | Response | None:
    """Best-effort parse of a message that `parse_message` refused, ignoring its body.

    Used only to answer a malformed request with 400 (RFC 4475 §3.1.2.2: a Content-Length larger
    than the datagram still deserves a response); None when even the head is unusable.
    """
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 4]
    if end < 0:
        head = head.rstrip(b"\r\n") + b"\r\n\r\n"
    lines = head.decode("utf-8", "surrogateescape").strip("\r\n").split("\r\n")
    try:
        headers = _parse_header_lines(lines)
        if lines[0][:4].upper() == "SIP/":
            return _parse_status_line(lines[0], headers)
        # A Request-Line with extra spaces or a bracketed URI is malformed but still names
        # a method, which is all a 400 needs (RFC 4475 §3.1.2.7-§3.1.2.10).
        parts = lines[0].split()
        if len(parts) < 3 or not _TOKEN.fullmatch(parts[0]):
            return None
        return Request(parts[0], " ".join(parts[1:-1]), headers, b"", SIP_VERSION)
    except SipParseError:
        return None


# Header name as written -> (lookup key, that name), for names already seen: most messages
# repeat the same few dozen spellings, so the token check and canonicalisation run once per
# spelling, and every message shares one string per name (a header name costs no memory of
# its own in the thousands of requests kept by transactions). Bounded: names come from the wire.
_NAME_FORMS: dict[str, tuple[str, str]] = {}
_NAME_FORMS_MAX = 4096


def _header_forms(name: str) -> tuple[str, str]:
    forms = _NAME_FORMS.get(name)
    if forms is None:
        if not _TOKEN.fullmatch(name):
            raise SipParseError("malformed header name")
        forms = (canonical_name(name).lower(), name)
        if len(_NAME_FORMS) < _NAME_FORMS_MAX:
            _NAME_FORMS[name] = forms
    return forms


def _parse_header_lines(lines: list[str]) -> Headers:
    entries: list[tuple[str, str, str]] = []
    known = _NAME_FORMS
    for line in lines[1:]:
        first = line[:1]
        if first == " " or first == "\t":
            # §7.3.1: a line starting with whitespace continues the previous header value.
            if not entries:
                raise SipParseError("header continuation line before any header")
            key, name, value = entries[-1]
            more = line.strip(" \t")
            if more:  # a whitespace-only continuation adds nothing (LWS is not value, §7.3.1)
                entries[-1] = (key, name, f"{value} {more}" if value else more)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError("malformed header line: no colon")
        forms = known.get(name)  # a name seen before is a token without trailing LWS
        if forms is None:
            forms = _header_forms(name.rstrip(" \t"))
        entries.append((forms[0], forms[1], value.strip(" \t")))
    return Headers(entries)


def _parse_request_line(line: str, headers: Headers) -> Request:
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError("malformed Request-Line")
    method, uri, version = parts
    if method not in _METHODS and not _TOKEN.fullmatch(method):
        raise SipParseError("malformed Request-Line: bad method")
    if not uri or "<" in uri or ">" in uri:
        raise SipParseError("malformed Request-URI")
    if version != SIP_VERSION:
        if not _VERSION.fullmatch(version):
            raise SipParseError("malformed Request-Line: bad SIP version")
        version = version.upper()
    return Request(method, uri, headers, b"", version)


def _parse_status_line(line: str, headers: Headers) -> Response:
    version, _, rest = line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not _VERSION.fullmatch(version):
        raise SipParseError("malformed Status-Line: bad SIP version")
    if len(code) != 3 or not code.isdigit() or not code.isascii() or not 100 <= int(code) <= 699:
        raise SipParseError("malformed Status-Line: bad status code")
    return Response(int(code), reason, headers, b"", version.upper())


_CRLF = "\r\n"
_MANDATORY = ("To", "From", "CSeq", "Call-ID", "Via")
_MANDATORY_KEYS = tuple((name, lookup_key(name)) for name in _MANDATORY)
_MANDATORY_KEYSET = frozenset(key for _name, key in _MANDATORY_KEYS)
_SINGLE_KEYS = tuple(
    (name, lookup_key(name))
    for name in ("To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length")
)


def validate_request(request: Request) -> None:
    """Check what every request must carry before it reaches a transaction (RFC 3261 §8.1.1).

    Raises SipParseError (400, reason naming the header) for a missing or malformed mandatory
    header, a CSeq method that disagrees with the Request-Line, or a Request-URI that does not
    parse. Max-Forwards is checked for syntax; its absence is tolerated (RFC 2543 peers).
    """
    keys = request.headers.keys()
    present = set(keys)
    if not present.issuperset(_MANDATORY_KEYSET) or len(present) < len(keys):
        # Something is missing or repeated (a repeated Via or Route is fine): which?
        counts = request.headers.counts()
        for name, key in _MANDATORY_KEYS:
            if key not in counts:
                raise SipParseError(f"missing {name} header")
        for name, key in _SINGLE_KEYS:
            if counts.get(key, 0) > 1:
                raise SipParseError(f"more than one {name} header")
    cseq = request.cseq
    if cseq.method != request.method:
        raise SipParseError("CSeq method does not match the Request-Line")
    request.vias  # noqa: B018 - parse every Via: a malformed one is a 400
    request.from_addr  # noqa: B018
    request.to_addr  # noqa: B018
    request.max_forwards  # noqa: B018
    uri = request.request_uri
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.1 (Table 1): headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        raise SipParseError("Request-URI must not contain headers")


def validate_response(response: Response) -> None:
    """Check a response's mandatory headers; a bad response is dropped, never answered."""
    headers = response.headers
    for name in _MANDATORY:
        if name not in headers:
            raise SipParseError(f"missing {name} header")
    response.cseq  # noqa: B018
    response.top_via  # noqa: B018
    response.from_addr  # noqa: B018
    response.to_addr  # noqa: B018


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """Build a response to `request` (RFC 3261 §8.2.6).

    Via (all values, in order), From, Call-ID and CSeq are copied; To is copied and gets `to_tag`
    when it has none and the response is not a 100 (§8.2.6.2).
    """
    # One pass over the request's headers: every Via line, the first From, To, Call-ID and
    # CSeq (and Timestamp), written under their canonical names in that order.
    vias: list[tuple[str, str, str]] = []
    first: dict[str, str] = {}
    for key, _, value in request.headers._entries:
        if key == "via":
            vias.append(("via", "Via", value))
        elif key in _COPIED and key not in first:
            first[key] = value
    entries = vias
    from_value = first.get("from")
    if from_value is not None:
        entries.append(("from", "From", from_value))
    to_value = first.get("to")
    if to_value is not None:
        if to_tag and status > 100 and _has_no_tag(request):
            to_value = f"{to_value};tag={to_tag}"
        entries.append(("to", "To", to_value))
    call_id = first.get("call-id")
    if call_id is not None:
        entries.append(("call-id", "Call-ID", call_id))
    cseq = first.get("cseq")
    if cseq is not None:
        entries.append(("cseq", "CSeq", cseq))
    if status == 100 and "timestamp" in first:
        # §8.2.6.1: a 100 Trying copies the Timestamp header.
        entries.append(("timestamp", "Timestamp", first["timestamp"]))
    out = Headers(entries)
    for name, value in headers or ():
        out.add(name, value)
    return Response(status, reason or REASON_PHRASES.get(status, ""), out, body)


# Headers a response copies from its request besides Via (RFC 3261 §8.2.6.2, §8.2.6.1).
_COPIED = frozenset(("from", "to", "call-id", "cseq", "timestamp"))


def _has_no_tag(request: Request) -> bool:
    """True when the To header has no tag parameter (one inside the URI or display name is not).

    Uses the request's parsed To (usually parsed already, when the request was validated)."""
    try:
        return request.to_addr.tag is None
    except SipParseError:
        return ";tag=" not in (request.headers.get("To") or "").replace(" ", "").lower()


def new_request(
    method: str,
    uri: str,
    *,
    via: Via | str,
    from_: NameAddr | str,
    to: NameAddr | str,
    call_id: str,
    cseq: int,
    max_forwards: int = 70,
    contact: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Request:
    """Build a request with the mandatory headers of RFC 3261 §8.1.1 in the usual order."""
    out = Headers()
    out.add("Via", str(via))
    out.add("Max-Forwards", str(max_forwards))
    out.add("From", str(from_))
    out.add("To", str(to))
    out.add("Call-ID", call_id)
    out.add("CSeq", f"{cseq} {method}")
    if contact is not None:
        out.add("Contact", contact)
    for name, value in headers or ():
        out.add(name, value)
    # What the caller built need not be parsed back from its text (the transaction layer
    # reads the Via and CSeq of every request it sends).
    if isinstance(via, Via):
        out.set_memo("Via:top", via)
    if isinstance(from_, NameAddr):
        out.set_memo("From", from_)
    if isinstance(to, NameAddr):
        out.set_memo("To", to)
    out.set_memo("CSeq", CSeq(cseq, method))
    return Request(method, uri, out, body)
