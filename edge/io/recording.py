"""Recording files: a stereo 8 kHz 16-bit PCM WAV written as the call goes, its RIFF sizes fixed
on close. The blocking I/O is a few KB per call per second, done from the loop.

While the call lasts the header carries the "unknown length" sizes (0xFFFFFFFF) that streaming
writers use, so a file left behind by a crash still plays to its end in ffmpeg/sox.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

log = logging.getLogger("sdpbx.recording")

__all__ = ["RecordingFile", "RecordingResult"]

SAMPLE_RATE = 8000
CHANNELS = 2
SAMPLE_BYTES = 2
FRAME_BYTES = CHANNELS * SAMPLE_BYTES
HEADER_BYTES = 44
_UNKNOWN = 0xFFFFFFFF
# RIFF sizes are 32-bit: the data chunk stops growing here (about 37 hours at 32 KB/s).
_MAX_DATA = (_UNKNOWN - (HEADER_BYTES - 8)) // FRAME_BYTES * FRAME_BYTES


def _header(data_size: int, riff_size: int) -> bytes:
    # RIFF/WAVE with one `fmt ` chunk (WAVE_FORMAT_PCM = 1, 16 bytes) and the `data` chunk.
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", riff_size, b"WAVE",
        b"fmt ", 16, 1, CHANNELS, SAMPLE_RATE,
        SAMPLE_RATE * FRAME_BYTES, FRAME_BYTES, SAMPLE_BYTES * 8,
        b"data", data_size,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordingResult:
    """A closed recording: where it is, its size on disk (header included) and length."""

    path: str
    size_bytes: int
    duration_s: float


class RecordingFile:
    """One WAV being written. `append` takes interleaved little-endian int16 stereo frames (what
    `StereoRecorder` returns); `close` patches the sizes and returns the result (idempotent)."""

    __slots__ = ("_file", "_result", "data_bytes", "path", "truncated")

    def __init__(self, path: str) -> None:
        self.path = path
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        self._file: BinaryIO | None = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._file.write(_header(_UNKNOWN, _UNKNOWN))
        self._result: RecordingResult | None = None
        self.data_bytes = 0
        self.truncated = False

    @property
    def closed(self) -> bool:
        return self._file is None

    @property
    def duration_s(self) -> float:
        return self.data_bytes / (FRAME_BYTES * SAMPLE_RATE)

    def append(self, frames: bytes) -> None:
        if len(frames) % FRAME_BYTES:
            raise ValueError(f"{len(frames)} bytes is not a whole number of stereo frames")
        if self._file is None:
            raise ValueError(f"recording {self.path} is closed")
        room = _MAX_DATA - self.data_bytes
        if len(frames) > room:
            if not self.truncated:
                log.warning("recording %s reached the WAV size limit; the rest is dropped",
                            self.path)
            self.truncated = True
            frames = frames[:room]
        if frames:
            self._file.write(frames)
            self.data_bytes += len(frames)

    def close(self) -> RecordingResult:
        """Write the real RIFF and data sizes and close the file."""
        if self._result is not None:
            return self._result
        if self._file is None:
            raise ValueError(f"recording {self.path} failed to close earlier")
        try:
            self._file.seek(0)
            self._file.write(_header(self.data_bytes, HEADER_BYTES - 8 + self.data_bytes))
        finally:
            self._file.close()
            self._file = None
        self._result = RecordingResult(
            path=self.path,
            size_bytes=HEADER_BYTES + self.data_bytes,
            duration_s=self.duration_s,
        )
        return self._result
