"""Every RFC 4475 / RFC 5118 torture message through the endpoint: the answer on the wire.

The message-layer verdicts live in `test_torture.py`; here each datagram goes to a `SipEndpoint`
configured as the PBX will be (INVITE, REGISTER, BYE... handled by a TU) and we check what it
sends back: the expected status, 400 for malformed requests, nothing for dropped ones, and an
event for the TU (or 200 to OPTIONS) for the well-formed rest. Nothing may raise.
"""

from __future__ import annotations

import csv
import itertools

import pytest

from edge.sip.endpoint import EndpointConfig, SipEndpoint
from edge.sip.events import Event, RequestReceived, ResponseReceived, Transmit
from edge.sip.message import Response, parse_message
from tests.torture_expectations import (
    BAD_REQUEST,
    DROPPED,
    EXPECTED_STATUS,
    TORTURE_DIR,
)

# Statuses that need the registrar or the B2BUA (later issues): the endpoint passes these
# messages to the TU, which will answer them.
TU_DECIDES = {"invut.dat", "sdp01.dat", "unksm2.dat", "regaut01.dat", "regbadct.dat"}

with (TORTURE_DIR / "MANIFEST.tsv").open(newline="") as _manifest:
    NAMES = [row["name"] for row in csv.DictReader(_manifest, delimiter="\t")]


def answer(name: str) -> tuple[list[Response], list[Event]]:
    counter = itertools.count(1)
    endpoint = SipEndpoint(
        EndpointConfig(methods=("INVITE", "REGISTER", "BYE", "MESSAGE", "NEWMETHOD")),
        token=lambda: f"t{next(counter)}",
    )
    endpoint.receive_datagram((TORTURE_DIR / name).read_bytes(), ("127.0.0.1", 5070), 0.0)
    responses: list[Response] = []
    for output in endpoint.outputs():
        assert isinstance(output, Transmit)
        message = parse_message(output.data)
        assert isinstance(message, Response)
        responses.append(message)
    events: list[Event] = []
    while (event := endpoint.next_event()) is not None:
        events.append(event)
    return responses, events


@pytest.mark.parametrize("name", NAMES)
def test_torture_message_gets_the_right_answer(name: str) -> None:
    responses, events = answer(name)
    if name == "ipv6-in-sdp.dat":
        # RFC 5118's text declares Content-Length 268 for a 251-octet body: over UDP that is a
        # 400 (RFC 3261 §18.3, RFC 4475 §3.1.2.2), whatever the message meant to show.
        assert [(r.status, r.reason) for r in responses] == [
            (400, "Content-Length larger than the message")
        ]
    elif name in DROPPED:
        assert responses == [] and events == []
    elif name in BAD_REQUEST:
        assert [r.status for r in responses] == [400], name
        assert responses[0].reason not in ("", "Bad Request")  # the reason names the problem
        assert events == []
    elif name in EXPECTED_STATUS and name not in TU_DECIDES:
        assert [r.status for r in responses] == [EXPECTED_STATUS[name]]
        assert events == []
    else:
        # Well-formed: the TU gets it, or the core answers OPTIONS; responses to nobody drop.
        assert all(r.status < 300 for r in responses), [(r.status, r.reason) for r in responses]
        assert len(events) + len(responses) <= 1
        for event in events:
            if isinstance(event, ResponseReceived):
                # A 2xx to INVITE with no transaction goes to the TU (RFC 6026 §8.4).
                assert event.response.status // 100 == 2
                assert event.response.cseq.method == "INVITE"
            else:
                assert isinstance(event, RequestReceived)


def test_dblreq_processes_only_the_first_message() -> None:
    # RFC 4475 §3.1.1.8: the REGISTER is processed, the trailing INVITE is not.
    responses, events = answer("dblreq.dat")
    assert responses == []
    (event,) = events
    assert isinstance(event, RequestReceived) and event.request.method == "REGISTER"
    assert event.request.body == b""
