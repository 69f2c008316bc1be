"""CDRs at call end: building the record, its blob keys, and writing it so that it is never lost.

`CdrWriter.write` is called once per call when it ends, answered or not. In order:

1. the recording (if any) is handed to the spool (`recordings/YYYY/MM/DD/{call_id}.wav`);
2. the CDR JSON is written to the spool (`cdr/YYYY/MM/DD/{call_id}.json`), fsynced before
   `write` returns; the spool uploads both to the blob store in the background;
3. when `[callrecord] type = "http"`, the push (CDR + recording) is queued on its own disk
   queue (`edge.io.cdr_push`), which retries until the receiver takes it;
4. the index entry (`CdrEntry`) is put into the `CdrStore` from a background task that retries
   a few times; a store outage is logged, never raised into the call (the CDR itself is safe
   in the spool, so the index can be rebuilt from the blobs).

Keys (`control.contracts.blob_keys`) are dated by the UTC day of the call's start, with the
Call-ID percent-encoded into one safe segment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from control.contracts.blob_keys import cdr_key, recording_key
from control.contracts.cdr import (
    CallDetailRecord,
    CdrDirection,
    CdrStatus,
    HangupMessage,
    LastError,
    LegEvent,
    LegTimeline,
    RecorderMedia,
    Rewrite,
    rfc3339,
    rfc3339_or_none,
    trusted,
    utc_milliseconds,
)
from control.contracts.cdr_push import WAV_CONTENT_TYPE
from control.store.errors import StoreError, StoreUnavailable
from control.store.models import CdrEntry
from control.store.ports import CdrStore
from control.store.spool import Backoff, BlobSpool
from edge.sip.errors import SipParseError
from edge.sip.uri import SipUri, TelUri, parse_uri

log = logging.getLogger("sdpbx.cdr")

CDR_CONTENT_TYPE = "application/json"
RECORDING_TRACK_ID = "stereo"  # the call recording: caller left, callee right


INDEX_BACKOFF = Backoff(base_s=0.5, cap_s=30.0)  # index retries: 0.5, 1, 2, 4 s (jittered)

# Not answered, and nobody did anything wrong: the callee could have picked up.
_MISSED_REASONS = frozenset({"canceled", "noAnswer", "rejected", "abandoned"})
_MISSED_CODES = frozenset({408, 480, 486, 487, 600, 603})


def call_status(*, answered: bool, status_code: int, hangup_reason: str | None) -> CdrStatus:
    """completed when answered; missed when the callee could have answered but did not
    (canceled, no answer, busy or declined); failed otherwise (no route, an error)."""
    if answered:
        return "completed"
    if hangup_reason in _MISSED_REASONS or status_code in _MISSED_CODES:
        return "missed"
    return "failed"


def _number(uri: str) -> str | None:
    """The user part of a SIP URI or the number of a tel URI (None when it has neither)."""
    try:
        parsed = parse_uri(uri.strip().removeprefix("<").removesuffix(">"))
    except SipParseError:
        return None
    if isinstance(parsed, SipUri):
        return parsed.user
    if isinstance(parsed, TelUri):
        return parsed.number
    return None


def _seconds_between(start: float | None, end: float) -> float:
    if start is None:
        return 0.0
    # From the millisecond values the strings show, so a consumer recomputing agrees.
    return max(0, utc_milliseconds(end) - utc_milliseconds(start)) / 1000


def build_cdr(
    *,
    call_id: str,
    caller: str,
    callee: str,
    direction: CdrDirection,
    start_time: float,
    end_time: float,
    status_code: int,
    ring_time: float | None = None,
    answer_time: float | None = None,
    hangup_reason: str | None = None,
    status: CdrStatus | None = None,
    session_id: str | None = None,
    from_number: str | None = None,
    to_number: str | None = None,
    hangup_messages: Sequence[HangupMessage] = (),
    rewrite: Rewrite | None = None,
    sip_trunk_id: str | None = None,
    sip_gateway: str | None = None,
    leg_events: Sequence[LegEvent] = (),
    last_error: LastError | None = None,
    metadata: Mapping[str, Any] | None = None,
    edge_id: str | None = None,
) -> CallDetailRecord:
    """A CDR from what the call saw (Unix times); fills what follows from the rest: `status`
    (`call_status`), `sessionId` (= callId for a root call), the numbers (user part of the
    URIs), `durationSecs` and `billsecSecs`.

    Built without validation (`trusted`, as are the parts the caller passes): every value is
    the edge's own (times formatted here, codes from parsed SIP), validating each CDR again
    cost ~4% of a call's CPU, and tests/pbx/test_cdr.py proves that what this builds
    validates."""
    end_time = max(end_time, start_time)  # a clock step must not give a negative duration
    return trusted(CallDetailRecord, dict(
        call_id=call_id,
        session_id=session_id if session_id is not None else call_id,
        start_time=rfc3339(start_time),
        ring_time=rfc3339_or_none(ring_time),
        answer_time=rfc3339_or_none(answer_time),
        end_time=rfc3339(end_time),
        caller=caller,
        callee=callee,
        from_number=from_number if from_number is not None else _number(caller),
        to_number=to_number if to_number is not None else _number(callee),
        direction=direction,
        status=status or call_status(answered=answer_time is not None,
                                     status_code=status_code, hangup_reason=hangup_reason),
        status_code=status_code,
        hangup_reason=hangup_reason,
        hangup_messages=list(hangup_messages),
        rewrite=rewrite,
        sip_trunk_id=sip_trunk_id,
        sip_gateway=sip_gateway,
        recorder=[],
        recording_url=None,
        recording_duration_secs=None,
        leg_timeline=trusted(LegTimeline, {"events": list(leg_events)}),
        last_error=last_error,
        metadata=dict(metadata or {}),
        edge_id=edge_id,
        duration_secs=_seconds_between(start_time, end_time),
        billsec_secs=_seconds_between(answer_time, end_time),
    ))


class CdrPushQueue(Protocol):
    """What the writer needs of the HTTP push (`edge.io.cdr_push.CdrPusher`)."""

    @property
    def with_media(self) -> bool: ...

    async def stage_recording(self, path: str) -> str | None:
        """Keep the recording at `path` for the push (before the spool takes the file);
        returns a name for `enqueue`, or None when it cannot or need not."""
        ...

    async def discard_staged(self, name: str) -> None: ...

    async def enqueue(self, cdr_json: bytes, *, key: str, call_id: str,
                      recording: str | None, track_id: str | None) -> None:
        """Queue the push durably (on disk before it returns)."""
        ...


class CdrWriter:
    """Writes each ended call's CDR (and recording) through the spool; see the module doc.

    `await close()` at shutdown, before the stores close: it waits (bounded) for index writes
    still being retried.
    """

    def __init__(
        self,
        spool: BlobSpool,
        cdr_store: CdrStore,
        *,
        edge_id: str,
        push: CdrPushQueue | None = None,
        index_attempts: int = 5,
        index_backoff: Backoff = INDEX_BACKOFF,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random_draw: Callable[[], float] = random.random,
    ) -> None:
        if index_attempts < 1:
            raise ValueError("index_attempts must be at least 1")
        self._spool = spool
        self._store = cdr_store
        self._edge_id = edge_id
        self._push = push
        self._index_attempts = index_attempts
        self._index_backoff = index_backoff
        self._sleep = sleep
        self._random = random_draw
        self._index_tasks: set[asyncio.Task[None]] = set()
        # The loop, found once: get_running_loop() makes a getpid() system call every time.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Counters for metrics.
        self.written = 0
        self.index_failures = 0

    async def write(self, cdr: CallDetailRecord, *, recording_path: str | None = None) -> None:
        """Save `cdr` (and the recording file at `recording_path`, which the spool takes
        over). Returns once the CDR is on local disk; raises only `StoreUnavailable` when it
        cannot be (the spool's disk is full or failing: logged at CRITICAL/ERROR)."""
        if cdr.edge_id is None:
            cdr = cdr.model_copy(update={"edge_id": self._edge_id})
        start = cdr.start_timestamp
        json_key = cdr_key(cdr.call_id, start)
        wav_key = ""
        staged: str | None = None
        if recording_path is not None:
            if self._push is not None and self._push.with_media:
                # Before the spool moves the file away (and deletes it once uploaded).
                staged = await self._push.stage_recording(recording_path)
            wav_key, cdr = await self._save_recording(cdr, recording_path, start)
        body = cdr.to_json_bytes()
        error: StoreUnavailable | None = None
        try:
            await self._spool.write(json_key, body, CDR_CONTENT_TYPE)
        except StoreUnavailable as exc:
            error = exc  # the spool has logged it; the push below may still carry the CDR
        if self._push is not None:
            await self._enqueue_push(cdr, body, json_key, staged)
        if error is not None:
            raise error
        self.written += 1
        entry = CdrEntry(
            call_id=cdr.call_id,
            start_time=utc_milliseconds(start) / 1000,
            end_time=cdr.end_timestamp,
            caller=cdr.caller,
            callee=cdr.callee,
            direction=cdr.direction,
            status=cdr.status,
            duration=cdr.duration_secs,
            cdr_key=json_key,
            recording_key=wav_key,
            edge_id=cdr.edge_id or self._edge_id,
        )
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        task = loop.create_task(self._index(entry), name=f"cdr index {cdr.call_id}")
        self._index_tasks.add(task)
        task.add_done_callback(self._index_tasks.discard)

    async def _save_recording(
        self, cdr: CallDetailRecord, path: str, start: float
    ) -> tuple[str, CallDetailRecord]:
        """Spool the recording; on success the CDR lists it in `recorder` (path = its key)."""
        key = recording_key(cdr.call_id, start)
        try:
            size = (await asyncio.to_thread(os.stat, path)).st_size
            await self._spool.write_file(key, path, WAV_CONTENT_TYPE)
        except (OSError, StoreUnavailable) as exc:
            # The CDR matters more than its recording: report it and carry on without it.
            log.error("recording of call %s not saved: %s", cdr.call_id, exc,
                      extra={"call_id": cdr.call_id, "path": path})
            return "", cdr
        tracks = [track for track in cdr.recorder if track.path not in (path, key)]
        previous = next((track for track in cdr.recorder if track.path == path), None)
        track_id = previous.track_id if previous is not None else RECORDING_TRACK_ID
        tracks.append(RecorderMedia(track_id=track_id, path=key, size=size))
        return key, cdr.model_copy(update={"recorder": tracks})

    async def _enqueue_push(self, cdr: CallDetailRecord, body: bytes, key: str,
                            staged: str | None) -> None:
        assert self._push is not None
        track_id = next((track.track_id for track in cdr.recorder), RECORDING_TRACK_ID)
        try:
            await self._push.enqueue(body, key=key, call_id=cdr.call_id, recording=staged,
                                     track_id=track_id if staged is not None else None)
        except (StoreUnavailable, OSError, ValueError) as exc:
            log.error("CDR push of call %s not queued: %s", cdr.call_id, exc,
                      extra={"call_id": cdr.call_id})
            if staged is not None:
                with contextlib.suppress(OSError):
                    await self._push.discard_staged(staged)

    async def _index(self, entry: CdrEntry) -> None:
        for attempt in range(1, self._index_attempts + 1):
            try:
                await self._store.put(entry)
                return
            except StoreError as exc:
                if attempt == self._index_attempts:
                    self.index_failures += 1
                    log.error(
                        "CDR index entry of call %s not stored after %d attempts: %s "
                        "(the CDR itself is at %s)", entry.call_id, attempt, exc, entry.cdr_key,
                        extra={"call_id": entry.call_id, "cdr_key": entry.cdr_key},
                    )
                    return
                delay = self._index_backoff.delay(attempt, self._random())
                log.warning("CDR index write failed, retrying in %.1f s: %s", delay, exc,
                            extra={"call_id": entry.call_id, "attempt": attempt})
                await self._sleep(delay)
            except Exception:  # a bug costs this index entry, never the caller
                self.index_failures += 1
                log.exception("CDR index entry of call %s not stored", entry.call_id)
                return

    def pending_index_writes(self) -> int:
        return len(self._index_tasks)

    async def drain(self) -> None:
        """Wait until every index write has finished (stored or given up)."""
        while self._index_tasks:
            await asyncio.gather(*list(self._index_tasks), return_exceptions=True)

    async def close(self, timeout_s: float = 5.0) -> None:
        """Let index writes finish for up to `timeout_s`, then cancel what is left (logged:
        those CDRs are in the spool, only their index entries are missing)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.drain()
        left = list(self._index_tasks)
        if left:
            log.error("%d CDR index writes abandoned at shutdown", len(left))
            for task in left:
                task.cancel()
            await asyncio.gather(*left, return_exceptions=True)
