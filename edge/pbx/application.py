"""Call applications: the steps an application gives a call, run by the edge (DESIGN §3.7-3.8).

A `CallApplication` serves one call whose party the edge itself talks to: a call it placed for
the outbound-call API (the callee), or a call the router said to `answer` (the caller). It
hears of the call's progress through the B2BUA's `CallHooks` and reports each change to the
application's event URL as a Vonage-shaped status event (`control.contracts.events`), numbered
and in order. Once the party is on the line it takes the step list (given inline, or the answer
URL's reply, else the fallback answer URL's), validates it (`control.contracts.ncco`), and runs
it on the media engine's endpoint of the call:

- `play`/`say` queue audio (a prompt fetched and cached, or speech); `bargeIn` stops it at the
  party's first digit, which the next `input` then takes.
- `input` collects digits (RFC 4733, SIP INFO or in-band) until `maxDigits`, `#` with
  `submitOnHash`, or `timeOut` seconds of quiet; the result goes to the event URL, whose reply
  may be a new step list replacing the remaining steps.
- `record` records in the background while the next steps run (as Vonage's does); its result
  (the recording's URL) goes to the event URL when it ends.
- `conference` joins a named room mixed by the engine until the room ends or the party leaves.
- `connect` rings an endpoint and bridges it; once bridged the step list is done and the call
  lasts until either party hangs up. A connect that fails goes on with the next step.
- `notify` posts its payload and waits for the reply (new steps, maybe); `wait` pauses;
  `hangup` ends the call.

When the steps run out without a bridge, the call is hung up. An answer URL that fails (and
its fallback) or a step list that does not validate gets an `error` event and the fallback:
the call is hung up with the reason in the CDR's `lastError`. The current step list, the
position and the values collected are kept in the call record (`store_data["ivr"]`) after
every step, and every callback carries them (`state`), so the application can be stateless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol

from control.contracts.calls import CreateCall, conversation_uuid
from control.contracts.events import (
    AppEvent,
    CallStatus,
    IvrState,
    call_status_event,
    error_event,
    event_json,
    input_event,
    notify_event,
    record_event,
    ring_timeout_events,
)
from control.contracts.ncco import (
    AnyStep,
    ConferenceStep,
    ConnectStep,
    HangupStep,
    InputStep,
    NotifyStep,
    PlayStep,
    RecordStep,
    SayStep,
    StepsInvalid,
    WaitStep,
    parse_steps,
    steps_to_json,
)
from edge.pbx.calls import Call, CallManager, ConnectResult
from edge.pbx.routing import RouteDecision

log = logging.getLogger("sdpbx.applications")

AUTOHANGUP = "autohangup"  # the CDR's hangupReason when the steps end the call
FOREVER = 1_000_000  # `loop: 0` (until stopped), as a count


class AnswerFetcher(Protocol):
    async def fetch(self, url: str, method: str, params: dict[str, str]) -> bytes: ...


class EventSink(Protocol):
    def send(self, url: str, body: bytes) -> asyncio.Future[bytes | None]: ...


class Endpoint(Protocol):
    """The media engine's side of the party (`edge.io.media_engine.Endpoint`)."""

    digits: asyncio.Queue[Any]  # presses with a `.digit`

    def play(self, pcm: Any, *, loop: int = 1, gain: float = 1.0,
             barge_in: bool = False) -> asyncio.Future[Any]: ...
    def stop_playback(self) -> None: ...
    def start_recording(self, path: str, *, stereo: bool = False,
                        end_on_silence_s: float | None = None, end_on_key: str | None = None,
                        timeout_s: float = 7200, beep: bool = False) -> asyncio.Future[Any]: ...
    def stop_recording(self) -> None: ...
    def join(self, room_name: str, *, mute: bool = False, hear: bool = True,
             start_on_enter: bool = True, end_on_exit: bool = False,
             music_on_hold: Any = None) -> asyncio.Future[str]: ...
    def leave(self) -> None: ...
    @property
    def room(self) -> Any: ...


class MediaSources(Protocol):
    """Audio for `play` and `say`: 8 kHz mono int16 samples."""

    async def prompt(self, source: str) -> Any: ...
    async def speech(self, text: str, *, language: str | None, voice: str | None) -> Any: ...
    def gain(self, level: float) -> float: ...


class Recordings(Protocol):
    """Where a `record` step's WAV goes: a local path to write, then a URL to report."""

    def path_for(self, call_id: str, index: int) -> str: ...
    async def publish(self, path: str, call_id: str, index: int) -> str: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class AppSpec:
    """What an application gave for a call: where its steps come from and its events go."""

    to: str
    from_: str
    direction: Literal["inbound", "outbound"]
    steps: Sequence[Mapping[str, Any]] | None = None
    answer_url: str | None = None
    answer_method: str = "GET"
    fallback_answer_url: str | None = None
    event_url: str | None = None

    @classmethod
    def outbound(cls, request: CreateCall) -> AppSpec:
        return cls(to=request.to, from_=request.from_ or "anonymous", direction="outbound",
                   steps=request.ncco, answer_url=request.answer_url,
                   answer_method=request.answer_method,
                   fallback_answer_url=request.fallback_url, event_url=request.event_url)


@dataclass(slots=True, kw_only=True)
class MediaServices:
    """What the media steps need; a part left None makes its steps fail with an error event."""

    sources: MediaSources | None = None
    recordings: Recordings | None = None


class CallApplication:
    """The application side of one call; also its `CallHooks`."""

    def __init__(
        self,
        *,
        calls: CallManager,
        call_id: str,
        spec: AppSpec,
        fetcher: AnswerFetcher,
        events: EventSink,
        clock: Callable[[], float],
        media: MediaServices | None = None,
        fallback: Sequence[AnyStep] = (),
    ) -> None:
        """`fallback`: the steps run when the application gives no usable step list."""
        self._calls = calls
        self._fallback = tuple(fallback)
        self.call_id = call_id
        self.spec = spec
        self._fetcher = fetcher
        self._events = events
        self._clock = clock
        self._media = media or MediaServices()
        self.conversation_uuid = conversation_uuid(call_id)
        self._sequence = 0
        self._position = 0
        self._values: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._barged = False  # the last prompt was stopped by a digit: keep it for `input`
        self._recordings = 0
        self.bridged = False
        self.final_status: CallStatus | None = None
        self._call: Call | None = None  # known from the first hook on

    # ------------------------------------------------------------------ CallHooks

    def started(self) -> None:
        self._status("started")

    def ringing(self, call: Call) -> None:
        self._call = call
        self._status("ringing")

    def answered(self, call: Call) -> None:
        self._call = call
        self._status("answered", start=call.answered_at)
        self._task = asyncio.get_running_loop().create_task(self._run(call))
        self._task.add_done_callback(_log_failure)

    def ended(self, call: Call) -> None:
        self._call = call
        if self._task is not None and not self._task.done():
            self._task.cancel()
        endpoint = call.endpoint
        if endpoint is not None and self._background:
            # A recording in progress ends with the call; its task still reports it.
            with contextlib.suppress(Exception):
                endpoint.stop_recording()
        now = self._clock()
        end = call.ended_at or now
        if call.answered_at is not None:
            by = "user" if call.hangup_reason in ("byCaller", "byCallee") else "platform"
            self._status("completed", start=call.answered_at, end=end, disconnected_by=by)
            return
        code = call.status_code
        if call.hangup_reason == "noAnswer":
            self.final_status = "no-answer"
            call.store_data["app_status"] = "no-answer"
            for event in ring_timeout_events(
                uuid=self.call_id, conversation_uuid=self.conversation_uuid,
                call_id=self.call_id, first_sequence=self._sequence + 1,
                from_=self.spec.from_, to=self.spec.to, direction=self.spec.direction,
                now=now, sip_code=code, state=self._state(),
            ):
                self._sequence = event.sequence
                self._post(event)
            return
        status: CallStatus
        if code in (486, 600):
            status, detail = "busy", "remote_busy"
        elif code == 603:
            status, detail = "rejected", "declined"
        elif code == 487 or call.hangup_reason in ("canceled", "bySystem"):
            status, detail = "cancelled", "cancelled"
        elif code in (404, 484):
            status, detail = "failed", "invalid_number"
        elif code in (408, 480):
            status, detail = "unanswered", "unavailable"
        else:
            status, detail = "failed", "cannot_route"
        self._status(status, detail=detail, sip_code=code)

    # ------------------------------------------------------------------ commands

    def transfer(self, *, steps: Sequence[Mapping[str, Any]] | None = None,
                 answer_url: str | None = None, event_url: str | None = None) -> str | None:
        """Replace the running steps (the `transfer` command): what plays stops and the new
        list (given, or fetched from `answer_url`) runs from its first step. None when done,
        else why not."""
        call = self._call
        if call is None or call.ended or call.answered_at is None:
            return "the call is not answered"
        if self.bridged or call.endpoint is None:
            return "the call is bridged to another party: hang that one up first"
        if self._task is not None and not self._task.done():
            self._task.cancel()
        with contextlib.suppress(Exception):
            call.endpoint.stop_playback()
        self.spec = replace(self.spec, steps=steps, answer_url=answer_url,
                            fallback_answer_url=None,
                            event_url=event_url or self.spec.event_url)
        self._position = 0
        self._task = asyncio.get_running_loop().create_task(self._run(call))
        self._task.add_done_callback(_log_failure)
        return None

    async def play_now(self, pcm: Any, *, loop: int, level: float) -> str | None:
        """Play `pcm` to the party now (the `play`/`say` commands), over whatever plays."""
        call = self._call
        if call is None or call.ended or call.endpoint is None:
            return "the call's media is not terminated on this edge"
        gain = self._media.sources.gain(level) if self._media.sources else 1.0
        call.endpoint.play(pcm, loop=loop or FOREVER, gain=gain)
        return None

    async def speech(self, text: str, *, language: str | None,
                     voice: str | None) -> Any:
        return await self._sources().speech(text, language=language, voice=voice)

    async def prompt(self, source: str) -> Any:
        return await self._sources().prompt(source)

    def record_now(self) -> str | None:
        """Record the party from now on (the `start_recording` command), like a `record`
        step: the result goes to the event URL."""
        call = self._call
        if call is None or call.ended:
            return "the call is not answered"
        try:
            self._record(call, RecordStep(action="record", split="conversation"))
        except StepFailed as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ the steps

    async def _run(self, call: Call) -> None:
        steps = await self._initial_steps()
        if steps is None:
            return
        while not call.ended:
            if self._position >= len(steps):
                if not self.bridged:
                    self._calls.hang_up(self.call_id, AUTOHANGUP)
                return
            step = steps[self._position]
            self._remember(call, steps)
            try:
                replaced = await self._execute(call, step)
            except StepFailed as exc:
                self._report(f"step {self._position} ({step.kind}): {exc}")
                replaced = None
            if self.bridged:
                self._remember(call, steps)
                return
            if replaced is not None:
                steps, self._position = replaced, 0
            else:
                self._position += 1

    async def _initial_steps(self) -> list[AnyStep] | None:
        spec = self.spec
        source = "ncco"
        try:
            if spec.steps is not None:
                return parse_steps(list(spec.steps))
            source = "answer_url"
            return parse_steps(await self._answer_body())
        except StepsInvalid as exc:
            return self._fail(str(exc), errors=exc.error_dicts(), source=source)
        except Exception as exc:  # the fetcher's ApplicationUnavailable and the like
            return self._fail(str(exc) or type(exc).__name__, source=source)

    async def _answer_body(self) -> bytes:
        spec = self.spec
        assert spec.answer_url is not None
        params = {"to": spec.to, "from": spec.from_, "uuid": self.call_id,
                  "conversation_uuid": self.conversation_uuid}
        try:
            return await self._fetcher.fetch(spec.answer_url, spec.answer_method, params)
        except Exception as exc:
            if spec.fallback_answer_url is None:
                raise
            log.info("answer URL failed (%s): trying the fallback", exc,
                     extra={"call_id": self.call_id})
            return await self._fetcher.fetch(spec.fallback_answer_url, spec.answer_method,
                                             params)

    async def _execute(self, call: Call, step: AnyStep) -> list[AnyStep] | None:
        """Run one step; new steps when its reply replaced the remaining ones."""
        if isinstance(step, HangupStep):
            self._calls.hang_up(self.call_id, AUTOHANGUP)
            return None
        if isinstance(step, ConnectStep):
            await self._connect(call, step)
            return None
        if isinstance(step, WaitStep):
            await asyncio.sleep(step.timeout)
            return None
        if isinstance(step, NotifyStep):
            self._sequence += 1
            event = notify_event(
                payload=step.payload, uuid=self.call_id,
                conversation_uuid=self.conversation_uuid, call_id=self.call_id,
                sequence=self._sequence, now=self._clock(), state=self._state(),
            )
            return self._new_steps(await self._events.send(step.event_url, event_json(event)))
        if isinstance(step, PlayStep | SayStep):
            await self._play(call, step)
            return None
        if isinstance(step, InputStep):
            return await self._input(call, step)
        if isinstance(step, RecordStep):
            self._record(call, step)
            return None
        if isinstance(step, ConferenceStep):
            await self._conference(call, step)
            return None
        raise StepFailed(f"{step.kind} is not supported by this edge")

    def _endpoint(self, call: Call) -> Endpoint:
        if call.endpoint is None:
            raise StepFailed("the call's media is not terminated on this edge")
        endpoint: Endpoint = call.endpoint
        return endpoint

    def _sources(self) -> MediaSources:
        if self._media.sources is None:
            raise StepFailed("no prompt or speech source is configured")
        return self._media.sources

    async def _play(self, call: Call, step: PlayStep | SayStep) -> None:
        endpoint = self._endpoint(call)
        sources = self._sources()
        try:
            if isinstance(step, PlayStep):
                pcm = await sources.prompt(step.source)
            else:
                pcm = await sources.speech(step.text, language=step.language,
                                           voice=step.voice_id)
        except Exception as exc:
            raise StepFailed(f"audio not available: {exc}") from exc
        if call.ended:
            return
        if not step.barge_in:
            _drain(endpoint.digits)  # digits pressed over a prompt that is not barge-in
        result = await endpoint.play(pcm, loop=step.loop or FOREVER,
                                     gain=sources.gain(step.level), barge_in=step.barge_in)
        self._barged = getattr(result, "reason", None) == "barged_in" or result == "barged_in"

    async def _input(self, call: Call, step: InputStep) -> list[AnyStep] | None:
        endpoint = self._endpoint(call)
        settings = step.dtmf
        if not self._barged:
            _drain(endpoint.digits)
        self._barged = False
        digits = ""
        timed_out = False
        while len(digits) < settings.max_digits:
            try:
                press = await asyncio.wait_for(endpoint.digits.get(), settings.time_out)
            except TimeoutError:
                timed_out = True
                break
            digit = getattr(press, "digit", press)
            if digit == "#" and settings.submit_on_hash:
                break
            digits += str(digit)
        self._values[step.value_key(self._position)] = digits
        self._remember(call, None)
        self._sequence += 1
        event = input_event(
            digits=digits, timed_out=timed_out, uuid=self.call_id,
            conversation_uuid=self.conversation_uuid, call_id=self.call_id,
            sequence=self._sequence, from_=self.spec.from_, to=self.spec.to,
            now=self._clock(), state=self._state(),
        )
        url = step.event_url or self.spec.event_url
        if url is None:
            return None
        return self._new_steps(await self._events.send(url, event_json(event)))

    def _record(self, call: Call, step: RecordStep) -> None:
        endpoint = self._endpoint(call)
        recordings = self._media.recordings
        if recordings is None:
            raise StepFailed("recordings are not configured")
        self._recordings += 1
        index = self._recordings
        path = recordings.path_for(self.call_id, index)
        started = self._clock()
        done = endpoint.start_recording(
            path, stereo=step.split == "conversation",
            end_on_silence_s=step.end_on_silence, end_on_key=step.end_on_key,
            timeout_s=step.time_out, beep=step.beep_start,
        )
        self._report_recording(done, path, index, step.event_url or self.spec.event_url,
                               started=started)

    def _report_recording(self, done: asyncio.Future[Any], path: str, index: int,
                          url: str | None, *, started: float | None = None) -> None:
        """When a recording ends: publish its WAV, keep its URL in the state values, and post
        the `record` event."""
        recordings = self._media.recordings
        assert recordings is not None
        position = self._position
        started = self._clock() if started is None else started

        async def report() -> None:
            result = await done
            link = await recordings.publish(path, self.call_id, index)
            self._values[f"record{position}"] = link
            if url is None:
                return
            self._sequence += 1
            event = record_event(
                recording_url=link, recording_uuid=f"{self.call_id}-rec{index}",
                size=int(getattr(result, "size_bytes", 0)), start=started, end=self._clock(),
                uuid=self.call_id, conversation_uuid=self.conversation_uuid,
                call_id=self.call_id, sequence=self._sequence, now=self._clock(),
                state=self._state(),
            )
            self._events.send(url, event_json(event))

        task = asyncio.get_running_loop().create_task(report())
        task.add_done_callback(_log_failure)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _conference(self, call: Call, step: ConferenceStep) -> None:
        """Join the room until it ends (a member with endOnExit left) or the call does; a room
        not started yet (no member with startOnEnter) plays its music on hold. `canSpeak: []`
        mutes and `canHear: []` deafens (the engine has no per-leg lists)."""
        endpoint = self._endpoint(call)
        music = None
        if step.music_on_hold is not None:
            try:
                music = await self._sources().prompt(step.music_on_hold)
            except Exception as exc:
                self._report(f"step {self._position}: music on hold not available: {exc}")
        left = endpoint.join(
            step.name, mute=step.mute or step.can_speak == [],
            hear=step.can_hear != [], start_on_enter=step.start_on_enter,
            end_on_exit=step.end_on_exit, music_on_hold=music,
        )
        room = endpoint.room
        if step.record and room is not None and not room.recording \
                and self._media.recordings is not None:
            self._recordings += 1
            index = self._recordings
            path = self._media.recordings.path_for(self.call_id, index)
            self._report_recording(room.start_recording(path), path, index,
                                   step.event_url or self.spec.event_url)
        try:
            await left  # "left" | "room_ended" | "hangup"
        finally:
            if not call.ended:
                endpoint.leave()

    async def _connect(self, call: Call, step: ConnectStep) -> None:
        endpoint = step.target
        headers: tuple[tuple[str, str], ...] = ()
        if endpoint.type == "sip":
            target = endpoint.uri
            headers = tuple(endpoint.invite_headers)
        elif endpoint.type == "phone":
            target = endpoint.number
        elif endpoint.type == "app":
            target = endpoint.user
        else:
            raise StepFailed(f"connect to a {endpoint.type} endpoint is not supported yet")
        result = await self._calls.connect(
            self.call_id, target, from_user=step.from_, ring_time_s=step.timeout,
            headers=headers,
        )
        self.bridged = result.answered
        status, detail = _connect_status(result)
        self._status(status, detail=detail, sip_code=result.status, to=target,
                     uuid=f"{self.call_id}-{self._position}", url=step.event_url)

    def _new_steps(self, reply: bytes | None) -> list[AnyStep] | None:
        if not reply or not reply.strip():
            return None
        try:
            return parse_steps(reply)
        except StepsInvalid as exc:
            self._report(str(exc), errors=exc.error_dicts(), source="event_url")
            return None

    # ------------------------------------------------------------------ state and events

    def _state(self) -> IvrState:
        return IvrState(step=self._position, values=dict(self._values))

    def _remember(self, call: Call, steps: list[AnyStep] | None) -> None:
        ivr = call.store_data.setdefault("ivr", {"conversation_uuid": self.conversation_uuid})
        if steps is not None:
            ivr["steps"] = steps_to_json(steps)
        ivr["step"] = self._position
        ivr["values"] = dict(self._values)
        self._calls.record_changed(call)

    def _status(
        self, status: CallStatus, *, start: float | None = None, end: float | None = None,
        disconnected_by: Any = None, detail: str | None = None, sip_code: int | None = None,
        to: str | None = None, uuid: str | None = None, url: str | None = None,
    ) -> None:
        if uuid is None:
            self.final_status = status
            if self._call is not None:  # what GET /api/v1/calls/{id} shows
                self._call.store_data["app_status"] = status
        self._sequence += 1
        self._post(call_status_event(
            status=status, uuid=uuid or self.call_id, conversation_uuid=self.conversation_uuid,
            call_id=self.call_id, sequence=self._sequence, from_=self.spec.from_,
            to=to or self.spec.to, direction=self.spec.direction, now=self._clock(),
            start=start, end=end, disconnected_by=disconnected_by, detail=detail,
            sip_code=sip_code, state=self._state() if self._task is not None else None,
        ), url)

    def _report(self, reason: str, *, errors: list[dict[str, Any]] | None = None,
                source: str | None = None) -> None:
        log.info("call application: %s", reason, extra={"call_id": self.call_id})
        self._sequence += 1
        self._post(error_event(
            reason=reason, conversation_uuid=self.conversation_uuid, call_id=self.call_id,
            sequence=self._sequence, now=self._clock(), uuid=self.call_id, errors=errors,
            source=source, state=self._state(),
        ))

    def _fail(self, reason: str, *, errors: list[dict[str, Any]] | None = None,
              source: str) -> list[AnyStep] | None:
        """The defined fallback: report the error, keep it as the CDR's lastError, and run the
        configured fallback steps (`[applications] fallback_steps`), else hang up."""
        self._report(reason, errors=errors, source=source)
        call = self._calls.calls.get(self.call_id)
        if call is not None:
            call.last_error = (500, reason[:200])
        if self._fallback:
            return list(self._fallback)
        self._calls.hang_up(self.call_id, AUTOHANGUP)
        return None

    def _post(self, event: AppEvent, url: str | None = None) -> None:
        target = url or self.spec.event_url
        if target is not None:
            self._events.send(target, event_json(event))


class InboundApplications:
    """The `ApplicationStarter` of the B2BUA: a `CallApplication` for each call the router
    said to `answer` (its steps given, or its answer URL), reporting `started` at once."""

    def __init__(self, *, fetcher: AnswerFetcher, events: Callable[[], EventSink],
                 clock: Callable[[], float], media: MediaServices | None = None,
                 fallback: Sequence[AnyStep] = ()) -> None:
        self.calls: CallManager | None = None  # set once the B2BUA exists
        self.fallback = tuple(fallback)
        self._fetcher = fetcher
        self._events = events
        self._clock = clock
        self._media = media

    def __call__(self, call: Call, decision: RouteDecision) -> CallApplication:
        assert self.calls is not None
        spec = AppSpec(
            to=call.to_number or call.callee, from_=call.from_number or call.caller,
            direction="inbound", steps=decision.steps, answer_url=decision.answer_url,
            fallback_answer_url=decision.fallback_answer_url, event_url=decision.event_url,
        )
        application = CallApplication(
            calls=self.calls, call_id=call.call_id, spec=spec, fetcher=self._fetcher,
            events=self._events(), clock=self._clock, media=self._media,
            fallback=self.fallback,
        )
        application.started()
        return application


class StepFailed(Exception):
    """A step could not run: reported to the event URL, then the next step runs."""


def _drain(queue: asyncio.Queue[Any]) -> None:
    while not queue.empty():
        queue.get_nowait()


def _connect_status(result: ConnectResult) -> tuple[CallStatus, str | None]:
    if result.answered:
        return "answered", None
    code = result.status
    if code in (486, 600):
        return "busy", "remote_busy"
    if code == 603:
        return "rejected", "declined"
    if code == 480 and result.reason == "No answer":
        return "timeout", "ring_timeout"
    if code in (404, 484):
        return "failed", "invalid_number"
    return "failed", "cannot_route"


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("call application failed", exc_info=task.exception())


__all__ = [
    "AUTOHANGUP",
    "AnswerFetcher",
    "AppSpec",
    "CallApplication",
    "Endpoint",
    "EventSink",
    "InboundApplications",
    "MediaServices",
    "MediaSources",
    "Recordings",
    "StepFailed",
]
