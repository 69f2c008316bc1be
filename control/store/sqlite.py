"""The embedded backend: every store over one SQLite file, driven from one worker thread.

All SQLite work runs on a single dedicated thread that owns the one connection, so the event
loop never blocks on disk and writes are serialised without locks of our own. The file is in WAL
mode (readers in other processes, such as `sdpbx user list` while the edge runs, never wait for
the writer) with `synchronous=NORMAL` (a commit survives a process crash; a power cut may lose
the last commits but never corrupts the file). The schema is versioned (`schema_version`) and
migrated at open. Writes that must not be lost to a race are conditional
(`UPDATE ... WHERE version = ?` and a rowcount check).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import functools
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from control.store.errors import Conflict, NotFound, StoreUnavailable
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
from control.store.ports import (
    BlobStore,
    CallStore,
    CdrQuery,
    CdrStore,
    DirectoryStore,
    EdgeRegistry,
    RegistrationStore,
    Stores,
)

log = logging.getLogger(__name__)

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]

# --- schema -----------------------------------------------------------------------------------

# Migration N takes the schema from version N-1 to N. Append; never edit a released one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE calls (
            call_id TEXT PRIMARY KEY,
            edge_id TEXT NOT NULL,
            state TEXT NOT NULL,
            active INTEGER NOT NULL,
            direction TEXT NOT NULL,
            caller TEXT NOT NULL,
            callee TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            answered_at REAL,
            ended_at REAL,
            legs TEXT NOT NULL,
            data TEXT NOT NULL,
            version INTEGER NOT NULL
        )""",
        # Partial indexes: finished calls (most rows, eventually) cost nothing to skip.
        "CREATE INDEX calls_active ON calls (call_id) WHERE active = 1",
        "CREATE INDEX calls_active_by_edge ON calls (edge_id, call_id) WHERE active = 1",
        """CREATE TABLE bindings (
            aor TEXT NOT NULL,
            contact TEXT NOT NULL,
            expires_at REAL NOT NULL,
            q REAL NOT NULL,
            call_id TEXT NOT NULL,
            cseq INTEGER NOT NULL,
            source TEXT NOT NULL,
            transport TEXT NOT NULL,
            user_agent TEXT NOT NULL,
            edge_id TEXT NOT NULL,
            path TEXT NOT NULL,
            instance_id TEXT NOT NULL,
            reg_id INTEGER,
            registered_at REAL NOT NULL,
            PRIMARY KEY (aor, contact)
        ) WITHOUT ROWID""",
        "CREATE INDEX bindings_by_edge_expiry ON bindings (edge_id, expires_at)",
        "CREATE INDEX bindings_by_expiry ON bindings (expires_at)",
        """CREATE TABLE users (
            username TEXT NOT NULL,
            realm TEXT NOT NULL,
            ha1_md5 TEXT NOT NULL,
            ha1_sha256 TEXT NOT NULL,
            enabled INTEGER NOT NULL,
            display_name TEXT NOT NULL,
            allow_guest_calls INTEGER NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (username, realm)
        ) WITHOUT ROWID""",
        """CREATE TABLE directory_entries (
            kind TEXT NOT NULL,
            name TEXT NOT NULL,
            data TEXT NOT NULL,
            version INTEGER NOT NULL,
            PRIMARY KEY (kind, name)
        ) WITHOUT ROWID""",
        """CREATE TABLE api_keys (
            key_id TEXT PRIMARY KEY,
            secret_sha256 TEXT NOT NULL,
            scopes TEXT NOT NULL,
            name TEXT NOT NULL,
            created_at REAL NOT NULL
        ) WITHOUT ROWID""",
        # One row, bumped in the same transaction as every directory write.
        """CREATE TABLE directory_revision (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            revision INTEGER NOT NULL
        )""",
        "INSERT INTO directory_revision (id, revision) VALUES (1, 0)",
        """CREATE TABLE cdrs (
            call_id TEXT PRIMARY KEY,
            start_time REAL NOT NULL,
            end_time REAL NOT NULL,
            caller TEXT NOT NULL,
            callee TEXT NOT NULL,
            direction TEXT NOT NULL,
            status TEXT NOT NULL,
            duration REAL NOT NULL,
            cdr_key TEXT NOT NULL,
            recording_key TEXT NOT NULL,
            edge_id TEXT NOT NULL
        ) WITHOUT ROWID""",
        # (filter, start_time, call_id): a filtered query walks one index newest first.
        "CREATE INDEX cdrs_by_start ON cdrs (start_time, call_id)",
        "CREATE INDEX cdrs_by_caller ON cdrs (caller, start_time, call_id)",
        "CREATE INDEX cdrs_by_callee ON cdrs (callee, start_time, call_id)",
        "CREATE INDEX cdrs_by_status ON cdrs (status, start_time, call_id)",
        """CREATE TABLE edges (
            edge_id TEXT PRIMARY KEY,
            sip_addresses TEXT NOT NULL,
            http_address TEXT NOT NULL,
            load INTEGER NOT NULL,
            started_at REAL NOT NULL,
            heartbeat_at REAL NOT NULL,
            expires_at REAL NOT NULL
        ) WITHOUT ROWID""",
        "CREATE INDEX edges_by_expiry ON edges (expires_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(conn: sqlite3.Connection) -> int:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        "id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
    )
    row = conn.execute("SELECT version FROM schema_version WHERE id = 1").fetchone()
    return 0 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Apply the migrations the file lacks, each in its own transaction; return the version.

    Safe to run on every open and from two processes at once: each step re-reads the version
    under the write lock (BEGIN IMMEDIATE) before applying anything.
    """
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = _schema_version(conn)
            if current > SCHEMA_VERSION:
                raise StoreUnavailable(
                    f"the database has schema version {current}, newer than this sdpbx "
                    f"understands ({SCHEMA_VERSION}): upgrade sdpbx"
                )
            if current == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return current
            for statement in MIGRATIONS[current]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (id, version) VALUES (1, ?) "
                "ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (current + 1,),
            )
            conn.execute("COMMIT")
            log.info("sqlite schema migrated", extra={"schema_version": current + 1})
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise


# --- the worker thread ------------------------------------------------------------------------

_TRANSIENT_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR})


def _primary_code(error: sqlite3.Error) -> int | None:
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF  # extended codes carry the primary low


def _is_full(error: sqlite3.Error) -> bool:
    return _primary_code(error) == sqlite3.SQLITE_FULL or "is full" in str(error)


def _is_transient(error: sqlite3.Error) -> bool:
    code = _primary_code(error)
    if code is not None:
        return code in _TRANSIENT_CODES
    text = str(error)
    return "locked" in text or "busy" in text or "disk I/O" in text


# A job for the thread: an op on the connection (`run`, a `write` group) or, when the connection
# is not to be used (opening and closing it), a plain call; and the futures its outcome goes to
# (a group commit has many).
_Job = tuple["Op[Any] | None", "Callable[[], Any] | None", list["asyncio.Future[Any]"]]
_Outcome = tuple[list["asyncio.Future[Any]"], bool, Any]


class SqliteWorker:
    """The one thread that owns the connection; `run(op)` executes `op(conn)` there.

    The thread is fed by a plain queue: the jobs posted during one turn of the event loop go
    over as one batch and their outcomes come back in one wake-up of the loop
    (`call_soon_threadsafe`), so under load a call's few writes and a flood of lookups cost one
    hand-off per batch, not one each. The ops of a batch also share one transaction (a commit
    per op cost half of each write): an op's own error goes to its caller only, while the
    others commit together (see `_in_one_transaction`).
    `write(sql, params)` joins the statements of one turn into one op (group commit).

    Transient failures (database locked by another process past the busy timeout, disk I/O
    errors) are retried a few times with growing pauses, in the worker thread, then reported
    as StoreUnavailable. Ops raise the domain errors (NotFound, Conflict) themselves.
    """

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 2000,
        retries: int = 4,
        retry_delay_s: float = 0.05,
    ) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        # None tells the thread to stop (after every batch put before it).
        self._jobs: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, list[_Job]] | None] = (
            queue.SimpleQueue()
        )
        self._pending: list[_Job] = []  # this turn's jobs, handed over by `_flush`
        # This turn's group commit: its statements and their callers, filled until `_flush`.
        self._group: tuple[list[tuple[str, tuple[Any, ...]]], list[asyncio.Future[Any]]] | None
        self._group = None
        self._conn: sqlite3.Connection | None = None
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread once started (tests check where work happens)."""
        return self._thread

    async def run(self, op: Op[T]) -> T:
        """Run `op(connection)` in the worker thread, retrying transient SQLite errors."""
        if self._closed:
            raise StoreUnavailable("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._post(loop, (op, None, [done]))
        return await done

    def write(self, sql: str, params: tuple[Any, ...]) -> asyncio.Future[None]:
        """Execute one statement in this turn's write transaction; the future resolves once it
        is committed. A failure (the whole transaction is rolled back) reaches every caller
        of the batch."""
        if self._closed:
            raise StoreUnavailable("the SQLite store is closed")
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        group = self._group
        if group is None:
            group = self._group = ([], [])
            commit = functools.partial(_commit_group, group[0])
            self._post(loop, (commit, None, group[1]))
        group[0].append((sql, params))
        group[1].append(done)
        return done

    def _post(self, loop: asyncio.AbstractEventLoop, job: _Job) -> None:
        if not self._pending:
            loop.call_soon(self._flush, loop)
        self._pending.append(job)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        self._group = None  # later writes start the next transaction
        if batch:
            if self._thread is None:
                self._start()
            self._jobs.put((loop, batch))

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="sdpbx-sqlite", daemon=True)
        self._thread.start()

    async def _call(self, job: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        self._post(loop, (None, job, [done]))
        return await done

    async def open(self) -> None:
        await self._call(self._connect)

    async def close(self) -> None:
        """Run what was already asked, close the connection, stop the thread. Later calls
        raise StoreUnavailable."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._post(loop, (None, self._disconnect, [done]))
        self._flush(loop)  # now: the scheduled flush finds nothing left
        self._jobs.put(None)
        await done

    # Everything below runs in the worker thread.

    def _serve(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            loop, batch = item
            outcomes: list[_Outcome] = []
            ops: list[tuple[Op[Any], list[asyncio.Future[Any]]]] = []
            for op, call, futures in batch:
                if op is not None:
                    ops.append((op, futures))
                    continue
                self._run_ops(ops, outcomes)
                ops = []
                assert call is not None
                try:
                    outcomes.append((futures, True, self._retrying(call)))
                except BaseException as error:  # delivered to the job's callers
                    outcomes.append((futures, False, error))
            self._run_ops(ops, outcomes)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_deliver, outcomes)

    def _run_ops(self, ops: list[tuple[Op[Any], list[asyncio.Future[Any]]]],
                 outcomes: list[_Outcome]) -> None:
        """Run `ops` in one transaction (a savepoint each), or alone when that fails."""
        if len(ops) > 1 and self._conn is not None and not self._conn.in_transaction:
            together = self._in_one_transaction(self._conn, ops)
            if together is not None:
                outcomes.extend(together)
                return
        for op, futures in ops:  # one, or a shared transaction that could not commit
            try:
                conn = self._connection()
                outcomes.append((futures, True, self._retrying(functools.partial(op, conn))))
            except BaseException as error:  # delivered to the op's callers
                outcomes.append((futures, False, error))

    def _in_one_transaction(
        self, conn: sqlite3.Connection, ops: list[tuple[Op[Any], list[asyncio.Future[Any]]]]
    ) -> list[_Outcome] | None:
        """The outcomes of `ops` run in one transaction, or None when it did not commit
        (nothing of it stays: the caller runs each op on its own, with retries).

        No savepoint per op: each statement lets the GIL go and comes back for it, a
        hand-off with the event loop's thread when that one is busy. An op that answers an
        error of its own (Conflict, NotFound) without having changed a row just reports it;
        one that changed rows first is undone with the whole batch, and all of it then runs
        op by op (rare: the ops check before they write)."""
        outcomes: list[_Outcome] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op, futures in ops:
                changes = conn.total_changes
                try:
                    value = op(conn)
                except sqlite3.Error:
                    raise  # the connection's trouble, not the op's: run them one by one
                except Exception as error:  # the op's own answer (Conflict, NotFound...)
                    if conn.total_changes != changes:
                        raise  # it wrote before it failed: undo the batch, go one by one
                    outcomes.append((futures, False, error))
                    continue
                outcomes.append((futures, True, value))
            conn.execute("COMMIT")
        except BaseException as error:  # sqlite3.Error, or worse: each op alone will tell
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            log.info("sqlite batch not committed, running its ops one by one: %s", error,
                     extra={"path": self.path, "ops": len(ops)})
            return None
        return outcomes

    def _connect(self) -> None:
        if self._conn is not None:
            return
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout_ms / 1000,  # SQLite's own busy wait before "locked"
            isolation_level=None,  # autocommit; transactions are explicit BEGIN IMMEDIATE
            uri=self.path.startswith("file:"),
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(sqlite3.Error):  # closing anyway
            conn.execute("PRAGMA optimize")  # keeps query plans good; cheap at close
        conn.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the SQLite store is not open")
        return self._conn

    def _retrying(self, job: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                return job()
            except sqlite3.Error as error:
                if _is_full(error):
                    log.error("sqlite database or disk is full: %s", error,
                              extra={"path": self.path})
                    raise StoreUnavailable(f"SQLite {self.path}: disk full") from None
                if not _is_transient(error) or attempt >= self._retries:
                    log.error("sqlite failed: %s", error,
                              extra={"path": self.path, "attempts": attempt + 1})
                    raise StoreUnavailable(f"SQLite {self.path}: {error}") from None
                log.warning("sqlite busy, retrying: %s", error,
                            extra={"path": self.path, "attempt": attempt + 1})
                time.sleep(self._retry_delay_s * 2**attempt)  # in the worker, not the loop
                attempt += 1
            except OSError as error:  # creating the folder at open: not a directory, no room
                log.error("sqlite file unusable: %s", error, extra={"path": self.path})
                raise StoreUnavailable(f"SQLite {self.path}: {error.strerror or error}") from None


def _commit_group(
    statements: list[tuple[str, tuple[Any, ...]]], conn: sqlite3.Connection
) -> None:
    def body() -> None:
        for sql, params in statements:
            conn.execute(sql, params)

    _write(conn, body)


def _deliver(outcomes: list[_Outcome]) -> None:
    for futures, ok, value in outcomes:
        for done in futures:
            if done.done():
                continue  # its caller was cancelled
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)


def _write(conn: sqlite3.Connection, body: Callable[[], T]) -> T:
    """Run `body` in one write transaction. BEGIN IMMEDIATE takes the write lock up front, so
    two processes never deadlock upgrading read locks. Inside the worker's batch transaction
    `body` just runs: a batch whose op fails after writing is undone whole and its ops run
    again one by one, each then in a transaction of its own."""
    if conn.in_transaction:
        return body()
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = body()
        conn.execute("COMMIT")
        return result
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# --- helpers ----------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def encode_cursor(*values: Any) -> str:
    """An opaque page token: base64url of the last item's sort key."""
    return base64.urlsafe_b64encode(_json(list(values)).encode()).decode("ascii").rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        values = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise ValueError(f"bad page cursor {cursor!r}") from None
    if not isinstance(values, list) or len(values) != arity:
        raise ValueError(f"bad page cursor {cursor!r}")
    return values


def _page(rows: Sequence[T], limit: int, key: Callable[[T], tuple[Any, ...]]) -> Page[T]:
    """Rows were fetched with LIMIT limit+1: an extra row means there is a next page."""
    if len(rows) <= limit:
        return Page(items=list(rows))
    items = list(rows[:limit])
    return Page(items=items, cursor=encode_cursor(*key(items[-1])))


def _limit(limit: int) -> int:
    return max(1, int(limit))


# --- calls ------------------------------------------------------------------------------------

_CALL_COLUMNS = (
    "call_id, edge_id, state, direction, caller, callee, created_at, updated_at, "
    "answered_at, ended_at, legs, data, version"
)
SQL_CALL_GET = f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_id = ?"
SQL_CALLS_ACTIVE = (
    f"SELECT {_CALL_COLUMNS} FROM calls WHERE active = 1 AND call_id > ? "
    "ORDER BY call_id LIMIT ?"
)
SQL_CALLS_ACTIVE_BY_EDGE = (
    f"SELECT {_CALL_COLUMNS} FROM calls WHERE active = 1 AND edge_id = ? AND call_id > ? "
    "ORDER BY call_id LIMIT ?"
)


def _call_row(record: CallRecord) -> tuple[Any, ...]:
    return (
        record.edge_id, record.state, int(record.active), record.direction, record.caller,
        record.callee, record.created_at, record.updated_at, record.answered_at,
        record.ended_at, _json([dict(leg) for leg in record.legs]), _json(dict(record.data)),
    )


def _call_record(row: Sequence[Any]) -> CallRecord:
    return CallRecord(
        call_id=row[0], edge_id=row[1], state=row[2], direction=row[3], caller=row[4],
        callee=row[5], created_at=row[6], updated_at=row[7], answered_at=row[8],
        ended_at=row[9], legs=tuple(json.loads(row[10])), data=json.loads(row[11]),
        version=row[12],
    )


class SqliteCallStore:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def create(self, record: CallRecord) -> CallRecord:
        stored = dataclasses.replace(record, version=1)

        def op(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO calls (edge_id, state, active, direction, caller, callee, "
                    "created_at, updated_at, answered_at, ended_at, legs, data, call_id, "
                    "version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (*_call_row(stored), stored.call_id),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"call {record.call_id!r} exists") from None

        await self._worker.run(op)
        return stored

    async def get(self, call_id: str) -> CallRecord:
        def op(conn: sqlite3.Connection) -> CallRecord:
            row = conn.execute(SQL_CALL_GET, (call_id,)).fetchone()
            if row is None:
                raise NotFound(f"no call {call_id!r}")
            return _call_record(row)

        return await self._worker.run(op)

    async def update(self, record: CallRecord, expected_version: int) -> CallRecord:
        stored = dataclasses.replace(record, version=expected_version + 1)

        def op(conn: sqlite3.Connection) -> None:
            cursor = conn.execute(
                "UPDATE calls SET edge_id = ?, state = ?, active = ?, direction = ?, "
                "caller = ?, callee = ?, created_at = ?, updated_at = ?, answered_at = ?, "
                "ended_at = ?, legs = ?, data = ?, version = ? "
                "WHERE call_id = ? AND version = ?",
                (*_call_row(stored), stored.version, record.call_id, expected_version),
            )
            if cursor.rowcount == 0:
                _missing_or_moved(conn, "SELECT 1 FROM calls WHERE call_id = ?",
                                  (record.call_id,), f"call {record.call_id!r}")

        await self._worker.run(op)
        return stored

    async def delete(self, call_id: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM calls WHERE call_id = ?", (call_id,)).rowcount == 0:
                raise NotFound(f"no call {call_id!r}")

        await self._worker.run(op)

    async def list_active(
        self, *, edge_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[CallRecord]:
        after = "" if cursor is None else str(decode_cursor(cursor, 1)[0])
        count = _limit(limit)

        def op(conn: sqlite3.Connection) -> list[CallRecord]:
            if edge_id is None:
                rows = conn.execute(SQL_CALLS_ACTIVE, (after, count + 1)).fetchall()
            else:
                rows = conn.execute(
                    SQL_CALLS_ACTIVE_BY_EDGE, (edge_id, after, count + 1)
                ).fetchall()
            return [_call_record(row) for row in rows]

        return _page(await self._worker.run(op), count, lambda call: (call.call_id,))


def _missing_or_moved(
    conn: sqlite3.Connection, probe: str, key: tuple[Any, ...], what: str
) -> None:
    """After a conditional UPDATE changed nothing: say whether the row is gone or newer."""
    if conn.execute(probe, key).fetchone() is None:
        raise NotFound(f"no {what}")
    raise Conflict(f"{what} was changed by someone else (version moved on)")


# --- registrations ----------------------------------------------------------------------------

_BINDING_COLUMNS = (
    "aor, contact, expires_at, q, call_id, cseq, source, transport, user_agent, edge_id, "
    "path, instance_id, reg_id, registered_at"
)
SQL_BINDINGS = (
    f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE aor = ? AND expires_at > ? "
    "ORDER BY q DESC, registered_at DESC, contact"
)
SQL_BINDINGS_EXPIRED = (
    f"SELECT {_BINDING_COLUMNS} FROM bindings WHERE edge_id = ? AND expires_at <= ? "
    "ORDER BY expires_at LIMIT ?"
)
SQL_BINDINGS_COUNT = "SELECT count(*) FROM bindings WHERE expires_at > ?"


def _binding(row: Sequence[Any]) -> Binding:
    return Binding(
        aor=row[0], contact=row[1], expires_at=row[2], q=row[3], call_id=row[4], cseq=row[5],
        source=row[6], transport=row[7], user_agent=row[8], edge_id=row[9],
        path=tuple(json.loads(row[10])) if row[10] != "[]" else (), instance_id=row[11],
        reg_id=row[12], registered_at=row[13],
    )


_PUT_BINDING = (
    f"INSERT OR REPLACE INTO bindings ({_BINDING_COLUMNS}) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_BINDING = "DELETE FROM bindings WHERE aor = ? AND contact = ?"


class SqliteRegistrationStore:
    """Binding writes are group-committed (`SqliteWorker.write`): the puts and removes made
    during one turn of the event loop reach the worker as one job and one transaction (a
    REGISTER flood then costs one thread hand-off and one commit per batch, not per
    registration). Each caller still waits for its own write to be committed, and a failure
    reaches every caller of the batch.
    """

    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def bindings(self, aor: str, now: float) -> list[Binding]:
        # Expired rows are filtered here, so a binding is gone at its expiry even though the
        # sweep deletes it later.
        def op(conn: sqlite3.Connection) -> list[Binding]:
            return [_binding(row) for row in conn.execute(SQL_BINDINGS, (aor, now))]

        return await self._worker.run(op)

    async def put(self, binding: Binding) -> None:
        row = (
            binding.aor, binding.contact, binding.expires_at, binding.q, binding.call_id,
            binding.cseq, binding.source, binding.transport, binding.user_agent,
            binding.edge_id, _json(list(binding.path)) if binding.path else "[]",
            binding.instance_id, binding.reg_id, binding.registered_at,
        )
        await self._worker.write(_PUT_BINDING, row)

    async def remove(self, aor: str, contact: str) -> None:
        """Remove one binding; removing one that is gone is not an error."""
        await self._worker.write(_DELETE_BINDING, (aor, contact))

    async def remove_all(self, aor: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM bindings WHERE aor = ?", (aor,))

        await self._worker.run(op)

    async def expired(self, edge_id: str, now: float, limit: int = 500) -> list[Binding]:
        count = _limit(limit)

        def op(conn: sqlite3.Connection) -> list[Binding]:
            rows = conn.execute(SQL_BINDINGS_EXPIRED, (edge_id, now, count))
            return [_binding(row) for row in rows]

        return await self._worker.run(op)

    async def count(self, now: float) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(SQL_BINDINGS_COUNT, (now,)).fetchone()[0])

        return await self._worker.run(op)


# --- directory --------------------------------------------------------------------------------

_USER_COLUMNS = (
    "username, realm, ha1_md5, ha1_sha256, enabled, display_name, allow_guest_calls, version"
)
SQL_USER_GET = f"SELECT {_USER_COLUMNS} FROM users WHERE username = ? AND realm = ?"
SQL_USERS = (
    f"SELECT {_USER_COLUMNS} FROM users WHERE (username, realm) > (?, ?) "
    "ORDER BY username, realm LIMIT ?"
)
SQL_ENTRY_GET = (
    "SELECT kind, name, data, version FROM directory_entries WHERE kind = ? AND name = ?"
)
SQL_ENTRIES = (
    "SELECT kind, name, data, version FROM directory_entries WHERE kind = ? AND name > ? "
    "ORDER BY name LIMIT ?"
)
SQL_API_KEY_GET = (
    "SELECT key_id, secret_sha256, scopes, name, created_at FROM api_keys WHERE key_id = ?"
)
SQL_API_KEYS = (
    "SELECT key_id, secret_sha256, scopes, name, created_at FROM api_keys ORDER BY key_id"
)
SQL_REVISION = "SELECT revision FROM directory_revision WHERE id = 1"
_BUMP_REVISION = "UPDATE directory_revision SET revision = revision + 1 WHERE id = 1"


def _user(row: Sequence[Any]) -> User:
    return User(
        username=row[0], realm=row[1], ha1_md5=row[2], ha1_sha256=row[3], enabled=bool(row[4]),
        display_name=row[5], allow_guest_calls=bool(row[6]), version=row[7],
    )


def _entry(row: Sequence[Any]) -> DirectoryEntry:
    return DirectoryEntry(kind=row[0], name=row[1], data=json.loads(row[2]), version=row[3])


def _api_key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        key_id=row[0], secret_sha256=row[1], scopes=tuple(json.loads(row[2])), name=row[3],
        created_at=row[4],
    )


class SqliteDirectoryStore:
    """Users, trunks/routes/applications and API keys. Every write bumps the revision row in
    the same transaction, so a cache that saw revision N has seen every write up to N."""

    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def get_user(self, username: str, realm: str) -> User:
        def op(conn: sqlite3.Connection) -> User:
            row = conn.execute(SQL_USER_GET, (username, realm)).fetchone()
            if row is None:
                raise NotFound(f"no user {username!r} in realm {realm!r}")
            return _user(row)

        return await self._worker.run(op)

    async def put_user(self, user: User, expected_version: int | None = None) -> User:
        stored = dataclasses.replace(
            user, version=1 if expected_version is None else expected_version + 1
        )
        what = f"user {user.username!r} in realm {user.realm!r}"
        values = (
            stored.ha1_md5, stored.ha1_sha256, int(stored.enabled), stored.display_name,
            int(stored.allow_guest_calls), stored.version,
        )

        def body(conn: sqlite3.Connection) -> None:
            if expected_version is None:
                try:
                    conn.execute(
                        "INSERT INTO users (ha1_md5, ha1_sha256, enabled, display_name, "
                        "allow_guest_calls, version, username, realm) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (*values, user.username, user.realm),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"{what} exists") from None
            else:
                cursor = conn.execute(
                    "UPDATE users SET ha1_md5 = ?, ha1_sha256 = ?, enabled = ?, "
                    "display_name = ?, allow_guest_calls = ?, version = ? "
                    "WHERE username = ? AND realm = ? AND version = ?",
                    (*values, user.username, user.realm, expected_version),
                )
                if cursor.rowcount == 0:
                    _missing_or_moved(
                        conn, "SELECT 1 FROM users WHERE username = ? AND realm = ?",
                        (user.username, user.realm), what,
                    )
            conn.execute(_BUMP_REVISION)

        await self._worker.run(lambda conn: _write(conn, lambda: body(conn)))
        return stored

    async def delete_user(self, username: str, realm: str) -> None:
        """Delete a user; NotFound if there is none (the API answers 404)."""
        await self._delete(
            "DELETE FROM users WHERE username = ? AND realm = ?", (username, realm),
            f"no user {username!r} in realm {realm!r}",
        )

    async def list_users(self, *, limit: int = 100, cursor: str | None = None) -> Page[User]:
        after = ["", ""] if cursor is None else [str(v) for v in decode_cursor(cursor, 2)]
        count = _limit(limit)

        def op(conn: sqlite3.Connection) -> list[User]:
            return [_user(row) for row in conn.execute(SQL_USERS, (*after, count + 1))]

        users = await self._worker.run(op)
        return _page(users, count, lambda user: (user.username, user.realm))

    async def get_entry(self, kind: DirectoryKind, name: str) -> DirectoryEntry:
        def op(conn: sqlite3.Connection) -> DirectoryEntry:
            row = conn.execute(SQL_ENTRY_GET, (kind, name)).fetchone()
            if row is None:
                raise NotFound(f"no {kind} {name!r}")
            return _entry(row)

        return await self._worker.run(op)

    async def put_entry(
        self, entry: DirectoryEntry, expected_version: int | None = None
    ) -> DirectoryEntry:
        stored = dataclasses.replace(
            entry, version=1 if expected_version is None else expected_version + 1
        )
        what = f"{entry.kind} {entry.name!r}"

        def body(conn: sqlite3.Connection) -> None:
            data = _json(dict(stored.data))
            if expected_version is None:
                try:
                    conn.execute(
                        "INSERT INTO directory_entries (kind, name, data, version) "
                        "VALUES (?, ?, ?, 1)",
                        (entry.kind, entry.name, data),
                    )
                except sqlite3.IntegrityError:
                    raise Conflict(f"{what} exists") from None
            else:
                cursor = conn.execute(
                    "UPDATE directory_entries SET data = ?, version = ? "
                    "WHERE kind = ? AND name = ? AND version = ?",
                    (data, stored.version, entry.kind, entry.name, expected_version),
                )
                if cursor.rowcount == 0:
                    _missing_or_moved(
                        conn, "SELECT 1 FROM directory_entries WHERE kind = ? AND name = ?",
                        (entry.kind, entry.name), what,
                    )
            conn.execute(_BUMP_REVISION)

        await self._worker.run(lambda conn: _write(conn, lambda: body(conn)))
        return stored

    async def delete_entry(self, kind: DirectoryKind, name: str) -> None:
        """Delete a trunk, route or application; NotFound if there is none."""
        await self._delete(
            "DELETE FROM directory_entries WHERE kind = ? AND name = ?", (kind, name),
            f"no {kind} {name!r}",
        )

    async def list_entries(
        self, kind: DirectoryKind, *, limit: int = 100, cursor: str | None = None
    ) -> Page[DirectoryEntry]:
        after = "" if cursor is None else str(decode_cursor(cursor, 1)[0])
        count = _limit(limit)

        def op(conn: sqlite3.Connection) -> list[DirectoryEntry]:
            return [_entry(row) for row in conn.execute(SQL_ENTRIES, (kind, after, count + 1))]

        return _page(await self._worker.run(op), count, lambda entry: (entry.name,))

    async def get_api_key(self, key_id: str) -> ApiKey:
        def op(conn: sqlite3.Connection) -> ApiKey:
            row = conn.execute(SQL_API_KEY_GET, (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no API key {key_id!r}")
            return _api_key(row)

        return await self._worker.run(op)

    async def put_api_key(self, key: ApiKey) -> None:
        """Store (or replace) an API key: its id is random, so a clash is not a user error."""
        row = (key.key_id, key.secret_sha256, _json(list(key.scopes)), key.name, key.created_at)

        def body(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO api_keys (key_id, secret_sha256, scopes, name, "
                "created_at) VALUES (?, ?, ?, ?, ?)",
                row,
            )
            conn.execute(_BUMP_REVISION)

        await self._worker.run(lambda conn: _write(conn, lambda: body(conn)))

    async def delete_api_key(self, key_id: str) -> None:
        """Revoke an API key; NotFound if there is none."""
        await self._delete(
            "DELETE FROM api_keys WHERE key_id = ?", (key_id,), f"no API key {key_id!r}"
        )

    async def list_api_keys(self) -> list[ApiKey]:
        def op(conn: sqlite3.Connection) -> list[ApiKey]:
            return [_api_key(row) for row in conn.execute(SQL_API_KEYS)]

        return await self._worker.run(op)

    async def revision(self) -> int:
        def op(conn: sqlite3.Connection) -> int:
            return int(conn.execute(SQL_REVISION).fetchone()[0])

        return await self._worker.run(op)

    async def _delete(self, sql: str, key: tuple[Any, ...], missing: str) -> None:
        def body(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, key).rowcount == 0:
                raise NotFound(missing)  # rolls back: nothing changed, no new revision
            conn.execute(_BUMP_REVISION)

        await self._worker.run(lambda conn: _write(conn, lambda: body(conn)))


# --- CDR index --------------------------------------------------------------------------------

_CDR_COLUMNS = (
    "call_id, start_time, end_time, caller, callee, direction, status, duration, cdr_key, "
    "recording_key, edge_id"
)
SQL_CDR_GET = f"SELECT {_CDR_COLUMNS} FROM cdrs WHERE call_id = ?"


def cdr_query_sql(query: CdrQuery) -> tuple[str, list[Any]]:
    """The SELECT for `query`: time range, exact-match filters, keyset pagination."""
    where = ["start_time >= ?", "start_time < ?"]
    params: list[Any] = [query.start, query.end]
    for column, value in (
        ("caller", query.caller), ("callee", query.callee), ("status", query.status),
        ("direction", query.direction),
    ):
        if value is not None:
            where.append(f"{column} = ?")  # column names come from this fixed list only
            params.append(value)
    if query.cursor is not None:
        start, call_id = decode_cursor(query.cursor, 2)
        if not isinstance(start, int | float) or not isinstance(call_id, str):
            raise ValueError(f"bad page cursor {query.cursor!r}")
        where.append("(start_time, call_id) < (?, ?)")
        params.extend((start, call_id))
    params.append(_limit(query.limit) + 1)
    sql = (
        f"SELECT {_CDR_COLUMNS} FROM cdrs WHERE {' AND '.join(where)} "
        "ORDER BY start_time DESC, call_id DESC LIMIT ?"
    )
    return sql, params


def _cdr(row: Sequence[Any]) -> CdrEntry:
    return CdrEntry(
        call_id=row[0], start_time=row[1], end_time=row[2], caller=row[3], callee=row[4],
        direction=row[5], status=row[6], duration=row[7], cdr_key=row[8],
        recording_key=row[9], edge_id=row[10],
    )


class SqliteCdrStore:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def put(self, entry: CdrEntry) -> None:
        """Index a CDR; putting the same call again replaces it (the consumer may retry)."""
        row = (
            entry.call_id, entry.start_time, entry.end_time, entry.caller, entry.callee,
            entry.direction, entry.status, entry.duration, entry.cdr_key, entry.recording_key,
            entry.edge_id,
        )

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO cdrs ({_CDR_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._worker.run(op)

    async def get(self, call_id: str) -> CdrEntry:
        def op(conn: sqlite3.Connection) -> CdrEntry:
            row = conn.execute(SQL_CDR_GET, (call_id,)).fetchone()
            if row is None:
                raise NotFound(f"no CDR for call {call_id!r}")
            return _cdr(row)

        return await self._worker.run(op)

    async def query(self, query: CdrQuery) -> Page[CdrEntry]:
        sql, params = cdr_query_sql(query)

        def op(conn: sqlite3.Connection) -> list[CdrEntry]:
            return [_cdr(row) for row in conn.execute(sql, params)]

        rows = await self._worker.run(op)
        return _page(rows, _limit(query.limit), lambda cdr: (cdr.start_time, cdr.call_id))


# --- edges ------------------------------------------------------------------------------------

_EDGE_COLUMNS = "edge_id, sip_addresses, http_address, load, started_at, heartbeat_at, expires_at"
SQL_EDGE_GET = f"SELECT {_EDGE_COLUMNS} FROM edges WHERE edge_id = ?"
SQL_EDGES_ALIVE = f"SELECT {_EDGE_COLUMNS} FROM edges WHERE expires_at > ?"


def _edge(row: Sequence[Any]) -> EdgeInfo:
    return EdgeInfo(
        edge_id=row[0], sip_addresses=tuple(json.loads(row[1])), http_address=row[2],
        load=row[3], started_at=row[4], heartbeat_at=row[5], expires_at=row[6],
    )


class SqliteEdgeRegistry:
    def __init__(self, worker: SqliteWorker) -> None:
        self._worker = worker

    async def heartbeat(self, edge: EdgeInfo) -> None:
        row = (
            edge.edge_id, _json(list(edge.sip_addresses)), edge.http_address, edge.load,
            edge.started_at, edge.heartbeat_at, edge.expires_at,
        )

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT OR REPLACE INTO edges ({_EDGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )

        await self._worker.run(op)

    async def get(self, edge_id: str) -> EdgeInfo:
        def op(conn: sqlite3.Connection) -> EdgeInfo:
            row = conn.execute(SQL_EDGE_GET, (edge_id,)).fetchone()
            if row is None:
                raise NotFound(f"no edge {edge_id!r}")
            return _edge(row)

        return await self._worker.run(op)

    async def alive(self, now: float) -> list[EdgeInfo]:
        def op(conn: sqlite3.Connection) -> list[EdgeInfo]:
            return [_edge(row) for row in conn.execute(SQL_EDGES_ALIVE, (now,))]

        edges = await self._worker.run(op)
        return sorted(edges, key=lambda edge: edge.edge_id)

    async def remove(self, edge_id: str) -> None:
        """Forget an edge; removing one that is gone is not an error."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM edges WHERE edge_id = ?", (edge_id,))

        await self._worker.run(op)


# --- the bundle -------------------------------------------------------------------------------


class SqliteStores:
    """Every store over one SQLite file, plus the blob store it was given."""

    def __init__(self, worker: SqliteWorker, blobs: BlobStore) -> None:
        self.worker = worker
        self.calls: CallStore = SqliteCallStore(worker)
        self.registrations: RegistrationStore = SqliteRegistrationStore(worker)
        self.directory: DirectoryStore = SqliteDirectoryStore(worker)
        self.cdrs: CdrStore = SqliteCdrStore(worker)
        self.edges: EdgeRegistry = SqliteEdgeRegistry(worker)
        self.blobs: BlobStore = blobs

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        blobs: BlobStore,
        busy_timeout_ms: int = 2000,
        retries: int = 4,
        retry_delay_s: float = 0.05,
    ) -> SqliteStores:
        """Open (creating it and its folder if needed) and migrate the database at `path`."""
        worker = SqliteWorker(
            os.fspath(path), busy_timeout_ms=busy_timeout_ms, retries=retries,
            retry_delay_s=retry_delay_s,
        )
        try:
            await worker.open()
        except BaseException:
            await worker.close()
            raise
        return cls(worker, blobs)

    async def close(self) -> None:
        try:
            await self.worker.close()
        finally:
            await self.blobs.close()


def _conforms(stores: SqliteStores) -> Stores:  # mypy proves the bundle matches the port
    return stores
