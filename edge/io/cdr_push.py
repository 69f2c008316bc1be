"""`[callrecord] type = "http"`: push each CDR (and its recording) as multipart/form-data, retried
from a disk queue until the receiver takes it.

Wire shape (COMPAT.md, as RustPBX's `HttpCallRecordSaver`): one POST per call to `url`, with
the text field `calllog.json` = the CDR JSON; when `with_media` and the call was recorded, also
a file part `recording` (`audio/wav`, filename `{call_id}.wav`) and the text fields `call_id`
and `track_id`. Unlike RustPBX we retry, and we sign: the body bytes are signed as every
webhook is (`control.contracts.signing`, header `X-Sdpbx-Signature`). The body is built here,
byte for byte, and streamed with a `Content-Length`: a recording is never loaded whole into
memory (the MAC is computed over the file in a first pass, then the file is sent).

Durability: `CdrPusher` is a `BlobSpool` (its own folder, `queue/`) whose target is the
`HttpCdrSink`. Each entry is a small JSON envelope (`PushEnvelope`: the CDR JSON, and the name
of the recording kept in `media/`). The recording is hard-linked into `media/` (copied when a
link is impossible) *before* the main spool takes the file over, so the push still has it
after the blob upload deleted the spool's copy, and after a restart. The sink deletes a
recording once the receiver accepted the push; a recording no envelope refers to (a crash
between staging and queueing) is removed by the next `start()`.

Delivery: any non-2xx reply or transport error raises, so the spool retries with exponential
backoff, forever: a CDR is never dropped. A 4xx other than 408/429 will probably not heal by
itself (a bad URL, a credential): it is logged at WARNING, throttled, on every failure. An
envelope that cannot be read is moved to `rejected/` and logged at ERROR instead of blocking
the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import logging
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from control.contracts.cdr_push import CALLLOG_FIELD, closing, recording_heads, text_part
from control.contracts.signing import SCHEME, SIGNATURE_HEADER, sign
from control.store.local_blobs import fsync_directory
from control.store.ports import OCTETS
from control.store.spool import DATA_SUFFIX, TEMP_SUFFIX, Backoff, BlobSpool
from edge.io.webhooks import redact_url
from edge.pbx.security import LogThrottle

log = logging.getLogger("sdpbx.cdr_push")

ENVELOPE_CONTENT_TYPE = "application/vnd.sdpbx.cdr-push+json"
_CHUNK = 256 * 1024
_RETRYABLE_4XX = frozenset({408, 429})
_MEDIA_NAME = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,120}")


class CdrPushError(Exception):
    """The receiver did not take the push (`status` None: no HTTP reply); the spool retries."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PushEnvelope(BaseModel):
    """One queued push, as kept on disk between attempts (and across restarts)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    call_id: str
    cdr_json: str  # the CDR exactly as written to the blob store
    recording: str | None = None  # a file name in the pusher's media folder
    track_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrSigner:
    """Signs push bodies as `control.contracts.signing.sign` does, also incrementally (the
    body may hold a recording too large to keep in memory)."""

    secret: str | bytes
    key_id: str
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        sign(b"", secret=self.secret, key_id=self.key_id, now=0)  # a bad secret/key id: now

    def begin(self) -> tuple[int, hmac.HMAC]:
        """A timestamp and the MAC to feed the body into (`v1` of the signing scheme)."""
        timestamp = int(self.clock())
        key = self.secret.encode("utf-8") if isinstance(self.secret, str) else self.secret
        return timestamp, hmac.new(key, f"{timestamp}.".encode("ascii"), hashlib.sha256)

    def header(self, timestamp: int, mac: hmac.HMAC) -> dict[str, str]:
        return {SIGNATURE_HEADER: f"t={timestamp},kid={self.key_id},{SCHEME}={mac.hexdigest()}"}


@dataclass(frozen=True, slots=True)
class _FilePart:
    path: Path
    size: int


_Segment = bytes | _FilePart


def multipart_segments(
    boundary: str, cdr_json: bytes, *, call_id: str, recording: Path | None = None,
    recording_size: int = 0, track_id: str | None = None,
) -> list[_Segment]:
    """The body, as byte strings and at most one file to splice in (RFC 7578)."""
    segments: list[_Segment] = [text_part(boundary, CALLLOG_FIELD, cdr_json)]
    if recording is not None:
        segments.append(recording_heads(boundary, call_id, track_id or ""))
        segments.append(_FilePart(recording, recording_size))
        segments.append(b"\r\n")
    segments.append(closing(boundary))
    return segments


def _feed_mac(mac: hmac.HMAC, segments: list[_Segment]) -> None:
    """Blocking (a thread): the MAC over the whole body, reading the file in chunks."""
    for segment in segments:
        if isinstance(segment, bytes):
            mac.update(segment)
            continue
        with segment.path.open("rb") as source:
            left = segment.size
            while left > 0:
                chunk = source.read(min(_CHUNK, left))
                if not chunk:
                    raise CdrPushError(f"recording {segment.path.name} shrank while signing")
                mac.update(chunk)
                left -= len(chunk)


async def _stream(segments: list[_Segment]) -> AsyncIterator[bytes]:
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
            continue
        source = await asyncio.to_thread(segment.path.open, "rb")
        try:
            left = segment.size
            while left > 0:
                chunk = await asyncio.to_thread(source.read, min(_CHUNK, left))
                if not chunk:
                    raise CdrPushError(f"recording {segment.path.name} shrank while sending")
                left -= len(chunk)
                yield chunk
        finally:
            source.close()


class HttpCdrSink:
    """The spool's target: turns a queued envelope into one signed multipart POST.

    Implements the `BlobStore` methods `BlobSpool` calls (`put_file`, `put`); the others raise
    NotImplementedError. `media_dir` is where envelopes' recordings are; `rejected_dir` where
    an unreadable envelope is set aside (None: it raises, and stays queued).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        with_media: bool = True,
        signer: CdrSigner | None = None,
        media_dir: str | os.PathLike[str] | None = None,
        rejected_dir: str | os.PathLike[str] | None = None,
        timeout_s: float = 60.0,
        boundary: Callable[[], str] = lambda: f"sdpbx-{uuid.uuid4().hex}",
    ) -> None:
        self._client = client
        self.url = url
        self._safe_url = redact_url(url)
        self._headers = dict(headers or {})
        self.with_media = with_media
        self._signer = signer
        self.media_dir = Path(media_dir) if media_dir is not None else None
        self.rejected_dir = Path(rejected_dir) if rejected_dir is not None else None
        self._timeout_s = timeout_s
        self._boundary = boundary
        self._throttle = LogThrottle(60.0, burst=3)
        self.delivered = 0  # counters for metrics
        self.failed = 0

    # --- what the spool calls -----------------------------------------------------------------

    async def put_file(self, key: str, path: str, content_type: str = OCTETS) -> None:
        data = await asyncio.to_thread(Path(path).read_bytes)
        await self._deliver(key, data, content_type, Path(path))

    async def put(self, key: str, data: bytes, content_type: str = OCTETS) -> None:
        await self._deliver(key, bytes(data), content_type, None)

    async def _deliver(self, key: str, data: bytes, content_type: str,
                       source: Path | None) -> None:
        try:
            if content_type != ENVELOPE_CONTENT_TYPE:
                raise ValueError(f"content type {content_type!r} is not a CDR push")
            envelope = PushEnvelope.model_validate_json(data)
            if envelope.recording is not None and not _MEDIA_NAME.fullmatch(envelope.recording):
                raise ValueError(f"recording name {envelope.recording!r} is not a media file")
        except (ValidationError, ValueError) as exc:
            await self._reject(key, data, source, exc)
            return
        recording = self._media_path(envelope)
        await self.send(envelope.cdr_json.encode("utf-8"), call_id=envelope.call_id,
                        recording=recording, track_id=envelope.track_id)
        if envelope.recording is not None and self.media_dir is not None:
            # Accepted: the staged copy has done its job (see the module docstring).
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread((self.media_dir / envelope.recording).unlink)

    def _media_path(self, envelope: PushEnvelope) -> Path | None:
        if not self.with_media or envelope.recording is None:
            return None
        if self.media_dir is None:
            log.error("CDR push of call %s: no media folder for its recording",
                      envelope.call_id)
            return None
        path = self.media_dir / envelope.recording
        if not path.is_file():
            # Pushed once already (then the queue entry outlived a crash), or removed by hand.
            log.warning("CDR push of call %s goes without its recording: %s is gone",
                        envelope.call_id, path.name, extra={"call_id": envelope.call_id})
            return None
        return path

    async def _reject(self, key: str, data: bytes, source: Path | None,
                      error: Exception) -> None:
        if self.rejected_dir is None:
            raise CdrPushError(f"unreadable CDR push envelope {key!r}: {error}")
        folder = self.rejected_dir
        target = folder / f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"

        def keep() -> None:
            folder.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            fsync_directory(target.parent)

        await asyncio.to_thread(keep)
        log.error("unreadable CDR push envelope %s set aside as %s: %s", key, target, error,
                  extra={"key": key, "file": str(target), "source": str(source)})

    # --- HTTP ---------------------------------------------------------------------------------

    async def send(self, cdr_json: bytes, *, call_id: str, recording: Path | None = None,
                   track_id: str | None = None) -> int:
        """POST one CDR (and recording); returns the 2xx status, raises `CdrPushError`."""
        size = 0
        if recording is not None:
            size = (await asyncio.to_thread(os.stat, recording)).st_size
        boundary = self._boundary()
        segments = multipart_segments(boundary, cdr_json, call_id=call_id, recording=recording,
                                      recording_size=size, track_id=track_id)
        length = sum(len(s) if isinstance(s, bytes) else s.size for s in segments)
        headers = httpx.Headers(self._headers)
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        headers["Content-Length"] = str(length)
        if self._signer is not None:
            timestamp, mac = self._signer.begin()
            await asyncio.to_thread(_feed_mac, mac, segments)
            headers.update(self._signer.header(timestamp, mac))  # last: never overridden
        try:
            async with asyncio.timeout(self._timeout_s):
                async with self._client.stream(
                    "POST", self.url, content=_stream(segments), headers=headers,
                    timeout=self._timeout_s,
                ) as response:
                    async for _ in response.aiter_raw():  # drain: the connection is reused
                        pass
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            self.failed += 1
            raise CdrPushError(f"CDR push to {self._safe_url} timed out after "
                               f"{self._timeout_s:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            self.failed += 1
            raise CdrPushError(f"CDR push to {self._safe_url} failed: "
                               f"{type(exc).__name__}: {str(exc)[:200]}") from None
        if 200 <= status < 300:
            self.delivered += 1
            return status
        self.failed += 1
        if 400 <= status < 500 and status not in _RETRYABLE_4XX:
            # Probably ours to fix (URL, credentials, body): say so, but keep the CDR.
            suppressed = self._throttle.allow(f"status:{status}", time.monotonic())
            if suppressed is not None:
                log.warning(
                    "CDR push of call %s refused by %s with status %d; kept and retried%s",
                    call_id, self._safe_url, status,
                    f" ({suppressed} similar not logged)" if suppressed else "",
                    extra={"call_id": call_id, "status": status, "url": self._safe_url},
                )
        raise CdrPushError(f"CDR push to {self._safe_url}: status {status}", status)

    # --- the rest of BlobStore, which the spool never calls ------------------------------------

    async def get(self, key: str) -> bytes:
        raise NotImplementedError("an HTTP CDR push cannot be read back")

    def stream(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        raise NotImplementedError("an HTTP CDR push cannot be read back")

    async def exists(self, key: str) -> bool:
        raise NotImplementedError("an HTTP CDR push cannot be read back")

    async def delete(self, key: str) -> None:
        raise NotImplementedError("an HTTP CDR push cannot be deleted")

    async def presign(self, key: str, expires_s: int = 3600) -> str | None:
        return None

    async def close(self) -> None:
        """Nothing: the HTTP client belongs to the edge."""


class CdrPusher:
    """The durable push queue in `root` (`queue/`, `media/`, `rejected/`): `await start()`
    it, `await stop()` it; what is queued survives restarts. `CdrWriter` feeds it
    (`edge.pbx.cdr.CdrPushQueue`)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        client: httpx.AsyncClient,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        with_media: bool = True,
        signer: CdrSigner | None = None,
        timeout_s: float = 60.0,
        backoff: Backoff = Backoff(),  # noqa: B008 (frozen, so a shared default is safe)
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random_draw: Callable[[], float] = random.random,
    ) -> None:
        self.root = Path(root)
        self.media_dir = self.root / "media"
        self.sink = HttpCdrSink(
            client, url, headers=headers, with_media=with_media, signer=signer,
            media_dir=self.media_dir, rejected_dir=self.root / "rejected", timeout_s=timeout_s,
        )
        self.spool = BlobSpool(self.root / "queue", self.sink, clock=clock, sleep=sleep,
                               random_draw=random_draw, backoff=backoff)
        self._staging: set[str] = set()  # staged, envelope not written yet: not orphans

    @property
    def with_media(self) -> bool:
        return self.sink.with_media

    def pending(self) -> int:
        return self.spool.pending()

    def oldest_age(self) -> float:
        return self.spool.oldest_age()

    async def start(self) -> None:
        """Remove orphaned recordings, then deliver what an earlier process left queued."""
        removed = await asyncio.to_thread(self._remove_orphans, frozenset(self._staging))
        if removed:
            log.warning("CDR push removed %d recordings no queued push refers to", removed)
        await self.spool.start()

    async def stop(self) -> None:
        await self.spool.stop()

    async def wait_empty(self) -> None:
        await self.spool.wait_empty()

    async def stage_recording(self, path: str) -> str | None:
        """Keep the recording at `path` in `media/` (a hard link, or a durable copy) for the
        push; None (logged) when it cannot, so the CDR is pushed without it."""
        if not self.with_media:
            return None
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.wav"
        self._staging.add(name)
        try:
            await asyncio.to_thread(_link_or_copy, Path(path), self.media_dir / name)
        except OSError as exc:
            self._staging.discard(name)
            log.error("recording %s not kept for the CDR push: %s", path, exc)
            return None
        return name

    async def discard_staged(self, name: str) -> None:
        self._staging.discard(name)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread((self.media_dir / name).unlink)

    async def enqueue(self, cdr_json: bytes, *, key: str, call_id: str,
                      recording: str | None = None, track_id: str | None = None) -> None:
        """Queue the push of `cdr_json` (and the staged `recording`) under the spool key `key`;
        on disk (fsynced) before it returns. Raises what `BlobSpool.write` raises."""
        envelope = PushEnvelope(call_id=call_id, cdr_json=cdr_json.decode("utf-8"),
                                recording=recording, track_id=track_id)
        try:
            await self.spool.write(key, envelope.model_dump_json().encode("utf-8"),
                                   ENVELOPE_CONTENT_TYPE)
        finally:
            if recording is not None:
                self._staging.discard(recording)

    def _remove_orphans(self, staging: frozenset[str]) -> int:
        """Blocking: delete media files that no queued envelope names."""
        if not self.media_dir.is_dir():
            return 0
        referenced: set[str] = set(staging)
        queue_dir = self.spool.spool_dir
        if queue_dir.is_dir():
            for path in queue_dir.iterdir():
                if not path.name.endswith(DATA_SUFFIX) or path.name.endswith(TEMP_SUFFIX):
                    continue
                try:
                    envelope = PushEnvelope.model_validate_json(path.read_bytes())
                except (OSError, ValidationError):
                    continue  # the spool sets it aside when it gets to it
                if envelope.recording is not None:
                    referenced.add(envelope.recording)
        removed = 0
        for path in self.media_dir.iterdir():
            if path.name.removesuffix(TEMP_SUFFIX) not in referenced:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
        if removed:
            fsync_directory(self.media_dir)
        return removed


def _link_or_copy(source: Path, target: Path) -> None:
    """Blocking: make `target` a durable second name (or copy) of `source`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                               errno.EOPNOTSUPP):
            raise
        temp = target.with_name(target.name + TEMP_SUFFIX)
        try:
            with source.open("rb") as src, temp.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                temp.unlink()
            raise
    else:
        fd = os.open(target, os.O_RDONLY)  # whoever wrote it may never have fsynced it
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_directory(target.parent)
