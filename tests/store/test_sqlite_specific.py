"""control.store.sqlite beyond the contract: pragmas, migrations, the worker thread (the loop
never blocks, writes are serialised, a locked file is retried), disk full, and query plans."""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest

from control.store import sqlite as sq
from control.store.errors import Conflict, NotFound, StoreUnavailable
from control.store.local_blobs import LocalBlobStore
from control.store.models import CallRecord, DirectoryEntry
from control.store.passwords import make_user
from control.store.ports import CdrQuery

pytestmark = pytest.mark.anyio

SLOW_SQL = (
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 4000000) "
    "SELECT count(*) FROM n"
)


def call(call_id: str, edge_id: str = "edge-1", state: str = "trying") -> CallRecord:
    return CallRecord(call_id=call_id, edge_id=edge_id, state=state,  # type: ignore[arg-type]
                      created_at=100.0, updated_at=100.0)


async def open_db(path: Path, **options: float) -> sq.SqliteStores:
    return await sq.SqliteStores.open(
        path, blobs=LocalBlobStore(path.parent / "blobs"), **options  # type: ignore[arg-type]
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sdpbx.sqlite3"  # a folder that does not exist yet


@pytest.fixture
async def db(db_path: Path) -> AsyncIterator[sq.SqliteStores]:
    stores = await open_db(db_path)
    try:
        yield stores
    finally:
        await stores.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- pragmas and migrations -------------------------------------------------------------------


async def test_open_creates_the_folder_and_uses_wal(db: sq.SqliteStores, db_path: Path) -> None:
    assert await asyncio.to_thread(db_path.is_file)
    with closing(raw(db_path)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # kept in the file
    pragmas = await db.worker.run(lambda conn: (
        conn.execute("PRAGMA synchronous").fetchone()[0],
        conn.execute("PRAGMA foreign_keys").fetchone()[0],
        conn.execute("PRAGMA busy_timeout").fetchone()[0],
    ))
    assert pragmas == (1, 1, 2000)  # NORMAL, on, the default busy timeout in ms


async def test_migrations_are_applied_once_and_reopening_keeps_data(db_path: Path) -> None:
    first = await open_db(db_path)
    await first.calls.create(call("c1"))
    await first.close()
    with closing(raw(db_path)) as conn:
        tables_before = conn.execute(
            "SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        assert conn.execute("SELECT id, version FROM schema_version").fetchall() == [
            (1, sq.SCHEMA_VERSION)]

    again = await open_db(db_path)
    try:
        assert (await again.calls.get("c1")).version == 1
        assert await again.directory.revision() == 0  # the seed row was not inserted twice
    finally:
        await again.close()
    with closing(raw(db_path)) as conn:
        assert conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name"
                            ).fetchall() == tables_before
        assert sq.migrate(conn) == sq.SCHEMA_VERSION  # a third time, directly: a no-op
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM directory_revision").fetchone() == (1,)


async def test_a_database_from_a_newer_sdpbx_is_refused(db_path: Path) -> None:
    await (await open_db(db_path)).close()
    with closing(raw(db_path)) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (sq.SCHEMA_VERSION + 1,))
    with pytest.raises(StoreUnavailable, match="newer than this sdpbx"):
        await open_db(db_path)


async def test_a_closed_store_is_unavailable(db_path: Path) -> None:
    stores = await open_db(db_path)
    await stores.close()
    await stores.close()  # twice is fine
    with pytest.raises(StoreUnavailable, match="closed"):
        await stores.calls.get("c1")


# --- the worker thread ------------------------------------------------------------------------


async def test_the_loop_keeps_running_while_a_slow_query_runs(db: sq.SqliteStores) -> None:
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    started = time.perf_counter()
    count = await db.worker.run(lambda conn: conn.execute(SLOW_SQL).fetchone()[0])
    took = time.perf_counter() - started
    stop.set()
    await ticking

    assert count == 4_000_000
    assert took > 0.1, "the query was meant to be slow"
    during = [t for t in ticks if started <= t <= started + took]
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    # Had the query run on the loop, one gap would span the whole query.
    assert max(gaps) < took / 2, (max(gaps), took)
    assert len(during) >= 5
    assert db.worker.thread is not None
    assert db.worker.thread is not threading.current_thread()


async def test_store_calls_run_on_the_one_worker_thread(db: sq.SqliteStores) -> None:
    seen = await asyncio.gather(*(
        db.worker.run(lambda conn: threading.get_ident()) for _ in range(20)))
    await db.directory.revision()
    assert len(set(seen)) == 1
    assert seen[0] != threading.get_ident()
    assert db.worker.thread is not None and db.worker.thread.ident == seen[0]


async def test_concurrent_writers_are_serialised(db: sq.SqliteStores) -> None:
    await asyncio.gather(*(db.calls.create(call(f"c{i:03d}")) for i in range(200)))
    page = await db.calls.list_active(limit=500)
    assert [record.call_id for record in page.items] == [f"c{i:03d}" for i in range(200)]

    # 30 writers race to update version 1: exactly one wins, the others see Conflict.
    base = await db.calls.get("c000")
    results = await asyncio.gather(
        *(db.calls.update(replace(base, caller=f"w{i}"), 1) for i in range(30)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, CallRecord)]
    assert len(winners) == 1
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, CallRecord))
    stored = await db.calls.get("c000")
    assert stored.version == 2 and stored.caller == winners[0].caller

    # Each directory write bumps the revision exactly once, however they interleave.
    await asyncio.gather(*(
        db.directory.put_user(make_user(f"{1000 + i}", "sdpbx", "pw")) for i in range(50)))
    assert await db.directory.revision() == 50


async def test_two_processes_share_the_file(db_path: Path) -> None:
    """The CLI and the edge each open the file: writes of one are seen by the other."""
    edge = await open_db(db_path)
    cli = await open_db(db_path)
    try:
        await asyncio.gather(
            *(edge.calls.create(call(f"e{i}")) for i in range(50)),
            *(cli.directory.put_user(make_user(f"u{i}", "sdpbx", "pw")) for i in range(50)),
        )
        assert await edge.directory.revision() == 50
        assert len((await cli.calls.list_active(limit=100)).items) == 50
    finally:
        await edge.close()
        await cli.close()


async def test_a_locked_database_is_retried_until_the_lock_goes(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stores = await open_db(db_path, busy_timeout_ms=20, retries=8, retry_delay_s=0.02)
    holder = raw(db_path)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        holder.execute("INSERT INTO edges VALUES ('x', '[]', '', 0, 0, 0, 0)")
        loop = asyncio.get_running_loop()
        loop.call_later(0.15, holder.execute, "COMMIT")
        with caplog.at_level(logging.WARNING, logger="control.store.sqlite"):
            stored = await stores.directory.put_user(make_user("1001", "sdpbx", "pw"))
        assert stored.version == 1
        assert (await stores.directory.get_user("1001", "sdpbx")).ha1_md5 == stored.ha1_md5
        assert (await stores.edges.get("x")).edge_id == "x"  # the other writer's row, too
        assert any("retrying" in record.getMessage() for record in caplog.records)
    finally:
        holder.close()
        await stores.close()


async def test_a_lock_that_stays_is_store_unavailable_and_changes_nothing(db_path: Path) -> None:
    stores = await open_db(db_path, busy_timeout_ms=10, retries=2, retry_delay_s=0.01)
    holder = raw(db_path)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable, match="locked"):
            await stores.directory.put_user(make_user("1001", "sdpbx", "pw"))
        holder.execute("ROLLBACK")
        with pytest.raises(NotFound):
            await stores.directory.get_user("1001", "sdpbx")
        assert await stores.directory.revision() == 0
    finally:
        holder.close()
        await stores.close()


async def test_a_full_disk_is_logged_and_unavailable(
    db: sq.SqliteStores, caplog: pytest.LogCaptureFixture
) -> None:
    # max_page_count makes SQLite report SQLITE_FULL, exactly as a full disk does.
    pages = await db.worker.run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    await db.worker.run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + 2}"))
    big = DirectoryEntry(kind="application", name="big", data={"blob": "x" * 200_000})
    with caplog.at_level(logging.ERROR, logger="control.store.sqlite"), \
            pytest.raises(StoreUnavailable, match="disk full"):
        await db.directory.put_entry(big)
    assert [r.levelno for r in caplog.records if "full" in r.getMessage()] == [logging.ERROR]
    with pytest.raises(NotFound):  # the transaction was rolled back whole
        await db.directory.get_entry("application", "big")
    assert await db.directory.revision() == 0


# --- data shapes and queries ------------------------------------------------------------------


async def test_json_columns_round_trip(db: sq.SqliteStores) -> None:
    legs = ({"call_id": "a@h", "tags": ["x", "y"], "media": {"port": 4000}},
            {"call_id": "b@h", "unicode": "é☎"})
    record = CallRecord(call_id="c1", edge_id="e", state="answered", created_at=1.5,
                        updated_at=2.25, answered_at=2.0, legs=legs,
                        data={"ncco": [{"action": "talk"}], "vars": {"n": 3, "ok": True}})
    await db.calls.create(record)
    stored = await db.calls.get("c1")
    assert stored.legs == legs
    assert stored.data == record.data
    assert (stored.answered_at, stored.ended_at, stored.version) == (2.0, None, 1)


async def test_finished_calls_leave_the_active_index(db: sq.SqliteStores) -> None:
    created = await db.calls.create(call("c1"))
    await db.calls.update(replace(created, state="completed"), 1)
    with closing(raw(Path(db.worker.path))) as conn:
        assert conn.execute("SELECT active FROM calls").fetchall() == [(0,)]
    assert (await db.calls.list_active()).items == []


async def test_a_tampered_cursor_is_a_value_error(db: sq.SqliteStores) -> None:
    with pytest.raises(ValueError, match="cursor"):
        await db.calls.list_active(cursor="not-a-cursor")
    with pytest.raises(ValueError, match="cursor"):
        await db.directory.list_users(cursor=sq.encode_cursor("only-one"))
    with pytest.raises(ValueError, match="cursor"):
        await db.cdrs.query(CdrQuery(start=0, end=1, cursor=sq.encode_cursor("x", "y")))


def _plans() -> dict[str, tuple[str, tuple[object, ...]]]:
    queries: dict[str, tuple[str, tuple[object, ...]]] = {
        "call": (sq.SQL_CALL_GET, ("c",)),
        "active calls": (sq.SQL_CALLS_ACTIVE, ("", 10)),
        "active calls by edge": (sq.SQL_CALLS_ACTIVE_BY_EDGE, ("e", "", 10)),
        "bindings of an aor": (sq.SQL_BINDINGS, ("aor", 1.0)),
        "expired bindings of an edge": (sq.SQL_BINDINGS_EXPIRED, ("e", 1.0, 10)),
        "binding count": (sq.SQL_BINDINGS_COUNT, (1.0,)),
        "user": (sq.SQL_USER_GET, ("u", "r")),
        "users": (sq.SQL_USERS, ("", "", 10)),
        "entry": (sq.SQL_ENTRY_GET, ("trunk", "n")),
        "entries": (sq.SQL_ENTRIES, ("trunk", "", 10)),
        "api key": (sq.SQL_API_KEY_GET, ("k",)),
        "revision": (sq.SQL_REVISION, ()),
        "cdr": (sq.SQL_CDR_GET, ("c",)),
        "edge": (sq.SQL_EDGE_GET, ("e",)),
        "alive edges": (sq.SQL_EDGES_ALIVE, (1.0,)),
    }
    cursor = sq.encode_cursor(5.0, "c")
    for name, filters in (
        ("cdrs", {}), ("cdrs by caller", {"caller": "a"}), ("cdrs by callee", {"callee": "b"}),
        ("cdrs by status", {"status": "missed"}), ("cdrs by direction", {"direction": "in"}),
        ("cdrs by caller and status", {"caller": "a", "status": "missed"}),
        ("cdrs page 2", {"caller": "a", "cursor": cursor}),
    ):
        sql, params = sq.cdr_query_sql(CdrQuery(start=0, end=10, **filters))  # type: ignore[arg-type]
        queries[name] = (sql, tuple(params))
    return queries


@pytest.mark.parametrize("name", sorted(_plans()))
async def test_every_query_uses_an_index(name: str) -> None:
    sql, params = _plans()[name]
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        sq.migrate(conn)
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]
    assert plan and all(step.startswith("SEARCH") for step in plan if "B-TREE" not in step), plan
    if name != "bindings of an aor":  # sorts the few contacts of one AOR: no index needed
        assert not any("TEMP B-TREE" in step for step in plan), plan


async def test_writes_of_one_turn_are_one_transaction_and_share_a_failure(
    db: sq.SqliteStores,
) -> None:
    await db.worker.run(lambda conn: conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY)"))
    ok = [db.worker.write("INSERT INTO t VALUES (?)", (f"k{i}",)) for i in range(5)]
    await asyncio.gather(*ok)
    # The duplicate key fails the group: the whole transaction is rolled back, every caller
    # of the batch sees the error.
    bad = [db.worker.write("INSERT INTO t VALUES (?)", (key,)) for key in ("k9", "k0")]
    results = await asyncio.gather(*bad, return_exceptions=True)
    assert all(isinstance(result, StoreUnavailable) for result in results), results
    rows = await db.worker.run(lambda conn: conn.execute("SELECT k FROM t ORDER BY k").fetchall())
    assert [row[0] for row in rows] == [f"k{i}" for i in range(5)]


async def test_ops_of_one_turn_commit_together_and_fail_alone(db: sq.SqliteStores) -> None:
    """The ops of one batch share a transaction (one COMMIT): one that answers Conflict
    without writing fails alone; one the database refuses (bad SQL), or one that fails after
    writing, sends the batch back to one-by-one, where only that one fails and its partial
    write is undone."""
    statements: list[str] = []

    def trace(conn: sqlite3.Connection) -> None:
        conn.set_trace_callback(statements.append)

    await db.worker.run(trace)
    await db.calls.create(call("a"))
    statements.clear()
    results = await asyncio.gather(
        db.calls.create(call("b")), db.calls.create(call("a")), db.calls.create(call("c")),
        db.calls.get("b"), return_exceptions=True)
    assert [type(r).__name__ for r in results] == [
        "CallRecord", "Conflict", "CallRecord", "CallRecord"], results
    assert statements.count("COMMIT") == 1 and statements[0] == "BEGIN IMMEDIATE"
    assert "ROLLBACK" not in statements

    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO nowhere VALUES (1)")

    outcomes = await asyncio.gather(
        db.calls.create(call("d")), db.worker.run(bad), db.calls.create(call("e")),
        return_exceptions=True)
    assert [type(r).__name__ for r in outcomes] == [
        "CallRecord", "StoreUnavailable", "CallRecord"], outcomes
    page = await db.calls.list_active(limit=10)
    assert [r.call_id for r in page.items] == ["a", "b", "c", "d", "e"]

    await db.worker.run(lambda conn: conn.execute("CREATE TABLE scratch (k TEXT)"))

    def half_done(conn: sqlite3.Connection) -> None:
        def body() -> None:  # a multi-statement op is all or nothing (sq._write)
            conn.execute("INSERT INTO scratch VALUES ('partial')")
            raise Conflict("changed its mind")

        sq._write(conn, body)

    outcomes = await asyncio.gather(
        db.calls.create(call("f")), db.worker.run(half_done), db.calls.create(call("g")),
        return_exceptions=True)
    assert [type(r).__name__ for r in outcomes] == [
        "CallRecord", "Conflict", "CallRecord"], outcomes
    assert await db.worker.run(
        lambda conn: conn.execute("SELECT count(*) FROM scratch").fetchone()[0]) == 0
    assert len((await db.calls.list_active(limit=10)).items) == 7
    await db.worker.run(lambda conn: conn.set_trace_callback(None))


async def test_close_runs_what_was_asked_first_then_stops_the_thread(db_path: Path) -> None:
    stores = await open_db(db_path)
    pending = [asyncio.ensure_future(stores.registrations.count(0.0)) for _ in range(3)]
    write = stores.worker.write("CREATE TABLE later (x)", ())
    await asyncio.sleep(0)  # the tasks have posted their reads; nothing is handed over yet
    await stores.close()
    assert await asyncio.gather(*pending) == [0, 0, 0]
    await write
    thread = stores.worker.thread
    assert thread is not None
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(StoreUnavailable, match="closed"):
        stores.worker.write("SELECT 1", ())
