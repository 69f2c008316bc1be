"""`/api-keys` (scope `admin`): list, create (the token is in the reply once), delete. The
store keeps only the SHA-256 of each secret (`control.store.passwords`)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import ApiContext, Endpoint, json_response, path_param, read_model
from control.api.errors import ApiError
from control.contracts.api import ApiKeyCreate, ApiKeyCreated, ApiKeyList, ApiKeyView
from control.store.models import ApiKey
from control.store.passwords import new_api_key

_KEY_ID = re.compile(r"^[0-9a-f]{16}$")


def view(key: ApiKey) -> ApiKeyView:
    return ApiKeyView(key_id=key.key_id, scopes=list(key.scopes), name=key.name,
                      created_at=key.created_at)


async def list_keys(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    keys = sorted(await stores.directory.list_api_keys(), key=lambda k: k.key_id)
    return json_response(ApiKeyList(items=[view(k) for k in keys if _KEY_ID.match(k.key_id)]))


async def create_key(request: Request, ctx: ApiContext) -> Response:
    body = await read_model(request, ApiKeyCreate)
    token, record = new_api_key(body.scopes, body.name, ctx.clock())
    stores = await ctx.stores()
    await stores.directory.put_api_key(record)
    created = ApiKeyCreated(**view(record).model_dump(), token=token)
    return json_response(created, 201)


async def delete_key(request: Request, ctx: ApiContext) -> Response:
    key_id = path_param(request, "key_id")
    if not _KEY_ID.match(key_id):
        raise ApiError(404, f"no API key {key_id!r}")
    stores = await ctx.stores()
    await stores.directory.delete_api_key(key_id)
    ctx.forget_key(key_id)
    return Response(status_code=204)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="GET", path="/api-keys", handler=list_keys, scope="admin",
             summary="List API keys (never their secrets)", tag="api-keys",
             response=ApiKeyList),
    Endpoint(method="POST", path="/api-keys", handler=create_key, scope="admin",
             summary="Create an API key (the token is shown once)", tag="api-keys",
             body=ApiKeyCreate, response=ApiKeyCreated, status=201),
    Endpoint(method="DELETE", path="/api-keys/{key_id}", handler=delete_key, scope="admin",
             summary="Revoke an API key", tag="api-keys", status=204),
)
