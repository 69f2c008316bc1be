"""Extensions through the API: auth and scopes, CRUD, versions, pagination, errors, and the
password never leaving the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from control.store.passwords import ha1_md5, ha1_sha256
from tests.api import Api, running_api

pytestmark = pytest.mark.anyio

PASSWORD = "s3cret-Pa55word"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        yield api
        # Whatever the test did, no reply ever carried the password or an HA1.
        for response in api.seen:
            text = response.text + str(response.headers)
            assert PASSWORD not in text
            assert "ha1" not in text.lower()
            assert '"password":' not in text


async def create(api: Api, username: str = "1001", **extra: object) -> dict[str, object]:
    r = await api.call("POST", "/console/extensions", "write",
                       json={"username": username, "password": PASSWORD, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, object] = r.json()
    return body


async def test_health_needs_no_token(api: Api) -> None:
    for path in ("/health", "/console/health", "/api/v1/health"):
        r = await api.call("GET", path, scope=None)
        assert r.status_code == 200
        assert r.json() == {"status": "ok", "service": "sdpbx-control", "version": "9.9.9"}


async def test_missing_and_bad_tokens_are_401_with_a_bearer_challenge(api: Api) -> None:
    r = await api.call("GET", "/console/extensions", scope=None)
    assert r.status_code == 401
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["status"] == 401
    bad = "sdpbx_0123456789abcdef_" + "A" * 43
    for header in (f"Bearer {bad}", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer"):
        r = await api.call("GET", "/console/extensions", scope=None,
                           headers={"Authorization": header})
        assert r.status_code == 401, header
        assert "Bearer" in r.headers["www-authenticate"]
    # A real key id with a wrong secret is refused too.
    key_id = api.tokens["read"].split("_")[1]
    r = await api.call("GET", "/console/extensions", scope=None,
                       headers={"Authorization": f"Bearer sdpbx_{key_id}_{'B' * 43}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_scopes_are_enforced(api: Api) -> None:
    body = {"username": "1001", "password": PASSWORD}
    r = await api.call("POST", "/console/extensions", "read", json=body)
    assert r.status_code == 403
    assert 'scope="write"' in r.headers["www-authenticate"]
    assert r.json()["error"]["message"] == "this API key lacks the 'write' scope"
    r = await api.call("POST", "/console/extensions", "calls", json=body)
    assert r.status_code == 403
    r = await api.call("GET", "/console/extensions", "write")
    assert r.status_code == 403  # write does not imply read
    assert (await api.call("POST", "/console/extensions", "write", json=body)).status_code == 201
    assert (await api.call("GET", "/console/extensions", "read")).status_code == 200
    assert (await api.call("GET", "/console/extensions/1001", "admin")).status_code == 200
    assert (await api.call("DELETE", "/console/extensions/1001", "read")).status_code == 403
    assert (await api.call("POST", "/console/reload", "write")).status_code == 403


async def test_create_get_list_delete(api: Api) -> None:
    created = await create(api, display_name="Alice")
    assert created == {"username": "1001", "realm": "pbx.test", "display_name": "Alice",
                       "enabled": True, "allow_guest_calls": False, "version": 1}
    stored = await api.stores.directory.get_user("1001", "pbx.test")
    assert stored.ha1_md5 == ha1_md5("1001", "pbx.test", PASSWORD)
    assert stored.ha1_sha256 == ha1_sha256("1001", "pbx.test", PASSWORD)

    r = await api.call("GET", "/console/extensions/1001", "read")
    assert r.json() == created
    assert r.headers["etag"] == '"1"'
    r = await api.call("GET", "/api/v1/extensions", "read")  # the other prefix, same data
    assert r.json() == {"items": [created], "cursor": None}

    other = await create(api, "2002", realm="other.test")
    r = await api.call("GET", "/console/extensions/2002", "read")
    assert r.status_code == 404
    r = await api.call("GET", "/console/extensions/2002?realm=other.test", "read")
    assert r.json() == other

    assert (await api.call("DELETE", "/console/extensions/1001", "write")).status_code == 204
    r = await api.call("GET", "/console/extensions/1001", "read")
    assert r.status_code == 404
    assert r.json()["error"]["status"] == 404
    assert (await api.call("DELETE", "/console/extensions/1001", "write")).status_code == 404


async def test_duplicate_is_409(api: Api) -> None:
    await create(api)
    r = await api.call("POST", "/console/extensions", "write",
                       json={"username": "1001", "password": "x"})
    assert r.status_code == 409
    assert r.json()["error"]["field"] == "username"


async def test_rustpbx_verbs(api: Api) -> None:
    r = await api.call("PUT", "/console/extensions", "write",
                       json={"username": "1001", "password": PASSWORD})
    assert r.status_code == 201
    r = await api.call("POST", "/console/extensions/query", "read", json={"limit": 5})
    assert [e["username"] for e in r.json()["items"]] == ["1001"]
    r = await api.call("POST", "/console/extensions/query", "read")  # empty body: defaults
    assert r.status_code == 200


async def test_patch_password_recomputes_ha1_and_bumps_version(api: Api) -> None:
    await create(api)
    r = await api.call("PATCH", "/console/extensions/1001", "write",
                       json={"password": "n3w-" + PASSWORD, "version": 1})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 2
    stored = await api.stores.directory.get_user("1001", "pbx.test")
    assert stored.ha1_md5 == ha1_md5("1001", "pbx.test", "n3w-" + PASSWORD)
    # Without a password, the HA1s stay.
    r = await api.call("PATCH", "/console/extensions/1001", "write",
                       json={"display_name": "Bob", "enabled": False})
    assert r.json()["display_name"] == "Bob"
    assert r.json()["enabled"] is False
    assert (await api.stores.directory.get_user("1001", "pbx.test")).ha1_md5 == stored.ha1_md5


async def test_stale_version_is_409(api: Api) -> None:
    await create(api)
    ok = await api.call("PATCH", "/console/extensions/1001", "write",
                        json={"display_name": "A"}, headers={"If-Match": '"1"'})
    assert ok.status_code == 200
    assert ok.headers["etag"] == '"2"'
    for kwargs in ({"json": {"display_name": "B", "version": 1}},
                   {"json": {"display_name": "B"}, "headers": {"If-Match": '"1"'}},
                   {"json": {"display_name": "B", "version": 2},
                    "headers": {"If-Match": "3"}}):
        r = await api.call("PATCH", "/console/extensions/1001", "write", **kwargs)
        assert r.status_code == 409, kwargs
        assert r.json()["error"]["status"] == 409
    r = await api.call("PATCH", "/console/extensions/1001", "write",
                       json={"display_name": "B"}, headers={"If-Match": "soon"})
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "If-Match"
    assert (await api.call("GET", "/console/extensions/1001", "read")).json()["display_name"] \
        == "A"


async def test_bad_bodies(api: Api) -> None:
    cases: list[tuple[bytes, int, str | None]] = [
        (b"{not json", 400, None),
        (b"", 400, None),
        (b"[1, 2]", 422, None),
        (b'{"username": "1001"}', 422, "password"),
        (b'{"username": "10:01", "password": "x"}', 422, "username"),
        (b'{"username": "1001", "password": ""}', 422, "password"),
        (b'{"username": "1001", "password": "x", "colour": "red"}', 422, "colour"),
        (b'{"username": "1001", "password": "x", "enabled": "maybe"}', 422, "enabled"),
    ]
    for body, status, field in cases:
        r = await api.call("POST", "/console/extensions", "write", content=body,
                           headers={"Content-Type": "application/json"})
        assert r.status_code == status, (body, r.text)
        error = r.json()["error"]
        assert error["status"] == status
        assert error.get("field") == field, body
    r = await api.call("PATCH", "/console/extensions/nobody", "write", json={"enabled": True})
    assert r.status_code == 404


async def test_pagination(api: Api) -> None:
    names = [f"{1000 + n}" for n in range(7)]
    for name in names:
        await create(api, name)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        url = "/console/extensions?limit=3" + (f"&cursor={cursor}" if cursor else "")
        r = await api.call("GET", url, "read")
        assert r.status_code == 200
        page = r.json()
        assert len(page["items"]) <= 3
        seen += [item["username"] for item in page["items"]]
        pages += 1
        cursor = page["cursor"]
        if cursor is None:
            break
    assert sorted(seen) == names
    assert pages == 3
    r = await api.call("GET", "/console/extensions?cursor=%%%%", "read")
    assert r.status_code == 400
    assert r.json()["error"]["field"] == "cursor"
    for limit in ("0", "1001", "x"):
        r = await api.call("GET", f"/console/extensions?limit={limit}", "read")
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "limit"


async def test_unknown_route_and_method_are_json(api: Api) -> None:
    r = await api.call("GET", "/console/nothing-here", "read")
    assert r.status_code == 404
    assert r.json()["error"]["status"] == 404
    r = await api.call("DELETE", "/console/extensions", "admin")
    assert r.status_code == 405
    assert r.json()["error"]["status"] == 405


async def test_verified_keys_are_cached_for_the_ttl(api: Api) -> None:
    assert (await api.call("GET", "/console/extensions", "read")).status_code == 200
    key_id = api.tokens["read"].split("_")[1]
    await api.stores.directory.delete_api_key(key_id)
    api.monotonic.now += 29  # still cached: no store read
    assert (await api.call("GET", "/console/extensions", "read")).status_code == 200
    api.monotonic.now += 2  # expired: the store says the key is gone
    assert (await api.call("GET", "/console/extensions", "read")).status_code == 401
