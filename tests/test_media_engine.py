"""The media engine over real UDP on 127.0.0.1: parties are plain datagram sockets talking to a
real `RtpRelay` whose legs the engine terminates (prompts, DTMF in and out, recording,
conferences, detach back to relaying, the media clock)."""

from __future__ import annotations

import asyncio
import itertools
import struct
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import uvloop

from edge.io.media_engine import (
    Codec,
    DtmfPress,
    Endpoint,
    EndpointClosed,
    MediaEngine,
    MediaEvent,
    PlayResult,
    RecordResult,
)
from edge.io.rtp_relay import RelayedCall, RtpRelay
from edge.media import g711
from edge.media.audio import decode_wav, silence, tone
from edge.rtp.dtmf import DtmfReceiver, DtmfSender
from edge.rtp.packet import RtpPacket
from tests.audio_checks import band_share, dominant_frequency, read_wav
from tests.test_rtp_io import OPEN_PHONES, OPEN_RELAYS, Phone, free_range, phone

pytestmark = pytest.mark.timeout(30)

LOCAL = "127.0.0.1"
PCMU = Codec(payload_type=0, name="PCMU", telephone_event_pt=101)
# A copy of ../shared/audio/dtmf_1234hash_8k.wav.
DTMF_PCM = decode_wav((Path(__file__).parent / "vectors" / "audio" / "dtmf_1234hash_8k.wav")
                      .read_bytes())
Samples = npt.NDArray[np.int16]
Address = tuple[str, int]

ENGINES: list[MediaEngine] = []

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(scenario: Callable[[], Awaitable[None]], loop: str = "uvloop",
        timeout: float = 15.0) -> None:
    async def main() -> None:
        try:
            await asyncio.wait_for(scenario(), timeout)
        finally:
            for engine in ENGINES:
                await engine.aclose()
            for relay in OPEN_RELAYS:
                relay.close()
            for sock in OPEN_PHONES:
                if sock.transport is not None:
                    sock.transport.close()
            ENGINES.clear()
            OPEN_RELAYS.clear()
            OPEN_PHONES.clear()
            await asyncio.sleep(0.01)

    with asyncio.Runner(loop_factory=LOOPS[loop]) as r:
        r.run(main())


# --- the lab: a relay, an engine, parties ----------------------------------------------------


def new_relay(pairs: int) -> RtpRelay:
    base = free_range(pairs)
    relay = RtpRelay(LOCAL, base, base + 2 * pairs - 1)
    OPEN_RELAYS.append(relay)
    return relay


def new_engine(relay: RtpRelay, **kwargs: object) -> MediaEngine:
    engine = MediaEngine(relay, **kwargs)  # type: ignore[arg-type]
    ENGINES.append(engine)
    engine.start()
    return engine


async def party_call(relay: RtpRelay, b: Phone | None = None) -> tuple[Phone, RelayedCall]:
    """A party on leg a of a new relayed call (leg b's SDP: `b`, or a dead address)."""
    a = await phone()
    other = b.address if b is not None else (LOCAL, 9)
    call = await relay.open_session(a.address, other)
    return a, call


def rtp(pt: int, seq: int, ts: int, payload: bytes, *, ssrc: int = 0x5151,
        marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       ts & 0xFFFFFFFF, ssrc) + payload


class Stream:
    """What a party sends: 20 ms PCMU frames paced by the loop clock, with RFC 4733 digits
    spliced in (the event packets replace the audio of their ticks)."""

    def __init__(self, party: Phone, dest: Address, *, ssrc: int = 0x5151) -> None:
        self.party = party
        self.dest = dest
        self.ssrc = ssrc
        self.seq = 1000
        self.ts = 50_000
        self.sent = 0

    async def send(self, pcm: Samples, *, digits: str = "", digits_at: int = 0,
                   dup_events: bool = False, alongside: bool = False) -> None:
        """Send `pcm` (padded to whole frames) as one packet per 20 ms; from frame
        `digits_at` on, the RFC 4733 packets of `digits` replace audio (`dup_events`: each
        event packet is sent twice, as a lossy path's retransmissions look; `alongside`: the
        audio is sent too, as phones that leave the tones in the audio do)."""
        loop = asyncio.get_running_loop()
        frames = -(-len(pcm) // 160)
        padded = np.zeros(frames * 160, dtype=np.int16)
        padded[: len(pcm)] = pcm
        sender = DtmfSender(digits, payload_type=101, ssrc=self.ssrc) if digits else None
        start = loop.time()
        for i in range(frames):
            delay = start + i * 0.02 - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            packets: list[bytes] = []
            if sender is not None and i >= digits_at and not sender.done:
                packets = sender.packets_for_tick(self.seq, self.ts)
            if packets:
                for packet in packets:
                    self.party.send(packet, self.dest)
                    if dup_events:
                        self.party.send(packet, self.dest)
                self.seq += len(packets)
            if not packets or alongside:
                payload = g711.ulaw_encode(padded[i * 160:(i + 1) * 160])
                self.party.send(rtp(0, self.seq, self.ts, payload, ssrc=self.ssrc,
                                    marker=i == 0), self.dest)
                self.seq += 1
            self.ts += 160
            self.sent += 1


async def collect(party: Phone, seconds: float) -> list[tuple[float, bytes, Address]]:
    """Every datagram the party receives for `seconds`, with its arrival (loop) time."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    out: list[tuple[float, bytes, Address]] = []
    while (left := end - loop.time()) > 0:
        try:
            data, addr = await asyncio.wait_for(party.queue.get(), left)
        except TimeoutError:
            break
        out.append((loop.time(), data, addr))
    return out


def audio_of(packets: list[bytes], pt: int = 0) -> Samples:
    """The PCMU payloads of `packets` (of PT `pt`), decoded and concatenated."""
    parts = [g711.ulaw_decode(RtpPacket.parse(p).payload) for p in packets
             if p[1] & 0x7F == pt]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


def as_float(samples: Samples) -> npt.NDArray[np.float64]:
    return samples.astype(np.float64) / 32768.0


def drain(queue: asyncio.Queue[DtmfPress]) -> list[DtmfPress]:
    out: list[DtmfPress] = []
    while not queue.empty():
        out.append(queue.get_nowait())
    return out


async def digits_within(endpoint: Endpoint, count: int, seconds: float) -> list[DtmfPress]:
    out: list[DtmfPress] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while len(out) < count and (left := end - loop.time()) > 0:
        try:
            out.append(await asyncio.wait_for(endpoint.digits.get(), left))
        except TimeoutError:
            break
    return out


# --- audio out: pacing, header, payload -------------------------------------------------------


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_play_sends_a_paced_stream_that_decodes_to_the_tone(loop: str) -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        done = endpoint.play(tone(1000, 1000), loop=1)
        got = await collect(party, 1.4)
        assert await asyncio.wait_for(done, 1) is PlayResult.COMPLETED

        assert {addr for _, _, addr in got} == {(LOCAL, call.a_ports[0])}
        headers = [RtpPacket.parse(data).header for _, data, _ in got]
        assert {h.ssrc for h in headers} == {endpoint.ssrc}
        assert {h.payload_type for h in headers} == {0}
        assert headers[0].marker and not any(h.marker for h in headers[1:])
        for first, second in itertools.pairwise(headers):
            assert second.sequence_number == (first.sequence_number + 1) & 0xFFFF
            assert second.timestamp == (first.timestamp + 160) & 0xFFFFFFFF
        # 50 packets per second, paced: 1.4 s gives 70 +- a few, and no bursts.
        assert 64 <= len(got) <= 72, len(got)
        times = np.array([t for t, _, _ in got])
        gaps = np.diff(times)
        assert float(np.median(gaps)) == pytest.approx(0.02, abs=0.003)
        assert float(np.percentile(gaps, 95)) < 0.04
        span = (times[-1] - times[0]) / (len(times) - 1)
        assert span == pytest.approx(0.02, abs=0.001)  # the clock does not drift

        audio = audio_of([data for _, data, _ in got])
        played, after = audio[:8000], audio[8000:]
        assert dominant_frequency(as_float(played), 8000) == pytest.approx(1000, abs=5)
        assert band_share(as_float(played), 8000, 1000) > 0.95
        assert np.abs(after).max() == 0  # then silence frames, still sent
        assert engine.stats.ticks >= 60 and engine.stats.endpoints == 1

    run(scenario, loop)


def test_loop_gain_queue_and_stop_playback() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        beep = tone(500, 100, -10)
        first = endpoint.play(beep, loop=3, gain=0.5)
        second = endpoint.play(tone(1500, 2000), loop=0)  # forever, until stopped
        got = await collect(party, 0.6)
        assert first.done() and first.result() is PlayResult.COMPLETED
        assert not second.done() and endpoint.playing
        endpoint.stop_playback()
        assert second.result() is PlayResult.STOPPED
        assert not endpoint.playing
        audio = audio_of([data for _, data, _ in got])
        quiet = as_float(audio[:2400])  # three loops of 100 ms
        assert dominant_frequency(quiet, 8000) == pytest.approx(500, abs=10)
        loud = g711.ulaw_decode(g711.ulaw_encode(beep)).astype(np.float64) / 32768
        ratio = np.sqrt(np.mean(quiet**2)) / np.sqrt(np.mean(loud**2))
        assert ratio == pytest.approx(0.5, abs=0.03)
        assert dominant_frequency(as_float(audio[2400:4000]), 8000) == pytest.approx(1500, abs=10)

        await collect(party, 0.05)  # what was in flight when it stopped
        cancelled = endpoint.play(tone(700, 1000))
        cancelled.cancel()  # cancelling the future stops it too
        late = await collect(party, 0.2)
        assert np.abs(audio_of([d for _, d, _ in late])).max() == 0

    run(scenario)


# --- DTMF in --------------------------------------------------------------------------------


def test_rfc4733_digits_are_queued_once_each() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        events: list[MediaEvent] = []
        engine = new_engine(relay, observer=lambda ep, ev: events.append(ev))
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        stream = Stream(party, (LOCAL, call.a_ports[0]))
        # Every event packet twice (duplicates), three end packets per digit (RFC 4733).
        await stream.send(silence(1400), digits="159#", digits_at=5, dup_events=True)
        presses = await digits_within(endpoint, 4, 1.0)
        await asyncio.sleep(0.3)
        presses += drain(endpoint.digits)
        assert "".join(p.digit for p in presses) == "159#"
        assert {p.source for p in presses} == {"rfc4733"}
        assert [e for e in events if isinstance(e, DtmfPress)] == presses
        assert call.session.a.rtp_source == party.address  # the session still latches

    run(scenario)


def test_inband_digits_from_the_shared_recording() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        assert endpoint.inband_dtmf
        pcm = DTMF_PCM
        await Stream(party, (LOCAL, call.a_ports[0])).send(pcm)
        presses = await digits_within(endpoint, 5, 1.0)
        assert "".join(p.digit for p in presses) == "1234#"
        assert {p.source for p in presses} == {"inband"}
        # Turned off (nobody collects digits), the same tones give nothing.
        endpoint.inband_dtmf = False
        await Stream(party, (LOCAL, call.a_ports[0]), ssrc=7).send(pcm[:12000])
        await asyncio.sleep(0.2)
        assert drain(endpoint.digits) == [] and not endpoint.inband_dtmf

    run(scenario)


def test_rfc4733_and_the_same_tone_in_band_count_once() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        key_1 = np.clip(tone(697, 100, -8).astype(np.int32) + tone(1209, 100, -8), -32768,
                        32767).astype(np.int16)
        audio = np.concatenate((silence(200), key_1, silence(300), key_1, silence(300)))
        await Stream(party, (LOCAL, call.a_ports[0])).send(
            audio, digits="1", digits_at=10, alongside=True)
        await asyncio.sleep(0.3)
        presses = drain(endpoint.digits)
        # The event came first and turned the detector off: the second tone, in-band only
        # (no event), is not heard as a key either.
        assert [(p.digit, p.source) for p in presses] == [("1", "rfc4733")]

    run(scenario)


def test_info_digits_are_queued_and_turn_inband_detection_off() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        endpoint.feed_info_digit("5")
        endpoint.feed_info_digit("b")
        assert [(p.digit, p.source) for p in drain(endpoint.digits)] == [
            ("5", "info"), ("B", "info")]
        with pytest.raises(ValueError, match="DTMF"):
            endpoint.feed_info_digit("x")
        # The party's phone also plays the tones in-band: never counted a second time.
        await Stream(party, (LOCAL, call.a_ports[0])).send(DTMF_PCM)
        await asyncio.sleep(0.2)
        assert drain(endpoint.digits) == []
        endpoint.inband_dtmf = True  # stays off: an out-of-band digit was seen
        assert not endpoint.inband_dtmf

    run(scenario)


def test_a_digit_barges_in_on_a_barge_in_prompt_only() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        menu = endpoint.play(tone(1000, 500), loop=0, barge_in=True)
        after = endpoint.play(tone(600, 300), barge_in=False)
        stream = Stream(party, (LOCAL, call.a_ports[0]))
        loop = asyncio.get_running_loop()
        sending = loop.create_task(stream.send(silence(600), digits="7", digits_at=10))
        result = await asyncio.wait_for(menu, 2)
        barged_at = loop.time()
        assert result is PlayResult.BARGED_IN
        assert not after.done()
        assert await asyncio.wait_for(after, 2) is PlayResult.COMPLETED
        # The next prompt is heard after the barge-in: 600 Hz, not 1 kHz.
        await sending
        press = await asyncio.wait_for(endpoint.digits.get(), 1)
        assert press.digit == "7"
        assert press.at >= barged_at - 0.001  # barged on key-down, queued on key-up

    run(scenario)


# --- DTMF out -------------------------------------------------------------------------------


def test_send_dtmf_splices_rfc4733_events_into_the_stream() -> None:
    async def scenario() -> None:
        relay = new_relay(4)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        await collect(party, 0.1)
        sent = endpoint.send_dtmf("12#")
        got = await collect(party, 1.0)
        await asyncio.wait_for(sent, 0.5)
        packets = [RtpPacket.parse(data) for _, data, _ in got]
        receiver = DtmfReceiver()
        digits = ""
        for packet in packets:
            if packet.header.payload_type == 101:
                digits += "".join(d.digit for d in receiver.feed(
                    packet.header.timestamp, packet.payload, 0.0))
        assert digits == "12#"
        starts = [p for p in packets if p.header.payload_type == 101 and p.header.marker]
        assert len(starts) == 3
        for a, b in itertools.pairwise(packets):
            assert b.header.sequence_number == (a.header.sequence_number + 1) & 0xFFFF
        audio = [p for p in packets if p.header.payload_type == 0]
        # Audio resumes between and after the digits, its clock unaffected.
        assert len(audio) >= 20
        _, plain_call = await party_call(relay)
        plain = engine.attach(plain_call, "a", Codec(0, "PCMU"))
        with pytest.raises(ValueError, match="telephone-event"):
            plain.send_dtmf("1")

    run(scenario)


# --- recording ------------------------------------------------------------------------------


def test_mono_recording_holds_the_party_tone(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        path = tmp_path / "rec" / "mono.wav"
        done = endpoint.start_recording(str(path))
        await Stream(party, (LOCAL, call.a_ports[0])).send(tone(1000, 1000))
        await asyncio.sleep(0.1)
        endpoint.stop_recording()
        result = await asyncio.wait_for(done, 1)
        assert result.reason == "stopped" and result.path == str(path)
        wav = read_wav(path)
        assert wav.rate == 8000 and len(wav.channels) == 1
        assert result.size_bytes == path.stat().st_size
        assert result.duration_s == pytest.approx(wav.seconds)
        assert 1.0 <= wav.seconds <= 1.3
        assert dominant_frequency(wav.channels[0], 8000) == pytest.approx(1000, abs=5)
        assert band_share(wav.channels[0], 8000, 1000) > 0.9

    run(scenario)


def test_stereo_recording_after_the_beep(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        path = tmp_path / "stereo.wav"
        done = endpoint.start_recording(str(path), stereo=True, beep=True, timeout_s=0.8)
        endpoint.play(tone(440, 3000))
        loop = asyncio.get_running_loop()
        sending = loop.create_task(
            Stream(party, (LOCAL, call.a_ports[0])).send(tone(1700, 1500)))
        got = await collect(party, 0.3)
        result = await asyncio.wait_for(done, 2)
        await sending
        assert result.reason == "timeout"
        assert result.duration_s == pytest.approx(0.8)
        # The party heard the beep (1 kHz, 250 ms) before the prompt.
        heard = audio_of([d for _, d, _ in got])
        assert dominant_frequency(as_float(heard[:1600]), 8000) == pytest.approx(1000, abs=10)
        wav = read_wav(path)
        assert len(wav.channels) == 2
        left, right = wav.channels
        assert band_share(left[1600:], 8000, 1700) > 0.9  # the party
        assert band_share(right, 8000, 440) > 0.9  # what the edge sent, the beep not in it

    run(scenario)


def test_recording_ends_on_silence_and_on_key(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay = new_relay(4)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        done = endpoint.start_recording(str(tmp_path / "s.wav"), end_on_silence_s=0.4)
        await Stream(party, (LOCAL, call.a_ports[0])).send(
            np.concatenate((tone(1000, 600), silence(1000))))
        result = await asyncio.wait_for(done, 1)
        assert result.reason == "silence"
        # 600 ms of tone (after the jitter buffer's delay), then 400 ms of silence.
        assert 0.95 <= result.duration_s <= 1.2, result.duration_s

        party2, call2 = await party_call(relay)
        endpoint2 = engine.attach(call2, "a", PCMU)
        done2 = endpoint2.start_recording(str(tmp_path / "k.wav"), end_on_key="#")
        await Stream(party2, (LOCAL, call2.a_ports[0])).send(
            tone(1000, 1000), digits="1#", digits_at=20)
        result2 = await asyncio.wait_for(done2, 1)
        assert result2.reason == "key"
        assert 0.3 <= result2.duration_s <= 0.9
        await asyncio.sleep(0.1)
        assert [p.digit for p in drain(endpoint2.digits)] == ["1"]  # "#" was consumed

    run(scenario)


def test_hangup_ends_the_endpoint(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        _, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        recorded = endpoint.start_recording(str(tmp_path / "h.wav"))
        played = endpoint.play(tone(400, 5000))
        digits = endpoint.send_dtmf("123")
        await asyncio.sleep(0.1)
        relay.close_session(call)  # the B2BUA hung up
        assert (await asyncio.wait_for(recorded, 1)).reason == "hangup"
        assert await played is PlayResult.STOPPED
        with pytest.raises(EndpointClosed):
            await digits
        assert endpoint.closed and engine.endpoint(call, "a") is None
        assert engine.stats.endpoints == 0
        with pytest.raises(EndpointClosed):
            endpoint.play(tone(400, 100))

    run(scenario)


# --- conference -----------------------------------------------------------------------------


def test_conference_of_three_each_hears_the_other_two() -> None:
    freqs = (400.0, 1000.0, 2200.0)

    async def scenario() -> None:
        relay = new_relay(6)
        engine = new_engine(relay)
        parties: list[tuple[Phone, RelayedCall, Endpoint]] = []
        for _ in freqs:
            party, call = await party_call(relay)
            endpoint = engine.attach(call, "a", PCMU)
            endpoint.join("room-1")
            parties.append((party, call, endpoint))
        room = engine.rooms["room-1"]
        assert len(room) == 3 and set(room.members) == {e for _, _, e in parties}
        loop = asyncio.get_running_loop()
        senders = [loop.create_task(Stream(p, (LOCAL, c.a_ports[0]), ssrc=100 + i).send(
            tone(f, 1200, -16))) for i, ((p, c, _), f) in enumerate(zip(parties, freqs,
                                                                          strict=True))]
        await asyncio.sleep(0.3)
        heard = await asyncio.gather(*(collect(p, 0.6) for p, _, _ in parties))
        await asyncio.gather(*senders)
        for i, got in enumerate(heard):
            audio = as_float(audio_of([d for _, d, _ in got]))
            others = [f for j, f in enumerate(freqs) if j != i]
            for f in others:
                assert band_share(audio, 8000, f) > 0.3, (i, f)
            assert band_share(audio, 8000, freqs[i]) < 0.01, i
            assert sum(band_share(audio, 8000, f) for f in others) > 0.95
        # Muted: the others stop hearing party 0; leaving empties the room.
        parties[0][2].join("room-1", mute=True)
        for _, _, endpoint in parties:
            endpoint.leave()
        assert "room-1" not in engine.rooms
        assert engine.stats.mix_s > 0

    run(scenario)


async def conference_parties(engine: MediaEngine, relay: RtpRelay,
                             count: int) -> list[tuple[Phone, RelayedCall, Endpoint]]:
    parties: list[tuple[Phone, RelayedCall, Endpoint]] = []
    for _ in range(count):
        party, call = await party_call(relay)
        parties.append((party, call, engine.attach(call, "a", PCMU)))
    return parties


def talk(parties: list[tuple[Phone, RelayedCall, Endpoint]], freqs: tuple[float, ...],
         ms: int, *, ssrc: int = 300) -> list[asyncio.Task[None]]:
    """Each party sends its own tone for `ms` (in the background), as a new stream (SSRC
    `ssrc + i`: a stream that started over under its old SSRC would be late)."""
    loop = asyncio.get_running_loop()
    return [loop.create_task(Stream(p, (LOCAL, c.a_ports[0]), ssrc=ssrc + i).send(
        tone(f, ms, -16))) for i, ((p, c, _), f) in enumerate(zip(parties, freqs,
                                                                  strict=True))]


def heard_share(got: list[tuple[float, bytes, Address]], freq: float) -> float:
    audio = as_float(audio_of([d for _, d, _ in got]))
    return band_share(audio, 8000, freq) if len(audio) and np.abs(audio).max() > 0 else 0.0


def test_a_room_waits_for_its_starter_with_music_on_hold() -> None:
    """Vonage `startOnEnter: false`: members wait, hearing music on hold (or silence), and
    are not mixed, until a member who may start the room comes in."""
    freqs = (400.0, 1000.0, 2200.0)

    async def scenario() -> None:
        relay = new_relay(6)
        engine = new_engine(relay)
        parties = await conference_parties(engine, relay, 3)
        (pa, _, ea), (pb, _, eb), (_, _, ec) = parties
        music = tone(600, 300, -12)
        left_a = ea.join("lobby", start_on_enter=False, music_on_hold=music)
        eb.join("lobby", start_on_enter=False)
        room = engine.rooms["lobby"]
        assert not room.started and len(room) == 2 and not left_a.done()
        senders = talk(parties[:2], freqs[:2], 900)
        await asyncio.gather(collect(pa, 0.2), collect(pb, 0.2))
        got_a, got_b = await asyncio.gather(collect(pa, 0.5), collect(pb, 0.5))
        assert heard_share(got_a, 600) > 0.9  # the music, looped (300 ms, played over 500)
        assert heard_share(got_a, freqs[1]) < 0.01  # not the other member
        assert len(got_b) >= 20 and heard_share(got_b, freqs[0]) == 0.0  # silence
        await asyncio.gather(*senders)

        ec.join("lobby")  # start_on_enter (the default): the room starts
        assert room.started and len(room) == 3
        senders = talk(parties, freqs, 1200, ssrc=400)
        await asyncio.gather(*(collect(p, 0.3) for p, _, _ in parties))  # what was queued
        heard = await asyncio.gather(*(collect(p, 0.6) for p, _, _ in parties))
        await asyncio.gather(*senders)
        for i, got in enumerate(heard):
            others = [f for j, f in enumerate(freqs) if j != i]
            assert sum(heard_share(got, f) for f in others) > 0.9, i
            assert heard_share(got, 600) < 0.01, i  # the music is over
            assert heard_share(got, freqs[i]) < 0.01, i

    run(scenario)


def test_end_on_exit_ends_the_room_for_everyone() -> None:
    async def scenario() -> None:
        relay = new_relay(8)
        engine = new_engine(relay)
        parties = await conference_parties(engine, relay, 4)
        endpoints = [e for _, _, e in parties]
        host, guest, other, late = endpoints
        left = [e.join("board", end_on_exit=e is host) for e in endpoints[:3]]
        assert guest.join("board") is left[1]  # the same room again: the same future
        await asyncio.sleep(0.05)
        guest.leave()  # an ordinary member goes: the room goes on
        assert await asyncio.wait_for(left[1], 1) == "left"
        assert "board" in engine.rooms and not left[0].done() and not left[2].done()

        host.leave()  # the host goes: the room ends, the others are out of it
        assert await asyncio.wait_for(left[0], 1) == "left"
        assert await asyncio.wait_for(left[2], 1) == "room_ended"
        assert "board" not in engine.rooms and other.room is None and not other.closed
        assert other.inband_dtmf  # back to detecting digits for the next step

        # The same with a hangup: the host's call ends, the others are removed.
        first = host.join("board2", end_on_exit=True)
        second = other.join("board2")
        third = late.join("board2", start_on_enter=False)
        relay.close_session(parties[0][1])
        assert await asyncio.wait_for(first, 1) == "hangup"
        assert await asyncio.wait_for(second, 1) == "room_ended"
        assert await asyncio.wait_for(third, 1) == "room_ended"
        assert len(engine.rooms) == 0

        # Another room, detach: "left".
        moved = other.join("a")
        other.join("b")
        assert await asyncio.wait_for(moved, 1) == "left"
        kept = other.join("b")
        engine.detach(other)
        assert await asyncio.wait_for(kept, 1) == "left"

    run(scenario)


def test_inband_detection_rests_while_in_a_room() -> None:
    async def scenario() -> None:
        relay = new_relay(4)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        dest = (LOCAL, call.a_ports[0])
        endpoint.join("quiet")
        assert not endpoint.inband_dtmf
        await Stream(party, dest).send(DTMF_PCM)
        await asyncio.sleep(0.2)
        assert drain(endpoint.digits) == []  # the room takes no digits
        endpoint.leave()
        assert endpoint.inband_dtmf
        await Stream(party, dest, ssrc=8).send(DTMF_PCM)
        presses = await digits_within(endpoint, 5, 1.0)
        assert "".join(p.digit for p in presses) == "1234#"

        # Off before the room: still off after it. Set in the room: what comes back.
        endpoint.inband_dtmf = False
        endpoint.join("quiet")
        endpoint.leave()
        assert not endpoint.inband_dtmf
        endpoint.join("quiet")
        endpoint.inband_dtmf = True
        assert not endpoint.inband_dtmf  # resting while in the room
        endpoint.leave()
        assert endpoint.inband_dtmf
        # An out-of-band digit in the room: detection never comes back.
        endpoint.join("quiet")
        endpoint.feed_info_digit("4")
        endpoint.leave()
        assert not endpoint.inband_dtmf

    run(scenario)


def test_room_recording_holds_everyone_heard(tmp_path: Path) -> None:
    freqs = (400.0, 1000.0, 2200.0)

    async def scenario() -> None:
        relay = new_relay(6)
        engine = new_engine(relay)
        parties = await conference_parties(engine, relay, 3)
        for i, (_, _, endpoint) in enumerate(parties):
            endpoint.join("rec", mute=i == 2)  # the third is muted: not in the mix
        room = engine.rooms["rec"]
        path = tmp_path / "room" / "rec.wav"
        done = room.start_recording(str(path))
        assert room.recording
        with pytest.raises(ValueError, match="already recording"):
            room.start_recording(str(tmp_path / "again.wav"))
        senders = talk(parties, freqs, 1000)
        await asyncio.gather(*senders)
        await asyncio.sleep(0.1)
        room.stop_recording()
        result = await asyncio.wait_for(done, 1)
        assert result.reason == "stopped" and not room.recording
        wav = read_wav(path)
        assert len(wav.channels) == 1 and wav.rate == 8000
        assert result.size_bytes == path.stat().st_size
        assert 1.0 <= result.duration_s <= 1.3 and result.duration_s == pytest.approx(
            wav.seconds)
        mix = wav.channels[0]
        assert band_share(mix, 8000, freqs[0]) > 0.35
        assert band_share(mix, 8000, freqs[1]) > 0.35
        assert band_share(mix, 8000, freqs[2]) < 0.01  # muted

        # A recording ends with its room ("hangup").
        again = room.start_recording(str(tmp_path / "end.wav"))
        await asyncio.sleep(0.1)
        for _, _, endpoint in parties:
            endpoint.leave()
        ended = await asyncio.wait_for(again, 1)
        assert ended.reason == "hangup" and ended.duration_s == pytest.approx(0.1, abs=0.06)
        assert room.ended
        with pytest.raises(ValueError, match="ended"):
            room.start_recording(str(tmp_path / "late.wav"))

    run(scenario)


def test_playback_goes_over_the_room_and_join_validates() -> None:
    async def scenario() -> None:
        relay = new_relay(4)
        engine = new_engine(relay)
        parties = await conference_parties(engine, relay, 2)
        (pa, _, ea), (_, _, eb) = parties
        ea.join("r")
        eb.join("r")
        senders = talk(parties[1:], (1000.0,), 1000)
        await collect(pa, 0.2)
        played = ea.play(tone(2500, 2000, -16))
        got = await collect(pa, 0.5)
        await asyncio.gather(*senders)
        assert heard_share(got, 1000) > 0.3 and heard_share(got, 2500) > 0.3
        ea.stop_playback()
        assert played.result() is PlayResult.STOPPED
        with pytest.raises(TypeError):
            ea.join("r", music_on_hold=np.zeros(10, dtype=np.float32))
        engine.detach(ea)
        with pytest.raises(EndpointClosed):
            ea.join("r")

    run(scenario)


# --- detach, and the relay underneath -------------------------------------------------------


def test_detach_resumes_relaying_on_the_same_ports() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        b = await phone()
        a, call = await party_call(relay, b)
        b_dest = (LOCAL, call.b_ports[0])
        a_dest = (LOCAL, call.a_ports[0])
        endpoint = engine.attach(call, "a", PCMU)
        a.send(rtp(0, 1, 160, b"\xff" * 160), a_dest)
        b.send(rtp(0, 1, 160, b"\x11" * 160, ssrc=0xB), b_dest)  # b is not relayed to a
        got_a = await collect(a, 0.2)
        assert got_a and {RtpPacket.parse(d).header.ssrc for _, d, _ in got_a} == {
            endpoint.ssrc}
        assert await collect(b, 0.05) == []
        assert call.session.b.rtp_source == b.address  # b still latches

        engine.detach(endpoint)
        assert endpoint.closed and engine.stats.endpoints == 0
        await collect(a, 0.05)
        a.send(rtp(0, 2, 320, b"\x01" * 160, ssrc=0xA), a_dest)
        data, addr = await b.recv()
        assert addr == b_dest and RtpPacket.parse(data).header.ssrc == 0xA
        b.send(rtp(0, 2, 320, b"\x02" * 160, ssrc=0xB), b_dest)
        data, addr = await a.recv()
        assert addr == a_dest and RtpPacket.parse(data).header.ssrc == 0xB
        await a.nothing(0.1)  # the engine sends nothing any more

        again = engine.attach(call, "a", PCMU)  # terminate again, then both legs at once
        other = engine.attach(call, "b", PCMU)
        assert engine.endpoint(call, "b") is other and again.ssrc != other.ssrc
        with pytest.raises(ValueError, match="already attached"):
            engine.attach(call, "b", PCMU)

    run(scenario)


def test_a_relay_recording_still_taps_a_terminated_leg(tmp_path: Path) -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        party, call = await party_call(relay)
        path = tmp_path / "call.wav"
        relay.start_recording(call, str(path))
        endpoint = engine.attach(call, "a", PCMU)
        await Stream(party, (LOCAL, call.a_ports[0])).send(tone(1000, 600))
        await asyncio.sleep(0.05)
        result = relay.stop_recording(call)
        assert result is not None
        wav = read_wav(path)
        assert band_share(wav.channels[0], 8000, 1000) > 0.9
        # The engine kept receiving throughout, and after the recording stopped.
        assert endpoint.jitter.received == 30
        await Stream(party, (LOCAL, call.a_ports[0])).send(tone(1000, 100))
        await asyncio.sleep(0.05)
        assert endpoint.jitter.received == 35

    run(scenario)


# --- the clock ------------------------------------------------------------------------------


def test_a_blocked_loop_skips_ticks_and_marks_the_jump() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay, resync_after_s=0.1)
        party, call = await party_call(relay)
        endpoint = engine.attach(call, "a", PCMU)
        await collect(party, 0.2)
        time.sleep(0.3)  # noqa: ASYNC251 - the loop is blocked (a bug elsewhere, a GC pause)
        got = await collect(party, 0.2)
        headers = [RtpPacket.parse(d).header for _, d, _ in got]
        assert engine.stats.skipped_ticks >= 10
        assert engine.stats.late_ticks >= 1 and engine.stats.max_lag_s >= 0.1
        jumps = [(a, b) for a, b in itertools.pairwise(headers)
                 if b.timestamp - a.timestamp != 160]
        assert len(jumps) <= 1
        if jumps:  # the stream jumped once, marked (RFC 3551 §4.1)
            assert jumps[0][1].marker and jumps[0][1].timestamp - jumps[0][0].timestamp >= 1600
        assert endpoint.packets_sent == engine.stats.packets_sent

    run(scenario)


def test_attach_validates() -> None:
    async def scenario() -> None:
        relay = new_relay(2)
        engine = new_engine(relay)
        _, call = await party_call(relay)
        with pytest.raises(ValueError, match="no leg"):
            engine.attach(call, "c", PCMU)  # type: ignore[arg-type]
        relay.close_session(call)
        with pytest.raises(ValueError, match="closed"):
            engine.attach(call, "a", PCMU)
        with pytest.raises(ValueError):
            Codec(101, "PCMU", 101)
        with pytest.raises(ValueError):
            Codec(0, "G722")  # type: ignore[arg-type]
        await engine.aclose()
        with pytest.raises(RuntimeError):
            engine.attach(call, "a", PCMU)

    run(scenario)


def test_record_result_type() -> None:
    result = RecordResult(path="x.wav", duration_s=1.0, size_bytes=16044, reason="key")
    assert result.reason == "key"
    assert [str(r) for r in PlayResult] == ["completed", "stopped", "barged_in"]
