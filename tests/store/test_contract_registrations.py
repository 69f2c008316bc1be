"""Contract of `RegistrationStore`, run on every backend: upsert by (AOR, contact), order by q,
expiry decided at read time (whether or not the backend's TTL deleted the item yet), the
per-edge sweep of expired bindings, removal and counting."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.store.models import Binding
from control.store.ports import Stores
from tests.store.conftest import Backend

pytestmark = pytest.mark.anyio

ALICE = "sip:alice@atlanta.example.com"
BOB = "sip:bob@biloxi.example.com"


def binding(aor: str, contact: str, now: float, *, expires_in: float = 3600,
            q: float = 1.0, registered_ago: float = 0, edge_id: str = "edge-a") -> Binding:
    return Binding(aor=aor, contact=contact, expires_at=now + expires_in, q=q,
                   registered_at=now - registered_ago, edge_id=edge_id,
                   call_id=f"reg-{contact}", cseq=1)


async def test_put_then_bindings_round_trips_every_field(stores: Stores, now: float) -> None:
    full = Binding(
        aor=ALICE,
        contact="<sip:alice@192.0.2.4:5060;transport=tcp;ob>;+sip.instance=\"<urn:uuid:f81d>\"",
        expires_at=now + 3600,
        q=0.7,
        call_id="843817637684230@998sdasdh09",
        cseq=1826,
        source="203.0.113.9:61234",
        transport="TCP",
        user_agent="Linphone/5.2 (Zoë's phone ☎)",
        edge_id="edge-7",
        path=("<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"),
        instance_id="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
        reg_id=1,
        registered_at=now - 5.25,
    )
    await stores.registrations.put(full)
    got = await stores.registrations.bindings(ALICE, now)
    assert got == [full]
    assert isinstance(got[0].path, tuple)


async def test_a_binding_with_default_fields_round_trips(stores: Stores, now: float) -> None:
    """Empty edge id, source and path (a store may not index empty strings: DynamoDB)."""
    bare = Binding(aor=BOB, contact="<sip:bob@192.0.2.5>", expires_at=now + 60)
    await stores.registrations.put(bare)
    assert await stores.registrations.bindings(BOB, now) == [bare]


async def test_bindings_of_an_unknown_aor_is_empty(stores: Stores, now: float) -> None:
    assert await stores.registrations.bindings("sip:nobody@example.com", now) == []


async def test_put_of_the_same_contact_refreshes_it(stores: Stores, now: float) -> None:
    first = binding(ALICE, "<sip:alice@192.0.2.4>", now, expires_in=60)
    await stores.registrations.put(first)
    refreshed = replace(first, expires_at=now + 3600, cseq=2, source="198.51.100.1:5060",
                        registered_at=now + 1)
    await stores.registrations.put(refreshed)
    assert await stores.registrations.bindings(ALICE, now) == [refreshed]
    assert await stores.registrations.count(now) == 1


async def test_contacts_are_sorted_by_q_then_newest(stores: Stores, now: float) -> None:
    low = binding(ALICE, "<sip:a@low>", now, q=0.1)
    mid_old = binding(ALICE, "<sip:a@mid-old>", now, q=0.5, registered_ago=100)
    mid_new = binding(ALICE, "<sip:a@mid-new>", now, q=0.5, registered_ago=10)
    top = binding(ALICE, "<sip:a@top>", now, q=1.0, registered_ago=500)
    for b in (mid_old, low, top, mid_new):
        await stores.registrations.put(b)
    got = await stores.registrations.bindings(ALICE, now)
    assert [b.contact for b in got] == [top.contact, mid_new.contact, mid_old.contact,
                                        low.contact]


async def test_aors_are_isolated_even_when_one_prefixes_another(
    stores: Stores, now: float
) -> None:
    short = binding("sip:100@example.com", "<sip:100@192.0.2.1>", now)
    longer = binding("sip:1001@example.com", "<sip:1001@192.0.2.2>", now)
    prefix = binding("sip:100@example.co", "<sip:100@192.0.2.3>", now)
    for b in (short, longer, prefix):
        await stores.registrations.put(b)
    assert await stores.registrations.bindings("sip:100@example.com", now) == [short]
    assert await stores.registrations.bindings("sip:1001@example.com", now) == [longer]
    assert await stores.registrations.bindings("sip:100@example.co", now) == [prefix]


async def test_expired_bindings_are_invisible_at_read_time(stores: Stores, now: float) -> None:
    """Expiry is decided by `now`, not by a TTL sweep: moto never deletes, DynamoDB Local
    deletes seconds late, SQLite not at all until the sweep."""
    short = binding(ALICE, "<sip:a@short>", now, expires_in=30)
    long = binding(ALICE, "<sip:a@long>", now, expires_in=300)
    await stores.registrations.put(short)
    await stores.registrations.put(long)
    both = {long.contact, short.contact}
    assert {b.contact for b in await stores.registrations.bindings(ALICE, now)} == both
    assert {b.contact for b in await stores.registrations.bindings(ALICE, now + 29.5)} == both
    assert await stores.registrations.bindings(ALICE, now + 31) == [long]
    assert await stores.registrations.bindings(ALICE, now + 30) == [long]  # expires_at <= now
    assert await stores.registrations.bindings(ALICE, now + 301) == []
    assert await stores.registrations.count(now + 31) == 1
    assert await stores.registrations.count(now + 301) == 0


async def test_expired_lists_only_that_edges_expired_bindings(
    stores: Stores, now: float
) -> None:
    a_gone = binding(ALICE, "<sip:a@gone>", now, expires_in=10, edge_id="edge-a")
    a_live = binding(ALICE, "<sip:a@live>", now, expires_in=1000, edge_id="edge-a")
    b_gone = binding(BOB, "<sip:b@gone>", now, expires_in=10, edge_id="edge-b")
    a_gone_2 = binding(BOB, "<sip:b@gone-2>", now, expires_in=20, edge_id="edge-a")
    for b in (a_gone, a_live, b_gone, a_gone_2):
        await stores.registrations.put(b)
    assert await stores.registrations.expired("edge-a", now) == []
    got = await stores.registrations.expired("edge-a", now + 100)
    assert sorted(got, key=lambda b: b.contact) == [a_gone, a_gone_2]
    assert await stores.registrations.expired("edge-b", now + 100) == [b_gone]
    assert await stores.registrations.expired("edge-c", now + 100) == []
    assert len(await stores.registrations.expired("edge-a", now + 100, limit=1)) == 1
    # The sweep removes what it found; the live binding stays.
    for b in got:
        await stores.registrations.remove(b.aor, b.contact)
    assert await stores.registrations.expired("edge-a", now + 100) == []
    assert await stores.registrations.bindings(ALICE, now) == [a_live]


async def test_expired_after_a_refresh_moves_to_the_new_edge(
    stores: Stores, now: float
) -> None:
    old = binding(ALICE, "<sip:a@roaming>", now, expires_in=10, edge_id="edge-a")
    await stores.registrations.put(old)
    await stores.registrations.put(replace(old, edge_id="edge-b", expires_at=now + 20))
    assert await stores.registrations.expired("edge-a", now + 100) == []
    assert [b.edge_id for b in await stores.registrations.expired("edge-b", now + 100)] == [
        "edge-b"]


async def test_remove_and_remove_all(stores: Stores, now: float) -> None:
    one = binding(ALICE, "<sip:a@1>", now)
    two = binding(ALICE, "<sip:a@2>", now, q=0.5)
    bob = binding(BOB, "<sip:b@1>", now)
    for b in (one, two, bob):
        await stores.registrations.put(b)
    await stores.registrations.remove(ALICE, one.contact)
    assert await stores.registrations.bindings(ALICE, now) == [two]
    await stores.registrations.put(one)
    await stores.registrations.remove_all(ALICE)
    assert await stores.registrations.bindings(ALICE, now) == []
    assert await stores.registrations.bindings(BOB, now) == [bob]
    # Removing what is not there is not an error (an un-REGISTER may arrive twice).
    await stores.registrations.remove(ALICE, one.contact)
    await stores.registrations.remove_all(ALICE)


async def test_count_counts_unexpired_bindings_of_every_aor(stores: Stores, now: float) -> None:
    assert await stores.registrations.count(now) == 0
    for n in range(5):
        await stores.registrations.put(binding(f"sip:{n}@example.com", "<sip:x@1>", now,
                                               expires_in=100 * (n + 1)))
    await stores.registrations.put(binding("sip:0@example.com", "<sip:x@2>", now))
    assert await stores.registrations.count(now) == 6
    assert await stores.registrations.count(now + 250) == 4  # 300, 400, 500 and the 3600
    await stores.registrations.remove_all("sip:0@example.com")
    assert await stores.registrations.count(now) == 4


async def test_ttl_deletion_removes_expired_items(backend: Backend, stores: Stores) -> None:
    """A bonus beyond the contract: DynamoDB Local really deletes an item whose TTL passed
    (on its next sweep, seconds later). Other backends keep it until the offline sweep
    removes it, which the contract allows."""
    if backend.name != "dynamodb-local":
        pytest.skip("only DynamoDB Local implements TTL deletion")
    now = time.time()
    # Expired a minute ago, so the TTL attribute (expiry + a grace) is already in the past.
    gone = binding(ALICE, "<sip:a@ttl>", now, expires_in=-60, edge_id="edge-ttl")
    await stores.registrations.put(gone)
    for _ in range(60):  # 30 s at most
        if not await stores.registrations.expired("edge-ttl", now):
            return
        await anyio.sleep(0.5)
    pytest.fail("DynamoDB Local did not delete the expired binding within 30 s")


_TEXT = st.text(max_size=30)


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(aor=st.text(min_size=1, max_size=40), contact=st.text(min_size=1, max_size=60),
       fields=st.fixed_dictionaries({
           "q": st.sampled_from([0.0, 0.1, 0.5, 0.999, 1.0]), "call_id": _TEXT,
           "cseq": st.integers(0, 2**31 - 1), "source": _TEXT, "transport": _TEXT,
           "user_agent": _TEXT, "edge_id": _TEXT, "instance_id": _TEXT,
           "path": st.lists(st.text(min_size=1, max_size=30), max_size=3).map(tuple),
           "reg_id": st.none() | st.integers(0, 2**31 - 1),
           # Unix times to the microsecond (DynamoDB cannot hold magnitudes under 1e-130).
           "registered_at": st.integers(0, 10**16).map(lambda us: us / 1e6)}))
async def test_any_binding_round_trips(
    stores: Stores, now: float, aor: str, contact: str, fields: dict[str, Any]
) -> None:
    aor = f"{aor}/{uuid.uuid4().hex}"  # hypothesis may draw an AOR twice
    bound = Binding(aor=aor, contact=contact, expires_at=now + 600.125, **fields)
    await stores.registrations.put(bound)
    assert await stores.registrations.bindings(aor, now) == [bound]
    if bound.edge_id:
        assert bound in await stores.registrations.expired(bound.edge_id, now + 601)
