"""Active calls: list them from the call records, and deliver commands to the owning edge.

`POST .../calls/active/{id}/commands` validates the command, finds the call's owning edge in the
`CallStore`, the edge's HTTP address in the `EdgeRegistry`, and POSTs the command there signed
with the secret the edges share with the control plane (`control.contracts.signing`; the edge's
`edge.io.commands` verifies it). Replies (COMPAT.md): 200 `{"message": "Command dispatched"}`,
400 bad body, 404 unknown call, 409 not deliverable (edge gone or unreachable), 501 a command
the edge does not carry out yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import ApiContext, Endpoint, page_args
from control.api.errors import JSON, ApiError
from control.contracts.calls import ORIGINATE_PATH
from control.contracts.commands import parse_command
from control.contracts.signing import sign
from control.store.errors import NotFound
from control.store.models import CallRecord
from control.store.ports import Stores

if TYPE_CHECKING:  # httpx is imported when a command is sent, not at a Lambda's cold start
    import httpx

log = logging.getLogger("sdpbx.control.calls")

COMMAND_TIMEOUT_S = 5.0


class EdgeCommandClient:
    """Delivers a command to an edge's internal endpoint over one pooled client."""

    def __init__(self, client: httpx.AsyncClient | None, *, secret: str, key_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        """`client` None: one is made at the first command (a Lambda then pays for httpx
        only when it sends one)."""
        sign(b"", secret=secret, key_id=key_id, now=0)  # a bad secret fails now
        self._client = client
        self._secret = secret
        self._key_id = key_id
        self._clock = clock

    @property
    def signing_key(self) -> tuple[str, str]:
        """(key id, secret): what edges sign their requests to the control plane with too."""
        return self._key_id, self._secret

    async def deliver(self, http_address: str, call_id: str, body: bytes) -> tuple[int, Any]:
        """(status, JSON reply) from the edge; (409, reason) when it cannot be reached."""
        return await self._post(f"http://{http_address}/internal/calls/{call_id}/commands",
                                http_address, call_id, body)

    async def originate(self, http_address: str, call_id: str, body: bytes) -> tuple[int, Any]:
        """Ask an edge to place a call (`control.contracts.calls.Originate`); like `deliver`."""
        return await self._post(f"http://{http_address}{ORIGINATE_PATH}", http_address,
                                call_id, body)

    async def _post(self, url: str, http_address: str, call_id: str,
                    body: bytes) -> tuple[int, Any]:
        import httpx

        headers = {"Content-Type": "application/json",
                   **sign(body, secret=self._secret, key_id=self._key_id, now=self._clock())}
        if self._client is None:
            self._client = httpx.AsyncClient()
        try:
            reply = await self._client.post(url, content=body, headers=headers,
                                            timeout=COMMAND_TIMEOUT_S)
        except httpx.HTTPError as exc:
            log.warning("request not delivered to edge %s: %s", http_address, exc,
                        extra={"call_id": call_id})
            return 409, f"the call's edge is unreachable ({type(exc).__name__})"
        try:
            payload = reply.json()
        except ValueError:
            payload = None
        return reply.status_code, payload


def call_summary(record: CallRecord) -> dict[str, Any]:
    """The COMPAT shape of an active call."""
    return {
        "session_id": record.call_id,
        "caller": record.caller,
        "callee": record.callee,
        "direction": record.direction,
        "started_at": record.created_at,
        "answered_at": record.answered_at,
        "status": record.state,
        "edge_id": record.edge_id,
    }


async def list_active(stores: Stores, *, limit: int, cursor: str | None) -> dict[str, Any]:
    page = await stores.calls.list_active(limit=limit, cursor=cursor)
    return {"items": [call_summary(r) for r in page.items], "cursor": page.cursor}


async def get_active(stores: Stores, call_id: str) -> dict[str, Any] | None:
    try:
        record = await stores.calls.get(call_id)
    except NotFound:
        return None
    return call_summary(record) if record.active else None


async def send_command(
    stores: Stores, client: EdgeCommandClient | None, call_id: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    """Validate and deliver; (status, JSON body) for the API to answer. Without a `client`
    (no edge secret configured) a valid command for a live call is 409."""
    try:
        command = parse_command(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or None
        return 400, {"error": {"status": 400, "message": first["msg"], "field": field}}
    try:
        record = await stores.calls.get(call_id)
    except NotFound:
        record = None
    if record is None or not record.active:
        return 404, {"error": {"status": 404, "message": f"no active call {call_id!r}"}}
    try:
        edge = await stores.edges.get(record.edge_id)
    except NotFound:
        return 409, {"error": {"status": 409,
                               "message": f"edge {record.edge_id!r} is not registered"}}
    if edge.expires_at and edge.expires_at < time.time():
        return 409, {"error": {"status": 409,
                               "message": f"edge {record.edge_id!r} missed its heartbeats"}}
    if client is None:
        return 409, {"error": {"status": 409, "message":
                               "no edge secret configured: commands cannot be delivered"}}
    status, reply = await client.deliver(edge.http_address, call_id,
                                         command.model_dump_json().encode())
    if status == 200:
        return 200, {"message": "Command dispatched", "data": {"edge_id": record.edge_id}}
    if isinstance(reply, dict) and "error" in reply:
        return status, reply
    message = reply if isinstance(reply, str) else f"the edge answered {status}"
    return status if status in (404, 409, 501) else 409, {
        "error": {"status": status, "message": message}}


# --- the API routes ------------------------------------------------------------------------


async def _list(request: Request, ctx: ApiContext) -> Response:
    limit, cursor = page_args(request)
    body = await list_active(await ctx.stores(), limit=limit, cursor=cursor)
    return Response(json.dumps(body), media_type=JSON)


async def _get(request: Request, ctx: ApiContext) -> Response:
    call_id = request.path_params["call_id"]
    found = await get_active(await ctx.stores(), call_id)
    if found is None:
        raise ApiError(404, f"no active call {call_id!r}")
    return Response(json.dumps(found), media_type=JSON)


async def _command(request: Request, ctx: ApiContext) -> Response:
    status, body = await send_command(await ctx.stores(), ctx.commands,
                                      request.path_params["call_id"], await request.body())
    return Response(json.dumps(body), status_code=status, media_type=JSON)


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="GET", path="/calls/active", handler=_list, scope="calls",
             summary="List the active calls of every edge", tag="calls",
             query=(("limit", "page size (1..1000)"), ("cursor", "from the previous page"))),
    Endpoint(method="GET", path="/calls/active/{call_id}", handler=_get, scope="calls",
             summary="One active call", tag="calls"),
    Endpoint(method="POST", path="/calls/active/{call_id}/commands", handler=_command,
             scope="calls", summary="Send a command (hangup, mute, unmute...) to a call",
             tag="calls"),
)

__all__ = [
    "ENDPOINTS",
    "EdgeCommandClient",
    "call_summary",
    "get_active",
    "list_active",
    "send_command",
]
