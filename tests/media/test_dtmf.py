"""RFC 4733 telephone-event: payload vectors, the tick-driven sender (markers, durations, three
end packets, gaps, splicing) and the receiver (each digit once, whatever the network does)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.rtp.dtmf import (
    DtmfDigit,
    DtmfEvent,
    DtmfReceiver,
    DtmfSender,
    decode_event,
    digit_event,
    encode_event,
    event_digit,
)
from edge.rtp.packet import RtpPacket, RtpParseError, seq_add

TICK = 0.02
PT = 101
SSRC = 0x6D1A3C2B


def parsed(packets: list[bytes]) -> list[RtpPacket]:
    return [RtpPacket.parse(p) for p in packets]


def run_sender(sender: DtmfSender, max_ticks: int = 500) -> list[tuple[int, RtpPacket]]:
    """(tick index, packet) for everything the sender emits until done."""
    out: list[tuple[int, RtpPacket]] = []
    for tick in range(max_ticks):
        if sender.done:
            return out
        out.extend((tick, p) for p in parsed(sender.packets_for_tick()))
    raise AssertionError("sender never finished")


# --- payload (§2.3) ---


def test_payload_vectors() -> None:
    # Digit 5, E=0, volume 10, duration 160 (the packet in tests/test_rtp_packet.py).
    assert encode_event(5, False, 10, 160) == bytes.fromhex("050a00a0")
    # '#' (11), E=1, volume 63, duration 800 = 0x0320.
    assert encode_event(11, True, 63, 800) == bytes.fromhex("0bbf0320")
    assert decode_event(bytes.fromhex("0bbf0320")) == DtmfEvent(
        event=11, end=True, volume=63, duration=800
    )
    # §2.3.4: the R bit is ignored by receivers.
    assert decode_event(bytes.fromhex("0bff0320")).volume == 63


@pytest.mark.parametrize("payload", [b"", b"\x05\x0a\x00", b"\x05\x0a\x00\xa0\x00"])
def test_decode_rejects_wrong_sizes(payload: bytes) -> None:
    with pytest.raises(RtpParseError):
        decode_event(payload)


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(ValueError, match="volume"):
        encode_event(1, False, 64, 0)
    with pytest.raises(ValueError, match="duration"):
        encode_event(1, False, 10, 0x10000)


def test_digit_event_mapping() -> None:
    assert [digit_event(d) for d in "0123456789*#ABCD"] == list(range(16))
    assert digit_event("b") == 13
    assert event_digit(11) == "#"
    assert event_digit(16) is None  # flash is not a DTMF digit
    for bad in ("E", "", "12", "p"):
        with pytest.raises(ValueError, match="DTMF digit"):
            digit_event(bad)


# --- sender (§2.5.1) ---


def test_one_digit_packet_by_packet() -> None:
    sender = DtmfSender("5", payload_type=PT, ssrc=SSRC, seq=1000, timestamp=16000)
    sent = run_sender(sender)
    assert [tick for tick, _ in sent] == list(range(7))  # one packet per 20 ms tick
    headers = [p.header for _, p in sent]
    events = [decode_event(p.payload) for _, p in sent]
    assert [h.marker for h in headers] == [True] + [False] * 6
    assert [h.sequence_number for h in headers] == list(range(1000, 1007))
    assert {h.timestamp for h in headers} == {16000}  # the event's start, in every packet
    assert {(h.payload_type, h.ssrc) for h in headers} == {(PT, SSRC)}
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {(e.event, e.volume) for e in events} == {(5, 10)}
    assert sender.done and sender.remaining == ""
    # The own counters continue the stream: 7 packets used, 7 ticks elapsed.
    assert (sender.seq, sender.timestamp) == (1007, 16000 + 7 * 160)
    assert sender.packets_for_tick() == []


def test_digits_are_separated_by_the_gap() -> None:
    sender = DtmfSender("12#", payload_type=PT, ssrc=SSRC, timestamp=0)
    sent = run_sender(sender)
    starts = [(tick, p.header.timestamp) for tick, p in sent if p.header.marker]
    assert starts == [(0, 0), (8, 8 * 160), (16, 16 * 160)]
    assert [decode_event(p.payload).event for _, p in sent if p.header.marker] == [1, 2, 11]
    # Tone ends at tick 5 (100 ms); the next starts at tick 8: a 60 ms gap (>= 50 ms), and the
    # gap ticks 7 carry nothing (the caller sends audio there).
    assert 7 not in {tick for tick, _ in sent}
    seqs = [p.header.sequence_number for _, p in sent]
    assert seqs == list(range(seqs[0], seqs[0] + 21))  # no holes: gap ticks use no numbers


def test_custom_duration_and_gap() -> None:
    sender = DtmfSender("9A", payload_type=96, ssrc=1, duration_ms=90, gap_ms=0, volume=7)
    sent = run_sender(sender)
    durations = [decode_event(p.payload).duration for _, p in sent]
    assert durations == [160, 320, 480, 640, 720, 720, 720] * 2  # 90 ms = 720 samples
    # gap 0: the next digit right after the retransmissions.
    assert [tick for tick, p in sent if p.header.marker] == [0, 7]
    assert {decode_event(p.payload).volume for _, p in sent} == {7}


def test_splices_into_an_audio_stream_across_the_wrap() -> None:
    """The caller owns seq/timestamp: DTMF ticks replace audio ticks, numbering stays gapless
    and each event carries the timestamp of the tick it started in."""
    sender = DtmfSender("78", payload_type=PT, ssrc=SSRC)
    seq, ts = 65530, 0xFFFFFFFF - 3 * 160 + 1
    stream: list[tuple[int, int, str]] = []  # (seq, ts, kind)
    for _ in range(3):  # audio before
        stream.append((seq, ts, "audio"))
        seq, ts = seq_add(seq, 1), (ts + 160) & 0xFFFFFFFF
    first_dtmf_ts = ts
    while not sender.done:
        packets = parsed(sender.packets_for_tick(seq, ts))
        if not packets:
            stream.append((seq, ts, "audio"))  # the gap carries audio
            seq = seq_add(seq, 1)
        for p in packets:
            stream.append((p.header.sequence_number, p.header.timestamp, "dtmf"))
            seq = seq_add(seq, 1)
        ts = (ts + 160) & 0xFFFFFFFF
    seqs = [s for s, _, _ in stream]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(len(stream))]
    dtmf_ts = sorted({t for _, t, kind in stream if kind == "dtmf"})
    assert first_dtmf_ts == 0  # the start tick wrapped to 0
    assert dtmf_ts == [0, 8 * 160]
    assert [k for _, _, k in stream].count("audio") == 3 + 1  # tick 7 is the only gap


def test_sender_validation() -> None:
    with pytest.raises(ValueError, match="DTMF digit"):
        DtmfSender("12x", payload_type=PT, ssrc=1)
    with pytest.raises(ValueError, match="65535"):
        DtmfSender("1", payload_type=PT, ssrc=1, duration_ms=9000)
    with pytest.raises(ValueError, match="payload type"):
        DtmfSender("1", payload_type=128, ssrc=1)
    assert DtmfSender("", payload_type=PT, ssrc=1).done


# --- receiver (§2.5.2) ---


def sent_stream(digits: str) -> list[tuple[float, int, bytes]]:
    """(send time, RTP timestamp, payload) of every packet the sender emits for `digits`."""
    sender = DtmfSender(digits, payload_type=PT, ssrc=SSRC, timestamp=123456)
    return [
        (tick * TICK, p.header.timestamp, p.payload) for tick, p in run_sender(sender)
    ]


def receive(
    packets: list[tuple[float, int, bytes]], receiver: DtmfReceiver | None = None
) -> list[DtmfDigit]:
    rx = receiver or DtmfReceiver()
    out: list[DtmfDigit] = []
    last = 0.0
    for now, ts, payload in packets:
        last = max(last, now)
        out += rx.feed(ts, payload, last)
    out += rx.poll(last + 10.0)
    assert rx.get_timer() is None
    return out


def test_receiver_emits_each_digit_once_on_its_end() -> None:
    rx = DtmfReceiver()
    emitted: list[tuple[int, DtmfDigit]] = []
    for index, (now, ts, payload) in enumerate(sent_stream("159#")):
        emitted += [(index, d) for d in rx.feed(ts, payload, now)]
    # Emitted on the first end packet (index 4 of each 7-packet digit), never again.
    assert [i for i, _ in emitted] == [4, 11, 18, 25]
    assert [d.digit for _, d in emitted] == list("159#")
    assert all(d.ended and d.duration == 800 for _, d in emitted)
    assert [d.timestamp for _, d in emitted] == [123456 + 8 * 160 * k for k in range(4)]
    assert rx.packets == 28


def test_lost_end_packets_closed_by_next_event_or_timeout() -> None:
    packets = [p for p in sent_stream("12") if not decode_event(p[2]).end]
    rx = DtmfReceiver(timeout_s=0.3)
    out: list[DtmfDigit] = []
    for now, ts, payload in packets:
        out += rx.feed(ts, payload, now)
    # '1' was closed by '2''s first packet; '2' is still open until the timeout.
    assert [(d.digit, d.ended, d.duration) for d in out] == [("1", False, 640)]
    assert rx.active == "2"
    last_seen = packets[-1][0]
    assert rx.get_timer() == pytest.approx(last_seen + 0.3)
    assert rx.poll(last_seen + 0.29) == []
    late = rx.poll(last_seen + 0.3)
    assert [(d.digit, d.ended, d.duration) for d in late] == [("2", False, 640)]
    assert rx.active is None and rx.get_timer() is None


def test_retransmitted_and_late_packets_after_emission_are_ignored() -> None:
    packets = sent_stream("4")
    rx = DtmfReceiver(timeout_s=0.1)
    out = receive(packets[:3], rx)  # timed out after 3 updates
    assert [(d.digit, d.ended) for d in out] == [("4", False)]
    # The rest (including the three end packets) arrives much later: nothing new.
    assert receive(packets[3:], rx) == []


@settings(max_examples=200, deadline=None)
@given(
    digits=st.text(alphabet="0123456789*#ABCD", min_size=1, max_size=6),
    data=st.data(),
)
def test_any_order_duplicates_and_loss_give_each_digit_once(
    digits: str, data: st.DataObject
) -> None:
    packets = sent_stream(digits)
    kept = [p for p in packets if data.draw(st.integers(0, 4), label="fate") != 0]  # ~20% loss
    dupes = [p for p in kept if data.draw(st.booleans(), label="dup")]
    stream = kept + dupes
    # Network delay up to 50 ms per packet (reordering across ~3 ticks), arrival order by it.
    arrivals = sorted(
        (now + data.draw(st.integers(0, 50), label="delay") / 1000, i, ts, payload)
        for i, (now, ts, payload) in enumerate(stream)
    )
    out = receive([(now, ts, payload) for now, _, ts, payload in arrivals])
    surviving = sorted({ts for _, ts, _ in kept})
    expected = [digits[(ts - 123456) // (8 * 160)] for ts in surviving]
    assert [d.digit for d in out] == expected
    assert [d.timestamp for d in out] == surviving


def test_long_event_segments_are_one_digit() -> None:
    rx = DtmfReceiver()
    out = rx.feed(1000, encode_event(5, False, 10, 0xFFFF - 160), 0.0)
    out += rx.feed(1000, encode_event(5, False, 10, 0xFFFF), 0.02)
    # §2.5.1.3: the next segment starts where the first ended, the same event.
    out += rx.feed(1000 + 0xFFFF, encode_event(5, False, 10, 160), 0.04)
    out += rx.feed(1000 + 0xFFFF, encode_event(5, True, 10, 800), 0.06)
    assert out == [DtmfDigit(digit="5", timestamp=1000 + 0xFFFF, duration=0xFFFF + 800,
                             ended=True)]


def test_malformed_non_dtmf_and_stale_packets() -> None:
    rx = DtmfReceiver(max_age_s=1.0)
    assert rx.feed(0, b"\x05\x0a\x00", 0.0) == []
    assert rx.feed(0, encode_event(16, True, 10, 800), 0.0) == []  # flash: not a digit
    assert (rx.malformed, rx.ignored) == (1, 1)
    out = rx.feed(100000, encode_event(3, True, 10, 800), 0.0)
    assert [d.digit for d in out] == ["3"]
    # 2 s older than the newest event: a stale packet, not a new digit.
    assert rx.feed(100000 - 16000, encode_event(7, True, 10, 800), 0.0) == []
    assert rx.late == 1
    # Within max_age but older and unknown: a digit whose earlier packets were lost.
    assert [d.digit for d in rx.feed(100000 - 4000, encode_event(8, True, 10, 800), 0.0)] == [
        "8"
    ]


def test_timestamp_wrap_orders_events() -> None:
    rx = DtmfReceiver()
    assert rx.feed(0xFFFFFF00, encode_event(1, False, 10, 160), 0.0) == []
    # The next event's timestamp wrapped past 0: it is newer and closes the first.
    out = rx.feed(0x00000100, encode_event(2, False, 10, 160), 0.1)
    assert [d.digit for d in out] == ["1"]
    assert rx.active == "2"


def test_reset_emits_open_events_and_forgets_history() -> None:
    rx = DtmfReceiver()
    assert rx.feed(500, encode_event(6, True, 10, 800), 0.0)[0].digit == "6"
    assert rx.feed(500, encode_event(6, True, 10, 800), 0.01) == []  # retransmission
    rx.feed(2000, encode_event(0, False, 10, 160), 0.02)
    assert [d.digit for d in rx.reset()] == ["0"]
    # New SSRC: the same timestamp is a new event now.
    assert [d.digit for d in rx.feed(500, encode_event(6, True, 10, 800), 0.03)] == ["6"]
