"""Headless drivers for the softphones of the registration and call tests: baresip 1.0 (one
run, or a phone scripted through ctrl_tcp) and linphonec 5.1 (one registration, or its console).

Learned from `shared/interop/` (`lib/baresip.sh`, `baresip_ua.sh`, `linphone_call.sh`: the
config keys that keep each client on 127.0.0.1 without DNS or sound cards, and how each reports
a registration), rewritten in Python so that the tests need nothing outside the repository.
Every client binds 127.0.0.1 on a port the OS picks, gets a fresh config directory (linphonec
writes its accounts back into its config and would reuse them), runs for a bounded time, and is
stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.ports import free_tcp_port

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One SIP message from baresip's `-s` trace: who sent it where, and its text."""

    direction: str  # e.g. "TCP 127.0.0.1:59780 -> 127.0.0.1:5181"
    text: str
    body: str = ""

    @property
    def source(self) -> str:
        """Who sent it ("127.0.0.1:59780")."""
        return self.direction.split(" -> ")[0].split(" ")[-1]

    @property
    def start_line(self) -> str:
        return self.text.split("\r\n", 1)[0]

    @property
    def is_register(self) -> bool:
        return self.start_line.startswith("REGISTER ")

    @property
    def status(self) -> int | None:
        if not self.start_line.startswith("SIP/2.0 "):
            return None
        code = self.start_line[8:11]
        return int(code) if code.isdigit() else None

    def header(self, name: str) -> str | None:
        prefix = name.lower() + ":"
        for line in self.text.split("\r\n")[1:]:
            if line.lower().startswith(prefix):
                return line[len(prefix):].strip()
        return None


def traced_messages(output: str) -> list[TracedMessage]:
    """The SIP messages (headers only) of a baresip `-s` trace, in order."""
    found = []
    for block in output.split("\n#\n")[1:]:
        direction, _, text = block.partition("\n")
        text, _, body = text.partition("\r\n\r\n")
        # the trace prints the body, then baresip's own log lines up to the next message
        length = TracedMessage(direction, text).header("Content-Length")
        body = body[:int(length)] if length and length.isdigit() else ""
        found.append(TracedMessage(direction=direction.strip(), text=text, body=body))
    return found


@dataclass(frozen=True, slots=True)
class BaresipRun:
    returncode: int
    output: str  # stdout + stderr, colour codes removed

    def messages(self) -> list[TracedMessage]:
        """The SIP messages of the `-s` trace, in order."""
        return traced_messages(self.output)

    def register_responses(self) -> list[tuple[int, str]]:
        """(status, Contact of the REGISTER it answers) for every REGISTER response, in order.

        `Contact` of the request tells a registration (`;expires=N`) from an un-registration
        (`;expires=0`); responses are paired with requests by CSeq.
        """
        contacts: dict[str, str] = {}
        pairs = []
        for message in self.messages():
            cseq = message.header("CSeq") or ""
            if message.is_register:
                contacts[cseq] = message.header("Contact") or ""
            elif message.status is not None and cseq.endswith("REGISTER"):
                pairs.append((message.status, contacts.get(cseq, "")))
        return pairs


def run_baresip(
    workdir: Path,
    *,
    aor: str,
    password: str,
    regint: int,
    seconds: int,
) -> BaresipRun:
    """Run baresip for `seconds` with one account registering `aor` (e.g.
    `sip:alice@127.0.0.1:5060;transport=tcp`) every `regint` seconds, SIP trace on.

    baresip refreshes at 90% of the expiry the registrar grants, and un-registers on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    # sip_listen port 0: the OS picks free UDP and TCP ports; no audio modules are loaded (a
    # registration needs none) and no DNS server is ever asked (every address is a literal).
    (workdir / "config").write_text(
        "poll_method\t\tepoll\n"
        "sip_listen\t\t127.0.0.1:0\n"
        "net_interface\t\t127.0.0.1\n"
        "dns_server\t\t127.0.0.1:53\n"
        "module_path\t\t/usr/lib/baresip/modules\n"
        "module_tmp\t\taccount.so\n"
    )
    (workdir / "accounts").write_text(f"<{aor}>;auth_pass={password};regint={regint}\n")
    (workdir / "contacts").write_text("")
    result = subprocess.run(
        ["baresip", "-s", "-f", str(workdir), "-t", str(seconds)],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=seconds + 15, check=False,
    )
    output = (result.stdout + result.stderr).decode(errors="replace")
    return BaresipRun(returncode=result.returncode, output=_ANSI.sub("", output))


_LINPHONE_STATE = re.compile(r"moving from state \[(\w+)\] to \[(\w+)\]")


@dataclass(frozen=True, slots=True)
class LinphoneRun:
    states: list[str]  # the account's registration states, in order (LinphoneRegistrationOk..)
    console: str
    log: str


def linphonec_register(
    workdir: Path,
    *,
    identity: str,
    proxy: str,
    password: str,
    timeout: float = 10.0,
) -> LinphoneRun:
    """Start linphonec, type `register <identity> <proxy> <password>`, wait until the account
    reaches LinphoneRegistrationOk or Failed (or `timeout`), then `quit` (it un-registers).

    `status register` is no witness (it says "registered" whatever the registrar answered): the
    account's state changes, from the `-d 5` log, are.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    config = _linphonerc(workdir)
    log_path = workdir / "linphonec.log"
    console_path = workdir / "linphonec.out"
    with console_path.open("wb") as console:
        process = subprocess.Popen(
            ["linphonec", "-c", str(config), "-d", "5", "-l", str(log_path)],
            stdin=subprocess.PIPE, stdout=console, stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=str(workdir)),  # its call history and caches go there
        )
    assert process.stdin is not None
    try:
        time.sleep(0.5)
        process.stdin.write(f"register {identity} {proxy} {password}\n".encode())
        process.stdin.flush()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            states = _linphone_states(log_path)
            if "LinphoneRegistrationOk" in states or "LinphoneRegistrationFailed" in states:
                break
            time.sleep(0.1)
        with contextlib.suppress(BrokenPipeError):
            # after a failure linphonec prompts for a password: "quit" answers the prompt, so
            # the process may need the signal below
            process.stdin.write(b"quit\n")
            process.stdin.flush()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    return LinphoneRun(
        states=_linphone_states(log_path),
        console=console_path.read_text(errors="replace"),
        log=log_path.read_text(errors="replace") if log_path.exists() else "",
    )


def _linphone_states(log_path: Path) -> list[str]:
    if not log_path.exists():
        return []
    text = log_path.read_text(errors="replace")
    return [found.group(2) for found in _LINPHONE_STATE.finditer(text)]


# --- calls: baresip scripted through ctrl_tcp, linphonec through its console -------------------


class BaresipControl:
    """A client of baresip's ctrl_tcp module: netstring-framed JSON commands, responses and
    events (`<len>:{...},`), read by a thread into `objects` as they arrive."""

    def __init__(self, port: int, *, connect_timeout: float = 10.0) -> None:
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self._sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._sock.settimeout(0.2)
        self.objects: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._closed = False
        self._tokens = itertools.count(1)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        while not self._closed:
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buffer += data
            while True:
                colon = buffer.find(b":")
                if colon < 0 or not buffer[:colon].isdigit():
                    break
                end = colon + 1 + int(buffer[:colon])
                if len(buffer) < end + 1:
                    break
                try:
                    value = json.loads(buffer[colon + 1:end])
                except ValueError:
                    value = {"unparsed": buffer[colon + 1:end].decode(errors="replace")}
                buffer = buffer[end + 1:]  # the netstring's trailing ","
                with self._changed:
                    self.objects.append(value if isinstance(value, dict) else {"value": value})
                    self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, matches: Callable[[dict[str, Any]], bool], timeout: float,
                 *, after: int = 0) -> dict[str, Any] | None:
        """The first object (from index `after` on) that `matches`, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        index = after
        with self._changed:
            while True:
                while index < len(self.objects):
                    found = self.objects[index]
                    index += 1
                    if matches(found):
                        return found
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return None
                self._changed.wait(remaining)

    def command(self, command: str, params: str = "", timeout: float = 5.0
                ) -> dict[str, Any] | None:
        """Send one command and return its response (None when none came in `timeout`)."""
        token = f"t{next(self._tokens)}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        with self._changed:
            start = len(self.objects)
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        return self.wait_for(
            lambda found: bool(found.get("response")) and found.get("token") == token,
            timeout, after=start,
        )

    def events(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [found for found in self.objects
                    if found.get("event") and found.get("type") == kind]

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.close()
        self._reader.join(timeout=2)


@dataclass(slots=True)
class BaresipPhone:
    """One running baresip with one account, scripted through ctrl_tcp."""

    process: subprocess.Popen[bytes]
    workdir: Path
    control: BaresipControl

    def output(self) -> str:
        """Its stdout and stderr so far (the `-s` SIP trace included), colour codes removed."""
        # bytes, not read_text: universal newlines would turn the messages' CRLF into LF
        raw = (self.workdir / "baresip.log").read_bytes()
        return _ANSI.sub("", raw.decode(errors="replace"))

    def messages(self) -> list[TracedMessage]:
        return traced_messages(self.output())

    def sent(self, message: TracedMessage) -> bool:
        """Did this phone send `message`? (its REGISTERs tell its addresses)"""
        return message.source in {m.source for m in self.messages() if m.is_register}

    def wait_registered(self, timeout: float = 10.0) -> bool:
        """Poll `reginfo` until the account shows OK (its REGISTER got a 2xx)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            response = self.control.command("reginfo")
            if response is not None and " OK " in _ANSI.sub("", str(response.get("data"))):
                return True
            time.sleep(0.2)
        return False

    def wait_event(self, kind: str, timeout: float) -> dict[str, Any] | None:
        """The first event of type `kind` (CALL_ESTABLISHED, CALL_CLOSED, ...) seen so far or
        within `timeout`."""
        return self.control.wait_for(
            lambda found: bool(found.get("event")) and found.get("type") == kind, timeout
        )

    def dtmf_received(self) -> str:
        """The RFC 4733 digits received, in order (one CALL_DTMF_START event per digit)."""
        return "".join(str(event.get("param", "")) for event in
                       self.control.events("CALL_DTMF_START"))

    def received_audio(self) -> Path | None:
        """The WAV the sndfile module wrote of the audio received (decoded) in the last call."""
        found = sorted((self.workdir / "rec").glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None


@contextlib.contextmanager
def baresip_phone(
    workdir: Path,
    *,
    aor: str,
    password: str,
    source: Path,
    lifetime: int = 60,
    answer: str = "auto",
    rtp_ports: tuple[int, int] = (31000, 31999),
) -> Iterator[BaresipPhone]:
    """Run baresip (SIP trace on) with one account registering `aor` (e.g.
    `sip:bob@127.0.0.1:5060;transport=tcp`, Digest user = the AOR's user) and answering
    calls by itself (`answer="auto"`). It plays `source` (a WAV that must outlast the call:
    baresip hangs up when the file ends) into every call and records what it receives into
    `workdir/rec`. Quits after `lifetime` seconds at the latest; stopped by its PID on exit.

    Learned from `shared/interop/lib/baresip.sh`: the ALSA "null" device as the player (the
    sndfile module records the decoded audio), and `rtcp_mux no` (an answerer that does not
    support RFC 5761 must still get RTCP on port + 1).
    """
    (workdir / "rec").mkdir(parents=True, exist_ok=True)
    user = aor.removeprefix("sip:").split("@", 1)[0]
    (workdir / "accounts").write_text(
        f"<{aor}>;auth_user={user};auth_pass={password};regint=600;answermode={answer};"
        "audio_codecs=PCMU,PCMA\n"
    )
    (workdir / "contacts").write_text("")
    process, control = _launch_baresip(workdir, lifetime=lifetime, source=source,
                                       rtp_ports=rtp_ports)
    try:
        yield BaresipPhone(process=process, workdir=workdir, control=control)
    finally:
        if process.poll() is None:
            with contextlib.suppress(OSError):
                control.command("quit", timeout=1)  # un-registers, closes its recordings
        _stop(process, grace=5)
        control.close()


def _launch_baresip(workdir: Path, *, lifetime: int, source: Path, rtp_ports: tuple[int, int],
                    attempts: int = 3) -> tuple[subprocess.Popen[bytes], BaresipControl]:
    """Start baresip and connect to its ctrl_tcp listener; start it again on another control
    port when that one was taken (then the connection reached someone else's listener)."""
    for attempt in range(1, attempts + 1):
        control_port = free_tcp_port()
        _write_baresip_config(workdir, control_port=control_port, source=source,
                              rtp_ports=rtp_ports)
        with (workdir / "baresip.log").open("wb") as log_file:
            process = subprocess.Popen(
                ["baresip", "-s", "-f", str(workdir), "-t", str(lifetime)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            )
        try:
            control = BaresipControl(control_port)
        except OSError:
            _stop(process, grace=0)
            if attempt == attempts:
                raise
            continue
        if _control_listening(workdir) or attempt == attempts:
            return process, control
        control.close()
        _stop(process, grace=0)  # SIGTERM: baresip un-registers before it exits
    raise AssertionError("unreachable")


def _control_listening(workdir: Path, timeout: float = 5.0) -> bool:
    """Did this baresip open its ctrl_tcp listener? (waits for "baresip is ready" in its log)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = (workdir / "baresip.log").read_bytes().decode(errors="replace")
        if "ctrl_tcp: failed to listen" in text:
            return False
        if "baresip is ready" in text:
            return True
        time.sleep(0.05)
    return True  # no verdict in time: let the test's own waits report what went wrong


def _write_baresip_config(workdir: Path, *, control_port: int, source: Path,
                          rtp_ports: tuple[int, int]) -> None:
    (workdir / "config").write_text(
        "poll_method\t\tepoll\n"
        "sip_listen\t\t127.0.0.1:0\n"
        "call_local_timeout\t30\n"
        "call_max_calls\t\t4\n"
        "audio_buffer\t\t20\n"
        "audio_player\t\talsa,null\n"
        f"audio_source\t\taufile,{source}\n"
        "audio_alert\t\talsa,null\n"
        f"rtp_ports\t\t{rtp_ports[0]}-{rtp_ports[1]}\n"
        "rtcp_mux\t\tno\n"
        "jitter_buffer_delay\t1-5\n"
        "dns_server\t\t127.0.0.1:53\n"
        "net_interface\t\t127.0.0.1\n"
        "statmode_default\toff\n"
        "module_path\t\t/usr/lib/baresip/modules\n"
        "module\t\t\tg711.so\n"
        "module\t\t\tsndfile.so\n"
        "module\t\t\taufile.so\n"
        "module\t\t\talsa.so\n"
        "module_tmp\t\taccount.so\n"
        "module_app\t\tmenu.so\n"
        "module_app\t\tctrl_tcp.so\n"
        f"ctrl_tcp_listen\t\t127.0.0.1:{control_port}\n"
        f"snd_path\t\t{workdir / 'rec'}\n"
    )


def _stop(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """Wait `grace` seconds for `process` to end, then SIGTERM it, then SIGKILL it."""
    try:
        process.wait(timeout=grace)
        return
    except subprocess.TimeoutExpired:
        pass
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _linphonerc(workdir: Path, *, sip_port: int = -1, rtp_ports: str | None = None) -> Path:
    """A fresh linphonec config on 127.0.0.1 (see `linphonec_register` for the keys)."""
    config = workdir / "linphonerc"
    config.write_text(
        f"[sip]\nbind_address=127.0.0.1\nsip_port={sip_port}\nsip_tcp_port=0\nsip_tls_port=0\n"
        "default_proxy=-1\nipv6_migration_done=1\nuse_ipv6=0\n"
        "register_only_when_network_is_up=0\n"
        "[net]\ndns_srv_enabled=0\n"
        # without it linphone would offer its eth0 address for media
        "[rtp]\nbind_address=127.0.0.1\n"
        + (f"audio_rtp_port={rtp_ports}\n" if rtp_ports else "")
        + "[video]\ncapture=0\ndisplay=0\n"
        "[sound]\nechocancellation=0\n"
        f"[storage]\nuri={workdir / 'linphone.db'}\n"
        f"[misc]\nzrtp_secrets_file={workdir / 'zrtp.db'}\nhistory_max_size=0\n"
    )
    return config


@dataclass(slots=True)
class LinphoneConsole:
    """A running linphonec, typed to through its stdin; its console and `-d 5` log on disk."""

    process: subprocess.Popen[bytes]
    workdir: Path

    def type(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def console(self) -> str:
        return (self.workdir / "linphonec.out").read_text(errors="replace")

    def log(self) -> str:
        path = self.workdir / "linphonec.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def registration_states(self) -> list[str]:
        return _linphone_states(self.workdir / "linphonec.log")

    def wait_console(self, pattern: str, timeout: float) -> re.Match[str] | None:
        """The first match of `pattern` in the console output, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.console())
            if found or time.monotonic() > deadline or self.process.poll() is not None:
                return found
            time.sleep(0.1)

    def wait_registration(self, timeout: float = 10.0) -> str | None:
        """LinphoneRegistrationOk or LinphoneRegistrationFailed, whichever comes (None: neither
        within `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            for state in self.registration_states():
                if state in ("LinphoneRegistrationOk", "LinphoneRegistrationFailed"):
                    return state
            time.sleep(0.1)
        return None


@contextlib.contextmanager
def linphonec_console(workdir: Path, *, rtp_ports: str = "32000-32999",
                      lifetime: float = 60.0) -> Iterator[LinphoneConsole]:
    """Start linphonec on 127.0.0.1 (a random SIP port, audio from and to files once told so
    with `soundcard use files`); on exit `quit` it (it un-registers and ends its calls) and stop
    it by its PID. A timer kills it after `lifetime` seconds whatever happens."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = _linphonerc(workdir, rtp_ports=rtp_ports)
    with (workdir / "linphonec.out").open("wb") as console:
        process = subprocess.Popen(
            ["linphonec", "-c", str(config), "-d", "5", "-l", str(workdir / "linphonec.log")],
            stdin=subprocess.PIPE, stdout=console, stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=str(workdir)),
        )
    watchdog = threading.Timer(lifetime, process.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        time.sleep(0.5)  # it reads stdin once its core is up
        yield LinphoneConsole(process=process, workdir=workdir)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            with contextlib.suppress(BrokenPipeError, OSError):
                assert process.stdin is not None
                process.stdin.write(b"quit\n")
                process.stdin.flush()
        _stop(process, grace=5)
        with contextlib.suppress(BrokenPipeError, OSError):
            assert process.stdin is not None
            process.stdin.close()
