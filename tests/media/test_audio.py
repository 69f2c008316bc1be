"""Prompt decoding: every WAV flavour we accept (checked against the same reference signal),
the resampler (frequency and level kept, aliases removed), clear errors for what we do not
decode, and the tone/silence/gain/framing helpers."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from edge.media import g711
from edge.media.audio import (
    FRAME_SAMPLES,
    AudioFormatError,
    apply_gain,
    db_gain,
    decode_wav,
    encode_wav,
    frames,
    level_gain,
    resample,
    silence,
    tone,
)

# Copies of ../shared/audio (8 kHz test prompts), so the suite runs wherever it is cloned.
AUDIO = Path(__file__).resolve().parents[1] / "vectors" / "audio"
Floats = npt.NDArray[np.float64]
PCM_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")


def wav_bytes(tag: int, channels: int, rate: int, bits: int, data: bytes, *,
              extensible: bool = False, before_data: bytes = b"",
              data_size: int | None = None) -> bytes:
    """A WAV file built by hand (the stdlib `wave` only writes integer PCM)."""
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 0xFFFE if extensible else tag, channels, rate, rate * block,
                      block, bits)
    if extensible:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", tag) + PCM_GUID_TAIL
    chunks = (b"fmt " + struct.pack("<I", len(fmt)) + fmt + before_data
              + b"data" + struct.pack("<I", len(data) if data_size is None else data_size)
              + data)
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> Floats:
    """A sine on the -1..1 scale."""
    t = np.arange(round(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def tone_level(samples: npt.NDArray[np.generic], freq: float, rate: int = 8000) -> float:
    """Amplitude (int16 units) of the component at `freq`, Hann-windowed, edges trimmed."""
    x = np.asarray(samples, dtype=np.float64)[len(samples) // 8: -len(samples) // 8]
    window = np.hanning(len(x))
    n = np.arange(len(x))
    return float(2 * abs(np.sum(x * window * np.exp(-2j * np.pi * freq * n / rate)))
                 / np.sum(window))


def dominant(samples: npt.NDArray[np.generic], rate: int = 8000) -> float:
    x = np.asarray(samples, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[int(np.argmax(spectrum))])


# --- WAV flavours ---


def test_shared_prompts_decode_bit_exact() -> None:
    for path in sorted(AUDIO.glob("*.wav")):
        with wave.open(str(path), "rb") as w:
            expected = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        decoded = decode_wav(path.read_bytes())
        assert decoded.dtype == np.int16
        assert np.array_equal(decoded, expected), path.name


REFERENCE = sine(1000.0, 0.5, 8000)  # -6 dBFS, 1 kHz, at 8 kHz: no resampling involved
REF16 = np.rint(REFERENCE * 32767).astype(np.int16)


def encodings() -> list[tuple[str, bytes, int]]:
    """(name, WAV bytes, tolerance in int16 units) of REFERENCE in every accepted format."""
    x = REFERENCE
    s24 = np.rint(x * 8388607).astype(np.int32)
    b24 = np.stack([s24 & 0xFF, (s24 >> 8) & 0xFF, (s24 >> 16) & 0xFF], axis=1)
    return [
        ("u8", wav_bytes(1, 1, 8000, 8, np.rint(x * 127 + 128).astype(np.uint8).tobytes()),
         260),
        ("s16", wav_bytes(1, 1, 8000, 16, REF16.astype("<i2").tobytes()), 0),
        ("s24", wav_bytes(1, 1, 8000, 24, b24.astype(np.uint8).tobytes()), 1),
        ("s32", wav_bytes(1, 1, 8000, 32,
                          np.rint(x * 2147483647).astype("<i4").tobytes()), 1),
        ("f32", wav_bytes(3, 1, 8000, 32, x.astype("<f4").tobytes()), 1),
        ("f64", wav_bytes(3, 1, 8000, 64, x.astype("<f8").tobytes()), 1),
        ("alaw", wav_bytes(6, 1, 8000, 8, g711.alaw_encode(REF16)), 520),
        ("ulaw", wav_bytes(7, 1, 8000, 8, g711.ulaw_encode(REF16)), 520),
        ("ext-s24", wav_bytes(1, 1, 8000, 24, b24.astype(np.uint8).tobytes(),
                              extensible=True), 1),
        ("ext-f32", wav_bytes(3, 1, 8000, 32, x.astype("<f4").tobytes(), extensible=True), 1),
        ("stereo-s16", wav_bytes(1, 2, 8000, 16,
                                 np.repeat(REF16, 2).astype("<i2").tobytes()), 0),
    ]


@pytest.mark.parametrize(("name", "data", "tolerance"), encodings(),
                         ids=[e[0] for e in encodings()])
def test_every_format_decodes_to_the_reference(name: str, data: bytes, tolerance: int) -> None:
    decoded = decode_wav(data)
    assert decoded.dtype == np.int16 and len(decoded) == len(REF16)
    error = np.abs(decoded.astype(np.int32) - REF16.astype(np.int32)).max()
    assert error <= tolerance, f"{name}: max error {error}"


def test_g711_wavs_are_the_table_values() -> None:
    codes = bytes(range(256))
    assert np.array_equal(decode_wav(wav_bytes(7, 1, 8000, 8, codes)), g711.ulaw_decode(codes))
    assert np.array_equal(decode_wav(wav_bytes(6, 1, 8000, 8, codes)), g711.alaw_decode(codes))


def test_stereo_is_averaged() -> None:
    left = np.full(100, 1000, dtype=np.int16)
    right = np.full(100, -3000, dtype=np.int16)
    data = np.stack([left, right], axis=1).astype("<i2").tobytes()
    assert set(decode_wav(wav_bytes(1, 2, 8000, 16, data)).tolist()) == {-1000}


def test_float_beyond_full_scale_saturates() -> None:
    data = np.array([1.5, -1.5, 1.0, -1.0], dtype="<f4").tobytes()
    assert decode_wav(wav_bytes(3, 1, 8000, 32, data)).tolist() == [32767, -32768, 32767,
                                                                   -32768]


def test_chunk_padding_streaming_size_and_partial_frames() -> None:
    # An odd-sized LIST chunk (padded to even) before the data chunk.
    listing = b"LIST" + struct.pack("<I", 5) + b"INFOx" + b"\x00"
    body = REF16[:10].astype("<i2").tobytes()
    assert np.array_equal(decode_wav(wav_bytes(1, 1, 8000, 16, body, before_data=listing)),
                          REF16[:10])
    # A streaming writer's 0xFFFFFFFF data size, and a torn last frame: read to the end.
    torn = wav_bytes(1, 2, 8000, 16, body + b"\x01", data_size=0xFFFFFFFF)
    assert len(decode_wav(torn)) == 5  # 10 samples = 5 stereo frames; the odd byte dropped


def test_encode_wav_round_trips_and_is_a_real_wav(tmp_path: Path) -> None:
    data = encode_wav(REF16)
    assert np.array_equal(decode_wav(data), REF16)
    path = tmp_path / "out.wav"
    path.write_bytes(data)
    with wave.open(str(path), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.readframes(w.getnframes()) == REF16.astype("<i2").tobytes()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ID3\x04\x00" + bytes(100), "MP3"),
        (b"\xff\xfb\x90\x00" + bytes(100), "MP3"),
        (b"OggS" + bytes(100), "Ogg"),
        (b"hello", "not a RIFF/WAVE"),
        (b"RIFX" + bytes(4) + b"WAVE", "RIFX"),
        (wav_bytes(2, 1, 8000, 4, b"\x00" * 10), "format tag 0x0002"),  # MS ADPCM
        (wav_bytes(1, 1, 8000, 12, b"\x00" * 10), "12-bit"),
        (wav_bytes(3, 1, 8000, 16, b"\x00" * 10), "16-bit"),
        (wav_bytes(1, 0, 8000, 16, b""), "0 channels"),
        (wav_bytes(1, 1, 0, 16, b""), "0 Hz"),
        (b"RIFF" + struct.pack("<I", 20) + b"WAVE" + b"data" + struct.pack("<I", 2) + b"\0\0",
         "before its fmt"),
        (b"RIFF" + struct.pack("<I", 4) + b"WAVE", "without a fmt and a data chunk"),
        (b"RIFF" + struct.pack("<I", 12) + b"WAVEfmt " + struct.pack("<I", 4) + b"\x01\x00\x01\x00",
         "too short"),
    ],
)
def test_unsupported_input_raises_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(AudioFormatError, match=message):
        decode_wav(data)


def test_block_align_and_extensible_guid_are_checked() -> None:
    bad_align = bytearray(wav_bytes(1, 1, 8000, 16, b"\x00" * 4))
    struct.pack_into("<H", bad_align, 12 + 8 + 12, 4)  # fmt.block_align
    with pytest.raises(AudioFormatError, match="block align"):
        decode_wav(bytes(bad_align))
    unknown = bytearray(wav_bytes(1, 1, 8000, 16, b"\x00" * 4, extensible=True))
    unknown[12 + 8 + 40 - 1] ^= 0xFF  # last GUID byte
    with pytest.raises(AudioFormatError, match="SubFormat"):
        decode_wav(bytes(unknown))
    assert issubclass(AudioFormatError, ValueError)


# --- resampling ---


@pytest.mark.parametrize("rate", [11025, 16000, 22050, 32000, 44100, 48000])
def test_resampled_tone_keeps_frequency_and_level(rate: int) -> None:
    for freq in (300.0, 1000.0, 3400.0):
        data = wav_bytes(3, 1, rate, 32, sine(freq, 1.0, rate).astype("<f4").tobytes())
        out = decode_wav(data)
        assert len(out) == 8000
        assert dominant(out) == pytest.approx(freq, abs=1.5)
        # -6 dBFS in: the same level out, within 0.1 dB (the passband is flat to 3.4 kHz).
        assert 20 * np.log10(tone_level(out, freq) / (0.5 * 32768)) == pytest.approx(0, abs=0.1)


@pytest.mark.parametrize("rate", [16000, 22050, 44100, 48000])
def test_downsampling_removes_what_would_alias(rate: int) -> None:
    for freq in (4400.0, 5000.0, 6000.0, 7000.0):
        out = resample(sine(freq, 1.0, rate) * 32768, rate, 8000)
        rms = float(np.sqrt(np.mean(out[200:-200] ** 2)))
        # A -6 dBFS tone that would fold to 8000 - f Hz: attenuated by more than 80 dB.
        assert 20 * np.log10(rms * np.sqrt(2) / (0.5 * 32768)) < -80, freq


def test_naive_decimation_would_alias_which_the_test_can_see() -> None:
    """Guards the test above: dropping samples without a filter keeps the 5 kHz tone (folded
    to 3 kHz) at full level, so the measurement does detect aliasing."""
    x = sine(5000.0, 1.0, 48000) * 32768
    folded = x[::6]
    assert dominant(folded) == pytest.approx(3000, abs=2)
    assert 20 * np.log10(tone_level(folded, 3000) / (0.5 * 32768)) > -1


def test_upsampling_and_edge_cases() -> None:
    out = resample(sine(1000.0, 1.0, 4000) * 10000, 4000, 8000)
    assert len(out) == 8000
    assert dominant(out) == pytest.approx(1000, abs=1.5)
    # Nothing above the source's Nyquist frequency appears (no imaging at 3 kHz).
    assert tone_level(out, 3000) < 10000 * 1e-3
    assert resample(np.zeros(0), 44100, 8000).shape == (0,)
    assert len(resample(np.ones(441), 44100, 8000)) == 80  # ceil(441 * 80 / 441)
    dc = resample(np.full(4410, 100.0), 44100, 8000)
    assert np.allclose(dc[40:-40], 100.0)  # unity gain at DC, away from the edges
    with pytest.raises(ValueError):
        resample(np.ones(10), 0, 8000)


# --- generators, gain, framing ---


def test_tone_and_silence() -> None:
    t = tone(1000, 100, -10.0)
    assert t.dtype == np.int16 and len(t) == 800
    # 0 dBm0 peaks at 3.14 dB below full scale: -10 dBm0 -> 22779 * 10^(-10/20) ~ 7203.
    assert tone_level(t, 1000) == pytest.approx(7203, rel=0.01)
    assert dominant(t) == pytest.approx(1000, abs=10)
    pair = tone([350.0, 440.0], 1000, -13.0)  # a dial tone
    assert tone_level(pair, 350) == pytest.approx(tone_level(pair, 440), rel=0.02)
    assert tone(1000, 100, 10.0).max() == 32767  # +10 dBm0 saturates instead of wrapping
    assert len(tone(1000, 0)) == 0
    with pytest.raises(ValueError, match="frequencies"):
        tone(4000, 100)
    s = silence(20)
    assert s.dtype == np.int16 and len(s) == 160 and not s.any()
    assert len(silence(12.5)) == 100


def test_levels_and_gain() -> None:
    assert [level_gain(x) for x in (-1.0, -0.5, 0.0, 0.5, 1.0)] == [0.0, 0.5, 1.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="level"):
        level_gain(1.1)
    assert db_gain(0) == 1.0
    assert db_gain(-6.0) == pytest.approx(0.501, abs=1e-3)
    x = np.array([0, 100, -100, 20000, -20000, 32767, -32768], dtype=np.int16)
    assert apply_gain(x, 2.0).tolist() == [0, 200, -200, 32767, -32768, 32767, -32768]
    assert apply_gain(x, 0.5).tolist() == [0, 50, -50, 10000, -10000, 16384, -16384]
    assert apply_gain(x, level_gain(-1.0)).tolist() == [0] * 7
    same = apply_gain(x, 1.0)
    assert np.array_equal(same, x) and same is not x


def test_frames() -> None:
    pcm = np.arange(1, 162, dtype=np.int16)  # 161 samples
    out = frames(pcm)
    assert out.shape == (2, FRAME_SAMPLES) and out.dtype == np.int16
    assert out[0].tolist() == list(range(1, 161))
    assert out[1, 0] == 161 and not out[1, 1:].any()
    assert frames(np.zeros(320, dtype=np.int16)).shape == (2, 160)
    assert frames(np.zeros(0, dtype=np.int16)).shape == (0, 160)
    assert frames(pcm, 80).shape == (3, 80)
