"""Contract of `CdrStore`, run on every backend: the CDR index queried by time range (across
UTC day partitions: DynamoDB keeps one per day), newest first, exact-match filters, and cursor
pagination that neither loses nor repeats an entry (also with filters and equal start times)."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest

from control.store.errors import NotFound
from control.store.models import CdrEntry, Page
from control.store.ports import CdrQuery, Stores
from tests.store.conftest import all_pages, run_all

pytestmark = pytest.mark.anyio

DAY = 86_400.0
# Midnight UTC five days ago: day partitions D1, D2, D3 are recent, real days.
D1 = (int(time.time()) // 86_400 - 5) * DAY
D2, D3, D4 = D1 + DAY, D1 + 2 * DAY, D1 + 3 * DAY


def cdr(call_id: str, start: float, **fields: Any) -> CdrEntry:
    values: dict[str, Any] = {
        "caller": "sip:1001@pbx.example.com", "callee": "sip:1002@pbx.example.com",
        "direction": "internal", "status": "completed", "duration": 30.0}
    values.update(fields)
    return CdrEntry(call_id=call_id, start_time=start, end_time=start + values["duration"],
                    **values)


async def query_pages(
    stores: Stores, start: float, end: float, limit: int = 4, **filters: Any
) -> list[list[CdrEntry]]:
    """Every page of a query (a small limit by default, so pagination is exercised too)."""

    async def fetch(cursor: str | None) -> Page[CdrEntry]:
        return await stores.cdrs.query(
            CdrQuery(start=start, end=end, limit=limit, cursor=cursor, **filters))

    return await all_pages(fetch, limit)


async def query(stores: Stores, start: float, end: float, **filters: Any) -> list[CdrEntry]:
    return [entry for page in await query_pages(stores, start, end, **filters) for entry in page]


async def test_put_then_get_round_trips_every_field(stores: Stores) -> None:
    full = CdrEntry(
        call_id="a84b4c76e66710@pc33.atlanta.example.com", start_time=D2 + 3600.25,
        end_time=D2 + 3725.5, caller="sip:+15551234567@carrier.example",
        callee="sip:1002@pbx.example.com", direction="inbound", status="completed",
        duration=125.25, cdr_key="cdr/2024/03/02/a84b4c76e66710@pc33.atlanta.example.com.json",
        recording_key="recordings/2024/03/02/a84b.wav", edge_id="edge-3")
    await stores.cdrs.put(full)
    assert await stores.cdrs.get(full.call_id) == full


async def test_an_entry_with_default_fields_round_trips(stores: Stores) -> None:
    bare = CdrEntry(call_id="bare", start_time=D2, end_time=D2, caller="", callee="",
                    direction="outbound", status="missed")
    await stores.cdrs.put(bare)
    assert await stores.cdrs.get("bare") == bare
    assert await query(stores, D2, D3) == [bare]


async def test_get_of_a_missing_entry_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.cdrs.get("missing")


async def test_put_again_replaces_the_entry(stores: Stores) -> None:
    """The CDR consumer retries: indexing the same call twice leaves one entry."""
    first = cdr("again", D2 + 10)
    await stores.cdrs.put(first)
    second = replace(first, status="failed", recording_key="recordings/x.wav")
    await stores.cdrs.put(second)
    assert await stores.cdrs.get("again") == second
    assert await query(stores, D1, D4) == [second]


async def test_query_by_time_range_across_three_days(stores: Stores) -> None:
    inside = [
        cdr("d1-midnight", D1),  # == start: included
        cdr("d1-noon", D1 + DAY / 2),
        cdr("d2-midnight", D2),
        cdr("d2-last-second", D3 - 0.5),
        cdr("d3-morning", D3 + 8 * 3600),
        cdr("d3-late", D4 - 0.001),
    ]
    outside = [
        cdr("before", D1 - 1),
        cdr("long-before", D1 - 40 * DAY),
        cdr("d4-midnight", D4),  # == end: excluded
        cdr("after", D4 + DAY / 2),
    ]
    await run_all(stores.cdrs.put(e) for e in [*outside, *inside])
    got = await query(stores, D1, D4)
    assert [e.call_id for e in got] == [e.call_id for e in reversed(inside)]  # newest first
    assert got == list(reversed(inside))
    # A range that does not fall on day boundaries: noon of D1 to 08:00 of D3, inclusive start.
    partial = await query(stores, D1 + DAY / 2, D3 + 8 * 3600)
    assert [e.call_id for e in partial] == ["d2-last-second", "d2-midnight", "d1-noon"]
    assert await query(stores, D2 + 1, D2 + 2) == []
    assert await query(stores, D4 + DAY, D4 + 3 * DAY) == []


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("caller", "sip:alice@a.example", {"c1", "c3"}),
        ("callee", "sip:bob@b.example", {"c1", "c2"}),
        ("status", "failed", {"c2", "c4"}),
        ("direction", "inbound", {"c3", "c4"}),
    ],
)
async def test_each_filter_is_an_exact_match(
    stores: Stores, field: str, value: str, expected: set[str]
) -> None:
    entries = [
        cdr("c1", D1 + 10, caller="sip:alice@a.example", callee="sip:bob@b.example"),
        cdr("c2", D2 + 20, caller="sip:carol@c.example", callee="sip:bob@b.example",
            status="failed"),
        cdr("c3", D2 + 30, caller="sip:alice@a.example", callee="sip:dave@d.example",
            direction="inbound"),
        cdr("c4", D3 + 40, caller="sip:alice@a.example.org", callee="sip:bob@b.example.org",
            status="failed", direction="inbound"),
        cdr("c5", D3 + 50, caller="sip:ALICE@a.example", callee="sip:Bob@b.example",
            status="completed-ish", direction="inbound-ish"),
    ]
    await run_all(stores.cdrs.put(e) for e in entries)
    got = await query(stores, D1, D4, **{field: value})
    assert {e.call_id for e in got} == expected
    assert [e.start_time for e in got] == sorted((e.start_time for e in got), reverse=True)


async def test_filters_combine(stores: Stores) -> None:
    await run_all(stores.cdrs.put(e) for e in [
        cdr("x1", D1 + 1, caller="a", status="failed", direction="inbound"),
        cdr("x2", D2 + 1, caller="a", status="completed", direction="inbound"),
        cdr("x3", D3 + 1, caller="a", status="failed", direction="outbound"),
        cdr("x4", D3 + 2, caller="b", status="failed", direction="inbound"),
    ])
    got = await query(stores, D1, D4, caller="a", status="failed", direction="inbound")
    assert [e.call_id for e in got] == ["x1"]
    none = await query(stores, D1, D4, caller="a", callee="nobody")
    assert none == []


async def test_pagination_neither_loses_nor_repeats(stores: Stores) -> None:
    entries = [cdr(f"p{n:02d}", D1 + n * 3 * 3600) for n in range(23)]  # ~8 a day, 3 days
    ties = [cdr(f"tie-{n}", D2 + 5 * 3600) for n in range(5)]  # equal start times
    await run_all(stores.cdrs.put(e) for e in [*entries, *ties])
    for limit in (1, 5, 100):
        pages = await query_pages(stores, D1, D4, limit=limit)
        got = [e for page in pages for e in page]
        ids = [e.call_id for e in got]
        assert len(ids) == len(set(ids)) == 28, (limit, ids)
        assert [e.start_time for e in got] == sorted((e.start_time for e in got), reverse=True)
        if limit == 5:
            assert all(len(p) == 5 for p in pages[:5])  # full pages until the end


async def test_filtered_pagination_finds_every_match(stores: Stores) -> None:
    """Filters that match few entries must not end the listing early (DynamoDB applies
    `Limit` before a FilterExpression: a page may come back short, the cursor continues)."""
    entries = [cdr(f"f{n:02d}", D1 + n * 2 * 3600 + 7,
                   status="failed" if n % 6 == 0 else "completed") for n in range(36)]
    await run_all(stores.cdrs.put(e) for e in entries)
    pages = await query_pages(stores, D1, D4, limit=2, status="failed")
    got = [e.call_id for page in pages for e in page]
    assert got == ["f30", "f24", "f18", "f12", "f06", "f00"]
