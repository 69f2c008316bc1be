"""Durable blob writes: spool to local disk (fsync) first, upload in the background, retry.

`await spool.write(key, data)` returns once the payload is on disk, never waiting for the blob
store (S3 may be slow or down); a background task uploads entries in order and deletes each only
after the store accepted it, with exponential backoff and jitter while the store fails. A new
process draining the same folder finishes what a crashed one left, so a CDR or a recording is
never lost to an outage or a restart (it may be uploaded twice after a crash: same key, same
bytes). A full local disk is the one thing the spool cannot absorb: it is logged at CRITICAL and
raised as StoreUnavailable so the caller reports it loudly. A target that is itself a durable local
folder (`durable_writes`) is written through: the write returns once the blob is in place.

On disk an entry is `<id>.json` (key, content type, attempts, created_at) plus `<id>.data` (the
payload). The sidecar is made durable first and the payload then appears by an atomic rename, so
a complete `.data` with its sidecar is an entry; a sidecar alone is a write that never returned
(its source file, if any, was not taken) and a `.data` alone is an upload whose clean-up stopped
half-way; the next start removes both kinds.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control.store.errors import StoreError, StoreUnavailable
from control.store.local_blobs import fsync_directory, move_durably, validate_key
from control.store.ports import OCTETS, BlobStore

log = logging.getLogger(__name__)

DATA_SUFFIX = ".data"
META_SUFFIX = ".json"
TEMP_SUFFIX = ".tmp"
_DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


@dataclass(slots=True, kw_only=True)
class SpoolEntry:
    entry_id: str
    key: str
    content_type: str
    attempts: int = 0
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Exponential backoff with jitter: the n-th consecutive failure waits
    min(cap, base * 2**(n-1)) scaled into [1 - jitter, 1] by a random draw, so edges that lost
    the store together do not come back in lockstep."""

    base_s: float = 1.0
    cap_s: float = 300.0
    jitter: float = 0.5

    def delay(self, failures: int, draw: float) -> float:
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(0, failures - 1))
        return ceiling * (1.0 - self.jitter * draw)


class BlobSpool:
    """A folder of blobs waiting for `target`; `start()` the uploader, `await stop()` it."""

    def __init__(
        self,
        spool_dir: str | os.PathLike[str],
        target: BlobStore,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random_draw: Callable[[], float] = random.random,
        backoff: Backoff = Backoff(),
    ) -> None:
        self.spool_dir = Path(spool_dir)
        self.target = target
        # A target whose writes are durable when they return (a local folder) is written
        # straight away: spooling first would only copy the bytes twice (and fsync 5 times).
        self._write_through = bool(getattr(target, "durable_writes", False))
        self._clock = clock
        self._sleep = sleep
        self._random = random_draw
        self._backoff = backoff
        self._pending: dict[str, SpoolEntry] = {}  # insertion order = upload order
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._files_lock = threading.Lock()  # a start-up scan never sees a write half-done
        self.uploaded = 0  # counters for metrics
        self.failed_attempts = 0

    # --- the writer side ----------------------------------------------------------------------

    def pending(self) -> int:
        """Entries on disk not yet uploaded (known to this process)."""
        return len(self._pending)

    def oldest_age(self) -> float:
        """Seconds the oldest pending entry has waited (0 when none): for health checks."""
        oldest = next(iter(self._pending.values()), None)
        return 0.0 if oldest is None else max(0.0, self._clock() - oldest.created_at)

    async def write(self, key: str, data: bytes, content_type: str = OCTETS) -> None:
        """Persist `data` for `key` (fsynced) and queue it for upload; ValueError for a bad
        key, StoreUnavailable (logged at CRITICAL) when the local disk is full."""
        if self._write_through:
            validate_key(key)
            try:
                await self.target.put(key, data, content_type)
                self.uploaded += 1
                return
            except StoreError as error:  # the folder refused it: keep it in the spool instead
                log.warning("write-through failed, spooling: %s", error, extra={"key": key})
        entry = self._new_entry(key, content_type)
        payload = bytes(data)
        await self._persist(entry, lambda target: _write_bytes(target, payload))

    async def write_file(self, key: str, path: str | os.PathLike[str],
                         content_type: str = OCTETS) -> None:
        """Take over the file at `path` (moved into the spool, copied if on another
        filesystem) and queue it for upload under `key`."""
        adopt = getattr(self.target, "adopt_file", None)
        if self._write_through and adopt is not None:
            validate_key(key)
            try:
                await adopt(key, path)
                self.uploaded += 1
                return
            except StoreError as error:
                log.warning("write-through failed, spooling: %s", error, extra={"key": key})
        entry = self._new_entry(key, content_type)
        source = Path(path)
        await self._persist(entry, lambda target: move_durably(source, target))

    def _new_entry(self, key: str, content_type: str) -> SpoolEntry:
        validate_key(key)  # now, so the caller hears of it; never a poison entry later
        # Time first, so sorting ids gives the write order back after a restart.
        entry_id = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"
        return SpoolEntry(entry_id=entry_id, key=key, content_type=content_type,
                          created_at=self._clock())

    async def _persist(self, entry: SpoolEntry, place: Callable[[Path], None]) -> None:
        def job() -> None:
            with self._files_lock:
                self.spool_dir.mkdir(parents=True, exist_ok=True)
                try:
                    _write_json(self._path(entry, META_SUFFIX), _sidecar(entry))
                    fsync_directory(self.spool_dir)
                    place(self._path(entry, DATA_SUFFIX))
                    fsync_directory(self.spool_dir)
                except BaseException:
                    self._discard_files(entry)
                    raise

        try:
            await asyncio.to_thread(job)
        except OSError as error:
            if error.errno in _DISK_FULL:
                log.critical(
                    "spool disk full: blob NOT saved", extra={
                        "key": entry.key, "spool_dir": str(self.spool_dir),
                        "error": str(error)},
                )
                raise StoreUnavailable(
                    f"spool {self.spool_dir}: disk full, {entry.key!r} not saved"
                ) from None
            log.error("spool write failed: %s", error, extra={"key": entry.key})
            raise StoreUnavailable(f"spool {self.spool_dir}: cannot save {entry.key!r}: "
                                   f"{error.strerror or error}") from None
        self._pending[entry.entry_id] = entry
        self._wake.set()

    # --- the uploader -------------------------------------------------------------------------

    async def start(self) -> None:
        """Load what an earlier process left in the folder, then start uploading."""
        if self._task is not None:
            return
        scanned = await asyncio.to_thread(self._scan)
        known = self._pending  # written by this process before start()
        recovered = {entry.entry_id: entry for entry in scanned if entry.entry_id not in known}
        if recovered:
            log.info("spool recovered entries", extra={
                "count": len(recovered), "spool_dir": str(self.spool_dir)})
        self._pending = dict(sorted({**recovered, **known}.items()))
        self._task = asyncio.create_task(self._run(), name="blob-spool-uploader")

    async def stop(self) -> None:
        """Stop uploading; what is left stays on disk for the next start."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def wait_empty(self) -> None:
        """Return once nothing is pending (tests; shutdown, with a timeout around it)."""
        while self._pending:
            self._drained.clear()
            await self._drained.wait()

    def _forget(self, entry: SpoolEntry) -> None:
        self._pending.pop(entry.entry_id, None)
        if not self._pending:
            self._drained.set()

    async def _run(self) -> None:
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            entry = next(iter(self._pending.values()))
            if await self._upload(entry):
                self._failures = 0
                continue
            # Move it to the back so one bad entry cannot hold up the others, and pause: the
            # store is probably down, and hammering it helps no one.
            self._pending.pop(entry.entry_id, None)
            self._pending[entry.entry_id] = entry
            self._failures += 1
            delay = self._backoff.delay(self._failures, self._random())
            log.warning("blob upload failed, retrying later", extra={
                "key": entry.key, "attempts": entry.attempts, "retry_in_s": round(delay, 3),
                "pending": len(self._pending)})
            await self._sleep(delay)

    async def _upload(self, entry: SpoolEntry) -> bool:
        data_path = self._path(entry, DATA_SUFFIX)
        try:
            await self.target.put_file(entry.key, str(data_path), entry.content_type)
        except Exception as error:  # any failure of the target: keep the entry, retry later
            entry.attempts += 1
            self.failed_attempts += 1
            if not await asyncio.to_thread(data_path.exists):  # removed behind our back
                log.error("spool entry lost its payload", extra={"key": entry.key})
                await asyncio.to_thread(self._discard_files, entry)
                self._forget(entry)
                return True
            log.debug("upload of %s failed: %r", entry.key, error)
            with contextlib.suppress(OSError):  # attempts are informative, not essential
                await asyncio.to_thread(
                    _write_json, self._path(entry, META_SUFFIX), _sidecar(entry), False
                )
            return False
        self.uploaded += 1
        try:
            await asyncio.to_thread(self._discard_files, entry)
        except OSError as error:  # uploaded anyway; a restart would upload it once more
            log.error("spool cannot delete an uploaded entry: %s", error,
                      extra={"key": entry.key})
        self._forget(entry)
        return True

    # --- files --------------------------------------------------------------------------------

    def _path(self, entry: SpoolEntry, suffix: str) -> Path:
        return self.spool_dir / f"{entry.entry_id}{suffix}"

    def _discard_files(self, entry: SpoolEntry) -> None:
        # Sidecar first: a crash in between leaves a payload without sidecar, which the next
        # scan deletes, never a sidecar pointing at nothing.
        for suffix in (META_SUFFIX, DATA_SUFFIX, META_SUFFIX + TEMP_SUFFIX,
                       DATA_SUFFIX + TEMP_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                self._path(entry, suffix).unlink()

    def _scan(self) -> list[SpoolEntry]:
        """The complete entries in the folder; removes leftovers of interrupted writes."""
        with self._files_lock:
            return self._scan_locked()

    def _scan_locked(self) -> list[SpoolEntry]:
        if not self.spool_dir.is_dir():
            return []
        entries: list[SpoolEntry] = []
        names = {path.name for path in self.spool_dir.iterdir()}
        for name in sorted(names):
            path = self.spool_dir / name
            if name.endswith(TEMP_SUFFIX) or (
                name.endswith(DATA_SUFFIX)
                and name.removesuffix(DATA_SUFFIX) + META_SUFFIX not in names
            ):
                # A write that never returned to its caller: not ours to keep.
                log.warning("spool removes an incomplete entry", extra={"file": name})
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            if not name.endswith(META_SUFFIX):
                continue
            entry_id = name.removesuffix(META_SUFFIX)
            if entry_id + DATA_SUFFIX not in names:
                log.warning("spool removes an incomplete entry", extra={"file": name})
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            entry = _read_sidecar(path, entry_id)
            if entry is None:
                log.error("spool drops an entry with an unreadable sidecar",
                          extra={"file": name})
                with contextlib.suppress(FileNotFoundError):
                    (self.spool_dir / (entry_id + DATA_SUFFIX)).unlink()
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            entries.append(entry)
        return entries


# --- blocking helpers (run in a thread) -------------------------------------------------------


def _sidecar(entry: SpoolEntry) -> dict[str, Any]:
    return {"key": entry.key, "content_type": entry.content_type, "attempts": entry.attempts,
            "created_at": entry.created_at}


def _read_sidecar(path: Path, entry_id: str) -> SpoolEntry | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        key = validate_key(meta["key"])
        return SpoolEntry(entry_id=entry_id, key=key, content_type=str(meta["content_type"]),
                          attempts=int(meta.get("attempts", 0)),
                          created_at=float(meta.get("created_at", 0.0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_json(path: Path, value: dict[str, Any], durable: bool = True) -> None:
    temp = path.with_name(path.name + TEMP_SUFFIX)
    with temp.open("w", encoding="utf-8") as out:
        json.dump(value, out, separators=(",", ":"))
        out.flush()
        if durable:
            os.fsync(out.fileno())
    os.replace(temp, path)


def _write_bytes(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + TEMP_SUFFIX)
    with temp.open("wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)  # the payload appears whole or not at all


