"""The management API's one ASGI application factory: the route table mounted under `/console`
and `/api/v1`, bearer-token scopes enforced per route, JSON errors everywhere, OpenAPI.

Served in-process by the edge in the embedded mode and by Mangum on Lambda
(`control.handlers`). `stores` is either opened stores or an async provider of them (a Lambda
opens its clients lazily, once per container, on the first request).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from control.api import (
    active_calls,
    cdr_deliveries,
    cdrs,
    directory,
    extensions,
    keys,
    outbound,
    status,
)
from control.api.active_calls import EdgeCommandClient
from control.api.auth import Authenticator
from control.api.endpoints import ApiContext, Endpoint
from control.api.errors import EXCEPTION_HANDLERS, JSON
from control.api.functions import Functions, edge_secrets_of
from control.api.openapi import build, render_html
from control.store.factory import StoresProvider, as_provider
from control.store.models import ApiKey
from control.store.ports import Stores

PREFIXES: tuple[str, ...] = ("/console", "/api/v1")
ENDPOINTS: tuple[Endpoint, ...] = (
    *status.ENDPOINTS, *extensions.ENDPOINTS, *directory.ENDPOINTS, *cdrs.ENDPOINTS,
    # /calls/active before /calls/{call_id}: routes match in order.
    *keys.ENDPOINTS, *active_calls.ENDPOINTS, *outbound.ENDPOINTS, *cdr_deliveries.ENDPOINTS)
DEFAULT_REALM = "sdpbx"


def _mount(ep: Endpoint, ctx: ApiContext, auth: Authenticator) -> Callable[
        [Request], Awaitable[Response]]:
    scope = ep.scope

    async def endpoint(request: Request) -> Response:
        if scope is not None:
            request.state.api_key = await auth.require(request, scope)
        return await ep.handler(request, ctx)

    endpoint.__name__ = getattr(ep.handler, "__name__", "endpoint")
    return endpoint


def create_app(
    stores: Stores | StoresProvider,
    *,
    realm: str = DEFAULT_REALM,
    edges_timeout_s: float = 5.0,
    key_cache_ttl_s: float = 30.0,
    clock: Callable[[], float] = time.time,
    monotonic: Callable[[], float] = time.monotonic,
    version: str | None = None,
    endpoints: Sequence[Endpoint] = ENDPOINTS,
    commands: EdgeCommandClient | None = None,
    edge_secrets: Mapping[str, str | bytes] | None = None,
) -> Starlette:
    """The management API.

    `realm` is where extensions are created when the body names none (the edge passes its first
    `[proxy] realms` entry); `edges_timeout_s` bounds each control-plane request to an edge
    (call commands); `key_cache_ttl_s` is how long a verified API key is trusted without a
    store read (and so how long a deleted key may still work). `clock` gives Unix time (CDR
    defaults, edge liveness), `monotonic` drives the key cache. `commands` delivers active-call
    commands to the owning edge (signed with the secret edges share); without it they get 409.
    `edge_secrets` (key id -> secret; default: the one `commands` signs with) verify the
    edges' signed requests to the control functions (`/functions/*`, `control.api.functions`);
    without any, only in-process requests of the embedded mode reach them.
    """
    provider = as_provider(stores)
    ctx = ApiContext(stores=provider, realm=realm, clock=clock,
                     edges_timeout_s=edges_timeout_s, fixed_version=version,
                     commands=commands)

    async def key_lookup() -> Callable[[str], Awaitable[ApiKey]]:
        return (await provider()).directory.get_api_key

    auth = Authenticator(key_lookup, clock=monotonic, ttl_s=key_cache_ttl_s)
    functions = Functions(
        edge_secrets if edge_secrets is not None else edge_secrets_of(commands),
        clock=clock, monotonic=monotonic)
    ctx.forget_key = auth.forget
    document: dict[str, Any] = {}

    def openapi_document() -> dict[str, Any]:
        if not document:
            document.update(build(endpoints, PREFIXES, ctx.version()))
            functions.add_to_openapi(document, ctx.version())
        return document

    async def openapi(request: Request) -> Response:
        return Response(json.dumps(openapi_document()), media_type=JSON)

    async def docs(request: Request) -> Response:
        return HTMLResponse(render_html(openapi_document()))

    routes = [Route("/openapi.json", openapi, methods=["GET"]),
              Route("/docs", docs, methods=["GET"]),
              Route("/health", _mount(status.HEALTH, ctx, auth), methods=["GET"])]
    for prefix in PREFIXES:
        routes += [Route(prefix + ep.path, _mount(ep, ctx, auth), methods=[ep.method])
                   for ep in endpoints]
    # The control functions the edge invokes: at the root, as `control:/functions/...` names them.
    routes += [Route(ep.path, _mount(ep, ctx, auth), methods=[ep.method])
               for ep in functions.endpoints]
    app = Starlette(routes=routes, exception_handlers=dict(EXCEPTION_HANDLERS))
    app.state.context = ctx
    app.state.authenticator = auth
    app.state.functions = functions
    return app
