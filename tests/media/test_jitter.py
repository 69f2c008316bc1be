"""The adaptive jitter buffer, driven like the media engine drives it: packets pushed at their
arrival times, one pop per 20 ms tick of the media clock. Payloads carry their sequence number
so every test can see exactly what was played when."""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

import numpy as np
import pytest

from edge.rtp.jitter import JitterBuffer

TICK = 0.02
FRAME = 160


def rtp(seq: int, ts: int, *, ssrc: int = 0x1234, marker: bool = False, pt: int = 0,
        payload: bytes | None = None) -> bytes:
    body = struct.pack("!I", seq) if payload is None else payload
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + body


def label(payload: bytes | None) -> int | None:
    return None if payload is None else int(struct.unpack("!I", payload[:4])[0])


@dataclass
class Run:
    """What a simulation played: one entry per tick (the payload's packet number or None)."""

    buffer: JitterBuffer
    played: list[int | None] = field(default_factory=list)

    @property
    def numbers(self) -> list[int]:
        return [p for p in self.played if p is not None]


def simulate(arrivals: list[tuple[float, bytes]], *, ticks: int, phase: float = 0.007,
             buffer: JitterBuffer | None = None) -> Run:
    """Push `(arrival time, packet)`s and pop at `phase + k * TICK`, in time order (a push at
    the same instant as a pop goes first)."""
    events = [(t, 0, p) for t, p in arrivals] + [(phase + k * TICK, 1, b"") for k in range(ticks)]
    events.sort(key=lambda e: (e[0], e[1]))
    run = Run(buffer or JitterBuffer())
    for now, kind, packet in events:
        if kind == 0:
            run.buffer.push(packet, now)
        else:
            run.played.append(label(run.buffer.pop(now)))
    return run


def stream(count: int, *, start: float = 0.03, seq0: int = 1000, ts0: int = 50_000,
           delays: list[float] | None = None) -> list[tuple[float, bytes]]:
    """Packet i (numbered seq0 + i) sent at start + 20 ms * i, arriving after delays[i]."""
    return [
        (start + i * TICK + (delays[i] if delays else 0.0), rtp(seq0 + i, ts0 + FRAME * i))
        for i in range(count)
    ]


def test_steady_stream_plays_every_frame_in_order_after_the_target_delay() -> None:
    run = simulate(stream(100), ticks=120)
    first = run.played.index(1000)
    # First arrival 0.030 + 40 ms target -> the first tick at or after 0.070 is tick 4 (0.087).
    assert first == 4 and run.played[:first] == [None] * first
    assert run.played[first:first + 100] == list(range(1000, 1100))  # no gap, no repeat
    jb = run.buffer
    assert (jb.received, jb.played, jb.lost, jb.late, jb.duplicates) == (100, 100, 0, 0, 0)
    assert jb.target_ms == pytest.approx(40.0)
    assert jb.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert jb.delay_ms is not None and 40.0 <= jb.delay_ms < 60.0
    assert jb.ssrc == 0x1234 and jb.payload_type == 0


def test_reordered_and_duplicated_packets_play_once_in_order() -> None:
    arrivals = stream(60)
    for i in range(0, 60, 2):  # swap every pair: 1001 arrives before 1000, ...
        (t0, p0), (t1, p1) = arrivals[i], arrivals[i + 1]
        arrivals[i], arrivals[i + 1] = (t1, p0), (t0, p1)
    arrivals += [(t + 0.005, p) for t, p in arrivals[::3]]  # a third arrive twice
    run = simulate(arrivals, ticks=80)
    assert run.numbers == list(range(1000, 1060))
    assert run.buffer.duplicates == 20 and run.buffer.lost == 0


def test_a_lost_packet_is_one_none_at_its_tick() -> None:
    arrivals = [a for i, a in enumerate(stream(50)) if i != 20]
    run = simulate(arrivals, ticks=70)
    first = run.played.index(1000)
    assert run.played[first:first + 50] == [*range(1000, 1020), None, *range(1021, 1050)]
    assert run.buffer.lost == 1 and run.buffer.played == 49


def test_a_late_packet_is_dropped_without_upsetting_playout() -> None:
    delays = [0.0] * 80
    delays[20] = 0.1  # arrives ~100 ms late: after its frame was played
    run = simulate(stream(80, delays=delays), ticks=100)
    assert run.numbers == [n for n in range(1000, 1080) if n != 1020]
    jb = run.buffer
    assert jb.late == 1 and jb.lost == 1
    # One spike is not a trend: no frame inserted or skipped for it.
    assert jb.stretched == jb.shrunk == 0


def test_repeatedly_late_packets_make_room() -> None:
    """A path whose delay steps up by 50 ms: the first packets after the step are late, then
    playout moves back (frames inserted) and nothing more is lost."""
    delays = [0.0] * 60 + [0.05] * 140
    run = simulate(stream(200, delays=delays), ticks=230)
    jb = run.buffer
    assert jb.stretched >= 1 and jb.shrunk == 0
    assert run.numbers == sorted(run.numbers)
    assert set(range(1100, 1200)) <= set(run.numbers)  # settled: the second half is whole
    assert jb.late < 10


def test_sequence_and_timestamp_wrap() -> None:
    run = simulate(stream(100, seq0=65_500, ts0=0xFFFFFFFF - 40 * FRAME), ticks=120)
    assert run.numbers == list(range(65_500, 65_600))  # labels are unwrapped; seqs wrap
    assert (run.buffer.lost, run.buffer.late, run.buffer.resyncs) == (0, 0, 0)


def test_reordered_across_the_wrap_before_playout_starts() -> None:
    """Packets arriving out of order while the buffer fills, across the 16-bit wrap: playout
    starts from the earliest held (not the first to arrive) and goes in sequence order."""
    seqs = [0xFFFE, 0xFFFF, 0, 1, 2, 3]
    order = [3, 0, 1, 2, 5, 4]  # seq 1 arrives first, then 0xFFFE, 0xFFFF, 0, 3, 2
    arrivals = [(0.03 + 0.002 * k, rtp(seqs[i], 1000 + FRAME * i, payload=struct.pack(
        "!I", i))) for k, i in enumerate(order)]
    run = simulate(arrivals, ticks=12)
    assert run.numbers == [0, 1, 2, 3, 4, 5]  # labels: 0 is seq 0xFFFE
    assert (run.buffer.lost, run.buffer.late, run.buffer.duplicates) == (0, 0, 0)


@pytest.mark.parametrize("sigma_ms", [5.0, 15.0])
def test_adapts_to_jitter(sigma_ms: float) -> None:
    """Half-normal extra delay per packet (one-sided, as queues make it)."""
    rng = np.random.default_rng(int(sigma_ms))
    delays = list(np.abs(rng.normal(0.0, sigma_ms / 1000, 1000)))
    run = simulate(stream(1000, delays=delays), ticks=1100)
    jb = run.buffer
    assert jb.jitter_ms > sigma_ms / 3
    assert 40.0 <= jb.target_ms <= 60.0
    assert jb.late <= 10  # fewer than 1 % of the packets
    assert run.numbers == sorted(run.numbers)
    assert len(run.numbers) >= 990


def test_target_grows_with_jitter_and_stays_clamped() -> None:
    calm, wild = JitterBuffer(), JitterBuffer()
    rng = np.random.default_rng(3)
    for i in range(300):
        calm.push(rtp(i, FRAME * i), i * TICK)
        wild.push(rtp(i, FRAME * i), i * TICK + abs(rng.normal(0, 0.05)))
    assert calm.target_ms == pytest.approx(40.0)
    assert wild.jitter_ms > 20 and wild.target_ms == pytest.approx(60.0)


def test_silence_suppression_is_not_loss() -> None:
    """The sender stops for one second (same sequence numbers, timestamps jump by the pause)
    and resumes with the marker bit: silence meanwhile, no loss, no resync."""
    talk1 = stream(50)
    # Frames 50-99 are not sent: talk2 is frames 100-149, sent when they were due.
    talk2 = [(t + 2.0, rtp(1050 + i, 50_000 + FRAME * (100 + i), marker=i == 0))
             for i, (t, _) in enumerate(stream(50))]
    run = simulate(talk1 + talk2, ticks=200)
    assert run.numbers == list(range(1000, 1100))
    gap = run.played.index(1050) - run.played.index(1049) - 1
    assert gap == pytest.approx(50, abs=2)
    jb = run.buffer
    assert (jb.lost, jb.late, jb.resyncs) == (0, 0, 0)


def test_ssrc_change_resyncs_at_once() -> None:
    first = stream(30)
    # A new source takes over after the old one's last frame was played (a resync drops what
    # is still buffered).
    second = [(t + 0.7, rtp(7000 + i, 999_000 + FRAME * i, ssrc=0xBEEF,
                            payload=struct.pack("!I", 7000 + i)))
              for i, (t, _) in enumerate(stream(30))]
    run = simulate(first + second, ticks=80)
    assert run.numbers == [*range(1000, 1030), *range(7000, 7030)]
    assert run.buffer.resyncs == 1 and run.buffer.ssrc == 0xBEEF


@pytest.mark.parametrize("marker", [True, False])
def test_timestamp_jump_resyncs_on_marker_or_confirmation(marker: bool) -> None:
    first = stream(30)
    # Same SSRC, sequence goes on, but the timestamp leaps 10 minutes ahead.
    jumped = [(t + 0.7, rtp(1030 + i, 50_000 + 8000 * 600 + FRAME * i, marker=marker and i == 0))
              for i, (t, _) in enumerate(stream(30))]
    run = simulate(first + jumped, ticks=80)
    jb = run.buffer
    assert jb.resyncs == 1
    if marker:
        assert run.numbers == list(range(1000, 1060)) and jb.discarded == 0
    else:  # the first jumped packet is held suspect, the second confirms the jump
        assert run.numbers == [*range(1000, 1030), *range(1031, 1060)] and jb.discarded == 1


def test_a_lone_stray_packet_does_not_resync() -> None:
    arrivals = stream(40)
    arrivals.insert(20, (arrivals[20][0], rtp(30_000, 5, payload=b"\xff\xff\xff\xff")))
    run = simulate(arrivals, ticks=60)
    assert run.numbers == list(range(1000, 1040))
    assert (run.buffer.resyncs, run.buffer.discarded) == (0, 1)


@pytest.mark.parametrize("drift", [0.01, -0.01])
def test_clock_drift_is_absorbed(drift: float) -> None:
    """The sender's clock runs 1 % fast or slow: a frame is skipped or inserted now and then,
    and the delay stays near the target instead of growing or running dry."""
    arrivals = [(0.03 + i * TICK * (1 - drift), rtp(i, FRAME * i)) for i in range(1500)]
    run = simulate(arrivals, ticks=1600)
    jb = run.buffer
    assert jb.delay_ms is not None and 30.0 <= jb.delay_ms <= 70.0
    if drift > 0:
        assert 10 <= jb.shrunk <= 20 and jb.stretched == 0
    else:
        assert 10 <= jb.stretched <= 20 and jb.shrunk == 0
    assert run.numbers == sorted(run.numbers)


def test_header_parsing_and_malformed_packets() -> None:
    jb = JitterBuffer()
    csrc_ext_padding = (
        bytes([0x80 | 0x20 | 0x10 | 1, 8]) + struct.pack("!HII", 1, 0, 0x1234)
        + struct.pack("!I", 99)  # one CSRC
        + struct.pack("!HH", 0xBEDE, 1) + b"\x00" * 4  # one-word extension
        + b"PAYLOAD" + b"\x00\x00\x03"  # three bytes of padding
    )
    assert jb.push(csrc_ext_padding, 0.0)
    for bad in (b"\x80\x00", bytes(12), bytes([0x90]) + bytes(13),
                bytes([0xA0]) + bytes(10) + b"\x00\xff"):
        assert not jb.push(bad, 0.0)
    assert jb.malformed == 4
    assert jb.pop(0.1) == b"PAYLOAD" and jb.payload_type == 8


def test_overflow_drops_the_oldest() -> None:
    jb = JitterBuffer(max_packets=10)
    for i in range(15):
        jb.push(rtp(i, FRAME * i), 0.0)
    assert jb.buffered == 10 and jb.overflow == 5
    assert label(jb.pop(1.0)) == 5


def test_validation() -> None:
    with pytest.raises(ValueError):
        JitterBuffer(min_delay_ms=80, max_delay_ms=60)
    with pytest.raises(ValueError):
        JitterBuffer(frame_ms=0)


def test_cost_per_packet() -> None:
    """push + pop run for every packet of every terminated leg: measured ~2.5 us here."""
    packets = [rtp(i, FRAME * i, payload=bytes(160)) for i in range(5000)]
    jb = JitterBuffer()
    start = time.perf_counter()
    for i, packet in enumerate(packets):
        jb.push(packet, i * TICK + 0.001)
        jb.pop(i * TICK + 0.005)
    per_packet = (time.perf_counter() - start) / len(packets)
    assert jb.played >= 4990
    assert per_packet < 50e-6, f"{per_packet * 1e6:.1f} us per packet"


def test_talkspurt_start_realigns_playout_for_free() -> None:
    """After a pause the path is 70 ms slower: the marker bit lets playout move back before
    the talkspurt plays, so nothing is late and no frame has to be inserted mid-speech."""
    talk1 = stream(50)
    talk2 = [(t + 2.0 + 0.07, rtp(1050 + i, 50_000 + FRAME * (100 + i), marker=i == 0))
             for i, (t, _) in enumerate(stream(50))]
    run = simulate(talk1 + talk2, ticks=200)
    jb = run.buffer
    assert run.numbers == list(range(1000, 1100))
    assert (jb.realigned, jb.late, jb.stretched, jb.lost) == (1, 0, 0, 0)
    assert jb.delay_ms is not None and 40.0 <= jb.delay_ms < 60.0
    # Without the marker the same talkspurt starts late: frames are lost, then one inserted.
    unmarked = [(t, rtp(1050 + i, 50_000 + FRAME * (100 + i))) for i, (t, _) in
                enumerate(talk2)]
    late = simulate(talk1 + unmarked, ticks=200).buffer
    assert late.realigned == 0 and late.late >= 1 and late.stretched >= 1
