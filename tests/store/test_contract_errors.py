"""Contract of failure, run on every backend: a backend that cannot serve raises
`StoreUnavailable`, never the driver's own exception (sqlite3.Error, OSError, botocore's
ClientError...), so the edge can keep its in-memory state and re-sync later."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from control.store.errors import StoreUnavailable
from control.store.factory import open_stores
from control.store.models import CallRecord, EdgeInfo
from control.store.ports import StoreSettings
from tests.store.conftest import Backend

pytestmark = pytest.mark.anyio

RECORD = CallRecord(call_id="c", edge_id="e", state="trying", created_at=1.0, updated_at=1.0)


def broken_settings(backend: Backend, tmp_path: Path) -> StoreSettings:
    """The same backend with its storage missing: a database path under a regular file
    (SQLite), tables never deployed (DynamoDB: another prefix), no bucket (S3)."""
    if backend.settings.backend == "sqlite":
        blocker = tmp_path / "a-file"
        blocker.write_bytes(b"")
        return replace(backend.settings, sqlite_path=str(blocker / "sdpbx.sqlite3"),
                       blobs=replace(backend.settings.blobs, root=str(blocker / "blobs")))
    return replace(backend.settings, table_prefix="never-deployed",
                   blobs=replace(backend.settings.blobs, bucket="never-created"))


async def test_missing_storage_is_store_unavailable(backend: Backend, tmp_path: Path) -> None:
    settings = broken_settings(backend, tmp_path)
    with anyio.fail_after(20), pytest.raises(StoreUnavailable):
        stores = await open_stores(settings)  # may fail here already, or on first use
        try:
            await stores.calls.create(RECORD)
        finally:
            await stores.close()


async def test_missing_storage_fails_every_port_the_same_way(
    backend: Backend, tmp_path: Path
) -> None:
    """Each store raises StoreUnavailable alone (reads as well as writes)."""
    settings = broken_settings(backend, tmp_path)
    try:
        broken = await open_stores(settings)
    except StoreUnavailable:
        pytest.skip("this backend checks its storage at open (covered above)")
    edge = EdgeInfo(edge_id="e", sip_addresses=(), http_address="")
    try:
        with anyio.fail_after(20):
            for action in (
                lambda: broken.calls.get("c"),
                lambda: broken.registrations.bindings("sip:a@b", 0.0),
                lambda: broken.directory.revision(),
                lambda: broken.cdrs.get("c"),
                lambda: broken.edges.heartbeat(edge),
                lambda: broken.blobs.put("cdr/x.json", b"{}"),
                lambda: broken.blobs.get("cdr/x.json"),
            ):
                with pytest.raises(StoreUnavailable):
                    await action()
    finally:
        await broken.close()
