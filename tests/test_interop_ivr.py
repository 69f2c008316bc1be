"""Call applications with real softphones (issue 7 item 7): baresip dials a number the routing
webhook answers with Vonage-form steps (talk + input), sends DTMF "1" as RFC 4733, the
application gets digits "1" and replies with a `connect` to a second registered baresip, and
audio flows both ways once bridged; in-band DTMF from a WAV (no RFC 4733) is collected; a
`record` step's WAV holds the caller's tone; three callers in one `conversation` each hear the
other two. The application is a local HTTP server on 127.0.0.1 that checks every signature."""

from __future__ import annotations

import json
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.audio_checks import band_share, read_wav, rms, write_tone
from tests.edge_process import EdgeProcess, running_edge
from tests.interop.clients.softphones import BaresipPhone, baresip_phone
from tests.signed_http import signed_http_server
from tests.test_interop_calls import (
    USERS,
    assert_hears,
    needs_baresip,
    sip_host,
)

pytestmark = [pytest.mark.interop, needs_baresip]

REALM = "pbx.test"
SECRET = "ivr-webhook-secret"
SHARED_AUDIO = Path(__file__).parent / "vectors" / "audio"  # copies of ../shared/audio
Reply = Callable[[str, dict[str, Any]], Any]


class App:
    """Answers /route (the routing webhook) and the application URLs via `reply`; keeps
    every event it receives."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.bad_signatures = 0

    def wait_for(self, path: str, match: Callable[[dict[str, Any]], bool],
                  timeout: float = 15.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for seen_path, body in list(self.events):
                if seen_path == path and match(body):
                    return body
            time.sleep(0.05)
        raise AssertionError(f"no matching event at {path}: {self.events}")


@contextmanager
def app_server(app: App) -> Iterator[str]:
    def handle(method: str, path_and_query: str, body: bytes,
               signed: bool) -> tuple[int, bytes]:
        data = json.loads(body) if body else {}
        path = path_and_query.split("?")[0]
        app.events.append((path, data))
        answer = app.reply(path, data)
        return 200, b"" if answer is None else json.dumps(answer).encode()

    with signed_http_server(handle, {"k1": SECRET}) as (base, signatures):
        yield base
        app.bad_signatures = signatures.bad


def edge_config(tmp: Path, router_url: str) -> str:
    users = ", ".join(
        f'{{ username = "{name}", password = "{password}" }}' for name, password in USERS.items()
    )
    return "\n".join([
        'edge_id = "edge-ivr"',
        "[proxy]",
        'addr = "127.0.0.1"', "udp_port = 0", "tcp_port = 0",
        f'realms = ["{REALM}"]',
        'media_proxy = "all"', "rtp_start_port = 33000", "rtp_end_port = 33999",
        "[proxy.security]", "auth_failures_max = 1000", 'digest_algorithms = ["MD5"]',
        "[[proxy.user_backends]]", 'type = "memory"', f"users = [{users}]",
        "[proxy.http_router]", f'url = "{router_url}"', "fallback_to_static = true",
        "[http]", 'addr = "127.0.0.1:0"',
        "[store]", f'path = "{tmp / "sdpbx.sqlite3"}"', f'spool_path = "{tmp / "spool"}"',
        "[callrecord]", 'type = "local"', f'root = "{tmp / "cdr"}"',
        "[recording]", f'path = "{tmp / "recordings"}"',
        "[webhooks]", f'secret = "{SECRET}"',
        "[log]", 'level = "info"', 'format = "json"',
        "",
    ])


@contextmanager
def ivr_edge(tmp: Path, reply: Reply) -> Iterator[tuple[EdgeProcess, App, str]]:
    app = App(reply)
    with app_server(app) as base, running_edge(
            tmp, config_text=edge_config(tmp, f"{base}/route")) as edge:
        yield edge, app, base
    assert app.bad_signatures == 0


def phone(tmp: Path, edge: EdgeProcess, name: str, source: Path) -> Any:
    return baresip_phone(tmp / name, aor=f"sip:{name}@{sip_host(edge.sip_udp)}",
                         password=USERS[name], source=source)


def not_handled(data: dict[str, Any]) -> dict[str, Any]:
    return {"action": "not_handled"}


def dial(caller: BaresipPhone, target: str) -> None:
    response = caller.control.command("dial", target)
    assert response is not None and response.get("ok"), (response, caller.output()[-3000:])
    assert caller.wait_event("CALL_ESTABLISHED", 15) is not None, caller.output()[-6000:]


def hang_up(caller: BaresipPhone) -> None:
    caller.control.command("hangup")
    assert caller.wait_event("CALL_CLOSED", 10) is not None, caller.output()[-3000:]


def test_talk_input_rfc4733_then_connect_to_a_second_phone(tmp_path: Path) -> None:
    def reply(path: str, data: dict[str, Any]) -> Any:
        if path == "/route":
            if "500@" not in data.get("uri", ""):
                return not_handled(data)
            # Vonage's own NCCO form (talk, input with eventUrl arrays), as in its docs.
            return {"action": "answer", "event_url": f"{base}/events", "steps": [
                {"action": "talk", "text": "Welcome. Press one to reach Bob.", "bargeIn": True},
                {"action": "input", "type": ["dtmf"],
                 "dtmf": {"maxDigits": 1, "timeOut": 10}, "eventUrl": [f"{base}/input"]}]}
        if path == "/input" and data.get("dtmf", {}).get("digits") == "1":
            return [{"action": "connect", "endpoint": [{"type": "app", "user": "bob"}]}]
        return None

    alice_tone = write_tone(tmp_path / "alice.wav", 1000.0, 40)
    bob_tone = write_tone(tmp_path / "bob.wav", 440.0, 40)
    with ivr_edge(tmp_path, reply) as (edge, app, base):
        with (phone(tmp_path, edge, "bob", bob_tone) as bob,
              phone(tmp_path, edge, "alice", alice_tone) as alice):
            assert bob.wait_registered() and alice.wait_registered(), alice.output()[-3000:]
            dial(alice, f"sip:500@{sip_host(edge.sip_udp)}")
            time.sleep(1.0)
            assert alice.control.command("sndcode", "1") is not None
            result = app.wait_for("/input", lambda e: "dtmf" in e)
            assert bob.wait_event("CALL_ESTABLISHED", 15) is not None, (
                bob.output()[-4000:], edge.log()[-4000:])
            time.sleep(4.0)
            hang_up(alice)
            assert bob.wait_event("CALL_CLOSED", 10) is not None, bob.output()[-3000:]
        statuses = [e.get("status") for p, e in app.events if p == "/events"]
    assert result["dtmf"] == {"digits": "1", "timed_out": False}, result
    assert result["state"]["values"] == {"input1": "1"}
    assert statuses[:2] == ["started", "answered"] and "completed" in statuses, statuses
    assert_hears(bob, "bob", 1000.0)  # alice, bridged through the relay
    heard = read_wav(alice.received_audio() or Path("missing"))
    [samples] = heard.channels
    assert band_share(samples, heard.rate, 440.0) > 0.3, "alice did not hear bob"


def _dtmf_source(tmp: Path) -> Path:
    """1 s of silence, the shared "1234#" tones, then 20 s of silence (baresip hangs up when
    its source ends)."""
    with wave.open(str(SHARED_AUDIO / "dtmf_1234hash_8k.wav")) as source:
        tones = np.frombuffer(source.readframes(source.getnframes()), dtype="<i2")
    samples = np.concatenate([np.zeros(8000, "<i2"), tones, np.zeros(160_000, "<i2")])
    path = tmp / "dtmf-source.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(samples.tobytes())
    return path


def test_inband_dtmf_is_collected(tmp_path: Path) -> None:
    def reply(path: str, data: dict[str, Any]) -> Any:
        if path == "/route":
            return {"action": "answer", "steps": [
                {"action": "input", "dtmf": {"maxDigits": 8, "submitOnHash": True,
                                             "timeOut": 8}, "eventUrl": [f"{base}/input"]},
                {"action": "hangup"}]}
        return None

    with (ivr_edge(tmp_path, reply) as (edge, app, base),
          phone(tmp_path, edge, "alice", _dtmf_source(tmp_path)) as alice):
        assert alice.wait_registered(), alice.output()[-3000:]
        dial(alice, f"sip:600@{sip_host(edge.sip_udp)}")
        result = app.wait_for("/input", lambda e: "dtmf" in e)
        assert alice.wait_event("CALL_CLOSED", 10) is not None  # the hangup step
    assert result["dtmf"] == {"digits": "1234", "timed_out": False}, result


def test_record_step_holds_the_callers_tone(tmp_path: Path) -> None:
    def reply(path: str, data: dict[str, Any]) -> Any:
        if path == "/route":
            return {"action": "answer", "steps": [
                {"action": "record", "timeOut": 3, "eventUrl": [f"{base}/recorded"]},
                {"action": "wait", "timeout": 4}, {"action": "hangup"}]}
        return None

    with ivr_edge(tmp_path, reply) as (edge, app, base):
        with phone(tmp_path, edge, "alice", write_tone(tmp_path / "a.wav", 1000.0, 30)) as alice:
            assert alice.wait_registered(), alice.output()[-3000:]
            dial(alice, f"sip:700@{sip_host(edge.sip_udp)}")
            event = app.wait_for("/recorded", lambda e: "recording_url" in e)
            assert alice.wait_event("CALL_CLOSED", 10) is not None
        recordings = sorted((tmp_path / "recordings" / "calls").rglob("*.wav"))
        deadline = time.monotonic() + 10
        while not recordings and time.monotonic() < deadline:
            time.sleep(0.1)
            recordings = sorted((tmp_path / "recordings" / "calls").rglob("*.wav"))
    assert "/recordings/1" in event["recording_url"], event
    assert int(event["size"]) > 8000
    [path] = recordings
    audio = read_wav(path)
    party = audio.channels[0]
    assert 2.0 <= audio.seconds <= 4.0, audio.seconds
    assert rms(party) > 0.02 and band_share(party, audio.rate, 1000.0) > 0.6


def test_three_party_conference(tmp_path: Path) -> None:
    def reply(path: str, data: dict[str, Any]) -> Any:
        if path == "/route":
            return {"action": "answer", "steps": [
                {"action": "conversation", "name": "room-42", "record": True,
                 "eventUrl": [f"{base}/recorded"]}]}
        return None

    freqs = {"alice": 1000.0, "bob": 440.0, "carol": 700.0}
    with (ivr_edge(tmp_path, reply) as (edge, app, base),
          phone(tmp_path, edge, "alice", write_tone(tmp_path / "a.wav", 1000.0, 40)) as a,
          phone(tmp_path, edge, "bob", write_tone(tmp_path / "b.wav", 440.0, 40)) as b,
          phone(tmp_path, edge, "carol", write_tone(tmp_path / "c.wav", 700.0, 40)) as c):
        phones = {"alice": a, "bob": b, "carol": c}
        for one in phones.values():
            assert one.wait_registered(), one.output()[-3000:]
        for one in phones.values():
            dial(one, f"sip:800@{sip_host(edge.sip_udp)}")
        time.sleep(4.0)
        for one in phones.values():
            hang_up(one)
        event = app.wait_for("/recorded", lambda e: "recording_url" in e)
    # The room's recording (one, made by the first member's step) holds everyone.
    [room_wav] = sorted((tmp_path / "recordings" / "calls").rglob("*.wav"))
    mix = read_wav(room_wav)
    for hz in freqs.values():
        assert band_share(mix.channels[0], mix.rate, hz) > 0.1, (hz, room_wav)
    assert "/recordings/1" in event["recording_url"]
    for name, one in phones.items():
        path = one.received_audio()
        assert path is not None, name
        heard = read_wav(path)
        [samples] = heard.channels
        for other, hz in freqs.items():
            share = band_share(samples, heard.rate, hz)
            if other == name:
                assert share < 0.05, (name, "hears itself", share)
            else:
                assert share > 0.1, (name, "does not hear", other, share)


def test_api_extension_baresip_call_hangup_and_cdr(tmp_path: Path) -> None:
    """Issue 6's whole loop with a real phone: an extension created through the embedded API,
    baresip registers with it (directory digest), a trunk call reaches it, a hangup command
    through the API ends it on the wire, and the CDR appears in the query API."""
    import httpx

    from tests.ports import free_udp_port
    from tests.test_calls_sipp import pbx_config, trunk_config, uac
    from tests.test_outbound_calls import api_token

    config = pbx_config(tmp_path, trunk_config(free_udp_port(), route=False))
    auth = api_token(tmp_path, config, scope="admin")
    with running_edge(tmp_path, config_text=config) as edge:
        api = f"http://{edge.http[0]}:{edge.http[1]}/console"
        created = httpx.post(f"{api}/extensions", headers=auth, timeout=5,
                             json={"username": "2001", "password": "b4resip-pw"})
        assert created.status_code == 201, created.text
        with baresip_phone(tmp_path / "ext", aor=f"sip:2001@{sip_host(edge.sip_udp)}",
                           password="b4resip-pw",
                           source=write_tone(tmp_path / "t.wav", 440.0, 30)) as ext:
            assert ext.wait_registered(), ext.output()[-3000:] + edge.log()[-3000:]
            caller = uac(tmp_path, "uac_wait_bye.xml", edge, user="2001")
            assert ext.wait_event("CALL_ESTABLISHED", 15) is not None, ext.output()[-4000:]
            active: list[dict[str, Any]] = []
            deadline = time.monotonic() + 5
            while not active and time.monotonic() < deadline:
                active = [c for c in httpx.get(f"{api}/calls/active", headers=auth,
                                               timeout=5).json()["items"]
                          if c["status"] == "answered"]
                time.sleep(0.1)
            assert active, edge.log()[-3000:]
            call_id = active[0]["session_id"]
            hangup = httpx.post(f"{api}/calls/active/{call_id}/commands", headers=auth,
                                json={"action": "hangup"}, timeout=10)
            assert hangup.status_code == 200, hangup.text
            assert ext.wait_event("CALL_CLOSED", 10) is not None  # the BYE reached baresip
            assert caller.wait() == 0, caller.explain()  # and the caller
        records: dict[str, Any] = {"items": []}
        deadline = time.monotonic() + 10
        while not records["items"] and time.monotonic() < deadline:
            records = httpx.get(f"{api}/call-records", headers=auth, timeout=5).json()
            time.sleep(0.1)
        cdr = httpx.get(f"{api}/call-records/{call_id}", headers=auth, timeout=5).json()
    assert records["items"][0]["call_id"] == call_id
    assert cdr["hangupReason"] == "bySystem" and cdr["status"] == "completed"
