"""Helpers of the management API tests: real SQLite stores in a temporary folder, API keys of
each scope, and an httpx client speaking ASGI to `create_app` in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from control.api import create_app
from control.store.factory import open_stores
from control.store.passwords import new_api_key
from control.store.ports import BlobSettings, Stores, StoreSettings

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z: the app's clock in these tests
SCOPES = ("read", "write", "calls", "admin")


def sqlite_settings(root: Path) -> StoreSettings:
    return StoreSettings(
        backend="sqlite", sqlite_path=str(root / "sdpbx.sqlite3"),
        blobs=BlobSettings(kind="local", root=str(root / "blobs")),
    )


@dataclass(slots=True)
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass(slots=True, kw_only=True)
class Api:
    client: httpx.AsyncClient
    stores: Stores
    tokens: dict[str, str]  # scope -> bearer token
    monotonic: FakeClock
    seen: list[httpx.Response] = field(default_factory=list)

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[scope]}"}

    async def call(self, method: str, url: str, scope: str | None = "admin",
                   **kwargs: Any) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}))
        if scope is not None:
            headers.update(self.auth(scope))
        response = await self.client.request(method, url, headers=headers, **kwargs)
        self.seen.append(response)
        return response


async def add_keys(stores: Stores) -> dict[str, str]:
    tokens = {}
    for scope in SCOPES:
        token, record = new_api_key([scope], f"test {scope}", NOW)
        await stores.directory.put_api_key(record)
        tokens[scope] = token
    return tokens


@asynccontextmanager
async def running_api(
    root: Path, wrap: Callable[[Stores], Stores] | None = None, **options: Any
) -> AsyncIterator[Api]:
    stores = await open_stores(sqlite_settings(root))
    try:
        tokens = await add_keys(stores)
        monotonic = FakeClock(100.0)
        app = create_app(wrap(stores) if wrap else stores, realm="pbx.test",
                         clock=lambda: NOW, monotonic=monotonic, version="9.9.9", **options)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            yield Api(client=client, stores=stores, tokens=tokens, monotonic=monotonic)
    finally:
        await stores.close()
