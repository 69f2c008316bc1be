"""`POST /api/v1/calls` in-process: validation, the least-loaded alive edge, the call record, and
the Idempotency-Key rules (same body -> the same call, never a second ring; another body -> 409;
a refused attempt frees the key; after 24 h the key starts a new call). Placing the call on a
real edge, with SIPp parties, is tests/test_outbound_calls.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from control.api.active_calls import EdgeCommandClient
from control.api.outbound import call_id_for
from control.contracts.calls import Originate
from control.store.models import CallRecord, EdgeInfo
from tests.api import NOW, running_api

pytestmark = pytest.mark.anyio


class FakeEdges(EdgeCommandClient):
    """Records what would be POSTed to edges; answers `status`."""

    def __init__(self, status: int = 201) -> None:
        super().__init__(None, secret="s", key_id="k1")
        self.status = status
        self.sent: list[tuple[str, Originate]] = []

    async def originate(self, http_address: str, call_id: str, body: bytes) -> tuple[int, Any]:
        self.sent.append((http_address, Originate.model_validate_json(body)))
        if self.status >= 300:
            return self.status, {"error": {"status": self.status, "message": "no relay"}}
        return self.status, {"uuid": call_id}


async def _edges(api: Any) -> None:
    for edge_id, load, expires in (("busy", 9, 4e9), ("idle", 1, 4e9), ("dead", 0, 1.0)):
        await api.stores.edges.heartbeat(EdgeInfo(
            edge_id=edge_id, sip_addresses=(), http_address=f"{edge_id}:8080", load=load,
            heartbeat_at=NOW, expires_at=expires))


BODY = {"to": "1001", "from": "4155550100", "answer_url": "https://app.example/answer",
        "event_url": "https://app.example/events"}


async def test_places_the_call_on_the_least_loaded_alive_edge(tmp_path: Path) -> None:
    edges = FakeEdges()
    async with running_api(tmp_path, commands=edges) as api:
        r = await api.call("POST", "/api/v1/calls", "calls", json=BODY)
        assert r.status_code == 503  # no edge alive yet
        await _edges(api)
        assert (await api.call("POST", "/api/v1/calls", "read", json=BODY)).status_code == 403
        r = await api.call("POST", "/api/v1/calls", "calls", json=BODY)
        assert r.status_code == 201, r.text
        created = r.json()
        assert created["status"] == "started" and created["edge_id"] == "idle"
        assert created["conversation_uuid"].startswith("CON-")
        [(address, order)] = edges.sent
        assert address == "idle:8080" and order.call_id == created["uuid"]
        assert order.request.to == "1001" and order.record_version == 1
        record = await api.stores.calls.get(created["uuid"])
        assert (record.edge_id, record.state, record.direction) == ("idle", "trying",
                                                                    "outbound")
        view = await api.call("GET", f"/api/v1/calls/{created['uuid']}", "calls")
        assert view.json()["status"] == "started" and view.json()["from"] == "4155550100"
        assert (await api.call("GET", "/api/v1/calls/nope", "calls")).status_code == 404
        # /calls/active is not taken for a call id.
        assert (await api.call("GET", "/api/v1/calls/active", "calls")).json()["items"]


@pytest.mark.parametrize(("body", "field"), [
    ({"to": "1001"}, None),  # neither answer_url nor ncco
    ({**BODY, "ncco": [{"action": "hangup"}]}, None),  # both
    ({**BODY, "answer_url": "ftp://x/y"}, "answer_url"),
    ({**BODY, "to": "bad number!"}, "to"),
    ({**BODY, "timeout": 0}, "timeout"),
    ({**BODY, "headers": {"Via": "x"}}, "headers"),
    ({**BODY, "headers": {"X-A": "1\r\nVia: x"}}, "headers"),
    ({**BODY, "to": [{"type": "websocket", "uri": "wss://x"}]}, "to"),
])
async def test_bad_bodies_name_the_field(tmp_path: Path, body: dict[str, Any],
                                         field: str | None) -> None:
    async with running_api(tmp_path, commands=FakeEdges()) as api:
        await _edges(api)
        r = await api.call("POST", "/api/v1/calls", "calls", json=body)
        assert r.status_code == 422, r.text
        if field is not None:
            assert r.json()["error"]["field"] == field


async def test_vonage_shaped_body(tmp_path: Path) -> None:
    edges = FakeEdges()
    async with running_api(tmp_path, commands=edges) as api:
        await _edges(api)
        r = await api.call("POST", "/api/v1/calls", "calls", json={
            "to": [{"type": "phone", "number": "14155550100"}],
            "from": {"type": "phone", "number": "14155550111"},
            "ncco": [{"action": "talk", "text": "Hello"}], "ringing_timer": 25,
            "event_url": ["https://app.example/events"]})
        assert r.status_code == 201, r.text
        order = edges.sent[0][1]
        assert (order.request.to, order.request.from_, order.request.timeout) == (
            "14155550100", "14155550111", 25)


async def test_idempotency_key(tmp_path: Path) -> None:
    edges = FakeEdges()
    key = {"Idempotency-Key": "order-1"}
    async with running_api(tmp_path, commands=edges) as api:
        await _edges(api)
        first = await api.call("POST", "/api/v1/calls", "calls", json=BODY, headers=key)
        assert first.status_code == 201
        # Same key, same body (keys in another order): the same call, not delivered again.
        reordered = json.dumps(dict(reversed(list(BODY.items()))))
        again = await api.call("POST", "/api/v1/calls", "calls", content=reordered,
                               headers={**key, "Content-Type": "application/json"})
        assert again.status_code == 200 and again.json()["uuid"] == first.json()["uuid"]
        assert again.headers["Idempotent-Replayed"] == "true"
        assert len(edges.sent) == 1
        other = await api.call("POST", "/api/v1/calls", "calls", json={**BODY, "to": "1002"},
                               headers=key)
        assert other.status_code == 409 and other.json()["error"]["field"] == "Idempotency-Key"
        # Keys belong to an API key: another API key's same Idempotency-Key is another call.
        mine = await api.call("POST", "/api/v1/calls", "admin", json=BODY, headers=key)
        assert mine.status_code == 201 and mine.json()["uuid"] != first.json()["uuid"]
        assert len(edges.sent) == 2
        bad = await api.call("POST", "/api/v1/calls", "calls", json=BODY,
                             headers={"Idempotency-Key": "x" * 300})
        assert bad.status_code == 400


async def test_refused_attempt_frees_the_key_and_old_keys_expire(tmp_path: Path) -> None:
    edges = FakeEdges(status=503)
    key = {"Idempotency-Key": "order-2"}
    async with running_api(tmp_path, commands=edges) as api:
        await _edges(api)
        r = await api.call("POST", "/api/v1/calls", "calls", json=BODY, headers=key)
        assert r.status_code == 503 and "no relay" in r.json()["error"]["message"]
        edges.status = 201
        r = await api.call("POST", "/api/v1/calls", "calls", json=BODY, headers=key)
        assert r.status_code == 201  # the key was not burnt by the refused attempt
        assert len(edges.sent) == 2

        # A key first used more than 24 h ago (its call long over) starts a new call.
        key_id = (await api.stores.directory.list_api_keys())
        calls_key = next(k for k in key_id if k.scopes == ("calls",))
        old_id = call_id_for(calls_key.key_id, "order-3")
        await api.stores.calls.create(CallRecord(
            call_id=old_id, edge_id="idle", state="completed", created_at=NOW - 25 * 3600,
            updated_at=NOW - 25 * 3600, data={"request_sha256": "other"}))
        r = await api.call("POST", "/api/v1/calls", "calls", json=BODY,
                           headers={"Idempotency-Key": "order-3"})
        assert r.status_code == 201 and r.json()["uuid"] == old_id
        assert (await api.stores.calls.get(old_id)).created_at == NOW
