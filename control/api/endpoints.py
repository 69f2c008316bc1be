"""The route table's building blocks: what an endpoint declares (method, path, scope, body and
reply models) and the request helpers every route shares.

One `Endpoint` feeds both the Starlette routing (`control.api.app`) and the OpenAPI document
(`control.api.openapi`), so the two cannot drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from control.api.errors import JSON, ApiError
from control.store.ports import Stores

if TYPE_CHECKING:
    from control.api.active_calls import EdgeCommandClient

M = TypeVar("M", bound=BaseModel)
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_IF_MATCH = re.compile(r'^\s*(?:W/)?"?(\d{1,18})"?\s*$')


@dataclass(slots=True, kw_only=True)
class ApiContext:
    """What routes need, built once per app."""

    stores: Callable[[], Awaitable[Stores]]
    realm: str
    clock: Callable[[], float]
    edges_timeout_s: float
    fixed_version: str | None = None
    forget_key: Callable[[str], None] = lambda key_id: None  # drop a revoked key from caches
    commands: EdgeCommandClient | None = None  # delivers active-call commands to edges

    def version(self) -> str:
        if self.fixed_version is None:
            self.fixed_version = package_version()
        return self.fixed_version


def package_version() -> str:
    # Imported here: importlib.metadata costs ~15 ms of cold start, and only /health and the
    # OpenAPI document need the version.
    import importlib.metadata

    try:
        return importlib.metadata.version("sdpbx")
    except importlib.metadata.PackageNotFoundError:  # a Lambda package built from the tree
        return "0+unknown"


Handler = Callable[[Request, ApiContext], Awaitable[Response]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Endpoint:
    """One route, mounted under every API prefix (`/console`, `/api/v1`)."""

    method: str
    path: str  # relative to the prefix, with {params}
    handler: Handler
    scope: str | None  # None: no token needed
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    query: tuple[tuple[str, str], ...] = ()  # (name, description)
    alias: bool = False  # a RustPBX-style verb for the same operation


def json_response(
    model: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(model.model_dump_json(), status_code=status, media_type=JSON,
                    headers=headers)


def versioned(model: BaseModel, version: int, status: int = 200,
              headers: dict[str, str] | None = None) -> Response:
    """A record reply with its version as the ETag, for a later `If-Match`."""
    return json_response(model, status, {**(headers or {}), "ETag": f'"{version}"'})


async def read_json(request: Request) -> object:
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "a JSON body is required")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None


async def read_model(request: Request, model: type[M]) -> M:
    """The body parsed as `model`: 400 if it is not JSON, 422 (pydantic) if it does not fit."""
    return model.model_validate(await read_json(request))


async def read_optional_model(request: Request, model: type[M]) -> M:
    """Like `read_model`, but an empty body means the model's defaults."""
    raw = await request.body()
    if not raw.strip():
        return model.model_validate({})
    return await read_model(request, model)


def expected_version(request: Request, body_version: int | None) -> int | None:
    """The version a write is conditional on: `version` in the body or `If-Match` (RFC 9110
    §13.1.1); both given and different is a 409 at once."""
    header = request.headers.get("if-match")
    from_header: int | None = None
    if header is not None:
        match = _IF_MATCH.match(header)
        if match is None:
            raise ApiError(400, 'If-Match must be a version, e.g. "3"', field="If-Match")
        from_header = int(match.group(1))
    if from_header is not None and body_version is not None and from_header != body_version:
        raise ApiError(409, "If-Match and version disagree")
    return body_version if body_version is not None else from_header


def page_args(request: Request) -> tuple[int, str | None]:
    """`limit` and `cursor` of a listing's query string."""
    raw = request.query_params.get("limit")
    limit = DEFAULT_LIMIT
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise ApiError(422, "limit: must be an integer", field="limit") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise ApiError(422, f"limit: must be 1..{MAX_LIMIT}", field="limit")
    return limit, request.query_params.get("cursor") or None


def bad_cursor() -> ApiError:
    return ApiError(400, "cursor: not a cursor this API handed out", field="cursor")


def path_param(request: Request, name: str) -> str:
    value = request.path_params[name]
    assert isinstance(value, str)
    return value
