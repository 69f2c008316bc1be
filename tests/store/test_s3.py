"""The S3 blob store against a moto server: keys under the prefix, content types, managed
multipart uploads of big files, streaming (also abandoned half-way), presigned URLs fetched
over HTTP, and failures as domain errors."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest

from control.store.aws import ClientOptions
from control.store.errors import NotFound, StoreUnavailable
from control.store.s3 import S3BlobStore
from tests.store.aws_servers import REGION, create_bucket, moto_reset

pytestmark = pytest.mark.anyio

MIB = 1024 * 1024


@pytest.fixture
def bucket(moto_endpoint: str) -> str:
    moto_reset(moto_endpoint)
    name = f"blobs-{uuid.uuid4().hex[:12]}"
    create_bucket(moto_endpoint, name)
    return name


@pytest.fixture
def raw_s3(moto_endpoint: str) -> Any:
    return boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)


@pytest.fixture
async def blobs(moto_endpoint: str, bucket: str) -> AsyncIterator[S3BlobStore]:
    store = await S3BlobStore.open(bucket=bucket, prefix="/tenant-1//pbx/", region=REGION,
                                   endpoint_url=moto_endpoint,
                                   multipart_threshold=5 * MIB, multipart_chunk=5 * MIB)
    try:
        yield store
    finally:
        await store.close()


async def test_put_get_exists_delete_under_the_prefix(
    blobs: S3BlobStore, bucket: str, raw_s3: Any
) -> None:
    key = "cdr/2024/03/01/a84b@pc33.json"
    await blobs.put(key, b'{"ok": true}', "application/json")
    assert blobs.prefix == "tenant-1/pbx"
    listed = raw_s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"tenant-1/pbx/{key}"]
    head = raw_s3.head_object(Bucket=bucket, Key=f"tenant-1/pbx/{key}")
    assert head["ContentType"] == "application/json" and head["ContentLength"] == 12
    assert await blobs.exists(key)
    assert await blobs.get(key) == b'{"ok": true}'
    await blobs.delete(key)
    assert not await blobs.exists(key)
    await blobs.delete(key)  # idempotent, as S3 is
    with pytest.raises(NotFound):
        await blobs.get(key)
    with pytest.raises(NotFound):
        [chunk async for chunk in blobs.stream(key)]


async def test_put_file_uses_multipart_above_the_threshold(
    blobs: S3BlobStore, bucket: str, raw_s3: Any, tmp_path: Path
) -> None:
    big = tmp_path / "call.wav"
    data = os.urandom(11 * MIB + 7)
    big.write_bytes(data)
    await blobs.put_file("recordings/2024/03/01/call.wav", str(big), "audio/wav")
    head = raw_s3.head_object(Bucket=bucket, Key="tenant-1/pbx/recordings/2024/03/01/call.wav")
    assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + 1 MiB parts: a multipart upload
    assert head["ContentType"] == "audio/wav"
    assert await blobs.get("recordings/2024/03/01/call.wav") == data

    small = tmp_path / "short.wav"
    small.write_bytes(b"RIFF" + os.urandom(1000))
    await blobs.put_file("recordings/short.wav", str(small), "audio/wav")
    head = raw_s3.head_object(Bucket=bucket, Key="tenant-1/pbx/recordings/short.wav")
    assert "-" not in head["ETag"]  # one PUT below the threshold
    assert await blobs.get("recordings/short.wav") == small.read_bytes()


async def test_put_file_of_a_missing_file_uploads_nothing(
    blobs: S3BlobStore, bucket: str, raw_s3: Any, tmp_path: Path
) -> None:
    with pytest.raises(NotFound, match=r"absent\.wav"):
        await blobs.put_file("recordings/x.wav", str(tmp_path / "absent.wav"))
    assert raw_s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


async def test_stream_yields_bounded_chunks_and_can_be_abandoned(
    moto_endpoint: str, bucket: str
) -> None:
    # Two pooled connections only: a stream left half-read must give its connection back.
    store = await S3BlobStore.open(bucket=bucket, region=REGION, endpoint_url=moto_endpoint,
                                   options=ClientOptions(max_pool_connections=2))
    try:
        data = os.urandom(300_000)
        await store.put("recordings/r.wav", data, "audio/wav")
        chunks = [chunk async for chunk in store.stream("recordings/r.wav", 50_000)]
        assert b"".join(chunks) == data and max(map(len, chunks)) <= 50_000
        for _ in range(5):
            async for chunk in store.stream("recordings/r.wav", 1000):
                assert chunk == data[:1000]
                break  # abandoned: the generator is finalised and its body released
        assert await store.get("recordings/r.wav") == data
    finally:
        await store.close()


async def test_presigned_url_downloads_over_http(blobs: S3BlobStore) -> None:
    data = b'{"call_id": "presigned"}'
    await blobs.put("cdr/p.json", data, "application/json")
    url = await blobs.presign("cdr/p.json", expires_s=300)
    assert url is not None
    parts = urlsplit(url)
    assert parts.path.endswith("/tenant-1/pbx/cdr/p.json")
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["300"]
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/json"


async def test_unsafe_keys_are_refused_before_any_request(blobs: S3BlobStore) -> None:
    for key in ("", "/abs", "a/../b", "a//b", "a/", ".."):
        with pytest.raises(ValueError):
            await blobs.put(key, b"x")
        with pytest.raises(ValueError):
            blobs.stream(key)
        with pytest.raises(ValueError):
            await blobs.presign(key)


async def test_a_missing_bucket_is_store_unavailable_naming_it(moto_endpoint: str) -> None:
    moto_reset(moto_endpoint)
    store = await S3BlobStore.open(bucket="no-such-bucket", region=REGION,
                                   endpoint_url=moto_endpoint)
    try:
        with pytest.raises(StoreUnavailable, match="no-such-bucket"):
            await store.put("cdr/x.json", b"{}")
        with pytest.raises(StoreUnavailable, match="no-such-bucket"):
            await store.get("cdr/x.json")
    finally:
        await store.close()


async def test_an_unreachable_endpoint_is_store_unavailable_quickly() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = await S3BlobStore.open(bucket="blobs", region=REGION,
                                   endpoint_url=f"http://127.0.0.1:{port}",
                                   options=ClientOptions(max_retries=1, connect_timeout_s=0.5))
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match="blobs"):
            await store.put("cdr/x.json", b"{}")
        with pytest.raises(StoreUnavailable, match="blobs"):
            await store.exists("cdr/x.json")
    finally:
        await store.close()
    assert time.monotonic() - started < 8


async def test_standard_aws_environment_is_enough(
    moto_endpoint: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No endpoint or region given: AWS_ENDPOINT_URL_S3 and AWS_REGION are honoured."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", REGION)
    store = await S3BlobStore.open(bucket=bucket)
    try:
        await store.put("top-level", b"env")
        assert await store.get("top-level") == b"env"
    finally:
        await store.close()
