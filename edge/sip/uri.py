"""URIs as SIP carries them: ``sip:``/``sips:`` (RFC 3261 §19.1), ``tel:`` (RFC 3966) and any
other ``scheme:rest`` kept verbatim, with RFC 3261 §19.1.4 comparison.

A parsed URI keeps its original text: ``str(parse_uri(x)) == x``, so a proxy splices the bytes
it received. Text is regenerated only for a URI that was built or changed (``replace``,
``with_param``...), with %-escaping applied where the grammar requires it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from edge.sip.errors import SipParseError
from edge.sip.grammar import (
    ESCAPED,
    HOST,
    UNRESERVED,
    Params,
    bare_instance,
    bounded_memo,
    check_host,
    check_ipv6_reference,
    check_port,
    escape,
    evolve,
    excerpt,
    format_host_port,
    host_key,
    pct_decode,
    pct_normalize,
)

__all__ = [
    "AbsoluteUri",
    "SipUri",
    "TelUri",
    "Uri",
    "parse_sip_uri",
    "parse_uri",
    "uri_equal",
]

_SIP = "malformed SIP URI"
_TEL = "malformed tel URI"

# --- RFC 3261 §25.1 SIP-URI grammar ----------------------------------------------------------
# user      = 1*( unreserved / escaped / user-unreserved ), user-unreserved = &=+$,;?/
# password  = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
# paramchar = param-unreserved / unreserved / escaped, param-unreserved = []/:&+$
# hname/hvalue chars = hnv-unreserved / unreserved / escaped, hnv-unreserved = []/?:+$
_USER_SAFE = "&=+$,;?/"
_PASSWORD_SAFE = "&=+$,"
_PARAM_SAFE = "[]/:&+$"
_HEADER_SAFE = "[]/?:+$"
_USER = f"(?:[{UNRESERVED}&=+$,;?/]|{ESCAPED})++"
_PASSWORD = f"(?:[{UNRESERVED}&=+$,]|{ESCAPED})*+"
_PARAMCHAR = f"(?:[{UNRESERVED}\\[\\]/:&+$]|{ESCAPED})"
_HNVCHAR = f"(?:[{UNRESERVED}\\[\\]/?:+$]|{ESCAPED})"
# HOST checks hostnames and IPv4 ranges; a bracketed IPv6 reference is checked afterwards.
# userinfo is optional; since "@" appears in no other component, the user part is everything
# up to the only "@" (so "sip:user;par=u%40example.net@example.com" has user
# "user;par=u@example.net" and no uri-parameters: RFC 4475 §3.1.1.9).
_SIP_URI_RE = re.compile(
    "(?P<scheme>[Ss][Ii][Pp][Ss]?):"
    f"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    f"(?P<host>{HOST})"
    "(?::(?P<port>[0-9]++))?"
    f"(?P<params>(?:;{_PARAMCHAR}++(?:={_PARAMCHAR}++)?+)*+)"
    f"(?:\\?(?P<headers>{_HNVCHAR}++={_HNVCHAR}*+(?:&{_HNVCHAR}++={_HNVCHAR}*+)*+))?"
)
_USER_CHARS_RE = re.compile(_USER)
_PASSWORD_CHARS_RE = re.compile(_PASSWORD)
_PARAMCHARS_RE = re.compile(f"{_PARAMCHAR}+")
_HNVCHARS_RE = re.compile(f"{_HNVCHAR}*")
_BAD_ESCAPE_RE = re.compile("%(?![0-9A-Fa-f]{2})")

# --- RFC 3966 tel URI grammar ----------------------------------------------------------------
# global-number-digits = "+" *phonedigit DIGIT *phonedigit
# local-number-digits  = *phonedigit-hex (HEXDIG / "*" / "#") *phonedigit-hex
# visual-separator = "-" / "." / "(" / ")"; parameter = ";" pname ["=" pvalue],
# pname = 1*( alphanum / "-" ), pvalue = 1*paramchar
_TEL_URI_RE = re.compile(
    "(?P<scheme>[Tt][Ee][Ll]):"
    "(?P<number>\\+[0-9\\-.()]++|[0-9A-Fa-f*#\\-.()]++)"
    f"(?P<params>(?:;[A-Za-z0-9\\-]++(?:={_PARAMCHAR}++)?+)*+)"
)
_VISUAL_SEPARATORS = str.maketrans("", "", "-.()")

# --- RFC 3986 scheme ":" rest (RFC 3261 absoluteURI) ----------------------------------------
_SCHEME_RE = re.compile("[A-Za-z][A-Za-z0-9+\\-.]*+")
_ABSOLUTE_REST_RE = re.compile("[A-Za-z0-9\\-._~:/?#\\[\\]@!$&'()*+,;=%]++")

_set = object.__setattr__

# uri-parameters whose presence in only one URI makes two URIs differ (RFC 3261 §19.1.4).
_ALWAYS_COMPARED = ("user", "ttl", "method", "maddr", "transport")


def _split_params(text: str) -> Params:
    """``;a=b;c`` (already validated by a regex) as pairs."""
    if not text:
        return ()
    out: list[tuple[str, str | None]] = []
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        out.append((name, value if eq else None))
    return tuple(out)


def _unescaped_param(params: Params, name: str) -> str | None:
    """Value of uri-parameter `name` after %-decoding; None if absent, "" for a flag."""
    lowered = name.lower()
    for key, value in params:
        if (key.lower() if "%" not in key else pct_decode(key).lower()) == lowered:
            return "" if value is None else pct_decode(value)
    return None


def _param_key(params: Params) -> dict[str, str | None]:
    """Comparison form of uri-parameters: names and values case-insensitive, §19.1.4 escapes."""
    out: dict[str, str | None] = {}
    for key, value in params:
        name = pct_normalize(key).lower()
        if name not in out:
            out[name] = None if value is None else pct_normalize(value).lower()
    return out


@dataclass(slots=True, frozen=True, eq=False, kw_only=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI.

    `user` and `password` are %-decoded exactly once; `host` is as written without the IPv6
    brackets; `params` and `headers` are kept as written (still escaped). Build one from
    trusted values with the constructor, or get one from `parse_uri`.
    """

    scheme: str = "sip"
    user: str | None = None
    password: str | None = None
    host: str
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    _text: str | None = field(default=None, repr=False)
    # user and password as written (escaped): the §19.1.4 comparison needs to know whether a
    # reserved character was escaped.
    _user_text: str | None = field(default=None, repr=False)
    _password_text: str | None = field(default=None, repr=False)

    def __str__(self) -> str:
        if self._text is None:
            object.__setattr__(self, "_text", self._render())
        assert self._text is not None
        return self._text

    def _render(self) -> str:
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts.append(self._user_wire())
            if self.password is not None:
                parts += [":", self._password_wire()]
            parts.append("@")
        parts.append(format_host_port(self.host, self.port))
        for name, value in self.params:
            parts += [";", name] if value is None else [";", name, "=", value]
        if self.headers:
            parts.append("?" + "&".join(f"{name}={value}" for name, value in self.headers))
        return "".join(parts)

    def _user_wire(self) -> str:
        if self._user_text is not None:
            return self._user_text
        return escape(self.user or "", _USER_SAFE)

    def _password_wire(self) -> str:
        if self._password_text is not None:
            return self._password_text
        return escape(self.password or "", _PASSWORD_SAFE)

    # --- views --------------------------------------------------------------------------

    @property
    def host_port(self) -> str:
        """``host[:port]`` as it would be written (IPv6 in brackets)."""
        return format_host_port(self.host, self.port)

    @property
    def secure(self) -> bool:
        """True for a ``sips:`` URI."""
        return self.scheme == "sips"

    def param(self, name: str) -> str | None:
        """uri-parameter `name` %-decoded (case-insensitive); None if absent, "" for a flag."""
        return _unescaped_param(self.params, name)

    def has_param(self, name: str) -> bool:
        return _unescaped_param(self.params, name) is not None

    def header(self, name: str) -> str | None:
        """URI header `name` (``?name=value``) %-decoded, case-insensitive; None if absent."""
        lowered = name.lower()
        for key, value in self.headers:
            if pct_decode(key).lower() == lowered:
                return pct_decode(value)
        return None

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased (RFC 3261 §19.1.4: case-insensitive)."""
        value = _unescaped_param(self.params, "transport")
        return None if value is None else value.lower()

    @property
    def lr(self) -> bool:
        """True when the ``lr`` parameter is present (loose routing, RFC 3261 §19.1.1)."""
        return _unescaped_param(self.params, "lr") is not None

    @property
    def maddr(self) -> str | None:
        return _unescaped_param(self.params, "maddr")

    @property
    def user_param(self) -> str | None:
        """The ``user`` parameter (``phone``, ``ip``...), lower-cased."""
        value = _unescaped_param(self.params, "user")
        return None if value is None else value.lower()

    # --- copies -------------------------------------------------------------------------

    def replace(self, **changes: Any) -> SipUri:
        """A copy with fields changed; its text is regenerated."""
        if "user" in changes:
            changes.setdefault("_user_text", None)
        if "password" in changes:
            changes.setdefault("_password_text", None)
        return evolve(self, {"_text": None, **changes})

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        """A copy with uri-parameter `name` set (replaced in place or appended).

        `name` and `value` are given unescaped and escaped here as the grammar requires.
        """
        return self.with_params((name, value))

    def with_params(self, *pairs: tuple[str, str | None]) -> SipUri:
        """A copy with each ``(name, value)`` set as `with_param` does."""
        params = list(self.params)
        for name, value in pairs:
            wire_name = escape(name, _PARAM_SAFE)
            wire_value = None if value is None else escape(value, _PARAM_SAFE)
            lowered = name.lower()
            for index, (key, _old) in enumerate(params):
                if pct_decode(key).lower() == lowered:
                    params[index] = (key, wire_value)
                    break
            else:
                params.append((wire_name, wire_value))
        return evolve(self, {"params": tuple(params), "_text": None})

    def without_params(self, *names: str) -> SipUri:
        """A copy without the uri-parameters `names` (case-insensitive)."""
        lowered = {name.lower() for name in names}
        params = tuple((k, v) for k, v in self.params if pct_decode(k).lower() not in lowered)
        if len(params) == len(self.params):
            return self
        return evolve(self, {"params": params, "_text": None})

    def without_headers(self) -> SipUri:
        """A copy without ``?headers`` (RFC 3261 §19.1.5: never in a Request-URI)."""
        if not self.headers:
            return self
        return evolve(self, {"headers": (), "_text": None})

    # --- RFC 3261 §19.1.4 comparison ----------------------------------------------------

    def _identity(self) -> tuple[str, str | None, str | None, str, int | None]:
        user = None if self.user is None else pct_normalize(self._user_wire())
        password = None if self.password is None else pct_normalize(self._password_wire())
        return (self.scheme, user, password, host_key(self.host), self.port)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SipUri):
            return NotImplemented
        if self._identity() != other._identity():
            return False
        if self.params or other.params:
            mine, theirs = _param_key(self.params), _param_key(other.params)
            for name in _ALWAYS_COMPARED:
                if mine.get(name, False) != theirs.get(name, False):
                    return False
            for name, value in mine.items():
                if name in theirs and theirs[name] != value:
                    return False
        if self.headers or other.headers:
            mine_h = {pct_normalize(k).lower(): pct_normalize(v) for k, v in self.headers}
            theirs_h = {pct_normalize(k).lower(): pct_normalize(v) for k, v in other.headers}
            if mine_h != theirs_h:
                return False
        return True

    def __hash__(self) -> int:
        # Only what every comparison looks at: equal URIs always hash alike.
        return hash(self._identity())


@dataclass(slots=True, frozen=True, eq=False, kw_only=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966): a global (``+...``) or local number and its parameters."""

    number: str
    params: Params = ()
    _text: str | None = field(default=None, repr=False)

    @property
    def scheme(self) -> str:
        return "tel"

    def __str__(self) -> str:
        if self._text is None:
            rendered = "tel:" + self.number + "".join(
                f";{k}" if v is None else f";{k}={v}" for k, v in self.params
            )
            object.__setattr__(self, "_text", rendered)
        assert self._text is not None
        return self._text

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    @property
    def digits(self) -> str:
        """The number without visual separators (``-.()``), upper-cased hex digits."""
        return self.number.translate(_VISUAL_SEPARATORS).upper()

    @property
    def phone_context(self) -> str | None:
        return _unescaped_param(self.params, "phone-context")

    def param(self, name: str) -> str | None:
        """Parameter `name` %-decoded (case-insensitive); None if absent, "" for a flag."""
        return _unescaped_param(self.params, name)

    def _key(self) -> tuple[str, frozenset[tuple[str, str | None]]]:
        params: dict[str, str | None] = {}
        for key, value in self.params:
            name = key.lower()
            if value is None:
                params.setdefault(name, None)
                continue
            text = pct_normalize(value).lower()
            if name in ("phone-context", "ext") and not _looks_like_domain(text):
                # Digits compare without visual separators (RFC 3966 §4).
                text = text.translate(_VISUAL_SEPARATORS)
            params.setdefault(name, text)
        return self.digits, frozenset(params.items())

    def __eq__(self, other: object) -> bool:
        # RFC 3966 §4: both global or both local, digits equal without visual separators,
        # every parameter present in both and equal, case-insensitive.
        if not isinstance(other, TelUri):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def _looks_like_domain(text: str) -> bool:
    return not text.startswith("+")


@dataclass(slots=True, frozen=True, kw_only=True)
class AbsoluteUri:
    """Any other URI (``mailto:``, ``http:``, ``urn:``...) kept verbatim.

    Equality: scheme case-insensitive, the rest compared exactly.
    """

    scheme: str
    rest: str
    _text: str = field(default="", repr=False, compare=False)

    def __str__(self) -> str:
        return self._text or f"{self.scheme}:{self.rest}"


Uri: TypeAlias = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse a URI: SIP/SIPS, tel, or any RFC 3986 ``scheme:rest`` (kept opaque).

    Raises SipParseError naming the problem (the endpoint answers 416 for a scheme it does
    not serve: that is a decision on the parsed value, not a parse failure). URIs are frozen,
    so one parse serves every message carrying the same text.
    """
    return _parse_memoised(text)


def _parse_uncached(text: str) -> Uri:
    colon = text.find(":")
    if (colon == 3 and text[:3].lower() == "sip") or (colon == 4 and text[:4].lower() == "sips"):
        return _parse_sip(text)
    if colon == 3 and text[:3].lower() == "tel":
        return _parse_tel(text)
    return _parse_absolute(text, colon)


# ~4 URIs per registered phone: room for 8k phones.
_parse_memoised = bounded_memo(_parse_uncached, 32_768)


def parse_sip_uri(text: str) -> SipUri:
    """Parse a URI that must be ``sip:`` or ``sips:`` (an AOR, a Route, a Contact...).

    Raises SipParseError with status 416 for any other scheme (RFC 3261 §8.2.2.1).
    """
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise SipParseError(f"unsupported URI scheme {uri.scheme!r}", status=416)
    return uri


def uri_equal(a: Uri, b: Uri) -> bool:
    """RFC 3261 §19.1.4 (SIP), RFC 3966 §4 (tel) comparison; different schemes never match."""
    return type(a) is type(b) and a == b


def _parse_sip(text: str) -> SipUri:
    match = _SIP_URI_RE.fullmatch(text)
    if match is None:
        raise SipParseError(f"{_SIP}: {_explain_sip(text)}")
    scheme, user_text, password_text, host, port_text, params_text, headers_text = (
        match.groups()
    )
    if host[0] == "[":
        host = check_ipv6_reference(host, _SIP)
    port = None
    if port_text is not None:
        port = int(port_text) if len(port_text) <= 5 else 0
        if not 0 < port < 65536:
            check_port(port_text, _SIP)
    # The constructor of a frozen dataclass costs twice this: parsing is on the hot path.
    uri: SipUri = bare_instance(SipUri)
    _set(uri, "scheme", "sip" if scheme == "sip" else scheme.lower())
    _set(uri, "user", None if user_text is None else pct_decode(user_text))
    _set(uri, "password", None if password_text is None else pct_decode(password_text))
    _set(uri, "host", host)
    _set(uri, "port", port)
    _set(uri, "params", _split_params(params_text))
    _set(
        uri,
        "headers",
        ()
        if headers_text is None
        else tuple(
            (name, value)
            for name, _eq, value in (item.partition("=") for item in headers_text.split("&"))
        ),
    )
    _set(uri, "_text", text)
    _set(uri, "_user_text", user_text)
    _set(uri, "_password_text", password_text)
    return uri


def _explain_sip(text: str) -> str:
    """Why `text` is not a SIP URI (only called once the fast regex has refused it)."""
    for char in text:
        if char in " \t\r\n":
            return f"whitespace inside URI {excerpt(text)}"
        if char in "<>\"":
            return f"character {char!r} not allowed in a URI {excerpt(text)}"
    bad_escape = _BAD_ESCAPE_RE.search(text)
    if bad_escape is not None:
        return f"malformed %-escape at {excerpt(text[bad_escape.start():])}"
    rest = text.partition(":")[2]
    if not rest:
        return "missing host"
    userinfo, at, hostpart = rest.partition("@")
    if not at:
        userinfo, hostpart = "", rest
    elif "@" in hostpart:
        return "unescaped '@' after the user part"
    if at:
        user, colon, password = userinfo.partition(":")
        if not user:
            return "empty user part before '@'"
        if _USER_CHARS_RE.fullmatch(user) is None:
            return f"invalid character in user part {excerpt(user)}"
        if colon and _PASSWORD_CHARS_RE.fullmatch(password) is None:
            return "invalid character in password"
    hostport, question, headers = hostpart.partition("?")
    hostport, _semi, params = hostport.partition(";")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            return f"unterminated IPv6 reference {excerpt(hostport)}"
        host, port_text = hostport[: close + 1], hostport[close + 1 :]
        if port_text and not port_text.startswith(":"):
            return f"unexpected text after IPv6 reference {excerpt(port_text)}"
        check_host(host, _SIP)
        port_text = port_text[1:] if port_text else ""
        has_port = bool(hostport[close + 1 :])
    else:
        if hostport.count(":") > 1:
            return f"IPv6 address {excerpt(hostport)} must be enclosed in [ ] (RFC 5118 §4.2)"
        host, colon, port_text = hostport.partition(":")
        has_port = bool(colon)
        check_host(host, _SIP)
    if has_port:
        check_port(port_text, _SIP)
    if _semi:
        for item in params.split(";"):
            name, eq, value = item.partition("=")
            if not name:
                return "empty uri-parameter (';;' or trailing ';')"
            if _PARAMCHARS_RE.fullmatch(name) is None:
                return f"invalid uri-parameter name {excerpt(name)}"
            if eq and not value:
                return f"empty value for uri-parameter {excerpt(name)}"
            if eq and _PARAMCHARS_RE.fullmatch(value) is None:
                return f"invalid value for uri-parameter {excerpt(name)}"
    if question:
        for item in headers.split("&"):
            name, eq, value = item.partition("=")
            if not name or not eq:
                return f"malformed URI header {excerpt(item)}"
            if _HNVCHARS_RE.fullmatch(name) is None or _HNVCHARS_RE.fullmatch(value) is None:
                return f"invalid character in URI header {excerpt(item)}"
    return f"cannot parse {excerpt(text)}"


def _parse_tel(text: str) -> TelUri:
    match = _TEL_URI_RE.fullmatch(text)
    if match is None:
        raise SipParseError(f"{_TEL}: {_explain_tel(text)}")
    number = match.group("number")
    separators_only = number.lstrip("+").translate(_VISUAL_SEPARATORS)
    if not separators_only:
        raise SipParseError(f"{_TEL}: no digits in {excerpt(number)}")
    params = _split_params(match.group("params"))
    if not number.startswith("+") and _unescaped_param(params, "phone-context") is None:
        # RFC 3966 §5.1.5: a local number MUST carry a phone-context.
        raise SipParseError(f"{_TEL}: local number {excerpt(number)} without phone-context")
    return TelUri(number=number, params=params, _text=text)


def _explain_tel(text: str) -> str:
    rest = text[4:]
    number, _semi, params = rest.partition(";")
    if not number:
        return "missing number"
    if not number.lstrip("+").translate(_VISUAL_SEPARATORS):
        return f"no digits in {excerpt(number)}"
    if any(c in " \t" for c in text):
        return f"whitespace inside URI {excerpt(text)}"
    if "+" in number[1:] or not all(c in "0123456789abcdefABCDEF*#-.()+" for c in number):
        return f"invalid character in number {excerpt(number)}"
    if _semi:
        for item in params.split(";"):
            name, eq, value = item.partition("=")
            if not name:
                return "empty parameter (';;' or trailing ';')"
            if eq and not value:
                return f"empty value for parameter {excerpt(name)}"
    return f"cannot parse {excerpt(text)}"


def _parse_absolute(text: str, colon: int) -> AbsoluteUri:
    if colon <= 0:
        if text.startswith("<"):
            raise SipParseError(f"URI must not be enclosed in < > here: {excerpt(text)}")
        raise SipParseError(f"missing URI scheme in {excerpt(text)}")
    scheme = text[:colon]
    if _SCHEME_RE.fullmatch(scheme) is None:
        if scheme.startswith("<"):
            raise SipParseError(f"URI must not be enclosed in < > here: {excerpt(text)}")
        raise SipParseError(f"invalid URI scheme {excerpt(scheme)}")
    rest = text[colon + 1 :]
    if not rest:
        raise SipParseError(f"empty {scheme}: URI")
    if _ABSOLUTE_REST_RE.fullmatch(rest) is None:
        raise SipParseError(f"invalid character in {scheme}: URI {excerpt(text)}")
    return AbsoluteUri(scheme=scheme.lower(), rest=rest, _text=text)
