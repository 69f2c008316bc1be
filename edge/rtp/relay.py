"""The relayed-media fast path: two legs, symmetric RTP latching, payload-type mapping, mute,
counters and the inactivity timeout. Sans-IO: datagrams and `now` come in, datagrams go out.

The UDP adapter owns the sockets: a datagram read on leg X's local RTP or RTCP port is passed to
`RelaySession.receive(X, ...)`; every returned `(data, addr)` is sent from the *other* leg's
local RTP port, or its RTCP port when `is_rtcp(data)` and that leg does not use rtcp-mux.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edge.rtp.packet import RTP_VERSION

Address = tuple[str, int]
Datagram = tuple[bytes, Address]

# Shortest datagrams we relay: an RTCP RR without report blocks (RFC 3550 §6.4.2) and the RTP
# fixed header (§5.1). Anything shorter, or not version 2, is dropped (and latches nothing).
_MIN_RTCP = 8
_MIN_RTP = 12


@dataclass(slots=True, kw_only=True, eq=False)
class RelayLeg:
    """One side of a relayed call: our local ports, the remote address its SDP gave, and what
    the packets from it taught us (the latched source, counters).

    `pt_map` maps payload types in packets *received from* this leg to the numbers the other
    leg negotiated (RFC 3264 §6.1 lets each side pick its own dynamic PT for a codec)."""

    name: str
    local_rtp_port: int
    local_rtcp_port: int
    sdp_rtp: Address
    sdp_rtcp: Address
    pt_map: dict[int, int] = field(default_factory=dict)
    muted: bool = False

    # Symmetric RTP (RFC 4961): where media towards this leg goes; the SDP address until the
    # first packet from the leg, then that packet's source.
    rtp_dest: Address = field(init=False)
    rtcp_dest: Address = field(init=False)
    rtp_source: Address | None = field(init=False, default=None)
    rtcp_source: Address | None = field(init=False, default=None)
    rtp_last_seen: float | None = field(init=False, default=None)
    rtcp_last_seen: float | None = field(init=False, default=None)

    packets_received: int = field(init=False, default=0)
    bytes_received: int = field(init=False, default=0)
    rtcp_packets_received: int = field(init=False, default=0)
    rtcp_bytes_received: int = field(init=False, default=0)
    dropped: int = field(init=False, default=0)
    relatches: int = field(init=False, default=0)

    peer: RelayLeg = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.rtp_dest = self.sdp_rtp
        self.rtcp_dest = self.sdp_rtcp

    @property
    def last_activity(self) -> float | None:
        """When the last accepted RTP or RTCP packet from this leg arrived (None: never)."""
        seen = [t for t in (self.rtp_last_seen, self.rtcp_last_seen) if t is not None]
        return max(seen) if seen else None

    def update_remote(self, sdp_rtp: Address, sdp_rtcp: Address) -> None:
        """A new offer/answer moved the leg's media: forget what was latched."""
        self.sdp_rtp = self.rtp_dest = sdp_rtp
        self.sdp_rtcp = self.rtcp_dest = sdp_rtcp
        self.rtp_source = self.rtcp_source = None
        self.rtp_last_seen = self.rtcp_last_seen = None


class RelaySession:
    """Relays RTP and RTCP between legs `a` and `b`.

    Latching: the first valid packet from a leg fixes its source (for RTP and, separately, for
    RTCP); packets from any other source are dropped until the latched source has been quiet for
    `relatch_after_s`, and the next packet from a new source then re-latches. So a NAT rebinding
    is followed after a short gap while a spoofer cannot steal a stream that is flowing. Known
    limit: a spoofer who races the leg's very first packet wins the first latch.
    """

    __slots__ = ("a", "b", "created", "relatch_after_s")

    def __init__(
        self,
        a: RelayLeg,
        b: RelayLeg,
        *,
        now: float,
        relatch_after_s: float = 1.0,
    ) -> None:
        self.a = a
        self.b = b
        a.peer = b
        b.peer = a
        self.created = now
        self.relatch_after_s = relatch_after_s

    def receive(self, leg: RelayLeg, data: bytes, addr: Address, now: float) -> list[Datagram]:
        """A datagram from `addr` arrived on `leg`'s local ports; return what to send.

        The common path (latched source, no PT mapping, peer not muted) does a handful of
        attribute look-ups and returns `data` itself, uncopied. Measured with timeit on this
        machine: about 0.17 µs per packet (tests/test_rtp_relay.py has the command)."""
        size = len(data)
        if size < _MIN_RTCP or data[0] >> 6 != RTP_VERSION:
            leg.dropped += 1
            return []
        pt = data[1] & 0x7F
        if 64 <= pt <= 95:  # RFC 5761 §4 demux: RTCP
            return self._receive_rtcp(leg, data, addr, now)
        if size < _MIN_RTP or (addr != leg.rtp_source and not self._latch_rtp(leg, addr, now)):
            leg.dropped += 1
            return []
        leg.rtp_last_seen = now
        leg.packets_received += 1
        leg.bytes_received += size
        peer = leg.peer
        if peer.muted:
            return []
        if leg.pt_map:
            mapped = leg.pt_map.get(pt)
            if mapped is not None:
                # Keep the marker bit, swap the 7-bit PT; the rest of the packet is untouched.
                data = bytes((data[0], (data[1] & 0x80) | mapped)) + data[2:]
        return [(data, peer.rtp_dest)]

    def _latch_rtp(self, leg: RelayLeg, addr: Address, now: float) -> bool:
        """Decide whether a packet from a source other than the latched one is accepted."""
        last = leg.rtp_last_seen
        if leg.rtp_source is not None:
            if last is not None and now - last < self.relatch_after_s:
                return False  # the latched stream is live: a spoof, or a stray duplicate
            leg.relatches += 1
        leg.rtp_source = leg.rtp_dest = addr
        return True

    def _receive_rtcp(
        self, leg: RelayLeg, data: bytes, addr: Address, now: float
    ) -> list[Datagram]:
        # RTCP latches on its own: without rtcp-mux it comes from another port (RFC 3550 §11),
        # and a NAT maps that port independently.
        if addr != leg.rtcp_source:
            last = leg.rtcp_last_seen
            if leg.rtcp_source is not None:
                if last is not None and now - last < self.relatch_after_s:
                    leg.dropped += 1
                    return []
                leg.relatches += 1
            leg.rtcp_source = leg.rtcp_dest = addr
        leg.rtcp_last_seen = now
        leg.rtcp_packets_received += 1
        leg.rtcp_bytes_received += len(data)
        # Mute drops media only: RTCP keeps the peer's statistics and liveness checks going.
        dest = leg.peer.rtcp_dest
        if not dest[1]:
            return []  # the peer's address is not known yet (its answer has not come)
        return [(data, dest)]

    @property
    def last_activity(self) -> float:
        """The latest accepted packet from either leg, or the session's creation."""
        seen = [self.created]
        for leg in (self.a, self.b):
            activity = leg.last_activity
            if activity is not None:
                seen.append(activity)
        return max(seen)

    def timed_out(self, now: float, timeout_s: float) -> bool:
        """True when neither leg has sent RTP or RTCP for `timeout_s` (the media timeout that
        ends a call whose peers vanished); RTCP counts, so a call on hold stays up."""
        return now - self.last_activity >= timeout_s
