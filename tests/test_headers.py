"""Header names, compact forms and the ordered header list (`edge.sip.headers`)."""

from __future__ import annotations

import pytest

from edge.sip.errors import SipParseError
from edge.sip.headers import COMPACT_FORMS, LIST_HEADERS, Headers, canonical_name, split_list

# RFC 3261 §7.3.3 (v i f t m l c k s e) and later registrations (o: RFC 6665, u: RFC 6665,
# r: RFC 3515).
COMPACT = {
    "v": "Via",
    "i": "Call-ID",
    "f": "From",
    "t": "To",
    "m": "Contact",
    "l": "Content-Length",
    "c": "Content-Type",
    "k": "Supported",
    "s": "Subject",
    "e": "Content-Encoding",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
}


@pytest.mark.parametrize(("short", "long"), sorted(COMPACT.items()))
def test_compact_forms_map_to_canonical_names(short: str, long: str) -> None:
    assert canonical_name(short) == long
    assert canonical_name(short.upper()) == long
    assert COMPACT_FORMS[short] == long


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("call-id", "Call-ID"),
        ("CALL-ID", "Call-ID"),
        ("cseq", "CSeq"),
        ("CSEQ", "CSeq"),
        ("www-authenticate", "WWW-Authenticate"),
        ("max-forwards", "Max-Forwards"),
        ("MIME-version", "MIME-Version"),
        ("rack", "RAck"),
        ("Rseq", "RSeq"),
        ("vIA", "Via"),
        ("content-LENGTH", "Content-Length"),
        ("X-Unknown-Header", "X-Unknown-Header"),
        ("x-unknown-header", "x-unknown-header"),
    ],
)
def test_canonical_names_are_case_insensitive(written: str, canonical: str) -> None:
    assert canonical_name(written) == canonical


def test_lookup_is_case_insensitive_and_compact_aware() -> None:
    headers = Headers()
    headers.add("v", "SIP/2.0/UDP a.example.com;branch=z9hG4bK-1")
    headers.add("i", "abc@host")
    headers.add("X-Custom", "one")
    assert headers.get("Via") == "SIP/2.0/UDP a.example.com;branch=z9hG4bK-1"
    assert headers.get("VIA") == headers.get("v") == headers.get("V")
    assert headers.get("call-id") == "abc@host"
    assert headers.get("x-custom") == headers.get("X-CUSTOM") == "one"
    assert "CALL-ID" in headers
    assert "i" in headers
    assert "Contact" not in headers
    assert 42 not in headers
    assert headers.get("Contact") is None
    assert headers.get_all("Contact") == []
    assert headers.remove_first("Contact") is None


def test_add_writes_canonical_names() -> None:
    headers = Headers.of([("v", "SIP/2.0/UDP h;branch=z9hG4bK-1"), ("call-id", "x")])
    assert list(headers) == [("Via", "SIP/2.0/UDP h;branch=z9hG4bK-1"), ("Call-ID", "x")]


def test_get_all_splits_list_headers_across_lines() -> None:
    headers = Headers.of(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK-a, SIP/2.0/UDP b;branch=z9hG4bK-b"),
            ("Contact", "<sip:a@x>"),
            ("Via", "SIP/2.0/TCP c:5061;branch=z9hG4bK-c"),
        ]
    )
    assert headers.get_all("via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK-a",
        "SIP/2.0/UDP b;branch=z9hG4bK-b",
        "SIP/2.0/TCP c:5061;branch=z9hG4bK-c",
    ]
    assert headers.get_lines("Via") == [
        "SIP/2.0/UDP a;branch=z9hG4bK-a, SIP/2.0/UDP b;branch=z9hG4bK-b",
        "SIP/2.0/TCP c:5061;branch=z9hG4bK-c",
    ]
    # get() is the first line, unsplit.
    assert headers.get("Via") == "SIP/2.0/UDP a;branch=z9hG4bK-a, SIP/2.0/UDP b;branch=z9hG4bK-b"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        (
            "WWW-Authenticate",
            'Digest realm="atlanta.example.com", qop="auth", nonce="84f1c1ae6cbe5ua9c8e88df", '
            'opaque="", stale=FALSE, algorithm=MD5',
        ),
        ("Proxy-Authenticate", 'Digest realm="a", nonce="b", qop="auth,auth-int"'),
        ("Authorization", 'Digest username="bob", realm="a", nonce="n", uri="sip:a", response="r"'),
        ("Date", "Sat, 13 Nov 2010 23:29:00 GMT"),
        ("Subject", "lunch, tomorrow, maybe"),
        ("X-Unknown", "a, b, c"),
    ],
)
def test_get_all_does_not_split_headers_that_are_not_lists(name: str, value: str) -> None:
    headers = Headers.of([(name, value), (name, value)])
    assert name not in LIST_HEADERS
    assert headers.get_all(name) == [value, value]


def test_list_headers_cover_the_comma_lists_a_b2bua_reads() -> None:
    for name in ("Via", "Contact", "Route", "Record-Route", "Supported", "Require", "Allow"):
        assert name in LIST_HEADERS
    for name in ("WWW-Authenticate", "Authorization", "Date", "From", "To", "Call-ID", "CSeq"):
        assert name not in LIST_HEADERS


@pytest.mark.parametrize(
    ("value", "parts"),
    [
        ("a", ["a"]),
        ("  a  ", ["a"]),
        ("a,b", ["a", "b"]),
        ("a ,\tb , c", ["a", "b", "c"]),
        ('"Doe, John" <sip:j@x>, <sip:k@y>', ['"Doe, John" <sip:j@x>', "<sip:k@y>"]),
        ('"a \\" , b" <sip:j@x>, c', ['"a \\" , b" <sip:j@x>', "c"]),
        ("<sip:a@x;p=1,2>;q=0.5, <sip:b@y>", ["<sip:a@x;p=1,2>;q=0.5", "<sip:b@y>"]),
        ("<sip:a@x?h=1,2>, sip:b@y", ["<sip:a@x?h=1,2>", "sip:b@y"]),
        ('"<not an angle, really" <sip:a@x>, b', ['"<not an angle, really" <sip:a@x>', "b"]),
    ],
)
def test_split_list_respects_quotes_and_angle_brackets(value: str, parts: list[str]) -> None:
    assert split_list(value) == parts


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"unterminated, a', "unterminated quoted string"),
        ('"unterminated', "unterminated quoted string"),
        ("<sip:a@x, b", "'<'"),
        ("<sip:a@x", "'<'"),
        ("a,,b", "empty element"),
        ("a, ", "empty element"),
        (",a", "empty element"),
    ],
)
def test_split_list_rejects_malformed_lists(value: str, reason: str) -> None:
    with pytest.raises(SipParseError, match=reason) as caught:
        split_list(value)
    assert caught.value.status == 400


def _sample() -> Headers:
    return Headers.of(
        [
            ("Via", "SIP/2.0/UDP a;branch=z9hG4bK-a"),
            ("Max-Forwards", "70"),
            ("Route", "<sip:p1;lr>, <sip:p2;lr>"),
            ("Route", "<sip:p3;lr>"),
            ("From", "<sip:a@x>;tag=1"),
            ("X-Trace", "one"),
            ("X-Trace", "two"),
        ]
    )


def test_set_replaces_all_lines_in_place_of_the_first() -> None:
    headers = _sample()
    headers.set("x-trace", "only")
    assert [name for name, _ in headers] == [
        "Via", "Max-Forwards", "Route", "Route", "From", "x-trace",
    ]
    assert headers.get_all("X-Trace") == ["only"]
    headers.set("Route", "<sip:new;lr>")
    assert list(headers)[2] == ("Route", "<sip:new;lr>")
    assert headers.get_all("Route") == ["<sip:new;lr>"]
    assert len(headers) == 5
    # A header that is not there goes at the end.
    headers.set("Contact", "<sip:a@10.0.0.1>")
    assert list(headers)[-1] == ("Contact", "<sip:a@10.0.0.1>")


def test_add_appends_and_prepend_puts_first() -> None:
    headers = _sample()
    headers.add("Via", "SIP/2.0/UDP z;branch=z9hG4bK-z")
    headers.prepend("Via", "SIP/2.0/UDP proxy;branch=z9hG4bK-p")
    assert next(iter(headers)) == ("Via", "SIP/2.0/UDP proxy;branch=z9hG4bK-p")
    assert list(headers)[-1] == ("Via", "SIP/2.0/UDP z;branch=z9hG4bK-z")
    assert headers.get_all("Via") == [
        "SIP/2.0/UDP proxy;branch=z9hG4bK-p",
        "SIP/2.0/UDP a;branch=z9hG4bK-a",
        "SIP/2.0/UDP z;branch=z9hG4bK-z",
    ]


def test_remove_drops_every_line_and_keeps_the_others_in_order() -> None:
    headers = _sample()
    headers.remove("route")
    assert [name for name, _ in headers] == ["Via", "Max-Forwards", "From", "X-Trace", "X-Trace"]
    headers.remove("X-TRACE")
    assert [name for name, _ in headers] == ["Via", "Max-Forwards", "From"]
    headers.remove("Not-There")
    assert len(headers) == 3


def test_remove_first_pops_one_value_of_a_comma_list() -> None:
    headers = _sample()
    assert headers.remove_first("Route") == "<sip:p1;lr>"
    assert headers.get_lines("Route") == ["<sip:p2;lr>", "<sip:p3;lr>"]
    assert headers.remove_first("Route") == "<sip:p2;lr>"
    assert headers.get_lines("Route") == ["<sip:p3;lr>"]
    assert [name for name, _ in headers][:3] == ["Via", "Max-Forwards", "Route"]
    assert headers.remove_first("Route") == "<sip:p3;lr>"
    assert "Route" not in headers
    assert headers.remove_first("Route") is None
    # A header that is not a list is removed whole, commas and all.
    headers.add("Date", "Sat, 13 Nov 2010 23:29:00 GMT")
    assert headers.remove_first("Date") == "Sat, 13 Nov 2010 23:29:00 GMT"
    assert "Date" not in headers


def test_replace_first_keeps_position_and_the_rest_of_the_list() -> None:
    headers = _sample()
    headers.replace_first("Route", "<sip:replaced;lr>")
    assert list(headers)[2] == ("Route", "<sip:replaced;lr>, <sip:p2;lr>")
    assert headers.get_all("Route") == ["<sip:replaced;lr>", "<sip:p2;lr>", "<sip:p3;lr>"]
    headers.replace_first("Via", "SIP/2.0/UDP a;branch=z9hG4bK-a;received=10.0.0.9")
    assert next(iter(headers)) == ("Via", "SIP/2.0/UDP a;branch=z9hG4bK-a;received=10.0.0.9")
    assert len(headers) == 7
    # Absent: appended.
    headers.replace_first("Contact", "<sip:c@x>")
    assert list(headers)[-1] == ("Contact", "<sip:c@x>")


def test_written_names_survive_edits_of_other_headers() -> None:
    # Entries as the parser makes them: (lookup key, name as written, value).
    headers = Headers(
        [("via", "v", "SIP/2.0/UDP a;branch=z9hG4bK-1"), ("x-odd", "x-ODD", ";;,,")]
    )
    headers.replace_first("Via", "SIP/2.0/UDP a;branch=z9hG4bK-1;received=10.0.0.1")
    headers.add("Max-Forwards", "69")
    assert list(headers) == [
        ("v", "SIP/2.0/UDP a;branch=z9hG4bK-1;received=10.0.0.1"),
        ("x-ODD", ";;,,"),
        ("Max-Forwards", "69"),
    ]
    assert headers.get("X-Odd") == ";;,,"


def test_copy_is_independent() -> None:
    headers = _sample()
    clone = headers.copy()
    clone.remove("Via")
    clone.add("X-New", "1")
    assert "Via" in headers
    assert "X-New" not in headers
    assert len(headers) == 7
    assert len(clone) == 7


def _register_message() -> object:
    from edge.sip.message import parse_message

    return parse_message(
        b"REGISTER sip:pbx.test SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK-1\r\n"
        b"v: SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bK-0\r\n"
        b"From: <sip:alice@pbx.test>;tag=a1\r\n"
        b"To: <sip:alice@pbx.test>\r\n"
        b"Call-ID: c1\r\n"
        b"CSeq: 7 REGISTER\r\n"
        b"Content-Length: 0\r\n\r\n"
    )


def test_a_change_forgets_the_parses_of_that_header_only() -> None:
    from edge.sip.message import Request

    message = _register_message()
    assert isinstance(message, Request)
    cseq, from_addr, top = message.cseq, message.from_addr, message.top_via
    assert [via.host for via in message.vias] == ["192.0.2.1", "192.0.2.2"]
    message.headers.set("To", "<sip:bob@pbx.test>")
    assert message.to_addr.uri.user == "bob"  # type: ignore[union-attr]
    assert message.cseq is cseq and message.from_addr is from_addr and message.top_via is top
    message.headers.prepend("Via", "SIP/2.0/UDP proxy.test;branch=z9hG4bK-p")
    assert message.top_via.host == "proxy.test"
    assert [via.host for via in message.vias] == ["proxy.test", "192.0.2.1", "192.0.2.2"]
    assert message.cseq is cseq
    message.headers.remove_first("Via")
    message.headers.remove_first("Via")
    assert [via.host for via in message.vias] == ["192.0.2.2"]
    message.headers.replace_first("CSeq", "8 REGISTER")
    assert message.cseq.seq == 8
    message.headers.forget_parsed()
    assert message.cseq is not cseq and message.cseq.seq == 8


def test_headers_keys_and_counts() -> None:
    headers = Headers.of([("Via", "a"), ("v", "b"), ("Route", "<sip:r>"), ("To", "<sip:t>")])
    assert headers.keys() == ["via", "via", "route", "to"]
    assert headers.counts() == {"via": 2, "route": 1, "to": 1}
    assert headers.get_all("v") == ["a", "b"]
    headers.add("Supported", "path, outbound")
    assert headers.get_all("Supported") == ["path", "outbound"]
    assert headers.get_all("k") == ["path", "outbound"]
