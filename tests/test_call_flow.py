"""Two sans-IO endpoints complete INVITE / 200 / ACK / BYE in memory, with dialogs on both sides.

The network is a list of datagrams passed by hand; the clock is a float. This is the shape of
every later B2BUA test: no sockets, fully deterministic.
"""

from __future__ import annotations

import itertools

from edge.sip.dialog import Dialog, DialogState
from edge.sip.endpoint import EndpointConfig, SipEndpoint
from edge.sip.events import Event, Peer, RequestReceived, ResponseReceived, Transmit
from edge.sip.message import make_response, new_request
from edge.sip.via import Via

ALICE = ("127.0.0.1", 5070)
BOB = ("127.0.0.1", 5080)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"


class Node:
    """An endpoint, its address and a deterministic token source."""

    def __init__(self, name: str, address: tuple[str, int]) -> None:
        counter = itertools.count(1)
        self.address = address

        def token() -> str:
            return f"{name}{next(counter)}"

        self.token = token
        self.endpoint = SipEndpoint(
            EndpointConfig(methods=("INVITE", "BYE")), token=self.token
        )
        self.endpoint.set_local_addresses(udp=address, tcp=None)

    def events(self) -> list[Event]:
        out: list[Event] = []
        while (event := self.endpoint.next_event()) is not None:
            out.append(event)
        return out


def transfer(sender: Node, receiver: Node, now: float) -> int:
    """Deliver every datagram `sender` produced for `receiver`; return how many."""
    count = 0
    for output in sender.endpoint.outputs():
        assert isinstance(output, Transmit)
        assert output.peer.address == receiver.address
        receiver.endpoint.receive_datagram(output.data, sender.address, now)
        count += 1
    return count


def test_invite_200_ack_bye_between_two_endpoints() -> None:
    alice, bob = Node("a", ALICE), Node("b", BOB)
    to_bob = Peer(transport="UDP", address=BOB)

    # Alice sends an INVITE.
    invite = new_request(
        "INVITE", "sip:bob@127.0.0.1:5080",
        via=Via.build("UDP", "127.0.0.1", 5070, "z9hG4bK" + alice.token()),
        from_="<sip:alice@127.0.0.1>;tag=alice-tag", to="<sip:bob@127.0.0.1>",
        call_id="flow-1", cseq=1, contact="<sip:alice@127.0.0.1:5070>",
        headers=[("Content-Type", "application/sdp")], body=SDP,
    )
    alice.endpoint.send_request(invite, to_bob, 0.0)
    assert transfer(alice, bob, 0.01) == 1

    # Bob's TU gets it, rings, then answers; both create the dialog.
    (incoming,) = bob.events()
    assert isinstance(incoming, RequestReceived) and incoming.transaction_id is not None
    assert incoming.request.body == SDP
    bob_dialog = Dialog.create_uas(
        incoming.request, "bob-tag", new_branch=bob.token, via_host="127.0.0.1", via_port=5080,
        local_contact="<sip:bob@127.0.0.1:5080>",
    )
    ringing = make_response(incoming.request, 180, to_tag="bob-tag",
                            headers=[("Contact", "<sip:bob@127.0.0.1:5080>")])
    bob.endpoint.respond(incoming.transaction_id, ringing, 0.02)
    bob_dialog.response_sent(ringing)
    ok = make_response(incoming.request, 200, to_tag="bob-tag",
                       headers=[("Contact", "<sip:bob@127.0.0.1:5080>"),
                                ("Content-Type", "application/sdp")], body=SDP)
    bob.endpoint.respond(incoming.transaction_id, ok, 0.5)
    bob_dialog.response_sent(ok)
    assert bob_dialog.state is DialogState.CONFIRMED
    assert transfer(bob, alice, 0.51) == 2

    # Alice sees 180 then 200, creates her dialog and ACKs (a transaction of its own).
    first, second = alice.events()
    assert isinstance(first, ResponseReceived) and first.response.status == 180
    assert isinstance(second, ResponseReceived) and second.response.status == 200
    alice_dialog = Dialog.create_uac(invite, second.response, new_branch=alice.token)
    assert alice_dialog is not None and alice_dialog.state is DialogState.CONFIRMED
    ack = alice_dialog.create_ack(invite.cseq.seq)
    assert ack.uri == "sip:bob@127.0.0.1:5080"
    alice.endpoint.send_stateless(ack, to_bob)
    assert transfer(alice, bob, 0.52) == 1
    (ack_event,) = bob.events()
    assert isinstance(ack_event, RequestReceived) and ack_event.request.method == "ACK"
    assert bob_dialog.receive_request(ack_event.request) is None

    # Bob's 200 is not retransmitted after the ACK: nothing more goes out for a while.
    bob.endpoint.handle_timer(1.0)
    assert bob.endpoint.outputs() == []

    # Alice hangs up.
    bye = alice_dialog.create_bye()
    assert bye.cseq.seq == 2 and bye.to_addr.tag == "bob-tag"
    alice.endpoint.send_request(bye, to_bob, 5.0)
    assert transfer(alice, bob, 5.01) == 1
    (bye_event,) = bob.events()
    assert isinstance(bye_event, RequestReceived) and bye_event.request.method == "BYE"
    assert bye_event.transaction_id is not None
    assert bob_dialog.receive_request(bye_event.request) is None
    bob.endpoint.respond(
        bye_event.transaction_id, make_response(bye_event.request, 200), 5.02
    )
    assert transfer(bob, alice, 5.03) == 1
    (bye_ok,) = alice.events()
    assert isinstance(bye_ok, ResponseReceived) and bye_ok.response.status == 200
    assert bye_ok.response.cseq.method == "BYE"

    # Every transaction winds down by itself: Timer L (INVITE server, 32 s), J and K.
    for node in (alice, bob):
        while (deadline := node.endpoint.get_timer()) is not None:
            assert deadline < 70
            node.endpoint.handle_timer(deadline)
        assert node.endpoint.outputs() == []
