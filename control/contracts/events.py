"""What the edge POSTs to an application's event URL: call status, `input` and `record` results,
`notify` payloads and step-list errors (docs/ncco.md, "Events").

The shapes are Vonage's Voice API event webhooks, field for field, so a Vonage application
parses them unchanged; an application tells them apart as a Vonage one does, by what is present
(`status`, `dtmf`, `recording_url`, `reason`):

    {"uuid": "...", "conversation_uuid": "CON-...", "from": "1001", "to": "2002",
     "status": "answered", "direction": "inbound", "timestamp": "2026-01-05T10:00:00.120Z",
     "call_id": "a84b4c76e66710@pbx", "sequence": 3}

Ours adds, on every event: `call_id` (the SIP Call-ID of the caller's leg, the key of the CDR
and of `/console/calls/active/{id}`), `sequence` (1, 2, 3, ... per call in the order the edge
produced the events, so a receiver can restore the order of concurrent deliveries and notice a
gap) and, once the call runs steps, `state` (the web-IVR state: the position in the step list
and the values collected so far, so a stateless application needs no database).

Times are ISO 8601 UTC with milliseconds and `Z`; `duration` is whole seconds as a string (as
Vonage sends it). Build events with the functions below (`call_status_event`, `input_event`,
...), never by hand, and serialise with `event_json` (Vonage's names, absent fields left out).
Pydantic and the stdlib only: Lambda code imports it.
"""

from __future__ import annotations

import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from control.contracts.cdr import rfc3339

CallStatus = Literal[
    "started",  # the call exists (an INVITE arrived, or an outbound INVITE is about to leave)
    "ringing",  # the callee is alerting (180/183)
    "answered",  # 200 OK: media flows
    "completed",  # an answered call ended (BYE either way, or the PBX ended it)
    "busy",  # the callee answered 486/600 (busy here / everywhere)
    "failed",  # no route, or an error reply other than busy/decline
    "timeout",  # nobody answered before the ring timeout (Vonage's name)
    "no-answer",  # the same occurrence under issue 7's (and Twilio's) name: see RING_TIMEOUT
    "cancelled",  # the caller gave up while it rang (CANCEL, RFC 3261 §9)
    "rejected",  # the callee declined it (603) or the router rejected it
    "unanswered",  # the callee could not be reached at all (408/480 before any ringing)
]
CALL_STATUSES: frozenset[str] = frozenset(get_args(CallStatus))
# Statuses after which the call (this leg) has ended: no further status event follows.
FINAL_STATUSES: frozenset[str] = CALL_STATUSES - {"started", "ringing", "answered"}
# A ring timeout is reported twice, in this order, each with its own `sequence`: `timeout` is
# what Vonage applications test for, `no-answer` is the name issue 7 asks for (and Twilio's).
# Only the reply to the first one (`timeout`) may replace the remaining steps (an application
# answering both does not get its steps run twice).
RING_TIMEOUT: tuple[CallStatus, ...] = ("timeout", "no-answer")

Direction = Literal["inbound", "outbound"]


class IvrState(BaseModel):
    """The web-IVR state a callback carries (issue 7 item 4): where the call is in its current
    step list and what it has collected so far. The same value is kept in the call record, so
    any edge or function can continue the script."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: int = Field(
        ge=0,
        description="Index (0-based) in the current step list of the step that produced this "
        "event (for a status event: the step running when it happened).",
    )
    values: dict[str, Any] = Field(
        default_factory=dict,
        description="Values collected on this call so far: an `input` step's digits under its "
        "`name` (or `input<index>`), a `record` step's URL under `record<index>`.",
    )


class _Event(BaseModel):
    # Produced by us, parsed by applications and our tests: unknown fields are tolerated so a
    # newer edge can add one without breaking an older parser.
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    conversation_uuid: str = Field(description="The conversation (for us: the call) id.")
    timestamp: str = Field(description="When it happened: ISO 8601 UTC, milliseconds, `Z`.")
    call_id: str = Field(description="Ours: the SIP Call-ID of the caller's leg.")
    sequence: int = Field(ge=1, description="Ours: 1, 2, 3... per call, in production order.")
    state: IvrState | None = Field(default=None, description="Ours: the web-IVR state.")


class CallStatusEvent(_Event):
    """A leg changed state (Vonage's call status event). `start_time`, `end_time`, `duration`
    and `disconnected_by` come with `completed`; `detail` says why a call did not connect."""

    uuid: str = Field(description="The leg's id.")
    from_: str = Field(alias="from", description="The caller: a number, user or SIP URI.")
    to: str = Field(description="The callee: a number, user or SIP URI.")
    status: CallStatus
    direction: Direction
    start_time: str | None = Field(default=None, description="Answer time (ISO 8601).")
    end_time: str | None = Field(default=None, description="End time (ISO 8601).")
    duration: str | None = Field(
        default=None, description="Answered seconds, whole, as a string (Vonage's form)."
    )
    network: str | None = Field(default=None, description="The trunk the leg used, if any.")
    disconnected_by: Literal["user", "platform"] | None = Field(
        default=None, description="`user`: a party hung up; `platform`: we ended it."
    )
    detail: str | None = Field(
        default=None,
        description="Why a call did not connect, a snake_case word: `ring_timeout`, "
        "`remote_busy`, `declined`, `cannot_route`, `unavailable`, `invalid_number`...",
    )
    sip_code: int | None = Field(
        default=None, ge=100, le=699, description="Ours: the final SIP status, when known."
    )


class DtmfResult(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    digits: str = Field(description="The digits collected, in order (0-9, *, #), maybe empty.")
    timed_out: bool = Field(description="True when input ended by its timeOut, not by "
                            "maxDigits or #.")


class InputEvent(_Event):
    """The result of an `input` step, POSTed to its `eventUrl` (Vonage's input event). The reply
    may be a new step list, which replaces the remaining steps."""

    uuid: str
    from_: str = Field(alias="from")
    to: str
    dtmf: DtmfResult
    speech: dict[str, Any] | None = Field(
        default=None, description="Never sent: speech input is not supported."
    )


class RecordEvent(_Event):
    """A `record` step (or a recorded conference) finished: where the WAV is."""

    uuid: str | None = Field(default=None, description="Ours: the recorded leg's id.")
    start_time: str
    end_time: str
    recording_url: str = Field(description="Where to GET the WAV (an http(s) URL).")
    size: int = Field(ge=0, description="Bytes.")
    recording_uuid: str


class NotifyEvent(BaseModel):
    """A `notify` step: its `payload`, as the body (Vonage sends the payload itself), with our
    call fields added beside it. A payload key wins over ours when they collide, so the
    application always gets back exactly what it put in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payload: dict[str, Any] = Field(exclude=True)
    uuid: str
    conversation_uuid: str
    timestamp: str
    call_id: str
    sequence: int = Field(ge=1)
    state: IvrState | None = None

    def wire(self) -> dict[str, Any]:
        ours = self.model_dump(exclude_none=True)
        return {**ours, **self.payload}


class ErrorEvent(_Event):
    """A step list could not be used (Vonage's error event: `reason`). `errors` (ours) lists
    each problem with the step index and the field, as `StepsInvalid.errors` does."""

    uuid: str | None = None
    reason: str = Field(description="What is wrong, for a person: the validation error text.")
    errors: list[dict[str, Any]] = Field(
        default_factory=list,
        description="Ours: one `{index, action, field, message}` per problem (index may be "
        "null when the list itself is wrong).",
    )
    source: str | None = Field(
        default=None, description="Ours: where the bad list came from (the URL)."
    )


AppEvent = CallStatusEvent | InputEvent | RecordEvent | NotifyEvent | ErrorEvent


def iso_ms(now: float) -> str:
    """Unix seconds as an event time: `2026-01-05T10:00:00.120Z` (UTC, 3 decimals)."""
    return rfc3339(now)


def call_status_event(
    *,
    status: CallStatus,
    uuid: str,
    conversation_uuid: str,
    call_id: str,
    sequence: int,
    from_: str,
    to: str,
    direction: Direction,
    now: float,
    start: float | None = None,
    end: float | None = None,
    network: str | None = None,
    disconnected_by: Literal["user", "platform"] | None = None,
    detail: str | None = None,
    sip_code: int | None = None,
    state: IvrState | None = None,
) -> CallStatusEvent:
    """A status event. `start`/`end` are Unix seconds (answer and end); for `completed` both
    are required and `duration` is computed (whole seconds, rounded down, as a string)."""
    if status == "completed" and (start is None or end is None):
        raise ValueError("a completed event needs start and end")
    duration = None
    if start is not None and end is not None:
        duration = str(max(0, int(end - start)))
    return CallStatusEvent(
        status=status,
        uuid=uuid,
        conversation_uuid=conversation_uuid,
        call_id=call_id,
        sequence=sequence,
        from_=from_,
        to=to,
        direction=direction,
        timestamp=iso_ms(now),
        start_time=None if start is None else iso_ms(start),
        end_time=None if end is None else iso_ms(end),
        duration=duration,
        network=network,
        disconnected_by=disconnected_by,
        detail=detail,
        sip_code=sip_code,
        state=state,
    )


def ring_timeout_events(
    *,
    uuid: str,
    conversation_uuid: str,
    call_id: str,
    first_sequence: int,
    from_: str,
    to: str,
    direction: Direction,
    now: float,
    sip_code: int | None = None,
    state: IvrState | None = None,
) -> list[CallStatusEvent]:
    """The two events of a ring timeout (`RING_TIMEOUT`), sequences `first_sequence` and the
    next one; send them in this order."""
    return [
        call_status_event(
            status=status, uuid=uuid, conversation_uuid=conversation_uuid, call_id=call_id,
            sequence=first_sequence + offset, from_=from_, to=to, direction=direction,
            now=now, detail="ring_timeout", sip_code=sip_code, state=state,
        )
        for offset, status in enumerate(RING_TIMEOUT)
    ]


def input_event(
    *,
    digits: str,
    timed_out: bool,
    uuid: str,
    conversation_uuid: str,
    call_id: str,
    sequence: int,
    from_: str,
    to: str,
    now: float,
    state: IvrState | None = None,
) -> InputEvent:
    """The result of an `input` step."""
    return InputEvent(
        dtmf=DtmfResult(digits=digits, timed_out=timed_out),
        uuid=uuid,
        conversation_uuid=conversation_uuid,
        call_id=call_id,
        sequence=sequence,
        from_=from_,
        to=to,
        timestamp=iso_ms(now),
        state=state,
    )


def record_event(
    *,
    recording_url: str,
    recording_uuid: str,
    size: int,
    start: float,
    end: float,
    conversation_uuid: str,
    call_id: str,
    sequence: int,
    now: float,
    uuid: str | None = None,
    state: IvrState | None = None,
) -> RecordEvent:
    """A finished recording; `start`/`end` are Unix seconds."""
    return RecordEvent(
        recording_url=recording_url,
        recording_uuid=recording_uuid,
        size=size,
        start_time=iso_ms(start),
        end_time=iso_ms(end),
        uuid=uuid,
        conversation_uuid=conversation_uuid,
        call_id=call_id,
        sequence=sequence,
        timestamp=iso_ms(now),
        state=state,
    )


def notify_event(
    *,
    payload: dict[str, Any],
    uuid: str,
    conversation_uuid: str,
    call_id: str,
    sequence: int,
    now: float,
    state: IvrState | None = None,
) -> NotifyEvent:
    """A `notify` step's event: `payload` is the step's own, sent back unchanged."""
    return NotifyEvent(
        payload=payload,
        uuid=uuid,
        conversation_uuid=conversation_uuid,
        call_id=call_id,
        sequence=sequence,
        timestamp=iso_ms(now),
        state=state,
    )


def error_event(
    *,
    reason: str,
    conversation_uuid: str,
    call_id: str,
    sequence: int,
    now: float,
    uuid: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    source: str | None = None,
    state: IvrState | None = None,
) -> ErrorEvent:
    """An invalid step list (or a failed answer/event URL). With an `ncco.StepsInvalid` `e`:
    `error_event(reason=str(e), errors=e.error_dicts(), ...)`."""
    return ErrorEvent(
        reason=reason,
        errors=errors or [],
        source=source,
        uuid=uuid,
        conversation_uuid=conversation_uuid,
        call_id=call_id,
        sequence=sequence,
        timestamp=iso_ms(now),
        state=state,
    )


def event_dict(event: AppEvent) -> dict[str, Any]:
    """The JSON object to POST: Vonage's names (`from`), absent (None) fields left out."""
    if isinstance(event, NotifyEvent):
        return event.wire()
    return event.model_dump(by_alias=True, exclude_none=True)


def event_json(event: AppEvent) -> bytes:
    """`event_dict` as compact UTF-8 JSON bytes (the body to sign and POST)."""
    return json.dumps(event_dict(event), separators=(",", ":"), ensure_ascii=False).encode()


__all__ = [
    "CALL_STATUSES",
    "FINAL_STATUSES",
    "RING_TIMEOUT",
    "AppEvent",
    "CallStatus",
    "CallStatusEvent",
    "Direction",
    "DtmfResult",
    "ErrorEvent",
    "InputEvent",
    "IvrState",
    "NotifyEvent",
    "RecordEvent",
    "call_status_event",
    "error_event",
    "event_dict",
    "event_json",
    "input_event",
    "iso_ms",
    "notify_event",
    "record_event",
    "ring_timeout_events",
]
