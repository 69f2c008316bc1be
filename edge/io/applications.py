"""HTTP to call applications: fetching a step list from an answer URL, and posting a call's
events to its event URL one after another, in order.

Every request is signed like every webhook (`control.contracts.signing`; a GET signs the empty
body), bounded by one deadline (default 5 s), and retried once when the connection could not
be made (nothing reached the application, so a retry cannot duplicate anything). Latency and
outcome go to the metrics as webhook events `answer_url` and `event_url`.

`EventChannel` keeps one call's events in order: `send` returns at once with a future for the
reply (a `notify` or `input` step waits for it; status events do not), and one task per call
delivers them sequentially, so `answered` never overtakes `ringing` even when the application
is slow. A failed event is logged and not retried beyond that once: the next one goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from control.contracts.signing import sign
from edge.io.webhooks import redact_url

log = logging.getLogger("sdpbx.applications")

DEFAULT_TIMEOUT_S = 5.0
MAX_REPLY_BYTES = 1 << 20  # a step list is a few kilobytes; more is a mistake


class Observer(Protocol):
    def webhook_delivered(self, event: str, status: int | None, latency_s: float) -> None: ...


class ApplicationUnavailable(Exception):
    """The application gave no usable reply: `reason` says why (logged, reported)."""


@dataclass(slots=True, kw_only=True)
class ApplicationClient:
    """The signed HTTP client of call applications (one per edge, over its pooled client)."""

    client: httpx.AsyncClient
    secret: str
    key_id: str
    timeout_s: float = DEFAULT_TIMEOUT_S
    clock: Callable[[], float] = time.time
    observer: Observer | None = None

    async def fetch(self, url: str, method: str, params: Mapping[str, str]) -> bytes:
        """The answer URL's reply body (GET with `params` in the query, or POST them as
        JSON); `ApplicationUnavailable` for a timeout, a transport error or a non-2xx."""
        if method == "POST":
            body = json.dumps(dict(params), separators=(",", ":")).encode()
            status, reply = await self._exchange("answer_url", "POST", url, body)
        else:
            status, reply = await self._exchange("answer_url", "GET", url, b"", params=params)
        if status is None or not 200 <= status < 300:
            raise ApplicationUnavailable(
                f"answer URL {redact_url(url)} answered {status}" if status is not None
                else f"answer URL {redact_url(url)}: {reply.decode(errors='replace')}"
            )
        return reply

    async def post_event(self, url: str, body: bytes) -> bytes | None:
        """POST one event; the reply body when 2xx, else None (logged)."""
        status, reply = await self._exchange("event_url", "POST", url, body)
        if status is None or not 200 <= status < 300:
            log.info("event not accepted by %s: %s", redact_url(url),
                     status if status is not None else reply.decode(errors="replace"))
            return None
        return reply

    async def _exchange(
        self, event: str, method: str, url: str, body: bytes,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int | None, bytes]:
        """(status, body) or (None, b"why") — never raises for the network."""
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   **sign(body, secret=self.secret, key_id=self.key_id, now=self.clock())}
        started = time.monotonic()
        status: int | None = None
        reply = b""
        try:
            # One deadline for the whole exchange, the retry after a failed connection
            # included (nothing reached the application then: the retry cannot duplicate).
            async with asyncio.timeout(self.timeout_s):
                for _ in range(2):
                    try:
                        response = await self.client.request(
                            method, url, content=body or None, params=params, headers=headers,
                            timeout=self.timeout_s,
                        )
                    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                        reply = f"connection failed ({type(exc).__name__})".encode()
                        continue
                    status, reply = response.status_code, response.content[:MAX_REPLY_BYTES]
                    break
        except (TimeoutError, httpx.TimeoutException):
            reply = f"timeout after {self.timeout_s:g} s".encode()
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            reply = f"{type(exc).__name__}: {str(exc)[:200]}".encode()
        if self.observer is not None:
            self.observer.webhook_delivered(event, status, time.monotonic() - started)
        return status, reply


@dataclass(slots=True, eq=False)
class _Pending:
    url: str
    body: bytes
    reply: asyncio.Future[bytes | None]


@dataclass(slots=True, eq=False)
class EventChannel:
    """One call's events, delivered in the order they were sent."""

    client: ApplicationClient
    _queue: asyncio.Queue[_Pending] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None

    def send(self, url: str, body: bytes) -> asyncio.Future[bytes | None]:
        """Queue an event; the future gets the application's reply (None if it failed)."""
        reply: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(url, body, reply))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return reply

    async def _run(self) -> None:
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            try:
                result = await self.client.post_event(pending.url, pending.body)
            except Exception:
                log.exception("event delivery failed")
                result = None
            if not pending.reply.done():
                pending.reply.set_result(result)

    async def drain(self, timeout_s: float = 30.0) -> None:
        """Wait until every queued event was delivered (or `timeout_s` passed)."""
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), timeout_s)


__all__ = ["ApplicationClient", "ApplicationUnavailable", "EventChannel"]
