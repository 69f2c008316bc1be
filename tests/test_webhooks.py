"""edge.io.webhooks against a real HTTP server (Starlette on uvicorn, 127.0.0.1, port 0) that
checks every signature with `control.contracts.signing.verify`, as a receiver would."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.contracts.signing import SIGNATURE_HEADER, verification_failure
from edge.io.http import HttpServer
from edge.io.webhooks import FireAndForgetQueue, Result, WebhookSender, redact_url

SECRET = "receiver-shared-secret"
KEY_ID = "k2024"
T = TypeVar("T")


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    failure: str | None  # None: the signature verified


@dataclass
class Receiver:
    """What the test server saw, and how it should answer."""

    url: str = ""
    status: int = 200
    hold: asyncio.Event | None = None  # when set, requests wait for it before answering
    deliveries: list[Delivery] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def events(self) -> list[Any]:
        return [json.loads(d.body) for d in self.deliveries]


@contextlib.asynccontextmanager
async def receiver(**settings: Any) -> AsyncIterator[Receiver]:
    state = Receiver(**settings)

    async def hook(request: Request) -> Response:
        body = await request.body()  # the raw bytes: verify before parsing
        failure = verification_failure(
            body, request.headers, secrets={KEY_ID: SECRET}, now=time.time()
        )
        state.deliveries.append(Delivery(body, dict(request.headers), failure))
        state.arrived.set()
        if state.hold is not None:
            await state.hold.wait()
        return JSONResponse({"ok": failure is None}, status_code=state.status)

    server = await HttpServer.start(
        Starlette(routes=[Route("/hook", hook, methods=["POST"])]), "127.0.0.1", 0
    )
    state.url = f"http://127.0.0.1:{server.address[1]}/hook"
    try:
        yield state
    finally:
        if state.hold is not None:
            state.hold.set()  # let held requests finish so the server closes at once
        await server.close()


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await scenario()
    return asyncio.run(main())


def make_sender(client: httpx.AsyncClient, clock: Callable[[], float] = time.time
                ) -> WebhookSender:
    return WebhookSender(client, secret=SECRET, key_id=KEY_ID, clock=clock)


class Recorder:
    """A `WebhookObserver` that keeps what it was told."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, int | None]] = []
        self.dropped: list[tuple[str, str]] = []

    def webhook_delivered(self, event: str, status: int | None, latency_s: float) -> None:
        assert latency_s >= 0
        self.delivered.append((event, status))

    def webhook_dropped(self, event: str, reason: str) -> None:
        self.dropped.append((event, reason))


async def wait_for(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


# --- WebhookSender ------------------------------------------------------------------------------


def test_post_is_signed_and_the_receiver_verifies_it() -> None:
    async def scenario() -> None:
        async with receiver() as server, httpx.AsyncClient() as client:
            body = b'{"event":"registered","timestamp":1}'
            result = await make_sender(client).post_json(
                server.url, body, headers={"X-API-Key": "abc"}, timeout=5
            )
        assert result.ok and result.status == 200 and result.error is None
        assert 0 < result.latency_s < 5
        [delivery] = server.deliveries
        assert delivery.failure is None
        assert delivery.body == body
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.headers["x-api-key"] == "abc"

    run(scenario)


def test_signature_timestamp_comes_from_the_injected_clock() -> None:
    async def scenario() -> None:
        async with receiver() as server, httpx.AsyncClient() as client:
            sender = make_sender(client, clock=lambda: 1_000_000_000.9)
            result = await sender.post_json(server.url, b"{}", timeout=5)
        assert result.ok  # the receiver answers 200 whatever it thinks of the signature
        [delivery] = server.deliveries
        assert delivery.headers[SIGNATURE_HEADER.lower()].startswith(
            f"t=1000000000,kid={KEY_ID},v1="
        )
        # Years in the past: the receiver refuses it as a replay.
        assert delivery.failure is not None and "s from now" in delivery.failure

    run(scenario)


def test_configured_headers_cannot_replace_the_signature() -> None:
    async def scenario() -> None:
        async with receiver() as server, httpx.AsyncClient() as client:
            await make_sender(client).post_json(
                server.url, b"{}", timeout=5,
                headers={SIGNATURE_HEADER.lower(): "t=1,kid=x,v1=00", "content-type": "x/y"},
            )
        [delivery] = server.deliveries
        assert delivery.failure is None
        assert delivery.headers["content-type"] == "x/y"  # replaced, not sent twice

    run(scenario)


def test_non_2xx_is_a_result_not_an_exception() -> None:
    async def scenario() -> None:
        async with receiver(status=503) as server, httpx.AsyncClient() as client:
            result = await make_sender(client).post_json(server.url, b"{}", timeout=5)
        assert result.status == 503 and not result.ok and result.error is None

    run(scenario)


def test_timeout_against_a_server_that_does_not_answer() -> None:
    async def scenario() -> None:
        async with receiver(hold=asyncio.Event()) as server, httpx.AsyncClient() as client:
            started = time.monotonic()
            result = await make_sender(client).post_json(server.url, b"{}", timeout=0.2)
            elapsed = time.monotonic() - started
        assert result.status is None and not result.ok
        assert result.error == "timeout after 0.2 s"
        assert 0.2 <= result.latency_s < 2 and elapsed < 2
        assert len(server.deliveries) == 1  # it did arrive; the answer never came

    run(scenario)


def test_connection_refused_is_reported_not_raised() -> None:
    async def scenario() -> Result:
        # A port that was just free: nothing listens there.
        async with receiver() as server:
            url = server.url
        async with httpx.AsyncClient() as client:
            return await make_sender(client).post_json(url, b"{}", timeout=2)

    result = run(scenario)
    assert result.status is None
    assert result.error is not None and result.error.startswith("ConnectError")


@pytest.mark.parametrize("url", ["not a url", "ftp://127.0.0.1/x", "http://"])
def test_unusable_urls_are_reported_not_raised(url: str) -> None:
    async def scenario() -> Result:
        async with httpx.AsyncClient() as client:
            return await make_sender(client).post_json(url, b"{}", timeout=2)

    result = run(scenario)
    assert result.status is None and result.error


def test_sender_refuses_an_empty_secret_or_bad_key_id() -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(ValueError, match="secret"):
                WebhookSender(client, secret="", key_id="k1", clock=time.time)
            with pytest.raises(ValueError, match="key id"):
                WebhookSender(client, secret="s", key_id="a,b", clock=time.time)

    run(scenario)


def test_redact_url_keeps_no_credentials_or_query() -> None:
    assert redact_url("https://user:pw@api.example.com/hook?token=s3cr3t#x") == (
        "https://api.example.com/hook"
    )
    assert redact_url("http://[::1]:8080/a") == "http://[::1]:8080/a"


# --- FireAndForgetQueue -------------------------------------------------------------------------


def event(n: int, kind: str = "registered") -> dict[str, Any]:
    return {"event": kind, "timestamp": n, "location": {"aor": f"sip:{n}@pbx"}}


def test_queue_delivers_signed_events_in_order() -> None:
    async def scenario() -> None:
        metrics = Recorder()
        async with receiver() as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=100, timeout=5,
                                       headers={"X-API-Key": "abc"}, metrics=metrics)
            queue.start()
            for n in range(5):
                queue.submit(event(n))
            await wait_for(lambda: len(server.deliveries) == 5)
            await queue.stop(drain_timeout=5)
        assert [e["timestamp"] for e in server.events] == [0, 1, 2, 3, 4]
        assert all(d.failure is None for d in server.deliveries)
        assert all(d.headers["x-api-key"] == "abc" for d in server.deliveries)
        # Compact JSON: what a receiver hashes is exactly what was signed.
        assert server.deliveries[0].body == (
            b'{"event":"registered","timestamp":0,"location":{"aor":"sip:0@pbx"}}'
        )
        assert (queue.submitted, queue.delivered, queue.failed, queue.dropped) == (5, 5, 0, 0)
        assert metrics.delivered == [("registered", 200)] * 5 and metrics.dropped == []

    run(scenario)


def test_overflow_drops_the_oldest_and_counts_it() -> None:
    async def scenario() -> None:
        metrics = Recorder()
        async with receiver() as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=3, timeout=5,
                                       metrics=metrics)
            for n in range(5):  # the worker is not running yet: the queue fills up
                queue.submit(event(n, "offline" if n < 2 else "registered"))
            assert len(queue) == 3 and queue.dropped == 2
            assert metrics.dropped == [("offline", "overflow"), ("offline", "overflow")]
            queue.start()
            await wait_for(lambda: len(server.deliveries) == 3)
            await queue.stop()
        assert [e["timestamp"] for e in server.events] == [2, 3, 4]  # the newest survive

    run(scenario)


def test_submit_never_awaits_and_works_without_a_loop() -> None:
    # A plain function: the REGISTER path cannot be made to wait by it.
    assert not inspect.iscoroutinefunction(FireAndForgetQueue.submit)

    async def make() -> FireAndForgetQueue:
        client = httpx.AsyncClient()
        await client.aclose()
        return FireAndForgetQueue(make_sender(client), "http://127.0.0.1:9/", maxsize=2,
                                  timeout=1)

    queue = run(make)
    # No event loop is running here at all, so nothing in submit() can await.
    for n in range(10):
        queue.submit(event(n))
    assert len(queue) == 2 and queue.dropped == 8


def test_submit_returns_while_the_receiver_is_stuck() -> None:
    async def scenario() -> None:
        async with receiver(hold=asyncio.Event()) as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=10, timeout=30)
            queue.start()
            queue.submit(event(0))
            await asyncio.wait_for(server.arrived.wait(), 5)  # the worker is now blocked
            started = time.perf_counter()
            for n in range(1, 1001):
                queue.submit(event(n))
            spent = time.perf_counter() - started
            assert len(queue) == 10 and queue.dropped == 990  # event 0 is in the worker's hands
            # Measured here: ~1-2 µs per submit (a 1000 in about 1.5 ms); the bound is loose.
            assert spent < 0.5
            await queue.stop(drain_timeout=0.1)
        assert queue.delivered + queue.failed <= 1

    run(scenario)


def test_stop_drains_then_drops_what_is_left_and_refuses_new_events() -> None:
    async def scenario() -> None:
        metrics = Recorder()
        async with receiver(hold=asyncio.Event()) as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=10, timeout=30,
                                       metrics=metrics)
            queue.start()
            for n in range(4):
                queue.submit(event(n))
            await asyncio.wait_for(server.arrived.wait(), 5)
            started = time.monotonic()
            await queue.stop(drain_timeout=0.2)  # the receiver never answers
            assert time.monotonic() - started < 2
            assert len(queue) == 0
            queue.submit(event(99))
        assert [r for _, r in metrics.dropped] == ["stopped"] * 4  # 3 left queued + 1 late
        assert queue.dropped == 4

    run(scenario)


def test_stop_delivers_everything_queued_when_the_receiver_keeps_up() -> None:
    async def scenario() -> None:
        async with receiver() as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=100, timeout=5)
            for n in range(20):
                queue.submit(event(n))
            queue.start()
            await queue.stop(drain_timeout=10)
        assert len(server.deliveries) == 20 and queue.delivered == 20

    run(scenario)


def test_failures_are_logged_with_event_and_status_never_the_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async with receiver(status=500) as server, httpx.AsyncClient() as client:
            url = server.url + "?token=url-secret"
            queue = FireAndForgetQueue(make_sender(client), url, maxsize=10, timeout=5,
                                       headers={"X-API-Key": "header-secret"})
            queue.start()
            queue.submit({"event": "unregistered", "timestamp": 1,
                          "location": {"aor": "sip:body-secret@pbx"}})
            await wait_for(lambda: queue.failed == 1)
            await queue.stop()

    with caplog.at_level(logging.WARNING, logger="sdpbx.webhooks"):
        run(scenario)
    [record] = [r for r in caplog.records if r.name == "sdpbx.webhooks"]
    text = record.getMessage()
    assert "unregistered event not delivered" in text and "status 500" in text
    assert "url-secret" not in text and "header-secret" not in text
    assert "body-secret" not in text
    assert record.__dict__["status"] == 500 and record.__dict__["event"] == "unregistered"


def test_failure_logs_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with receiver(status=500) as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=100, timeout=5)
            queue.start()
            for n in range(20):
                queue.submit(event(n))
            await wait_for(lambda: queue.failed == 20)
            await queue.stop()

    with caplog.at_level(logging.WARNING, logger="sdpbx.webhooks"):
        run(scenario)
    lines = [r for r in caplog.records if r.name == "sdpbx.webhooks"]
    assert len(lines) == 3  # the throttle's burst; the other 17 are counted, not written


def test_an_unencodable_event_is_dropped_and_the_worker_carries_on() -> None:
    async def scenario() -> None:
        metrics = Recorder()
        async with receiver() as server, httpx.AsyncClient() as client:
            queue = FireAndForgetQueue(make_sender(client), server.url, maxsize=10, timeout=5,
                                       metrics=metrics)
            queue.start()
            queue.submit({"event": "registered", "timestamp": object()})
            queue.submit(event(7))
            await wait_for(lambda: len(server.deliveries) == 1)
            await queue.stop()
        assert server.events == [event(7)]
        assert metrics.dropped == [("registered", "encode")]

    run(scenario)


def test_queue_size_must_be_positive() -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(ValueError, match="at least 1"):
                FireAndForgetQueue(make_sender(client), "http://x/", maxsize=0, timeout=1)

    run(scenario)
