"""RFC 3261 §17 / RFC 6026 transaction state machines, timers and matching, on a fake clock.

Messages follow the RFC 3665 §3 call flows (Alice at atlanta.example.com calls Bob at
biloxi.example.com); time is a float the tests advance by calling `handle_timer(now)`.
"""

from __future__ import annotations

import pytest

import edge.sip.transaction as transaction_module
from edge.sip.errors import LocalProtocolError
from edge.sip.message import Request, Response, make_response, parse_message
from edge.sip.timers import Timer, TimerConfig, first_interval
from edge.sip.transaction import (
    CLIENT_INVITE,
    CLIENT_NON_INVITE,
    SERVER_INVITE,
    SERVER_NON_INVITE,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    DeliverRequest,
    DeliverResponse,
    Input,
    SendMessage,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Table,
    Terminated,
    TimedOut,
    Transaction,
    TransactionKey,
    TransactionOutput,
    TransactionTable,
    TransportFailed,
    build_ack,
    build_cancel,
    cancel_target_key,
    client_key,
    client_transaction,
    server_key,
    server_transaction,
)

# RFC 3665 §3.8 F1 (Alice's INVITE through her proxy), with a Route to that proxy.
INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9
Max-Forwards: 70
Route: <sip:ss1.atlanta.example.com;lr>
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 1 INVITE
Contact: <sip:alice@client.atlanta.example.com>
Content-Type: application/sdp
Content-Length: 0

"""

# RFC 3665 §2.1-style REGISTER (a non-INVITE request).
REGISTER = """\
REGISTER sips:ss2.biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP client.biloxi.example.com:5061;branch=z9hG4bKnashds7
Max-Forwards: 70
From: Bob <sips:bob@biloxi.example.com>;tag=a73kszlfl
To: Bob <sips:bob@biloxi.example.com>
Call-ID: 1j9FpLxk3uxtm8tn@biloxi.example.com
CSeq: 1 REGISTER
Contact: <sips:bob@client.biloxi.example.com>
Content-Length: 0

"""


def parse(text: str) -> Request | Response:
    return parse_message(text.replace("\n", "\r\n").encode())


def request(text: str = INVITE, *, via: str | None = None, method: str | None = None) -> Request:
    message = parse(text)
    assert isinstance(message, Request)
    if via is not None:
        message.headers.set("Via", via)
    if method is not None:
        seq = message.cseq.seq
        message.method = method
        message.headers.set("CSeq", f"{seq} {method}")
    return message


def respond(req: Request, status: int, *, to_tag: str | None = "8321234356") -> Response:
    return make_response(req, status, to_tag=to_tag)


def sends(out: list[TransactionOutput]) -> list[SendMessage]:
    return [o for o in out if isinstance(o, SendMessage)]


def kinds(out: list[TransactionOutput]) -> list[str]:
    return [type(o).__name__ for o in out]


def state_of(tx: Transaction) -> State:
    return tx.state  # read through a call: mypy must not narrow it between asserts


def run_timers(tx: Transaction, until: float) -> list[tuple[float, list[TransactionOutput]]]:
    """Fire every deadline of `tx` up to `until`, returning (time, outputs) per firing."""
    fired = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        fired.append((deadline, tx.handle_timer(deadline)))
    return fired


# ------------------------------------------------------------------------- INVITE client


def test_invite_client_udp_retransmits_with_timer_a_doubling_until_timer_b() -> None:
    tx = ClientInviteTransaction(request(), reliable=False)
    out = tx.start(0.0)
    assert kinds(out) == ["SendMessage"]
    first = sends(out)[0]
    assert first.retransmission is False
    assert first.data == tx.request.to_bytes()
    assert state_of(tx) is State.CALLING
    assert tx.timers() == {Timer.A: 0.5, Timer.B: 32.0}

    fired = run_timers(tx, 100.0)
    retransmit_times = [t for t, out in fired if any(isinstance(o, SendMessage) for o in out)]
    assert retransmit_times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    for _, out in fired[:-1]:
        (send,) = sends(out)
        assert send.retransmission is True
        assert send.data == first.data
    last_time, last = fired[-1]
    assert last_time == 32.0
    assert kinds(last) == ["TimedOut", "Terminated"]
    assert isinstance(last[0], TimedOut) and last[0].timer is Timer.B
    assert state_of(tx) is State.TERMINATED
    assert tx.next_deadline() is None


def test_invite_client_reliable_runs_no_timer_a() -> None:
    tx = ClientInviteTransaction(request(), reliable=True)
    tx.start(0.0)
    assert tx.timers() == {Timer.B: 32.0}
    assert tx.handle_timer(31.9) == []
    out = tx.handle_timer(32.0)
    assert kinds(out) == ["TimedOut", "Terminated"]


def test_invite_client_provisional_stops_retransmissions() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.handle_timer(0.5)
    ringing = respond(invite, 180)
    out = tx.receive_response(ringing, 0.7)
    assert out == [DeliverResponse(transaction=tx, response=ringing)]
    assert state_of(tx) is State.PROCEEDING
    assert tx.next_deadline() is None  # §17.1.1.2: A and B stop in Proceeding
    assert tx.may_cancel
    # Further provisional responses go to the TU too.
    trying = respond(invite, 183)
    assert kinds(tx.receive_response(trying, 1.0)) == ["DeliverResponse"]


def test_invite_client_non_2xx_final_builds_ack_and_waits_timer_d() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.receive_response(respond(invite, 180), 0.1)
    busy = respond(invite, 486)
    out = tx.receive_response(busy, 5.0)
    assert kinds(out) == ["SendMessage", "DeliverResponse"]
    ack_send = sends(out)[0]
    ack = ack_send.message
    assert isinstance(ack, Request) and ack is tx.ack
    assert ack_send.retransmission is False
    # §17.1.1.3: the ACK for a non-2xx final response.
    assert ack.method == "ACK"
    assert ack.uri == "sip:bob@biloxi.example.com"
    assert ack.headers.get_all("Via") == [
        "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9"
    ]
    assert ack.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=8321234356"
    assert ack.headers.get("From") == "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"
    assert ack.headers.get("Call-ID") == "3848276298220188511@atlanta.example.com"
    assert ack.headers.get("CSeq") == "1 ACK"
    assert ack.headers.get_all("Route") == ["<sip:ss1.atlanta.example.com;lr>"]
    assert ack.body == b""
    assert state_of(tx) is State.COMPLETED
    assert tx.timers() == {Timer.D: 37.0}

    # A retransmitted 486 gets the same ACK again and is not passed up.
    again = tx.receive_response(busy, 6.0)
    assert kinds(again) == ["SendMessage"]
    assert sends(again)[0].retransmission is True
    assert sends(again)[0].data == ack_send.data
    # Stray 1xx/2xx in Completed are absorbed.
    assert tx.receive_response(respond(invite, 180), 6.5) == []
    assert tx.receive_response(respond(invite, 200), 6.5) == []

    assert tx.handle_timer(36.9) == []
    assert kinds(tx.handle_timer(37.0)) == ["Terminated"]


def test_invite_client_non_2xx_final_on_reliable_transport_terminates_at_once() -> None:
    invite = request(via="SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9")
    tx = ClientInviteTransaction(invite, reliable=True)
    tx.start(0.0)
    out = tx.receive_response(respond(invite, 603), 2.0)
    assert kinds(out) == ["SendMessage", "DeliverResponse", "Terminated"]  # Timer D = 0
    assert tx.terminated


def test_invite_client_2xx_goes_to_accepted_and_every_2xx_to_the_tu() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    ok = respond(invite, 200)
    assert kinds(tx.receive_response(ok, 1.0)) == ["DeliverResponse"]
    assert state_of(tx) is State.ACCEPTED
    assert tx.ack is None  # the TU acknowledges a 2xx, never the transaction
    assert tx.timers() == {Timer.M: 33.0}
    # RFC 6026 §8.4: retransmissions of the 2xx (and 2xx from other forks) reach the TU.
    assert tx.receive_response(ok, 2.0) == [DeliverResponse(transaction=tx, response=ok)]
    assert tx.receive_response(respond(invite, 486), 2.5) == []
    assert kinds(tx.handle_timer(33.0)) == ["Terminated"]


def test_invite_client_transport_error_in_calling() -> None:
    tx = ClientInviteTransaction(request(), reliable=False)
    tx.start(0.0)
    out = tx.transport_error(0.1)
    assert out == [TransportFailed(transaction=tx), Terminated(transaction=tx)]
    with pytest.raises(LocalProtocolError, match="Terminated"):
        tx.receive_response(respond(tx.request, 200), 0.2)


# ---------------------------------------------------------------------- non-INVITE client


def test_non_invite_client_timer_e_caps_at_t2_and_f_fires_at_64_t1() -> None:
    tx = ClientNonInviteTransaction(request(REGISTER), reliable=False)
    tx.start(0.0)
    assert state_of(tx) is State.TRYING
    assert tx.timers() == {Timer.E: 0.5, Timer.F: 32.0}
    fired = run_timers(tx, 100.0)
    times = [t for t, out in fired if sends(out)]
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    deadline, last = fired[-1]
    assert deadline == 32.0
    assert isinstance(last[0], TimedOut) and last[0].timer is Timer.F
    assert kinds(last) == ["TimedOut", "Terminated"]


def test_non_invite_client_proceeding_retransmits_every_t2() -> None:
    register = request(REGISTER)
    tx = ClientNonInviteTransaction(register, reliable=False)
    tx.start(0.0)
    tx.handle_timer(0.5)  # next E at 1.5
    assert kinds(tx.receive_response(respond(register, 100), 0.6)) == ["DeliverResponse"]
    assert state_of(tx) is State.PROCEEDING
    assert tx.timers() == {Timer.E: 1.5, Timer.F: 32.0}  # E and F keep running
    fired = run_timers(tx, 14.0)
    assert [t for t, _ in fired] == [1.5, 5.5, 9.5, 13.5]  # §17.1.2.2: reset with T2
    ok = respond(register, 200)
    out = tx.receive_response(ok, 14.0)
    assert out == [DeliverResponse(transaction=tx, response=ok)]
    assert state_of(tx) is State.COMPLETED
    assert tx.timers() == {Timer.K: 19.0}  # T4
    assert tx.receive_response(ok, 15.0) == []  # retransmissions absorbed
    assert kinds(tx.handle_timer(19.0)) == ["Terminated"]


def test_non_invite_client_reliable_no_e_and_k_zero() -> None:
    register = request(REGISTER)
    tx = ClientNonInviteTransaction(register, reliable=True)
    tx.start(0.0)
    assert tx.timers() == {Timer.F: 32.0}
    tx.receive_response(respond(register, 100), 0.1)
    assert tx.timers() == {Timer.F: 32.0}
    out = tx.receive_response(respond(register, 401), 0.2)
    assert kinds(out) == ["DeliverResponse", "Terminated"]


def test_non_invite_client_transport_error() -> None:
    register = request(REGISTER)
    tx = ClientNonInviteTransaction(register, reliable=False)
    tx.start(0.0)
    tx.receive_response(respond(register, 100), 0.1)
    assert kinds(tx.transport_error(0.2)) == ["TransportFailed", "Terminated"]


# ------------------------------------------------------------------------- INVITE server


def test_invite_server_sends_100_after_200_ms_and_absorbs_retransmissions() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False)
    out = tx.start(0.0)
    assert out == [DeliverRequest(transaction=tx, request=invite)]
    assert state_of(tx) is State.PROCEEDING
    assert tx.timers() == {Timer.TRYING: 0.2}
    # A retransmission before anything was sent: nothing to re-send.
    assert tx.receive_request(invite, 0.1) == []
    (trying,) = sends(tx.handle_timer(0.2))
    assert isinstance(trying.message, Response)
    assert trying.message.status == 100
    assert trying.message.headers.get("To") == "Bob <sip:bob@biloxi.example.com>"
    assert tx.next_deadline() is None
    # Retransmissions get the last provisional response again.
    (again,) = sends(tx.receive_request(invite, 0.5))
    assert again.retransmission and again.data == trying.data
    ringing = respond(invite, 180)
    tx.send_response(ringing, 1.0)
    (ring_again,) = sends(tx.receive_request(invite, 1.5))
    assert ring_again.message is ringing


def test_invite_server_no_100_when_the_tu_answers_in_time() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    out = tx.send_response(respond(invite, 180), 0.05)
    assert [s.message.status for s in sends(out) if isinstance(s.message, Response)] == [180]
    assert tx.next_deadline() is None
    assert tx.handle_timer(0.2) == []


def test_invite_server_retransmits_486_on_timer_g_until_ack_then_timer_i() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    busy = respond(invite, 486)
    out = tx.send_response(busy, 0.1)
    (sent,) = sends(out)
    assert sent.message is busy and not sent.retransmission
    assert state_of(tx) is State.COMPLETED
    assert tx.timers() == {Timer.G: 0.6, Timer.H: 32.1}
    fired = run_timers(tx, 12.0)
    times = [round(t, 6) for t, _ in fired]
    assert times == [0.6, 1.6, 3.6, 7.6, 11.6]  # G doubles up to T2
    for _, out in fired:
        (resend,) = sends(out)
        assert resend.retransmission and resend.data == sent.data
    # An INVITE retransmission also gets the 486 again.
    assert sends(tx.receive_request(invite, 12.0))[0].message is busy
    ack = build_ack(invite, busy)
    assert tx.receive_request(ack, 12.5) == []  # the ACK is absorbed, not passed up
    assert state_of(tx) is State.CONFIRMED
    assert tx.timers() == {Timer.I: 17.5}  # T4
    assert tx.receive_request(ack, 13.0) == []  # ACK retransmissions absorbed
    assert kinds(tx.handle_timer(17.5)) == ["Terminated"]


def test_invite_server_timer_h_reports_a_missing_ack() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    tx.send_response(respond(invite, 480), 0.0)
    fired = run_timers(tx, 64.0)
    deadline, last = fired[-1]
    assert deadline == 32.0
    assert kinds(last) == ["TimedOut", "Terminated"]
    assert isinstance(last[0], TimedOut) and last[0].timer is Timer.H


def test_invite_server_reliable_no_timer_g_and_i_zero() -> None:
    invite = request(via="SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9")
    tx = ServerInviteTransaction(invite, reliable=True)
    tx.start(0.0)
    busy = respond(invite, 486)
    tx.send_response(busy, 0.0)
    assert tx.timers() == {Timer.H: 32.0}
    out = tx.receive_request(build_ack(invite, busy), 1.0)
    assert kinds(out) == ["Terminated"]  # Confirmed, then Timer I = 0


def test_invite_server_2xx_accepted_then_timer_l() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    assert tx.cancellable
    ok = respond(invite, 200)
    tx.send_response(ok, 1.0)
    assert state_of(tx) is State.ACCEPTED
    assert not tx.cancellable  # a CANCEL crossing the 200 has no effect (§9.2)
    assert tx.timers() == {Timer.L: 33.0}
    # RFC 6026 §8.7: INVITE retransmissions are absorbed; the TU retransmits the 2xx itself.
    assert tx.receive_request(invite, 1.5) == []
    (resent,) = sends(tx.send_response(ok, 1.5))
    assert resent.message is ok
    # An ACK that matches the transaction goes to the TU.
    ack = request(method="ACK")
    assert tx.receive_request(ack, 2.0) == [DeliverRequest(transaction=tx, request=ack)]
    with pytest.raises(LocalProtocolError, match="Accepted"):
        tx.send_response(respond(invite, 486), 2.0)
    assert kinds(tx.handle_timer(33.0)) == ["Terminated"]


def test_invite_server_transport_errors_per_rfc_6026() -> None:
    invite = request()
    tx = ServerInviteTransaction(invite, reliable=False)
    tx.start(0.0)
    # Proceeding: the TU is told, the transaction stays (RFC 6026 figure 7).
    assert tx.transport_error(0.1) == [TransportFailed(transaction=tx)]
    assert state_of(tx) is State.PROCEEDING
    tx.send_response(respond(invite, 500), 0.2)
    assert kinds(tx.transport_error(0.3)) == ["TransportFailed", "Terminated"]


# ---------------------------------------------------------------------- non-INVITE server


def test_non_invite_server_trying_proceeding_completed_and_timer_j() -> None:
    register = request(REGISTER)
    tx = ServerNonInviteTransaction(register, reliable=False)
    assert kinds(tx.start(0.0)) == ["DeliverRequest"]
    assert state_of(tx) is State.TRYING
    assert tx.next_deadline() is None  # no 100 Trying for non-INVITE
    assert tx.receive_request(register, 0.5) == []  # Trying: retransmission discarded
    trying = respond(register, 100, to_tag=None)
    tx.send_response(trying, 0.6)
    assert state_of(tx) is State.PROCEEDING
    assert sends(tx.receive_request(register, 1.0))[0].message is trying
    unauthorized = respond(register, 401)
    tx.send_response(unauthorized, 1.2)
    assert state_of(tx) is State.COMPLETED
    assert tx.timers() == {Timer.J: 33.2}
    (again,) = sends(tx.receive_request(register, 2.0))
    assert again.message is unauthorized and again.retransmission
    with pytest.raises(LocalProtocolError, match="Completed"):
        tx.send_response(respond(register, 200), 2.0)
    assert kinds(tx.handle_timer(33.2)) == ["Terminated"]


@pytest.mark.parametrize("reliable", [False, True])
def test_direct_non_invite_server_transitions_give_what_the_tables_give(
    monkeypatch: pytest.MonkeyPatch, reliable: bool
) -> None:
    """The written-out transitions of the non-INVITE server (request in, final response out
    over UDP, Timer J) against the table interpreter, step by step."""
    assert transaction_module._DIRECT_NON_INVITE_SERVER  # the tables allow them today

    def trace(direct: bool) -> list[object]:
        monkeypatch.setattr(transaction_module, "_DIRECT_NON_INVITE_SERVER", direct)
        table = TransactionTable()
        register = request(REGISTER)
        tx = ServerNonInviteTransaction(register, reliable=reliable)
        table.add(tx)
        steps: list[object] = [kinds(tx.start(0.0)), tx.state, tx.timers()]
        out = tx.send_response(respond(register, 401), 1.0)
        steps += [kinds(out), [s.data for s in sends(out)], tx.state, tx.timers()]
        steps += [table.next_deadline(), len(table), tx.last_response is not None]
        again = tx.receive_request(register, 2.0) if not tx.terminated else []
        steps += [[(s.data, s.retransmission) for s in sends(again)]]
        steps += [kinds(table.handle_timer(40.0)), tx.state, len(table), table.next_deadline()]
        return steps

    assert trace(True) == trace(False)


def test_non_invite_server_reliable_terminates_on_final() -> None:
    register = request(REGISTER)
    tx = ServerNonInviteTransaction(register, reliable=True)
    tx.start(0.0)
    out = tx.send_response(respond(register, 200), 0.1)
    assert kinds(out) == ["SendMessage", "Terminated"]


# --------------------------------------------------------------------------- the tables


MACHINES: list[tuple[Table, type[Transaction], str]] = [
    (CLIENT_INVITE, ClientInviteTransaction, INVITE),
    (CLIENT_NON_INVITE, ClientNonInviteTransaction, REGISTER),
    (SERVER_INVITE, ServerInviteTransaction, INVITE),
    (SERVER_NON_INVITE, ServerNonInviteTransaction, REGISTER),
]


def _message_for(event: Input, req: Request) -> Request | Response | None:
    if event is Input.RECV_REQUEST:
        return req
    if event is Input.RECV_ACK:
        return build_ack(req, respond(req, 486))
    statuses = {
        Input.RECV_1XX: 180, Input.RECV_2XX: 200, Input.RECV_3XX_6XX: 486,
        Input.SEND_1XX: 180, Input.SEND_2XX: 200, Input.SEND_3XX_6XX: 486,
    }
    if event in statuses:
        return respond(req, statuses[event])
    return None


@pytest.mark.parametrize(("table", "cls", "text"), MACHINES, ids=[m[1].KIND for m in MACHINES])
def test_every_state_input_pair(table: Table, cls: type[Transaction], text: str) -> None:
    """Walk every (state, input): listed pairs land on the table's state, others raise one
    LocalProtocolError naming the machine, the state and the input."""
    assert State.INITIAL in table and State.TERMINATED in table
    for state in State:  # states the machine does not have accept nothing either
        for event in Input:
            req = request(text)
            tx = cls(req, reliable=False)  # type: ignore[call-arg]
            tx.state = state
            message = _message_for(event, req)
            transition = table.get(state, {}).get(event)
            if transition is None:
                with pytest.raises(LocalProtocolError) as info:
                    tx._run(event, 10.0, message)
                assert state.value in str(info.value)
                assert event.value in str(info.value)
                assert cls.KIND in str(info.value)
                assert tx.state is state
            else:
                tx._run(event, 10.0, message)
                next_state = transition[0]
                # A zero-length timer cannot fire on UDP, so the table's state is where we are.
                assert tx.state is next_state, (state, event)


def test_terminated_accepts_nothing() -> None:
    for table in (CLIENT_INVITE, CLIENT_NON_INVITE, SERVER_INVITE, SERVER_NON_INVITE):
        assert table[State.TERMINATED] == {}


def test_timers_by_transport() -> None:
    config = TimerConfig()
    assert first_interval(Timer.A, config, reliable=True) is None
    assert first_interval(Timer.E, config, reliable=True) is None
    assert first_interval(Timer.G, config, reliable=True) is None
    for timer in (Timer.D, Timer.I, Timer.J, Timer.K):
        assert first_interval(timer, config, reliable=True) == 0.0
    expected_udp = {
        Timer.A: 0.5, Timer.B: 32.0, Timer.D: 32.0, Timer.E: 0.5, Timer.F: 32.0, Timer.G: 0.5,
        Timer.H: 32.0, Timer.I: 5.0, Timer.J: 32.0, Timer.K: 5.0, Timer.L: 32.0, Timer.M: 32.0,
        Timer.TRYING: 0.2,
    }
    for timer, value in expected_udp.items():
        assert first_interval(timer, config, reliable=False) == value
    for timer in (Timer.B, Timer.F, Timer.H, Timer.L, Timer.M):
        assert first_interval(timer, config, reliable=True) == 32.0
    custom = TimerConfig(t1=1.0, t2=8.0, t4=10.0)
    assert first_interval(Timer.B, custom, reliable=False) == 64.0
    assert first_interval(Timer.K, custom, reliable=False) == 10.0
    with pytest.raises(ValueError, match="T1"):
        TimerConfig(t1=5.0, t2=4.0)


def test_custom_t1_scales_retransmissions() -> None:
    tx = ClientInviteTransaction(request(), reliable=False, config=TimerConfig(t1=0.1))
    tx.start(0.0)
    fired = run_timers(tx, 10.0)
    assert [round(t, 6) for t, _ in fired] == [0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 6.4]


def test_wrong_methods_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        ClientInviteTransaction(request(REGISTER), reliable=False)
    with pytest.raises(LocalProtocolError):
        ClientNonInviteTransaction(request(), reliable=False)
    with pytest.raises(LocalProtocolError):
        ServerNonInviteTransaction(request(method="ACK"), reliable=False)
    with pytest.raises(LocalProtocolError, match="branch"):
        ClientNonInviteTransaction(
            request(REGISTER, via="SIP/2.0/UDP client.biloxi.example.com;branch=1234"),
            reliable=False,
        )
    tx = ServerInviteTransaction(request(), reliable=False)
    tx.start(0.0)
    with pytest.raises(LocalProtocolError, match="status 700"):
        tx.send_response(Response(700, "Nope"), 0.0)
    assert isinstance(client_transaction(request(), reliable=False), ClientInviteTransaction)
    assert isinstance(server_transaction(request(REGISTER), reliable=False),
                      ServerNonInviteTransaction)


# ---------------------------------------------------------------------------- matching


def test_server_key_rfc_3261() -> None:
    invite = request()
    key = server_key(invite)
    assert key == TransactionKey(
        "server", "INVITE", "z9hG4bK74bf9", "client.atlanta.example.com:5060"
    )
    # The ACK for a non-2xx response carries the INVITE's branch: same key (ACK -> INVITE).
    assert server_key(build_ack(invite, respond(invite, 486))) == key
    # Sent-by compares case-insensitively; a different sent-by is another transaction.
    upper = request(via="SIP/2.0/UDP CLIENT.atlanta.example.com:5060;branch=z9hG4bK74bf9")
    assert server_key(upper) == key
    other = request(via="SIP/2.0/UDP client.atlanta.example.com:5070;branch=z9hG4bK74bf9")
    assert server_key(other) != key
    # The same branch with another method (the CANCEL) is another transaction...
    cancel = build_cancel(invite)
    assert server_key(cancel) != key
    # ...that names the INVITE (RFC 3261 §9.2).
    assert cancel_target_key(cancel) == key
    with pytest.raises(LocalProtocolError):
        cancel_target_key(invite)


def test_client_key_matches_responses_by_branch_and_cseq_method() -> None:
    invite = request()
    tx = ClientInviteTransaction(invite, reliable=False)
    assert client_key(respond(invite, 180)) == tx.key
    cancel = build_cancel(invite)
    cancel_ok = respond(cancel, 200)
    assert client_key(cancel_ok) != tx.key
    assert client_key(cancel_ok) == ClientNonInviteTransaction(cancel, reliable=False).key


RFC2543_INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/UDP oldphone.atlanta.example.com:5060
Max-Forwards: 70
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774
To: Bob <sip:bob@biloxi.example.com>
Call-ID: a84b4c76e66710@oldphone.atlanta.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@oldphone.atlanta.example.com>
Content-Length: 0

"""


def test_rfc_2543_fallback_matching() -> None:
    table = TransactionTable()
    invite = request(RFC2543_INVITE)
    key = server_key(invite)
    assert key.branch == "" and key.legacy is not None
    assert key.legacy[:5] == (
        "sip:bob@biloxi.example.com", "", "1928301774",
        "a84b4c76e66710@oldphone.atlanta.example.com", 314159,
    )
    tx = ServerInviteTransaction(invite, reliable=False)
    table.add(tx)
    tx.start(0.0)
    # A retransmission matches.
    assert table.find_server(request(RFC2543_INVITE)) is tx
    # Another CSeq, or another top Via, does not.
    other = request(RFC2543_INVITE.replace("314159 INVITE", "314160 INVITE"))
    assert table.find_server(other) is None
    moved = request(RFC2543_INVITE, via="SIP/2.0/UDP otherphone.atlanta.example.com:5060")
    assert table.find_server(moved) is None
    # CANCEL (same To, no tag) finds the INVITE; its own key is a CANCEL one.
    cancel = build_cancel(invite)
    assert table.find_cancel_target(cancel) is tx
    assert table.find_server(cancel) is None

    busy = respond(invite, 486, to_tag="b0b")
    tx.send_response(busy, 0.1)
    assert tx.response_to_tag == "b0b"
    ack = build_ack(invite, busy)
    assert ack.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=b0b"
    # §17.2.3: the ACK matches on the To tag of the response the transaction sent.
    assert table.find_server(ack) is tx
    wrong = build_ack(invite, respond(invite, 486, to_tag="someone-else"))
    assert table.find_server(wrong) is None
    assert tx.receive_request(ack, 0.2) == []
    assert state_of(tx) is State.CONFIRMED


def test_rfc_2543_in_dialog_ack_matches_with_its_own_tag() -> None:
    reinvite_text = RFC2543_INVITE.replace(
        "To: Bob <sip:bob@biloxi.example.com>", "To: Bob <sip:bob@biloxi.example.com>;tag=b0b"
    )
    invite = request(reinvite_text)
    table = TransactionTable()
    tx = ServerInviteTransaction(invite, reliable=False)
    table.add(tx)
    tx.start(0.0)
    tx.send_response(respond(invite, 200), 0.1)
    assert table.find_server(request(reinvite_text, method="ACK")) is tx


# ---------------------------------------------------------------------------- the table


def test_table_tracks_deadlines_and_forgets_terminated_transactions() -> None:
    table = TransactionTable()
    invite = request()
    client = ClientInviteTransaction(invite, reliable=False)
    register = request(REGISTER)
    server = ServerNonInviteTransaction(register, reliable=False)
    assert table.add(client) == 1
    assert table.add(server) == 2
    assert table.by_id(2) is server
    assert table.next_deadline() is None
    client.start(0.0)
    server.start(0.0)
    assert table.next_deadline() == 0.5
    assert table.find_client(respond(invite, 100)) is client
    assert table.find_server(register) is server

    # Timer A fires through the table; the 180 then stops A and B, leaving stale heap entries.
    out = table.handle_timer(0.5)
    assert [o.retransmission for o in sends(out)] == [True]
    assert table.next_deadline() == 1.5
    client.receive_response(respond(invite, 180), 0.6)
    assert table.next_deadline() is None

    # The server answers: Timer J runs; it terminates through handle_timer and leaves.
    server.send_response(respond(register, 200), 1.0)
    assert table.next_deadline() == 33.0
    out = table.handle_timer(40.0)
    assert out == [Terminated(transaction=server)]
    assert table.find_server(register) is None
    assert table.by_id(2) is None
    assert server not in table and client in table

    # A transaction terminated by a message leaves the table too.
    client.receive_response(respond(invite, 486), 41.0)
    client.handle_timer(73.0)
    assert client.terminated and client not in table
    assert len(table) == 0
    assert table.next_deadline() is None


def test_table_refuses_duplicates_and_removes_on_request() -> None:
    table = TransactionTable()
    invite = request()
    first = ServerInviteTransaction(invite, reliable=False)
    table.add(first)
    with pytest.raises(LocalProtocolError, match="already"):
        table.add(ServerInviteTransaction(request(), reliable=False))
    with pytest.raises(LocalProtocolError, match="already in a table"):
        table.add(first)
    first.start(0.0)
    table.remove(first)
    assert len(table) == 0
    assert table.next_deadline() is None
    assert table.handle_timer(1.0) == []


def test_table_with_thousands_of_transactions() -> None:
    table = TransactionTable()
    transactions = []
    for n in range(5000):
        branch = f"z9hG4bK-{n}"
        invite = request(via=f"SIP/2.0/UDP client.atlanta.example.com:5060;branch={branch}")
        tx = ClientInviteTransaction(invite, reliable=False)
        table.add(tx)
        tx.start(n * 0.001)
        transactions.append(tx)
    assert len(table) == 5000
    assert table.next_deadline() == 0.5
    # Every one gets a provisional response: all A/B entries become stale.
    for n, tx in enumerate(transactions):
        tx.receive_response(respond(tx.request, 180), 0.4 + n * 1e-6)
    assert table.next_deadline() is None
    # Each gets a final response: Timer D; the stale entries must not pile up.
    for n, tx in enumerate(transactions):
        tx.receive_response(respond(tx.request, 486), 1.0 + n * 1e-4)
    assert table._entries <= 64 + 8 * len(table) + 1
    assert table.next_deadline() == 33.0
    out = table.handle_timer(33.25)
    assert sum(isinstance(o, Terminated) for o in out) == 2501
    assert len(table) == 2499
    assert table.next_deadline() == pytest.approx(33.2501)


def test_table_timers_are_rebuilt_when_stale_entries_pile_up() -> None:
    table = TransactionTable()
    transactions = []
    for n in range(100):
        via = f"SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK-r{n}"
        tx = ClientNonInviteTransaction(request(REGISTER, via=via), reliable=False)
        table.add(tx)
        tx.start(0.0)
        transactions.append(tx)
    assert table._entries == 200  # E and F of each
    for tx in transactions[1:]:
        table.remove(tx)  # their 198 entries are now stale
    survivor = transactions[0]
    survivor.handle_timer(0.5)  # re-arms E: the push finds too many entries and rebuilds the slots
    assert table._entries == 2
    assert table.next_deadline() == 1.5
    assert sorted(survivor.timers().values()) == [1.5, 32.0]


def test_build_cancel_follows_the_invite() -> None:
    invite = request()
    invite.headers.add("Via", "SIP/2.0/UDP ss1.atlanta.example.com;branch=z9hG4bK2d4790.1")
    cancel = build_cancel(invite)
    assert cancel.method == "CANCEL"
    assert cancel.uri == invite.uri
    assert cancel.headers.get_all("Via") == [
        "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK74bf9"
    ]
    assert cancel.headers.get("To") == "Bob <sip:bob@biloxi.example.com>"
    assert cancel.headers.get("From") == invite.headers.get("From")
    assert cancel.headers.get("Call-ID") == invite.call_id
    assert cancel.headers.get("CSeq") == "1 CANCEL"
    assert cancel.headers.get_all("Route") == ["<sip:ss1.atlanta.example.com;lr>"]
    assert "Contact" not in cancel.headers
    reparsed = parse_message(cancel.to_bytes())
    assert isinstance(reparsed, Request) and reparsed.cseq.method == "CANCEL"
    with pytest.raises(LocalProtocolError):
        build_cancel(cancel)


def test_cancel_flow_rfc_3665_3_8() -> None:
    """Alice cancels after 180: CANCEL gets 200, the INVITE 487, ACKed by the transaction."""
    invite = request()
    invite_tx = ClientInviteTransaction(invite, reliable=False)
    invite_tx.start(0.0)
    assert not invite_tx.may_cancel
    invite_tx.receive_response(respond(invite, 180), 0.1)
    assert invite_tx.may_cancel
    cancel_tx = ClientNonInviteTransaction(build_cancel(invite), reliable=False)
    cancel_tx.start(2.0)
    assert kinds(cancel_tx.receive_response(respond(cancel_tx.request, 200), 2.1)) == [
        "DeliverResponse"
    ]
    out = invite_tx.receive_response(respond(invite, 487), 2.2)
    assert kinds(out) == ["SendMessage", "DeliverResponse"]
    assert invite_tx.ack is not None and invite_tx.ack.headers.get("CSeq") == "1 ACK"


@pytest.mark.parametrize(
    ("machine", "method"),
    [
        (ClientInviteTransaction, "OPTIONS"),
        (ClientInviteTransaction, "ACK"),
        (ServerInviteTransaction, "BYE"),
        (ClientNonInviteTransaction, "INVITE"),
        (ServerNonInviteTransaction, "INVITE"),
        (ServerNonInviteTransaction, "ACK"),
    ],
)
def test_a_machine_refuses_a_method_it_is_not_for(machine: type[Transaction], method: str) -> None:
    with pytest.raises(LocalProtocolError, match=f"cannot handle {method}"):
        machine(request(method=method), reliable=False)  # type: ignore[call-arg]
