"""Conference mixing: each participant hears exactly the others (checked against a direct
sum), int32 accumulation with saturation only at the end, mute and missing frames, joins and
leaves, and the cost of a 20-party tick."""

from __future__ import annotations

import time

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edge.media.mixer import ConferenceMixer, mix_minus

Samples = npt.NDArray[np.int16]


def reference(frames: Samples, contributes: list[bool]) -> Samples:
    """The N-1 mix by its definition: for each row, the sum of every other contributing row."""
    n = len(frames)
    out = np.zeros(frames.shape, dtype=np.int64)
    for i in range(n):
        for j in range(n):
            if j != i and contributes[j]:
                out[i] += frames[j]
    clipped: Samples = np.clip(out, -32768, 32767).astype(np.int16)
    return clipped


def frame(value: int, size: int = 160) -> Samples:
    return np.full(size, value, dtype=np.int16)


@settings(max_examples=100, deadline=None)
@given(
    frames=hnp.arrays(np.int16, st.tuples(st.integers(1, 25), st.just(16))),
    data=st.data(),
)
def test_mix_minus_matches_the_definition(frames: Samples, data: st.DataObject) -> None:
    contributes = data.draw(st.lists(st.booleans(), min_size=len(frames),
                                     max_size=len(frames)))
    expected = reference(frames, contributes)
    assert np.array_equal(mix_minus(frames, np.array(contributes)), expected)
    assert np.array_equal(mix_minus(frames), reference(frames, [True] * len(frames)))


def test_accumulates_in_int32_and_saturates_only_at_the_end() -> None:
    frames = np.stack([frame(30000), frame(30000), frame(-30000), frame(-1000)])
    out = mix_minus(frames)
    # A hears 30000 - 30000 - 1000: exact, although the partial sums leave the int16 range.
    assert out[0, 0] == -1000
    assert out[2, 0] == 32767  # 30000 + 30000 - 1000 saturates instead of wrapping
    assert out[3, 0] == 30000
    with pytest.raises(TypeError):
        mix_minus(frames.astype(np.int32))


def test_each_party_hears_the_others_muted_and_missing_contribute_nothing() -> None:
    room: ConferenceMixer[str] = ConferenceMixer()
    for key in ("alice", "bob", "carol", "dave"):
        room.join(key)
    room.set_muted("carol", True)
    room.push("alice", frame(100))
    room.push("bob", frame(20))
    room.push("carol", frame(3))  # muted: not heard
    # dave sent nothing this tick (loss): silent, but still hears the room.
    out = room.mix()
    assert {k: int(v[0]) for k, v in out.items()} == {
        "alice": 20, "bob": 100, "carol": 120, "dave": 120,
    }
    assert int(room.room[0]) == 120
    assert room.is_muted("carol") and not room.is_muted("dave")
    # Inputs are per tick: nothing pushed now, so everyone hears silence.
    assert all(not v.any() for v in room.mix().values())


def test_alone_in_the_room_hears_silence_and_short_frames_are_padded() -> None:
    room: ConferenceMixer[int] = ConferenceMixer()
    room.join(1)
    room.push(1, frame(500))
    assert not room.mix()[1].any()
    room.join(2)
    room.push(1, frame(7, 100))
    out = room.mix()
    assert out[2][:100].tolist() == [7] * 100 and not out[2][100:].any()
    with pytest.raises(ValueError, match="161"):
        room.push(1, frame(1, 161))


def test_join_leave_and_growth_keep_rows_straight() -> None:
    room: ConferenceMixer[int] = ConferenceMixer(capacity=2)
    for key in range(10):  # grows 2 -> 4 -> 8 -> 16
        room.join(key, muted=key == 9)
    assert len(room) == 10 and 3 in room
    with pytest.raises(ValueError, match="already"):
        room.join(3)
    room.leave(0)  # row 0 is taken over by the last participant (9, muted)
    room.leave(5)
    with pytest.raises(KeyError):
        room.leave(5)
    assert sorted(room.keys) == [1, 2, 3, 4, 6, 7, 8, 9] and 5 not in room
    assert room.is_muted(9)
    for key in room.keys:
        room.push(key, frame(key))
    out = room.mix()
    everyone = 1 + 2 + 3 + 4 + 6 + 7 + 8  # 9 is muted
    assert {k: int(v[0]) for k, v in out.items()} == {
        k: everyone - (k if k != 9 else 0) for k in room.keys
    }


def test_twenty_party_tick_costs_far_less_than_five_percent_of_a_core() -> None:
    """20 parties, every tick: 20 pushes and one mix. Measured ~22 us per tick here (~1 us per
    participant, 0.1 % of a core at 50 ticks/s); the bound (1 ms = 5 % of a core) is the
    target of issue 7 and leaves room for slow CI machines."""
    rng = np.random.default_rng(1)
    room: ConferenceMixer[int] = ConferenceMixer()
    inputs = [rng.integers(-8000, 8000, 160).astype(np.int16) for _ in range(20)]
    for key in range(20):
        room.join(key)
    ticks = 500
    start = time.perf_counter()
    for _ in range(ticks):
        for key, samples in enumerate(inputs):
            room.push(key, samples)
        room.mix()
    per_tick = (time.perf_counter() - start) / ticks
    assert per_tick < 0.001, f"{per_tick * 1e6:.0f} us per 20-party tick"
