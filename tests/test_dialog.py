"""RFC 3261 §12 dialogs: creation on both sides, route sets, strict routing, CSeq rules, target
refresh, and the requests a dialog builds.

Messages follow RFC 3665 §3.2 (session establishment through two proxies, ss1.atlanta and
ss2.biloxi, both record-routing with `lr`), as seen by Alice (UAC) and by Bob (UAS).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from edge.sip.dialog import (
    Dialog,
    DialogId,
    DialogState,
    request_dialog_id,
    response_dialog_id,
)
from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.message import Request, Response, make_response, parse_message

# F1 as Alice sends it (through her outbound proxy ss1).
ALICE_INVITE = """\
INVITE sip:bob@biloxi.example.com SIP/2.0
Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74b43
Max-Forwards: 70
Route: <sip:ss1.atlanta.example.com;lr>
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 2 INVITE
Contact: <sip:alice@client.atlanta.example.com;transport=tcp>
Content-Type: application/sdp
Content-Length: 0

"""

# The INVITE as Bob receives it: each proxy added a Via and a Record-Route (ss2 last, on top).
BOB_INVITE = """\
INVITE sip:bob@client.biloxi.example.com SIP/2.0
Via: SIP/2.0/TCP ss2.biloxi.example.com:5060;branch=z9hG4bK721e4.1
Via: SIP/2.0/TCP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1;received=192.0.2.111
Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74b43;received=192.0.2.101
Max-Forwards: 68
Record-Route: <sip:ss2.biloxi.example.com;lr>
Record-Route: <sip:ss1.atlanta.example.com;lr>
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 2 INVITE
Contact: <sip:alice@client.atlanta.example.com;transport=tcp>
Content-Type: application/sdp
Content-Length: 0

"""

# Bob's 180 and 200 as Alice receives them (Record-Route copied by Bob, in the same order).
RESPONSE_AT_ALICE = """\
SIP/2.0 {status}
Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74b43;received=192.0.2.101
Record-Route: <sip:ss2.biloxi.example.com;lr>, <sip:ss1.atlanta.example.com;lr>
From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl
To: Bob <sip:bob@biloxi.example.com>;tag=314159
Call-ID: 3848276298220188511@atlanta.example.com
CSeq: 2 INVITE
Contact: <sip:bob@client.biloxi.example.com;transport=tcp>
Content-Length: 0

"""


def parse(text: str) -> Request | Response:
    return parse_message(text.replace("\n", "\r\n").encode())


def req(text: str) -> Request:
    message = parse(text)
    assert isinstance(message, Request)
    return message


def resp(text: str) -> Response:
    message = parse(text)
    assert isinstance(message, Response)
    return message


def at_alice(status: str, *, drop: tuple[str, ...] = (), to_tag: bool = True) -> Response:
    response = resp(RESPONSE_AT_ALICE.format(status=status))
    for name in drop:
        response.headers.remove(name)
    if not to_tag:
        response.headers.set("To", "Bob <sip:bob@biloxi.example.com>")
    return response


def branches() -> Callable[[], str]:
    counter = itertools.count(1)
    return lambda: f"b{next(counter)}"


def state_of(dialog: Dialog) -> DialogState:
    return dialog.state  # read through a call: mypy must not narrow it between asserts


def alice_dialog(status: str = "200 OK") -> Dialog:
    dialog = Dialog.create_uac(req(ALICE_INVITE), at_alice(status), new_branch=branches())
    assert dialog is not None
    return dialog


def bob_dialog(invite: str = BOB_INVITE) -> Dialog:
    return Dialog.create_uas(
        req(invite),
        "314159",
        new_branch=branches(),
        via_host="client.biloxi.example.com",
        via_port=5060,
        via_transport="TCP",
        local_contact="<sip:bob@client.biloxi.example.com;transport=tcp>",
    )


# ------------------------------------------------------------------------------ creation


def test_uac_dialog_from_200() -> None:
    dialog = alice_dialog()
    assert dialog.id == DialogId(
        "3848276298220188511@atlanta.example.com", "9fxced76sl", "314159"
    )
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.is_uac
    assert dialog.local_uri == "sip:alice@atlanta.example.com"
    assert dialog.remote_uri == "sip:bob@biloxi.example.com"
    assert dialog.remote_target == "sip:bob@client.biloxi.example.com;transport=tcp"
    # §12.1.2: the UAC's route set is the Record-Route of the response, reversed.
    assert dialog.route_set == (
        "<sip:ss1.atlanta.example.com;lr>",
        "<sip:ss2.biloxi.example.com;lr>",
    )
    assert dialog.local_seq == 2
    assert dialog.remote_seq is None
    assert dialog.secure is False
    assert dialog.next_hop == "sip:ss1.atlanta.example.com;lr"
    assert response_dialog_id(at_alice("200 OK")) == dialog.id


def test_uac_early_dialog_from_180_then_confirmed_by_200() -> None:
    invite = req(ALICE_INVITE)
    ringing = at_alice("180 Ringing", drop=("Record-Route", "Contact"))
    dialog = Dialog.create_uac(invite, ringing, new_branch=branches())
    assert dialog is not None
    assert dialog.state is DialogState.EARLY
    assert not dialog.route_set
    assert dialog.remote_target == "sip:bob@biloxi.example.com"  # no Contact yet
    dialog.receive_response(at_alice("200 OK"))
    assert state_of(dialog) is DialogState.CONFIRMED
    # §13.2.2.4: the route set and the remote target are recomputed from the 2xx.
    assert dialog.route_set == (
        "<sip:ss1.atlanta.example.com;lr>",
        "<sip:ss2.biloxi.example.com;lr>",
    )
    assert dialog.remote_target == "sip:bob@client.biloxi.example.com;transport=tcp"


def test_uac_early_dialog_ends_with_non_2xx_final() -> None:
    dialog = alice_dialog("183 Session Progress")
    assert dialog.state is DialogState.EARLY
    dialog.receive_response(at_alice("486 Busy Here"))
    assert state_of(dialog) is DialogState.TERMINATED
    with pytest.raises(LocalProtocolError, match="terminated"):
        dialog.create_bye()


def test_responses_that_create_no_dialog() -> None:
    invite = req(ALICE_INVITE)
    assert Dialog.create_uac(invite, at_alice("100 Trying"), new_branch=branches()) is None
    tagless = at_alice("180 Ringing", to_tag=False)
    assert Dialog.create_uac(invite, tagless, new_branch=branches()) is None
    assert Dialog.create_uac(invite, at_alice("486 Busy Here"), new_branch=branches()) is None
    # §12.1.2: a 2xx without To tag (RFC 2543 UAS) makes a dialog with a null remote tag.
    old = Dialog.create_uac(invite, at_alice("200 OK", to_tag=False), new_branch=branches())
    assert old is not None and old.remote_tag == ""
    with pytest.raises(SipParseError, match="Contact"):
        Dialog.create_uac(invite, at_alice("200 OK", drop=("Contact",)), new_branch=branches())


def test_uas_dialog_from_invite() -> None:
    dialog = bob_dialog()
    assert dialog.id == DialogId("3848276298220188511@atlanta.example.com", "314159",
                                 "9fxced76sl")
    assert dialog.state is DialogState.EARLY
    assert not dialog.is_uac
    assert dialog.local_uri == "sip:bob@biloxi.example.com"
    assert dialog.remote_uri == "sip:alice@atlanta.example.com"
    assert dialog.remote_target == "sip:alice@client.atlanta.example.com;transport=tcp"
    # §12.1.1: the UAS keeps the Record-Route order.
    assert dialog.route_set == (
        "<sip:ss2.biloxi.example.com;lr>",
        "<sip:ss1.atlanta.example.com;lr>",
    )
    assert dialog.remote_seq == 2
    assert dialog.local_seq is None
    invite = req(BOB_INVITE)
    ok = make_response(invite, 200, to_tag="314159")
    assert request_dialog_id(req(BOB_INVITE.replace(
        "To: Bob <sip:bob@biloxi.example.com>", "To: Bob <sip:bob@biloxi.example.com>;tag=314159"
    ))) == dialog.id
    dialog.response_sent(make_response(invite, 180, to_tag="314159"))
    assert state_of(dialog) is DialogState.EARLY
    dialog.response_sent(ok)
    assert state_of(dialog) is DialogState.CONFIRMED


def test_uas_early_dialog_ends_with_our_non_2xx() -> None:
    dialog = bob_dialog()
    dialog.response_sent(make_response(req(BOB_INVITE), 603, to_tag="314159"))
    assert state_of(dialog) is DialogState.TERMINATED


def test_uas_needs_a_contact_and_sips_over_tls_is_secure() -> None:
    no_contact = BOB_INVITE.replace(
        "Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\n", ""
    )
    with pytest.raises(SipParseError, match="Contact"):
        bob_dialog(no_contact)
    sips = BOB_INVITE.replace(
        "INVITE sip:bob@client.biloxi.example.com", "INVITE sips:bob@client.biloxi.example.com"
    )
    secure = Dialog.create_uas(req(sips), "t", new_branch=branches(), via_host="h", tls=True)
    assert secure.secure
    assert not Dialog.create_uas(req(sips), "t", new_branch=branches(), via_host="h").secure


# ----------------------------------------------------------------- requests we send


def test_uac_bye_loose_routing() -> None:
    dialog = alice_dialog()
    bye = dialog.create_bye()
    assert bye.method == "BYE"
    assert bye.uri == "sip:bob@client.biloxi.example.com;transport=tcp"
    assert bye.headers.get_all("Route") == [
        "<sip:ss1.atlanta.example.com;lr>",
        "<sip:ss2.biloxi.example.com;lr>",
    ]
    assert bye.headers.get("From") == "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"
    assert bye.headers.get("To") == "Bob <sip:bob@biloxi.example.com>;tag=314159"
    assert bye.headers.get("Call-ID") == "3848276298220188511@atlanta.example.com"
    assert bye.headers.get("CSeq") == "3 BYE"
    assert bye.headers.get("Max-Forwards") == "70"
    assert bye.top_via.transport == "TCP"
    assert bye.top_via.sent_by == "client.atlanta.example.com:5060"
    assert bye.top_via.branch == "z9hG4bKb1"
    assert "Contact" not in bye.headers
    assert dialog.local_seq == 3
    # It round-trips through the parser.
    again = parse_message(bye.to_bytes())
    assert isinstance(again, Request) and again.cseq.seq == 3


def test_uac_ack_for_2xx_keeps_the_invite_cseq() -> None:
    dialog = alice_dialog()
    ack = dialog.create_ack(2)
    assert ack.method == "ACK"
    assert ack.headers.get("CSeq") == "2 ACK"
    assert ack.uri == "sip:bob@client.biloxi.example.com;transport=tcp"
    assert ack.headers.get_all("Route") == [
        "<sip:ss1.atlanta.example.com;lr>",
        "<sip:ss2.biloxi.example.com;lr>",
    ]
    assert ack.top_via.branch == "z9hG4bKb1"  # a new transaction: a new branch
    assert dialog.local_seq == 2
    # A second ACK (2xx retransmission) gets another branch, same CSeq.
    second = dialog.create_ack(2)
    assert second.top_via.branch == "z9hG4bKb2"
    assert second.headers.get("CSeq") == "2 ACK"


def test_cseq_increments_except_for_ack_and_cancel() -> None:
    dialog = alice_dialog()
    assert dialog.create_request("INFO").cseq.seq == 3
    assert dialog.create_request("ACK").cseq.seq == 3
    assert dialog.create_request("CANCEL").cseq.seq == 3
    assert dialog.create_request("OPTIONS").cseq.seq == 4
    assert dialog.local_seq == 4


def test_target_refresh_requests_carry_our_contact() -> None:
    dialog = alice_dialog()
    reinvite = dialog.create_request("INVITE", body=b"v=0\r\n",
                                     headers=[("Content-Type", "application/sdp")])
    assert reinvite.headers.get("Contact") == "<sip:alice@client.atlanta.example.com;transport=tcp>"
    assert reinvite.headers.get("Content-Type") == "application/sdp"
    assert reinvite.body == b"v=0\r\n"
    update = dialog.create_request("UPDATE", contact="<sip:alice@192.0.2.101:5060>")
    assert update.headers.get("Contact") == "<sip:alice@192.0.2.101:5060>"
    assert "Contact" not in dialog.create_request("INFO").headers


def test_uas_bye_starts_its_own_cseq() -> None:
    dialog = bob_dialog()
    dialog.response_sent(make_response(req(BOB_INVITE), 200, to_tag="314159"))
    bye = dialog.create_bye()
    assert bye.uri == "sip:alice@client.atlanta.example.com;transport=tcp"
    assert bye.headers.get_all("Route") == [
        "<sip:ss2.biloxi.example.com;lr>",
        "<sip:ss1.atlanta.example.com;lr>",
    ]
    assert bye.headers.get("From") == "Bob <sip:bob@biloxi.example.com>;tag=314159"
    assert bye.headers.get("To") == "Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl"
    assert bye.headers.get("CSeq") == "1 BYE"
    assert bye.top_via.sent_by == "client.biloxi.example.com:5060"
    assert bye.top_via.transport == "TCP"
    with pytest.raises(LocalProtocolError):
        bob_dialog().create_request("ACK")  # nothing of ours to acknowledge yet


def test_strict_router_first_in_route_set() -> None:
    # ss2 is an RFC 2543 (strict) router: no `lr` on its Record-Route.
    strict = BOB_INVITE.replace(
        "Record-Route: <sip:ss2.biloxi.example.com;lr>",
        "Record-Route: <sip:ss2.biloxi.example.com;maddr=192.0.2.222;method=INVITE>",
    )
    dialog = bob_dialog(strict)
    dialog.response_sent(make_response(req(strict), 200, to_tag="314159"))
    bye = dialog.create_bye()
    # §12.2.1.1: the first route becomes the Request-URI (without `method`), the remote
    # target goes last in Route.
    assert bye.uri == "sip:ss2.biloxi.example.com;maddr=192.0.2.222"
    assert bye.headers.get_all("Route") == [
        "<sip:ss1.atlanta.example.com;lr>",
        "<sip:alice@client.atlanta.example.com;transport=tcp>",
    ]
    assert dialog.next_hop == "sip:ss2.biloxi.example.com;maddr=192.0.2.222;method=INVITE"


def test_no_route_set_sends_to_the_remote_target() -> None:
    response = at_alice("200 OK", drop=("Record-Route",))
    dialog = Dialog.create_uac(req(ALICE_INVITE), response, new_branch=branches())
    assert dialog is not None
    bye = dialog.create_bye()
    assert bye.uri == "sip:bob@client.biloxi.example.com;transport=tcp"
    assert "Route" not in bye.headers
    assert dialog.next_hop == "sip:bob@client.biloxi.example.com;transport=tcp"


# ----------------------------------------------------------------- requests we receive


def in_dialog(method: str, seq: int, *, contact: str | None = None) -> Request:
    """A request Alice sends Bob inside the dialog, as Bob receives it."""
    lines = [
        f"{method} sip:bob@client.biloxi.example.com;transport=tcp SIP/2.0",
        "Via: SIP/2.0/TCP ss2.biloxi.example.com:5060;branch=z9hG4bK721e4.9",
        "Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74b76",
        "Max-Forwards: 69",
        "From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
        "To: Bob <sip:bob@biloxi.example.com>;tag=314159",
        "Call-ID: 3848276298220188511@atlanta.example.com",
        f"CSeq: {seq} {method}",
    ]
    if contact is not None:
        lines.append(f"Contact: {contact}")
    return req("\n".join([*lines, "Content-Length: 0", "", ""]))


def test_remote_cseq_rules() -> None:
    dialog = bob_dialog()
    dialog.response_sent(make_response(req(BOB_INVITE), 200, to_tag="314159"))
    assert dialog.receive_request(in_dialog("ACK", 2)) is None
    assert dialog.receive_request(in_dialog("INFO", 3)) is None
    assert dialog.remote_seq == 3
    # §12.2.2: lower than the remote CSeq is out of order: 500.
    assert dialog.receive_request(in_dialog("INFO", 2)) == 500
    assert dialog.remote_seq == 3
    assert dialog.receive_request(in_dialog("OPTIONS", 10)) is None
    assert dialog.remote_seq == 10
    assert request_dialog_id(in_dialog("BYE", 11)) == dialog.id
    assert dialog.receive_request(in_dialog("BYE", 11)) is None
    assert state_of(dialog) is DialogState.TERMINATED
    assert dialog.receive_request(in_dialog("INFO", 12)) == 481


def test_uac_sets_empty_remote_cseq_from_first_request() -> None:
    dialog = alice_dialog()
    assert dialog.remote_seq is None
    bob_bye = in_dialog("BYE", 7)
    assert dialog.receive_request(bob_bye) is None
    assert dialog.remote_seq == 7


def test_target_refresh_by_request() -> None:
    dialog = bob_dialog()
    dialog.response_sent(make_response(req(BOB_INVITE), 200, to_tag="314159"))
    dialog.receive_request(in_dialog("OPTIONS", 3, contact="<sip:alice@192.0.2.9>"))
    assert dialog.remote_target == "sip:alice@client.atlanta.example.com;transport=tcp"
    dialog.receive_request(in_dialog("INVITE", 4, contact="<sip:alice@192.0.2.101:5080>"))
    assert dialog.remote_target == "sip:alice@192.0.2.101:5080"
    dialog.receive_request(in_dialog("UPDATE", 5, contact="Alice <sip:alice@192.0.2.7>;x=y"))
    assert dialog.remote_target == "sip:alice@192.0.2.7"
    assert dialog.create_bye().uri == "sip:alice@192.0.2.7"


def test_target_refresh_by_2xx_response() -> None:
    dialog = alice_dialog()
    reinvite = dialog.create_request("INVITE")
    ok = make_response(reinvite, 200, to_tag="314159")
    ok.headers.add("Contact", "<sip:bob@192.0.2.4:5062>")
    dialog.receive_response(ok)
    assert dialog.remote_target == "sip:bob@192.0.2.4:5062"
    # A failed re-INVITE leaves the dialog alone; its route set never changes after confirm.
    update = dialog.create_request("UPDATE")
    rejected = make_response(update, 488, to_tag="314159")
    rejected.headers.add("Contact", "<sip:bob@192.0.2.5>")
    dialog.receive_response(rejected)
    assert dialog.remote_target == "sip:bob@192.0.2.4:5062"
    assert state_of(dialog) is DialogState.CONFIRMED
    assert len(dialog.route_set) == 2


@pytest.mark.parametrize("status", [408, 481])
def test_408_and_481_end_the_dialog(status: int) -> None:
    dialog = alice_dialog()
    info = dialog.create_request("INFO")
    dialog.receive_response(make_response(info, status, to_tag="314159"))
    assert state_of(dialog) is DialogState.TERMINATED


def test_response_to_our_bye_ends_the_dialog() -> None:
    dialog = alice_dialog()
    bye = dialog.create_bye()
    dialog.receive_response(make_response(bye, 100))
    assert state_of(dialog) is DialogState.CONFIRMED
    dialog.receive_response(make_response(bye, 200, to_tag="314159"))
    assert state_of(dialog) is DialogState.TERMINATED


def test_branch_generator_with_cookie_is_used_as_is() -> None:
    dialog = Dialog.create_uac(
        req(ALICE_INVITE), at_alice("200 OK"), new_branch=lambda: "z9hG4bKfixed"
    )
    assert dialog is not None
    assert dialog.create_bye().top_via.branch == "z9hG4bKfixed"
