"""The sans-IO endpoint: RFC 3261 §8.2 checks, OPTIONS, Via stamping, transactions, keep-alives."""

from __future__ import annotations

import itertools

import pytest

from edge.sip.endpoint import EndpointConfig, SipEndpoint
from edge.sip.events import (
    CancelReceived,
    CloseConnection,
    Peer,
    RequestReceived,
    ResponseReceived,
    Transmit,
)
from edge.sip.message import Request, Response, make_response, parse_message
from tests.sipmsg import request

PEER = ("127.0.0.1", 5070)


def make_endpoint(**config: object) -> SipEndpoint:
    counter = itertools.count(1)
    return SipEndpoint(
        EndpointConfig(**config),  # type: ignore[arg-type]
        token=lambda: f"tok{next(counter)}",
    )


def sent(endpoint: SipEndpoint) -> list[tuple[Response | Request, Peer]]:
    out: list[tuple[Response | Request, Peer]] = []
    for item in endpoint.outputs():
        assert isinstance(item, Transmit)
        out.append((parse_message(item.data), item.peer))
    return out


def only_response(endpoint: SipEndpoint) -> tuple[Response, Peer]:
    items = sent(endpoint)
    assert len(items) == 1, items
    response, peer = items[0]
    assert isinstance(response, Response)
    return response, peer


def test_options_is_answered_with_capabilities() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(request("OPTIONS"), PEER, 0.0)
    response, peer = only_response(endpoint)
    assert response.status == 200
    assert peer == Peer(transport="UDP", address=PEER)
    assert response.headers.get("Allow") == "OPTIONS, ACK, CANCEL"
    assert response.headers.get("Accept") == "application/sdp"
    assert "Supported" in response.headers
    assert response.to_addr.tag == "tok1"
    assert response.call_id == "call-1@test"
    via = response.top_via
    assert via.branch == "z9hG4bK-test-1"
    assert via.received == "127.0.0.1"
    assert via.rport == 5070
    assert endpoint.next_event() is None


def test_unknown_method_gets_501_with_allow() -> None:
    endpoint = make_endpoint(methods=("INVITE", "BYE"))
    endpoint.receive_datagram(request("FOOBAR"), PEER, 0.0)
    response, _ = only_response(endpoint)
    assert response.status == 501
    assert response.headers.get("Allow") == "INVITE, BYE, OPTIONS, ACK, CANCEL"


def test_wrong_version_gets_505() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(request("OPTIONS", version="SIP/7.0"), PEER, 0.0)
    assert only_response(endpoint)[0].status == 505


def test_unsupported_uri_scheme_gets_416() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(request("OPTIONS", uri="mailto:alice@example.com"), PEER, 0.0)
    assert only_response(endpoint)[0].status == 416


def test_unknown_require_gets_420_with_unsupported() -> None:
    endpoint = make_endpoint(supported=("path",))
    raw = request("OPTIONS", extra=["Require: path, nonsenseextension, foo"])
    endpoint.receive_datagram(raw, PEER, 0.0)
    response, _ = only_response(endpoint)
    assert response.status == 420
    assert response.headers.get("Unsupported") == "nonsenseextension, foo"


@pytest.mark.parametrize(
    ("raw", "phrase"),
    [
        (request("OPTIONS", cseq_method="INVITE"), "CSeq method"),
        (request("OPTIONS").replace(b"CSeq: 1 OPTIONS\r\n", b""), "missing CSeq"),
        (request("OPTIONS").replace(b"Call-ID: call-1@test\r\n", b""), "missing Call-ID"),
        (request("OPTIONS").replace(b"CSeq: 1 ", b"CSeq: 99999999999 "), "CSeq"),
        (request("OPTIONS").replace(b"Content-Length: 0", b"Content-Length: 50"), "Content-Length"),
    ],
)
def test_malformed_request_gets_400_naming_the_problem(raw: bytes, phrase: str) -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(raw, PEER, 0.0)
    response, _ = only_response(endpoint)
    assert response.status == 400
    assert phrase in response.reason


def test_garbage_is_dropped_without_a_response() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(b"\x00\x01garbage\r\n\r\n", PEER, 0.0)
    endpoint.receive_datagram(request("ACK").replace(b"CSeq: 1 ACK", b"CSeq: x ACK"), PEER, 0.0)
    endpoint.receive_datagram(request("OPTIONS").replace(b"Via: ", b"X-Via: "), PEER, 0.0)
    assert endpoint.outputs() == []


def test_crlf_keepalive_datagram_is_ignored() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(b"\r\n\r\n", PEER, 0.0)
    assert endpoint.outputs() == []


def test_trailing_octets_after_body_are_ignored() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(request("OPTIONS") + request("FOOBAR", branch="z9hG4bK-2"), PEER, 0.0)
    response, _ = only_response(endpoint)
    assert response.status == 200


def test_retransmitted_request_gets_the_same_response_again() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(request("OPTIONS"), PEER, 0.0)
    first, _ = only_response(endpoint)
    endpoint.receive_datagram(request("OPTIONS"), PEER, 0.3)
    again, _ = only_response(endpoint)
    assert again.to_bytes() == first.to_bytes()


def test_response_without_rport_goes_to_the_via_port() -> None:
    endpoint = make_endpoint()
    raw = request("OPTIONS", rport=False, via_host="127.0.0.1:5099")
    endpoint.receive_datagram(raw, ("127.0.0.1", 40000), 0.0)
    response, peer = only_response(endpoint)
    assert peer.address == ("127.0.0.1", 5099)
    assert response.top_via.received is None


def test_request_for_the_tu_and_its_response() -> None:
    endpoint = make_endpoint(methods=("MESSAGE",))
    endpoint.receive_datagram(request("MESSAGE", body=b"hi"), PEER, 0.0)
    assert endpoint.outputs() == []
    event = endpoint.next_event()
    assert isinstance(event, RequestReceived)
    assert event.request.body == b"hi"
    assert event.transaction_id is not None
    endpoint.respond(event.transaction_id, make_response(event.request, 202, to_tag="x"), 0.1)
    response, peer = only_response(endpoint)
    assert response.status == 202
    assert peer.address == PEER


def test_invite_gets_100_trying_when_the_tu_is_slow_and_cancel_ends_it() -> None:
    endpoint = make_endpoint(methods=("INVITE",))
    endpoint.receive_datagram(request("INVITE"), PEER, 0.0)
    event = endpoint.next_event()
    assert isinstance(event, RequestReceived)
    timer = endpoint.get_timer()
    assert timer is not None and timer <= 0.2
    endpoint.handle_timer(0.2)
    trying, _ = only_response(endpoint)
    assert trying.status == 100
    endpoint.receive_datagram(request("CANCEL"), PEER, 1.0)
    ok, _ = only_response(endpoint)
    assert ok.status == 200 and ok.cseq.method == "CANCEL"
    cancel = endpoint.next_event()
    assert isinstance(cancel, CancelReceived)
    assert cancel.invite_transaction_id == event.transaction_id


def test_cancel_matching_nothing_gets_481() -> None:
    endpoint = make_endpoint(methods=("INVITE",))
    endpoint.receive_datagram(request("CANCEL"), PEER, 0.0)
    assert only_response(endpoint)[0].status == 481


def test_stray_response_is_dropped() -> None:
    endpoint = make_endpoint()
    raw = (
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnobody\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:b@b>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    endpoint.receive_datagram(raw, PEER, 0.0)
    assert endpoint.outputs() == []
    assert endpoint.next_event() is None


def test_tcp_messages_pings_and_framing_errors() -> None:
    endpoint = make_endpoint()
    endpoint.connection_made(7, PEER)
    raw = request("OPTIONS", transport="TCP")
    endpoint.receive_stream_data(7, b"\r\n\r\n" + raw[:40], 0.0)
    (pong,) = endpoint.outputs()
    assert isinstance(pong, Transmit) and pong.data == b"\r\n" and pong.peer.connection == 7
    endpoint.receive_stream_data(7, raw[40:], 0.0)
    response, peer = only_response(endpoint)
    assert response.status == 200
    assert peer.connection == 7 and peer.transport == "TCP"
    endpoint.receive_stream_data(7, raw.replace(b"Content-Length: 0\r\n", b""), 0.1)
    (close,) = endpoint.outputs()
    assert isinstance(close, CloseConnection) and close.connection == 7


def test_two_endpoints_complete_an_options_transaction_in_memory() -> None:
    server = make_endpoint()
    client = make_endpoint()
    client.set_local_addresses(udp=("127.0.0.1", 5070), tcp=None)
    outgoing = parse_message(request("OPTIONS"))
    assert isinstance(outgoing, Request)
    client.send_request(outgoing, Peer(transport="UDP", address=("127.0.0.1", 5060)), 0.0)
    (transmit,) = client.outputs()
    assert isinstance(transmit, Transmit)
    server.receive_datagram(transmit.data, ("127.0.0.1", 5070), 0.01)
    (reply,) = server.outputs()
    assert isinstance(reply, Transmit)
    client.receive_datagram(reply.data, ("127.0.0.1", 5060), 0.02)
    event = client.next_event()
    assert isinstance(event, ResponseReceived)
    assert event.response.status == 200


def test_cancel_crossing_the_final_response_gets_200_and_no_event() -> None:
    endpoint = make_endpoint(methods=("INVITE",))
    endpoint.receive_datagram(request("INVITE"), PEER, 0.0)
    event = endpoint.next_event()
    assert isinstance(event, RequestReceived) and event.transaction_id is not None
    endpoint.respond(event.transaction_id, make_response(event.request, 200, to_tag="uas"), 0.05)
    assert only_response(endpoint)[0].status == 200
    endpoint.receive_datagram(request("CANCEL"), PEER, 0.1)
    ok, _ = only_response(endpoint)
    assert ok.status == 200 and ok.cseq.method == "CANCEL"
    assert ok.to_addr.tag == "uas"
    assert endpoint.next_event() is None


def test_completed_request_keeps_no_parse_and_retransmissions_go_back_to_the_source() -> None:
    endpoint = make_endpoint(methods=("MESSAGE",))
    source = ("192.0.2.7", 40000)  # behind NAT: Via says 127.0.0.1:5070, rport asked
    endpoint.receive_datagram(request("MESSAGE"), source, 0.0)
    event = endpoint.next_event()
    assert isinstance(event, RequestReceived) and event.transaction_id is not None
    assert event.peer.address == source
    endpoint.respond(event.transaction_id, make_response(event.request, 200, to_tag="x"), 0.1)
    first, peer = only_response(endpoint)
    assert peer.address == source
    # The completed transaction dropped the request's parses (fewer live objects for 32 s);
    # they come back on demand, the same values.
    assert event.request.headers._parsed is None
    assert event.request.top_via.received == "192.0.2.7"
    endpoint.receive_datagram(request("MESSAGE"), source, 0.5)  # a retransmission
    again, again_peer = only_response(endpoint)
    assert again.to_bytes() == first.to_bytes()
    assert again_peer is peer  # the destination found once is kept
    assert endpoint.next_event() is None


def test_datagrams_from_one_source_share_one_peer() -> None:
    endpoint = make_endpoint(methods=("MESSAGE",))
    endpoint.receive_datagram(request("MESSAGE"), PEER, 0.0)
    endpoint.receive_datagram(request("MESSAGE", branch="z9hG4bK-2", call_id="c2"), PEER, 0.0)
    other = ("127.0.0.1", 5071)
    endpoint.receive_datagram(request("MESSAGE", branch="z9hG4bK-3", call_id="c3"), other, 0.0)
    events = [endpoint.next_event() for _ in range(3)]
    assert all(isinstance(e, RequestReceived) for e in events)
    peers = [e.peer for e in events if isinstance(e, RequestReceived)]
    assert peers[0] is peers[1] and peers[0] == Peer(transport="UDP", address=PEER)
    assert peers[2].address == ("127.0.0.1", 5071)


def test_empty_datagram_is_ignored_like_a_keepalive() -> None:
    endpoint = make_endpoint()
    endpoint.receive_datagram(b"", PEER, 0.0)
    endpoint.receive_datagram(b"\n", PEER, 0.0)
    assert endpoint.outputs() == []
