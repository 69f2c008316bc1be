"""Active-call commands: the body of `POST /console/calls/active/{id}/commands` (COMPAT.md
"Active call commands"), tagged by `action`, and the reply.

The control plane validates a command with `parse_command` and forwards the same JSON to the
edge that owns the call; the edge parses it again (it trusts no caller) and carries it out.
Pydantic only: Lambda code imports it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid")


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
    """Blind transfer of the caller to `target`: an extension of ours (`"1002"`) or a SIP URI.
    The callee gets BYE; `attended` transfers are not supported (501)."""

    action: Literal["transfer"]
    target: str = Field(min_length=1, max_length=256, pattern=r"^[^\s<>\"]+$")
    attended: bool = False


class SendDtmf(_Command):
    """Send `digits` to one party (`leg_id`: `callee`, the default, or `caller`), one SIP INFO
    per digit (`application/dtmf-relay`, the form SIP phones and gateways take), `duration_ms`
    each, `gap_ms` apart."""

    action: Literal["send_dtmf"]
    digits: str = Field(pattern=r"^[0-9*#A-Da-d]{1,64}$")
    leg_id: Literal["caller", "callee"] = "callee"
    duration_ms: int = Field(default=160, ge=40, le=2000)
    gap_ms: int = Field(default=100, ge=0, le=2000)


class Unsupported(_Command):
    """Commands COMPAT.md lists that this edge does not carry out yet (501)."""

    model_config = ConfigDict(extra="allow")
    action: Literal[
        "accept", "play", "stop_playback",
        "start_recording", "stop_recording", "pause_recording", "resume_recording",
    ]


AnyCommand = Hangup | Mute | Hold | Transfer | SendDtmf | Unsupported
Command = Annotated[AnyCommand, Field(discriminator="action")]
_COMMAND: TypeAdapter[AnyCommand] = TypeAdapter(Command)


def parse_command(body: bytes) -> AnyCommand:
    """The command in a request body; `pydantic.ValidationError` names what is wrong."""
    return _COMMAND.validate_json(body)


class CommandReply(BaseModel):
    """What the edge (and then the API) answers: 200 `{"message": "Command dispatched"}`."""

    message: str
    data: dict[str, object] | None = None


__all__ = [
    "AnyCommand",
    "Command",
    "CommandReply",
    "Hangup",
    "Hold",
    "Mute",
    "SendDtmf",
    "Transfer",
    "Unsupported",
    "parse_command",
]
