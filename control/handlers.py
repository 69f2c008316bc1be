"""AWS Lambda entry points of the control plane: Mangum around the management API.

`handler` is what `template.yaml` names (`control.handlers.handler`). The app is built at cold
start; the stores (DynamoDB and S3 clients) are opened once per container, on the first request
that needs them (under an asyncio lock, so concurrent first requests open them once), never per
request. Imports nothing from `edge` and no numpy, so the package stays small and starts fast.

Environment (the SAM template sets the first ones):
- `SDPBX_STORE_BACKEND` (or `SDPBX_STORE`): `dynamodb` (default) or `sqlite` for local runs;
- `SDPBX_TABLE_PREFIX` (default `sdpbx`), `SDPBX_BLOB_BUCKET`, `SDPBX_BLOB_PREFIX` (default "");
- `SDPBX_SQLITE_PATH`, `SDPBX_BLOB_ROOT` (sqlite: the file and the local blob folder);
- `SDPBX_REALM`: the realm extensions are created in when a request names none;
- `SDPBX_EDGE_SECRET`, `SDPBX_EDGE_KEY_ID` (default `k1`): the secret the edges share (their
  `[webhooks]` secret), to sign active-call commands; without it commands answer 409.
AWS region and endpoints come from the standard AWS variables (`control.store.aws`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from mangum import Mangum

from control.api.active_calls import EdgeCommandClient
from control.api.app import DEFAULT_REALM, create_app
from control.store.factory import open_stores
from control.store.ports import BlobSettings, Stores, StoreSettings


def settings_from_env(env: Mapping[str, str]) -> StoreSettings:
    """The stores a Lambda (or a local run of this module) opens, from its environment."""
    backend = env.get("SDPBX_STORE_BACKEND") or env.get("SDPBX_STORE") or "dynamodb"
    if backend == "sqlite":
        return StoreSettings(
            backend="sqlite",
            sqlite_path=env.get("SDPBX_SQLITE_PATH", "./data/sdpbx.sqlite3"),
            blobs=BlobSettings(kind="local", root=env.get("SDPBX_BLOB_ROOT", "./data")),
        )
    if backend != "dynamodb":
        raise ValueError(f"SDPBX_STORE_BACKEND: unknown backend {backend!r}")
    bucket = env.get("SDPBX_BLOB_BUCKET")
    blobs = (BlobSettings(kind="s3", bucket=bucket, root=env.get("SDPBX_BLOB_PREFIX", ""))
             if bucket else BlobSettings(kind="local", root=env.get("SDPBX_BLOB_ROOT", "/tmp")))
    return StoreSettings(backend="dynamodb", table_prefix=env.get("SDPBX_TABLE_PREFIX", "sdpbx"),
                         blobs=blobs)


class LazyStores:
    """Stores opened on first use and then kept for the container's life."""

    __slots__ = ("_env", "_lock", "_stores")

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        self._lock = asyncio.Lock()
        self._stores: Stores | None = None

    async def __call__(self) -> Stores:
        if self._stores is None:
            async with self._lock:
                if self._stores is None:
                    self._stores = await open_stores(settings_from_env(self._env))
        return self._stores

    async def close(self) -> None:
        """For tests and local runs; a Lambda container is simply frozen and discarded."""
        stores, self._stores = self._stores, None
        if stores is not None:
            await stores.close()


stores = LazyStores(os.environ)
# Active-call commands reach the edges signed with the secret they share with the stack.
_edge_secret = os.environ.get("SDPBX_EDGE_SECRET")
commands = (
    EdgeCommandClient(None, secret=_edge_secret,
                      key_id=os.environ.get("SDPBX_EDGE_KEY_ID") or "k1")
    if _edge_secret else None
)
app = create_app(stores, realm=os.environ.get("SDPBX_REALM") or DEFAULT_REALM,
                 commands=commands)

# lifespan "off": nothing to start per container beyond the lazy stores; API Gateway HTTP API
# (payload v2) and Lambda Function URL events (the same shape).
handler = Mangum(app, lifespan="off")
