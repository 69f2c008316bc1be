"""A call's shared record in the `CallStore`: snapshots, the write-behind writer, crash recovery.

The SIP flow never waits for the store (DESIGN §4). `CallStateWriter` keeps the latest snapshot
of each changed call and one worker writes them: a call that rings and is answered before the
worker comes round costs one write, not two. A call costs at most three writes: created (trying
or ringing), answered (with both dialogs, so another process could end it), and final.

After a crash, `recover_calls` finds the calls this edge still owns in the store, sends BYE on
each stored dialog, and hands them back (marked `bySystem`) for their CDRs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from control.contracts.cdr import (
    CallDetailRecord,
    CdrDirection,
    HangupMessage,
    LastError,
    LegEvent,
    rfc3339,
    trusted,
)
from control.contracts.cdr import Rewrite as CdrRewrite
from control.store.errors import Conflict, NotFound, StoreError
from control.store.models import CallRecord
from control.store.ports import CallStore
from edge.pbx.calls import Call
from edge.pbx.cdr import build_cdr
from edge.pbx.core import SipTransport
from edge.sip.address import parse_name_addr
from edge.sip.dialog import Dialog, DialogState
from edge.sip.events import Peer
from edge.sip.via import MAGIC_COOKIE

log = logging.getLogger("sdpbx.calls.store")


def dialog_data(dialog: Dialog, peer: Peer) -> dict[str, Any]:
    """What another process needs to send a BYE in this dialog (RFC 3261 §12.2.1.1)."""
    return {
        "call_id": dialog.call_id,
        "local_tag": dialog.local_tag,
        "remote_tag": dialog.remote_tag,
        "local_party": str(dialog.local_party),
        "remote_party": str(dialog.remote_party),
        "remote_target": dialog.remote_target,
        "route_set": list(dialog.route_set),
        "local_seq": dialog.local_seq,
        "remote_seq": dialog.remote_seq,
        "is_uac": dialog.is_uac,
        "via_transport": dialog.via_transport,
        "via_host": dialog.via_host,
        "via_port": dialog.via_port,
        "local_contact": dialog.local_contact,
        "peer": {"transport": peer.transport, "host": peer.address[0], "port": peer.address[1]},
    }


def restore_dialog(data: Mapping[str, Any], new_branch: Callable[[], str]) -> tuple[Dialog, Peer]:
    peer = data["peer"]
    dialog = Dialog(
        call_id=data["call_id"],
        local_tag=data["local_tag"],
        remote_tag=data["remote_tag"],
        local_party=parse_name_addr(data["local_party"]),
        remote_party=parse_name_addr(data["remote_party"]),
        remote_target=data["remote_target"],
        route_set=tuple(data.get("route_set") or ()),
        local_seq=data.get("local_seq"),
        remote_seq=data.get("remote_seq"),
        secure=False,
        is_uac=bool(data.get("is_uac")),
        state=DialogState.CONFIRMED,
        new_branch=new_branch,
        via_transport=data.get("via_transport", "UDP"),
        via_host=data["via_host"],
        via_port=data.get("via_port"),
        local_contact=data.get("local_contact"),
    )
    # A stream connection did not survive the restart: the peer's flow is gone, use UDP.
    transport = peer["transport"] if peer["transport"] == "UDP" else "UDP"
    return dialog, Peer(transport=transport, address=(peer["host"], int(peer["port"])))


def snapshot(call: Call, edge_id: str, now: float) -> CallRecord:
    """The call as the store keeps it."""
    legs: list[dict[str, Any]] = []
    if call.a_dialog is not None:
        legs.append({"leg": "a", **dialog_data(call.a_dialog, call.peer)})
    answered = call.answered
    if answered is not None and answered.dialog is not None:
        legs.append({"leg": answered.leg_id, **dialog_data(answered.dialog,
                                                           answered.destination.peer)})
    state = call.phase
    return CallRecord(
        call_id=call.call_id,
        edge_id=edge_id,
        state=state,
        direction=call.direction,
        caller=call.caller,
        callee=call.callee,
        created_at=call.created_at,
        updated_at=now,
        answered_at=call.answered_at,
        ended_at=call.ended_at,
        legs=tuple(legs),
        data={
            **call.store_data,
            "from_number": call.from_number,
            "to_number": call.to_number,
            "source_trunk": call.source_trunk,
            "ring_at": call.ring_at,
            "hangup_reason": call.hangup_reason,
            "status_code": call.status_code,
        },
        version=call.version,
    )


@dataclass(slots=True)
class _Pending:
    call: Call
    final: bool = False


@dataclass(slots=True)
class CallStateWriter:
    """Write-behind of call records; `changed`/`ended` never block, `aclose` drains.

    The worker waits `coalesce_s` after the first change before writing, so a call that rings
    and is answered within that window costs one write; the writes of one round go to the
    store together (`concurrency` at a time), never two for the same call at once."""

    store: CallStore
    edge_id: str
    clock: Callable[[], float]
    coalesce_s: float = 0.05
    concurrency: int = 32
    writes: int = 0
    failures: int = 0
    _pending: dict[str, _Pending] = field(default_factory=dict)
    _created: set[str] = field(default_factory=set)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def changed(self, call: Call) -> None:
        pending = self._pending.get(call.call_id)
        if pending is None:
            self._pending[call.call_id] = _Pending(call)
            self._wake.set()

    def ended(self, call: Call) -> None:
        pending = self._pending.get(call.call_id)
        if pending is None:
            self._pending[call.call_id] = _Pending(call, final=True)
            self._wake.set()
        else:
            pending.final = True

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if self.coalesce_s:
                await asyncio.sleep(self.coalesce_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            pendings = list(batch.values())
            for start in range(0, len(pendings), self.concurrency):
                await asyncio.gather(
                    *(self._write(p) for p in pendings[start:start + self.concurrency])
                )

    async def _write(self, pending: _Pending) -> None:
        call = pending.call
        record = snapshot(call, self.edge_id, self.clock())
        try:
            # A call record someone else created (the outbound-call API) is updated from the
            # version they handed over.
            if call.call_id not in self._created and not call.version:
                stored = await self.store.create(record)
                self._created.add(call.call_id)
            else:
                stored = await self.store.update(record, expected_version=call.version)
            call.version = stored.version
            self.writes += 1
        except (Conflict, NotFound) as exc:
            # Someone else (a recovery, an operator) moved the record on: ours is stale.
            log.info("call record not written: %s", exc, extra={"call_id": call.call_id})
        except StoreError as exc:
            self.failures += 1
            log.warning("call record not written: %s", type(exc).__name__,
                        extra={"call_id": call.call_id, "reason": str(exc)})
        if pending.final or call.ended:
            self._created.discard(call.call_id)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.flush()


async def recover_calls(
    store: CallStore,
    edge_id: str,
    transport: SipTransport,
    *,
    token: Callable[[], str],
    clock: Callable[[], float],
) -> list[CallRecord]:
    """End the calls a previous run of this edge left in the store: BYE on each stored dialog,
    the record marked completed (`bySystem`). Returns the records as they were, for CDRs."""
    recovered: list[CallRecord] = []
    cursor: str | None = None
    while True:
        page = await store.list_active(edge_id=edge_id, cursor=cursor)
        for record in page.items:
            for leg in record.legs:
                try:
                    dialog, peer = restore_dialog(leg, lambda: MAGIC_COOKIE + token())
                    transport.send_request(dialog.create_bye(), peer)
                except (KeyError, TypeError, ValueError) as exc:
                    log.warning("stored dialog unusable: %s", exc,
                                extra={"call_id": record.call_id})
            now = clock()
            final = CallRecord(
                call_id=record.call_id, edge_id=record.edge_id,
                state="completed" if record.answered_at else "failed",
                direction=record.direction, caller=record.caller, callee=record.callee,
                created_at=record.created_at, updated_at=now, answered_at=record.answered_at,
                ended_at=now, legs=record.legs,
                data={**record.data, "hangup_reason": "bySystem"}, version=record.version,
            )
            try:
                await store.update(final, expected_version=record.version)
            except StoreError as exc:
                log.warning("recovered call not updated: %s", exc,
                            extra={"call_id": record.call_id})
            recovered.append(record)
            log.info("call left by a previous run ended", extra={"call_id": record.call_id})
        cursor = page.cursor
        if cursor is None:
            return recovered


# Our timeline names -> the CDR's `legTimeline` event types (RustPBX's, snake_case).
_LEG_EVENTS = {"invite": "added", "answer": "bridged", "bye": "removed", "cancel": "removed",
               "rtp_timeout": "removed"}


def cdr_for_call(call: Call, edge_id: str) -> CallDetailRecord:
    """The CDR of an ended call (COMPAT.md field names through `build_cdr`)."""
    decision = call.decision
    rewrite = None
    if decision is not None:
        r = decision.rewrite
        rewrite = trusted(CdrRewrite, {
            "caller_original": r.caller_original, "caller_final": r.caller_final,
            "callee_original": r.callee_original, "callee_final": r.callee_final})
    trunk = call.source_trunk or (decision.trunk if decision is not None else None)
    gateway = None
    if call.answered is not None and call.answered.destination.trunk is not None:
        trunk = call.answered.destination.trunk
        host, port = call.answered.destination.peer.address
        gateway = f"{host}:{port}"
    events = [
        trusted(LegEvent, {
            "timestamp": rfc3339(event.timestamp), "leg_id": event.leg,
            "event_type": _LEG_EVENTS.get(event.event, "removed"
                                          if event.event.startswith("failed") else event.event)})
        for event in call.timeline
    ]
    end = call.ended_at or call.created_at
    return build_cdr(
        call_id=call.call_id,
        caller=str(call.invite.from_addr.uri),
        callee=call.invite.uri,
        direction=call.direction,
        start_time=call.created_at,
        end_time=end,
        status_code=call.status_code or 0,
        ring_time=call.ring_at,
        answer_time=call.answered_at,
        hangup_reason=call.hangup_reason,
        from_number=call.from_number or None,
        to_number=call.to_number or None,
        hangup_messages=[
            trusted(HangupMessage, {"code": int(m.get("code") or 0), "reason": m.get("reason"),
                                    "target": m.get("target")})
            for m in call.hangup_messages
        ],
        rewrite=rewrite,
        sip_trunk_id=trunk,
        sip_gateway=gateway,
        leg_events=events,
        last_error=trusted(LastError, {"code": call.last_error[0],
                                       "reason": call.last_error[1] or None})
        if call.last_error else None,
        metadata=dict(decision.extensions) if decision is not None else {},
        edge_id=edge_id,
    )


class CdrSink(Protocol):
    async def write(self, cdr: CallDetailRecord, *, recording_path: str | None = None) -> None:
        ...


class CallLedger:
    """The edge's `CallSink`: the call record (write-behind) and, at the end, the CDR."""

    def __init__(self, writer: CallStateWriter | None, cdrs: CdrSink | None, *,
                 edge_id: str, observer: CallObserver | None = None) -> None:
        self._writer = writer
        self._cdrs = cdrs
        self._edge_id = edge_id
        self._observer = observer
        self._tasks: set[asyncio.Task[None]] = set()
        # The loop, found once: get_running_loop() makes a getpid() system call every time.
        self._loop: asyncio.AbstractEventLoop | None = None

    def call_changed(self, call: Call) -> None:
        if self._writer is not None:
            self._writer.changed(call)

    def call_ended(self, call: Call) -> None:
        if self._writer is not None:
            self._writer.ended(call)
        if self._observer is not None:
            self._observer.call_ended(call.hangup_reason or "unknown",
                                      answered=call.answered_at is not None)
        if self._cdrs is not None:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            task = loop.create_task(self._write_cdr(call))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _write_cdr(self, call: Call) -> None:
        assert self._cdrs is not None
        recording = call.recording
        path = getattr(recording, "path", None)
        cdr = cdr_for_call(call, self._edge_id)
        duration = getattr(recording, "duration_s", None)
        if duration is not None:
            cdr = cdr.model_copy(update={"recording_duration_secs": int(duration + 0.5)})
        try:
            await self._cdrs.write(cdr, recording_path=str(path) if path else None)
        except Exception:
            log.exception("CDR not written", extra={"call_id": call.call_id})

    async def write_recovered(self, record: CallRecord) -> None:
        """The CDR of a call a previous run left behind (`recover_calls`)."""
        if self._cdrs is None:
            return
        data = record.data
        answered = record.answered_at
        cdr = build_cdr(
            call_id=record.call_id, caller=record.caller, callee=record.callee,
            direction=_DIRECTIONS.get(record.direction, "internal"),
            start_time=record.created_at, end_time=_recovered_end(record),
            status_code=int(data.get("status_code") or (200 if answered else 0)),
            ring_time=data.get("ring_at"), answer_time=answered, hangup_reason="bySystem",
            from_number=data.get("from_number") or None, to_number=data.get("to_number") or None,
            last_error=LastError(code=0, reason="edge restarted during the call"),
            edge_id=self._edge_id,
        )
        await self._cdrs.write(cdr)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


_DIRECTIONS: dict[str, CdrDirection] = {"inbound": "inbound", "outbound": "outbound"}


def _recovered_end(record: CallRecord) -> float:
    """When a recovered call ended: the last time its record was touched."""
    return max(record.updated_at, record.answered_at or 0.0, record.created_at)


class CallObserver(Protocol):
    def call_ended(self, reason: str, *, answered: bool) -> None: ...


__all__ = [
    "CallLedger",
    "CallStateWriter",
    "cdr_for_call",
    "dialog_data",
    "recover_calls",
    "restore_dialog",
    "snapshot",
]
