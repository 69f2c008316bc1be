"""The edge's internal command endpoint: `POST /internal/calls/{call_id}/commands`.

Only the control plane may call it: every request must carry the signature the webhooks use
(`X-Sdpbx-Signature`, HMAC-SHA256 over timestamp and body, `control.contracts.signing`) made with
the `[webhooks]` secret that the control plane shares (the SAM stack's edge secret); anything else
gets 401. The body is the command JSON of `control.contracts.commands`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.contracts.commands import parse_command
from control.contracts.signing import verification_failure
from edge.pbx.calls import CallManager
from edge.pbx.commands import execute

log = logging.getLogger("sdpbx.commands")

COMMANDS_PATH = "/internal/calls/{call_id}/commands"


def command_route(
    calls: CallManager, *, secrets: dict[str, str], clock: Callable[[], float] = time.time
) -> Route:
    """The Starlette route that carries out commands on `calls`."""

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        failure = verification_failure(body, request.headers, secrets=secrets, now=clock())
        if failure is not None:
            log.warning("command refused: %s", failure,
                        extra={"peer": request.client.host if request.client else "-"})
            return JSONResponse({"error": {"status": 401, "message": failure}}, status_code=401)
        try:
            command = parse_command(body)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            field = ".".join(str(part) for part in first["loc"]) or None
            return JSONResponse(
                {"error": {"status": 400, "message": first["msg"], "field": field}},
                status_code=400,
            )
        call_id = request.path_params["call_id"]
        outcome = await execute(calls, call_id, command)
        log.info("command %s: %d %s", command.action, outcome.status, outcome.message,
                 extra={"call_id": call_id})
        if outcome.status == 200:
            return JSONResponse({"message": outcome.message})
        return JSONResponse({"error": {"status": outcome.status, "message": outcome.message}},
                            status_code=outcome.status)

    return Route(COMMANDS_PATH, endpoint, methods=["POST"])


__all__ = ["COMMANDS_PATH", "command_route"]
