"""Prompt audio for call applications: `PromptLibrary.load(source)` turns an http(s) URL or a
file under the prompts folder into 8 kHz mono int16 PCM, and the caches that make the second
load cheap (shared with edge.io.tts).

URL prompts are fetched with the edge's pooled HTTP client (bounded time and size), decoded once
(WAV via edge.media.audio, MP3 via an `mpg123` subprocess; the format is sniffed from the bytes,
never taken from the name) and kept as the decoded 8 kHz WAV in three tiers: an in-memory LRU
bounded by bytes, a folder under the cache dir (`prompts/<sha256(url)>.wav` + `.json` holding the
validators), and the blob store under the same keys, so another edge or a restart can take it
from there. A cached prompt is used as is for `revalidate_s`; after that one conditional GET
(RFC 9110 §13.1: If-None-Match with the stored ETag, If-Modified-Since with Last-Modified)
either confirms it (304) or brings the new audio. When the origin fails (network, 5xx) a cached
copy is played rather than the call failing (RFC 5861 §4, stale-if-error). Concurrent loads of
one source share one fetch.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, ValidationError

from control.store.errors import NotFound, StoreError
from control.store.local_blobs import write_atomically
from control.store.ports import BlobStore
from edge.config import Config, media_cache_dir
from edge.io.webhooks import redact_url
from edge.media.audio import AudioFormatError, decode_wav, encode_wav

log = logging.getLogger("sdpbx.prompts")

__all__ = [
    "AudioCache",
    "BadPromptSource",
    "CachedAudio",
    "Coalescer",
    "PcmLru",
    "PipeResult",
    "PromptError",
    "PromptLibrary",
    "PromptMeta",
    "PromptNotFound",
    "PromptUnavailable",
    "UnsupportedAudio",
    "decode_audio",
    "run_pipe",
    "sniff_format",
]

Samples = npt.NDArray[np.int16]

WAV = "audio/wav"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024
# mpg123's output at the source rate, before resampling: 64 MB is 11 min at 48 kHz mono.
_MAX_DECODED_BYTES = 64 * 1024 * 1024
_ACCEPT = "audio/wav, audio/x-wav, audio/wave, audio/mpeg;q=0.9, audio/*;q=0.5, */*;q=0.1"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_UPLOAD_WAIT_S = 10.0


# --- errors -------------------------------------------------------------------------------------


class PromptError(Exception):
    """A prompt cannot be played; the message names the source (URLs without their query)."""


class BadPromptSource(PromptError, ValueError):
    """The source is neither an http(s) URL nor a relative name under the prompts folder."""


class PromptNotFound(PromptError):
    """No such file, or the origin answered 404/410."""


class PromptUnavailable(PromptError):
    """The origin failed (network, timeout, an HTTP error) or the prompt is too large."""


class UnsupportedAudio(PromptError):
    """The bytes are not audio we decode (WAV or MP3), or decoding them failed."""


# --- decoding -----------------------------------------------------------------------------------


def sniff_format(data: bytes) -> Literal["wav", "mp3"] | None:
    """"wav" for a RIFF/WAVE file, "mp3" for an ID3v2 tag or an MPEG audio layer I-III frame
    header (ISO/IEC 11172-3 §2.4.2.3: 11 sync bits, a layer other than 00, a bitrate index other
    than 1111 and a sampling frequency other than 11), else None."""
    if len(data) >= 12 and data[:4] in (b"RIFF", b"RIFX", b"RF64") and data[8:12] == b"WAVE":
        return "wav"
    if data[:3] == b"ID3":
        return "mp3"
    if (len(data) >= 4 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0
            and data[1] & 0x06 and data[2] >> 4 != 0xF and (data[2] >> 2) & 0x03 != 0x03):
        return "mp3"
    return None


def _describe_bytes(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if not data:
        return "it is empty"
    if head.startswith((b"<!doctype html", b"<html")):
        return "it is an HTML page"
    if data[:4] == b"OggS":
        return "it looks like Ogg"
    if data[:4] == b"fLaC":
        return "it looks like FLAC"
    if len(data) > 1 and data[0] == 0xFF and data[1] & 0xF6 == 0xF0:
        return "it looks like AAC (ADTS)"
    return f"it starts with {data[:12]!r}"


@dataclass(frozen=True, slots=True)
class PipeResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class _OutputTooLarge(Exception):
    pass


async def _read_capped(stream: asyncio.StreamReader, cap: int, *, fail: bool) -> bytes:
    """Everything `stream` yields; past `cap` bytes raise (`fail`) or drop the rest (so a chatty
    stderr cannot fill its pipe and stall the program)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await stream.read(65536):
        if size + len(chunk) > cap:
            if fail:
                raise _OutputTooLarge
            chunk = chunk[: max(0, cap - size)]
        size += len(chunk)
        if chunk:
            chunks.append(chunk)
    return b"".join(chunks)


async def run_pipe(argv: Sequence[str], data: bytes, *, timeout_s: float,
                   max_output: int) -> PipeResult:
    """Run `argv` with `data` on its stdin and collect its stdout, within `timeout_s`.

    Raises `FileNotFoundError` when the program is not installed, `TimeoutError` when it takes
    longer (it is killed), `OverflowError` when its stdout exceeds `max_output` bytes (killed).
    A cancelled caller kills the program too: no process outlives its request."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    assert process.stderr is not None
    stdin, stdout, stderr = process.stdin, process.stdout, process.stderr

    async def feed() -> None:
        try:
            stdin.write(data)
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            pass  # it stopped reading: its exit status says why
        finally:
            stdin.close()

    try:
        async with asyncio.timeout(timeout_s):
            _, out, err, code = await asyncio.gather(
                feed(), _read_capped(stdout, max_output, fail=True),
                _read_capped(stderr, 16384, fail=False), process.wait())
    except _OutputTooLarge:
        raise OverflowError(f"{argv[0]} wrote more than {max_output} bytes") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return PipeResult(code, out, err)


def _whole_data_chunk(data: bytes) -> bytes:
    """A WAV written to a pipe by a program that could not seek back to fix its sizes (mpg123
    leaves 0 there): the RIFF and data chunk sizes set to what is really there."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id = data[pos:pos + 4]
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if chunk_id == b"data":
            actual = len(data) - pos - 8
            if size == actual:
                return data
            return b"".join((
                b"RIFF", (len(data) - 8).to_bytes(4, "little"), data[8:pos + 4],
                actual.to_bytes(4, "little"), data[pos + 8:],
            ))
        pos += 8 + size + (size & 1)
    return data


async def decode_audio(data: bytes, *, mpg123: str = "mpg123", timeout_s: float = 30.0,
                       name: str = "audio") -> Samples:
    """WAV or MP3 bytes (sniffed) to 8 kHz mono int16; `name` labels errors.

    WAV of any rate, width and channel count goes through `decode_wav`; MP3 through
    `mpg123 --mono -e s16 -w -` (its output at the source rate) and then the same resampler.
    The numpy work runs in a thread so the media clock keeps time. Anything else, or a decoder
    failure, raises `UnsupportedAudio`."""
    kind = sniff_format(data)
    if kind is None:
        raise UnsupportedAudio(f"{name}: not WAV or MP3 ({_describe_bytes(data)})")
    if kind == "mp3":
        argv = [mpg123, "--quiet", "--mono", "--encoding", "s16", "--wav", "-", "-"]
        try:
            result = await run_pipe(argv, data, timeout_s=timeout_s,
                                    max_output=_MAX_DECODED_BYTES)
        except FileNotFoundError:
            raise UnsupportedAudio(f"{name}: MP3 needs {mpg123!r} (Debian package mpg123), "
                                   "which is not installed") from None
        except TimeoutError:
            raise UnsupportedAudio(f"{name}: MP3 decoding took more than {timeout_s:g} s"
                                   ) from None
        except OverflowError:
            raise UnsupportedAudio(f"{name}: MP3 decodes to more than "
                                   f"{_MAX_DECODED_BYTES // 2**20} MB of audio") from None
        if result.returncode != 0 or len(result.stdout) <= 44:
            detail = result.stderr.decode(errors="replace").strip()[:200] or "no audio"
            raise UnsupportedAudio(f"{name}: MP3 decoding failed (mpg123 exit "
                                   f"{result.returncode}: {detail})")
        data = _whole_data_chunk(result.stdout)
    try:
        pcm = await asyncio.to_thread(decode_wav, data)
    except AudioFormatError as exc:
        raise UnsupportedAudio(f"{name}: {exc}") from None
    return _frozen(pcm)


def _frozen(pcm: Samples) -> Samples:
    """Cached arrays are shared by every call that plays them: make them read-only."""
    pcm.flags.writeable = False
    return pcm


# --- the caches ---------------------------------------------------------------------------------


class PromptMeta(BaseModel):
    """What is stored next to a URL prompt's WAV (disk and blob store): its HTTP validators and
    when the origin last confirmed them (wall clock, Unix seconds)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    url: str
    etag: str | None = None
    last_modified: str | None = None
    checked_at: float
    samples: int


@dataclass(slots=True)
class CachedAudio:
    """One decoded prompt in memory: URL prompts carry their `meta`, file prompts the
    (mtime_ns, size) `stamp` of the file they were decoded from."""

    pcm: Samples
    meta: PromptMeta | None = None
    stamp: tuple[int, int] | None = None


class PcmLru:
    """Decoded audio by key, least recently used dropped first, bounded by total bytes.

    One instance may be shared by the prompt library and speech, so they share one budget.
    An item larger than the whole budget is not kept."""

    __slots__ = ("_entries", "max_bytes", "size")

    def __init__(self, max_bytes: int = DEFAULT_MEMORY_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, CachedAudio] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedAudio | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, entry: CachedAudio) -> None:
        self.pop(key)
        if entry.pcm.nbytes > self.max_bytes:
            return
        self._entries[key] = entry
        self.size += entry.pcm.nbytes
        while self.size > self.max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self.size -= oldest.pcm.nbytes

    def pop(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= old.pcm.nbytes


class Coalescer:
    """Concurrent requests for one key share one task (in-flight dedupe). A caller that is
    cancelled (its call hung up) does not cancel the work the others wait for."""

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[Samples]] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, key: str,
                  make: Callable[[], Coroutine[Any, Any, Samples]]) -> Samples:
        task = self._tasks.get(key)
        if task is None:
            task = asyncio.create_task(make(), name=f"load {key[:40]}")
            self._tasks[key] = task
            task.add_done_callback(functools.partial(self._done, key))
        return await asyncio.shield(task)

    def _done(self, key: str, task: asyncio.Task[Samples]) -> None:
        if self._tasks.get(key) is task:
            del self._tasks[key]
        if not task.cancelled():
            task.exception()  # retrieved here, so a load nobody awaits any more logs nothing

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class AudioCache:
    """Decoded 8 kHz audio of one `kind` ("prompts", "tts") in three tiers: `memory` (keys
    `<kind>/<digest>`), the folder `<cache_dir>/<kind>/` (`<digest>.wav`, and `<digest>.json`
    when there is metadata), and the blob store under the same keys. Disk writes finish before
    `write` returns; blob uploads run in the background (`flush` waits for them). A blob store
    that fails or lacks the key is a miss, never an error."""

    def __init__(self, kind: str, cache_dir: str | os.PathLike[str], *,
                 blobs: BlobStore | None, memory: PcmLru) -> None:
        self.kind = kind
        self.folder = Path(cache_dir) / kind
        self.memory = memory
        self._blobs = blobs
        self._uploads: set[asyncio.Task[None]] = set()

    def recall(self, digest: str) -> CachedAudio | None:
        return self.memory.get(f"{self.kind}/{digest}")

    def remember(self, digest: str, entry: CachedAudio) -> None:
        self.memory.put(f"{self.kind}/{digest}", entry)

    def forget(self, digest: str) -> None:
        self.memory.pop(f"{self.kind}/{digest}")

    async def read(self, digest: str, *, with_meta: bool) -> tuple[Samples, bytes | None] | None:
        """The stored audio (and metadata, when `with_meta`) from disk, else from the blob store
        (then also written to disk); None when neither has it (with its metadata)."""
        wav_path, meta_path = self._paths(digest)
        try:
            found = await asyncio.to_thread(_read_pair, wav_path, meta_path if with_meta else None)
        except AudioFormatError as exc:  # a damaged cache file: fetch again
            log.warning("cache file %s is damaged: %s", wav_path, exc)
            found = None
        if found is not None:
            return found
        if self._blobs is None:
            return None
        try:
            meta = await self._blobs.get(f"{self.kind}/{digest}.json") if with_meta else None
            wav = await self._blobs.get(f"{self.kind}/{digest}.wav")
            pcm = await asyncio.to_thread(decode_wav, wav)
        except NotFound:
            return None
        except (StoreError, AudioFormatError) as exc:
            log.warning("blob store copy of %s/%s unusable: %s", self.kind, digest, exc)
            return None
        await self._write_disk(digest, wav, meta)
        return _frozen(pcm), meta

    async def write(self, digest: str, pcm: Samples, meta: bytes | None) -> None:
        """Keep new audio: on disk now, in the blob store in the background."""
        wav = await asyncio.to_thread(encode_wav, pcm)
        await self._write_disk(digest, wav, meta)
        # The WAV first: a reader that finds the metadata finds the audio.
        self._upload([(f"{self.kind}/{digest}.wav", wav, WAV)]
                     + ([(f"{self.kind}/{digest}.json", meta, "application/json")]
                        if meta is not None else []))

    async def write_meta(self, digest: str, meta: bytes) -> None:
        _, meta_path = self._paths(digest)
        await self._write_files([(meta_path, meta)])
        self._upload([(f"{self.kind}/{digest}.json", meta, "application/json")])

    async def flush(self, timeout_s: float = _UPLOAD_WAIT_S) -> None:
        """Wait (at most `timeout_s`) for the background uploads; cancel what is left."""
        if not self._uploads:
            return
        _, pending = await asyncio.wait(set(self._uploads), timeout=timeout_s)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _paths(self, digest: str) -> tuple[Path, Path]:
        return self.folder / f"{digest}.wav", self.folder / f"{digest}.json"

    async def _write_disk(self, digest: str, wav: bytes, meta: bytes | None) -> None:
        wav_path, meta_path = self._paths(digest)
        await self._write_files([(wav_path, wav)] + ([(meta_path, meta)] if meta else []))

    async def _write_files(self, files: list[tuple[Path, bytes]]) -> None:
        try:
            await asyncio.to_thread(_write_all, files)
        except OSError as exc:  # a full or read-only disk costs a refetch later, not the call
            log.warning("cannot write the %s cache: %s", self.kind, exc)

    def _upload(self, items: list[tuple[str, bytes, str]]) -> None:
        if self._blobs is None:
            return
        task = asyncio.get_running_loop().create_task(self._put(self._blobs, items))
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def _put(self, blobs: BlobStore, items: list[tuple[str, bytes, str]]) -> None:
        for key, data, content_type in items:
            try:
                await blobs.put(key, data, content_type)
            except StoreError as exc:
                log.warning("cannot store %s in the blob store: %s", key, exc)
                return


def _read_pair(wav_path: Path, meta_path: Path | None) -> tuple[Samples, bytes | None] | None:
    try:
        meta = meta_path.read_bytes() if meta_path is not None else None
        wav = wav_path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # unreadable: a miss, the audio is fetched or made again
        log.warning("cannot read the cache file %s: %s", wav_path, exc)
        return None
    return _frozen(decode_wav(wav)), meta


def _write_all(files: list[tuple[Path, bytes]]) -> None:
    for path, data in files:  # the WAV first: metadata never points at missing audio
        write_atomically(path, data)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# --- the library --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Fetched:
    """A 200's body and validators, or (`body` None) a 304's validators."""

    body: bytes | None
    etag: str | None
    last_modified: str | None


class PromptLibrary:
    """Prompts by URL or file name, decoded to 8 kHz mono int16 (read-only arrays, shared).

    `prompts_dir`: the folder file names are relative to. `cache_dir`: where URL prompts are
    kept (`prompts/` inside it). `http_client`: the edge's pooled client. `blobs`: the shared
    blob store (None: disk and memory only). `revalidate_s`: how long a cached URL prompt is
    used before the origin is asked again (0: every load asks). `timeout_s` bounds one fetch,
    redirects included; `max_bytes` its body. `memory`: the LRU (may be shared with `Speech`).
    `clock`: the wall clock the revalidation age is measured with.
    """

    def __init__(
        self,
        *,
        prompts_dir: str | os.PathLike[str],
        cache_dir: str | os.PathLike[str],
        http_client: httpx.AsyncClient,
        blobs: BlobStore | None = None,
        revalidate_s: float = 300.0,
        timeout_s: float = 10.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
        memory: PcmLru | None = None,
        clock: Callable[[], float] = time.time,
        mpg123: str = "mpg123",
        decode_timeout_s: float = 30.0,
    ) -> None:
        self.prompts_dir = Path(prompts_dir)
        self.revalidate_s = revalidate_s
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self.memory = memory if memory is not None else PcmLru()
        self.cache = AudioCache("prompts", cache_dir, blobs=blobs, memory=self.memory)
        self._client = http_client
        self._clock = clock
        self._mpg123 = mpg123
        self._decode_timeout_s = decode_timeout_s
        self._loads = Coalescer()

    @classmethod
    def from_config(cls, config: Config, *, http_client: httpx.AsyncClient,
                    blobs: BlobStore | None, memory: PcmLru | None = None) -> PromptLibrary:
        """The library `[media]` describes (the cache dir defaults to under the spool path)."""
        media = config.media
        return cls(
            prompts_dir=media.prompts_dir, cache_dir=media_cache_dir(config),
            http_client=http_client, blobs=blobs, revalidate_s=media.prompt_revalidate_s,
            timeout_s=media.prompt_timeout_ms / 1000, max_bytes=media.prompt_max_bytes,
            memory=memory if memory is not None else PcmLru(media.memory_cache_mb * 2**20),
        )

    async def load(self, source: str) -> Samples:
        """The audio of `source`: an http(s) URL, or a file name relative to `prompts_dir`
        (`/`-separated; no `..`, no absolute path). Raises `BadPromptSource`, `PromptNotFound`,
        `PromptUnavailable` or `UnsupportedAudio` (all `PromptError`)."""
        if _SCHEME.match(source):
            return await self._load_url(source)
        return await self._load_file(source)

    async def flush(self) -> None:
        """Wait for background blob store uploads."""
        await self.cache.flush()

    async def aclose(self) -> None:
        """Stop loads in flight and finish (or give up) the uploads. The client is the caller's."""
        await self._loads.aclose()
        await self.cache.flush()

    # --- files ---

    def file_path(self, source: str) -> Path:
        """The file a relative source names; `BadPromptSource` for anything that could leave
        `prompts_dir` (absolute paths, `..`, backslashes, control characters)."""
        if not source:
            raise BadPromptSource("empty prompt source")
        if any(ord(char) < 0x20 or ord(char) == 0x7F for char in source):
            raise BadPromptSource(f"prompt file {source!r} contains a control character")
        if source.startswith("/"):
            raise BadPromptSource(f"prompt file {source!r} is absolute: name a file relative "
                                  "to [media] prompts_dir")
        if "\\" in source:
            raise BadPromptSource(f"prompt file {source!r} contains a backslash")
        parts = source.split("/")
        if any(part in ("", ".", "..") for part in parts):
            raise BadPromptSource(f"prompt file {source!r} has an empty, '.' or '..' segment")
        return self.prompts_dir.joinpath(*parts)

    async def _load_file(self, source: str) -> Samples:
        path = self.file_path(source)
        try:
            info = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            raise PromptNotFound(f"no prompt file {source!r} in {self.prompts_dir}") from None
        except OSError as exc:
            raise PromptUnavailable(f"prompt file {source!r}: {exc.strerror}") from None
        if not path.is_file():
            raise PromptNotFound(f"prompt {source!r} in {self.prompts_dir} is not a file")
        if info.st_size > self.max_bytes:
            raise PromptUnavailable(f"prompt file {source!r} is larger than "
                                    f"{self.max_bytes} bytes")
        key = f"file/{source}"
        stamp = (info.st_mtime_ns, info.st_size)
        entry = self.memory.get(key)
        if entry is not None and entry.stamp == stamp:
            return entry.pcm
        return await self._loads.run(key, functools.partial(
            self._read_file, path, source, key, stamp))

    async def _read_file(self, path: Path, source: str, key: str,
                         stamp: tuple[int, int]) -> Samples:
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise PromptNotFound(f"no prompt file {source!r} in {self.prompts_dir}") from None
        except OSError as exc:
            raise PromptUnavailable(f"prompt file {source!r}: {exc.strerror}") from None
        pcm = await decode_audio(data, mpg123=self._mpg123, timeout_s=self._decode_timeout_s,
                                 name=f"prompt file {source!r}")
        self.memory.put(key, CachedAudio(pcm, stamp=stamp))
        return pcm

    # --- URLs ---

    async def _load_url(self, url: str) -> Samples:
        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            raise BadPromptSource(f"prompt URL {redact_url(url)} is not a valid URL") from None
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BadPromptSource(f"prompt source {redact_url(url)}: only http(s) URLs and "
                                  "file names under [media] prompts_dir are played")
        digest = _digest(url)
        entry = self.cache.recall(digest)
        if entry is not None and entry.meta is not None and self._fresh(entry.meta):
            return entry.pcm
        return await self._loads.run(f"url/{digest}", functools.partial(
            self._refresh, url, digest))

    def _fresh(self, meta: PromptMeta) -> bool:
        return 0 <= self._clock() - meta.checked_at < self.revalidate_s

    async def _refresh(self, url: str, digest: str) -> Samples:
        cached = self.cache.recall(digest)
        if cached is None or cached.meta is None:
            cached = await self._from_store(url, digest)
            if cached is not None and cached.meta is not None and self._fresh(cached.meta):
                self.cache.remember(digest, cached)
                return cached.pcm
        meta = cached.meta if cached is not None else None
        try:
            fetched = await self._fetch(url, meta)
        except PromptNotFound:
            self.cache.forget(digest)
            raise
        except PromptUnavailable as exc:
            if cached is None or meta is None:
                raise
            # RFC 5861 §4: a stale prompt beats a failed call; ask again after revalidate_s.
            log.warning("prompt origin failed, playing the cached copy: %s", exc)
            self.cache.remember(digest, CachedAudio(
                cached.pcm, meta=meta.model_copy(update={"checked_at": self._clock()})))
            return cached.pcm
        if fetched.body is None:  # 304: still valid (RFC 9110 §15.4.5: it may update them)
            assert cached is not None and meta is not None
            meta = meta.model_copy(update={
                "checked_at": self._clock(), "etag": fetched.etag or meta.etag,
                "last_modified": fetched.last_modified or meta.last_modified})
            self.cache.remember(digest, CachedAudio(cached.pcm, meta=meta))
            await self.cache.write_meta(digest, meta.model_dump_json().encode())
            return cached.pcm
        pcm = await decode_audio(fetched.body, mpg123=self._mpg123,
                                 timeout_s=self._decode_timeout_s,
                                 name=f"prompt {redact_url(url)}")
        meta = PromptMeta(url=url, etag=fetched.etag, last_modified=fetched.last_modified,
                          checked_at=self._clock(), samples=len(pcm))
        self.cache.remember(digest, CachedAudio(pcm, meta=meta))
        await self.cache.write(digest, pcm, meta.model_dump_json().encode())
        return pcm

    async def _from_store(self, url: str, digest: str) -> CachedAudio | None:
        found = await self.cache.read(digest, with_meta=True)
        if found is None:
            return None
        pcm, raw_meta = found
        if raw_meta is None:
            return None
        try:
            meta = PromptMeta.model_validate_json(raw_meta)
        except ValidationError:
            return None
        return CachedAudio(pcm, meta=meta) if meta.url == url else None

    async def _fetch(self, url: str, meta: PromptMeta | None) -> _Fetched:
        """A 200's body, or a 304 (`body` None) to the conditional request `meta` allows."""
        headers = {"Accept": _ACCEPT}
        if meta is not None and meta.etag:
            headers["If-None-Match"] = meta.etag
        if meta is not None and meta.last_modified:
            headers["If-Modified-Since"] = meta.last_modified
        shown = redact_url(url)
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._client.stream("GET", url, headers=headers,
                                               timeout=self.timeout_s,
                                               follow_redirects=True) as response:
                    status = response.status_code
                    if status == 304 and meta is not None:
                        return _Fetched(None, response.headers.get("etag"),
                                        response.headers.get("last-modified"))
                    if status in (404, 410):
                        raise PromptNotFound(f"prompt {shown}: the origin answered {status}")
                    if status != 200:
                        raise PromptUnavailable(f"prompt {shown}: the origin answered {status}")
                    body = await self._read_body(response, shown)
        except (TimeoutError, httpx.TimeoutException):
            raise PromptUnavailable(f"prompt {shown}: no complete answer within "
                                    f"{self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise PromptUnavailable(f"prompt {shown}: {type(exc).__name__}: {exc}") from None
        log.info("prompt fetched", extra={"url": shown, "bytes": len(body),
                                          "seconds": round(time.monotonic() - started, 3)})
        return _Fetched(body, response.headers.get("etag"),
                        response.headers.get("last-modified"))

    async def _read_body(self, response: httpx.Response, shown: str) -> bytes:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise PromptUnavailable(f"prompt {shown} is {declared} bytes, more than "
                                    f"{self.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise PromptUnavailable(f"prompt {shown} is larger than {self.max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
