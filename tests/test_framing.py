"""Stream framing (RFC 3261 §18.3) and RFC 5626 keep-alives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.sip.errors import SipParseError
from edge.sip.framing import KEEPALIVE_PING, KeepAlivePing, StreamFramer

OPTIONS = (
    b"OPTIONS sip:pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@pbx.test>;tag=1\r\nTo: <sip:pbx.test>\r\n"
    b"Call-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
MESSAGE = (
    b"MESSAGE sip:b@pbx.test SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bK-2\r\n"
    b"Max-Forwards: 70\r\nf: <sip:a@pbx.test>;tag=1\r\nt: <sip:b@pbx.test>\r\n"
    b"i: c2\r\nCSeq: 1 MESSAGE\r\nc: text/plain\r\nl : 11\r\n\r\nhello\r\n\r\n\r\n"
)


def test_two_messages_in_one_read() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS + MESSAGE) == [OPTIONS, MESSAGE]
    assert framer.buffered == 0


def test_body_containing_blank_lines_is_framed_by_content_length() -> None:
    framer = StreamFramer()
    items = framer.feed(MESSAGE)
    assert items == [MESSAGE]
    assert isinstance(items[0], bytes) and items[0].endswith(b"hello\r\n\r\n\r\n")


def test_partial_message_waits_for_more() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS[:50]) == []
    assert framer.feed(OPTIONS[50:]) == [OPTIONS]


def test_keepalive_ping_between_messages_and_leading_crlf_ignored() -> None:
    framer = StreamFramer()
    items = framer.feed(b"\r\n\r\n" + OPTIONS + b"\r\n" + MESSAGE + b"\r\n\r\n")
    assert items == [KEEPALIVE_PING, OPTIONS, MESSAGE, KEEPALIVE_PING]
    assert isinstance(items[0], KeepAlivePing)


def test_missing_content_length_is_a_framing_error() -> None:
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="missing Content-Length"):
        framer.feed(OPTIONS.replace(b"Content-Length: 0\r\n", b""))


@pytest.mark.parametrize("value", [b"-999", b"five", b"1e3"])
def test_bad_content_length_is_a_framing_error(value: bytes) -> None:
    # RFC 4475 §3.1.2.3 (ncl.dat): never use a negative length as a count.
    framer = StreamFramer()
    with pytest.raises(SipParseError, match="malformed Content-Length"):
        framer.feed(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: " + value))


def test_oversized_message_is_refused_before_buffering_it_all() -> None:
    framer = StreamFramer(max_size=1000)
    with pytest.raises(SipParseError) as info:
        framer.feed(OPTIONS.replace(b"Content-Length: 0", b"Content-Length: 5000"))
    assert info.value.status == 513
    framer = StreamFramer(max_size=100)
    with pytest.raises(SipParseError):
        framer.feed(b"X" * 200)


_pieces = st.lists(
    st.sampled_from([OPTIONS, MESSAGE, b"\r\n\r\n", b"\r\n"]), min_size=1, max_size=6
)


@given(_pieces, st.data())
def test_framing_byte_by_byte_equals_framing_whole(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    whole = StreamFramer().feed(stream)
    framer = StreamFramer()
    split: list[bytes | KeepAlivePing] = []
    position = 0
    while position < len(stream):
        step = data.draw(st.integers(min_value=1, max_value=40))
        split += framer.feed(stream[position : position + step])
        position += step
    assert split == whole
    bytewise = StreamFramer()
    one_by_one: list[bytes | KeepAlivePing] = []
    for i in range(len(stream)):
        one_by_one += bytewise.feed(stream[i : i + 1])
    assert one_by_one == whole


@given(st.binary(max_size=300))
def test_any_bytes_frame_or_raise_the_parse_error(blob: bytes) -> None:
    framer = StreamFramer(max_size=200)
    try:
        whole = framer.feed(blob)
    except SipParseError:
        return
    bytewise = StreamFramer(max_size=200)
    items: list[bytes | KeepAlivePing] = []
    try:
        for i in range(len(blob)):
            items += bytewise.feed(blob[i : i + 1])
    except SipParseError:
        return
    assert items == whole
