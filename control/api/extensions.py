"""`/extensions`: users that register and call. A password comes in, HA1 digests are stored
(`passwords.make_user`), and neither ever goes out; every reply carries the `version`."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import (
    ApiContext,
    Endpoint,
    bad_cursor,
    expected_version,
    json_response,
    page_args,
    path_param,
    read_model,
    read_optional_model,
    versioned,
)
from control.api.errors import ApiError
from control.contracts.api import ListQuery
from control.contracts.directory import (
    REALM_PATTERN,
    Extension,
    ExtensionCreate,
    ExtensionPage,
    ExtensionPatch,
)
from control.store.errors import Conflict
from control.store.models import User
from control.store.passwords import make_user

_REALM = re.compile(REALM_PATTERN)


def view(user: User) -> Extension:
    return Extension(
        username=user.username, realm=user.realm, display_name=user.display_name,
        enabled=user.enabled, allow_guest_calls=user.allow_guest_calls, version=user.version,
    )


def _realm(request: Request, ctx: ApiContext) -> str:
    realm = request.query_params.get("realm") or ctx.realm
    if not _REALM.match(realm):
        raise ApiError(422, "realm: not a valid realm", field="realm")
    return realm


async def _page(ctx: ApiContext, limit: int, cursor: str | None) -> Response:
    stores = await ctx.stores()
    try:
        page = await stores.directory.list_users(limit=limit, cursor=cursor)
    except ValueError:
        raise bad_cursor() from None
    return json_response(ExtensionPage(items=[view(u) for u in page.items], cursor=page.cursor))


async def list_extensions(request: Request, ctx: ApiContext) -> Response:
    limit, cursor = page_args(request)
    return await _page(ctx, limit, cursor)


async def query_extensions(request: Request, ctx: ApiContext) -> Response:
    query = await read_optional_model(request, ListQuery)
    return await _page(ctx, query.limit, query.cursor)


async def create_extension(request: Request, ctx: ApiContext) -> Response:
    body = await read_model(request, ExtensionCreate)
    realm = body.realm or ctx.realm
    user = make_user(
        body.username, realm, body.password, display_name=body.display_name,
        enabled=body.enabled, allow_guest_calls=body.allow_guest_calls,
    )
    stores = await ctx.stores()
    try:
        stored = await stores.directory.put_user(user, None)
    except Conflict:
        raise ApiError(409, f"extension {body.username!r} exists in realm {realm!r}",
                       field="username") from None
    location = f"{request.url.path.rstrip('/')}/{quote(stored.username, safe='')}"
    if realm != ctx.realm:
        location += f"?realm={quote(realm, safe='')}"
    return versioned(view(stored), stored.version, 201, {"Location": location})


async def get_extension(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    user = await stores.directory.get_user(path_param(request, "username"), _realm(request, ctx))
    return versioned(view(user), user.version)


async def patch_extension(request: Request, ctx: ApiContext) -> Response:
    body = await read_model(request, ExtensionPatch)
    expected = expected_version(request, body.version)
    stores = await ctx.stores()
    current = await stores.directory.get_user(
        path_param(request, "username"), _realm(request, ctx))
    if expected is not None and expected != current.version:
        raise ApiError(409, f"extension is at version {current.version}, not {expected}",
                       field="version")
    display_name = current.display_name if body.display_name is None else body.display_name
    enabled = current.enabled if body.enabled is None else body.enabled
    guests = (current.allow_guest_calls if body.allow_guest_calls is None
              else body.allow_guest_calls)
    if body.password is not None:
        updated = make_user(current.username, current.realm, body.password,
                            display_name=display_name, enabled=enabled,
                            allow_guest_calls=guests)
    else:
        updated = dataclasses.replace(current, display_name=display_name, enabled=enabled,
                                      allow_guest_calls=guests)
    # Conditional on the version read even without If-Match: a concurrent edit is never lost
    # silently (the store answers Conflict -> 409).
    stored = await stores.directory.put_user(updated, current.version)
    return versioned(view(stored), stored.version)


async def delete_extension(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    await stores.directory.delete_user(path_param(request, "username"), _realm(request, ctx))
    return Response(status_code=204)


_ONE = "/extensions/{username}"
_REALM_Q = (("realm", "the extension's realm (default: the PBX's first realm)"),)
_PAGE_Q = (("limit", "page size, 1..1000 (default 100)"),
           ("cursor", "the cursor of the previous page"))
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="GET", path="/extensions", handler=list_extensions, scope="read",
             summary="List extensions", tag="extensions", response=ExtensionPage, query=_PAGE_Q),
    Endpoint(method="POST", path="/extensions/query", handler=query_extensions, scope="read",
             summary="List extensions (RustPBX POST=list)", tag="extensions", body=ListQuery,
             response=ExtensionPage, alias=True),
    Endpoint(method="POST", path="/extensions", handler=create_extension, scope="write",
             summary="Create an extension", tag="extensions", body=ExtensionCreate,
             response=Extension, status=201),
    Endpoint(method="PUT", path="/extensions", handler=create_extension, scope="write",
             summary="Create an extension (RustPBX PUT=create)", tag="extensions",
             body=ExtensionCreate, response=Extension, status=201, alias=True),
    Endpoint(method="GET", path=_ONE, handler=get_extension, scope="read",
             summary="Get an extension", tag="extensions", response=Extension, query=_REALM_Q),
    Endpoint(method="PATCH", path=_ONE, handler=patch_extension, scope="write",
             summary="Update an extension (versioned)", tag="extensions", body=ExtensionPatch,
             response=Extension, query=_REALM_Q),
    Endpoint(method="DELETE", path=_ONE, handler=delete_extension, scope="write",
             summary="Delete an extension", tag="extensions", status=204, query=_REALM_Q),
)
