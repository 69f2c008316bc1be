"""AWS Lambda entry points of the control plane: Mangum around the management API, and the CDR
consumer fed by the blob bucket's S3 notifications.

`handler` (`control.handlers.handler` in `template.yaml`) serves the API; `cdr_handler`
(`control.handlers.cdr_handler`) takes S3 `ObjectCreated` events for `cdr/*.json`. The app is
built at cold start; the stores (DynamoDB and S3 clients) are opened once per container, on the
first request that needs them (under an asyncio lock, so concurrent first requests open them
once), never per request. Imports nothing from `edge` and no numpy, so the package stays small
and starts fast.

Environment (the SAM template sets the first ones):
- `SDPBX_STORE_BACKEND` (or `SDPBX_STORE`): `dynamodb` (default) or `sqlite` for local runs;
- `SDPBX_TABLE_PREFIX` (default `sdpbx`), `SDPBX_BLOB_BUCKET`, `SDPBX_BLOB_PREFIX` (default "");
- `SDPBX_SQLITE_PATH`, `SDPBX_BLOB_ROOT` (sqlite: the file and the local blob folder);
- `SDPBX_REALM`: the realm extensions are created in when a request names none;
- `SDPBX_EDGE_SECRET`, `SDPBX_EDGE_KEY_ID` (default `k1`): the secret the edges share (their
  `[webhooks]` secret), to sign active-call commands and CDR pushes; without it commands
  answer 409 and CDR pushes go unsigned;
- `SDPBX_CDR_PUSH_URL`: the customer's CDR endpoint (multipart push); unset: index only.
AWS region and endpoints come from the standard AWS variables (`control.store.aws`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

from mangum import Mangum

from control.api.active_calls import EdgeCommandClient
from control.api.app import DEFAULT_REALM, create_app
from control.cdr_consumer import CdrConsumer
from control.store.factory import open_stores
from control.store.ports import BlobSettings, Stores, StoreSettings

log = logging.getLogger("sdpbx.handlers")


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



def consumer_from_env(stores: LazyStores, env: Mapping[str, str]) -> CdrConsumer:
    """The CDR consumer a function runs (no client is built until it is used)."""
    return CdrConsumer(
        stores, push_url=env.get("SDPBX_CDR_PUSH_URL") or None,
        signer_secret=env.get("SDPBX_EDGE_SECRET") or None,
        key_id=env.get("SDPBX_EDGE_KEY_ID") or "k1",
        key_prefix=env.get("SDPBX_BLOB_PREFIX", ""),
        bucket=env.get("SDPBX_BLOB_BUCKET") or None,
    )


# The API re-delivers failed CDR pushes (`POST /console/cdr-deliveries/{id}/retry`).
app.state.cdr_consumer = consumer_from_env(stores, os.environ)

# lifespan "off": nothing to start per container beyond the lazy stores; API Gateway HTTP API
# (payload v2) and Lambda Function URL events (the same shape).
handler = Mangum(app, lifespan="off")


# --- the CDR consumer ---------------------------------------------------------------------------
# Its own stores and one event loop for the container's life: the aioboto3 clients belong to
# the loop they were opened on, so a loop per invocation would reopen them every time.
cdr_stores = LazyStores(os.environ)
cdr_consumer = consumer_from_env(cdr_stores, os.environ)
_cdr_runner: asyncio.Runner | None = None


def cdr_handler(event: dict[str, Any], context: object) -> dict[str, Any]:
    """Lambda entry of S3 `ObjectCreated` notifications: index (and push) each CDR.

    Returns the report's counts. Raises when a store was unavailable, so that Lambda retries
    the (asynchronous) event; every step is idempotent. Invalid CDRs are only reported.
    """
    global _cdr_runner
    if _cdr_runner is None:
        _cdr_runner = asyncio.Runner()
    report = _cdr_runner.run(cdr_consumer.handle_s3_event(event))
    summary = report.summary()
    log.info("CDR event consumed: %s", summary)
    if report.retryable:
        raise RuntimeError(f"CDR consumer: a store was unavailable, retry the event: {summary}")
    return summary


def close_cdr_handler() -> None:
    """Close the consumer's stores and event loop (tests and local runs)."""
    global _cdr_runner
    runner, _cdr_runner = _cdr_runner, None
    if runner is not None:
        runner.run(cdr_stores.close())
        runner.close()
