"""The API's errors and how each becomes the one JSON error body.

`{"error": {"status": 422, "message": "...", "field": "password"}}` for everything: our own
`ApiError`s, Starlette's routing misses (404/405), pydantic validation (422, `field` is the dotted
location of the first error), and the store's domain errors (`NotFound` 404, `Conflict` 409,
`StoreUnavailable` 503). Messages never echo input values (a bad password stays unseen).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from control.contracts.api import ErrorBody, ErrorDetail
from control.store.errors import Conflict, NotFound, StoreUnavailable

JSON = "application/json"


class ApiError(Exception):
    """An error reply: raise it anywhere below a route."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})


def error_response(
    status: int,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = ErrorBody(error=ErrorDetail(status=status, message=message, field=field))
    return Response(
        body.model_dump_json(exclude_none=True), status_code=status, media_type=JSON,
        headers=dict(headers or {}),
    )


def location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


async def on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, exc.field, exc.headers)


async def on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), headers=exc.headers)


async def on_validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    first = exc.errors(include_url=False, include_input=False)[0]
    field = location(first["loc"]) or None
    message = f"{field}: {first['msg']}" if field else str(first["msg"])
    return error_response(422, message, field)


async def on_not_found(request: Request, exc: Exception) -> Response:
    return error_response(404, str(exc) or "not found")


async def on_conflict(request: Request, exc: Exception) -> Response:
    return error_response(409, str(exc) or "conflict: re-read and try again")


async def on_unavailable(request: Request, exc: Exception) -> Response:
    # The store gave up after its own retries: tell the client to come back shortly.
    return error_response(503, "the store is unavailable, retry later",
                          headers={"Retry-After": "1"})


async def on_unexpected(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware sends this and then re-raises, so the error is logged
    # (and Mangum logs it on Lambda); the client still gets the JSON shape, without details.
    return error_response(500, "internal error")


EXCEPTION_HANDLERS = {
    Exception: on_unexpected,
    ApiError: on_api_error,
    HTTPException: on_http_error,
    ValidationError: on_validation_error,
    NotFound: on_not_found,
    Conflict: on_conflict,
    StoreUnavailable: on_unavailable,
}
