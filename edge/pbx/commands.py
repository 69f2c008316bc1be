"""Active-call commands carried out on this edge's calls (`control.contracts.commands`).

The HTTP side (`edge.io.commands`) authenticates the control plane and parses the body; here a
command becomes SIP and media actions on the call: `hangup` sends BYE to both legs (or answers
a ringing caller), `mute`/`unmute` stop or resume the media relayed from one party, `hold`/
`unhold` re-INVITE one party with a=sendonly / a=sendrecv, `transfer` replaces the callee
by another party (blind), `send_dtmf` sends digits to one party as SIP INFO.
"""

from __future__ import annotations

from dataclasses import dataclass

from control.contracts.commands import AnyCommand, Hangup, Hold, Mute, SendDtmf, Transfer
from edge.pbx.calls import CallManager
from edge.pbx.media import LegName


@dataclass(frozen=True, slots=True)
class Outcome:
    """The HTTP status and message of a command (COMPAT: 200 dispatched, 404, 409, 501)."""

    status: int
    message: str


DISPATCHED = Outcome(200, "Command dispatched")


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
        refused = calls.hold(call_id, leg, command.action == "hold")
        return DISPATCHED if refused is None else Outcome(409, refused)
    if isinstance(command, Transfer):
        if command.attended:
            return Outcome(501, "attended transfer is not supported by this edge yet")
        refused = await calls.transfer(call_id, command.target)
        return DISPATCHED if refused is None else Outcome(409, refused)
    if isinstance(command, SendDtmf):
        leg = "a" if command.leg_id == "caller" else "b"
        refused = calls.send_dtmf(call_id, leg, command.digits.upper(),
                                  duration_ms=command.duration_ms, gap_s=command.gap_ms / 1000)
        return DISPATCHED if refused is None else Outcome(409, refused)
    return Outcome(501, f"{command.action!r} is not supported by this edge yet")


__all__ = ["DISPATCHED", "Outcome", "execute"]
