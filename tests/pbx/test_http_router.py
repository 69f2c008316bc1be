"""The routing webhook client and CallRouter against a real HTTP server (Starlette on uvicorn,
127.0.0.1, port 0) that checks every signature with `control.contracts.signing`, as a router
would: forward, not_handled, reject/spam/answer, a slow router with and without fallback, a 500,
garbage, a reply failing validation, a dead router, an oversized reply."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import edge.pbx.http_router as http_router_module
from control.contracts.router import RouteRequest, RouteResponse
from control.contracts.signing import SIGNATURE_HEADER, verification_failure
from edge.config import HttpRouterConfig, parse_config
from edge.io.http import HttpServer
from edge.metrics import Metrics
from edge.pbx.http_router import CallRouter, HttpRouter, RouterFailure, route_request
from edge.pbx.routing import RouteDecision, StaticRouter, TrunkDirectory
from edge.sip.message import Request, parse_message

SECRET = "router-shared-secret"
KEY_ID = "k7"
SDP = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\n" \
      "m=audio 4000 RTP/AVP 0\r\n"

STATIC = """
[[proxy.routes]]
name = "to-carrier"
dest = "carrierA"
match = { "to.user" = "^00([0-9]+)$" }
rewrite = { "to.user" = "+{1}" }

[proxy.trunks.carrierA]
dest = "sip:198.51.100.10:5060"
"""


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@dataclass
class Seen:
    body: dict[str, Any]
    headers: dict[str, str]
    failure: str | None  # None: the signature verified


@dataclass
class FakeRouter:
    """The business system's routing endpoint: records what it got, answers `answer()`."""

    url: str = ""
    answer: Callable[[], Response] = lambda: JSONResponse({"action": "not_handled"})
    delay_s: float = 0.0
    seen: list[Seen] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@contextlib.asynccontextmanager
async def fake_router(**settings: Any) -> AsyncIterator[FakeRouter]:
    state = FakeRouter(**settings)

    async def hook(request: HttpRequest) -> Response:
        body = await request.body()  # the raw bytes: verify before parsing
        failure = verification_failure(body, request.headers, secrets={KEY_ID: SECRET},
                                       now=time.time())
        state.seen.append(Seen(json.loads(body), dict(request.headers), failure))
        if state.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.release.wait(), state.delay_s)
        return state.answer()

    server = await HttpServer.start(
        Starlette(routes=[Route("/route", hook, methods=["POST"])]), "127.0.0.1", 0
    )
    state.url = f"http://127.0.0.1:{server.address[1]}/route?token=abc"
    try:
        yield state
    finally:
        state.release.set()  # a held request finishes, so the server closes at once
        await server.close()


class Recorder:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def router_request(self, outcome: str, latency_s: float) -> None:
        assert 0 <= latency_s < 10
        self.outcomes.append(outcome)


def make_http(client: httpx.AsyncClient, url: str, *, timeout_ms: int = 2000,
              observer: Recorder | Metrics | None = None,
              clock: Callable[[], float] = time.time) -> HttpRouter:
    config = HttpRouterConfig(url=url, timeout_ms=timeout_ms,
                              headers={"X-API-Key": "key-123"})
    return HttpRouter(config, client=client, secret=SECRET, key_id=KEY_ID, clock=clock,
                      observer=observer)


def make_router(http: HttpRouter | None, *, fallback: bool) -> CallRouter:
    proxy = parse_config(STATIC).proxy
    return CallRouter(StaticRouter(proxy.routes, proxy.trunks, random.Random(1).random), http,
                      fallback, ["PBX.test", "203.0.113.7"],
                      trunks=TrunkDirectory(proxy.trunks))


def invite(to_user: str = "0049301234") -> Request:
    lines = [
        f"INVITE sip:{to_user}@pbx.test SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1",
        "Max-Forwards: 70",
        "f: \"Alice\" <sip:1001@pbx.test>;tag=a1",
        f"To: <sip:{to_user}@pbx.test>",
        "Call-ID: call-42@test",
        "CSeq: 1 INVITE",
        "m: <sip:1001@198.51.100.7:5060>",
        "X-Multi: one",
        "X-Multi: two",
        "Content-Type: application/sdp",
        f"Content-Length: {len(SDP)}",
        "",
        SDP,
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


async def route(router: CallRouter, request: Request | None = None) -> RouteDecision:
    return await router.route(request or invite(), source_addr="198.51.100.7:5060",
                              direction="internal", source_trunk=None)


def reply(body: Any, status: int = 200) -> Callable[[], Response]:
    return lambda: JSONResponse(body, status_code=status)


def raw(content: bytes, status: int = 200) -> Callable[[], Response]:
    return lambda: Response(content, status_code=status, media_type="application/json")


# --- the request ----------------------------------------------------------------------------


def test_request_is_signed_carries_the_call_and_the_configured_headers() -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with fake_router(answer=reply({"action": "forward", "targets": ["1001"]})
                               ) as server, httpx.AsyncClient() as client:
            http = make_http(client, server.url, observer=recorder)
            result = await http.decide(route_request(
                invite(), source_addr="198.51.100.7:5060", direction="internal"))
        assert isinstance(result, RouteResponse) and result.targets == ["1001"]
        [seen] = server.seen
        assert seen.failure is None, seen.failure  # the signature verifies
        assert seen.headers["x-api-key"] == "key-123"
        assert seen.headers["content-type"] == "application/json"
        assert seen.headers[SIGNATURE_HEADER.lower()].startswith("t=")
        body = seen.body
        assert body["call_id"] == "call-42@test"
        assert body["from"] == "\"Alice\" <sip:1001@pbx.test>;tag=a1"  # raw, with its tag
        assert body["to"] == "<sip:0049301234@pbx.test>"
        assert body["source_addr"] == "198.51.100.7:5060"
        assert (body["direction"], body["method"]) == ("internal", "INVITE")
        assert body["uri"] == "sip:0049301234@pbx.test"
        assert body["body"] == SDP
        headers = body["headers"]
        assert headers["From"] == body["from"]  # compact "f" under its full name
        assert headers["Contact"] == "<sip:1001@198.51.100.7:5060>"
        assert headers["X-Multi"] == "one, two"
        assert recorder.outcomes == ["forward"]
    run(scenario())


def test_signature_uses_the_injected_clock() -> None:
    async def scenario() -> None:
        async with fake_router() as server, httpx.AsyncClient() as client:
            http = make_http(client, server.url, clock=lambda: 1_000_000_000.0)
            await http.decide(route_request(invite(), source_addr="1.2.3.4:5",
                                            direction="inbound"))
        [seen] = server.seen
        # Signed at the injected time: the receiver (using the real clock) refuses it as stale.
        assert seen.headers[SIGNATURE_HEADER.lower()].startswith("t=1000000000,kid=k7,v1=")
        assert seen.failure is not None and "timestamp" in seen.failure
    run(scenario())


def test_request_body_is_ascii_json_even_for_odd_bytes() -> None:
    request = invite()
    request.headers.add("X-Odd", "caf\udcc3\udca9 \udcff")  # surrogateescape'd bytes
    body = route_request(request, source_addr="1.2.3.4:5", direction="inbound")
    assert isinstance(body, RouteRequest)
    assert body.headers["X-Odd"] == "café \ufffd"
    json.dumps(body.model_dump(by_alias=True)).encode("ascii")


# --- replies ---------------------------------------------------------------------------------


def test_forward_targets_registrar_trunk_and_plain() -> None:
    async def scenario() -> None:
        answer = {
            "action": "forward", "strategy": "parallel", "record": True, "timeout": 600,
            "max_ring_time": 25, "rtp_timeout": 30, "headers": {"X-Crm": "7"},
            "with_original_headers": True, "extensions": {"ticket": "T-1"},
            "allow_codecs": ["PCMA"],
            "targets": ["1001", "sip:2002@PBX.test;transport=tcp", "sip:3003@203.0.113.7",
                        "sip:+4930@198.51.100.10:5060", "tel:+4930", "sip:x@far.example",
                        "4004@pbx.test", "5005@far.example"],
        }
        async with fake_router(answer=reply(answer)) as server, \
                httpx.AsyncClient() as client:
            decision = await route(make_router(make_http(client, server.url), fallback=True))
        assert (decision.action, decision.source, decision.strategy) == (
            "forward", "webhook", "parallel")
        assert [(t.uri, t.trunk, t.aor) for t in decision.targets] == [
            ("sip:1001@pbx.test", None, "sip:1001@pbx.test"),  # bare extension: registrar
            ("sip:2002@PBX.test;transport=tcp", None, "sip:2002@pbx.test"),  # our domain
            ("sip:3003@203.0.113.7", None, "sip:3003@203.0.113.7"),  # our address
            ("sip:+4930@198.51.100.10:5060", "carrierA", None),  # a trunk's address
            ("sip:x@far.example", None, None),  # anywhere else; tel: was skipped
            ("sip:4004@pbx.test", None, "sip:4004@pbx.test"),  # no scheme: sip assumed
            ("sip:5005@far.example", None, None),
        ]
        assert decision.record is True
        assert (decision.timeout_s, decision.max_ring_time_s, decision.rtp_timeout_s) == (
            600, 25, 30)
        assert decision.headers == (("X-Crm", "7"),)
        assert decision.with_original_headers is True
        assert dict(decision.extensions) == {"ticket": "T-1"}
        assert decision.allow_codecs == ("PCMA",)
        assert decision.status == 0
        assert decision.rewrite.callee_final == decision.rewrite.callee_original == "0049301234"
    run(scenario())


def test_not_handled_uses_the_static_routes_and_keeps_extensions() -> None:
    async def scenario() -> None:
        answer = {"action": "not_handled", "extensions": {"tenant": "acme"}}
        async with fake_router(answer=reply(answer)) as server, \
                httpx.AsyncClient() as client:
            router = make_router(make_http(client, server.url), fallback=False)
            decision = await route(router)
            unrouted = await route(router, invite("1002"))
        assert (decision.action, decision.source, decision.route_name) == (
            "forward", "static", "to-carrier")
        assert decision.targets[0].uri == "sip:+49301234@198.51.100.10:5060"
        assert dict(decision.extensions) == {"tenant": "acme"}
        # No static route either: not_handled, for the registrar (then 404).
        assert (unrouted.action, unrouted.status, unrouted.targets) == ("not_handled", 404, ())
        assert len(server.seen) == 2
    run(scenario())


@pytest.mark.parametrize(
    ("answer", "action", "status", "reason"),
    [
        ({"action": "reject", "status": 480, "reason": "Closed"}, "reject", 480, "Closed"),
        ({"action": "reject"}, "reject", 403, None),
        ({"action": "abort", "status": 503}, "abort", 503, None),
        ({"action": "spam", "reason": "robocall"}, "spam", 403, "robocall"),
        ({"action": "answer", "steps": [{"action": "talk", "text": "hi"}]}, "answer", 0, None),
    ],
)
def test_refusals_spam_and_answer_pass_through(
    answer: dict[str, Any], action: str, status: int, reason: str | None
) -> None:
    async def scenario() -> None:
        async with fake_router(answer=reply(answer)) as server, \
                httpx.AsyncClient() as client:
            decision = await route(make_router(make_http(client, server.url), fallback=True))
        assert (decision.action, decision.status, decision.reason) == (action, status, reason)
        assert decision.source == "webhook" and decision.targets == ()
        if action == "answer":
            assert decision.steps is not None
            assert [dict(step) for step in decision.steps] == answer["steps"]
    run(scenario())


# --- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", [True, False])
def test_slow_router_times_out_within_timeout_ms(
    fallback: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with fake_router(delay_s=5.0) as server, httpx.AsyncClient() as client:
            router = make_router(make_http(client, server.url, timeout_ms=200,
                                           observer=recorder), fallback=fallback)
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="sdpbx.pbx.routing"):
                decision = await route(router)
            elapsed = time.monotonic() - started
        assert 0.19 < elapsed < 1.0, elapsed
        assert recorder.outcomes == ["timeout"]
        if fallback:
            assert (decision.action, decision.source) == ("forward", "static")
        else:
            assert (decision.action, decision.status, decision.reason) == (
                "reject", 503, "Router Timeout")
        [record] = [r for r in caplog.records if r.name == "sdpbx.pbx.routing"]
        message = record.getMessage()
        assert "call-42@test" in message and "timeout after 0.2 s" in message
        assert "token" not in message and "key-123" not in message
    run(scenario())


def test_a_trickling_reply_is_cut_at_timeout_ms() -> None:
    # Each chunk arrives before httpx's per-read timeout: only the overall deadline stops it.
    async def trickle() -> AsyncIterator[bytes]:
        yield b'{"action": "forward", "targets": ["1001"], "reason": "'
        for _ in range(40):
            await asyncio.sleep(0.05)
            yield b"x"
        yield b'"}'

    async def scenario() -> None:
        answer = lambda: StreamingResponse(trickle(), media_type="application/json")  # noqa: E731
        async with fake_router(answer=answer) as server, httpx.AsyncClient() as client:
            http = make_http(client, server.url, timeout_ms=300)
            started = time.monotonic()
            result = await http.decide(route_request(invite(), source_addr="1.2.3.4:5",
                                                     direction="inbound"))
            elapsed = time.monotonic() - started
        assert isinstance(result, RouterFailure) and result.kind == "timeout"
        assert 0.29 < elapsed < 1.0, elapsed
    run(scenario())


@pytest.mark.parametrize(
    ("answer", "kind", "detail"),
    [
        (reply({"error": "boom"}, status=500), "http_status", "HTTP 500"),
        (reply({"action": "forward", "targets": ["1001"]}, status=302), "http_status",
         "HTTP 302"),
        (raw(b"<html>not json</html>"), "invalid", "Invalid JSON"),
        (raw(b""), "invalid", "Invalid JSON"),
        (reply({"action": "teleport"}), "invalid", "invalid reply: action:"),
        (reply({"action": "forward", "targets": ["1001"], "headers": {"X": "a\r\nVia: x"}}),
         "invalid", "line break"),
        (reply({"action": "forward"}), "invalid", "target"),
    ],
)
def test_failures_fall_back_or_refuse(answer: Callable[[], Response], kind: str,
                                      detail: str) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        async with fake_router(answer=answer) as server, httpx.AsyncClient() as client:
            http = make_http(client, server.url, observer=recorder)
            result = await http.decide(route_request(invite(), source_addr="1.2.3.4:5",
                                                     direction="inbound"))
            with_fallback = await route(make_router(http, fallback=True))
            without = await route(make_router(http, fallback=False))
        assert isinstance(result, RouterFailure)
        assert result.kind == kind and detail in result.detail, result.detail
        assert result.latency_s > 0
        assert recorder.outcomes == [kind] * 3
        assert (with_fallback.action, with_fallback.source) == ("forward", "static")
        assert (without.action, without.status) == ("reject", 503)
    run(scenario())


def test_forward_to_nothing_routable_is_a_failure() -> None:
    async def scenario() -> None:
        answer = {"action": "forward", "targets": ["tel:+4930", "mailto:x@y"]}
        async with fake_router(answer=reply(answer)) as server, \
                httpx.AsyncClient() as client:
            decision = await route(make_router(make_http(client, server.url), fallback=False))
        assert (decision.action, decision.status, decision.reason) == (
            "reject", 503, "Router Reply Invalid")
    run(scenario())


def test_dead_router_is_a_transport_failure() -> None:
    async def scenario() -> None:
        with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        async with httpx.AsyncClient() as client:
            http = make_http(client, f"http://127.0.0.1:{port}/route")
            result = await http.decide(route_request(invite(), source_addr="1.2.3.4:5",
                                                     direction="inbound"))
            decision = await route(make_router(http, fallback=False))
        assert isinstance(result, RouterFailure) and result.kind == "transport"
        assert "ConnectError" in result.detail
        assert (decision.action, decision.reason) == ("reject", "Router Unreachable")
    run(scenario())


def test_oversized_reply_is_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_router_module, "MAX_REPLY_BYTES", 1000)

    async def scenario() -> None:
        answer = {"action": "forward", "targets": ["1001"], "extensions": {"pad": "x" * 5000}}
        async with fake_router(answer=reply(answer)) as server, \
                httpx.AsyncClient() as client:
            result = await make_http(client, server.url).decide(route_request(
                invite(), source_addr="1.2.3.4:5", direction="inbound"))
        assert isinstance(result, RouterFailure)
        assert (result.kind, result.detail) == (
            "invalid", "invalid reply: larger than 1000 bytes")
    run(scenario())


def test_without_a_webhook_only_the_static_routes_decide() -> None:
    async def scenario() -> None:
        router = make_router(None, fallback=False)
        decision = await route(router)
        assert (decision.action, decision.route_name) == ("forward", "to-carrier")
        assert (await route(router, invite("1002"))).action == "not_handled"
    run(scenario())


def test_from_config_builds_the_webhook_and_the_static_routes() -> None:
    async def scenario() -> None:
        async with fake_router(answer=reply({"action": "not_handled"})) as server, \
                httpx.AsyncClient() as client:
            proxy = parse_config(STATIC + f"""
[proxy.http_router]
url = "{server.url}"
timeout_ms = 1000
fallback_to_static = true
""").proxy
            router = CallRouter.from_config(proxy, draw=random.random, local_domains=["pbx"],
                                            client=client, secret=SECRET, key_id=KEY_ID)
            decision = await route(router)
        assert router.http is not None
        assert (decision.action, decision.route_name) == ("forward", "to-carrier")
        assert [seen.failure for seen in server.seen] == [None]
        with pytest.raises(ValueError, match="HTTP client"):
            CallRouter.from_config(proxy, draw=random.random, local_domains=[])
    run(scenario())


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_count_router_outcomes_and_trunk_limits() -> None:
    async def scenario() -> None:
        metrics = Metrics()
        async with fake_router(answer=reply({"action": "forward", "targets": ["1001"]})
                               ) as server, httpx.AsyncClient() as client:
            http = make_http(client, server.url, observer=metrics)
            for _ in range(2):
                await http.decide(route_request(invite(), source_addr="1.2.3.4:5",
                                                direction="inbound"))
        metrics.trunk_limited("carrierA", "max_cps")
        text = metrics.render()[0].decode()
        assert 'sdpbx_router_requests_total{outcome="forward"} 2.0' in text
        assert 'sdpbx_router_seconds_count{outcome="forward"} 2.0' in text
        assert 'sdpbx_trunk_limited_total{limit="max_cps",trunk="carrierA"} 1.0' in text
    run(scenario())
