"""Call records: snapshots carry the dialogs, the writer coalesces (at most 3 writes a call),
and a restart's recovery sends BYE on the stored dialogs."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path

from control.contracts.cdr import CallDetailRecord
from control.store.factory import open_stores
from control.store.ports import BlobSettings, StoreSettings
from edge.pbx.call_records import CallStateWriter, cdr_for_call, recover_calls, snapshot
from edge.pbx.calls import Call, Destination, OutboundLeg, dissolve
from edge.pbx.routing import Rewrite, RouteDecision
from edge.sip.dialog import Dialog
from edge.sip.events import Peer
from edge.sip.message import Request, Response, make_response, parse_message
from tests.sipmsg import request as build_request

CALLER = Peer(transport="UDP", address=("192.0.2.10", 5062))


def invite() -> Request:
    message = parse_message(build_request(
        "INVITE", uri="sip:bob@pbx.test",
        extra=["Contact: <sip:alice@192.0.2.10:5062>"],
    ))
    assert isinstance(message, Request)
    return message


def answered_call() -> Call:
    request = invite()
    call = Call(call_id=request.call_id, invite=request, server_transaction_id=1, peer=CALLER,
                a_tag="atag", created_at=1000.0, caller="alice", callee="bob")
    call.a_dialog = Dialog.create_uas(request, "atag", new_branch=lambda: "z9hG4bKx",
                                      via_host="198.51.100.1", via_port=5060)
    call.a_dialog.response_sent(make_response(request, 200, to_tag="atag"))
    return call


class Recorder:
    """A `SipTransport` that keeps what is sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[Request, Peer]] = []

    def respond(self, transaction_id: int, response: Response) -> None:
        raise AssertionError("not used")

    def drop(self, transaction_id: int) -> None:
        raise AssertionError("not used")

    def send_request(self, request: Request, peer: Peer) -> int:
        self.sent.append((request, peer))
        return len(self.sent)

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        raise AssertionError("not used")

    def now(self) -> float:
        return 0.0


def settings(tmp: Path) -> StoreSettings:
    return StoreSettings(backend="sqlite", sqlite_path=str(tmp / "db.sqlite3"),
                         blobs=BlobSettings(kind="local", root=str(tmp / "blobs")))


def test_a_call_costs_three_writes_and_coalesces(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, int, str]:
        stores = await open_stores(settings(tmp_path))
        try:
            writer = CallStateWriter(stores.calls, "edge-1", lambda: 2000.0)
            call = answered_call()
            call.phase = "ringing"
            writer.changed(call)
            await writer.flush()
            call.phase, call.answered_at = "answered", 1001.0
            writer.changed(call)
            writer.changed(call)  # a second change before the worker ran: one write
            await writer.flush()
            call.phase, call.ended_at = "completed", 1010.0
            writer.ended(call)
            await writer.flush()
            one_write = answered_call()
            one_write.call_id = "short"
            writer.changed(one_write)
            one_write.phase = "failed"
            writer.ended(one_write)  # rang and failed before the worker came: one write
            await writer.flush()
            stored = await stores.calls.get(call.call_id)
            active = await stores.calls.list_active(edge_id="edge-1")
            return writer.writes, len(active.items), stored.state
        finally:
            await stores.close()

    writes, active, state = asyncio.run(scenario())
    assert writes == 4  # 3 for the answered call, 1 for the short one
    assert active == 0 and state == "completed"


def test_snapshot_keeps_what_a_bye_needs() -> None:
    record = snapshot(answered_call(), "edge-1", 1000.5)
    [leg] = record.legs
    assert leg["leg"] == "a" and leg["remote_target"] == "sip:alice@192.0.2.10:5062"
    assert leg["peer"] == {"transport": "UDP", "host": "192.0.2.10", "port": 5062}
    assert record.state == "trying" and record.edge_id == "edge-1"


def test_recovery_sends_bye_on_stored_dialogs(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[tuple[Request, Peer]], str, int]:
        stores = await open_stores(settings(tmp_path))
        try:
            writer = CallStateWriter(stores.calls, "edge-1", lambda: 2000.0)
            call = answered_call()
            call.phase, call.answered_at = "answered", 1001.0
            writer.changed(call)
            await writer.flush()
            transport = Recorder()
            recovered = await recover_calls(stores.calls, "edge-1", transport,
                                            token=lambda: "abc", clock=lambda: 3000.0)
            others = await recover_calls(stores.calls, "edge-2", transport,
                                         token=lambda: "abc", clock=lambda: 3000.0)
            assert others == []
            stored = await stores.calls.get(call.call_id)
            return transport.sent, stored.state, len(recovered)
        finally:
            await stores.close()

    sent, state, count = asyncio.run(scenario())
    assert count == 1 and state == "completed"
    [(bye, peer)] = sent
    assert bye.method == "BYE" and bye.uri == "sip:alice@192.0.2.10:5062"
    assert peer.address == ("192.0.2.10", 5062)
    assert bye.to_addr.tag == CALLER_TAG and bye.from_addr.tag == "atag"


CALLER_TAG = invite().from_addr.tag


def test_the_cdr_of_a_call_validates() -> None:
    """cdr_for_call builds the CDR without pydantic's validation: it must validate anyway."""
    call = answered_call()
    call.note("b-1", "invite", 1000.5)
    call.note("b-1", "answer", 1002.0)
    call.note("b-2", "failed_486", 1001.0)
    call.answered_at, call.ended_at, call.ring_at = 1002.0, 1062.25, 1000.7
    call.status_code, call.hangup_reason, call.phase = 200, "byCaller", "completed"
    call.hangup_messages.append({"code": 486, "reason": "Busy Here", "target": "sip:b2@x"})
    call.last_error = (503, "trunk down")
    call.decision = RouteDecision(action="forward", extensions={"crm": {"ticket": 7}},
                                  rewrite=Rewrite(caller_original="1", caller_final="+1"))
    cdr = cdr_for_call(call, "edge-1")
    assert CallDetailRecord.from_json_bytes(cdr.to_json_bytes()) == cdr
    assert cdr.metadata == {"crm": {"ticket": 7}} and cdr.billsec_secs == 60.25
    assert [e.event_type for e in cdr.leg_timeline.events] == ["added", "bridged", "removed"]


def test_a_dissolved_call_is_freed_without_the_cyclic_gc() -> None:
    """An ended call lets go of its legs (`dissolve`, shortly after its end): call and legs,
    which point at each other, are then freed by reference counting alone."""

    def calls_alive() -> int:
        return sum(type(o) is Call for o in gc.get_objects())

    def ended_call() -> Call:
        call = answered_call()
        leg = OutboundLeg(call=call, destination=Destination(
            request_uri="sip:bob@192.0.2.20", to_uri="sip:bob@pbx.test", peer=CALLER),
            invite=call.invite, transaction_id=2, leg_id="b-1")
        call.legs.append(leg)
        call.answered = leg
        return call

    gc.collect()
    gc.disable()
    try:
        before = calls_alive()
        kept = ended_call()
        assert calls_alive() == before + 1
        del kept  # the cycle keeps it
        assert calls_alive() == before + 1
        gc.collect()
        dissolved = ended_call()
        dissolve(dissolved)
        assert dissolved.legs == [] and dissolved.answered is None
        del dissolved
        assert calls_alive() == before
    finally:
        gc.enable()
