"""Prompt audio: WAV decoding to the media engine's format (mono int16 at 8 kHz), a windowed-
sinc polyphase resampler, tone and silence generators, gain, and 20 ms framing. Sans-IO: bytes
in, numpy arrays out (the caller reads files and caches the result).

Levels. `tone()` takes its level in dBm0 per frequency (ITU-T G.711: a full-scale sine is
+3.14 dBm0, so -10 dBm0 peaks at about 7200 of 32767). The `level` of a play /
stream step follows Vonage's NCCO `level`: a number from -1 (quietest) to 1 (loudest), default
0, which this engine reads as a *linear* gain of `1 + level`: -1 is silence, -0.5 half the
amplitude (-6 dB), 0 unchanged, 1 twice the amplitude (+6 dB, saturating). `db_gain()` gives
the gain for a level in dB instead. Gains saturate at the int16 range rather than wrap.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from edge.media.g711 import ALAW_TO_LINEAR, ULAW_TO_LINEAR

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioFormatError",
    "apply_gain",
    "db_gain",
    "decode_wav",
    "encode_wav",
    "frames",
    "level_gain",
    "resample",
    "silence",
    "tone",
]

Samples = npt.NDArray[np.int16]
Floats = npt.NDArray[np.float64]

SAMPLE_RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz

# WAVE format tags (RFC 2361 Appendix A) and the KSDATAFORMAT_SUBTYPE GUID tail that
# WAVE_FORMAT_EXTENSIBLE (0xFFFE) puts after the real tag in its SubFormat field.
_PCM, _FLOAT, _ALAW, _MULAW, _EXTENSIBLE = 1, 3, 6, 7, 0xFFFE
_GUID_TAIL = bytes.fromhex("000000001000800000aa00389b71")
_FMT = struct.Struct("<HHIIHH")
_CHUNK = struct.Struct("<4sI")
_MAX_RATE = 768_000

# 0 dBm0 as a peak amplitude: ITU-T G.711 puts a full-scale sine at +3.14 dBm0 (A-law).
_DBM0_PEAK = 32768.0 * 10 ** (-3.14 / 20)

# Resampler design: a Kaiser-windowed sinc with 24 zero crossings each side, its -6 dB point
# at 93 % of the lower Nyquist frequency. For 8 kHz out (measured in tests/media/test_audio.py):
# within 0.1 dB over the telephone band 300-3400 Hz, and tones from 4.4 kHz up, which would
# alias into the band, attenuated by more than 85 dB.
_ZEROS = 24
_ROLLOFF = 0.93
_BETA = 8.0
_MAX_PHASES = 1024  # finer fractional positions are rounded (error below -60 dB)


class AudioFormatError(ValueError):
    """The audio is not something we decode: the message says what was found."""


# --- WAV ---


def decode_wav(data: bytes, *, rate: int = SAMPLE_RATE) -> Samples:
    """A RIFF/WAVE file to mono int16 at `rate` Hz.

    Accepted: PCM 8 (unsigned), 16, 24 and 32-bit; IEEE float 32 and 64-bit; A-law (6) and
    µ-law (7); WAVE_FORMAT_EXTENSIBLE wrapping any of those; any number of channels (averaged
    to mono); any sample rate (resampled, low-pass filtered when going down). A data chunk
    whose declared size runs past the end (streaming writers) is read to the end of the file.
    Anything else raises `AudioFormatError`."""
    if len(data) < 12 or data[8:12] != b"WAVE" or data[:4] not in (b"RIFF", b"RIFX", b"RF64"):
        raise AudioFormatError(f"not a RIFF/WAVE file ({_sniff(data)})")
    if data[:4] != b"RIFF":
        raise AudioFormatError(f"{data[:4].decode()} WAV files are not supported")
    fmt: tuple[int, int, int, int] | None = None  # tag, channels, rate, bits
    block_align = 0
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = _CHUNK.unpack_from(data, pos)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt, block_align = _parse_fmt(data[body:body + size])
        elif chunk_id == b"data":
            if fmt is None:
                raise AudioFormatError("WAV data chunk before its fmt chunk")
            end = min(body + size, len(data))
            end -= (end - body) % block_align  # whole frames only
            return _to_mono_int16(data[body:end], *fmt, rate=rate)
        pos = body + size + (size & 1)  # chunks are padded to an even size
    raise AudioFormatError("WAV file without a fmt and a data chunk")


def _sniff(data: bytes) -> str:
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        return "looks like MP3"
    if data[:4] == b"OggS":
        return "looks like Ogg"
    if data[:4] == b"fLaC":
        return "looks like FLAC"
    return f"starts with {data[:12]!r}"


def _parse_fmt(body: bytes) -> tuple[tuple[int, int, int, int], int]:
    if len(body) < _FMT.size:
        raise AudioFormatError(f"WAV fmt chunk of {len(body)} bytes is too short")
    tag, channels, rate, _, block_align, bits = _FMT.unpack_from(body)
    if tag == _EXTENSIBLE:
        if len(body) < 40 or body[26:40] != _GUID_TAIL:
            raise AudioFormatError("WAVE_FORMAT_EXTENSIBLE with an unknown SubFormat")
        tag = struct.unpack_from("<H", body, 24)[0]
    supported = {_PCM: (8, 16, 24, 32), _FLOAT: (32, 64), _ALAW: (8,), _MULAW: (8,)}
    if tag not in supported:
        raise AudioFormatError(f"WAV format tag {tag:#06x} is not supported "
                               "(PCM, IEEE float, A-law and µ-law are)")
    if bits not in supported[tag]:
        raise AudioFormatError(f"{bits}-bit samples are not supported for WAV format {tag}")
    if channels < 1 or not 0 < rate <= _MAX_RATE:
        raise AudioFormatError(f"WAV with {channels} channels at {rate} Hz")
    if block_align != channels * bits // 8:
        raise AudioFormatError(f"WAV block align {block_align} does not match "
                               f"{channels} x {bits}-bit samples")
    return (tag, channels, rate, bits), block_align


def _to_mono_int16(raw: bytes, tag: int, channels: int, src: int, bits: int, *,
                   rate: int) -> Samples:
    if tag in (_ALAW, _MULAW):
        table = ALAW_TO_LINEAR if tag == _ALAW else ULAW_TO_LINEAR
        ints: Samples = table[np.frombuffer(raw, dtype=np.uint8)]
    elif tag == _PCM and bits == 16:
        ints = np.frombuffer(raw, dtype="<i2").astype(np.int16)
    else:
        return _finish(_to_float(raw, tag, bits), channels, src, rate)
    if channels == 1 and src == rate:
        return ints  # bit-exact: no arithmetic on the samples
    return _finish(ints.astype(np.float64), channels, src, rate)


def _to_float(raw: bytes, tag: int, bits: int) -> Floats:
    """Samples on the int16 scale (full scale = 32768) as float64."""
    if tag == _FLOAT:
        return np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float64) * 32768
    if bits == 8:  # 8-bit WAV is unsigned, 128 = zero
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) * 256.0
    if bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value & 0x800000, value - (1 << 24), value)
        return value.astype(np.float64) / 256.0
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 65536.0


def _finish(samples: Floats, channels: int, src: int, rate: int) -> Samples:
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if src != rate:
        samples = resample(samples, src, rate)
    return _saturate(samples)


def _saturate(samples: Floats) -> Samples:
    return np.clip(np.rint(samples), -32768, 32767).astype(np.int16)


def encode_wav(samples: Samples, rate: int = SAMPLE_RATE) -> bytes:
    """A mono 16-bit PCM WAV file holding `samples`."""
    body = np.asarray(samples, dtype=np.int16).astype("<i2").tobytes()
    fmt = _FMT.pack(_PCM, 1, rate, rate * 2, 2, 16)
    return b"".join((
        _CHUNK.pack(b"RIFF", 4 + 8 + len(fmt) + 8 + len(body)),
        b"WAVE",
        _CHUNK.pack(b"fmt ", len(fmt)),
        fmt,
        _CHUNK.pack(b"data", len(body)),
        body,
    ))


# --- resampling ---


def _kernel(up: int, down: int) -> tuple[Floats, int, int]:
    """The polyphase filter bank: row p holds the taps for fractional position p / phases,
    on input offsets -half+1 .. half around the sample at or before the output instant."""
    cutoff = _ROLLOFF * 0.5 * min(1.0, up / down)  # cycles per input sample
    half = math.ceil(_ZEROS / (2 * cutoff))
    phases = min(up, _MAX_PHASES)
    offsets = np.arange(-half + 1, half + 1, dtype=np.float64)
    frac = np.arange(phases + 1, dtype=np.float64)[:, None] / phases
    x = frac - offsets[None, :]  # distance from each tap to the output instant
    window = np.i0(_BETA * np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, None))) / np.i0(_BETA)
    taps: Floats = np.sinc(2 * cutoff * x) * window
    taps /= taps.sum(axis=1, keepdims=True)  # unity gain at DC for every phase
    return taps, half, phases


def resample(samples: npt.NDArray[np.floating] | Samples, src_rate: int,
             dst_rate: int = SAMPLE_RATE) -> Floats:
    """Band-limited resampling from `src_rate` to `dst_rate` (any rational ratio), returned
    as float64 on the input's scale. Output length is ceil(len * dst / src)."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError("sample rates must be positive")
    x = np.asarray(samples, dtype=np.float64)
    if src_rate == dst_rate or not len(x):
        return x.copy()
    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    taps, half, phases = _kernel(up, down)
    padded = np.concatenate((np.zeros(half), x, np.zeros(half + 1)))
    n_out = (len(x) * up + down - 1) // down
    out = np.empty(n_out)
    offsets = np.arange(2 * half)
    step = max(1, (1 << 20) // (2 * half))  # bound the gathered matrix to ~8 MB
    for first in range(0, n_out, step):
        n = np.arange(first, min(first + step, n_out), dtype=np.int64) * down
        base = n // up  # input sample at or before each output instant
        phase = ((n % up) * phases + up // 2) // up  # rounded when phases < up
        window = padded[base[:, None] + 1 + offsets[None, :]]
        out[first:first + len(n)] = np.einsum("ij,ij->i", window, taps[phase])
    return out


# --- generators, gain, framing ---


def tone(freqs: float | Sequence[float], ms: float, level_dbm0: float = -10.0, *,
         rate: int = SAMPLE_RATE) -> Samples:
    """`ms` milliseconds of the sum of sines at `freqs` Hz, each at `level_dbm0` (saturating
    if the sum exceeds full scale); phase 0 at the first sample."""
    if ms < 0:
        raise ValueError("ms must not be negative")
    freq_list = [float(freqs)] if isinstance(freqs, int | float) else [float(f) for f in freqs]
    if any(not 0 < f < rate / 2 for f in freq_list):
        raise ValueError(f"tone frequencies must be within 0..{rate // 2} Hz")
    t = np.arange(round(ms * rate / 1000)) / rate
    peak = _DBM0_PEAK * 10 ** (level_dbm0 / 20)
    total = np.zeros(len(t))
    for f in freq_list:
        total += peak * np.sin(2 * np.pi * f * t)
    return _saturate(total)


def silence(ms: float, *, rate: int = SAMPLE_RATE) -> Samples:
    """`ms` milliseconds of digital silence."""
    if ms < 0:
        raise ValueError("ms must not be negative")
    return np.zeros(round(ms * rate / 1000), dtype=np.int16)


def level_gain(level: float) -> float:
    """The linear gain of a Vonage NCCO `level` (-1..1): `1 + level` (see the module doc)."""
    if not -1.0 <= level <= 1.0:
        raise ValueError(f"level {level} out of range -1..1")
    return 1.0 + level


def db_gain(db: float) -> float:
    """The linear gain of a level in dB (0 dB = unchanged, -6 dB ~ half amplitude)."""
    return float(10 ** (db / 20))


def apply_gain(samples: Samples, gain: float) -> Samples:
    """`samples` scaled by `gain`, rounded and saturated to int16 (1.0 returns a copy)."""
    if gain == 1.0:
        return np.array(samples, dtype=np.int16)
    return _saturate(samples.astype(np.float64) * gain)


def frames(samples: Samples, size: int = FRAME_SAMPLES) -> Samples:
    """`samples` cut into rows of `size` (20 ms at 8 kHz), the last row padded with zeros;
    shape (ceil(len / size), size)."""
    if size <= 0:
        raise ValueError("size must be positive")
    count = -(-len(samples) // size)
    out = np.zeros((count, size), dtype=np.int16)
    out.reshape(-1)[: len(samples)] = samples
    return out
