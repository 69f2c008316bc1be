"""The parser's one promise, checked with Hypothesis: any input either parses or raises
SipParseError (which the endpoint maps to 400 or a silent drop), never another exception.

Inputs are random bytes, SIP-shaped text built from the pieces parsers trip on, and mutations of
the vector and torture messages. A message that parses and validates must also re-parse from its
own serialization to the same fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.sip.address import parse_contact
from edge.sip.errors import SipParseError
from edge.sip.message import (
    Request,
    Response,
    parse_message,
    parse_message_head,
    validate_request,
    validate_response,
)

VECTORS = Path(__file__).parent / "vectors"
CORPUS: list[bytes] = [
    path.read_bytes()
    for path in sorted([*VECTORS.glob("sip/*.sip"), *VECTORS.glob("torture/*.dat")])
    if path.stat().st_size < 8_000  # the 60 KB vector would only slow the mutations down
]

# 300 examples per property, the same ones on every run (CI never fails by luck); for a long
# random hunt: SDPBX_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/test_fuzz.py
_EXAMPLES = int(os.environ.get("SDPBX_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=_EXAMPLES <= 300,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _accessors(message: Request | Response) -> list[Callable[[], object]]:
    return [
        lambda: message.call_id,
        lambda: message.cseq,
        lambda: message.vias,
        lambda: message.top_via,
        lambda: message.from_addr,
        lambda: message.to_addr,
        lambda: message.max_forwards,
        lambda: [parse_contact(value) for value in message.headers.get_all("Contact")],
    ]


def _only_parse_errors(action: Callable[[], object]) -> bool:
    """Run `action`; True when it succeeded, False when it raised SipParseError."""
    try:
        action()
    except SipParseError as error:
        assert error.reason
        assert 400 <= error.status <= 599
        return False
    return True


def check(data: bytes, *, stream: bool = False) -> None:
    """The invariant, for one input."""
    head = parse_message_head(data)  # never raises: a message or None
    assert head is None or isinstance(head, Request | Response)
    try:
        message = parse_message(data, stream=stream)
    except SipParseError as error:
        assert error.reason
        assert 400 <= error.status <= 599
        return
    for accessor in _accessors(message):
        _only_parse_errors(accessor)
    wire = message.to_bytes()
    if isinstance(message, Request):
        request = message
        valid = _only_parse_errors(lambda: validate_request(request))
    else:
        response = message
        valid = _only_parse_errors(lambda: validate_response(response))
    if not valid:
        return
    again = parse_message(wire)
    assert type(again) is type(message)
    assert list(again.headers)[: len(message.headers)] == [
        (name, value) for name, value in message.headers
    ] or _only_length_differs(message, again)
    assert again.body == message.body
    assert again.to_bytes() == wire


def _only_length_differs(a: Request | Response, b: Request | Response) -> bool:
    def others(message: Request | Response) -> list[tuple[str, str]]:
        return [(n, v) for n, v in message.headers if n.lower() not in ("content-length", "l")]

    return others(a) == others(b)


# --- random bytes ---------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=1500), st.booleans())
def test_any_bytes_parse_or_raise_sip_parse_error(data: bytes, stream: bool) -> None:
    check(data, stream=stream)


# --- SIP-shaped text ------------------------------------------------------------------------

_START_LINES = [
    "INVITE sip:bob@biloxi.example.com SIP/2.0", "SIP/2.0 200 OK", "SIP/2.0 180 Ringing",
    "INVITE sip:bob@biloxi.example.com SIP/2.0", "MESSAGE sip:[::1] SIP/2.0",
    "REGISTER sips:ss2.example.com SIP/2.0",
    "OPTIONS sip:[2001:db8::1]:5060 SIP/2.0", "ACK tel:+15551234 SIP/2.0",
    "BYE urn:x:y SIP/2.0", "X sip:a@b SIP/9.9", "INVITE sip:a@b;lr?h=v SIP/2.0",
    "SIP/2.0 200 OK", "SIP/2.0 100 ", "SIP/2.0 699 x y z", "sip/2.0 180 Ringing",
    "INVITE <sip:a@b> SIP/2.0", "INVITE sip:a@b", "SIP/2.0 1000 Big", "",
]
_NAMES = [
    "Via", "v", "VIA", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "cseq", "Contact", "m",
    "Max-Forwards", "Content-Length", "l", "Content-Type", "c", "Route", "Record-Route",
    "Require", "Supported", "k", "WWW-Authenticate", "Date", "X-Odd", "Bad Name", "",
]
_VALUE_ATOMS = [
    "SIP/2.0/UDP ", "SIP/2.0/TCP", "host.example.com", "192.0.2.1", "[2001:db8::1]", "[::",
    ":5060", ":99999", ";branch=z9hG4bK", "abc", ";received=", "1.2.3.4", ";rport", ";rport=",
    ";ttl=300", ";maddr=", ";tag=", "x", "<", ">", "sip:", "sips:", "tel:+1", "alice@", "@",
    '"', '\\"', "Alice", " ", "\t", ",", ";", "=", "?", "&", "%", "%00", "%zz", "*", "0", "70",
    "4294967296", "-1", "INVITE", "REGISTER", "\u00e9", "\udcff", "\r\n ", "\n", "\r",
]


_GOOD_VALUES = {
    "Via": "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-f1;rport",
    "From": '"Alice" <sip:alice@atlanta.example.com>;tag=f1',
    "To": "<sip:bob@biloxi.example.com>",
    "Call-ID": "fuzz-1@192.0.2.1",
    "CSeq": "1 INVITE",
    "Max-Forwards": "70",
    "Contact": "<sip:alice@192.0.2.1:5060;transport=udp>;expires=60",
}


@st.composite
def sip_texts(draw: st.DrawFn) -> bytes:
    """Mostly well-formed messages: the mandatory headers with good values, some of them
    damaged by an atom at a random place, plus random extra headers and framing."""
    start = draw(st.sampled_from(_START_LINES))
    lines = [start]
    method = "INVITE" if start[:4].upper() == "SIP/" else start.partition(" ")[0]
    good = {**_GOOD_VALUES, "CSeq": f"{draw(st.integers(0, 2**32))} {method}"}
    headers = [(name, value) for name, value in good.items() if draw(st.integers(0, 9))]
    for _ in range(draw(st.integers(0, 6))):
        atoms = draw(st.lists(st.sampled_from(_VALUE_ATOMS), max_size=8))
        headers.insert(
            draw(st.integers(0, len(headers))), (draw(st.sampled_from(_NAMES)), "".join(atoms))
        )
    for name, value in headers:
        if draw(st.integers(0, 3)) == 0:
            at = draw(st.integers(0, len(value)))
            value = value[:at] + draw(st.sampled_from(_VALUE_ATOMS)) + value[at:]
        separator = draw(st.sampled_from([": ", ": ", ":", " : ", ":\r\n "]))
        lines.append(name + separator + value)
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body) + draw(st.sampled_from([0, 0, 0, 1, -1]))}")
    head = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    end = draw(st.sampled_from([b"\r\n\r\n", b"\r\n\r\n", b"\r\n\r\n", b"\n\n", b""]))
    return head + end + body


@FUZZ
@given(sip_texts(), st.booleans())
def test_sip_shaped_text_parses_or_raises_sip_parse_error(data: bytes, stream: bool) -> None:
    check(data, stream=stream)


# --- mutations of real messages ---------------------------------------------------------------


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "duplicate", "lf"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[at:at] = draw(
                st.sampled_from([b"\x00", b"\r\n", b" ", b",", b";", b":", b"<", b'"', b"\xff",
                                 b"\r\n\r\n", b"%", b"\t", b"\r"])
            )
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "duplicate":
            end = data.find(b"\r\n", at)
            if end >= 0:
                start = data.rfind(b"\r\n", 0, at) + 2
                data[end:end] = b"\r\n" + data[start:end]
        elif kind == "lf":
            data[:] = data.replace(b"\r\n", b"\n", draw(st.integers(1, 3)))
    return bytes(data)


@FUZZ
@given(mutated_messages(), st.booleans())
def test_mutated_vectors_parse_or_raise_sip_parse_error(data: bytes, stream: bool) -> None:
    check(data, stream=stream)


def test_the_corpus_itself_satisfies_the_invariant() -> None:
    assert len(CORPUS) > 90
    for data in CORPUS:
        check(data)
