"""The HTTP side of call applications against real local servers: signed answer-URL fetches,
one retry after a refused connection, one deadline for the whole exchange, latency reported,
and a call's events delivered one after another in order even when the application is slow."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from edge.io.applications import ApplicationClient, ApplicationUnavailable, EventChannel
from tests.signed_http import signed_http_server

pytestmark = pytest.mark.anyio
SECRET = "s3cret-for-apps"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Seen:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, bytes, bool]] = []  # method, path, body, signed


@contextmanager
def app_server(delays: dict[str, float] | None = None,
               statuses: dict[str, int] | None = None) -> Iterator[tuple[str, Seen]]:
    """Answers every request with a one-step list, after `delays[path]`, with `statuses[path]`
    (default 200); records each request and whether it was signed."""
    seen = Seen()

    def handle(method: str, path_and_query: str, body: bytes,
               signed: bool) -> tuple[int, bytes]:
        path = path_and_query.split("?")[0]
        seen.requests.append((method, path_and_query, body, signed))
        time.sleep((delays or {}).get(path, 0.0))
        return (statuses or {}).get(path, 200), json.dumps([{"action": "hangup"}]).encode()

    with signed_http_server(handle, {"k1": SECRET}) as (base, _):
        yield base, seen


class Latency:
    def __init__(self) -> None:
        self.seen: list[tuple[str, int | None]] = []

    def webhook_delivered(self, event: str, status: int | None, latency_s: float) -> None:
        self.seen.append((event, status))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_fetch_is_signed_and_reports_latency() -> None:
    latency = Latency()
    with app_server() as (base, seen):
        async with httpx.AsyncClient() as http:
            client = ApplicationClient(client=http, secret=SECRET, key_id="k1",
                                       observer=latency)
            body = await client.fetch(f"{base}/answer", "GET", {"to": "1001", "uuid": "c1"})
            posted = await client.fetch(f"{base}/answer", "POST", {"to": "1001"})
    assert json.loads(body) == [{"action": "hangup"}] and json.loads(posted)
    [(method, path, _, signed), (post, _, sent, post_signed)] = seen.requests
    assert method == "GET" and "to=1001" in path and "uuid=c1" in path and signed
    assert post == "POST" and json.loads(sent) == {"to": "1001"} and post_signed
    assert latency.seen == [("answer_url", 200), ("answer_url", 200)]


async def test_failures_are_reported_not_raised_beyond_the_contract() -> None:
    with app_server(delays={"/slow": 2.0}, statuses={"/broken": 500}) as (base, _):
        async with httpx.AsyncClient() as http:
            client = ApplicationClient(client=http, secret=SECRET, key_id="k1", timeout_s=0.5)
            started = time.monotonic()
            with pytest.raises(ApplicationUnavailable, match="timeout"):
                await client.fetch(f"{base}/slow", "GET", {})
            assert time.monotonic() - started < 1.5
            with pytest.raises(ApplicationUnavailable, match="500"):
                await client.fetch(f"{base}/broken", "GET", {})
            with pytest.raises(ApplicationUnavailable, match="connection failed"):
                await client.fetch(f"http://127.0.0.1:{closed_port()}/x", "GET", {})
            assert await client.post_event(f"{base}/broken", b"{}") is None


async def test_refused_connection_is_retried_once() -> None:
    attempts = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=[{"action": "hangup"}])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = ApplicationClient(client=http, secret=SECRET, key_id="k1")
        assert json.loads(await client.fetch("http://app.test/answer", "GET", {}))
    assert attempts == 2


async def test_events_of_a_call_arrive_in_order() -> None:
    with app_server(delays={"/events": 0.05}) as (base, seen):
        async with httpx.AsyncClient() as http:
            client = ApplicationClient(client=http, secret=SECRET, key_id="k1")
            channel = EventChannel(client)
            replies = [channel.send(f"{base}/events", json.dumps({"n": n}).encode())
                       for n in range(8)]
            results = await asyncio.gather(*replies)
            await channel.drain()
    assert [json.loads(body)["n"] for _, _, body, _ in seen.requests] == list(range(8))
    assert all(signed for *_, signed in seen.requests)
    assert all(result is not None for result in results)
