"""The stereo call recorder: raw RTP from two parties in, 8 kHz 16-bit stereo frames out
(channel 0 = caller = left, channel 1 = callee = right). Sans-IO: `now` is passed in.

Each channel is a timeline in samples since the recording's start. A stream (one SSRC) is
anchored where its first packet *arrived*; its later packets are placed by RTP timestamp from
that anchor, so jitter and reordering do not move audio, gaps (loss, silence suppression) are
silence, and both channels line up on the wall clock. Only a jitter window is held: samples
older than `now - window_s` are final and leave through `take_ready`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from edge.media.g711 import DECODERS, Samples

__all__ = ["StereoRecorder"]

CHANNELS = 2
FRAME_BYTES = 4  # one int16 sample per channel

_HEADER = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")

# RFC 3550 §A.1 sequence validation: a forward step below MAX_DROPOUT is the stream going on,
# a step back within MAX_MISORDER a late packet, anything else a jump that must repeat (two
# consecutive packets) before we believe the sender restarted.
_MAX_DROPOUT = 3000
_MAX_MISORDER = 100
_SEQ_MOD = 1 << 16

# RTP/AVP static payload types we decode (RFC 3551 §6, Table 4).
_STATIC_PTS: dict[int, str] = {0: "PCMU", 8: "PCMA"}


class _Stream:
    """What one channel knows about the stream it is receiving."""

    __slots__ = ("anchor_pos", "anchor_ts", "bad_seq", "max_seq", "ssrc")

    def __init__(self, ssrc: int, seq: int, ts: int, pos: int) -> None:
        self.ssrc = ssrc
        self.max_seq = seq
        self.bad_seq = -1
        self.anchor_ts = ts
        self.anchor_pos = pos

    def reanchor(self, seq: int, ts: int, pos: int) -> None:
        self.max_seq = seq
        self.bad_seq = -1
        self.anchor_ts = ts
        self.anchor_pos = pos


class StereoRecorder:
    """Mixes two RTP streams into one stereo timeline, bounded to a jitter window.

    `feed(channel, packet, now)` takes raw datagrams as received: PCMU (PT 0) and PCMA (PT 8)
    are decoded, `pt_codecs` adds dynamic PTs for both channels and `pt_codecs_by_channel[c]`
    for channel c only (names as in `g711.DECODERS`); RTCP, telephone-event, comfort noise and
    other PTs are counted and ignored. `take_ready(now)` returns the interleaved little-endian
    int16 frames that are final; `finish()` the rest. `start` is the recording's time zero on
    the `now` clock (default: the first `feed`). The recorder does not resample: the codecs
    must run at `sample_rate` (G.711 and 8 kHz L16 do at 8000).

    Memory: the buffer spans from the last `take_ready` to at most `window_s` past the newest
    arrival, so it stays a few tens of KB when `take_ready` runs every window or so.
    """

    __slots__ = (
        "_base",
        "_buf",
        "_decoders",
        "_ended",
        "_finished",
        "_limit",
        "_streams",
        "frames_out",
        "ignored",
        "late_dropped",
        "malformed",
        "packets",
        "reanchors",
        "sample_rate",
        "start",
        "window_s",
    )

    def __init__(
        self,
        sample_rate: int = 8000,
        *,
        window_s: float = 0.5,
        start: float | None = None,
        pt_codecs: Mapping[int, str] | None = None,
        pt_codecs_by_channel: Sequence[Mapping[int, str]] = (),
    ) -> None:
        if sample_rate <= 0 or window_s <= 0:
            raise ValueError("sample_rate and window_s must be positive")
        self.sample_rate = sample_rate
        self.window_s = window_s
        self.start = start
        if len(pt_codecs_by_channel) > CHANNELS:
            raise ValueError(f"pt_codecs_by_channel has more than {CHANNELS} entries")
        self._decoders = tuple(
            _decoders(
                pt_codecs,
                pt_codecs_by_channel[ch] if ch < len(pt_codecs_by_channel) else None,
            )
            for ch in range(CHANNELS)
        )
        # How far (in samples) a packet may land from where its arrival time puts it.
        self._limit = int(window_s * sample_rate)
        self._streams: list[_Stream | None] = [None, None]
        # Sample index of `_buf[0]`: everything before it has been handed out.
        self._base = 0
        self._buf: npt.NDArray[np.int16] = np.zeros(
            (int((window_s + 1.0) * sample_rate), CHANNELS), dtype=np.int16
        )
        # One past the last sample index written, over both channels.
        self._ended = 0
        self._finished = False
        # Counters: frames handed out; packets placed; packets not audio (ignored), not RTP
        # (malformed), too late for the window or with an implausible sequence number
        # (late_dropped); streams re-anchored on arrival (SSRC change, jump, restart).
        self.frames_out = 0
        self.packets = 0
        self.ignored = 0
        self.malformed = 0
        self.late_dropped = 0
        self.reanchors = 0

    @property
    def buffer_bytes(self) -> int:
        """Memory the sample buffer holds (bounded when `take_ready` is called regularly)."""
        return self._buf.nbytes

    @property
    def duration_s(self) -> float:
        """Seconds of audio handed out so far (by `take_ready` and `finish`)."""
        return self.frames_out / self.sample_rate

    def feed(self, channel: int, packet: bytes, now: float) -> None:
        """A datagram one party sent (as it arrived on the relay, before any PT mapping)."""
        if self._finished:
            return
        if self.start is None:
            self.start = now
        size = len(packet)
        decoder = self._decoders[channel].get(packet[1] & 0x7F) if size >= 2 else None
        if decoder is None:
            # RTCP (RFC 5761 §4: PT 64-95 here), telephone-event (RFC 4733), CN (RFC 3389) and
            # anything unknown: not audio we can decode.
            self.ignored += 1
            return
        if size < 12 or packet[0] >> 6 != 2:
            self.malformed += 1
            return
        b0, _, seq, ts, ssrc = _HEADER.unpack_from(packet, 0)
        # RFC 3550 §5.1: skip CSRCs and the header extension; drop the padding.
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if size < offset + 4:
                self.malformed += 1
                return
            offset += 4 + 4 * _EXT.unpack_from(packet, offset)[1]
        end = size - packet[-1] if b0 & 0x20 else size
        if end <= offset:
            self.malformed += 1
            return
        pos = self._place(channel, seq, ts, ssrc, now)
        if pos is None:
            return
        self.packets += 1
        self._write(channel, pos, decoder(packet[offset:end]))

    def _place(self, channel: int, seq: int, ts: int, ssrc: int, now: float) -> int | None:
        """The sample index of this packet's first sample, or None to drop it."""
        assert self.start is not None
        arrival = int((now - self.start) * self.sample_rate)
        stream = self._streams[channel]
        if stream is None or stream.ssrc != ssrc:
            # A new stream (or a new SSRC: the sender restarted, RFC 3550 §8.2): anchor it
            # where it arrives.
            if stream is not None:
                self.reanchors += 1
            self._streams[channel] = _Stream(ssrc, seq, ts, arrival)
            return arrival
        step = (seq - stream.max_seq) % _SEQ_MOD
        if step < _MAX_DROPOUT:
            if step:
                stream.max_seq = seq
                pos = stream.anchor_pos + _ts_diff(ts, stream.anchor_ts)
                # A newer packet far from where its arrival says it belongs: the timestamp
                # jumped (or the clocks drifted a whole window apart). Re-anchor on arrival.
                if abs(pos - arrival) > self._limit:
                    self.reanchors += 1
                    stream.reanchor(seq, ts, arrival)
                    return arrival
                return pos
        elif step <= _SEQ_MOD - _MAX_MISORDER:
            if seq != stream.bad_seq:
                stream.bad_seq = (seq + 1) % _SEQ_MOD
                self.late_dropped += 1
                return None
            # Two packets in sequence after a big jump: the sender restarted (§A.1).
            self.reanchors += 1
            stream.reanchor(seq, ts, arrival)
            return arrival
        # A late or duplicate packet: into its place if that is still in the window (and
        # not a leftover from before a re-anchor, which would land far from its arrival).
        pos = stream.anchor_pos + _ts_diff(ts, stream.anchor_ts)
        if pos < self._base or abs(pos - arrival) > self._limit:
            self.late_dropped += 1
            return None
        return pos

    def _write(self, channel: int, pos: int, samples: Samples) -> None:
        n = len(samples)
        if pos < self._base:  # straddles what was already handed out: keep the tail
            samples = samples[self._base - pos:]
            pos = self._base
            n = len(samples)
        start = pos - self._base
        stop = start + n
        if stop > len(self._buf):
            grown = np.zeros((max(stop, 2 * len(self._buf)), CHANNELS), dtype=np.int16)
            grown[: len(self._buf)] = self._buf
            self._buf = grown
        self._buf[start:stop, channel] = samples
        self._ended = max(self._ended, pos + n)

    def take_ready(self, now: float) -> bytes:
        """Frames older than `now - window_s`: final, never rewritten. Interleaved LE int16."""
        if self.start is None or self._finished:
            return b""
        ready = int((now - self.window_s - self.start) * self.sample_rate)
        return self._take(ready - self._base)

    def finish(self) -> bytes:
        """Everything up to the last sample written; later feeds are ignored."""
        if self._finished:
            return b""
        out = self._take(self._ended - self._base)
        self._finished = True
        return out

    def _take(self, count: int) -> bytes:
        if count <= 0:
            return b""
        buf = self._buf
        held = len(buf)
        if count >= held:
            # Nothing was fed for longer than the buffer: the rest is silence.
            out = buf.astype("<i2").tobytes() + bytes(FRAME_BYTES * (count - held))
            buf[:] = 0
        else:
            out = buf[:count].astype("<i2").tobytes()
            buf[: held - count] = buf[count:]
            buf[held - count:] = 0
        self._base += count
        self.frames_out += count
        return out


def _decoders(*maps: Mapping[int, str] | None) -> dict[int, Callable[[bytes], Samples]]:
    """PT -> decoder: the static PTs, then each map in turn (a later map wins)."""
    codecs = dict(_STATIC_PTS)
    for extra in maps:
        codecs.update(extra or {})
    decoders: dict[int, Callable[[bytes], Samples]] = {}
    for pt, name in codecs.items():
        decoder = DECODERS.get(name.upper())
        if decoder is None:
            raise ValueError(f"no decoder for {name!r} (payload type {pt})")
        if 64 <= pt <= 95 or not 0 <= pt <= 127:
            raise ValueError(f"payload type {pt} cannot carry RTP audio (RFC 5761 §4)")
        decoders[pt] = decoder
    return decoders


def _ts_diff(a: int, b: int) -> int:
    """Signed distance `a - b` between two 32-bit RTP timestamps (RFC 3550 §5.1 wraps them)."""
    d = (a - b) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d
