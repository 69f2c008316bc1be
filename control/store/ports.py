"""The state layer's ports: what the edge and the control plane may ask of a store.

Every method is async and raises only the errors of `control.store.errors` (`NotFound`,
`Conflict`, `StoreUnavailable`). Versioned records use optimistic locking: `create` fails with
`Conflict` when the key exists, `update(record, expected_version)` when the stored version is not
`expected_version`; both return the record as stored (with its new version).

Updating (with a version) or deleting a missing call, user, directory entry or API key raises
`NotFound` (the API answers 404); removing registrations, an edge or a blob that is already
gone is not an error (they expire or are cleaned up concurrently, as on S3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from control.store.models import (
    ApiKey,
    Binding,
    CallRecord,
    CdrEntry,
    DirectoryEntry,
    DirectoryKind,
    EdgeInfo,
    Page,
    User,
)

OCTETS = "application/octet-stream"


class CallStore(Protocol):
    async def create(self, record: CallRecord) -> CallRecord: ...
    async def get(self, call_id: str) -> CallRecord: ...
    async def update(self, record: CallRecord, expected_version: int) -> CallRecord: ...
    async def delete(self, call_id: str) -> None: ...
    async def list_active(
        self, *, edge_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[CallRecord]: ...


class RegistrationStore(Protocol):
    async def bindings(self, aor: str, now: float) -> list[Binding]:
        """The unexpired bindings of `aor`, highest q first."""
        ...

    async def put(self, binding: Binding) -> None:
        """Add or refresh the binding of (aor, contact)."""
        ...

    async def remove(self, aor: str, contact: str) -> None: ...
    async def remove_all(self, aor: str) -> None: ...

    async def expired(self, edge_id: str, now: float, limit: int = 500) -> list[Binding]:
        """Bindings held by `edge_id` that expired before `now` (for the offline sweep; the
        caller removes them)."""
        ...

    async def count(self, now: float) -> int:
        """How many unexpired bindings exist (status and metrics)."""
        ...


class DirectoryStore(Protocol):
    async def get_user(self, username: str, realm: str) -> User: ...
    async def put_user(self, user: User, expected_version: int | None = None) -> User:
        """Create (`expected_version` None: Conflict if it exists) or update a user."""
        ...

    async def delete_user(self, username: str, realm: str) -> None: ...
    async def list_users(self, *, limit: int = 100, cursor: str | None = None) -> Page[User]: ...

    async def get_entry(self, kind: DirectoryKind, name: str) -> DirectoryEntry: ...
    async def put_entry(
        self, entry: DirectoryEntry, expected_version: int | None = None
    ) -> DirectoryEntry: ...
    async def delete_entry(self, kind: DirectoryKind, name: str) -> None: ...
    async def list_entries(
        self, kind: DirectoryKind, *, limit: int = 100, cursor: str | None = None
    ) -> Page[DirectoryEntry]: ...

    async def get_api_key(self, key_id: str) -> ApiKey: ...
    async def put_api_key(self, key: ApiKey) -> None: ...
    async def delete_api_key(self, key_id: str) -> None: ...
    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revision(self) -> int:
        """A counter that grows on every directory change: caches compare it to reload."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrQuery:
    start: float
    end: float
    caller: str | None = None
    callee: str | None = None
    status: str | None = None
    direction: str | None = None
    limit: int = 100
    cursor: str | None = None


class CdrStore(Protocol):
    async def put(self, entry: CdrEntry) -> None: ...
    async def get(self, call_id: str) -> CdrEntry: ...
    async def query(self, query: CdrQuery) -> Page[CdrEntry]:
        """Entries with start_time in [start, end), newest first, filtered."""
        ...


class EdgeRegistry(Protocol):
    async def heartbeat(self, edge: EdgeInfo) -> None: ...
    async def get(self, edge_id: str) -> EdgeInfo: ...
    async def alive(self, now: float) -> list[EdgeInfo]: ...
    async def remove(self, edge_id: str) -> None: ...


class BlobStore(Protocol):
    """Blobs by key (`cdr/YYYY/MM/DD/{call_id}.json`, `recordings/...`). Keys are relative
    paths of `/`-separated safe segments; a key with `..` or a leading `/` is a ValueError."""

    async def put(self, key: str, data: bytes, content_type: str = OCTETS) -> None: ...
    async def put_file(self, key: str, path: str, content_type: str = OCTETS) -> None: ...
    async def get(self, key: str) -> bytes: ...
    def stream(self, key: str, chunk_size: int = 65536) -> AsyncIterator[bytes]: ...
    async def exists(self, key: str) -> bool: ...
    async def delete(self, key: str) -> None: ...
    async def presign(self, key: str, expires_s: int = 3600) -> str | None:
        """A URL to download `key` directly (S3), or None when the store has none (local:
        the API streams the blob instead)."""
        ...

    async def close(self) -> None:
        """Release clients (an S3 client); `Stores.close()` calls it."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobSettings:
    """Where blobs go: `local` (a folder) or `s3` (a bucket and key prefix)."""

    kind: str = "local"  # "local" | "s3"
    root: str = "./data"  # local: the folder; s3: the key prefix ("" for none)
    bucket: str | None = None
    region: str | None = None
    endpoint_url: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreSettings:
    """What `open_stores` needs; the edge builds it from `[store]`, a Lambda from its env."""

    backend: str = "sqlite"  # "sqlite" | "dynamodb"
    sqlite_path: str = "./data/sdpbx.sqlite3"
    table_prefix: str = "sdpbx"
    region: str | None = None
    endpoint_url: str | None = None  # None: the standard AWS_ENDPOINT_URL* / AWS resolution
    blobs: BlobSettings = BlobSettings()


class Stores(Protocol):
    """Every store of one backend, opened together and closed together."""

    calls: CallStore
    registrations: RegistrationStore
    directory: DirectoryStore
    cdrs: CdrStore
    edges: EdgeRegistry
    blobs: BlobStore

    async def close(self) -> None: ...
