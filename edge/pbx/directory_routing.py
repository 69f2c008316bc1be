"""Static routes and trunks from the config *and* the directory, reloaded without a restart.

The management API writes trunks and routes into the `DirectoryStore` (entries of kind `trunk`
and `route`, `control.contracts.directory`); every write moves the store's revision. This edge
polls that revision (every `interval_s`, a cheap read) and, when it moved, rebuilds its
`StaticRouter`, `TrunkDirectory` and `TrunkLimiter` from `[proxy]` plus the directory and swaps
them in: calls in progress keep what they hold (the new limiter takes over their counts), new
calls use the new routes. A directory trunk with the name of a config trunk replaces it. An
invalid combination (a route naming an unknown trunk, a bad rewrite) is logged and the previous
routing stays in force. Entry names starting with `_` are markers (`POST /console/reload`).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from control.store.errors import StoreError
from control.store.models import DirectoryEntry, DirectoryKind
from control.store.ports import DirectoryStore
from edge.config import RouteConfig, TrunkConfig
from edge.pbx.calls import CallManager
from edge.pbx.http_router import CallRouter
from edge.pbx.routing import StaticRouter, TrunkDirectory, TrunkLimiter

log = logging.getLogger("sdpbx.routing.reload")


class DirectoryRouting:
    """Keeps the B2BUA's routes and trunks in step with the directory (see the module doc)."""

    def __init__(
        self,
        *,
        routes: Sequence[RouteConfig],
        trunks: Mapping[str, TrunkConfig],
        directory: DirectoryStore,
        router: CallRouter,
        calls: CallManager,
        limiter: TrunkLimiter,
        interval_s: float = 2.0,
    ) -> None:
        self._config_routes = list(routes)
        self._config_trunks = dict(trunks)
        self._directory = directory
        self._router = router
        self._calls = calls
        self.limiter = limiter
        self.interval_s = interval_s
        self.revision: int | None = None
        self.loaded = 0  # reloads applied, for tests and logs
        self._task: asyncio.Task[None] | None = None

    async def _entries(self, kind: DirectoryKind) -> list[DirectoryEntry]:
        entries: list[DirectoryEntry] = []
        cursor: str | None = None
        while True:
            page = await self._directory.list_entries(kind, limit=500, cursor=cursor)
            entries += [e for e in page.items if not e.name.startswith("_")]
            cursor = page.cursor
            if cursor is None:
                return entries

    async def reload(self) -> bool:
        """Rebuild from the config and the directory now; False (and the old routing kept)
        when the directory cannot be read or its entries do not make a valid routing."""
        try:
            revision = await self._directory.revision()
            trunk_entries = await self._entries("trunk")
            route_entries = await self._entries("route")
        except StoreError as exc:
            log.warning("directory not readable, routing unchanged: %s", exc)
            return False
        trunks = dict(self._config_trunks)
        routes = list(self._config_routes)
        try:
            for entry in trunk_entries:
                if entry.name in trunks:
                    log.info("directory trunk %r replaces the config's", entry.name)
                trunks[entry.name] = TrunkConfig.model_validate(_trunk_data(entry.data))
            for entry in route_entries:
                routes.append(RouteConfig.model_validate({**entry.data, "name": entry.name}))
            static = StaticRouter(routes, trunks, random.random)
        except (ValidationError, ValueError) as exc:
            log.error("directory routes or trunks rejected, routing unchanged: %s", exc)
            self.revision = revision  # do not retry the same bad revision every poll
            return False
        limiter = TrunkLimiter(trunks)
        limiter.carry_over(self.limiter)
        directory = TrunkDirectory(trunks)
        self._router.replace_static(static, directory)
        self._calls.replace_trunks(directory, limiter)
        self.limiter = limiter
        self.revision = revision
        self.loaded += 1
        log.info("routing reloaded from the directory", extra={
            "revision": revision, "trunks": len(trunks), "routes": len(routes)})
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                revision = await self._directory.revision()
            except StoreError as exc:
                log.warning("directory revision not readable: %s", exc)
                continue
            if revision != self.revision:
                await self.reload()

    async def start(self) -> None:
        """Load once (so the directory's routes apply from the first call), then poll."""
        await self.reload()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _trunk_data(data: Mapping[str, Any]) -> dict[str, Any]:
    # The API stores `weight` always (default 1); the config's default is "unset" (also 1).
    return {key: value for key, value in data.items() if value is not None}


__all__ = ["DirectoryRouting"]
