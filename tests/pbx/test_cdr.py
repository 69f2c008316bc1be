"""edge.pbx.cdr: blob keys, building a CDR from what a call saw, and `CdrWriter` on the real
SQLite stores and a local blob folder (through a real `BlobSpool`): the JSON and the recording
land under their dated keys, the index entry is queryable, a store outage never reaches the
call, and a CDR written while the spool is stopped is uploaded by the next start."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from control.contracts.blob_keys import cdr_key, recording_key, safe_call_id
from control.contracts.cdr import (
    CallDetailRecord,
    HangupMessage,
    LastError,
    LegEvent,
    RecorderMedia,
    Rewrite,
    rfc3339,
)
from control.store.errors import StoreUnavailable
from control.store.factory import open_stores
from control.store.local_blobs import LocalBlobStore, validate_key
from control.store.models import CdrEntry, Page
from control.store.ports import BlobSettings, CdrQuery, CdrStore, Stores, StoreSettings
from control.store.spool import Backoff, BlobSpool
from edge.pbx.cdr import RECORDING_TRACK_ID, CdrWriter, build_cdr, call_status

T = TypeVar("T")
START = datetime(2026, 11, 27, 23, 59, 1, 123000, tzinfo=UTC).timestamp()
CALL_ID = "a84b4c76e66710@pc33.atlanta.example.com"
FAST = Backoff(base_s=0.001, cap_s=0.005)


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    async def main() -> T:
        async with asyncio.timeout(timeout_s):
            return await scenario()
    return asyncio.run(main())


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


# --- keys ---------------------------------------------------------------------------------------


def test_keys_are_dated_by_the_utc_day_of_the_start() -> None:
    assert cdr_key(CALL_ID, START) == f"cdr/2026/11/27/{CALL_ID}.json"
    assert recording_key(CALL_ID, START) == f"recordings/2026/11/27/{CALL_ID}.wav"
    # The day startTime shows, also when the millisecond rounds into the next day.
    midnight = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    assert cdr_key("x", midnight - 0.0004) == "cdr/2026/11/28/x.json"
    assert cdr_key("x", midnight - 0.0006) == "cdr/2026/11/27/x.json"


def test_call_ids_are_percent_encoded_outside_the_safe_set() -> None:
    assert safe_call_id("Ab9._@-") == "Ab9._@-"
    assert safe_call_id("a/b%c d") == "a%2Fb%25c%20d"
    assert safe_call_id("..") == ".."  # one segment of a longer name: `..json` is fine
    assert cdr_key("..", START) == "cdr/2026/11/27/...json"
    assert safe_call_id("\u00e9<>") == "%C3%A9%3C%3E"
    with pytest.raises(ValueError):
        cdr_key("", START)


def test_long_call_ids_are_cut_and_hashed_apart() -> None:
    one, two = "x" * 300 + "1", "x" * 300 + "2"
    assert len(safe_call_id(one)) == 120 + 1 + 32
    assert safe_call_id(one) != safe_call_id(two)
    assert safe_call_id(one).startswith("x" * 120 + "~")
    assert safe_call_id("x" * 119 + "/" * 50).startswith("x" * 119 + "~")  # not "x%2"
    assert len(safe_call_id("x" * 160)) == 160  # at the limit: kept whole


@given(st.text(min_size=1, max_size=60))
def test_any_call_id_gives_one_safe_segment_that_decodes_back(call_id: str) -> None:
    key = cdr_key(call_id, START)
    assert validate_key(key) == key
    name = key.split("/")[-1]
    assert key.count("/") == 4 and name.endswith(".json")
    encoded = name.removesuffix(".json")
    if "~" in encoded:  # a long one: cut (never inside a %XX) and hashed
        assert len(encoded) <= 120 + 1 + 32
        assert not re.search(r"%.?~", encoded)
    else:
        assert unquote(encoded, errors="surrogateescape") == call_id


@given(st.text(min_size=1, max_size=80), st.text(min_size=1, max_size=80))
def test_different_call_ids_never_share_a_key(one: str, two: str) -> None:
    if one != two:
        assert safe_call_id(one) != safe_call_id(two)


# --- building -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("answered", "code", "reason", "status"), [
    (True, 200, "byCaller", "completed"),
    (False, 487, "canceled", "missed"),
    (False, 480, "noAnswer", "missed"),
    (False, 486, "rejected", "missed"),
    (False, 603, None, "missed"),
    (False, 404, "failed", "failed"),
    (False, 503, "serverUnavailable", "failed"),
    (False, 0, "bySystem", "failed"),
])
def test_call_status(answered: bool, code: int, reason: str | None, status: str) -> None:
    assert call_status(answered=answered, status_code=code, hangup_reason=reason) == status


def test_build_cdr_fills_what_follows_from_the_call() -> None:
    cdr = build_cdr(
        call_id=CALL_ID, caller="sip:+15551234567@carrier.example",
        callee="<sip:1002@pbx.example.com>", direction="inbound",
        start_time=START, ring_time=START + 0.4, answer_time=START + 3.877,
        end_time=START + 123.8771, status_code=200, hangup_reason="byCaller", edge_id="e1",
        metadata={"crm": 1},
    )
    assert cdr.start_time == "2026-11-27T23:59:01.123Z"
    assert cdr.ring_time == "2026-11-27T23:59:01.523Z"
    assert cdr.answer_time == "2026-11-27T23:59:05.000Z"
    assert cdr.end_time == "2026-11-28T00:01:05.000Z"
    assert cdr.status == "completed" and cdr.session_id == CALL_ID
    assert (cdr.from_number, cdr.to_number) == ("+15551234567", "1002")
    assert cdr.duration_secs == 123.877 and cdr.billsec_secs == 120.0
    assert cdr.metadata == {"crm": 1} and cdr.edge_id == "e1"

    missed = build_cdr(call_id="c2", caller="tel:+15551234567", callee="not a uri",
                       direction="outbound", start_time=START, end_time=START - 5,
                       status_code=487, hangup_reason="canceled")
    assert missed.status == "missed" and missed.answer_time is None
    assert missed.billsec_secs == 0.0 and missed.duration_secs == 0.0  # never negative
    assert (missed.from_number, missed.to_number) == ("+15551234567", None)


_SIP_CODES = st.sampled_from([0, 180, 200, 404, 408, 480, 486, 487, 503, 603, 699])


@given(
    start=st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False),
    ring=st.none() | st.floats(min_value=0, max_value=30),
    answer=st.none() | st.floats(min_value=0, max_value=60),
    length=st.floats(min_value=-5, max_value=86_400),
    code=_SIP_CODES,
    reason=st.none() | st.sampled_from(["byCaller", "canceled", "noAnswer", "failed"]),
    caller=st.text(max_size=40),
    messages=st.lists(st.tuples(_SIP_CODES, st.none() | st.text(max_size=20)), max_size=3),
    events=st.lists(st.tuples(st.floats(min_value=0, max_value=90),
                              st.sampled_from(["a", "b-1"]),
                              st.sampled_from(["added", "bridged", "removed"])), max_size=4),
    error=st.none() | st.tuples(_SIP_CODES, st.text(max_size=20)),
)
def test_what_build_cdr_builds_unvalidated_validates(
    start: float, ring: float | None, answer: float | None, length: float, code: int,
    reason: str | None, caller: str, messages: list[tuple[int, str | None]],
    events: list[tuple[float, str, str]], error: tuple[int, str] | None,
) -> None:
    """build_cdr skips pydantic's validation (model_construct, for speed): whatever the edge
    can hand it must still be a valid CDR, equal to the one its own JSON validates into."""
    cdr = build_cdr(
        call_id=CALL_ID, caller=caller, callee="sip:1002@pbx.example.com", direction="inbound",
        start_time=start, end_time=start + length, status_code=code,
        ring_time=None if ring is None else start + ring,
        answer_time=None if answer is None else start + answer, hangup_reason=reason,
        hangup_messages=[HangupMessage.model_construct(code=c, reason=r, target="sip:x@y")
                         for c, r in messages],
        rewrite=Rewrite.model_construct(caller_original="1", caller_final="2",
                                        callee_original="3", callee_final="4"),
        sip_trunk_id="t", sip_gateway="192.0.2.1:5060",
        leg_events=[LegEvent.model_construct(timestamp=rfc3339(start + at), leg_id=leg,
                                             event_type=kind) for at, leg, kind in events],
        last_error=None if error is None else LastError.model_construct(code=error[0],
                                                                        reason=error[1]),
        metadata={"crm": {"id": 1}}, edge_id="e1",
    )
    assert CallDetailRecord.model_validate(cdr.model_dump()) == cdr
    assert CallDetailRecord.from_json_bytes(cdr.to_json_bytes()) == cdr


# --- the writer on real stores ------------------------------------------------------------------


@dataclass
class Rig:
    stores: Stores
    blobs: LocalBlobStore
    spool: BlobSpool
    writer: CdrWriter
    tmp: Path
    extra: dict[str, Any] = field(default_factory=dict)


@asynccontextmanager
async def rig(tmp: Path, *, cdr_store: CdrStore | None = None,
              start_spool: bool = True) -> AsyncIterator[Rig]:
    settings = StoreSettings(backend="sqlite", sqlite_path=str(tmp / "sdpbx.sqlite3"),
                             blobs=BlobSettings(kind="local", root=str(tmp / "blobs")))
    stores = await open_stores(settings)
    assert isinstance(stores.blobs, LocalBlobStore)
    spool = BlobSpool(tmp / "spool", stores.blobs, backoff=FAST)
    if start_spool:
        await spool.start()
    writer = CdrWriter(spool, cdr_store or stores.cdrs, edge_id="edge-7", sleep=no_sleep,
                       index_backoff=FAST)
    try:
        yield Rig(stores, stores.blobs, spool, writer, tmp)
    finally:
        await writer.close()
        await spool.stop()
        await stores.close()


def ended_call(call_id: str = CALL_ID, **fields: Any) -> CallDetailRecord:
    values: dict[str, Any] = {
        "call_id": call_id, "caller": "sip:1001@pbx.example.com",
        "callee": "sip:1002@pbx.example.com", "direction": "internal", "start_time": START,
        "answer_time": START + 2.0, "end_time": START + 62.5, "status_code": 200,
        "hangup_reason": "byCallee"}
    values.update(fields)
    return build_cdr(**values)


def test_writer_stores_the_json_and_a_queryable_index_entry(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            cdr = ended_call()
            await r.writer.write(cdr)
            await r.spool.wait_empty()
            await r.writer.drain()
            key = f"cdr/2026/11/27/{CALL_ID}.json"
            path = r.tmp / "blobs" / "cdr" / "2026" / "11" / "27" / f"{CALL_ID}.json"
            assert path.is_file()
            stored = CallDetailRecord.from_json_bytes(path.read_bytes())
            assert stored == cdr.model_copy(update={"edge_id": "edge-7"})
            assert json.loads(path.read_bytes())["edgeId"] == "edge-7"

            entry = await r.stores.cdrs.get(CALL_ID)
            assert entry == CdrEntry(
                call_id=CALL_ID, start_time=round(START, 3), end_time=START + 62.5,
                caller="sip:1001@pbx.example.com", callee="sip:1002@pbx.example.com",
                direction="internal", status="completed", duration=62.5, cdr_key=key,
                recording_key="", edge_id="edge-7")
            page: Page[CdrEntry] = await r.stores.cdrs.query(
                CdrQuery(start=START - 60, end=START + 60, status="completed"))
            assert [e.call_id for e in page.items] == [CALL_ID]
            assert r.writer.written == 1

    run(scenario)


def test_unanswered_calls_get_a_cdr_too(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.writer.write(ended_call("c-missed", answer_time=None, status_code=487,
                                            hangup_reason="canceled", end_time=START + 9))
            await r.writer.write(ended_call("c-failed", answer_time=None, status_code=404,
                                            hangup_reason="failed", end_time=START + 0.2))
            await r.spool.wait_empty()
            await r.writer.drain()
            statuses = {e.call_id: e.status for e in (await r.stores.cdrs.query(
                CdrQuery(start=START - 1, end=START + 1))).items}
            assert statuses == {"c-missed": "missed", "c-failed": "failed"}
            missed = json.loads(await r.blobs.get(cdr_key("c-missed", START)))
            assert missed["answerTime"] is None and missed["billsecSecs"] == 0.0

    run(scenario)


def test_recording_is_taken_over_and_listed_in_the_cdr(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            wav = r.tmp / "rec-in-progress.wav"
            audio = b"RIFF" + os.urandom(40_000)
            wav.write_bytes(audio)
            await r.writer.write(ended_call(), recording_path=str(wav))
            assert not wav.exists()  # the spool took the file over
            await r.spool.wait_empty()
            await r.writer.drain()
            wav_key = f"recordings/2026/11/27/{CALL_ID}.wav"
            assert await r.blobs.get(wav_key) == audio
            cdr = CallDetailRecord.from_json_bytes(await r.blobs.get(cdr_key(CALL_ID, START)))
            assert cdr.recorder == [RecorderMedia(track_id=RECORDING_TRACK_ID, path=wav_key,
                                                  size=len(audio))]
            assert (await r.stores.cdrs.get(CALL_ID)).recording_key == wav_key

    run(scenario)


def test_a_missing_recording_does_not_cost_the_cdr(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            await r.writer.write(ended_call(), recording_path=str(r.tmp / "nope.wav"))
            await r.spool.wait_empty()
            await r.writer.drain()
            cdr = CallDetailRecord.from_json_bytes(await r.blobs.get(cdr_key(CALL_ID, START)))
            assert cdr.recorder == []
            assert (await r.stores.cdrs.get(CALL_ID)).recording_key == ""

    with caplog.at_level(logging.ERROR, logger="sdpbx.cdr"):
        run(scenario)
    assert any("not saved" in record.getMessage() for record in caplog.records)


class FlakyCdrStore:
    """A CdrStore that fails `failures` times, then delegates."""

    def __init__(self, inner: CdrStore | None, failures: int) -> None:
        self.inner = inner
        self.failures = failures
        self.attempts = 0

    async def put(self, entry: CdrEntry) -> None:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise StoreUnavailable("DynamoDB is throttling")
        assert self.inner is not None
        await self.inner.put(entry)

    async def get(self, call_id: str) -> CdrEntry:
        assert self.inner is not None
        return await self.inner.get(call_id)

    async def query(self, query: CdrQuery) -> Page[CdrEntry]:
        assert self.inner is not None
        return await self.inner.query(query)


def test_index_failures_are_retried_in_the_background(tmp_path: Path) -> None:
    async def scenario() -> None:
        flaky = FlakyCdrStore(None, failures=3)
        async with rig(tmp_path, cdr_store=flaky) as r:
            flaky.inner = r.stores.cdrs
            await r.writer.write(ended_call())  # returns although the store is failing
            await r.writer.drain()
            assert flaky.attempts == 4
            assert (await r.stores.cdrs.get(CALL_ID)).cdr_key == cdr_key(CALL_ID, START)
            assert r.writer.index_failures == 0

    run(scenario)


def test_an_index_outage_is_logged_never_raised(tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        down = FlakyCdrStore(None, failures=1_000)
        async with rig(tmp_path, cdr_store=down) as r:
            await r.writer.write(ended_call())
            await r.writer.drain()
            assert down.attempts == 5 and r.writer.index_failures == 1
            await r.spool.wait_empty()  # the CDR itself is safe
            assert await r.blobs.exists(cdr_key(CALL_ID, START))

    with caplog.at_level(logging.WARNING, logger="sdpbx.cdr"):
        run(scenario)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and cdr_key(CALL_ID, START) in errors[0].getMessage()


def test_written_during_shutdown_it_is_uploaded_by_the_next_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As with a remote store (S3): the local folder's write-through is switched off here.
    monkeypatch.setattr(LocalBlobStore, "durable_writes", False)

    async def scenario() -> None:
        async with rig(tmp_path, start_spool=False) as r:
            wav = r.tmp / "r.wav"
            wav.write_bytes(b"RIFF-late")
            await r.writer.write(ended_call(), recording_path=str(wav))  # the spool is stopped
            assert not await r.blobs.exists(cdr_key(CALL_ID, START))
            assert r.spool.pending() == 2
        # A new process on the same folders.
        stores = await open_stores(StoreSettings(
            backend="sqlite", sqlite_path=str(tmp_path / "sdpbx.sqlite3"),
            blobs=BlobSettings(kind="local", root=str(tmp_path / "blobs"))))
        spool = BlobSpool(tmp_path / "spool", stores.blobs, backoff=FAST)
        await spool.start()
        try:
            await spool.wait_empty()
            assert await stores.blobs.get(recording_key(CALL_ID, START)) == b"RIFF-late"
            stored = json.loads(await stores.blobs.get(cdr_key(CALL_ID, START)))
            assert stored["callId"] == CALL_ID
            assert (await stores.cdrs.get(CALL_ID)).status == "completed"
        finally:
            await spool.stop()
            await stores.close()

    run(scenario)


def test_a_local_folder_is_written_through(tmp_path: Path) -> None:
    """The embedded default: the CDR and the recording are in the folder when write returns,
    even with the uploader stopped, and nothing is left in the spool."""
    async def scenario() -> None:
        async with rig(tmp_path, start_spool=False) as r:
            wav = r.tmp / "r.wav"
            wav.write_bytes(b"RIFF-now")
            await r.writer.write(ended_call(), recording_path=str(wav))
            assert await r.blobs.get(recording_key(CALL_ID, START)) == b"RIFF-now"
            assert json.loads(await r.blobs.get(cdr_key(CALL_ID, START)))["callId"] == CALL_ID
            assert r.spool.pending() == 0 and not wav.exists()

    run(scenario)


def test_a_full_disk_is_raised_to_the_caller(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async def scenario() -> None:
        async with rig(tmp_path) as r:
            async def full(key: str, data: bytes, content_type: str = "") -> None:
                raise StoreUnavailable("spool: disk full")
            monkeypatch.setattr(r.spool, "write", full)
            with pytest.raises(StoreUnavailable):
                await r.writer.write(ended_call())
            assert r.writer.pending_index_writes() == 0 and r.writer.written == 0

    run(scenario)
