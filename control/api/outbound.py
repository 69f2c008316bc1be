"""The outbound-call API: `POST /api/v1/calls` places a call, `GET /api/v1/calls/{uuid}` tells
where it is.

Placing a call: the body (`control.contracts.calls.CreateCall`) is validated, an edge is chosen
(alive, least loaded by its heartbeat), the call record is created in the `CallStore` owned by
that edge, and the edge is asked (signed, `Originate`) to ring `to`; it then runs the steps
and reports status events to `event_url` itself.

`Idempotency-Key` (per API key, as Stripe scopes them): the call's id is derived from the key,
so the record's conditional create is the lock. A repeat with the same body within 24 hours
gets the same call back (200, `Idempotent-Replayed: true`) and nothing rings again; another
body is 409; after 24 hours the key starts a new call. If no edge accepted the call, its record
is removed again, so a retry with the same key tries afresh.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import ApiContext, Endpoint, json_response, path_param, read_model
from control.api.errors import JSON, ApiError
from control.contracts.calls import (
    IDEMPOTENCY_WINDOW_S,
    CallCreated,
    CreateCall,
    Originate,
    conversation_uuid,
)
from control.store.errors import Conflict, NotFound
from control.store.models import CallRecord, EdgeInfo
from control.store.ports import Stores

IDEMPOTENCY_HEADER = "Idempotency-Key"
_STATUS_OF_STATE = {"trying": "started", "ringing": "ringing", "answered": "answered",
                    "completed": "completed", "failed": "failed"}


def call_id_for(key_id: str, idempotency_key: str | None) -> str:
    """The call's id: derived from the API key and the Idempotency-Key, else random."""
    if idempotency_key is None:
        return f"api-{uuid.uuid4().hex}"
    digest = hashlib.sha256(f"{key_id}\n{idempotency_key}".encode()).hexdigest()
    return f"api-{digest[:32]}"


def _idempotency_key(request: Request) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not value.isprintable():
        raise ApiError(400, "Idempotency-Key: 1 to 255 printable characters",
                       field=IDEMPOTENCY_HEADER)
    return value


def _least_loaded(edges: list[EdgeInfo]) -> EdgeInfo:
    if not edges:
        raise ApiError(503, "no edge is alive to place the call")
    return min(edges, key=lambda edge: (edge.load, edge.edge_id))


def _status_of(record: CallRecord) -> str:
    return str(record.data.get("app_status") or _STATUS_OF_STATE.get(record.state, record.state))


def _created(record: CallRecord) -> CallCreated:
    return CallCreated(uuid=record.call_id, status=_status_of(record),
                       conversation_uuid=conversation_uuid(record.call_id), edge_id=record.edge_id)


async def _claim(stores: Stores, record: CallRecord, now: float) -> CallRecord | None:
    """Create the record; None when the key is taken by a call younger than 24 h (whose
    record the caller then reads)."""
    for _ in range(2):
        try:
            return await stores.calls.create(record)
        except Conflict:
            try:
                existing = await stores.calls.get(record.call_id)
            except NotFound:
                continue  # removed meanwhile (its edge refused it): take the key
            if existing.created_at >= now - IDEMPOTENCY_WINDOW_S or existing.active:
                return None
            await stores.calls.delete(record.call_id)  # an expired key starts a new call
    raise ApiError(409, "the Idempotency-Key is in use by a request in progress",
                   field=IDEMPOTENCY_HEADER)


async def _create(request: Request, ctx: ApiContext) -> Response:
    body = await read_model(request, CreateCall)
    key = _idempotency_key(request)
    stores = await ctx.stores()
    now = ctx.clock()
    call_id = call_id_for(request.state.api_key.key_id, key)
    fingerprint = body.fingerprint()
    edge = _least_loaded(await stores.edges.alive(now))
    record = CallRecord(
        call_id=call_id, edge_id=edge.edge_id, state="trying", direction="outbound",
        caller=body.from_ or "", callee=body.to, created_at=now, updated_at=now,
        data={"origin": "api", "request_sha256": fingerprint},
    )
    stored = await _claim(stores, record, now)
    if stored is None:
        existing = await stores.calls.get(call_id)
        if existing.data.get("request_sha256") != fingerprint:
            raise ApiError(409, "this Idempotency-Key was used with another body",
                           field=IDEMPOTENCY_HEADER)
        return json_response(_created(existing), 200, {"Idempotent-Replayed": "true"})
    if ctx.commands is None:
        await stores.calls.delete(call_id)
        raise ApiError(503, "no edge secret configured: calls cannot be placed")
    order = Originate(call_id=call_id, request=body, record_version=stored.version)
    status, reply = await ctx.commands.originate(
        edge.http_address, call_id, order.model_dump_json(by_alias=True).encode())
    if status not in (200, 201):
        await stores.calls.delete(call_id)
        message = reply.get("error", {}).get("message") if isinstance(reply, dict) else reply
        raise ApiError(503 if status in (409, 503) else 502,
                       f"edge {edge.edge_id} did not place the call: {message or status}")
    return json_response(_created(stored), 201, {"Location": f"calls/{call_id}"})


async def _get(request: Request, ctx: ApiContext) -> Response:
    call_id = path_param(request, "call_id")
    try:
        record = await (await ctx.stores()).calls.get(call_id)
    except NotFound:
        raise ApiError(404, f"no call {call_id!r}") from None
    return Response(json.dumps(call_view(record)), media_type=JSON)


def call_view(record: CallRecord) -> dict[str, Any]:
    data = record.data
    return {
        "uuid": record.call_id,
        "conversation_uuid": conversation_uuid(record.call_id),
        "status": _status_of(record),
        "direction": record.direction,
        "from": record.caller,
        "to": record.callee,
        "edge_id": record.edge_id,
        "created_at": record.created_at,
        "answered_at": record.answered_at,
        "ended_at": record.ended_at,
        "hangup_reason": data.get("hangup_reason"),
        "status_code": data.get("status_code"),
    }


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="POST", path="/calls", handler=_create, scope="calls", body=CreateCall,
             response=CallCreated, status=201, tag="calls",
             summary="Place a call and run steps on it (Idempotency-Key makes retries safe)"),
    Endpoint(method="GET", path="/calls/{call_id}", handler=_get, scope="calls", tag="calls",
             summary="A call's status (any call, active or ended)"),
)

__all__ = ["ENDPOINTS", "IDEMPOTENCY_HEADER", "call_id_for", "call_view"]
