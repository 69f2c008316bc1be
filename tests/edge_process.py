"""Run `sdpbx up` as a real process on 127.0.0.1 with free ports, for real-client tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class EdgeProcess:
    process: subprocess.Popen[bytes]
    sip_udp: tuple[str, int]
    sip_tcp: tuple[str, int]
    http: tuple[str, int]
    log_path: Path
    edge_id: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_edge(
    tmp: Path,
    extra_config: str = "",
    timeout: float = 20.0,
    *,
    state_config: str | None = None,
    env: dict[str, str] | None = None,
    config_text: str | None = None,
) -> Iterator[EdgeProcess]:
    """Start `python -m edge up` with ports 0 and wait for its ready file.

    `state_config` replaces the default `[store]`/`[callrecord]` sections (SQLite and a folder
    under `tmp`); `env` adds environment variables (AWS endpoints for the cloud backend);
    `config_text` replaces the whole config (for keys of `[proxy]`)."""
    config = tmp / "sdpbx.toml"
    if state_config is None:
        state_config = (
            f"[store]\npath = \"{tmp / 'sdpbx.sqlite3'}\"\nspool_path = \"{tmp / 'spool'}\"\n"
            f"[callrecord]\nroot = \"{tmp / 'cdr'}\"\n"
        )
    config.write_text(
        "[proxy]\naddr = \"127.0.0.1\"\nudp_port = 0\ntcp_port = 0\n"
        "[http]\naddr = \"127.0.0.1:0\"\n"
        + state_config
        + f"[recording]\npath = \"{tmp / 'recordings'}\"\n"
        "[log]\nlevel = \"info\"\nformat = \"json\"\n" + extra_config
        if config_text is None else config_text
    )
    ready = tmp / "ready.json"
    log_path = tmp / "edge.log"
    env = dict(os.environ, **(env or {}), SDPBX_READY_FILE=str(ready))
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "edge", "up", "--config", str(config)],
            stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=tmp,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sdpbx did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        addresses = json.loads(ready.read_text())
        yield EdgeProcess(
            process=process,
            sip_udp=tuple(addresses["sip_udp"]),
            sip_tcp=tuple(addresses["sip_tcp"]),
            http=tuple(addresses["http"]),
            log_path=log_path,
            edge_id=str(addresses.get("edge_id", "")),
        )
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
