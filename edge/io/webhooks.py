"""Outgoing webhooks: one signed POST (`WebhookSender`), and a bounded fire-and-forget queue.

`WebhookSender.post_json` signs the body (`control.contracts.signing`, docs/webhooks.md),
bounds the whole exchange by one deadline, and reports the outcome as a `Result`: it never
raises for a network problem, so callers decide what a failure means.

`FireAndForgetQueue` is for events nobody waits for (the locator webhook): `submit` is a plain
function that returns at once (the REGISTER reply never waits for HTTP); one worker task
encodes, signs and posts the events in order. When the queue is full the **oldest** event is
dropped and counted (the newest state matters most); a failed delivery is logged and not
retried (docs/webhooks.md, "Delivery"). Log lines name the event type, status and URL (without
its query string), never the body or the headers, which may hold API keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from control.contracts.signing import sign
from edge.pbx.security import LogThrottle

log = logging.getLogger("sdpbx.webhooks")

_JSON = "application/json"


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    """The outcome of one delivery: `status` None means no HTTP response (see `error`)."""

    status: int | None
    latency_s: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def redact_url(url: str) -> str:
    """`url` without user info, query or fragment: safe to log (tokens often live there)."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid url>"
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class WebhookSender:
    """Signs and POSTs JSON bodies over the edge's one pooled `httpx.AsyncClient`.

    `clock` is the wall clock (`time.time`) for the signature's timestamp.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        secret: str | bytes,
        key_id: str,
        clock: Callable[[], float],
    ) -> None:
        if not secret:
            raise ValueError("webhook signing secret is empty")
        self._client = client
        self._secret = secret
        self._key_id = key_id
        self._clock = clock
        sign(b"", secret=secret, key_id=key_id, now=0)  # reject a bad key id now, not later

    async def post_json(
        self,
        url: str,
        payload_bytes: bytes,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float,  # noqa: ASYNC109 (the request's own deadline, also given to httpx)
    ) -> Result:
        """POST `payload_bytes` (JSON) to `url`, signed, within `timeout` seconds in total
        (connect, send, the status and the reply body). Never raises for network errors."""
        # httpx.Headers: names merge case-insensitively (a configured "content-type" replaces
        # ours instead of being sent twice).
        request_headers = httpx.Headers({"Content-Type": _JSON})
        if headers:
            request_headers.update(headers)
        # Signed last, so a configured header cannot replace the signature.
        request_headers.update(
            sign(payload_bytes, secret=self._secret, key_id=self._key_id, now=self._clock())
        )
        started = time.monotonic()
        try:
            # httpx's timeout applies to each phase separately; the outer deadline bounds the
            # sum, so a receiver that trickles its reply cannot hold the worker.
            async with asyncio.timeout(timeout):
                async with self._client.stream(
                    "POST", url, content=payload_bytes, headers=request_headers,
                    timeout=timeout,
                ) as response:
                    # Read and discard the reply, so the pooled connection can be reused.
                    async for _ in response.aiter_raw():
                        pass
                    status = response.status_code
        except (TimeoutError, httpx.TimeoutException):
            return Result(status=None, latency_s=time.monotonic() - started,
                          error=f"timeout after {timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            return Result(status=None, latency_s=time.monotonic() - started,
                          error=_describe(exc))
        return Result(status=status, latency_s=time.monotonic() - started)


def _describe(exc: Exception) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


class WebhookObserver(Protocol):
    """Metrics hooks for deliveries (the edge's `Metrics` implements them)."""

    def webhook_delivered(self, event: str, status: int | None, latency_s: float) -> None:
        """One delivery finished; `status` None when no HTTP response came back."""
        ...

    def webhook_dropped(self, event: str, reason: str) -> None:
        """An event was not delivered: `reason` is "overflow", "stopped" or "encode"."""
        ...


class FireAndForgetQueue:
    """A bounded queue of JSON events for one URL, drained by one background worker.

    `submit(payload)` never blocks and never awaits. Payloads are plain JSON-able dicts; the
    worker encodes them (so the caller's path pays nothing for JSON) and takes the event type
    for logs and metrics from `payload["event"]`.
    """

    def __init__(
        self,
        sender: WebhookSender,
        url: str,
        *,
        maxsize: int,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        metrics: WebhookObserver | None = None,
        name: str = "webhook",
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"webhook queue size must be at least 1 (got {maxsize})")
        self._sender = sender
        self._url = url
        self._safe_url = redact_url(url)
        self._timeout = timeout
        self._headers = dict(headers or {})
        self._metrics = metrics
        self._name = name
        self._queue: asyncio.Queue[Mapping[str, Any]] = asyncio.Queue(maxsize)
        self._worker: asyncio.Task[None] | None = None
        self._stopping = False
        self._throttle = LogThrottle(10.0, burst=3)
        # Counters since start (also exported through `metrics` when given).
        self.submitted = 0
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._queue.qsize()

    def submit(self, payload: Mapping[str, Any]) -> None:
        """Queue `payload` for delivery; when the queue is full, drop the oldest event."""
        if self._stopping:
            self._drop(payload, "stopped")
            return
        queue = self._queue
        if queue.full():
            oldest = queue.get_nowait()
            queue.task_done()
            self._drop(oldest, "overflow")
        queue.put_nowait(payload)
        self.submitted += 1

    def start(self) -> None:
        """Start the worker (in the running loop). Events submitted before are kept."""
        if self._worker is None:
            self._stopping = False
            self._worker = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self._name} queue"
            )

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Stop taking events, deliver what is queued for up to `drain_timeout` seconds, then
        cancel the worker; what is still queued then is dropped (counted as "stopped")."""
        self._stopping = True
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if not worker.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout)
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        while not self._queue.empty():
            self._drop(self._queue.get_nowait(), "stopped")
            self._queue.task_done()

    async def _run(self) -> None:
        queue = self._queue
        while True:
            payload = await queue.get()
            try:
                await self._deliver(payload)
            except Exception:
                # A bug costs one event, never the worker.
                log.exception("%s: delivery of a %s event failed", self._name,
                              _event_type(payload))
            finally:
                queue.task_done()

    async def _deliver(self, payload: Mapping[str, Any]) -> None:
        event = _event_type(payload)
        try:
            # ASCII JSON: lone surrogates from odd SIP text stay encodable.
            body = json.dumps(payload, separators=(",", ":")).encode("ascii")
        except (TypeError, ValueError) as exc:
            self._drop(payload, "encode")
            log.error("%s: cannot encode a %s event: %s", self._name, event, exc)
            return
        result = await self._sender.post_json(
            self._url, body, headers=self._headers, timeout=self._timeout
        )
        if self._metrics is not None:
            self._metrics.webhook_delivered(event, result.status, result.latency_s)
        if result.ok:
            self.delivered += 1
            return
        self.failed += 1
        suppressed = self._throttle.allow("failed", asyncio.get_running_loop().time())
        if suppressed is not None:
            log.warning(
                "%s: %s event not delivered to %s: %s%s",
                self._name, event, self._safe_url,
                f"status {result.status}" if result.status is not None else result.error,
                _suppressed(suppressed),
                extra={"event": event, "status": result.status, "url": self._safe_url},
            )

    def _drop(self, payload: Mapping[str, Any], reason: str) -> None:
        self.dropped += 1
        event = _event_type(payload)
        if self._metrics is not None:
            self._metrics.webhook_dropped(event, reason)
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # submit() outside a loop (tests, shutdown)
            now = time.monotonic()
        suppressed = self._throttle.allow(f"dropped:{reason}", now)
        if suppressed is not None:
            log.warning(
                "%s: %s event dropped (%s)%s", self._name, event, reason,
                _suppressed(suppressed), extra={"event": event, "reason": reason},
            )


def _suppressed(count: int) -> str:
    return f" ({count} similar not logged since the last line)" if count else ""


def _event_type(payload: Mapping[str, Any]) -> str:
    event = payload.get("event")
    return event if isinstance(event, str) else "unknown"
