"""Trunks and routes created through the API reach a running edge without a restart: a call
that had no route is refused, the API adds a trunk and a route, and within a few seconds the
same call is routed (SIPp caller and callee, real `sdpbx up`)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.edge_process import running_edge
from tests.ports import free_udp_port
from tests.test_calls_sipp import (
    cdrs,
    pbx_config,
    run_call,
    uac,
    uac_expecting,
    uas,
)

pytestmark = [pytest.mark.interop]


def test_api_trunk_and_route_apply_without_restart(tmp_path: Path) -> None:
    port = free_udp_port()
    config = pbx_config(tmp_path)
    (tmp_path / "sdpbx.toml").write_text(config)
    token = subprocess.run(
        [sys.executable, "-m", "edge", "apikey", "create", "--scope", "write", "--scope", "read",
         "--config", str(tmp_path / "sdpbx.toml")],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp_path,
    ).stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    with running_edge(tmp_path, config_text=config) as edge:
        api = f"http://{edge.http[0]}:{edge.http[1]}/api/v1"
        # No trunk knows the caller yet: it must authenticate.
        run_call(uac(tmp_path, uac_expecting(tmp_path, 407), edge), None, edge)

        r = httpx.post(f"{api}/trunks", headers=auth, timeout=5, json={
            "name": "uas", "dest": f"sip:127.0.0.1:{port}", "inbound_hosts": ["127.0.0.1"]})
        assert r.status_code == 201, r.text
        r = httpx.post(f"{api}/routes", headers=auth, timeout=5, json={
            "name": "everything", "dest": ["uas"], "match": {"to.user": "^[0-9]+$"}})
        assert r.status_code == 201, r.text

        deadline = time.monotonic() + 10
        # Loaded once at start; the second load is the one that saw the API's writes.
        while edge.log().count("routing reloaded from the directory") < 2:
            assert time.monotonic() < deadline, edge.log()[-3000:]
            time.sleep(0.2)
        callee = uas(tmp_path, "uas_answer.xml", port)
        run_call(uac(tmp_path, "uac_call.xml", edge), callee, edge)
        [cdr] = cdrs(tmp_path)
        assert cdr["status"] == "completed" and cdr["sipTrunkId"] == "uas"

        # A route naming a trunk that does not exist: the edge refuses the new routing and
        # keeps the one in force, so calls go on.
        r = httpx.post(f"{api}/routes", headers=auth, timeout=5, json={
            "name": "broken", "priority": 10, "dest": ["nope"]})
        assert r.status_code == 201, r.text
        while "directory routes or trunks rejected" not in edge.log():
            assert time.monotonic() < deadline + 10, edge.log()[-3000:]
            time.sleep(0.2)
        callee = uas(tmp_path, "uas_answer.xml", port)
        run_call(uac(tmp_path, "uac_call.xml", edge), callee, edge)
        assert len(cdrs(tmp_path, 2)) == 2
