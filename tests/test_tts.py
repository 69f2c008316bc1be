"""edge.io.tts: espeak-ng really speaking, Vonage language/voice names mapped to its voices, the
cache tiers (memory, disk, blob store) that spare the subprocess, and Polly's real client code
against a moto server on 127.0.0.1 (moto implements SynthesizeSpeech: it answers 8 bytes of
silence, and checks VoiceId, OutputFormat and SampleRate)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest

from control.store.local_blobs import LocalBlobStore
from edge.config import ConfigError, parse_config
from edge.io.prompts import PcmLru
from edge.io.tts import EspeakEngine, EspeakVoices, PollyEngine, Speech, SpeechError
from edge.media.audio import decode_wav
from tests.store.aws_servers import moto_endpoint  # noqa: F401 (a fixture)

T = TypeVar("T")
Samples = npt.NDArray[np.int16]


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()
    return asyncio.run(main())


@pytest.fixture
def espeak() -> None:
    """espeak-ng must be here; skip without it, but fail in CI (scripts/test.sh installs it)."""
    if shutil.which("espeak-ng") is None:
        message = "espeak-ng is not installed (Debian package espeak-ng)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def loud_frames(pcm: Samples, threshold: float = 500.0) -> npt.NDArray[np.bool_]:
    """Which 20 ms frames are louder than `threshold` RMS."""
    frames = pcm[: len(pcm) // 160 * 160].reshape(-1, 160).astype(np.float64)
    loud: npt.NDArray[np.bool_] = np.sqrt((frames ** 2).mean(axis=1)) > threshold
    return loud


def voiced_frames(pcm: Samples) -> int:
    return int(loud_frames(pcm).sum())


def voiced_segments(pcm: Samples) -> int:
    """Runs of loud frames (words, roughly)."""
    loud = loud_frames(pcm)
    return int(np.sum(np.diff(loud.astype(np.int8)) == 1) + int(loud[0]))


class CountingEspeak(EspeakEngine):
    """The real engine, counting the syntheses it runs (each one an espeak-ng process)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[str] = []

    async def synthesize(self, text: str, *, language: str | None,
                         voice: str | None) -> Samples:
        self.runs.append(text)
        return await super().synthesize(text, language=language, voice=voice)


# --- espeak-ng ------------------------------------------------------------------------------------


def test_espeak_says_one_two_three(espeak: None) -> None:
    async def scenario() -> tuple[Samples, Samples]:
        engine = EspeakEngine()
        return (await engine.synthesize("one two three", language="en-US", voice=None),
                await engine.synthesize("one", language="en-US", voice=None))

    words, one = run(scenario)
    assert words.dtype == np.int16 and words.ndim == 1
    seconds = len(words) / 8000  # 8 kHz: espeak's 22050 Hz resampled
    assert 0.6 < seconds < 3.0, seconds
    rms = float(np.sqrt(np.mean(words.astype(np.float64) ** 2)))
    assert rms > 1000, rms  # not silence
    assert voiced_segments(words) >= 2  # words with gaps between them, not one tone
    assert voiced_frames(words) > 1.5 * voiced_frames(one)  # "one" alone is drawn out
    spectrum = np.abs(np.fft.rfft(words.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(words), 1 / 8000)
    assert spectrum[(freqs > 200) & (freqs < 3400)].sum() > 0.5 * spectrum.sum()  # speech band


def test_espeak_maps_vonage_languages_and_voices(espeak: None,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        engine = EspeakEngine()
        cases = {
            ("en-US", None): "en-us",
            ("en-GB", None): "en-gb",
            ("es-MX", None): "es-419",  # an "other language" of that voice
            ("es-ES", None): "es",  # the primary subtag
            ("zh-CN", None): "cmn",
            ("fr-FR", "f3"): "fr-fr+f3",  # a variant alone: on the language's voice
            (None, "en-gb+Alex"): "en-gb+Alex",
            (None, "gmw/en-US"): "gmw/en-US",
            (None, None): "en-us",
        }
        for (language, voice), expected in cases.items():
            assert await engine.resolve(language=language, voice=voice) == expected
        with caplog.at_level(logging.WARNING, logger="sdpbx.tts"):
            for _ in range(3):  # Kimberly is a Polly voice: espeak falls back, logs once
                assert await engine.resolve(language="en-GB", voice="Kimberly") == "en-gb"
            assert await engine.resolve(language="xx-YY", voice=None) == "en-us"
        messages = [record.getMessage() for record in caplog.records]
        assert messages.count("espeak-ng has no voice 'Kimberly': using 'en-gb'") == 1
        assert "espeak-ng has no voice for language 'xx-YY'" in messages

    run(scenario)


def test_espeak_voices_parse() -> None:
    voices = EspeakVoices.parse(
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  cmn             --/M      Chinese_(Mandarin) sit/cmn              (zh-cmn 5)(zh 5)\n"
        " 2  en-us           --/M      English_(America)  gmw/en-US            (en 3)\n"
        " 5  es-419          --/M      Spanish_(Latin_America) roa/es-419      (es-mx 6)(es 6)\n"
        " 5  en-us           --/F      us-mbrola-1        mb/mb-us1            (en 8)\n",
        "Pty Language       Age/Gender VoiceName          File                 Other Languages\n"
        " 5  variant         --/M      Alex               !v/Alex              \n"
        " 5  variant         --/F      f3                 !v/f3                \n",
    )
    assert voices.language("zh-CN") == "cmn"
    assert voices.language("EN_us") == "en-us"
    assert voices.language("es-MX") == "es-419" and voices.language("es") == "es-419"
    assert voices.language("de-DE") is None
    assert voices.voice("alex", "en-US") == "en-us+Alex"
    assert voices.voice("en-us+F3", None) == "en-us+f3"
    assert voices.voice("en-us+nosuch", None) is None
    assert voices.voice("mb/mb-us1", None) is None  # MBROLA voices are left out
    assert voices.voice("Kimberly", "en-US") is None


def test_voices_sound_different(espeak: None) -> None:
    async def scenario() -> None:
        engine = EspeakEngine()
        plain = await engine.synthesize("hello", language=None, voice="en-us")
        female = await engine.synthesize("hello", language=None, voice="en-us+f3")
        assert not np.array_equal(plain, female)

    run(scenario)


def test_ssml_is_spoken_not_read_out(espeak: None) -> None:
    async def scenario() -> None:
        engine = EspeakEngine()
        ssml = await engine.synthesize("<speak>one</speak>", language=None, voice=None)
        plain = await engine.synthesize("one", language=None, voice=None)
        # Read out as text, the tags would add "less than speak greater than ..." (seconds).
        assert abs(len(ssml) - len(plain)) < 0.3 * len(plain)

    run(scenario)


def test_espeak_failures_are_speech_errors(tmp_path: Path) -> None:
    sleeper = tmp_path / "slow-espeak"
    sleeper.write_text("#!/bin/sh\nexec sleep 30\n")
    sleeper.chmod(0o755)

    async def scenario() -> None:
        missing = EspeakEngine(program=str(tmp_path / "no-such-espeak"))
        with pytest.raises(SpeechError, match="not installed"):
            await missing.synthesize("hi", language=None, voice=None)
        slow = EspeakEngine(program=str(sleeper), timeout_s=0.3)
        started = time.monotonic()
        with pytest.raises(SpeechError, match=re.escape("took more than 0.3 s")):
            await slow.synthesize("hi", language=None, voice=None)
        assert time.monotonic() - started < 3  # killed, not waited for

    run(scenario)


# --- the cache ------------------------------------------------------------------------------------


def test_cache_hits_skip_the_subprocess(espeak: None, tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")

    async def scenario() -> None:
        engine = CountingEspeak()
        speech = Speech(engine, cache_dir=tmp_path / "cache-a", blobs=blobs)
        first = await speech.synthesize("one two three", language="en-US")
        again = await speech.synthesize("one two three", language="en-US")
        assert again is first and engine.runs == ["one two three"]
        assert not first.flags.writeable
        await speech.synthesize("one two three", language="en-GB")  # another voice
        await speech.synthesize("one two three", language="en-US", voice="en-us+f3")
        assert len(engine.runs) == 3
        await speech.flush()
        key = speech.key("one two three", language="en-US", voice=None)
        assert (tmp_path / "cache-a" / "tts" / f"{key}.wav").is_file()
        assert np.array_equal(decode_wav(await blobs.get(f"tts/{key}.wav")), first)

        # A restart (empty memory) takes it from disk: an engine that cannot run is not run.
        broken = EspeakEngine(program=str(tmp_path / "no-such-espeak"))
        restarted = Speech(broken, cache_dir=tmp_path / "cache-a")
        assert np.array_equal(await restarted.synthesize("one two three", language="en-US"),
                              first)
        # Another edge (its own disk) takes it from the blob store, and keeps a disk copy.
        other = Speech(broken, cache_dir=tmp_path / "cache-b", blobs=blobs)
        assert np.array_equal(await other.synthesize("one two three", language="en-US"), first)
        assert (tmp_path / "cache-b" / "tts" / f"{key}.wav").is_file()
        with pytest.raises(SpeechError, match="not installed"):
            await other.synthesize("something new", language="en-US")
        for each in (speech, restarted, other):
            await each.aclose()

    run(scenario)


def test_concurrent_identical_requests_synthesize_once(espeak: None, tmp_path: Path) -> None:
    async def scenario() -> None:
        engine = CountingEspeak()
        speech = Speech(engine, cache_dir=tmp_path)
        results = await asyncio.gather(*(speech.synthesize("please hold") for _ in range(8)))
        assert engine.runs == ["please hold"]
        assert all(result is results[0] for result in results)
        await speech.aclose()

    run(scenario)


def test_the_default_voice_is_part_of_the_key(tmp_path: Path) -> None:
    engine = EspeakEngine()
    plain = Speech(engine, cache_dir=tmp_path)
    configured = Speech(engine, cache_dir=tmp_path, default_voice="en-gb")
    assert plain.key("hi", language=None, voice=None) != configured.key(
        "hi", language=None, voice=None)
    assert configured.key("hi", language=None, voice=None) == configured.key(
        "hi", language=None, voice="en-gb")
    assert plain.key("hi", language="en-US", voice=None) != plain.key(
        "hi", language="en-GB", voice=None)


def test_text_limits(tmp_path: Path) -> None:
    async def scenario() -> None:
        speech = Speech(EspeakEngine(program=str(tmp_path / "unused")), cache_dir=tmp_path)
        with pytest.raises(SpeechError, match="empty"):
            await speech.synthesize("   ")
        with pytest.raises(SpeechError, match="longer than 3000"):
            await speech.synthesize("a" * 3001)

    run(scenario)


# --- Polly (moto server) --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def polly_on_moto(endpoint: str, **options: Any
                        ) -> AsyncIterator[tuple[PollyEngine, list[dict[str, Any]]]]:
    """A PollyEngine on the moto server, and the SynthesizeSpeech requests it sends (as the
    JSON bodies botocore serialised); closed on the way out."""
    engine = PollyEngine(region="us-east-1", endpoint_url=endpoint, **options)
    requests: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        requests.append(json.loads(params["body"]))

    try:
        client = await engine.client()
        client.meta.events.register("before-call.polly.SynthesizeSpeech", record)
        yield engine, requests
    finally:
        await engine.aclose()


def test_polly_synthesizes_8khz_pcm(moto_endpoint: str) -> None:  # noqa: F811
    async def scenario() -> None:
        async with polly_on_moto(moto_endpoint) as (engine, requests):
            pcm = await engine.synthesize("hello", language="en-US", voice=None)
        assert pcm.dtype == np.int16 and len(pcm) == 4 and not pcm.any()  # moto's 8 bytes
        assert requests == [{"Text": "hello", "TextType": "text", "OutputFormat": "pcm",
                             "SampleRate": "8000", "VoiceId": "Joanna", "Engine": "standard",
                             "LanguageCode": "en-US"}]

    run(scenario)


def test_polly_voice_choice(moto_endpoint: str,  # noqa: F811
                            caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with polly_on_moto(moto_endpoint) as (engine, requests):
            resolve = engine.resolve
            assert await resolve(language=None, voice="kimberly") == (
                "Kimberly", "standard", None)
            assert await resolve(language="en-GB", voice=None) == ("Amy", "standard", "en-GB")
            assert await resolve(language="de-de", voice=None) == ("Vicki", "standard", "de-DE")
            # Vonage's "zh-CN" is Polly's "cmn-CN": the voice, without a LanguageCode Polly
            # would refuse.
            assert await resolve(language="zh-CN", voice=None) == ("Zhiyu", "standard", None)
            # A bilingual voice is told which of its languages to speak.
            assert await resolve(language="hi-IN", voice="Aditi") == (
                "Aditi", "standard", "hi-IN")
            # Danielle has no standard engine (neural, long-form): asked for with neural.
            assert await resolve(language=None, voice="Danielle") == (
                "Danielle", "neural", None)
            with caplog.at_level(logging.WARNING, logger="sdpbx.tts"):
                assert await resolve(language="en-GB", voice="en-gb+f3") == (
                    "Amy", "standard", "en-GB")
            assert "Polly has no voice 'en-gb+f3'" in caplog.text
            await engine.synthesize("namaste", language="hi-IN", voice="Aditi")
            assert requests[-1]["LanguageCode"] == "hi-IN"
            await engine.synthesize("<speak>hi</speak>", language=None, voice="Brian")
            assert requests[-1]["VoiceId"] == "Brian" and requests[-1]["TextType"] == "ssml"
            assert "LanguageCode" not in requests[-1]
        async with polly_on_moto(moto_endpoint, engine="neural") as (neural, _):
            assert await neural.resolve(language="en-US", voice=None) == (
                "Joanna", "neural", "en-US")

    run(scenario)


def test_polly_errors_are_speech_errors(moto_endpoint: str) -> None:  # noqa: F811
    async def scenario() -> None:
        async with polly_on_moto(moto_endpoint) as (engine, _):
            with pytest.raises(SpeechError, match="TextLengthExceeded"):
                await engine.synthesize("a" * 3001, language=None, voice=None)

    run(scenario)


def test_polly_through_speech_is_cached(moto_endpoint: str, tmp_path: Path) -> None:  # noqa: F811
    async def scenario() -> None:
        async with polly_on_moto(moto_endpoint) as (engine, requests):
            speech = Speech(engine, cache_dir=tmp_path, memory=PcmLru())
            first = await speech.synthesize("your call is important", language="en-GB")
            again = await speech.synthesize("your call is important", language="en-GB")
            assert again is first and len(requests) == 1
            assert requests[0]["VoiceId"] == "Amy"
            await speech.flush()

    run(scenario)


# --- config -------------------------------------------------------------------------------------


def test_tts_config_keys(tmp_path: Path) -> None:
    default = parse_config("")
    assert default.tts.engine == "espeak" and default.tts.voice is None
    assert default.tts.polly_engine == "standard"
    speech = Speech.from_config(default, blobs=None)
    assert isinstance(speech.engine, EspeakEngine) and speech.engine.timeout_s == 20.0
    assert speech.cache.folder == Path("./data/spool/cache/tts")
    config = parse_config(
        f'[media]\ncache_dir = "{tmp_path}"\nmemory_cache_mb = 4\n'
        '[tts]\nengine = "polly"\nvoice = "Brian"\npolly_region = "eu-west-1"\n'
        'polly_engine = "neural"\ntimeout_ms = 5000\n')
    polly = Speech.from_config(config, blobs=None)
    assert isinstance(polly.engine, PollyEngine)
    assert (polly.engine.region, polly.engine.engine, polly.engine.timeout_s) == (
        "eu-west-1", "neural", 5.0)
    assert polly.default_voice == "Brian" and polly.cache.folder == tmp_path / "tts"
    assert polly.cache.memory.max_bytes == 4 * 2**20
    with pytest.raises(ConfigError, match=re.escape("tts.engine")):
        parse_config('[tts]\nengine = "festival"\n')
    with pytest.raises(ConfigError, match=re.escape("tts.polly_engine")):
        parse_config('[tts]\npolly_engine = "generative"\n')
