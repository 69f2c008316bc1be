"""The CDR (call detail record): one JSON document per call, written at every call end.

Wire shape (COMPAT.md "CDR (camelCase JSON)", field for field RustPBX's `CallRecord`): camelCase
keys; times are RFC 3339 UTC strings with milliseconds and a `Z` ("2026-11-27T23:59:01.123Z"),
null for a moment the call never reached (`ringTime` of a call that failed at once,
`answerTime` of an unanswered one). Ours adds `edgeId`, `durationSecs` (start to end) and
`billsecSecs` (answer to end, 0 when unanswered), both seconds with millisecond precision.

Every key is always present, null where unknown (`to_json_bytes`): a consumer sees one stable
shape and can tell "not known" from "we forgot to send it"; RustPBX omits empty ones, so a
consumer of both must accept either. Python attributes are snake_case; the model is built from
either spelling (`populate_by_name`). Pydantic and the stdlib only: a Lambda imports it.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticSerializationError

# Re-exported: CDR code takes its time helpers from here.
from control.contracts.times import rfc3339 as rfc3339
from control.contracts.times import utc_milliseconds as utc_milliseconds
from control.contracts.times import utc_seconds

CdrDirection = Literal["inbound", "outbound", "internal"]
CdrStatus = Literal["completed", "failed", "missed"]

# `hangupReason` values we write (RustPBX's `CallRecordHangupReason`, camelCase). The field is a
# plain string so a newer edge can add a reason without breaking older consumers.
HANGUP_REASONS: frozenset[str] = frozenset({
    "byCaller",  # the caller hung up an answered call (BYE from the caller)
    "byCallee",  # the callee hung up an answered call
    "byRefer",  # the call left this PBX by a transfer (REFER, RFC 3515)
    "bySystem",  # the PBX ended it: an API hangup, a limit, shutdown
    "autohangup",  # an application's script ended it
    "noAnswer",  # nobody answered before the ring timeout (408/480)
    "canceled",  # the caller gave up while it rang (CANCEL, RFC 3261 §9)
    "rejected",  # the callee refused it (486/600/603)
    "failed",  # no route, or an error reply (4xx-6xx other than the above)
    "rtpTimeout",  # no media for too long: a peer vanished
    "serverUnavailable",  # a trunk or the callee's server did not respond (503/timeout)
    "abandoned",  # the caller hung up while waiting in a queue
})

# `legTimeline` event types (RustPBX writes them snake_case).
LEG_EVENT_TYPES: frozenset[str] = frozenset({
    "added", "bridged", "unbridged", "transferred", "transfer_accepted", "transfer_failed",
    "removed",
})

_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?Z")


def rfc3339_or_none(timestamp: float | None) -> str | None:
    return None if timestamp is None else rfc3339(timestamp)


def parse_rfc3339(text: str) -> float:
    """A CDR time back to Unix seconds (ValueError unless it is RFC 3339 UTC with `Z`)."""
    if not _RFC3339_UTC.fullmatch(text):
        raise ValueError(f"not an RFC 3339 UTC time ending in Z: {text!r}")
    whole, _, fraction = text[:-1].partition(".")
    return utc_seconds(whole) + (int(fraction) / 10 ** len(fraction) if fraction else 0.0)


def _check_time(value: str) -> str:
    parse_rfc3339(value)  # also catches month 13 and the like, which the pattern lets through
    return value


CdrTime = Annotated[str, AfterValidator(_check_time)]


_Model = TypeVar("_Model", bound=BaseModel)


def trusted(model: type[_Model], values: dict[str, Any]) -> _Model:
    """A `model` holding `values` (every field, by Python name) as they are: no validation, no
    defaults. `model_construct` without its per-field loop (~1 us instead of ~11 for a CDR),
    for values the caller built itself and whose validity a test proves (edge.pbx.cdr)."""
    instance = model.__new__(model)
    object.__setattr__(instance, "__dict__", values)
    object.__setattr__(instance, "__pydantic_fields_set__", set(values))
    object.__setattr__(instance, "__pydantic_extra__", None)
    object.__setattr__(instance, "__pydantic_private__", None)
    return instance


class _Camel(BaseModel):
    # forbid: a key we send and the contract does not list is a bug in one of the two.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class HangupMessage(_Camel):
    """One final reply seen while the call was set up or torn down (e.g. each forked leg)."""

    code: int = Field(ge=0, le=699, description="SIP status code (0: no reply).")
    reason: str | None = Field(default=None, description="The reason phrase or Reason header.")
    target: str | None = Field(default=None, description="The URI or leg it came from.")


class RecorderMedia(_Camel):
    """One recording file of the call."""

    track_id: str = Field(description='The recorded track; "stereo" for the call recording '
                          "(caller left, callee right).")
    path: str = Field(description="Where it is kept: the blob key (recordings/YYYY/MM/DD/...).")
    size: int = Field(ge=0, description="Bytes.")


class Rewrite(_Camel):
    """Caller and callee before and after the routing rules rewrote them."""

    caller_original: str = ""
    caller_final: str = ""
    callee_original: str = ""
    callee_final: str = ""


class LegEvent(_Camel):
    timestamp: CdrTime
    leg_id: str
    event_type: str = Field(description="added, bridged, unbridged, transferred, "
                            "transfer_accepted, transfer_failed, removed, ...")


class LegTimeline(_Camel):
    events: list[LegEvent] = Field(default_factory=list)


class LastError(_Camel):
    code: int = Field(ge=0, le=699, description="SIP status code, 0 when none applies.")
    reason: str | None = None


class CallDetailRecord(_Camel):
    """One call, as the PBX reports it once the call has ended (answered or not)."""

    call_id: str = Field(min_length=1, description="The Call-ID of the caller's INVITE.")
    session_id: str | None = Field(
        default=None, description="Root session of the logical call (first INVITE's Call-ID; "
        "shared by transfer and fork legs); equals callId for a root call.")
    start_time: CdrTime = Field(description="The INVITE arrived (or was sent, outbound).")
    ring_time: CdrTime | None = Field(default=None, description="First 180/183, if any.")
    answer_time: CdrTime | None = Field(default=None, description="2xx, if answered.")
    end_time: CdrTime = Field(description="The call ended (BYE, CANCEL, final error reply).")
    caller: str = Field(description="The caller's URI (From) as received.")
    callee: str = Field(description="The callee's URI (Request-URI / To) as received.")
    from_number: str | None = Field(default=None, description="The caller's user part.")
    to_number: str | None = Field(default=None, description="The dialled number.")
    direction: CdrDirection
    status: CdrStatus = Field(description="completed (answered), missed (not answered: "
                              "canceled, no answer, busy) or failed (an error).")
    status_code: int = Field(ge=0, le=699, description="The final SIP code (0: none).")
    hangup_reason: str | None = Field(
        default=None, description="byCaller, byCallee, byRefer, bySystem, noAnswer, canceled, "
        "rejected, failed, rtpTimeout, ... (HANGUP_REASONS).")
    hangup_messages: list[HangupMessage] = Field(default_factory=list)
    recorder: list[RecorderMedia] = Field(default_factory=list)
    recording_url: str | None = None
    recording_duration_secs: int | None = Field(default=None, ge=0,
                                                description="Whole seconds, as RustPBX.")
    rewrite: Rewrite | None = None
    sip_trunk_id: str | None = Field(default=None, description="The trunk's name.")
    sip_gateway: str | None = Field(default=None, description="The trunk's host:port used.")
    leg_timeline: LegTimeline = Field(default_factory=LegTimeline)
    last_error: LastError | None = None
    metadata: dict[str, Any] = Field(default_factory=dict,
                                     description="Router `extensions` land here.")
    edge_id: str | None = Field(default=None, description="Ours: the edge that handled it.")
    duration_secs: float = Field(default=0.0, ge=0, description="Ours: start to end.")
    billsec_secs: float = Field(default=0.0, ge=0,
                                description="Ours: answer to end (0 when unanswered).")

    @property
    def start_timestamp(self) -> float:
        return parse_rfc3339(self.start_time)

    @property
    def end_timestamp(self) -> float:
        return parse_rfc3339(self.end_time)

    def to_json_bytes(self) -> bytes:
        """The wire JSON: camelCase, every key present (null where unknown), compact, UTF-8.

        Text from SIP may hold lone surrogates (bytes that were not UTF-8, kept by
        `surrogateescape`); UTF-8 cannot carry them, so they become U+FFFD rather than cost
        the CDR."""
        try:
            return self.model_dump_json(by_alias=True, exclude_none=False).encode("utf-8")
        except PydanticSerializationError:
            cleaned = _valid_text(self.model_dump(mode="json", by_alias=True))
            return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> CallDetailRecord:
        return cls.model_validate_json(data)


def _valid_text(value: Any) -> Any:
    """`value` with every string made encodable as UTF-8 (lone surrogates -> U+FFFD)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            try:  # surrogateescape'd bytes: back to the bytes, then decode what is valid
                return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            except UnicodeEncodeError:
                return value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_valid_text(key): _valid_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_valid_text(item) for item in value]
    return value
