"""The domain errors every store raises: adapters translate their backend's errors into these."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of the state layer's errors."""


class NotFound(StoreError):
    """No item with that key."""


class Conflict(StoreError):
    """A conditional write lost: the item exists already, or its version moved on.

    The caller re-reads and decides again (optimistic locking).
    """


class StoreUnavailable(StoreError):
    """The backend did not answer after the retries (network, throttling, 5xx, disk).

    The edge keeps its in-memory state and re-syncs later; it never fails a call for this.
    """
