"""Active-call commands: the body of `POST /console/calls/active/{id}/commands` (COMPAT.md
"Active call commands"), tagged by `action`, and the reply.

The control plane validates a command with `parse_command` and forwards the same JSON to the
edge that owns the call; the edge parses it again (it trusts no caller) and carries it out.
Pydantic only: Lambda code imports it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, model_validator


class _Command(BaseModel):
    # Built at the first command, not at import (a Lambda answering other routes never pays).
    model_config = ConfigDict(extra="forbid", defer_build=True)


class Hangup(_Command):
    """End the call: BYE both legs when answered; before the answer the caller gets `code`."""

    action: Literal["hangup"]
    reason: str | None = Field(default=None, max_length=200)
    code: int | None = Field(default=None, ge=400, le=699)


class Mute(_Command):
    """Stop relaying what `leg` says (the other party no longer hears it); RTCP keeps flowing.
    `leg` is `caller` or `callee`; `track_id` is RustPBX's name for the same thing."""

    action: Literal["mute", "unmute"]
    leg: Literal["caller", "callee"] | None = None
    track_id: Literal["caller", "callee"] | None = None

    @property
    def target(self) -> Literal["caller", "callee"]:
        return self.leg or self.track_id or "caller"


class Hold(_Command):
    """Put one party on hold (the edge re-INVITEs it with a=sendonly and stops the media
    towards it, RFC 3264 §8.4) or resume it. `leg_id`: `caller` or `callee` (default)."""

    action: Literal["hold", "unhold"]
    leg_id: Literal["caller", "callee"] = "callee"


class Transfer(_Command):
    """Blind transfer of the caller: to `target` (an extension of ours, `"1002"`, a SIP URI, or
    a number routed through the trunks; the callee gets BYE), or to a new step list (`ncco`, or
    the steps `answer_url` returns: the edge takes the caller itself and runs them). `attended`
    transfers are not supported (501)."""

    action: Literal["transfer"]
    target: str | None = Field(default=None, min_length=1, max_length=256,
                               pattern=r"^[^\s<>\"]+$")
    ncco: list[dict[str, Any]] | None = Field(default=None, min_length=1, max_length=100)
    answer_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    event_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    attended: bool = False

    @model_validator(mode="after")
    def _one_destination(self) -> Transfer:
        given = [self.target is not None, self.ncco is not None, self.answer_url is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of target, ncco, answer_url")
        return self


class SendDtmf(_Command):
    """Send `digits` to one party (`leg_id`: `callee`, the default, or `caller`), one SIP INFO
    per digit (`application/dtmf-relay`, the form SIP phones and gateways take), `duration_ms`
    each, `gap_ms` apart."""

    action: Literal["send_dtmf"]
    digits: str = Field(pattern=r"^[0-9*#A-Da-d]{1,64}$")
    leg_id: Literal["caller", "callee"] = "callee"
    duration_ms: int = Field(default=160, ge=40, le=2000)
    gap_ms: int = Field(default=100, ge=0, le=2000)


class PlaySource(BaseModel):
    """What `play` plays (COMPAT: `source: {type: file|url|tone|silence, ...}`)."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["file", "url", "tone", "silence"]
    url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://\S+$")
    path: str | None = Field(default=None, max_length=512)
    frequencies: list[float] = Field(default_factory=lambda: [425.0], min_length=1,
                                     max_length=4)
    duration_ms: int = Field(default=1000, ge=20, le=600_000)

    @model_validator(mode="after")
    def _complete(self) -> PlaySource:
        if self.type == "url" and self.url is None:
            raise ValueError("a url source needs url")
        if self.type == "file" and self.path is None:
            raise ValueError("a file source needs path")
        return self


class Play(_Command):
    """Play audio to the caller of a call the edge answered itself (an application's call;
    409 for a call whose media is only relayed). `loop` 0 = until `stop_playback`."""

    action: Literal["play"]
    source: PlaySource
    loop: int = Field(default=1, ge=0, le=1000)
    level: float = Field(default=0.0, ge=-1.0, le=1.0)


class Say(_Command):
    """Speak `text` to the caller of a call the edge answered (ours, like `play`)."""

    action: Literal["say"]
    text: str = Field(min_length=1, max_length=1500)
    language: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
    voice: str | None = Field(default=None, max_length=64)
    loop: int = Field(default=1, ge=0, le=1000)


class StopPlayback(_Command):
    action: Literal["stop_playback"]


class Recording(_Command):
    """Record the call (stereo WAV: caller left, callee right) from now on, or stop; the
    recording is stored and listed in the CDR like an automatic one."""

    action: Literal["start_recording", "stop_recording"]


class Accept(_Command):
    """Answer a ringing call now: the edge answers the caller itself (its B-legs cancelled)
    and holds it, silent, for the next commands (`play`, `say`, `transfer`, `hangup`), at
    most `hold_s` seconds. An answer `sdp` of the API caller's own (RustPBX's option) is not
    supported (501); `callee` is accepted and ignored."""

    action: Literal["accept"]
    callee: str | None = Field(default=None, max_length=256)
    sdp: str | None = Field(default=None, max_length=16_384)
    hold_s: int = Field(default=3600, ge=1, le=7200)


class Unsupported(_Command):
    """Commands COMPAT.md lists that this edge does not carry out (501)."""

    model_config = ConfigDict(extra="allow")
    action: Literal["pause_recording", "resume_recording"]


AnyCommand = (
    Hangup | Mute | Hold | Transfer | SendDtmf | Play | Say | StopPlayback | Recording | Accept
    | Unsupported
)
Command = Annotated[AnyCommand, Field(discriminator="action")]
_COMMAND: TypeAdapter[AnyCommand] = TypeAdapter(
    Command, config=ConfigDict(defer_build=True))


def parse_command(body: bytes) -> AnyCommand:
    """The command in a request body; `pydantic.ValidationError` names what is wrong."""
    return _COMMAND.validate_json(body)


class CommandReply(BaseModel):
    """What the edge (and then the API) answers: 200 `{"message": "Command dispatched"}`."""

    message: str
    data: dict[str, object] | None = None


__all__ = [
    "Accept",
    "AnyCommand",
    "Command",
    "CommandReply",
    "Hangup",
    "Hold",
    "Mute",
    "Play",
    "PlaySource",
    "Recording",
    "Say",
    "SendDtmf",
    "StopPlayback",
    "Transfer",
    "Unsupported",
    "parse_command",
]
