"""AWS Lambda entry points of the control plane: Mangum adapters around Starlette apps.

`handler` is what `template.yaml` names (`control.handlers.handler`). Clients and apps are built
once here, at cold start, never per request. Imports nothing from `edge` and no numpy, so the
function package stays small and starts fast.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

from mangum import Mangum
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def _version() -> str:
    try:
        return importlib.metadata.version("sdpbx")
    except importlib.metadata.PackageNotFoundError:  # a Lambda package built from the tree
        return "0+unknown"


VERSION = _version()


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "service": "sdpbx-control", "version": VERSION})


async def _json_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # registered for HTTPException only
        raise exc
    body: dict[str, Any] = {"error": exc.detail, "status": exc.status_code,
                            "path": request.url.path}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


app = Starlette(
    routes=[Route("/health", health, methods=["GET"])],
    exception_handlers={HTTPException: _json_error},
)

# lifespan "off": nothing to start per container yet; API Gateway HTTP API (payload v2) events.
handler = Mangum(app, lifespan="off")
