"""The blob store on S3 (CDR JSON and recordings) through aioboto3: one client per store.

A key maps to `<prefix>/<key>` in the bucket. Large files go up as multipart uploads (above
`multipart_threshold`, a few parts at a time, each read off the event loop and each with the
client's retries, CRC32-checked by S3); downloads may be streamed in chunks; `presign` hands
out a SigV4 URL so a client downloads a recording straight from S3.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from control.store.aws import SDK_ERRORS, AwsClients, ClientOptions, call, translate
from control.store.errors import NotFound, StoreError
from control.store.local_blobs import validate_key
from control.store.ports import OCTETS, BlobStore

MULTIPART_THRESHOLD = 8 * 1024 * 1024
MULTIPART_CHUNK = 8 * 1024 * 1024
MIN_PART = 5 * 1024 * 1024  # S3's smallest part (but the last)


class S3BlobStore:
    """`BlobStore` on `bucket`, keys under `prefix` (`""` for the bucket's root)."""

    def __init__(
        self,
        clients: AwsClients,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunk: int = MULTIPART_CHUNK,
        concurrency: int = 4,
    ) -> None:
        if multipart_chunk < MIN_PART or multipart_threshold < MIN_PART:
            raise ValueError("S3 multipart parts are 5 MiB at least")
        self.bucket = bucket
        self.prefix = "/".join(part for part in prefix.split("/") if part)
        self._clients = clients
        self._client = client
        self._deadline_s = clients.options.deadline_s
        self._threshold = multipart_threshold
        self._chunk = multipart_chunk
        self._concurrency = max(1, concurrency)

    @classmethod
    async def open(
        cls,
        *,
        bucket: str,
        prefix: str = "",
        region: str | None = None,
        endpoint_url: str | None = None,
        options: ClientOptions | None = None,
        session: Any = None,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunk: int = MULTIPART_CHUNK,
    ) -> S3BlobStore:
        """Build the S3 client; no request is made until the first operation."""
        base = options or ClientOptions()
        options = replace(
            base, region=region or base.region, endpoint_url=endpoint_url or base.endpoint_url
        )
        s3_config: dict[str, Any] = {}
        if options.endpoint_url:
            # A local endpoint (moto, MinIO) has no per-bucket host names.
            s3_config["addressing_style"] = "path"
        clients = AwsClients(options, session)
        try:
            # SigV4 everywhere: presigned URLs must work in every region.
            client = await clients.client("s3", signature_version="s3v4", s3=s3_config)
            return cls(
                clients, client, bucket, prefix,
                multipart_threshold=multipart_threshold, multipart_chunk=multipart_chunk,
            )
        except BaseException:
            await clients.close()
            raise

    async def close(self) -> None:
        await self._clients.close()

    def object_key(self, key: str) -> str:
        """The S3 object key of blob `key` (ValueError for an unsafe key)."""
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def _call(self, operation: str, **params: Any) -> dict[str, Any]:
        return await call(self._client, operation, self.bucket, self._deadline_s,
                          Bucket=self.bucket, **params)

    async def put(self, key: str, data: bytes, content_type: str = OCTETS) -> None:
        await self._call("put_object", Key=self.object_key(key), Body=bytes(data),
                         ContentType=content_type)

    async def put_file(self, key: str, path: str, content_type: str = OCTETS) -> None:
        """Upload the file at `path`: one PUT below the multipart threshold, else a multipart
        upload of `multipart_chunk` parts, a few at a time, read off the event loop."""
        object_key = self.object_key(key)
        try:
            size = await asyncio.to_thread(os.path.getsize, path)
            if size < self._threshold:
                data = await asyncio.to_thread(Path(path).read_bytes)
                await self._call("put_object", Key=object_key, Body=data,
                                 ContentType=content_type)
                return
            fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no file {path!r} to store as {key!r}") from None
        try:
            await self._multipart(object_key, fd, size, content_type)
        finally:
            os.close(fd)

    async def _multipart(self, object_key: str, fd: int, size: int, content_type: str) -> None:
        # CRC32 per part, declared up front: S3 then checks every part and the whole.
        created = await self._call("create_multipart_upload", Key=object_key,
                                   ContentType=content_type, ChecksumAlgorithm="CRC32")
        upload_id = created["UploadId"]
        gate = asyncio.Semaphore(self._concurrency)

        async def part(number: int) -> dict[str, Any]:
            async with gate:
                offset = (number - 1) * self._chunk
                body = await asyncio.to_thread(os.pread, fd, self._chunk, offset)
                answer = await self._call(
                    "upload_part", Key=object_key, UploadId=upload_id, PartNumber=number,
                    Body=body, ChecksumAlgorithm="CRC32",
                )
                done = {"PartNumber": number, "ETag": answer["ETag"]}
                if "ChecksumCRC32" in answer:
                    done["ChecksumCRC32"] = answer["ChecksumCRC32"]
                return done

        count = max(1, -(-size // self._chunk))
        tasks = [asyncio.ensure_future(part(number)) for number in range(1, count + 1)]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            parts = [task.result() for task in tasks]  # raises the first failure
            await self._call("complete_multipart_upload", Key=object_key, UploadId=upload_id,
                             MultipartUpload={"Parts": parts})
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # Best effort: the bucket's lifecycle rule aborts what this leaves behind.
            with contextlib.suppress(StoreError):
                await self._call("abort_multipart_upload", Key=object_key, UploadId=upload_id)
            raise

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", Key=self.object_key(key))
        body = response["Body"]
        try:
            # `async with` releases the connection; the body's read checks Content-Length.
            async with asyncio.timeout(self._deadline_s), body:
                data: bytes = await body.read()
        except SDK_ERRORS as exc:
            raise translate(exc, self.bucket) from exc
        return data

    def stream(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]:
        # Not an async generator itself, so a bad key fails here, at the call.
        object_key = self.object_key(key)
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, not {chunk_size}")
        return self._chunks(object_key, chunk_size)

    async def _chunks(self, object_key: str, chunk_size: int) -> AsyncIterator[bytes]:
        response = await self._call("get_object", Key=object_key)
        body = response["Body"]
        try:
            async with body:
                # No overall deadline: a long recording streams for as long as the reader
                # wants; each read has the client's read timeout.
                async for chunk in body.iter_chunks(chunk_size):
                    yield chunk
        except SDK_ERRORS as exc:
            raise translate(exc, self.bucket) from exc

    async def exists(self, key: str) -> bool:
        try:
            await self._call("head_object", Key=self.object_key(key))
        except NotFound:
            return False
        return True

    async def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing blob is not an error (S3 DELETE is idempotent)."""
        await self._call("delete_object", Key=self.object_key(key))

    async def presign(self, key: str, expires_s: int = 3600) -> str | None:
        object_key = self.object_key(key)
        try:
            url: str = await self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": object_key},
                ExpiresIn=int(expires_s),
            )
        except SDK_ERRORS as exc:
            raise translate(exc, self.bucket) from exc
        return url


_: type[BlobStore] = S3BlobStore
