"""Active calls: list them from the call records, and deliver commands to the owning edge.

`POST .../calls/active/{id}/commands` validates the command, finds the call's owning edge in the
`CallStore`, the edge's HTTP address in the `EdgeRegistry`, and POSTs the command there signed
with the secret the edges share with the control plane (`control.contracts.signing`; the edge's
`edge.io.commands` verifies it). Replies (COMPAT.md): 200 `{"message": "Command dispatched"}`,
400 bad body, 404 unknown call, 409 not deliverable (edge gone or unreachable), 501 a command
the edge does not carry out yet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from control.contracts.commands import parse_command
from control.contracts.signing import sign
from control.store.errors import NotFound
from control.store.models import CallRecord
from control.store.ports import Stores

log = logging.getLogger("sdpbx.control.calls")

COMMAND_TIMEOUT_S = 5.0


class EdgeCommandClient:
    """Delivers a command to an edge's internal endpoint over one pooled client."""

    def __init__(self, client: httpx.AsyncClient, *, secret: str, key_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        sign(b"", secret=secret, key_id=key_id, now=0)  # a bad secret fails now
        self._client = client
        self._secret = secret
        self._key_id = key_id
        self._clock = clock

    async def deliver(self, http_address: str, call_id: str, body: bytes) -> tuple[int, Any]:
        """(status, JSON reply) from the edge; (409, reason) when it cannot be reached."""
        url = f"http://{http_address}/internal/calls/{call_id}/commands"
        headers = {"Content-Type": "application/json",
                   **sign(body, secret=self._secret, key_id=self._key_id, now=self._clock())}
        try:
            reply = await self._client.post(url, content=body, headers=headers,
                                            timeout=COMMAND_TIMEOUT_S)
        except httpx.HTTPError as exc:
            log.warning("command not delivered to %s: %s", http_address, exc,
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
    stores: Stores, client: EdgeCommandClient, call_id: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    """Validate and deliver; (status, JSON body) for the API to answer."""
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
    status, reply = await client.deliver(edge.http_address, call_id,
                                         command.model_dump_json().encode())
    if status == 200:
        return 200, {"message": "Command dispatched", "data": {"edge_id": record.edge_id}}
    if isinstance(reply, dict) and "error" in reply:
        return status, reply
    message = reply if isinstance(reply, str) else f"the edge answered {status}"
    return status if status in (404, 409, 501) else 409, {
        "error": {"status": status, "message": message}}


__all__ = ["EdgeCommandClient", "call_summary", "get_active", "list_active", "send_command"]
