"""Active-call commands on a real `sdpbx up`: the edge's signed command endpoint ends a call on
the wire (BYE to both SIPp legs) and mutes a party in the RTP relay (real UDP on 127.0.0.1)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from control.contracts.signing import sign
from tests.edge_process import EdgeProcess, running_edge
from tests.ports import free_media_port, free_udp_port
from tests.test_calls_sipp import (
    SCENARIOS,
    SECRET,
    Sipp,
    cdrs,
    pbx_config,
    run_call,
    trunk_config,
    uac,
    uas,
)

pytestmark = [pytest.mark.interop]


def command(edge: EdgeProcess, call_id: str, body: dict[str, object],
            secret: str = SECRET) -> httpx.Response:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json",
               **sign(data, secret=secret, key_id="k1", now=time.time())}
    url = f"http://{edge.http[0]}:{edge.http[1]}/internal/calls/{call_id}/commands"
    return httpx.post(url, content=data, headers=headers, timeout=5)


def wait_uac_log(tmp: Path, marker: str, what: str, timeout: float = 10.0) -> str:
    """The caller's Call-ID once `marker` shows in the UAC's message log."""
    deadline = time.monotonic() + timeout
    log = tmp / "uac_messages.log"
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        if marker in text:
            found = re.search(r"^Call-ID: (\S+)", text, re.MULTILINE)
            assert found is not None
            return found.group(1)
        time.sleep(0.1)
    raise AssertionError(f"the call was not {what}")


def wait_answered(tmp: Path, timeout: float = 10.0) -> str:
    """The caller's Call-ID once its call is answered (the UAC sent its ACK)."""
    return wait_uac_log(tmp, "ACK sip:", "answered", timeout)


def wait_ringing(tmp: Path, timeout: float = 10.0) -> str:
    """The caller's Call-ID once its call rings (a 180 in the UAC's log)."""
    return wait_uac_log(tmp, "SIP/2.0 180", "ringing", timeout)


def test_hangup_command_ends_the_call_on_the_wire(tmp_path: Path) -> None:
    port = free_udp_port()
    config = pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)  # waits for a BYE
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)  # waits for a BYE
        call_id = wait_answered(tmp_path)
        assert command(edge, call_id, {"action": "hangup"}, secret="wrong").status_code == 401
        assert command(edge, "no-such-call", {"action": "hangup"}).status_code == 404
        bad = command(edge, call_id, {"action": "hangup", "code": 99})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "hangup.code"
        assert command(edge, call_id, {"action": "accept"}).status_code == 409  # answered
        assert command(edge, call_id, {"action": "accept", "sdp": "v=0"}).status_code == 501
        assert command(edge, call_id, {"action": "pause_recording"}).status_code == 501
        # An unknown transfer target is refused; the call goes on.
        assert command(edge, call_id, {"action": "transfer", "target": "+1099"}).status_code == 409
        reply = command(edge, call_id, {"action": "hangup", "reason": "operator"})
        assert reply.status_code == 200 and reply.json() == {"message": "Command dispatched"}
        run_call(caller, callee, edge)  # both legs received the BYE
        [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == "bySystem" and cdr["status"] == "completed"


def scenario_with_media_port(tmp: Path, name: str, port: int) -> Path:
    text = (SCENARIOS / name).read_text().replace("[media_port]", str(port))
    path = tmp / f"{port}-{name}"
    path.write_text(text)
    return path


def _relay_port(log: Path, direction: str) -> int:
    """The audio port of the first SDP the SIPp log shows `direction` ("received"/"sent")."""
    for part in log.read_text(errors="replace").split("-----"):
        if f"message {direction}" in part:
            found = re.search(r"^\s*m=audio (\d+)", part, re.MULTILINE)
            if found:
                return int(found.group(1))
    raise AssertionError(f"no SDP {direction} in {log}")


def rtp_packet(seq: int) -> bytes:
    return bytes([0x80, 0, seq >> 8, seq & 0xFF]) + (seq * 160).to_bytes(4, "big") \
        + b"\x11\x22\x33\x44" + b"\xff" * 160


def drain(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return count
        count += 1


@dataclass
class MediaCall:
    """An answered SIPp call through the edge whose two parties' RTP are our UDP sockets."""

    edge: EdgeProcess
    caller: Sipp
    callee: Sipp
    call_id: str
    caller_media: socket.socket
    callee_media: socket.socket
    relay_a: int  # the relay port the caller was told to send to


@contextmanager
def media_call(tmp: Path) -> Iterator[MediaCall]:
    """A trunk call (SIPp caller -> edge -> SIPp callee, both answering with our sockets'
    ports in their SDP), answered, the edge running with the caller's Call-ID known."""
    port = free_udp_port()
    caller_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    callee_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (caller_media, callee_media):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    try:
        config = pbx_config(tmp, trunk_config(port))
        with running_edge(tmp, config_text=config) as edge:
            callee = Sipp(tmp, "uas", [
                "-sf", str(scenario_with_media_port(
                    tmp, "uas_answer.xml", callee_media.getsockname()[1])),
                "-p", str(port), "-mp", str(free_media_port())])
            time.sleep(0.3)
            caller = Sipp(tmp, "uac", [
                "-sf", str(scenario_with_media_port(
                    tmp, "uac_wait_bye.xml", caller_media.getsockname()[1])),
                f"{edge.sip_udp[0]}:{edge.sip_udp[1]}", "-s", "2000", "-t", "u1",
                "-p", str(free_udp_port()), "-mp", str(free_media_port())])
            call_id = wait_answered(tmp)
            yield MediaCall(edge, caller, callee, call_id, caller_media, callee_media,
                            _relay_port(tmp / "uac_messages.log", "received"))
    finally:
        caller_media.close()
        callee_media.close()


def test_mute_stops_the_media_of_one_party(tmp_path: Path) -> None:
    with media_call(tmp_path) as call:

        def burst(first: int) -> int:
            for seq in range(first, first + 20):
                call.caller_media.sendto(rtp_packet(seq), ("127.0.0.1", call.relay_a))
                time.sleep(0.005)
            time.sleep(0.2)
            return drain(call.callee_media)

        edge, call_id = call.edge, call.call_id
        assert burst(1) == 20  # relayed to the callee
        assert command(edge, call_id, {"action": "mute", "leg": "caller"}).status_code == 200
        assert burst(21) == 0  # the callee hears nothing from the caller
        assert command(edge, call_id, {"action": "unmute",
                                       "track_id": "caller"}).status_code == 200
        assert burst(41) == 20
        assert command(edge, call_id, {"action": "hangup"}).status_code == 200
        run_call(call.caller, call.callee, edge)


def test_control_plane_finds_the_edge_and_delivers(tmp_path: Path) -> None:
    """The control plane's path: the call record names the edge, the edge registry its HTTP
    address; the command goes there signed, and the call ends on the wire."""
    import asyncio

    from control.api.active_calls import EdgeCommandClient, list_active, send_command
    from control.store.factory import open_stores
    from control.store.ports import BlobSettings, StoreSettings

    port = free_udp_port()
    config = "edge_id = \"edge-a\"\n" + pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)
        call_id = wait_answered(tmp_path)

        async def control_plane() -> tuple[list[dict[str, object]], list[tuple[int, object]]]:
            stores = await open_stores(StoreSettings(
                backend="sqlite", sqlite_path=str(tmp_path / "sdpbx.sqlite3"),
                blobs=BlobSettings(kind="local", root=str(tmp_path / "blobs"))))
            try:
                for _ in range(50):  # the call record is written behind the SIP flow
                    listed = (await list_active(stores, limit=10, cursor=None))["items"]
                    if listed and listed[0]["status"] == "answered":
                        break
                    await asyncio.sleep(0.1)
                async with httpx.AsyncClient() as http:
                    client = EdgeCommandClient(http, secret=SECRET, key_id="k1")
                    results = [
                        await send_command(stores, client, "nope", b'{"action":"hangup"}'),
                        await send_command(stores, client, call_id, b'{"action":"dance"}'),
                        await send_command(stores, client, call_id, b'{"action":"hangup"}'),
                    ]
                return listed, [(status, body) for status, body in results]
            finally:
                await stores.close()

        listed, results = asyncio.run(control_plane())
        run_call(caller, callee, edge)
    assert listed[0]["session_id"] == call_id and listed[0]["edge_id"] == "edge-a"
    assert [status for status, _ in results] == [404, 400, 200]
    assert results[2][1] == {"message": "Command dispatched", "data": {"edge_id": "edge-a"}}


def test_embedded_api_extension_registration_call_hangup_and_cdr(tmp_path: Path) -> None:
    """The embedded control API end to end: an extension created through the API registers
    (SIPp, digest), a trunk call reaches it, the API lists the call and hangs it up (BYE on both
    legs), and the CDR is in the query API."""
    import subprocess
    import sys

    config = pbx_config(tmp_path, trunk_config(free_udp_port(), route=False))
    (tmp_path / "sdpbx.toml").write_text(config)
    created = subprocess.run(
        [sys.executable, "-m", "edge", "apikey", "create", "--scope", "admin",
         "--config", str(tmp_path / "sdpbx.toml")],
        capture_output=True, text=True, timeout=30, check=True, cwd=tmp_path,
    )
    token = created.stdout.strip()
    auth = {"Authorization": f"Bearer {token}"}
    with running_edge(tmp_path, config_text=config) as edge:
        api = f"http://{edge.http[0]}:{edge.http[1]}/console"
        reply = httpx.post(f"{api}/extensions", headers=auth, timeout=5,
                           json={"username": "1001", "password": "s3cret-1001"})
        assert reply.status_code == 201, reply.text
        assert "s3cret" not in reply.text
        assert httpx.post(f"{api}/extensions", timeout=5,
                          json={"username": "x", "password": "y"}).status_code == 401

        phone_port = free_udp_port()
        scenario = tmp_path / "register_once.xml"
        scenario.write_text((SCENARIOS / "register_once.xml").read_text()
                            .replace("USER", "1001").replace("PASSWORD", "s3cret-1001"))
        register = Sipp(tmp_path, "reg", ["-sf", str(scenario),
                                          f"{edge.sip_udp[0]}:{edge.sip_udp[1]}", "-s", "1001",
                                          "-p", str(phone_port)])
        assert register.wait() == 0, register.explain() + edge.log()[-3000:]

        callee = uas(tmp_path, "uas_answer.xml", phone_port)  # the registered phone
        caller = uac(tmp_path, "uac_wait_bye.xml", edge, user="1001")
        call_id = wait_answered(tmp_path)
        for _ in range(50):
            active = httpx.get(f"{api}/calls/active", headers=auth, timeout=5).json()["items"]
            if active and active[0]["status"] == "answered":
                break
            time.sleep(0.1)
        assert active, edge.log()[-3000:]
        assert active[0]["session_id"] == call_id and active[0]["callee"] == "1001"
        hangup = httpx.post(f"{api}/calls/active/{call_id}/commands", headers=auth, timeout=10,
                            json={"action": "hangup"})
        assert hangup.status_code == 200, hangup.text
        run_call(caller, callee, edge)  # both legs got the BYE

        for _ in range(50):
            records = httpx.get(f"{api}/call-records", headers=auth, timeout=5).json()
            if records["items"]:
                break
            time.sleep(0.1)
        assert records["items"][0]["call_id"] == call_id
        cdr = httpx.get(f"{api}/call-records/{call_id}", headers=auth, timeout=5).json()
        assert cdr["hangupReason"] == "bySystem" and cdr["status"] == "completed"


def test_hold_and_unhold_reinvite_the_callee(tmp_path: Path) -> None:
    port = free_udp_port()
    config = pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_held.xml", port)
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)
        call_id = wait_answered(tmp_path)
        assert command(edge, call_id, {"action": "hold"}).status_code == 200
        time.sleep(0.5)  # one offer at a time (RFC 3261 §14.1): let the hold be answered
        assert command(edge, call_id, {"action": "unhold", "leg_id": "callee"}).status_code \
            == 200
        time.sleep(0.5)
        assert command(edge, call_id, {"action": "hangup"}).status_code == 200
        run_call(caller, callee, edge)  # the callee saw sendonly, then sendrecv, then BYE
        [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed"


@pytest.mark.parametrize("kind", ["uri", "number"])
def test_blind_transfer_moves_the_caller_to_another_party(tmp_path: Path, kind: str) -> None:
    """To a SIP URI, or to a number that a static route sends to another trunk."""
    first_port, second_port = free_udp_port(), free_udp_port()
    caller_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second_media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for sock in (caller_media, second_media):
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
    try:
        nines = (
            "[[proxy.routes]]\nname = \"nines\"\npriority = 10\ndest = [\"second\"]\n"
            "[proxy.routes.match]\n\"to.user\" = \"^9\"\n"
            f"[proxy.trunks.second]\ndest = \"sip:127.0.0.1:{second_port}\"\n")
        config = pbx_config(tmp_path, nines + trunk_config(first_port))
        with running_edge(tmp_path, config_text=config) as edge:
            first = uas(tmp_path, "uas_answer.xml", first_port)  # gets the BYE
            second = Sipp(tmp_path, "second", [
                "-sf", str(scenario_with_media_port(
                    tmp_path, "uas_answer.xml", second_media.getsockname()[1])),
                "-p", str(second_port), "-mp", str(free_media_port())])
            caller = Sipp(tmp_path, "uac", [
                "-sf", str(scenario_with_media_port(
                    tmp_path, "uac_wait_bye.xml", caller_media.getsockname()[1])),
                f"{edge.sip_udp[0]}:{edge.sip_udp[1]}", "-s", "2000", "-t", "u1",
                "-p", str(free_udp_port()), "-mp", str(free_media_port())])
            call_id = wait_answered(tmp_path)
            relay_a = _relay_port(tmp_path / "uac_messages.log", "received")
            target = f"sip:bob@127.0.0.1:{second_port}" if kind == "uri" else "9001"
            reply = command(edge, call_id, {"action": "transfer", "target": target})
            assert reply.status_code == 200, reply.text
            assert first.wait() == 0, first.explain()  # the first callee got its BYE
            deadline = time.monotonic() + 5
            received = 0
            seq = 1
            while received < 10 and time.monotonic() < deadline:
                caller_media.sendto(rtp_packet(seq), ("127.0.0.1", relay_a))
                seq += 1
                time.sleep(0.02)
                received += drain(second_media)
            assert received >= 10  # the caller's media now reaches the new party
            assert command(edge, call_id, {"action": "hangup"}).status_code == 200
            run_call(caller, second, edge)
            [cdr] = cdrs(tmp_path)
        events = [(e["legId"], e["eventType"]) for e in cdr["legTimeline"]["events"]]
        assert ("b1", "transferred") in events and ("b2", "bridged") in events
    finally:
        caller_media.close()
        second_media.close()


def test_send_dtmf_reaches_the_callee_as_info(tmp_path: Path) -> None:
    port = free_udp_port()
    config = pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_dtmf.xml", port)  # checks INFO Signal=1, then Signal=#
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)
        call_id = wait_answered(tmp_path)
        bad = command(edge, call_id, {"action": "send_dtmf", "digits": "12x"})
        assert bad.status_code == 400 and bad.json()["error"]["field"] == "send_dtmf.digits"
        reply = command(edge, call_id, {"action": "send_dtmf", "digits": "1#", "gap_ms": 50})
        assert reply.status_code == 200, reply.text
        time.sleep(0.8)
        assert command(edge, call_id, {"action": "hangup"}).status_code == 200
        run_call(caller, callee, edge)


def test_start_and_stop_recording_commands(tmp_path: Path) -> None:
    """A call not recorded at first: start_recording, the caller's media, stop_recording; the
    CDR lists the stereo WAV, which holds the caller's packets (left channel)."""
    with media_call(tmp_path) as call:
        edge, call_id = call.edge, call.call_id
        assert command(edge, call_id, {"action": "stop_recording"}).status_code == 409
        assert command(edge, call_id, {"action": "start_recording"}).status_code == 200
        assert command(edge, call_id, {"action": "start_recording"}).status_code == 409
        for seq in range(1, 51):  # one second of the caller's audio
            call.caller_media.sendto(rtp_packet(seq), ("127.0.0.1", call.relay_a))
            time.sleep(0.02)
        assert command(edge, call_id, {"action": "stop_recording"}).status_code == 200
        assert command(edge, call_id, {"action": "play", "source": {
            "type": "tone"}}).status_code == 409  # relayed: nothing to play into
        assert command(edge, call_id, {"action": "hangup"}).status_code == 200
        run_call(call.caller, call.callee, edge)
        [cdr] = cdrs(tmp_path)
    [recorder] = cdr["recorder"]
    assert recorder["path"].endswith(".wav") and recorder["size"] > 44 + 8000


def test_accept_answers_a_ringing_caller_on_the_edge(tmp_path: Path) -> None:
    """accept: the ringing callee gets CANCEL, the caller 200 from the edge (its media on the
    engine: play and say reach it), and hangup ends it with BYE."""
    port = free_udp_port()
    config = pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_ring.xml", port)  # rings until CANCEL
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)
        call_id = wait_ringing(tmp_path)
        assert command(edge, call_id, {"action": "accept", "hold_s": 30}).status_code == 200
        assert callee.wait() == 0, callee.explain()  # CANCEL, 487, ACK
        wait_answered(tmp_path)
        assert command(edge, call_id, {"action": "play", "source": {
            "type": "tone", "frequencies": [440], "duration_ms": 500}}).status_code == 200
        assert command(edge, call_id, {"action": "say", "text": "Please hold"}).status_code \
            == 200
        assert command(edge, call_id, {"action": "stop_playback"}).status_code == 200
        # RFC 4733 into the stream the edge sends the caller.
        assert command(edge, call_id, {"action": "send_dtmf", "digits": "12",
                                       "leg_id": "caller"}).status_code == 200
        assert command(edge, call_id, {"action": "hangup"}).status_code == 200
        run_call(caller, None, edge)  # the caller got the BYE
        [cdr] = cdrs(tmp_path)
    assert cdr["status"] == "completed" and cdr["hangupReason"] == "bySystem"


def test_transfer_to_steps_takes_the_caller_from_its_callee(tmp_path: Path) -> None:
    """transfer {ncco}: the callee gets BYE at once, the caller hears the steps (talk) and
    then gets BYE from the hangup step."""
    port = free_udp_port()
    config = pbx_config(tmp_path, trunk_config(port))
    with running_edge(tmp_path, config_text=config) as edge:
        callee = uas(tmp_path, "uas_answer.xml", port)
        caller = uac(tmp_path, "uac_wait_bye.xml", edge)
        call_id = wait_answered(tmp_path)
        reply = command(edge, call_id, {"action": "transfer", "ncco": [
            {"action": "talk", "text": "Goodbye"}, {"action": "hangup"}]})
        assert reply.status_code == 200, reply.text
        assert callee.wait() == 0, callee.explain()  # BYE at the transfer
        run_call(caller, None, edge)  # BYE after the steps
        [cdr] = cdrs(tmp_path)
    assert cdr["hangupReason"] == "autohangup"
    events = [(e["legId"], e["eventType"]) for e in cdr["legTimeline"]["events"]]
    assert ("b1", "transferred") in events
