"""API keys through the API (scope admin): create shows the token once, it works with exactly
its scopes, listing never shows secrets, revoking stops it at once in this process."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.api import running_api

pytestmark = pytest.mark.anyio


async def test_key_lifecycle(tmp_path: Path) -> None:
    async with running_api(tmp_path) as api:
        r = await api.call("POST", "/console/api-keys", "write", json={"scopes": ["read"]})
        assert r.status_code == 403
        r = await api.call("POST", "/console/api-keys", "admin",
                           json={"scopes": ["read"], "name": "dashboard"})
        assert r.status_code == 201, r.text
        created = r.json()
        token, key_id = created["token"], created["key_id"]
        assert token.startswith(f"sdpbx_{key_id}_")
        assert created["scopes"] == ["read"]
        bearer = {"Authorization": f"Bearer {token}"}

        assert (await api.call("GET", "/console/trunks", None, headers=bearer)).status_code \
            == 200
        r = await api.call("POST", "/console/trunks", None, headers=bearer,
                           json={"name": "t", "dest": "sip:192.0.2.1"})
        assert r.status_code == 403

        listed = (await api.call("GET", "/api/v1/api-keys", "admin")).json()["items"]
        assert key_id in [k["key_id"] for k in listed]
        assert len(listed) == 5  # the fixture's four and this one
        assert token.rsplit("_", 1)[1] not in str(listed)
        assert all(set(k) == {"key_id", "scopes", "name", "created_at"} for k in listed)

        assert (await api.call("DELETE", f"/console/api-keys/{key_id}", "admin")).status_code \
            == 204
        assert (await api.call("GET", "/console/trunks", None, headers=bearer)).status_code \
            == 401  # not served from the cache after the revoke
        assert (await api.call("DELETE", f"/console/api-keys/{key_id}", "admin")).status_code \
            == 404
        r = await api.call("POST", "/console/api-keys", "admin", json={"scopes": ["root"]})
        assert r.status_code == 422
        assert r.json()["error"]["field"] == "scopes.0"
