"""Calls through a real `sdpbx up` between real SIPp callers and callees (127.0.0.1 only).

Each test starts SIPp as the callee (a "trunk" or a routing-webhook target) and as the caller,
and checks what both saw and the CDR the PBX wrote: static routes, the routing webhook (with and
without its fallback), a carrier demanding digest, busy / decline / no answer / CANCEL, unknown
and offline users, and callers that must authenticate.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from control.contracts.signing import verify
from tests.edge_process import EdgeProcess, running_edge
from tests.ports import free_media_port, free_udp_port

SCENARIOS = Path(__file__).parent / "interop" / "sipp" / "calls"
SECRET = "test-webhook-secret"

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("sipp") is None and not os.environ.get("CI"),
                       reason="sipp not installed (sip-tester)"),
]


def pbx_config(tmp: Path, proxy: str = "", extra: str = "") -> str:
    """A whole config: SIP and HTTP on free ports, state under `tmp`, RTP ports away from the
    softphones' ranges, webhooks signed with SECRET."""
    return (
        "[proxy]\naddr = \"127.0.0.1\"\nudp_port = 0\ntcp_port = 0\n"
        "rtp_start_port = 42000\nrtp_end_port = 42999\n" + proxy
        + "\n[http]\naddr = \"127.0.0.1:0\"\n"
        f"[store]\npath = \"{tmp / 'sdpbx.sqlite3'}\"\nspool_path = \"{tmp / 'spool'}\"\n"
        f"[callrecord]\nroot = \"{tmp / 'cdr'}\"\n"
        f"[recording]\npath = \"{tmp / 'recordings'}\"\n"
        f"[webhooks]\nsecret = \"{SECRET}\"\n"
        "[log]\nlevel = \"info\"\nformat = \"json\"\n" + extra
    )


def trunk_config(uas_port: int, *, route: bool = True, trunk_extra: str = "",
                 inbound: str = "127.0.0.1") -> str:
    """The SIPp caller at `inbound` is a trusted trunk; every number goes to the UAS."""
    routes = (
        "[[proxy.routes]]\nname = \"to-uas\"\ndest = [\"uas\"]\n"
        "[proxy.routes.match]\n\"to.user\" = \"^[0-9a-z]+$\"\n"
    ) if route else ""
    return (
        routes
        + f"[proxy.trunks.uas]\ndest = \"sip:127.0.0.1:{uas_port}\"\n"
        + f"inbound_hosts = [\"{inbound}\"]\n" + trunk_extra
    )


class Sipp:
    """One SIPp process (bounded: -m 1 and a timeout)."""

    def __init__(self, tmp: Path, name: str, args: list[str]) -> None:
        self.tmp = tmp
        self.name = name
        self.errors = tmp / f"{name}_errors.log"
        self.process = subprocess.Popen(
            ["sipp", *args, "-i", "127.0.0.1", "-m", "1", "-nostdin", "-timeout", "20s",
             "-timeout_error", "-trace_err", "-error_file", str(self.errors),
             "-trace_msg", "-message_file", str(tmp / f"{name}_messages.log")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp,
        )

    def wait(self, timeout: float = 30) -> int:
        try:
            self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        return self.process.returncode

    def explain(self) -> str:
        parts = [f"--- {self.name} exit {self.process.returncode}"]
        for path in (self.errors, self.tmp / f"{self.name}_messages.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(parts)


def uas(tmp: Path, scenario: Path | str, port: int, *keys: tuple[str, str]) -> Sipp:
    path = scenario if isinstance(scenario, Path) else SCENARIOS / scenario
    args = ["-sf", str(path), "-p", str(port), "-mp", str(free_media_port())]
    for key, value in keys:
        args += ["-set", key, value]
    sipp = Sipp(tmp, "uas", args)
    time.sleep(0.3)  # let it bind
    return sipp


def uac(tmp: Path, scenario: Path | str, edge: EdgeProcess, user: str = "2000",
        transport: str = "u1") -> Sipp:
    target = edge.sip_udp if transport == "u1" else edge.sip_tcp
    path = scenario if isinstance(scenario, Path) else SCENARIOS / scenario
    return Sipp(tmp, "uac", ["-sf", str(path), f"{target[0]}:{target[1]}", "-s", user,
                             "-t", transport, "-p", str(free_udp_port()),
                             "-mp", str(free_media_port())])


def uac_expecting(tmp: Path, status: int) -> Path:
    """A caller scenario whose INVITE must end with `status` (then ACK)."""
    text = (SCENARIOS / "uac_cancel.xml").read_text()
    head, _, _ = text.partition("  <recv response=\"180\"/>")
    ack = text[text.index("  <send>\n    <![CDATA[\n      ACK"):]
    scenario = tmp / f"uac_expect_{status}.xml"
    scenario.write_text(
        head + "  <recv response=\"180\" optional=\"true\"/>\n"
        + "  <recv response=\"183\" optional=\"true\"/>\n"
        + f"  <recv response=\"{status}\"/>\n" + ack
    )
    return scenario


def cdrs(tmp: Path, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The CDRs the PBX wrote (the spool uploads them to the local blob folder)."""
    deadline = time.monotonic() + timeout
    while True:
        found = sorted((tmp / "cdr").rglob("*.json"))
        if len(found) >= count or time.monotonic() > deadline:
            return [json.loads(path.read_text()) for path in found]
        time.sleep(0.1)


def run_call(caller: Sipp, callee: Sipp | None, edge: EdgeProcess) -> None:
    caller_rc = caller.wait()
    callee_rc = callee.wait() if callee is not None else 0
    if caller_rc != 0 or callee_rc != 0:
        details = caller.explain() + ("\n" + callee.explain() if callee else "")
        pytest.fail(f"call failed\n{details}\n--- pbx\n{edge.log()[-4000:]}")


# ------------------------------------------------------------------ static routes


@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_static_route_call(tmp_path: Path, transport: str) -> None:
    port = free_udp_port()
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk_config(port))) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)
        run_call(uac(tmp_path, "uac_call.xml", edge, transport=transport), callee, edge)
        [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed" and cdr["statusCode"] == 200
    assert cdr["hangupReason"] == "byCaller"
    assert cdr["direction"] == "inbound" and cdr["sipTrunkId"] == "uas"
    assert cdr["answerTime"] and cdr["ringTime"] and cdr["toNumber"] == "2000"


@pytest.mark.parametrize(("status", "reason", "cdr_status"), [
    (486, "rejected", "missed"), (603, "rejected", "missed"), (404, "failed", "failed"),
])
def test_callee_refuses(tmp_path: Path, status: int, reason: str, cdr_status: str) -> None:
    port = free_udp_port()
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk_config(port))) as edge:
        scenario = tmp_path / "uas_reject.xml"
        # SIPp reads response codes when it loads the scenario, before any -key substitution.
        scenario.write_text((SCENARIOS / "uas_reject.xml").read_text().replace(
            "[status]", str(status)))
        callee = uas(tmp_path, scenario, port)
        run_call(uac(tmp_path, uac_expecting(tmp_path, status), edge), callee, edge)
        [cdr] = cdrs(tmp_path)
    assert cdr["statusCode"] == status and cdr["hangupReason"] == reason
    assert cdr["status"] == cdr_status and cdr["answerTime"] is None
    assert cdr["hangupMessages"][0]["code"] == status


def test_caller_cancels(tmp_path: Path) -> None:
    port = free_udp_port()
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk_config(port))) as edge:
        callee = uas(tmp_path, "uas_ring.xml", port)
        run_call(uac(tmp_path, "uac_cancel.xml", edge), callee, edge)
        [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == "canceled" and cdr["statusCode"] == 487
    assert cdr["status"] == "missed"


def test_ring_timeout_cancels_callee(tmp_path: Path) -> None:
    port = free_udp_port()
    config = pbx_config(tmp_path, "max_ring_time = 2\n" + trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_ring.xml", port)
        started = time.monotonic()
        run_call(uac(tmp_path, uac_expecting(tmp_path, 480), edge), callee, edge)
        assert time.monotonic() - started < 10
        [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == "noAnswer" and cdr["statusCode"] == 480


def test_carrier_demands_digest(tmp_path: Path) -> None:
    port = free_udp_port()
    trunk = trunk_config(port, trunk_extra="username = \"acct\"\npassword = \"s3cret\"\n")
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk)) as edge:
        callee = uas(tmp_path, "uas_auth.xml", port, ("user", "acct"), ("pass", "s3cret"))
        run_call(uac(tmp_path, "uac_call.xml", edge), callee, edge)
        [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed"


def test_carrier_refuses_wrong_credentials(tmp_path: Path) -> None:
    port = free_udp_port()
    trunk = trunk_config(port, trunk_extra="username = \"acct\"\npassword = \"wrong\"\n")
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk)) as edge:
        callee = uas(tmp_path, "uas_auth.xml", port, ("user", "acct"), ("pass", "s3cret"))
        caller = uac(tmp_path, uac_expecting(tmp_path, 403), edge)
        assert caller.wait() == 0, caller.explain() + edge.log()[-3000:]
        callee.wait()  # it fails its own scenario on purpose (no ACK path after 403)
        [cdr] = cdrs(tmp_path)
    assert cdr["statusCode"] == 403 and cdr["status"] == "failed"


# ------------------------------------------------------------------ users and authentication


def test_unknown_and_offline_users(tmp_path: Path) -> None:
    users = ("[[proxy.user_backends]]\ntype = \"memory\"\n"
             "users = [{username = \"3001\", password = \"pw\"}]\n")
    config = pbx_config(tmp_path, users + trunk_config(free_udp_port(), route=False))
    with running_edge(tmp_path, config_text=config) as edge:
        run_call(uac(tmp_path, uac_expecting(tmp_path, 404), edge, user="3999"), None, edge)
        run_call(uac(tmp_path, uac_expecting(tmp_path, 480), edge, user="3001"), None, edge)
        records = cdrs(tmp_path, 2)
    assert sorted(r["statusCode"] for r in records) == [404, 480]


def test_unknown_caller_is_challenged_and_never_reaches_a_trunk(tmp_path: Path) -> None:
    port = free_udp_port()
    # The caller (127.0.0.1) is not the trunk's host: it must authenticate.
    config = pbx_config(tmp_path, trunk_config(port, inbound="127.0.0.9"))
    with running_edge(tmp_path, config_text=config) as edge:
        run_call(uac(tmp_path, uac_expecting(tmp_path, 407), edge), None, edge)
    assert not list((tmp_path / "cdr").rglob("*.json"))


# ------------------------------------------------------------------ routing webhook


@contextmanager
def router_server(reply: dict[str, Any] | None, delay: float = 0.0) -> Iterator[
        tuple[str, list[tuple[dict[str, str], bytes]]]]:
    """A routing webhook on 127.0.0.1 answering `reply` after `delay` seconds."""
    seen: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(delay)
            data = json.dumps(reply).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:
                pass  # the PBX gave up (timeout)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/route", seen
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_forwards_with_headers_and_extensions(tmp_path: Path) -> None:
    port = free_udp_port()
    reply = {"action": "forward", "targets": [f"sip:bob@127.0.0.1:{port}"],
             "headers": {"X-Routed-By": "crm"}, "extensions": {"ticket": "T-42"}}
    with router_server(reply) as (url, seen):
        router = f"[proxy.http_router]\nurl = \"{url}\"\ntimeout_ms = 2000\n"
        config = pbx_config(tmp_path, trunk_config(port, route=False) + router)
        with running_edge(tmp_path, config_text=config) as edge:
            callee = uas(tmp_path, "uas_answer.xml", port)
            run_call(uac(tmp_path, "uac_call.xml", edge), callee, edge)
            [cdr] = cdrs(tmp_path)
    [(headers, body)] = seen
    request = json.loads(body)
    assert request["direction"] == "inbound" and request["method"] == "INVITE"
    assert request["call_id"] == cdr["callId"] and "m=audio" in request["body"]
    assert "<sip:caller@" in request["from"] and ";tag=" in request["from"]
    assert verify(body, headers, secrets={"k1": SECRET}, now=time.time())
    assert cdr["metadata"] == {"ticket": "T-42"} and cdr["status"] == "completed"
    messages = (tmp_path / "uas_messages.log").read_text()
    assert "X-Routed-By: crm" in messages


@pytest.mark.parametrize("fallback", [True, False])
def test_webhook_timeout(tmp_path: Path, fallback: bool) -> None:
    port = free_udp_port()
    with router_server({"action": "reject", "status": 403}, delay=2.0) as (url, _):
        router = (f"[proxy.http_router]\nurl = \"{url}\"\ntimeout_ms = 300\n"
                  f"fallback_to_static = {'true' if fallback else 'false'}\n")
        config = pbx_config(tmp_path, trunk_config(port) + router)
        with running_edge(tmp_path, config_text=config) as edge:
            if fallback:
                callee = uas(tmp_path, "uas_answer.xml", port)
                run_call(uac(tmp_path, "uac_call.xml", edge), callee, edge)
            else:
                run_call(uac(tmp_path, uac_expecting(tmp_path, 503), edge), None, edge)
            [cdr] = cdrs(tmp_path)
            metrics = _get(edge, "/metrics")
    assert cdr["statusCode"] == (200 if fallback else 503)
    assert 'sdpbx_router_requests_total{outcome="timeout"} 1.0' in metrics


def test_webhook_reject_and_not_handled(tmp_path: Path) -> None:
    port = free_udp_port()
    with router_server({"action": "reject", "status": 403, "reason": "Blocked"}) as (url, _):
        router = f"[proxy.http_router]\nurl = \"{url}\"\n"
        config = pbx_config(tmp_path, trunk_config(port) + router)
        with running_edge(tmp_path, config_text=config) as edge:
            run_call(uac(tmp_path, uac_expecting(tmp_path, 403), edge), None, edge)
    with router_server({"action": "not_handled"}) as (url, _):
        tmp2 = tmp_path / "second"
        tmp2.mkdir()
        router = f"[proxy.http_router]\nurl = \"{url}\"\n"
        config = pbx_config(tmp2, trunk_config(port) + router)
        with running_edge(tmp2, config_text=config) as edge:
            callee = uas(tmp2, "uas_answer.xml", port)
            run_call(uac(tmp2, "uac_call.xml", edge), callee, edge)
            [cdr] = cdrs(tmp2)
    assert cdr["status"] == "completed"


def _get(edge: EdgeProcess, path: str) -> str:
    import httpx

    return httpx.get(f"http://{edge.http[0]}:{edge.http[1]}{path}", timeout=5).text


# ------------------------------------------------------------------ in-dialog requests, forks


def test_hold_reinvite_and_info_are_relayed(tmp_path: Path) -> None:
    port = free_udp_port()
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk_config(port))) as edge:
        callee = uas(tmp_path, "uas_hold.xml", port)
        run_call(uac(tmp_path, "uac_hold.xml", edge), callee, edge)
        [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed" and cdr["hangupReason"] == "byCaller"


def test_parallel_fork_first_answer_wins(tmp_path: Path) -> None:
    ringing, answering = free_udp_port(), free_udp_port()
    reply = {"action": "forward", "strategy": "parallel",
             "targets": [f"sip:a@127.0.0.1:{ringing}", f"sip:b@127.0.0.1:{answering}"]}
    with router_server(reply) as (url, _):
        router = f"[proxy.http_router]\nurl = \"{url}\"\n"
        config = pbx_config(tmp_path, trunk_config(free_udp_port(), route=False) + router)
        with running_edge(tmp_path, config_text=config) as edge:
            loser = Sipp(tmp_path, "loser", ["-sf", str(SCENARIOS / "uas_ring.xml"),
                                             "-p", str(ringing), "-mp", str(free_media_port())])
            winner = uas(tmp_path, "uas_answer.xml", answering)
            run_call(uac(tmp_path, "uac_call.xml", edge), winner, edge)
            # The one that only rang got CANCEL, answered 487 and saw the ACK.
            assert loser.wait() == 0, loser.explain() + edge.log()[-3000:]
            [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed"
    assert {e["legId"] for e in cdr["legTimeline"]["events"]} >= {"a", "b1", "b2"}


def test_sequential_failover_to_the_next_target(tmp_path: Path) -> None:
    failing, answering = free_udp_port(), free_udp_port()
    reply = {"action": "forward",
             "targets": [f"sip:a@127.0.0.1:{failing}", f"sip:b@127.0.0.1:{answering}"]}
    with router_server(reply) as (url, _):
        router = f"[proxy.http_router]\nurl = \"{url}\"\n"
        config = pbx_config(tmp_path, trunk_config(free_udp_port(), route=False) + router)
        scenario = tmp_path / "uas_503.xml"
        scenario.write_text((SCENARIOS / "uas_reject.xml").read_text().replace("[status]", "503"))
        with running_edge(tmp_path, config_text=config) as edge:
            first = Sipp(tmp_path, "first", ["-sf", str(scenario), "-p", str(failing),
                                             "-mp", str(free_media_port())])
            second = uas(tmp_path, "uas_answer.xml", answering)
            run_call(uac(tmp_path, "uac_call.xml", edge), second, edge)
            assert first.wait() == 0, first.explain()
            [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed"
    assert [m["code"] for m in cdr["hangupMessages"]] == [503]


def test_trunk_max_calls_refuses_with_503(tmp_path: Path) -> None:
    port = free_udp_port()
    trunk = trunk_config(port, trunk_extra="max_calls = 0\n")
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk)) as edge:
        run_call(uac(tmp_path, uac_expecting(tmp_path, 503), edge), None, edge)
        metrics = _get(edge, "/metrics")
    assert 'sdpbx_trunk_limited_total{limit="max_calls",trunk="uas"} 1.0' in metrics


# ------------------------------------------------------------------ the PBX ends calls


@pytest.mark.parametrize(("setting", "reason"), [
    ("rtp_timeout = 2\n", "rtpTimeout"), ("max_call_duration = 2\n", "bySystem"),
])
def test_pbx_hangs_up_both_legs(tmp_path: Path, setting: str, reason: str) -> None:
    port = free_udp_port()
    config = pbx_config(tmp_path, setting + trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)  # waits for a BYE
        started = time.monotonic()
        run_call(uac(tmp_path, "uac_wait_bye.xml", edge), callee, edge)
        assert time.monotonic() - started < 12
        [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == reason and cdr["status"] == "completed"


def test_restart_ends_calls_left_by_a_crash(tmp_path: Path) -> None:
    port = free_udp_port()
    # The edge id must survive the restart (by default it holds the SIP port, here 0).
    config = "edge_id = \"edge-under-test\"\n" + pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)
        deadline = time.monotonic() + 10
        # Wait until the answered call is in the store, then kill the edge without a goodbye.
        while "answered" not in _active_states(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.1)
        edge.process.kill()
        edge.process.wait()
    assert not list((tmp_path / "cdr").rglob("*.json"))
    (tmp_path / "ready.json").unlink()
    with running_edge(tmp_path, config_text=config) as edge:
        run_call(caller, callee, edge)  # both legs got a BYE from the new process
        [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == "bySystem" and cdr["answerTime"]


def _active_states(tmp: Path) -> list[str]:
    import sqlite3

    try:
        with sqlite3.connect(tmp / "sdpbx.sqlite3") as db:
            return [row[0] for row in db.execute("SELECT state FROM calls")]
    except sqlite3.Error:
        return []


def test_answer_is_retransmitted_until_the_ack(tmp_path: Path) -> None:
    """RFC 3261 §13.3.1.4: over UDP the caller's 200 is resent (T1, 2T1...) until its ACK."""
    port = free_udp_port()
    text = (SCENARIOS / "uac_call.xml").read_text()
    ack = "  <send>\n    <![CDATA[\n      ACK"
    slow = tmp_path / "uac_slow_ack.xml"
    slow.write_text(text.replace(ack, "  <pause milliseconds=\"1800\"/>\n" + ack, 1))
    with running_edge(tmp_path, config_text=pbx_config(tmp_path, trunk_config(port))) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)
        run_call(uac(tmp_path, slow, edge), callee, edge)
    log = (tmp_path / "uac_messages.log").read_text()
    answers = [part for part in log.split("-----") if "SIP/2.0 200 OK" in part
               and "CSeq: 1 INVITE" in part and "received" in part]
    assert len(answers) >= 3  # at 0, 0.5 and 1.5 s
