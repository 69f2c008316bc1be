"""edge.sip.address: name-addr / addr-spec values with header parameters (RFC 3261 §20.10),
checked against the RFC 4475 / RFC 5118 torture vectors (tests/vectors/torture)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip.address import NameAddr, parse_contact, parse_name_addr
from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.grammar import split_comma_list
from edge.sip.uri import AbsoluteUri, SipUri, parse_uri

TORTURE = Path(__file__).parent / "vectors" / "torture"
_COMPACT = {"v": "via", "f": "from", "t": "to", "m": "contact"}


def header_values(name: str, header: str) -> list[str]:
    """Values of `header` (compact forms too) in a torture message, unfolded, in order."""
    raw = (TORTURE / name).read_bytes().split(b"\r\n\r\n", 1)[0]
    lines = re.sub("\r\n[ \t]+", " ", raw.decode("utf-8", "surrogateescape")).split("\r\n")
    out = []
    for line in lines[1:]:
        hname, _colon, value = line.partition(":")
        hname = hname.strip(" \t").lower()
        if _COMPACT.get(hname, hname) == header.lower():
            out.append(value.strip(" \t"))
    return out


def one(name: str, header: str) -> str:
    (value,) = header_values(name, header)
    return value


def sip_uri(addr: NameAddr) -> SipUri:
    assert isinstance(addr.uri, SipUri)
    return addr.uri


# --- RFC 4475 valid messages ------------------------------------------------------------------


def test_wsinv_to_addr_spec_with_spaced_tag() -> None:
    # RFC 4475 §3.1.1.1: 'sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n'
    value = one("wsinv.dat", "To")
    addr = parse_name_addr(value)
    assert addr.display_name is None
    assert str(addr.uri) == "sip:vivekg@chair-dnrc.example.com"
    assert addr.tag == "1918181833n"
    assert str(addr) == value


def test_wsinv_from_display_name_with_escaped_quotes() -> None:
    # RFC 4475 §3.1.1.1: "J Rosenberg \\\"" unquotes to: J Rosenberg \"
    value = one("wsinv.dat", "From")
    addr = parse_name_addr(value)
    assert addr.display_name == 'J Rosenberg \\"'
    assert sip_uri(addr).user == "jdrosen"
    assert addr.tag == "98asjd8"
    assert str(addr) == value


def test_wsinv_contact_params() -> None:
    # RFC 4475 §3.1.1.1: q=0.33, newparam=newvalue, secondparam (no value)
    (value,) = split_comma_list(one("wsinv.dat", "Contact"))
    addr = parse_contact(value)
    assert isinstance(addr, NameAddr)
    assert addr.display_name == 'Quoted string ""'
    assert addr.q == pytest.approx(0.33)
    assert addr.param("newparam") == "newvalue"
    assert addr.param("secondparam") == ""
    assert addr.param("NEWPARAM") == "newvalue"
    assert addr.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))


def test_intmeth_quoted_pairs_and_token_display_name() -> None:
    # RFC 4475 §3.1.1.2: To display name has quoted-pairs for BEL, NUL and DEL.
    to_addr = parse_name_addr(one("intmeth.dat", "To"))
    assert to_addr.display_name == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert sip_uri(to_addr).user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    # From: several tokens as display name, a UTF-8 quoted parameter value, an odd tag.
    value = one("intmeth.dat", "From")
    from_addr = parse_name_addr(value)
    assert from_addr.display_name == "token1~` token2'+_ token3*%!.-"
    assert from_addr.tag == "_token~1'+`*%!-."
    utf8_value = '"\u0440\u0430\u0431\u043e\u0442\u0430\u044e\u0449\u0438\u0439"'
    assert from_addr.param("fromParam''~+*_!.-%") == utf8_value
    assert str(from_addr) == value


def test_esc02_display_name_is_not_unescaped() -> None:
    # RFC 4475 §3.1.1.5: display name "%Z%45" stays as written.
    addr = parse_name_addr(one("esc02.dat", "To"))
    assert addr.display_name == "%Z%45"


def test_lwsdisp_no_space_before_angle() -> None:
    # RFC 4475 §3.1.1.6: 'caller<sip:caller@example.com>;tag=323'
    value = one("lwsdisp.dat", "From")
    addr = parse_name_addr(value)
    assert addr.display_name == "caller"
    assert sip_uri(addr).user == "caller"
    assert addr.tag == "323"
    assert str(addr) == value


def test_longreq_long_values() -> None:
    # RFC 4475 §3.1.1.7
    to_addr = parse_name_addr(one("longreq.dat", "To"))
    assert to_addr.display_name is not None
    assert to_addr.display_name.startswith("I have a user name of extreme")
    assert sip_uri(to_addr).port == 6000
    from_addr = parse_name_addr(one("longreq.dat", "From"))
    assert from_addr.tag is not None
    assert len(from_addr.tag) > 150
    assert len(from_addr.params) == 3


def test_escnull_contacts_are_two_bindings() -> None:
    # RFC 4475 §3.1.1.4
    first, second = (parse_name_addr(v) for v in header_values("escnull.dat", "Contact"))
    assert first.uri != second.uri
    assert first != second


def test_cparam01_param_after_addr_spec_belongs_to_header() -> None:
    # RFC 4475 §3.3.12: Contact: sip:+19725552222@gw1.example.net;unknownparam
    addr = parse_name_addr(one("cparam01.dat", "Contact"))
    assert str(addr.uri) == "sip:+19725552222@gw1.example.net"
    assert sip_uri(addr).params == ()
    assert addr.params == (("unknownparam", None),)


def test_cparam02_param_inside_brackets_belongs_to_uri() -> None:
    # RFC 4475 §3.3.13: Contact: <sip:+19725552222@gw1.example.net;unknownparam>
    addr = parse_name_addr(one("cparam02.dat", "Contact"))
    assert sip_uri(addr).params == (("unknownparam", None),)
    assert addr.params == ()
    assert str(addr.uri) == "sip:+19725552222@gw1.example.net;unknownparam"


def test_regescrt_contact_keeps_uri_headers() -> None:
    # RFC 4475 §3.3.14
    addr = parse_name_addr(one("regescrt.dat", "Contact"))
    assert str(addr.uri) == "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
    assert sip_uri(addr).header("Route") == "<sip:sip.example.com>"


def test_unksm2_unknown_schemes() -> None:
    # RFC 4475 §3.3.4: the parse succeeds; a registrar rejects the AOR later.
    to_addr = parse_name_addr(one("unksm2.dat", "To"))
    assert isinstance(to_addr.uri, AbsoluteUri)
    assert str(to_addr.uri) == "isbn:2983792873"
    from_addr = parse_name_addr(one("unksm2.dat", "From"))
    assert str(from_addr.uri) == "http://www.example.com"
    assert from_addr.tag == "3234233"


def test_scalar02_contact_expires_is_returned_as_written() -> None:
    # RFC 4475 §3.1.2.4: ;expires=280297596632815 (the registrar clamps it)
    addr = parse_name_addr(one("scalar02.dat", "Contact"))
    assert addr.expires == 280297596632815


def test_ipv6_contacts() -> None:
    # RFC 5118 §4.1, §4.9
    addr = parse_name_addr(one("ipv6-good.dat", "Contact"))
    assert addr.display_name == "Caller"
    assert sip_uri(addr).host == "2001:db8::1"
    mapped = parse_name_addr(one("ipv4-mapped-ipv6.dat", "Contact"))
    assert mapped.display_name == "T. desk phone"
    assert sip_uri(mapped).host == "::ffff:192.0.2.2"


def test_badvers_token_display_names() -> None:
    # RFC 4475 §3.1.2.16 (the message fails on its version, the addresses are fine)
    assert parse_name_addr(one("badvers.dat", "From")).display_name == "A. Bell"


# --- RFC 4475 invalid messages ----------------------------------------------------------------


def test_quotbal_unterminated_quote() -> None:
    # RFC 4475 §3.1.2.6
    with pytest.raises(SipParseError, match="unterminated quoted string"):
        parse_name_addr(one("quotbal.dat", "To"))


def test_badinv01_empty_contact_params() -> None:
    # RFC 4475 §3.1.2.1: Contact: "Joe" <sip:joe@example.org>;;;;
    with pytest.raises(SipParseError, match="empty parameter"):
        parse_name_addr(one("badinv01.dat", "Contact"))


def test_badaspec_spaces_inside_angle_brackets() -> None:
    # RFC 4475 §3.1.2.14: '< sip:t.watson@example.org >'
    with pytest.raises(SipParseError, match="whitespace inside < >"):
        parse_name_addr(one("badaspec.dat", "To"))
    # its From is fine
    assert parse_name_addr(one("badaspec.dat", "From")).display_name == "Bell, Alexander"


def test_baddn_unquoted_comma_in_display_name() -> None:
    # RFC 4475 §3.1.2.15: 'Bell, Alexander <sip:a.g.bell@example.com>;tag=43'
    value = one("baddn.dat", "From")
    with pytest.raises(SipParseError, match="display name"):
        parse_name_addr(value)
    # Split as a list, the first element is not an address either.
    first, _second = split_comma_list(value)
    with pytest.raises(SipParseError):
        parse_name_addr(first)


def test_regbadct_uri_headers_outside_brackets() -> None:
    # RFC 4475 §3.1.2.13
    with pytest.raises(SipParseError, match="must be enclosed in < >"):
        parse_contact(one("regbadct.dat", "Contact"))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("<sip:a@b", "'<' without matching '>'"),
        ("sip:a@b>", "'>' without '<'"),
        ("<>", "empty URI"),
        ('"Alice" sip:a@b', "followed by <URI>"),
        ('"Alice"', "followed by <URI>"),
        ('"bad\x01" <sip:a@b>', "invalid character"),
        ("<sip:a@b>x", "unexpected text"),
        ("<sip:a@b>;tag=", "empty value"),
        ("<sip:a@b>;tag", None),
        ("sip:a@b;tag=x;", "empty parameter"),
        ("<sip:a@b> ; x = \"unterminated", "quoted"),
        ("sip:a,b@c", "','"),
        ("Alice", "missing URI scheme"),
        ("<sip:a@b\t>", "whitespace"),
        ("a@b <sip:a@b>", "display name"),
        ('say "hi" <sip:a@b>', "display name"),
    ],
)
def test_errors(value: str, reason: str | None) -> None:
    if reason is None:  # parses, but the tag property refuses a flag 'tag'
        with pytest.raises(SipParseError, match="tag"):
            _ = parse_name_addr(value).tag
        return
    with pytest.raises(SipParseError) as caught:
        parse_name_addr(value)
    assert reason in caught.value.reason


# --- properties, copies -----------------------------------------------------------------------


def test_tel_uris_in_both_forms() -> None:
    # RFC 3261 §20.10: after an addr-spec the ';' starts header parameters, even for tel:.
    spec = parse_name_addr("tel:+1-201-555-0123;tag=x")
    assert str(spec.uri) == "tel:+1-201-555-0123"
    assert spec.tag == "x"
    bracketed = parse_name_addr("<tel:7042;phone-context=example.com>;tag=y")
    assert str(bracketed.uri) == "tel:7042;phone-context=example.com"
    assert bracketed.tag == "y"


def test_contact_star() -> None:
    assert parse_contact("*") == "*"
    assert parse_contact(" * ") == "*"
    assert isinstance(parse_contact("<sip:*@h>"), NameAddr)


def test_expires_and_q() -> None:
    addr = parse_name_addr("<sip:a@b>;expires=3600;q=1.0")
    assert addr.expires == 3600
    assert addr.q == 1.0
    assert parse_name_addr("<sip:a@b>").expires is None
    assert parse_name_addr("<sip:a@b>").q is None
    assert parse_name_addr("<sip:a@b>;q=0").q == 0.0
    for bad in ("<sip:a@b>;q=1.5", "<sip:a@b>;q=2", "<sip:a@b>;q=0.1234", "<sip:a@b>;q"):
        with pytest.raises(SipParseError, match="qvalue"):
            _ = parse_name_addr(bad).q
    for bad in ("<sip:a@b>;expires=-1", "<sip:a@b>;expires=soon", "<sip:a@b>;expires"):
        with pytest.raises(SipParseError, match="delta-seconds"):
            _ = parse_name_addr(bad).expires


def test_with_tag_keeps_the_address_text() -> None:
    value = '"J Rosenberg \\\\\\""       <sip:jdrosen@example.com> ; x = 1'
    addr = parse_name_addr(value)
    tagged = addr.with_tag("abc")
    assert str(tagged) == '"J Rosenberg \\\\\\""       <sip:jdrosen@example.com>;x=1;tag=abc'
    assert tagged.tag == "abc"
    assert str(addr) == value
    assert str(parse_name_addr("sip:a@b").with_tag("t1")) == "sip:a@b;tag=t1"
    assert str(parse_name_addr("sip:a@b;tag=old").with_tag("new")) == "sip:a@b;tag=new"
    with pytest.raises(LocalProtocolError):
        addr.with_tag("not a token")


def test_param_copies() -> None:
    addr = parse_name_addr("<sip:a@b>;expires=60;+sip.instance=\"<urn:uuid:1>\"")
    assert addr.param("+SIP.INSTANCE") == '"<urn:uuid:1>"'
    expected = '<sip:a@b>;expires=0;+sip.instance="<urn:uuid:1>"'
    assert str(addr.with_param("expires", "0")) == expected
    assert str(addr.without_params("expires")) == '<sip:a@b>;+sip.instance="<urn:uuid:1>"'


def test_built_and_replaced_addresses() -> None:
    built = NameAddr(uri=SipUri(user="alice", host="atlanta.example.com"), display_name='Al "x"')
    assert str(built) == '"Al \\"x\\"" <sip:alice@atlanta.example.com>'
    assert parse_name_addr(str(built)) == built
    bare = NameAddr(uri=parse_uri("sip:a@b;lr"), params=(("tag", "1"),))
    assert str(bare) == "<sip:a@b;lr>;tag=1"
    # A new URI in an addr-spec is written in <> (its params must not become header params).
    spec = parse_name_addr("sip:a@b;tag=x")
    moved = spec.replace(uri=parse_uri("sip:c@d;transport=tcp"))
    assert str(moved) == "<sip:c@d;transport=tcp>;tag=x"
    assert parse_name_addr(str(moved)) == moved
    assert str(spec.replace(display_name="Bob")) == '"Bob" <sip:a@b>;tag=x'


def test_equality_uses_uri_comparison() -> None:
    assert parse_name_addr("<sip:%61lice@h>;tag=1") == parse_name_addr("sip:alice@H;tag=1")
    assert parse_name_addr("<sip:alice@h>;tag=1") != parse_name_addr("<sip:alice@h>;tag=2")
    assert len({parse_name_addr("<sip:a@h>"), parse_name_addr("<sip:a@H>")}) == 1


def test_parsed_object_has_every_field() -> None:
    addr = parse_name_addr('"A" <sip:a@b>;tag=1')
    for field in dataclasses.fields(NameAddr):
        getattr(addr, field.name)
    assert repr(addr) == repr(
        NameAddr(uri=addr.uri, display_name=addr.display_name, params=addr.params)
    )


# --- robustness -------------------------------------------------------------------------------

_PIECES = st.sampled_from(
    [*'"<>;=,@: \t\\abcAB1*', "sip:", "tel:+1", "sip:a@b", "<sip:a@b>", "tag=", "\x00", "é"]
)


@st.composite
def address_texts(draw: st.DrawFn) -> str:
    display = draw(st.sampled_from(["", '"A B" ', "Alice ", '"x\\"y"', "a b c", '""']))
    uri = draw(st.sampled_from(["sip:a@b", "sips:[::1]:5061;lr", "tel:+1-2", "urn:x:y"]))
    params = "".join(draw(st.lists(st.sampled_from([";tag=1", " ; q = 0.5", ";x=\"a;b\"", ";f"]))))
    text = f"{display}<{uri}>{params}" if display or draw(st.booleans()) else uri + params
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + "".join(draw(st.lists(_PIECES, max_size=2))) + text[cut:]
    return text


def _parse_or_reject(text: str) -> None:
    try:
        addr = parse_name_addr(text)
    except SipParseError as error:
        assert error.reason
        return
    assert str(addr) == text.strip(" \t")
    with contextlib.suppress(SipParseError):
        _ = (addr.tag, addr.expires, addr.q)
    # The address part survives a parameter change byte for byte, and the result re-parses.
    tagged = addr.with_tag("t")
    assert parse_name_addr(str(tagged)) == tagged
    rebuilt = addr.replace(display_name=addr.display_name)
    assert parse_name_addr(str(rebuilt)) == addr


@settings(max_examples=400, deadline=None)
@given(address_texts())
def test_near_valid_addresses_parse_or_raise(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=20).map("".join))
def test_any_text_parses_or_raises_sip_parse_error(text: str) -> None:
    _parse_or_reject(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_arbitrary_unicode(text: str) -> None:
    _parse_or_reject(text)
    _parse_or_reject(f'"{text}" <sip:a@b>')
