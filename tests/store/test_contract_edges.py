"""Contract of `EdgeRegistry`, run on every backend: heartbeats replace the edge's entry, and
an edge whose heartbeat expired is not alive (decided at read time, TTL or not)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control.store.errors import NotFound
from control.store.models import EdgeInfo
from control.store.ports import Stores

pytestmark = pytest.mark.anyio


def edge(edge_id: str, now: float, *, ttl: float = 30, load: int = 0) -> EdgeInfo:
    return EdgeInfo(edge_id=edge_id, sip_addresses=("udp:192.0.2.10:5060", "tcp:192.0.2.10:5060"),
                    http_address="http://192.0.2.10:8080", load=load, started_at=now - 600.5,
                    heartbeat_at=now, expires_at=now + ttl)


async def test_heartbeat_then_get_round_trips(stores: Stores, now: float) -> None:
    info = edge("edge-1", now, load=17)
    await stores.edges.heartbeat(info)
    got = await stores.edges.get("edge-1")
    assert got == info and isinstance(got.sip_addresses, tuple)


async def test_an_edge_without_addresses_round_trips(stores: Stores, now: float) -> None:
    bare = EdgeInfo(edge_id="bare", sip_addresses=(), http_address="", expires_at=now + 30)
    await stores.edges.heartbeat(bare)
    assert await stores.edges.get("bare") == bare


async def test_heartbeat_again_replaces(stores: Stores, now: float) -> None:
    first = edge("edge-1", now)
    await stores.edges.heartbeat(first)
    later = replace(first, load=42, heartbeat_at=now + 10, expires_at=now + 40,
                    sip_addresses=("udp:192.0.2.11:5060",))
    await stores.edges.heartbeat(later)
    assert await stores.edges.get("edge-1") == later
    assert await stores.edges.alive(now + 35) == [later]


async def test_alive_excludes_expired_edges(stores: Stores, now: float) -> None:
    short = edge("short", now, ttl=10)
    long = edge("long", now, ttl=60)
    await stores.edges.heartbeat(short)
    await stores.edges.heartbeat(long)
    assert sorted(e.edge_id for e in await stores.edges.alive(now)) == ["long", "short"]
    assert await stores.edges.alive(now + 10) == [long]  # expires_at <= now: gone
    assert await stores.edges.alive(now + 60) == []


async def test_remove(stores: Stores, now: float) -> None:
    await stores.edges.heartbeat(edge("edge-1", now))
    await stores.edges.heartbeat(edge("edge-2", now))
    await stores.edges.remove("edge-1")
    with pytest.raises(NotFound):
        await stores.edges.get("edge-1")
    assert [e.edge_id for e in await stores.edges.alive(now)] == ["edge-2"]
    await stores.edges.remove("edge-1")  # an edge shutting down twice is not an error


async def test_get_of_an_unknown_edge_is_not_found(stores: Stores) -> None:
    with pytest.raises(NotFound):
        await stores.edges.get("nope")
