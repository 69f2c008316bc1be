"""Digest access authentication for SIP (RFC 2617, RFC 7616, RFC 8760) as pure helpers.

Owns parsing and serializing challenges (WWW-Authenticate / Proxy-Authenticate values) and
credentials (Authorization / Proxy-Authorization values), computing and verifying responses, and
choosing among several challenges. No clock and no randomness inside: nonces and cnonces are passed
in, and nonce freshness and nonce-count replay checks are the caller's business. The server side
works from HA1 only, so plain passwords never need to reach the edge.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edge.sip.errors import LocalProtocolError, SipParseError


class UnsupportedSchemeError(SipParseError):
    """The header uses an authentication scheme other than Digest (RFC 4475 §3.3.7).

    `status` defaults to 401: a registrar that authenticates answers an unknown scheme with a fresh
    Digest challenge rather than with 400.
    """

    def __init__(self, scheme: str, status: int = 401) -> None:
        super().__init__(f"unsupported authentication scheme {scheme!r}", status)
        self.scheme = scheme


def _md5(data: bytes) -> str:
    # usedforsecurity=False keeps MD5 usable on FIPS builds: Digest needs it for interoperability.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


# Canonical algorithm name -> (hash function, is a "-sess" variant, strength rank).
_ALGORITHMS: dict[str, tuple[Callable[[bytes], str], bool, int]] = {
    "MD5": (_md5, False, 1),
    "MD5-sess": (_md5, True, 1),
    "SHA-256": (_sha256, False, 2),
    "SHA-256-sess": (_sha256, True, 2),
}
try:  # SHA-512/256 comes from OpenSSL; every supported build has it, but do not crash without.
    _sha512_256(b"")
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass
else:
    _ALGORITHMS["SHA-512-256"] = (_sha512_256, False, 3)
    _ALGORITHMS["SHA-512-256-sess"] = (_sha512_256, True, 3)

#: Canonical spellings of the algorithms this module computes (RFC 7616 §6.1 registry names).
SUPPORTED_ALGORITHMS: tuple[str, ...] = tuple(_ALGORITHMS)
_CANONICAL: dict[str, str] = {name.lower(): name for name in _ALGORITHMS}

# RFC 3261 §25.1 token; auth-param names and unquoted values (RFC 7616 §3.3) are tokens.
_TOKEN = r"[!%'*+\-.0-9A-Z_`a-z~]+"
_TOKEN_RE = re.compile(_TOKEN)
_LWS = "[ \t]*"
# RFC 3261 §7.3.1: a line fold (CRLF + WSP) means the same as one SP, quoted strings included.
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_SCHEME_RE = re.compile(f"{_LWS}({_TOKEN})")
# auth-param = token EQUAL ( token / quoted-string ); a liberal unquoted value (any run without
# whitespace, comma or quote) is accepted too: phones send uri=sip:... and base64 nonces bare.
# (The quoted-string is written as runs of plain characters between quoted-pairs: one
# character class per run instead of an alternation per character, several times faster.)
_QUOTED_CONTENT = '[^"\\\\]*+(?:\\\\.[^"\\\\]*+)*+'
_PARAM_RE = re.compile(
    f'{_LWS}({_TOKEN}){_LWS}={_LWS}(?:"({_QUOTED_CONTENT})"|([^\\s,"]+)){_LWS}', re.S
)
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
# The whole `scheme [params]` value at once, for the fast path of `_parse_auth_params`: the same
# grammar as its loop (separators are runs of SP, HTAB and commas, a comma between params), so
# that when this matches, `findall` of one param at a time yields exactly the loop's params.
_ONE_PARAM = f'({_TOKEN}){_LWS}={_LWS}(?:"({_QUOTED_CONTENT})"|([^\\s,"]++)){_LWS}'
_ONE_PARAM_RE = re.compile(_ONE_PARAM, re.S)
_AUTH_VALUE_RE = re.compile(
    f"{_LWS}{_TOKEN}[ \t][ \t,]*+"
    f"{_ONE_PARAM}(?:,[ \t,]*+{_ONE_PARAM})*+(?:,[ \t,]*+)?+",
    re.S,
)


def canonical_algorithm(name: str | None) -> str:
    """Canonical spelling of a supported algorithm; None (absent) means MD5 (RFC 7616 §3.3)."""
    if name is None:
        return "MD5"
    canonical = _CANONICAL.get(name.lower())
    if canonical is None:
        raise SipParseError(f"unsupported digest algorithm {name!r}")
    return canonical


def _utf8(text: str) -> bytes:
    try:
        # surrogateescape gives back the exact bytes of a header decoded that way.
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _header(text: str) -> str:
    # A CR or LF from a value would end the header line: header injection. Values we parsed never
    # hold one (folds become SP), so only a value built by our own code can.
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("CR or LF in a Digest parameter value")
    return text


def _token_or_quoted(value: str) -> str:
    return value if _TOKEN_RE.fullmatch(value) else _quote(value)


def _parse_auth_params(value: str, what: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Split `Digest k=v, ...` into known (lower-cased name -> value) and every param in order."""
    if "\n" in value or "\r" in value:
        value = _FOLD_RE.sub(" ", value)
        if "\n" in value or "\r" in value:
            raise SipParseError(f"malformed {what}: CR or LF that is not a line fold")
    scheme_match = _SCHEME_RE.match(value)
    if scheme_match is None:
        raise SipParseError(f"malformed {what}: missing authentication scheme")
    scheme = scheme_match.group(1)
    if scheme.lower() != "digest":
        raise UnsupportedSchemeError(scheme, 401 if what == "credentials" else 400)
    pos = scheme_match.end()
    if _AUTH_VALUE_RE.fullmatch(value) is not None:
        return _fast_auth_params(value, pos, what)
    end = len(value)
    if pos < end and value[pos] not in " \t":
        raise SipParseError(f"malformed {what}: expected whitespace after {scheme!r}")
    params: dict[str, str] = {}
    ordered: list[tuple[str, str]] = []
    while True:
        # Empty list elements are allowed (RFC 7230 §7 #rule); so is a trailing comma.
        while pos < end and value[pos] in " \t,":
            pos += 1
        if pos >= end:
            break
        match = _PARAM_RE.match(value, pos)
        if match is None:
            raise SipParseError(f"malformed {what}: bad auth-param at {value[pos:pos + 20]!r}")
        name, quoted, bare = match.group(1, 2, 3)
        if quoted is not None:
            param_value = _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted
        else:
            param_value = bare
        key = name.lower()
        if key in params:
            raise SipParseError(f"malformed {what}: duplicate parameter {name!r}")
        params[key] = param_value
        ordered.append((name, param_value))
        pos = match.end()
        if pos < end and value[pos] != ",":
            raise SipParseError(f"malformed {what}: expected ',' after parameter {name!r}")
    if not ordered:
        raise SipParseError(f"malformed {what}: Digest without parameters")
    return params, ordered


def _fast_auth_params(
    value: str, pos: int, what: str
) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """`_parse_auth_params` for a value `_AUTH_VALUE_RE` accepted (params from `pos`)."""
    params: dict[str, str] = {}
    ordered: list[tuple[str, str]] = []
    for name, quoted, bare in _ONE_PARAM_RE.findall(value, pos):
        # A bare value has at least one character: an empty one was quoted ("").
        if bare:
            param_value = bare
        elif "\\" in quoted:
            param_value = _QUOTED_PAIR_RE.sub(r"\1", quoted)
        else:
            param_value = quoted
        key = name.lower()
        if key in params:
            raise SipParseError(f"malformed {what}: duplicate parameter {name!r}")
        params[key] = param_value
        ordered.append((name, param_value))
    return params, ordered


_CHALLENGE_KNOWN = frozenset(("realm", "nonce", "domain", "opaque", "stale", "algorithm", "qop"))
_CREDENTIALS_KNOWN = frozenset(
    ("username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "opaque", "qop", "nc")
)


@dataclass(slots=True, frozen=True, kw_only=True)
class DigestChallenge:
    """A Digest challenge (RFC 7616 §3.3). `algorithm` None means absent (MD5).

    `algorithm` holds the canonical spelling when supported, else the text as received (such a
    challenge is skipped by `choose_challenge`). `params` keeps unknown auth-params in order.
    """

    realm: str
    nonce: str
    algorithm: str | None = None
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    domain: str | None = None
    stale: bool = False
    params: tuple[tuple[str, str], ...] = ()

    @property
    def supported(self) -> bool:
        """True when this module can answer the challenge (algorithm and, if offered, qop)."""
        algorithm = "MD5" if self.algorithm is None else self.algorithm
        if algorithm.lower() not in _CANONICAL:
            return False
        return not self.qop or any(q.lower() in ("auth", "auth-int") for q in self.qop)

    def to_header(self) -> str:
        # RFC 7616 §3.3: realm, domain, nonce, opaque and qop are quoted; stale and algorithm not.
        parts = [f"realm={_quote(self.realm)}"]
        if self.domain is not None:
            parts.append(f"domain={_quote(self.domain)}")
        parts.append(f"nonce={_quote(self.nonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.stale:
            parts.append("stale=true")
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.qop:
            parts.append(f"qop={_quote(','.join(self.qop))}")
        parts.extend(f"{name}={_token_or_quoted(value)}" for name, value in self.params)
        return _header("Digest " + ", ".join(parts))

    def __str__(self) -> str:
        return self.to_header()


@dataclass(slots=True, frozen=True, kw_only=True)
class DigestCredentials:
    """Digest credentials (RFC 7616 §3.4). `params` keeps unknown auth-params in order."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    qop: str | None = None
    nc: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    def to_header(self) -> str:
        # RFC 7616 §3.4: username, realm, nonce, uri, response, cnonce and opaque are quoted;
        # algorithm, qop and nc are not.
        parts = [
            f"username={_quote(self.username)}",
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self.nonce)}",
            f"uri={_quote(self.uri)}",
            f"response={_quote(self.response)}",
        ]
        if self.algorithm is not None:
            parts.append(f"algorithm={self.algorithm}")
        if self.cnonce is not None:
            parts.append(f"cnonce={_quote(self.cnonce)}")
        if self.opaque is not None:
            parts.append(f"opaque={_quote(self.opaque)}")
        if self.qop is not None:
            parts.append(f"qop={self.qop}")
        if self.nc is not None:
            parts.append(f"nc={self.nc}")
        parts.extend(f"{name}={_token_or_quoted(value)}" for name, value in self.params)
        return _header("Digest " + ", ".join(parts))

    def __str__(self) -> str:
        return self.to_header()


def _algorithm_field(value: str | None) -> str | None:
    if value is None:
        return None
    return _CANONICAL.get(value.lower(), value)


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a WWW-Authenticate / Proxy-Authenticate value; `SipParseError` when malformed.

    A scheme other than Digest raises `UnsupportedSchemeError` (a `SipParseError`).
    """
    params, ordered = _parse_auth_params(value, "challenge")
    realm = params.get("realm")
    nonce = params.get("nonce")
    if realm is None:
        raise SipParseError("malformed challenge: Digest without realm")
    if nonce is None:
        raise SipParseError("malformed challenge: Digest without nonce")
    qop = params.get("qop")
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=_algorithm_field(params.get("algorithm")),
        # qop-options = "qop" EQUAL LDQUOT qop-value *("," qop-value) RDQUOT
        qop=() if qop is None else tuple(q.strip() for q in qop.split(",") if q.strip()),
        opaque=params.get("opaque"),
        domain=params.get("domain"),
        # RFC 2617 §3.2.1: anything other than a case-insensitive "true" is false.
        stale=params.get("stale", "").lower() == "true",
        params=tuple((n, v) for n, v in ordered if n.lower() not in _CHALLENGE_KNOWN),
    )


def parse_credentials(value: str) -> DigestCredentials:
    """Parse an Authorization / Proxy-Authorization value; `SipParseError` when malformed.

    A scheme other than Digest raises `UnsupportedSchemeError` with status 401, so that a registrar
    answers it with a fresh challenge (RFC 4475 §3.3.7).
    """
    params, ordered = _parse_auth_params(value, "credentials")
    for required in ("username", "realm", "nonce", "uri", "response"):
        if required not in params:
            raise SipParseError(f"malformed credentials: Digest without {required}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=_algorithm_field(params.get("algorithm")),
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
        qop=params.get("qop"),
        nc=params.get("nc"),
        params=(
            ()  # the usual case: nothing but the known parameters
            if params.keys() <= _CREDENTIALS_KNOWN
            else tuple((n, v) for n, v in ordered if n.lower() not in _CREDENTIALS_KNOWN)
        ),
    )


def compute_ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """H(username ":" realm ":" password), the value a directory stores instead of a password.

    For a -sess algorithm this is the stored part; `session_ha1` adds nonce and cnonce per request.
    """
    hash_function = _ALGORITHMS[canonical_algorithm(algorithm)][0]
    return hash_function(_utf8(f"{username}:{realm}:{password}"))


def session_ha1(ha1: str, nonce: str, cnonce: str, algorithm: str) -> str:
    """HA1 for a -sess algorithm: H(HA1 ":" nonce ":" cnonce) (RFC 7616 §3.4.2); else HA1."""
    hash_function, is_session, _ = _ALGORITHMS[canonical_algorithm(algorithm)]
    if not is_session:
        return ha1
    return hash_function(_utf8(f"{ha1.lower()}:{nonce}:{cnonce}"))


def _nc_text(nc: int | str | None) -> str | None:
    if nc is None or isinstance(nc, str):
        return nc
    if not 1 <= nc <= 0xFFFFFFFF:
        raise LocalProtocolError(f"nonce count {nc} out of range")
    return f"{nc:08x}"


def compute_response(
    ha1: str,
    method: str,
    digest_uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: int | str | None = None,
    cnonce: str | None = None,
    algorithm: str = "MD5",
    body: bytes = b"",
) -> str:
    """The request-digest (RFC 7616 §3.4.1; RFC 2069 form when `qop` is None).

    `ha1` is the stored H(username:realm:password); the -sess step is applied here. `nc` is the
    8-hex-digit text exactly as sent (or an int to format). An algorithm or qop this module does not
    know raises `SipParseError`.
    """
    hash_function, is_session, _ = _ALGORITHMS[canonical_algorithm(algorithm)]
    ha1 = ha1.lower()
    if is_session:
        if cnonce is None:
            raise SipParseError(f"{algorithm} needs a cnonce")
        ha1 = hash_function(_utf8(f"{ha1}:{nonce}:{cnonce}"))
    if qop is None or qop.lower() == "auth":
        ha2 = hash_function(_utf8(f"{method}:{digest_uri}"))
    elif qop.lower() == "auth-int":
        # RFC 7616 §3.4.3: A2 = Method ":" request-uri ":" H(entity-body)
        ha2 = hash_function(_utf8(f"{method}:{digest_uri}:") + hash_function(body).encode())
    else:
        raise SipParseError(f"unsupported digest qop {qop!r}")
    if qop is None:
        return hash_function(_utf8(f"{ha1}:{nonce}:{ha2}"))
    nc_text = _nc_text(nc)
    if nc_text is None or cnonce is None:
        raise SipParseError("digest qop needs nc and cnonce")
    return hash_function(_utf8(f"{ha1}:{nonce}:{nc_text}:{cnonce}:{qop}:{ha2}"))


def verify_credentials(
    credentials: DigestCredentials,
    *,
    method: str,
    ha1: str,
    expected_realm: str,
    body: bytes = b"",
) -> bool:
    """True when `credentials` prove knowledge of `ha1` for this request.

    Checks the realm, that qop, nc and cnonce come together (RFC 7616 §3.4: cnonce and nc MUST be
    sent with qop and MUST NOT be sent without it, save the cnonce a -sess algorithm needs), and
    compares the response in constant time. `ha1` must be for the credentials' algorithm. Whether
    the nonce is one we issued and still fresh, the nc not replayed, and the digest uri matching the
    Request-URI are for the caller to check.
    """
    if credentials.realm != expected_realm:
        return False
    algorithm = _CANONICAL.get((credentials.algorithm or "MD5").lower())
    if algorithm is None:
        return False
    is_session = _ALGORITHMS[algorithm][1]
    qop = credentials.qop
    if qop is None:
        together = credentials.nc is None and (credentials.cnonce is None or is_session)
    else:
        together = credentials.nc is not None and credentials.cnonce is not None
    if not together:
        return False
    try:
        expected = compute_response(
            ha1,
            method,
            credentials.uri,
            credentials.nonce,
            qop=qop,
            nc=credentials.nc,
            cnonce=credentials.cnonce,
            algorithm=algorithm,
            body=body,
        )
    except SipParseError:
        return False
    return hmac.compare_digest(expected.encode(), _utf8(credentials.response.lower()))


def build_authorization(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str | None = None,
    ha1: str | None = None,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> DigestCredentials:
    """Credentials answering `challenge` (client side, e.g. the PBX towards a carrier trunk).

    Give exactly one of `password` and `ha1`. Uses qop=auth when offered, else auth-int, else the
    RFC 2069 form. The algorithm is echoed only when the challenge named one. An algorithm or qop
    this module cannot answer raises `SipParseError`.
    """
    if (password is None) == (ha1 is None):
        raise LocalProtocolError("build_authorization needs exactly one of password and ha1")
    algorithm = canonical_algorithm(challenge.algorithm)
    is_session = _ALGORITHMS[algorithm][1]
    offered = {q.lower() for q in challenge.qop}
    qop: str | None
    if "auth" in offered:
        qop = "auth"
    elif "auth-int" in offered:
        qop = "auth-int"
    elif offered:
        raise SipParseError(f"no supported qop in challenge: {', '.join(challenge.qop)}")
    else:
        qop = None
    if ha1 is None:
        assert password is not None  # exactly one of the two, checked above
        ha1 = compute_ha1(username, challenge.realm, password, algorithm)
    nc_text = _nc_text(nc) if qop is not None else None
    used_cnonce = cnonce if qop is not None or is_session else None
    response = compute_response(
        ha1,
        method,
        uri,
        challenge.nonce,
        qop=qop,
        nc=nc_text,
        cnonce=used_cnonce,
        algorithm=algorithm,
        body=body,
    )
    return DigestCredentials(
        username=username,
        realm=challenge.realm,
        nonce=challenge.nonce,
        uri=uri,
        response=response,
        algorithm=algorithm if challenge.algorithm is not None else None,
        cnonce=used_cnonce,
        opaque=challenge.opaque,
        qop=qop,
        nc=nc_text,
    )


def choose_challenge(challenges: Iterable[DigestChallenge]) -> DigestChallenge:
    """The strongest challenge this module can answer; the first one among equals.

    RFC 8760 §2.4: a server offers SHA-256 first, then MD5, in separate challenges; a client
    answers the best it supports. Raises `SipParseError` when none is usable.
    """
    best: DigestChallenge | None = None
    best_rank = 0
    seen: list[str] = []
    for challenge in challenges:
        seen.append(challenge.algorithm or "MD5")
        if not challenge.supported:
            continue
        rank = _ALGORITHMS[canonical_algorithm(challenge.algorithm)][2]
        if rank > best_rank:
            best, best_rank = challenge, rank
    if best is None:
        offered = ", ".join(seen) if seen else "none"
        raise SipParseError(f"no supported digest challenge (offered: {offered})")
    return best
