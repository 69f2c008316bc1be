"""The blob store on a local folder (embedded mode): atomic, durable writes; reads off the loop.

A key maps to `root/<key>`. Writes go to a temporary file in the target's folder, are fsynced,
renamed over the target and the folder is fsynced, so a reader (or a restart after a power cut)
sees either the old blob or the whole new one, never a torn file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO

from control.store.errors import NotFound, StoreUnavailable
from control.store.ports import OCTETS, BlobStore

log = logging.getLogger(__name__)

_COPY_CHUNK = 1024 * 1024


def validate_key(key: str) -> str:
    """Return `key` if it is a relative `/`-separated path of safe segments; else ValueError.

    Rejected: empty keys, a leading `/`, empty segments (`a//b`, a trailing `/`), `.` and `..`
    segments, backslashes (a path separator elsewhere) and control characters.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("blob key is empty")
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


def _unavailable(action: str, key: str, error: OSError) -> StoreUnavailable:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        log.error("blob store disk full", extra={"action": action, "key": key})
    else:
        log.error("blob store %s failed: %s", action, error, extra={"key": key})
    return StoreUnavailable(f"local blob store: cannot {action} {key!r}: {error.strerror}")


class LocalBlobStore:
    """`BlobStore` on the folder `root` (created on the first write)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path_of(self, key: str) -> Path:
        """The file that holds `key` (ValueError for a bad key)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, key: str, data: bytes, content_type: str = OCTETS) -> None:
        # The content type is not kept: a folder has nowhere to put it, and the API serves
        # CDRs (.json) and recordings (.wav) by their extension.
        path = self.path_of(key)
        try:
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
