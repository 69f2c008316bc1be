"""Shared lexical pieces of the SIP grammar (RFC 3261 §25.1): tokens, quoted strings, hosts,
ports, %-escapes, generic parameters and comma-separated header lists.

Parameters are kept as ``(name, value)`` pairs exactly as written (names keep their case, a
quoted-string value keeps its quotes, a flag parameter has value ``None``) so that a header
re-serialises to the same bytes; look them up with `param`, which compares names
case-insensitively (RFC 3261 §7.3.1: parameter names are case-insensitive).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import quote as _url_quote
from urllib.parse import unquote as _url_unquote

from edge.sip.errors import LocalProtocolError, SipParseError

T = TypeVar("T")

__all__ = [
    "ALNUM",
    "ESCAPED",
    "GEN_VALUE",
    "HOST",
    "HOSTNAME",
    "IPV4",
    "MARK",
    "QUOTED_STRING",
    "QUOTED_STRING_RE",
    "TOKEN",
    "TOKEN_CHARS",
    "TOKEN_CLASS",
    "TOKEN_RE",
    "UNRESERVED",
    "WORD",
    "WORD_RE",
    "Params",
    "check_host",
    "check_ip_address",
    "check_ipv6_reference",
    "check_port",
    "escape",
    "excerpt",
    "format_host",
    "format_host_port",
    "format_params",
    "has_param",
    "host_key",
    "is_token",
    "param",
    "parse_params",
    "pct_decode",
    "pct_normalize",
    "quote",
    "remove_params",
    "set_param",
    "split_comma_list",
    "unquote",
]

Params = tuple[tuple[str, str | None], ...]
"""Parameters as written: ``((name, value_or_None), ...)``."""

# --- RFC 3261 §25.1 character classes (regex class bodies) --------------------------------
ALNUM = "A-Za-z0-9"
MARK = r"\-_.!~*'()"
UNRESERVED = ALNUM + MARK
ESCAPED = "%[0-9A-Fa-f]{2}"
# token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN_CLASS = ALNUM + r"\-.!%*_+`'~"
TOKEN_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
TOKEN = f"[{TOKEN_CLASS}]+"
TOKEN_RE = re.compile(TOKEN)
# word = 1*(token chars / "(" / ")" / "<" / ">" / ":" / "\" / DQUOTE / "/" / "[" / "]" /
#           "?" / "{" / "}")  (Call-ID halves)
WORD = f'[{TOKEN_CLASS}()<>:\\\\"/\\[\\]?{{}}]+'
WORD_RE = re.compile(WORD)

# quoted-string = SWS DQUOTE *(qdtext / quoted-pair) DQUOTE
# qdtext = LWS / %x21 / %x23-5B / %x5D-7E / UTF8-NONASCII (values arrive unfolded: LWS is SP/HTAB)
# quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
_QDTEXT = '[^"\\\\\\x00-\\x08\\x0a-\\x1f\\x7f]'
_QUOTED_PAIR = "\\\\[\\x00-\\x09\\x0b\\x0c\\x0e-\\x7f]"
QUOTED_STRING = f'"(?:{_QDTEXT}|{_QUOTED_PAIR})*+"'
QUOTED_STRING_RE = re.compile(QUOTED_STRING)
_QUOTED_PAIR_RE = re.compile(_QUOTED_PAIR)

# gen-value = token / host / quoted-string. The unbracketed form with ":" is there for
# Via received=IPv6address (RFC 3261 §20.42); bracketed for RFC 5118 §4.5 tolerance.
GEN_VALUE = f"(?:{QUOTED_STRING}|\\[[0-9A-Fa-f:.]++\\]|[{TOKEN_CLASS}:]++)"
# generic-param = token [ EQUAL gen-value ], preceded by SEMI = SWS ";" SWS
_PARAM_RE = re.compile(f"[ \\t]*+;[ \\t]*+({TOKEN})(?:[ \\t]*+=[ \\t]*+({GEN_VALUE}))?+[ \\t]*+")
_SIMPLE_PARAMS_RE = re.compile(f"(?:;{TOKEN}(?:=[{TOKEN_CLASS}:]++)?+)*+")

_SP_HTAB = " \t"


def is_token(text: str) -> bool:
    """True when `text` is a non-empty RFC 3261 token."""
    return TOKEN_RE.fullmatch(text) is not None


# --- quoted strings ---------------------------------------------------------------------


def unquote(text: str) -> str:
    """The content of the quoted-string `text` (quotes included), quoted-pairs resolved.

    ``unquote('"J Rosenberg \\\\\\""')`` is ``'J Rosenberg \\"'``.
    """
    if QUOTED_STRING_RE.fullmatch(text) is None:
        if len(text) < 2 or not text.startswith('"') or not text.endswith('"'):
            raise SipParseError(f"unterminated quoted string {excerpt(text)}")
        raise SipParseError(f"invalid character in quoted string {excerpt(text)}")
    inner = text[1:-1]
    if "\\" not in inner:
        return inner
    return _QUOTED_PAIR_RE.sub(lambda m: m.group(0)[1], inner)


def quote(text: str) -> str:
    """`text` as a quoted-string: ``"`` and ``\\`` and control characters become quoted-pairs.

    CR and LF cannot be written in a quoted-string at all (no quoted-pair exists for them):
    asking for one is a bug on our side, never silently dropped (header injection).
    """
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("a quoted-string cannot contain CR or LF")
    out = []
    for ch in text:
        if ch in '"\\' or (ch < " " and ch != "\t") or ch == "\x7f":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


# --- %-escapes ------------------------------------------------------------------------------

_ESCAPE_RE = re.compile("%([0-9A-Fa-f]{2})")
# RFC 2396 reserved set: §19.1.4 says only characters *outside* it are equal to their escape.
_RESERVED = frozenset(";/?:@&=+$,")


def pct_decode(text: str) -> str:
    """`text` with every ``%HH`` escape decoded, exactly once (RFC 4475 §3.1.1.3).

    Escaped bytes are read as UTF-8; bytes that are not valid UTF-8 (``%FF``) become lone
    surrogates (``surrogateescape``) so that two different byte strings never decode equal.
    """
    if "%" not in text:
        return text
    return _url_unquote(text, errors="surrogateescape")


def _normalize_escape(match: re.Match[str]) -> str:
    hex_digits = match.group(1)
    char = chr(int(hex_digits, 16))
    return "%" + hex_digits.upper() if char in _RESERVED else char


def pct_normalize(text: str) -> str:
    """Comparison form of an escaped URI component (RFC 3261 §19.1.4).

    An escape of a non-reserved character equals the character itself; an escaped reserved
    character stays escaped (with upper-case hex), since ``%3B`` and ``;`` are not equivalent.
    Non-ASCII bytes map to code points 0x80-0xFF (the result is only for comparison).
    """
    if "%" not in text:
        return text
    return _ESCAPE_RE.sub(_normalize_escape, text)


def escape(text: str, safe: str) -> str:
    """`text` with every character outside unreserved + `safe` written as ``%HH`` (UTF-8)."""
    return _url_quote(text, safe=safe + "!~*'()", errors="surrogateescape")


# --- hosts and ports ---------------------------------------------------------------------

_IPV4_LIKE_RE = re.compile("[0-9.]+")
# IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT, each at most 255 (RFC 5954).
_OCTET = "(?:25[0-5]|2[0-4][0-9]|[01]?[0-9]?[0-9])"
IPV4 = f"{_OCTET}\\.{_OCTET}\\.{_OCTET}\\.{_OCTET}"
_IPV4_RE = re.compile(IPV4)
# hostname = *( domainlabel "." ) toplabel [ "." ], with "_" tolerated inside labels (seen in
# container and lab names) and a top label allowed to start with a digit; a host made only of
# digits and dots must however be a valid IPv4 address.
_LABEL = "[A-Za-z0-9_](?:[A-Za-z0-9_\\-]*+(?<=[A-Za-z0-9_]))?+"
HOSTNAME = f"(?=[0-9.]*+[A-Za-z_\\-])(?:{_LABEL}\\.)*{_LABEL}\\.?"
# host = hostname / IPv4address / IPv6reference. The bracketed form is only matched loosely
# here: validate it with `check_host` (RFC 5118 §4.10: "[2001:db8:::192.0.2.1]" is invalid).
HOST = f"(?:\\[[0-9A-Fa-f:.]*+\\]|{IPV4}(?![A-Za-z0-9_.\\-])|{HOSTNAME})"
_HOST_RE = re.compile(HOST)
_IPV6_CHARS_RE = re.compile("[0-9A-Fa-f:.]+")


def _ipv6_compressed(text: str) -> str | None:
    """The canonical (compressed, lower-case) form of IPv6 address `text`, None if invalid."""
    if _IPV6_CHARS_RE.fullmatch(text) is None or ":" not in text:
        return None
    try:
        return ipaddress.IPv6Address(text).compressed
    except ValueError:
        return None


def check_ipv6_reference(host: str, what: str) -> str:
    """Validate ``[IPv6address]`` and return the address without brackets."""
    inner = host[1:-1] if host.endswith("]") else ""
    if not host.startswith("[") or not host.endswith("]"):
        raise SipParseError(f"{what}: unterminated IPv6 reference {excerpt(host)}")
    if _ipv6_compressed(inner) is None:
        raise SipParseError(f"{what}: invalid IPv6 reference {excerpt(host)} (RFC 5118)")
    return inner


def check_host(host: str, what: str) -> str:
    """Validate a host as written in a URI or Via and return it without IPv6 brackets.

    host = hostname / IPv4address / IPv6reference (RFC 3261 §25.1, RFC 5118). Raises
    SipParseError prefixed with `what` ("malformed Via", "malformed SIP URI", ...).
    """
    if not host:
        raise SipParseError(f"{what}: missing host")
    if host[0] == "[":
        return check_ipv6_reference(host, what)
    if _HOST_RE.fullmatch(host) is None:
        if _IPV4_LIKE_RE.fullmatch(host) is not None:
            raise SipParseError(f"{what}: invalid IPv4 address {excerpt(host)}")
        if ":" in host:
            raise SipParseError(
                f"{what}: IPv6 address {excerpt(host)} must be enclosed in [ ] (RFC 5118 §4.2)"
            )
        raise SipParseError(f"{what}: invalid host {excerpt(host)}")
    return host


def is_ip_address(text: str) -> bool:
    """Whether `text` (without brackets) is an IPv4 or IPv6 address rather than a name."""
    return _IPV4_RE.fullmatch(text) is not None or _ipv6_compressed(text) is not None


def check_ip_address(text: str, what: str) -> str:
    """Validate an IPv4 or IPv6 address (brackets tolerated, RFC 5118 §4.5); return it bare."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if is_ip_address(inner):
        return inner
    raise SipParseError(f"{what}: {excerpt(text)} is not an IP address")


def host_key(host: str) -> str:
    """Comparison form of a bare host: domains case-folded, IPv6 addresses canonicalised."""
    if ":" in host:
        return _ipv6_compressed(host) or host.lower()
    return host.lower()


def check_port(digits: str, what: str) -> int:
    """A port number 1..65535 written as decimal digits."""
    if not digits or len(digits) > 5 or not digits.isascii() or not digits.isdigit():
        raise SipParseError(f"{what}: invalid port {excerpt(digits)}")
    port = int(digits)
    if not 1 <= port <= 65535:
        raise SipParseError(f"{what}: port {port} out of range 1-65535")
    return port


def format_host(host: str) -> str:
    """A bare host as written in a URI or Via: IPv6 addresses get their brackets back."""
    return f"[{host}]" if ":" in host else host


def format_host_port(host: str, port: int | None) -> str:
    """``host``, ``host:port`` or ``[v6]:port``."""
    text = format_host(host)
    return text if port is None else f"{text}:{port}"


# --- generic parameters ------------------------------------------------------------------


def parse_params(text: str, what: str = "malformed parameters") -> Params:
    """Parse ``*( SEMI generic-param )``: ``;name=value;flag`` with optional LWS around ``;``
    and ``=``. `text` is what follows the URI / sent-by; it may be empty.

    An empty parameter (``;;``, a trailing ``;``) or an empty value (``;a=``) is an error
    (RFC 4475 §3.1.2.1). Values may be a token, a host or a quoted-string (kept quoted).
    """
    if not text:
        return ()
    if _SIMPLE_PARAMS_RE.fullmatch(text) is not None:
        # Nearly every parameter list (a tag, a branch): no LWS, no quoted or bracketed
        # value. Such text splits at ";" and "=" exactly as the loop below would parse it.
        simple: list[tuple[str, str | None]] = []
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            simple.append((name, value if eq else None))
        return tuple(simple)
    params: list[tuple[str, str | None]] = []
    pos = 0
    end = len(text)
    match = _PARAM_RE.match
    while pos < end:
        found = match(text, pos)
        if found is None:
            if not text[pos:].strip(_SP_HTAB):
                break
            last = params[-1][0] if params else ""
            raise SipParseError(f"{what}: {_explain_param_error(text, pos, last)}")
        params.append((found.group(1), found.group(2)))
        pos = found.end()
    return tuple(params)


def _explain_param_error(text: str, pos: int, last_name: str) -> str:
    rest = text[pos:].lstrip(_SP_HTAB)
    if rest.startswith("=") and last_name:
        # The previous parameter matched as a flag: its value is what is wrong.
        return _explain_value_error(last_name, rest)
    if not rest.startswith(";"):
        return f"unexpected text {excerpt(rest)} where ';' was expected"
    rest = rest[1:].lstrip(_SP_HTAB)
    if not rest or rest[0] in ";,":
        return "empty parameter (';;' or trailing ';')"
    name_match = TOKEN_RE.match(rest)
    if name_match is None:
        return f"parameter name {excerpt(rest)} is not a token"
    name = name_match.group(0)
    after = rest[name_match.end() :].lstrip(_SP_HTAB)
    if after.startswith("="):
        return _explain_value_error(name, after)
    return f"unexpected text {excerpt(after)} after parameter {name!r}"


def _explain_value_error(name: str, after_name: str) -> str:
    value = after_name[1:].lstrip(_SP_HTAB)
    if not value or value[0] in ";,":
        return f"empty value for parameter {name!r}"
    if value[0] == '"':
        return f"unterminated or invalid quoted value for parameter {name!r}"
    return f"invalid value {excerpt(value)} for parameter {name!r}"


def format_params(params: Iterable[tuple[str, str | None]]) -> str:
    """``;name=value;flag`` for `params` (values written as they are: quote them first)."""
    return "".join([f";{name}" if value is None else f";{name}={value}" for name, value in params])


def param(params: Params, name: str) -> str | None:
    """The value of parameter `name` (case-insensitive; first occurrence wins).

    None when absent, ``""`` for a flag without value, else the value as written.
    """
    lowered = name.lower()
    for key, value in params:
        if key == name or key.lower() == lowered:
            return "" if value is None else value
    return None


def has_param(params: Params, name: str) -> bool:
    """True when parameter `name` is present (with or without a value)."""
    return param(params, name) is not None


def set_param(params: Params, name: str, value: str | None) -> Params:
    """`params` with `name` set to `value`: replaced in place if present, else appended."""
    lowered = name.lower()
    out: list[tuple[str, str | None]] = []
    replaced = False
    for key, old in params:
        if key.lower() == lowered:
            if not replaced:
                out.append((key, value))
                replaced = True
            continue
        out.append((key, old))
    if not replaced:
        out.append((name, value))
    return tuple(out)


def remove_params(params: Params, *names: str) -> Params:
    """`params` without any of `names` (case-insensitive)."""
    lowered = {name.lower() for name in names}
    return tuple((key, value) for key, value in params if key.lower() not in lowered)


# --- comma-separated lists ---------------------------------------------------------------

# One list element: runs of plain text, quoted strings (with quoted-pairs) and <...>.
_ELEMENT_RE = re.compile('(?:[^",<]++|"(?:[^"\\\\]|\\\\.)*+"|<[^>]*+>)*+', re.DOTALL)


def split_comma_list(value: str) -> list[str]:
    """Split a header value at top-level commas (RFC 3261 §7.3.1), stripping each element.

    Commas inside quoted strings (``\\"`` escapes honoured) and inside ``<...>`` are part of
    the element. Empty elements, an unterminated quote or ``<`` are SipParseErrors.
    """
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    elif "," not in value and _ELEMENT_RE.fullmatch(value) is not None:
        parts = [value]  # one element (a Contact, a Route...): what the loop below finds
    else:
        parts = []
        pos = 0
        end = len(value)
        while True:
            found = _ELEMENT_RE.match(value, pos)
            stop = found.end() if found is not None else pos
            if stop < end and value[stop] != ",":
                if value[stop] == '"':
                    raise SipParseError("unterminated quoted string in header value")
                raise SipParseError("'<' without matching '>' in header value")
            parts.append(value[pos:stop])
            if stop >= end:
                break
            pos = stop + 1
    elements = [part.strip(_SP_HTAB) for part in parts]
    if "" in elements:
        raise SipParseError("empty element in comma-separated header value")
    return elements


def excerpt(text: str, limit: int = 40) -> str:
    """`text` quoted for an error reason, cut to `limit` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def bounded_memo(parse: Callable[[str], T], max_size: int) -> Callable[[str], T]:
    """`parse` memoised by its text argument, keeping at most `max_size` results.

    For parsers of frozen values (URIs, name-addrs) that see the same text again and again (a
    phone's Request-URI, To and Contact on every request). Bounded, so hostile input cannot
    grow it; errors are not cached.

    Two generations of `max_size / 2` entries: new results go to the young one, which becomes
    the old one when full (the old one is dropped whole); a hit in the old generation moves
    the value back to the young one. Every step is O(1): evicting the oldest key of one big
    dict instead (``del cache[next(iter(cache))]``) makes CPython scan the holes left at the
    front of the dict, thousands of slots per miss once the cache is full.
    """
    half = max(1, max_size // 2)
    young: dict[str, T] = {}
    old: dict[str, T] = {}

    def memoised(text: str) -> T:
        nonlocal young, old
        value = young.get(text)
        if value is None:
            value = old.get(text)
            if value is None:
                value = parse(text)
            if len(young) >= half:
                old = young
                young = {}
            young[text] = value
        return value

    return memoised


def bare_instance(cls: type[T]) -> T:
    """An instance of `cls` with no field set: the parsers fill their frozen dataclasses through
    `object.__setattr__`, which costs half the constructor on the hot path. Allocated by
    `cls.__new__`, not `object.__new__`: a class compiled by mypyc must make its own instances."""
    return cls.__new__(cls)


# A dataclass -> its field names, in order and as a set.
_FIELD_NAMES: dict[type, tuple[tuple[str, ...], frozenset[str]]] = {}


def evolve(value: T, changes: dict[str, Any]) -> T:
    """A copy of the frozen dataclass `value` with `changes`, like `dataclasses.replace` but
    field by field into a `bare_instance`, several times faster than the generated constructor
    (TypeError for a name that is not a field). `__post_init__` is not run: a caller whose
    class derives fields there sets them in `changes` itself."""
    cls = type(value)
    known = _FIELD_NAMES.get(cls)
    if known is None:
        names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        known = _FIELD_NAMES[cls] = (names, frozenset(names))
    if not known[1].issuperset(changes):
        unknown = sorted(set(changes) - known[1])
        raise TypeError(f"{cls.__name__} has no field {unknown[0]!r}")
    copy = bare_instance(cls)
    for name in known[0]:
        object.__setattr__(copy, name, changes[name] if name in changes else getattr(value, name))
    return copy


def cached_text(value: Any, render_head: Callable[[], str], params: Params) -> str:
    """The wire text of a frozen `head;params` value (Via, name-addr), rendered once.

    Parsed values keep the text they came from in `_text`; a changed copy renders it on first
    use and keeps it (frozen dataclasses: set through object.__setattr__)."""
    text: str | None = value._text
    if text is None:
        text = render_head() + format_params(params)
        object.__setattr__(value, "_text", text)
    return text
