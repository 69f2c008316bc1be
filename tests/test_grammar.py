"""edge.sip.grammar: tokens, quoted strings, %-escapes, hosts, generic parameters and comma
lists (RFC 3261 §25.1, §7.3.1; RFC 4475 vectors from tests/vectors/torture)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.grammar import (
    TOKEN_CHARS,
    WORD_RE,
    check_host,
    check_ip_address,
    check_port,
    escape,
    format_host_port,
    format_params,
    has_param,
    host_key,
    is_ip_address,
    is_token,
    param,
    parse_params,
    pct_decode,
    pct_normalize,
    quote,
    remove_params,
    set_param,
    split_comma_list,
    unquote,
)

TORTURE = Path(__file__).parent / "vectors" / "torture"


def unfolded_header(name: str, header: str) -> str:
    raw = (TORTURE / name).read_bytes().split(b"\r\n\r\n", 1)[0].decode("utf-8")
    for line in re.sub("\r\n[ \t]+", " ", raw).split("\r\n")[1:]:
        hname, _colon, value = line.partition(":")
        if hname.strip(" \t").lower() == header.lower():
            return value.strip(" \t")
    raise AssertionError(f"{header} not in {name}")


# --- tokens and quoted strings ----------------------------------------------------------------


def test_tokens() -> None:
    assert is_token("!interesting-Method0123456789_*+`.%indeed'~")  # RFC 4475 §3.1.1.2
    assert not is_token("")
    assert not is_token("a b")
    assert not is_token("a:b")
    assert not is_token("\u00e9")


def test_word_and_token_chars() -> None:
    # RFC 4475 §3.1.1.2 intmeth.dat Call-ID: word "@" word
    call_id = "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    left, _at, right = call_id.partition("@")
    assert WORD_RE.fullmatch(left) is not None
    assert WORD_RE.fullmatch(right) is not None
    assert WORD_RE.fullmatch("a b") is None
    assert all(is_token(char) for char in TOKEN_CHARS)
    assert len(TOKEN_CHARS) == 26 * 2 + 10 + 10


def test_unquote() -> None:
    assert unquote('"J Rosenberg \\\\\\""') == 'J Rosenberg \\"'  # RFC 4475 §3.1.1.1
    assert unquote('""') == ""
    assert unquote('"a\tb"') == "a\tb"
    assert unquote('"\u0440\u0430\u0431"') == "\u0440\u0430\u0431"  # UTF8-NONASCII
    assert unquote('"BEL:\\\x07"') == "BEL:\x07"
    for bad in ('"open', '"', "nope", '"a"b"', '"a\x01"', '"\\\n"'):
        with pytest.raises(SipParseError):
            unquote(bad)


def test_quote() -> None:
    assert quote('J Rosenberg \\"') == '"J Rosenberg \\\\\\""'
    assert quote("BEL:\x07") == '"BEL:\\\x07"'
    assert quote("\u0440") == '"\u0440"'
    with pytest.raises(LocalProtocolError):
        quote("line\r\nInjected: header")


@settings(max_examples=300, deadline=None)
@given(st.text().filter(lambda t: "\r" not in t and "\n" not in t))
def test_quote_round_trips(text: str) -> None:
    assert unquote(quote(text)) == text


# --- escapes ----------------------------------------------------------------------------------


def test_pct_decode_once() -> None:
    # RFC 4475 §3.1.1.3: decode exactly once.
    assert pct_decode("v%61lue%25%34%31") == "value%41"
    assert pct_decode("null-%00-null") == "null-\x00-null"  # RFC 4475 §3.1.1.4
    assert pct_decode("%C3%A9") == "\u00e9"
    assert pct_decode("%FF") != pct_decode("%FE")
    assert pct_decode("plain") == "plain"


def test_pct_normalize_keeps_reserved_escapes() -> None:
    assert pct_normalize("%61lice") == "alice"
    assert pct_normalize("a%3bb") == "a%3Bb"
    assert pct_normalize("a%40b") == "a%40b"
    assert pct_normalize("a%20b") == "a b"


def test_escape() -> None:
    assert escape("I have spaces", "&=+$,;?/") == "I%20have%20spaces"
    assert escape("u@h;x", "&=+$,;?/") == "u%40h;x"
    assert escape("\x00", "") == "%00"


# --- hosts and ports --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "bare"),
    [
        ("example.com", "example.com"),
        ("example.com.", "example.com."),
        ("Chair-DNRC.Example.COM", "Chair-DNRC.Example.COM"),
        ("192.0.2.1", "192.0.2.1"),
        ("255.255.255.255", "255.255.255.255"),
        ("[2001:db8::10]", "2001:db8::10"),
        ("[::ffff:192.0.2.2]", "::ffff:192.0.2.2"),
        ("[2001:db8::192.0.2.1]", "2001:db8::192.0.2.1"),
        ("hlau_4100", "hlau_4100"),
        ("3f4e2a1b9c0d", "3f4e2a1b9c0d"),
    ],
)
def test_good_hosts(host: str, bare: str) -> None:
    assert check_host(host, "x") == bare


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("", "missing host"),
        ("256.0.0.1", "invalid IPv4"),
        ("1.2.3", "invalid IPv4"),
        ("1.2.3.4.5", "invalid IPv4"),
        ("2001:db8::10", "enclosed in [ ]"),  # RFC 5118 §4.2
        ("[2001:db8:::192.0.2.1]", "invalid IPv6"),  # RFC 5118 §4.10
        ("[2001:db8::10", "unterminated"),
        ("[]", "invalid IPv6"),
        ("-a.com", "invalid host"),
        ("a-.com", "invalid host"),
        ("a..com", "invalid host"),
        ("a b", "invalid host"),
    ],
)
def test_bad_hosts(host: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        check_host(host, "malformed thing")
    assert reason in caught.value.reason
    assert caught.value.reason.startswith("malformed thing: ")


def test_ip_addresses_and_keys() -> None:
    assert check_ip_address("192.0.2.1", "x") == "192.0.2.1"
    assert check_ip_address("[2001:db8::9:255]", "x") == "2001:db8::9:255"  # RFC 5118 §4.5
    with pytest.raises(SipParseError):
        check_ip_address("example.com", "x")
    assert host_key("Example.COM") == "example.com"
    assert host_key("2001:DB8:0::1") == "2001:db8::1"


def test_ports() -> None:
    assert check_port("5060", "x") == 5060
    assert check_port("65535", "x") == 65535
    for bad in ("0", "65536", "", "-1", "5e3", "\u0661", "000000"):
        with pytest.raises(SipParseError):
            check_port(bad, "x")
    assert format_host_port("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert format_host_port("h", None) == "h"


# --- generic parameters -----------------------------------------------------------------------


def test_parse_params_with_lws_and_quotes() -> None:
    # RFC 4475 §3.1.1.1 wsinv.dat Contact parameters, unfolded.
    text = ' ; newparam = newvalue ; secondparam ; q = 0.33 ;x="a;b\\"c"'
    assert parse_params(text) == (
        ("newparam", "newvalue"),
        ("secondparam", None),
        ("q", "0.33"),
        ("x", '"a;b\\"c"'),
    )
    assert parse_params("") == ()
    assert parse_params(";received=2001:db8::9:255;maddr=[::1]") == (
        ("received", "2001:db8::9:255"),
        ("maddr", "[::1]"),
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (";;", "empty parameter"),  # RFC 4475 §3.1.2.1
        (";;;;", "empty parameter"),
        (";a;", "empty parameter"),
        (";a=", "empty value for parameter 'a'"),
        (";a= ;b", "empty value for parameter 'a'"),
        (";a=\"x", "quoted"),
        (";a=b c", "unexpected text"),
        ("x", "unexpected text"),
        (";(a)=b", "not a token"),
        (";a=<b>", "invalid value"),
    ],
)
def test_parse_params_errors(text: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_params(text, "malformed Contact")
    assert reason in caught.value.reason
    assert caught.value.reason.startswith("malformed Contact: ")


def test_param_helpers() -> None:
    params = parse_params(";Tag=abc;lr;q=0.5")
    assert param(params, "tag") == "abc"
    assert param(params, "LR") == ""
    assert param(params, "missing") is None
    assert has_param(params, "lr")
    assert not has_param(params, "ttl")
    assert set_param(params, "TAG", "x") == (("Tag", "x"), ("lr", None), ("q", "0.5"))
    assert set_param(params, "new", None)[-1] == ("new", None)
    assert remove_params(params, "LR", "q") == (("Tag", "abc"),)
    assert format_params(params) == ";Tag=abc;lr;q=0.5"


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list(';= \t"\\ab1[]:,')), max_size=30))
def test_parse_params_parses_or_raises(text: str) -> None:
    try:
        params = parse_params(text)
    except SipParseError as error:
        assert error.reason
        return
    assert parse_params(format_params(params)) == params


# --- comma lists ------------------------------------------------------------------------------


def test_split_comma_list() -> None:
    assert split_comma_list("a, b ,c") == ["a", "b", "c"]
    assert split_comma_list('"Doe, John" <sip:j@h>;x="1,2", <sip:a,b@c>') == [
        '"Doe, John" <sip:j@h>;x="1,2"',
        "<sip:a,b@c>",
    ]
    assert split_comma_list('"a\\",b" <sip:x@y>') == ['"a\\",b" <sip:x@y>']
    assert split_comma_list("single") == ["single"]


def test_split_comma_list_wsinv_vias() -> None:
    # RFC 4475 §3.1.1.1: the 'v:' header holds two via-parms after unfolding.
    value = unfolded_header("wsinv.dat", "v")
    first, second = split_comma_list(value)
    assert first.startswith("SIP  / 2.0  / TCP")
    assert second.endswith("branch= z9hG4bK30239")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("a,,b", "empty element"),
        (",a", "empty element"),
        ("a,", "empty element"),
        ("", "empty element"),
        ("SIP/2.0/UDP 192.0.2.15;;,;,,", "empty element"),  # RFC 4475 §3.1.2.1
        ('"open, x', "unterminated quoted string"),
        ("<sip:a@b, c", "'<'"),
        ('"a\\" , <x', "unterminated quoted string"),
    ],
)
def test_split_comma_list_errors(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as caught:
        split_comma_list(value)
    assert reason in caught.value.reason


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list(',"<> \\ab')), max_size=30))
def test_split_comma_list_parses_or_raises(value: str) -> None:
    try:
        parts = split_comma_list(value)
    except SipParseError:
        return
    assert all(part and part == part.strip() for part in parts)
    assert ",".join(parts).replace(" ", "") == value.replace(" ", "")


def test_bounded_memo_parses_once_and_stays_bounded() -> None:
    from edge.sip.grammar import bounded_memo

    calls: list[str] = []

    def parse(text: str) -> tuple[str, ...]:
        calls.append(text)
        if text == "bad":
            raise SipParseError("bad")
        return (text,)

    memo = bounded_memo(parse, 3)
    assert memo("a") is memo("a") and calls == ["a"]
    for text in ("b", "c", "d"):
        memo(text)
    memo("a")  # "a" was the oldest: evicted when "d" came, so parsed again
    assert calls == ["a", "b", "c", "d", "a"]
    for _ in range(2):
        with pytest.raises(SipParseError):
            memo("bad")
    assert calls.count("bad") == 2  # errors are not cached


def test_bounded_memo_keeps_values_in_use_and_forgets_the_rest() -> None:
    from edge.sip.grammar import bounded_memo

    calls: list[str] = []

    def parse(text: str) -> tuple[str, ...]:
        calls.append(text)
        return (text,)

    memo = bounded_memo(parse, 4)
    for text in ("a", "b", "c"):
        memo(text)
    memo("a")  # still held (in the older half): found, and kept fresh
    for text in ("d", "e"):
        memo(text)
    memo("a")  # used again: still there
    memo("f")
    assert calls == ["a", "b", "c", "d", "e", "f"]
    memo("b")  # not used since: forgotten
    assert calls[-1] == "b"
    # However many texts go through, at most 4 are held: a cycle over 5 always misses.
    calls.clear()
    for _ in range(3):
        for text in "vwxyz":
            memo(text)
    assert len(calls) == 15


_TOKEN_TEXT = st.text(st.sampled_from(list("abcXYZ019-.!%*_+`'~")), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(_TOKEN_TEXT, st.none() | st.builds(
    lambda a, b: a + b, _TOKEN_TEXT, st.text(st.sampled_from(list("a1:.")), max_size=4)
)), max_size=5))
def test_parse_params_without_lws_reads_like_with_lws(pairs: list[tuple[str, str | None]]) -> None:
    # ";name=value" lists with no LWS take a shortcut (split at ";" and "="); the same list
    # with LWS around ";" goes through the full grammar: both must give the same pairs.
    text = format_params(pairs)
    spaced = text.replace(";", " ; ")
    assert parse_params(text) == parse_params(spaced) == tuple(pairs)


@pytest.mark.parametrize(("text", "address"), [
    ("192.0.2.1", True), ("2001:db8::1", True), ("::ffff:192.0.2.1", True),
    ("gw.carrier.example", False), ("192.0.2", False), ("[2001:db8::1]", False), ("", False),
])
def test_is_ip_address(text: str, address: bool) -> None:
    assert is_ip_address(text) is address
