"""Real clients register with a real `sdpbx up` (issue 4 item 7): sipsak, SIPp, baresip and
linphonec, digest-authenticated over UDP and TCP; and the locator webhook, signed, received by
a real HTTP server on 127.0.0.1.

Users alice/alicepw and bob/bobpw live in the memory user backend, realm `pbx.test`; clients
address the edge by its 127.0.0.1 address, which the registrar maps to that realm, so every AOR
is `sip:<user>@pbx.test`. Expiries are short (`min_registrar_expires = 1`) so that a refresh and
an expiry happen within a test. Every client binds 127.0.0.1, runs bounded in time, and is
stopped by its own PID. Locally a missing client skips its tests; with CI set it fails them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from control.contracts.locator import LOCATOR_EVENT_ADAPTER
from control.contracts.signing import verification_failure
from tests.edge_process import EdgeProcess, running_edge
from tests.interop.clients.softphones import linphonec_register, run_baresip
from tests.ports import free_port

pytestmark = pytest.mark.interop

SCENARIOS = Path(__file__).parent / "interop" / "sipp"
REALM = "pbx.test"
EDGE_ID = "edge-interop"
WEBHOOK_SECRET = "interop-webhook-secret"
WEBHOOK_KEY_ID = "interop-k1"
USERS = {"alice": "alicepw", "bob": "bobpw"}

# Locally a missing client skips its tests; in CI (CI=true) it fails them instead, so that a
# broken install step can never turn the real-client tests into silent skips.
_IN_CI = bool(os.environ.get("CI"))


def _needs(tool: str, package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(tool) is None and not _IN_CI, reason=f"{tool} not installed ({package})"
    )


needs_sipp = _needs("sipp", "sip-tester")
needs_sipsak = _needs("sipsak", "sipsak")
needs_baresip = _needs("baresip", "baresip")
needs_linphonec = _needs("linphonec", "linphone-cli")

# Debian 12's SIPp 3.6.1, sipsak 0.9.8.1 and baresip 1.0.0 predate RFC 8760: the first two answer
# only the topmost challenge and only if it is MD5, baresip gives up when any challenge is not
# MD5. linphonec 5.1 picks the topmost it supports (SHA-256). So the edge the old clients meet
# offers MD5 only, and linphonec also meets one that offers SHA-256 first.
_MD5_HINT = "\n(this client answers only an MD5 challenge: [proxy.security] digest_algorithms)"


# --- a real webhook receiver -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float

    def json(self) -> dict[str, Any]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


class WebhookReceiver:
    """`http.server` on 127.0.0.1:0 in a thread, keeping every POST it receives."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.deliveries.append(Delivery(
                        path=self.path, headers=dict(self.headers.items()), body=body,
                        received_at=time.time(),
                    ))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet: pytest shows what matters

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/locator"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def snapshot(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def wait_for(
        self, matches: Callable[[dict[str, Any]], bool], *, after: int = 0, timeout: float = 5.0
    ) -> list[Delivery]:
        """Deliveries (from index `after` on) whose JSON body `matches`, waiting up to `timeout`
        for at least one; an empty list when none came."""
        deadline = time.monotonic() + timeout
        while True:
            found = [d for d in self.snapshot()[after:] if matches(d.json())]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def event_for(event: str, contact_part: str) -> Callable[[dict[str, Any]], bool]:
    """Does a locator body report `event` for a location whose contact contains `contact_part`?"""

    def matches(body: dict[str, Any]) -> bool:
        if body.get("event") != event:
            return False
        locations = body.get("locations") or [body.get("location") or {}]
        return any(contact_part in (location.get("contact") or "") for location in locations)

    return matches


def locations_of(delivery: Delivery, contact_part: str) -> list[dict[str, Any]]:
    body = delivery.json()
    locations = body.get("locations") or [body.get("location") or {}]
    return [loc for loc in locations if contact_part in (loc.get("contact") or "")]


def assert_signed_and_valid(delivery: Delivery) -> None:
    """Signed with our secret (control.contracts.signing), fresh, and a valid locator body."""
    failure = verification_failure(
        delivery.body, delivery.headers, secrets={WEBHOOK_KEY_ID: WEBHOOK_SECRET},
        now=delivery.received_at,
    )
    assert failure is None, f"{failure}: {delivery.headers} {delivery.body!r}"
    assert delivery.path == "/locator"
    assert delivery.headers.get("Content-Type", "").startswith("application/json")
    LOCATOR_EVENT_ADAPTER.validate_json(delivery.body)  # the published contract


# --- the edge ----------------------------------------------------------------------------------


def edge_config(tmp: Path, webhook_url: str, algorithms: list[str]) -> str:
    users = ", ".join(
        f'{{ username = "{name}", password = "{password}" }}' for name, password in USERS.items()
    )
    security = [
        # Every client here comes from 127.0.0.1: the wrong-password tests must not get the
        # whole address blocked for the others.
        "auth_failures_max = 1000",
    ]
    security.append(f"digest_algorithms = {json.dumps(algorithms)}")
    return "\n".join([
        f'edge_id = "{EDGE_ID}"',
        "[proxy]",
        'addr = "127.0.0.1"', "udp_port = 0", "tcp_port = 0",
        f'realms = ["{REALM}"]',
        "registrar_expires = 60", "min_registrar_expires = 1", "max_registrar_expires = 3600",
        "[proxy.security]", *security,
        "[[proxy.user_backends]]", 'type = "memory"', f"users = [{users}]",
        "[proxy.locator_webhook]", f'url = "{webhook_url}"', "timeout_ms = 2000",
        "[webhooks]", f'secret = "{WEBHOOK_SECRET}"', f'key_id = "{WEBHOOK_KEY_ID}"',
        "[http]", 'addr = "127.0.0.1:0"',
        "[store]", f'path = "{tmp / "sdpbx.sqlite3"}"',
        "[callrecord]", f'root = "{tmp / "cdr"}"',
        "[recording]", f'path = "{tmp / "recordings"}"',
        "[log]", 'level = "info"', 'format = "json"',
        "",
    ])


def running_edge_with(tmp: Path, config_text: str) -> AbstractContextManager[EdgeProcess]:
    """`running_edge` with the whole config given (the registrar settings are keys of
    `[proxy]`, which an appended `extra_config` cannot add to)."""
    return running_edge(tmp, config_text=config_text)


@pytest.fixture(scope="module")
def webhooks() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, webhooks: WebhookReceiver
         ) -> Iterator[EdgeProcess]:
    """The edge the pre-RFC 8760 clients meet: MD5 challenges only."""
    tmp = tmp_path_factory.mktemp("edge-md5")
    with running_edge_with(tmp, edge_config(tmp, webhooks.url, ["MD5"])) as process:
        yield process
        assert process.process.poll() is None, "sdpbx died during the tests:\n" + process.log()
    # Whatever a test left, every delivery the edge made was signed and well formed.
    for delivery in webhooks.snapshot():
        assert_signed_and_valid(delivery)


def sip_uri(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


# --- sipsak ------------------------------------------------------------------------------------


def run_sipsak(edge: EdgeProcess, user: str, password: str, expires: int, local_port: int
               ) -> subprocess.CompletedProcess[str]:
    # -U: usrloc mode (REGISTER, answering the 401 with -a); -u names the digest user: without
    # it sipsak 0.9.8 sends and hashes username="alice@". -i: no extra Via in usrloc mode.
    return subprocess.run(
        ["sipsak", "-U", "-s", f"sip:{user}@{sip_uri(edge.sip_udp)}", "-u", user,
         "-a", password, "-x", str(expires), "-H", "127.0.0.1", "-l", str(local_port),
         "-i", "-vv"],
        capture_output=True, text=True, timeout=20, check=False,
    )


@needs_sipsak
def test_sipsak_registers_and_unregisters_over_udp(
    edge: EdgeProcess, webhooks: WebhookReceiver
) -> None:
    port = free_port(socket.SOCK_DGRAM)
    contact = f"127.0.0.1:{port}"
    seen = len(webhooks.snapshot())

    registered = run_sipsak(edge, "alice", "alicepw", 30, port)
    assert registered.returncode == 0, registered.stdout + registered.stderr + _MD5_HINT
    assert "authorizing" in registered.stdout  # sipsak was challenged, then accepted

    [delivery] = webhooks.wait_for(event_for("registered", contact), after=seen)
    assert_signed_and_valid(delivery)
    [location] = locations_of(delivery, contact)
    assert location["aor"] == f"sip:alice@{REALM}"
    assert location["transport"] == "UDP"
    # where the REGISTER came from: sipsak sends from another port than its Contact's (-l)
    assert location["destination"].startswith("UDP 127.0.0.1:")
    assert location["user_agent"].startswith("sipsak")
    assert location["home_proxy"] == EDGE_ID
    assert 0 < location["expires"] <= 30

    seen = len(webhooks.snapshot())
    unregistered = run_sipsak(edge, "alice", "alicepw", 0, port)
    assert unregistered.returncode == 0, unregistered.stdout + unregistered.stderr
    [delivery] = webhooks.wait_for(event_for("unregistered", contact), after=seen)
    assert_signed_and_valid(delivery)
    assert locations_of(delivery, contact)[0]["expires"] == 0


@needs_sipsak
def test_sipsak_wrong_password_is_refused(edge: EdgeProcess, webhooks: WebhookReceiver) -> None:
    port = free_port(socket.SOCK_DGRAM)
    seen = len(webhooks.snapshot())
    result = run_sipsak(edge, "alice", "not-alicepw", 30, port)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert re.search(r"SIP/2\.0 40[13] ", output), output
    # sipsak answered the challenge and was challenged (or refused) again
    assert "authorization failed" in output or "SIP/2.0 403" in output, output
    assert webhooks.wait_for(event_for("registered", f"127.0.0.1:{port}"), after=seen,
                             timeout=0.5) == []


# --- SIPp --------------------------------------------------------------------------------------


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
def test_sipp_register_refresh_unregister_and_wildcard(
    edge: EdgeProcess, webhooks: WebhookReceiver, transport: str, tmp_path: Path
) -> None:
    """tests/interop/sipp/register_digest.xml: register, refresh, un-register, Contact: *."""
    udp = transport == "u1"
    target = edge.sip_udp if udp else edge.sip_tcp
    port = free_port(socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
    seen = len(webhooks.snapshot())
    errors = tmp_path / "sipp_errors.log"
    result = subprocess.run(
        ["sipp", "-sf", str(SCENARIOS / "register_digest.xml"), sip_uri(target), "-s", "bob",
         "-i", "127.0.0.1", "-p", str(port), "-t", transport, "-m", "1",
         "-timeout", "15s", "-timeout_error", "-nostdin", "-trace_err", "-error_file",
         str(errors)],
        capture_output=True, timeout=30, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, (
        f"sipp over {transport} exited {result.returncode}\n"
        f"{errors.read_text() if errors.exists() else ''}\n"
        f"{result.stdout.decode(errors='replace')[-2000:]}{_MD5_HINT}"
    )
    contact = f"bob@127.0.0.1:{port}"
    # register, refresh, register again: `registered` each time; un-register and Contact: *
    # removed the binding twice: `unregistered` each time.
    registered = webhooks.wait_for(event_for("registered", contact), after=seen)
    unregistered = webhooks.wait_for(event_for("unregistered", contact), after=seen)
    deadline = time.monotonic() + 5
    while (len(registered) < 3 or len(unregistered) < 2) and time.monotonic() < deadline:
        time.sleep(0.05)
        registered = webhooks.wait_for(event_for("registered", contact), after=seen)
        unregistered = webhooks.wait_for(event_for("unregistered", contact), after=seen)
    assert len(registered) == 3, [d.json() for d in registered]
    assert len(unregistered) == 2, [d.json() for d in unregistered]
    for delivery in registered + unregistered:
        assert_signed_and_valid(delivery)
        [location] = locations_of(delivery, contact)
        assert location["aor"] == f"sip:bob@{REALM}"
        assert location["transport"] == ("UDP" if udp else "TCP")


# --- baresip -----------------------------------------------------------------------------------


@needs_baresip
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_registers_and_refreshes(
    edge: EdgeProcess, webhooks: WebhookReceiver, transport: str, tmp_path: Path
) -> None:
    """baresip asks for 2 s, so it refreshes every 1.8 s (90% of the expiry granted): in 5 s it
    registers, refreshes at least twice, and un-registers on exit."""
    target = edge.sip_udp if transport == "udp" else edge.sip_tcp
    seen = len(webhooks.snapshot())
    run = run_baresip(
        tmp_path / "baresip", aor=f"sip:alice@{sip_uri(target)};transport={transport}",
        password=USERS["alice"], regint=2, seconds=5,
    )
    responses = run.register_responses()
    assert run.returncode == 0, run.output[-3000:]
    registrations = [c for status, c in responses if status == 200 and "expires=0" not in c]
    assert len(registrations) >= 3, f"{responses}{_MD5_HINT}\n{run.output[-3000:]}"
    # every 200 granted what baresip asked for (2 s): the registrar honoured the short expiry
    assert responses[-1][0] == 200 and "expires=0" in responses[-1][1], responses
    assert all(status in (200, 401) for status, _ in responses), responses

    contact = re.search(r"<sip:([^>;]+)", registrations[0])
    assert contact is not None
    contact_part = contact.group(1)  # e.g. alice-0x55e3...@127.0.0.1:42603
    events = webhooks.wait_for(event_for("registered", contact_part), after=seen)
    deadline = time.monotonic() + 3
    while len(events) < len(registrations) and time.monotonic() < deadline:
        time.sleep(0.05)
        events = webhooks.wait_for(event_for("registered", contact_part), after=seen)
    assert len(events) == len(registrations)
    gone = webhooks.wait_for(event_for("unregistered", contact_part), after=seen)
    assert len(gone) == 1
    for delivery in [*events, *gone]:
        assert_signed_and_valid(delivery)
        [location] = locations_of(delivery, contact_part)
        assert location["aor"] == f"sip:alice@{REALM}"
        assert location["transport"] == transport.upper()
        assert location["user_agent"].startswith("baresip")
    assert 0 < locations_of(events[0], contact_part)[0]["expires"] <= 2


# --- linphonec ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def edge_sha256(tmp_path_factory: pytest.TempPathFactory, webhooks: WebhookReceiver
                ) -> Iterator[EdgeProcess]:
    """An edge offering SHA-256 first, then MD5 (RFC 8760 §2.4), as a modern phone meets it."""
    tmp = tmp_path_factory.mktemp("edge-sha256")
    with running_edge_with(tmp, edge_config(tmp, webhooks.url, ["SHA-256", "MD5"])) as process:
        yield process
        assert process.process.poll() is None, "sdpbx died during the tests:\n" + process.log()


@needs_linphonec
@pytest.mark.parametrize("offer", ["md5", "sha256"])
def test_linphonec_registers_with_digest(
    request: pytest.FixtureRequest, webhooks: WebhookReceiver, offer: str, tmp_path: Path
) -> None:
    edge: EdgeProcess = request.getfixturevalue("edge" if offer == "md5" else "edge_sha256")
    seen = len(webhooks.snapshot())
    registrar = sip_uri(edge.sip_udp)
    run = linphonec_register(
        tmp_path / "linphonec", identity=f"sip:alice@{registrar}", proxy=f"sip:{registrar}",
        password=USERS["alice"],
    )
    assert "LinphoneRegistrationOk" in run.states, (run.states, run.log[-4000:])
    offered = re.findall(r"WWW-Authenticate: +Digest .*?algorithm=([\w-]+)", run.log)
    answered = re.findall(r"Authorization: +Digest .*?algorithm=([\w-]+)", run.log)
    assert offered and answered, run.log[-4000:]
    if offer == "sha256":
        assert offered[:2] == ["SHA-256", "MD5"], offered  # one challenge per algorithm
    else:
        assert set(offered) == {"MD5"}, offered
    # RFC 8760 §2.5: the client answers the topmost challenge it supports (both, for linphone)
    assert set(answered) == {offered[0]}, (offered, answered)
    events = webhooks.wait_for(
        lambda body: body.get("event") == "registered"
        and "Linphone" in ((body.get("location") or {}).get("user_agent") or ""),
        after=seen,
    )
    assert events, webhooks.snapshot()[seen:]
    location = events[0].json()["location"]
    assert location["aor"] == f"sip:alice@{REALM}"
    assert location["transport"] == "UDP"
    for delivery in events:
        assert_signed_and_valid(delivery)
    # linphonec un-registers when it quits
    assert run.states[-1] == "LinphoneRegistrationCleared", run.states


# --- expiry ------------------------------------------------------------------------------------


@needs_sipsak
def test_expiry_sends_offline(edge: EdgeProcess, webhooks: WebhookReceiver) -> None:
    """A binding not refreshed is swept when it expires: one signed `offline` event."""
    port = free_port(socket.SOCK_DGRAM)
    contact = f"127.0.0.1:{port}"
    seen = len(webhooks.snapshot())
    result = run_sipsak(edge, "bob", "bobpw", 1, port)
    assert result.returncode == 0, result.stdout + result.stderr + _MD5_HINT
    registered_at = time.monotonic()
    [offline] = webhooks.wait_for(event_for("offline", contact), after=seen, timeout=15)
    waited = time.monotonic() - registered_at
    assert_signed_and_valid(offline)
    assert offline.json()["event"] == "offline"
    [location] = locations_of(offline, contact)
    assert location["aor"] == f"sip:bob@{REALM}"
    assert location["expires"] == 0
    assert waited >= 0.5, "offline before the binding could have expired"
    # the binding is gone: a REGISTER listing nothing would show it; the store is the witness
    assert webhooks.wait_for(event_for("unregistered", contact), after=seen, timeout=0) == []
