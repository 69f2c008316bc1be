"""RFC 4733 telephone-event for DTMF: payload encode/decode, the sender that splices digits
into an outgoing RTP stream tick by tick, and the receiver that turns event packets (in any
order, with duplicates and retransmitted end packets) into each digit exactly once. Sans-IO:
the caller passes `now` and sends the bytes."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from edge.rtp.packet import DtmfEvent, RtpHeader, RtpParseError, seq_add, ts_add

__all__ = [
    "DIGITS",
    "DtmfDigit",
    "DtmfEvent",
    "DtmfReceiver",
    "DtmfSender",
    "decode_event",
    "digit_event",
    "encode_event",
    "event_digit",
]

# RFC 4733 §3.2 Table 7: DTMF named events 0-9, * = 10, # = 11, A-D = 12-15.
DIGITS = "0123456789*#ABCD"
_EVENT_OF = {digit: code for code, digit in enumerate(DIGITS)}

_MAX_DURATION = 0xFFFF
# A segment of a long event ends when its duration cannot grow by another update (§2.5.1.3);
# how close to 0xFFFF that is depends on the sender's update interval.
_SEGMENT_SLACK = 2048
_HALF_U32 = 1 << 31


def digit_event(digit: str) -> int:
    """The event code of a DTMF digit (`a`-`d` accepted as `A`-`D`); ValueError otherwise."""
    code = _EVENT_OF.get(digit.upper()) if len(digit) == 1 else None
    if code is None:
        raise ValueError(f"{digit!r} is not a DTMF digit (0-9 * # A-D)")
    return code


def event_digit(event: int) -> str | None:
    """The DTMF digit of an event code, or None for the non-DTMF events (16 and up)."""
    return DIGITS[event] if 0 <= event < len(DIGITS) else None


def encode_event(event: int, end: bool, volume: int, duration: int) -> bytes:
    """The 4-byte §2.3 payload: event, E bit, R=0, volume (0..63 = 0..-63 dBm0), duration in
    timestamp units. ValueError for a field out of range."""
    return DtmfEvent(event=event, end=end, volume=volume, duration=duration).serialize()


def decode_event(payload: bytes) -> DtmfEvent:
    """Parse a §2.3 payload; `RtpParseError` unless exactly 4 bytes (one event per packet;
    the §2.5.1.5 multi-event packing is not supported)."""
    return DtmfEvent.parse(payload)


def _ts_diff(a: int, b: int) -> int:
    """Signed distance `a - b` between two 32-bit RTP timestamps."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= _HALF_U32 else d


# --- sender ---


class DtmfSender:
    """Sends `digits` as telephone-event packets, one 20 ms tick at a time.

    Each tick the media clock calls `packets_for_tick()`; a non-empty list replaces that
    tick's audio packet (send the packets in order), an empty list is an inter-digit gap (send
    audio as usual). For every digit (§2.5.1.2): the first packet has the marker bit, every
    packet carries the event's start timestamp (the tick timestamp of its first packet) and the
    duration so far, which grows by one packetization interval per tick; the final packet has
    the E bit and is sent three times in all with the same duration (§2.5.1.4), each with its
    own sequence number. The next digit starts `gap_ms` (rounded up to whole ticks) after the
    last tone tick and never before the retransmissions are over.

    Splicing into an ongoing stream: pass the stream's next sequence number and this tick's
    timestamp to each call, and advance your sequence number by the number of packets returned
    (the timestamp by one tick as always). Without arguments the sender uses its own counters
    (`seq`, `timestamp`: the next values, started from the constructor's), which suits a stream
    that carries nothing else meanwhile. `done` is True once the last end packet went out.
    """

    __slots__ = (
        "_codes",
        "_end_ticks",
        "_event_ts",
        "_index",
        "_next_start",
        "_ptime",
        "_tick",
        "_total",
        "end_repeats",
        "gap_ticks",
        "payload_type",
        "seq",
        "ssrc",
        "timestamp",
        "volume",
    )

    def __init__(
        self,
        digits: str,
        *,
        payload_type: int,
        ssrc: int,
        seq: int = 0,
        timestamp: int = 0,
        clock_rate: int = 8000,
        ptime_ms: int = 20,
        duration_ms: int = 100,
        gap_ms: int = 50,
        volume: int = 10,
        end_repeats: int = 3,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise ValueError(f"payload type {payload_type} out of range 0-127")
        if ptime_ms <= 0 or duration_ms <= 0 or gap_ms < 0 or end_repeats < 1:
            raise ValueError("ptime_ms and duration_ms must be positive, gap_ms >= 0, "
                             "end_repeats >= 1")
        if not 0 <= volume <= 63:
            raise ValueError(f"volume {volume} out of range 0-63")
        self._codes = [digit_event(d) for d in digits]
        self._ptime = clock_rate * ptime_ms // 1000
        self._total = clock_rate * duration_ms // 1000
        if self._ptime <= 0 or self._total > _MAX_DURATION:
            # Longer events need §2.5.1.3 segments; a keypress never does.
            raise ValueError("duration must fit one event (at most 65535 timestamp units)")
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.seq = seq & 0xFFFF
        self.timestamp = timestamp & 0xFFFFFFFF
        self.volume = volume
        self.end_repeats = end_repeats
        self.gap_ticks = math.ceil(gap_ms / ptime_ms)
        # Ticks a tone spans: the last one carries the E bit with the full duration.
        self._end_ticks = math.ceil(self._total / self._ptime)
        self._index = 0  # digit being sent
        self._tick = 0  # ticks since this digit's first packet (or since the previous ended)
        self._next_start = 0  # tick (counted like `_tick`) at which the next digit may start
        self._event_ts = 0

    @property
    def done(self) -> bool:
        return self._index >= len(self._codes)

    @property
    def remaining(self) -> str:
        """Digits not fully sent yet (the current one included)."""
        return "".join(DIGITS[c] for c in self._codes[self._index:])

    def packets_for_tick(self, seq: int | None = None, timestamp: int | None = None) -> list[bytes]:
        """The packets to send in this tick; `seq`/`timestamp` default to the own counters."""
        seq = self.seq if seq is None else seq & 0xFFFF
        timestamp = self.timestamp if timestamp is None else timestamp & 0xFFFFFFFF
        packets: list[bytes] = []
        if not self.done:
            packets = self._tick_packets(seq, timestamp)
        self.seq = seq_add(seq, len(packets))
        self.timestamp = ts_add(timestamp, self._ptime)
        return packets

    def _tick_packets(self, seq: int, timestamp: int) -> list[bytes]:
        tick = self._tick
        self._tick += 1
        if tick < self._next_start:
            return []  # inter-digit gap
        tick -= self._next_start
        if tick == 0:
            # §2.5.1.2: the event timestamp is the instant the tone starts, for every packet.
            self._event_ts = timestamp
        # Until the tone's last tick the duration grows; then the E bit and the full duration.
        end = tick + 1 >= self._end_ticks
        duration = self._total if end else (tick + 1) * self._ptime
        header = RtpHeader(
            payload_type=self.payload_type,
            sequence_number=seq,
            timestamp=self._event_ts,
            ssrc=self.ssrc,
            marker=tick == 0,  # §2.5.1.2: M only on the first packet of an event
        )
        payload = encode_event(self._codes[self._index], end, self.volume, duration)
        if tick + 1 == self._end_ticks + self.end_repeats - 1:
            # Last retransmission of the end packet: the gap runs from the end of the tone.
            self._index += 1
            self._tick = 0
            self._next_start = max(0, self.gap_ticks - (self.end_repeats - 1))
        return [header.serialize() + payload]


# --- receiver ---


@dataclass(slots=True, frozen=True, kw_only=True)
class DtmfDigit:
    """A digit received: `timestamp` is the event's RTP timestamp, `duration` the longest
    duration reported (timestamp units), `ended` whether an end packet was seen (False: the
    event was closed by a newer event or by the timeout because its end packets were lost)."""

    digit: str
    timestamp: int
    duration: int
    ended: bool


class _Pending:
    __slots__ = ("base", "duration", "end", "event", "last_seen")

    def __init__(self, event: int, duration: int, end: bool, now: float) -> None:
        self.event = event
        self.base = 0  # duration of earlier segments of a long event (§2.5.2.3)
        self.duration = duration
        self.end = end
        self.last_seen = now


class DtmfReceiver:
    """Telephone-event packets of one SSRC in, digits out, each exactly once.

    Events are keyed by RTP timestamp (§2.5.2.2: packets with one timestamp report one event).
    A digit is emitted when its end packet arrives, when a packet with a newer timestamp shows
    that a new event started (the end packets were lost), or when nothing updated it for
    `timeout_s` (`poll(now)`, due at `get_timer()`). Retransmitted end packets and reordered
    updates of an event already emitted are ignored, as are packets older than `max_age_s`
    before the newest event seen. A new segment of a long event (§2.5.1.3: same event, timestamp
    later by about 0xFFFF, the previous segment's duration near 0xFFFF and not ended) continues
    it. Non-DTMF events (16 and up) are counted and ignored; call `reset()` when the stream's
    SSRC changes.
    """

    __slots__ = (
        "_finished",
        "_finished_order",
        "_max_age",
        "_newest",
        "_pending",
        "ignored",
        "late",
        "malformed",
        "packets",
        "timeout_s",
    )

    def __init__(
        self, *, timeout_s: float = 0.3, clock_rate: int = 8000, max_age_s: float = 4.0
    ) -> None:
        if timeout_s <= 0 or clock_rate <= 0 or max_age_s <= 0:
            raise ValueError("timeout_s, clock_rate and max_age_s must be positive")
        self.timeout_s = timeout_s
        self._max_age = int(max_age_s * clock_rate)
        self._pending: dict[int, _Pending] = {}
        # Timestamps of events already emitted, bounded (a keypress every ~100 ms for the
        # whole of `max_age_s` fits in 64).
        self._finished: set[int] = set()
        self._finished_order: deque[int] = deque()
        self._newest: int | None = None
        self.packets = 0
        self.malformed = 0
        self.ignored = 0
        self.late = 0

    @property
    def active(self) -> str | None:
        """The digit being held right now (started, not ended): for an early barge-in."""
        for pending in self._pending.values():
            if not pending.end:
                return event_digit(pending.event)
        return None

    def feed(self, timestamp: int, payload: bytes, now: float) -> list[DtmfDigit]:
        """One telephone-event packet's RTP timestamp and payload; the digits now complete."""
        try:
            event = decode_event(payload)
        except RtpParseError:
            self.malformed += 1
            return []
        self.packets += 1
        if event_digit(event.event) is None:
            self.ignored += 1
            return []
        out = self.poll(now)
        ts = timestamp & 0xFFFFFFFF
        pending = self._pending.get(ts)
        if pending is not None:
            pending.duration = max(pending.duration, event.duration)
            pending.last_seen = now
            if event.end:
                pending.end = True
                out.append(self._finish(ts))
            return out
        if ts in self._finished:
            return out  # a retransmitted end packet or a late update (§2.5.1.4)
        newest = self._newest
        if newest is not None and _ts_diff(ts, newest) < -self._max_age:
            self.late += 1
            return out
        segment = self._continued_segment(ts, event)
        if segment is not None:
            pending = self._pending.pop(segment)
            pending.base += _ts_diff(ts, segment)
            pending.duration = event.duration
            pending.last_seen = now
            pending.end = event.end
            self._pending[ts] = pending
            self._newest = ts
            if event.end:
                out.append(self._finish(ts))
            return out
        self._pending[ts] = _Pending(event.event, event.duration, event.end, now)
        if newest is None or _ts_diff(ts, newest) > 0:
            self._newest = newest = ts
        # §2.5.2.2: a newer event ends every older one still open (their ends were lost).
        for older in sorted(
            (t for t in self._pending if _ts_diff(t, newest) < 0), key=self._age_key
        ):
            out.append(self._finish(older))
        if event.end and ts in self._pending:
            out.append(self._finish(ts))
        return out

    def _continued_segment(self, ts: int, event: DtmfEvent) -> int | None:
        for start, pending in self._pending.items():
            if (
                pending.event == event.event
                and not pending.end
                and pending.duration >= _MAX_DURATION - _SEGMENT_SLACK
                and 0 < _ts_diff(ts, start) <= _MAX_DURATION
            ):
                return start
        return None

    def get_timer(self) -> float | None:
        """When `poll` next has something to time out (None: nothing open)."""
        if not self._pending:
            return None
        return min(p.last_seen for p in self._pending.values()) + self.timeout_s

    def poll(self, now: float) -> list[DtmfDigit]:
        """Emit the events not updated for `timeout_s` (their end packets were lost)."""
        expired = [
            ts for ts, p in self._pending.items() if now - p.last_seen >= self.timeout_s
        ]
        return [self._finish(ts) for ts in sorted(expired, key=self._age_key)]

    def reset(self) -> list[DtmfDigit]:
        """Forget the stream (new SSRC): open events are emitted, history is cleared."""
        out = [self._finish(ts) for ts in sorted(self._pending, key=self._age_key)]
        self._finished.clear()
        self._finished_order.clear()
        self._newest = None
        return out

    def _age_key(self, ts: int) -> int:
        return _ts_diff(ts, self._newest) if self._newest is not None else 0

    def _finish(self, ts: int) -> DtmfDigit:
        pending = self._pending.pop(ts)
        self._finished.add(ts)
        self._finished_order.append(ts)
        if len(self._finished_order) > 64:
            self._finished.discard(self._finished_order.popleft())
        digit = event_digit(pending.event)
        assert digit is not None  # only DTMF events are kept
        return DtmfDigit(
            digit=digit,
            timestamp=ts,
            duration=pending.base + pending.duration,
            ended=pending.end,
        )
