"""template.yaml (the SAM stack) lints clean, and its handler answers a real API Gateway event."""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mangum.types import LambdaCognitoIdentity, LambdaMobileClientContext

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = REPO / "template.yaml"
EVENTS = Path(__file__).resolve().parent / "events"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"  # pinned <1.54: it still expands SAM


def cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CFN_LINT), "--", str(path)], capture_output=True, text=True,
                          timeout=120, check=False)


def test_template_lints_clean() -> None:
    result = cfn_lint(TEMPLATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_lint_catches_a_planted_fault(tmp_path: Path) -> None:
    # Proves the test above can fail: a dangling !Ref only shows once SAM is expanded.
    broken = tmp_path / "template.yaml"
    broken.write_text(TEMPLATE.read_text().replace("!Ref ControlHttpApi", "!Ref NoSuchApi"))
    result = cfn_lint(broken)
    assert result.returncode != 0
    assert "NoSuchApi" in result.stdout or "ApiId" in result.stdout


def test_template_shape() -> None:
    text = TEMPLATE.read_text()
    assert "Transform: AWS::Serverless-2016-10-31" in text
    assert re.search(r"(?m)^Globals:\n", text)
    assert re.search(r"(?m)^\s+Runtime: python3\.12$", text)
    assert re.search(r"(?m)^\s+Type: AWS::Serverless::HttpApi$", text)
    assert re.search(r"(?m)^\s+Type: AWS::Serverless::Function$", text)
    assert re.search(r"(?m)^\s+CodeUri: \.$", text)


@pytest.mark.usefixtures("event_loop_for_mangum")
def test_template_handlers_exist() -> None:
    handlers = re.findall(r"(?m)^\s+Handler: ([\w.]+)$", TEMPLATE.read_text())
    assert handlers == ["control.handlers.handler"]
    for dotted in handlers:
        module, _, attribute = dotted.rpartition(".")
        assert callable(getattr(importlib.import_module(module), attribute))


# --- the Lambda handler -----------------------------------------------------------------------


class LambdaContext:
    """The attributes of the Lambda runtime's context object that Mangum may read."""

    function_name = "sdpbx-ControlApiFunction"
    function_version = "$LATEST"
    invoked_function_arn = (
        "arn:aws:lambda:eu-west-1:123456789012:function:sdpbx-ControlApiFunction"
    )
    memory_limit_in_mb = 512
    aws_request_id = "6f9e6a9c-2a5b-4f43-9d3e-0b0b4a6f2f1e"
    log_group_name = "/aws/lambda/sdpbx-ControlApiFunction"
    log_stream_name = "2024/03/12/[$LATEST]0123456789abcdef"
    identity: LambdaCognitoIdentity | None = None
    client_context: LambdaMobileClientContext | None = None

    def get_remaining_time_in_millis(self) -> int:
        return 15000


@pytest.fixture
def event_loop_for_mangum() -> Iterator[None]:
    # Mangum runs each request on the thread's current event loop, which the Lambda runtime
    # leaves in place; earlier tests' asyncio.run() calls unset it, so give it a fresh one. It
    # must be set before `control.handlers` is first imported too: Mangum() otherwise creates
    # a loop of its own that nothing closes (a ResourceWarning, which fails the run).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    yield
    asyncio.set_event_loop(None)
    loop.close()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    from control.handlers import handler

    result: dict[str, Any] = handler(event, LambdaContext())
    return result


@pytest.mark.usefixtures("event_loop_for_mangum")
def test_handler_answers_health_event() -> None:
    event = json.loads((EVENTS / "apigw_v2_get_health.json").read_text())
    result = invoke(event)
    assert result["statusCode"] == 200
    assert result["headers"]["content-type"] == "application/json"
    assert result["isBase64Encoded"] is False
    body = json.loads(result["body"])
    assert body["status"] == "ok" and body["service"] == "sdpbx-control"
    assert isinstance(body["version"], str) and body["version"]


@pytest.mark.usefixtures("event_loop_for_mangum")
def test_handler_unknown_path_is_json_404() -> None:
    event = json.loads((EVENTS / "apigw_v2_get_health.json").read_text())
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/nope"
    event["routeKey"] = event["requestContext"]["routeKey"] = "$default"
    result = invoke(event)
    assert result["statusCode"] == 404
    assert json.loads(result["body"]) == {"error": {"status": 404, "message": "Not Found"}}


def test_handler_module_imports_neither_edge_nor_numpy() -> None:
    # A fresh interpreter: this test process has imported edge already.
    probe = (
        "import sys, control.handlers\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('edge', 'numpy'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=REPO, timeout=60, check=True)
    assert result.stdout.strip() == ""
