"""Benchmark of the state layer: the call-record write path and the registration lookup path,
on SQLite and on DynamoDB (moto server; DynamoDB Local when it can run), in ops/s and p50/p99
latency, against a raw-driver baseline measured in the same run; plus store writes per call.

Run from the repository root:

    .venv/bin/python bench/store.py            # every backend, ~1 min
    .venv/bin/python bench/store.py --quick    # a few seconds per backend
    .venv/bin/python bench/store.py --backends sqlite

Each case stops at `--ops` operations or `--seconds` of wall time, whichever comes first.
The stores are opened through `open_stores(StoreSettings(...))`, as the product opens them.
Baselines: a raw `sqlite3` INSERT/UPDATE (and SELECT) loop on a file with the same pragmas,
and raw boto3 (sync) `put_item` (and `query`) on a plain table of the same server, so the ratio
says what our layer costs on top of the driver on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Runnable as `python bench/store.py` from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aioboto3
import boto3

from control.store.factory import open_stores
from control.store.models import Binding, CallRecord
from control.store.ports import BlobSettings, Stores, StoreSettings

REGION = "us-east-1"
CONCURRENCY = 16  # calls (or lookups) in flight in the concurrent rows
WRITES_PER_CALL_TARGET = 4  # the lead's design target, written behind the SIP path

# --- what a call writes -----------------------------------------------------------------------

_LEG_A = {"call_id": "3848276298220188511@atlanta.example.com", "local_tag": "9fxced76sl",
          "remote_tag": "", "cseq": 1, "route_set": ["<sip:ss1.atlanta.example.com;lr>"],
          "contact": "<sip:alice@192.0.2.101:5060>",
          "media": {"ip": "192.0.2.101", "port": 49172, "codec": "PCMU"}}
_LEG_B = {**_LEG_A, "call_id": "b2bua-leg-2@edge-1", "local_tag": "a73kszlfl",
          "contact": "<sip:bob@192.0.2.201:5060>", "media": {"ip": "192.0.2.201",
                                                              "port": 3456, "codec": "PCMU"}}


async def call_write_path(stores: Stores, call_id: str, latencies: list[float]) -> None:
    """The writes one call makes: create, three updates (ringing, answered, an NCCO step),
    and the final update; each write's latency is appended to `latencies`."""
    now = time.time()
    record = CallRecord(call_id=call_id, edge_id="edge-1", state="trying", direction="inbound",
                        caller="sip:+15551234567@carrier.example",
                        callee="sip:1002@pbx.example.com", created_at=now, updated_at=now,
                        legs=(_LEG_A,), data={})
    steps: list[Callable[[CallRecord], CallRecord]] = [
        lambda r: replace(r, state="ringing", updated_at=now + 0.1,
                          legs=(_LEG_A, {**_LEG_B, "remote_tag": "8321234356"})),
        lambda r: replace(r, state="answered", updated_at=now + 3, answered_at=now + 3),
        lambda r: replace(r, updated_at=now + 9,
                          data={"ncco": {"step": 2}, "vars": {"digits": "1", "lang": "en"}}),
        lambda r: replace(r, state="completed", updated_at=now + 60, ended_at=now + 60),
    ]
    start = time.perf_counter()
    record = await stores.calls.create(record)
    latencies.append(time.perf_counter() - start)
    for step in steps:
        start = time.perf_counter()
        record = await stores.calls.update(step(record), record.version)
        latencies.append(time.perf_counter() - start)


def binding(aor: str, contact: str, now: float, q: float) -> Binding:
    return Binding(aor=aor, contact=contact, expires_at=now + 3600, q=q,
                   call_id=f"{uuid.uuid4().hex}@phone", cseq=1, source="203.0.113.9:5060",
                   user_agent="Linphone/5.2", edge_id="edge-1", registered_at=now)


# --- measuring --------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    backend: str
    case: str
    ops: int  # measured operations (writes, or lookups)
    seconds: float  # wall time
    cpu_seconds: float  # this process's CPU time, every thread (SQLite's worker included)
    latencies: list[float] = field(repr=False)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_op(self) -> float:
        return self.cpu_seconds / self.ops if self.ops else 0.0

    def quantile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


@dataclass(frozen=True, slots=True)
class Budget:
    ops: int
    seconds: float


async def run_async(
    backend: str, case: str, budget: Budget, concurrency: int,
    one: Callable[[int, list[float]], Awaitable[None]], ops_per_unit: int,
) -> Result:
    """Run `one(n, latencies)` from `concurrency` workers until the budget is spent."""
    latencies: list[float] = []
    counter = iter(range(budget.ops // ops_per_unit))
    deadline = 0.0

    async def worker() -> None:
        for n in counter:
            await one(n, latencies)
            if time.perf_counter() >= deadline:
                return

    await one(-1, [])  # warm up: connections, prepared statements, the first client call
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + budget.seconds
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(backend, case, len(latencies), time.perf_counter() - start,
                  time.process_time() - cpu, latencies)


def run_sync(
    backend: str, case: str, budget: Budget, one: Callable[[int, list[float]], None],
    ops_per_unit: int,
) -> Result:
    latencies: list[float] = []
    one(-1, [])
    start, cpu = time.perf_counter(), time.process_time()
    deadline = start + budget.seconds
    for n in range(budget.ops // ops_per_unit):
        one(n, latencies)
        if time.perf_counter() >= deadline:
            break
    return Result(backend, case, len(latencies), time.perf_counter() - start,
                  time.process_time() - cpu, latencies)


# --- counting what the backend is asked -------------------------------------------------------


class RequestCounter:
    """Backend requests by kind: SQL statements on SQLite, API calls on DynamoDB."""

    DYNAMO_WRITES = frozenset({"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems",
                               "BatchWriteItem"})

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def writes(self) -> int:
        return sum(n for kind, n in self.counts.items()
                   if kind in self.DYNAMO_WRITES or kind in ("INSERT", "UPDATE", "DELETE",
                                                              "REPLACE"))

    def reads(self) -> int:
        return sum(n for kind, n in self.counts.items()
                   if kind in ("SELECT", "GetItem", "Query", "Scan", "BatchGetItem",
                               "TransactGetItems"))

    def sql(self, statement: str) -> None:
        self.counts[statement.lstrip().split(None, 1)[0].upper()] += 1

    def api_call(self, model: Any = None, **_: Any) -> None:
        if model is not None:
            self.counts[model.name] += 1


COUNTER = RequestCounter()
_REAL_SQLITE_CONNECT = sqlite3.connect


def install_counting() -> None:
    """From now on, new SQLite connections and aioboto3 sessions report to `COUNTER`.

    Patches the two driver entry points the adapters call (`sqlite3.connect`,
    `aioboto3.Session`) instead of reaching into the adapters' private state. Installed before
    anything opens a session: the AWS adapters keep one session per thread for good."""

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn: sqlite3.Connection = _REAL_SQLITE_CONNECT(*args, **kwargs)
        conn.set_trace_callback(COUNTER.sql)
        return conn

    class CountingSession(aioboto3.Session):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.events.register("before-call.dynamodb", COUNTER.api_call)

    sqlite3.connect = connect  # type: ignore[assignment]
    aioboto3.Session = CountingSession


# --- the store cases --------------------------------------------------------------------------


@dataclass(slots=True)
class WriteCount:
    backend: str
    port_writes: int
    backend_writes: int
    backend_reads: int


async def bench_stores(
    backend: str, settings: StoreSettings, budget: Budget, aor_count: int
) -> tuple[list[Result], WriteCount]:
    results: list[Result] = []
    stores = await open_stores(settings)
    try:
        run = uuid.uuid4().hex[:8]

        # Writes per call, counted on one call with nothing else running.
        COUNTER.counts.clear()
        one_call: list[float] = []
        await call_write_path(stores, f"count-{run}", one_call)
        writes = WriteCount(backend, len(one_call), COUNTER.writes(), COUNTER.reads())

        for concurrency in (1, CONCURRENCY):
            async def one_call_path(n: int, latencies: list[float], c: int = concurrency) -> None:
                await call_write_path(stores, f"{run}-{c}-{n}@bench", latencies)

            results.append(await run_async(
                backend, f"call writes, {concurrency} in flight", budget, concurrency,
                one_call_path, ops_per_unit=5))

        now = time.time()
        aors = [f"sip:{1000 + n}@pbx.example.com" for n in range(aor_count)]
        gate = asyncio.Semaphore(CONCURRENCY)

        async def register(aor: str, contact: str, q: float) -> None:
            async with gate:
                await stores.registrations.put(binding(aor, contact, now, q))

        await asyncio.gather(*(register(aor, f"<sip:{aor[4:8]}@192.0.2.{k}>", 1.0 - k / 10)
                               for aor in aors for k in (1, 2)))
        pick = random.Random(7)
        for concurrency in (1, CONCURRENCY):
            async def lookup(n: int, latencies: list[float]) -> None:
                aor = pick.choice(aors)
                start = time.perf_counter()
                found = await stores.registrations.bindings(aor, time.time())
                latencies.append(time.perf_counter() - start)
                assert len(found) == 2, found

            results.append(await run_async(
                backend, f"bindings(aor), {concurrency} in flight", budget, concurrency,
                lookup, ops_per_unit=1))
    finally:
        await stores.close()
    return results, writes


# --- baselines --------------------------------------------------------------------------------

_RAW_LEGS = json.dumps([_LEG_A, _LEG_B])
_RAW_DATA = json.dumps({"ncco": {"step": 2}, "vars": {"digits": "1", "lang": "en"}})


def sqlite_baseline(folder: Path, budget: Budget, aor_count: int) -> list[Result]:
    """Raw sqlite3, same file settings as the store (WAL, synchronous=NORMAL, autocommit)."""
    conn = _REAL_SQLITE_CONNECT(folder / "baseline.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE calls (call_id TEXT PRIMARY KEY, state TEXT, legs TEXT, "
                 "data TEXT, version INTEGER)")
    conn.execute("CREATE TABLE bindings (aor TEXT, contact TEXT, expires_at REAL, q REAL, "
                 "data TEXT, PRIMARY KEY (aor, contact)) WITHOUT ROWID")

    def one_call(n: int, latencies: list[float]) -> None:
        call_id = f"raw-{n}"
        start = time.perf_counter()
        conn.execute("INSERT INTO calls VALUES (?, 'trying', ?, '{}', 1)", (call_id, _RAW_LEGS))
        latencies.append(time.perf_counter() - start)
        for version, state in enumerate(("ringing", "answered", "answered", "completed"), 1):
            start = time.perf_counter()
            conn.execute("UPDATE calls SET state = ?, legs = ?, data = ?, version = ? "
                         "WHERE call_id = ? AND version = ?",
                         (state, _RAW_LEGS, _RAW_DATA, version + 1, call_id, version))
            latencies.append(time.perf_counter() - start)

    results = [run_sync("sqlite", "baseline: raw sqlite3 INSERT/UPDATE", budget, one_call, 5)]
    now = time.time()
    aors = [f"sip:{1000 + n}@pbx.example.com" for n in range(aor_count)]
    conn.executemany("INSERT INTO bindings VALUES (?, ?, ?, ?, ?)",
                     [(aor, f"<sip:{k}>", now + 3600, 1.0 - k / 10, "{}")
                      for aor in aors for k in (1, 2)])
    pick = random.Random(7)

    def lookup(n: int, latencies: list[float]) -> None:
        start = time.perf_counter()
        rows = conn.execute("SELECT * FROM bindings WHERE aor = ? AND expires_at > ? "
                            "ORDER BY q DESC", (pick.choice(aors), time.time())).fetchall()
        latencies.append(time.perf_counter() - start)
        assert len(rows) == 2

    results.append(run_sync("sqlite", "baseline: raw sqlite3 SELECT", budget, lookup, 1))
    conn.close()
    return results


async def dynamodb_baseline(
    backend: str, endpoint: str, budget: Budget, aor_count: int
) -> list[Result]:
    """Raw boto3 (sync) on a plain table of the same server: put_item, and query by AOR."""
    client = boto3.client("dynamodb", region_name=REGION, endpoint_url=endpoint)
    table = f"bench-raw-{uuid.uuid4().hex[:8]}"
    client.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1})

    def one_call(n: int, latencies: list[float]) -> None:
        for version, state in enumerate(
                ("trying", "ringing", "answered", "answered", "completed"), 1):
            start = time.perf_counter()
            client.put_item(TableName=table, Item={
                "pk": {"S": f"raw-{n}"}, "sk": {"S": "call"}, "state": {"S": state},
                "legs": {"S": _RAW_LEGS}, "data": {"S": _RAW_DATA},
                "version": {"N": str(version)}})
            latencies.append(time.perf_counter() - start)

    results = [run_sync(backend, "baseline: raw boto3 put_item", budget, one_call, 5)]
    now = str(int(time.time()) + 3600)
    aors = [f"sip:{1000 + n}@pbx.example.com" for n in range(aor_count)]
    with boto3.resource("dynamodb", region_name=REGION,
                        endpoint_url=endpoint).Table(table).batch_writer() as batch:
        for aor in aors:
            for k in (1, 2):
                batch.put_item(Item={"pk": aor, "sk": f"<sip:{k}>", "expires_at": int(now)})
    pick = random.Random(7)

    def lookup(n: int, latencies: list[float]) -> None:
        start = time.perf_counter()
        found = client.query(TableName=table, KeyConditionExpression="pk = :aor",
                             ExpressionAttributeValues={":aor": {"S": pick.choice(aors)}},
                             ConsistentRead=True)["Items"]
        latencies.append(time.perf_counter() - start)
        assert len(found) == 2

    results.append(run_sync(backend, "baseline: raw boto3 query", budget, lookup, 1))
    results += await aioboto3_put_items(backend, endpoint, table, budget)
    client.delete_table(TableName=table)
    return results


async def aioboto3_put_items(
    backend: str, endpoint: str, table: str, budget: Budget
) -> list[Result]:
    """The same put_item through aioboto3 (the SDK the store uses), plain and conditional as
    the store writes, for attribution: the gap to boto3 is the async SDK's, the conditional
    row shows what the server charges for the condition, the rest is ours."""
    results: list[Result] = []
    async with aioboto3.Session().client(
            "dynamodb", region_name=REGION, endpoint_url=endpoint) as client:
        for conditional in (False, True):
            async def one_call(n: int, latencies: list[float], conditional: bool = conditional,
                               ) -> None:
                for version in range(1, 6):
                    condition: dict[str, Any] = {}
                    if conditional:  # as the store writes: create once, then by version
                        condition = {"ConditionExpression": "attribute_not_exists(pk)"
                                     if version == 1 else "version = :v",
                                     **({} if version == 1 else {"ExpressionAttributeValues": {
                                         ":v": {"N": str(version - 1)}}})}
                    start = time.perf_counter()
                    await client.put_item(TableName=table, Item={
                        "pk": {"S": f"aio-{conditional}-{n}"}, "sk": {"S": "call"},
                        "state": {"S": "answered"}, "legs": {"S": _RAW_LEGS},
                        "data": {"S": _RAW_DATA}, "version": {"N": str(version)}}, **condition)
                    latencies.append(time.perf_counter() - start)

            case = "reference: aioboto3 put_item" + (" + condition" if conditional else "")
            results.append(await run_async(backend, case, budget, 1, one_call, 5))
    return results


# --- servers ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(url: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError as error:
            # Any HTTP answer (even 4xx) means the server is up.
            if getattr(error, "code", None) is not None:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not come up in {seconds:.0f} s") from error
            time.sleep(0.1)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto in server mode in its own process (in a thread it would share our GIL and the
    client's CPU time would include the server's)."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        wait_for(f"{endpoint}/moto-api/", 20)
        yield endpoint
    finally:
        server.terminate()
        server.wait(10)


@contextlib.contextmanager
def dynamodb_local(url: str | None) -> Iterator[str | None]:
    """An endpoint of DynamoDB Local: `--dynamodb-local URL`, else one started by the test
    helpers (in a private network namespace) when it can run here, else None."""
    if url:
        yield url
        return
    from tests.store.aws_servers import DynamoDBLocal, ensure_ddb_local

    try:
        server = DynamoDBLocal.start(ensure_ddb_local())
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        print(f"dynamodb-local: cannot start it here: {error}")
        yield None
        return
    try:
        yield server.endpoint
    finally:
        server.stop()


def dynamodb_settings(endpoint: str, s3_endpoint: str) -> StoreSettings:
    from tests.store.aws_servers import create_bucket, create_tables

    prefix = f"bench{uuid.uuid4().hex[:8]}"
    create_tables(endpoint, prefix)
    create_bucket(s3_endpoint, f"{prefix}-blobs")
    blobs = BlobSettings(kind="s3", root="", bucket=f"{prefix}-blobs", region=REGION,
                         endpoint_url=s3_endpoint)
    return StoreSettings(backend="dynamodb", table_prefix=prefix, region=REGION,
                         endpoint_url=endpoint, blobs=blobs)


# --- report -----------------------------------------------------------------------------------


def report(results: list[Result], counts: list[WriteCount]) -> None:
    print()
    print(f"{'backend':<15} {'case':<42} {'ops':>6} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
          f" {'CPU us/op':>10}")
    for r in results:
        print(f"{r.backend:<15} {r.case:<42} {r.ops:>6} {r.rate:>9,.0f}"
              f" {r.quantile(0.5) * 1e3:>8.2f} {r.quantile(0.99) * 1e3:>8.2f}"
              f" {r.cpu_per_op * 1e6:>10,.0f}")
    print("(ops: single writes for the call rows, lookups for the bindings rows; CPU: this"
          " process only, servers excluded)")
    print()
    print("ratio = store ops/s / baseline ops/s, one operation in flight (1.00: no overhead)")
    rate = {(r.backend, r.case): r.rate for r in results}
    comparisons = [
        ("call-record writes", "call writes, 1 in flight",
         ["baseline: raw sqlite3 INSERT/UPDATE", "baseline: raw boto3 put_item",
          "reference: aioboto3 put_item + condition"]),
        ("bindings(aor)", "bindings(aor), 1 in flight",
         ["baseline: raw sqlite3 SELECT", "baseline: raw boto3 query"]),
    ]
    for backend in dict.fromkeys(r.backend for r in results):
        for label, case, bases in comparisons:
            for base in bases:
                if rate.get((backend, case)) and rate.get((backend, base)):
                    ratio = rate[(backend, case)] / rate[(backend, base)]
                    print(f"  {backend:<15} {label + ':':<20} {ratio:5.2f}x of"
                          f" {base.split(': ', 1)[1]}")
    print()
    print("store writes per call (create + ringing + answered + NCCO step + completed),"
          f" target <= {WRITES_PER_CALL_TARGET}:")
    for c in counts:
        verdict = "met" if c.port_writes <= WRITES_PER_CALL_TARGET else "over the target"
        print(f"  {c.backend:<15} CallStore writes {c.port_writes} ({verdict});"
              f" backend write requests {c.backend_writes}, read requests {c.backend_reads}")
    if any(c.port_writes > WRITES_PER_CALL_TARGET for c in counts):
        print("  the modelled path writes every call-level change; <= 4 means coalescing one"
              " of them\n  (e.g. create the record at ringing, or fold the NCCO step into the"
              " answered write)")


async def main_async(args: argparse.Namespace) -> int:
    budget = Budget(ops=args.ops, seconds=args.seconds)
    install_counting()
    results: list[Result] = []
    counts: list[WriteCount] = []
    wanted = set(args.backends)
    print(f"sdpbx store benchmark - Python {platform.python_version()} on {platform.machine()},"
          f" {os.cpu_count()} CPUs; each case: {budget.ops} ops or {budget.seconds:g} s")
    if "sqlite" in wanted:
        with tempfile.TemporaryDirectory(prefix="sdpbx-bench-") as folder:
            settings = StoreSettings(
                backend="sqlite", sqlite_path=str(Path(folder) / "sdpbx.sqlite3"),
                blobs=BlobSettings(kind="local", root=str(Path(folder) / "blobs")))
            found, count = await bench_stores("sqlite", settings, budget, args.aors)
            results += found
            counts.append(count)
            results += sqlite_baseline(Path(folder), budget, args.aors)
    if wanted & {"dynamodb-moto", "dynamodb-local"}:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            os.environ.setdefault(name, "bench")  # local servers accept any credentials
        with moto_server() as moto:
            if "dynamodb-moto" in wanted:
                found, count = await bench_stores(
                    "dynamodb-moto", dynamodb_settings(moto, moto), budget, args.aors)
                results += found
                counts.append(count)
                results += await dynamodb_baseline("dynamodb-moto", moto, budget, args.aors)
            if "dynamodb-local" in wanted:
                with dynamodb_local(args.dynamodb_local) as local:
                    if local is not None:
                        found, count = await bench_stores(
                            "dynamodb-local", dynamodb_settings(local, moto), budget,
                            args.aors)
                        results += found
                        counts.append(count)
                        results += await dynamodb_baseline(
                            "dynamodb-local", local, budget, args.aors)
    report(results, counts)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true",
                        help="a fast run: 300 ops or 0.5 s per case, 100 AORs")
    parser.add_argument("--ops", type=int, default=5000, help="ops per case at most")
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per case at most")
    parser.add_argument("--aors", type=int, default=500,
                        help="AORs registered (two contacts each) for the lookup case")
    parser.add_argument("--backends", nargs="+",
                        default=["sqlite", "dynamodb-moto", "dynamodb-local"],
                        choices=["sqlite", "dynamodb-moto", "dynamodb-local"])
    parser.add_argument("--dynamodb-local", metavar="URL",
                        help="a running DynamoDB Local (default: start one if possible)")
    args = parser.parse_args(argv)
    if args.quick:
        args.ops, args.seconds = min(args.ops, 300), min(args.seconds, 0.5)
        args.aors = min(args.aors, 100)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
