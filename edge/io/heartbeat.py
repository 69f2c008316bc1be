"""The edge announces itself in the shared `EdgeRegistry` every few seconds.

The control plane finds an edge (to deliver a call command, to place an outbound call) only
while its heartbeat is fresh; a store outage is logged and retried, never fatal (DESIGN §4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from control.store.errors import StoreError
from control.store.models import EdgeInfo
from control.store.ports import EdgeRegistry

log = logging.getLogger("sdpbx.edge")


@dataclass(slots=True)
class Heartbeat:
    registry: EdgeRegistry
    edge_id: str
    sip_addresses: tuple[str, ...]
    http_address: str
    load: Callable[[], int] = lambda: 0
    interval_s: float = 10.0
    wall_clock: Callable[[], float] = time.time
    started_at: float = field(default=0.0)
    last_ok: float | None = None
    _task: asyncio.Task[None] | None = None

    def info(self) -> EdgeInfo:
        now = self.wall_clock()
        return EdgeInfo(
            edge_id=self.edge_id,
            sip_addresses=self.sip_addresses,
            http_address=self.http_address,
            load=self.load(),
            started_at=self.started_at,
            heartbeat_at=now,
            # Three missed beats and the edge counts as gone.
            expires_at=now + 3 * self.interval_s,
        )

    async def beat(self) -> bool:
        try:
            await self.registry.heartbeat(self.info())
        except StoreError as exc:
            log.warning("edge heartbeat failed: %s", exc, extra={"edge_id": self.edge_id})
            return False
        self.last_ok = self.wall_clock()
        return True

    async def start(self) -> None:
        """Beat now (the edge is visible once start-up completes), then in the background."""
        self.started_at = self.wall_clock()
        await self.beat()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.beat()

    async def stop(self) -> None:
        """Stop beating and leave the registry (a clean shutdown is not a crash)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await self.registry.remove(self.edge_id)
        except StoreError as exc:
            log.warning("could not leave the edge registry: %s", exc)
