"""The Lambda entry point: `control.handlers.handler` (Mangum) invoked with recorded API Gateway
HTTP API (payload 2.0) and Lambda Function URL events against SQLite stores named by the
environment, as a local run would configure it. The stores open once, on the first request."""

from __future__ import annotations

import asyncio
import base64
import importlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from control.store.factory import open_stores
from control.store.passwords import new_api_key
from tests.api import sqlite_settings

EVENTS = Path(__file__).resolve().parent.parent / "events"
# The tokens in the recorded events were made with these fixed "random" bytes.
KEYS = {"read": lambda n: bytes(range(1, n + 1)), "write": lambda n: bytes(range(101, 101 + n))}


class Context:
    """The bits of the Lambda context object Mangum reads."""

    function_name = "sdpbx-control-api"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"

    def get_remaining_time_in_millis(self) -> int:
        return 15000


def handlers() -> ModuleType:
    return importlib.import_module("control.handlers")


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


@pytest.fixture
def lambda_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[asyncio.AbstractEventLoop]:
    """SQLite stores with the events' API keys, the env pointing at them, and the event loop
    Mangum runs on (a Lambda container keeps one loop for its whole life)."""
    monkeypatch.setenv("SDPBX_STORE", "sqlite")
    monkeypatch.setenv("SDPBX_SQLITE_PATH", str(tmp_path / "sdpbx.sqlite3"))
    monkeypatch.setenv("SDPBX_BLOB_ROOT", str(tmp_path / "blobs"))
    # Mangum runs requests on the thread's current loop, and Mangum() makes one (that nothing
    # closes) if none is set when `control.handlers` is first imported: set it first.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def seed() -> None:
        stores = await open_stores(sqlite_settings(tmp_path))
        for scope, random_bytes in KEYS.items():
            _, record = new_api_key([scope], f"recorded {scope}", 0.0, random_bytes=random_bytes)
            await stores.directory.put_api_key(record)
        await stores.close()

    try:
        loop.run_until_complete(seed())
        yield loop
    finally:
        loop.run_until_complete(handlers().stores.close())
        loop.close()
        asyncio.set_event_loop(None)


def invoke(name: str, **changes: Any) -> dict[str, Any]:
    ev = event(name)
    for key, value in changes.items():
        ev[key] = value
    response: dict[str, Any] = handlers().handler(ev, Context())
    return response


def body_of(response: dict[str, Any]) -> Any:
    raw = response["body"]
    if response.get("isBase64Encoded"):
        raw = base64.b64decode(raw)
    return json.loads(raw)


def test_health_through_api_gateway(lambda_env: asyncio.AbstractEventLoop) -> None:
    response = invoke("apigw_v2_get_health.json")
    assert response["statusCode"] == 200
    assert body_of(response)["status"] == "ok"


def test_create_then_list_through_both_event_shapes(
    lambda_env: asyncio.AbstractEventLoop,
) -> None:
    created = invoke("apigw_v2_post_extension.json")
    assert created["statusCode"] == 201, created
    assert body_of(created)["username"] == "1001"
    assert "hunter2" not in created["body"]
    created = invoke("function_url_post_extension_b64.json")  # base64 body (Function URL)
    assert created["statusCode"] == 201, created
    assert body_of(created)["enabled"] is False

    listed = invoke("apigw_v2_get_extensions.json")
    assert listed["statusCode"] == 200
    assert listed["headers"]["content-type"] == "application/json"
    assert [e["username"] for e in body_of(listed)["items"]] == ["1001", "1002"]

    status = invoke("function_url_get_status.json")
    assert status["statusCode"] == 200
    assert body_of(status)["edges"] == []


def test_errors_through_the_handler(lambda_env: asyncio.AbstractEventLoop) -> None:
    ev = event("apigw_v2_get_extensions.json")
    del ev["headers"]["authorization"]
    response = handlers().handler(ev, Context())
    assert response["statusCode"] == 401
    assert response["headers"]["www-authenticate"].startswith("Bearer")
    # The read key may not create.
    post = event("apigw_v2_post_extension.json")
    post["headers"]["authorization"] = event("apigw_v2_get_extensions.json")["headers"][
        "authorization"]
    response = handlers().handler(post, Context())
    assert response["statusCode"] == 403
    assert body_of(response)["error"]["status"] == 403


def test_stores_open_once_per_container(lambda_env: asyncio.AbstractEventLoop) -> None:
    invoke("apigw_v2_get_extensions.json")
    first = lambda_env.run_until_complete(handlers().stores())
    invoke("function_url_get_status.json")
    assert lambda_env.run_until_complete(handlers().stores()) is first


def test_settings_from_env(lambda_env: asyncio.AbstractEventLoop) -> None:
    settings_from_env = handlers().settings_from_env
    local = settings_from_env({"SDPBX_STORE": "sqlite", "SDPBX_SQLITE_PATH": "x.db"})
    assert (local.backend, local.sqlite_path, local.blobs.kind) == ("sqlite", "x.db", "local")
    aws = settings_from_env({"SDPBX_STORE_BACKEND": "dynamodb", "SDPBX_TABLE_PREFIX": "prod",
                             "SDPBX_BLOB_BUCKET": "b", "SDPBX_BLOB_PREFIX": "cdr"})
    assert (aws.backend, aws.table_prefix) == ("dynamodb", "prod")
    assert (aws.blobs.kind, aws.blobs.bucket, aws.blobs.root) == ("s3", "b", "cdr")
    with pytest.raises(ValueError, match="SDPBX_STORE_BACKEND"):
        settings_from_env({"SDPBX_STORE_BACKEND": "redis"})
