"""Fixtures of the store contract suite: every backend, opened the way the product opens it.

`stores` is parametrised over the backends and always built through
`open_stores(StoreSettings(...))`: `sqlite` (a temporary file and a local blob folder, opened
and closed for each test), `dynamodb-moto` (DynamoDB and S3 on a moto server) and
`dynamodb-local` (AWS's DynamoDB Local engine, S3 on moto; skipped when it cannot run here).
Every test starts from empty tables, created from `template.yaml`'s own definitions by
`tests.store.aws_servers`.

The DynamoDB bundles are opened once per session and emptied before each test: opening one
parses botocore's service data (~0.1-0.3 s of CPU), which per test would cost the suite a
minute. Tests that need their own bundle (two clients racing, open/close) call
`backend.open()`, which opens a fresh one on the same tables.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import boto3
import pytest
from hypothesis import strategies as st

from control.store.factory import open_stores
from control.store.models import Page
from control.store.ports import BlobSettings, Stores, StoreSettings
from tests.store.aws_servers import (  # noqa: F401 (fixtures used through getfixturevalue)
    create_bucket,
    create_tables,
    ddb_local_endpoint,
    moto_endpoint,
)

BACKENDS = ("sqlite", "dynamodb-moto", "dynamodb-local")
REGION = "us-east-1"
BLOB_PREFIX = "contract"  # S3 keys live under a prefix, as in a shared production bucket


@dataclass(frozen=True, slots=True, kw_only=True)
class Backend:
    """One backend under test: its settings, and a way to look at what it stored raw."""

    name: str
    settings: StoreSettings
    dynamodb_endpoint: str | None = None
    shared: Stores | None = None  # the session's bundle, for backends that keep one open

    @property
    def is_local(self) -> bool:
        return self.settings.blobs.kind == "local"

    async def open(self) -> Stores:
        return await open_stores(self.settings)

    async def stored_field_names(self) -> set[str]:
        """Every column (SQLite) or attribute name (DynamoDB items) the backend has written:
        proof of what is at rest, whatever the adapter's mapping."""
        return await anyio.to_thread.run_sync(self._stored_field_names)

    def _stored_field_names(self) -> set[str]:
        names: set[str] = set()
        if self.settings.backend == "sqlite":
            with closing(sqlite3.connect(self.settings.sqlite_path)) as db:
                tables = [row[0] for row in db.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    names.update(row[1] for row in db.execute(f'PRAGMA table_info("{table}")'))
            return names
        client = boto3.client("dynamodb", region_name=REGION, endpoint_url=self.dynamodb_endpoint)
        for table in client.list_tables()["TableNames"]:
            if table.startswith(self.settings.table_prefix):
                for item in client.scan(TableName=table)["Items"]:
                    names.update(item)
        return names


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    """asyncio, one event loop for the session (the DynamoDB bundles live that long)."""
    return "asyncio"


@pytest.fixture
def now() -> float:
    """The real time, whole seconds. Tests place records relative to it (never in the far past)
    because DynamoDB Local really deletes items whose TTL attribute is in the past."""
    return float(int(time.time()))


@dataclass(slots=True, kw_only=True)
class AwsTables:
    """The tables (from `template.yaml`) and bucket one DynamoDB backend uses all session.

    Creating five tables costs 0.1 s on moto and up to a second on DynamoDB Local, so they are
    made once and emptied before each test instead (a few requests when a test wrote little).
    """

    endpoint: str
    s3_endpoint: str
    prefix: str = field(default_factory=lambda: f"ct{uuid.uuid4().hex[:10]}")
    key_names: dict[str, list[str]] = field(default_factory=dict)
    clients: dict[str, Any] = field(default_factory=dict)

    @property
    def bucket(self) -> str:
        return f"{self.prefix}-blobs"

    def client(self, service: str = "dynamodb") -> Any:
        if service not in self.clients:
            endpoint = self.endpoint if service == "dynamodb" else self.s3_endpoint
            self.clients[service] = boto3.client(
                service, region_name=REGION, endpoint_url=endpoint)
        return self.clients[service]

    def prepare(self) -> None:
        """Empty tables and an existing bucket, whatever happened before (another module's
        `moto_reset` drops them all: then they are made again)."""
        dynamodb = self.client()
        try:
            for table in self.key_names:
                self._empty(dynamodb, table)
        except dynamodb.exceptions.ResourceNotFoundException:
            self.key_names.clear()
        if not self.key_names:
            for table in create_tables(self.endpoint, self.prefix):
                schema = dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]
                self.key_names[table] = [key["AttributeName"] for key in schema]
        s3 = self.client("s3")
        try:
            s3.head_bucket(Bucket=self.bucket)
        except s3.exceptions.ClientError:
            create_bucket(self.s3_endpoint, self.bucket)
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            keys = [{"Key": blob["Key"]} for blob in page.get("Contents", ())]
            if keys:
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})

    def _empty(self, dynamodb: Any, table: str) -> None:
        names = {f"#k{n}": key for n, key in enumerate(self.key_names[table])}
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=table, ProjectionExpression=", ".join(names),
            ExpressionAttributeNames=names, ConsistentRead=True)
        keys = [item for page in pages for item in page["Items"]]
        for start in range(0, len(keys), 25):
            pending = {table: [{"DeleteRequest": {"Key": key}} for key in keys[start:start + 25]]}
            while pending:
                pending = dynamodb.batch_write_item(RequestItems=pending)["UnprocessedItems"]

    def settings(self) -> StoreSettings:
        blobs = BlobSettings(kind="s3", root=BLOB_PREFIX, bucket=self.bucket, region=REGION,
                             endpoint_url=self.s3_endpoint)
        return StoreSettings(backend="dynamodb", table_prefix=self.prefix, region=REGION,
                             endpoint_url=self.endpoint, blobs=blobs)


@pytest.fixture(scope="session")
def moto_tables(request: pytest.FixtureRequest) -> AwsTables:
    moto: str = request.getfixturevalue("moto_endpoint")
    tables = AwsTables(endpoint=moto, s3_endpoint=moto)
    tables.prepare()
    return tables


@pytest.fixture(scope="session")
def ddb_local_tables(request: pytest.FixtureRequest) -> AwsTables:
    """DynamoDB Local's tables; S3 is moto's (DynamoDB Local has no S3)."""
    local: str = request.getfixturevalue("ddb_local_endpoint")
    tables = AwsTables(endpoint=local, s3_endpoint=request.getfixturevalue("moto_endpoint"))
    tables.prepare()
    return tables


@pytest.fixture(scope="session")
async def moto_stores(moto_tables: AwsTables) -> AsyncIterator[Stores]:
    bundle = await open_stores(moto_tables.settings())
    try:
        yield bundle
    finally:
        await bundle.close()


@pytest.fixture(scope="session")
async def ddb_local_stores(ddb_local_tables: AwsTables) -> AsyncIterator[Stores]:
    bundle = await open_stores(ddb_local_tables.settings())
    try:
        yield bundle
    finally:
        await bundle.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """The backend of this test, its storage empty."""
    name: str = request.param
    if name == "sqlite":
        blobs = BlobSettings(kind="local", root=str(tmp_path / "blobs"))
        settings = StoreSettings(
            backend="sqlite", sqlite_path=str(tmp_path / "sdpbx.sqlite3"), blobs=blobs
        )
        return Backend(name=name, settings=settings)
    moto = name == "dynamodb-moto"
    tables: AwsTables = request.getfixturevalue("moto_tables" if moto else "ddb_local_tables")
    shared: Stores = request.getfixturevalue("moto_stores" if moto else "ddb_local_stores")
    tables.prepare()
    return Backend(name=name, settings=tables.settings(), dynamodb_endpoint=tables.endpoint,
                   shared=shared)


@pytest.fixture
async def stores(backend: Backend) -> AsyncIterator[Stores]:
    """An opened bundle of every store of `backend`: SQLite's is opened for the test and
    closed after it, DynamoDB's is the session's."""
    if backend.shared is not None:
        yield backend.shared
        return
    bundle = await backend.open()
    try:
        yield bundle
    finally:
        await bundle.close()


# Helpers shared by the contract modules.

T = TypeVar("T")


async def all_pages(
    fetch: Callable[[str | None], Awaitable[Page[T]]], limit: int
) -> list[list[T]]:
    """Follow the cursors from the first page to the last; every page within `limit`."""
    pages: list[list[T]] = []
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        assert len(page.items) <= limit, f"page of {len(page.items)} items with limit {limit}"
        pages.append(page.items)
        if page.cursor is None:
            return pages
        assert isinstance(page.cursor, str)
        assert len(pages) < 1000, "the cursor never ends"
        cursor = page.cursor


async def run_all(jobs: Iterable[Awaitable[T]], concurrency: int = 16) -> list[T]:
    """Await `jobs` with at most `concurrency` in flight (fills tables fast on DynamoDB)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Awaitable[T]) -> T:
        async with gate:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


def assert_same_json(got: object, want: object, where: str = "$") -> None:
    """`got == want` as JSON values: same types (a bool is not a number, a string is not a
    number) and same shape; numbers compare by value (1 and 1.0 are the same JSON number)."""
    if isinstance(want, bool) or want is None or isinstance(want, str):
        assert type(got) is type(want) and got == want, f"{where}: {got!r} != {want!r}"
    elif isinstance(want, int | float):
        assert isinstance(got, int | float) and not isinstance(got, bool), (
            f"{where}: {got!r} is not a number like {want!r}")
        assert got == want, f"{where}: {got!r} != {want!r}"
    elif isinstance(want, Mapping):
        assert isinstance(got, Mapping), f"{where}: {got!r} is not an object"
        assert set(got) == set(want), f"{where}: keys {sorted(got)} != {sorted(want)}"
        for key, value in want.items():
            assert_same_json(got[key], value, f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple), f"{where}: {got!r} is not an array"
        assert len(got) == len(want), f"{where}: {len(got)} items, want {len(want)}"
        for index, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same_json(a, b, f"{where}[{index}]")
    else:
        raise AssertionError(f"{where}: {want!r} is not a JSON value")


# JSON values as webhooks send them: nested, unicode, empty keys; numbers within what every
# backend can keep exactly (DynamoDB numbers: 38 digits, magnitude 1e-130..1e126).
_JSON_FLOATS = st.floats(min_value=-1e100, max_value=1e100, allow_nan=False).filter(
    lambda x: x == 0 or abs(x) >= 1e-100
)
JSON_SCALARS = (
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | _JSON_FLOATS | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5)
