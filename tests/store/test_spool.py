"""control.store.spool: writes are durable before they return, uploads retry with backoff,
a new process drains what a crashed one left (each key uploaded once), a full disk is loud."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from control.store import spool as spool_module
from control.store.errors import StoreUnavailable
from control.store.local_blobs import LocalBlobStore
from control.store.ports import OCTETS, BlobStore
from control.store.spool import Backoff, BlobSpool

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeTarget:
    """A blob store that fails while `failures_left` > 0 (or for `poison` keys) and records
    every successful upload with the clock time it happened at."""

    def __init__(self, clock: FakeClock | None = None, failures: int = 0,
                 poison: frozenset[str] = frozenset()) -> None:
        self.clock = clock
        self.failures_left = failures
        self.poison = poison
        self.attempts: list[tuple[str, float | None]] = []
        self.stored: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.uploads: Counter[str] = Counter()
        self.gate: asyncio.Event | None = None
        self.changed = asyncio.Event()

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait (5 s at most) until `condition` holds, checking after each attempt."""
        async with asyncio.timeout(5):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    async def put(self, key: str, data: bytes, content_type: str = OCTETS) -> None:
        self.attempts.append((key, self.clock() if self.clock else None))
        self.changed.set()
        if self.gate is not None:
            await self.gate.wait()
        if key in self.poison or self.failures_left > 0:
            self.failures_left -= 1
            raise StoreUnavailable("S3 is down")
        self.stored[key] = data
        self.content_types[key] = content_type
        self.uploads[key] += 1
        self.changed.set()

    async def put_file(self, key: str, path: str, content_type: str = OCTETS) -> None:
        data = await asyncio.to_thread(Path(path).read_bytes)
        await self.put(key, data, content_type)

    # The rest of BlobStore, which the spool never calls.
    async def get(self, key: str) -> bytes:
        return self.stored[key]

    async def _chunks(self, key: str) -> AsyncIterator[bytes]:
        yield self.stored[key]

    def stream(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        return self._chunks(key)

    async def exists(self, key: str) -> bool:
        return key in self.stored

    async def delete(self, key: str) -> None:
        self.stored.pop(key, None)

    async def presign(self, key: str, expires_s: int = 3600) -> str | None:
        return None

    async def close(self) -> None:
        pass


_: type[BlobStore] = FakeTarget


async def no_sleep(delay: float) -> None:
    await asyncio.sleep(0)


def listing(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
async def running() -> AsyncIterator[list[BlobSpool]]:
    """Spools to stop at the end of the test (a test may 'crash' some instead)."""
    spools: list[BlobSpool] = []
    yield spools
    for spool in spools:
        await spool.stop()


async def test_write_is_on_disk_before_it_returns_and_uploads_later(
    spool_dir: Path, running: list[BlobSpool]
) -> None:
    target = FakeTarget()
    spool = BlobSpool(spool_dir, target, sleep=no_sleep)
    await spool.write("cdr/2024/05/01/c1.json", b'{"call_id":"c1"}', "application/json")
    # Not started: nothing uploaded, but the entry is on disk, sidecar and payload.
    assert spool.pending() == 1
    names = await asyncio.to_thread(listing, spool_dir)
    assert [name.rsplit(".", 1)[1] for name in names] == ["data", "json"]
    assert target.uploads == Counter()

    running.append(spool)
    await spool.start()
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert target.stored == {"cdr/2024/05/01/c1.json": b'{"call_id":"c1"}'}
    assert target.content_types == {"cdr/2024/05/01/c1.json": "application/json"}
    assert await asyncio.to_thread(listing, spool_dir) == []
    assert spool.pending() == 0 and spool.uploaded == 1


async def test_the_caller_never_waits_for_the_upload(
    spool_dir: Path, running: list[BlobSpool]
) -> None:
    target = FakeTarget()
    target.gate = asyncio.Event()  # the store hangs
    spool = BlobSpool(spool_dir, target, sleep=no_sleep)
    running.append(spool)
    await spool.start()
    await asyncio.wait_for(spool.write("a/1", b"one"), 2)
    await asyncio.wait_for(spool.write("a/2", b"two"), 2)
    await asyncio.sleep(0.01)
    assert target.attempts and spool.pending() == 2
    target.gate.set()
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert target.stored == {"a/1": b"one", "a/2": b"two"}


async def test_entries_survive_a_crash_and_are_uploaded_once_each(
    spool_dir: Path, running: list[BlobSpool], tmp_path: Path
) -> None:
    down = FakeTarget(failures=10**9)
    first = BlobSpool(spool_dir, down, sleep=no_sleep)
    await first.start()
    payloads = {f"cdr/2024/05/01/c{i}.json": f"cdr {i}".encode() for i in range(8)}
    for key, data in payloads.items():
        await first.write(key, data, "application/json")
    recording = tmp_path / "rec.wav"
    await asyncio.to_thread(recording.write_bytes, b"RIFF" + b"\0" * 1000)
    await first.write_file("recordings/2024/05/01/c0.wav", recording, "audio/wav")
    payloads["recordings/2024/05/01/c0.wav"] = b"RIFF" + b"\0" * 1000
    await down.until(lambda: len(down.attempts) >= 20)  # it really tried, and failed
    # The crash: the uploader dies mid-flight and the object is dropped, never stopped cleanly.
    task = first._task
    assert task is not None
    task.cancel()
    await asyncio.wait([task])  # the process is gone
    del first
    sidecars = await asyncio.to_thread(lambda: [p.read_text() for p in spool_dir.glob("*.json")])
    assert len(sidecars) == len(payloads)
    assert any('"attempts":0' not in text for text in sidecars)  # failures were noted on disk

    up = FakeTarget()
    second = BlobSpool(spool_dir, up, sleep=no_sleep)
    running.append(second)
    assert second.pending() == 0  # nothing known before start() reads the folder
    await second.start()
    assert second.pending() == len(payloads)
    await asyncio.wait_for(second.wait_empty(), 5)
    assert up.stored == payloads
    assert up.uploads == Counter(dict.fromkeys(payloads, 1))
    assert await asyncio.to_thread(listing, spool_dir) == []

    # And a third process finds nothing left to upload.
    again = FakeTarget()
    third = BlobSpool(spool_dir, again, sleep=no_sleep)
    running.append(third)
    await third.start()
    assert third.pending() == 0 and again.attempts == []


async def test_start_removes_leftovers_of_interrupted_writes(
    spool_dir: Path, running: list[BlobSpool]
) -> None:
    target = FakeTarget()
    writer = BlobSpool(spool_dir, target)
    await writer.write("keep/me", b"kept")

    def leave_debris() -> None:
        (spool_dir / "00000000000000000001-aaaa.data").write_bytes(b"orphan payload")
        (spool_dir / "00000000000000000002-bbbb.json").write_text(
            '{"key":"lone/sidecar","content_type":"x","attempts":0,"created_at":0}')
        (spool_dir / "00000000000000000003-cccc.data.tmp").write_bytes(b"half")
        (spool_dir / "00000000000000000004-dddd.json").write_text("{not json")
        (spool_dir / "00000000000000000004-dddd.data").write_bytes(b"unreadable sidecar")

    await asyncio.to_thread(leave_debris)
    spool = BlobSpool(spool_dir, target, sleep=no_sleep)
    running.append(spool)
    await spool.start()
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert target.stored == {"keep/me": b"kept"}
    assert await asyncio.to_thread(listing, spool_dir) == []


async def test_backoff_doubles_up_to_the_cap_and_resets_after_success(
    spool_dir: Path, running: list[BlobSpool]
) -> None:
    clock = FakeClock()
    delays: list[float] = []

    async def fake_sleep(delay: float) -> None:
        delays.append(delay)
        clock.now += delay
        await asyncio.sleep(0)

    target = FakeTarget(clock, failures=7)
    spool = BlobSpool(spool_dir, target, clock=clock, sleep=fake_sleep,
                      random_draw=lambda: 0.0, backoff=Backoff(base_s=1.0, cap_s=30.0))
    running.append(spool)
    await spool.write("a/1", b"1")
    await spool.start()
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert [at for _, at in target.attempts] == [1000, 1001, 1003, 1007, 1015, 1031, 1061, 1091]
    assert spool.failed_attempts == 7

    # After a success the next failure starts from the base again.
    target.failures_left = 1
    await spool.write("a/2", b"2")
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert delays[7:] == [1.0]
    assert target.uploads == Counter({"a/1": 1, "a/2": 1})


def test_backoff_jitter_and_cap() -> None:
    backoff = Backoff(base_s=1.0, cap_s=300.0, jitter=0.5)
    assert [backoff.delay(n, 0.0) for n in (1, 2, 3, 9, 10, 40)] == [1, 2, 4, 256, 300, 300]
    assert backoff.delay(3, 1.0) == 2.0  # the full draw halves the wait
    assert backoff.delay(3, 0.5) == 3.0
    assert Backoff().cap_s == 300.0  # 5 minutes by default


async def test_a_failing_key_does_not_hold_up_the_others(
    spool_dir: Path, running: list[BlobSpool]
) -> None:
    target = FakeTarget(poison=frozenset({"bad/one"}))
    spool = BlobSpool(spool_dir, target, sleep=no_sleep)
    running.append(spool)
    await spool.write("bad/one", b"x")
    for i in range(3):
        await spool.write(f"good/{i}", b"y")
    await spool.start()
    await target.until(lambda: len(target.stored) == 3)
    await target.until(lambda: len(target.attempts) >= 8)  # bad/one came round again
    assert set(target.stored) == {"good/0", "good/1", "good/2"}
    assert spool.pending() == 1


async def test_oldest_age_for_health(spool_dir: Path) -> None:
    clock = FakeClock(50.0)
    spool = BlobSpool(spool_dir, FakeTarget(), clock=clock)
    assert spool.oldest_age() == 0.0
    await spool.write("a/1", b"1")
    clock.now = 80.0
    await spool.write("a/2", b"2")
    clock.now = 95.0
    assert spool.oldest_age() == 45.0


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "a/", "..", "a\\b"])
async def test_a_bad_key_is_refused_at_write(spool_dir: Path, key: str) -> None:
    spool = BlobSpool(spool_dir, FakeTarget())
    with pytest.raises(ValueError):
        await spool.write(key, b"x")
    assert spool.pending() == 0
    assert await asyncio.to_thread(listing, spool_dir) == []


async def test_a_full_disk_is_critical_and_store_unavailable(
    spool_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def disk_full(path: Path, data: bytes) -> None:
        path.with_name(path.name + ".tmp").write_bytes(data[:1])  # a partial write, then full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(spool_module, "_write_bytes", disk_full)
    spool = BlobSpool(spool_dir, FakeTarget())
    with caplog.at_level(logging.CRITICAL, logger="control.store.spool"), \
            pytest.raises(StoreUnavailable, match="disk full"):
        await spool.write("cdr/2024/05/01/c9.json", b"{}")
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1
    assert getattr(critical[0], "key", None) == "cdr/2024/05/01/c9.json"
    assert spool.pending() == 0
    assert await asyncio.to_thread(listing, spool_dir) == []  # no half entry left behind


async def test_write_file_moves_the_file_in(
    spool_dir: Path, tmp_path: Path, running: list[BlobSpool]
) -> None:
    source = tmp_path / "call.wav"
    await asyncio.to_thread(source.write_bytes, b"WAVDATA")
    target = FakeTarget()
    spool = BlobSpool(spool_dir, target, sleep=no_sleep)
    await spool.write_file("recordings/c.wav", source, "audio/wav")
    assert not await asyncio.to_thread(source.exists)
    running.append(spool)
    await spool.start()
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert target.stored == {"recordings/c.wav": b"WAVDATA"}
    assert target.content_types == {"recordings/c.wav": "audio/wav"}


async def test_write_file_copies_across_filesystems(
    spool_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cross_device(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "rename", cross_device)
    source = tmp_path / "call.wav"
    await asyncio.to_thread(source.write_bytes, b"WAV" * 1000)
    spool = BlobSpool(spool_dir, FakeTarget())
    await spool.write_file("recordings/c.wav", source)
    assert not await asyncio.to_thread(source.exists)
    names = await asyncio.to_thread(listing, spool_dir)
    assert [name.rsplit(".", 1)[1] for name in names] == ["data", "json"]
    payload = spool_dir / names[0]
    assert await asyncio.to_thread(payload.read_bytes) == b"WAV" * 1000


async def test_a_missing_source_file_keeps_nothing(spool_dir: Path, tmp_path: Path) -> None:
    spool = BlobSpool(spool_dir, FakeTarget())
    with pytest.raises(StoreUnavailable):
        await spool.write_file("recordings/c.wav", tmp_path / "never-written.wav")
    assert spool.pending() == 0
    assert await asyncio.to_thread(listing, spool_dir) == []


async def test_spooling_into_a_local_blob_store(
    spool_dir: Path, tmp_path: Path, running: list[BlobSpool]
) -> None:
    """The real pairing of the embedded mode: spool -> LocalBlobStore."""
    blobs = LocalBlobStore(tmp_path / "blobs")
    spool = BlobSpool(spool_dir, blobs)
    running.append(spool)
    await spool.start()
    await spool.write("cdr/2024/05/01/c1.json", b'{"ok":true}', "application/json")
    await asyncio.wait_for(spool.wait_empty(), 5)
    assert await blobs.get("cdr/2024/05/01/c1.json") == b'{"ok":true}'
