"""WAV helpers for the real-client call tests: tone files to play, and what a recording holds
(format, loudness and dominant frequency per channel, by numpy FFT)."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class WavAudio:
    """A 16-bit PCM WAV file, one float array per channel (full scale = 1.0)."""

    rate: int
    channels: tuple[Samples, ...]

    @property
    def seconds(self) -> float:
        return len(self.channels[0]) / self.rate if self.channels else 0.0


def read_wav(path: Path) -> WavAudio:
    """Read a 16-bit PCM WAV (any rate, any number of channels); ValueError for anything else."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getcomptype() != "NONE":
            raise ValueError(f"{path}: not 16-bit PCM ({wav.getsampwidth() * 8}-bit "
                             f"{wav.getcomptype()})")
        rate, count = wav.getframerate(), wav.getnchannels()
        frames = wav.readframes(wav.getnframes())
    interleaved = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    usable = len(interleaved) - len(interleaved) % count
    matrix = interleaved[:usable].reshape(-1, count)
    return WavAudio(rate=rate, channels=tuple(matrix[:, index].copy() for index in range(count)))


def write_tone(path: Path, frequency: float, seconds: float, *, rate: int = 8000,
               amplitude: float = 0.5) -> Path:
    """A mono 16-bit sine of `frequency` Hz lasting `seconds`."""
    times = np.arange(round(seconds * rate)) / rate
    samples = np.round(amplitude * 32767 * np.sin(2 * np.pi * frequency * times))
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
    return path


def rms(samples: Samples) -> float:
    """Root mean square amplitude (0.0 for no samples)."""
    return float(np.sqrt(np.mean(samples ** 2))) if len(samples) else 0.0


def _spectrum(samples: Samples, rate: int) -> tuple[Samples, Samples]:
    """Power per frequency bin of the Hann-windowed signal, DC removed."""
    centred = samples - np.mean(samples)
    power: Samples = np.abs(np.fft.rfft(centred * np.hanning(len(centred)))) ** 2
    freqs: Samples = np.fft.rfftfreq(len(centred), 1 / rate).astype(np.float64)
    return freqs, power


def dominant_frequency(samples: Samples, rate: int) -> float:
    """The frequency (Hz) of the strongest bin of the spectrum; 0.0 for silence or too few
    samples to tell."""
    if len(samples) < 64 or rms(samples) == 0.0:
        return 0.0
    freqs, power = _spectrum(samples, rate)
    return float(freqs[int(np.argmax(power[1:])) + 1])


def band_share(samples: Samples, rate: int, frequency: float, width: float = 25.0) -> float:
    """The share (0..1) of the signal's power within `width` Hz of `frequency`: near 1 for a
    clean tone, near 0 when that tone is absent (so a mixed-up channel shows)."""
    if len(samples) < 64:
        return 0.0
    freqs, power = _spectrum(samples, rate)
    total = float(np.sum(power[1:]))
    if total == 0.0:
        return 0.0
    return float(np.sum(power[np.abs(freqs - frequency) <= width])) / total
