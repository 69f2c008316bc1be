"""The call routing webhook's wire format (COMPAT.md, "Call routing webhook").

On each new INVITE the edge POSTs a `RouteRequest` (JSON, signed like every webhook) to
`[proxy.http_router] url`; the 2xx reply body is a `RouteResponse`. Field names and meanings are
RustPBX's (`src/proxy/routing/http.rs`), so an existing RustPBX router works unchanged:

    {"call_id": "...", "from": "<sip:1001@pbx>;tag=a", "to": "<sip:2002@pbx>",
     "source_addr": "198.51.100.7:5060", "direction": "internal", "method": "INVITE",
     "uri": "sip:2002@pbx", "headers": {"Via": "...", ...}, "body": "v=0..."}
    {"action": "forward", "targets": ["sip:2002@pbx"], "strategy": "sequential", ...}

Replies are parsed leniently where RustPBX is (unknown fields ignored, `null` for a list or an
object means empty) and strictly where a bad value would reach the SIP wire: a header name must
be a token and a value may not contain a line break, so a reply cannot inject SIP headers.
Parse a reply with `RouteResponse.model_validate_json(body)`; every problem, including a body
that is not JSON at all, is a `pydantic.ValidationError`. Stdlib and pydantic only (Lambda code).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

Direction = Literal["inbound", "internal", "outbound"]
RouteAction = Literal["forward", "reject", "abort", "not_handled", "spam", "answer"]
Strategy = Literal["sequential", "parallel"]
ROUTE_ACTIONS: frozenset[str] = frozenset(
    {"forward", "reject", "abort", "not_handled", "spam", "answer"}
)

# RFC 3261 §25.1: header-name = token.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# A value that would end the header line (or the header section) early.
_LINE_BREAKS = frozenset("\r\n\x00")
_HTTP_URL = re.compile(r"https?://[^\s/?#]+\S*", re.IGNORECASE)


def _or_empty_list(value: object) -> object:
    # RustPBX declares these `Option<...>`: null is accepted and means "none".
    return [] if value is None else value


def _or_empty_dict(value: object) -> object:
    return {} if value is None else value


def _or_false(value: object) -> object:
    return False if value is None else value


def _or_sequential(value: object) -> object:
    return "sequential" if value is None else value


Seconds = Annotated[float, Field(ge=0)]


class RouteRequest(BaseModel):
    """What the edge POSTs for each new INVITE.

    `from_` is the `from` field on the wire (a Python keyword): build with either name and
    serialise with `model_dump(by_alias=True)` (or `model_dump_json(by_alias=True)`).
    """

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True,
                              defer_build=True)

    call_id: str = Field(description="The Call-ID of the INVITE.")
    from_: str = Field(
        alias="from", description="The From header value as received, with its tag."
    )
    to: str = Field(description="The To header value as received.")
    source_addr: str = Field(
        description="Where the INVITE really came from (after NAT): \"ip:port\", IPv6 in "
        "brackets."
    )
    direction: Direction = Field(
        description="inbound: from a trunk; internal: from a registered user; outbound: to a "
        "trunk."
    )
    method: str = Field(default="INVITE", description="The SIP method (INVITE).")
    uri: str = Field(description="The Request-URI.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Header name (as received) -> value; repeated headers joined with \", \".",
    )
    body: str = Field(default="", description="The message body (the SDP offer), as text.")


class RouteResponse(BaseModel):
    """The router's 2xx reply.

    - `forward`: ring `targets` (at least one; SIP URIs; a bare extension like "1001", or a
      URI in one of our domains, is looked up in the registrar) one after the other
      (`sequential`, failover) or all at once (`parallel`, the first answer wins).
    - `reject` / `abort`: answer `status` (400-699, default 403) with `reason`.
    - `not_handled`: use the static routes. `spam`: drop the call without an answer.
    - `answer` (ours): answer the call and run `steps` (call-control objects, at least one),
      or, instead of steps, `answer_url`: an http(s) URL the edge fetches for the steps (the
      default router's answer for an application's number).

    `timeout` (maximum call duration), `max_ring_time` and `rtp_timeout` are seconds;
    `headers` are added to the outgoing INVITEs; `extensions` are copied into the CDR.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    action: RouteAction
    targets: Annotated[list[Annotated[str, Field(min_length=1)]],
                       BeforeValidator(_or_empty_list)] = Field(default_factory=list)
    strategy: Annotated[Strategy, BeforeValidator(_or_sequential)] = "sequential"
    status: Annotated[int, Field(ge=100, le=699)] | None = None
    reason: str | None = None
    record: bool | None = None
    timeout: Seconds | None = None
    max_ring_time: Seconds | None = None
    rtp_timeout: Seconds | None = None
    headers: Annotated[dict[str, str], BeforeValidator(_or_empty_dict)] = Field(
        default_factory=dict
    )
    with_original_headers: Annotated[bool, BeforeValidator(_or_false)] = False
    extensions: Annotated[dict[str, Any], BeforeValidator(_or_empty_dict)] = Field(
        default_factory=dict
    )
    allow_codecs: Annotated[list[str], BeforeValidator(_or_empty_list)] = Field(
        default_factory=list
    )
    steps: list[dict[str, Any]] | None = None
    answer_url: str | None = Field(
        default=None,
        description="answer: where the edge fetches the steps (http or https), when `steps` "
        "are not given.",
    )
    fallback_answer_url: str | None = Field(
        default=None, description="answer: fetched when answer_url fails."
    )
    event_url: str | None = Field(
        default=None, description="answer: where the call's events go (status, input...)."
    )

    @field_validator("headers")
    @classmethod
    def _sip_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a SIP token")
            if _LINE_BREAKS.intersection(text):
                raise ValueError(f"header {name!r}: value contains a line break or NUL")
        return value

    @model_validator(mode="after")
    def _complete(self) -> RouteResponse:
        # What the action needs to be carried out; a reply without it is a router bug, and
        # fails like any invalid reply (static routes when fallback_to_static, else 503).
        if self.action == "forward" and not self.targets:
            raise ValueError("a forward reply needs at least one target")
        if self.action == "answer" and not self.steps and not self.answer_url:
            raise ValueError("an answer reply needs steps or an answer_url")
        if self.action in ("reject", "abort") and self.status is not None and not (
            400 <= self.status <= 699
        ):
            raise ValueError(f"status {self.status} cannot refuse a call (use 400-699)")
        return self

    @field_validator("answer_url", "fallback_answer_url", "event_url")
    @classmethod
    def _answer_url(cls, value: str | None) -> str | None:
        if value is not None and not _HTTP_URL.fullmatch(value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("reason")
    @classmethod
    def _reason_phrase(cls, value: str | None) -> str | None:
        # The reason becomes a SIP status line's reason phrase.
        if value is not None and _LINE_BREAKS.intersection(value):
            raise ValueError("reason contains a line break or NUL")
        return value
