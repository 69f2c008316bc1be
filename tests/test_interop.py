"""Real SIP clients (SIPp, sipsak) against a real `sdpbx up` process over UDP and TCP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.edge_process import EdgeProcess, running_edge
from tests.ports import free_port

SCENARIOS = Path(__file__).parent / "interop" / "sipp"

pytestmark = pytest.mark.interop

# Locally a missing client skips its tests; in CI (CI=true) it fails them instead, so that a
# broken install step can never turn the real-client tests into silent skips.
_IN_CI = bool(os.environ.get("CI"))
needs_sipp = pytest.mark.skipif(
    shutil.which("sipp") is None and not _IN_CI, reason="sipp not installed (sip-tester)"
)
needs_sipsak = pytest.mark.skipif(
    shutil.which("sipsak") is None and not _IN_CI, reason="sipsak not installed"
)


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    with running_edge(tmp_path_factory.mktemp("edge")) as process:
        yield process
        assert process.process.poll() is None, "sdpbx died during the tests:\n" + process.log()


def run_sipp(scenario: str, target: tuple[str, int], transport: str, tmp: Path) -> None:
    kind = socket.SOCK_DGRAM if transport == "u1" else socket.SOCK_STREAM
    command = [
        "sipp", "-sf", str(SCENARIOS / scenario), f"{target[0]}:{target[1]}",
        "-i", "127.0.0.1", "-p", str(free_port(kind)), "-t", transport,
        "-m", "1", "-timeout", "10s", "-timeout_error", "-nostdin",
        "-trace_err", "-error_file", str(tmp / "sipp_errors.log"),
    ]
    result = subprocess.run(command, capture_output=True, timeout=30, cwd=tmp, check=False)
    errors = (tmp / "sipp_errors.log").read_text() if (tmp / "sipp_errors.log").exists() else ""
    assert result.returncode == 0, (
        f"sipp {scenario} over {transport} exited {result.returncode}\n{errors}\n"
        f"{result.stdout.decode(errors='replace')[-2000:]}"
    )


@needs_sipp
@pytest.mark.parametrize("transport", ["u1", "t1"])
@pytest.mark.parametrize(
    "scenario", ["options.xml", "unknown_method.xml", "malformed.xml", "version.xml"]
)
def test_sipp_scenarios(edge: EdgeProcess, scenario: str, transport: str, tmp_path: Path) -> None:
    target = edge.sip_udp if transport == "u1" else edge.sip_tcp
    run_sipp(scenario, target, transport, tmp_path)


def run_sipsak(args: list[str]) -> subprocess.CompletedProcess[str]:
    for _ in range(3):
        # sipsak binds its local port for both UDP and TCP
        local_port = free_port(socket.SOCK_STREAM, socket.SOCK_DGRAM)
        result = subprocess.run(
            ["sipsak", "-H", "127.0.0.1", "-l", str(local_port), "-vv", *args],
            capture_output=True, text=True, timeout=20, check=False,
        )
        # A port can be taken between our check and sipsak's bind: try another one.
        if "Address already in use" not in result.stderr:
            break
    return result


@needs_sipsak
def test_sipsak_options_over_udp(edge: EdgeProcess) -> None:
    host, port = edge.sip_udp
    result = run_sipsak(["-s", f"sip:{host}:{port}"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIP/2.0 200 OK" in result.stdout
    assert "Allow: REGISTER, INVITE, BYE, UPDATE, INFO, OPTIONS, ACK, CANCEL" in result.stdout
    assert "Supported: path" in result.stdout


@needs_sipsak
def test_sipsak_options_over_tcp(edge: EdgeProcess) -> None:
    host, port = edge.sip_tcp
    result = run_sipsak(["-E", "tcp", "-s", f"sip:{host}:{port}"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SIP/2.0 200 OK" in result.stdout


@needs_sipsak
def test_sipsak_unknown_method_gets_501(edge: EdgeProcess, tmp_path: Path) -> None:
    host, port = edge.sip_udp
    # sipsak -f sends a request read from a file, verbatim apart from its own Via.
    request = tmp_path / "foobar.sip"
    request.write_bytes(
        f"FOOBAR sip:{host}:{port} SIP/2.0\r\n"
        "From: <sip:sipsak@127.0.0.1>;tag=a1\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        "Call-ID: sipsak-foobar@127.0.0.1\r\n"
        "CSeq: 1 FOOBAR\r\n"
        "Max-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    result = run_sipsak(["-f", str(request), "-s", f"sip:{host}:{port}"])
    assert "SIP/2.0 501 Not Implemented" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1  # sipsak: a final reply other than 200


def test_garbage_does_not_stop_the_server(edge: EdgeProcess) -> None:
    """Nothing a peer sends may stop the server from serving others (UDP and TCP)."""
    host, port = edge.sip_udp
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        for junk in (b"\x00" * 10, b"INVITE\r\n\r\n", b"SIP/2.0 200 OK\r\n\r\n", b"\xff" * 2000):
            udp.sendto(junk, (host, port))
        options = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{udp.getsockname()[1] or 1};branch=z9hG4bKgarb;rport\r\n"
            "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: garbage-1\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        udp.sendto(options, (host, port))
        reply, _ = udp.recvfrom(65535)
    assert reply.startswith(b"SIP/2.0 200 OK")
    tcp_host, tcp_port = edge.sip_tcp
    with socket.create_connection((tcp_host, tcp_port), timeout=5) as tcp:
        tcp.sendall(b"GARBAGE WITHOUT LENGTH\r\n\r\n")
        assert tcp.recv(100) == b""  # framing lost: the server closes the connection
    health = httpx.get(f"http://{edge.http[0]}:{edge.http[1]}/health", timeout=5)
    assert health.status_code == 200
    metrics = httpx.get(f"http://{edge.http[0]}:{edge.http[1]}/metrics", timeout=5).text
    assert "sdpbx_sip_parse_errors_total" in metrics
    assert 'sdpbx_sip_transactions{kind="server"}' in metrics
    assert 'sdpbx_sip_dropped_total{reason="unparseable"}' in metrics
    lines = [json.loads(line) for line in edge.log().splitlines() if line.startswith("{")]
    assert any("dropped" in line.get("msg", "") for line in lines)


@needs_sipsak
def test_newcomer_registers_a_cli_user_with_sipsak(tmp_path: Path) -> None:
    """The README's first registration: the default config (no user backend configured), a user
    added with `sdpbx user add` while the edge runs, sipsak REGISTER with digest to the edge's
    own address. The directory's realm ("sdpbx") is the one challenged."""
    import sys

    with running_edge(tmp_path) as edge:
        added = subprocess.run(
            [sys.executable, "-m", "edge", "user", "add", "1001", "--password", "s3cret",
             "--config", str(tmp_path / "sdpbx.toml")],
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert added.returncode == 0, added.stderr
        host, port = edge.sip_udp
        result = run_sipsak(["-U", "-s", f"sip:1001@{host}:{port}", "-u", "1001",
                             "-a", "s3cret", "-x", "300"])
        # The user exists only in realm "sdpbx": success means that realm was challenged.
        assert result.returncode == 0, result.stdout + result.stderr
        assert "All usrloc tests completed successful" in result.stdout
        wrong = run_sipsak(["-U", "-s", f"sip:1001@{host}:{port}", "-u", "1001",
                            "-a", "nope", "-x", "300"])
        assert wrong.returncode != 0
