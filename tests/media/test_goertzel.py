"""In-band DTMF detection: the shared recording of "1234#", the shared prompts that must stay
silent, noise, G.711 coding, generated tones at the edges of the acceptance limits the module
documents (duration, pauses, frequency, level, twist), speech synthesised by espeak-ng, and
the cost per 20 ms frame."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge.media import g711
from edge.media.audio import decode_wav, silence, tone
from edge.media.goertzel import COL_FREQS, KEYPAD, ROW_FREQS, DtmfDetector, ToneDigit

# Copies of ../shared/audio (8 kHz test prompts), so the suite runs wherever it is cloned.
AUDIO = Path(__file__).resolve().parents[1] / "vectors" / "audio"
DTMF_FILE = AUDIO / "dtmf_1234hash_8k.wav"
KEYS = "".join(KEYPAD)

Samples = npt.NDArray[np.int16]


def load(path: Path) -> Samples:
    return decode_wav(path.read_bytes())


def detect(samples: Samples, chunk: int = 160, *, min_level_dbm0: float = -30.0) -> str:
    detector = DtmfDetector(min_level_dbm0=min_level_dbm0)
    found: list[ToneDigit] = []
    for start in range(0, len(samples), chunk):
        found += detector.feed(samples[start:start + chunk])
    return "".join(d.digit for d in found)


def key_tone(key: str, ms: float, level: float = -10.0, *, twist_db: float = 0.0,
             deviation: float = 0.0) -> Samples:
    """The dual tone of `key`: row tone at `level` dBm0, column tone `twist_db` above it, both
    frequencies shifted by `deviation` (a fraction)."""
    index = KEYS.index(key)
    row, col = ROW_FREQS[index // 4], COL_FREQS[index % 4]
    low = tone(row * (1 + deviation), ms, level).astype(np.int32)
    high = tone(col * (1 + deviation), ms, level + twist_db).astype(np.int32)
    both: Samples = np.clip(low + high, -32768, 32767).astype(np.int16)
    return both


def cat(*parts: Samples) -> Samples:
    return np.concatenate(parts)


# --- the shared recordings ---


def test_shared_recording_gives_1234_hash_at_the_tone_starts() -> None:
    samples = load(DTMF_FILE)
    detector = DtmfDetector()
    found = detector.feed(samples)
    assert "".join(d.digit for d in found) == "1234#"
    # The tones start every 200 ms from 0.2 s; a press is dated by its first hit block,
    # which starts less than a block away from the tone's start.
    for digit, start in zip(found, range(1600, 9600, 1600), strict=True):
        assert abs(digit.sample - start) < 105


@pytest.mark.parametrize("chunk", [1, 37, 105, 160, 1000, 100_000])
def test_any_chunking_gives_the_same_digits(chunk: int) -> None:
    assert detect(load(DTMF_FILE), chunk) == "1234#"


OTHER_PROMPTS = sorted(p for p in AUDIO.glob("*.wav") if p != DTMF_FILE)


def test_the_other_shared_prompts_exist() -> None:
    names = {p.name for p in OTHER_PROMPTS}
    assert {"welcome_8k.wav", "digits_0-9_8k.wav", "tone_440hz_5s_8k.wav"} <= names


@pytest.mark.parametrize("path", OTHER_PROMPTS, ids=lambda p: p.name)
def test_speech_tones_and_silence_give_no_digits(path: Path) -> None:
    samples = load(path)
    assert detect(samples) == ""
    # Nor when played loud (+10 dB, saturating): talk-off does not depend on level.
    loud = np.clip(samples.astype(np.float64) * 3.16, -32768, 32767).astype(np.int16)
    assert detect(loud) == ""


@pytest.mark.parametrize("snr_db", [20, 10, 6])
def test_detects_in_white_noise(snr_db: int) -> None:
    clean = load(DTMF_FILE).astype(np.float64)
    tone_rms = np.sqrt(np.mean(clean[clean != 0] ** 2))
    rng = np.random.default_rng(snr_db)
    for _ in range(10):
        noise = rng.normal(0.0, tone_rms / 10 ** (snr_db / 20), len(clean))
        noisy = np.clip(np.rint(clean + noise), -32768, 32767).astype(np.int16)
        assert detect(noisy) == "1234#"


def test_noise_alone_and_too_much_noise_give_no_digits() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0.0, 8000.0, 8000 * 5)
    assert detect(np.clip(noise, -32768, 32767).astype(np.int16)) == ""
    # At 0 dB SNR the tones no longer hold enough of the energy: nothing (not wrong digits).
    clean = load(DTMF_FILE).astype(np.float64)
    noisy = clean + rng.normal(0.0, 7400.0, len(clean))
    assert detect(np.clip(noisy, -32768, 32767).astype(np.int16)) == ""


@pytest.mark.parametrize("codec", ["PCMU", "PCMA"])
def test_survives_g711(codec: str) -> None:
    samples = load(DTMF_FILE)
    if codec == "PCMU":
        coded = g711.ulaw_decode(g711.ulaw_encode(samples))
    else:
        coded = g711.alaw_decode(g711.alaw_encode(samples))
    assert detect(coded) == "1234#"


# --- generated tones ---


def test_all_sixteen_keys() -> None:
    gap = silence(60)
    samples = cat(*[cat(key_tone(k, 60), gap) for k in KEYS])
    assert detect(samples) == KEYS


def test_single_frequencies_are_not_keys() -> None:
    for freq in ROW_FREQS + COL_FREQS:
        assert detect(cat(tone(freq, 200, -10), silence(50))) == ""


@pytest.mark.parametrize("offset", range(0, 105, 15))
def test_duration_limits(offset: int) -> None:
    lead = np.zeros(offset, dtype=np.int16)
    assert detect(cat(lead, key_tone("5", 40), silence(60))) == "5"
    assert detect(cat(lead, key_tone("5", 35), silence(60))) == "5"
    assert detect(cat(lead, key_tone("5", 20), silence(60))) == ""


@pytest.mark.parametrize("offset", range(0, 105, 15))
def test_pause_limits(offset: int) -> None:
    lead = np.zeros(offset, dtype=np.int16)
    for gap_ms, expected in [(10, "1"), (20, "1"), (35, "11"), (40, "11")]:
        samples = cat(lead, key_tone("1", 70), silence(gap_ms), key_tone("1", 70), silence(60))
        assert detect(samples) == expected, gap_ms


def test_long_press_is_one_digit_and_key_changes_are_new_presses() -> None:
    assert detect(cat(key_tone("7", 2000), silence(60))) == "7"
    # Different keys back to back without a pause (a sloppy generator): two presses.
    assert detect(cat(key_tone("7", 80), key_tone("8", 80), silence(60))) == "78"


@pytest.mark.parametrize("key", list(KEYS))
def test_frequency_deviation_limits(key: str) -> None:
    for deviation in (0.015, -0.015):
        assert detect(cat(key_tone(key, 100, deviation=deviation), silence(60))) == key
    for deviation in (0.035, -0.035):
        assert detect(cat(key_tone(key, 100, deviation=deviation), silence(60))) == ""


def test_level_limits() -> None:
    assert detect(cat(key_tone("9", 80, -28.0), silence(60))) == "9"
    assert detect(cat(key_tone("9", 80, 0.0), silence(60))) == "9"  # loud: still one key
    assert detect(cat(key_tone("9", 80, -33.0), silence(60))) == ""
    assert detect(cat(key_tone("9", 80, -28.0), silence(60)), min_level_dbm0=-20.0) == ""


def test_twist_limits() -> None:
    for twist in (-7.0, -3.0, 0.0, 3.0):
        assert detect(cat(key_tone("D", 80, twist_db=twist), silence(60))) == "D", twist
    for twist in (-10.0, 6.0):
        assert detect(cat(key_tone("D", 80, twist_db=twist), silence(60))) == "", twist


def test_reset_forgets_a_half_seen_press() -> None:
    detector = DtmfDetector()
    assert detector.feed(key_tone("3", 15)) == []
    detector.reset()
    assert detector.feed(cat(key_tone("3", 15), silence(60))) == []  # 15 + 15 ms: not 30


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="block"):
        DtmfDetector(block=32)
    with pytest.raises(ValueError, match="min_tone_share"):
        DtmfDetector(min_tone_share=0.0)


# --- many streams at once (the media engine's batch) ---


def streams_for_batch(count: int, seconds: float) -> list[Samples]:
    """Speech, the shared DTMF recording, noise, tones at the limits: one per stream, each
    starting at its own offset so their blocks fall differently."""
    rng = np.random.default_rng(5)
    speech = load(AUDIO / "welcome_8k.wav")
    dtmf = load(DTMF_FILE)
    length = int(seconds * 8000)
    out: list[Samples] = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            signal = np.roll(speech, 977 * i)
        elif kind == 1:
            signal = np.roll(np.resize(dtmf, length), 131 * i)
        elif kind == 2:
            signal = cat(silence(40 + 7 * i), key_tone(KEYS[i % 16], 28 + i % 5),
                         silence(35), key_tone("5", 60), silence(1000))
        else:
            signal = (rng.normal(0, 2000, length) + 0.5).astype(np.int16)
        out.append(np.resize(signal, length).astype(np.int16))
    return out


@pytest.mark.parametrize("frame", [160, 80, 240])
def test_feed_many_equals_feed_stream_by_stream(frame: int) -> None:
    signals = streams_for_batch(24, 2.0)
    alone = [DtmfDetector() for _ in signals]
    batched = [DtmfDetector() for _ in signals]
    expected: list[list[ToneDigit]] = [[] for _ in signals]
    got: list[list[ToneDigit]] = [[] for _ in signals]
    matrix = np.stack(signals)
    for start in range(0, matrix.shape[1] - frame + 1, frame):
        for i, detector in enumerate(alone):
            expected[i] += detector.feed(matrix[i, start:start + frame])
        for i, found in enumerate(DtmfDetector.feed_many(batched,
                                                          matrix[:, start:start + frame])):
            got[i] += found
    assert got == expected
    assert sum(len(e) for e in expected) >= 24  # the tones were there to find
    assert "1234#" in "".join(d.digit for d in got[1])


def test_feed_many_with_streams_joining_leaving_and_fed_singly() -> None:
    """The engine's batch changes every tick (legs come and go, some are fed alone): each
    detector's state is its own whichever way it was fed."""
    signals = streams_for_batch(8, 2.0)
    reference = [DtmfDetector() for _ in signals]
    mixed = [DtmfDetector() for _ in signals]
    expected: list[list[ToneDigit]] = [[] for _ in signals]
    got: list[list[ToneDigit]] = [[] for _ in signals]
    for tick, start in enumerate(range(0, 16000 - 159, 160)):
        frames = [signal[start:start + 160] for signal in signals]
        for i, detector in enumerate(reference):
            expected[i] += detector.feed(frames[i])
        batch = [i for i in range(len(signals)) if (i + tick) % 5 != 0]
        if tick % 3:
            batch.reverse()  # rows in another order
        for i in set(range(len(signals))) - set(batch):
            got[i] += mixed[i].feed(frames[i])  # fed alone this tick
        found = DtmfDetector.feed_many([mixed[i] for i in batch],
                                       np.stack([frames[i] for i in batch]))
        for i, digits in zip(batch, found, strict=True):
            got[i] += digits
    assert got == expected
    assert any(expected)


def test_feed_many_validates() -> None:
    assert DtmfDetector.feed_many([], np.zeros((0, 160), dtype=np.int16)) == []
    with pytest.raises(ValueError, match="one row per detector"):
        DtmfDetector.feed_many([DtmfDetector()], np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(ValueError, match="one row per detector"):
        DtmfDetector.feed_many([DtmfDetector()], np.zeros(160, dtype=np.int16))
    with pytest.raises(ValueError, match="same block settings"):
        DtmfDetector.feed_many([DtmfDetector(), DtmfDetector(min_level_dbm0=-20)],
                               np.zeros((2, 160), dtype=np.int16))
    # Durations and pauses are each detector's own: these may share a batch.
    short, long = DtmfDetector(min_duration_ms=25), DtmfDetector(min_duration_ms=60)
    press = cat(key_tone("7", 40), silence(200))
    frames = np.stack([press, press])
    found: list[list[ToneDigit]] = [[], []]
    for start in range(0, frames.shape[1] - 159, 160):
        for i, digits in enumerate(DtmfDetector.feed_many([short, long],
                                                          frames[:, start:start + 160])):
            found[i] += digits
    assert [d.digit for d in found[0]] == ["7"] and found[1] == []


# --- speech synthesised here (the engine's own TTS voice, which may echo back) ---


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
@pytest.mark.parametrize("voice", ["en", "en-us", "en+f2", "en+m3", "de", "fr"])
def test_espeak_speech_gives_no_digits(voice: str, tmp_path: Path) -> None:
    out = tmp_path / "speech.wav"
    text = (
        "Welcome. For billing, press one. For support, press two. To hear these options "
        "again, press the star key. Please enter your account number followed by the hash "
        "key. Zero one two three four five six seven eight nine."
    )
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True, timeout=30)
    speech = load(out)
    assert len(speech) > 8000 * 5
    assert detect(speech) == ""


# --- cost ---


def test_cost_per_20ms_frame() -> None:
    """The detector runs on every terminated leg's inbound audio each tick: keep it cheap.
    Measured here ~8 us per frame of speech and ~16 us with tones; the bound is loose so the
    test only catches an accidental slow path."""
    speech = load(AUDIO / "welcome_8k.wav")
    tones = load(DTMF_FILE)
    for samples in (speech, tones):
        frames = [samples[i:i + 160] for i in range(0, len(samples) - 159, 160)]
        detector = DtmfDetector()
        start = time.perf_counter()
        for _ in range(5):
            for frame in frames:
                detector.feed(frame)
        per_frame = (time.perf_counter() - start) / (5 * len(frames))
        assert per_frame < 200e-6, f"{per_frame * 1e6:.1f} us per frame"


def test_cost_per_stream_in_a_batch() -> None:
    """`feed_many` over 300 streams of speech: measured ~1.5-2 us per stream and frame here
    (`feed` alone: ~10 us); the bound only catches a per-stream slow path."""
    speech = load(AUDIO / "welcome_8k.wav")
    matrix = np.stack([np.roll(speech, 1234 * i) for i in range(300)])
    detectors = [DtmfDetector() for _ in range(300)]
    ticks = matrix.shape[1] // 160
    start = time.perf_counter()
    for tick in range(ticks):
        DtmfDetector.feed_many(detectors, matrix[:, tick * 160:(tick + 1) * 160])
    per_stream = (time.perf_counter() - start) / (ticks * 300)
    assert per_stream < 30e-6, f"{per_stream * 1e6:.1f} us per stream and frame"
