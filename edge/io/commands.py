"""The edge's internal endpoints: `POST /internal/calls/{call_id}/commands` (active-call
commands) and `POST /internal/calls` (place a call for the outbound-call API).

Only the control plane may call it: every request must carry the signature the webhooks use
(`X-Sdpbx-Signature`, HMAC-SHA256 over timestamp and body, `control.contracts.signing`) made with
the `[webhooks]` secret that the control plane shares (the SAM stack's edge secret); anything else
gets 401. The bodies are `control.contracts.commands` and `control.contracts.calls.Originate`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.contracts.calls import ORIGINATE_PATH, Originate
from control.contracts.commands import parse_command
from control.contracts.ncco import AnyStep
from control.contracts.signing import verification_failure
from edge.io.applications import ApplicationClient, EventChannel
from edge.pbx.application import AppSpec, CallApplication, MediaServices
from edge.pbx.calls import CallManager, Origination
from edge.pbx.commands import execute

log = logging.getLogger("sdpbx.commands")

COMMANDS_PATH = "/internal/calls/{call_id}/commands"


def command_route(
    calls: CallManager, *, secrets: dict[str, str], clock: Callable[[], float] = time.time
) -> Route:
    """The Starlette route that carries out commands on `calls`."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        refused = _unverified(request, body, secrets, clock)
        if refused is not None:
            return refused
        try:
            command = parse_command(body)
        except ValidationError as exc:
            return _bad_body(exc)
        call_id = request.path_params["call_id"]
        outcome = await execute(calls, call_id, command)
        log.info("command %s: %d %s", command.action, outcome.status, outcome.message,
                 extra={"call_id": call_id})
        if outcome.status == 200:
            return JSONResponse({"message": outcome.message})
        return JSONResponse({"error": {"status": outcome.status, "message": outcome.message}},
                            status_code=outcome.status)

    return Route(COMMANDS_PATH, endpoint, methods=["POST"])


def originate_route(
    calls: CallManager, *, secrets: dict[str, str], applications: ApplicationClient,
    domain: str, edge_id: str, clock: Callable[[], float] = time.time,
    media: MediaServices | None = None,
    fallback: Sequence[AnyStep] = (),
) -> Route:
    """The Starlette route that places calls for the outbound-call API: the call is rung
    and its application (`edge.pbx.application.CallApplication`) runs once it answers."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        refused = _unverified(request, body, secrets, clock)
        if refused is not None:
            return refused
        try:
            order = Originate.model_validate_json(body)
        except ValidationError as exc:
            return _bad_body(exc)
        wanted = order.request
        reply = {"uuid": order.call_id, "status": "started", "direction": "outbound",
                 "edge_id": edge_id}
        existing = calls.calls.get(order.call_id)
        if existing is not None and isinstance(existing.hooks, CallApplication):
            # A repeated delivery (the control plane retried): the call rings once.
            return JSONResponse({**reply, "status": existing.hooks.final_status or "started",
                                 "conversation_uuid": existing.hooks.conversation_uuid})
        application = CallApplication(
            calls=calls, call_id=order.call_id, spec=AppSpec.outbound(wanted),
            fetcher=applications, events=EventChannel(applications), clock=clock, media=media,
            fallback=fallback,
        )
        spec = Origination(
            call_id=order.call_id, to=wanted.to, from_user=wanted.from_ or "anonymous",
            domain=domain, ring_time_s=float(wanted.timeout),
            max_duration_s=float(wanted.length_timer) if wanted.length_timer else None,
            record=wanted.record, headers=tuple(wanted.headers.items()),
            version=order.record_version,
        )
        try:
            call = await calls.originate(spec, application)
        except ValueError as exc:
            return JSONResponse({"error": {"status": 503, "message": str(exc)}},
                                status_code=503)
        call.store_data.update(origin="api", request_sha256=wanted.fingerprint())
        application.started()
        log.info("placing a call to %s", wanted.to, extra={"call_id": order.call_id})
        return JSONResponse({**reply, "conversation_uuid": application.conversation_uuid},
                            status_code=201)

    return Route(ORIGINATE_PATH, endpoint, methods=["POST"])


def _unverified(request: Request, body: bytes, secrets: dict[str, str],
                clock: Callable[[], float]) -> Response | None:
    failure = verification_failure(body, request.headers, secrets=secrets, now=clock())
    if failure is None:
        return None
    log.warning("internal request refused: %s", failure,
                extra={"peer": request.client.host if request.client else "-"})
    return JSONResponse({"error": {"status": 401, "message": failure}}, status_code=401)


def _bad_body(exc: ValidationError) -> Response:
    first = exc.errors(include_url=False, include_input=False)[0]
    field = ".".join(str(part) for part in first["loc"]) or None
    return JSONResponse({"error": {"status": 400, "message": first["msg"], "field": field}},
                        status_code=400)


__all__ = ["COMMANDS_PATH", "command_route", "originate_route"]
