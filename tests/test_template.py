"""template.yaml (the SAM stack) lints clean, its handlers answer real API Gateway events, every
API route reaches the API function, and the CDR consumer is fed by the bucket's S3 events."""

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
    assert handlers == ["control.handlers.handler", "control.handlers.cdr_handler"]
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


# --- routes, the CDR consumer and its S3 event (in SAM's translation) -------------------------


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    from tests.store.aws_servers import load_template
    from tests.test_template_tables import sam_translate

    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        env.setenv("AWS_REGION", "eu-west-1")
        return sam_translate(load_template())


def _gateway_routes(translated: dict[str, Any]) -> list[tuple[str, re.Pattern[str], str]]:
    """(method or ANY, path pattern, payload version) of every HttpApi route, as API Gateway
    matches them: `{name}` one segment, `{name+}` a greedy rest of at least one segment."""
    api = translated["Resources"]["ControlHttpApi"]
    assert api["Type"] == "AWS::ApiGatewayV2::Api"
    routes = []
    for path, methods in api["Properties"]["Body"]["paths"].items():
        pattern = re.escape(path)
        pattern = re.sub(r"\\\{[^/]+?\\\+\\\}", ".+", pattern)
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", pattern)
        for method, operation in methods.items():
            integration = operation["x-amazon-apigateway-integration"]
            assert "${ControlApiFunction.Arn}" in integration["uri"]["Fn::Sub"]
            verb = "ANY" if method == "x-amazon-apigateway-any-method" else method.upper()
            routes.append((verb, re.compile(pattern), integration["payloadFormatVersion"]))
    return routes


def test_every_api_route_reaches_the_api_function(translated: dict[str, Any]) -> None:
    from starlette.routing import Route

    from control.api import create_app
    from control.store.ports import Stores

    async def no_stores() -> Stores:
        raise AssertionError("not called")

    app = create_app(no_stores)
    gateway = _gateway_routes(translated)
    assert {version for _, _, version in gateway} == {"2.0"}
    checked = 0
    for route in app.routes:
        assert isinstance(route, Route)
        path = re.sub(r"\{[^}]+\}", "x-1", route.path)
        for method in route.methods or ():
            assert any(verb in ("ANY", method) and pattern.fullmatch(path)
                       for verb, pattern, _ in gateway), f"{method} {route.path} is not routed"
            checked += 1
    assert checked > 40  # every endpoint, under /console and /api/v1
    # And the check can fail: a path outside every route.
    assert not any(p.fullmatch("/") for _, p, _ in gateway)


def test_cdr_consumer_function_is_fed_by_the_bucket(translated: dict[str, Any]) -> None:
    resources = translated["Resources"]
    function = resources["CdrConsumerFunction"]["Properties"]
    assert function["Handler"] == "control.handlers.cdr_handler"
    assert function["Runtime"] == "python3.12" and function["Architectures"] == ["arm64"]
    variables = function["Environment"]["Variables"]
    assert variables["SDPBX_CDR_PUSH_URL"] == {"Ref": "CdrPushUrl"}
    assert variables["SDPBX_EDGE_SECRET"] == {"Ref": "EdgeSharedSecret"}
    assert variables["SDPBX_BLOB_BUCKET"] == resources["BlobBucket"]["Properties"]["BucketName"]
    api_variables = resources["ControlApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api_variables["SDPBX_CDR_PUSH_URL"] == {"Ref": "CdrPushUrl"}  # for retries
    assert translated["Parameters"]["EdgeSharedSecret"]["NoEcho"] is True

    bucket = resources["BlobBucket"]
    (notification,) = bucket["Properties"]["NotificationConfiguration"][
        "LambdaConfigurations"]
    assert notification["Event"] == "s3:ObjectCreated:*"
    assert notification["Function"] == {"Fn::GetAtt": ["CdrConsumerFunction", "Arn"]}
    rules = {rule["Name"]: rule["Value"] for rule in notification["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": "cdr/", "suffix": ".json"}
    permission = resources[bucket["DependsOn"][0]]
    assert permission["Type"] == "AWS::Lambda::Permission"
    assert permission["Properties"]["Principal"] == "s3.amazonaws.com"


def _actions(translated: dict[str, Any], role: str) -> set[str]:
    actions: set[str] = set()
    for policy in translated["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            listed = statement["Action"]
            actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_cdr_consumer_policies_are_least_privilege(translated: dict[str, Any]) -> None:
    actions = _actions(translated, "CdrConsumerFunctionRole")
    assert "s3:GetObject" in actions and "dynamodb:PutItem" in actions
    assert "s3:DeleteObject" not in actions
    text = json.dumps(translated["Resources"]["CdrConsumerFunctionRole"])
    assert {"CdrsTable", "DirectoryTable"} <= set(re.findall(r'"Ref": "(\w+Table)"', text))
    assert not {"CallsTable", "RegistrationsTable", "EdgesTable"} & set(
        re.findall(r'"Ref": "(\w+Table)"', text))
    # Writes to the bucket only under the delivery markers' prefix.
    (put,) = [s for p in translated["Resources"]["CdrConsumerFunctionRole"]["Properties"][
        "Policies"] for s in p["PolicyDocument"]["Statement"] if s["Action"] == "s3:PutObject"]
    assert put["Resource"]["Fn::Sub"][0].endswith("/cdr-deliveries/*")


def test_outputs_name_the_api_and_the_consumer(translated: dict[str, Any]) -> None:
    outputs = translated["Outputs"]
    assert "ControlHttpApi" in outputs["ControlApiUrl"]["Value"]["Fn::Sub"]
    assert outputs["CdrConsumerFunctionArn"]["Value"] == {
        "Fn::GetAtt": ["CdrConsumerFunction", "Arn"]}
    assert outputs["BlobBucketName"]["Value"] == {"Ref": "BlobBucket"}


def test_lint_catches_the_bucket_cycle(tmp_path: Path) -> None:
    # Why the functions name the bucket by pattern: a !Ref to it closes a loop through the
    # bucket's notification to the consumer.
    text = TEMPLATE.read_text()
    named = ('        SDPBX_BLOB_BUCKET: !Sub\n          - "sdpbx-blobs-${StackUuid}"\n'
             '          - StackUuid: !Select [2, !Split ["/", !Ref "AWS::StackId"]]\n')
    assert named in text
    broken = tmp_path / "template.yaml"
    broken.write_text(text.replace(named, "        SDPBX_BLOB_BUCKET: !Ref BlobBucket\n"))
    result = cfn_lint(broken)
    assert result.returncode != 0 and "E3004" in result.stdout
