"""`/status` (edges alive with their load, active calls, registrations), `/reload`, `/health`.

How reload reaches the edges: every directory write bumps `DirectoryStore.revision()`, and each
edge polls that counter (every ~2 s, `edge/pbx/users.py`) and reloads its directory caches when it
moved. So changes made through this API apply by themselves; `POST /reload` forces a reload by
writing the marker entry (kind `route`, name `_reload`, data: who and when), whose write bumps the
revision like any other. Loaders of route entries skip names starting with `_` (reserved; the API
hides them). Calls in progress are not touched: only new decisions read the new directory.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import ApiContext, Endpoint, json_response
from control.contracts.api import EdgeStatus, Health, ReloadAccepted, SystemStatus
from control.store.errors import Conflict, NotFound
from control.store.models import DirectoryEntry, DirectoryKind

RELOAD_KIND: DirectoryKind = "route"
RELOAD_NAME = "_reload"
ACTIVE_PAGE = 1000
ACTIVE_MAX_PAGES = 10  # count at most 10,000 active calls per status request


async def health(request: Request, ctx: ApiContext) -> Response:
    return json_response(Health(status="ok", service="sdpbx-control", version=ctx.version()))


async def status(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    now = ctx.clock()
    edges = await stores.edges.alive(now)
    active, capped, cursor = 0, False, None
    for _ in range(ACTIVE_MAX_PAGES):
        page = await stores.calls.list_active(limit=ACTIVE_PAGE, cursor=cursor)
        active += len(page.items)
        cursor = page.cursor
        if cursor is None:
            break
    else:
        capped = cursor is not None
    body = SystemStatus(
        edges=[
            EdgeStatus(edge_id=e.edge_id, sip_addresses=list(e.sip_addresses),
                       http_address=e.http_address, load=e.load, started_at=e.started_at,
                       heartbeat_at=e.heartbeat_at)
            for e in sorted(edges, key=lambda e: e.edge_id)
        ],
        active_calls=active,
        active_calls_capped=capped,
        registrations=await stores.registrations.count(now),
        directory_revision=await stores.directory.revision(),
    )
    return json_response(body)


async def reload(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    data = {"requested_at": ctx.clock()}
    for _ in range(5):  # two reloads at once: the loser re-reads; either bump is enough
        try:
            current = await stores.directory.get_entry(RELOAD_KIND, RELOAD_NAME)
        except NotFound:
            expected = None
        else:
            expected = current.version
        try:
            await stores.directory.put_entry(
                DirectoryEntry(kind=RELOAD_KIND, name=RELOAD_NAME, data=data), expected)
        except (Conflict, NotFound):
            continue
        break
    revision = await stores.directory.revision()
    return json_response(ReloadAccepted(revision=revision), 202)


HEALTH = Endpoint(method="GET", path="/health", handler=health, scope=None,
                  summary="Liveness (no token needed)", tag="system", response=Health)
ENDPOINTS: tuple[Endpoint, ...] = (
    HEALTH,
    Endpoint(method="GET", path="/status", handler=status, scope="read",
             summary="Edges with their load, active calls, registrations", tag="system",
             response=SystemStatus),
    Endpoint(method="POST", path="/reload", handler=reload, scope="admin",
             summary="Make edges reload the directory now", tag="system",
             response=ReloadAccepted, status=202),
)
