"""Open the stores a `StoreSettings` names: SQLite + a folder, or DynamoDB + S3.

Backends are imported only when chosen, so a Lambda using DynamoDB never loads sqlite code and
the embedded edge never loads aioboto3.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from control.store.ports import BlobSettings, BlobStore, Stores, StoreSettings

# Opened stores, or an async function that gives them (a Lambda opens its clients lazily, once
# per container, on the first request that needs them).
StoresProvider = Callable[[], Awaitable[Stores]]


def as_provider(stores: Stores | StoresProvider) -> StoresProvider:
    """`stores` as a provider: already-opened stores are wrapped, a provider kept."""
    if callable(stores):
        return stores
    opened = stores

    async def get() -> Stores:
        return opened

    return get


async def open_blobs(settings: BlobSettings) -> BlobStore:
    if settings.kind == "local":
        from control.store.local_blobs import LocalBlobStore

        return LocalBlobStore(settings.root)
    if settings.kind == "s3":
        if not settings.bucket:
            raise ValueError("an s3 blob store needs a bucket")
        from control.store.s3 import S3BlobStore

        return await S3BlobStore.open(
            bucket=settings.bucket,
            prefix=settings.root,
            region=settings.region,
            endpoint_url=settings.endpoint_url,
        )
    raise ValueError(f"unknown blob store kind {settings.kind!r}")


async def open_stores(settings: StoreSettings) -> Stores:
    """Open every store of the configured backend; close them with `await stores.close()`."""
    blobs = await open_blobs(settings.blobs)
    if settings.backend == "sqlite":
        from control.store.sqlite import SqliteStores

        return await SqliteStores.open(settings.sqlite_path, blobs=blobs)
    if settings.backend == "dynamodb":
        from control.store.dynamodb import DynamoStores

        return await DynamoStores.open(settings, blobs=blobs)
    raise ValueError(f"unknown store backend {settings.backend!r}")
