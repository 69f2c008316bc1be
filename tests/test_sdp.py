"""Tests of edge.sip.sdp: vectors round-trip, fields, helpers, the relay rewrite, errors, fuzz."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.sdp import (
    Attribute,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    RtcpAddress,
    RtpMap,
    SdpParseError,
    SessionDescription,
    TimeDescription,
)

VECTORS = Path(__file__).parent / "vectors" / "sdp"
VECTOR_FILES = sorted(VECTORS.glob("*.sdp"))


def load(name: str) -> SessionDescription:
    return SessionDescription.parse((VECTORS / name).read_bytes())


def test_vectors_are_present() -> None:
    assert len(VECTOR_FILES) >= 10
    sources = (VECTORS / "SOURCES.md").read_text()
    for path in VECTOR_FILES:
        assert f"`{path.name}`" in sources, f"{path.name} has no line in SOURCES.md"


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.name)
def test_vector_round_trips_byte_exact(path: Path) -> None:
    data = path.read_bytes()
    assert data.endswith(b"\r\n")
    sdp = SessionDescription.parse(data)
    assert sdp.to_bytes() == data
    assert str(sdp) == data.decode()
    # Parsing a str gives the same model.
    assert SessionDescription.parse(data.decode()) == sdp


@pytest.mark.parametrize("path", VECTOR_FILES, ids=lambda p: p.name)
def test_vector_parses_with_lf_only_and_no_final_line_end(path: Path) -> None:
    # Real phones send bare LF and drop the last line end; the model must not change.
    data = path.read_bytes()
    sloppy = data.replace(b"\r\n", b"\n").rstrip(b"\n")
    assert SessionDescription.parse(sloppy) == SessionDescription.parse(data)
    assert SessionDescription.parse(sloppy).to_bytes() == data


def test_rfc4566_seminar_fields() -> None:
    sdp = load("rfc4566-5-seminar.sdp")
    assert sdp.version == 0
    assert sdp.origin == Origin(
        username="jdoe",
        sess_id="2890844526",
        sess_version="2890842807",
        nettype="IN",
        addrtype="IP4",
        address="10.47.16.5",
    )
    assert sdp.session_name == "SDP Seminar"
    assert sdp.information == "A Seminar on the session description protocol"
    assert sdp.uri == "http://www.example.com/seminars/sdp.pdf"
    assert sdp.emails == ("j.doe@example.com (Jane Doe)",)
    assert sdp.phones == ()
    assert sdp.connection == Connection(address="224.2.17.12", ttl=127)
    assert sdp.times == (TimeDescription(start=2873397496, stop=2873404696),)
    assert sdp.attributes == (Attribute("recvonly"),)
    audio, video = sdp.media
    assert (audio.media, audio.port, audio.proto, audio.formats) == (
        "audio",
        49170,
        "RTP/AVP",
        ("0",),
    )
    assert (video.media, video.port, video.formats) == ("video", 51372, ("99",))
    assert video.rtpmap() == {99: RtpMap("h263-1998", 90000, 1)}
    assert audio.rtpmap() == {0: RtpMap("PCMU", 8000, 1)}
    # Session-level a=recvonly applies to both media (RFC 8866 §6.7).
    assert sdp.direction == "recvonly"
    assert audio.direction is None
    assert [sdp.direction_of(m) for m in sdp.media] == ["recvonly", "recvonly"]
    assert sdp.effective_connection(video) == Connection(address="224.2.17.12", ttl=127)


def test_rfc8866_call_fields() -> None:
    sdp = load("rfc8866-5-call.sdp")
    assert sdp.emails == ("Jane Doe <jane@jdoe.example.com>",)
    assert sdp.phones == ("+1 617 555-6011",)
    assert [m.port for m in sdp.media] == [49170, 49180, 51372]
    video = sdp.media[2]
    assert video.connections == (Connection(addrtype="IP6", address="2001:db8::2"),)
    assert sdp.effective_connection(video) == Connection(addrtype="IP6", address="2001:db8::2")
    assert sdp.effective_connection(sdp.media[0]) == Connection(address="198.51.100.1")
    assert sdp.direction_of(sdp.media[0]) == "sendrecv"


def test_rfc4317_offer_codecs_in_m_line_order() -> None:
    sdp = load("rfc4317-2.1-offer.sdp")
    assert sdp.session_name == ""
    audio, video = sdp.media
    assert list(audio.rtpmap().items()) == [
        (0, RtpMap("PCMU", 8000)),
        (8, RtpMap("PCMA", 8000)),
        (97, RtpMap("iLBC", 8000)),
    ]
    assert list(video.rtpmap()) == [31, 32]
    assert audio.fmtp() == {}


def test_rfc5118_ipv6_in_sdp() -> None:
    sdp = load("rfc5118-4.6-ipv6-in-sdp.sdp")
    assert sdp.origin.addrtype == "IP6"
    assert sdp.origin.address == "2001:db8::20"
    assert sdp.origin.sess_id == "971731711378798081"
    assert sdp.connection == Connection(addrtype="IP6", address="2001:db8::20")
    assert sdp.media[0].rtpmap() == {2: RtpMap("G726-32", 8000)}
    assert sdp.times[0] == TimeDescription(start=3338481189, stop=3370017201)


def test_rfc5118_multiple_ip_versions_per_media() -> None:
    sdp = load("rfc5118-4.8-mult-ip-in-sdp.sdp")
    assert sdp.connection is None
    assert sdp.session_name == ""
    audio, video = sdp.media
    assert sdp.effective_connection(audio) == Connection(address="192.0.2.1")
    assert sdp.effective_connection(video) == Connection(addrtype="IP6", address="2001:db8::1")


def test_rfc5118_ipv4_mapped_ipv6() -> None:
    sdp = load("rfc5118-4.9-ipv4-mapped-ipv6.sdp")
    assert sdp.connection == Connection(addrtype="IP6", address="::ffff:192.0.2.2")


def test_torture_sdp01_parses_but_its_bad_rtpmap_is_reported() -> None:
    sdp = load("rfc4475-3.3.15-sdp01.sdp")
    audio, video = sdp.media
    assert audio.formats == ("0", "12")
    assert audio.rtpmap() == {0: RtpMap("PCMU", 8000), 12: RtpMap("QCELP", 8000)}
    # "a=rtpmap:31 LPC" has no clock rate: the helper says so rather than guessing.
    with pytest.raises(SdpParseError, match="rtpmap"):
        video.rtpmap()


def test_sipp_capture() -> None:
    sdp = load("sipp-3.6.1-uac-invite.sdp")
    assert sdp.origin.username == "user1"
    assert sdp.session_name == "-"
    (audio,) = sdp.media
    assert audio.port == 6000
    assert audio.rtpmap() == {0: RtpMap("PCMU", 8000)}


def test_every_line_type() -> None:
    sdp = load("features-all-line-types.sdp")
    assert sdp.origin.sess_id == "0001"
    assert sdp.origin.sess_version == "0002"
    assert sdp.session_name == " "
    assert sdp.emails == ("Ops <ops@example.com>", "noc@example.com (NOC)")
    assert sdp.connection == Connection(address="233.252.0.1", ttl=127, count=3)
    assert sdp.bandwidths == (Bandwidth("CT", 384), Bandwidth("AS", 256))
    assert sdp.times == (
        TimeDescription(
            start=3724394400,
            stop=3724398000,
            repeats=("7d 1h 0 25h", "604800 3600 0 90000"),
            zone="3730922900 -1h 3749680500 0",
        ),
        TimeDescription(start=0, stop=0),
    )
    assert sdp.key == "prompt"
    # Order kept, duplicates allowed.
    assert sdp.attributes == (
        Attribute("recvonly"),
        Attribute("tool", "sdpbx test vector"),
        Attribute("tool", "a second tool line"),
    )
    first, second, rejected = sdp.media
    assert (first.port, first.port_count) == (49170, 2)
    assert first.information == "Main audio"
    assert first.connections == (
        Connection(addrtype="IP6", address="ff1e:db8::101", count=3),
        Connection(addrtype="IP6", address="2001:db8::2"),
    )
    assert first.bandwidths == (Bandwidth("TIAS", 64000),)
    assert first.key == "clear:not-a-real-key"
    assert first.fmtp() == {"101": "0-16"}
    assert first.attribute_values("ptime") == ["20"]
    assert first.rtcp == RtcpAddress(
        port=53020, nettype="IN", addrtype="IP6", address="2001:db8::2"
    )
    assert not first.rtcp_mux
    assert list(first.rtpmap().items()) == [
        (0, RtpMap("PCMU", 8000)),
        (8, RtpMap("PCMA", 8000)),
        (101, RtpMap("telephone-event", 8000)),
    ]
    assert first.rtpmap(static_defaults=False) == {
        0: RtpMap("PCMU", 8000),
        101: RtpMap("telephone-event", 8000),
    }
    assert second.rtpmap()[97] == RtpMap("opus", 48000, 2)
    assert second.fmtp() == {"97": "minptime=10;useinbandfec=1"}
    assert second.rtcp == RtcpAddress(port=49191)
    assert second.rtcp_mux
    # Media-level direction overrides the session's a=recvonly; the rest inherit it.
    assert [sdp.direction_of(m) for m in sdp.media] == ["sendrecv", "inactive", "recvonly"]
    assert rejected.port == 0
    assert sdp.effective_connection(rejected) == sdp.connection


def test_session_lines_out_of_rfc_order_are_accepted_and_reordered() -> None:
    text = (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\na=sendonly\r\nt=0 0\r\nc=IN IP4 192.0.2.1\r\n"
        "s=-\r\nb=AS:64\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    sdp = SessionDescription.parse(text)
    assert str(sdp) == (
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nb=AS:64\r\nt=0 0\r\n"
        "a=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n"
    )


def test_trailing_blank_lines_and_extra_spaces_are_tolerated() -> None:
    text = "v=0\no=-  1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=audio  4000 RTP/AVP 0 8 \n\n\r\n"
    sdp = SessionDescription.parse(text)
    assert sdp.media[0].formats == ("0", "8")
    assert sdp.origin.address == "192.0.2.1"
    assert sdp.to_bytes().endswith(b"m=audio 4000 RTP/AVP 0 8\r\n")


def test_non_utf8_bytes_survive_the_round_trip() -> None:
    data = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=Caf\xe9\r\nt=0 0\r\n"
    sdp = SessionDescription.parse(data)
    assert sdp.to_bytes() == data


def test_built_from_scratch() -> None:
    sdp = SessionDescription(
        origin=Origin(sess_id="42", sess_version="1", address="192.0.2.10"),
        connection=Connection(address="192.0.2.10"),
        media=(
            MediaDescription(
                media="audio",
                port=40000,
                proto="RTP/AVP",
                formats=("0", "101"),
                attributes=(
                    Attribute("rtpmap", "101 telephone-event/8000"),
                    Attribute("fmtp", "101 0-16"),
                    Attribute("sendrecv"),
                ),
            ),
        ),
    )
    assert sdp.to_bytes() == (
        b"v=0\r\no=- 42 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
        b"a=fmtp:101 0-16\r\na=sendrecv\r\n"
    )
    assert SessionDescription.parse(sdp.to_bytes()) == sdp


def test_serializing_a_value_with_a_line_break_is_refused() -> None:
    sdp = SessionDescription(
        origin=Origin(sess_id="1", sess_version="1", address="192.0.2.1"),
        session_name="x\r\na=injected",
    )
    with pytest.raises(LocalProtocolError):
        sdp.to_bytes()


def test_origin_bumped() -> None:
    origin = load("rfc4317-2.1-offer.sdp").origin
    bumped = origin.bumped()
    assert bumped.sess_version == "2890844527"
    assert bumped.sess_id == origin.sess_id
    assert bumped.address == origin.address


def test_sdp_parse_error_is_a_400_sip_parse_error() -> None:
    with pytest.raises(SdpParseError) as info:
        SessionDescription.parse(b"hello")
    assert isinstance(info.value, SipParseError)
    assert info.value.status == 400
    assert "v=" in info.value.reason


BASE = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("\r\n\r\n", "empty"),
        ("o=- 1 1 IN IP4 192.0.2.1\r\nv=0\r\n", "first line must be v="),
        ("v=zero\r\n", "v= version"),
        (BASE + "bogus\r\n", "expected '<type>=<value>'"),
        (BASE + "=x\r\n", "expected '<type>=<value>'"),
        (BASE.replace("s=-\r\n", "s=-\r\n\r\n"), "expected '<type>=<value>'"),
        (BASE + "x=unknown\r\n", "unknown line type 'x'"),
        (BASE + "A=upper\r\n", "unknown line type 'A'"),
        (BASE + "m=audio 4000 RTP/AVP 0\r\nx=1\r\n", "unknown line type 'x'"),
        (BASE + "m=audio 65536 RTP/AVP 0\r\n", "m= port 65536 out of range"),
        (BASE + "m=audio abc RTP/AVP 0\r\n", "m= port 'abc' is not a number"),
        (BASE + "m=audio -1 RTP/AVP 0\r\n", "m= port '-1' is not a number"),
        (BASE + "m=audio \uff14\uff10 RTP/AVP 0\r\n", "is not a number"),
        (BASE + "m=audio 4000/0 RTP/AVP 0\r\n", "m= port count 0 out of range"),
        (BASE + "m=audio 4000/x RTP/AVP 0\r\n", "m= port count"),
        (BASE + "m=audio 4000 RTP/AVP\r\n", "m= needs"),
        (BASE + "m=audio 99999999999999999999999 RTP/AVP 0\r\n", "is not a number"),
        (BASE.replace("o=- 1 1 IN IP4 192.0.2.1\r\n", ""), "missing o="),
        (BASE.replace("s=-\r\n", ""), "missing s="),
        (BASE.replace("t=0 0\r\n", ""), "missing t="),
        (BASE + "o=- 2 2 IN IP4 192.0.2.1\r\n", "second o="),
        (BASE + "s=again\r\n", "second s="),
        (BASE + "c=IN IP4 192.0.2.2\r\n", "second session-level c="),
        (BASE + "i=a\r\ni=b\r\n", "second session-level i="),
        (BASE + "u=a\r\nu=b\r\n", "second u="),
        (BASE + "k=prompt\r\nk=prompt\r\n", "second session-level k="),
        (BASE + "v=0\r\n", "v= must be the first line only"),
        (BASE + "m=audio 4000 RTP/AVP 0\r\ni=a\r\ni=b\r\n", "second i= in a media"),
        (BASE + "m=audio 4000 RTP/AVP 0\r\nk=prompt\r\nk=prompt\r\n", "second k= in a media"),
        (BASE + "m=audio 4000 RTP/AVP 0\r\nt=0 0\r\n", "t= is not allowed in a media"),
        (BASE + "m=audio 4000 RTP/AVP 0\r\ns=x\r\n", "s= is not allowed in a media"),
        (BASE + "m=audio 4000 RTP/AVP 0\r\nv=0\r\n", "v= is not allowed in a media"),
        (BASE.replace("t=0 0\r\n", "r=7d 1h 0\r\nt=0 0\r\n"), "r= before any t="),
        (BASE.replace("t=0 0\r\n", "z=1 0\r\nt=0 0\r\n"), "z= before any t="),
        (BASE + "r=7d\r\n", "bad r= repeat times"),
        (BASE + "r=7x 1h 0\r\n", "bad r= repeat times"),
        (BASE + "z=1 -1h 2\r\n", "bad z= adjustments"),
        (BASE + "z=1 -1h\r\nz=2 0\r\n", "second z="),
        (BASE.replace("t=0 0", "t=0"), "t= needs"),
        (BASE.replace("t=0 0", "t=0 x"), "t= stop time"),
        (BASE.replace("o=- 1 1 IN IP4 192.0.2.1", "o=- 1 IN IP4 192.0.2.1"), "o= needs"),
        (BASE.replace("o=- 1 1 ", "o=- x 1 "), "o= sess-id"),
        (BASE.replace("o=- 1 1 ", "o=- 1 y "), "o= sess-version"),
        (BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP4"), "c= needs"),
        (BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP4 224.2.1.1/256"), "c= TTL 256 out of range"),
        (BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP4 224.2.1.1/1/2/3"), "bad c= address"),
        (BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP6 ff15::1/1/2"), "bad c= address"),
        (BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP6 ff15::1/x"), "c= address count"),
        (BASE.replace("c=IN IP4 192.0.2.1", "c=IN IP4 /3"), "empty c= address"),
        (BASE + "b=AS64\r\n", "b= needs"),
        (BASE + "b=AS:x\r\n", "b= bandwidth"),
        (BASE + "a=:value\r\n", "bad attribute name"),
        (BASE + "a=fo o\r\n", "bad attribute name"),
        (BASE + "a=\r\n", "bad attribute name"),
        (BASE.replace("s=-", "s=a\x00b"), "NUL"),
        (BASE.replace("s=-", "s=a\rb"), "stray CR"),
    ],
)
def test_malformed_sdp_is_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(SdpParseError) as info:
        SessionDescription.parse(text)
    assert reason in info.value.reason
    assert info.value.status == 400


def test_the_base_of_the_error_cases_is_valid() -> None:
    assert SessionDescription.parse(BASE).to_bytes() == BASE.encode()


def media_with(
    *attributes: str, proto: str = "RTP/AVP", formats: str = "0 8 96"
) -> MediaDescription:
    text = BASE + f"m=audio 4000 {proto} {formats}\r\n" + "".join(f"a={a}\r\n" for a in attributes)
    return SessionDescription.parse(text).media[0]


@pytest.mark.parametrize(
    "rtpmap",
    [
        "96",
        "96 opus",
        "x opus/48000",
        "128 opus/48000",
        "96 opus/0",
        "96 opus/48000/0",
        "96 opus/48000/2/1",
        "96 /8000",
        "96 opus/rate",
        "96 opus/48000 extra",
    ],
)
def test_malformed_rtpmap_raises(rtpmap: str) -> None:
    media = media_with(f"rtpmap:{rtpmap}")
    with pytest.raises(SdpParseError):
        media.rtpmap()


def test_rtpmap_details() -> None:
    media = media_with("rtpmap:96 opus/48000/2", "rtpmap:0 pcmu/8000", "rtpmap:96 dup/8000")
    # Explicit rtpmap beats the static table, first of duplicates wins, m= order is kept.
    assert list(media.rtpmap().items()) == [
        (0, RtpMap("pcmu", 8000)),
        (8, RtpMap("PCMA", 8000)),
        (96, RtpMap("opus", 48000, 2)),
    ]
    # Static defaults only apply to RTP profiles.
    assert media_with(proto="udptl", formats="t38").rtpmap() == {}
    assert media_with(proto="UDP/TLS/RTP/SAVPF", formats="0").rtpmap() == {}
    assert media_with(proto="RTP/SAVP", formats="9").rtpmap() == {9: RtpMap("G722", 8000)}


def test_fmtp_and_rtcp_helpers() -> None:
    media = media_with("fmtp:96 a=1; b=2", "fmtp:96 later", "rtcp:4001 IN IP6 2001:db8::9")
    assert media.fmtp() == {"96": "a=1; b=2"}
    assert media.rtcp == RtcpAddress(port=4001, nettype="IN", addrtype="IP6", address="2001:db8::9")
    assert media_with().rtcp is None
    with pytest.raises(SdpParseError):
        _ = media_with("rtcp:70000").rtcp
    with pytest.raises(SdpParseError):
        _ = media_with("rtcp:4001 IN IP4").rtcp
    with pytest.raises(SdpParseError):
        media_with("fmtp:").fmtp()


def test_direction_with_value_is_not_a_direction() -> None:
    media = media_with("sendonly:junk", "recvonly")
    assert media.direction == "recvonly"


def test_with_transport_rewrites_addresses_and_ports_only() -> None:
    offer = load("rfc4317-2.1-offer.sdp")
    relayed = offer.with_transport("203.0.113.7", [30000, 30002])
    assert relayed.connection == Connection(address="203.0.113.7")
    assert [m.port for m in relayed.media] == [30000, 30002]
    assert [m.connections for m in relayed.media] == [(), ()]
    assert relayed.origin == offer.origin
    # Everything else is the same, and shared rather than copied.
    assert relayed.media[0].attributes is offer.media[0].attributes
    assert relayed.media[0].formats is offer.media[0].formats
    assert relayed.times is offer.times
    expected = offer.to_bytes().replace(b"host.atlanta.example.com\r\nt", b"203.0.113.7\r\nt")
    expected = expected.replace(b"49170 RTP", b"30000 RTP").replace(b"51372", b"30002")
    assert relayed.to_bytes() == expected
    # The original is untouched.
    assert offer.to_bytes() == (VECTORS / "rfc4317-2.1-offer.sdp").read_bytes()


def test_with_transport_keeps_media_level_connections_media_level() -> None:
    sdp = load("rfc5118-4.8-mult-ip-in-sdp.sdp")
    relayed = sdp.with_transport("2001:db8::77", [None, 40002])
    assert relayed.connection is None
    assert [m.connections for m in relayed.media] == [
        (Connection(addrtype="IP6", address="2001:db8::77"),),
        (Connection(addrtype="IP6", address="2001:db8::77"),),
    ]
    assert [m.port for m in relayed.media] == [22334, 40002]
    assert SessionDescription.parse(relayed.to_bytes()) == relayed


def test_with_transport_adds_a_session_connection_when_a_media_has_none() -> None:
    sdp = SessionDescription.parse(
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    )
    relayed = sdp.with_transport("198.51.100.5", [5000], origin_address="198.51.100.5")
    assert relayed.connection == Connection(address="198.51.100.5")
    assert relayed.origin.address == "198.51.100.5"
    assert relayed.origin.sess_version == "1"


def test_with_transport_rewrites_rfc3605_rtcp() -> None:
    sdp = load("features-all-line-types.sdp")
    relayed = sdp.with_transport("203.0.113.7", [30000, 30002, None])
    first, second, rejected = relayed.media
    assert first.rtcp == RtcpAddress(
        port=30001, nettype="IN", addrtype="IP4", address="203.0.113.7"
    )
    # rtcp-mux: RTCP shares the RTP port.
    assert second.rtcp == RtcpAddress(
        port=30002, nettype="IN", addrtype="IP4", address="203.0.113.7"
    )
    assert first.port_count is None
    assert rejected.port == 0
    assert relayed.connection == Connection(address="203.0.113.7")
    assert first.connections == (Connection(address="203.0.113.7"),)
    # Explicit RTCP ports win; an unchanged port keeps its a=rtcp unless one is given.
    explicit = sdp.with_transport(
        "203.0.113.7", [30000, None, None], rtcp_ports=[31000, None, None]
    )
    assert explicit.media[0].rtcp == RtcpAddress(
        port=31000, nettype="IN", addrtype="IP4", address="203.0.113.7"
    )
    assert explicit.media[1].rtcp == RtcpAddress(port=49191)
    assert explicit.media[1].port == 49190
    assert SessionDescription.parse(relayed.to_bytes()) == relayed


def test_with_transport_rejects_wrong_arguments() -> None:
    sdp = load("rfc4317-2.1-offer.sdp")
    with pytest.raises(LocalProtocolError):
        sdp.with_transport("203.0.113.7", [30000])
    with pytest.raises(LocalProtocolError):
        sdp.with_transport("203.0.113.7", [30000, 70000])
    with pytest.raises(LocalProtocolError):
        sdp.with_transport("203.0.113.7", [30000, 30002], rtcp_ports=[1])


# --- fuzz -----------------------------------------------------------------------------------------


@settings(max_examples=300)
@given(st.text())
def test_any_text_parses_or_raises_sdp_parse_error(text: str) -> None:
    with contextlib.suppress(SdpParseError):
        SessionDescription.parse(text)


@settings(max_examples=300)
@given(st.binary())
def test_any_bytes_parse_or_raise_sdp_parse_error(data: bytes) -> None:
    with contextlib.suppress(SdpParseError):
        SessionDescription.parse(data)


LINE_TYPES = "vosiuepcbtrzkamxA"
line_values = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n\x00"), max_size=30),
    st.sampled_from(
        [
            "0",
            "- 1 2 IN IP4 192.0.2.1",
            "IN IP4 192.0.2.1",
            "IN IP4 224.2.1.1/127/2",
            "IN IP6 ff15::1/3",
            "0 0",
            "7d 1h 0 25h",
            "1 -1h",
            "AS:64",
            "audio 4000 RTP/AVP 0",
            "video 0/2 RTP/AVP 31",
            "rtpmap:0 PCMU/8000",
            "sendonly",
            "rtcp:4001",
            "prompt",
        ]
    ),
)


@settings(max_examples=400)
@given(st.lists(st.tuples(st.sampled_from(LINE_TYPES), line_values), max_size=25))
def test_line_soup_parses_or_raises_and_parsed_sdp_is_stable(lines: list[tuple[str, str]]) -> None:
    text = "".join(f"{kind}={value}\r\n" for kind, value in lines)
    try:
        sdp = SessionDescription.parse(text)
    except SdpParseError:
        return
    # Whatever parsed serializes to something that parses back to the same model.
    again = SessionDescription.parse(sdp.to_bytes())
    assert again == sdp
    assert again.to_bytes() == sdp.to_bytes()


def _valid_sdp_text(media_ports: list[int], attributes: list[str], name: str) -> str:
    lines = ["v=0", "o=- 5 6 IN IP4 192.0.2.1", f"s={name}", "c=IN IP4 192.0.2.1", "t=0 0"]
    for port in media_ports:
        lines.append(f"m=audio {port} RTP/AVP 0 8")
        lines.extend(f"a={attribute}" for attribute in attributes)
    return "\r\n".join(lines) + "\r\n"


attribute_names = st.from_regex(r"[a-z][a-z0-9\-]{0,10}", fullmatch=True)
attribute_values = st.text(alphabet=st.characters(blacklist_characters="\r\n\x00"), max_size=20)


@settings(max_examples=200)
@given(
    st.lists(st.integers(0, 65535), max_size=4),
    st.lists(
        st.one_of(
            attribute_names, st.builds(lambda n, v: f"{n}:{v}", attribute_names, attribute_values)
        ),
        max_size=5,
    ),
    st.text(alphabet=st.characters(blacklist_characters="\r\n\x00"), max_size=20),
)
def test_generated_valid_sdp_round_trips_byte_exact(
    ports: list[int], attributes: list[str], name: str
) -> None:
    text = _valid_sdp_text(ports, attributes, name)
    sdp = SessionDescription.parse(text)
    assert str(sdp) == text
    assert [m.port for m in sdp.media] == ports
