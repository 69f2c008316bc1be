"""Call records (query, CDR JSON, recording download), status, reload, a store that is down,
and the OpenAPI document covering every mounted route."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from control.api import create_app
from control.api.app import ENDPOINTS, PREFIXES
from control.store.errors import StoreUnavailable
from control.store.models import Binding, CallRecord, CdrEntry, EdgeInfo
from control.store.ports import Stores
from tests.api import NOW, Api, running_api

pytestmark = pytest.mark.anyio

DAY = 86400.0
WAV = b"RIFF" + bytes(range(256)) * 600  # > one 64 KiB chunk: the download really streams


def cdr(n: int, **fields: Any) -> CdrEntry:
    values: dict[str, Any] = {
        "call_id": f"call-{n}", "start_time": NOW - 3600 * (n + 1),
        "end_time": NOW - 3600 * (n + 1) + 30, "caller": "1001", "callee": f"20{n:02d}",
        "direction": "internal", "status": "completed", "duration": 30.0,
        "cdr_key": f"cdr/2027/01/15/call-{n}.json", "edge_id": "edge-a",
    }
    values.update(fields)
    return CdrEntry(**values)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        for n in range(5):
            entry = cdr(n, status="missed" if n == 3 else "completed",
                        recording_key="recordings/call-0.wav" if n == 0 else "")
            await api.stores.cdrs.put(entry)
            await api.stores.blobs.put(entry.cdr_key, json.dumps({"callId": entry.call_id})
                                       .encode(), "application/json")
        await api.stores.blobs.put("recordings/call-0.wav", WAV, "audio/wav")
        yield api


async def test_query_pages_newest_first(api: Api) -> None:
    ids: list[str] = []
    cursor = None
    while True:
        url = "/console/call-records?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.call("GET", url, "read")).json()
        ids += [item["call_id"] for item in page["items"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert ids == [f"call-{n}" for n in range(5)]
    first = (await api.call("GET", "/console/call-records?limit=1", "read")).json()["items"][0]
    assert first == {"call_id": "call-0", "start_time": "2027-01-15T07:00:00.000Z",
                     "end_time": "2027-01-15T07:00:30.000Z", "caller": "1001",
                     "callee": "2000", "direction": "internal", "status": "completed",
                     "duration": 30.0, "has_recording": True, "edge_id": "edge-a"}


@pytest.mark.parametrize(("query", "expected"), [
    ("status=missed", ["call-3"]),
    ("callee=2001", ["call-1"]),
    (f"from={NOW - 2.5 * 3600}&to={NOW}", ["call-0", "call-1"]),
    ("from=2027-01-15T05:30:00Z&to=2027-01-15T06:30:00Z", ["call-1"]),
    ("from=2027-01-15T07:30:00%2B01:00", ["call-0"]),  # 06:30Z
    ("direction=inbound", []),
])
async def test_query_filters(api: Api, query: str, expected: list[str]) -> None:
    r = await api.call("GET", f"/api/v1/call-records?{query}", "read")
    assert r.status_code == 200, r.text
    assert [item["call_id"] for item in r.json()["items"]] == expected


async def test_query_by_post_alias(api: Api) -> None:
    r = await api.call("POST", "/console/call-records/query", "read",
                       json={"caller": "1001", "status": "missed", "from": NOW - DAY})
    assert [item["call_id"] for item in r.json()["items"]] == ["call-3"]


@pytest.mark.parametrize(("query", "field", "status"), [
    ("from=yesterday", "from", 422),
    ("to=2027-01-15T07:00:00", "to", 422),  # no zone
    (f"from={NOW - 400 * DAY}", "from", 422),
    ("limit=0", "limit", 422),
    ("colour=red", "colour", 422),
    ("cursor=@@@", "cursor", 400),
])
async def test_query_errors(api: Api, query: str, field: str, status: int) -> None:
    r = await api.call("GET", f"/console/call-records?{query}", "read")
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field


async def test_one_record_and_its_recording(api: Api) -> None:
    r = await api.call("GET", "/console/call-records/call-1", "read")
    assert r.status_code == 200
    assert r.json() == {"callId": "call-1"}
    r = await api.call("GET", "/console/call-records/call-0/recording", "read")
    assert r.status_code == 200
    assert r.headers["content-type"] == "audio/wav"
    assert "content-length" not in r.headers  # streamed, not buffered
    assert r.content == WAV
    r = await api.call("GET", "/console/call-records/call-1/recording", "read")
    assert r.status_code == 404
    assert (await api.call("GET", "/console/call-records/nope", "read")).status_code == 404
    assert (await api.call("GET", "/console/call-records/nope/recording", "read")
            ).status_code == 404
    await api.stores.blobs.delete("recordings/call-0.wav")
    r = await api.call("GET", "/console/call-records/call-0/recording", "read")
    assert r.status_code == 404
    assert (await api.call("GET", "/console/call-records/call-0", scope=None)).status_code == 401


class PresigningBlobs:
    """The local blob store, but presigning like S3."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def presign(self, key: str, expires_s: int = 3600) -> str | None:
        return f"https://bucket.s3.example.com/{key}?X-Amz-Expires={expires_s}"


@dataclasses.dataclass
class Swapped:
    """A `Stores` with some members replaced."""

    base: Any
    swaps: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        return self.swaps.get(name) or getattr(self.base, name)


async def test_recording_redirects_to_a_presigned_url(tmp_path: Path) -> None:
    def wrap(stores: Stores) -> Any:
        return Swapped(stores, {"blobs": PresigningBlobs(stores.blobs)})

    async with running_api(tmp_path, wrap=wrap) as api:
        await api.stores.cdrs.put(cdr(0, recording_key="recordings/call-0.wav"))
        r = await api.call("GET", "/console/call-records/call-0/recording", "read")
        assert r.status_code == 302
        assert r.headers["location"] == (
            "https://bucket.s3.example.com/recordings/call-0.wav?X-Amz-Expires=900")


async def test_status_counts_edges_calls_and_registrations(api: Api) -> None:
    for edge_id, load, expires in (("edge-b", 3, NOW + 30), ("edge-a", 1, NOW + 30),
                                   ("edge-dead", 0, NOW - 1)):
        await api.stores.edges.heartbeat(EdgeInfo(
            edge_id=edge_id, sip_addresses=("udp:192.0.2.1:5060",),
            http_address="http://192.0.2.1:8080", load=load, started_at=NOW - 60,
            heartbeat_at=NOW - 1, expires_at=expires))
    for n in range(3):
        await api.stores.calls.create(CallRecord(
            call_id=f"active-{n}", edge_id="edge-a", state="answered" if n else "completed",
            created_at=NOW - 10, updated_at=NOW - 5))
    for aor in ("sip:1001@pbx.test", "sip:1002@pbx.test"):
        await api.stores.registrations.put(Binding(aor=aor, contact=f"<{aor}>",
                                                   expires_at=NOW + 60))
    await api.stores.registrations.put(Binding(aor="sip:old@pbx.test", contact="<sip:o@x>",
                                               expires_at=NOW - 60))
    r = await api.call("GET", "/console/status", "read")
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(e["edge_id"], e["load"]) for e in body["edges"]] == [("edge-a", 1), ("edge-b", 3)]
    assert body["active_calls"] == 2
    assert body["active_calls_capped"] is False
    assert body["registrations"] == 2
    assert (await api.call("GET", "/console/status", scope=None)).status_code == 401


async def test_reload_bumps_the_directory_revision(api: Api) -> None:
    before = await api.stores.directory.revision()
    r = await api.call("POST", "/console/reload", "admin")
    assert r.status_code == 202
    assert r.json()["status"] == "accepted"
    assert r.json()["revision"] > before
    again = await api.call("POST", "/api/v1/reload", "admin")
    assert again.json()["revision"] > r.json()["revision"]
    assert (await api.call("POST", "/console/reload", "read")).status_code == 403
    assert (await api.call("POST", "/console/reload", "calls")).status_code == 403


class DownDirectory:
    """Keys still verify; everything else answers StoreUnavailable."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "get_api_key":
            return self._inner.get_api_key

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise StoreUnavailable("directory: no answer after retries")

        return down


async def test_store_down_is_503(tmp_path: Path) -> None:
    def wrap(stores: Stores) -> Any:
        return Swapped(stores, {"directory": DownDirectory(stores.directory)})

    async with running_api(tmp_path, wrap=wrap) as api:
        for method, url in (("GET", "/console/extensions"), ("GET", "/console/routes/x"),
                            ("POST", "/console/reload")):
            r = await api.call(method, url, "admin")
            assert r.status_code == 503, url
            assert r.headers["retry-after"] == "1"
            assert r.json() == {"error": {"status": 503,
                                          "message": "the store is unavailable, retry later"}}


async def test_openapi_covers_every_route(api: Api) -> None:
    doc = (await api.call("GET", "/openapi.json", scope=None)).json()
    assert doc["openapi"].startswith("3.1")
    app = create_app(api.stores)
    mounted = {(m.lower(), r.path) for r in app.routes if isinstance(r, Route)
               for m in (r.methods or ()) if m != "HEAD"}
    documented = {(method, path) for path, ops in doc["paths"].items() for method in ops}
    assert mounted - {("get", "/openapi.json"), ("get", "/docs"), ("get", "/health")} \
        == documented
    # + the control functions, mounted once at the root (POST router, GET and POST users).
    assert len(documented) == len(ENDPOINTS) * len(PREFIXES) + 3
    schemas = doc["components"]["schemas"]
    refs = set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(schemas)
    create = doc["paths"]["/console/extensions"]["post"]
    assert create["security"] == [{"bearer": ["write"]}]
    body_ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert schemas[body_ref.rsplit("/", 1)[-1]]["required"] == ["username", "password"]
    route = schemas["RouteCreate"]["properties"]
    assert {"match", "rewrite", "dest", "select"} <= set(route)
    ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids))

    page = await api.call("GET", "/docs", scope=None)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "<script" not in page.text
    for path in doc["paths"]:
        assert path in page.text


async def test_an_unexpected_error_is_a_json_500(tmp_path: Path) -> None:
    class Broken:
        async def get_user(self, username: str, realm: str) -> Any:
            raise RuntimeError("bug")

    async with running_api(tmp_path) as api:
        app = create_app(Swapped(api.stores, {"directory": Broken()}), key_cache_ttl_s=0)
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
            # The token check itself fails (Broken has no get_api_key): still a JSON 500.
            r = await client.get("/console/extensions/1001", headers=api.auth("read"))
        assert r.status_code == 500
        assert r.json() == {"error": {"status": 500, "message": "internal error"}}
