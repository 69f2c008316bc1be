"""A small adaptive jitter buffer for terminated legs: RTP packets in as they arrive, one
payload out per 20 ms media-clock tick (None for a lost or missing frame: the caller plays
silence or repeats the last frame). Sans-IO: `now` (seconds) is passed in.

Playout. The buffer waits the target delay after the first packet, then plays one frame per
tick: `pop` returns the packet whose timestamp falls in the current frame, taking packets in
sequence order (16-bit wrap), and advances the playout timestamp by one frame whether or not a
packet was there, so silence suppression (a timestamp gap without a sequence gap) costs
nothing. A packet whose frame was already played is late and dropped; a packet already held
is a duplicate.

Adaptation. The RFC 3550 §A.8 interarrival jitter J is estimated from every packet. The target
delay (arrival to playout) is `frame + 3 J`, clamped to `min_delay_ms`..`max_delay_ms` (40-60
ms by default); J enters it with a fast attack and a slow (~5 s) release so that the target
does not chase every swing. The delay of arriving packets (late ones included, smoothed like
J) is steered into `target - frame/2 .. target + frame`: at a talkspurt start (marker bit with
nothing buffered, RFC 3550 §5.1) by re-anchoring playout, which costs nothing audible; else at
most every `adjust_s` by inserting one frame (a None: packets come too close to their playout)
or skipping one (packets wait too long, e.g. the sender's clock runs fast).

Resync. An SSRC change restarts the buffer at once; a jump of the sequence number (beyond the
RFC 3550 §A.1 limits) or of the timestamp (a packet due more than `jump_s` away) restarts it
when the packet has the marker bit or the next packet confirms the jump; until then the packet
is discarded. A restart drops what is still buffered and waits the target delay again.

Assumes the peer sends `frame_ms` per packet (the negotiated ptime). Feed audio packets only:
telephone-event and comfort-noise packets belong to other consumers (their sequence numbers
then count as lost, which changes nothing else).
"""

from __future__ import annotations

import struct

from edge.rtp.packet import seq_add, seq_diff

__all__ = ["JitterBuffer"]

_HEADER = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")
_HALF_U32 = 1 << 31

# RFC 3550 §A.1: a forward step beyond MAX_DROPOUT or a step back beyond MAX_MISORDER is a jump.
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100


def _ts_diff(a: int, b: int) -> int:
    """Signed distance `a - b` between two 32-bit RTP timestamps."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= _HALF_U32 else d


# A buffered packet, by sequence number: (timestamp, payload type, payload). Plain tuples, not
# objects: one is made per packet of every terminated leg, and tuples of atoms are cheap to
# build and are not tracked by the garbage collector.
_Slot = tuple[int, int, bytes]


class JitterBuffer:
    """One inbound RTP stream, reordered and paced to the media clock (see the module doc).

    Counters: `received` (valid RTP pushed), `played`, `lost` (sequence numbers skipped at
    playout), `late`, `duplicates`, `discarded` (unconfirmed jumps), `overflow` (oldest
    dropped when `max_packets` are held), `malformed`, `empty` (ticks with nothing to play,
    loss or silence), `stretched` / `shrunk` (frames inserted / skipped to adapt), `realigned`
    (talkspurt re-anchors), `resyncs` (SSRC changes and confirmed jumps).
    """

    __slots__ = (
        "_anchor_now",
        "_anchor_ts",
        "_delay",
        "_frame",
        "_frame_s",
        "_held_jitter",
        "_jitter",
        "_last_adjust",
        "_max_seq",
        "_next_seq",
        "_play_ts",
        "_probation",
        "_rate",
        "_slots",
        "_ssrc",
        "_start_at",
        "_started",
        "_transit",
        "adjust_s",
        "discarded",
        "duplicates",
        "empty",
        "jump_s",
        "late",
        "lost",
        "malformed",
        "max_delay_s",
        "max_packets",
        "min_delay_s",
        "overflow",
        "payload_type",
        "played",
        "realigned",
        "received",
        "resyncs",
        "shrunk",
        "stretched",
    )

    # Stream state, (re)set by `_restart_stream`.
    _max_seq: int
    _next_seq: int
    _probation: int | None  # the sequence number that would confirm a jump
    _started: bool
    _start_at: float
    _play_ts: int  # timestamp of the next frame to play
    _anchor_now: float  # when the frame with timestamp `_anchor_ts` was (or is) due
    _anchor_ts: int
    _transit: float | None
    _delay: float | None
    _last_adjust: float

    def __init__(
        self,
        *,
        clock_rate: int = 8000,
        frame_ms: int = 20,
        min_delay_ms: float = 40.0,
        max_delay_ms: float = 60.0,
        max_packets: int = 50,
        jump_s: float = 1.0,
        adjust_s: float = 0.2,
    ) -> None:
        if clock_rate <= 0 or frame_ms <= 0 or max_packets <= 0:
            raise ValueError("clock_rate, frame_ms and max_packets must be positive")
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError("need 0 <= min_delay_ms <= max_delay_ms")
        self._rate = clock_rate
        self._frame = clock_rate * frame_ms // 1000
        self._frame_s = frame_ms / 1000
        self.min_delay_s = min_delay_ms / 1000
        self.max_delay_s = max_delay_ms / 1000
        self.max_packets = max_packets
        self.jump_s = jump_s
        self.adjust_s = adjust_s
        self._jitter = 0.0  # RFC 3550 §A.8 J, in seconds
        self._held_jitter = 0.0  # J with a fast attack and a slow release: sets the target
        self.payload_type: int | None = None  # PT of the last payload played
        self.received = self.played = self.lost = self.late = self.duplicates = 0
        self.discarded = self.overflow = self.malformed = self.empty = 0
        self.stretched = self.shrunk = self.realigned = self.resyncs = 0
        self._ssrc: int | None = None
        self._slots: dict[int, _Slot] = {}
        self._restart_stream(0, 0.0)

    # --- what the caller may look at ---

    @property
    def jitter_ms(self) -> float:
        """The RFC 3550 §A.8 interarrival jitter estimate."""
        return self._jitter * 1000

    @property
    def target_ms(self) -> float:
        """The playout delay aimed at: one frame plus three times the jitter (its recent peak,
        decaying over seconds), clamped to `min_delay_ms`..`max_delay_ms`."""
        return self._target() * 1000

    @property
    def delay_ms(self) -> float | None:
        """The smoothed arrival-to-playout delay of recent packets (None before playout)."""
        return None if self._delay is None else self._delay * 1000

    @property
    def buffered(self) -> int:
        """Packets held."""
        return len(self._slots)

    @property
    def ssrc(self) -> int | None:
        return self._ssrc

    def _target(self) -> float:
        target = self._frame_s + 3 * self._held_jitter
        if target < self.min_delay_s:
            return self.min_delay_s
        return self.max_delay_s if target > self.max_delay_s else target

    # --- input ---

    def push(self, packet: bytes, now: float) -> bool:
        """A datagram as received (RTP, one frame of audio); True if it was buffered."""
        size = len(packet)
        if size < 12 or packet[0] >> 6 != 2:
            self.malformed += 1
            return False
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(packet, 0)
        # RFC 3550 §5.1/§5.3.1: skip CSRCs and the header extension, drop the padding.
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if size < offset + 4:
                self.malformed += 1
                return False
            offset += 4 + 4 * _EXT.unpack_from(packet, offset)[1]
        end = size - packet[-1] if b0 & 0x20 else size
        if end < offset:
            self.malformed += 1
            return False
        self.received += 1
        marker = bool(b1 & 0x80)
        if self._ssrc != ssrc:
            # A new stream (RFC 3550 §8.2: the sender restarted or another one took over).
            if self._ssrc is not None:
                self.resyncs += 1
            self._ssrc = ssrc
            self._restart_stream(seq, now)
        elif self._is_jump(seq, ts, now):
            if not marker and seq != self._probation:
                self._probation = seq_add(seq, 1)
                self.discarded += 1
                return False
            self.resyncs += 1
            self._restart_stream(seq, now)
        self._measure_jitter(ts, now)
        if self._started:
            due = self._anchor_now + _ts_diff(ts, self._anchor_ts) / self._rate
            if marker and not self._slots and self._off_target(due - now):
                # A talkspurt starts after silence: the one free moment to move playout
                # (even when this packet would be late).
                self.realigned += 1
                self._started = False
                self._start_at = now + self._target()
                self._next_seq = seq
                self._delay = None
            elif _ts_diff(ts, self._play_ts) < 0:
                self.late += 1
                self._track_delay(due - now)  # a late packet pulls the delay estimate down
                return False
            else:
                self._track_delay(due - now)
        slots = self._slots
        if seq in slots:
            self.duplicates += 1
            return False
        if 0 < (seq - self._max_seq) & 0xFFFF < 0x8000:
            self._max_seq = seq
        if len(slots) >= self.max_packets:
            del slots[self._earliest()]
            self.overflow += 1
        slots[seq] = (ts, b1 & 0x7F, packet[offset:end])
        return True

    def _is_jump(self, seq: int, ts: int, now: float) -> bool:
        step = seq_diff(seq, self._max_seq)
        if step > _MAX_DROPOUT or step < -_MAX_MISORDER:
            return True
        if not self._started:
            return False
        due = self._anchor_now + _ts_diff(ts, self._anchor_ts) / self._rate
        return abs(due - now) > self.jump_s

    def _measure_jitter(self, ts: int, now: float) -> None:
        # RFC 3550 §A.8: J += (|D(i-1, i)| - J) / 16, D the change in relative transit time.
        transit = now - ts / self._rate
        if self._transit is not None:
            d = transit - self._transit
            # The timestamp wrapped (2**32 / rate seconds): not jitter.
            if abs(d) < self.jump_s:
                self._jitter += (abs(d) - self._jitter) / 16
                # The target follows J up at once and down slowly (~5 s), so that the
                # playout delay does not chase every swing of the estimate.
                if self._jitter > self._held_jitter:
                    self._held_jitter = self._jitter
                else:
                    self._held_jitter += (self._jitter - self._held_jitter) / 256
        self._transit = transit

    def _track_delay(self, delay: float) -> None:
        if self._delay is None:
            self._delay = delay
        else:
            self._delay += (delay - self._delay) / 16

    def _restart_stream(self, seq: int, now: float) -> None:
        self._slots.clear()
        self._max_seq = seq
        self._next_seq = seq
        self._probation = None
        self._started = False
        self._start_at = now + self._target()
        self._play_ts = 0
        self._anchor_now = now
        self._anchor_ts = 0
        self._transit = None
        self._delay = None
        self._last_adjust = now

    def _earliest(self) -> int:
        """The sequence number held that comes first from `_next_seq` on (or the latest
        before it): the least `seq_diff(seq, _next_seq)`, which plus 0x8000 is
        `(seq + 0x8000 - _next_seq) & 0xFFFF` (no function call per packet)."""
        slots = self._slots
        if len(slots) == 1:
            for seq in slots:
                return seq
        shift = 0x8000 - self._next_seq
        return (min([(seq + shift) & 0xFFFF for seq in slots]) - shift) & 0xFFFF

    # --- output ---

    def pop(self, now: float) -> bytes | None:
        """The payload to play in this tick, or None (nothing due: loss, silence, buffering)."""
        slots = self._slots
        if not self._started:
            if not slots or now < self._start_at:
                return None
            first = self._earliest()
            self._started = True
            self._play_ts = slots[first][0]
            self._next_seq = first
            self._last_adjust = now
        elif now - self._last_adjust >= self.adjust_s and self._adjust(now):
            return None
        payload: bytes | None = None
        while slots:
            seq = self._earliest()
            ts, pt, data = slots[seq]
            ahead = _ts_diff(ts, self._play_ts)
            if ahead < 0:  # its frame went by (left over from a skip)
                del slots[seq]
                self.late += 1
                continue
            if ahead < self._frame:
                del slots[seq]
                gap = seq_diff(seq, self._next_seq)
                if gap > 0:
                    self.lost += gap
                self._next_seq = (seq + 1) & 0xFFFF
                self._play_ts = ts  # follow the sender's grid
                self.payload_type = pt
                self.played += 1
                payload = data
            break
        if payload is None:
            self.empty += 1
        self._anchor_now, self._anchor_ts = now, self._play_ts
        self._play_ts = (self._play_ts + self._frame) & 0xFFFFFFFF
        return payload

    def _off_target(self, delay: float) -> bool:
        """The delay is outside the band playout is steered into."""
        target = self._target()
        return not target - self._frame_s / 2 <= delay <= target + self._frame_s

    def _adjust(self, now: float) -> bool:
        """Steer the delay towards the target; True if this tick is an inserted frame."""
        delay = self._delay
        if delay is None:
            return False
        target = self._target()
        if delay < target - self._frame_s / 2:
            # Packets arrive too close to (or after) their playout: play one frame later.
            self._last_adjust = now
            self.stretched += 1
            if self._delay is not None:
                self._delay += self._frame_s
            # The frame due now is played next tick: the anchor moves back by one frame.
            self._anchor_now = now
            self._anchor_ts = (self._play_ts - self._frame) & 0xFFFFFFFF
            self.empty += 1
            return True
        if delay > target + self._frame_s:
            # Packets wait longer than needed: skip one frame (drop it if it is here).
            self._last_adjust = now
            self.shrunk += 1
            self._delay = delay - self._frame_s
            if self._slots:
                seq = self._earliest()
                if 0 <= _ts_diff(self._slots[seq][0], self._play_ts) < self._frame:
                    del self._slots[seq]
                    self._next_seq = seq_add(seq, 1)
            self._play_ts = (self._play_ts + self._frame) & 0xFFFFFFFF
        return False
