"""Wire models shared by every management API route: the error body, pages, CDR index entries,
status and reload replies.

Every error the API answers is `{"error": {"status": 422, "message": "...", "field": "password"}}`
(`field` only when one input is at fault, dotted like pydantic's location). Listings are pages
`{"items": [...], "cursor": "..."}`: pass `cursor` back to get the next page (null: no more).
Pydantic and the stdlib only (Lambda code).
"""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    status: int = Field(ge=400, le=599)
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    error: ErrorDetail


class PageOf(BaseModel, Generic[T]):
    """One page of a listing."""

    model_config = ConfigDict(defer_build=True)

    items: list[T]
    cursor: str | None = None


class ListQuery(BaseModel):
    """The body of the RustPBX-style `POST .../query` alias of a listing."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class CdrIndexEntry(BaseModel):
    """One call in a CDR query: the index entry; the whole CDR is at `/call-records/{id}`."""

    model_config = ConfigDict(defer_build=True)


    call_id: str
    start_time: str  # RFC 3339 UTC
    end_time: str
    caller: str
    callee: str
    direction: str
    status: str
    duration: float
    has_recording: bool
    edge_id: str


class CdrPage(PageOf[CdrIndexEntry]):
    pass


class CdrQueryBody(BaseModel):
    """The body of `POST /call-records/query` (the query string of `GET /call-records`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    from_: str | float | None = Field(default=None, alias="from")
    to: str | float | None = None
    caller: str | None = None
    callee: str | None = None
    status: str | None = None
    direction: str | None = None
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = None


class EdgeStatus(BaseModel):

    model_config = ConfigDict(defer_build=True)

    edge_id: str
    sip_addresses: list[str]
    http_address: str
    load: int
    started_at: float
    heartbeat_at: float


class SystemStatus(BaseModel):

    model_config = ConfigDict(defer_build=True)

    edges: list[EdgeStatus]
    active_calls: int
    active_calls_capped: bool  # true when there were more than the API counts in one request
    registrations: int
    directory_revision: int


class ReloadAccepted(BaseModel):

    model_config = ConfigDict(defer_build=True)

    status: str = "accepted"
    revision: int


class Health(BaseModel):

    model_config = ConfigDict(defer_build=True)

    status: str
    service: str
    version: str


class ApiKeyCreate(BaseModel):
    """`scopes` from read, write, calls, admin (admin implies the others)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    scopes: list[Literal["read", "write", "calls", "admin"]] = Field(min_length=1)
    name: str = Field(default="", max_length=128)


class ApiKeyView(BaseModel):
    """A stored key: never its secret."""

    model_config = ConfigDict(defer_build=True)

    key_id: str
    scopes: list[str]
    name: str
    created_at: float


class ApiKeyCreated(ApiKeyView):
    """The reply to a create: `token` is shown this once and cannot be recovered."""

    token: str


class ApiKeyList(BaseModel):
    model_config = ConfigDict(defer_build=True)

    items: list[ApiKeyView]
