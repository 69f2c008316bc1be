"""edge.sip.uri: SIP/SIPS, tel and absolute URIs, RFC 3261 §19.1.4 comparison, and the RFC 4475 /
RFC 5118 torture vectors (tests/vectors/torture, see SOURCES.txt there)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip.errors import SipParseError
from edge.sip.uri import AbsoluteUri, SipUri, TelUri, parse_sip_uri, parse_uri, uri_equal

TORTURE = Path(__file__).parent / "vectors" / "torture"
_COMPACT = {"v": "via", "f": "from", "t": "to", "m": "contact"}


def torture_lines(name: str) -> list[str]:
    """Start line and unfolded header lines of a torture message."""
    raw = (TORTURE / name).read_bytes().split(b"\r\n\r\n", 1)[0]
    text = raw.decode("utf-8", "surrogateescape")
    return re.sub("\r\n[ \t]+", " ", text).split("\r\n")


def request_uri(name: str) -> str:
    return torture_lines(name)[0].split(" ")[1]


def header_values(name: str, header: str) -> list[str]:
    """Values of `header` (compact forms too) in a torture message, unfolded, in order."""
    out = []
    for line in torture_lines(name)[1:]:
        hname, _colon, value = line.partition(":")
        hname = hname.strip(" \t").lower()
        if _COMPACT.get(hname, hname) == header.lower():
            out.append(value.strip(" \t"))
    return out


def sip(text: str) -> SipUri:
    uri = parse_uri(text)
    assert isinstance(uri, SipUri)
    return uri


def addr_uri(value: str) -> str:
    """The URI inside <...> of a header value."""
    return value[value.index("<") + 1 : value.index(">")]


# --- RFC 4475 vectors -------------------------------------------------------------------------


def test_esc01_request_uri_user_is_unescaped_once() -> None:
    # RFC 4475 §3.1.1.3 esc01.dat: R-URI user sips%3Auser%40example.com
    text = request_uri("esc01.dat")
    uri = sip(text)
    assert uri.user == "sips:user@example.com"
    assert uri.host == "example.net"
    assert uri.params == ()
    assert str(uri) == text


def test_esc01_to_and_from_users() -> None:
    # RFC 4475 §3.1.1.3: To sip:%75se%72@example.com is user "user"; From has spaces.
    to_uri = sip(header_values("esc01.dat", "To")[0])
    assert to_uri.user == "user"
    assert to_uri == sip("sip:user@example.com")
    from_uri = sip(addr_uri(header_values("esc01.dat", "From")[0]))
    assert from_uri.user == "I have spaces"


def test_esc01_contact_params_unescaped_exactly_once() -> None:
    # RFC 4475 §3.1.1.3: %6C%72 is "lr"; n%61me=v%61lue%25%34%31 is name="value%41".
    contact = addr_uri(header_values("esc01.dat", "Contact")[0])
    uri = sip(contact)
    assert uri.user == "caller"
    assert uri.lr is True
    assert uri.param("name") == "value%41"
    assert uri.param("NAME") == "value%41"
    assert str(uri) == contact
    assert uri == sip("sip:caller@host5.example.net;lr;name=value%2541")
    assert uri != sip("sip:caller@host5.example.net;lr;name=valueA")


def test_escnull_users_keep_nul_and_differ() -> None:
    # RFC 4475 §3.1.1.4 escnull.dat: do not truncate at NUL; two distinct bindings.
    to_uri = sip(header_values("escnull.dat", "To")[0])
    assert to_uri.user == "null-\x00-null"
    one, two = (sip(addr_uri(v)) for v in header_values("escnull.dat", "Contact"))
    assert one.user == "\x00"
    assert two.user == "\x00\x00"
    assert one != two
    assert len({one, two}) == 2


def test_semiuri_user_part_holds_the_semicolon() -> None:
    # RFC 4475 §3.1.1.9 semiuri.dat
    text = request_uri("semiuri.dat")
    assert text == "sip:user;par=u%40example.net@example.com"
    uri = sip(text)
    assert uri.user == "user;par=u@example.net"
    assert uri.host == "example.com"
    assert uri.params == ()
    assert uri.param("par") is None


def test_intmeth_unusual_user_and_password() -> None:
    # RFC 4475 §3.1.1.2 intmeth.dat
    text = request_uri("intmeth.dat")
    uri = sip(text)
    assert uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert uri.host == "example.com"
    assert str(uri) == text


def test_wsinv_request_uri_flag_param() -> None:
    # RFC 4475 §3.1.1.1 wsinv.dat: uri-param 'unknownparam' without value
    uri = sip(request_uri("wsinv.dat"))
    assert uri.params == (("unknownparam", None),)
    assert uri.param("unknownparam") == ""
    route = sip(addr_uri(header_values("wsinv.dat", "Route")[0]))
    assert route.lr
    assert route.param("unknownwith") == "value"
    assert route.param("unknown-no-value") == ""


def test_inv2543_maddr_and_user_param() -> None:
    # RFC 4475 §3.4.1 inv2543.dat
    record_route = sip(addr_uri(header_values("inv2543.dat", "Record-Route")[0]))
    assert record_route.maddr == "ss1.example.com"
    to_uri = sip(header_values("inv2543.dat", "To")[0])
    assert to_uri.user == "+16505552222"
    assert to_uri.user_param == "phone"


@pytest.mark.parametrize(
    ("vector", "scheme", "rest"),
    [
        ("unkscm.dat", "nobodyknowsthisscheme", "totallyopaquecontent"),  # RFC 4475 §3.3.2
        ("novelsc.dat", "soap.beep", "//192.0.2.103:3002"),  # RFC 4475 §3.3.3
    ],
)
def test_unknown_request_uri_schemes_parse(vector: str, scheme: str, rest: str) -> None:
    text = request_uri(vector)
    uri = parse_uri(text)
    assert isinstance(uri, AbsoluteUri)
    assert (uri.scheme, uri.rest) == (scheme, rest)
    assert str(uri) == text
    with pytest.raises(SipParseError) as caught:
        parse_sip_uri(text)
    assert caught.value.status == 416


def test_unksm2_unknown_schemes_in_headers() -> None:
    # RFC 4475 §3.3.4 unksm2.dat
    to_uri = parse_uri(header_values("unksm2.dat", "To")[0])
    assert to_uri == AbsoluteUri(scheme="isbn", rest="2983792873")
    from_uri = parse_uri(addr_uri(header_values("unksm2.dat", "From")[0]))
    assert isinstance(from_uri, AbsoluteUri)
    assert str(from_uri) == "http://www.example.com"
    contact = parse_uri(addr_uri(header_values("unksm2.dat", "Contact")[0]))
    assert str(contact) == "name:John_Smith"


def test_ltgtruri_brackets_are_rejected() -> None:
    # RFC 4475 §3.1.2.7 ltgtruri.dat
    with pytest.raises(SipParseError, match="< >"):
        parse_uri(request_uri("ltgtruri.dat"))


def test_lwsruri_trailing_semicolon_is_rejected() -> None:
    # RFC 4475 §3.1.2.8 lwsruri.dat: 'sip:user@example.com; lr' split at SP.
    assert request_uri("lwsruri.dat") == "sip:user@example.com;"
    with pytest.raises(SipParseError, match="empty uri-parameter"):
        parse_uri(request_uri("lwsruri.dat"))
    with pytest.raises(SipParseError, match="whitespace"):
        parse_uri("sip:user@example.com; lr")


def test_escruri_headers_are_parsed_not_applied() -> None:
    # RFC 4475 §3.1.2.11 escruri.dat: the caller rejects or strips them (§19.1.5).
    uri = sip(request_uri("escruri.dat"))
    assert uri.headers == (("Route", "%3Csip:example.com%3E"),)
    assert uri.header("route") == "<sip:example.com>"
    stripped = uri.without_headers()
    assert str(stripped) == "sip:user@example.com"


def test_regescrt_keeps_escaped_header() -> None:
    # RFC 4475 §3.3.14 regescrt.dat: the binding keeps ?Route=%3Csip:sip.example.com%3E
    text = addr_uri(header_values("regescrt.dat", "Contact")[0])
    uri = sip(text)
    assert str(uri) == text
    assert str(uri.with_param("expires", "60")) == (
        "sip:user@example.com;expires=60?Route=%3Csip:sip.example.com%3E"
    )


def test_longreq_long_params() -> None:
    # RFC 4475 §3.1.1.7 longreq.dat
    text = addr_uri(header_values("longreq.dat", "To")[0])
    uri = sip(text)
    assert uri.port == 6000
    assert len(uri.params) == 3
    assert uri.param("longparamname" + "name" * 25 + "name") is None
    assert str(uri) == text


# --- RFC 5118 IPv6 vectors --------------------------------------------------------------------


def test_ipv6_good() -> None:
    # RFC 5118 §4.1 ipv6-good.dat
    uri = sip(request_uri("ipv6-good.dat"))
    assert uri.host == "2001:db8::10"
    assert uri.port is None
    assert uri.host_port == "[2001:db8::10]"
    contact = sip(addr_uri(header_values("ipv6-good.dat", "Contact")[0]))
    assert contact.host == "2001:db8::1"


def test_ipv6_bad_needs_brackets() -> None:
    # RFC 5118 §4.2 ipv6-bad.dat
    with pytest.raises(SipParseError, match=r"enclosed in \[ \]"):
        parse_uri(request_uri("ipv6-bad.dat"))


def test_port_ambiguous_has_no_port() -> None:
    # RFC 5118 §4.3 port-ambiguous.dat: [2001:db8::10:5070] is an address, no port.
    uri = sip(request_uri("port-ambiguous.dat"))
    assert uri.host == "2001:db8::10:5070"
    assert uri.port is None


def test_port_unambiguous() -> None:
    # RFC 5118 §4.4 port-unambiguous.dat
    uri = sip(request_uri("port-unambiguous.dat"))
    assert (uri.host, uri.port) == ("2001:db8::10", 5070)
    assert uri.host_port == "[2001:db8::10]:5070"


def test_ipv6_three_colons_is_invalid() -> None:
    # RFC 5118 §4.10 ipv6-bug-abnf-3-colons.dat
    with pytest.raises(SipParseError, match="invalid IPv6 reference"):
        parse_uri(request_uri("ipv6-bug-abnf-3-colons.dat"))
    with pytest.raises(SipParseError):
        parse_uri(header_values("ipv6-bug-abnf-3-colons.dat", "To")[0])


def test_ipv6_two_colons_with_ipv4_tail() -> None:
    # RFC 5118 §4.10 ipv6-correct-abnf-2-colons.dat
    uri = sip(request_uri("ipv6-correct-abnf-2-colons.dat"))
    assert uri.host == "2001:db8::192.0.2.1"


def test_ipv4_mapped_ipv6() -> None:
    # RFC 5118 §4.9 ipv4-mapped-ipv6.dat
    uri = sip(addr_uri(header_values("ipv4-mapped-ipv6.dat", "Contact")[0]))
    assert (uri.user, uri.host) == ("ted", "::ffff:192.0.2.2")


def test_ipv6_hosts_compare_canonically() -> None:
    assert sip("sip:[2001:DB8::10]") == sip("sip:[2001:db8:0:0::10]")
    assert sip("sip:[2001:db8::10]") != sip("sip:[2001:db8::11]")


@pytest.mark.parametrize(
    "text",
    [
        "sip:[2001:db8::10",  # unterminated
        "sip:[]",
        "sip:[2001:db8::g]",
        "sip:[::1]x",
        "sip:[1:2:3:4:5:6:7:8:9]",
        "sip:[2001:db8::10%eth0]",  # zone ids are not in RFC 3261
    ],
)
def test_bad_ipv6_references(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


# --- RFC 3261 §19.1.4 comparison --------------------------------------------------------------

EQUAL_PAIRS = [
    ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
    ("sip:carol@chicago.com;newparam=5", "sip:carol@chicago.com;security=on"),
    (
        "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
        "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
    ),
    (
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
    ),
]

NOT_EQUAL_PAIRS = [
    ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
    ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
    ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
    ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
]


@pytest.mark.parametrize(("a", "b"), EQUAL_PAIRS)
def test_rfc3261_equal_uris(a: str, b: str) -> None:
    left, right = parse_uri(a), parse_uri(b)
    assert left == right
    assert right == left
    assert uri_equal(left, right)
    assert hash(left) == hash(right)


@pytest.mark.parametrize(("a", "b"), NOT_EQUAL_PAIRS)
def test_rfc3261_not_equal_uris(a: str, b: str) -> None:
    left, right = parse_uri(a), parse_uri(b)
    assert left != right
    assert right != left
    assert not uri_equal(left, right)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),  # never equivalent
        ("sip:alice@atlanta.com", "sip:atlanta.com"),  # user in one only
        ("sip:alice:pw@atlanta.com", "sip:alice@atlanta.com"),  # password in one only
        ("sip:alice:pw@atlanta.com", "sip:alice:PW@atlanta.com"),  # userinfo case-sensitive
        ("sip:a@h", "sip:a@h;user=phone"),  # user, ttl, method: one side never matches
        ("sip:a@h", "sip:a@h;ttl=1"),
        ("sip:a@h", "sip:a@h;method=INVITE"),
        ("sip:a@h", "sip:a@h;maddr=239.255.255.1"),
        ("sip:a@h;foo=1", "sip:a@h;foo=2"),  # other params present in both must match
        ("sip:a@h;lr", "sip:a@h;lr=on"),
        ("sip:a@h?subject=x", "sip:a@h?subject=X"),
        ("sip:a%3Bb@h", "sip:a;b@h"),  # an escaped reserved character is not the character
    ],
)
def test_more_not_equal(a: str, b: str) -> None:
    assert parse_uri(a) != parse_uri(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("sip:a@h;transport=TCP", "sip:a@h;TRANSPORT=tcp"),
        ("sip:a@h;%74ransport=tcp", "sip:a@h;transport=tcp"),
        ("sip:a%2Eb@h", "sip:a.b@h"),
        ("sip:a%3bb@h", "sip:a%3Bb@h"),  # hex digits are case-insensitive
        ("sip:a@h;lr", "sip:a@h;LR"),
        ("sips:a@H.example.COM.", "SIPS:a@h.example.com."),
    ],
)
def test_more_equal(a: str, b: str) -> None:
    left, right = parse_uri(a), parse_uri(b)
    assert left == right
    assert hash(left) == hash(right)


def test_different_uri_kinds_never_equal() -> None:
    assert parse_uri("sip:+1234@h") != parse_uri("tel:+1234")
    assert not uri_equal(parse_uri("tel:+1234"), parse_uri("urn:x"))
    assert parse_uri("MAILTO:a@b") == parse_uri("mailto:a@b")
    assert parse_uri("mailto:a@b") != parse_uri("mailto:A@b")


# --- properties, building, escaping -----------------------------------------------------------


def test_properties() -> None:
    uri = sip("sips:alice:secret@Atlanta.example.com:5061;transport=TLS;lr;maddr=10.0.0.1")
    assert uri.scheme == "sips"
    assert uri.secure
    assert (uri.user, uri.password) == ("alice", "secret")
    assert uri.host == "Atlanta.example.com"
    assert uri.port == 5061
    assert uri.host_port == "Atlanta.example.com:5061"
    assert uri.transport == "tls"
    assert uri.lr
    assert uri.maddr == "10.0.0.1"
    assert uri.user_param is None
    assert uri.param("TRANSPORT") == "TLS"
    assert uri.has_param("lr")
    assert not uri.has_param("ttl")
    assert sip("SIP:a@b").scheme == "sip"


def test_round_trip_keeps_text() -> None:
    for text in [
        "SIP:ALICE@AtLanTa.CoM;Transport=udp",
        "sip:%61lice@atlanta.com;transport=TCP",
        "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
        "sip:+1-212-555-1212:1234@gateway.com;user=phone",
        "sip:[::1]:5060;transport=udp",
        "tel:+1-201-555-0123;ext=22",
        "urn:service:sos",
    ]:
        assert str(parse_uri(text)) == text


def test_with_param_and_replace_regenerate() -> None:
    # Only what changed is rewritten: the user part keeps its original escaping.
    uri = sip("sip:%61lice@atlanta.com;transport=tcp")
    changed = uri.with_param("lr")
    assert str(changed) == "sip:%61lice@atlanta.com;transport=tcp;lr"
    assert str(uri) == "sip:%61lice@atlanta.com;transport=tcp"  # the original is untouched
    assert str(uri.with_param("TRANSPORT", "udp")) == "sip:%61lice@atlanta.com;transport=udp"
    assert str(uri.without_params("transport")) == "sip:%61lice@atlanta.com"
    assert uri.without_params("nothing") is uri
    assert str(uri.replace(port=5070)) == "sip:%61lice@atlanta.com:5070;transport=tcp"
    assert str(uri.with_params(("a", "1"), ("b", None))) == (
        "sip:%61lice@atlanta.com;transport=tcp;a=1;b"
    )
    assert str(uri.with_param("x", "a b")) == "sip:%61lice@atlanta.com;transport=tcp;x=a%20b"
    # A new user value is escaped canonically.
    assert str(uri.replace(user="bob")) == "sip:bob@atlanta.com;transport=tcp"


def test_user_escaping_on_output() -> None:
    # RFC 4475 §3.1.1.9 in reverse: an '@' in the user part must be escaped.
    built = SipUri(user="user;par=u@example.net", host="example.com")
    assert str(built) == "sip:user;par=u%40example.net@example.com"
    assert built == sip("sip:user;par=u%40example.net@example.com")
    spaces = SipUri(user="I have spaces", password="p:w", host="example.net", port=5080)
    assert str(spaces) == "sip:I%20have%20spaces:p%3Aw@example.net:5080"
    assert sip(str(spaces)).password == "p:w"
    assert str(SipUri(scheme="sips", host="2001:db8::1", port=5061)) == "sips:[2001:db8::1]:5061"
    nul = SipUri(user="\x00", host="h")
    assert str(nul) == "sip:%00@h"


def test_non_utf8_escapes_stay_distinct() -> None:
    ff, fe = sip("sip:%FF@h"), sip("sip:%FE@h")
    assert ff.user != fe.user
    assert ff != fe
    assert str(ff.replace(port=5060)) == "sip:%FF@h:5060"


def test_parsed_object_has_every_field() -> None:
    # The parser builds SipUri without __init__ (speed): every slot must still be set.
    uri = sip("sip:a:b@h:1;x=y?h=v")
    rebuilt = SipUri(
        scheme=uri.scheme,
        user=uri.user,
        password=uri.password,
        host=uri.host,
        port=uri.port,
        params=uri.params,
        headers=uri.headers,
    )
    assert repr(rebuilt) == repr(uri)
    assert str(rebuilt) == str(uri)
    for field in dataclasses.fields(SipUri):
        getattr(uri, field.name)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "missing URI scheme"),
        ("sip:", "missing host"),
        ("sip:@example.com", "empty user part"),
        ("sip:user@", "missing host"),
        ("sip:user@example.com:0", "out of range"),
        ("sip:user@example.com:65536", "out of range"),
        ("sip:user@example.com:123456", "invalid port"),
        ("sip:user@example.com:50a", "invalid port"),
        ("sip:user@256.0.0.1", "invalid IPv4"),
        ("sip:user@1.2.3", "invalid IPv4"),
        ("sip:user@exa_mple-.com", "invalid host"),
        ("sip:us er@example.com", "whitespace"),
        ("sip:user@example.com;;lr", "empty uri-parameter"),
        ("sip:user@example.com;a=", "empty value"),
        ("sip:user@example.com;a=b=c", "invalid value"),
        ("sip:us%4@example.com", "%-escape"),
        ("sip:user@example.com?", "malformed URI header"),
        ("sip:user@example.com?a", "malformed URI header"),
        ("sip:a@b@c", "'@'"),
        ("sip:user\"@h", "not allowed"),
        ("1sip:x", "invalid URI scheme"),
        ("mailto:", "empty"),
        ("http://a b", "invalid character"),
        ("tel:", "missing number"),
        ("tel:+", "no digits"),
        ("tel:1234", "without phone-context"),
        ("tel:+12;;a", "empty parameter"),
        ("tel:+12 3", "whitespace"),
        ("tel:+1+2", "invalid character"),
        ("noscheme", "missing URI scheme"),
    ],
)
def test_errors_name_the_problem(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_uri(text)
    assert reason in caught.value.reason
    assert caught.value.status == 400


# --- tel URIs (RFC 3966) ----------------------------------------------------------------------


def test_tel_uri_global_and_local() -> None:
    global_uri = parse_uri("tel:+1-201-555-0123")
    assert isinstance(global_uri, TelUri)
    assert global_uri.is_global
    assert global_uri.digits == "+12015550123"
    local = parse_uri("tel:7042;phone-context=example.com")
    assert isinstance(local, TelUri)
    assert not local.is_global
    assert local.phone_context == "example.com"
    assert local.scheme == "tel"


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("tel:+1-201-555-0123", "tel:+1(201)555.0123", True),  # RFC 3966 §4 separators
        ("tel:+12015550123", "TEL:+12015550123", True),
        ("tel:7042;phone-context=example.com", "tel:7042;PHONE-CONTEXT=Example.COM", True),
        ("tel:863-1234;phone-context=+1-914-555", "tel:8631234;phone-context=+1914555", True),
        ("tel:+1-201-555-0123;ext=1", "tel:+12015550123;ext=1", True),
        ("tel:+12015550123", "tel:+12015550123;isub=1", False),  # param in one only
        ("tel:7042;phone-context=a.com", "tel:7042;phone-context=b.com", False),
        ("tel:+7042;phone-context=a.com", "tel:7042;phone-context=a.com", False),
        ("tel:12ab;phone-context=a.com", "tel:12AB;phone-context=a.com", True),
    ],
)
def test_tel_uri_comparison(a: str, b: str, equal: bool) -> None:
    left, right = parse_uri(a), parse_uri(b)
    assert (left == right) is equal
    if equal:
        assert hash(left) == hash(right)


def test_tel_uri_built() -> None:
    built = TelUri(number="+1234", params=(("ext", "5"),))
    assert str(built) == "tel:+1234;ext=5"
    assert built == parse_uri("tel:+1234;ext=5")


# --- robustness -------------------------------------------------------------------------------

_URI_PIECES = st.sampled_from(
    [*list("sipSIPtel:+@[]:;=?&%.-_~!*'()$,/<>\" \t0123456789abcdefABCDEF#"), "%41", "%zz", "::"]
)


def _texts(pieces: st.SearchStrategy[str], max_size: int) -> st.SearchStrategy[str]:
    return st.lists(pieces, max_size=max_size).map("".join)



@st.composite
def sip_uri_texts(draw: st.DrawFn) -> str:
    """Mostly well-formed SIP URIs built from grammar pieces, with random damage."""
    user = draw(_texts(st.sampled_from([*"ab1;=?/&+$,-_.!~*'()", "%40", "%00"]), 8))
    host = draw(
        st.sampled_from(["example.com", "10.0.0.1", "[2001:db8::1]", "h", "[::ffff:1.2.3.4]"])
    )
    port = draw(st.sampled_from(["", ":5060", ":1", ":65535"]))
    params = draw(st.lists(st.sampled_from([";lr", ";transport=tcp", ";x=%41", ";m=a:b"])))
    headers = draw(st.sampled_from(["", "?h=v", "?a=b&c=%20"]))
    scheme = draw(st.sampled_from(["sip:", "sips:", "SIP:"]))
    text = scheme + (user + "@" if user else "") + host + port + "".join(params) + headers
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(_texts(_URI_PIECES, 3)) + text[cut:]
    return text


def _parse_or_reject(text: str) -> None:
    try:
        uri = parse_uri(text)
    except SipParseError as error:
        assert error.reason
        return
    assert str(uri) == text
    if isinstance(uri, SipUri):
        # Regenerated text (canonical escaping) parses back to an equal URI.
        again = parse_uri(str(uri.replace(port=uri.port)))
        assert isinstance(again, SipUri)
        assert again == uri
        assert again.params == uri.params


@settings(max_examples=400, deadline=None)
@given(_texts(_URI_PIECES, 40))
def test_any_text_parses_or_raises_sip_parse_error(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=400, deadline=None)
@given(sip_uri_texts())
def test_near_valid_sip_uris_parse_or_raise(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_unicode_parses_or_raises(text: str) -> None:
    _parse_or_reject("sip:" + text)
    _parse_or_reject("tel:" + text)
    _parse_or_reject(text)


@pytest.mark.parametrize(
    "text",
    [
        "sip:" + "a" * 20000,
        "sip:" + "a;" * 10000,
        "sip:" + "a:" * 10000,
        "sip:u@" + "a." * 10000 + "-",
        "sip:u@h" + ";a=b" * 5000 + ";",
        "sip:u@h?" + "a=b&" * 5000,
        "tel:+" + "1-" * 10000 + "x",
        "sip:" + "%41" * 10000,
    ],
)
def test_long_inputs_are_linear(text: str) -> None:
    # Regexes must not backtrack catastrophically on hostile input.
    # CPU time, not wall time: a busy CI machine must not fail this; catastrophic
    # backtracking on 10k characters would take minutes, not one second.
    started = time.process_time()
    with contextlib.suppress(SipParseError):
        parse_uri(text)
    assert time.process_time() - started < 1.0
