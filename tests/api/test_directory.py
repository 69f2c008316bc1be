"""Trunks, routes and applications through the API: validation on write (SIP dest, regexes,
keys), versioned updates, the write-only trunk password, reserved names."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.api import Api, running_api

pytestmark = pytest.mark.anyio

TRUNK = {"name": "carrierA", "dest": "sip:198.51.100.10:5060", "username": "acct",
         "password": "trunk-secret-77", "inbound_hosts": ["198.51.100.10"], "max_calls": 100,
         "max_cps": 10}
ROUTE = {"name": "to-carrier", "priority": 10, "dest": ["carrierA"], "select": "rr",
         "match": {"to.user": "^00([0-9]+)$", "from.host": "pbx.test"},
         "rewrite": {"to.user": "+{1}"}}
APP = {"name": "ivr", "numbers": ["+15550001", "4000"],
       "answer_url": "https://app.example.com/answer",
       "event_url": "https://app.example.com/event"}


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with running_api(tmp_path) as api:
        yield api
        for response in api.seen:
            assert "trunk-secret-77" not in response.text


async def post(api: Api, resource: str, body: dict[str, Any]) -> Any:
    return await api.call("POST", f"/console/{resource}", "write", json=body)


async def test_trunk_crud_keeps_the_password_write_only(api: Api) -> None:
    r = await post(api, "trunks", TRUNK)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/console/trunks/carrierA"
    created = r.json()
    assert created["has_password"] is True
    assert created["version"] == 1
    assert "password" not in created
    entry = await api.stores.directory.get_entry("trunk", "carrierA")
    assert entry.data["password"] == "trunk-secret-77"  # the edge needs it to authenticate

    r = await api.call("PATCH", "/console/trunks/carrierA", "write",
                       json={"max_calls": 5, "version": 1})
    assert r.status_code == 200
    assert r.json()["max_calls"] == 5
    assert r.json()["has_password"] is True
    assert (await api.stores.directory.get_entry("trunk", "carrierA")).data["password"] \
        == "trunk-secret-77"
    r = await api.call("PATCH", "/console/trunks/carrierA", "write", json={"max_calls": 6},
                       headers={"If-Match": '"1"'})
    assert r.status_code == 409
    r = await api.call("GET", "/api/v1/trunks", "read")
    assert [t["name"] for t in r.json()["items"]] == ["carrierA"]
    assert (await api.call("DELETE", "/console/trunks/carrierA", "write")).status_code == 204
    assert (await api.call("GET", "/console/trunks/carrierA", "read")).status_code == 404


@pytest.mark.parametrize(("change", "field"), [
    ({"dest": "http://198.51.100.10"}, "dest"),
    ({"dest": "198.51.100.10:5060"}, "dest"),
    ({"direction": "sideways"}, "direction"),
    ({"max_calls": -1}, "max_calls"),
    ({"name": "bad name"}, "name"),
    ({"name": "_reserved"}, "name"),
])
async def test_bad_trunks_are_422_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    r = await post(api, "trunks", {**TRUNK, **change})
    assert r.status_code == 422
    assert r.json()["error"]["field"] == field
    assert r.json()["error"]["message"].startswith(field)


async def test_route_crud_and_versioned_patch(api: Api) -> None:
    r = await post(api, "routes", ROUTE)
    assert r.status_code == 201, r.text
    route = r.json()
    assert route["match"] == ROUTE["match"]
    assert route["action"] == "forward"
    r = await api.call("PATCH", "/console/routes/to-carrier", "write",
                       json={"priority": 20, "dest": ["sips:gw.example.com"], "version": 1})
    assert r.status_code == 200, r.text
    assert r.json()["priority"] == 20
    assert r.json()["match"] == ROUTE["match"]  # untouched keys stay
    # A patch that would make the route invalid as a whole is refused.
    r = await api.call("PATCH", "/console/routes/to-carrier", "write", json={"dest": []})
    assert r.status_code == 422
    r = await api.call("PATCH", "/console/routes/to-carrier", "write",
                       json={"action": "reject", "dest": [], "reject": {"code": 403}})
    assert r.status_code == 200
    assert r.json()["version"] == 3
    r = await api.call("PATCH", "/console/routes/to-carrier", "write",
                       json={"priority": 1, "version": 2})
    assert r.status_code == 409


@pytest.mark.parametrize(("change", "field"), [
    ({"match": {"to.user": "^00([0-9]+$"}}, "match.to.user"),
    ({"match": {"header.X-Tenant": "[a-"}}, "match.header.X-Tenant"),
    ({"match": {"to.colour": "red"}}, "match.to.colour.[key]"),
    ({"rewrite": {"nowhere": "x"}}, "rewrite.nowhere.[key]"),
    ({"dest": ["http://x"]}, "dest.0"),
    ({"dest": []}, None),
    ({"select": "best"}, "select"),
    ({"reject": {"code": 200}}, "reject.code"),
])
async def test_bad_routes_are_422_naming_the_key(
    api: Api, change: dict[str, Any], field: str | None
) -> None:
    r = await post(api, "routes", {**ROUTE, **change})
    assert r.status_code == 422, r.text
    assert r.json()["error"].get("field") == field


async def test_plain_values_need_not_be_regexes(api: Api) -> None:
    # "]" or "{" alone do not make a value a regex (COMPAT.md's list), so this is exact text.
    r = await post(api, "routes", {**ROUTE, "match": {"to.user": "a]b{"}})
    assert r.status_code == 201


async def test_applications(api: Api) -> None:
    r = await post(api, "applications", APP)
    assert r.status_code == 201, r.text
    assert r.json() == {**APP, "fallback_answer_url": None, "version": 1}
    for change, field in (({"numbers": []}, "numbers"), ({"answer_url": "ftp://x"}, "answer_url"),
                          ({"numbers": ["12 34"]}, "numbers.0")):
        r = await post(api, "applications", {**APP, "name": "other", **change})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == field
    r = await api.call("PATCH", "/console/applications/ivr", "write",
                       json={"answer_url": "https://app.example.com/v2"})
    assert r.json()["answer_url"] == "https://app.example.com/v2"
    assert r.json()["numbers"] == APP["numbers"]
    r = await api.call("PUT", "/console/applications", "write", json=APP)
    assert r.status_code == 409


async def test_listings_page_and_hide_reserved_names(api: Api) -> None:
    for n in range(5):
        assert (await post(api, "routes", {**ROUTE, "name": f"r{n}"})).status_code == 201
    assert (await api.call("POST", "/console/reload", "admin")).status_code == 202
    names: list[str] = []
    cursor = None
    while True:
        body = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.call("POST", "/console/routes/query", "read", json=body)).json()
        names += [item["name"] for item in page["items"]]
        cursor = page["cursor"]
        if cursor is None:
            break
    assert names == [f"r{n}" for n in range(5)]
    assert (await api.call("GET", "/console/routes/_reload", "read")).status_code == 404
    assert (await api.call("DELETE", "/console/routes/_reload", "write")).status_code == 404


async def test_rustpbx_resource_names_are_the_same_resources(api: Api) -> None:
    r = await api.call("PUT", "/console/sip-trunk", "write", json=TRUNK)
    assert r.status_code == 201
    assert (await api.call("GET", "/console/trunks/carrierA", "read")).json()["version"] == 1
    assert (await post(api, "routes", ROUTE)).status_code == 201
    r = await api.call("POST", "/api/v1/routing/query", "read", json={})
    assert [item["name"] for item in r.json()["items"]] == ["to-carrier"]
