"""The outbound-call API on a real embedded `sdpbx up`: `POST /api/v1/calls` rings a SIPp callee
(once, whatever the retries), the answer URL's `connect` bridges it to a second SIPp party with
real RTP through the relay, status events reach the event URL signed and in order, and the call
ends on the wire and in the CDR."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest

from tests.edge_process import EdgeProcess, running_edge
from tests.ports import free_media_port, free_udp_port
from tests.signed_http import signed_http_server
from tests.test_call_commands import drain, rtp_packet, scenario_with_media_port
from tests.test_calls_sipp import (
    SCENARIOS,
    SECRET,
    Sipp,
    cdrs,
    pbx_config,
    run_call,
    trunk_config,
)

pytestmark = [pytest.mark.interop]


class Application:
    """A call application on 127.0.0.1: GET /answer returns `steps`, POST /events records."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps
        self.answers: list[dict[str, list[str]]] = []
        self.events: list[dict[str, Any]] = []
        self.bad_signatures = 0

    @property
    def statuses(self) -> list[str]:
        return [e["status"] for e in self.events if "status" in e and "-" not in e["uuid"][4:]]

    def wait_for(self, status: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while status not in self.statuses:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {status!r} event; got {self.events}")
            time.sleep(0.05)


@contextmanager
def application_server(app: Application) -> Iterator[str]:
    """GET (the answer URL) returns `app.steps`, POST (events) is recorded."""

    def handle(method: str, path: str, body: bytes, signed: bool) -> tuple[int, bytes]:
        if method == "GET":
            app.answers.append(parse_qs(urlparse(path).query))
            return 200, json.dumps(app.steps).encode()
        app.events.append(json.loads(body))
        return 200, b""

    with signed_http_server(handle, {"k1": SECRET}) as (base, signatures):
        yield base
        app.bad_signatures = signatures.bad


def api_token(tmp: Path, config: str, scope: str = "calls") -> dict[str, str]:
    (tmp / "sdpbx.toml").write_text(config)
    created = subprocess.run(
        [sys.executable, "-m", "edge", "apikey", "create", "--scope", scope,
         "--config", str(tmp / "sdpbx.toml")],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp,
    )
    return {"Authorization": f"Bearer {created.stdout.strip()}"}


def offered_port(log: Path, timeout: float = 5.0) -> int:
    """The audio port of the SDP the SIPp party received in its INVITE (our relay's)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        found = re.search(r"^\s*m=audio (\d+)", text, re.MULTILINE)
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"no SDP in {log}")


def wait_call_status(edge: EdgeProcess, auth: dict[str, str], uuid: str, wanted: str,
                     timeout: float = 10.0) -> dict[str, Any]:
    url = f"http://{edge.http[0]}:{edge.http[1]}/api/v1/calls/{uuid}"
    deadline = time.monotonic() + timeout
    while True:
        view: dict[str, Any] = httpx.get(url, headers=auth, timeout=5).json()
        if view.get("status") == wanted or time.monotonic() > deadline:
            return view
        time.sleep(0.1)


def test_outbound_call_connects_a_second_party(tmp_path: Path) -> None:
    callee_port, second_port = free_udp_port(), free_udp_port()
    callee_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (callee_media, second_media):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    app = Application([{"action": "connect", "from": "4155550199",
                        "endpoint": [{"type": "sip", "uri": f"sip:bob@127.0.0.1:{second_port}",
                                      "headers": {"Case": "42"}}]}])
    config = pbx_config(tmp_path, trunk_config(callee_port))
    auth = api_token(tmp_path, config)
    try:
        with application_server(app) as base, running_edge(tmp_path, config_text=config) as edge:
            callee = Sipp(tmp_path, "callee", [
                "-sf", str(scenario_with_media_port(tmp_path, "uas_answer.xml",
                                                    callee_media.getsockname()[1])),
                "-p", str(callee_port), "-mp", str(free_media_port())])
            second = Sipp(tmp_path, "second", [
                "-sf", str(scenario_with_media_port(tmp_path, "uas_answer.xml",
                                                    second_media.getsockname()[1])),
                "-p", str(second_port), "-mp", str(free_media_port())])
            time.sleep(0.3)
            api = f"http://{edge.http[0]}:{edge.http[1]}/api/v1"
            body = {"to": "5551000", "from": "4155550100", "answer_url": f"{base}/answer",
                    "event_url": [f"{base}/events"], "timeout": 20}
            key = {"Idempotency-Key": "order-7781"}
            first = httpx.post(f"{api}/calls", json=body, headers={**auth, **key}, timeout=10)
            assert first.status_code == 201, first.text + edge.log()[-3000:]
            uuid = first.json()["uuid"]
            assert first.json()["status"] == "started"
            # A client retry: the same call, nothing rings twice; another body is refused.
            again = httpx.post(f"{api}/calls", json=body, headers={**auth, **key}, timeout=10)
            assert again.status_code == 200 and again.json()["uuid"] == uuid
            assert again.headers["Idempotent-Replayed"] == "true"
            other = httpx.post(f"{api}/calls", json={**body, "to": "5551001"},
                               headers={**auth, **key}, timeout=10)
            assert other.status_code == 409, other.text

            app.wait_for("answered")
            deadline = time.monotonic() + 10
            while not any(e.get("status") == "answered" and e["uuid"] != uuid
                          for e in app.events):
                assert time.monotonic() < deadline, (app.events, edge.log()[-3000:])
                time.sleep(0.05)
            # The callee's media reaches the connected party through the relay.
            relay_b = offered_port(tmp_path / "callee_messages.log")
            received, seq = 0, 1
            deadline = time.monotonic() + 5
            while received < 10 and time.monotonic() < deadline:
                callee_media.sendto(rtp_packet(seq), ("127.0.0.1", relay_b))
                seq += 1
                time.sleep(0.02)
                received += drain(second_media)
            assert received >= 10, edge.log()[-3000:]

            hangup = httpx.post(f"{api}/calls/active/{uuid}/commands", headers=auth,
                                json={"action": "hangup"}, timeout=10)
            assert hangup.status_code == 200, hangup.text
            run_call(callee, second, edge)  # both parties got their BYE
            app.wait_for("completed")
            view = wait_call_status(edge, auth, uuid, "completed")
            [cdr] = cdrs(tmp_path)
        second_log = (tmp_path / "second_messages.log").read_text(errors="replace")
        callee_log = (tmp_path / "callee_messages.log").read_text(errors="replace")
    finally:
        callee_media.close()
        second_media.close()
    assert callee_log.count("INVITE sip:") == 1  # the retry did not ring again
    assert "X-Case: 42" in second_log and "From: <sip:4155550199@" in second_log
    assert app.bad_signatures == 0
    [answer] = app.answers
    assert answer["uuid"] == [uuid] and answer["to"] == ["5551000"]
    assert app.statuses == ["started", "ringing", "answered", "completed"]
    sequences = [e["sequence"] for e in app.events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    assert view["status"] == "completed" and view["direction"] == "outbound"
    assert cdr["callId"] == uuid and cdr["direction"] == "outbound"
    assert cdr["status"] == "completed"


def test_outbound_call_busy_and_inline_steps(tmp_path: Path) -> None:
    callee_port = free_udp_port()
    app = Application([])
    config = pbx_config(tmp_path, trunk_config(callee_port))
    auth = api_token(tmp_path, config)
    with application_server(app) as base, running_edge(tmp_path, config_text=config) as edge:
        scenario = tmp_path / "uas_reject.xml"
        scenario.write_text((SCENARIOS / "uas_reject.xml").read_text().replace(
            "[status]", "486"))
        callee = Sipp(tmp_path, "callee", ["-sf", str(scenario), "-p", str(callee_port),
                                           "-mp", str(free_media_port())])
        time.sleep(0.3)
        api = f"http://{edge.http[0]}:{edge.http[1]}/api/v1"
        reply = httpx.post(f"{api}/calls", headers=auth, timeout=10, json={
            "to": [{"type": "phone", "number": "5551000"}], "ncco": [{"action": "hangup"}],
            "event_url": f"{base}/events"})
        assert reply.status_code == 201, reply.text
        assert callee.wait() == 0, callee.explain()
        app.wait_for("busy")
        view = wait_call_status(edge, auth, reply.json()["uuid"], "busy")
        # Bad bodies name the field; an API key without the calls scope is refused.
        bad = httpx.post(f"{api}/calls", headers=auth, timeout=10,
                         json={"to": "5551000", "answer_url": "ftp://x/y"})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "answer_url"
        neither = httpx.post(f"{api}/calls", headers=auth, timeout=10, json={"to": "1"})
        assert neither.status_code == 422
    assert app.statuses == ["started", "ringing", "busy"]
    assert view["status"] == "busy" and view["status_code"] == 486


def test_outbound_call_to_a_registered_extension_connects_a_second_party(
        tmp_path: Path) -> None:
    """An extension created through the API registers (SIPp, digest); the API calls it with
    inline steps: notify (its payload reaches the event URL), then connect to a second party;
    a hangup command through the API ends both on the wire."""
    phone_port, second_port = free_udp_port(), free_udp_port()
    app = Application([])
    config = pbx_config(tmp_path)
    auth = api_token(tmp_path, config, scope="admin")
    with application_server(app) as base, running_edge(tmp_path, config_text=config) as edge:
        api = f"http://{edge.http[0]}:{edge.http[1]}/api/v1"
        created = httpx.post(f"{api}/extensions", headers=auth, timeout=5,
                             json={"username": "1001", "password": "s3cret-1001"})
        assert created.status_code == 201, created.text
        scenario = tmp_path / "register_once.xml"
        scenario.write_text((SCENARIOS / "register_once.xml").read_text()
                            .replace("USER", "1001").replace("PASSWORD", "s3cret-1001"))
        register = Sipp(tmp_path, "reg", ["-sf", str(scenario),
                                          f"{edge.sip_udp[0]}:{edge.sip_udp[1]}", "-s", "1001",
                                          "-p", str(phone_port)])
        assert register.wait() == 0, register.explain() + edge.log()[-3000:]
        callee = Sipp(tmp_path, "callee", [
            "-sf", str(scenario_with_media_port(tmp_path, "uas_answer.xml", free_udp_port())),
            "-p", str(phone_port), "-mp", str(free_media_port())])
        second = Sipp(tmp_path, "second", [
            "-sf", str(scenario_with_media_port(tmp_path, "uas_answer.xml", free_udp_port())),
            "-p", str(second_port), "-mp", str(free_media_port())])
        time.sleep(0.3)
        reply = httpx.post(
            f"{api}/calls", headers=auth, timeout=10,
            json={"to": "1001", "ncco": [
                {"action": "notify", "payload": {"n": 1}, "eventUrl": [f"{base}/events"]},
                {"action": "connect",
                 "endpoint": [{"type": "sip", "uri": f"sip:bob@127.0.0.1:{second_port}"}]}],
                  "event_url": f"{base}/events"})
        assert reply.status_code == 201, reply.text
        uuid = reply.json()["uuid"]
        deadline = time.monotonic() + 10
        while not any(e.get("status") == "answered" and e["uuid"] != uuid
                      for e in app.events):
            assert time.monotonic() < deadline, (app.events, edge.log()[-3000:])
            time.sleep(0.05)
        hangup = httpx.post(f"{api}/calls/active/{uuid}/commands", headers=auth,
                            json={"action": "hangup"}, timeout=10)
        assert hangup.status_code == 200, hangup.text
        run_call(callee, second, edge)  # the extension and the second party got BYE
        app.wait_for("completed")
        [cdr] = cdrs(tmp_path)
    assert app.statuses == ["started", "ringing", "answered", "completed"]
    assert any(e.get("payload") == {"n": 1} or e.get("n") == 1 for e in app.events)
    assert cdr["callee"].startswith("sip:1001@") and cdr["status"] == "completed"


def test_outbound_call_nobody_answers(tmp_path: Path) -> None:
    """The callee rings past `timeout`: it gets CANCEL, the events say timeout and no-answer."""
    callee_port = free_udp_port()
    app = Application([])
    config = pbx_config(tmp_path, trunk_config(callee_port))
    auth = api_token(tmp_path, config)
    with application_server(app) as base, running_edge(tmp_path, config_text=config) as edge:
        callee = Sipp(tmp_path, "callee", [
            "-sf", str(SCENARIOS / "uas_ring.xml"), "-p", str(callee_port),
            "-mp", str(free_media_port())])
        time.sleep(0.3)
        reply = httpx.post(
            f"http://{edge.http[0]}:{edge.http[1]}/api/v1/calls", headers=auth, timeout=10,
            json={"to": "5551000", "timeout": 1, "answer_url": f"{base}/answer",
                  "event_url": f"{base}/events"})
        assert reply.status_code == 201, reply.text
        assert callee.wait() == 0, callee.explain()  # CANCEL, 487, ACK
        app.wait_for("no-answer")
        view = wait_call_status(edge, auth, reply.json()["uuid"], "no-answer")
    assert app.statuses == ["started", "ringing", "timeout", "no-answer"]
    assert not app.answers  # the answer URL is fetched only when the callee answers
    assert view["status"] == "no-answer"


@pytest.mark.parametrize("case", ["fallback", "invalid", "fallback_steps"])
def test_answer_url_fallback_and_invalid_steps(tmp_path: Path, case: str) -> None:
    """A dead answer URL falls back to fallback_url (its steps run: hangup). A step list that
    does not validate gets an error event naming the step and the defined fallback: the call
    is hung up with the reason as the CDR's lastError, or the configured fallback steps run."""
    callee_port = free_udp_port()
    steps: list[dict[str, Any]] = [{"action": "hangup"}] if case == "fallback" else [
        {"action": "talk", "text": "hi"}, {"action": "input", "dtmf": {"maxDigits": 99}}]
    app = Application(steps)
    with application_server(app) as base:
        extra = "" if case != "fallback_steps" else (
            "[applications]\nfallback_steps = [{ action = \"notify\", payload = { fallback = "
            f"true }}, eventUrl = [\"{base}/events\"] }}, {{ action = \"hangup\" }}]\n")
        config = pbx_config(tmp_path, trunk_config(callee_port), extra=extra)
        auth = api_token(tmp_path, config)
        with running_edge(tmp_path, config_text=config) as edge:
            callee = Sipp(tmp_path, "callee", [
                "-sf", str(scenario_with_media_port(tmp_path, "uas_answer.xml",
                                                    free_udp_port())),
                "-p", str(callee_port), "-mp", str(free_media_port())])
            time.sleep(0.3)
            body: dict[str, Any] = {"to": "5551000", "event_url": f"{base}/events"}
            if case == "fallback":
                body |= {"answer_url": f"http://127.0.0.1:{free_udp_port()}/dead",
                         "fallback_url": f"{base}/answer"}
            else:
                body |= {"answer_url": f"{base}/answer"}
            reply = httpx.post(f"http://{edge.http[0]}:{edge.http[1]}/api/v1/calls",
                               headers=auth, timeout=10, json=body)
            assert reply.status_code == 201, reply.text
            assert callee.wait() == 0, callee.explain()  # answered, then our BYE
            app.wait_for("completed")
            [cdr] = cdrs(tmp_path)
    assert len(app.answers) == 1
    errors = [e for e in app.events if "reason" in e and "status" not in e]
    if case == "fallback":
        assert not errors and cdr["lastError"] is None
    else:
        [error] = errors
        assert "step 1 (input) dtmf.maxDigits" in error["reason"]
        assert cdr["lastError"]["code"] == 500 and "maxDigits" in cdr["lastError"]["reason"]
    ran_fallback = any(e.get("fallback") is True for e in app.events)
    assert ran_fallback == (case == "fallback_steps")
    assert cdr["hangupReason"] == "autohangup"
