"""RTP wire format: header parse/serialize, the relay's in-place rewrite, RTP/RTCP demux,
serial-number arithmetic and RFC 4733 telephone-event payloads. Sans-IO."""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
FIXED_HEADER_SIZE = 12

_FIXED = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")
_EXT_HEADER = struct.Struct("!HH")
_DTMF = struct.Struct("!BBH")

_U16 = 0xFFFF
_U32 = 0xFFFFFFFF
_HALF_U16 = 0x8000


class RtpParseError(ValueError):
    """The peer sent a malformed RTP packet or payload: the one error the parsers raise."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- serial-number arithmetic (RFC 3550 §A.1; comparison as in RFC 1982 §3.2) ---


def seq_add(seq: int, delta: int) -> int:
    """`seq + delta` modulo 2**16 (a sequence number; `delta` may be negative)."""
    return (seq + delta) & _U16


def seq_diff(a: int, b: int) -> int:
    """Signed distance `a - b` between two 16-bit sequence numbers, in [-32768, 32767]."""
    d = (a - b) & _U16
    return d - 0x10000 if d >= _HALF_U16 else d


def seq_gt(a: int, b: int) -> bool:
    """True if sequence number `a` comes after `b` across the 16-bit wrap (RFC 1982 §3.2)."""
    return a != b and ((a - b) & _U16) < _HALF_U16


def ts_add(ts: int, delta: int) -> int:
    """`ts + delta` modulo 2**32 (an RTP timestamp; `delta` may be negative)."""
    return (ts + delta) & _U32


# --- demux ---


def is_rtcp(packet: bytes) -> bool:
    """RFC 5761 §4: with RTP and RTCP on one port, a second octet whose low 7 bits are 64-95
    (RTCP packet types 192-223, or an RTP payload type RTP must not use) is RTCP."""
    return len(packet) >= 2 and 64 <= (packet[1] & 0x7F) <= 95


# --- the relay hot path ---


def rewrite(
    packet: bytes,
    *,
    ssrc: int | None = None,
    payload_type: int | None = None,
    seq_offset: int = 0,
    ts_offset: int = 0,
) -> bytes:
    """Copy `packet` with its fixed header patched: SSRC replaced, PT replaced (marker kept),
    sequence and timestamp shifted modulo 2**16 / 2**32. CSRCs, extension, payload and padding
    are copied untouched; the packet is not parsed beyond the first 12 bytes."""
    if len(packet) < FIXED_HEADER_SIZE or packet[0] >> 6 != RTP_VERSION:
        raise RtpParseError("RTP packet shorter than 12 bytes or not version 2")
    buf = bytearray(packet)
    if payload_type is not None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} out of range 0-127")
        buf[1] = (buf[1] & 0x80) | payload_type
    if ssrc is not None or seq_offset or ts_offset:
        seq, ts, old_ssrc = _SEQ_TS_SSRC.unpack_from(buf, 2)
        _SEQ_TS_SSRC.pack_into(
            buf,
            2,
            (seq + seq_offset) & _U16,
            (ts + ts_offset) & _U32,
            old_ssrc if ssrc is None else ssrc,
        )
    return bytes(buf)


# --- full parse / serialize (RFC 3550 §5.1, §5.3.1) ---


@dataclass(slots=True, frozen=True, kw_only=True)
class RtpHeader:
    """The RTP header; `extension_profile is None` means no header extension (X=0)."""

    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension_profile: int | None = None
    extension_data: bytes = b""

    def __post_init__(self) -> None:
        # A local error (our own code built a bad header): plain ValueError, not a parse error.
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} out of range 0-127")
        if not 0 <= self.sequence_number <= _U16:
            raise ValueError(f"sequence number {self.sequence_number} out of 16-bit range")
        if not 0 <= self.timestamp <= _U32 or not 0 <= self.ssrc <= _U32:
            raise ValueError("timestamp and SSRC must fit 32 bits")
        if len(self.csrcs) > 15 or any(not 0 <= c <= _U32 for c in self.csrcs):
            raise ValueError("at most 15 CSRCs of 32 bits each")
        if self.extension_profile is None:
            if self.extension_data:
                raise ValueError("extension data without an extension profile")
        else:
            if not 0 <= self.extension_profile <= _U16:
                raise ValueError("extension profile must fit 16 bits")
            # RFC 3550 §5.3.1: the extension length counts 32-bit words.
            if len(self.extension_data) % 4 or len(self.extension_data) > _U16 * 4:
                raise ValueError("extension data must be a whole number of 32-bit words")

    @property
    def size(self) -> int:
        """Length in bytes of the serialized header."""
        size = FIXED_HEADER_SIZE + 4 * len(self.csrcs)
        if self.extension_profile is not None:
            size += 4 + len(self.extension_data)
        return size

    @classmethod
    def parse(cls, data: bytes) -> tuple[RtpHeader, int]:
        """Parse the header at the start of `data`; return it and the payload offset.

        The P bit is not interpreted here (see `RtpPacket.parse`)."""
        if len(data) < FIXED_HEADER_SIZE:
            raise RtpParseError(f"RTP packet of {len(data)} bytes is shorter than 12")
        b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
        if b0 >> 6 != RTP_VERSION:
            raise RtpParseError(f"RTP version {b0 >> 6}, expected 2")
        cc = b0 & 0x0F
        offset = FIXED_HEADER_SIZE + 4 * cc
        if len(data) < offset:
            raise RtpParseError(f"RTP packet truncated in its {cc} CSRCs")
        csrcs = struct.unpack_from(f"!{cc}I", data, FIXED_HEADER_SIZE) if cc else ()
        profile: int | None = None
        ext = b""
        if b0 & 0x10:
            if len(data) < offset + 4:
                raise RtpParseError("RTP packet truncated in its header extension")
            profile, words = _EXT_HEADER.unpack_from(data, offset)
            offset += 4
            end = offset + 4 * words
            if len(data) < end:
                raise RtpParseError(f"RTP header extension of {words} words overruns the packet")
            ext = bytes(data[offset:end])
            offset = end
        header = cls(
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            marker=bool(b1 & 0x80),
            csrcs=tuple(csrcs),
            extension_profile=profile,
            extension_data=ext,
        )
        return header, offset

    def serialize(self, *, padding: bool = False) -> bytes:
        """The header bytes; `padding` sets the P bit (the caller appends the padding)."""
        b0 = (RTP_VERSION << 6) | len(self.csrcs)
        if padding:
            b0 |= 0x20
        if self.extension_profile is not None:
            b0 |= 0x10
        parts = [
            _FIXED.pack(
                b0,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence_number,
                self.timestamp,
                self.ssrc,
            )
        ]
        if self.csrcs:
            parts.append(struct.pack(f"!{len(self.csrcs)}I", *self.csrcs))
        if self.extension_profile is not None:
            parts.append(
                _EXT_HEADER.pack(self.extension_profile, len(self.extension_data) // 4)
            )
            parts.append(self.extension_data)
        return b"".join(parts)


@dataclass(slots=True, frozen=True, kw_only=True)
class RtpPacket:
    """A whole RTP packet. `padding` is the raw trailing padding, its last octet the count
    (RFC 3550 §5.1 P bit), kept verbatim so a parsed packet serializes back byte for byte."""

    header: RtpHeader
    payload: bytes = b""
    padding: bytes = b""

    def __post_init__(self) -> None:
        if self.padding and self.padding[-1] != len(self.padding):
            raise ValueError("the last padding octet must count the padding octets")

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        header, offset = RtpHeader.parse(data)
        end = len(data)
        padding = b""
        if data[0] & 0x20:
            # RFC 3550 §5.1: the last octet counts the padding octets, itself included.
            count = data[-1]
            if count == 0 or end - count < offset:
                raise RtpParseError(f"RTP padding count {count} is zero or overruns the payload")
            end -= count
            padding = bytes(data[end:])
        return cls(header=header, payload=bytes(data[offset:end]), padding=padding)

    def serialize(self) -> bytes:
        return self.header.serialize(padding=bool(self.padding)) + self.payload + self.padding


# --- RFC 4733 §2.3 telephone-event payload ---

DTMF_PAYLOAD_SIZE = 4


@dataclass(slots=True, frozen=True, kw_only=True)
class DtmfEvent:
    """One named event (RFC 4733 §2.3): `volume` is 0..63 meaning 0 to -63 dBm0, `duration`
    is in timestamp units since the event's start."""

    event: int
    end: bool = False
    volume: int = 10
    duration: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError(f"event code {self.event} out of range 0-255")
        if not 0 <= self.volume <= 63:
            raise ValueError(f"volume {self.volume} out of range 0-63")
        if not 0 <= self.duration <= _U16:
            raise ValueError(f"duration {self.duration} out of 16-bit range")

    @classmethod
    def parse(cls, payload: bytes) -> DtmfEvent:
        if len(payload) != DTMF_PAYLOAD_SIZE:
            raise RtpParseError(
                f"telephone-event payload of {len(payload)} bytes, expected 4"
            )
        event, flags, duration = _DTMF.unpack(payload)
        # §2.3.4: the R bit (0x40) is reserved; the receiver MUST ignore it.
        return cls(event=event, end=bool(flags & 0x80), volume=flags & 0x3F, duration=duration)

    def serialize(self) -> bytes:
        # The sender MUST set R to zero (§2.3.4).
        return _DTMF.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)
