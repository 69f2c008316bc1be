"""The asyncio side of the RTP relay: binds each leg's RTP/RTCP socket pair, feeds datagrams to
the sans-IO `RelaySession` and sends what it returns from the other leg's socket.

The per-packet path (`_LegProtocol.datagram_received`) is one `receive()` call, a PT test and one
`sendto` on a transport wired in advance (DESIGN §7: 5-7 µs per packet on uvloop is the budget,
almost all of it in the two syscalls).

Recording (issue 5 item 6) taps a call by swapping its protocols' `receive` for a `_RecordingTap`
that also feeds each accepted RTP packet to a `StereoRecorder`; calls not recorded run the plain
path untouched. One flush task per relay moves the final frames of every recording to its file.

Terminated legs (the media engine, edge/io/media_engine.py) hand a leg's datagrams to another
`receive` with `set_leg_receive`, and send from the leg's own RTP socket (`rtp_transport`); a
recording taps whatever `receive` is installed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from edge.io.recording import RecordingFile, RecordingResult
from edge.media.recorder import StereoRecorder
from edge.rtp.ports import PortAllocator, PortsExhausted
from edge.rtp.relay import Address, Datagram, RelayLeg, RelaySession

log = logging.getLogger("sdpbx.rtp.io")

__all__ = ["PortsExhausted", "RecordingResult", "RelayedCall", "RtpRelay"]

Receive = Callable[[RelayLeg, bytes, Address, float], list[Datagram]]


class _NotWired:
    """Stands in for the peer's transport until the four sockets of a session are wired, and
    after close: a datagram that arrives then is dropped, without a None test per packet."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        self.dropped = 0

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self.dropped += 1


class _LegProtocol(asyncio.DatagramProtocol):
    """One local socket of one leg: RTP or RTCP, same code (the session demuxes by PT)."""

    __slots__ = ("clock", "dropped", "leg", "peer_rtcp", "peer_rtp", "receive", "sent",
                 "transport")

    def __init__(self, session: RelaySession, leg: RelayLeg, clock: Callable[[], float],
                 not_wired: _NotWired) -> None:
        self.receive: Receive = session.receive
        self.leg = leg
        self.clock = clock
        self.peer_rtp: asyncio.DatagramTransport | _NotWired = not_wired
        self.peer_rtcp: asyncio.DatagramTransport | _NotWired = not_wired
        self.transport: asyncio.DatagramTransport | None = None
        self.sent = 0
        self.dropped = 0  # send errors reported by the OS (ICMP unreachable and the like)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport: no isinstance.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            for payload, dest in self.receive(self.leg, data, addr, self.clock()):
                # RFC 5761 §4 demux: RTCP leaves from the peer's RTCP port (RFC 3550 §11).
                if 64 <= (payload[1] & 0x7F) <= 95:
                    self.peer_rtcp.sendto(payload, dest)
                else:
                    self.peer_rtp.sendto(payload, dest)
                self.sent += 1
        except Exception:
            # A bug must cost one packet, never the socket: uvloop closes a UDP transport whose
            # protocol raises.
            log.exception("internal error relaying a datagram from %s:%s", addr[0], addr[1])

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: the peer is not listening (yet); media is lossy anyway.
        self.dropped += 1


class _Recording:
    """A call being recorded: the sans-IO recorder and the file its final frames go to."""

    __slots__ = ("errors", "file", "recorder")

    def __init__(self, recorder: StereoRecorder, file: RecordingFile) -> None:
        self.recorder = recorder
        self.file = file
        self.errors = 0


class _RecordingTap:
    """Stands in for `RelaySession.receive` on a recorded call's sockets: relays as usual, then
    feeds the datagram, as it arrived (before PT mapping), to the recorder if the session
    accepted it as RTP. Muted legs are still recorded: the tap records what arrives."""

    __slots__ = ("channel", "receive", "recording")

    def __init__(self, receive: Receive, channel: int, recording: _Recording) -> None:
        self.receive = receive
        self.channel = channel
        self.recording = recording

    def __call__(self, leg: RelayLeg, data: bytes, addr: Address, now: float) -> list[Datagram]:
        before = leg.packets_received
        out = self.receive(leg, data, addr, now)
        if leg.packets_received != before:
            try:
                self.recording.recorder.feed(self.channel, data, now)
            except Exception:
                # The call's audio matters more than its recording: relay on, log once.
                if not self.recording.errors:
                    log.exception("internal error recording a packet from %s:%s",
                                  addr[0], addr[1])
                self.recording.errors += 1
        return out


@dataclass(slots=True, eq=False, kw_only=True)
class RelayedCall:
    """One relayed session and the local ports it holds: `a_ports`/`b_ports` are the
    (RTP, RTCP) ports to write into the SDP sent to the *other* side.

    `recording_result` is set when a recording of the call is finalised (by `stop_recording`
    or `close_session`); it stays None if the call was never recorded or its file failed."""

    id: int
    session: RelaySession
    a_ports: tuple[int, int]
    b_ports: tuple[int, int]
    protocols: tuple[_LegProtocol, ...] = field(repr=False)
    closed: bool = False
    recording: _Recording | None = field(default=None, repr=False)
    recording_result: RecordingResult | None = None
    # `set_leg_receive`: the receive installed for a leg ("a"/"b") instead of the session's.
    leg_receive: dict[str, Receive] = field(default_factory=dict, repr=False)

    @property
    def recorded(self) -> bool:
        return self.recording is not None

    def leg(self, name: str) -> RelayLeg:
        """Leg "a" or "b" of the session."""
        if name not in ("a", "b"):
            raise ValueError(f"no leg {name!r}: a relayed call has legs 'a' and 'b'")
        return self.session.a if name == "a" else self.session.b

    def rtp_transport(self, name: str) -> asyncio.DatagramTransport | None:
        """The transport of leg `name`'s local RTP socket: media *towards* that leg leaves
        from it (symmetric RTP). None once the call is closed."""
        transport = self.protocols[0 if self.leg(name) is self.session.a else 2].transport
        return None if self.closed else transport

    def _receive_for(self, protocol: _LegProtocol) -> Receive:
        return self.leg_receive.get(protocol.leg.name, self.session.receive)


class RtpRelay:
    """All relayed sessions of one edge, their sockets and the port allocator."""

    def __init__(self, address: str, start_port: int, end_port: int, *,
                 relatch_after_s: float = 1.0, record_flush_s: float = 0.5,
                 record_window_s: float = 0.5) -> None:
        self.address = address
        self.ports = PortAllocator(start_port, end_port)
        self.relatch_after_s = relatch_after_s
        self.record_flush_s = record_flush_s
        self.record_window_s = record_window_s
        self._family = socket.AF_INET6 if ":" in address else socket.AF_INET
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._calls: dict[int, RelayedCall] = {}
        self._not_wired = _NotWired()
        self._recorded: dict[int, RelayedCall] = {}
        self._flush_task: asyncio.Task[None] | None = None
        # Totals of closed sessions, so counters never go backwards when a call ends.
        self._closed_relayed = 0
        self._closed_dropped = 0
        self.bind_failures = 0

    def now(self) -> float:
        """The clock the sessions are fed with (the loop's monotonic time)."""
        return self._loop.time()

    @property
    def sessions(self) -> list[RelayedCall]:
        return list(self._calls.values())

    # --- opening and closing ---------------------------------------------------------------

    def _bind_pair(self) -> tuple[int, socket.socket, socket.socket]:
        """Allocate a port pair and bind both sockets; a pair the OS refuses is skipped, each
        free pair tried at most once. Raises `PortsExhausted`."""
        for _ in range(max(1, self.ports.free_count)):
            port = self.ports.allocate()
            bound: list[socket.socket] = []
            try:
                for p in (port, port + 1):
                    sock = socket.socket(self._family, socket.SOCK_DGRAM)
                    bound.append(sock)
                    sock.setblocking(False)
                    sock.bind((self.address, p))
            except OSError as exc:
                for sock in bound:
                    sock.close()
                self.ports.refuse(port)
                self.bind_failures += 1
                log.info("RTP ports %d/%d not available (%s), trying another pair",
                         port, port + 1, exc.strerror or exc)
                continue
            return port, bound[0], bound[1]
        raise PortsExhausted("no RTP port pair of the range could be bound")

    async def open_session(
        self,
        a_sdp_addr: Address,
        b_sdp_addr: Address,
        *,
        a_sdp_rtcp: Address | None = None,
        b_sdp_rtcp: Address | None = None,
        a_pt_map: dict[int, int] | None = None,
        b_pt_map: dict[int, int] | None = None,
        a_rtcp_mux: bool = False,
        b_rtcp_mux: bool = False,
    ) -> RelayedCall:
        """Bind two port pairs and relay between leg a (whose SDP said `a_sdp_addr`) and leg b.

        RTCP goes to the SDP's `a=rtcp` address when given, else RTP port + 1 (RFC 3550 §11),
        or the RTP address itself for a leg using rtcp-mux (RFC 5761)."""
        sockets: list[socket.socket] = []
        ports: list[int] = []
        try:
            for _ in range(2):
                port, rtp_sock, rtcp_sock = self._bind_pair()
                ports.append(port)
                sockets += (rtp_sock, rtcp_sock)
        except BaseException:
            for sock in sockets:
                sock.close()
            for port in ports:
                self.ports.release(port)
            raise

        def rtcp_of(sdp: Address, given: Address | None, mux: bool) -> Address:
            if given is not None:
                return given
            return sdp if mux else (sdp[0], sdp[1] + 1)

        now = self._loop.time()
        a = RelayLeg(name="a", local_rtp_port=ports[0], local_rtcp_port=ports[0] + 1,
                     sdp_rtp=a_sdp_addr, sdp_rtcp=rtcp_of(a_sdp_addr, a_sdp_rtcp, a_rtcp_mux),
                     pt_map=dict(a_pt_map or {}))
        b = RelayLeg(name="b", local_rtp_port=ports[1], local_rtcp_port=ports[1] + 1,
                     sdp_rtp=b_sdp_addr, sdp_rtcp=rtcp_of(b_sdp_addr, b_sdp_rtcp, b_rtcp_mux),
                     pt_map=dict(b_pt_map or {}))
        session = RelaySession(a, b, now=now, relatch_after_s=self.relatch_after_s)
        clock = self._loop.time
        protocols = [_LegProtocol(session, leg, clock, self._not_wired) for leg in (a, a, b, b)]
        transports: list[asyncio.DatagramTransport] = []
        try:
            for sock, protocol in zip(sockets, protocols, strict=True):
                transport, _ = await self._loop.create_datagram_endpoint(
                    lambda protocol=protocol: protocol, sock=sock  # type: ignore[misc]
                )
                transports.append(transport)
        except BaseException:
            for transport in transports:
                transport.close()
            for sock in sockets[len(transports):]:
                sock.close()
            for port in ports:
                self.ports.release(port)
            raise
        a_rtp, a_rtcp, b_rtp, b_rtcp = transports
        # Outputs for leg b leave from b's sockets and the other way round; a rtcp-mux peer
        # gets its RTCP from our RTP port too.
        for protocol in protocols[:2]:
            protocol.peer_rtp = b_rtp
            protocol.peer_rtcp = b_rtp if b_rtcp_mux else b_rtcp
        for protocol in protocols[2:]:
            protocol.peer_rtp = a_rtp
            protocol.peer_rtcp = a_rtp if a_rtcp_mux else a_rtcp
        call = RelayedCall(id=next(self._ids), session=session,
                           a_ports=(ports[0], ports[0] + 1), b_ports=(ports[1], ports[1] + 1),
                           protocols=tuple(protocols))
        self._calls[call.id] = call
        return call

    def close_session(self, call: RelayedCall) -> None:
        """Close the call's four sockets and give its ports back (idempotent). A recording in
        progress is finalised first; its result is then in `call.recording_result`."""
        if call.closed:
            return
        self.stop_recording(call)
        call.closed = True
        self._calls.pop(call.id, None)
        for protocol in call.protocols:
            protocol.peer_rtp = protocol.peer_rtcp = self._not_wired
            self._closed_relayed += protocol.sent
            self._closed_dropped += protocol.dropped
            if protocol.transport is not None:
                protocol.transport.close()
        session = call.session
        self._closed_dropped += session.a.dropped + session.b.dropped
        # The transports close their sockets on a later loop pass: a pair released here is
        # reused last (FIFO), and a bind that comes too early is skipped by `_bind_pair`.
        self.ports.release(call.a_ports[0])
        self.ports.release(call.b_ports[0])

    def close(self) -> None:
        """Close every session (edge shutdown), finalising their recordings."""
        for call in list(self._calls.values()):
            self.close_session(call)
        if self._flush_task is not None:
            self._flush_task.cancel()
            self._flush_task = None

    # --- recording -------------------------------------------------------------------------

    def start_recording(
        self,
        call: RelayedCall,
        path: str,
        *,
        a_pt_codecs: Mapping[int, str] | None = None,
        b_pt_codecs: Mapping[int, str] | None = None,
    ) -> None:
        """Record the call from now on into a stereo WAV at `path` (leg a = caller = left,
        leg b = callee = right). PCMU (PT 0) and PCMA (PT 8) are known; `a_pt_codecs` /
        `b_pt_codecs` add the dynamic PTs each leg *sends* ({96: "PCMA"}, names as in
        `edge.media.g711.DECODERS`). The file is created here (OSError if it cannot be).
        Raises ValueError if the call is closed or already recorded."""
        if call.closed:
            raise ValueError(f"relayed call {call.id} is closed")
        if call.recording is not None:
            raise ValueError(f"relayed call {call.id} is already being recorded")
        recorder = StereoRecorder(
            window_s=self.record_window_s,
            start=self._loop.time(),
            pt_codecs_by_channel=(a_pt_codecs or {}, b_pt_codecs or {}),
        )
        recording = _Recording(recorder, RecordingFile(path))
        call.recording = recording
        call.recording_result = None
        for protocol in call.protocols:
            channel = 0 if protocol.leg is call.session.a else 1
            protocol.receive = _RecordingTap(call._receive_for(protocol), channel, recording)
        self._recorded[call.id] = call
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = self._loop.create_task(self._flush_loop())

    def stop_recording(self, call: RelayedCall) -> RecordingResult | None:
        """Stop recording the call, write the rest of its audio and close the WAV. Returns the
        result (also kept in `call.recording_result`), or None if the call was not being
        recorded or its file could not be closed (logged; a failed write keeps what the file
        already holds)."""
        recording = call.recording
        if recording is None:
            return None
        for protocol in call.protocols:
            protocol.receive = call._receive_for(protocol)
        call.recording = None
        self._recorded.pop(call.id, None)
        try:
            recording.file.append(recording.recorder.finish())
        except Exception:
            log.exception("recording %s lost its last frames", recording.file.path)
        try:
            # Even after a failed write the file is closed, and what it holds is kept.
            call.recording_result = recording.file.close()
        except Exception:
            log.exception("recording %s could not be finalised", recording.file.path)
            return None
        return call.recording_result

    # --- terminated legs (the media engine's hook) --------------------------------------------

    def set_leg_receive(self, call: RelayedCall, leg: str, receive: Receive | None) -> None:
        """Hand the datagrams arriving on leg `leg`'s RTP and RTCP sockets to `receive` instead
        of `call.session.receive`; None puts the session back (plain relaying resumes on the
        same sockets). `receive` has the session's signature and is expected to call
        `session.receive` itself for the leg's latching and counters, returning what is to be
        sent from the other leg's sockets (usually nothing). A recording in progress, or
        started later, taps whatever is installed. Does nothing on a closed call."""
        call.leg(leg)  # ValueError for a bad name
        if receive is None:
            call.leg_receive.pop(leg, None)
        else:
            call.leg_receive[leg] = receive
        if call.closed:
            return
        recording = call.recording
        for protocol in call.protocols:
            if protocol.leg.name != leg:
                continue
            base = call._receive_for(protocol)
            if recording is not None:
                channel = 0 if protocol.leg is call.session.a else 1
                protocol.receive = _RecordingTap(base, channel, recording)
            else:
                protocol.receive = base

    @property
    def recordings_active(self) -> int:
        return len(self._recorded)

    async def _flush_loop(self) -> None:
        """Every `record_flush_s`, move each recording's final frames to its file; ends when
        no call is recorded (`start_recording` starts it again)."""
        while self._recorded:
            await asyncio.sleep(self.record_flush_s)
            self.flush_recordings()

    def flush_recordings(self) -> None:
        """Write what each recording holds that is final by now (the flush task's work)."""
        now = self._loop.time()
        for call in list(self._recorded.values()):
            recording = call.recording
            if recording is None:
                continue
            try:
                recording.file.append(recording.recorder.take_ready(now))
            except Exception:
                # Disk full or gone (or a bug): the call goes on, its recording stops here.
                log.exception("recording %s failed; stopping it", recording.file.path)
                self.stop_recording(call)

    def timed_out_sessions(self, now: float, timeout_s: float) -> list[RelayedCall]:
        """Sessions with no accepted RTP or RTCP from either leg for `timeout_s` (the edge
        calls this periodically and hangs those calls up); `now` from `self.now()`."""
        return [c for c in self._calls.values() if c.session.timed_out(now, timeout_s)]

    # --- counters for /metrics -------------------------------------------------------------

    @property
    def packets_relayed(self) -> int:
        """Datagrams sent on, since start (closed sessions included)."""
        return self._closed_relayed + sum(
            p.sent for c in self._calls.values() for p in c.protocols
        )

    @property
    def packets_dropped(self) -> int:
        """Datagrams refused by the sessions (malformed, unlatched source) or lost to a send
        error or to a session not yet wired / already closed, since start."""
        live = 0
        for call in self._calls.values():
            live += call.session.a.dropped + call.session.b.dropped
            live += sum(p.dropped for p in call.protocols)
        return self._closed_dropped + live + self._not_wired.dropped
