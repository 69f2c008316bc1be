"""Real clients call each other through a real `sdpbx up` (issue 5 item 8): two registered
baresip UAs over UDP and over TCP, linphonec calling a registered baresip, calls ended by either
side (BYE, CANCEL, decline), and calls to a user who is known but offline (480) or unknown (404).
Each call is checked end to end: signalling at both clients, audio both ways through the edge's
RTP relay (each side hears the other's tone, and each was told to send to a relay port), RFC 4733
DTMF, the CDR the edge writes, and the stereo recording (caller left, callee right).

Users live in the memory backend, realm `pbx.test`; clients address the edge by its 127.0.0.1
address, which the registrar maps to that realm. The edge offers MD5 challenges only (baresip
1.0 refuses any other, see test_interop_register.py). The clients are driven by
tests/interop/clients/softphones.py, not by shared/interop's scripts: those need sox and take
fixed SIP ports (5072, 5082, 5092), where ours let the OS pick, so runs can overlap. Every client
binds 127.0.0.1, runs bounded in time, and is stopped by its own PID. Locally a missing client
skips its tests; with CI set it fails them."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from control.contracts.blob_keys import safe_call_id
from control.contracts.cdr import CallDetailRecord
from tests.audio_checks import band_share, dominant_frequency, read_wav, rms, write_tone
from tests.edge_process import EdgeProcess, running_edge
from tests.interop.clients.softphones import (
    BaresipPhone,
    baresip_phone,
    linphonec_console,
)

pytestmark = pytest.mark.interop

REALM = "pbx.test"
EDGE_ID = "edge-calls"
# alice, bob and carol register in the tests; dave is a user who never does.
USERS = {"alice": "alicepw", "bob": "bobpw", "carol": "carolpw", "dave": "davepw"}
CALLER_HZ, CALLEE_HZ = 1000.0, 440.0
DTMF = "1234#"
TALK_S = 4.0  # from answer to the caller's BYE
DTMF_AT_S = 1.0
CDR_WAIT_S = 10.0  # the spool uploads in the background

_IN_CI = bool(os.environ.get("CI"))


def _needs(tool: str, package: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        shutil.which(tool) is None and not _IN_CI, reason=f"{tool} not installed ({package})"
    )


needs_baresip = _needs("baresip", "baresip-core")
needs_linphonec = _needs("linphonec", "linphone-cli")


# --- the edge ----------------------------------------------------------------------------------


def edge_config(tmp: Path) -> str:
    users = ", ".join(
        f'{{ username = "{name}", password = "{password}" }}' for name, password in USERS.items()
    )
    return "\n".join([
        f'edge_id = "{EDGE_ID}"',
        "[proxy]",
        'addr = "127.0.0.1"', "udp_port = 0", "tcp_port = 0",
        f'realms = ["{REALM}"]',
        'media_proxy = "all"', "rtp_start_port = 30000", "rtp_end_port = 30999",
        "max_ring_time = 10",
        "[proxy.security]", "auth_failures_max = 1000", 'digest_algorithms = ["MD5"]',
        "[[proxy.user_backends]]", 'type = "memory"', f"users = [{users}]",
        "[http]", 'addr = "127.0.0.1:0"',
        "[store]", f'path = "{tmp / "sdpbx.sqlite3"}"', f'spool_path = "{tmp / "spool"}"',
        "[callrecord]", 'type = "local"', f'root = "{tmp / "cdr"}"',
        "[recording]", "enabled = true", "auto_start = true", f'path = "{tmp / "recordings"}"',
        "[log]", 'level = "info"', 'format = "json"',
        "",
    ])


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    tmp = tmp_path_factory.mktemp("edge-calls")
    with running_edge(tmp, config_text=edge_config(tmp)) as process:
        yield process
        assert process.process.poll() is None, "sdpbx died during the tests:\n" + process.log()


def blob_root(edge: EdgeProcess) -> Path:
    """The local blob store's root: the folder holding `[callrecord] root` and `[recording]
    path` (edge.config.store_settings), here the edge's temporary folder."""
    return edge.log_path.parent


def wait_for_cdr(edge: EdgeProcess, call_id: str, timeout: float = CDR_WAIT_S
                 ) -> CallDetailRecord:
    """The CDR of `call_id` once the spool has uploaded it (`cdr/YYYY/MM/DD/<id>.json`)."""
    pattern = f"cdr/*/*/*/{safe_call_id(call_id)}.json"
    deadline = time.monotonic() + timeout
    while True:
        found = sorted(blob_root(edge).glob(pattern))
        if found:
            try:
                return CallDetailRecord.from_json_bytes(found[0].read_bytes())
            except ValueError:
                pass  # caught mid-write: read it again
        if time.monotonic() > deadline:
            present = sorted(str(p.relative_to(blob_root(edge)))
                             for p in blob_root(edge).glob("cdr/**/*.json"))
            raise AssertionError(f"no CDR {pattern} after {timeout} s (have {present})\n"
                                 + edge_log_for(edge, call_id))
        time.sleep(0.1)


def wait_for_blob(edge: EdgeProcess, key: str, timeout: float = CDR_WAIT_S) -> Path:
    path = blob_root(edge) / key
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"no blob {key} after {timeout} s")
        time.sleep(0.1)
    return path


def edge_log_for(edge: EdgeProcess, call_id: str) -> str:
    """The edge's JSON log lines about `call_id` (for failure messages)."""
    lines = [line for line in edge.log().splitlines() if call_id in line]
    return "edge log for the call:\n" + "\n".join(lines[-40:])


def sip_host(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


# --- the calls ---------------------------------------------------------------------------------


def call_id_of_dial(phone: BaresipPhone) -> str:
    """The Call-ID of the INVITE the caller sent (the A-leg: the CDR is filed under it)."""
    for message in phone.messages():
        if message.start_line.startswith("INVITE ") and phone.sent(message):
            call_id = message.header("Call-ID")
            assert call_id, message.text
            return call_id
    raise AssertionError("the caller sent no INVITE:\n" + phone.output()[-4000:])


def final_responses(phone: BaresipPhone, timeout: float = 5.0) -> list[int]:
    """The final responses to INVITEs `phone` received, once the last INVITE it sent has one."""
    deadline = time.monotonic() + timeout
    while True:
        messages = phone.messages()
        invites = [m.header("CSeq") for m in messages
                   if m.start_line.startswith("INVITE ") and phone.sent(m)]
        finals = [(m.header("CSeq"), m.status) for m in messages
                  if not phone.sent(m) and m.status is not None and m.status >= 200
                  and (m.header("CSeq") or "").endswith("INVITE")]
        if (invites and invites[-1] in {cseq for cseq, _ in finals}) \
                or time.monotonic() > deadline:
            return [status for _, status in finals if status is not None]
        time.sleep(0.1)


def talk(caller: BaresipPhone, callee: BaresipPhone, target: str) -> None:
    """caller dials `target`, both sides see the call established, the caller sends DTMF after
    DTMF_AT_S, and hangs up after TALK_S; both sides see it closed."""
    response = caller.control.command("dial", target)
    assert response is not None and response.get("ok"), (response, caller.output()[-3000:])
    established = caller.wait_event("CALL_ESTABLISHED", 15)
    assert established is not None, "caller: no CALL_ESTABLISHED\n" + caller.output()[-6000:]
    assert callee.wait_event("CALL_ESTABLISHED", 5) is not None, (
        "callee: no CALL_ESTABLISHED\n" + callee.output()[-6000:]
    )
    time.sleep(DTMF_AT_S)
    response = caller.control.command("sndcode", DTMF)
    assert response is not None and response.get("ok"), response
    time.sleep(TALK_S - DTMF_AT_S)
    caller.control.command("hangup")
    assert caller.wait_event("CALL_CLOSED", 10) is not None, caller.output()[-3000:]
    assert callee.wait_event("CALL_CLOSED", 10) is not None, (
        "callee: BYE not relayed\n" + callee.output()[-6000:]
    )


def assert_hears(phone: BaresipPhone, name: str, frequency: float, after_s: float = 10) -> None:
    """`phone` recorded (sndfile, decoded audio it received) a tone of `frequency`."""
    deadline = time.monotonic() + after_s
    path = phone.received_audio()
    while path is None and time.monotonic() < deadline:
        time.sleep(0.1)
        path = phone.received_audio()
    assert path is not None, f"{name}: no recording of the received audio"
    audio = read_wav(path)
    [samples] = audio.channels
    assert rms(samples) > 0.02, f"{name}: received audio silent (rms {rms(samples):.4f}) {path}"
    heard = dominant_frequency(samples, audio.rate)
    assert abs(heard - frequency) <= frequency * 0.03, f"{name}: heard {heard} Hz, not {frequency}"


@pytest.fixture
def tones(tmp_path: Path) -> tuple[Path, Path]:
    """The caller's and the callee's sources; 30 s, so that no file ends during a call."""
    return (write_tone(tmp_path / "caller.wav", CALLER_HZ, 30),
            write_tone(tmp_path / "callee.wav", CALLEE_HZ, 30))


@needs_baresip
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_baresip_pair_call_through_the_relay(
    edge: EdgeProcess, tmp_path: Path, tones: tuple[Path, Path], transport: str
) -> None:
    """alice (1000 Hz) calls bob (440 Hz), both registered: audio both ways through the
    relay, DTMF at bob, a completed internal CDR, and the stereo recording."""
    target = edge.sip_udp if transport == "udp" else edge.sip_tcp
    domain = sip_host(target)
    suffix = ";transport=tcp" if transport == "tcp" else ""
    with (
        baresip_phone(tmp_path / "bob", aor=f"sip:bob@{domain}{suffix}",
                      password=USERS["bob"], source=tones[1]) as bob,
        baresip_phone(tmp_path / "alice", aor=f"sip:alice@{domain}{suffix}",
                      password=USERS["alice"], source=tones[0]) as alice,
    ):
        assert bob.wait_registered(), bob.output()[-3000:]
        assert alice.wait_registered(), alice.output()[-3000:]
        # baresip adds `;transport=tcp` of a TCP account to what it dials
        talk(alice, bob, f"sip:bob@{domain}")
        call_id = call_id_of_dial(alice)
        assert bob.dtmf_received() == DTMF, (bob.dtmf_received(), edge_log_for(edge, call_id))
    # the signalling went over the transport under test, both legs
    sent_invite = next(m for m in alice.messages() if m.start_line.startswith("INVITE "))
    got_invite = next(m for m in bob.messages() if m.start_line.startswith("INVITE "))
    assert sent_invite.direction.startswith(transport.upper()), sent_invite.direction
    assert got_invite.direction.startswith(transport.upper()), got_invite.direction
    # both have quit: sndfile closed the WAVs
    assert_hears(alice, "alice", CALLEE_HZ)
    assert_hears(bob, "bob", CALLER_HZ)
    # the media went through the edge: each side's SDP names the relay, not the other phone
    assert_media_anchored(alice, bob)

    cdr = wait_for_cdr(edge, call_id)
    assert cdr.call_id == call_id
    assert cdr.status == "completed", cdr
    assert cdr.status_code == 200
    assert cdr.hangup_reason == "byCaller", cdr
    assert cdr.direction == "internal"
    assert cdr.from_number == "alice" and cdr.to_number == "bob", cdr
    assert cdr.edge_id == EDGE_ID
    assert cdr.answer_time is not None and cdr.billsec_secs >= TALK_S - 1, cdr
    assert cdr.billsec_secs <= TALK_S + 3, cdr

    [track] = cdr.recorder
    assert track.track_id == "stereo"
    assert re.fullmatch(r"recordings/\d{4}/\d\d/\d\d/" + re.escape(safe_call_id(call_id))
                        + r"\.wav", track.path), track.path
    recording = wait_for_blob(edge, track.path)
    assert recording.stat().st_size == track.size
    audio = read_wav(recording)
    assert audio.rate == 8000 and len(audio.channels) == 2, (audio.rate, len(audio.channels))
    assert TALK_S - 1 <= audio.seconds <= TALK_S + 3, audio.seconds
    left, right = audio.channels
    assert abs(dominant_frequency(left, 8000) - CALLER_HZ) <= 20, dominant_frequency(left, 8000)
    assert abs(dominant_frequency(right, 8000) - CALLEE_HZ) <= 20, dominant_frequency(right, 8000)
    # each channel holds one side only (not a mix, not swapped)
    assert band_share(left, 8000, CALLER_HZ) > 0.8 > 0.05 > band_share(left, 8000, CALLEE_HZ)
    assert band_share(right, 8000, CALLEE_HZ) > 0.8 > 0.05 > band_share(right, 8000, CALLER_HZ)


def sdp_media(phone: BaresipPhone, *, sent: bool) -> list[tuple[str, int]]:
    """(c= address, m=audio port) of every SDP in the SIP messages `phone` sent or received."""
    found = []
    for message in phone.messages():
        if phone.sent(message) != sent or "m=audio" not in message.body:
            continue
        address = re.search(r"^c=IN IP4 (\S+)", message.body, re.M)
        port = re.search(r"^m=audio (\d+)", message.body, re.M)
        if address and port:
            found.append((address.group(1), int(port.group(1))))
    return found


def assert_media_anchored(caller: BaresipPhone, callee: BaresipPhone) -> None:
    """Each phone was told (SDP) to send its RTP to the edge's relay, never to the other."""
    heard_by_caller = sdp_media(caller, sent=False)
    heard_by_callee = sdp_media(callee, sent=False)
    sent = sdp_media(caller, sent=True) + sdp_media(callee, sent=True)
    assert heard_by_caller and heard_by_callee and sent, (heard_by_caller, heard_by_callee)
    for address, port in heard_by_caller + heard_by_callee:
        assert address == "127.0.0.1"
        assert 30000 <= port <= 30999, (port, "not a relay port: media not anchored")
        assert (address, port) not in sent


@needs_baresip
@needs_linphonec
def test_linphonec_calls_a_registered_baresip(
    edge: EdgeProcess, tmp_path: Path, tones: tuple[Path, Path]
) -> None:
    """carol on linphonec (1000 Hz) calls bob on baresip (440 Hz) through the edge."""
    domain = sip_host(edge.sip_udp)
    with (
        baresip_phone(tmp_path / "bob", aor=f"sip:bob@{domain}", password=USERS["bob"],
                      source=tones[1]) as bob,
        linphonec_console(tmp_path / "carol") as carol,
    ):
        assert bob.wait_registered(), bob.output()[-3000:]
        carol.type(f"register sip:carol@{domain} sip:{domain} {USERS['carol']}")
        assert carol.wait_registration() == "LinphoneRegistrationOk", carol.log()[-4000:]
        carol.type("soundcard use files")
        carol.type(f"play {tones[0]}")
        carol.type(f"record {tmp_path / 'carol-heard.wav'}")
        carol.type(f"call sip:bob@{domain}")
        assert carol.wait_console(r"connected\.", 15), carol.console()[-3000:]
        assert bob.wait_event("CALL_ESTABLISHED", 5) is not None, bob.output()[-4000:]
        time.sleep(TALK_S)
        carol.type("terminate")
        assert carol.wait_console(r"[Cc]all .*ended", 10), carol.console()[-3000:]
        assert bob.wait_event("CALL_CLOSED", 10) is not None, bob.output()[-4000:]
        invites = [m for m in bob.messages() if m.start_line.startswith("INVITE ")]
        assert invites, bob.output()[-4000:]
    assert_hears(bob, "bob", CALLER_HZ)
    heard = read_wav(tmp_path / "carol-heard.wav")
    assert rms(heard.channels[0]) > 0.02, "carol: received audio silent"
    assert abs(dominant_frequency(heard.channels[0], heard.rate) - CALLEE_HZ) <= 20

    call_id = linphone_call_id(carol.log())
    cdr = wait_for_cdr(edge, call_id)
    assert cdr.status == "completed" and cdr.hangup_reason == "byCaller", cdr
    assert cdr.direction == "internal"
    assert cdr.from_number == "carol" and cdr.to_number == "bob", cdr


def linphone_call_id(log: str) -> str:
    """The Call-ID of the INVITE linphonec sent (from its `-d 5` log)."""
    for found in re.finditer(r"INVITE sip:\S+ SIP/2\.0\r?\n(.*?)\r?\n\r?\n", log, re.S):
        call_id = re.search(r"^Call-ID: *(\S+)", found.group(1), re.M | re.I)
        if call_id:
            return call_id.group(1)
    raise AssertionError("no INVITE in linphonec's log")


@needs_baresip
@pytest.mark.parametrize(("callee", "status"), [("dave", 480), ("nobody", 404)])
def test_baresip_calls_a_user_who_cannot_answer(
    edge: EdgeProcess, tmp_path: Path, tones: tuple[Path, Path], callee: str, status: int
) -> None:
    """dave exists but is not registered: 480; nobody is no user: 404 (RFC 3261 §21.4.18,
    §21.4.4). Either is the caller's final answer and the CDR's statusCode."""
    domain = sip_host(edge.sip_udp)
    with baresip_phone(tmp_path / "alice", aor=f"sip:alice@{domain}",
                       password=USERS["alice"], source=tones[0]) as alice:
        assert alice.wait_registered(), alice.output()[-3000:]
        response = alice.control.command("dial", f"sip:{callee}@{domain}")
        assert response is not None and response.get("ok"), response
        closed = alice.wait_event("CALL_CLOSED", 10)
        assert closed is not None, alice.output()[-4000:]
        assert alice.wait_event("CALL_ESTABLISHED", 0) is None
        call_id = call_id_of_dial(alice)
        finals = final_responses(alice)
    # a 407 first (the INVITE is authenticated), then the answer
    assert finals[0] == 407 and finals[-1] == status, (finals, edge_log_for(edge, call_id))
    assert str(status) in str(closed.get("param")), closed
    cdr = wait_for_cdr(edge, call_id)
    assert cdr.status_code == status, cdr
    assert cdr.status == ("missed" if status == 480 else "failed"), cdr
    assert cdr.answer_time is None and cdr.billsec_secs == 0
    assert cdr.recorder == []
    assert cdr.to_number == callee


@needs_baresip
@pytest.mark.parametrize("ending", ["callee_hangs_up", "caller_cancels", "callee_declines"])
def test_baresip_call_ended_by_either_side(
    edge: EdgeProcess, tmp_path: Path, tones: tuple[Path, Path], ending: str
) -> None:
    """The other ways a call ends, as the CDR must tell them: bob's BYE (byCallee), alice's
    CANCEL while bob rings (487 to alice, RFC 3261 §9.2; missed, canceled), bob declining
    (his 486 relayed to alice; missed, rejected)."""
    domain = sip_host(edge.sip_udp)
    answer = "auto" if ending == "callee_hangs_up" else "manual"
    with (
        baresip_phone(tmp_path / "bob", aor=f"sip:bob@{domain}", password=USERS["bob"],
                      source=tones[1], answer=answer) as bob,
        baresip_phone(tmp_path / "alice", aor=f"sip:alice@{domain}",
                      password=USERS["alice"], source=tones[0]) as alice,
    ):
        assert bob.wait_registered(), bob.output()[-3000:]
        assert alice.wait_registered(), alice.output()[-3000:]
        response = alice.control.command("dial", f"sip:bob@{domain}")
        assert response is not None and response.get("ok"), response
        if ending == "callee_hangs_up":
            assert alice.wait_event("CALL_ESTABLISHED", 15) is not None, alice.output()[-4000:]
            assert bob.wait_event("CALL_ESTABLISHED", 5) is not None, bob.output()[-4000:]
            time.sleep(1.5)
            bob.control.command("hangup")
        else:
            assert bob.wait_event("CALL_INCOMING", 15) is not None, bob.output()[-4000:]
            assert alice.wait_event("CALL_RINGING", 5) is not None, alice.output()[-4000:]
            (alice if ending == "caller_cancels" else bob).control.command("hangup")
        if ending != "caller_cancels":  # baresip reports no event for its own CANCEL
            assert alice.wait_event("CALL_CLOSED", 10) is not None, alice.output()[-4000:]
        assert bob.wait_event("CALL_CLOSED", 10) is not None, bob.output()[-4000:]
        call_id = call_id_of_dial(alice)
        finals = final_responses(alice)
        alice_got, bob_got = (
            [m.start_line.split(" ", 1)[0] for m in phone.messages()
             if not phone.sent(m) and m.status is None]
            for phone in (alice, bob)
        )
    cdr = wait_for_cdr(edge, call_id)
    if ending == "callee_hangs_up":
        assert finals[-1] == 200 and "BYE" in alice_got, (finals, alice_got)
        assert cdr.status == "completed" and cdr.hangup_reason == "byCallee", cdr
        assert cdr.billsec_secs >= 1
    elif ending == "caller_cancels":
        assert finals[-1] == 487, (finals, edge_log_for(edge, call_id))
        assert "CANCEL" in bob_got, bob_got
        assert cdr.status == "missed" and cdr.hangup_reason == "canceled", cdr
        assert cdr.status_code == 487 and cdr.answer_time is None
    else:
        assert finals[-1] == 486, (finals, edge_log_for(edge, call_id))
        assert cdr.status == "missed" and cdr.hangup_reason == "rejected", cdr
        assert cdr.status_code == 486 and cdr.answer_time is None
