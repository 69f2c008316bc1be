"""One Via value (via-parm, RFC 3261 §20.42): sent-protocol, sent-by and the parameters that
route responses back (branch, received, rport of RFC 3581, maddr, ttl).

A parsed Via keeps its original text; ``with_received`` / ``with_rport`` keep the sent-protocol
and sent-by as written and rewrite only the parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.grammar import (
    HOST,
    TOKEN,
    Params,
    bare_instance,
    cached_text,
    check_host,
    check_ip_address,
    check_ipv6_reference,
    check_port,
    evolve,
    excerpt,
    format_host,
    format_host_port,
    host_key,
    is_token,
    param,
    parse_params,
    set_param,
)

__all__ = ["MAGIC_COOKIE", "Via", "parse_via"]

MAGIC_COOKIE = "z9hG4bK"
"""Branch prefix of RFC 3261 transaction ids (§8.1.1.7)."""

_WHAT = "malformed Via"
# via-parm = sent-protocol LWS sent-by *( SEMI via-params )
# sent-protocol = protocol-name SLASH protocol-version SLASH transport, SLASH = SWS "/" SWS
# sent-by = host [ COLON port ], COLON = SWS ":" SWS
_VIA_RE = re.compile(
    f"({TOKEN})[ \\t]*+/[ \\t]*+({TOKEN})[ \\t]*+/[ \\t]*+({TOKEN})[ \\t]++"
    f"({HOST})"
    "(?:[ \\t]*+:[ \\t]*+([0-9]++))?+"
)
_SP_HTAB = " \t"
_UPPER_TRANSPORTS = frozenset({"UDP", "TCP", "TLS", "SCTP", "WS", "WSS"})
_SENT_PROTOCOL_RE = re.compile(f"{TOKEN}[ \\t]*/[ \\t]*{TOKEN}[ \\t]*/[ \\t]*{TOKEN}")


@dataclass(slots=True, frozen=True, kw_only=True)
class Via:
    """One via-parm. `transport` is upper-cased, `host` has no IPv6 brackets, `port` is None
    when absent, `params` are as written. `branch`, `received` and `rport` are read from the
    parameters (and validated) when the Via is made.

    `rport_requested` is True when the ``rport`` parameter is present (the client asks for it,
    RFC 3581 §3); `rport` is its port number once a server filled it in, else None.
    """

    transport: str
    host: str
    port: int | None = None
    params: Params = ()
    protocol_name: str = "SIP"
    protocol_version: str = "2.0"
    _head: str | None = field(default=None, repr=False, compare=False)
    _text: str | None = field(default=None, repr=False, compare=False)
    branch: str | None = field(default=None, init=False, compare=False)
    received: str | None = field(default=None, init=False, compare=False)
    rport: int | None = field(default=None, init=False, compare=False)
    rport_requested: bool = field(default=False, init=False, compare=False)

    def __post_init__(self) -> None:
        branch, received, rport, requested = _scan_params(self.params)
        _set(self, "branch", branch)
        _set(self, "received", received)
        _set(self, "rport", rport)
        _set(self, "rport_requested", requested)

    def __str__(self) -> str:
        return cached_text(self, self._render_head, self.params)

    def _render_head(self) -> str:
        if self._head is not None:
            return self._head
        sent_by = format_host_port(self.host, self.port)
        return f"{self.protocol_name}/{self.protocol_version}/{self.transport} {sent_by}"

    # --- views --------------------------------------------------------------------------

    @property
    def sent_by(self) -> str:
        """``host[:port]`` as it would be written (IPv6 in brackets)."""
        return format_host_port(self.host, self.port)

    @property
    def has_magic_cookie(self) -> bool:
        """True when the branch is an RFC 3261 transaction id (starts ``z9hG4bK``, §8.1.1.7)."""
        return self.branch is not None and self.branch.startswith(MAGIC_COOKIE)

    @property
    def maddr(self) -> str | None:
        value = param(self.params, "maddr")
        return None if value is None else value.strip("[]")

    @property
    def ttl(self) -> int | None:
        value = param(self.params, "ttl")
        return None if value is None else int(value)

    def param(self, name: str) -> str | None:
        """Parameter `name` as written (case-insensitive); None if absent, "" for a flag."""
        return param(self.params, name)

    # --- copies -------------------------------------------------------------------------

    def with_received(self, host: str) -> Via:
        """A copy with ``received=host`` (an IP address, written without brackets)."""
        return self._with_param("received", host.strip("[]"))

    def with_rport(self, port: int) -> Via:
        """A copy with ``rport=port`` (the RFC 3581 §4 server side)."""
        return self._with_param("rport", str(port))

    def with_source(self, host: str, port: int) -> Via:
        """Stamp the address a request arrived from (server transport, RFC 3261 §18.2.1 and
        RFC 3581 §4): ``received`` when sent-by is not that IP address or when ``rport`` was
        asked for, and ``rport=port`` when it was asked for."""
        host = host.strip("[]")
        if self.rport_requested:
            params = _stamped(self.params, host, str(port))
            rport: int | None = port
        elif host_key(self.host) != host_key(host):
            params = _stamped(self.params, host, None)
            rport = self.rport
        else:
            return self
        # One copy without re-validating what this Via already passed (this runs per request;
        # written out, it costs half of what `evolve` does).
        stamped = bare_instance(Via)
        for name in _COPIED_FIELDS:
            object.__setattr__(stamped, name, getattr(self, name))
        object.__setattr__(stamped, "params", params)
        object.__setattr__(stamped, "_text", None)
        object.__setattr__(stamped, "received", host)
        object.__setattr__(stamped, "rport", rport)
        object.__setattr__(stamped, "rport_requested", self.rport_requested)
        return stamped

    def _with_param(self, name: str, value: str | None) -> Via:
        return replace(self, params=set_param(self.params, name, value), _text=None)

    @classmethod
    def build(
        cls,
        transport: str,
        host: str,
        port: int | None,
        branch: str,
        rport: bool = True,
    ) -> Via:
        """Our own Via: ``SIP/2.0/{transport} host[:port];branch=...[;rport]``.

        `host` is a bare IP address or domain (no IPv6 brackets); `branch` should start
        with `MAGIC_COOKIE`.
        """
        try:
            check_host(format_host(host), "Via host")
            if port is not None:
                check_port(str(port), "Via port")
        except SipParseError as error:
            raise LocalProtocolError(error.reason) from None
        if not is_token(transport):
            raise LocalProtocolError(f"Via transport {transport!r} is not a token")
        if not is_token(branch):
            raise LocalProtocolError(f"Via branch {branch!r} is not a token")
        params: Params = (("branch", branch), ("rport", None)) if rport else (("branch", branch),)
        # This runs for every request the edge sends: no constructor scanning the parameters
        # just written (see with_source).
        return evolve(_BUILT, {"transport": transport.upper(), "host": host, "port": port,
                               "params": params, "branch": branch, "rport_requested": rport})


_set = object.__setattr__


def _scan_params(params: Params) -> tuple[str | None, str | None, int | None, bool]:
    """Validate the via-params RFC 3261 §20.42 / RFC 3581 define; return branch, received,
    rport (first occurrence of each), and whether rport is present."""
    branch = received = None
    rport: int | None = None
    requested = False
    for name, value in params:
        lowered = name if name == "branch" else name.lower()
        if lowered == "branch":
            if value is None or not is_token(value):
                raise SipParseError(f"{_WHAT}: branch must be a token")
            if branch is None:
                branch = value
        elif lowered == "rport":
            # response-port = "rport" [EQUAL 1*DIGIT] (RFC 3581 §3)
            if not requested:
                requested = True
                rport = None if value is None else check_port(value, f"{_WHAT}: rport")
        elif lowered == "received":
            if value is None:
                raise SipParseError(f"{_WHAT}: received without a value")
            # IPv4address / IPv6address; [IPv6] tolerated (RFC 5118 §4.5).
            if received is None:
                received = check_ip_address(value, _WHAT)
        elif lowered == "ttl":
            # ttl = 1*3DIGIT, 0 to 255
            if not value or len(value) > 3 or not value.isdigit() or int(value) > 255:
                raise SipParseError(f"{_WHAT}: ttl must be 0-255")
        elif lowered == "maddr":
            if value is None:
                raise SipParseError(f"{_WHAT}: maddr without a value")
            check_host(value, _WHAT)
    return branch, received, rport, requested




_COPIED_FIELDS = ("transport", "host", "port", "protocol_name", "protocol_version", "_head",
                  "branch")


def _stamped(params: Params, received: str, rport: str | None) -> Params:
    """`params` with ``received`` set and, when `rport` is given, ``rport`` set: what
    ``set_param(set_param(params, "received", ...), "rport", ...)`` gives, in one pass (this
    runs for every request received)."""
    out: list[tuple[str, str | None]] = []
    has_received = has_rport = False
    for key, value in params:
        lowered = key if key == "branch" else key.lower()
        if lowered == "received":
            if not has_received:
                out.append((key, received))
                has_received = True
        elif lowered == "rport" and rport is not None:
            if not has_rport:
                out.append((key, rport))
                has_rport = True
        else:
            out.append((key, value))
    if not has_received:
        out.append(("received", received))
    if rport is not None and not has_rport:
        out.append(("rport", rport))
    return tuple(out)



def parse_via(value: str) -> Via:
    """Parse one via-parm (one comma-separated element of a Via header value).

    LWS is allowed around ``/`` and ``:`` (RFC 4475 §3.1.1.1); any transport token is
    accepted (§3.1.1.10). The protocol name and version are returned, not checked: a
    ``SIP/7.0`` Via is for the caller to answer with 505.
    """
    text = value.strip(_SP_HTAB)
    match = _VIA_RE.match(text)
    if match is None:
        raise SipParseError(f"{_WHAT}: {_explain(text)}")
    name, version, transport, host_text, port_text = match.groups()
    head_end = match.end()
    rest = text[head_end:]
    if rest:
        stripped = rest.lstrip(_SP_HTAB)
        if stripped.startswith(":"):
            raise SipParseError(f"{_WHAT}: invalid port or unbracketed IPv6 address in sent-by")
        if stripped and stripped[0] != ";":
            raise SipParseError(f"{_WHAT}: unexpected {excerpt(stripped)} after sent-by")
    host = host_text if host_text[0] != "[" else check_ipv6_reference(host_text, _WHAT)
    port = None
    if port_text is not None:
        port = int(port_text) if len(port_text) <= 5 else 0
        if not 0 < port < 65536:
            check_port(port_text, _WHAT)
    params = parse_params(rest, _WHAT) if rest else ()
    branch, received, rport, requested = _scan_params(params)
    # The constructor of a frozen dataclass costs twice this: parsing is on the hot path.
    via: Via = bare_instance(Via)
    _set(via, "transport", transport if transport in _UPPER_TRANSPORTS else transport.upper())
    _set(via, "host", host)
    _set(via, "port", port)
    _set(via, "params", params)
    _set(via, "protocol_name", name)
    _set(via, "protocol_version", version)
    _set(via, "_head", text[:head_end])
    _set(via, "_text", text)
    _set(via, "branch", branch)
    _set(via, "received", received)
    _set(via, "rport", rport)
    _set(via, "rport_requested", requested)
    return via


def _explain(text: str) -> str:
    if not text:
        return "empty value"
    protocol = _SENT_PROTOCOL_RE.match(text)
    if protocol is None:
        return f"malformed sent-protocol in {excerpt(text)} (expected SIP/2.0/transport)"
    rest = text[protocol.end() :]
    if not rest.strip(" \t"):
        return "missing sent-by"
    if rest[0] not in _SP_HTAB:
        return f"missing space between sent-protocol and sent-by in {excerpt(text)}"
    sent_by = rest.strip(_SP_HTAB)
    if sent_by.startswith("["):
        host = sent_by[: sent_by.find("]") + 1] or sent_by
    else:
        host = re.split("[;: \t]", sent_by, maxsplit=1)[0]
        if sent_by.count(":") > 1:
            host = sent_by.partition(";")[0].strip(_SP_HTAB)
    check_host(host, _WHAT)
    return f"invalid sent-by {excerpt(sent_by)}"


# What Via.build copies: SIP/2.0, no parameters, nothing received yet.
_BUILT = Via(transport="UDP", host="0.0.0.0")
