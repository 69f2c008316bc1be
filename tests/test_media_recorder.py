"""The sans-IO stereo recorder: placement by RTP timestamp, channel alignment on arrival time,
gaps, reordering, re-anchoring (SSRC change, timestamp jump, sequence restart), ignored
payload types and a bounded buffer. All times are passed in; no sockets, no clock."""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
import pytest

from edge.media.g711 import alaw_encode, ulaw_decode, ulaw_encode
from edge.media.recorder import StereoRecorder

RATE = 8000
PTIME = 160  # samples per 20 ms packet
Stereo = npt.NDArray[np.int16]


def pkt(seq: int, ts: int, payload: bytes, *, pt: int = 0, ssrc: int = 0x1111,
        marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


def tone(freq: float, first: int, n: int = PTIME, amp: float = 8000.0) -> npt.NDArray[np.int16]:
    """Samples `first`..`first + n` of a sine that started at sample 0 (phase-continuous)."""
    t = np.arange(first, first + n) / RATE
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def tone_packets(freq: float, count: int, *, seq0: int = 100, ts0: int = 5000,
                 ssrc: int = 0x1111) -> list[bytes]:
    return [
        pkt(seq0 + i, ts0 + i * PTIME, ulaw_encode(tone(freq, i * PTIME)), ssrc=ssrc)
        for i in range(count)
    ]


def stereo(data: bytes) -> Stereo:
    assert len(data) % 4 == 0
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2)


def peak_hz(samples: npt.NDArray[np.int16]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


def run(recorder: StereoRecorder, feeds: list[tuple[float, int, bytes]],
        take_every: float = 0.1) -> Stereo:
    """Feed `(now, channel, packet)` in order of `now`, taking ready frames as a relay's flush
    task would; then finish."""
    out = bytearray()
    next_take = take_every
    for now, channel, packet in sorted(feeds, key=lambda f: f[0]):
        while now >= next_take:
            out += recorder.take_ready(next_take)
            next_take += take_every
        recorder.feed(channel, packet, now)
    out += recorder.finish()
    return stereo(bytes(out))


def test_two_tones_land_in_their_channels_aligned_on_arrival_with_a_gap() -> None:
    caller = tone_packets(1000, 100, ts0=1234)  # caller: 2 s of 1000 Hz from t = 0.1 s
    callee = tone_packets(440, 80, seq0=60000, ts0=0xFFFFFF00, ssrc=0x2222)  # ts wraps
    lost = set(range(20, 30))  # 200 ms lost in the callee's stream
    feeds = [(0.1 + 0.02 * i, 0, p) for i, p in enumerate(caller)]
    feeds += [(0.3 + 0.02 * i, 1, p) for i, p in enumerate(callee) if i not in lost]
    recorder = StereoRecorder(start=0.0)
    frames = run(recorder, feeds)

    assert len(frames) == 800 + 100 * PTIME  # the caller's stream ends last
    assert recorder.duration_s == pytest.approx(len(frames) / RATE)
    left, right = frames[:, 0], frames[:, 1]
    # Placed exactly: first packets at their arrival, each later one by timestamp.
    assert not left[:800].any() and not right[:2400].any()
    assert (left[800:960] == ulaw_decode(caller[0][12:])).all()
    assert (left[800 + 99 * PTIME: 800 + 100 * PTIME] == ulaw_decode(caller[99][12:])).all()
    assert (right[2400:2560] == ulaw_decode(callee[0][12:])).all()
    gap = slice(2400 + 20 * PTIME, 2400 + 30 * PTIME)
    assert not right[gap].any()  # the loss is silence, not shifted audio
    assert (right[gap.stop: gap.stop + PTIME] == ulaw_decode(callee[30][12:])).all()
    assert not right[2400 + 80 * PTIME:].any()
    # And the right tone in the right ear, no cross-talk.
    assert peak_hz(left[800:800 + 8000]) == pytest.approx(1000, abs=2)
    assert peak_hz(right[2400 + 30 * PTIME:]) == pytest.approx(440, abs=2)
    assert peak_hz(right[2400:gap.start]) == pytest.approx(440, abs=4)
    assert recorder.packets == 170 and recorder.late_dropped == 0 and recorder.reanchors == 0


def test_reordered_and_duplicated_packets_within_the_window_land_in_place() -> None:
    packets = tone_packets(1000, 50)
    in_order = run(StereoRecorder(start=0.0), [(0.02 * i, 0, p) for i, p in enumerate(packets)])
    # Swap neighbours, delay some by 300 ms (within the 0.5 s window), send a few twice.
    jumbled: list[tuple[float, int, bytes]] = []
    for i, p in enumerate(packets):
        arrival = 0.02 * (i + 1 if i % 2 == 0 else i - 1) if i < 48 else 0.02 * i
        if i % 7 == 3:
            arrival += 0.3
        jumbled.append((arrival, 0, p))
        if i % 11 == 5:
            jumbled.append((arrival + 0.05, 0, p))
    jumbled[0] = (0.0, 0, packets[0])  # the anchor packet arrives first, as in the reference
    recorder = StereoRecorder(start=0.0)
    assert (run(recorder, jumbled) == in_order).all()
    assert recorder.late_dropped == 0


def test_a_packet_later_than_the_window_is_dropped_not_misplaced() -> None:
    packets = tone_packets(1000, 60)
    recorder = StereoRecorder(start=0.0, window_s=0.2)
    feeds = [(0.02 * i, 0, p) for i, p in enumerate(packets) if i != 5]
    feeds.append((0.02 * 5 + 0.6, 0, packets[5]))  # 0.6 s late: its place was handed out
    frames = run(recorder, feeds)
    assert recorder.late_dropped == 1
    assert not frames[5 * PTIME: 6 * PTIME, 0].any()
    assert (frames[6 * PTIME: 7 * PTIME, 0] == ulaw_decode(packets[6][12:])).all()


def test_ssrc_change_reanchors_on_arrival() -> None:
    first = tone_packets(1000, 25, ts0=0, ssrc=0xA)  # 0.0 .. 0.5 s
    second = tone_packets(440, 25, seq0=7, ts0=0x7000_0000, ssrc=0xB)  # arrives from 1.0 s
    feeds = [(0.02 * i, 1, p) for i, p in enumerate(first)]
    feeds += [(1.0 + 0.02 * i, 1, p) for i, p in enumerate(second)]
    recorder = StereoRecorder(start=0.0)
    frames = run(recorder, feeds)
    assert recorder.reanchors == 1
    r = frames[:, 1]
    assert (r[: PTIME] == ulaw_decode(first[0][12:])).all()
    assert not r[25 * PTIME: 8000].any()
    assert (r[8000: 8000 + PTIME] == ulaw_decode(second[0][12:])).all()
    assert len(frames) == 8000 + 25 * PTIME
    assert not frames[:, 0].any()


def test_timestamp_jump_without_ssrc_change_reanchors_but_a_talkspurt_gap_does_not() -> None:
    packets = [pkt(i, i * PTIME, ulaw_encode(tone(1000, i * PTIME))) for i in range(10)]
    # Silence suppression: 1 s without packets, timestamps and arrival both move by 1 s.
    packets += [pkt(10 + i, (60 + i) * PTIME, ulaw_encode(tone(1000, 0)), marker=i == 0)
                for i in range(5)]
    # Then the sender's timestamp leaps by an hour while only 20 ms pass.
    packets += [pkt(15 + i, 3600 * RATE + i * PTIME, ulaw_encode(tone(500, 0)))
                for i in range(5)]
    arrivals = [0.02 * i for i in range(10)] + [1.2 + 0.02 * i for i in range(10)]
    recorder = StereoRecorder(start=0.0)
    frames = run(recorder, [(t, 0, p) for t, p in zip(arrivals, packets, strict=True)])
    left = frames[:, 0]
    assert recorder.reanchors == 1
    assert not left[10 * PTIME: 60 * PTIME].any()
    assert (left[60 * PTIME: 61 * PTIME] == ulaw_decode(packets[10][12:])).all()
    jump_at = int(1.3 * RATE)  # where packet 15 arrived
    assert (left[jump_at: jump_at + PTIME] == ulaw_decode(packets[15][12:])).all()
    assert len(frames) == jump_at + 5 * PTIME


def test_sequence_restart_needs_two_packets_in_a_row() -> None:
    # RFC 3550 §A.1: a lone packet with a wild sequence number is dropped; two in sequence
    # mean the sender restarted, and the stream re-anchors on the second one's arrival.
    recorder = StereoRecorder(start=0.0)
    body = ulaw_encode(tone(1000, 0))
    feeds = [(0.02 * i, 0, pkt(100 + i, i * PTIME, body)) for i in range(5)]
    feeds.append((0.12, 0, pkt(40000, 99, body)))  # stray
    feeds.append((0.14, 0, pkt(105, 5 * PTIME, body)))  # the stream goes on
    feeds.append((0.16, 0, pkt(20000, 777, body)))  # restart, first packet: dropped
    feeds.append((0.18, 0, pkt(20001, 777 + PTIME, body)))  # second: accepted, re-anchored
    frames = run(recorder, feeds)
    assert recorder.late_dropped == 2 and recorder.reanchors == 1
    assert recorder.packets == 7
    assert len(frames) == int(0.18 * RATE) + PTIME


def test_non_audio_payload_types_are_ignored() -> None:
    recorder = StereoRecorder(start=0.0)
    body = ulaw_encode(tone(1000, 0))
    dtmf = pkt(101, PTIME, b"\x05\x0a\x00\xa0", pt=101)  # RFC 4733 event, same SSRC/seq space
    cn = pkt(102, 2 * PTIME, b"\x40", pt=13)  # RFC 3389 comfort noise
    rtcp_rr = struct.pack("!BBHI", 0x80, 201, 1, 0x1111)
    for now, packet in [(0.0, pkt(100, 0, body)), (0.02, dtmf), (0.04, cn),
                        (0.05, rtcp_rr), (0.06, pkt(103, 3 * PTIME, body))]:
        recorder.feed(0, packet, now)
    frames = stereo(recorder.finish())
    assert recorder.ignored == 3 and recorder.packets == 2
    assert len(frames) == 4 * PTIME
    assert not frames[PTIME: 3 * PTIME].any()  # the event and CN left silence, not noise
    assert (frames[3 * PTIME:, 0] == ulaw_decode(body)).all()


def test_pcma_and_dynamic_payload_types_per_channel() -> None:
    samples = tone(440, 0)
    pcma = alaw_encode(samples)
    recorder = StereoRecorder(start=0.0, pt_codecs_by_channel=({}, {96: "PCMA"}))
    recorder.feed(0, pkt(1, 0, pcma, pt=96), 0.0)  # PT 96 means nothing on the left
    recorder.feed(1, pkt(1, 0, pcma, pt=96, ssrc=2), 0.0)
    recorder.feed(0, pkt(2, PTIME, pcma, pt=8), 0.02)
    frames = stereo(recorder.finish())
    assert recorder.ignored == 1
    assert np.abs(frames[:PTIME, 1].astype(int) - samples).max() < 300
    assert (frames[PTIME:, 0] == frames[:PTIME, 1]).all()
    assert not frames[:PTIME, 0].any()
    with pytest.raises(ValueError, match="no decoder"):
        StereoRecorder(pt_codecs={97: "opus"})
    with pytest.raises(ValueError, match="cannot carry"):
        StereoRecorder(pt_codecs={72: "PCMU"})


def test_header_extension_csrcs_and_padding_are_skipped() -> None:
    body = ulaw_encode(tone(1000, 0))
    header = struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0, 1, 0, 9)
    csrcs = struct.pack("!II", 1, 2)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xff\x00\x00"
    padding = b"\x00\x00\x03"
    recorder = StereoRecorder(start=0.0)
    recorder.feed(0, header + csrcs + extension + body + padding, 0.0)
    recorder.feed(0, b"\x80\x00\x00", 0.0)  # too short (PT 0)
    recorder.feed(0, b"\x40" + pkt(2, 0, body)[1:], 0.0)  # version 1
    recorder.feed(0, header[:1] + pkt(3, 0, b"\x00\xff")[1:], 0.0)  # padding overruns
    frames = stereo(recorder.finish())
    assert recorder.malformed == 3 and recorder.packets == 1
    assert (frames[:, 0] == ulaw_decode(body)).all()


def test_memory_stays_bounded_over_a_long_call_and_silence_is_emitted() -> None:
    recorder = StereoRecorder(start=0.0)
    initial = recorder.buffer_bytes
    body = ulaw_encode(tone(1000, 0))
    total = 0
    seconds = 120
    for i in range(seconds * 50):
        now = 0.02 * i
        recorder.feed(0, pkt(i, i * PTIME, body), now)
        recorder.feed(1, pkt(i, 7 + i * PTIME, body, ssrc=3), now + 0.003)
        if i % 25 == 0:
            total += len(recorder.take_ready(now))
    assert recorder.buffer_bytes == initial <= 64 * 1024
    # Nobody talks (a call on hold): the flush still moves time forward with silence.
    quiet = recorder.take_ready(seconds + 10.0)
    assert stereo(quiet)[-RATE:].any() is np.False_
    total += len(quiet) + len(recorder.finish())
    assert total == 4 * (seconds + 10 - 0.5) * RATE
    recorder.feed(0, pkt(0, 0, body), seconds + 11.0)  # after finish: ignored
    assert recorder.finish() == b"" and recorder.take_ready(seconds + 20.0) == b""
