"""The transaction user's front door: routes endpoint events to per-method handlers.

Handlers are async (they may ask a user backend or a store), so each request runs as a task;
the core bounds how many run at once and answers 500 if a handler fails, so a bug costs one
request and never the process. `SipTransport` is all a handler may do to the network.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Protocol

from edge.sip.events import Event, Peer, RequestReceived
from edge.sip.message import Request, Response, make_response

log = logging.getLogger("sdpbx.pbx")


class SipTransport(Protocol):
    """The endpoint as the TU sees it (`edge.io.sip_server.SipServer` implements it)."""

    def respond(self, transaction_id: int, response: Response) -> None: ...
    def drop(self, transaction_id: int) -> None: ...
    def send_request(self, request: Request, peer: Peer) -> int: ...
    def now(self) -> float: ...


class RequestHandler(Protocol):
    async def handle(self, event: RequestReceived) -> None:
        """Answer `event` (exactly one final response through the transport)."""
        ...


class PbxCore:
    """Dispatches `RequestReceived` events by method; other events go to `on_other`."""

    def __init__(
        self,
        transport: SipTransport,
        handlers: Mapping[str, RequestHandler],
        *,
        max_concurrent: int = 1000,
    ) -> None:
        self._transport = transport
        self._handlers = dict(handlers)
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_concurrent = max_concurrent

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods handled here: the endpoint lists them in Allow and 501s the rest."""
        return tuple(self._handlers)

    def on_event(self, event: Event) -> None:
        if not isinstance(event, RequestReceived):
            return
        handler = self._handlers.get(event.request.method)
        if handler is None or event.transaction_id is None:
            return  # ACK for a 2xx of ours, or a method nobody here handles (B2BUA later)
        if len(self._tasks) >= self._max_concurrent:
            # Overload: shed load rather than queue without bound (RFC 3261 §21.5.4).
            self._transport.respond(
                event.transaction_id,
                make_response(event.request, 503, headers=[("Retry-After", "5")]),
            )
            return
        task = asyncio.get_running_loop().create_task(self._run(handler, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, handler: RequestHandler, event: RequestReceived) -> None:
        try:
            await handler.handle(event)
        except Exception:
            log.exception(
                "handler for %s failed", event.request.method,
                extra={"call_id": event.request.headers.get("Call-ID")},
            )
            if event.transaction_id is not None:
                self._transport.respond(
                    event.transaction_id, make_response(event.request, 500)
                )

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
