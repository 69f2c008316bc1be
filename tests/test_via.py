"""edge.sip.via: one via-parm, RFC 3581 rport, and the RFC 4475 / RFC 5118 torture vectors
(tests/vectors/torture)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.grammar import split_comma_list
from edge.sip.via import MAGIC_COOKIE, Via, parse_via

TORTURE = Path(__file__).parent / "vectors" / "torture"


def vias(name: str) -> list[str]:
    """Every via-parm of a torture message, in order (all spellings of the header name,
    folded lines unfolded, comma lists split)."""
    raw = (TORTURE / name).read_bytes().split(b"\r\n\r\n", 1)[0]
    lines = re.sub("\r\n[ \t]+", " ", raw.decode("utf-8", "surrogateescape")).split("\r\n")
    out: list[str] = []
    for line in lines[1:]:
        hname, _colon, value = line.partition(":")
        if hname.strip(" \t").lower() in ("via", "v"):
            out += split_comma_list(value.strip(" \t"))
    return out


# --- RFC 4475 vectors -------------------------------------------------------------------------


def test_wsinv_lws_inside_sent_protocol() -> None:
    # RFC 4475 §3.1.1.1: 'SIP  /   2.0 /UDP 192.0.2.2', 'SIP  / 2.0  / TCP     spindle...'
    values = vias("wsinv.dat")
    parsed = [parse_via(v) for v in values]
    assert [(v.transport, v.host, v.port, v.branch) for v in parsed] == [
        ("UDP", "192.0.2.2", None, "390skdjuw"),
        ("TCP", "spindle.example.com", None, "z9hG4bK9ikj8"),
        ("UDP", "192.168.255.111", None, "z9hG4bK30239"),
    ]
    assert [v.has_magic_cookie for v in parsed] == [False, True, True]
    assert all(v.protocol_name == "SIP" and v.protocol_version == "2.0" for v in parsed)
    assert [str(v) for v in parsed] == values


def test_transports_any_token() -> None:
    # RFC 4475 §3.1.1.10: UDP, SCTP, TLS, UNKNOWN, TCP
    parsed = [parse_via(v) for v in vias("transports.dat")]
    assert [v.transport for v in parsed] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert [v.host for v in parsed] == [f"t{i}.example.com" for i in range(1, 6)]
    assert parse_via("SIP/2.0/ws h;branch=z9hG4bK1").transport == "WS"


def test_intmeth_branch_with_token_punctuation() -> None:
    # RFC 4475 §3.1.1.2
    (via,) = (parse_via(v) for v in vias("intmeth.dat"))
    assert via.branch == "z9hG4bK-.!%66*_+`'~"
    assert via.transport == "TCP"


def test_esc02_percent_in_branch_is_not_an_escape() -> None:
    # RFC 4475 §3.1.1.5
    (via,) = (parse_via(v) for v in vias("esc02.dat"))
    assert via.branch == "z9hG4bK209%fzsnel234"


def test_longreq_34_vias() -> None:
    # RFC 4475 §3.1.1.7: 34 Via values with mixed-case names, a very long branch.
    parsed = [parse_via(v) for v in vias("longreq.dat")]
    assert len(parsed) == 34
    assert [v.host for v in parsed[:3]] == [f"sip{n}.example.com" for n in (33, 32, 31)]
    last = parsed[-1]
    assert last.received == "192.0.2.5"
    assert last.branch is not None
    assert len(last.branch) > 200
    assert not last.has_magic_cookie


def test_badinv01_empty_params() -> None:
    # RFC 4475 §3.1.2.1: 'Via: SIP/2.0/UDP 192.0.2.15;;,;,,' is a 400 whichever way it is read.
    raw = (TORTURE / "badinv01.dat").read_text("utf-8")
    value = re.search("^Via: (.*)$", raw, re.MULTILINE)
    assert value is not None
    text = value.group(1).rstrip("\r")
    with pytest.raises(SipParseError, match="empty"):
        split_comma_list(text)
    with pytest.raises(SipParseError, match="empty parameter"):
        parse_via(text.split(",")[0])


def test_badvers_version_is_reported_not_judged() -> None:
    # RFC 4475 §3.1.2.16: SIP/7.0 parses; the endpoint answers 505.
    (via,) = (parse_via(v) for v in vias("badvers.dat"))
    assert (via.protocol_name, via.protocol_version) == ("SIP", "7.0")
    assert via.port == 5060 or via.port is None


def test_badbranch_bare_magic_cookie() -> None:
    # RFC 4475 §3.2.1: branch=z9hG4bK exactly
    (via,) = (parse_via(v) for v in vias("badbranch.dat"))
    assert via.branch == MAGIC_COOKIE
    assert via.has_magic_cookie


def test_inv2543_no_branch() -> None:
    # RFC 4475 §3.4.1: RFC 2543 style, no branch
    (via,) = (parse_via(v) for v in vias("inv2543.dat"))
    assert via.branch is None
    assert not via.has_magic_cookie
    assert via.host == "iftgw.example.com"


def test_bcast_broadcast_sent_by_parses() -> None:
    # RFC 4475 §3.3.10: the proxy drops it, the parser must not fail.
    parsed = [parse_via(v) for v in vias("bcast.dat")]
    assert parsed[1].host == "255.255.255.255"


def test_ltgtruri_via_without_params() -> None:
    # RFC 4475 §3.1.2.7: 'Via: SIP/2.0/UDP 192.0.2.5' (no branch at all)
    (via,) = (parse_via(v) for v in vias("ltgtruri.dat"))
    assert (via.host, via.port, via.params) == ("192.0.2.5", None, ())
    assert str(via) == "SIP/2.0/UDP 192.0.2.5"


# --- RFC 5118 vectors -------------------------------------------------------------------------


def test_ipv6_sent_by() -> None:
    # RFC 5118 §4.1 ipv6-good.dat
    (via,) = (parse_via(v) for v in vias("ipv6-good.dat"))
    assert via.host == "2001:db8::9:1"
    assert via.sent_by == "[2001:db8::9:1]"
    assert via.branch == "z9hG4bKas3-111"


def test_received_with_brackets_tolerated() -> None:
    # RFC 5118 §4.5 via-received-param-with-delim.dat
    (via,) = (parse_via(v) for v in vias("via-received-param-with-delim.dat"))
    assert via.received == "2001:db8::9:255"
    assert via.param("received") == "[2001:db8::9:255]"


def test_received_without_brackets() -> None:
    # RFC 5118 §4.5 via-received-param-no-delim.dat
    (via,) = (parse_via(v) for v in vias("via-received-param-no-delim.dat"))
    assert via.received == "2001:db8::9:255"
    assert via.branch == "z9hG4bKas3"


def test_mixed_ipv4_ipv6_vias() -> None:
    # RFC 5118 §4.7 mult-ip-in-header.dat
    parsed = [parse_via(v) for v in vias("mult-ip-in-header.dat")]
    assert [(v.host, v.port) for v in parsed] == [
        ("2001:db8::9:1", 6050),
        ("192.0.2.1", None),
        ("2001:db8::9:255", None),
    ]
    assert parsed[0].sent_by == "[2001:db8::9:1]:6050"
    assert parsed[2].received == "192.0.2.200"
    assert parsed[2].transport == "TCP"


def test_ipv4_mapped_sent_by() -> None:
    # RFC 5118 §4.9 ipv4-mapped-ipv6.dat
    first, second = (parse_via(v) for v in vias("ipv4-mapped-ipv6.dat"))
    assert (first.host, first.port) == ("::ffff:192.0.2.10", 19823)
    assert second.host == "::ffff:192.0.2.2"


# --- rport and response routing ---------------------------------------------------------------


def test_rport_states() -> None:
    absent = parse_via("SIP/2.0/UDP h;branch=z9hG4bK1")
    assert (absent.rport, absent.rport_requested) == (None, False)
    requested = parse_via("SIP/2.0/UDP h;branch=z9hG4bK1;rport")
    assert (requested.rport, requested.rport_requested) == (None, True)
    filled = parse_via("SIP/2.0/UDP h;branch=z9hG4bK1;rport=5070;received=10.0.0.1")
    assert (filled.rport, filled.rport_requested) == (5070, True)
    assert filled.received == "10.0.0.1"


def test_with_received_and_rport_keep_head_text() -> None:
    # RFC 3581 §4 example: the server fills in rport and received.
    value = "SIP/2.0/UDP  192.0.2.1 : 5060 ;rport;branch=z9hG4bKxyz"
    via = parse_via(value)
    stamped = via.with_rport(9988).with_received("192.0.2.2")
    assert str(stamped) == (
        "SIP/2.0/UDP  192.0.2.1 : 5060;rport=9988;branch=z9hG4bKxyz;received=192.0.2.2"
    )
    assert (stamped.rport, stamped.received, stamped.branch) == (9988, "192.0.2.2", "z9hG4bKxyz")
    assert str(via) == value  # unchanged
    assert parse_via(str(stamped)) == stamped


def test_with_source_rules() -> None:
    # RFC 3261 §18.2.1: received when sent-by is a name or another address;
    # RFC 3581 §4: received always, and rport, when rport was asked for.
    plain = parse_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1")
    assert plain.with_source("10.0.0.1", 5060) is plain
    assert str(plain.with_source("10.0.0.9", 5060)) == (
        "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;received=10.0.0.9"
    )
    named = parse_via("SIP/2.0/UDP pc33.example.com;branch=z9hG4bK1")
    assert named.with_source("10.0.0.1", 5060).received == "10.0.0.1"
    asking = parse_via("SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport")
    stamped = asking.with_source("10.0.0.1", 40000)
    assert str(stamped) == "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport=40000;received=10.0.0.1"
    v6 = parse_via("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bK1")
    assert v6.with_source("2001:DB8:0::1", 5060) is v6
    assert v6.with_source("[2001:db8::2]", 5060).received == "2001:db8::2"


def test_build() -> None:
    via = Via.build("udp", "192.0.2.4", 5060, "z9hG4bK74bf9")
    assert str(via) == "SIP/2.0/UDP 192.0.2.4:5060;branch=z9hG4bK74bf9;rport"
    assert (via.transport, via.branch, via.rport, via.rport_requested) == (
        "UDP", "z9hG4bK74bf9", None, True)
    assert str(Via.build("TLS", "2001:db8::1", None, "z9hG4bKa", rport=False)) == (
        "SIP/2.0/TLS [2001:db8::1];branch=z9hG4bKa"
    )
    assert parse_via(str(via)) == via
    bad_arguments: list[tuple[str, str, int | None, str]] = [
        ("UDP", "bad host", 5060, "z9hG4bK1"),
        ("UDP", "h", 70000, "z9hG4bK1"),
        ("U/DP", "h", 5060, "z9hG4bK1"),
        ("UDP", "h", 5060, "z9hG4bK;x"),
    ]
    for transport, host, port, branch in bad_arguments:
        with pytest.raises(LocalProtocolError):
            Via.build(transport, host, port, branch)


def test_ttl_and_maddr() -> None:
    via = parse_via("SIP/2.0/UDP h;maddr=239.255.255.1;ttl=16;branch=z9hG4bK1")
    assert via.maddr == "239.255.255.1"
    assert via.ttl == 16
    assert parse_via("SIP/2.0/UDP h;branch=z9hG4bK1").ttl is None


def test_parsed_object_has_every_field() -> None:
    via = parse_via("SIP/2.0/UDP h:1;branch=z9hG4bK1;rport=2;received=1.2.3.4")
    for field in dataclasses.fields(Via):
        getattr(via, field.name)
    rebuilt = Via(transport=via.transport, host=via.host, port=via.port, params=via.params)
    assert repr(rebuilt) == repr(via)
    assert rebuilt == via


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty value"),
        ("SIP/2.0/UDP", "missing sent-by"),
        ("SIP/2.0 UDP h", "sent-protocol"),
        ("SIP/2.0/UDPh", "missing sent-by"),
        ("SIP/2.0/UDP;branch=x", "missing space"),
        ("SIP/2.0/UDP h:0", "out of range"),
        ("SIP/2.0/UDP h:65536", "out of range"),
        ("SIP/2.0/UDP h:123456", "invalid port"),
        ("SIP/2.0/UDP h:x", "invalid port"),
        ("SIP/2.0/UDP 2001:db8::1;branch=z9hG4bK1", "enclosed in [ ]"),
        ("SIP/2.0/UDP [2001:db8:::1]", "invalid IPv6"),
        ("SIP/2.0/UDP [2001:db8::1", "IPv6"),
        ("SIP/2.0/UDP 256.1.1.1", "invalid IPv4"),
        ("SIP/2.0/UDP h;;", "empty parameter"),
        ("SIP/2.0/UDP h;branch", "branch"),
        ("SIP/2.0/UDP h;branch=", "empty value"),
        ("SIP/2.0/UDP h;branch=a:b", "branch"),
        ("SIP/2.0/UDP h;received", "received"),
        ("SIP/2.0/UDP h;received=example.com", "not an IP address"),
        ("SIP/2.0/UDP h;rport=0", "out of range"),
        ("SIP/2.0/UDP h;rport=abc", "invalid port"),
        ("SIP/2.0/UDP h;ttl=256", "ttl"),
        ("SIP/2.0/UDP h;ttl=0001", "ttl"),
        ("SIP/2.0/UDP h;maddr", "maddr"),
        ("SIP/2.0/UDP h;maddr=a..b", "invalid host"),
        ("SIP/2.0/UDP h branch=x", "unexpected"),
        ("SIP/2.0/UDP h;x=\"open", "quoted"),
    ],
)
def test_errors_name_the_problem(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_via(value)
    assert reason in caught.value.reason
    assert caught.value.reason.startswith("malformed Via")
    assert caught.value.status == 400


# --- robustness -------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [*"/ \t:;=[]\",.x1", "SIP", "2.0", "UDP", "branch", "rport", "received", "::", "z9hG4bK"]
)


@st.composite
def via_texts(draw: st.DrawFn) -> str:
    proto = draw(st.sampled_from(["SIP/2.0/UDP", "SIP / 2.0 / TCP", "sip/2.0/tls", "X/1/Y"]))
    host = draw(st.sampled_from(["10.0.0.1", "host.example.com", "[2001:db8::1]", "h_1"]))
    port = draw(st.sampled_from(["", ":5060", " : 5061"]))
    params = draw(
        st.lists(
            st.sampled_from(
                [";branch=z9hG4bK1", ";rport", ";rport=1", " ; received = 1.2.3.4",
                 ";received=[::1]", ";ttl=1", ";maddr=x.y", ";x=\"q;v\"", ";flag"]
            )
        )
    )
    text = f"{proto} {host}{port}{''.join(params)}"
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + "".join(draw(st.lists(_PIECES, max_size=2))) + text[cut:]
    return text


def _parse_or_reject(text: str) -> None:
    try:
        via = parse_via(text)
    except SipParseError as error:
        assert error.reason.startswith("malformed Via")
        return
    assert str(via) == text.strip(" \t")
    stamped = via.with_received("192.0.2.1").with_rport(1)
    assert parse_via(str(stamped)) == stamped
    rebuilt = Via(
        transport=via.transport,
        host=via.host,
        port=via.port,
        params=via.params,
        protocol_name=via.protocol_name,
        protocol_version=via.protocol_version,
    )
    assert parse_via(str(rebuilt)) == via


@settings(max_examples=400, deadline=None)
@given(via_texts())
def test_near_valid_vias_parse_or_raise(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=20).map("".join))
def test_any_text_parses_or_raises_sip_parse_error(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_unicode(text: str) -> None:
    _parse_or_reject(text)
    _parse_or_reject("SIP/2.0/UDP " + text)


@pytest.mark.parametrize(
    "text",
    [
        "SIP/2.0/UDP " + "a." * 10000 + "-",
        "SIP/2.0/UDP h" + ";a=b" * 5000 + ";",
        "SIP/2.0/UDP h" + " ;" * 10000,
        "SIP" + " /" * 10000,
        "SIP/2.0/UDP h;x=\"" + "\\\"" * 10000,
    ],
)
def test_long_inputs_are_linear(text: str) -> None:
    # CPU time, not wall time: a busy CI machine must not fail this; catastrophic
    # backtracking on 10k characters would take minutes, not one second.
    started = time.process_time()
    with contextlib.suppress(SipParseError):
        parse_via(text)
    assert time.process_time() - started < 1.0


_PARAM_NAMES = st.sampled_from(["branch", "rport", "Rport", "received", "RECEIVED", "ttl", "x"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(_PARAM_NAMES, st.none() | st.sampled_from(["1", "2", "10.0.0.1"])),
             max_size=5),
    st.booleans(),
)
def test_source_stamping_sets_params_as_set_param_would(
    params: list[tuple[str, str | None]], with_rport: bool
) -> None:
    from edge.sip.grammar import set_param
    from edge.sip.via import _stamped

    expected = set_param(tuple(params), "received", "192.0.2.1")
    if with_rport:
        expected = set_param(expected, "rport", "4000")
    assert _stamped(tuple(params), "192.0.2.1", "4000" if with_rport else None) == expected
