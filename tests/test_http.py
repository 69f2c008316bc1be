"""edge.io.http: /health, /metrics and JSON errors, in-process (httpx's ASGI transport) and on a
real uvicorn socket. (Starlette's TestClient is not used: with httpx it warns, and warnings fail.)
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route

from edge.io.http import EdgeStatus, HttpServer, build_http_app, format_address
from edge.metrics import Metrics


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_app(*, clock: FakeClock | None = None, metrics: Metrics | None = None) -> Starlette:
    clock = clock or FakeClock(100.0)
    status = EdgeStatus(version="1.2.3", started_at=100.0, clock=clock,
                        sip={"udp": "127.0.0.1:5060", "tcp": "127.0.0.1:5061"})
    return build_http_app(status=status, metrics=metrics or Metrics("1.2.3"))


def call(app: Starlette, method: str, path: str) -> httpx.Response:
    """One request to `app` in-process, no socket."""
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            return await client.request(method, path)

    return asyncio.run(send())


def test_health() -> None:
    clock = FakeClock(100.0)
    app = make_app(clock=clock)
    clock.now = 112.3456
    response = call(app, "GET", "/health")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "status": "ok",
        "version": "1.2.3",
        "uptime_s": 12.346,
        "sip": {"udp": "127.0.0.1:5060", "tcp": "127.0.0.1:5061"},
        "store": {},
        "build": "",
    }


def test_metrics_exposition() -> None:
    metrics = Metrics("1.2.3")
    metrics.message_received("UDP", "request")
    metrics.rejected(403)
    response = call(make_app(metrics=metrics), "GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    lines = response.text.splitlines()
    assert 'sdpbx_build_info{version="1.2.3"} 1.0' in lines
    assert 'sdpbx_sip_messages_received_total{kind="request",transport="udp"} 1.0' in lines
    assert 'sdpbx_sip_rejected_total{status="403"} 1.0' in lines


def test_unknown_path_is_json_404() -> None:
    response = call(make_app(), "GET", "/nope")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not Found", "status": 404, "path": "/nope"}


def test_wrong_method_is_json_405() -> None:
    response = call(make_app(), "POST", "/health")
    assert response.status_code == 405
    assert response.json()["error"] == "Method Not Allowed"
    assert "GET" in response.headers["allow"]


def test_extra_routes_are_mounted_beside_ours() -> None:
    async def hello(request: Request) -> Response:
        return PlainTextResponse("hello from control")

    control = Starlette(routes=[Route("/hello", hello)])
    status = EdgeStatus(version="1")
    app = build_http_app(status=status, metrics=Metrics(), routes=[Mount("/console", control)])
    assert call(app, "GET", "/console/hello").text == "hello from control"
    assert call(app, "GET", "/health").json()["status"] == "ok"


@pytest.mark.parametrize(("address", "text"), [
    (("127.0.0.1", 8080), "127.0.0.1:8080"),
    (("::1", 5060), "[::1]:5060"),
])
def test_format_address(address: tuple[str, int], text: str) -> None:
    assert format_address(address) == text


# --- the real server ----------------------------------------------------------------------------


def test_real_server_on_port_zero() -> None:
    async def scenario() -> None:
        server = await HttpServer.start(make_app(), "127.0.0.1", 0)
        host, port = server.address
        assert host == "127.0.0.1" and port != 0
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                health = await client.get("/health")
                metrics = await client.get("/metrics")
                missing = await client.get("/missing")
            assert health.status_code == 200 and health.json()["version"] == "1.2.3"
            assert "server" not in health.headers  # no "uvicorn" banner
            assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
            assert "sdpbx_build_info" in metrics.text
            assert missing.status_code == 404 and missing.json()["path"] == "/missing"
        finally:
            await server.close()
        # Closed means the port is free again and nothing answers on it.
        with socket.create_server(("127.0.0.1", port)):
            pass

    asyncio.run(scenario())


def test_port_in_use_raises_oserror() -> None:
    async def scenario() -> None:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            with pytest.raises(OSError):
                await HttpServer.start(make_app(), "127.0.0.1", port)

    asyncio.run(scenario())


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")

    async def scenario() -> None:
        try:
            server = await HttpServer.start(make_app(), "::1", 0)
        except OSError as error:  # IPv6 compiled in but not configured (some containers)
            pytest.skip(f"cannot bind ::1: {error}")
        try:
            async with httpx.AsyncClient() as client:
                response = await client.get(f"http://{format_address(server.address)}/health")
            assert response.status_code == 200
        finally:
            await server.close()

    asyncio.run(scenario())
