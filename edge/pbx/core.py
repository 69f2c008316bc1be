"""The transaction user's front door: routes endpoint events to per-method handlers.

Handlers are async (they may ask a user backend or a store), so each request runs as a task;
the core bounds how many run at once and answers 500 if a handler fails, so a bug costs one
request and never the process. `SipTransport` is all a handler may do to the network.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from typing import Any, Protocol

from edge.sip.events import Event, Peer, RequestReceived
from edge.sip.message import Request, Response, make_response

log = logging.getLogger("sdpbx.pbx")


@types.coroutine
def _resume(
    coroutine: Coroutine[Any, Any, None], awaited: Any
) -> Generator[Any, Any, None]:
    """Carry on a coroutine that already ran up to its first suspension (it yielded
    `awaited`, a future or None), forwarding what the task sends or throws into it: the same
    delegation `await` does, started one step late."""
    while True:
        try:
            value = yield awaited
        except BaseException as exc:  # cancellation, or the awaited future's error
            try:
                awaited = coroutine.throw(exc)
            except StopIteration:
                return
        else:
            try:
                awaited = coroutine.send(value)
            except StopIteration:
                return


class SipTransport(Protocol):
    """The endpoint as the TU sees it (`edge.io.sip_server.SipServer` implements it)."""

    def respond(self, transaction_id: int, response: Response) -> None: ...
    def drop(self, transaction_id: int) -> None: ...
    def send_request(self, request: Request, peer: Peer) -> int: ...
    def send_stateless(self, message: Request | Response, peer: Peer) -> None: ...
    def now(self) -> float: ...


class RequestHandler(Protocol):
    def handle(self, event: RequestReceived) -> Coroutine[Any, Any, None]:
        """Answer `event` (exactly one final response through the transport): an `async def`."""
        ...


class PbxCore:
    """Dispatches `RequestReceived` events by method; other events go to `on_other`."""

    def __init__(
        self,
        transport: SipTransport,
        handlers: Mapping[str, RequestHandler],
        *,
        max_concurrent: int = 1000,
        on_other: Callable[[Event], None] | None = None,
    ) -> None:
        """`on_other` receives every event that is not a new request for a handler:
        responses, transaction failures, CANCELs and ACKs (the B2BUA's call state)."""
        self._transport = transport
        self._handlers = dict(handlers)
        self._on_other = on_other
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_concurrent = max_concurrent
        self._loop: asyncio.AbstractEventLoop | None = None  # the running loop, once known

    @property
    def methods(self) -> tuple[str, ...]:
        """The methods handled here: the endpoint lists them in Allow and 501s the rest."""
        return tuple(self._handlers)

    def on_event(self, event: Event) -> None:
        handler = (
            self._handlers.get(event.request.method)
            if isinstance(event, RequestReceived) and event.transaction_id is not None
            and event.request.method != "ACK"
            else None
        )
        if handler is None:
            # Responses, CANCELs, timeouts and ACKs belong to a call in progress.
            if self._on_other is not None:
                try:
                    self._on_other(event)
                except Exception:
                    log.exception("internal error handling %s", type(event).__name__)
            return
        assert isinstance(event, RequestReceived) and event.transaction_id is not None
        if len(self._tasks) >= self._max_concurrent:
            # Overload: shed load rather than queue without bound (RFC 3261 §21.5.4).
            self._transport.respond(
                event.transaction_id,
                make_response(event.request, 503, headers=[("Retry-After", "5")]),
            )
            return
        # Eager start: run the handler now, up to its first real wait. Many requests need no
        # I/O at all (a challenge, a cached answer) and finish here without a task, saving a
        # task and a loop turn each; the rest continue in a task from where they stopped.
        coroutine = handler.handle(event)
        try:
            awaited = coroutine.send(None)
        except StopIteration:
            return
        except Exception:
            self._failed(event)
            return
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self._finish(_resume(coroutine, awaited), event))
        self._tasks.add(task)
        # A task cancelled before its first step never resumes the handler: close it then,
        # so its `finally` blocks run (a no-op when it finished normally).
        task.add_done_callback(functools.partial(self._done, coroutine))

    def _done(self, coroutine: Coroutine[Any, Any, None], task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        coroutine.close()

    async def _finish(self, rest: Awaitable[None], event: RequestReceived) -> None:
        try:
            await rest
        except Exception:
            self._failed(event)

    def _failed(self, event: RequestReceived) -> None:
        log.exception(
            "handler for %s failed", event.request.method,
            extra={"call_id": event.request.headers.get("Call-ID")},
        )
        if event.transaction_id is not None:
            self._transport.respond(event.transaction_id, make_response(event.request, 500))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
