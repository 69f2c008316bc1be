"""Active-call commands carried out on this edge's calls (`control.contracts.commands`).

The HTTP side (`edge.io.commands`) authenticates the control plane and parses the body; here a
command becomes SIP and media actions on the call: `hangup` sends BYE to both legs (or answers
a ringing caller), `mute`/`unmute` stop or resume the media relayed from one party, `hold`/
`unhold` re-INVITE one party with a=sendonly / a=sendrecv, `transfer` replaces the callee by
another party (blind) or hands the caller to a new step list, `send_dtmf` sends digits to one
party (RFC 4733 in the stream when the edge itself talks to it, else SIP INFO),
`start_recording`/`stop_recording` record the call, `play`, `say` and `stop_playback` play to a
caller the edge answered itself (an application's), and `accept` answers a ringing caller on
the edge, holding it for the next commands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from control.contracts.commands import (
    Accept,
    AnyCommand,
    Hangup,
    Hold,
    Mute,
    Play,
    Recording,
    Say,
    SendDtmf,
    StopPlayback,
    Transfer,
)
from edge.media.audio import silence, tone
from edge.pbx.application import CallApplication
from edge.pbx.calls import Call, CallManager
from edge.pbx.media import LegName
from edge.pbx.routing import RouteDecision

_NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")


@dataclass(frozen=True, slots=True)
class Outcome:
    """The HTTP status and message of a command (COMPAT: 200 dispatched, 404, 409, 501)."""

    status: int
    message: str


DISPATCHED = Outcome(200, "Command dispatched")


def _result(refused: str | None) -> Outcome:
    return DISPATCHED if refused is None else Outcome(409, refused)


async def execute(calls: CallManager, call_id: str, command: AnyCommand) -> Outcome:
    call = calls.calls.get(call_id)
    if call is None:
        return Outcome(404, f"no active call {call_id!r} on this edge")
    if isinstance(command, Hangup):
        calls.hang_up(call_id, "bySystem", code=command.code, phrase=command.reason)
        return DISPATCHED
    if isinstance(command, Mute):
        if call.media is None or call.media.session is None:
            return Outcome(409, "the call's media is not relayed by this edge (media_proxy)")
        # Muting the caller stops what the callee hears from it: the media towards leg b.
        towards: LegName = "b" if command.target == "caller" else "a"
        call.media.set_muted(towards, command.action == "mute")
        return DISPATCHED
    if isinstance(command, Hold):
        leg: LegName = "a" if command.leg_id == "caller" else "b"
        return _result(calls.hold(call_id, leg, command.action == "hold"))
    if isinstance(command, Transfer):
        return await _transfer(calls, call, command)
    if isinstance(command, SendDtmf):
        to: LegName = "a" if command.leg_id == "caller" else "b"
        if call.endpoint is not None and to == call.app_leg:
            # The edge itself speaks to that party: RFC 4733 events in its stream.
            try:
                call.endpoint.send_dtmf(command.digits.upper())
                return DISPATCHED
            except ValueError:
                pass  # no telephone-event negotiated: SIP INFO below
        return _result(calls.send_dtmf(call_id, to, command.digits.upper(),
                                       duration_ms=command.duration_ms,
                                       gap_s=command.gap_ms / 1000))
    if isinstance(command, Recording):
        application = _application(call)
        if call.endpoint is not None and application is not None:
            if command.action == "start_recording":
                return _result(application.record_now())
            call.endpoint.stop_recording()
            return DISPATCHED
        if command.action == "start_recording":
            return _result(calls.start_recording(call_id))
        return _result(calls.stop_recording(call_id))
    if isinstance(command, Play | Say | StopPlayback):
        return await _play(call, command)
    if isinstance(command, Accept):
        if command.sdp is not None:
            return Outcome(501, "accept with an SDP of your own is not supported: the edge "
                                "answers with its own media")
        if call.answered_at is not None:
            return Outcome(409, "the call is answered already")
        # The edge answers and holds the caller (silence) until the next command.
        decision = RouteDecision(action="answer", steps=(
            {"action": "wait", "timeout": command.hold_s},))
        return _result(await calls.take_over(call_id, decision))
    return Outcome(501, f"{command.action!r} is not supported by this edge")


def _application(call: Call) -> CallApplication | None:
    return call.hooks if isinstance(call.hooks, CallApplication) else None


async def _transfer(calls: CallManager, call: Call, command: Transfer) -> Outcome:
    if command.attended:
        return Outcome(501, "attended transfer is not supported by this edge")
    application = _application(call)
    if command.target is not None:
        if application is None or application.bridged:
            return _result(await calls.transfer(call.call_id, command.target))
        # The edge holds the caller (an application's call): connect it to the target.
        return _result(application.transfer(steps=[_connect_step(command.target)]))
    if application is not None:
        return _result(application.transfer(steps=command.ncco, answer_url=command.answer_url,
                                            event_url=command.event_url))
    decision = RouteDecision(
        action="answer", steps=tuple(command.ncco) if command.ncco else None,
        answer_url=command.answer_url, event_url=command.event_url,
    )
    return _result(await calls.take_over(call.call_id, decision))


def _connect_step(target: str) -> dict[str, Any]:
    if target.startswith(("sip:", "sips:")):
        endpoint: dict[str, Any] = {"type": "sip", "uri": target}
    elif _NUMBER.match(target):
        endpoint = {"type": "phone", "number": target}
    else:
        endpoint = {"type": "app", "user": target}
    return {"action": "connect", "endpoint": [endpoint]}


async def _play(call: Call, command: Play | Say | StopPlayback) -> Outcome:
    application = _application(call)
    if application is None or call.endpoint is None:
        return Outcome(409, "the edge plays only to a caller it answered itself (an "
                            "application's call); this call's media is relayed")
    if isinstance(command, StopPlayback):
        call.endpoint.stop_playback()
        return DISPATCHED
    try:
        if isinstance(command, Say):
            pcm = await application.speech(command.text, language=command.language,
                                           voice=command.voice)
            return _result(await application.play_now(pcm, loop=command.loop, level=0.0))
        source = command.source
        if source.type == "tone":
            pcm = tone(source.frequencies, source.duration_ms)
        elif source.type == "silence":
            pcm = silence(source.duration_ms)
        else:
            pcm = await application.prompt(source.url or source.path or "")
    except Exception as exc:
        return Outcome(409, f"the audio is not available: {exc}")
    return _result(await application.play_now(pcm, loop=command.loop, level=command.level))


__all__ = ["DISPATCHED", "Outcome", "execute"]
