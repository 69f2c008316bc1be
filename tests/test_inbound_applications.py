"""An application in the directory answers calls to its number: the embedded edge's routing
webhook is the default router function in-process (`control:/functions/router`), which finds
the number in the applications created through the API; the edge answers the SIPp caller
itself, fetches the application's answer URL (signed), runs its steps and reports to its event
URL. A router `answer` with steps that do not validate gets the fallback (hang up, lastError)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.edge_process import running_edge
from tests.test_calls_sipp import cdrs, pbx_config, router_server, run_call, uac
from tests.test_outbound_calls import Application, api_token, application_server

pytestmark = [pytest.mark.interop]


def test_directory_application_answers_its_number(tmp_path: Path) -> None:
    app = Application([{"action": "talk", "text": "Thank you for calling"},
                       {"action": "hangup"}])
    config = pbx_config(
        tmp_path,
        "[proxy.http_router]\nurl = \"control:/functions/router\"\n"
        "[proxy.trunks.carrier]\ndest = \"sip:127.0.0.1:9\"\ninbound_hosts = [\"127.0.0.1\"]\n")
    auth = api_token(tmp_path, config, scope="admin")
    with application_server(app) as base, running_edge(tmp_path, config_text=config) as edge:
        api = f"http://{edge.http[0]}:{edge.http[1]}/api/v1"
        created = httpx.post(f"{api}/applications", headers=auth, timeout=5, json={
            "name": "support", "numbers": ["7000"], "answer_url": f"{base}/answer",
            "event_url": f"{base}/events"})
        assert created.status_code == 201, created.text
        time.sleep(2.5)  # the router function re-reads applications when the revision moves
        caller = uac(tmp_path, "uac_wait_bye.xml", edge, user="7000")
        run_call(caller, None, edge)  # answered by the edge, then the hangup step's BYE
        app.wait_for("completed")
        [cdr] = cdrs(tmp_path)
    [answer] = app.answers
    assert answer["to"] == ["7000"]
    assert app.statuses == ["started", "answered", "completed"]
    assert all(e["direction"] == "inbound" for e in app.events if "status" in e)
    assert cdr["hangupReason"] == "autohangup" and cdr["status"] == "completed"


def test_router_answer_with_invalid_steps_gets_the_fallback(tmp_path: Path) -> None:
    reply = {"action": "answer", "steps": [{"action": "talk"}]}  # talk needs text
    with router_server(reply) as (url, _):
        config = pbx_config(
            tmp_path,
            f"[proxy.http_router]\nurl = \"{url}\"\n"
            "[proxy.trunks.carrier]\ndest = \"sip:127.0.0.1:9\"\ninbound_hosts = [\"127.0.0.1\"]\n")
        with running_edge(tmp_path, config_text=config) as edge:
            caller = uac(tmp_path, "uac_wait_bye.xml", edge, user="7000")
            run_call(caller, None, edge)  # answered, then BYE: the fallback
            [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == "autohangup"
    assert cdr["lastError"]["reason"].startswith("step 0 text: Field required")


def test_input_takes_digits_from_sip_info(tmp_path: Path) -> None:
    """A caller that signals DTMF with SIP INFO (application/dtmf-relay): the input step of
    the application answering it collects the digit."""
    app = Application([])
    with application_server(app) as base:
        reply = {"action": "answer", "event_url": f"{base}/events", "steps": [
            {"action": "input", "dtmf": {"maxDigits": 1, "timeOut": 8}},
            {"action": "hangup"}]}
        with router_server(reply) as (url, _):
            config = pbx_config(
                tmp_path,
                f"[proxy.http_router]\nurl = \"{url}\"\n"
                "[proxy.trunks.carrier]\ndest = \"sip:127.0.0.1:9\"\n"
                "inbound_hosts = [\"127.0.0.1\"]\n")
            with running_edge(tmp_path, config_text=config) as edge:
                caller = uac(tmp_path, "uac_info_dtmf.xml", edge, user="7000")
                run_call(caller, None, edge)  # INFO answered 200, then the hangup step's BYE
                app.wait_for("completed")
    [result] = [e for e in app.events if "dtmf" in e]
    assert result["dtmf"] == {"digits": "5", "timed_out": False}
