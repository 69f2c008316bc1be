"""SIP message parsing and serialization (`edge.sip.message`) against the vectors in
`tests/vectors/sip/` (sources in its SOURCES.md), plus datagram framing (RFC 3261 §18.3),
`make_response` (§8.2.6) and `new_request` (§8.1.1)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.sip.address import parse_name_addr
from edge.sip.errors import SipParseError
from edge.sip.message import (
    CSeq,
    Request,
    Response,
    make_response,
    new_request,
    parse_message,
    parse_message_head,
    validate_request,
    validate_response,
)
from edge.sip.uri import SipUri, parse_uri
from edge.sip.via import parse_via
from tests.sipmsg import request as raw_request

VECTORS = Path(__file__).parent / "vectors" / "sip"
TORTURE = Path(__file__).parent / "vectors" / "torture"

ViaFacts = tuple[str, str, int | None, str]  # transport, host (no brackets), port, branch


@dataclass(frozen=True, kw_only=True)
class Expect:
    """What a vector must parse to (written by hand from the message text, not from the parser)."""

    method: str | None = None  # requests
    uri: str | None = None
    status: int | None = None  # responses
    reason: str | None = None
    call_id: str
    cseq: tuple[int, str]
    vias: tuple[ViaFacts, ...]
    from_tag: str | None
    to_tag: str | None
    body_length: int
    # Already in canonical form (CRLF, no folding, Content-Length right): bytes round-trip.
    canonical: bool


_ATL_PROXY = ("UDP", "bigbox3.site3.atlanta.com", None, "z9hG4bK77ef4c2312983.1")
_PC33 = ("UDP", "pc33.atlanta.com", None, "z9hG4bKnashds8")
_SERVER10 = ("UDP", "server10.biloxi.com", None, "z9hG4bK4b43c2ff8.1")
_CALL_3261 = "a84b4c76e66710"
_REG_3665 = "1j9FpLxk3uxtm8tn@biloxi.example.com"
_BOB_TLS = ("TLS", "client.biloxi.example.com", 5061)
_CALL_31 = "3848276298220188511@atlanta.example.com"
_ALICE_TCP = ("TCP", "client.atlanta.example.com", 5060, "z9hG4bK74bf9")
_ALICE_UDP = ("UDP", "client.atlanta.example.com", 5060, "z9hG4bK74bf9")
_SS1_TCP = ("TCP", "ss1.atlanta.example.com", 5060, "z9hG4bK2d4790.1")
_SS2_TCP = ("TCP", "ss2.biloxi.example.com", 5060, "z9hG4bK721e4.1")
_SS1_UDP = ("UDP", "ss1.atlanta.example.com", 5060, "z9hG4bK2d4790.1")
_SS2_UDP = ("UDP", "ss2.biloxi.example.com", 5060, "z9hG4bK721e4.1")
_CALL_38 = "2xTb9vxSit55XU7p8@atlanta.example.com"

EXPECTED: dict[str, Expect] = {
    # RFC 3261 §24.1
    "rfc3261-24.1-f1-register.sip": Expect(
        method="REGISTER", uri="sip:registrar.biloxi.com", call_id="843817637684230@998sdasdh09",
        cseq=(1826, "REGISTER"), vias=(("UDP", "bobspc.biloxi.com", 5060, "z9hG4bKnashds7"),),
        from_tag="456248", to_tag=None, body_length=0, canonical=True,
    ),
    "rfc3261-24.1-f2-register-200.sip": Expect(
        status=200, reason="OK", call_id="843817637684230@998sdasdh09",
        cseq=(1826, "REGISTER"), vias=(("UDP", "bobspc.biloxi.com", 5060, "z9hG4bKnashds7"),),
        from_tag="456248", to_tag="2493k59kd", body_length=0, canonical=False,
    ),
    # RFC 3261 §24.2
    "rfc3261-24.2-f1-invite.sip": Expect(
        method="INVITE", uri="sip:bob@biloxi.com", call_id=_CALL_3261, cseq=(314159, "INVITE"),
        vias=(_PC33,), from_tag="1928301774", to_tag=None, body_length=148, canonical=True,
    ),
    "rfc3261-24.2-f2-100-trying.sip": Expect(
        status=100, reason="Trying", call_id=_CALL_3261, cseq=(314159, "INVITE"), vias=(_PC33,),
        from_tag="1928301774", to_tag=None, body_length=0, canonical=False,
    ),
    "rfc3261-24.2-f5-invite-3via.sip": Expect(
        method="INVITE", uri="sip:bob@192.0.2.4", call_id=_CALL_3261, cseq=(314159, "INVITE"),
        vias=(_SERVER10, _ATL_PROXY, _PC33), from_tag="1928301774", to_tag=None,
        body_length=148, canonical=False,
    ),
    "rfc3261-24.2-f6-180-ringing.sip": Expect(
        status=180, reason="Ringing", call_id=_CALL_3261, cseq=(314159, "INVITE"),
        vias=(_SERVER10, _ATL_PROXY, _PC33), from_tag="1928301774", to_tag="a6c85cf",
        body_length=0, canonical=False,
    ),
    "rfc3261-24.2-f9-200-ok.sip": Expect(
        status=200, reason="OK", call_id=_CALL_3261, cseq=(314159, "INVITE"),
        vias=(_SERVER10, _ATL_PROXY, _PC33), from_tag="1928301774", to_tag="a6c85cf",
        body_length=129, canonical=False,
    ),
    "rfc3261-24.2-f12-ack.sip": Expect(
        method="ACK", uri="sip:bob@192.0.2.4", call_id=_CALL_3261, cseq=(314159, "ACK"),
        vias=(("UDP", "pc33.atlanta.com", None, "z9hG4bKnashds9"),), from_tag="1928301774",
        to_tag="a6c85cf", body_length=0, canonical=True,
    ),
    "rfc3261-24.2-f13-bye.sip": Expect(
        method="BYE", uri="sip:alice@pc33.atlanta.com", call_id=_CALL_3261, cseq=(231, "BYE"),
        vias=(("UDP", "192.0.2.4", None, "z9hG4bKnashds10"),), from_tag="a6c85cf",
        to_tag="1928301774", body_length=0, canonical=True,
    ),
    "rfc3261-24.2-f14-bye-200.sip": Expect(
        status=200, reason="OK", call_id=_CALL_3261, cseq=(231, "BYE"),
        vias=(("UDP", "192.0.2.4", None, "z9hG4bKnashds10"),), from_tag="a6c85cf",
        to_tag="1928301774", body_length=0, canonical=True,
    ),
    # RFC 3665 §2.1
    "rfc3665-2.1-f1-register.sip": Expect(
        method="REGISTER", uri="sips:ss2.biloxi.example.com", call_id=_REG_3665,
        cseq=(1, "REGISTER"), vias=((*_BOB_TLS, "z9hG4bKnashds7"),), from_tag="a73kszlfl",
        to_tag=None, body_length=0, canonical=True,
    ),
    "rfc3665-2.1-f2-401.sip": Expect(
        status=401, reason="Unauthorized", call_id=_REG_3665, cseq=(1, "REGISTER"),
        vias=((*_BOB_TLS, "z9hG4bKnashds7"),), from_tag="a73kszlfl", to_tag="1410948204",
        body_length=0, canonical=False,
    ),
    "rfc3665-2.1-f3-register-auth.sip": Expect(
        method="REGISTER", uri="sips:ss2.biloxi.example.com", call_id=_REG_3665,
        cseq=(2, "REGISTER"), vias=((*_BOB_TLS, "z9hG4bKnashd92"),), from_tag="ja743ks76zlflH",
        to_tag=None, body_length=0, canonical=False,
    ),
    "rfc3665-2.1-f4-200.sip": Expect(
        status=200, reason="OK", call_id=_REG_3665, cseq=(2, "REGISTER"),
        vias=((*_BOB_TLS, "z9hG4bKnashd92"),), from_tag="ja743ks76zlflH", to_tag="37GkEhwl6",
        body_length=0, canonical=False,
    ),
    # RFC 3665 §3.1
    "rfc3665-3.1-f1-invite.sip": Expect(
        method="INVITE", uri="sip:bob@biloxi.example.com", call_id=_CALL_31, cseq=(1, "INVITE"),
        vias=(_ALICE_TCP,), from_tag="9fxced76sl", to_tag=None, body_length=151, canonical=True,
    ),
    "rfc3665-3.1-f2-180-ringing.sip": Expect(
        status=180, reason="Ringing", call_id=_CALL_31, cseq=(1, "INVITE"), vias=(_ALICE_TCP,),
        from_tag="9fxced76sl", to_tag="8321234356", body_length=0, canonical=False,
    ),
    "rfc3665-3.1-f3-200-ok.sip": Expect(
        status=200, reason="OK", call_id=_CALL_31, cseq=(1, "INVITE"), vias=(_ALICE_TCP,),
        from_tag="9fxced76sl", to_tag="8321234356", body_length=147, canonical=False,
    ),
    "rfc3665-3.1-f4-ack.sip": Expect(
        method="ACK", uri="sip:bob@client.biloxi.example.com", call_id=_CALL_31,
        cseq=(1, "ACK"), vias=(("TCP", "client.atlanta.example.com", 5060, "z9hG4bK74bd5"),),
        from_tag="9fxced76sl", to_tag="8321234356", body_length=0, canonical=True,
    ),
    "rfc3665-3.1-f5-bye.sip": Expect(
        method="BYE", uri="sip:alice@client.atlanta.example.com", call_id=_CALL_31,
        cseq=(1, "BYE"), vias=(("TCP", "client.biloxi.example.com", 5060, "z9hG4bKnashds7"),),
        from_tag="8321234356", to_tag="9fxced76sl", body_length=0, canonical=True,
    ),
    "rfc3665-3.1-f6-bye-200.sip": Expect(
        status=200, reason="OK", call_id=_CALL_31, cseq=(1, "BYE"),
        vias=(("TCP", "client.biloxi.example.com", 5060, "z9hG4bKnashds7"),),
        from_tag="8321234356", to_tag="9fxced76sl", body_length=0, canonical=False,
    ),
    # RFC 3665 §3.2
    "rfc3665-3.2-f4-invite-proxy-auth.sip": Expect(
        method="INVITE", uri="sip:bob@biloxi.example.com", call_id=_CALL_31, cseq=(2, "INVITE"),
        vias=(_ALICE_TCP,), from_tag="9fxced76sl", to_tag=None, body_length=151, canonical=False,
    ),
    "rfc3665-3.2-f7-invite-3via.sip": Expect(
        method="INVITE", uri="sip:bob@client.biloxi.example.com", call_id=_CALL_31,
        cseq=(2, "INVITE"), vias=(_SS2_TCP, _SS1_TCP, _ALICE_TCP), from_tag="9fxced76sl",
        to_tag=None, body_length=151, canonical=False,
    ),
    "rfc3665-3.2-f12-200-ok.sip": Expect(
        status=200, reason="OK", call_id=_CALL_31, cseq=(2, "INVITE"),
        vias=(_SS2_TCP, _SS1_TCP, _ALICE_TCP), from_tag="9fxced76sl", to_tag="314159",
        body_length=147, canonical=False,
    ),
    # RFC 3665 §3.8 (CANCEL)
    "rfc3665-3.8-f9-cancel.sip": Expect(
        method="CANCEL", uri="sip:bob@biloxi.example.com", call_id=_CALL_38, cseq=(1, "CANCEL"),
        vias=(_ALICE_UDP,), from_tag="9fxced76sl", to_tag=None, body_length=0, canonical=True,
    ),
    "rfc3665-3.8-f10-cancel-200.sip": Expect(
        status=200, reason="OK", call_id=_CALL_38, cseq=(1, "CANCEL"), vias=(_ALICE_UDP,),
        from_tag="9fxced76sl", to_tag=None, body_length=0, canonical=False,
    ),
    "rfc3665-3.8-f15-487.sip": Expect(
        status=487, reason="Request Terminated", call_id=_CALL_38, cseq=(1, "INVITE"),
        vias=(_SS2_UDP, _SS1_UDP, _ALICE_UDP), from_tag="9fxced76sl", to_tag="314159",
        body_length=0, canonical=False,
    ),
    "rfc3665-3.8-f16-ack.sip": Expect(
        method="ACK", uri="sip:bob@client.biloxi.example.com", call_id=_CALL_38, cseq=(1, "ACK"),
        vias=(_SS2_UDP,), from_tag="9fxced76sl", to_tag="314159", body_length=0, canonical=True,
    ),
    "rfc3665-3.8-f19-487-no-length.sip": Expect(
        status=487, reason="Request Terminated", call_id=_CALL_38, cseq=(1, "INVITE"),
        vias=(_ALICE_UDP,), from_tag="9fxced76sl", to_tag="314159", body_length=0,
        canonical=False,
    ),
    # RFC 3665 §3.9 (busy)
    "rfc3665-3.9-f1-invite.sip": Expect(
        method="INVITE", uri="sip:bob@biloxi.example.com", call_id=_CALL_38, cseq=(1, "INVITE"),
        vias=(_ALICE_TCP,), from_tag="9fxced76sl", to_tag=None, body_length=151, canonical=False,
    ),
    "rfc3665-3.9-f6-486.sip": Expect(
        status=486, reason="Busy Here", call_id=_CALL_38, cseq=(1, "INVITE"),
        vias=(_SS2_TCP, _SS1_TCP, _ALICE_TCP), from_tag="9fxced76sl", to_tag="314159",
        body_length=0, canonical=False,
    ),
    "rfc3665-3.9-f7-ack.sip": Expect(
        method="ACK", uri="sip:bob@client.biloxi.example.com", call_id=_CALL_38, cseq=(1, "ACK"),
        vias=(_SS2_TCP,), from_tag="9fxced76sl", to_tag="314159", body_length=0, canonical=True,
    ),
    "rfc3665-3.9-f10-486.sip": Expect(
        status=486, reason="Busy Here", call_id=_CALL_38, cseq=(1, "INVITE"), vias=(_ALICE_TCP,),
        from_tag="9fxced76sl", to_tag="314159", body_length=0, canonical=False,
    ),
    "rfc3665-3.9-f11-ack.sip": Expect(
        method="ACK", uri="sip:bob@biloxi.example.com", call_id=_CALL_38, cseq=(1, "ACK"),
        vias=(_ALICE_TCP,), from_tag="9fxced76sl", to_tag="314159", body_length=0,
        canonical=False,
    ),
    # Our own
    "compact-forms.sip": Expect(
        method="SUBSCRIBE", uri="sip:bob@biloxi.example.com", call_id="compact-1@192.0.2.10",
        cseq=(7, "SUBSCRIBE"), vias=(("UDP", "192.0.2.10", 5060, "z9hG4bK-compact-1"),),
        from_tag="cmp1", to_tag=None, body_length=12, canonical=True,
    ),
    "folded-headers.sip": Expect(
        method="OPTIONS", uri="sip:carol@chicago.example.com", call_id="fold-1@192.0.2.10",
        cseq=(1, "OPTIONS"), vias=(("UDP", "192.0.2.10", 5060, "z9hG4bK-fold-1"),),
        from_tag="fold1", to_tag=None, body_length=0, canonical=False,
    ),
    "via-multi-one-line.sip": Expect(
        method="OPTIONS", uri="sip:carol@chicago.example.com",
        call_id="via-one-line-1@192.0.2.10", cseq=(1, "OPTIONS"),
        vias=(
            ("UDP", "p3.chicago.example.com", None, "z9hG4bK-3"),
            ("TCP", "p2.biloxi.example.com", 5061, "z9hG4bK-2"),
            ("UDP", "192.0.2.10", 5060, "z9hG4bK-1"),
        ),
        from_tag="vml1", to_tag=None, body_length=0, canonical=True,
    ),
    "via-multi-mixed.sip": Expect(
        status=200, reason="OK", call_id="via-mixed-1@192.0.2.10", cseq=(4, "OPTIONS"),
        vias=(
            ("UDP", "a.example.com", None, "z9hG4bK-A"),
            ("UDP", "b.example.com", None, "z9hG4bK-B"),
            ("TCP", "c.example.com", 5070, "z9hG4bK-C"),
            ("TLS", "d.example.com", 5061, "z9hG4bK-D"),
            ("UDP", "192.0.2.10", None, "z9hG4bK-E"),
        ),
        from_tag="vmm1", to_tag="vmm2", body_length=0, canonical=False,
    ),
    "ipv6.sip": Expect(
        method="INVITE", uri="sip:bob@[2001:db8::20]:5070", call_id="v6-1@2001:db8::10",
        cseq=(1, "INVITE"), vias=(("UDP", "2001:db8::10", 5060, "z9hG4bK-v6-1"),),
        from_tag="v6a", to_tag=None, body_length=159, canonical=True,
    ),
    "body-nul.sip": Expect(
        method="MESSAGE", uri="sip:bob@biloxi.example.com",
        call_id="body-nul-1@atlanta.example.com",
        cseq=(1, "MESSAGE"), vias=(("TCP", "client.atlanta.example.com", 5060, "z9hG4bK-nul-1"),),
        from_tag="nul1", to_tag=None, body_length=287, canonical=True,
    ),
    "body-lf.sip": Expect(
        method="MESSAGE", uri="sip:bob@biloxi.example.com", call_id="body-lf-1@atlanta.example.com",
        cseq=(1, "MESSAGE"), vias=(("UDP", "client.atlanta.example.com", 5060, "z9hG4bK-lf-1"),),
        from_tag="lf1", to_tag=None, body_length=57, canonical=True,
    ),
    "huge-60k.sip": Expect(
        method="INVITE", uri="sip:bob@biloxi.example.com", call_id="huge-1@atlanta.example.com",
        cseq=(1, "INVITE"), vias=(("TCP", "client.atlanta.example.com", 5060, "z9hG4bK-huge-1"),),
        from_tag="huge1", to_tag=None, body_length=45031, canonical=True,
    ),
    "lowercase-names.sip": Expect(
        method="INVITE", uri="sip:bob@biloxi.example.com", call_id="lower-1@atlanta.example.com",
        cseq=(1, "INVITE"),
        vias=(("UDP", "client.atlanta.example.com", 5060, "z9hG4bK-lower-1"),),
        from_tag="low1", to_tag=None, body_length=151, canonical=True,
    ),
    "empty-reason.sip": Expect(
        status=183, reason="", call_id="empty-reason-1@atlanta.example.com", cseq=(1, "INVITE"),
        vias=(("UDP", "client.atlanta.example.com", 5060, "z9hG4bK-er-1"),),
        from_tag="er1", to_tag="er2", body_length=0, canonical=True,
    ),
    "unknown-headers.sip": Expect(
        method="OPTIONS", uri="sip:carol@chicago.example.com", call_id="unknown-1@192.0.2.10",
        cseq=(1, "OPTIONS"), vias=(("UDP", "192.0.2.10", 5060, "z9hG4bK-unk-1"),),
        from_tag="unk1", to_tag=None, body_length=0, canonical=True,
    ),
    "leading-crlf.sip": Expect(
        method="OPTIONS", uri="sip:carol@chicago.example.com",
        call_id="leading-crlf-1@192.0.2.10", cseq=(1, "OPTIONS"),
        vias=(("UDP", "192.0.2.10", 5060, "z9hG4bK-lead-1"),),
        from_tag="lead1", to_tag=None, body_length=0, canonical=False,
    ),
}

NAMES = sorted(EXPECTED)
CANONICAL = [name for name in NAMES if EXPECTED[name].canonical]


def load(name: str) -> bytes:
    return (VECTORS / name).read_bytes()


def parse_request(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def parse_response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def _declared_length(data: bytes) -> int | None:
    match = re.search(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*(\d+)\r\n", data, re.IGNORECASE)
    return None if match is None else int(match.group(1))


# --- the vector set itself -------------------------------------------------------------------


def test_every_vector_file_has_expectations_and_a_source() -> None:
    files = sorted(path.name for path in VECTORS.glob("*.sip"))
    assert files == NAMES
    sources = (VECTORS / "SOURCES.md").read_text(encoding="utf-8")
    for name in files:
        assert f"`{name}`" in sources, f"{name} is not listed in SOURCES.md"


@pytest.mark.parametrize("name", NAMES)
def test_vectors_use_crlf_line_ends_in_the_head(name: str) -> None:
    data = load(name)
    head = data[: data.index(b"\r\n\r\n")]
    assert b"\n" not in head.replace(b"\r\n", b"")
    assert b"\r" not in head.replace(b"\r\n", b"")


# --- fields ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_vector_parses_with_expected_fields(name: str) -> None:
    expect = EXPECTED[name]
    data = load(name)
    message = parse_message(data)
    if expect.method is not None:
        assert isinstance(message, Request)
        assert message.method == expect.method
        assert message.uri == expect.uri
        assert message.version == "SIP/2.0"
        validate_request(message)
    else:
        assert isinstance(message, Response)
        assert message.status == expect.status
        assert message.reason == expect.reason
        validate_response(message)
    assert message.call_id == expect.call_id
    assert message.cseq == CSeq(*expect.cseq)
    vias = message.vias
    assert [(v.transport, v.host, v.port, v.branch) for v in vias] == list(expect.vias)
    assert message.top_via.branch == expect.vias[0][3]
    assert message.from_addr.tag == expect.from_tag
    assert message.to_addr.tag == expect.to_tag
    # Body framing: exactly Content-Length octets after the empty line (§18.3, §20.14).
    assert len(message.body) == expect.body_length
    start = data.index(b"\r\n\r\n") + 4
    assert message.body == data[start : start + expect.body_length]
    declared = _declared_length(data)
    assert declared is None or declared == expect.body_length


# --- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CANONICAL)
def test_canonical_vectors_round_trip_byte_for_byte(name: str) -> None:
    data = load(name)
    assert parse_message(data).to_bytes() == data


def _same_message(a: Request | Response, b: Request | Response) -> None:
    assert type(a) is type(b)
    if isinstance(a, Request):
        assert isinstance(b, Request)
        assert (a.method, a.uri, a.version) == (b.method, b.uri, b.version)
    else:
        assert isinstance(b, Response)
        assert (a.status, a.reason, a.version) == (b.status, b.reason, b.version)
    assert a.body == b.body

    def fields(message: Request | Response) -> list[tuple[str, str]]:
        return [(n, v) for n, v in message.headers if n.lower() not in ("content-length", "l")]

    assert fields(a) == fields(b)
    assert a.call_id == b.call_id
    assert a.cseq == b.cseq
    assert [str(v) for v in a.vias] == [str(v) for v in b.vias]
    assert str(a.from_addr) == str(b.from_addr)
    assert str(a.to_addr) == str(b.to_addr)


@pytest.mark.parametrize("name", NAMES)
def test_reparse_of_serialization_equals_parse(name: str) -> None:
    first = parse_message(load(name))
    wire = first.to_bytes()
    second = parse_message(wire)
    _same_message(first, second)
    # The canonical form is a fixed point and always carries the right Content-Length.
    assert second.to_bytes() == wire
    assert _declared_length(wire) == len(first.body)
    assert b"\r\n " not in wire[: wire.index(b"\r\n\r\n")]  # no folding on output


def test_folded_headers_are_unfolded_to_single_values() -> None:
    message = parse_request(load("folded-headers.sip"))
    headers = message.headers
    assert headers.get("Via") == "SIP/2.0/UDP 192.0.2.10:5060 ;branch=z9hG4bK-fold-1"
    assert headers.get("Max-Forwards") == "70"
    assert message.max_forwards == 70
    assert headers.get("From") == "Alice <sip:alice@atlanta.example.com> ;tag=fold1"
    assert message.from_addr.display_name == "Alice"
    assert headers.get("CSeq") == "1 OPTIONS"
    assert headers.get("Subject") == "one two three"
    assert headers.get_all("Accept") == ["application/sdp", "text/plain"]
    assert headers.get("Call-ID") == "fold-1@192.0.2.10"  # "Call-ID :" (LWS before HCOLON)


def test_whitespace_only_continuation_line_adds_nothing() -> None:
    # Found by tests/test_fuzz.py: "Subject: hi" CRLF SP CRLF unfolded to "hi " (LWS is not
    # part of the value, §7.3.1), so the serialization was not a fixed point.
    data = load("rfc3665-3.8-f9-cancel.sip").replace(
        b"CSeq: 1 CANCEL\r\n", b"CSeq: 1 CANCEL\r\nSubject: hi\r\n \r\n\t\r\n"
    )
    message = parse_request(data)
    assert message.headers.get("Subject") == "hi"
    assert parse_request(message.to_bytes()).headers.get("Subject") == "hi"


def test_rfc_folded_auth_headers_keep_their_commas() -> None:
    challenge = parse_response(load("rfc3665-2.1-f2-401.sip"))
    assert challenge.headers.get_all("WWW-Authenticate") == [
        'Digest realm="atlanta.example.com", qop="auth", '
        'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", opaque="", stale=FALSE, algorithm=MD5'
    ]
    invite = parse_request(load("rfc3665-3.2-f4-invite-proxy-auth.sip"))
    credentials = invite.headers.get("Proxy-Authorization")
    assert credentials is not None
    assert credentials.startswith('Digest username="alice", realm="atlanta.example.com", ')
    assert credentials.endswith('response="42ce3cef44b22f50c6a6071bc8"')


def test_compact_forms_everywhere() -> None:
    data = load("compact-forms.sip")
    message = parse_request(data)
    headers = message.headers
    assert headers.get("Contact") == "<sip:alice@192.0.2.10:5060>"
    assert headers.get_all("Supported") == ["eventlist", "100rel"]
    assert headers.get("Event") == "presence"
    assert headers.get_all("Allow-Events") == ["presence", "dialog"]
    assert headers.get("Subject") == "compact forms everywhere"
    assert headers.get("Refer-To") == "<sip:carol@chicago.example.com>"
    assert headers.get("Content-Type") == "text/plain"
    assert headers.get_all("Content-Encoding") == ["identity"]
    assert message.body == b"hello, world"
    assert message.from_addr.display_name == "Alice"
    assert message.top_via.rport_requested
    # Names go back out as written (compact stays compact).
    assert [name for name, _ in headers][:4] == ["v", "f", "t", "i"]


def test_lowercase_header_names_are_found_and_kept() -> None:
    message = parse_request(load("lowercase-names.sip"))
    assert message.headers.get("Call-ID") == "lower-1@atlanta.example.com"
    assert message.headers.get("Content-Type") == "application/sdp"
    assert message.max_forwards == 70
    assert next(iter(message.headers)) == (
        "via", "SIP/2.0/UDP client.atlanta.example.com:5060;branch=z9hG4bK-lower-1",
    )


def test_multiple_via_values_in_wire_order() -> None:
    mixed = parse_response(load("via-multi-mixed.sip"))
    assert len(mixed.headers.get_lines("Via")) == 3
    assert [v.branch for v in mixed.vias] == [f"z9hG4bK-{x}" for x in "ABCDE"]
    bottom = mixed.vias[-1]
    assert (bottom.received, bottom.rport) == ("198.51.100.7", 40000)
    one_line = parse_request(load("via-multi-one-line.sip"))
    assert len(one_line.headers.get_lines("Via")) == 1
    assert one_line.vias[1].received == "192.0.2.22"
    assert one_line.vias[2].rport == 5060


def test_ipv6_references() -> None:
    message = parse_request(load("ipv6.sip"))
    uri = parse_uri(message.uri)
    assert isinstance(uri, SipUri)
    assert (uri.host, uri.port) == ("2001:db8::20", 5070)
    via = message.top_via
    assert via.sent_by == "[2001:db8::10]:5060"
    assert via.received == "2001:db8::9"
    assert via.rport == 5062
    contact = parse_name_addr(message.headers.get("Contact") or "")
    assert isinstance(contact.uri, SipUri)
    assert (contact.uri.host, contact.uri.port, contact.uri.transport) == (
        "2001:db8::10", 5060, "udp",
    )
    assert b"c=IN IP6 2001:db8::10\r\n" in message.body


def test_binary_body_is_framed_by_content_length_only() -> None:
    data = load("body-nul.sip")
    message = parse_request(data)
    assert message.body.count(b"\x00") == 5
    assert b"\r\n\r\nnot a header: x\r\n" in message.body
    assert message.body.endswith(b"\xff\xfe\x00")
    assert bytes(range(256)) in message.body
    assert "not a header" not in message.headers


def test_body_with_bare_lf_and_empty_lines_is_kept_verbatim() -> None:
    message = parse_request(load("body-lf.sip"))
    assert message.body == (
        b"line one\nline two\n\nline four after an empty line\n\r\n\r\nend\n"
    )


def test_huge_message_is_parsed_whole() -> None:
    data = load("huge-60k.sip")
    assert 58_000 < len(data) < 65_535  # legal for UDP
    message = parse_request(data)
    assert len(message.headers.get_lines("X-Pad-199")) == 1
    assert message.headers.get("X-Pad-000") == "p" * 60 + ";n=0"
    assert len(message.headers) == 7 + 200 + 2
    assert message.body.endswith(b"a=x-filler-45-21:" + b"f" * 24 + b"\r\n")


def test_empty_reason_phrase() -> None:
    response = parse_response(load("empty-reason.sip"))
    assert (response.status, response.reason) == (183, "")
    assert response.to_bytes().startswith(b"SIP/2.0 183 \r\n")


def test_unknown_headers_come_back_verbatim() -> None:
    data = load("unknown-headers.sip")
    message = parse_request(data)
    headers = message.headers
    assert headers.get("X-Odd") == ";;,,;;,;"
    assert headers.get("X-Quoted") == '"a, b \\" c" <sip:x@y.example.com;p=1,2>, plain'
    assert headers.get("X-Angle") == "<,,,>,<;;;>"
    assert headers.get("X-Utf8") == "Grüße — ünïcödé ✓"
    assert headers.get("X-Tab") == "a\tb  c\t d"
    assert headers.get("X-Empty") == ""
    assert headers.get("X-Equals") == "==a=b=="
    assert headers.get("!bang%weird.name_*+`'~") == "token-chars-only name"
    out = message.to_bytes()
    for line in data.split(b"\r\n")[7:15]:
        assert line + b"\r\n" in out


def test_leading_crlf_before_the_start_line_is_ignored() -> None:
    data = load("leading-crlf.sip")
    message = parse_request(data)
    assert message.to_bytes() == data[4:]


def test_rfc3665_busy_response_with_two_spaces_after_the_version_is_rejected() -> None:
    # RFC 3665 §3.9 prints "SIP/2.0  486 Busy Here" (two SP): not a Status-Line (§25.1).
    # The vector fixes it (see SOURCES.md); the printed form must be refused, not misread.
    data = load("rfc3665-3.9-f6-486.sip").replace(b"SIP/2.0 486", b"SIP/2.0  486", 1)
    with pytest.raises(SipParseError, match="Status-Line"):
        parse_message(data)


# --- datagram rules (RFC 3261 §18.3) ---------------------------------------------------------


def test_trailing_octets_after_the_declared_body_are_discarded() -> None:
    data = (TORTURE / "dblreq.dat").read_bytes()  # RFC 4475 §3.1.1.8
    message = parse_request(data)
    assert message.method == "REGISTER"
    assert message.body == b""
    assert b"INVITE" not in message.to_bytes()
    invite = load("rfc3665-3.1-f1-invite.sip")
    padded = parse_request(invite + b"\r\nGARBAGE after the body\x00")
    assert len(padded.body) == 151
    assert padded.to_bytes() == invite


def test_body_shorter_than_content_length_is_a_parse_error() -> None:
    invite = load("rfc3665-3.1-f1-invite.sip")
    with pytest.raises(SipParseError, match="Content-Length") as caught:
        parse_message(invite[:-10])
    assert caught.value.status == 400


def test_no_content_length_over_udp_means_the_rest_of_the_datagram() -> None:
    data = load("body-lf.sip")
    without = data.replace(b"Content-Length: 57\r\n", b"")
    assert without != data
    message = parse_request(without)
    assert len(message.body) == 57
    assert message.body == parse_request(data).body
    # Serializing adds the Content-Length the peer left out.
    assert b"\r\nContent-Length: 57\r\n\r\n" in message.to_bytes()
    # On a stream the framer has already cut the message: no Content-Length, no body.
    assert parse_message(without, stream=True).body == b""


def test_rfc3665_response_without_content_length() -> None:
    response = parse_response(load("rfc3665-3.8-f19-487-no-length.sip"))
    assert "Content-Length" not in response.headers
    assert response.body == b""
    assert response.to_bytes().endswith(b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


@pytest.mark.parametrize("value", [b"-1", b"five", b"1e3", b"\xd9\xa3", b"", b"12 13"])
def test_malformed_content_length_is_a_parse_error(value: bytes) -> None:
    cancel = load("rfc3665-3.8-f9-cancel.sip")
    data = cancel.replace(b"Content-Length: 0", b"Content-Length: " + value)
    with pytest.raises(SipParseError, match="Content-Length"):
        parse_message(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK-1\r\n",
        b"OPTIONS sip:a@b SIP/2.0\n\n",
        b"OPTIONS sip:a@b\r\n\r\n",
        b"OPTIONS  sip:a@b SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0 \r\n\r\n",
        b"OPTIONS sip:a@b HTTP/1.1\r\n\r\n",
        b"SIP/2.0 99 Too Small\r\n\r\n",
        b"SIP/2.0 700 Too Big\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        b"SIP/2.0\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nNo colon here\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n continuation first\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\nBad Name: x\r\n\r\n",
        b"OPTIONS sip:a@b SIP/2.0\r\n: no name\r\n\r\n",
        b"OPTIONS <sip:a@b> SIP/2.0\r\n\r\n",
    ],
)
def test_malformed_messages_raise_sip_parse_error(data: bytes) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_message(data)
    assert caught.value.status == 400
    assert caught.value.reason


def test_parse_message_head_reads_a_message_whose_body_is_short() -> None:
    data = (TORTURE / "clerr.dat").read_bytes()  # RFC 4475 §3.1.2.2
    with pytest.raises(SipParseError):
        parse_message(data)
    head = parse_message_head(data)
    assert isinstance(head, Request)
    assert head.method == "INVITE"
    assert head.top_via.branch is not None
    assert parse_message_head(b"\x00\x01garbage") is None


# --- header accessors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1 INVITE", CSeq(1, "INVITE")), ("0009 INVITE", CSeq(9, "INVITE")),
     ("4294967295 BYE", CSeq(2**32 - 1, "BYE")), ("  7   ACK ", CSeq(7, "ACK"))],
)
def test_cseq_parse(value: str, expected: CSeq) -> None:
    assert CSeq.parse(value) == expected


@pytest.mark.parametrize(
    "value", ["", "INVITE", "1", "-1 INVITE", "4294967296 INVITE", "1 INV ITE", "x1 INVITE",
              "1 <INVITE>", "\u0661 INVITE"],
)
def test_cseq_parse_rejects(value: str) -> None:
    with pytest.raises(SipParseError, match="CSeq"):
        CSeq.parse(value)


@pytest.mark.parametrize(("value", "expected"), [("70", 70), ("0", 0), ("255", 255), ("0068", 68)])
def test_max_forwards(value: str, expected: int) -> None:
    # "0068" is RFC 4475 §3.1.1.1 (wsinv.dat): leading zeros are legal (1*DIGIT).
    data = raw_request(extra=[]).replace(b"Max-Forwards: 70", b"Max-Forwards: " + value.encode())
    assert parse_request(data).max_forwards == expected


@pytest.mark.parametrize("value", ["256", "-1", "seventy", "7 0", "99999999999999999999"])
def test_max_forwards_rejects(value: str) -> None:
    data = raw_request().replace(b"Max-Forwards: 70", b"Max-Forwards: " + value.encode())
    with pytest.raises(SipParseError, match="Max-Forwards"):
        parse_request(data).max_forwards  # noqa: B018


@pytest.mark.parametrize("name", ["Call-ID", "CSeq", "Via", "From", "To"])
def test_missing_mandatory_header_names_itself(name: str) -> None:
    data = load("rfc3665-3.1-f4-ack.sip")
    lines = [line for line in data.split(b"\r\n") if not line.startswith(name.encode() + b":")]
    request = parse_request(b"\r\n".join(lines))
    with pytest.raises(SipParseError, match=f"missing {name} header"):
        validate_request(request)


# --- make_response (RFC 3261 §8.2.6) ----------------------------------------------------------


def test_make_response_copies_vias_in_order_and_adds_a_to_tag() -> None:
    invite = parse_request(load("rfc3261-24.2-f5-invite-3via.sip"))
    response = make_response(invite, 180, to_tag="b0b-tag")
    assert (response.status, response.reason) == (180, "Ringing")
    assert response.headers.get_lines("Via") == invite.headers.get_lines("Via")
    assert [v.branch for v in response.vias] == [v.branch for v in invite.vias]
    assert response.headers.get("From") == invite.headers.get("From")
    assert response.call_id == invite.call_id
    assert response.cseq == invite.cseq
    assert response.to_addr.tag == "b0b-tag"
    assert response.to_addr.uri == invite.to_addr.uri
    assert response.body == b""
    wire = response.to_bytes()
    again = parse_response(wire)
    validate_response(again)
    assert again.to_addr.tag == "b0b-tag"
    assert [name for name, _ in again.headers] == [
        "Via", "Via", "Via", "From", "To", "Call-ID", "CSeq", "Content-Length",
    ]


def test_make_response_keeps_a_comma_list_via_line() -> None:
    request = parse_request(load("via-multi-one-line.sip"))
    response = make_response(request, 200, to_tag="x")
    assert [v.branch for v in response.vias] == ["z9hG4bK-3", "z9hG4bK-2", "z9hG4bK-1"]


def test_make_response_100_has_no_to_tag_and_copies_timestamp() -> None:
    request = parse_request(raw_request("INVITE", extra=["Timestamp: 54.2 0.1"]))
    trying = make_response(request, 100, to_tag="never")
    assert trying.reason == "Trying"
    assert trying.to_addr.tag is None
    assert trying.headers.get("Timestamp") == "54.2 0.1"  # §8.2.6.1
    ringing = make_response(request, 180, to_tag="t1")
    assert ringing.to_addr.tag == "t1"


def test_make_response_keeps_an_existing_to_tag() -> None:
    bye = parse_request(load("rfc3665-3.1-f5-bye.sip"))
    ok = make_response(bye, 200, to_tag="other")
    assert ok.to_addr.tag == "9fxced76sl"
    assert ok.headers.get("To") == bye.headers.get("To")


@pytest.mark.parametrize(
    "to",
    [
        "<sip:bob@biloxi.example.com;tag=uri-param>",  # a URI parameter, not the To tag
        '"a;tag=b" <sip:bob@biloxi.example.com>',  # inside the display name
    ],
)
def test_make_response_adds_to_tag_when_tag_text_is_not_a_header_param(to: str) -> None:
    data = raw_request("INVITE").replace(b"To: <sip:pbx.test>", b"To: " + to.encode())
    request = parse_request(data)
    assert request.to_addr.tag is None
    response = make_response(request, 486, to_tag="busy1")
    assert response.to_addr.tag == "busy1"


def test_make_response_extra_headers_body_and_reason() -> None:
    invite = parse_request(load("rfc3665-3.1-f1-invite.sip"))
    sdp = parse_response(load("rfc3665-3.1-f3-200-ok.sip")).body
    ok = make_response(
        invite, 200, to_tag="8321234356",
        headers=[("Contact", "<sip:bob@client.biloxi.example.com;transport=tcp>"),
                 ("c", "application/sdp")],
        body=sdp,
    )
    wire = ok.to_bytes()
    assert wire.endswith(b"\r\nContent-Length: 147\r\n\r\n" + sdp)
    assert parse_response(wire).headers.get("Content-Type") == "application/sdp"
    assert make_response(invite, 486).reason == "Busy Here"
    assert make_response(invite, 499).reason == ""
    assert make_response(invite, 480, "No Response").reason == "No Response"


# --- new_request (RFC 3261 §8.1.1) -----------------------------------------------------------


def test_new_request_builds_the_mandatory_headers_in_order() -> None:
    sdp = parse_request(load("rfc3665-3.1-f1-invite.sip")).body
    request = new_request(
        "INVITE",
        "sip:bob@biloxi.example.com",
        via="SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9",
        from_="Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl",
        to="Bob <sip:bob@biloxi.example.com>",
        call_id="3848276298220188511@atlanta.example.com",
        cseq=1,
        contact="<sip:alice@client.atlanta.example.com;transport=tcp>",
        headers=[("Content-Type", "application/sdp")],
        body=sdp,
    )
    validate_request(request)
    # Same bytes as RFC 3665 §3.1 F1, whose header order is the usual one.
    assert request.to_bytes() == load("rfc3665-3.1-f1-invite.sip")
    assert request.max_forwards == 70


def test_new_request_takes_parsed_values_and_round_trips() -> None:
    via = parse_via("SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-new-1;rport")
    alice = parse_name_addr('"Alice" <sip:alice@atlanta.example.com>;tag=n1')
    bob = parse_name_addr("<sip:bob@biloxi.example.com>")
    request = new_request(
        "OPTIONS", "sip:bob@biloxi.example.com", via=via, from_=alice, to=bob,
        call_id="new-1@192.0.2.10", cseq=42, max_forwards=10,
    )
    again = parse_request(request.to_bytes())
    validate_request(again)
    assert again.method == "OPTIONS"
    assert again.cseq == CSeq(42, "OPTIONS")
    assert again.max_forwards == 10
    assert again.top_via.branch == "z9hG4bK-new-1"
    assert again.top_via.rport_requested
    assert again.from_addr.tag == "n1"
    assert again.from_addr.display_name == "Alice"
    assert again.to_addr.tag is None
    assert "Contact" not in again.headers
    assert [name for name, _ in again.headers] == [
        "Via", "Max-Forwards", "From", "To", "Call-ID", "CSeq", "Content-Length",
    ]
    # The values it was given are what it reads back, without parsing its own text, and
    # they equal what that text parses into.
    assert request.top_via is via and request.from_addr is alice and request.to_addr is bob
    assert (again.top_via, again.from_addr, again.to_addr, again.cseq) == (
        request.top_via, request.from_addr, request.to_addr, request.cseq)


@pytest.mark.parametrize(
    "name", ["To", "From", "CSeq", "Call-ID", "Max-Forwards", "Content-Length"]
)
def test_repeated_single_header_is_refused_while_repeated_via_is_fine(name: str) -> None:
    data = raw_request(extra=["Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-2"])
    validate_request(parse_request(data))  # two Via lines: fine
    line = next(li for li in data.split(b"\r\n") if li.startswith(name.encode() + b":"))
    doubled = data.replace(line, line + b"\r\n" + line)
    with pytest.raises(SipParseError, match=f"more than one {name} header"):
        validate_request(parse_request(doubled))


def test_replace_top_via_keeps_the_other_vias_and_their_parse() -> None:
    data = raw_request(extra=["Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-2"])
    request = parse_request(data)
    first, second = request.vias
    stamped = first.with_source("192.0.2.77", 4000)
    request.replace_top_via(stamped)
    assert request.top_via is stamped
    assert request.vias == [stamped, second] and request.vias[1] is second
    assert request.headers.get_lines("Via")[0] == str(stamped)
    assert "received=192.0.2.77" in str(stamped) and "rport=4000" in str(stamped)
    # Two values in one line: the second stays as written.
    one_line = raw_request().replace(
        b"Via: ", b"Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-9, ", 1
    )
    request = parse_request(one_line)
    request.replace_top_via(request.top_via.with_received("192.0.2.1"))
    line = request.headers.get_lines("Via")[0]
    assert line.startswith("SIP/2.0/UDP 192.0.2.9;branch=z9hG4bK-9;received=192.0.2.1, SIP/2.0")
    assert len(request.vias) == 2
