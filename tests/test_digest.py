"""Tests of edge.sip.digest: RFC vectors, captured sipsak headers, hashlib cross-checks, fuzz."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.sip.digest import (
    SUPPORTED_ALGORITHMS,
    DigestChallenge,
    DigestCredentials,
    UnsupportedSchemeError,
    build_authorization,
    canonical_algorithm,
    choose_challenge,
    compute_ha1,
    compute_response,
    parse_challenge,
    parse_credentials,
    session_ha1,
    verify_credentials,
)
from edge.sip.errors import LocalProtocolError, SipParseError

VECTORS = Path(__file__).parent / "vectors" / "digest"
VECTOR_FILES = sorted(VECTORS.glob("*.txt"))
TORTURE = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "torture"


def load_vector(path: Path) -> dict[str, list[str]]:
    """`# comment` lines, then `field: value` lines; indented lines continue (folded) the value."""
    fields: dict[str, list[str]] = {}
    last: tuple[str, int] | None = None
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            continue
        if line[:1] in (" ", "\t"):
            assert last is not None
            name, index = last
            fields[name][index] += "\r\n" + line  # keep the fold as it would arrive
            continue
        name, _, value = line.partition(": ")
        fields.setdefault(name, []).append(value)
        last = (name, len(fields[name]) - 1)
    return fields


def h(algorithm: str, text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    name = {"MD5": "md5", "SHA-256": "sha256", "SHA-512-256": "sha512_256"}[algorithm]
    return hashlib.new(name, data).hexdigest()


# --- the RFC worked examples ---------------------------------------------------------------------


def test_rfc2617_example() -> None:
    fields = load_vector(VECTORS / "rfc2617-3.5.txt")
    challenge = parse_challenge(fields["challenge"][0])
    assert challenge.realm == "testrealm@host.com"
    assert challenge.qop == ("auth", "auth-int")
    assert challenge.nonce == "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    assert challenge.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert challenge.algorithm is None
    credentials = parse_credentials(fields["credentials"][0])
    assert credentials.response == "6629fae49393a05397450978507c4ef1"
    ha1 = compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life")
    assert ha1 == h("MD5", "Mufasa:testrealm@host.com:Circle Of Life")
    assert (
        compute_response(
            ha1,
            "GET",
            "/dir/index.html",
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc=1,
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )
    assert verify_credentials(
        credentials, method="GET", ha1=ha1, expected_realm="testrealm@host.com"
    )
    built = build_authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        cnonce="0a4f113b",
    )
    assert built == credentials


@pytest.mark.parametrize(
    ("name", "algorithm", "response"),
    [
        ("rfc7616-3.9.1-md5.txt", "MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        (
            "rfc7616-3.9.1-sha256.txt",
            "SHA-256",
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
    ],
)
def test_rfc7616_examples(name: str, algorithm: str, response: str) -> None:
    fields = load_vector(VECTORS / name)
    challenge = parse_challenge(fields["challenge"][0])
    assert challenge.algorithm == algorithm
    assert challenge.qop == ("auth", "auth-int")
    credentials = parse_credentials(fields["credentials"][0])
    assert credentials.response == response
    assert credentials.algorithm == algorithm
    assert credentials.nc == "00000001"
    ha1 = compute_ha1("Mufasa", "http-auth@example.org", "Circle of Life", algorithm)
    assert ha1 == h(algorithm, "Mufasa:http-auth@example.org:Circle of Life")
    assert verify_credentials(
        credentials, method="GET", ha1=ha1, expected_realm="http-auth@example.org"
    )
    built = build_authorization(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        ha1=ha1,
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert built.response == response
    assert built.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert built.qop == "auth"
    # Same parameters as the RFC's header, in our canonical order.
    assert parse_credentials(built.to_header()) == built
    assert {k: v for k, v in vars_of(built).items() if k != "params"} == {
        k: v for k, v in vars_of(credentials).items() if k != "params"
    }


def vars_of(credentials: DigestCredentials) -> dict[str, object]:
    return {field.name: getattr(credentials, field.name)
            for field in dataclasses.fields(credentials)}


def test_rfc7616_server_offers_sha256_first_and_client_picks_it() -> None:
    sha256 = parse_challenge(load_vector(VECTORS / "rfc7616-3.9.1-sha256.txt")["challenge"][0])
    md5 = parse_challenge(load_vector(VECTORS / "rfc7616-3.9.1-md5.txt")["challenge"][0])
    assert choose_challenge([sha256, md5]) is sha256
    assert choose_challenge([md5, sha256]) is sha256


# --- SIP flows: RFC 3665, RFC 3261 §20, RFC 4475 ------------------------------------------------


def test_rfc3665_register_flow() -> None:
    fields = load_vector(VECTORS / "rfc3665-2.1-register.txt")
    challenge = parse_challenge(fields["challenge"][0])
    assert challenge == DigestChallenge(
        realm="atlanta.example.com",
        nonce="ea9c8e88df84f1cec4341ae6cbe5a359",
        algorithm="MD5",
        qop=("auth",),
        opaque="",
        stale=False,
    )
    credentials = parse_credentials(fields["credentials"][0])
    assert credentials == DigestCredentials(
        username="bob",
        realm="atlanta.example.com",
        nonce="ea9c8e88df84f1cec4341ae6cbe5a359",
        uri="sips:ss2.biloxi.example.com",
        response="dfe56131d1958046689d83306477ecc",
        opaque="",
    )
    # 31 hex digits in the RFC: parses, can never verify.
    ha1 = compute_ha1("bob", "atlanta.example.com", "anything")
    assert not verify_credentials(
        credentials, method="REGISTER", ha1=ha1, expected_realm="atlanta.example.com"
    )


def test_rfc3665_proxy_authentication() -> None:
    fields = load_vector(VECTORS / "rfc3665-3-invite-proxy-auth.txt")
    challenge = parse_challenge(fields["challenge"][0])
    assert challenge.nonce == "f84f1cec41e6cbe5aea9c8e88d359"
    assert challenge.opaque == ""
    credentials = parse_credentials(fields["credentials"][0])
    assert credentials.username == "alice"
    assert credentials.uri == "sip:bob@biloxi.example.com"
    assert credentials.response == "42ce3cef44b22f50c6a6071bc8"


def test_rfc3261_header_examples() -> None:
    fields = load_vector(VECTORS / "rfc3261-20-header-examples.txt")
    www, proxy = (parse_challenge(value) for value in fields["challenge"])
    assert www.domain == "sip:boxesbybob.com"
    assert proxy.domain == "sip:ss1.carrier.com"
    assert www.stale is False
    # The §20.7 and §20.28 examples leave out the digest uri that RFC 2617 requires: such
    # credentials cannot be verified, so they are refused as malformed (a 400 names the reason).
    for value in fields["credentials"]:
        with pytest.raises(SipParseError, match="without uri"):
            parse_credentials(value)
    with_uri = fields["credentials"][0].replace("realm=", 'uri="sip:atlanta.com", realm=')
    authorization = parse_credentials(with_uri)
    assert authorization.username == "Alice"
    assert authorization.nonce == "84a4cc6f3082121f32b42a2187831a9e"
    assert authorization.response == "7587245234b3434cc3412213e5f113a5432"


def test_rfc4475_unknown_authorization_scheme() -> None:
    fields = load_vector(VECTORS / "rfc4475-3.3.7-regaut01.txt")
    with pytest.raises(UnsupportedSchemeError) as info:
        parse_credentials(fields["credentials"][0])
    assert isinstance(info.value, SipParseError)
    assert info.value.scheme == "NoOneKnowsThisScheme"
    assert info.value.status == 401  # the registrar re-challenges (RFC 4475 §3.3.7)


@pytest.mark.skipif(not TORTURE.is_dir(), reason="shared torture vectors not beside the repository")
def test_torture_messages_auth_headers() -> None:
    seen = 0
    for path in sorted(TORTURE.glob("*.dat")):
        head = path.read_bytes().split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            parser = {
                "authorization": parse_credentials,
                "proxy-authorization": parse_credentials,
                "www-authenticate": parse_challenge,
                "proxy-authenticate": parse_challenge,
            }.get(name)
            if parser is None:
                continue
            seen += 1
            with pytest.raises(UnsupportedSchemeError):
                parser(value.strip())
            assert path.name == "regaut01.dat"
            # The vector file holds the same header value.
            fields = load_vector(VECTORS / "rfc4475-3.3.7-regaut01.txt")
            assert fields["credentials"][0] == value.strip()
    assert seen == 1


# --- captured from sipsak 0.9.8.1 -----------------------------------------------------------------


SIPSAK = sorted(VECTORS.glob("sipsak-*.txt"))


@pytest.mark.parametrize("path", SIPSAK, ids=lambda p: p.name)
def test_sipsak_captures_verify(path: Path) -> None:
    fields = load_vector(path)
    (password,) = fields["password"]
    challenge = parse_challenge(fields["challenge"][0])
    credentials = parse_credentials(fields["credentials"][0])
    ha1 = compute_ha1(credentials.username, challenge.realm, password)
    assert verify_credentials(credentials, method="REGISTER", ha1=ha1, expected_realm="sdpbx.test")
    assert not verify_credentials(
        credentials,
        method="REGISTER",
        ha1=compute_ha1(credentials.username, challenge.realm, password + "x"),
        expected_realm="sdpbx.test",
    )
    assert not verify_credentials(
        credentials, method="INVITE", ha1=ha1, expected_realm="sdpbx.test"
    )
    # Our client side, fed sipsak's cnonce, produces sipsak's response.
    built = build_authorization(
        challenge,
        method="REGISTER",
        uri=credentials.uri,
        username="alice",
        password=password,
        cnonce=credentials.cnonce or "unused",
    )
    assert built.response == credentials.response
    assert built.qop == credentials.qop


def test_sipsak_captures_are_present() -> None:
    assert len(SIPSAK) == 3
    assert len(VECTOR_FILES) >= 9
    for path in VECTOR_FILES:
        assert path.read_text().startswith("# "), f"{path.name} must name its source"


# --- SIP examples computed independently with hashlib ---------------------------------------------


def test_sip_register_sha256_qop_auth() -> None:
    realm, nonce, cnonce, uri = "pbx.example.com", "ab12cd34ef56", "0a4f113b", "sip:pbx.example.com"
    challenge = parse_challenge(
        f'Digest realm="{realm}", nonce="{nonce}", algorithm=SHA-256, qop="auth"'
    )
    ha1 = h("SHA-256", f"1001:{realm}:s3cret")
    ha2 = h("SHA-256", f"REGISTER:{uri}")
    expected = h("SHA-256", f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
    built = build_authorization(
        challenge, method="REGISTER", uri=uri, username="1001", password="s3cret", cnonce=cnonce
    )
    assert built.response == expected
    assert built.to_header() == (
        f'Digest username="1001", realm="{realm}", nonce="{nonce}", uri="{uri}", '
        f'response="{expected}", algorithm=SHA-256, cnonce="{cnonce}", qop=auth, nc=00000001'
    )
    assert verify_credentials(
        parse_credentials(built.to_header()), method="REGISTER", ha1=ha1, expected_realm=realm
    )


def test_sip_invite_sha512_256_sess_auth_int_with_sdp_body() -> None:
    realm, nonce, cnonce, uri = (
        "trunk.example.net",
        "n0nce",
        "c0nce",
        "sip:+15551234@trunk.example.net",
    )
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    challenge = DigestChallenge(
        realm=realm, nonce=nonce, algorithm="SHA-512-256-sess", qop=("auth-int",)
    )
    stored = h("SHA-512-256", f"acct:{realm}:pw")
    ha1 = h("SHA-512-256", f"{stored}:{nonce}:{cnonce}")
    ha2 = h("SHA-512-256", f"INVITE:{uri}:" + h("SHA-512-256", body))
    expected = h("SHA-512-256", f"{ha1}:{nonce}:00000002:{cnonce}:auth-int:{ha2}")
    built = build_authorization(
        challenge,
        method="INVITE",
        uri=uri,
        username="acct",
        ha1=stored,
        cnonce=cnonce,
        nc=2,
        body=body,
    )
    assert built.response == expected
    assert built.qop == "auth-int"
    assert built.algorithm == "SHA-512-256-sess"
    assert session_ha1(stored, nonce, cnonce, "SHA-512-256-sess") == ha1
    assert verify_credentials(built, method="INVITE", ha1=stored, expected_realm=realm, body=body)
    assert not verify_credentials(
        built, method="INVITE", ha1=stored, expected_realm=realm, body=body + b"a=x\r\n"
    )


def test_sip_rfc2069_md5_sess_without_qop() -> None:
    realm, nonce, cnonce, uri = "r", "n", "c", "sip:r"
    stored = h("MD5", f"u:{realm}:p")
    ha1 = h("MD5", f"{stored}:{nonce}:{cnonce}")
    expected = h("MD5", f"{ha1}:{nonce}:" + h("MD5", f"BYE:{uri}"))
    challenge = DigestChallenge(realm=realm, nonce=nonce, algorithm="MD5-sess")
    built = build_authorization(
        challenge, method="BYE", uri=uri, username="u", password="p", cnonce=cnonce
    )
    assert built.response == expected
    assert (built.qop, built.nc, built.cnonce) == (None, None, cnonce)
    assert verify_credentials(built, method="BYE", ha1=stored, expected_realm=realm)


def test_plain_md5_without_qop_matches_hashlib() -> None:
    ha1 = h("MD5", "u:r:p")
    expected = h("MD5", f"{ha1}:n:" + h("MD5", "OPTIONS:sip:r"))
    assert compute_response(ha1, "OPTIONS", "sip:r", "n") == expected
    # HA1 from a backend in upper case is accepted.
    assert compute_response(ha1.upper(), "OPTIONS", "sip:r", "n") == expected


# --- parsing details ------------------------------------------------------------------------------


def test_names_are_case_insensitive_and_algorithm_is_canonical() -> None:
    challenge = parse_challenge(
        'DIGEST REALM="r", Nonce="n", ALGORITHM=sha-512-256-SESS, QOP="AUTH"'
    )
    assert challenge.realm == "r"
    assert challenge.algorithm == "SHA-512-256-sess"
    assert challenge.qop == ("AUTH",)
    assert challenge.to_header() == (
        'Digest realm="r", nonce="n", algorithm=SHA-512-256-sess, qop="AUTH"'
    )


def test_unknown_params_are_kept_and_written_back() -> None:
    challenge = parse_challenge(
        'Digest realm="r", nonce="n", charset=UTF-8, userhash=true, x-note="a b", x-token="tok"'
    )
    assert challenge.params == (
        ("charset", "UTF-8"),
        ("userhash", "true"),
        ("x-note", "a b"),
        ("x-token", "tok"),
    )
    assert challenge.to_header() == (
        'Digest realm="r", nonce="n", charset=UTF-8, userhash=true, x-note="a b", x-token=tok'
    )
    credentials = parse_credentials(
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="00", Extra=1'
    )
    assert credentials.params == (("Extra", "1"),)
    assert credentials.to_header().endswith(", Extra=1")


def test_quoting_follows_rfc7616() -> None:
    challenge = DigestChallenge(
        realm="r",
        nonce="n",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        opaque="o",
        domain="sip:a sip:b",
        stale=True,
    )
    assert challenge.to_header() == (
        'Digest realm="r", domain="sip:a sip:b", nonce="n", opaque="o", stale=true, '
        'algorithm=SHA-256, qop="auth,auth-int"'
    )
    assert str(challenge) == challenge.to_header()
    assert parse_challenge(challenge.to_header()) == challenge
    credentials = DigestCredentials(
        username="u",
        realm="r",
        nonce="n",
        uri="sip:r",
        response="abc",
        algorithm="MD5",
        cnonce="c",
        opaque="o",
        qop="auth",
        nc="00000001",
    )
    assert credentials.to_header() == (
        'Digest username="u", realm="r", nonce="n", uri="sip:r", response="abc", algorithm=MD5, '
        'cnonce="c", opaque="o", qop=auth, nc=00000001'
    )
    assert str(credentials) == credentials.to_header()


def test_quoted_pairs_are_unescaped_and_escaped_back() -> None:
    challenge = parse_challenge(r'Digest realm="a \"quoted\" \\ realm", nonce="n"')
    assert challenge.realm == 'a "quoted" \\ realm'
    assert challenge.to_header() == r'Digest realm="a \"quoted\" \\ realm", nonce="n"'


def test_liberal_forms_real_phones_send() -> None:
    # Quoted algorithm/qop/nc, bare uri, no spaces after commas, empty list elements.
    credentials = parse_credentials(
        'Digest username="u",realm="r",nonce="n",uri=sip:r,response="00",'
        'algorithm="MD5",qop="auth",nc="00000001",cnonce="c",,'
    )
    assert credentials.uri == "sip:r"
    assert credentials.algorithm == "MD5"
    assert credentials.qop == "auth"
    assert credentials.nc == "00000001"


@pytest.mark.parametrize(
    ("value", "stale"),
    [("TRUE", True), ("true", True), ("FALSE", False), ("yes", False), ('"true"', True)],
)
def test_stale(value: str, stale: bool) -> None:
    assert parse_challenge(f'Digest realm="r", nonce="n", stale={value}').stale is stale


def test_non_digest_challenge() -> None:
    with pytest.raises(UnsupportedSchemeError) as info:
        parse_challenge('Basic realm="r"')
    assert info.value.scheme == "Basic"
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "missing authentication scheme"),
        ("   ", "missing authentication scheme"),
        ("Digest", "without parameters"),
        ("Digest ,, ,", "without parameters"),
        ('Digest,realm="r", nonce="n"', "expected whitespace"),
        ('Digest nonce="n"', "without realm"),
        ('Digest realm="r"', "without nonce"),
        ('Digest realm="r", nonce="n", realm="s"', "duplicate parameter"),
        ('Digest realm="r", nonce="n", REALM="s"', "duplicate parameter"),
        ('Digest realm="r, nonce="n"', "expected ','"),
        ('Digest realm="r", nonce="unterminated', "bad auth-param"),
        ('Digest realm="r" nonce="n"', "expected ','"),
        ('Digest realm="r", =x', "bad auth-param"),
        ('Digest realm="r", nonce=', "bad auth-param"),
        ('Digest realm="r", no(nce="n"', "bad auth-param"),
        ('Digest realm="r",\r\nnonce="n"', "CR or LF"),
        ('Digest realm="r", nonce="a\rb"', "CR or LF"),
    ],
)
def test_malformed_challenges(value: str, reason: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_challenge(value)
    assert reason in info.value.reason
    assert info.value.status == 400


@pytest.mark.parametrize("missing", ["username", "realm", "nonce", "uri", "response"])
def test_credentials_need_their_required_params(missing: str) -> None:
    params = {"username": "u", "realm": "r", "nonce": "n", "uri": "sip:r", "response": "00"}
    del params[missing]
    value = "Digest " + ", ".join(f'{k}="{v}"' for k, v in params.items())
    with pytest.raises(SipParseError, match=f"without {missing}"):
        parse_credentials(value)


def test_folded_value_parses_like_the_unfolded_one() -> None:
    folded = 'Digest realm="r",\r\n  nonce="n",\r\n\topaque="o p"'
    assert parse_challenge(folded) == parse_challenge('Digest realm="r", nonce="n", opaque="o p"')
    # A fold inside a quoted string means one SP (RFC 3261 §7.3.1).
    assert parse_challenge('Digest realm="a\r\n b", nonce="n"').realm == "a b"


def test_writing_a_line_break_is_refused() -> None:
    with pytest.raises(LocalProtocolError):
        DigestChallenge(realm="r\r\nX-Injected: 1", nonce="n").to_header()


# --- algorithms, verification and client choices --------------------------------------------------


def test_supported_algorithms_and_canonical_names() -> None:
    assert SUPPORTED_ALGORITHMS == (
        "MD5",
        "MD5-sess",
        "SHA-256",
        "SHA-256-sess",
        "SHA-512-256",
        "SHA-512-256-sess",
    )
    assert canonical_algorithm(None) == "MD5"
    assert canonical_algorithm("md5-SESS") == "MD5-sess"
    assert canonical_algorithm("sha-256") == "SHA-256"
    with pytest.raises(SipParseError, match="unsupported digest algorithm"):
        canonical_algorithm("SHA-1")
    with pytest.raises(SipParseError):
        compute_ha1("u", "r", "p", "AKAv1-MD5")


def test_session_ha1() -> None:
    assert session_ha1("abc", "n", "c", "MD5") == "abc"
    assert session_ha1("abc", "n", "c", "MD5-sess") == h("MD5", "abc:n:c")
    assert session_ha1("abc", "n", "c", "sha-256-sess") == h("SHA-256", "abc:n:c")


def test_compute_response_argument_errors() -> None:
    with pytest.raises(SipParseError, match="cnonce"):
        compute_response("00", "GET", "/", "n", algorithm="MD5-sess")
    with pytest.raises(SipParseError, match="nc and cnonce"):
        compute_response("00", "GET", "/", "n", qop="auth", cnonce="c")
    with pytest.raises(SipParseError, match="unsupported digest qop"):
        compute_response("00", "GET", "/", "n", qop="auth-conf", nc=1, cnonce="c")
    with pytest.raises(LocalProtocolError):
        compute_response("00", "GET", "/", "n", qop="auth", nc=0, cnonce="c")
    assert compute_response("00", "GET", "/", "n", qop="auth", nc=10, cnonce="c") == (
        compute_response("00", "GET", "/", "n", qop="auth", nc="0000000a", cnonce="c")
    )


def _good_credentials(**changes: Any) -> tuple[DigestCredentials, str]:
    ha1 = compute_ha1("u", "r", "p")
    challenge = DigestChallenge(realm="r", nonce="n", qop=("auth",))
    built = build_authorization(
        challenge, method="REGISTER", uri="sip:r", username="u", ha1=ha1, cnonce="c"
    )
    return dataclasses.replace(built, **changes), ha1


def test_verify_accepts_the_good_one_and_upper_case_hex() -> None:
    credentials, ha1 = _good_credentials()
    assert verify_credentials(credentials, method="REGISTER", ha1=ha1, expected_realm="r")
    upper, _ = _good_credentials(response=credentials.response.upper())
    assert verify_credentials(upper, method="REGISTER", ha1=ha1, expected_realm="r")


@pytest.mark.parametrize(
    "changes",
    [
        {"realm": "other"},
        {"nc": None},
        {"cnonce": None},
        {"qop": None},
        {"qop": "auth-conf"},
        {"algorithm": "SHA-1"},
        {"algorithm": "SHA-256"},
        {"nonce": "m"},
        {"uri": "sip:s"},
        {"response": "0" * 32},
        {"response": "\u00e9" * 32},
        {"response": "\udc80"},
        {"nc": "00000002"},
    ],
    ids=repr,
)
def test_verify_rejects(changes: dict[str, str | None]) -> None:
    credentials, ha1 = _good_credentials(**changes)
    # The realm check is against the expected realm, not the credentials' own.
    assert not verify_credentials(credentials, method="REGISTER", ha1=ha1, expected_realm="r")


def test_verify_rejects_nc_or_cnonce_without_qop() -> None:
    ha1 = compute_ha1("u", "r", "p")
    response = compute_response(ha1, "REGISTER", "sip:r", "n")
    base: dict[str, Any] = {
        "username": "u",
        "realm": "r",
        "nonce": "n",
        "uri": "sip:r",
        "response": response,
    }
    assert verify_credentials(
        DigestCredentials(**base), method="REGISTER", ha1=ha1, expected_realm="r"
    )
    extras: list[dict[str, Any]] = [{"nc": "00000001"}, {"cnonce": "c"}]
    for extra in extras:
        credentials = DigestCredentials(**base, **extra)
        assert not verify_credentials(credentials, method="REGISTER", ha1=ha1, expected_realm="r")


def client(
    challenge: DigestChallenge,
    *,
    password: str | None = "p",
    ha1: str | None = None,
    nc: int = 1,
) -> DigestCredentials:
    return build_authorization(
        challenge,
        method="REGISTER",
        uri="sip:r",
        username="u",
        password=password,
        ha1=ha1,
        cnonce="c",
        nc=nc,
    )


def test_build_authorization_qop_choice_and_echoes() -> None:
    assert client(DigestChallenge(realm="r", nonce="n", qop=("auth-int", "auth"))).qop == "auth"
    only_int = client(DigestChallenge(realm="r", nonce="n", qop=("auth-int",)))
    assert only_int.qop == "auth-int"
    legacy = client(DigestChallenge(realm="r", nonce="n", opaque="o"))
    assert (legacy.qop, legacy.nc, legacy.cnonce, legacy.algorithm) == (None, None, None, None)
    assert legacy.opaque == "o"
    assert "algorithm" not in legacy.to_header()
    assert client(DigestChallenge(realm="r", nonce="n", algorithm="MD5")).algorithm == "MD5"
    with pytest.raises(SipParseError, match="no supported qop"):
        client(DigestChallenge(realm="r", nonce="n", qop=("auth-conf",)))
    with pytest.raises(SipParseError, match="unsupported digest algorithm"):
        client(DigestChallenge(realm="r", nonce="n", algorithm="AKAv1-MD5"))


def test_build_authorization_password_or_ha1() -> None:
    challenge = DigestChallenge(realm="r", nonce="n", qop=("auth",), algorithm="SHA-256")
    by_password = client(challenge)
    by_ha1 = client(challenge, password=None, ha1=compute_ha1("u", "r", "p", "SHA-256"))
    assert by_password == by_ha1
    with pytest.raises(LocalProtocolError):
        client(challenge, password=None)
    with pytest.raises(LocalProtocolError):
        client(challenge, ha1="00")
    with pytest.raises(LocalProtocolError):
        client(challenge, nc=0)
    assert client(challenge, nc=0x1F).nc == "0000001f"


def test_choose_challenge() -> None:
    md5 = DigestChallenge(realm="r", nonce="1")
    md5_second = DigestChallenge(realm="r", nonce="2", algorithm="MD5")
    sha256 = DigestChallenge(realm="r", nonce="3", algorithm="SHA-256")
    sha512 = DigestChallenge(realm="r", nonce="4", algorithm="SHA-512-256")
    unknown = DigestChallenge(realm="r", nonce="5", algorithm="SHA3-512")
    bad_qop = DigestChallenge(realm="r", nonce="6", algorithm="SHA-512-256", qop=("auth-conf",))
    assert choose_challenge([md5, sha256]) is sha256
    assert choose_challenge([unknown, bad_qop, md5, sha512, sha256]) is sha512
    assert choose_challenge([md5, md5_second]) is md5
    assert not unknown.supported
    assert not bad_qop.supported
    with pytest.raises(SipParseError, match="SHA3-512"):
        choose_challenge([unknown])
    with pytest.raises(SipParseError, match="none"):
        choose_challenge([])


# --- fuzz -----------------------------------------------------------------------------------------


@settings(max_examples=400)
@given(st.text())
def test_any_text_parses_or_raises(text: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        with contextlib.suppress(SipParseError):
            parse(text)
        with contextlib.suppress(SipParseError):
            parse("Digest " + text)


param_text = st.text(alphabet=st.characters(blacklist_characters="\r\n"), max_size=20)
token = st.from_regex(r"[A-Za-z0-9\-.!%*_+`'~]{1,12}", fullmatch=True)


@settings(max_examples=300)
@given(
    realm=param_text,
    nonce=param_text,
    opaque=st.none() | param_text,
    domain=st.none() | param_text,
    algorithm=st.none() | st.sampled_from(SUPPORTED_ALGORITHMS),
    qop=st.lists(token, max_size=3).map(tuple),
    stale=st.booleans(),
    extra=st.lists(
        st.tuples(token.map(lambda t: "x-" + t), param_text),
        max_size=3,
        unique_by=lambda p: p[0].lower(),
    ),
)
def test_challenge_round_trips(
    realm: str,
    nonce: str,
    opaque: str | None,
    domain: str | None,
    algorithm: str | None,
    qop: tuple[str, ...],
    stale: bool,
    extra: list[tuple[str, str]],
) -> None:
    challenge = DigestChallenge(
        realm=realm,
        nonce=nonce,
        opaque=opaque,
        domain=domain,
        algorithm=algorithm,
        qop=qop,
        stale=stale,
        params=tuple(extra),
    )
    assert parse_challenge(challenge.to_header()) == challenge


@settings(max_examples=300)
@given(
    username=param_text,
    uri=param_text,
    cnonce=st.none() | param_text,
    response=st.from_regex(r"[0-9a-f]{32}", fullmatch=True),
)
def test_credentials_round_trip(username: str, uri: str, cnonce: str | None, response: str) -> None:
    credentials = DigestCredentials(
        username=username,
        realm="r",
        nonce="n",
        uri=uri,
        response=response,
        cnonce=cnonce,
        qop="auth",
        nc="00000001",
        algorithm="SHA-256",
    )
    assert parse_credentials(credentials.to_header()) == credentials


# --- the one-pass reading of auth-params ------------------------------------------------------

_AUTH_ATOMS = [
    "Digest", " ", "\t", ",", "a", "b=", "=", '"', "\\", "x", 'q="v"', "uri=sip:a@b", " , ",
    "nc=00000001", 'r="a\\"b"', 'r="a,b"', "k", '""', '\\"', "\r\n ", "A", "realm=x",
]


def _param_by_param(value: str, what: str) -> object:
    """`_parse_auth_params` with its one-pass shortcut off: the param-by-param loop."""
    import re

    from edge.sip import digest

    never = re.compile(r"(?!)")
    saved = digest._AUTH_VALUE_RE
    digest._AUTH_VALUE_RE = never
    try:
        return _outcome(digest._parse_auth_params, value, what)
    finally:
        digest._AUTH_VALUE_RE = saved


def _outcome(parse: Any, value: str, what: str) -> object:
    try:
        return parse(value, what)
    except SipParseError as error:  # UnsupportedSchemeError too
        return type(error).__name__, error.reason, error.status


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_AUTH_ATOMS), max_size=10), st.booleans())
def test_auth_params_read_in_one_pass_as_param_by_param(atoms: list[str], digest: bool) -> None:
    from edge.sip.digest import _parse_auth_params

    value = ("Digest " if digest else "") + "".join(atoms)
    for what in ("credentials", "challenge"):
        assert _outcome(_parse_auth_params, value, what) == _param_by_param(value, what)


def test_auth_params_of_a_typical_authorization() -> None:
    from edge.sip.digest import _parse_auth_params

    value = (
        'Digest username="u10000",realm="127.0.0.1",cnonce="6b8b4567",nc=00000001,'
        'qop=auth,uri="sip:127.0.0.1:5060",nonce="n\\"x",response="abc",algorithm=MD5'
    )
    credentials = parse_credentials(value)
    assert credentials.nonce == 'n"x' and credentials.nc == "00000001"
    assert credentials.algorithm == "MD5" and credentials.params == ()
    assert _param_by_param(value, "credentials") == _outcome(
        _parse_auth_params, value, "credentials"
    )
    extra = parse_credentials(value + ', opaque="o", foo=bar')
    assert extra.opaque == "o" and extra.params == (("foo", "bar"),)
