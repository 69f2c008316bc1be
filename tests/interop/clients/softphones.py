"""Headless drivers for the softphones of the registration tests: baresip 1.0 and linphonec 5.1.

Learned from `shared/interop/` (`lib/baresip.sh`, `baresip_ua.sh`, `linphone_call.sh`: the
config keys that keep each client on 127.0.0.1 without DNS or sound cards, and how each reports
a registration), rewritten in Python so that the tests need nothing outside the repository.
Every client binds 127.0.0.1 on a port the OS picks, gets a fresh config directory (linphonec
writes its accounts back into its config and would reuse them), runs for a bounded time, and is
stopped by its own PID.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, slots=True)
class TracedMessage:
    """One SIP message from baresip's `-s` trace: who sent it where, and its text."""

    direction: str  # e.g. "TCP 127.0.0.1:59780 -> 127.0.0.1:5181"
    text: str

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


@dataclass(frozen=True, slots=True)
class BaresipRun:
    returncode: int
    output: str  # stdout + stderr, colour codes removed

    def messages(self) -> list[TracedMessage]:
        """The SIP messages of the `-s` trace, in order."""
        found = []
        for block in self.output.split("\n#\n")[1:]:
            direction, _, text = block.partition("\n")
            text = text.split("\r\n\r\n", 1)[0]  # the headers (REGISTERs have no body)
            found.append(TracedMessage(direction=direction.strip(), text=text))
        return found

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
    config = workdir / "linphonerc"
    config.write_text(
        "[sip]\nbind_address=127.0.0.1\nsip_port=-1\nsip_tcp_port=0\nsip_tls_port=0\n"
        "default_proxy=-1\nipv6_migration_done=1\nuse_ipv6=0\n"
        "register_only_when_network_is_up=0\n"
        "[net]\ndns_srv_enabled=0\n"
        # without it linphone would offer its eth0 address for media
        "[rtp]\nbind_address=127.0.0.1\n"
        "[video]\ncapture=0\ndisplay=0\n"
        "[sound]\nechocancellation=0\n"
        f"[storage]\nuri={workdir / 'linphone.db'}\n"
        f"[misc]\nzrtp_secrets_file={workdir / 'zrtp.db'}\nhistory_max_size=0\n"
    )
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
