"""Addresses in From, To, Contact, Route, Record-Route, Refer-To and Path values: ``name-addr``
or ``addr-spec`` followed by header parameters (RFC 3261 §20.10, §25.1).

A parsed address keeps its original text; changing the parameters (``with_tag``) keeps the
address part byte for byte and rewrites only the parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.grammar import (
    QUOTED_STRING_RE,
    TOKEN,
    Params,
    bare_instance,
    bounded_memo,
    cached_text,
    evolve,
    excerpt,
    is_token,
    param,
    parse_params,
    quote,
    remove_params,
    set_param,
    unquote,
)
from edge.sip.uri import Uri, parse_uri

__all__ = ["NameAddr", "parse_contact", "parse_name_addr"]

_WHAT = "malformed address"
# display-name = *(token LWS) / quoted-string (unfolded: LWS is SP / HTAB)
_DISPLAY_TOKENS_RE = re.compile(f"{TOKEN}(?:[ \\t]++{TOKEN})*+")
# A quoted string with a closing quote, whatever its characters (to tell "unterminated" apart).
_CLOSED_QUOTE_RE = re.compile('"(?:[^"\\\\]|\\\\.)*+"', re.DOTALL)
# qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )  (RFC 3261 §25.1)
_QVALUE_RE = re.compile("0(?:\\.[0-9]{0,3})?|1(?:\\.0{0,3})?")
_SP_HTAB = " \t"


@dataclass(slots=True, frozen=True, kw_only=True)
class NameAddr:
    """An address with its header parameters (``tag``, ``expires``, ``q``...).

    `display_name` is unquoted (None when absent, ``""`` for ``""``); `params` are the header
    parameters as written (for an ``addr-spec`` they follow the URI: RFC 3261 §20.10).
    """

    uri: Uri
    display_name: str | None = None
    params: Params = ()
    # The address part as written ("Display" <uri> or the bare addr-spec), and the whole text.
    _head: str | None = field(default=None, repr=False, compare=False)
    _text: str | None = field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        return cached_text(self, self._render_head, self.params)

    def _render_head(self) -> str:
        if self._head is not None:
            return self._head
        if self.display_name is None:
            return f"<{self.uri}>"
        return f"{quote(self.display_name)} <{self.uri}>"

    # --- header parameters -------------------------------------------------------------

    def param(self, name: str) -> str | None:
        """Header parameter `name` as written (case-insensitive); None absent, "" a flag."""
        return param(self.params, name)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), None when absent."""
        value = param(self.params, "tag")
        if value == "":
            raise SipParseError(f"{_WHAT}: tag parameter without a value")
        return value

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter in seconds, None when absent.

        Returned as written, however large (RFC 4475 §3.1.2.4): the registrar clamps it.
        """
        value = param(self.params, "expires")
        if value is None:
            return None
        if not value.isascii() or not value.isdigit():
            raise SipParseError(f"{_WHAT}: expires={excerpt(value)} is not delta-seconds")
        return int(value)

    @property
    def q(self) -> float | None:
        """The Contact ``q`` parameter (0 to 1), None when absent."""
        value = param(self.params, "q")
        if value is None:
            return None
        if _QVALUE_RE.fullmatch(value) is None:
            raise SipParseError(f"{_WHAT}: q={excerpt(value)} is not a qvalue")
        return float(value)

    # --- copies -------------------------------------------------------------------------

    def with_tag(self, tag: str) -> NameAddr:
        """A copy with the ``tag`` parameter set (the address part is kept as written)."""
        if not is_token(tag):
            raise LocalProtocolError(f"tag {tag!r} is not a token")
        return self.with_param("tag", tag)

    def with_param(self, name: str, value: str | None = None) -> NameAddr:
        """A copy with header parameter `name` set; `value` is written as given."""
        return evolve(self, {"params": set_param(self.params, name, value), "_text": None})

    def without_params(self, *names: str) -> NameAddr:
        """A copy without the header parameters `names` (case-insensitive)."""
        return evolve(self, {"params": remove_params(self.params, *names), "_text": None})

    def replace(self, **changes: Any) -> NameAddr:
        """A copy with fields changed (a new `uri` or `display_name` is written in <>)."""
        if "uri" in changes or "display_name" in changes:
            changes.setdefault("_head", None)
        return evolve(self, {"_text": None, **changes})


def parse_name_addr(value: str) -> NameAddr:
    """Parse a ``(name-addr / addr-spec) *(SEMI param)`` header value.

    Accepts ``"Display" <uri>;p``, ``token token <uri>;p``, ``caller<uri>`` (no LWS before
    ``<``, tolerated by RFC 4475 §3.1.1.6) and ``sip:a@b;tag=x``, where the parameters after
    an addr-spec belong to the header, not to the URI (RFC 3261 §20.10). Values are frozen and
    shared by text: To, Contact and often From repeat across a phone's requests.
    """
    return _parse_memoised(value)


def _parse_name_addr(value: str) -> NameAddr:
    text = value.strip(_SP_HTAB)
    if not text:
        raise SipParseError(f"{_WHAT}: empty value")
    first = text[0]
    display: str | None
    if first == "<":
        display = None
        open_at = 0
    elif first == '"':
        quoted = QUOTED_STRING_RE.match(text)
        if quoted is None:
            if _CLOSED_QUOTE_RE.match(text) is None:
                raise SipParseError(
                    f"{_WHAT}: unterminated quoted string in display name (RFC 4475 §3.1.2.6)"
                )
            raise SipParseError(f"{_WHAT}: invalid character in quoted display name")
        display = quoted.group(0)[1:-1]
        if "\\" in display:
            display = unquote(quoted.group(0))
        open_at = quoted.end()
        while open_at < len(text) and text[open_at] in _SP_HTAB:
            open_at += 1
        if not text.startswith("<", open_at):
            raise SipParseError(f"{_WHAT}: quoted display name must be followed by <URI>")
    else:
        open_at = text.find("<")
        if open_at < 0:
            return _parse_addr_spec(text)
        display = text[:open_at].rstrip(_SP_HTAB)
        if _DISPLAY_TOKENS_RE.fullmatch(display) is None:
            raise SipParseError(
                f"{_WHAT}: display name {excerpt(display)} must be tokens or a quoted string"
            )
    close_at = text.find(">", open_at + 1)
    if close_at < 0:
        raise SipParseError(f"{_WHAT}: '<' without matching '>'")
    uri_text = text[open_at + 1 : close_at]
    if not uri_text:
        raise SipParseError(f"{_WHAT}: empty URI in < >")
    if uri_text[0] in _SP_HTAB or uri_text[-1] in _SP_HTAB:
        raise SipParseError(f"{_WHAT}: whitespace inside < > (RFC 4475 §3.1.2.14)")
    uri = parse_uri(uri_text)
    rest = text[close_at + 1 :]
    params = parse_params(rest, _WHAT) if rest else ()
    return _make(uri, display, params, text[: close_at + 1], text)


_set = object.__setattr__


def _make(uri: Uri, display: str | None, params: Params, head: str, text: str) -> NameAddr:
    # The constructor of a frozen dataclass costs twice this: parsing is on the hot path.
    addr: NameAddr = bare_instance(NameAddr)
    _set(addr, "uri", uri)
    _set(addr, "display_name", display)
    _set(addr, "params", params)
    _set(addr, "_head", head)
    _set(addr, "_text", text)
    return addr


def _parse_addr_spec(text: str) -> NameAddr:
    # RFC 3261 §20.10: an addr-spec containing ",", ";" or "?" must be written as a name-addr,
    # so here the URI ends at the first ";" and everything after it is header parameters.
    if ">" in text:
        raise SipParseError(f"{_WHAT}: '>' without '<'")
    uri_text, semi, rest = text.partition(";")
    uri_text = uri_text.rstrip(_SP_HTAB)
    if "?" in uri_text:
        raise SipParseError(
            f"{_WHAT}: a URI with headers ('?') must be enclosed in < > (RFC 3261 §20.10)"
        )
    if "," in uri_text:
        raise SipParseError(f"{_WHAT}: a URI containing ',' must be enclosed in < >")
    if '"' in uri_text:
        raise SipParseError(f"{_WHAT}: quoted display name must be followed by <URI>")
    uri = parse_uri(uri_text)
    params = parse_params(semi + rest, _WHAT) if semi else ()
    return _make(uri, None, params, uri_text, text)


def parse_contact(value: str) -> NameAddr | Literal["*"]:
    """Parse one Contact value: an address, or the ``*`` of a REGISTER that removes all
    bindings (RFC 3261 §10.2.2)."""
    if value.strip(_SP_HTAB) == "*":
        return "*"
    return parse_name_addr(value)


# ~4 values per registered phone: room for 8k phones.
_parse_memoised = bounded_memo(_parse_name_addr, 32_768)
