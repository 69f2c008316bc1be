"""The media engine: terminated call legs, where the edge itself is the party (prompts, DTMF in
and out, recording, conferences), all paced by one media clock (DESIGN §5).

An attached leg of a relayed call gets its sockets' datagrams instead of the relay session
(`RtpRelay.set_leg_receive`); the session still latches (RFC 4961 symmetric RTP: media to the
party goes where its packets come from). The other leg, unless attached too, keeps latching
but is not relayed to it. `detach` gives the leg back: relaying resumes on the same ports.
One timer serves every endpoint, in batches across them (`MediaEngine._process`: one G.711
decode, one in-band DTMF batch, one mix and encode per room); prompts are encoded once when
queued, so a leg that only plays costs a slice, a header and a `sendto` per tick. Conference
rooms follow Vonage's `conversation` (startOnEnter, endOnExit, music on hold, the room
recorded); a leg in a room does no in-band detection. Limits: G.711 (PCMU/PCMA) at 20 ms per
packet only (the answer's ptime); RTCP dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import struct
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt

from edge.io.rtp_relay import RelayedCall, RtpRelay
from edge.media.audio import apply_gain, tone
from edge.media.g711 import ALAW_TO_LINEAR, LINEAR_TO_ALAW, LINEAR_TO_ULAW, ULAW_TO_LINEAR
from edge.media.goertzel import DtmfDetector
from edge.media.mixer import mix_minus
from edge.rtp.dtmf import DtmfReceiver, DtmfSender, digit_event
from edge.rtp.jitter import JitterBuffer
from edge.rtp.packet import RtpPacket, RtpParseError
from edge.rtp.relay import Address, Datagram, RelayLeg

log = logging.getLogger("sdpbx.media")

__all__ = [
    "Codec",
    "Conferences",
    "DtmfPress",
    "Endpoint",
    "EndpointClosed",
    "EngineStats",
    "LeaveReason",
    "MediaEngine",
    "MediaEvent",
    "PlayResult",
    "RecordResult",
    "Room",
]

Samples = npt.NDArray[np.int16]
LegName = Literal["a", "b"]
DtmfSource = Literal["rfc4733", "inband", "info"]
RecordReason = Literal["timeout", "silence", "key", "stopped", "hangup"]

SAMPLE_RATE = 8000
FRAME = 160  # samples (and G.711 octets) per 20 ms packet
_HEADER = struct.Struct("!BBHII")
_NOTHING: list[Datagram] = []  # what a terminated leg's receive returns: nothing to relay
_SILENT = np.zeros(FRAME, dtype=np.int16)
_SILENT.flags.writeable = False
# G.711 codes of a zero sample (what a lost frame decodes from): µ-law 0xFF, A-law 0xD5.
_SILENCE_CODE = {"PCMU": 0xFF, "PCMA": 0xD5}
_DECODE = {"PCMU": ULAW_TO_LINEAR, "PCMA": ALAW_TO_LINEAR}
_ENCODE = {"PCMU": LINEAR_TO_ULAW, "PCMA": LINEAR_TO_ALAW}
# One table for mixed batches: index = code + 256 for A-law rows.
_DECODE_BOTH = np.concatenate((ULAW_TO_LINEAR, ALAW_TO_LINEAR))
_ENCODE_BOTH = np.stack((LINEAR_TO_ULAW, LINEAR_TO_ALAW))
_DIGITS_KEPT = 64  # the digits queue drops its oldest press beyond this
_PROMPT_CACHE = 32  # encoded prompts kept (by array identity, gain and codec)
# A frame is silence for `end_on_silence_s` when its RMS is below this (about -40 dBFS; phone
# line noise sits around -60..-50 dBFS, quiet speech above -35).
_SILENCE_RMS = 330.0
_FLUSH_TICKS = 25  # recordings write to disk every 0.5 s (staggered across endpoints)
# The recording beep (beep=True): 250 ms of 1 kHz at -12 dBm0; recording starts after it.
_BEEP = tone(1000.0, 250, -12.0)


@dataclass(frozen=True, slots=True)
class Codec:
    """What the party and the edge agreed for this leg, in the party's PT numbering (the
    numbers in the SDP exchanged with *that* party): G.711 at 8 kHz, 20 ms per packet, and the
    telephone-event PT (RFC 4733 §7) if negotiated."""

    payload_type: int
    name: Literal["PCMU", "PCMA"]
    telephone_event_pt: int | None = None

    def __post_init__(self) -> None:
        if self.name not in _DECODE:
            raise ValueError(f"codec {self.name!r} is not PCMU or PCMA")
        for pt in (self.payload_type, self.telephone_event_pt):
            if pt is not None and not (0 <= pt <= 127 and not 64 <= pt <= 95):
                raise ValueError(f"payload type {pt} out of range (0-63, 96-127)")
        if self.payload_type == self.telephone_event_pt:
            raise ValueError("audio and telephone-event need different payload types")


class PlayResult(enum.StrEnum):
    """How a `play` ended: played to the end (all loops), stopped (`stop_playback`, detach,
    hangup, the future cancelled) or interrupted by a digit (`barge_in=True`)."""

    COMPLETED = "completed"
    STOPPED = "stopped"
    BARGED_IN = "barged_in"


@dataclass(frozen=True, slots=True)
class DtmfPress:
    """A key the party pressed: `at` is the loop time it was recognised (RFC 4733: end of the
    event or an event's timeout; in-band: 25 ms into the tone; INFO: when fed)."""

    digit: str
    source: DtmfSource
    at: float


@dataclass(frozen=True, slots=True)
class RecordResult:
    """A finished recording: the WAV at `path` (16-bit PCM, 8 kHz, mono or stereo), its audio
    length and its size on disk (header included), and why it ended."""

    path: str
    duration_s: float
    size_bytes: int
    reason: RecordReason


MediaEvent = DtmfPress | PlayResult | RecordResult


class EndpointClosed(RuntimeError):
    """The endpoint was detached or its call ended before the operation completed."""


@dataclass(slots=True)
class EngineStats:
    """Counters of the media clock. `late_ticks`: ticks that ran more than `late_after_s`
    after their due time; `skipped_ticks`: ticks dropped when the clock fell more than
    `resync_after_s` behind; `busy_s`: time spent in ticks (perf_counter); `mix_s`: of which
    conference rooms (mixing, encoding the mixes, room recordings)."""

    ticks: int = 0
    late_ticks: int = 0
    skipped_ticks: int = 0
    max_lag_s: float = 0.0
    busy_s: float = 0.0
    mix_s: float = 0.0
    endpoints: int = 0
    packets_sent: int = 0
    tick_errors: int = 0


# --- playback -------------------------------------------------------------------------------


class _Source:
    """One queued `play`: the prompt in 20 ms rows and pre-encoded for the leg's codec."""

    __slots__ = ("barge_in", "count", "future", "index", "loops", "payload", "pcm")

    def __init__(self, pcm: Samples, payload: bytes, loops: int, barge_in: bool,
                 future: asyncio.Future[PlayResult] | None) -> None:
        self.pcm = pcm  # (count, FRAME) int16
        self.payload = payload  # count * FRAME octets
        self.count = len(pcm)
        self.loops = loops  # loops left, 0 = forever
        self.barge_in = barge_in
        self.future = future  # None for the recording beep
        self.index = 0


class _PromptCache:
    """Prompts as played: split into frames, gain applied and encoded once, shared by every
    endpoint playing the same array (an IVR plays one prompt to many callers)."""

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: OrderedDict[
            tuple[int, float, str], tuple[weakref.ref[Samples], Samples, bytes]
        ] = OrderedDict()

    def get(self, pcm: Samples, gain: float, codec: str) -> tuple[Samples, bytes]:
        key = (id(pcm), gain, codec)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is pcm:
            self._entries.move_to_end(key)
            return entry[1], entry[2]
        scaled = apply_gain(pcm, gain) if gain != 1.0 else pcm
        count = -(-len(scaled) // FRAME)
        rows = np.zeros((count, FRAME), dtype=np.int16)
        rows.reshape(-1)[: len(scaled)] = scaled
        rows.flags.writeable = False
        payload = _ENCODE[codec][rows.view(np.uint16)].tobytes()
        try:
            self._entries[key] = (weakref.ref(pcm), rows, payload)
        except TypeError:  # an array subclass without weak references: not cached
            return rows, payload
        if len(self._entries) > _PROMPT_CACHE:
            self._entries.popitem(last=False)
        return rows, payload


# --- recording ------------------------------------------------------------------------------


class _WavWriter:
    """A 16-bit 8 kHz PCM WAV written as it goes: the RIFF sizes say "unknown" (0xFFFFFFFF, as
    streaming writers do) until `close` patches them, so a file cut short still plays."""

    __slots__ = ("_file", "channels", "data_bytes", "path")

    def __init__(self, path: str, channels: int) -> None:
        self.path = path
        self.channels = channels
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(self._header(0xFFFFFFFF, 0xFFFFFFFF))
        self.data_bytes = 0

    def _header(self, data_size: int, riff_size: int) -> bytes:
        block = 2 * self.channels
        return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", riff_size, b"WAVE", b"fmt ", 16, 1,
                           self.channels, SAMPLE_RATE, SAMPLE_RATE * block, block, 16,
                           b"data", data_size)

    def append(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError(f"recording {self.path} is closed")
        self._file.write(data)
        self.data_bytes += len(data)

    def close(self) -> int:
        """Patch the sizes, close; returns the file size."""
        if self._file is not None:
            try:
                self._file.seek(0)
                self._file.write(self._header(self.data_bytes, 36 + self.data_bytes))
            finally:
                self._file.close()
                self._file = None
        return 44 + self.data_bytes


class _Recording:
    """One `start_recording`: frames gathered per tick, written every `_FLUSH_TICKS`."""

    __slots__ = ("chunks", "end_on_key", "file", "frames", "future", "limit", "phase", "quiet",
                 "quiet_limit", "skip", "stereo")

    def __init__(self, file: _WavWriter, *, stereo: bool, end_on_silence_s: float | None,
                 end_on_key: str | None, timeout_s: float, skip: int, phase: int,
                 future: asyncio.Future[RecordResult]) -> None:
        self.file = file
        self.stereo = stereo
        self.end_on_key = end_on_key
        self.limit = max(1, round(timeout_s * SAMPLE_RATE / FRAME))
        self.quiet_limit = (None if end_on_silence_s is None
                            else max(1, round(end_on_silence_s * SAMPLE_RATE / FRAME)))
        self.quiet = 0  # consecutive silent frames from the party
        self.skip = skip  # ticks to wait (the beep) before recording
        self.phase = phase
        self.frames = 0
        self.chunks: list[Samples] = []
        self.future = future

    def add(self, party: Samples, sent: Samples, tick: int) -> RecordReason | None:
        """This tick's frames (what the party sent, what the edge sent); a reason to end."""
        if self.skip:
            self.skip -= 1
            return None
        if self.stereo:
            self.chunks.append(np.column_stack((party, sent)).reshape(-1))
        else:
            self.chunks.append(party.copy())
        self.frames += 1
        if (tick + self.phase) % _FLUSH_TICKS == 0:
            self.flush()
        if self.quiet_limit is not None:
            level = party.astype(np.float32)
            if float(np.dot(level, level)) < _SILENCE_RMS**2 * FRAME:
                self.quiet += 1
                if self.quiet >= self.quiet_limit:
                    return "silence"
            else:
                self.quiet = 0
        return "timeout" if self.frames >= self.limit else None

    def flush(self) -> None:
        if self.chunks:
            data = np.concatenate(self.chunks).astype("<i2", copy=False).tobytes()
            self.chunks.clear()
            self.file.append(data)

    def finish(self, reason: RecordReason) -> None:
        """Write the rest, close the file and resolve the future (an I/O error goes there)."""
        future = self.future
        try:
            self.flush()
            size = self.file.close()
        except OSError as exc:
            log.warning("recording %s failed: %s", self.file.path, exc)
            with contextlib.suppress(OSError):
                self.file.close()
            if not future.done():
                future.set_exception(exc)
            return
        channels = 2 if self.stereo else 1
        result = RecordResult(path=self.file.path,
                              duration_s=self.file.data_bytes / (2 * channels * SAMPLE_RATE),
                              size_bytes=size, reason=reason)
        if not future.done():
            future.set_result(result)


class _DtmfOut:
    __slots__ = ("future", "sender")

    def __init__(self, sender: DtmfSender, future: asyncio.Future[None]) -> None:
        self.sender = sender
        self.future = future


# --- conference rooms -----------------------------------------------------------------------


class Room:
    """A named conference room (Vonage `conversation` semantics): its members hear each other
    (N-1 mix, `edge.media.mixer.mix_minus`) once it has started, which is when a member who
    may start it (`start_on_enter`) is in; until then members hear their music on hold, or
    silence. A member with `end_on_exit` ends it when they go: everyone else is removed.
    `mix` is the last tick's whole-room mix (everyone, muted members excluded)."""

    __slots__ = ("_frames", "_loop", "_members", "_recording", "_speaking", "ended", "name",
                 "started")

    def __init__(self, name: str, loop: asyncio.AbstractEventLoop) -> None:
        self.name = name
        self._loop = loop
        self._members: list[Endpoint] = []  # in the order they joined
        self.started = False
        self.ended = False
        self._recording: _Recording | None = None
        self._frames: Samples | None = None  # the last tick's frames, one row per member...
        self._speaking: npt.NDArray[np.bool_] | None = None  # ...and who was heard

    def __len__(self) -> int:
        return len(self._members)

    @property
    def members(self) -> tuple[Endpoint, ...]:
        return tuple(self._members)

    @property
    def mix(self) -> Samples:
        frames = self._frames
        if frames is None or not self.started:
            return _SILENT
        if self._speaking is not None:
            frames = frames[self._speaking]
        total: npt.NDArray[np.int32] = frames.sum(axis=0, dtype=np.int32)
        np.clip(total, -32768, 32767, out=total)
        return total.astype(np.int16)

    # --- recording ---

    def start_recording(self, path: str, *,
                        timeout_s: float = 7200.0) -> asyncio.Future[RecordResult]:
        """Record the whole room (everyone not muted, mixed) into a mono WAV at `path`
        (created now: OSError if it cannot be), silence while the room waits to start. Ends
        after `timeout_s`, on `stop_recording` ("stopped") or when the room ends ("hangup":
        its last member left, or one with `end_on_exit`). ValueError if the room is already
        recording or has ended."""
        if self._recording is not None:
            raise ValueError(f"room {self.name!r} is already recording")
        if self.ended:
            raise ValueError(f"room {self.name!r} has ended")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        future: asyncio.Future[RecordResult] = self._loop.create_future()
        self._recording = _Recording(
            _WavWriter(path, 1), stereo=False, end_on_silence_s=None, end_on_key=None,
            timeout_s=timeout_s, skip=0, phase=id(self) % _FLUSH_TICKS, future=future)
        return future

    def stop_recording(self) -> None:
        """End the running recording (reason "stopped"); nothing if none runs."""
        self._end_recording("stopped")

    @property
    def recording(self) -> bool:
        return self._recording is not None

    def _end_recording(self, reason: RecordReason) -> None:
        recording = self._recording
        if recording is not None:
            self._recording = None
            recording.finish(reason)

    # --- each tick ---

    def _tick(self, pcm: Samples | None, tick: int) -> None:
        """Mix this tick's decoded frames (`pcm`, rows by `Endpoint._row`): each member who
        hears gets the others' mix, encoded for its codec; the recording gets everyone."""
        members = self._members
        if self.started and members:
            rows = [member._row for member in members]
            speaking = [not member._muted for member in members]
            if pcm is None or min(rows) < 0:
                # A member joined after this tick's audio was decoded: silent this once.
                frames = np.zeros((len(members), FRAME), dtype=np.int16)
                for index, row in enumerate(rows):
                    if row >= 0 and pcm is not None:
                        frames[index] = pcm[row]
            else:
                frames = pcm[rows]
            mask = None if all(speaking) else np.array(speaking, dtype=np.bool_)
            self._frames, self._speaking = frames, mask
            heard = mix_minus(frames, mask)
            payload = _encode_rows(heard, members)
            for index, member in enumerate(members):
                if member._hear:
                    member._conf = heard[index]
                    member._conf_payload = payload[index * FRAME:(index + 1) * FRAME]
        recording = self._recording
        if recording is not None:
            reason = recording.add(self.mix, _SILENT, tick)
            if reason is not None:
                self._end_recording(reason)


LeaveReason = Literal["left", "room_ended", "hangup"]


class Conferences:
    """The engine's rooms by name. A room exists while it has members (`Endpoint.join`
    creates it, the last `leave` removes it, as does a member with `end_on_exit`)."""

    __slots__ = ("_loop", "_rooms")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._rooms: dict[str, Room] = {}

    def __getitem__(self, name: str) -> Room:
        return self._rooms[name]

    def get(self, name: str) -> Room | None:
        return self._rooms.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._rooms

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._rooms))

    def __len__(self) -> int:
        return len(self._rooms)

    def _join(self, endpoint: Endpoint, name: str, start_on_enter: bool) -> Room:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = Room(name, self._loop)
        room._members.append(endpoint)
        if start_on_enter and not room.started:
            self._start(room)
        return room

    def _start(self, room: Room) -> None:
        room.started = True
        for member in room._members:
            member._hold = None  # music on hold is over for good
            member._update_wants()

    def _leave(self, endpoint: Endpoint, room: Room) -> None:
        room._members.remove(endpoint)
        if not room._members:
            self._close(room)

    def _end(self, room: Room) -> None:
        """End the room (`end_on_exit`): every member is taken out of it."""
        self._close(room)
        for member in list(room._members):
            member._exit_room("room_ended")

    def _close(self, room: Room) -> None:
        room.ended = True
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
        room._end_recording("hangup")

    def _active(self) -> list[Room]:
        return list(self._rooms.values())


def _encode_rows(pcm: Samples, endpoints: list[Endpoint]) -> bytes:
    """Rows of samples encoded for each endpoint's codec, as one byte string (row i at
    i * FRAME): one G.711 table lookup for them all."""
    if any(endpoint.alaw for endpoint in endpoints):
        codecs = np.array([endpoint.alaw for endpoint in endpoints], dtype=np.intp)
        return _ENCODE_BOTH[codecs[:, None], pcm.view(np.uint16)].tobytes()
    return LINEAR_TO_ULAW[pcm.view(np.uint16)].tobytes()


# --- the endpoint ---------------------------------------------------------------------------


class Endpoint:
    """A terminated leg: the edge is the party on `call`'s leg `leg`. Created by
    `MediaEngine.attach`; every method must be called on the engine's event loop."""

    __slots__ = (
        "_conf", "_conf_payload", "_detector", "_dtmf_out", "_end_on_exit", "_engine", "_hear",
        "_hold", "_in_pcm", "_left", "_leg", "_marker", "_muted", "_out_of_band",
        "_out_payload", "_out_pcm", "_parked_detector", "_pt", "_receiver", "_recording",
        "_room", "_row", "_rx_open", "_rx_ssrc", "_seq", "_session_receive", "_silence",
        "_sources", "_te_pt", "_transport", "_ts", "_wants_pcm", "alaw", "call", "closed",
        "codec", "digits", "ignored", "jitter", "leg", "packets_sent", "ssrc",
    )

    def __init__(self, engine: MediaEngine, call: RelayedCall, leg: LegName, codec: Codec,
                 transport: asyncio.DatagramTransport, rng: random.Random) -> None:
        self._engine = engine
        self.call = call
        self.leg: LegName = leg
        self._leg: RelayLeg = call.leg(leg)
        self.codec = codec
        self.alaw = codec.name == "PCMA"
        self._pt = codec.payload_type
        self._te_pt = codec.telephone_event_pt
        self._transport = transport
        self._session_receive = call.session.receive
        # RFC 3550 §5.1: random SSRC, initial sequence number and timestamp.
        self.ssrc = rng.getrandbits(32)
        self._seq = rng.getrandbits(16)
        self._ts = rng.getrandbits(32)
        self._marker = True  # RFC 3551 §4.1: the first packet of the stream
        self._silence = bytes([_SILENCE_CODE[codec.name]]) * FRAME
        self.jitter = JitterBuffer()
        self._receiver = DtmfReceiver()
        self._rx_open = False  # the receiver holds an event that may time out
        self._rx_ssrc: int | None = None
        # In-band detection runs until an out-of-band digit (RFC 4733 or INFO) shows up.
        self._detector: DtmfDetector | None = DtmfDetector()
        self._out_of_band = False
        self._sources: deque[_Source] = deque()
        self._dtmf_out: deque[_DtmfOut] = deque()
        self._recording: _Recording | None = None
        self._room: Room | None = None
        self._muted = False  # in the room: the others do not hear us
        self._hear = True  # in the room: we hear the others
        self._end_on_exit = False  # in the room: it ends when we leave
        self._hold: _Source | None = None  # music on hold while the room waits to start
        self._left: asyncio.Future[LeaveReason] | None = None  # resolves when out of the room
        # In a room the in-band detector rests (no digit input there): this is what `leave`
        # brings back (None: detection stays off).
        self._parked_detector: DtmfDetector | None = None
        self._conf: Samples | None = None  # this tick's conference mix for us...
        self._conf_payload = b""  # ...and encoded for our codec
        self._row = -1  # our row in this tick's decoded frames (-1: none)
        self._in_pcm: Samples = _SILENT  # this tick's decoded frame from the party
        self._out_payload: bytes | None = None  # this tick's outgoing frame, encoded...
        self._out_pcm: Samples = _SILENT  # ...and as samples
        self._wants_pcm = True
        self.digits: asyncio.Queue[DtmfPress] = asyncio.Queue()
        self.closed = False
        self.packets_sent = 0
        self.ignored = 0  # packets of other payload types (comfort noise, unknown)

    def __repr__(self) -> str:
        return (f"<Endpoint call={self.call.id} leg={self.leg} {self.codec.name}"
                f"{' closed' if self.closed else ''}>")

    # --- audio out ---

    def play(self, pcm: Samples, *, loop: int = 1, gain: float = 1.0,
             barge_in: bool = False) -> asyncio.Future[PlayResult]:
        """Queue `pcm` (mono int16 at 8 kHz) to be played `loop` times (0: until stopped)
        at linear `gain` (saturating), after what is already queued. The future resolves
        when it ends; cancelling it stops it. The array is encoded once and cached by
        identity: do not modify it afterwards (pass a new one). `barge_in`: any digit from
        the party stops it (and every other barge-in item queued): `PlayResult.BARGED_IN`."""
        self._check_open()
        if pcm.dtype != np.int16 or pcm.ndim != 1:
            raise TypeError("play takes a 1-D int16 array (mono, 8 kHz)")
        if loop < 0 or gain < 0:
            raise ValueError("loop must be >= 0 (0: forever) and gain >= 0")
        future: asyncio.Future[PlayResult] = self._engine._loop.create_future()
        if not len(pcm):
            future.set_result(PlayResult.COMPLETED)
            return future
        rows, payload = self._engine._prompts.get(pcm, float(gain), self.codec.name)
        self._sources.append(_Source(rows, payload, loop, barge_in, future))
        return future

    def stop_playback(self) -> None:
        """Stop what is playing and drop the queue (each future: `PlayResult.STOPPED`)."""
        self._end_sources(lambda source: True, PlayResult.STOPPED)

    @property
    def playing(self) -> bool:
        return any(s.future is not None for s in self._sources)

    def send_dtmf(self, digits: str) -> asyncio.Future[None]:
        """Send `digits` (0-9 * # A-D) as RFC 4733 events in the outgoing stream (100 ms each,
        50 ms apart), after any digits already queued; resolves when the last end packet went
        out, or fails with `EndpointClosed`. ValueError if telephone-event was not negotiated
        or a digit is invalid."""
        self._check_open()
        if self._te_pt is None:
            raise ValueError("telephone-event was not negotiated with this party")
        for digit in digits:
            digit_event(digit)
        future: asyncio.Future[None] = self._engine._loop.create_future()
        if not digits:
            future.set_result(None)
            return future
        sender = DtmfSender(digits, payload_type=self._te_pt, ssrc=self.ssrc)
        self._dtmf_out.append(_DtmfOut(sender, future))
        return future

    # --- DTMF in ---

    def feed_info_digit(self, digit: str) -> None:
        """A digit the B2BUA received in a SIP INFO (application/dtmf-relay or dtmf)."""
        self._check_open()
        digit_event(digit)
        self._out_of_band_seen()
        self._press(digit.upper(), "info", self._engine._loop.time())

    @property
    def inband_dtmf(self) -> bool:
        """Whether in-band tones are being detected: True from attach until the party sends
        an out-of-band digit (RFC 4733 or INFO: then never again, so no key counts twice).
        The detector is the largest per-tick cost of a leg; set False while nobody collects
        digits and True again when they do. In a conference room it is off (rooms take no
        digit input) and comes back as it was when the party leaves; setting it there
        decides what comes back."""
        return self._detector is not None

    @inband_dtmf.setter
    def inband_dtmf(self, on: bool) -> None:
        if self._room is not None:
            if not on:
                self._parked_detector = None
            elif self._parked_detector is None and not self._out_of_band:
                self._parked_detector = DtmfDetector()
            return
        if not on:
            self._detector = None
        elif self._detector is None and not self._out_of_band:
            self._detector = DtmfDetector()
        self._update_wants()

    # --- recording ---

    def start_recording(self, path: str, *, stereo: bool = False,
                        end_on_silence_s: float | None = None, end_on_key: str | None = None,
                        timeout_s: float = 7200.0,
                        beep: bool = False) -> asyncio.Future[RecordResult]:
        """Record into a WAV at `path` (created now: OSError if it cannot be) what the party
        says (mono), or both directions (`stereo`: left the party, right what the edge sends).
        Ends after `timeout_s`, after `end_on_silence_s` of continuous silence from the party,
        when the party presses `end_on_key` (that press is consumed, not queued in `digits`),
        on `stop_recording` ("stopped"), detach ("stopped") or the call's end ("hangup").
        `beep`: a 250 ms beep is played first and recording starts after it. ValueError if a
        recording is already running."""
        self._check_open()
        if self._recording is not None:
            raise ValueError("this endpoint is already recording")
        if timeout_s <= 0 or (end_on_silence_s is not None and end_on_silence_s <= 0):
            raise ValueError("timeout_s and end_on_silence_s must be positive")
        if end_on_key is not None:
            digit_event(end_on_key)
            end_on_key = end_on_key.upper()
        skip = 0
        if beep:
            rows, payload = self._engine._prompts.get(_BEEP, 1.0, self.codec.name)
            self._sources.appendleft(_Source(rows, payload, 1, False, None))
            skip = len(rows)
        future: asyncio.Future[RecordResult] = self._engine._loop.create_future()
        self._recording = _Recording(
            _WavWriter(path, 2 if stereo else 1), stereo=stereo,
            end_on_silence_s=end_on_silence_s, end_on_key=end_on_key, timeout_s=timeout_s,
            skip=skip, phase=id(self) % _FLUSH_TICKS, future=future)
        self._update_wants()
        return future

    def stop_recording(self) -> None:
        """End the running recording (reason "stopped"); nothing if none runs."""
        self._end_recording("stopped")

    @property
    def recording(self) -> bool:
        return self._recording is not None

    # --- conference ---

    def join(self, room_name: str, *, mute: bool = False, hear: bool = True,
             start_on_enter: bool = True, end_on_exit: bool = False,
             music_on_hold: Samples | None = None) -> asyncio.Future[LeaveReason]:
        """Enter room `room_name` (created if needed), leaving any other room. `mute`: the
        others do not hear this party; `hear`: this party hears the room (else its playback
        or silence). The room starts when a member with `start_on_enter` is in; until then
        this party hears `music_on_hold` (mono int16 at 8 kHz, looped; cached by identity
        like `play`) or silence, and nobody is mixed. `end_on_exit`: when this party leaves
        (`leave`, detach, hangup) the room ends and every other member is taken out. While
        in the room, in-band DTMF detection is off (see `inband_dtmf`). Playback (`play`)
        goes on over the room. Returns a future that resolves when this party is out of the
        room: "left" (`leave`, another room, detach), "room_ended" (another member's
        `end_on_exit`) or "hangup" (the call ended). Joining the same room again updates
        these settings and returns the same future."""
        self._check_open()
        if music_on_hold is not None and (music_on_hold.dtype != np.int16
                                          or music_on_hold.ndim != 1):
            raise TypeError("music_on_hold takes a 1-D int16 array (mono, 8 kHz)")
        room = self._room
        if room is None or room.name != room_name:
            self._exit_room("left")
            self._parked_detector, self._detector = self._detector, None
            self._left = self._engine._loop.create_future()
            room = self._room = self._engine.rooms._join(self, room_name, start_on_enter)
        elif start_on_enter and not room.started:
            self._engine.rooms._start(room)
        self._muted = mute
        self._hear = hear
        self._end_on_exit = end_on_exit
        self._hold = None
        if music_on_hold is not None and len(music_on_hold) and not room.started:
            rows, payload = self._engine._prompts.get(music_on_hold, 1.0, self.codec.name)
            self._hold = _Source(rows, payload, 0, False, None)
        self._update_wants()
        if self._left is None or self._left.done():  # cancelled by its caller
            self._left = self._engine._loop.create_future()
        return self._left

    def leave(self) -> None:
        """Leave the room, if in one (its `join` future: "left")."""
        self._exit_room("left")

    @property
    def room(self) -> Room | None:
        return self._room

    def _exit_room(self, reason: LeaveReason) -> None:
        room = self._room
        if room is None:
            return
        ends = self._end_on_exit and reason != "room_ended"
        self._room = None
        self._hold = None
        self._conf = None
        self._muted = False
        self._hear = True
        self._end_on_exit = False
        self._engine.rooms._leave(self, room)
        detector, self._parked_detector = self._parked_detector, None
        if detector is not None and not self._out_of_band:
            detector.reset()  # the audio it saw last is from before the room
            self._detector = detector
        self._update_wants()
        left, self._left = self._left, None
        if left is not None and not left.done():
            left.set_result(reason)
        if ends:
            self._engine.rooms._end(room)

    # --- inside ---

    def _check_open(self) -> None:
        if self.closed:
            raise EndpointClosed(f"{self!r} is closed")

    def _update_wants(self) -> None:
        room = self._room
        self._wants_pcm = (self._detector is not None or self._recording is not None
                           or (room is not None and room.started))

    def _receive(self, leg: RelayLeg, data: bytes, addr: Address, now: float) -> list[Datagram]:
        """Stands in for `RelaySession.receive` on this leg's sockets (see `set_leg_receive`):
        the session latches and counts; accepted RTP is ours, nothing is relayed."""
        before = leg.packets_received
        self._session_receive(leg, data, addr, now)
        if leg.packets_received != before:
            pt = data[1] & 0x7F
            if pt == self._pt:
                self.jitter.push(data, now)
            elif pt == self._te_pt:
                self._telephone_event(data, now)
            else:
                self.ignored += 1
        return _NOTHING

    def _telephone_event(self, data: bytes, now: float) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self.ignored += 1
            return
        self._out_of_band_seen()
        receiver = self._receiver
        header = packet.header
        if header.ssrc != self._rx_ssrc:
            if self._rx_ssrc is not None:
                for digit in receiver.reset():
                    self._press(digit.digit, "rfc4733", now)
            self._rx_ssrc = header.ssrc
        for digit in receiver.feed(header.timestamp, packet.payload, now):
            self._press(digit.digit, "rfc4733", now)
        if receiver.active is not None:
            # Barge in as the key goes down, not when it is released.
            self._end_sources(lambda source: source.barge_in, PlayResult.BARGED_IN)
        self._rx_open = receiver.get_timer() is not None

    def _poll_dtmf(self, now: float) -> None:
        receiver = self._receiver
        timer = receiver.get_timer()
        if timer is not None and now >= timer:
            for digit in receiver.poll(now):
                self._press(digit.digit, "rfc4733", now)
            timer = receiver.get_timer()
        self._rx_open = timer is not None

    def _out_of_band_seen(self) -> None:
        self._out_of_band = True
        self._parked_detector = None
        if self._detector is not None:
            # From now on a tone in the audio is the same key again: never count it twice.
            self._detector = None
            self._update_wants()

    def _press(self, digit: str, source: DtmfSource, at: float) -> None:
        recording = self._recording
        if recording is not None and recording.end_on_key == digit:
            self._end_recording("key")
            return
        self._end_sources(lambda s: s.barge_in, PlayResult.BARGED_IN)
        press = DtmfPress(digit, source, at)
        if self.digits.qsize() >= _DIGITS_KEPT:
            self.digits.get_nowait()
        self.digits.put_nowait(press)
        self._engine._notify(self, press)

    def _end_sources(self, which: Callable[[_Source], bool], result: PlayResult) -> None:
        if not self._sources:
            return
        kept: deque[_Source] = deque()
        for source in self._sources:
            if which(source) and source.future is not None:
                self._finish_source(source, result)
            else:
                kept.append(source)
        self._sources = kept

    def _finish_source(self, source: _Source, result: PlayResult) -> None:
        future = source.future
        if future is not None and not future.done():
            future.set_result(result)
            self._engine._notify(self, result)

    def _end_recording(self, reason: RecordReason) -> None:
        recording = self._recording
        if recording is None:
            return
        self._recording = None
        self._update_wants()
        recording.finish(reason)
        if recording.future.done() and not recording.future.cancelled():
            exc = recording.future.exception()
            if exc is None:
                self._engine._notify(self, recording.future.result())

    def _next_frame(self) -> tuple[bytes | None, Samples]:
        """This tick's outgoing frame: the encoded payload (None: to be encoded from the
        samples) and the samples (for a stereo recording). Playback goes over what the room
        gives (its mix, or music on hold while it waits), else it is sent alone."""
        sources = self._sources
        source = sources[0] if sources else None
        while source is not None and source.future is not None and source.future.done():
            sources.popleft()  # cancelled by its caller
            source = sources[0] if sources else None
        conf = self._conf
        if conf is not None:
            self._conf = None
            conf_payload = self._conf_payload
        elif self._hold is not None:
            hold = self._hold
            index = hold.index
            conf = hold.pcm[index]
            conf_payload = hold.payload[index * FRAME:(index + 1) * FRAME]
            hold.index = index + 1 if index + 1 < hold.count else 0
        if source is None:
            if conf is None:
                return self._silence, _SILENT
            return conf_payload, conf
        index = source.index
        pcm = source.pcm[index]
        start = index * FRAME
        index += 1
        if index == source.count:  # the end of one pass
            index = 0
            if source.loops == 1:
                sources.popleft()
                self._finish_source(source, PlayResult.COMPLETED)
            elif source.loops:
                source.loops -= 1
        source.index = index
        if conf is not None:
            mixed = conf.astype(np.int32) + pcm
            np.clip(mixed, -32768, 32767, out=mixed)
            return None, mixed.astype(np.int16)
        return source.payload[start:start + FRAME], pcm

    def _send(self, payload: bytes) -> int:
        """One tick's packet(s): RFC 4733 events while a digit is being sent, else audio.
        Returns how many were sent."""
        dest = self._leg.rtp_dest
        transport = self._transport
        if self._dtmf_out:
            out = self._dtmf_out[0]
            packets = out.sender.packets_for_tick(self._seq, self._ts)
            if out.sender.done:
                self._dtmf_out.popleft()
                if not out.future.done():
                    out.future.set_result(None)
            if packets:
                self._seq = (self._seq + len(packets)) & 0xFFFF
                self._ts = (self._ts + FRAME) & 0xFFFFFFFF
                if not dest[1]:
                    return 0
                for packet in packets:
                    transport.sendto(packet, dest)
                self.packets_sent += len(packets)
                return len(packets)
        sent = 0
        if dest[1]:
            header = _HEADER.pack(0x80, (0x80 if self._marker else 0) | self._pt, self._seq,
                                  self._ts, self.ssrc)
            transport.sendto(header + payload, dest)
            self._marker = False
            self.packets_sent += 1
            sent = 1
        else:
            self._marker = True  # nowhere to send yet: the first real packet starts a stream
        self._seq = (self._seq + 1) & 0xFFFF
        self._ts = (self._ts + FRAME) & 0xFFFFFFFF
        return sent

    def _close(self, reason: RecordReason) -> None:
        if self.closed:
            return
        self.closed = True
        self._exit_room("hangup" if reason == "hangup" else "left")
        self._end_recording(reason)
        self._end_sources(lambda source: True, PlayResult.STOPPED)
        self._sources.clear()
        while self._dtmf_out:
            out = self._dtmf_out.popleft()
            if not out.future.done():
                out.future.set_exception(EndpointClosed(f"{self!r} closed before its digits "
                                                        "were sent"))


# --- the engine -----------------------------------------------------------------------------


class _Deaf:
    """The receive of a relayed leg whose peer is terminated: the session still latches and
    counts its packets, but nothing is relayed towards the terminated leg."""

    __slots__ = ("receive",)

    def __init__(self, call: RelayedCall) -> None:
        self.receive = call.session.receive

    def __call__(self, leg: RelayLeg, data: bytes, addr: Address, now: float) -> list[Datagram]:
        self.receive(leg, data, addr, now)
        return _NOTHING


class MediaEngine:
    """The terminated legs of one edge and the media clock that paces them (module doc).

    `attach` a relayed call's leg to get its `Endpoint`; `detach` gives the leg back to the
    relay. The clock runs from `start()` while endpoints exist. `observer(endpoint, event)` is
    called (on the loop) for every `DtmfPress`, ended `PlayResult` and `RecordResult`."""

    def __init__(self, relay: RtpRelay, *, tick_s: float = 0.02, late_after_s: float = 0.005,
                 resync_after_s: float = 0.2,
                 observer: Callable[[Endpoint, MediaEvent], None] | None = None,
                 rng: random.Random | None = None) -> None:
        if tick_s <= 0 or late_after_s < 0 or resync_after_s < tick_s:
            raise ValueError("need tick_s > 0, late_after_s >= 0, resync_after_s >= tick_s")
        self.relay = relay
        self.tick_s = tick_s
        self.late_after_s = late_after_s
        self.resync_after_s = resync_after_s
        self.observer = observer
        self._loop = asyncio.get_running_loop()
        self.rooms = Conferences(self._loop)
        self.stats = EngineStats()
        self._rng = rng or random.Random()
        self._prompts = _PromptCache()
        self._endpoints: list[Endpoint] = []
        self._by_leg: dict[tuple[int, str], Endpoint] = {}
        self._started = False
        self._closed = False
        self._handle: asyncio.TimerHandle | None = None
        self._origin = 0.0  # loop time of tick 0
        self._origin_mono = 0.0  # the same instant on time.monotonic (finer than uvloop's)
        self._tick = 0
        self._alaw = 0  # endpoints using PCMA

    @property
    def endpoints(self) -> tuple[Endpoint, ...]:
        return tuple(self._endpoints)

    def endpoint(self, call: RelayedCall, leg: LegName) -> Endpoint | None:
        """The endpoint attached to `call`'s leg, if any."""
        return self._by_leg.get((call.id, leg))

    def start(self) -> None:
        """Run the clock (idempotent); it idles while no endpoint is attached."""
        if self._closed:
            raise RuntimeError("the media engine is closed")
        self._started = True
        self._arm()

    async def aclose(self) -> None:
        """Stop the clock and close every endpoint (recordings end with "hangup")."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        for endpoint in list(self._endpoints):
            self._remove(endpoint, "hangup")

    def attach(self, call: RelayedCall, leg: LegName, codec: Codec) -> Endpoint:
        """Terminate `call`'s leg `leg` ("a" or "b") here: from now on the edge is the party
        that leg talks to, with `codec`. ValueError if the call is closed or the leg already
        attached; RuntimeError after `aclose`."""
        if self._closed:
            raise RuntimeError("the media engine is closed")
        call.leg(leg)
        transport = call.rtp_transport(leg)
        if call.closed or transport is None:
            raise ValueError(f"relayed call {call.id} is closed")
        if (call.id, leg) in self._by_leg:
            raise ValueError(f"leg {leg} of relayed call {call.id} is already attached")
        endpoint = Endpoint(self, call, leg, codec, transport, self._rng)
        self._by_leg[(call.id, leg)] = endpoint
        # Copy on write: an observer may attach or detach while a tick walks the list.
        self._endpoints = [*self._endpoints, endpoint]
        self._alaw += endpoint.alaw
        self.stats.endpoints = len(self._endpoints)
        self._rewire(call)
        self._arm()
        return endpoint

    def detach(self, endpoint: Endpoint, *, hangup: bool = False) -> None:
        """Give the leg back to the relay: playback stops, a recording ends ("stopped", or
        "hangup" with `hangup=True` or if the call is already closed), the room is left, and
        relaying resumes on the same sockets. Idempotent."""
        reason: RecordReason = "hangup" if hangup or endpoint.call.closed else "stopped"
        self._remove(endpoint, reason)

    # --- inside ---

    def _remove(self, endpoint: Endpoint, reason: RecordReason) -> None:
        if self._by_leg.get((endpoint.call.id, endpoint.leg)) is not endpoint:
            endpoint._close(reason)
            return
        del self._by_leg[(endpoint.call.id, endpoint.leg)]
        self._endpoints = [e for e in self._endpoints if e is not endpoint]
        self._alaw -= endpoint.alaw
        self.stats.endpoints = len(self._endpoints)
        endpoint._close(reason)
        self._rewire(endpoint.call)

    def _rewire(self, call: RelayedCall) -> None:
        """Install each leg's receive: its endpoint's, or `_Deaf` while only the other leg is
        terminated, or the session's (plain relaying)."""
        if call.closed:
            return
        attached = {leg: self._by_leg.get((call.id, leg)) for leg in ("a", "b")}
        for leg, other in (("a", "b"), ("b", "a")):
            endpoint = attached[leg]
            if endpoint is not None:
                self.relay.set_leg_receive(call, leg, endpoint._receive)
            elif attached[other] is not None:
                self.relay.set_leg_receive(call, leg, _Deaf(call))
            else:
                self.relay.set_leg_receive(call, leg, None)

    def _notify(self, endpoint: Endpoint, event: MediaEvent) -> None:
        if self.observer is None:
            return
        try:
            self.observer(endpoint, event)
        except Exception:
            log.exception("media observer failed on %r", event)

    def _arm(self) -> None:
        if not self._started or self._closed or self._handle is not None or not self._endpoints:
            return
        self._origin = self._loop.time()
        self._origin_mono = time.monotonic()
        self._tick = 0
        self._handle = self._loop.call_at(self._origin, self._on_timer)

    def _on_timer(self) -> None:
        # Tick n is due at origin + n * tick_s (no drift); one run more than late_after_s
        # after that is late, one more than resync_after_s behind skips the missed ticks (the
        # streams jump in timestamp, marker set: RFC 3551 §4.1) rather than bursting.
        self._handle = None
        if self._closed:
            return
        stats = self.stats
        lag = time.monotonic() - (self._origin_mono + self._tick * self.tick_s)
        stats.ticks += 1
        if lag > self.late_after_s:
            stats.late_ticks += 1
            if lag > stats.max_lag_s:
                stats.max_lag_s = lag
            if lag > self.resync_after_s:
                # Far behind (the loop was blocked): skip the missed ticks, do not burst.
                skipped = int(lag / self.tick_s)
                self._tick += skipped
                stats.skipped_ticks += skipped
                for endpoint in self._endpoints:
                    endpoint._ts = (endpoint._ts + skipped * FRAME) & 0xFFFFFFFF
                    endpoint._marker = True
        elif lag > stats.max_lag_s:
            stats.max_lag_s = lag
        started = time.perf_counter()
        try:
            self._process(self._loop.time())
        except Exception:
            # A bug must cost one tick, never the clock.
            stats.tick_errors += 1
            if stats.tick_errors == 1 or stats.tick_errors % 1000 == 0:
                log.exception("media tick failed (%d so far)", stats.tick_errors)
        stats.busy_s += time.perf_counter() - started
        self._tick += 1
        if self._endpoints:
            self._handle = self._loop.call_at(self._origin + self._tick * self.tick_s,
                                              self._on_timer)

    def _process(self, now: float) -> None:
        """One tick for every endpoint: pop each jitter buffer and decode the frames of those
        who need samples (one 2-D G.711 table lookup), feeding the in-band detectors (one
        batch), recordings and rooms; mix each room (N-1, encoded in one lookup per room);
        take each endpoint's frame (room + playback, else playback, else silence: peers
        expect a steady stream); encode the frames still to encode (one lookup); send one RTP
        packet per endpoint from its leg's own RTP socket."""
        for endpoint in [e for e in self._endpoints if e.call.closed]:
            self._remove(endpoint, "hangup")
        endpoints = self._endpoints
        if not endpoints:
            return
        tick = self._tick

        # 1. Inbound: one frame per endpoint; decoded in one lookup for those who need PCM.
        wanting: list[Endpoint] = []
        payloads: list[bytes] = []
        for endpoint in endpoints:
            payload = endpoint.jitter.pop(now)
            if endpoint._rx_open:
                endpoint._poll_dtmf(now)
            if endpoint._wants_pcm:
                if payload is None or len(payload) != FRAME:
                    payload = _fit(payload, endpoint._silence)
                endpoint._row = len(wanting)
                wanting.append(endpoint)
                payloads.append(payload)
            else:
                endpoint._row = -1
        pcm: Samples | None = None
        if wanting:
            pcm = self._decode(wanting, payloads)
            detecting: list[Endpoint] = []
            detectors: list[DtmfDetector] = []
            for endpoint, frame in zip(wanting, pcm, strict=True):
                endpoint._in_pcm = frame
                if endpoint._detector is not None:
                    detecting.append(endpoint)
                    detectors.append(endpoint._detector)
            if detectors:
                # One batch for every detector (all rows of `pcm`, or those that detect).
                frames = pcm if len(detecting) == len(wanting) else pcm[
                    [e._row for e in detecting]]
                found = DtmfDetector.feed_many(detectors, frames)
                for endpoint, digits in zip(detecting, found, strict=True):
                    for digit in digits:
                        endpoint._press(digit.digit, "inband", now)

        # 2. Conference rooms: everyone hears the others.
        if len(self.rooms):
            started = time.perf_counter()
            for room in self.rooms._active():
                room._tick(pcm, tick)
            self.stats.mix_s += time.perf_counter() - started

        # 3. Outbound: playback, room mixes and silence come encoded; the rest (playback over
        # a room) is encoded together. (The frames stay on the endpoints: no per-endpoint
        # tuples live through the tick, so the collector's young generation stays small.)
        to_encode: list[Endpoint] = []
        for endpoint in endpoints:
            endpoint._out_payload, endpoint._out_pcm = endpoint._next_frame()
            if endpoint._out_payload is None:
                to_encode.append(endpoint)
        if to_encode:
            self._encode(to_encode)
        sent = 0
        for endpoint in endpoints:
            if endpoint.closed:  # detached during this tick (by an observer)
                continue
            recording = endpoint._recording
            if recording is not None:
                reason = recording.add(endpoint._in_pcm, endpoint._out_pcm, tick)
                if reason is not None:
                    endpoint._end_recording(reason)
            payload = endpoint._out_payload
            if payload is not None:  # always, after _encode
                sent += endpoint._send(payload)
        self.stats.packets_sent += sent

    def _decode(self, endpoints: list[Endpoint], payloads: list[bytes]) -> Samples:
        codes = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(len(payloads), FRAME)
        if not self._alaw:
            return ULAW_TO_LINEAR[codes]
        index = codes.astype(np.intp)
        index[np.array([e.alaw for e in endpoints], dtype=np.bool_)] += 256
        return _DECODE_BOTH[index]

    def _encode(self, endpoints: list[Endpoint]) -> None:
        pcm = np.stack([e._out_pcm for e in endpoints]).view(np.uint16)
        if self._alaw:
            codecs = np.array([e.alaw for e in endpoints], dtype=np.intp)
            codes = _ENCODE_BOTH[codecs[:, None], pcm]
        else:
            codes = LINEAR_TO_ULAW[pcm]
        for endpoint, row in zip(endpoints, codes, strict=True):
            endpoint._out_payload = row.tobytes()


def _fit(payload: bytes | None, silence: bytes) -> bytes:
    """A lost frame is silence; a frame of another length is cut or padded to 20 ms."""
    if payload is None:
        return silence
    return (payload + silence)[:FRAME]
