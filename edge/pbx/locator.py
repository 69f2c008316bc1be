"""The locator webhook's sender side: registrar events in, queued payloads out.

The registrar calls `registered`, `unregistered` and `offline` as bindings change; each builds
the COMPAT.md payload (`control.contracts.locator`) as a plain dict and hands it to the
fire-and-forget queue, then returns: nothing here waits for HTTP, so a REGISTER's reply never
waits for the webhook. Event types not listed in `[proxy.locator_webhook] events` are skipped
before anything is built.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

from control.contracts.locator import LOCATOR_EVENTS, location_payload
from control.store.models import Binding

# An expiry sweep may find thousands of bindings at once; one body per this many locations
# keeps each POST small enough for any receiver.
OFFLINE_BATCH = 500


class EventSink(Protocol):
    """Where payloads go (`edge.io.webhooks.FireAndForgetQueue`): must not block."""

    def submit(self, payload: Mapping[str, Any]) -> None: ...


class LocatorNotifier:
    """Builds and submits locator events for the event types in `events`.

    `home_proxy` is this edge's id, reported for bindings that do not name their edge;
    `clock` is the wall clock (`time.time`): event timestamps and remaining expiry are Unix
    times, like `Binding.expires_at`.
    """

    __slots__ = ("_clock", "_events", "_home_proxy", "_offline_batch", "_sink")

    def __init__(
        self,
        queue: EventSink,
        *,
        events: Collection[str],
        home_proxy: str,
        clock: Callable[[], float],
        offline_batch: int = OFFLINE_BATCH,
    ) -> None:
        unknown = set(events) - LOCATOR_EVENTS
        if unknown:
            raise ValueError(f"unknown locator events {sorted(unknown)} "
                             f"(use {sorted(LOCATOR_EVENTS)})")
        self._sink = queue
        self._events = frozenset(events)
        self._home_proxy = home_proxy
        self._clock = clock
        self._offline_batch = max(1, offline_batch)

    def wants(self, event: str) -> bool:
        """Is `event` sent at all? (Lets a caller skip work for events nobody listens to.)"""
        return event in self._events

    def registered(self, binding: Binding) -> None:
        """A binding was added or refreshed; `expires` is its remaining validity."""
        if "registered" not in self._events:
            return
        now = self._clock()
        self._sink.submit({
            "event": "registered",
            "timestamp": int(now),
            "location": location_payload(
                binding, expires=binding.remaining(now), home_proxy=self._home_proxy
            ),
        })

    def unregistered(self, binding: Binding) -> None:
        """The phone removed a binding (Expires: 0, or `Contact: *`)."""
        if "unregistered" not in self._events:
            return
        self._sink.submit({
            "event": "unregistered",
            "timestamp": int(self._clock()),
            "location": location_payload(binding, expires=0, home_proxy=self._home_proxy),
        })

    def offline(self, bindings: Iterable[Binding]) -> None:
        """Bindings expired without a refresh (the expiry sweep): one event per batch."""
        if "offline" not in self._events:
            return
        timestamp = int(self._clock())
        home = self._home_proxy
        batch: list[dict[str, Any]] = []
        for binding in bindings:
            batch.append(location_payload(binding, expires=0, home_proxy=home))
            if len(batch) >= self._offline_batch:
                self._sink.submit({"event": "offline", "timestamp": timestamp,
                                   "locations": batch})
                batch = []
        if batch:
            self._sink.submit({"event": "offline", "timestamp": timestamp, "locations": batch})
