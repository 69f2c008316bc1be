"""The edge's HTTP listener: `/health` and `/metrics` now, the control API mounted there later.

One Starlette app (`build_http_app`) served by uvicorn *inside* the edge's event loop
(`HttpServer`): no thread or process of its own, and no signal handlers of its own either (the
composition root, `edge.app`, owns SIGINT/SIGTERM and closes this server on shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from edge.metrics import Metrics

START_TIMEOUT_S = 10.0


def format_address(address: tuple[str, int]) -> str:
    """`("::1", 80)` -> `"[::1]:80"`, `("127.0.0.1", 80)` -> `"127.0.0.1:80"`."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(slots=True, kw_only=True)
class EdgeStatus:
    """What `/health` reports. The composition root fills `sip` once the listeners are bound."""

    version: str
    started_at: float = field(default_factory=time.monotonic)
    sip: dict[str, str] = field(default_factory=dict)  # transport -> "host:port"
    store: dict[str, str] = field(default_factory=dict)  # backend, edge_id
    build: str = ""  # "compiled (mypyc)" or why the edge runs its Python sources
    clock: Callable[[], float] = time.monotonic

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "version": self.version,
            "uptime_s": round(self.clock() - self.started_at, 3),
            "sip": dict(self.sip),
            "store": dict(self.store),
            "build": self.build,
        }


def build_http_app(*, status: EdgeStatus, metrics: Metrics,
                   routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The edge's HTTP app. `routes` (e.g. a `Mount` of the control API) come after ours."""

    async def health(request: Request) -> Response:
        return JSONResponse(status.health())

    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={"content-type": content_type})

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/metrics", prometheus, methods=["GET"]),
            *routes,
        ],
        exception_handlers={HTTPException: _json_error},
    )


async def _json_error(request: Request, exc: Exception) -> Response:
    # Every error of this listener is JSON, 404s included, so API clients parse one shape.
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    body = {"error": exc.detail, "status": exc.status_code, "path": request.url.path}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn's server minus its process-level habits (signal handlers), plus a ready event."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # edge.app handles SIGINT/SIGTERM for the whole process

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


async def _listening_socket(host: str, port: int) -> socket.socket:
    # We bind the socket ourselves: a bind error then reaches the caller as an OSError, where
    # uvicorn would log it and call sys.exit().
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """An HTTP app served on `host:port` in the running loop; `address` is the bound address."""

    def __init__(self, server: _EmbeddedUvicorn, task: asyncio.Task[None],
                 address: tuple[str, int]) -> None:
        self._server = server
        self._task = task
        self.address = address

    @classmethod
    async def start(cls, app: ASGIApp, host: str, port: int) -> HttpServer:
        """Bind (port 0 picks a free port) and serve; returns once connections are accepted."""
        sock = await _listening_socket(host, port)
        address: tuple[str, int] = sock.getsockname()[:2]
        config = uvicorn.Config(
            app,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        server = _EmbeddedUvicorn(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http {host}:{port}")
        ready = asyncio.create_task(server.ready.wait())
        try:
            done, _ = await asyncio.wait({task, ready}, timeout=START_TIMEOUT_S,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if not server.ready.is_set():
            server.should_exit = True
            if task in done:
                task.result()  # re-raise what stopped it
            else:
                await task
            sock.close()
            raise RuntimeError(f"HTTP server on {format_address(address)} did not start")
        return cls(server, task, address)

    async def close(self) -> None:
        """Stop accepting, let in-flight requests finish (at most 5 s), release the port."""
        self._server.should_exit = True
        await self._task
