"""`/trunks`, `/routes`, `/applications`: directory entries, validated on write by the wire
models of `control.contracts.directory` and stored as `DirectoryEntry` data (the TOML keys of
COMPAT.md). Writes are versioned (`version` in the body or `If-Match`; 409 when stale).

Names starting with `_` are reserved for markers (the reload marker of `control.api.status`):
they cannot be created through the API and are hidden from listings.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import (
    ApiContext,
    Endpoint,
    Handler,
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
from control.contracts.api import ListQuery, PageOf
from control.contracts.directory import (
    NAME_PATTERN,
    Application,
    ApplicationCreate,
    ApplicationPage,
    ApplicationPatch,
    ApplicationSpec,
    Route,
    RouteCreate,
    RoutePage,
    RoutePatch,
    RouteSpec,
    Trunk,
    TrunkCreate,
    TrunkPage,
    TrunkPatch,
    TrunkSpec,
)
from control.store.errors import Conflict
from control.store.models import DirectoryEntry, DirectoryKind

_NAME = re.compile(NAME_PATTERN)


def _trunk_view(entry: DirectoryEntry) -> BaseModel:
    data = entry.data
    return Trunk(
        name=entry.name, dest=str(data.get("dest", "")), username=data.get("username"),
        has_password=bool(data.get("password")), inbound_hosts=list(data.get("inbound_hosts", [])),
        max_calls=data.get("max_calls"), max_cps=data.get("max_cps"),
        direction=str(data.get("direction", "bidirectional")), weight=int(data.get("weight", 1)),
        version=entry.version,
    )


def _route_view(entry: DirectoryEntry) -> BaseModel:
    return Route.model_validate({**entry.data, "name": entry.name, "version": entry.version})


def _application_view(entry: DirectoryEntry) -> BaseModel:
    return Application.model_validate(
        {**entry.data, "name": entry.name, "version": entry.version})


@dataclass(frozen=True, slots=True, kw_only=True)
class Kind:
    """One resource of directory entries and its wire models."""

    kind: DirectoryKind
    plural: str
    label: str
    create: type[BaseModel]
    patch: type[BaseModel]
    spec: type[BaseModel]
    response: type[BaseModel]
    page: type[PageOf[Any]]
    view: Callable[[DirectoryEntry], BaseModel]
    rustpbx: str | None = None  # RustPBX's name of the resource (COMPAT.md), mounted as well


TRUNKS = Kind(kind="trunk", plural="trunks", label="trunk", create=TrunkCreate,
              patch=TrunkPatch, spec=TrunkSpec, response=Trunk, page=TrunkPage,
              view=_trunk_view, rustpbx="sip-trunk")
ROUTES = Kind(kind="route", plural="routes", label="route", create=RouteCreate,
              patch=RoutePatch, spec=RouteSpec, response=Route, page=RoutePage,
              view=_route_view, rustpbx="routing")
APPLICATIONS = Kind(kind="application", plural="applications", label="application",
                    create=ApplicationCreate, patch=ApplicationPatch, spec=ApplicationSpec,
                    response=Application, page=ApplicationPage, view=_application_view)


def _name(request: Request, kind: Kind) -> str:
    name = path_param(request, "name")
    if not _NAME.match(name):  # includes the reserved `_` names
        raise ApiError(404, f"no {kind.label} {name!r}")
    return name


def _data(model: BaseModel, exclude: set[str]) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude=exclude)


async def _page(kind: Kind, ctx: ApiContext, limit: int, cursor: str | None) -> Response:
    stores = await ctx.stores()
    try:
        page = await stores.directory.list_entries(kind.kind, limit=limit, cursor=cursor)
    except ValueError:
        raise bad_cursor() from None
    items = [kind.view(e) for e in page.items if _NAME.match(e.name)]
    return json_response(kind.page.model_validate({"items": items, "cursor": page.cursor}))


def _handlers(kind: Kind) -> dict[str, Handler]:
    async def list_(request: Request, ctx: ApiContext) -> Response:
        limit, cursor = page_args(request)
        return await _page(kind, ctx, limit, cursor)

    async def query(request: Request, ctx: ApiContext) -> Response:
        body = await read_optional_model(request, ListQuery)
        return await _page(kind, ctx, body.limit, body.cursor)

    async def create(request: Request, ctx: ApiContext) -> Response:
        body = await read_model(request, kind.create)
        name = str(getattr(body, "name"))  # noqa: B009 (every create model has `name`)
        entry = DirectoryEntry(kind=kind.kind, name=name, data=_data(body, {"name"}))
        stores = await ctx.stores()
        try:
            stored = await stores.directory.put_entry(entry, None)
        except Conflict:
            raise ApiError(409, f"{kind.label} {name!r} exists", field="name") from None
        location = f"{request.url.path.rstrip('/')}/{quote(name, safe='')}"
        return versioned(kind.view(stored), stored.version, 201, {"Location": location})

    async def get(request: Request, ctx: ApiContext) -> Response:
        stores = await ctx.stores()
        entry = await stores.directory.get_entry(kind.kind, _name(request, kind))
        return versioned(kind.view(entry), entry.version)

    async def patch(request: Request, ctx: ApiContext) -> Response:
        body = await read_model(request, kind.patch)
        changes: Mapping[str, Any] = body.model_dump(
            mode="json", exclude_unset=True, exclude={"version"})
        expected = expected_version(request, getattr(body, "version", None))
        name = _name(request, kind)
        stores = await ctx.stores()
        current = await stores.directory.get_entry(kind.kind, name)
        if expected is not None and expected != current.version:
            raise ApiError(409, f"{kind.label} is at version {current.version}, not {expected}",
                           field="version")
        # The merged entry is validated whole, so a patch cannot make it invalid.
        spec = kind.spec.model_validate({**current.data, **changes})
        entry = DirectoryEntry(kind=kind.kind, name=name, data=_data(spec, set()))
        stored = await stores.directory.put_entry(entry, current.version)
        return versioned(kind.view(stored), stored.version)

    async def delete(request: Request, ctx: ApiContext) -> Response:
        stores = await ctx.stores()
        await stores.directory.delete_entry(kind.kind, _name(request, kind))
        return Response(status_code=204)

    return {"list": list_, "query": query, "create": create, "get": get, "patch": patch,
            "delete": delete}


def endpoints(kind: Kind) -> tuple[Endpoint, ...]:
    h = _handlers(kind)
    ours = _endpoints(kind, h, kind.plural)
    if kind.rustpbx is None:
        return ours
    return (*ours, *(dataclasses.replace(
        ep, path=ep.path.replace(f"/{kind.plural}", f"/{kind.rustpbx}", 1), alias=True,
        summary=f"{ep.summary} (RustPBX path)") for ep in ours))


def _endpoints(kind: Kind, h: dict[str, Handler], base: str) -> tuple[Endpoint, ...]:
    many, one, tag, label = f"/{base}", f"/{base}/{{name}}", kind.plural, kind.label
    page_q = (("limit", "page size, 1..1000 (default 100)"),
              ("cursor", "the cursor of the previous page"))
    return (
        Endpoint(method="GET", path=many, handler=h["list"], scope="read",
                 summary=f"List {kind.plural}", tag=tag, response=kind.page, query=page_q),
        Endpoint(method="POST", path=f"{many}/query", handler=h["query"], scope="read",
                 summary=f"List {kind.plural} (RustPBX POST=list)", tag=tag, body=ListQuery,
                 response=kind.page, alias=True),
        Endpoint(method="POST", path=many, handler=h["create"], scope="write",
                 summary=f"Create a {label}", tag=tag, body=kind.create,
                 response=kind.response, status=201),
        Endpoint(method="PUT", path=many, handler=h["create"], scope="write",
                 summary=f"Create a {label} (RustPBX PUT=create)", tag=tag, body=kind.create,
                 response=kind.response, status=201, alias=True),
        Endpoint(method="GET", path=one, handler=h["get"], scope="read",
                 summary=f"Get a {label}", tag=tag, response=kind.response),
        Endpoint(method="PATCH", path=one, handler=h["patch"], scope="write",
                 summary=f"Update a {label} (versioned)", tag=tag, body=kind.patch,
                 response=kind.response),
        Endpoint(method="DELETE", path=one, handler=h["delete"], scope="write",
                 summary=f"Delete a {label}", tag=tag, status=204),
    )


ENDPOINTS: tuple[Endpoint, ...] = (
    *endpoints(TRUNKS), *endpoints(ROUTES), *endpoints(APPLICATIONS))

