"""Contract of `BlobStore`, run on the local folder (with SQLite) and on S3 (moto, with
DynamoDB): bytes in, same bytes out, by whole object, by stream and from a file; unsafe keys
refused before any I/O; presigned URLs where the store has them."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from control.store.errors import NotFound
from control.store.ports import BlobStore, Stores
from tests.store.conftest import Backend

pytestmark = pytest.mark.anyio

CDR_KEY = "cdr/2024/03/01/a84b4c76e66710@pc33.atlanta.example.com.json"
BAD_KEYS = [
    "",
    "/etc/passwd",
    "../outside",
    "cdr/../../outside",
    "cdr/2024/..",
    "..",
    "cdr//double-slash",
    "cdr/trailing/",
]


async def read_stream(blobs: BlobStore, key: str, chunk_size: int = 65536) -> list[bytes]:
    return [chunk async for chunk in blobs.stream(key, chunk_size)]


async def test_put_get_exists_delete(stores: Stores) -> None:
    blobs = stores.blobs
    assert not await blobs.exists(CDR_KEY)
    await blobs.put(CDR_KEY, b'{"call_id": "a84b"}', "application/json")
    assert await blobs.exists(CDR_KEY)
    assert await blobs.get(CDR_KEY) == b'{"call_id": "a84b"}'
    await blobs.put(CDR_KEY, b"replaced")
    assert await blobs.get(CDR_KEY) == b"replaced"
    await blobs.delete(CDR_KEY)
    assert not await blobs.exists(CDR_KEY)
    with pytest.raises(NotFound):
        await blobs.get(CDR_KEY)


async def test_keys_are_distinct_paths(stores: Stores) -> None:
    blobs = stores.blobs
    await blobs.put("recordings/2024/a.wav", b"a")
    await blobs.put("recordings/2024/a.wav.part", b"b")
    await blobs.put("top-level", b"c")
    await blobs.put("recordings/2024/empty", b"")
    assert await blobs.get("recordings/2024/a.wav") == b"a"
    assert await blobs.get("recordings/2024/a.wav.part") == b"b"
    assert await blobs.get("top-level") == b"c"
    assert await blobs.get("recordings/2024/empty") == b""
    assert not await blobs.exists("recordings/2024")  # a folder is not a blob
    assert not await blobs.exists("recordings/2024/a")


async def test_missing_key_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.blobs.get("cdr/nope.json")
    with pytest.raises(NotFound):
        await read_stream(stores.blobs, "cdr/nope.json")
    assert not await stores.blobs.exists("cdr/nope.json")


async def test_delete_of_a_missing_key_is_not_an_error(stores: Stores) -> None:
    """S3 DELETE is idempotent; the local store follows it."""
    await stores.blobs.delete("cdr/never-written.json")


async def test_stream_in_chunks_equals_get(stores: Stores) -> None:
    data = os.urandom(200_000)
    await stores.blobs.put("recordings/r.wav", data, "audio/wav")
    chunks = await read_stream(stores.blobs, "recordings/r.wav", chunk_size=65536)
    assert b"".join(chunks) == data == await stores.blobs.get("recordings/r.wav")
    assert len(chunks) >= 4
    assert all(0 < len(chunk) <= 65536 for chunk in chunks)
    small = await read_stream(stores.blobs, "recordings/r.wav", chunk_size=1000)
    assert b"".join(small) == data and max(map(len, small)) <= 1000


async def test_put_file(stores: Stores, tmp_path: Path) -> None:
    source = tmp_path / "spooled.wav"
    data = os.urandom(300_001)
    source.write_bytes(data)
    await stores.blobs.put_file("recordings/2024/03/01/spooled.wav", str(source), "audio/wav")
    assert await stores.blobs.get("recordings/2024/03/01/spooled.wav") == data
    assert source.read_bytes() == data  # the spool file is the caller's to delete


async def test_put_file_of_a_missing_file_writes_nothing(
    stores: Stores, tmp_path: Path
) -> None:
    with pytest.raises((OSError, NotFound)):
        await stores.blobs.put_file("recordings/x.wav", str(tmp_path / "absent.wav"))
    assert not await stores.blobs.exists("recordings/x.wav")


async def test_a_5_mb_blob(stores: Stores, tmp_path: Path) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)
    await stores.blobs.put("recordings/big.wav", data, "audio/wav")
    assert await stores.blobs.get("recordings/big.wav") == data
    assert b"".join(await read_stream(stores.blobs, "recordings/big.wav")) == data
    source = tmp_path / "big.wav"
    source.write_bytes(data[::-1])
    await stores.blobs.put_file("recordings/big-file.wav", str(source))
    assert await stores.blobs.get("recordings/big-file.wav") == data[::-1]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_keys_are_value_errors(stores: Stores, key: str, tmp_path: Path) -> None:
    blobs = stores.blobs
    source = tmp_path / "f"
    source.write_bytes(b"x")
    with pytest.raises(ValueError):
        await blobs.put(key, b"x")
    with pytest.raises(ValueError):
        await blobs.put_file(key, str(source))
    with pytest.raises(ValueError):
        await blobs.get(key)
    with pytest.raises(ValueError):
        await blobs.exists(key)
    with pytest.raises(ValueError):
        await blobs.delete(key)
    with pytest.raises(ValueError):
        await blobs.presign(key)
    with pytest.raises(ValueError):
        await read_stream(blobs, key)


async def test_presign(backend: Backend, stores: Stores) -> None:
    data = b'{"call_id": "presigned"}'
    await stores.blobs.put(CDR_KEY, data, "application/json")
    url = await stores.blobs.presign(CDR_KEY, expires_s=300)
    if backend.is_local:
        assert url is None  # the API streams local blobs itself
        return
    assert url is not None and url.startswith("http")
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "application/json"

