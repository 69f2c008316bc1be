"""What only the DynamoDB backend has to get right: races settled by conditional writes, the
revision counter moving in one transaction with each directory write, the items as stored
(sparse index keys, TTL attributes, day partitions), GSI pagination that reads one page per
request, exact numbers, and every failure (missing table, refused or silent endpoint,
throttling, 5xx) ending as `StoreUnavailable` in bounded time."""

from __future__ import annotations

import asyncio
import dataclasses
import http.server
import json
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.exceptions import ClientError

from control.store import dynamodb
from control.store.aws import ClientOptions, translate
from control.store.dynamodb import (
    BINDING_TTL_GRACE_S,
    BY_DAY,
    BY_EDGE,
    CALL_TTL_AFTER_END_S,
    EDGE_TTL_GRACE_S,
    DynamoStores,
    TableNames,
)
from control.store.errors import Conflict, NotFound, StoreUnavailable
from control.store.local_blobs import LocalBlobStore
from control.store.models import Binding, CallRecord, CdrEntry, EdgeInfo, User
from control.store.ports import CdrQuery, StoreSettings
from tests.store.aws_servers import REGION, create_tables, moto_reset, running_ddb_local

pytestmark = pytest.mark.anyio

NOW = float(int(time.time()))
ENGINES = ("moto", "ddb-local")


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    endpoint: str
    prefix: str

    @property
    def tables(self) -> TableNames:
        return TableNames.for_prefix(self.prefix)

    def raw(self) -> Any:
        """A plain boto3 client, to look at items as DynamoDB holds them."""
        return boto3.client("dynamodb", region_name=REGION, endpoint_url=self.endpoint)


def _engine(name: str, endpoint: str) -> Engine:
    prefix = f"sp{uuid.uuid4().hex[:10]}"
    create_tables(endpoint, prefix)
    return Engine(name=name, endpoint=endpoint, prefix=prefix)


@pytest.fixture
def moto_engine(moto_endpoint: str) -> Engine:
    moto_reset(moto_endpoint)
    return _engine("moto", moto_endpoint)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> Engine:
    """Both engines: moto, and AWS's own DynamoDB Local (skipped where it cannot run)."""
    if request.param == "moto":
        endpoint: str = request.getfixturevalue("moto_endpoint")
        moto_reset(endpoint)
    else:
        endpoint = request.getfixturevalue("ddb_local_endpoint")
    return _engine(request.param, endpoint)


async def open_dynamo(
    endpoint: str, prefix: str, tmp_path: Path, options: ClientOptions | None = None
) -> DynamoStores:
    settings = StoreSettings(backend="dynamodb", table_prefix=prefix, region=REGION,
                             endpoint_url=endpoint)
    return await DynamoStores.open(settings, blobs=LocalBlobStore(tmp_path / "blobs"),
                                   options=options)


@pytest.fixture
async def dynamo(engine: Engine, tmp_path: Path) -> AsyncIterator[DynamoStores]:
    stores = await open_dynamo(engine.endpoint, engine.prefix, tmp_path)
    try:
        yield stores
    finally:
        await stores.close()


@pytest.fixture
async def moto_dynamo(moto_engine: Engine, tmp_path: Path) -> AsyncIterator[DynamoStores]:
    stores = await open_dynamo(moto_engine.endpoint, moto_engine.prefix, tmp_path)
    try:
        yield stores
    finally:
        await stores.close()


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """Every request the stores send, as (operation, parameters)."""
    made: list[tuple[str, dict[str, Any]]] = []
    original = dynamodb._Table.request

    async def counting(self: Any, operation: str, **params: Any) -> dict[str, Any]:
        made.append((operation, params))
        return await original(self, operation, **params)

    monkeypatch.setattr(dynamodb._Table, "request", counting)
    return made


def call(call_id: str, *, edge_id: str = "edge-a", state: str = "trying",
         **fields: Any) -> CallRecord:
    return CallRecord(call_id=call_id, edge_id=edge_id, state=state,  # type: ignore[arg-type]
                      created_at=NOW, updated_at=NOW, **fields)


def user(username: str) -> User:
    return User(username=username, realm="pbx.example.com", ha1_md5="0" * 32,
                ha1_sha256="0" * 64)


# --- races and transactions -------------------------------------------------------------------


async def test_ten_writers_with_the_same_version_exactly_one_wins(
    engine: Engine, dynamo: DynamoStores
) -> None:
    await dynamo.calls.create(call("race"))
    writers = [call("race", state="ringing", caller=f"writer-{n}") for n in range(10)]
    results = await asyncio.gather(
        *(dynamo.calls.update(w, expected_version=1) for w in writers), return_exceptions=True
    )
    won = [r for r in results if isinstance(r, CallRecord)]
    assert len(won) == 1, results
    assert all(isinstance(r, Conflict) for r in results if r is not won[0]), results
    stored = await dynamo.calls.get("race")
    assert stored == won[0] and stored.version == 2
    # The winner goes on from its version; a loser re-reads and does too.
    assert (await dynamo.calls.update(replace(stored, state="answered"), 2)).version == 3


async def test_revision_counter_moves_in_the_transaction_of_each_write(
    engine: Engine, dynamo: DynamoStores
) -> None:
    directory = dynamo.directory
    before = await directory.revision()
    # Concurrent writers all update the one `meta` item: on DynamoDB Local some of these
    # transactions are cancelled with TransactionConflict and retried by the store.
    await asyncio.gather(*(directory.put_user(user(f"{1000 + n}")) for n in range(20)))
    assert await directory.revision() == before + 20
    # A write that loses its condition changes neither the item nor the counter.
    with pytest.raises(Conflict):
        await directory.put_user(replace(user("1000"), display_name="second"))
    with pytest.raises(NotFound):
        await directory.delete_user("nobody", "pbx.example.com")
    with pytest.raises(NotFound):
        await directory.put_user(user("ghost"), expected_version=3)
    assert await directory.revision() == before + 20
    assert (await directory.get_user("1000", "pbx.example.com")).display_name == ""
    meta = engine.raw().get_item(TableName=engine.tables.directory,
                                 Key={"pk": {"S": "meta"}, "sk": {"S": "revision"}})["Item"]
    assert meta["revision"] == {"N": str(before + 20)}


class _FakeTransactClient:
    """Answers TransactWriteItems with a TransactionConflict `conflicts` times, then OK."""

    def __init__(self, conflicts: int) -> None:
        self.conflicts = conflicts
        self.calls = 0

    async def transact_write_items(self, **params: Any) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.conflicts:
            raise ClientError(
                {"Error": {"Code": "TransactionCanceledException", "Message": "cancelled"},
                 "CancellationReasons": [{"Code": "None"}, {"Code": "TransactionConflict"}]},
                "TransactWriteItems",
            )
        return {}


async def test_transaction_conflicts_are_retried_then_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(random, "uniform", lambda low, high: 0.0)
    flaky = _FakeTransactClient(conflicts=2)
    await dynamodb._Table(flaky, "t-directory", 5.0).transact([{"Put": {}}])
    assert flaky.calls == 3
    stuck = _FakeTransactClient(conflicts=1000)
    with pytest.raises(StoreUnavailable, match="t-directory"):
        await dynamodb._Table(stuck, "t-directory", 5.0).transact([{"Put": {}}])
    assert stuck.calls == dynamodb._TX_ATTEMPTS


# --- items as stored --------------------------------------------------------------------------


async def test_a_call_is_in_the_by_edge_index_only_while_active(
    moto_engine: Engine, moto_dynamo: DynamoStores
) -> None:
    raw = moto_engine.raw()
    table = moto_engine.tables.calls
    created = await moto_dynamo.calls.create(call("c1", edge_id="edge-9"))
    item = raw.get_item(TableName=table, Key={"call_id": {"S": "c1"}})["Item"]
    assert float(item["active"]["N"]) == NOW and "ttl" not in item
    indexed = raw.query(TableName=table, IndexName=BY_EDGE,
                        KeyConditionExpression="edge_id = :e",
                        ExpressionAttributeValues={":e": {"S": "edge-9"}})["Items"]
    assert [i["call_id"]["S"] for i in indexed] == ["c1"]

    ended = replace(created, state="completed", ended_at=NOW + 61.5)
    await moto_dynamo.calls.update(ended, expected_version=1)
    item = raw.get_item(TableName=table, Key={"call_id": {"S": "c1"}})["Item"]
    assert "active" not in item
    assert item["ttl"] == {"N": str(math.ceil(NOW + 61.5) + CALL_TTL_AFTER_END_S)}
    assert raw.query(TableName=table, IndexName=BY_EDGE, KeyConditionExpression="edge_id = :e",
                     ExpressionAttributeValues={":e": {"S": "edge-9"}})["Items"] == []


async def test_call_without_an_edge_is_refused() -> None:
    with pytest.raises(ValueError, match="edge_id"):
        dynamodb.call_item(call("orphan", edge_id=""))


async def test_binding_ttl_is_expiry_plus_grace_in_whole_seconds(
    moto_engine: Engine, moto_dynamo: DynamoStores
) -> None:
    raw = moto_engine.raw()
    table = moto_engine.tables.registrations
    placed = Binding(aor="sip:a@x", contact="<sip:a@1>", expires_at=NOW + 3600.25,
                     edge_id="edge-1", path=("<sip:p@x;lr>",))
    bare = Binding(aor="sip:a@x", contact="<sip:a@2>", expires_at=NOW - 1)
    await moto_dynamo.registrations.put(placed)
    await moto_dynamo.registrations.put(bare)
    item = raw.get_item(TableName=table,
                        Key={"aor": {"S": "sip:a@x"}, "contact": {"S": "<sip:a@1>"}})["Item"]
    assert item["ttl"] == {"N": str(int(NOW) + 3601 + BINDING_TTL_GRACE_S)}
    assert item["expires_at"] == {"N": str(NOW + 3600.25)}
    assert item["path"] == {"L": [{"S": "<sip:p@x;lr>"}]}
    bare_item = raw.get_item(TableName=table,
                             Key={"aor": {"S": "sip:a@x"}, "contact": {"S": "<sip:a@2>"}})["Item"]
    assert "edge_id" not in bare_item  # an index key is absent rather than ""
    # Bindings of no edge are outside the index, yet the sweep of "" still finds them.
    assert await moto_dynamo.registrations.expired("", NOW) == [bare]
    assert await moto_dynamo.registrations.bindings("sip:a@x", NOW) == [placed]


async def test_edge_ttl_is_expiry_plus_an_hour(
    moto_engine: Engine, moto_dynamo: DynamoStores
) -> None:
    edge = EdgeInfo(edge_id="e1", sip_addresses=("udp:192.0.2.1:5060",),
                    http_address="http://192.0.2.1:8080", expires_at=NOW + 30.5)
    await moto_dynamo.edges.heartbeat(edge)
    item = moto_engine.raw().get_item(TableName=moto_engine.tables.edges,
                                      Key={"edge_id": {"S": "e1"}})["Item"]
    assert item["ttl"] == {"N": str(int(NOW) + 31 + EDGE_TTL_GRACE_S)}


async def test_numbers_and_json_round_trip_exactly(moto_dynamo: DynamoStores) -> None:
    times = [1_700_000_000.123456, 0.1 + 0.2, 1e-7, 123_456_789.00000001, 2.0**52 + 0.5]
    for n, at in enumerate(times):
        entry = CdrEntry(call_id=f"n{n}", start_time=at, end_time=at * 3, caller="", callee="",
                         direction="inbound", status="completed", duration=at / 7)
        await moto_dynamo.cdrs.put(entry)
        assert await moto_dynamo.cdrs.get(f"n{n}") == entry
    data = {"big": 2**63 + 1, "one": 1.0, "tiny": 5e-324, "nested": [{"x": -0.0}]}
    await moto_dynamo.calls.create(call("json", data=data))
    got = (await moto_dynamo.calls.get("json")).data
    assert got == data
    assert isinstance(got["one"], float) and isinstance(got["big"], int)


# --- queries and pages ------------------------------------------------------------------------


async def test_gsi_pagination_reads_one_request_per_page(
    engine: Engine, dynamo: DynamoStores, requests_made: list[tuple[str, dict[str, Any]]]
) -> None:
    gate = asyncio.Semaphore(16)

    async def create(record: CallRecord) -> None:
        async with gate:
            await dynamo.calls.create(record)

    active = [call(f"busy-{n:03d}", edge_id="edge-busy") for n in range(230)]
    done = [call(f"done-{n:02d}", edge_id="edge-busy", state="completed") for n in range(30)]
    others = [call(f"other-{n}", edge_id="edge-quiet") for n in range(5)]
    await asyncio.gather(*(create(r) for r in [*active, *done, *others]))

    requests_made.clear()
    pages, cursor = [], None
    while True:
        page = await dynamo.calls.list_active(edge_id="edge-busy", limit=50, cursor=cursor)
        pages.append([r.call_id for r in page.items])
        if page.cursor is None:
            break
        cursor = page.cursor
    assert [len(p) for p in pages] == [50, 50, 50, 50, 30]
    assert sorted(i for p in pages for i in p) == sorted(r.call_id for r in active)
    queries = [(op, p["IndexName"], p["Limit"]) for op, p in requests_made]
    assert queries == [("query", BY_EDGE, 51)] * 5  # the engine honoured Limit every time

    requests_made.clear()
    every = await dynamo.calls.list_active(limit=1000)  # all edges: a Scan of the sparse index
    assert len(every.items) == 235 and every.cursor is None
    assert {(op, p.get("IndexName")) for op, p in requests_made} == {("scan", BY_EDGE)}


async def test_cdr_query_reads_only_the_day_partitions_in_range(
    moto_dynamo: DynamoStores, requests_made: list[tuple[str, dict[str, Any]]]
) -> None:
    day = 86_400.0
    d0 = (NOW // day - 10) * day
    for n in range(6):  # two a day, over three days, and one outside
        at = d0 + (n // 2) * day + (n % 2) * 3600
        await moto_dynamo.cdrs.put(CdrEntry(call_id=f"cdr-{n}", start_time=at, end_time=at,
                                            caller="a", callee="b", direction="inbound",
                                            status="completed"))
    await moto_dynamo.cdrs.put(CdrEntry(call_id="far", start_time=d0 - 30 * day,
                                        end_time=d0, caller="a", callee="b",
                                        direction="inbound", status="completed"))
    requests_made.clear()
    page = await moto_dynamo.cdrs.query(CdrQuery(start=d0, end=d0 + 3 * day, limit=100))
    assert [e.call_id for e in page.items] == [f"cdr-{n}" for n in range(5, -1, -1)]
    assert all(op == "query" and p["IndexName"] == BY_DAY for op, p in requests_made)
    days = [p["ExpressionAttributeValues"][":day"]["S"] for _, p in requests_made]
    assert days == [dynamodb.day_of(d0 + n * day) for n in (2, 1, 0)]  # newest day first


async def test_a_bad_cursor_is_a_value_error(moto_dynamo: DynamoStores) -> None:
    for bad in ("not base64 !", "eyJhIjogMX0", "W10"):  # garbage, {"a": 1}, []
        with pytest.raises(ValueError, match="cursor"):
            await moto_dynamo.calls.list_active(cursor=bad)
        with pytest.raises(ValueError, match="cursor"):
            await moto_dynamo.cdrs.query(CdrQuery(start=0, end=NOW, cursor=bad))


# --- failures ---------------------------------------------------------------------------------


async def test_a_missing_table_is_store_unavailable_naming_it(
    moto_endpoint: str, tmp_path: Path
) -> None:
    moto_reset(moto_endpoint)
    stores = await open_dynamo(moto_endpoint, "nosuch", tmp_path)
    try:
        with pytest.raises(StoreUnavailable, match="nosuch-calls"):
            await stores.calls.get("c1")
        with pytest.raises(StoreUnavailable, match="nosuch-registrations"):
            await stores.registrations.bindings("sip:a@x", NOW)
        with pytest.raises(StoreUnavailable, match="nosuch-directory"):
            await stores.directory.put_user(user("1001"))
    finally:
        await stores.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_refused_endpoint_is_store_unavailable_quickly(tmp_path: Path) -> None:
    options = ClientOptions(max_retries=1, connect_timeout_s=0.5)
    stores = await open_dynamo(f"http://127.0.0.1:{_closed_port()}", "x", tmp_path, options)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match="x-calls"):
            await stores.calls.get("c1")
    finally:
        await stores.close()
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """Accepts connections (the kernel does) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


async def test_a_silent_endpoint_hits_the_operation_deadline(
    silent_endpoint: str, tmp_path: Path
) -> None:
    # Nine attempts of a 0.4 s read timeout plus backoff would take far longer: the
    # per-operation deadline bounds it.
    options = ClientOptions(max_retries=8, read_timeout_s=0.4, deadline_s=1.5)
    stores = await open_dynamo(silent_endpoint, "quiet", tmp_path, options)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable, match=r"quiet-calls: get_item .* 1\.5 s"):
            await stores.calls.get("c1")
    finally:
        await stores.close()
    assert 1.4 < time.monotonic() - started < 4


@dataclass
class _FailingDynamo:
    """A DynamoDB endpoint that answers every request with one error."""

    status: int
    error_type: str
    requests: list[str] = dataclasses.field(default_factory=list)


@pytest.fixture
def failing_dynamo(request: pytest.FixtureRequest) -> Iterator[tuple[str, _FailingDynamo]]:
    status, error_type = request.param
    state = _FailingDynamo(status, error_type)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append(self.headers.get("X-Amz-Target", ""))
            body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{error_type}",
                               "message": "try again later"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(
    "failing_dynamo",
    [(400, "ProvisionedThroughputExceededException"), (400, "ThrottlingException"),
     (500, "InternalServerError"), (503, "ServiceUnavailable")],
    indirect=True,
    ids=["throughput", "throttling", "500", "503"],
)
async def test_throttling_and_5xx_are_retried_then_store_unavailable(
    failing_dynamo: tuple[str, _FailingDynamo], tmp_path: Path
) -> None:
    endpoint, state = failing_dynamo
    options = ClientOptions(max_retries=1)
    stores = await open_dynamo(endpoint, "busy", tmp_path, options)
    try:
        with pytest.raises(StoreUnavailable, match=f"busy-calls: {state.error_type}"):
            await stores.calls.get("c1")
    finally:
        await stores.close()
    assert state.requests == ["DynamoDB_20120810.GetItem"] * 2  # the SDK retried once


def _client_error(code: str, **extra: Any) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "m"}, **extra}, "Op")


def test_translate_maps_sdk_errors_to_domain_errors() -> None:
    assert isinstance(translate(_client_error("ConditionalCheckFailedException"), "t"), Conflict)
    lost = _client_error("TransactionCanceledException", CancellationReasons=[
        {"Code": "None"}, {"Code": "ConditionalCheckFailed"}])
    assert isinstance(translate(lost, "t"), Conflict)
    busy = _client_error("TransactionCanceledException", CancellationReasons=[
        {"Code": "TransactionConflict"}, {"Code": "None"}])
    assert isinstance(translate(busy, "t"), StoreUnavailable)
    missing = translate(_client_error("ResourceNotFoundException"), "pfx-calls")
    assert isinstance(missing, StoreUnavailable) and "'pfx-calls'" in str(missing)
    assert isinstance(translate(_client_error("NoSuchKey"), "bucket"), NotFound)
    assert isinstance(translate(_client_error("ValidationException"), "t"), StoreUnavailable)
    assert isinstance(translate(TimeoutError(), "t"), StoreUnavailable)


def test_ddb_local_runs_in_a_network_namespace_of_its_own(ddb_local_endpoint: str) -> None:
    """DynamoDB Local binds every interface: its java must not share our namespace, and our
    only way in is the relay's socket on 127.0.0.1."""
    server = running_ddb_local()
    assert server is not None and server.endpoint == ddb_local_endpoint
    assert urlsplit(ddb_local_endpoint).hostname == "127.0.0.1"
    relay = server.process.pid
    children = Path(f"/proc/{relay}/task/{relay}/children").read_text().split()
    assert len(children) == 1  # java
    ours = os.readlink("/proc/self/ns/net")
    private = os.readlink(f"/proc/{relay}/ns/net")
    assert private != ours
    assert os.readlink(f"/proc/{children[0]}/ns/net") == private


# --- configuration ----------------------------------------------------------------------------


async def test_standard_aws_environment_is_enough(
    moto_engine: Engine, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No endpoint or region in the settings: AWS_ENDPOINT_URL_DYNAMODB and AWS_REGION (the
    one Lambda sets; botocore itself reads only AWS_DEFAULT_REGION) are honoured."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto_engine.endpoint)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", REGION)
    settings = StoreSettings(backend="dynamodb", table_prefix=moto_engine.prefix)
    stores = await DynamoStores.open(settings, blobs=LocalBlobStore(tmp_path))
    try:
        await stores.edges.heartbeat(EdgeInfo(edge_id="env", sip_addresses=(),
                                              http_address="", expires_at=NOW + 30))
        assert [e.edge_id for e in await stores.edges.alive(NOW)] == ["env"]
    finally:
        await stores.close()


class _ClosableBlobs(LocalBlobStore):
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_close_closes_the_blob_store_too(moto_engine: Engine, tmp_path: Path) -> None:
    blobs = _ClosableBlobs(tmp_path)
    settings = StoreSettings(backend="dynamodb", table_prefix=moto_engine.prefix,
                             region=REGION, endpoint_url=moto_engine.endpoint)
    stores = await DynamoStores.open(settings, blobs=blobs)
    await stores.close()
    assert blobs.closed
