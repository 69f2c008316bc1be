"""Call-control steps ("NCCO"): the step list an application gives a call, one model per action
(docs/ncco.md is the reference; docs/ncco.schema.json its JSON Schema).

A step list comes from the routing webhook (`{"action": "answer", "steps": [...]}`), from an
application's `answer_url` (a plain JSON array: Vonage's NCCO form) or from an `eventUrl` reply
(it replaces the remaining steps). Vonage's action names are aliases of ours (`stream` = `play`,
`talk` = `say`, `conversation` = `conference`) and Vonage's parameter names are ours, so a
Vonage NCCO parses unchanged; Python attributes are snake_case (`bargeIn` is `barge_in`) and a
model is built from either spelling.

Parsing is strict where a mistake would go unnoticed (an unknown field is an error, naming the
step and the field) but accepts, and ignores, the Vonage options we do not carry out (listed in
each model as `Ignored`), so a ported application still runs. What we cannot honour safely is a
clear error: speech input, a `vbc` endpoint, a `transfer` action. The engine reads normalised
accessors (`event_url`, `PlayStep.source`, `ConnectStep.target`, ...) rather than raw fields.
Pydantic and the stdlib only: Lambda code imports it.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

MAX_STEPS = 100
MAX_URL_LENGTH = 2048

# Our action name for each accepted spelling (Vonage's names are aliases).
CANONICAL_ACTION: dict[str, str] = {
    "play": "play", "stream": "play",
    "say": "say", "talk": "say",
    "input": "input",
    "record": "record",
    "conference": "conference", "conversation": "conference",
    "connect": "connect",
    "notify": "notify",
    "wait": "wait",
    "hangup": "hangup",
}

_SCHEME = re.compile(r"https?://[^\s/?#@]+(?:[/?#]\S*)?", re.IGNORECASE)
_WS_SCHEME = re.compile(r"wss?://[^\s/?#@]+(?:[/?#]\S*)?", re.IGNORECASE)
# A SIP/SIPS URI as a connect target: no spaces or characters that would break a header line.
_SIP_URI = re.compile(r"sips?:[^\s<>\"]+", re.IGNORECASE)
# RFC 3261 §25.1: header-name = token.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_LINE_BREAKS = frozenset("\r\n\x00")
# A relative file name under the media folder: no absolute path, no `..`, no backslash.
_FILE_PART = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*")


class StepsInvalid(ValueError):
    """A step list that cannot be run. `str(e)` is one line per problem, each naming the step
    index, its action and the field; `errors` holds the same as data."""

    def __init__(self, errors: list[StepError]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(error) for error in errors) or "invalid step list")

    def error_dicts(self) -> list[dict[str, Any]]:
        """For `events.error_event(errors=...)`."""
        return [
            {"index": e.index, "action": e.action, "field": e.field, "message": e.message}
            for e in self.errors
        ]


class StepError:
    """One problem: `index` is the step's position (None when the list itself is wrong),
    `field` a dotted path inside the step ("dtmf.maxDigits"), empty for the whole step."""

    __slots__ = ("action", "field", "index", "message")

    def __init__(self, index: int | None, action: str | None, field: str, message: str) -> None:
        self.index = index
        self.action = action
        self.field = field
        self.message = message

    def __str__(self) -> str:
        where = "steps" if self.index is None else f"step {self.index}"
        if self.action:
            where += f" ({self.action})"
        if self.field:
            where += f" {self.field}"
        return f"{where}: {self.message}"

    def __repr__(self) -> str:
        return f"StepError({self.index!r}, {self.action!r}, {self.field!r}, {self.message!r})"


# -- field types -----------------------------------------------------------------------------


def _http_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"URL longer than {MAX_URL_LENGTH} characters")
    if not _SCHEME.fullmatch(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


def _ws_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"URL longer than {MAX_URL_LENGTH} characters")
    if not _WS_SCHEME.fullmatch(value):
        raise ValueError("must be a ws:// or wss:// URL")
    return value


def _one_url_list(value: object) -> object:
    # Vonage requires a one-element array ("eventUrl MUST be an array"); a bare string is what
    # people write by hand, and means the same.
    return [value] if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _media_file(value: str) -> str:
    parts = value.split("/")
    if not value or len(value) > 255 or not all(_FILE_PART.fullmatch(p) for p in parts):
        raise ValueError(
            "must be a relative file name under the media folder (letters, digits, . _ - and "
            "/ between names; no leading /, no ..)"
        )
    return value


def _sip_uri(value: str) -> str:
    if len(value) > 512 or not _SIP_URI.fullmatch(value):
        raise ValueError("must be a sip: or sips: URI (no spaces, <, >, \")")
    return value


def _dtmf_type() -> list[Literal["dtmf", "speech"]]:
    return ["dtmf"]


def _header_values(value: object) -> object:
    # Vonage documents string pairs; apps send numbers and lists too. JSON text keeps them
    # on one line (json.dumps escapes control characters).
    if not isinstance(value, dict):
        return value
    return {
        key: item if isinstance(item, str) else json.dumps(item, separators=(",", ":"))
        for key, item in value.items()
    }


def _sip_headers(value: dict[Any, str]) -> dict[Any, str]:
    # These become header lines of the outgoing INVITE: a bad one must not inject headers.
    for name, text in value.items():
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"header name {name!r} is not a SIP token")
        if _LINE_BREAKS.intersection(text):
            raise ValueError(f"header {name!r}: value contains a line break or NUL")
    return value


HttpUrl = Annotated[
    str,
    AfterValidator(_http_url),
    Field(json_schema_extra={"format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}),
]
WsUrl = Annotated[
    str,
    AfterValidator(_ws_url),
    Field(json_schema_extra={"format": "uri", "pattern": "^[Ww][Ss][Ss]?://"}),
]
UrlList = Annotated[
    list[HttpUrl],
    BeforeValidator(_one_url_list, json_schema_input_type=HttpUrl | list[HttpUrl]),
    Field(min_length=1, max_length=1),
]
EventMethod = Annotated[Literal["POST", "GET"], BeforeValidator(_upper)]
Level = Annotated[float, Field(ge=-1.0, le=1.0)]
Loop = Annotated[int, Field(ge=0, le=1000)]
Ignored = Any  # a Vonage option we accept for compatibility and do not carry out


class _Step(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, str_max_length=4096
    )

    @property
    def kind(self) -> str:
        """Our name of the action (`play` for `stream`, ...)."""
        return CANONICAL_ACTION[str(getattr(self, "action"))]  # noqa: B009


class _StepWithEvents(_Step):
    event_url_list: UrlList | None = Field(
        default=None,
        alias="eventUrl",
        description="Where this step's events go: a one-element array (a bare string is "
        "accepted). Absent: the application's event URL.",
    )
    event_method: EventMethod = Field(default="POST", alias="eventMethod")

    @property
    def event_url(self) -> str | None:
        """The one event URL, or None (use the application's)."""
        return self.event_url_list[0] if self.event_url_list else None


# -- actions ---------------------------------------------------------------------------------


class PlayStep(_Step):
    """Play audio from an http(s) URL (`streamUrl`, Vonage; `url`, ours) or a file in the media
    folder (`file`, ours): WAV or MP3, converted to 8 kHz. Exactly one source."""

    action: Literal["play", "stream"]
    stream_url: UrlList | None = Field(default=None, alias="streamUrl")
    url: HttpUrl | None = Field(default=None, description="Ours: the same as streamUrl.")
    file: Annotated[str, AfterValidator(_media_file)] | None = Field(
        default=None, description="Ours: a file name relative to the media folder."
    )
    level: Level = Field(default=0.0, description="Volume, -1 (quietest) to 1; 0 = as is.")
    barge_in: bool = Field(
        default=False, alias="bargeIn", description="Stop at the caller's first DTMF digit."
    )
    loop: Loop = Field(default=1, description="Times to play; 0 = until the step is stopped.")

    @model_validator(mode="after")
    def _one_source(self) -> PlayStep:
        given = [self.stream_url is not None, self.url is not None, self.file is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of streamUrl, url, file")
        return self

    @property
    def source(self) -> str:
        """The URL or the file name."""
        if self.stream_url:
            return self.stream_url[0]
        return self.url or self.file or ""

    @property
    def source_kind(self) -> Literal["url", "file"]:
        return "file" if self.file is not None else "url"


class SayStep(_Step):
    """Text to speech (local espeak-ng, or Amazon Polly when configured)."""

    action: Literal["say", "talk"]
    text: str = Field(min_length=1, max_length=1500)
    language: str = Field(default="en-US", pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    style: int = Field(default=0, ge=0, description="A voice variant of the language.")
    premium: bool = False
    voice: str | None = Field(default=None, max_length=64, description="Ours: a voice name.")
    voice_name: str | None = Field(
        default=None, alias="voiceName", max_length=64, description="Vonage's legacy voice."
    )
    level: Level = 0.0
    barge_in: bool = Field(default=False, alias="bargeIn")
    loop: Loop = 1
    ssml: Ignored = Field(default=None, description="Accepted, ignored: text is spoken as is.")
    provider: Ignored = Field(default=None, description="Accepted, ignored.")

    @property
    def voice_id(self) -> str | None:
        """The voice asked for (`voice`, else `voiceName`), None for the language's default."""
        return self.voice or self.voice_name


class DtmfSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    time_out: float = Field(
        default=3.0, alias="timeOut", ge=0, le=10,
        description="Seconds of quiet after the last digit (or before the first) that end "
        "the input.",
    )
    max_digits: int = Field(default=4, alias="maxDigits", ge=1, le=20)
    submit_on_hash: bool = Field(
        default=False, alias="submitOnHash", description="# ends the input (not included)."
    )


_LEGACY_DTMF = ("timeOut", "maxDigits", "submitOnHash")


class InputStep(_StepWithEvents):
    """Collect DTMF digits (RFC 4733 events, SIP INFO or in-band tones); the result goes to
    `eventUrl` as an `input` event, whose reply may be new steps."""

    action: Literal["input"]
    type: list[Literal["dtmf", "speech"]] = Field(default_factory=_dtmf_type, min_length=1)
    dtmf: DtmfSettings = Field(default_factory=DtmfSettings)
    speech: Ignored = Field(default=None, description="Not supported: an error when given.")
    mode: Literal["synchronous", "asynchronous"] | None = None
    name: str | None = Field(
        default=None, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
        description="Ours: the key of the digits in the call's state values.",
    )

    @model_validator(mode="before")
    @classmethod
    def _legacy_dtmf(cls, data: Any) -> Any:
        # Nexmo's first input action had timeOut/maxDigits/submitOnHash at the top level (and
        # no `type`); old applications still send that form.
        if not isinstance(data, dict):
            return data
        legacy = {key: data[key] for key in _LEGACY_DTMF if key in data}
        if not legacy:
            return data
        dtmf = data.get("dtmf")
        if dtmf is not None and not isinstance(dtmf, dict):
            return data
        if dtmf and set(legacy) & set(dtmf):
            return data  # both forms of one setting: let "extra inputs" name the field
        rest = {key: value for key, value in data.items() if key not in _LEGACY_DTMF}
        return {**rest, "dtmf": {**(dtmf or {}), **legacy}}

    @model_validator(mode="after")
    def _dtmf_only(self) -> InputStep:
        if "speech" in self.type or self.speech is not None:
            raise ValueError("speech input is not supported: use type [\"dtmf\"]")
        if self.mode == "asynchronous":
            raise ValueError("asynchronous input is not supported (it is for speech)")
        return self

    def value_key(self, index: int) -> str:
        """Where the digits land in the call's state values."""
        return self.name or f"input{index}"


class RecordStep(_StepWithEvents):
    """Record the call (both parties mixed; `split: conversation` puts the caller left and the
    other party right) to a WAV; the result goes to `eventUrl` as a `record` event. It runs in
    the background while the next steps run."""

    action: Literal["record"]
    format: Literal["wav", "mp3", "ogg"] | None = Field(
        default=None,
        description="Always WAV here: mp3 and ogg are accepted and recorded as WAV (the "
        "record event's recording_url ends in .wav).",
    )
    split: Literal["conversation"] | None = None
    channels: int | None = Field(default=None, ge=1, le=32)
    end_on_silence: int | None = Field(
        default=None, alias="endOnSilence", ge=3, le=10,
        description="Stop after this many seconds of silence (off when absent).",
    )
    end_on_key: str | None = Field(default=None, alias="endOnKey", pattern=r"^[0-9*#]$")
    time_out: int = Field(default=7200, alias="timeOut", ge=3, le=7200)
    beep_start: bool = Field(default=False, alias="beepStart")
    transcription: Ignored = Field(default=None, description="Accepted, ignored.")

    @property
    def output_format(self) -> Literal["wav"]:
        return "wav"


class ConferenceStep(_StepWithEvents):
    """Join (create) a named room mixed by the edge; each participant hears everyone else."""

    action: Literal["conference", "conversation"]
    name: str = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f]+$")
    music_on_hold_url: UrlList | None = Field(default=None, alias="musicOnHoldUrl")
    start_on_enter: bool = Field(default=True, alias="startOnEnter")
    end_on_exit: bool = Field(default=False, alias="endOnExit")
    record: bool = False
    can_speak: list[str] | None = Field(default=None, alias="canSpeak")
    can_hear: list[str] | None = Field(default=None, alias="canHear")
    mute: bool = False
    transcription: Ignored = Field(default=None, description="Accepted, ignored.")

    @property
    def music_on_hold(self) -> str | None:
        return self.music_on_hold_url[0] if self.music_on_hold_url else None


class PhoneEndpoint(BaseModel):
    """A number, placed through the routes and trunks (or an extension of ours)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["phone"]
    number: str = Field(pattern=r"^\+?[0-9*#]{1,32}$")
    dtmf_answer: str | None = Field(
        default=None, alias="dtmfAnswer", pattern=r"^[0-9*#pP]{1,64}$",
        description="Digits sent when the callee answers; p = 500 ms pause.",
    )
    on_answer: Ignored = Field(default=None, alias="onAnswer", description="Accepted, ignored.")
    shaken: Ignored = Field(default=None, description="Accepted, ignored.")


class SipEndpoint(BaseModel):
    """A SIP URI. As at Vonage, each `headers` entry goes into the INVITE as `X-<key>: value`
    (a key that already starts with `X-` is used as is); `standardHeaders` are sent unprefixed
    and only `User-to-User` (RFC 7433) is allowed there."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["sip"]
    uri: Annotated[str, AfterValidator(_sip_uri)]
    headers: Annotated[
        dict[str, str], BeforeValidator(_header_values), AfterValidator(_sip_headers)
    ] = Field(
        default_factory=dict,
        description="Metadata sent as X- headers. A number or boolean is sent as its JSON "
        "text, a list or object as compact JSON.",
    )
    standard_headers: Annotated[dict[Literal["User-to-User"], str],
                                AfterValidator(_sip_headers)] = Field(
        default_factory=dict, alias="standardHeaders"
    )

    @property
    def invite_headers(self) -> list[tuple[str, str]]:
        """(name, value) pairs to add to the outgoing INVITE, in the order given."""
        out = [
            (name if name[:2].lower() == "x-" else f"X-{name}", value)
            for name, value in self.headers.items()
        ]
        out.extend(self.standard_headers.items())
        return out


class WebsocketEndpoint(BaseModel):
    """A WebSocket that receives the caller's audio (L16) and may send audio back."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["websocket"]
    uri: WsUrl
    content_type: Literal[
        "audio/l16;rate=8000", "audio/l16;rate=16000", "audio/l16;rate=24000"
    ] = Field(alias="content-type")
    headers: dict[str, Any] = Field(
        default_factory=dict, description="Sent in the first (JSON) message."
    )


class AppEndpoint(BaseModel):
    """A user registered with this PBX (a SIP extension)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["app"]
    user: str = Field(min_length=1, max_length=128, pattern=r"^[^\s<>\"@:;]+$")


Endpoint = Annotated[
    PhoneEndpoint | SipEndpoint | WebsocketEndpoint | AppEndpoint,
    Field(discriminator="type"),
]


class ConnectStep(_StepWithEvents):
    """Bridge the call to one endpoint; media is relayed once it answers. Call status events of
    the new leg go to `eventUrl`; with `eventType: synchronous` the reply to a `timeout`,
    `busy`, `failed`, `rejected` or `unanswered` event may be new steps."""

    action: Literal["connect"]
    endpoint: list[Endpoint] = Field(min_length=1, max_length=1)
    from_: str | None = Field(default=None, alias="from", max_length=128,
                              pattern=r"^[^\s<>\"]+$")
    event_type: Literal["synchronous"] | None = Field(default=None, alias="eventType")
    timeout: int = Field(default=60, ge=1, le=7200, description="Seconds to ring.")
    limit: int = Field(default=7200, ge=1, le=7200, description="Maximum call seconds.")
    ringback_tone: HttpUrl | None = Field(default=None, alias="ringbackTone")
    random_from_number: Ignored = Field(default=None, alias="randomFromNumber",
                                        description="Accepted, ignored.")
    machine_detection: Ignored = Field(default=None, alias="machineDetection",
                                       description="Accepted, ignored.")
    advanced_machine_detection: Ignored = Field(default=None, description="Accepted, ignored.")

    @property
    def target(self) -> PhoneEndpoint | SipEndpoint | WebsocketEndpoint | AppEndpoint:
        """The endpoint (there is exactly one)."""
        return self.endpoint[0]

    @property
    def synchronous(self) -> bool:
        return self.event_type == "synchronous"


class NotifyStep(_Step):
    """POST `payload` to `eventUrl` (with the call's ids beside it); the reply may be new
    steps."""

    action: Literal["notify"]
    payload: dict[str, Any]
    event_url_list: UrlList = Field(alias="eventUrl")
    event_method: EventMethod = Field(default="POST", alias="eventMethod")

    @property
    def event_url(self) -> str:
        return self.event_url_list[0]


class WaitStep(_Step):
    """Do nothing for `timeout` seconds."""

    action: Literal["wait"]
    timeout: float = Field(default=10.0, ge=0.1, le=7200)


class HangupStep(_Step):
    """Ours: end the call now (the CDR's hangupReason is `autohangup`)."""

    action: Literal["hangup"]
    reason: str | None = Field(default=None, max_length=200, pattern=r"^[^\r\n\x00]*$")


AnyStep = (
    PlayStep | SayStep | InputStep | RecordStep | ConferenceStep | ConnectStep | NotifyStep
    | WaitStep | HangupStep
)
Step = Annotated[AnyStep, Field(discriminator="action")]
_STEPS: TypeAdapter[list[AnyStep]] = TypeAdapter(
    Annotated[list[Step], Field(max_length=MAX_STEPS)]
)
_TAGS: frozenset[str] = frozenset(CANONICAL_ACTION)


# -- parsing ---------------------------------------------------------------------------------


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _errors(exc: ValidationError, raw: list[Any]) -> list[StepError]:
    out: list[StepError] = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        if not loc or not isinstance(loc[0], int):
            out.append(StepError(None, None, _field_path(loc), error["msg"]))
            continue
        index, rest = loc[0], loc[1:]
        action = None
        item = raw[index] if index < len(raw) else None
        if isinstance(item, dict) and isinstance(item.get("action"), str):
            action = item["action"]
        if rest and rest[0] in _TAGS:  # the union member's tag, not a field
            rest = rest[1:]
        # Drop the union tag of an endpoint too ("endpoint.0.sip.uri" -> "endpoint.0.uri").
        rest = tuple(
            part for i, part in enumerate(rest)
            if not (i >= 2 and rest[i - 2] == "endpoint" and isinstance(rest[i - 1], int))
        )
        message = error["msg"].removeprefix("Value error, ")
        ctx = error.get("ctx") or {}
        if error["type"] == "union_tag_invalid" and not rest:
            message = (f"unknown action {action!r}; expected one of "
                       + ", ".join(sorted(_TAGS)))
        elif error["type"] == "union_tag_invalid":
            message = (f"unknown {str(ctx.get('discriminator', '')).strip(chr(39))} "
                       f"{ctx.get('tag')!r}; expected one of {ctx.get('expected_tags')}")
        elif error["type"] == "union_tag_not_found" and not rest:
            message = "a step needs an \"action\""
        elif error["type"] == "union_tag_not_found":
            message = f"needs a {ctx.get('discriminator')} field"
        out.append(StepError(index, action, _field_path(rest), message))
    return out


def _step_list(data: bytes | str | list[Any] | dict[str, Any]) -> list[Any]:
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StepsInvalid([StepError(None, None, "", f"not JSON: {exc}")]) from None
    if isinstance(data, dict):
        keys = [key for key in ("steps", "ncco") if key in data]
        if len(keys) != 1:
            raise StepsInvalid([StepError(
                None, None, "", "an object must hold the list as \"steps\" or \"ncco\""
            )])
        data = data[keys[0]]
    if not isinstance(data, list):
        raise StepsInvalid([StepError(None, None, "", "a step list must be a JSON array")])
    return data


def parse_steps(data: bytes | str | list[Any] | dict[str, Any]) -> list[AnyStep]:
    """The steps in `data`: a JSON array (Vonage's form), `{"steps": [...]}` or
    `{"ncco": [...]}`, as bytes, text or already-decoded JSON. At most `MAX_STEPS` steps; an
    empty list is valid (nothing left to do: the call ends). Raises `StepsInvalid`."""
    raw = _step_list(data)
    try:
        return _STEPS.validate_python(raw)
    except ValidationError as exc:
        if len(raw) > MAX_STEPS:
            raise StepsInvalid([StepError(
                None, None, "", f"at most {MAX_STEPS} steps (got {len(raw)})"
            )]) from None
        raise StepsInvalid(_errors(exc, raw)) from None


def steps_to_json(steps: list[AnyStep]) -> list[dict[str, Any]]:
    """Steps back to their wire form (Vonage's names, absent options left out): what the call
    record stores; `parse_steps(steps_to_json(s)) == s`."""
    return [
        step.model_dump(by_alias=True, exclude_none=True, mode="json") for step in steps
    ]


def steps_json_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a step list, as published in docs/ncco.schema.json."""
    schema = _STEPS.json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://sdpbx.dev/schemas/ncco.schema.json",
        "title": "sdpbx step list (NCCO)",
        "description": "Call-control steps: a JSON array (or {\"steps\": [...]}); see "
        "docs/ncco.md. Vonage NCCO action and parameter names are accepted.",
        **schema,
    }


ACTIONS: frozenset[str] = frozenset(
    tag for model in get_args(AnyStep) for tag in get_args(model.model_fields["action"].annotation)
)


__all__ = [
    "ACTIONS",
    "CANONICAL_ACTION",
    "MAX_STEPS",
    "AnyStep",
    "AppEndpoint",
    "ConferenceStep",
    "ConnectStep",
    "DtmfSettings",
    "Endpoint",
    "HangupStep",
    "InputStep",
    "NotifyStep",
    "PhoneEndpoint",
    "PlayStep",
    "RecordStep",
    "SayStep",
    "SipEndpoint",
    "Step",
    "StepError",
    "StepsInvalid",
    "WaitStep",
    "WebsocketEndpoint",
    "parse_steps",
    "steps_json_schema",
    "steps_to_json",
]
