"""Conference mixing for one room: every 20 ms tick each participant hears the sum of all the
others ("N-1" or mix-minus), computed as the room total minus the participant's own frame, so
the cost is O(N) vector work on one 2-D array instead of N sums of N-1 frames. Sans-IO, numpy.

Samples are 8 kHz int16 (one row of `frame_samples` per participant). Sums are taken in int32,
which cannot overflow below 65536 participants, and saturate to int16 only at the end; a muted
participant, or one without a frame this tick (loss, not yet started), contributes silence but
still hears the room.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt

__all__ = ["ConferenceMixer", "mix_minus"]

Samples = npt.NDArray[np.int16]
K = TypeVar("K", bound=Hashable)  # whatever identifies a participant (a leg id, a call id)


def mix_minus(frames: Samples, contributes: npt.NDArray[np.bool_] | None = None) -> Samples:
    """For a (N, S) int16 array of this tick's frames, the (N, S) int16 array whose row i is
    the saturated sum of every other contributing row. `contributes` (N bools) masks muted or
    absent participants; their rows are ignored (they still get the mix)."""
    if frames.ndim != 2 or frames.dtype != np.int16:
        raise TypeError("frames must be a 2-D int16 array (participants x samples)")
    return _mix(frames, contributes)[0]


def _mix(
    frames: Samples, contributes: npt.NDArray[np.bool_] | None
) -> tuple[Samples, Samples]:
    """(each row's N-1 mix, the whole room's mix), both saturated to int16."""
    own = frames.astype(np.int32)
    if contributes is not None:
        own *= contributes[:, None]
    total = own.sum(axis=0, dtype=np.int32)
    out = total - own  # total minus own: the N-1 mix of every row at once
    np.clip(out, -32768, 32767, out=out)
    np.clip(total, -32768, 32767, out=total)
    return out.astype(np.int16), total.astype(np.int16)


class ConferenceMixer(Generic[K]):
    """A room's participants and this tick's frames, mixed once per tick.

    Each tick: `push(key, frame)` for the participants whose audio arrived (others count as
    silent), then `mix()` returns every participant's output frame and clears the inputs.
    `room` is then the whole room's mix (everyone, saturated): what a conference recording
    holds. Frames live in one preallocated (capacity, S) array; a row per participant.
    """

    __slots__ = ("_active", "_frames", "_muted", "_rows", "frame_samples", "keys", "room")

    def __init__(self, frame_samples: int = 160, capacity: int = 8) -> None:
        if frame_samples <= 0 or capacity <= 0:
            raise ValueError("frame_samples and capacity must be positive")
        self.frame_samples = frame_samples
        self.keys: list[K] = []  # row i belongs to keys[i]
        self._rows: dict[K, int] = {}
        self._frames: Samples = np.zeros((capacity, frame_samples), dtype=np.int16)
        self._active = np.zeros(capacity, dtype=np.bool_)  # a frame was pushed this tick
        self._muted = np.zeros(capacity, dtype=np.bool_)
        self.room: Samples = np.zeros(frame_samples, dtype=np.int16)

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def join(self, key: K, *, muted: bool = False) -> None:
        """Add a participant (ValueError if already there)."""
        if key in self._rows:
            raise ValueError(f"{key!r} is already in the room")
        row = len(self.keys)
        if row == len(self._frames):  # grow by doubling: joins are rare, ticks are not
            grown = np.zeros((2 * row, self.frame_samples), dtype=np.int16)
            grown[:row] = self._frames
            self._frames = grown
            self._active = np.concatenate((self._active, np.zeros(row, dtype=np.bool_)))
            self._muted = np.concatenate((self._muted, np.zeros(row, dtype=np.bool_)))
        self.keys.append(key)
        self._rows[key] = row
        self._active[row] = False
        self._muted[row] = muted

    def leave(self, key: K) -> None:
        """Remove a participant (KeyError if absent); the last row moves into its place."""
        row = self._rows.pop(key)
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[last]
            self.keys[row] = moved
            self._rows[moved] = row
            self._frames[row] = self._frames[last]
            self._active[row] = self._active[last]
            self._muted[row] = self._muted[last]
        self.keys.pop()
        self._active[last] = False

    def set_muted(self, key: K, muted: bool) -> None:
        self._muted[self._rows[key]] = muted

    def is_muted(self, key: K) -> bool:
        return bool(self._muted[self._rows[key]])

    def push(self, key: K, frame: Samples) -> None:
        """This tick's frame from `key` (int16, `frame_samples` long; shorter is zero-padded)."""
        row = self._rows[key]
        n = len(frame)
        if n > self.frame_samples:
            raise ValueError(f"frame of {n} samples, expected {self.frame_samples}")
        self._frames[row, :n] = frame
        if n < self.frame_samples:
            self._frames[row, n:] = 0
        self._active[row] = True

    def mix(self) -> dict[K, Samples]:
        """Each participant's output for this tick (rows of one array), then a new tick."""
        n = len(self.keys)
        frames, self.room = _mix(self._frames[:n], self._active[:n] & ~self._muted[:n])
        self._active[:n] = False
        return dict(zip(self.keys, frames, strict=True))
