"""The outbound-call API's wire format: `POST /api/v1/calls` and what the control plane hands
the edge that places the call.

The body is ours and Vonage's at once, so a Vonage "create call" request works unchanged:

    {"to": "1001", "from": "+15551230000", "answer_url": "https://app.example/answer",
     "event_url": "https://app.example/events", "timeout": 30, "record": false,
     "headers": {"X-Ticket": "4711"}}
    {"to": [{"type": "phone", "number": "14155550100"}], "from": {"type": "phone", ...},
     "answer_url": ["https://..."], "event_url": ["https://..."], "ringing_timer": 30}

`to` is an extension of ours, a number (routed through the static routes and trunks) or a SIP
URI; exactly one of `answer_url` (fetched when the callee answers; its reply is the step list)
and `ncco` (the steps themselves) is given. An `Idempotency-Key` header makes the request safe
to retry: the same key and body within 24 hours returns the same call and never rings twice;
the same key with another body is 409. Pydantic and stdlib only (Lambda code imports it).
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

IDEMPOTENCY_WINDOW_S = 24 * 3600
ORIGINATE_PATH = "/internal/calls"
CallStatus = Literal["started", "ringing", "answered", "completed", "busy", "failed",
                     "no-answer", "cancelled", "rejected"]

_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")  # RFC 3261 §25.1 header-name
_LINE_BREAKS = frozenset("\r\n\x00")
# A party: digits with an optional +, an extension-like token, or a sip(s): URI without spaces.
_PARTY = re.compile(r"^(?:\+?[0-9A-Za-z*#._\-]{1,64}|sips?:[^\s<>\"]{1,250})$")
# Headers that belong to the SIP dialog or to us: an API caller may not set them.
_RESERVED_HEADERS = frozenset({
    "via", "from", "to", "call-id", "cseq", "contact", "route", "record-route", "max-forwards",
    "content-length", "content-type", "authorization", "proxy-authorization", "require",
    "proxy-require", "supported", "allow",
})


def _party(value: object) -> object:
    """A Vonage endpoint object (or a one-element list of them) -> the number/URI string."""
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError("exactly one endpoint is supported")
        value = value[0]
    if isinstance(value, dict):
        kind = value.get("type", "phone")
        if kind == "phone":
            return value.get("number")
        if kind == "sip":
            return value.get("uri")
        raise ValueError(f"endpoint type {kind!r} is not supported (phone or sip)")
    return value


def _one_url(value: object) -> object:
    # Vonage sends URLs as one-element arrays.
    if isinstance(value, list):
        if len(value) != 1:
            raise ValueError("exactly one URL is supported")
        return value[0]
    return value


def _http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


Party = Annotated[str, BeforeValidator(_party), Field(pattern=_PARTY.pattern)]
Url = Annotated[str, BeforeValidator(_one_url), Field(min_length=8, max_length=2048)]


class CreateCall(BaseModel):
    """The body of `POST /api/v1/calls`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True,
                              defer_build=True)

    to: Party = Field(description="An extension, a number, or a SIP URI (Vonage: "
                      "[{\"type\": \"phone\", \"number\": ...}] is accepted).")
    from_: Party | None = Field(default=None, alias="from",
                                description="The caller ID presented to the callee.")
    answer_url: Url | None = Field(default=None, description="Fetched when the callee "
                                   "answers; its reply (a JSON step list) is run on the call.")
    answer_method: Literal["GET", "POST"] = "GET"
    fallback_url: Url | None = Field(default=None, validation_alias="fallback_answer_url",
                                     description="Fetched when answer_url fails (Vonage: "
                                     "fallback_url).")
    ncco: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100,
                                              description="The steps, instead of answer_url.")
    event_url: Url | None = Field(default=None, description="Receives the call's status "
                                  "events (started, ringing, answered, completed...).")
    event_method: Literal["POST"] = "POST"
    timeout: int = Field(default=60, ge=1, le=600, validation_alias="ringing_timer",
                         description="Seconds the callee may ring (Vonage: ringing_timer).")
    length_timer: int | None = Field(default=None, ge=1, le=86_400,
                                     description="Maximum call duration in seconds.")
    record: bool = False
    headers: dict[str, str] = Field(default_factory=dict, max_length=20,
                                    description="SIP headers added to the INVITE to `to`.")

    @field_validator("answer_url", "event_url", "fallback_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("headers")
    @classmethod
    def _sip_headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.fullmatch(name):
                raise ValueError(f"header name {name!r} is not a SIP token")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by the PBX")
            if _LINE_BREAKS.intersection(text) or len(text) > 1024:
                raise ValueError(f"header {name!r}: value has a line break or is too long")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> CreateCall:
        if (self.answer_url is None) == (self.ncco is None):
            raise ValueError("give exactly one of answer_url and ncco")
        return self

    def fingerprint(self) -> str:
        """SHA-256 of the request's canonical JSON: what "the same body" means for the
        Idempotency-Key (key order and whitespace do not matter, values do)."""
        canonical = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def conversation_uuid(call_id: str) -> str:
    """The Vonage-style conversation id of a call: derived from its id, so the control plane
    and the edge name it alike without sharing state."""
    return f"CON-{uuid.uuid5(uuid.NAMESPACE_URL, call_id)}"


class CallCreated(BaseModel):
    """The reply of `POST /api/v1/calls` (201, or 200 for a repeated Idempotency-Key): the
    Vonage fields plus where the call runs."""

    model_config = ConfigDict(defer_build=True)

    uuid: str
    status: CallStatus
    direction: Literal["outbound"] = "outbound"
    conversation_uuid: str
    edge_id: str


class Originate(BaseModel):
    """What the control plane POSTs (signed) to the chosen edge's `/internal/calls`."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    call_id: str = Field(min_length=1, max_length=128)
    request: CreateCall
    # The call record the control plane created (its version: the edge's writes go on from it).
    record_version: int = Field(default=0, ge=0)


__all__ = [
    "IDEMPOTENCY_WINDOW_S",
    "ORIGINATE_PATH",
    "CallCreated",
    "CallStatus",
    "CreateCall",
    "Originate",
    "conversation_uuid",
]
