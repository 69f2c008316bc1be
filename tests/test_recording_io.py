"""Recording on the edge: the WAV writer on a real file, and a call recorded through `RtpRelay`
over real UDP on 127.0.0.1 (two phones send PCMU tones; the WAV must have each in its ear)."""

from __future__ import annotations

import asyncio
import struct
import wave
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pytest
import uvloop

from control.contracts.blob_keys import recording_key
from edge.io.recording import RecordingFile, RecordingResult
from edge.io.rtp_relay import RelayedCall, RtpRelay
from edge.media.g711 import ulaw_encode
from edge.media.recorder import StereoRecorder
from tests.test_rtp_io import free_range

pytestmark = pytest.mark.timeout(30)

LOCAL = "127.0.0.1"
RATE = 8000
PTIME = 160
Address = tuple[str, int]


# --- the WAV writer ---------------------------------------------------------------------------


def read_wav(path: str | Path) -> tuple[wave._wave_params, npt.NDArray[np.int16]]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        frames = wav.readframes(params.nframes)
    return params, np.frombuffer(frames, dtype="<i2").reshape(-1, params.nchannels)


def test_wav_header_is_fixed_on_close_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "recordings" / "2024" / "03" / "01" / "call-1.wav"
    recording = RecordingFile(str(path))  # creates the folders
    frames = np.array([[i, -i] for i in range(12000)], dtype="<i2").tobytes()
    recording.append(frames[:4000])
    recording.append(b"")
    recording.append(frames[4000:])
    # While open, the sizes are the streaming placeholders.
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
    assert struct.unpack_from("<I", raw, 4)[0] == 0xFFFFFFFF
    assert raw[36:40] == b"data" and struct.unpack_from("<I", raw, 40)[0] == 0xFFFFFFFF

    result = recording.close()
    assert result == RecordingResult(path=str(path), size_bytes=44 + 48000, duration_s=1.5)
    assert recording.close() is result  # idempotent
    assert path.stat().st_size == result.size_bytes
    raw = path.read_bytes()
    assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
    assert struct.unpack_from("<I", raw, 40)[0] == 48000
    params, samples = read_wav(path)
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert params.nframes == 12000 and params.comptype == "NONE"
    assert samples[:, 0].tolist() == list(range(12000))
    assert samples[:, 1].tolist() == [-i for i in range(12000)]


def test_wav_writer_refuses_partial_frames_and_writes_after_close(tmp_path: Path) -> None:
    recording = RecordingFile(str(tmp_path / "x.wav"))
    with pytest.raises(ValueError, match="whole number"):
        recording.append(b"\x00\x00")
    result = recording.close()
    assert result.size_bytes == 44 and result.duration_s == 0.0
    with pytest.raises(ValueError, match="closed"):
        recording.append(b"\x00" * 4)
    params, _ = read_wav(tmp_path / "x.wav")
    assert params.nframes == 0


def test_recording_key_is_dated_and_safe() -> None:
    # The one definition of the key (edge.pbx.cdr, shared with the CDR's): dated by the UTC
    # day of the start, the Call-ID kept as one safe path segment.
    started = datetime(2024, 3, 1, 23, 59, tzinfo=UTC).timestamp()
    assert recording_key("abc@host", started) == "recordings/2024/03/01/abc@host.wav"
    key = recording_key("a/../b", started)
    assert key.startswith("recordings/2024/03/01/") and key.count("/") == 4
    assert ".." not in key.split("/")


# --- through the relay, on real sockets ------------------------------------------------------

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


class Phone(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.append(data)

    @property
    def address(self) -> Address:
        assert self.transport is not None
        name: Any = self.transport.get_extra_info("sockname")
        return (name[0], name[1])

    def send(self, data: bytes, port: int) -> None:
        assert self.transport is not None
        self.transport.sendto(data, (LOCAL, port))


class Rig:
    """A relay with one session between two phones; closes everything on exit."""

    relay: RtpRelay
    call: RelayedCall
    a: Phone
    b: Phone

    async def __aenter__(self) -> Rig:
        base = free_range(2)
        self.relay = RtpRelay(LOCAL, base, base + 3, record_flush_s=0.1)
        loop = asyncio.get_running_loop()
        _, self.a = await loop.create_datagram_endpoint(Phone, local_addr=(LOCAL, 0))
        _, self.b = await loop.create_datagram_endpoint(Phone, local_addr=(LOCAL, 0))
        self.call = await self.relay.open_session(self.a.address, self.b.address)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.relay.close()
        for phone in (self.a, self.b):
            if phone.transport is not None:
                phone.transport.close()
        await asyncio.sleep(0.01)  # uvloop: let the transports close before the loop does

    async def talk(self, packets: int, *, first: int = 0) -> None:
        """Both phones send `packets` PCMU packets paced at 20 ms: A a 1000 Hz tone, B 440 Hz."""
        for i in range(first, first + packets):
            n = i * PTIME
            self.a.send(rtp(i, n, tone(1000, n), ssrc=0xA), self.call.a_ports[0])
            self.b.send(rtp(i, 3 * n, tone(440, n), ssrc=0xB, seq0=999), self.call.b_ports[0])
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)


def rtp(i: int, ts: int, payload: bytes, *, ssrc: int, seq0: int = 0) -> bytes:
    # Leg b's timestamps run from an odd origin: placement is relative to the first packet.
    return struct.pack("!BBHII", 0x80, 0, (seq0 + i) & 0xFFFF, 12345 + ts // 3 if ssrc == 0xB
                       else ts, ssrc) + payload


def tone(freq: float, first: int) -> bytes:
    t = np.arange(first, first + PTIME) / RATE
    return ulaw_encode((8000 * np.sin(2 * np.pi * freq * t)).astype(np.int16))


def peak_hz(samples: npt.NDArray[np.int16]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


def energy(samples: npt.NDArray[np.int16]) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


def run(loop_name: str, scenario: Callable[[], Awaitable[None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        runner.run(asyncio.wait_for(scenario(), 20))


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_recorded_call_has_the_caller_left_and_the_callee_right(
    loop_name: str, tmp_path: Path
) -> None:
    path = tmp_path / "recordings" / "call.wav"

    async def scenario() -> None:
        async with Rig() as rig:
            relay, call = rig.relay, rig.call
            plain = call.session.receive
            await rig.talk(5)  # before recording: relayed, not recorded
            relay.start_recording(call, str(path))
            assert call.recorded and relay.recordings_active == 1
            with pytest.raises(ValueError, match="already"):
                relay.start_recording(call, str(path))
            await rig.talk(40, first=5)
            # The flush task has been writing while the call goes on.
            assert path.stat().st_size > 44 + 4 * RATE // 10
            result = relay.stop_recording(call)
            assert result is not None and call.recording_result is result
            assert relay.stop_recording(call) is None and relay.recordings_active == 0
            # The plain fast path is back on every socket of the call.
            assert all(p.receive == plain for p in call.protocols)
            await rig.talk(3, first=45)  # after: relayed, not recorded

            # Every packet was relayed, untouched, before, during and after.
            assert len(rig.b.received) == len(rig.a.received) == 48
            assert rig.b.received[10][12:] == tone(1000, 10 * PTIME)

        assert result.path == str(path) and result.size_bytes == path.stat().st_size
        params, samples = read_wav(path)
        assert (params.nchannels, params.framerate, params.sampwidth) == (2, 8000, 2)
        assert result.duration_s == pytest.approx(params.nframes / RATE)
        # 40 packets = 0.8 s of audio, starting about when recording started.
        assert 0.75 <= result.duration_s <= 2.0
        left, right = samples[:, 0], samples[:, 1]
        voiced = slice(len(samples) - 6000, len(samples) - 400)
        assert peak_hz(left[voiced]) == pytest.approx(1000, abs=3)
        assert peak_hz(right[voiced]) == pytest.approx(440, abs=3)
        assert energy(left[voiced]) > 4000 and energy(right[voiced]) > 4000

    run(loop_name, scenario)


def test_close_session_finalises_the_recording_and_muted_legs_are_still_recorded(
    tmp_path: Path,
) -> None:
    path = tmp_path / "muted.wav"

    async def scenario() -> None:
        async with Rig() as rig:
            relay, call = rig.relay, rig.call
            call.session.a.muted = True  # nothing goes to A; what A sends is still recorded
            relay.start_recording(call, str(path))
            await rig.talk(25)
            assert rig.a.received == [] and len(rig.b.received) == 25
            relay.close_session(call)
            assert call.closed and call.recording is None and relay.recordings_active == 0
            result = call.recording_result
            assert result is not None and result.size_bytes == path.stat().st_size
            with pytest.raises(ValueError, match="closed"):
                relay.start_recording(call, str(tmp_path / "again.wav"))

        _, samples = read_wav(path)
        voiced = slice(len(samples) - 3000, len(samples) - 400)
        assert peak_hz(samples[voiced, 0]) == pytest.approx(1000, abs=3)
        assert peak_hz(samples[voiced, 1]) == pytest.approx(440, abs=3)

    run("uvloop", scenario)


def test_a_recorder_bug_costs_the_recording_not_the_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        async with Rig() as rig:
            relay, call = rig.relay, rig.call
            relay.start_recording(call, str(tmp_path / "bug.wav"))
            assert call.recording is not None

            class Broken(StereoRecorder):
                __slots__ = ()

                def feed(self, channel: int, packet: bytes, now: float) -> None:
                    raise RuntimeError("recorder bug")

            call.recording.recorder = Broken()
            await rig.talk(3)
            assert len(rig.b.received) == len(rig.a.received) == 3
            assert call.recording.errors == 6
            assert relay.stop_recording(call) is not None

    with caplog.at_level("ERROR", logger="sdpbx.rtp.io"):
        run("asyncio", scenario)
    assert sum("internal error recording" in r.getMessage() for r in caplog.records) == 1


def test_a_failing_disk_stops_the_recording_and_the_call_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class DiskFull(RecordingFile):
        __slots__ = ()

        def append(self, frames: bytes) -> None:
            raise OSError(28, "No space left on device")

    async def scenario() -> None:
        async with Rig() as rig:
            relay, call = rig.relay, rig.call
            relay.start_recording(call, str(tmp_path / "full.wav"))
            assert call.recording is not None
            call.recording.file.close()
            call.recording.file = DiskFull(str(tmp_path / "full.wav"))
            await rig.talk(2)
            relay.flush_recordings()
            # The file is closed with what it held (here: nothing) and the tap is gone.
            assert call.recording is None and call.recording_result is not None
            assert call.recording_result.size_bytes == 44
            assert all(p.receive == call.session.receive for p in call.protocols)
            assert relay.recordings_active == 0
            await rig.talk(2, first=2)
            assert len(rig.b.received) == 4

    with caplog.at_level("ERROR", logger="sdpbx.rtp.io"):
        run("asyncio", scenario)
    messages = [r.getMessage() for r in caplog.records]
    assert any("failed; stopping it" in m for m in messages)
    assert any("lost its last frames" in m for m in messages)
