"""RTP wire format: parse/serialize round trips, rewrite, demux, serial numbers, RFC 4733."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.rtp.packet import (
    DtmfEvent,
    RtpHeader,
    RtpPacket,
    RtpParseError,
    is_rtcp,
    rewrite,
    seq_add,
    seq_diff,
    seq_gt,
    ts_add,
)

# A captured-style RFC 4733 packet (as a softphone sends the first packet of digit "5"):
# V=2, M=1, PT=101, seq 0x1f5e, ts 0x0001f400, SSRC 0x6d1a3c2b; event 5, E=0, volume 10,
# duration 160.
CAPTURED_DTMF = bytes.fromhex("80e51f5e0001f4006d1a3c2b" "050a00a0")

# A captured-style PCMU packet: PT 0, seq 1000, ts 160000, 160 bytes of mu-law silence (0xff).
CAPTURED_PCMU = bytes.fromhex("800003e8" "00027100" "deadbeef") + b"\xff" * 160


def test_parse_captured_dtmf_packet() -> None:
    packet = RtpPacket.parse(CAPTURED_DTMF)
    assert packet.header == RtpHeader(
        payload_type=101, sequence_number=0x1F5E, timestamp=0x1F400, ssrc=0x6D1A3C2B, marker=True
    )
    assert packet.padding == b""
    assert DtmfEvent.parse(packet.payload) == DtmfEvent(
        event=5, end=False, volume=10, duration=160
    )
    assert packet.serialize() == CAPTURED_DTMF


def test_parse_captured_pcmu_packet() -> None:
    packet = RtpPacket.parse(CAPTURED_PCMU)
    assert packet.header.payload_type == 0
    assert packet.header.sequence_number == 1000
    assert packet.header.timestamp == 160000
    assert packet.header.ssrc == 0xDEADBEEF
    assert packet.header.marker is False
    assert packet.payload == b"\xff" * 160
    assert packet.serialize() == CAPTURED_PCMU


def test_hand_made_packet_with_csrcs_extension_and_padding() -> None:
    raw = (
        bytes([0x80 | 0x20 | 0x10 | 2, 0x80 | 96])  # P, X, CC=2; M=1, PT=96
        + struct.pack("!HII", 65535, 0xFFFFFFFF, 42)
        + struct.pack("!II", 7, 8)  # CSRCs
        + struct.pack("!HH", 0xBEDE, 1)
        + b"\x10\xaa\x00\x00"  # one-word extension
        + b"payload"
        + b"\x00\x00\x03"  # 3 padding octets, the last one counting them
    )
    packet = RtpPacket.parse(raw)
    header = packet.header
    assert header.marker is True
    assert header.payload_type == 96
    assert header.sequence_number == 65535
    assert header.timestamp == 0xFFFFFFFF
    assert header.ssrc == 42
    assert header.csrcs == (7, 8)
    assert header.extension_profile == 0xBEDE
    assert header.extension_data == b"\x10\xaa\x00\x00"
    assert header.size == 12 + 8 + 4 + 4
    assert packet.payload == b"payload"
    assert packet.padding == b"\x00\x00\x03"
    assert packet.serialize() == raw


def test_build_and_serialize_from_fields() -> None:
    header = RtpHeader(payload_type=8, sequence_number=1, timestamp=2, ssrc=3)
    raw = RtpPacket(header=header, payload=b"\xd5" * 4).serialize()
    assert raw == bytes.fromhex("800800010000000200000003d5d5d5d5")
    assert RtpPacket.parse(raw).header == header


def test_empty_extension_round_trips() -> None:
    header = RtpHeader(
        payload_type=0, sequence_number=0, timestamp=0, ssrc=0, extension_profile=0x1000
    )
    raw = header.serialize()
    assert raw[0] == 0x90
    assert raw[12:] == b"\x10\x00\x00\x00"
    assert RtpHeader.parse(raw) == (header, 16)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "shorter than 12"),
        (b"\x80\x00" + b"\x00" * 9, "shorter than 12"),
        (b"\x40" + b"\x00" * 11, "version 1"),
        (b"\x82" + b"\x00" * 11 + b"\x00" * 4, "CSRCs"),
        (b"\x90" + b"\x00" * 11 + b"\x00\x00", "header extension"),
        (b"\x90" + b"\x00" * 11 + b"\x00\x00\x00\x02" + b"\x00" * 4, "overruns"),
        (b"\xa0" + b"\x00" * 11 + b"ab\x00", "padding count 0"),
        (b"\xa0" + b"\x00" * 11 + b"ab\x04", "padding count 4"),
    ],
)
def test_malformed_packets_raise_the_one_error(raw: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError, match=reason):
        RtpPacket.parse(raw)


def test_padding_may_fill_the_whole_payload() -> None:
    raw = b"\xa0" + b"\x00" * 11 + b"\x00\x00\x03"
    packet = RtpPacket.parse(raw)
    assert packet.payload == b""
    assert packet.padding == b"\x00\x00\x03"
    assert packet.serialize() == raw


def test_local_errors_are_plain_value_errors() -> None:
    with pytest.raises(ValueError, match="payload type"):
        RtpHeader(payload_type=128, sequence_number=0, timestamp=0, ssrc=0)
    with pytest.raises(ValueError, match="32-bit words"):
        RtpHeader(
            payload_type=0, sequence_number=0, timestamp=0, ssrc=0,
            extension_profile=1, extension_data=b"abc",
        )
    with pytest.raises(ValueError, match="padding"):
        RtpPacket(
            header=RtpHeader(payload_type=0, sequence_number=0, timestamp=0, ssrc=0),
            padding=b"\x00\x05",
        )


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_the_one_error(raw: bytes) -> None:
    try:
        packet = RtpPacket.parse(raw)
    except RtpParseError:
        return
    # Whatever parses serializes back to the very same bytes.
    assert packet.serialize() == raw


@given(
    st.binary(min_size=12, max_size=12),
    st.binary(max_size=64),
)
def test_valid_fixed_headers_round_trip(fixed: bytes, payload: bytes) -> None:
    raw = b"\x80" + fixed[1:] + payload  # V=2, no P/X/CC
    packet = RtpPacket.parse(raw)
    assert packet.payload == payload
    assert packet.serialize() == raw


# --- rewrite ---


def test_rewrite_patches_fixed_header_only() -> None:
    raw = (
        bytes([0x80 | 0x20 | 1, 0x80 | 101])
        + struct.pack("!HII", 65530, 0xFFFFFF00, 0x11111111)
        + struct.pack("!I", 99)
        + b"\x05\x0a\x00\xa0"
        + b"\x00\x02"
    )
    out = rewrite(raw, ssrc=0x22222222, payload_type=96, seq_offset=10, ts_offset=0x200)
    packet = RtpPacket.parse(out)
    assert packet.header.marker is True
    assert packet.header.payload_type == 96
    assert packet.header.sequence_number == 4  # 65530 + 10 wraps
    assert packet.header.timestamp == 0x100  # wraps modulo 2**32
    assert packet.header.ssrc == 0x22222222
    assert packet.header.csrcs == (99,)
    assert packet.payload == b"\x05\x0a\x00\xa0"
    assert packet.padding == b"\x00\x02"
    assert out[12:] == raw[12:]
    assert type(out) is bytes


def test_rewrite_negative_offsets_and_no_change() -> None:
    raw = bytes.fromhex("8000000500000010000000aa") + b"x"
    assert rewrite(raw) == raw
    out = rewrite(raw, seq_offset=-6, ts_offset=-0x11)
    header, _ = RtpHeader.parse(out)
    assert header.sequence_number == 0xFFFF
    assert header.timestamp == 0xFFFFFFFF
    assert header.ssrc == 0xAA
    assert rewrite(raw, payload_type=8)[1] == 8


def test_rewrite_rejects_short_or_foreign_packets() -> None:
    with pytest.raises(RtpParseError):
        rewrite(b"\x80\x00\x00")
    with pytest.raises(RtpParseError):
        rewrite(b"\x00" * 12)
    with pytest.raises(ValueError, match="payload type"):
        rewrite(CAPTURED_DTMF, payload_type=200)


@given(
    st.binary(min_size=12, max_size=40),
    st.integers(0, 127),
    st.integers(0, 0xFFFFFFFF),
    st.integers(-70000, 70000),
    st.integers(-(2**33), 2**33),
)
def test_rewrite_agrees_with_full_parse(
    body: bytes, pt: int, ssrc: int, seq_offset: int, ts_offset: int
) -> None:
    raw = bytes([0x80]) + body[1:]
    before, _ = RtpHeader.parse(raw)
    out = rewrite(raw, ssrc=ssrc, payload_type=pt, seq_offset=seq_offset, ts_offset=ts_offset)
    after, _ = RtpHeader.parse(out)
    assert after.payload_type == pt
    assert after.marker == before.marker
    assert after.ssrc == ssrc
    assert after.sequence_number == seq_add(before.sequence_number, seq_offset)
    assert after.timestamp == ts_add(before.timestamp, ts_offset)
    assert out[12:] == raw[12:]


# --- demux (RFC 5761 §4) ---


@pytest.mark.parametrize(
    ("second_octet", "expected"),
    [
        (200, True),  # SR
        (201, True),  # RR
        (202, True),  # SDES
        (203, True),  # BYE
        (204, True),  # APP
        (205, True),  # RTPFB
        (206, True),  # PSFB
        (192, True),
        (223, True),
        (0, False),  # PCMU
        (0x80 | 8, False),  # PCMA with marker
        (101, False),
        (0x80 | 101, False),
        (96, False),
        (127, False),
        (63, False),
        (191, False),
        (224, False),
    ],
)
def test_is_rtcp(second_octet: int, expected: bool) -> None:
    assert is_rtcp(bytes([0x80, second_octet, 0, 1])) is expected


def test_is_rtcp_on_tiny_datagrams() -> None:
    assert is_rtcp(b"") is False
    assert is_rtcp(b"\x80") is False


# --- serial numbers ---


def test_seq_arithmetic_wraps() -> None:
    assert seq_add(65535, 1) == 0
    assert seq_add(0, -1) == 65535
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(100, 40) == 60
    assert seq_diff(0x8000, 0) == -0x8000
    assert seq_gt(0, 65535) is True
    assert seq_gt(65535, 0) is False
    assert seq_gt(5, 5) is False
    assert seq_gt(10, 5) is True
    assert ts_add(0xFFFFFFFF, 1) == 0
    assert ts_add(0, -160) == 0xFFFFFF60


@given(st.integers(0, 0xFFFF), st.integers(-0x8000, 0x7FFF))
def test_seq_diff_inverts_seq_add(seq: int, delta: int) -> None:
    later = seq_add(seq, delta)
    assert seq_diff(later, seq) == delta
    assert seq_gt(later, seq) is (delta > 0)


# --- RFC 4733 telephone-event ---


def test_dtmf_end_packet_round_trip() -> None:
    raw = bytes([11, 0x80 | 7]) + struct.pack("!H", 1280)  # '#', E=1, volume 7
    event = DtmfEvent.parse(raw)
    assert event == DtmfEvent(event=11, end=True, volume=7, duration=1280)
    assert event.serialize() == raw


def test_dtmf_reserved_bit_ignored_on_receive_cleared_on_send() -> None:
    raw = bytes([1, 0x40 | 0x80 | 10, 0, 160])
    event = DtmfEvent.parse(raw)
    assert event == DtmfEvent(event=1, end=True, volume=10, duration=160)
    assert event.serialize() == bytes([1, 0x80 | 10, 0, 160])


@pytest.mark.parametrize("size", [0, 3, 5, 8])
def test_dtmf_wrong_size_raises(size: int) -> None:
    with pytest.raises(RtpParseError, match="telephone-event"):
        DtmfEvent.parse(b"\x00" * size)


def test_dtmf_local_range_checks() -> None:
    with pytest.raises(ValueError, match="volume"):
        DtmfEvent(event=1, volume=64)
    with pytest.raises(ValueError, match="event"):
        DtmfEvent(event=256)
    with pytest.raises(ValueError, match="duration"):
        DtmfEvent(event=1, duration=65536)


@given(st.binary(max_size=8))
def test_dtmf_any_bytes_parse_or_raise(raw: bytes) -> None:
    try:
        event = DtmfEvent.parse(raw)
    except RtpParseError:
        return
    assert event.serialize() == bytes([raw[0], raw[1] & 0xBF]) + raw[2:]


@given(st.integers(0, 0x3F), st.binary(max_size=120))
def test_any_version_2_bytes_parse_or_raise_the_one_error(flags: int, rest: bytes) -> None:
    # Forcing V=2 reaches the CSRC, extension and padding checks on most examples.
    raw = bytes([0x80 | flags]) + rest
    try:
        packet = RtpPacket.parse(raw)
    except RtpParseError:
        return
    assert packet.serialize() == raw
    assert packet.header.size + len(packet.payload) + len(packet.padding) == len(raw)
