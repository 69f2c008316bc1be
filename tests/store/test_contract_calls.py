"""Contract of `CallStore`, run on every backend: versions, optimistic locking, races, the
active-call listing and its pagination."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.store.errors import Conflict, NotFound
from control.store.models import CallRecord, CallState
from control.store.ports import Stores
from tests.store.conftest import (
    JSON_OBJECTS,
    JSON_VALUES,
    Backend,
    all_pages,
    assert_same_json,
    run_all,
)

pytestmark = pytest.mark.anyio

T0 = float(int(time.time()))  # records are dated around now: see the `now` fixture


def call(call_id: str, *, edge_id: str = "edge-a", state: CallState = "trying",
         **fields: Any) -> CallRecord:
    return CallRecord(call_id=call_id, edge_id=edge_id, state=state, created_at=T0,
                      updated_at=T0, **fields)


def assert_same_call(got: CallRecord, want: CallRecord) -> None:
    assert got == want
    assert isinstance(got.legs, tuple)
    assert_same_json(got.legs, want.legs, "legs")
    assert_same_json(got.data, want.data, "data")


FULL = call(
    "a84b4c76e66710@pc33.atlanta.example.com",
    edge_id="edge-1",
    state="answered",
    direction="inbound",
    caller="sip:alice@atlanta.example.com",
    callee="sip:bob@biloxi.example.com",
    answered_at=T0 + 2.5,
    ended_at=None,
    legs=(
        {"call_id": "leg-1@a", "local_tag": "9fxced76sl", "remote_tag": "314159", "cseq": 102,
         "route_set": ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
         "media": {"ip": "192.0.2.101", "port": 49172, "codecs": ["PCMU", "PCMA"]}},
        {"call_id": "leg-2@b", "local_tag": "", "remote_tag": None, "cseq": 1,
         "route_set": [], "media": {}},
    ),
    data={"ncco": {"step": 3, "steps": [{"action": "talk", "text": "Grüß Gott, 你好 👋"}]},
          "vars": {"pin": "0042", "tries": 2, "ratio": 0.25, "ok": True, "none": None},
          "": "empty key", "list": [1, [2, [3, {"deep": "é"}]]]},
)


async def test_create_then_get_round_trips_every_field(stores: Stores) -> None:
    created = await stores.calls.create(FULL)
    assert created.version == 1
    assert_same_call(created, replace(FULL, version=1))
    assert_same_call(await stores.calls.get(FULL.call_id), created)


async def test_create_of_a_minimal_record_keeps_the_defaults(stores: Stores) -> None:
    record = call("minimal")
    created = await stores.calls.create(record)
    assert_same_call(await stores.calls.get("minimal"), replace(record, version=1))
    assert created.legs == () and created.data == {} and created.answered_at is None


async def test_create_sets_version_1_whatever_the_record_says(stores: Stores) -> None:
    created = await stores.calls.create(replace(call("c1"), version=7))
    assert created.version == 1
    assert (await stores.calls.get("c1")).version == 1


async def test_create_of_an_existing_call_is_a_conflict(stores: Stores) -> None:
    await stores.calls.create(call("dup", caller="first"))
    with pytest.raises(Conflict):
        await stores.calls.create(call("dup", caller="second"))
    stored = await stores.calls.get("dup")
    assert stored.caller == "first" and stored.version == 1


async def test_get_of_a_missing_call_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.calls.get("no-such-call")


async def test_update_with_the_stored_version_increments_it(stores: Stores) -> None:
    created = await stores.calls.create(call("u1"))
    ringing = replace(created, state="ringing", updated_at=T0 + 1, legs=FULL.legs)
    updated = await stores.calls.update(ringing, expected_version=1)
    assert_same_call(updated, replace(ringing, version=2))
    assert_same_call(await stores.calls.get("u1"), updated)
    answered = replace(updated, state="answered", answered_at=T0 + 3, data={"step": 1})
    again = await stores.calls.update(answered, expected_version=2)
    assert again.version == 3
    assert_same_call(await stores.calls.get("u1"), replace(answered, version=3))


async def test_update_takes_the_version_from_expected_version(stores: Stores) -> None:
    await stores.calls.create(call("u2"))
    updated = await stores.calls.update(call("u2", state="ringing", version=42), 1)
    assert updated.version == 2
    assert (await stores.calls.get("u2")).version == 2


async def test_update_with_a_stale_version_is_a_conflict(stores: Stores) -> None:
    created = await stores.calls.create(call("stale"))
    await stores.calls.update(replace(created, state="ringing"), expected_version=1)
    with pytest.raises(Conflict):
        await stores.calls.update(replace(created, state="failed"), expected_version=1)
    with pytest.raises(Conflict):
        await stores.calls.update(replace(created, state="failed"), expected_version=3)
    stored = await stores.calls.get("stale")
    assert stored.state == "ringing" and stored.version == 2


async def test_update_of_a_missing_call_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.calls.update(call("ghost", state="ringing", version=1), 1)
    with pytest.raises(NotFound):
        await stores.calls.get("ghost")  # and the update did not create it


async def test_two_concurrent_writers_with_the_same_version_exactly_one_wins(
    stores: Stores,
) -> None:
    ids = [f"race-{n}" for n in range(8)]
    await run_all(stores.calls.create(call(call_id)) for call_id in ids)

    async def race(call_id: str) -> None:
        writers = [call(call_id, state="ringing", caller=f"writer-{n}") for n in range(2)]
        results = await asyncio.gather(
            *(stores.calls.update(w, expected_version=1) for w in writers),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, CallRecord)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Conflict), lost
        assert won[0].version == 2
        stored = await stores.calls.get(call_id)
        assert stored.version == 2 and stored.caller == won[0].caller

    await asyncio.gather(*(race(call_id) for call_id in ids))


async def test_writers_on_two_bundles_exactly_one_wins(
    backend: Backend, stores: Stores
) -> None:
    """Two edges (two processes, two clients) updating the same call from the same version."""
    other = await backend.open()
    try:
        await stores.calls.create(call("shared"))
        results = await asyncio.gather(
            stores.calls.update(call("shared", state="answered", caller="edge-a"), 1),
            other.calls.update(call("shared", state="failed", caller="edge-b"), 1),
            return_exceptions=True,
        )
        won = [r for r in results if isinstance(r, CallRecord)]
        assert len(won) == 1, results
        assert sum(isinstance(r, Conflict) for r in results) == 1, results
        seen_by_other = await other.calls.get("shared")
        assert seen_by_other == won[0]
    finally:
        await other.close()


async def test_list_active_excludes_final_states(stores: Stores) -> None:
    states: list[tuple[str, CallState]] = [
        ("t", "trying"), ("r", "ringing"), ("a", "answered"), ("c", "completed"),
        ("f", "failed")]
    for call_id, state in states:
        await stores.calls.create(call(call_id, state=state))
    # A call that ends after it was listed as active must leave the listing.
    ended = await stores.calls.create(call("ended", state="answered"))
    await stores.calls.update(replace(ended, state="completed", ended_at=T0 + 60), 1)
    page = await stores.calls.list_active()
    assert sorted(r.call_id for r in page.items) == ["a", "r", "t"]
    assert page.cursor is None
    assert all(r.active for r in page.items)


async def test_list_active_filters_by_edge(stores: Stores) -> None:
    for n in range(4):
        await stores.calls.create(call(f"a{n}", edge_id="edge-a"))
        await stores.calls.create(call(f"b{n}", edge_id="edge-b", state="answered"))
    await stores.calls.create(call("a-done", edge_id="edge-a", state="completed"))
    only_a = await stores.calls.list_active(edge_id="edge-a")
    assert sorted(r.call_id for r in only_a.items) == ["a0", "a1", "a2", "a3"]
    only_b = await stores.calls.list_active(edge_id="edge-b")
    assert {r.edge_id for r in only_b.items} == {"edge-b"} and len(only_b.items) == 4
    assert (await stores.calls.list_active(edge_id="edge-z")).items == []
    every = await stores.calls.list_active()
    assert len(every.items) == 8


async def test_list_active_paginates_without_losing_or_repeating(stores: Stores) -> None:
    records = [call(f"page-{n:03d}@host", edge_id=f"edge-{n % 3}") for n in range(250)]
    await run_all(stores.calls.create(r) for r in records)
    pages = await all_pages(
        lambda cursor: stores.calls.list_active(limit=100, cursor=cursor), limit=100
    )
    ids = [r.call_id for page in pages for r in page]
    assert len(ids) == len(set(ids)) == 250
    assert set(ids) == {r.call_id for r in records}
    assert 3 <= len(pages) <= 4  # 100, 100, 50 (and maybe a last empty page)
    assert [len(p) for p in pages[:2]] == [100, 100]
    # The same through the edge filter: edge-0 holds 84 of them.
    edge_pages = await all_pages(
        lambda cursor: stores.calls.list_active(edge_id="edge-0", limit=30, cursor=cursor),
        limit=30,
    )
    edge_ids = [r.call_id for page in edge_pages for r in page]
    assert len(edge_ids) == len(set(edge_ids)) == 84
    assert {r.edge_id for page in edge_pages for r in page} == {"edge-0"}


async def test_delete_removes_the_record(stores: Stores) -> None:
    await stores.calls.create(call("gone", state="answered"))
    await stores.calls.create(call("kept", state="answered"))
    await stores.calls.delete("gone")
    with pytest.raises(NotFound):
        await stores.calls.get("gone")
    assert [r.call_id for r in (await stores.calls.list_active()).items] == ["kept"]
    recreated = await stores.calls.create(call("gone"))  # the id is free again
    assert recreated.version == 1


async def test_delete_of_a_missing_call_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.calls.delete("never-created")


_STATES: list[CallState] = ["trying", "ringing", "answered", "completed", "failed"]
_OFFSETS = st.floats(min_value=0, max_value=86_400, allow_nan=False)


@st.composite
def call_records(draw: st.DrawFn) -> CallRecord:
    created = T0 + draw(_OFFSETS)
    maybe_time = st.none() | _OFFSETS.map(lambda s: created + s)
    return CallRecord(
        call_id="set-below",
        edge_id=draw(st.text(min_size=1, max_size=16)),
        state=draw(st.sampled_from(_STATES)),
        direction=draw(st.sampled_from(["inbound", "outbound", "internal"])),
        caller=draw(st.text(max_size=40)),
        callee=draw(st.text(max_size=40)),
        created_at=created,
        updated_at=created + draw(_OFFSETS),
        answered_at=draw(maybe_time),
        ended_at=draw(maybe_time),
        legs=tuple(draw(st.lists(JSON_OBJECTS, max_size=3))),
        data=draw(st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=6)),
    )


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(record=call_records(), call_id=st.text(min_size=1, max_size=60))
async def test_any_record_round_trips(stores: Stores, record: CallRecord, call_id: str) -> None:
    # Hypothesis may draw the same id twice: a uuid keeps examples apart in the shared bundle.
    record = replace(record, call_id=f"{call_id}/{uuid.uuid4().hex}")
    created = await stores.calls.create(record)
    assert_same_call(created, replace(record, version=1))
    assert_same_call(await stores.calls.get(record.call_id), created)
    changed = replace(created, data={"changed": record.data}, legs=record.legs[::-1])
    updated = await stores.calls.update(changed, expected_version=1)
    assert_same_call(await stores.calls.get(record.call_id), updated)
