"""The blob store on a local folder (embedded mode): atomic, durable writes; reads off the loop.

A key maps to `root/<key>`. Writes go to a temporary file in the target's folder, are fsynced,
renamed over the target and the folder is fsynced, so a reader (or a restart after a power cut)
sees either the old blob or the whole new one, never a torn file. Small blobs written at the same
time share their fsyncs (`_write_batch`), so a burst of CDRs costs little more than one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from control.store.errors import NotFound, StoreUnavailable
from control.store.ports import OCTETS, BlobStore

log = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024
_BATCHED_MAX = 256 * 1024  # CDRs and other small blobs are written in batches
# How long a batch gathers. Each batch is a hand-off to a worker thread, and each of its files
# five system calls there that let the GIL go: at hundreds of CDRs a second, 5 ms made batches
# of ~3 and the hand-offs cost ~20 us a call. A CDR waits at most this long to be on disk.
_BATCH_WINDOW_S = 0.05


# Segments of safe characters that are not "." or "..", joined by single slashes.
_SEGMENT = r"(?!\.\.?(?:/|$))[A-Za-z0-9._@%~+=-]+"
_SAFE_KEY = re.compile(f"{_SEGMENT}(?:/{_SEGMENT})*")


def validate_key(key: str) -> str:
    """Return `key` if it is a relative `/`-separated path of safe segments; else ValueError.

    Rejected: empty keys, a leading `/`, empty segments (`a//b`, a trailing `/`), `.` and `..`
    segments, backslashes (a path separator elsewhere) and control characters.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("blob key is empty")
    if _SAFE_KEY.fullmatch(key) is not None:
        return key  # the common shape (cdr/2026/11/28/abc.json), checked in one pass
    if key.startswith("/"):
        raise ValueError(f"blob key {key!r} is absolute (starts with '/')")
    if "\\" in key:
        raise ValueError(f"blob key {key!r} contains a backslash")
    if any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise ValueError(f"blob key {key!r} contains a control character")
    for segment in key.split("/"):
        if not segment:
            raise ValueError(f"blob key {key!r} has an empty segment")
        if segment in (".", ".."):
            raise ValueError(f"blob key {key!r} has a {segment!r} segment")
    return key


def fsync_directory(path: Path) -> None:
    """Make a rename or unlink in `path` durable (POSIX: the entry lives in the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform that cannot open directories: nothing more we can do
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(target: Path, source: bytes | Path) -> None:
    """Write `source` (bytes, or a file to copy) to `target` via temp file + fsync + rename.

    Blocking: call it in a thread. Leaves no temporary file behind when it fails.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out:
            if isinstance(source, Path):
                with source.open("rb") as src:
                    shutil.copyfileobj(src, out, _COPY_CHUNK)
            else:
                out.write(source)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    fsync_directory(target.parent)


_temp_names = itertools.count()
_CREATE_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL


def _write_batch(items: list[tuple[Path, bytes]]) -> list[OSError | None]:
    """Write small blobs together, each as durably as `write_atomically` does, for far less:
    all temporary files first, then their fsyncs (after the first, the file system's journal
    commit has usually taken the others' data along: the later ones return at once), then the
    renames, then one fsync per folder. Blocking: run it in a thread. One result per item."""
    results: list[OSError | None] = [None] * len(items)
    opened: list[tuple[int, int, str, Path]] = []
    pid = os.getpid()
    for index, (target, data) in enumerate(items):
        temp = f"{target.parent}/.tmp-{pid}-{next(_temp_names)}.part"
        try:
            try:
                fd = os.open(temp, _CREATE_NEW, 0o644)
            except FileNotFoundError:  # the first blob of the day's folder
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(temp, _CREATE_NEW, 0o644)
        except OSError as error:
            results[index] = error
            continue
        opened.append((index, fd, temp, target))
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as error:
            results[index] = error
    folders: set[Path] = set()
    for index, fd, temp, target in opened:
        try:
            if results[index] is None:
                os.fsync(fd)
        except OSError as error:
            results[index] = error
        finally:
            os.close(fd)
        try:
            if results[index] is None:
                os.replace(temp, target)
                folders.add(target.parent)
                continue
        except OSError as error:
            results[index] = error
        with contextlib.suppress(OSError):
            os.unlink(temp)
    for folder in folders:
        fsync_directory(folder)
    return results


class _BatchedWrites:
    """Puts made while a batch is being written wait and go together in the next one."""

    def __init__(self) -> None:
        self._queue: list[tuple[Path, bytes, asyncio.Future[None]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    async def write(self, target: Path, data: bytes) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((target, data, future))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await asyncio.sleep(_BATCH_WINDOW_S)  # let a burst gather into one batch
                batch, self._queue = self._queue, []
                try:
                    results = await asyncio.to_thread(
                        _write_batch, [(target, data) for target, data, _ in batch]
                    )
                except Exception as exc:  # a bug, not an I/O error: fail this batch only
                    results = [OSError(str(exc))] * len(batch)
                for (_, _, future), failure in zip(batch, results, strict=True):
                    if future.done():
                        continue  # its caller was cancelled
                    if failure is None:
                        future.set_result(None)
                    else:
                        future.set_exception(failure)
        finally:
            self._running = False


def move_durably(source: Path, target: Path) -> None:
    """Move the file `source` to `target` so that it survives a crash: its bytes fsynced (the
    writer may never have), renamed into place, or, across filesystems, copied atomically and
    only then removed. Blocking: run it in a thread. The caller fsyncs `target`'s folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(source, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(source, target)  # POSIX: replaces an existing target too
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
        write_atomically(target, source)
        source.unlink()


def _adopt(source: Path, target: Path) -> None:
    move_durably(source, target)
    fsync_directory(target.parent)


def _unavailable(action: str, key: str, error: OSError) -> StoreUnavailable:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("blob store disk full", extra={"action": action, "key": key})
    else:
        log.error("blob store %s failed: %s", action, error, extra={"key": key})
    return StoreUnavailable(f"local blob store: cannot {action} {key!r}: {error.strerror}")


class LocalBlobStore:
    """`BlobStore` on the folder `root` (created on the first write).

    `durable_writes`: a write is on disk (fsynced) when it returns, so a `BlobSpool` in front of
    this store writes through instead of spooling first (the folder *is* the store)."""

    durable_writes = True

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self._batches = _BatchedWrites()

    async def adopt_file(self, key: str, path: str | os.PathLike[str]) -> None:
        """Take over the file at `path` as `key`: fsync, rename into place (a copy when it is on
        another filesystem), fsync the folder. The source is gone afterwards."""
        target = self.path_of(key)
        try:
            await asyncio.to_thread(_adopt, Path(path), target)
        except FileNotFoundError:
            raise NotFound(f"no file {os.fspath(path)!r} to store as {key!r}") from None
        except OSError as error:
            raise _unavailable("write", key, error) from None

    def path_of(self, key: str) -> Path:
        """The file that holds `key` (ValueError for a bad key)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, data: bytes, content_type: str = OCTETS) -> None:
        # The content type is not kept: a folder has nowhere to put it, and the API serves
        # CDRs (.json) and recordings (.wav) by their extension.
        path = self.path_of(key)
        try:
            if len(data) <= _BATCHED_MAX:
                await self._batches.write(path, bytes(data))
            else:
                await asyncio.to_thread(write_atomically, path, bytes(data))
        except OSError as error:
            raise _unavailable("write", key, error) from None

    async def put_file(self, key: str, path: str, content_type: str = OCTETS) -> None:
        target = self.path_of(key)
        try:
            await asyncio.to_thread(write_atomically, target, Path(path))
        except FileNotFoundError:
            raise NotFound(f"no file {path!r} to store as {key!r}") from None
        except OSError as error:
            raise _unavailable("write", key, error) from None

    async def get(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no blob {key!r}") from None
        except OSError as error:
            raise _unavailable("read", key, error) from None

    def stream(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        # Not an async generator itself, so a bad key fails here, at the call.
        path = self.path_of(key)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._chunks(key, path, chunk_size)

    async def _chunks(self, key: str, path: Path, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            handle: IO[bytes] = await asyncio.to_thread(path.open, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no blob {key!r}") from None
        except OSError as error:
            raise _unavailable("read", key, error) from None
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(handle.read, chunk_size)
                except OSError as error:
                    raise _unavailable("read", key, error) from None
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def exists(self, key: str) -> bool:
        return await asyncio.to_thread(self.path_of(key).is_file)

    async def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing blob is not an error (as with S3)."""
        path = self.path_of(key)

        def unlink() -> None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
            fsync_directory(path.parent)

        try:
            await asyncio.to_thread(unlink)
        except OSError as error:
            raise _unavailable("delete", key, error) from None

    async def close(self) -> None:
        """Nothing to release: files are opened per call."""

    async def presign(self, key: str, expires_s: int = 3600) -> str | None:
        self.path_of(key)  # still a ValueError for a bad key, as on S3
        return None


_: type[BlobStore] = LocalBlobStore
