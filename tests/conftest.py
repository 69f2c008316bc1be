"""Shared fixtures: an edge configuration that binds only free ports on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import Config, parse_config

# Every listener on 127.0.0.1 with port 0: the OS picks free ports, so tests run in parallel
# with each other and with a real sdpbx on 5060/8080.
PORT0_TOML = """\
[proxy]
addr = "127.0.0.1"
udp_port = 0
tcp_port = 0

[http]
addr = "127.0.0.1:0"

[log]
level = "info"
format = "json"
"""


def port0_toml(data: Path) -> str:
    """PORT0_TOML with the state (SQLite, CDRs, recordings) under `data`, not the checkout."""
    return PORT0_TOML + (
        f'\n[store]\npath = "{data / "sdpbx.sqlite3"}"\nspool_path = "{data / "spool"}"\n'
        f'\n[callrecord]\nroot = "{data / "cdr"}"\n'
        f'\n[recording]\npath = "{data / "recordings"}"\n'
    )


@pytest.fixture
def port0_config(tmp_path: Path) -> Config:
    return parse_config(port0_toml(tmp_path / "data"))


@pytest.fixture
def port0_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sdpbx.toml"
    path.write_text(port0_toml(tmp_path / "data"), encoding="utf-8")
    return path
