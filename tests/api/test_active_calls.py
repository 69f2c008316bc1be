"""Active calls through the API: the `calls` scope is enforced, the list comes from the call
records, commands are validated and refused when they cannot be delivered. (Delivery to a
real edge, and the BYEs it sends, are in tests/test_call_commands.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from control.store.models import CallRecord, EdgeInfo
from tests.api import running_api

pytestmark = pytest.mark.anyio


async def test_active_calls_and_commands(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        assert (await api.call("GET", "/console/calls/active", "read")).status_code == 403
        assert (await api.call("GET", "/console/calls/active", None)).status_code == 401
        r = await api.call("GET", "/api/v1/calls/active", "calls")
        assert r.status_code == 200 and r.json() == {"items": [], "cursor": None}

        await api.stores.calls.create(CallRecord(
            call_id="c1", edge_id="edge-gone", state="answered", caller="1001", callee="1002",
            created_at=1.0, updated_at=2.0, answered_at=2.0))
        listed = (await api.call("GET", "/console/calls/active", "calls")).json()["items"]
        assert [(c["session_id"], c["status"], c["edge_id"]) for c in listed] == [
            ("c1", "answered", "edge-gone")]
        assert (await api.call("GET", "/console/calls/active/c1", "admin")).status_code == 200
        assert (await api.call("GET", "/console/calls/active/c9", "calls")).status_code == 404

        bad = await api.call("POST", "/console/calls/active/c1/commands", "calls",
                             json={"action": "mute", "leg": "everyone"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "mute.leg"
        # No edge secret configured for this app: commands cannot be delivered.
        r = await api.call("POST", "/console/calls/active/c1/commands", "calls",
                           json={"action": "hangup"})
        assert r.status_code == 409


async def test_command_for_a_call_whose_edge_is_gone_is_409(tmp_path: Path) -> None:
    from control.api.active_calls import EdgeCommandClient, send_command

    async with running_api(tmp_path) as api:
        stores = api.stores
        await stores.calls.create(CallRecord(
            call_id="c2", edge_id="edge-b", state="ringing", created_at=1.0, updated_at=1.0))
        client = EdgeCommandClient(None, secret="s", key_id="k1")
        status, body = await send_command(stores, client, "c2", b'{"action":"hangup"}')
        assert status == 409 and "not registered" in body["error"]["message"]
        await stores.edges.heartbeat(EdgeInfo(
            edge_id="edge-b", sip_addresses=(), http_address="127.0.0.1:9",
            heartbeat_at=1.0, expires_at=4e9))
        status, body = await send_command(stores, client, "c2", b'{"action":"hangup"}')
        assert status == 409 and "unreachable" in body["error"]["message"]
