"""edge.cli: `sdpbx --version`, `check-config`, and `up` as a real process (port 0, ready file)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.cli import main
from edge.config import VERSION

REPO = Path(__file__).resolve().parent.parent
BAD_PORT = "[proxy]\nudp_port = 70000\n"


def write(tmp_path: Path, text: str, name: str = "sdpbx.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"sdpbx {VERSION}\n"


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_check_config_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[proxy]\nudp_port = 5080\n")
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out == f"sdpbx: {path}: ok\n"


def test_check_config_example_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(REPO / "config" / "sdpbx.example.toml")]) == 0


def test_check_config_bad_value_exits_2_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD_PORT + "colour = 'blue'\n")
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        "sdpbx: config error: proxy.udp_port: Input should be less than or equal to 65535",
        "sdpbx: config error: proxy.colour: unknown key",
    ]


def test_check_config_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.toml")]) == 2
    assert "cannot read: No such file or directory" in capsys.readouterr().err


def test_up_with_bad_config_exits_2_before_binding(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, BAD_PORT)
    assert main(["up", "--config", str(path)]) == 2
    assert "sdpbx: config error: proxy.udp_port:" in capsys.readouterr().err


def test_up_takes_the_config_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SDPBX_CONFIG", str(write(tmp_path, BAD_PORT)))
    assert main(["up"]) == 2
    assert "proxy.udp_port" in capsys.readouterr().err


def test_python_dash_m_edge(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edge", "check-config", str(write(tmp_path, BAD_PORT))],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "sdpbx: config error: proxy.udp_port" in result.stderr


# --- `sdpbx up` as a process (needs the SIP server, edge/io/sip_server.py) -----------------------


class Edge:
    """`python -m edge up` with port-0 listeners, its ready file read once it is written."""

    def __init__(self, config: Path, ready_file: Path) -> None:
        env = {**os.environ, "SDPBX_READY_FILE": str(ready_file)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge", "up", "--config", str(config)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self.ready: dict[str, Any] = self._wait_ready(ready_file)

    def _wait_ready(self, path: Path, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not path.exists():
            if self.process.poll() is not None:
                _, err = self.process.communicate()
                pytest.fail(f"sdpbx up exited with {self.process.returncode}:\n{err}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail("sdpbx up did not write its ready file")
            time.sleep(0.05)
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return data

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> tuple[int, str]:
        self.process.send_signal(sig)
        try:
            _, err = self.process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
            raise
        return self.process.returncode, err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_up_serves_until_signalled(port0_config_file: Path, tmp_path: Path,
                                   sig: signal.Signals) -> None:
    edge = Edge(port0_config_file, tmp_path / "ready.json")
    try:
        assert set(edge.ready) == {"sip_udp", "sip_tcp", "http", "edge_id"}
        http_host, http_port = edge.ready["http"]
        udp_host, udp_port = edge.ready["sip_udp"]
        tcp_host, tcp_port = edge.ready["sip_tcp"]
        assert http_host == udp_host == tcp_host == "127.0.0.1"
        assert 0 not in (http_port, udp_port, tcp_port)

        health = httpx.get(f"http://127.0.0.1:{http_port}/health", timeout=10)
        assert health.status_code == 200
        assert health.json()["sip"] == {"udp": f"127.0.0.1:{udp_port}",
                                        "tcp": f"127.0.0.1:{tcp_port}"}
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=10)
        assert f'sdpbx_build_info{{version="{VERSION}"}} 1.0' in metrics.text.splitlines()
        # The SIP listeners are really bound.
        with pytest.raises(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", udp_port))
    finally:
        returncode, err = edge.stop(sig)

    assert returncode == 0, err
    messages = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    ready = next(entry for entry in messages if entry["msg"] == "sdpbx ready")
    assert ready["http"] == f"127.0.0.1:{http_port}"
    assert ready["sip_udp"] == f"127.0.0.1:{udp_port}"
    stopping = next(entry for entry in messages if entry["msg"] == "sdpbx stopping")
    assert stopping["signal"] == sig.name
    assert messages[-1]["msg"] == "sdpbx stopped"


def test_up_with_http_port_taken_exits_1(port0_config_file: Path, tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = write(tmp_path, port0_config_file.read_text().replace(
            'addr = "127.0.0.1:0"', f'addr = "127.0.0.1:{port}"'), name="taken.toml")
        result = subprocess.run([sys.executable, "-m", "edge", "up", "--config", str(config)],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "sdpbx: cannot start:" in result.stderr
    assert "Address already in use" in result.stderr
