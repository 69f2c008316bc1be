"""SDP (RFC 8866, which obsoletes RFC 4566): parse, model and serialize session descriptions.

Also owns the read-only helpers the B2BUA and the RTP relay need (rtpmap, fmtp, direction,
RFC 3605 rtcp, effective connection address) and the one rewrite a media relay does: a copy with
the connection address and ports changed (`SessionDescription.with_transport`).

The model is made of frozen dataclasses holding tuples, so a modified copy shares every part it
does not change. Attribute values stay opaque text at parse time; the helpers parse the few that
matter on demand and raise `SdpParseError` when those are malformed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from edge.sip.errors import LocalProtocolError, SipParseError


class SdpParseError(SipParseError):
    """A session description is malformed (RFC 8866 §9 grammar or §5 structure)."""


Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
_DIRECTIONS: frozenset[str] = frozenset(("sendrecv", "sendonly", "recvonly", "inactive"))

# RFC 8866 §9: token-char.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`{|}~0-9A-Za-z]+")
# RFC 8866 §9: repeat-interval / typed-time (r=) and time SP ["-"] typed-time (z=).
_TYPED_TIME_RE = re.compile(r"[0-9]+[dhms]?")
_ZONE_OFFSET_RE = re.compile(r"-?[0-9]+[dhms]?")

# Line types RFC 8866 §5 defines. RFC 8866 §5: "An SDP parser MUST completely ignore any session
# description that contains a type letter that it does not understand", so any other letter is
# an error for us.
_SESSION_ONLY = frozenset("vosueptrz")

# RFC 3551 §6 static payload types, used when a media lists a static type without a=rtpmap.
_STATIC_PAYLOAD_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("PCMU", 8000, 1),
    3: ("GSM", 8000, 1),
    4: ("G723", 8000, 1),
    5: ("DVI4", 8000, 1),
    6: ("DVI4", 16000, 1),
    7: ("LPC", 8000, 1),
    8: ("PCMA", 8000, 1),
    9: ("G722", 8000, 1),
    10: ("L16", 44100, 2),
    11: ("L16", 44100, 1),
    12: ("QCELP", 8000, 1),
    13: ("CN", 8000, 1),
    14: ("MPA", 90000, 1),
    15: ("G728", 8000, 1),
    16: ("DVI4", 11025, 1),
    17: ("DVI4", 22050, 1),
    18: ("G729", 8000, 1),
    25: ("CelB", 90000, 1),
    26: ("JPEG", 90000, 1),
    28: ("nv", 90000, 1),
    31: ("H261", 90000, 1),
    32: ("MPV", 90000, 1),
    33: ("MP2T", 90000, 1),
    34: ("H263", 90000, 1),
}

# Long enough for any 64-bit value or NTP time, short enough that int() stays cheap and never hits
# Python's int-from-str digit limit.
_MAX_DIGITS = 20


def _uint(text: str, what: str, low: int = 0, high: int | None = None) -> int:
    """Parse a decimal number made of ASCII digits only (str.isdigit alone accepts '²')."""
    if not text or len(text) > _MAX_DIGITS or not (text.isascii() and text.isdigit()):
        raise SdpParseError(f"malformed SDP: {what} {text!r} is not a number")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise SdpParseError(f"malformed SDP: {what} {value} out of range")
    return value


def _digits(text: str, what: str) -> str:
    """Validate an unbounded 1*DIGIT field kept as text (sess-id, sess-version)."""
    if not text or not (text.isascii() and text.isdigit()):
        raise SdpParseError(f"malformed SDP: {what} {text!r} is not a number")
    return text


@dataclass(slots=True, frozen=True, kw_only=True)
class Origin:
    """The o= line (RFC 8866 §5.2). sess-id and sess-version stay text: unbounded digits."""

    username: str = "-"
    sess_id: str
    sess_version: str
    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str

    def __str__(self) -> str:
        return (
            f"{self.username} {self.sess_id} {self.sess_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )

    def bumped(self) -> Origin:
        """The same origin with sess-version + 1 (RFC 3264 §8: every changed offer bumps it)."""
        return Origin(
            username=self.username,
            sess_id=self.sess_id,
            sess_version=str(int(self.sess_version) + 1),
            nettype=self.nettype,
            addrtype=self.addrtype,
            address=self.address,
        )


@dataclass(slots=True, frozen=True, kw_only=True)
class Connection:
    """A c= line (RFC 8866 §5.7): IP4 multicast may carry /ttl[/count], IP6 only /count."""

    nettype: str = "IN"
    addrtype: str = "IP4"
    address: str
    ttl: int | None = None
    count: int | None = None

    def __str__(self) -> str:
        address = self.address
        if self.ttl is not None:
            address = f"{address}/{self.ttl}"
        if self.count is not None:
            address = f"{address}/{self.count}"
        return f"{self.nettype} {self.addrtype} {address}"


@dataclass(slots=True, frozen=True)
class Bandwidth:
    """A b= line (RFC 8866 §5.8): `bwtype:bandwidth`."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@dataclass(slots=True, frozen=True, kw_only=True)
class TimeDescription:
    """A t= line with its r= lines and the z= line that follows them (RFC 8866 §5.9-5.11).

    RFC 4566 put z= after all time descriptions, RFC 8866 §9 after the r= lines of one; keeping it
    on the time description it follows preserves either order.
    """

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()
    zone: str | None = None


@dataclass(slots=True, frozen=True)
class Attribute:
    """An a= line: `a=name` (value None) or `a=name:value` (RFC 8866 §5.13)."""

    name: str
    value: str | None = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}:{self.value}"


@dataclass(slots=True, frozen=True)
class RtpMap:
    """One a=rtpmap (RFC 8866 §6.6): encoding name as sent (compare it case-insensitively)."""

    encoding: str
    clock_rate: int
    channels: int = 1


@dataclass(slots=True, frozen=True, kw_only=True)
class RtcpAddress:
    """The a=rtcp attribute (RFC 3605): port, and optionally the address, of RTCP."""

    port: int
    nettype: str | None = None
    addrtype: str | None = None
    address: str | None = None


@dataclass(slots=True, frozen=True, kw_only=True)
class MediaDescription:
    """An m= section with its own i=, c=, b=, k= and a= lines (RFC 8866 §5.14)."""

    media: str
    port: int
    port_count: int | None = None
    proto: str
    formats: tuple[str, ...]
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()

    def media_line(self) -> str:
        port = str(self.port) if self.port_count is None else f"{self.port}/{self.port_count}"
        return f"{self.media} {port} {self.proto} {' '.join(self.formats)}"

    def has_attribute(self, name: str) -> bool:
        return any(attribute.name == name for attribute in self.attributes)

    def attribute_values(self, name: str) -> list[str]:
        """Values of the attributes called `name`, in order (value-less ones skipped)."""
        return [a.value for a in self.attributes if a.name == name and a.value is not None]

    @property
    def direction(self) -> Direction | None:
        """This media's own direction attribute, if any (RFC 8866 §6.7)."""
        return _direction_of(self.attributes)

    @property
    def rtcp_mux(self) -> bool:
        """a=rtcp-mux (RFC 5761): RTP and RTCP share the port."""
        return self.has_attribute("rtcp-mux")

    def rtpmap(self, *, static_defaults: bool = True) -> dict[int, RtpMap]:
        """Payload type -> encoding for this media, in m= line order.

        With `static_defaults`, listed static payload types that have no a=rtpmap get their
        RFC 3551 §6 encoding (an offer of "m=audio 49170 RTP/AVP 0" means PCMU/8000). A malformed
        a=rtpmap raises `SdpParseError`.
        """
        explicit: dict[int, RtpMap] = {}
        for value in self.attribute_values("rtpmap"):
            payload_type, rtpmap = _parse_rtpmap(value)
            explicit.setdefault(payload_type, rtpmap)
        static = static_defaults and self.proto.upper().startswith("RTP/")
        # m= order first: it is the sender's order of preference (RFC 3264 §5.1).
        result: dict[int, RtpMap] = {}
        for fmt in self.formats:
            if fmt.isascii() and fmt.isdigit() and len(fmt) <= 3:
                payload_type = int(fmt)
                found = explicit.get(payload_type)
                if found is None and static and payload_type in _STATIC_PAYLOAD_TYPES:
                    found = RtpMap(*_STATIC_PAYLOAD_TYPES[payload_type])
                if found is not None:
                    result[payload_type] = found
        for payload_type, rtpmap in explicit.items():
            result.setdefault(payload_type, rtpmap)
        return result

    def fmtp(self) -> dict[str, str]:
        """Format -> format-specific parameters text (a=fmtp, RFC 8866 §6.15); first one wins."""
        result: dict[str, str] = {}
        for value in self.attribute_values("fmtp"):
            fmt, _, params = value.strip().partition(" ")
            if not fmt:
                raise SdpParseError(f"malformed a=fmtp:{value}: missing format")
            result.setdefault(fmt, params.strip())
        return result

    @property
    def rtcp(self) -> RtcpAddress | None:
        """The RFC 3605 a=rtcp attribute, parsed; None when absent."""
        values = self.attribute_values("rtcp")
        return None if not values else _parse_rtcp(values[0])


@dataclass(slots=True, frozen=True, kw_only=True)
class SessionDescription:
    """A whole session description (RFC 8866 §5)."""

    version: int = 0
    origin: Origin
    session_name: str = "-"
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    times: tuple[TimeDescription, ...] = (TimeDescription(),)
    key: str | None = None
    attributes: tuple[Attribute, ...] = ()
    media: tuple[MediaDescription, ...] = ()

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse a session description; raise `SdpParseError` when it is malformed."""
        return _parse(data)

    def __str__(self) -> str:
        lines = self._lines()
        # A CR or LF inside a value would start a new line: SDP injection. Parsed values never hold
        # one, so only a value built by our own code can.
        if any("\n" in line or "\r" in line for line in lines):
            raise LocalProtocolError("CR or LF inside an SDP value")
        return "\r\n".join(lines) + "\r\n"

    def to_bytes(self) -> bytes:
        text = str(self)
        try:
            # surrogateescape gives back the exact bytes a non-UTF-8 body was parsed from.
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # a lone surrogate that did not come from bytes
            return text.encode("utf-8", "surrogatepass")

    def _lines(self) -> list[str]:
        # RFC 8866 §5 line order.
        out = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.information is not None:
            out.append(f"i={self.information}")
        if self.uri is not None:
            out.append(f"u={self.uri}")
        out.extend(f"e={email}" for email in self.emails)
        out.extend(f"p={phone}" for phone in self.phones)
        if self.connection is not None:
            out.append(f"c={self.connection}")
        out.extend(f"b={bandwidth}" for bandwidth in self.bandwidths)
        for time in self.times:
            out.append(f"t={time.start} {time.stop}")
            out.extend(f"r={repeat}" for repeat in time.repeats)
            if time.zone is not None:
                out.append(f"z={time.zone}")
        if self.key is not None:
            out.append(f"k={self.key}")
        out.extend(f"a={attribute}" for attribute in self.attributes)
        for media in self.media:
            out.append(f"m={media.media_line()}")
            if media.information is not None:
                out.append(f"i={media.information}")
            out.extend(f"c={connection}" for connection in media.connections)
            out.extend(f"b={bandwidth}" for bandwidth in media.bandwidths)
            if media.key is not None:
                out.append(f"k={media.key}")
            out.extend(f"a={attribute}" for attribute in media.attributes)
        return out

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, if any."""
        return _direction_of(self.attributes)

    def direction_of(self, media: MediaDescription) -> Direction:
        """Effective direction of a media: its own, else the session's, else sendrecv (§6.7)."""
        return media.direction or self.direction or "sendrecv"

    def effective_connection(self, media: MediaDescription) -> Connection | None:
        """Where a media's RTP goes: its first c= line, else the session c= (RFC 8866 §5.7)."""
        return media.connections[0] if media.connections else self.connection

    def with_transport(
        self,
        address: str,
        ports: Sequence[int | None],
        *,
        addrtype: str | None = None,
        rtcp_ports: Sequence[int | None] | None = None,
        origin_address: str | None = None,
    ) -> SessionDescription:
        """A copy with every connection address set to `address` and media ports replaced.

        This is the one rewrite a media relay does. `ports[i]` is the new port of media i (None
        keeps it). Existing c= lines are rewritten in place; a session c= is added when a media
        would otherwise be left without one. An a=rtcp attribute (RFC 3605) of a media whose port
        changed, or that is given `rtcp_ports[i]`, is rewritten to that port (default: the new port
        + 1, or the port itself with a=rtcp-mux) at `address`. Other attributes (ICE candidates,
        crypto) are the caller's business. Everything the copy does not change is shared.
        """
        if len(ports) != len(self.media):
            raise LocalProtocolError(f"{len(ports)} ports given for {len(self.media)} media")
        if rtcp_ports is not None and len(rtcp_ports) != len(self.media):
            raise LocalProtocolError(
                f"{len(rtcp_ports)} RTCP ports given for {len(self.media)} media"
            )
        if addrtype is None:
            addrtype = "IP6" if ":" in address else "IP4"
        connection = Connection(addrtype=addrtype, address=address)
        media_list: list[MediaDescription] = []
        needs_session_connection = self.connection is not None
        for index, media in enumerate(self.media):
            new_port = ports[index]
            if not media.connections:
                needs_session_connection = True
            attributes = media.attributes
            port_changed = new_port is not None and new_port != media.port
            if new_port is not None and port_changed:
                if not 0 <= new_port <= 65535:
                    raise LocalProtocolError(f"port {new_port} out of range")
                port, port_count = new_port, None
            else:
                port, port_count = media.port, media.port_count
            rtcp_port = rtcp_ports[index] if rtcp_ports is not None else None
            if (port_changed or rtcp_port is not None) and any(
                attribute.name == "rtcp" for attribute in attributes
            ):
                if rtcp_port is None:
                    rtcp_port = port if media.rtcp_mux else port + 1
                rtcp_value = f"{rtcp_port} IN {addrtype} {address}"
                attributes = tuple(
                    Attribute("rtcp", rtcp_value) if attribute.name == "rtcp" else attribute
                    for attribute in attributes
                )
            media_list.append(
                MediaDescription(
                    media=media.media,
                    port=port,
                    port_count=port_count,
                    proto=media.proto,
                    formats=media.formats,
                    information=media.information,
                    connections=(connection,) if media.connections else (),
                    bandwidths=media.bandwidths,
                    key=media.key,
                    attributes=attributes,
                )
            )
        origin = self.origin
        if origin_address is not None:
            origin = Origin(
                username=origin.username,
                sess_id=origin.sess_id,
                sess_version=origin.sess_version,
                nettype="IN",
                addrtype=addrtype,
                address=origin_address,
            )
        return SessionDescription(
            version=self.version,
            origin=origin,
            session_name=self.session_name,
            information=self.information,
            uri=self.uri,
            emails=self.emails,
            phones=self.phones,
            connection=connection if needs_session_connection else None,
            bandwidths=self.bandwidths,
            times=self.times,
            key=self.key,
            attributes=self.attributes,
            media=tuple(media_list),
        )


def _direction_of(attributes: tuple[Attribute, ...]) -> Direction | None:
    for attribute in attributes:
        name = attribute.name
        if name in _DIRECTIONS and attribute.value is None:
            return name  # type: ignore[return-value]  # checked against _DIRECTIONS
    return None


def _parse_rtpmap(value: str) -> tuple[int, RtpMap]:
    # a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>]
    parts = value.split()
    if len(parts) != 2:
        raise SdpParseError(f"malformed a=rtpmap:{value}: expected '<pt> <encoding>/<rate>'")
    payload_type = _uint(parts[0], "rtpmap payload type", 0, 127)
    pieces = parts[1].split("/")
    if len(pieces) not in (2, 3) or not pieces[0]:
        raise SdpParseError(f"malformed a=rtpmap:{value}: expected '<encoding>/<rate>'")
    clock_rate = _uint(pieces[1], "rtpmap clock rate", 1)
    channels = _uint(pieces[2], "rtpmap channels", 1) if len(pieces) == 3 else 1
    return payload_type, RtpMap(pieces[0], clock_rate, channels)


def _parse_rtcp(value: str) -> RtcpAddress:
    # RFC 3605 §2.1: rtcp-attribute = "a=rtcp:" port [nettype space addrtype space
    #                                 connection-address] CRLF
    parts = value.split()
    if len(parts) == 1:
        return RtcpAddress(port=_uint(parts[0], "rtcp port", 0, 65535))
    if len(parts) == 4:
        return RtcpAddress(
            port=_uint(parts[0], "rtcp port", 0, 65535),
            nettype=parts[1],
            addrtype=parts[2],
            address=parts[3],
        )
    raise SdpParseError(f"malformed a=rtcp:{value}: expected '<port> [IN <addrtype> <address>]'")


def _parse_connection(value: str, lineno: int) -> Connection:
    parts = value.split()
    if len(parts) != 3:
        raise SdpParseError(
            f"malformed SDP line {lineno}: c= needs '<nettype> <addrtype> <address>'"
        )
    nettype, addrtype, address = parts
    ttl = count = None
    kind = addrtype.upper()
    if "/" in address and kind in ("IP4", "IP6"):
        pieces = address.split("/")
        address = pieces[0]
        if kind == "IP4" and len(pieces) <= 3:
            # RFC 8866 §5.7: <base multicast address>[/<ttl>]/<number of addresses>
            ttl = _uint(pieces[1], "c= TTL", 0, 255)
            if len(pieces) == 3:
                count = _uint(pieces[2], "c= address count", 1)
        elif kind == "IP6" and len(pieces) == 2:
            count = _uint(pieces[1], "c= address count", 1)
        else:
            raise SdpParseError(f"malformed SDP line {lineno}: bad c= address {parts[2]!r}")
    if not address:
        raise SdpParseError(f"malformed SDP line {lineno}: empty c= address")
    return Connection(nettype=nettype, addrtype=addrtype, address=address, ttl=ttl, count=count)


def _parse_bandwidth(value: str, lineno: int) -> Bandwidth:
    bwtype, sep, amount = value.partition(":")
    if not sep or not _TOKEN_RE.fullmatch(bwtype):
        raise SdpParseError(f"malformed SDP line {lineno}: b= needs '<bwtype>:<bandwidth>'")
    return Bandwidth(bwtype, _uint(amount, "b= bandwidth"))


def _parse_attribute(value: str, lineno: int) -> Attribute:
    name, sep, attribute_value = value.partition(":")
    if not _TOKEN_RE.fullmatch(name):
        raise SdpParseError(f"malformed SDP line {lineno}: bad attribute name {name!r}")
    return Attribute(name, attribute_value if sep else None)


def _parse_media(value: str, lineno: int) -> tuple[str, int, int | None, str, tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 4:
        raise SdpParseError(
            f"malformed SDP line {lineno}: m= needs '<media> <port> <proto> <fmt> ...'"
        )
    port_text, sep, count_text = parts[1].partition("/")
    port = _uint(port_text, "m= port", 0, 65535)
    port_count = _uint(count_text, "m= port count", 1) if sep else None
    return parts[0], port, port_count, parts[2], tuple(parts[3:])


def _parse_origin(value: str, lineno: int) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpParseError(
            f"malformed SDP line {lineno}: o= needs '<username> <sess-id> <sess-version> "
            "<nettype> <addrtype> <address>'"
        )
    return Origin(
        username=parts[0],
        sess_id=_digits(parts[1], "o= sess-id"),
        sess_version=_digits(parts[2], "o= sess-version"),
        nettype=parts[3],
        addrtype=parts[4],
        address=parts[5],
    )


def _parse_time(value: str, lineno: int) -> tuple[int, int]:
    parts = value.split()
    if len(parts) != 2:
        raise SdpParseError(f"malformed SDP line {lineno}: t= needs '<start-time> <stop-time>'")
    return _uint(parts[0], "t= start time"), _uint(parts[1], "t= stop time")


def _check_repeat(value: str, lineno: int) -> str:
    # repeat-field = repeat-interval SP typed-time 1*(SP typed-time)
    parts = value.split()
    if len(parts) < 3 or not all(_TYPED_TIME_RE.fullmatch(part) for part in parts):
        raise SdpParseError(f"malformed SDP line {lineno}: bad r= repeat times {value!r}")
    return value


def _check_zone(value: str, lineno: int) -> str:
    # zone-field = time SP ["-"] typed-time *(SP time SP ["-"] typed-time)
    parts = value.split()
    if (
        not parts
        or len(parts) % 2
        or not all(part.isascii() and part.isdigit() for part in parts[::2])
        or not all(_ZONE_OFFSET_RE.fullmatch(part) for part in parts[1::2])
    ):
        raise SdpParseError(f"malformed SDP line {lineno}: bad z= adjustments {value!r}")
    return value


class _MediaBuilder:
    """Mutable accumulator for one m= section while its lines are read."""

    __slots__ = ("attributes", "bandwidths", "connections", "head", "information", "key")

    def __init__(self, head: tuple[str, int, int | None, str, tuple[str, ...]]) -> None:
        self.head = head
        self.information: str | None = None
        self.connections: list[Connection] = []
        self.bandwidths: list[Bandwidth] = []
        self.key: str | None = None
        self.attributes: list[Attribute] = []

    def build(self) -> MediaDescription:
        media, port, port_count, proto, formats = self.head
        return MediaDescription(
            media=media,
            port=port,
            port_count=port_count,
            proto=proto,
            formats=formats,
            information=self.information,
            connections=tuple(self.connections),
            bandwidths=tuple(self.bandwidths),
            key=self.key,
            attributes=tuple(self.attributes),
        )


def _parse(data: bytes | str) -> SessionDescription:
    # Text is UTF-8 unless a=charset says otherwise (RFC 8866 §6.10); surrogateescape keeps any
    # other byte so that serializing gives it back unchanged.
    text = data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data
    if "\x00" in text:
        raise SdpParseError("malformed SDP: NUL byte")
    lines = text.split("\n")
    # Tolerated (real phones do it): LF-only line ends, no final line end, blank lines at the end.
    while lines and lines[-1] in ("", "\r"):
        lines.pop()
    if not lines:
        raise SdpParseError("malformed SDP: empty body")

    first = lines[0].removesuffix("\r")
    if not first.startswith("v="):
        raise SdpParseError("malformed SDP: the first line must be v=")
    version = _uint(first[2:].strip(), "v= version")
    origin: Origin | None = None
    session_name: str | None = None
    information: str | None = None
    uri: str | None = None
    emails: list[str] = []
    phones: list[str] = []
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = []
    times: list[TimeDescription] = []
    key: str | None = None
    attributes: list[Attribute] = []
    media_list: list[MediaDescription] = []
    current: _MediaBuilder | None = None

    for index in range(1, len(lines)):
        line = lines[index]
        lineno = index + 1
        if line.endswith("\r"):
            line = line[:-1]
        if len(line) < 2 or line[1] != "=":
            raise SdpParseError(f"malformed SDP line {lineno}: expected '<type>=<value>'")
        kind = line[0]
        value = line[2:]
        if "\r" in value:
            raise SdpParseError(f"malformed SDP line {lineno}: stray CR")
        if current is not None:
            # Inside a media description: only i, c, b, k and a are legal (RFC 8866 §5).
            if kind == "a":
                current.attributes.append(_parse_attribute(value, lineno))
            elif kind == "m":
                media_list.append(current.build())
                current = _MediaBuilder(_parse_media(value, lineno))
            elif kind == "c":
                current.connections.append(_parse_connection(value, lineno))
            elif kind == "b":
                current.bandwidths.append(_parse_bandwidth(value, lineno))
            elif kind == "i":
                if current.information is not None:
                    raise SdpParseError(f"malformed SDP line {lineno}: second i= in a media")
                current.information = value
            elif kind == "k":
                if current.key is not None:
                    raise SdpParseError(f"malformed SDP line {lineno}: second k= in a media")
                current.key = value
            elif kind in _SESSION_ONLY:
                raise SdpParseError(
                    f"malformed SDP line {lineno}: {kind}= is not allowed in a media description"
                )
            else:
                raise SdpParseError(f"malformed SDP line {lineno}: unknown line type {kind!r}")
            continue

        # Session level. The RFC order is accepted and so is any other order that leaves no doubt
        # about what a line belongs to; only one of each single-valued line.
        if kind == "a":
            attributes.append(_parse_attribute(value, lineno))
        elif kind == "m":
            current = _MediaBuilder(_parse_media(value, lineno))
        elif kind == "o":
            if origin is not None:
                raise SdpParseError(f"malformed SDP line {lineno}: second o= line")
            origin = _parse_origin(value, lineno)
        elif kind == "s":
            if session_name is not None:
                raise SdpParseError(f"malformed SDP line {lineno}: second s= line")
            # RFC 8866 wants at least one character ("s= " or "s=-" when there is no name), but
            # RFC 5118 §4.8 and real phones send an empty s=: harmless, so accepted.
            session_name = value
        elif kind == "c":
            if connection is not None:
                raise SdpParseError(f"malformed SDP line {lineno}: second session-level c=")
            connection = _parse_connection(value, lineno)
        elif kind == "t":
            start, stop = _parse_time(value, lineno)
            times.append(TimeDescription(start=start, stop=stop))
        elif kind == "r" or kind == "z":
            if not times:
                raise SdpParseError(f"malformed SDP line {lineno}: {kind}= before any t= line")
            last = times[-1]
            if kind == "r":
                times[-1] = TimeDescription(
                    start=last.start,
                    stop=last.stop,
                    repeats=(*last.repeats, _check_repeat(value, lineno)),
                    zone=last.zone,
                )
            else:
                if last.zone is not None:
                    raise SdpParseError(f"malformed SDP line {lineno}: second z= for one t=")
                times[-1] = TimeDescription(
                    start=last.start,
                    stop=last.stop,
                    repeats=last.repeats,
                    zone=_check_zone(value, lineno),
                )
        elif kind == "b":
            bandwidths.append(_parse_bandwidth(value, lineno))
        elif kind == "i":
            if information is not None:
                raise SdpParseError(f"malformed SDP line {lineno}: second session-level i=")
            information = value
        elif kind == "u":
            if uri is not None:
                raise SdpParseError(f"malformed SDP line {lineno}: second u= line")
            uri = value
        elif kind == "e":
            emails.append(value)
        elif kind == "p":
            phones.append(value)
        elif kind == "k":
            if key is not None:
                raise SdpParseError(f"malformed SDP line {lineno}: second session-level k=")
            key = value
        elif kind == "v":
            raise SdpParseError(f"malformed SDP line {lineno}: v= must be the first line only")
        else:
            raise SdpParseError(f"malformed SDP line {lineno}: unknown line type {kind!r}")

    if current is not None:
        media_list.append(current.build())
    if origin is None:
        raise SdpParseError("malformed SDP: missing o= line")
    if session_name is None:
        raise SdpParseError("malformed SDP: missing s= line")
    if not times:
        raise SdpParseError("malformed SDP: missing t= line")
    return SessionDescription(
        version=version,
        origin=origin,
        session_name=session_name,
        information=information,
        uri=uri,
        emails=tuple(emails),
        phones=tuple(phones),
        connection=connection,
        bandwidths=tuple(bandwidths),
        times=tuple(times),
        key=key,
        attributes=tuple(attributes),
        media=tuple(media_list),
    )
