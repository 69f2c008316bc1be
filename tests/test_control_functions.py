"""Control functions and the one client with three transports.

The default router and user backend (`control.api.functions`) against real SQLite stores; the
edge's `HttpRouter` and `HttpUserBackend` consuming them through `control:` (in-process ASGI),
`http://` with SigV4 (a real server on 127.0.0.1 that recomputes the signature with botocore,
like API Gateway's IAM check) and `lambda:` (a local fake of the Lambda Invoke API that runs the
real Mangum handler `control.handlers.handler` on the event it receives); and one real SIP
client registering through `control:/functions/users` of `sdpbx up`.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hmac
import importlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from awscrt.auth import AwsCredentialsProvider
from botocore.auth import SigV4Auth as BotoSigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from control.api import create_app
from control.api.functions import IN_PROCESS_SCOPE_KEY as SERVER_KEY
from control.api.functions import called_party
from control.contracts.router import RouteRequest, RouteResponse
from control.contracts.signing import SIGNATURE_HEADER, sign
from control.store.factory import open_stores
from control.store.models import DirectoryEntry
from control.store.passwords import ha1_md5, ha1_sha256, make_user
from control.store.ports import Stores
from edge.config import HttpRouterConfig, SigV4Config
from edge.io.control_client import (
    IN_PROCESS_SCOPE_KEY,
    RequestSigner,
    SigV4Auth,
    api_gateway_event,
    build_client,
    internal_url,
    response_from_result,
)
from edge.io.http import HttpServer
from edge.pbx.http_router import HttpRouter, RouterFailure
from edge.pbx.users import HttpUserBackend, Refused, Unavailable, UserRecord
from tests.api import sqlite_settings
from tests.edge_process import running_edge

pytestmark = pytest.mark.anyio

SECRET = "edge-shared-secret"
KEY_ID = "k1"
REALM = "pbx.test"
ANSWER_URL = "https://app.example.com/answer"
AWS_KEY, AWS_SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


# --- fixtures -----------------------------------------------------------------------------------


async def seed(stores: Stores) -> None:
    directory = stores.directory
    await directory.put_user(make_user("1001", REALM, "alice-pass", display_name="Alice"))
    await directory.put_user(make_user("1002", REALM, "bob-pass", enabled=False))
    await directory.put_user(make_user("2001", "other.test", "carol-pass"))
    await directory.put_entry(DirectoryEntry(
        kind="application", name="ivr",
        data={"numbers": ["4000", "+15550001"], "answer_url": ANSWER_URL}))


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    opened = await open_stores(sqlite_settings(tmp_path))
    try:
        await seed(opened)
        yield opened
    finally:
        await opened.close()


@dataclass(slots=True)
class Clock:
    now: float = 100.0

    def __call__(self) -> float:
        return self.now


def route_request(uri: str, to: str | None = None) -> RouteRequest:
    return RouteRequest(call_id="c1@test", from_="<sip:1001@pbx.test>;tag=a",
                        to=to if to is not None else f"<{uri}>",
                        source_addr="127.0.0.1:5070", direction="internal", uri=uri)


def router(url: str, client: httpx.AsyncClient | None = None, **config: Any) -> HttpRouter:
    return HttpRouter(HttpRouterConfig(url=url, timeout_ms=5000, **config), client=client,
                      secret=SECRET, key_id=KEY_ID)


async def decide(http_router: HttpRouter, uri: str) -> RouteResponse:
    reply = await http_router.decide(route_request(uri))
    assert isinstance(reply, RouteResponse), reply
    return reply


def alice(backend: str = "http") -> UserRecord:
    return UserRecord(
        username="1001", realm=REALM, display_name="Alice", backend=backend,
        ha1s={"MD5": ha1_md5("1001", REALM, "alice-pass"),
              "SHA-256": ha1_sha256("1001", REALM, "alice-pass")})


# --- pure parts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("uri", "to", "expected"), [
    ("sip:2002@pbx.test;user=phone", "<sip:x@y>", ("2002", "pbx.test")),
    ("sips:%2B15550001@PBX.test:5061;transport=tls", "", ("+15550001", "pbx.test")),
    ("sip:+1555;phone-context=example.com@[2001:db8::1]:5060", "", ("+1555", "2001:db8::1")),
    ("sip:pbx.test", '"Bob" <sip:4000@pbx.test>;tag=9', ("4000", "pbx.test")),
    ("sip:pbx.test", "sip:4001@pbx.test;tag=9", ("4001", "pbx.test")),
    ("tel:+15550001;phone-context=x", "", ("+15550001", "")),
    ("sip:pbx.test", "<sip:pbx.test>", ("", "pbx.test")),
    ("mailto:a@b", "", ("", "")),
])
def test_called_party(uri: str, to: str, expected: tuple[str, str]) -> None:
    assert called_party(route_request(uri, to)) == expected


@pytest.mark.parametrize(("url", "expected"), [
    ("lambda:sdpbx-control/functions/router", "lambda://invoke/sdpbx-control/functions/router"),
    ("lambda:fn", "lambda://invoke/fn/"),
    ("lambda:fn?x=1", "lambda://invoke/fn/?x=1"),
    ("lambda:arn:aws:lambda:eu-west-1:123456789012:function:ctl:live/functions/users",
     "lambda://invoke/arn%3Aaws%3Alambda%3Aeu-west-1%3A123456789012%3Afunction%3Actl%3Alive"
     "/functions/users"),
    ("control:/functions/users?username=1001", "control://control/functions/users?username=1001"),
    ("control:functions/router", "control://control/functions/router"),
    ("https://api.example.com/route", "https://api.example.com/route"),
])
def test_internal_url(url: str, expected: str) -> None:
    assert internal_url(url) == expected


def test_a_lambda_url_without_a_function_fails_at_construction() -> None:
    with pytest.raises(httpx.InvalidURL):
        HttpUserBackend("lambda:/functions/users", client=httpx.AsyncClient())
    with pytest.raises(httpx.InvalidURL):
        router("lambda:", httpx.AsyncClient())


def test_the_in_process_marker_is_the_one_the_functions_trust() -> None:
    assert IN_PROCESS_SCOPE_KEY == SERVER_KEY


def test_api_gateway_event_shape() -> None:
    request = httpx.Request(
        "POST", "lambda://invoke/fn/functions/users?a=1&a=2&b=%20x",
        headers=[("X-Thing", "one"), ("x-thing", "two"), ("Cookie", "s=1; t=2"),
                 ("Content-Type", "application/octet-stream")], content=b"\xff\x00")
    event = api_gateway_event(request, b"\xff\x00", path="/functions/users", now=1710253950.456,
                              request_id="r-1")
    assert event["version"] == "2.0"
    assert event["rawPath"] == "/functions/users"
    assert event["rawQueryString"] == "a=1&a=2&b=%20x"
    assert event["queryStringParameters"] == {"a": "1,2", "b": " x"}
    assert event["headers"]["x-thing"] == "one,two"
    assert "cookie" not in event["headers"] and event["cookies"] == ["s=1", "t=2"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\x00"
    http = event["requestContext"]["http"]
    assert (http["method"], http["path"]) == ("POST", "/functions/users")
    assert event["requestContext"]["timeEpoch"] == 1710253950456
    assert event["requestContext"]["time"] == "12/Mar/2024:14:32:30 +0000"
    text = api_gateway_event(httpx.Request("POST", "lambda://invoke/fn/x", json={"a": "é"}),
                             json.dumps({"a": "é"}).encode(), path="/x", now=0, request_id="r")
    assert text["isBase64Encoded"] is False and json.loads(text["body"]) == {"a": "é"}


def test_function_results_become_responses() -> None:
    request = httpx.Request("POST", "lambda://invoke/fn/")
    reply = response_from_result(request, json.dumps({
        "statusCode": 201, "headers": {"x-a": "1", "content-length": "999"},
        "cookies": ["s=1"], "body": base64.b64encode(b"\x00\x01").decode(),
        "isBase64Encoded": True}).encode())
    assert reply.status_code == 201 and reply.content == b"\x00\x01"
    assert reply.headers["x-a"] == "1" and reply.headers["set-cookie"] == "s=1"
    assert reply.headers["content-length"] == "2"
    plain = response_from_result(request, b'{"action": "not_handled"}')
    assert plain.status_code == 200 and plain.json() == {"action": "not_handled"}
    for bad in (b"not json", b'{"statusCode": 42}', b'{"statusCode": 200, "body": 5}',
                b'{"statusCode": 200, "body": "@@", "isBase64Encoded": true}'):
        assert response_from_result(request, bad).status_code == 502, bad


# --- the functions, in-process ------------------------------------------------------------------


async def test_router_function_in_process(stores: Stores) -> None:
    app = create_app(stores, realm=REALM)
    async with build_client(control_app=app) as client:
        http_router = router("control:/functions/router", client)
        forward = await decide(http_router, "sip:1001@pbx.test")
        assert (forward.action, forward.targets) == ("forward", ["1001"])
        # The Request-URI's host is tried as the realm first, then the API's realm.
        other = await decide(http_router, "sip:2001@other.test")
        assert (other.action, other.targets) == ("forward", ["2001"])
        disabled = await decide(http_router, "sip:1002@pbx.test")
        assert (disabled.action, disabled.status) == ("reject", 480)
        for number in ("4000", "+15550001"):
            answer = await decide(http_router, f"sip:{number}@pbx.test")
            assert (answer.action, answer.answer_url, answer.steps) == ("answer", ANSWER_URL,
                                                                        None)
        assert (await decide(http_router, "sip:5555@pbx.test")).action == "not_handled"
        assert (await decide(http_router, "sip:pbx.test")).action == "not_handled"


async def test_router_sees_new_applications_after_the_revision_check(stores: Stores) -> None:
    monotonic = Clock()
    app = create_app(stores, realm=REALM, monotonic=monotonic)
    async with build_client(control_app=app) as client:
        http_router = router("control:/functions/router", client)
        assert (await decide(http_router, "sip:7000@pbx.test")).action == "not_handled"
        await stores.directory.put_entry(DirectoryEntry(
            kind="application", name="sales",
            data={"numbers": ["7000"], "answer_url": "https://sales.example.com/a"}))
        # Within the poll interval the index is not re-read; after it, the revision moved.
        assert (await decide(http_router, "sip:7000@pbx.test")).action == "not_handled"
        monotonic.now += 2.5
        answer = await decide(http_router, "sip:7000@pbx.test")
        assert answer.answer_url == "https://sales.example.com/a"


async def test_user_backend_function_in_process(stores: Stores) -> None:
    app = create_app(stores, realm=REALM)
    for method in ("GET", "POST"):
        backend = HttpUserBackend("control:/functions/users", method=method, control_app=app)
        try:
            assert await backend.lookup("1001", REALM, "sip:pbx.test") == alice()
            assert await backend.lookup("1001", "", "sip:pbx.test") == alice()  # API realm
            assert await backend.lookup("nobody", REALM, "sip:pbx.test") is None
            disabled = await backend.lookup("1002", REALM, "sip:pbx.test")
            assert isinstance(disabled, Refused) and disabled.reason == "disabled"
        finally:
            await backend.aclose()


async def test_without_a_control_app_control_urls_fail_as_transport_errors() -> None:
    backend = HttpUserBackend("control:/functions/users")
    try:
        result = await backend.lookup("1001", REALM, "")
        assert isinstance(result, Unavailable) and "transport" in result.reason
    finally:
        await backend.aclose()


# --- authentication -----------------------------------------------------------------------------


async def test_network_requests_must_be_signed(stores: Stores) -> None:
    clock = Clock(time.time())
    app = create_app(stores, realm=REALM, clock=clock, edge_secrets={KEY_ID: SECRET})
    body = route_request("sip:1001@pbx.test").model_dump_json(by_alias=True).encode()
    query = urlencode({"username": "1001", "realm": REALM}).encode()

    def signed(payload: bytes, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
        return sign(payload, secret=secret, key_id=KEY_ID, now=clock.now if at is None else at)

    # A plain ASGI client: not the edge's in-process transport, so no trust.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ctl") as client:
        post = client.post
        r = await post("/functions/router", content=body)
        assert r.status_code == 401
        assert r.json()["error"]["message"].startswith(SIGNATURE_HEADER)
        r = await post("/functions/router", content=body, headers=signed(body, "wrong"))
        assert r.status_code == 401 and "does not match" in r.json()["error"]["message"]
        r = await post("/functions/router", content=body, headers=signed(body, at=clock.now - 900))
        assert r.status_code == 401
        r = await post("/functions/router", content=body, headers=signed(body))
        assert r.status_code == 200 and r.json() == {"action": "forward", "targets": ["1001"]}

        # A GET is signed over its query string: another user's query does not verify.
        r = await client.get(f"/functions/users?{query.decode()}", headers=signed(query))
        assert r.status_code == 200 and r.json()["ha1"] == ha1_md5("1001", REALM, "alice-pass")
        r = await client.get(f"/functions/users?username=1002&realm={REALM}",
                             headers=signed(query))
        assert r.status_code == 401
        form = urlencode({"username": "1001", "realm": REALM}).encode()
        r = await post("/functions/users", content=form, headers={
            **signed(form), "Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 200 and r.json()["username"] == "1001"
        r = await post("/functions/users", content=form)
        assert r.status_code == 401

    # An app without any edge secret answers no network request, signed or not.
    lone = create_app(stores, realm=REALM)
    transport = httpx.ASGITransport(app=lone)
    async with httpx.AsyncClient(transport=transport, base_url="http://ctl") as client:
        r = await client.post("/functions/router", content=body, headers=signed(body))
        assert r.status_code == 401


async def test_the_edge_secret_defaults_to_the_command_clients(stores: Stores) -> None:
    from control.api.active_calls import EdgeCommandClient

    commands = EdgeCommandClient(None, secret=SECRET, key_id=KEY_ID)
    app = create_app(stores, realm=REALM, commands=commands)
    assert app.state.functions.secrets == {KEY_ID: SECRET}


async def test_the_signer_signs_what_is_unsigned() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    signer = RequestSigner(SECRET, KEY_ID, clock=lambda: 1000.0)
    async with httpx.AsyncClient(transport=httpx.MockTransport(record),
                                 event_hooks={"request": [signer]}) as client:
        await client.get("http://x/users", params={"username": "1001"})
        await client.post("http://x/route", content=b"{}")
        await client.post("http://x/route", content=b"{}", headers={SIGNATURE_HEADER: "mine"})
    assert seen[0].headers[SIGNATURE_HEADER] == sign(
        b"username=1001", secret=SECRET, key_id=KEY_ID, now=1000)[SIGNATURE_HEADER]
    assert seen[1].headers[SIGNATURE_HEADER] == sign(
        b"{}", secret=SECRET, key_id=KEY_ID, now=1000)[SIGNATURE_HEADER]
    assert seen[2].headers[SIGNATURE_HEADER] == "mine"


async def test_openapi_documents_the_functions(stores: Stores) -> None:
    app = create_app(stores, realm=REALM)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://ctl") as client:
        doc = (await client.get("/openapi.json")).json()
    router_op = doc["paths"]["/functions/router"]["post"]
    assert router_op["security"] == [{"edgeSignature": []}]
    assert router_op["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RouteRequest")
    assert "answer_url" in doc["components"]["schemas"]["RouteResponse"]["properties"]
    users = doc["paths"]["/functions/users"]
    assert {"get", "post"} <= set(users)
    assert "application/x-www-form-urlencoded" in users["post"]["requestBody"]["content"]
    assert "404" in users["get"]["responses"] and "401" in users["get"]["responses"]
    assert doc["components"]["securitySchemes"]["edgeSignature"]["name"] == SIGNATURE_HEADER


# --- http(s) with SigV4 -------------------------------------------------------------------------


def _authorization(value: str) -> dict[str, str]:
    algorithm, _, rest = value.partition(" ")
    assert algorithm == "AWS4-HMAC-SHA256"
    return dict(part.strip().split("=", 1) for part in rest.split(","))


def botocore_signature(method: str, url: str, headers: dict[str, str], body: bytes,
                       *, secret: str, amz_date: str) -> str:
    """The SigV4 signature botocore computes for this request, as AWS would check it."""
    fields = _authorization(headers["authorization"])
    access_key, _date, region, service, _ = fields["Credential"].split("/")
    signed = fields["SignedHeaders"].split(";")
    request = AWSRequest(method=method, url=url, data=body,
                         headers={name: headers[name] for name in signed})
    request.context["timestamp"] = amz_date
    signer = BotoSigV4Auth(Credentials(access_key, secret), service, region)
    canonical = signer.canonical_request(request)
    signature: str = signer.signature(signer.string_to_sign(request, canonical), request)
    return signature


async def test_sigv4_matches_botocore_byte_for_byte() -> None:
    credentials = AwsCredentialsProvider.new_static(AWS_KEY, AWS_SECRET)
    auth = SigV4Auth(service="lambda", region="eu-west-1", credentials=credentials,
                     clock=lambda: 1_700_000_000.0)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    url = "https://abc.lambda-url.eu-west-1.on.aws/functions/users?realm=pbx.test&username=1 0"
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        await client.post(url, content=b'{"a": 1}', auth=auth,
                          headers={"Content-Type": "application/json"})
    request = seen[0]
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["x-amz-date"] == "20231114T221320Z"
    fields = _authorization(headers["authorization"])
    assert fields["Credential"] == f"{AWS_KEY}/20231114/eu-west-1/lambda/aws4_request"
    assert "user-agent" not in fields["SignedHeaders"].split(";")
    assert fields["Signature"] == botocore_signature(
        "POST", str(request.url), headers, request.content, secret=AWS_SECRET,
        amz_date=headers["x-amz-date"])


async def test_sigv4_replaces_a_configured_authorization_and_fails_softly(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    auth = SigV4Auth(service="execute-api", region="eu-west-1",
                     credentials=AwsCredentialsProvider.new_static(AWS_KEY, AWS_SECRET))
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        await client.get("https://api.example.com/users", auth=auth,
                         headers={"Authorization": "Bearer mine", "X-Amz-Date": "old"})
        assert seen[0].headers.get_list("authorization")[0].startswith("AWS4-HMAC-SHA256 ")
        assert len(seen[0].headers.get_list("authorization")) == 1
        assert seen[0].headers["x-amz-date"] != "old"

        # The environment has no credentials: a transport error for the caller, not a crash.
        broken = SigV4Auth(service="execute-api", region="eu-west-1",
                           credentials=AwsCredentialsProvider.new_environment())
        with pytest.raises(httpx.TransportError, match="SigV4"):
            await client.get("https://api.example.com/users", auth=broken)
    assert len(seen) == 1


@dataclass(slots=True)
class IamGate:
    """API Gateway's IAM authoriser in miniature: a request whose SigV4 signature does not
    verify (botocore recomputes it with `secret`), or is more than 5 minutes old, gets 403;
    a verified one goes on to `app` (the control app)."""

    app: ASGIApp
    secret: str
    verified: list[str] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = Request(scope)
        headers = {k.lower(): v for k, v in request.headers.items()}
        reason = "missing signature"
        if "authorization" in headers and "x-amz-date" in headers:
            when = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.UTC).timestamp()
            expected = botocore_signature(request.method, str(request.url), headers, body,
                                          secret=self.secret, amz_date=headers["x-amz-date"])
            given = _authorization(headers["authorization"])["Signature"]
            if abs(time.time() - when) > 300:
                reason = "stale"
            elif hmac.compare_digest(expected, given):
                self.verified.append(_authorization(headers["authorization"])["Credential"])
                sent = False

                async def replay() -> dict[str, Any]:
                    nonlocal sent
                    if sent:
                        return {"type": "http.disconnect"}
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}

                await self.app(scope, replay, send)
                return
            else:
                reason = "signature mismatch"
        await JSONResponse({"message": f"Forbidden: {reason}"}, status_code=403)(
            scope, receive, send)


@asynccontextmanager
async def iam_api(stores: Stores, secret: str) -> AsyncIterator[tuple[IamGate, str]]:
    gate = IamGate(create_app(stores, realm=REALM, edge_secrets={KEY_ID: SECRET}), secret)
    server = await HttpServer.start(gate, "127.0.0.1", 0)
    try:
        yield gate, f"http://127.0.0.1:{server.address[1]}"
    finally:
        await server.close()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_LAMBDA", raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("aws_env")
async def test_http_transport_with_sigv4(stores: Stores) -> None:
    sigv4 = SigV4Config(service="execute-api", region="eu-west-1")
    async with iam_api(stores, AWS_SECRET) as (gate, base):
        http_router = router(f"{base}/functions/router", sigv4=sigv4)
        try:
            forward = await decide(http_router, "sip:1001@pbx.test")
            assert forward.targets == ["1001"]
        finally:
            await http_router.aclose()
        backend = HttpUserBackend(f"{base}/functions/users", sigv4=sigv4,
                                  signer=RequestSigner(SECRET, KEY_ID))
        try:
            assert await backend.lookup("1001", REALM, "sip:pbx.test") == alice()
        finally:
            await backend.aclose()
        assert len(gate.verified) == 2
        assert all(c.endswith("/eu-west-1/execute-api/aws4_request") for c in gate.verified)

        # Without SigV4, or signed with credentials the gate does not know: 403 at the gate.
        unsigned = router(f"{base}/functions/router")
        try:
            failure = await unsigned.decide(route_request("sip:1001@pbx.test"))
            assert isinstance(failure, RouterFailure) and failure.status == 403
        finally:
            await unsigned.aclose()
    async with iam_api(stores, "another-secret") as (gate, base):
        wrong = router(f"{base}/functions/router", sigv4=sigv4)
        try:
            failure = await wrong.decide(route_request("sip:1001@pbx.test"))
            assert isinstance(failure, RouterFailure) and failure.status == 403
        finally:
            await wrong.aclose()
        assert gate.verified == []


@pytest.mark.usefixtures("aws_env")
async def test_sigv4_through_but_no_edge_signature_is_401(stores: Stores) -> None:
    sigv4 = SigV4Config(service="lambda")  # region from AWS_DEFAULT_REGION
    async with iam_api(stores, AWS_SECRET) as (gate, base):
        backend = HttpUserBackend(f"{base}/functions/users", sigv4=sigv4)  # no signer
        try:
            result = await backend.lookup("1001", REALM, "")
            assert isinstance(result, Unavailable) and result.reason == "HTTP 401"
        finally:
            await backend.aclose()
        assert gate.verified and gate.verified[0].endswith("/eu-west-1/lambda/aws4_request")


# --- lambda: through a local Lambda Invoke API and the real Mangum handler ---------------------


class LambdaContext:
    function_name = "sdpbx-control"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 15000


class LambdaRuntime:
    """One thread with its own event loop, like a Lambda container: runs
    `control.handlers.handler` (Mangum) on each event."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, initializer=self._start)

    def _start(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    @staticmethod
    def handlers() -> ModuleType:
        return importlib.import_module("control.handlers")

    def call(self, fn: Any, *args: Any) -> Any:
        return self.executor.submit(fn, *args).result(timeout=30)

    async def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await asyncio.get_running_loop().run_in_executor(
            self.executor, lambda: self.handlers().handler(event, LambdaContext()))
        return result

    def close(self) -> None:
        def stop() -> None:
            assert self.loop is not None
            self.loop.run_until_complete(self.handlers().stores.close())
            self.loop.close()
            asyncio.set_event_loop(None)

        self.call(stop)
        self.executor.shutdown()


@dataclass(slots=True)
class FakeLambda:
    """`POST /2015-03-31/functions/{name}/invocations` as the Lambda service answers it."""

    runtime: LambdaRuntime
    events: list[dict[str, Any]] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    async def invoke(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.names.append(name)
        assert request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256")
        assert request.headers.get("x-amz-invocation-type", "RequestResponse") \
            == "RequestResponse"
        event = json.loads(await request.body())
        self.events.append(event)
        if name.endswith("broken"):
            return JSONResponse({"errorMessage": "boom", "errorType": "RuntimeError"},
                                headers={"X-Amz-Function-Error": "Unhandled"})
        return JSONResponse(await self.runtime.invoke(event))

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/2015-03-31/functions/{name}/invocations", self.invoke,
                                       methods=["POST"])])


@pytest.fixture
def lambda_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   aws_env: None) -> Iterator[LambdaRuntime]:
    monkeypatch.setenv("SDPBX_STORE", "sqlite")
    monkeypatch.setenv("SDPBX_SQLITE_PATH", str(tmp_path / "sdpbx.sqlite3"))
    monkeypatch.setenv("SDPBX_BLOB_ROOT", str(tmp_path / "blobs"))
    runtime = LambdaRuntime()
    handlers = runtime.call(runtime.handlers)
    # The stack's SDPBX_EDGE_SECRET, whatever the environment was when the module loaded.
    monkeypatch.setattr(handlers.app.state.functions, "secrets", {KEY_ID: SECRET})
    try:
        yield runtime
    finally:
        runtime.close()


async def test_lambda_transport_runs_the_mangum_handler(
        stores: Stores, lambda_runtime: LambdaRuntime) -> None:
    fake = FakeLambda(lambda_runtime)
    server = await HttpServer.start(fake.app, "127.0.0.1", 0)
    endpoint = f"http://127.0.0.1:{server.address[1]}"
    try:
        async with build_client(signer=RequestSigner(SECRET, KEY_ID),
                                lambda_endpoint_url=endpoint) as client:
            http_router = router("lambda:sdpbx-control/functions/router", client)
            assert (await decide(http_router, "sip:1001@pbx.test")).targets == ["1001"]
            answer = await decide(http_router, "sip:4000@pbx.test")
            assert answer.answer_url == ANSWER_URL
            assert (await decide(http_router, "sip:9999@pbx.test")).action == "not_handled"

            arn = "arn:aws:lambda:eu-west-1:123456789012:function:sdpbx-control"
            for method in ("GET", "POST"):
                backend = HttpUserBackend(f"lambda:{arn}/functions/users", method=method,
                                          client=client)
                assert await backend.lookup("1001", REALM, "sip:pbx.test") == alice()
                assert await backend.lookup("nobody", REALM, "sip:pbx.test") is None
                assert isinstance(await backend.lookup("1002", REALM, ""), Refused)

            broken = await router("lambda:broken/functions/router", client).decide(
                route_request("sip:1001@pbx.test"))
            assert isinstance(broken, RouterFailure) and broken.status == 502
    finally:
        await server.close()
    assert fake.names[0] == "sdpbx-control" and arn in fake.names
    first = fake.events[0]
    assert first["version"] == "2.0" and first["rawPath"] == "/functions/router"
    assert first["requestContext"]["http"]["method"] == "POST"
    assert all(name == name.lower() for name in first["headers"])
    assert SIGNATURE_HEADER.lower() in first["headers"]
    get = next(e for e in fake.events if e["requestContext"]["http"]["method"] == "GET")
    assert get["queryStringParameters"]["username"] == "1001"


RECORDED_USERS_EVENT = Path(__file__).parent / "events" / "lambda_invoke_functions_users_get.json"


async def test_recorded_invoke_event_is_what_the_transport_sends_and_mangum_serves(
        stores: Stores, lambda_runtime: LambdaRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorded event: the user backend's signed GET as the `lambda:` transport turns it
    into an API Gateway payload 2.0 event; the real handler answers it with the HA1."""
    recorded = json.loads(RECORDED_USERS_EVENT.read_text())
    query = "username=1001&realm=pbx.test&request_uri=sip%3Apbx.test"
    signed_at = 1710253950
    headers = [("Accept", "application/json"), ("X-Api-Key", "k-123"),
               *sign(query.encode(), secret=SECRET, key_id=KEY_ID, now=signed_at).items()]
    request = httpx.Request("GET", internal_url(f"lambda:sdpbx-control/functions/users?{query}"),
                            headers=headers)
    assert api_gateway_event(request, b"", path="/functions/users", now=signed_at + 0.456,
                             request_id="8f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0") == recorded

    functions = lambda_runtime.call(lambda_runtime.handlers).app.state.functions
    monkeypatch.setattr(functions, "_clock", lambda: signed_at + 1.0)
    result = await lambda_runtime.invoke(recorded)
    assert result["statusCode"] == 200, result
    answer = json.loads(result["body"])
    assert answer["ha1"] == ha1_md5("1001", REALM, "alice-pass")
    assert answer["ha1_sha256"] == ha1_sha256("1001", REALM, "alice-pass")
    tampered = {**recorded, "rawQueryString": query.replace("1001", "1002")}
    assert (await lambda_runtime.invoke(tampered))["statusCode"] == 401


async def test_lambda_transport_without_a_service_is_a_transport_error(aws_env: None) -> None:
    async with build_client(lambda_endpoint_url="http://127.0.0.1:9") as client:
        failure = await router("lambda:nowhere/functions/router", client).decide(
            route_request("sip:1001@pbx.test"))
    assert isinstance(failure, RouterFailure) and failure.kind in ("transport", "timeout")


# --- a real SIP client registers through control:/functions/users ------------------------------


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("sipsak") is None, reason="sipsak not installed")
def test_sipsak_registers_through_the_user_backend_function(tmp_path: Path) -> None:
    from tests.test_interop import run_sipsak

    config = '\n[[proxy.user_backends]]\ntype = "http"\nurl = "control:/functions/users"\n'
    with running_edge(tmp_path, config) as edge:
        added = subprocess.run(
            [sys.executable, "-m", "edge", "user", "add", "1001", "--password", "s3cret",
             "--config", str(tmp_path / "sdpbx.toml")],
            capture_output=True, text=True, timeout=30, check=False)
        assert added.returncode == 0, added.stderr
        host, port = edge.sip_udp
        result = run_sipsak(["-U", "-s", f"sip:1001@{host}:{port}", "-u", "1001",
                             "-a", "s3cret", "-x", "300"])
        assert result.returncode == 0, result.stdout + result.stderr + edge.log()
        assert "All usrloc tests completed successful" in result.stdout
        wrong = run_sipsak(["-U", "-s", f"sip:1001@{host}:{port}", "-u", "1001",
                            "-a", "nope", "-x", "300"])
        assert wrong.returncode != 0
        unknown = run_sipsak(["-U", "-s", f"sip:1009@{host}:{port}", "-u", "1009",
                              "-a", "s3cret", "-x", "300"])
        assert unknown.returncode != 0
        assert "user backend http unavailable" not in edge.log()
