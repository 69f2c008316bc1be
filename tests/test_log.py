"""edge.log: JSON lines and text output of the standard logging module."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from edge.log import configure_logging


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    level = root.level
    before = list(root.handlers)
    stream = io.StringIO()
    yield stream
    for handler in root.handlers:
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


def test_json_lines(output: io.StringIO) -> None:
    configure_logging("info", "json", output)
    log = logging.getLogger("edge.test")
    log.info("call %s rejected", "abc", extra={"call_id": "abc@h", "peer": "192.0.2.1:5060",
                                              "reason": "acl", "status": 403})
    log.debug("not shown")
    lines = output.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert set(entry) == {"ts", "level", "logger", "msg", "call_id", "peer", "reason", "status"}
    assert entry["level"] == "info" and entry["logger"] == "edge.test"
    assert entry["msg"] == "call abc rejected"
    assert (entry["call_id"], entry["peer"], entry["status"]) == ("abc@h", "192.0.2.1:5060", 403)
    assert entry["ts"].endswith("Z") and len(entry["ts"]) == len("2024-01-01T00:00:00.000Z")


def test_json_exception(output: io.StringIO) -> None:
    configure_logging("debug", "json", output)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("edge.test").exception("failed")
    entry = json.loads(output.getvalue())
    assert entry["level"] == "error" and entry["msg"] == "failed"
    assert "RuntimeError: boom" in entry["exc"]


def test_text(output: io.StringIO) -> None:
    configure_logging("debug", "text", output)
    logging.getLogger("edge.test").warning("dropped", extra={"peer": "192.0.2.1:5060",
                                                             "reason": "too large"})
    line = output.getvalue().rstrip("\n")
    assert line.endswith(' WARNING edge.test: dropped peer=192.0.2.1:5060 reason="too large"')


def test_configuring_again_replaces_the_handler(output: io.StringIO) -> None:
    configure_logging("info", "text", output)
    configure_logging("warning", "json", output)
    logging.getLogger("edge.test").info("quiet")
    logging.getLogger("edge.test").warning("loud")
    lines = output.getvalue().splitlines()
    assert [json.loads(line)["msg"] for line in lines] == ["loud"]
