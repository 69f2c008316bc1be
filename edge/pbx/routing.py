"""Where a new call goes, by the config: static routes, trunks and trunk limits (sans-IO).

- `CallFacts`: the parts of an INVITE that routes match on (`from.user`, `to.host`,
  `header.X-Account`... the keys of `[proxy.routes.match]`, COMPAT.md "Config sections").
- `StaticRouter`: `[[proxy.routes]]` in priority order (higher first, ties in file order); the
  first route whose every `match` key matches decides: forward to its `dest` trunks (ordered by
  `select`), reject with `reject.code` (default 403) or busy (486). `rewrite` values may use the
  capture groups of the same key's match: `{1}`, and `{0}` for the whole match.
- `TrunkDirectory`: which trunk a source address belongs to, and its credentials.
- `TrunkLimiter`: `max_calls` (concurrent) and `max_cps` (a sliding one-second window) per trunk.

Everything here is pure: `now` is passed in and randomness comes from an injected `draw`
callable (`random.Random(seed).random`: a float in [0, 1)), so tests are deterministic. The
`hash` selection uses BLAKE2b rather than `hash()`, which Python salts per process: every edge
must send one caller to the same trunk.

Matching follows RustPBX (`src/proxy/routing/matcher.rs`): a value containing one of
``^ $ * + ? [ ( \\`` is a regular expression *searched* in the field (anchor it with ^...$ to
match the whole field); any other value must equal the field exactly. Hosts compare
case-insensitively (RFC 3261 §19.1.4), users case-sensitively. A `header.NAME` key does not match
when the request has no such header.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

from edge.sip.errors import SipParseError
from edge.sip.grammar import host_key
from edge.sip.headers import Headers
from edge.sip.uri import SipUri, TelUri, Uri, parse_sip_uri

if TYPE_CHECKING:
    from edge.config import RouteConfig, TrunkConfig
    from edge.sip.message import Request

Action = Literal["forward", "reject", "busy", "abort", "spam", "not_handled", "answer"]
Strategy = Literal["sequential", "parallel"]
Source = Literal["webhook", "static"]
Draw = Callable[[], float]  # random.random-like: a float in [0, 1)
Limit = Literal["max_calls", "max_cps"]

BUSY_STATUS = 486  # RFC 3261 §21.4.24 Busy Here
DEFAULT_REJECT_STATUS = 403
NO_TRUNK_STATUS = 503  # every trunk of the route is disabled or inbound-only
NOT_FOUND_STATUS = 404  # what a not_handled call gets if the registrar has no binding either

# A value is a regex when it contains one of these (the same set as edge/config.py's check).
_REGEX_MARKERS = frozenset("^$*+?[(\\")
_HOST_KEYS = frozenset({"from.host", "to.host", "request_uri.host"})
_PLACEHOLDER = re.compile(r"\{([0-9]+)\}")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _uri_parts(uri: Uri) -> tuple[str, str, str]:
    """(user, host in comparison form, port as written or "") of any URI we may be given."""
    if isinstance(uri, SipUri):
        return uri.user or "", host_key(uri.host), "" if uri.port is None else str(uri.port)
    if isinstance(uri, TelUri):  # RFC 3966: the number plays the user's part
        return uri.number, "", ""
    return "", "", ""


# --- the facts a route matches on ----------------------------------------------------------


@dataclass(slots=True, init=False, unsafe_hash=True)
class CallFacts:
    """What routing looks at in a new INVITE. Users are %-decoded; hosts lower-cased (IPv6
    compressed); ports as written, "" when the URI has none (no default port is assumed).

    `from_uri` / `to_uri` are the URIs of From / To without display name or tag (match keys
    `from` / `to`); `caller` is `from.user@from.host`; `callee` is the Request-URI's
    `user@host` (the target of the call, as RustPBX's `callee`). `headers` serves the
    `header.NAME` keys.
    """

    call_id: Final[str]
    from_user: Final[str]
    from_host: Final[str]
    from_uri: Final[str]
    to_user: Final[str]
    to_host: Final[str]
    to_port: Final[str]
    to_uri: Final[str]
    request_uri_user: Final[str]
    request_uri_host: Final[str]
    request_uri_port: Final[str]
    source_trunk: Final[str | None]
    headers: Headers = field(repr=False, compare=False)

    def __init__(
        self, *, call_id: str = "", from_user: str = "", from_host: str = "", from_uri: str = "",
        to_user: str = "", to_host: str = "", to_port: str = "", to_uri: str = "",
        request_uri_user: str = "", request_uri_host: str = "", request_uri_port: str = "",
        source_trunk: str | None = None, headers: Headers | None = None,
    ) -> None:
        self.call_id = call_id
        self.from_user = from_user
        self.from_host = from_host
        self.from_uri = from_uri
        self.to_user = to_user
        self.to_host = to_host
        self.to_port = to_port
        self.to_uri = to_uri
        self.request_uri_user = request_uri_user
        self.request_uri_host = request_uri_host
        self.request_uri_port = request_uri_port
        self.source_trunk = source_trunk
        self.headers = Headers() if headers is None else headers

    @classmethod
    def from_request(cls, request: Request, source_trunk: str | None) -> CallFacts:
        """The facts of `request` (a validated INVITE: From, To and Call-ID are present)."""
        from_uri = request.from_addr.uri
        to_uri = request.to_addr.uri
        from_user, from_host, _ = _uri_parts(from_uri)
        to_user, to_host, to_port = _uri_parts(to_uri)
        ruri_user, ruri_host, ruri_port = _uri_parts(request.request_uri)
        return cls(
            call_id=request.headers.get("Call-ID") or "",
            from_user=from_user,
            from_host=from_host,
            from_uri=str(from_uri),
            to_user=to_user,
            to_host=to_host,
            to_port=to_port,
            to_uri=str(to_uri),
            request_uri_user=ruri_user,
            request_uri_host=ruri_host,
            request_uri_port=ruri_port,
            source_trunk=source_trunk,
            headers=request.headers,
        )

    @property
    def caller(self) -> str:
        return f"{self.from_user}@{self.from_host}"

    @property
    def callee(self) -> str:
        return f"{self.request_uri_user}@{self.request_uri_host}"

    @property
    def callee_user(self) -> str:
        """The number called: the Request-URI's user, else the To user."""
        return self.request_uri_user or self.to_user

    def value(self, key: str) -> str | None:
        """The value of a route key (`to.user`, `header.X-Foo`...); None when it has none."""
        return _getter(key)(self)


_FIELD_GETTERS: dict[str, Callable[[CallFacts], str | None]] = {
    "from.user": lambda f: f.from_user,
    "from.host": lambda f: f.from_host,
    "from": lambda f: f.from_uri,
    "to.user": lambda f: f.to_user,
    "to.host": lambda f: f.to_host,
    "to.port": lambda f: f.to_port,
    "to": lambda f: f.to_uri,
    "request_uri.user": lambda f: f.request_uri_user,
    "request_uri.host": lambda f: f.request_uri_host,
    "request_uri.port": lambda f: f.request_uri_port,
    "caller": lambda f: f.caller,
    "callee": lambda f: f.callee,
    # Not a match key of the config, but a sensible `hash_key` (RustPBX names it "call-id").
    "call-id": lambda f: f.call_id,
    "call_id": lambda f: f.call_id,
}
ROUTE_KEYS = frozenset(_FIELD_GETTERS) - {"call-id", "call_id"}


def _getter(key: str) -> Callable[[CallFacts], str | None]:
    getter = _FIELD_GETTERS.get(key)
    if getter is not None:
        return getter
    if key.startswith("header.") and len(key) > 7:
        name = key[7:]
        return lambda facts: facts.headers.get(name)
    raise ValueError(f"unknown route field {key!r} (use one of {', '.join(sorted(ROUTE_KEYS))}, "
                     "or header.NAME)")


# --- what routing decides -----------------------------------------------------------------


@dataclass(slots=True, init=False, unsafe_hash=True)
class RouteTarget:
    """One place to ring. `aor` is set when the target is one of our users: the B2BUA looks it
    up in the registrar (`uri` is then the address as the router wrote it). `trunk` names the
    trunk the target belongs to (its credentials and limits apply)."""

    uri: Final[str]
    trunk: Final[str | None]
    aor: Final[str | None]

    def __init__(self, uri: str, trunk: str | None = None, aor: str | None = None) -> None:
        self.uri = uri
        self.trunk = trunk
        self.aor = aor


@dataclass(slots=True, init=False, unsafe_hash=True)
class Rewrite:
    """Caller and callee numbers before and after routing (the CDR's `rewrite`), and every
    field a route rewrote (`("to.user", "+4930...")`, `("header.X-Foo", "1")`...)."""

    caller_original: Final[str]
    caller_final: Final[str]
    callee_original: Final[str]
    callee_final: Final[str]
    fields: Final[tuple[tuple[str, str], ...]]

    def __init__(
        self, *, caller_original: str = "", caller_final: str = "", callee_original: str = "",
        callee_final: str = "", fields: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.caller_original = caller_original
        self.caller_final = caller_final
        self.callee_original = callee_original
        self.callee_final = callee_final
        self.fields = fields

    @classmethod
    def identity(cls, facts: CallFacts) -> Rewrite:
        return cls(caller_original=facts.from_user, caller_final=facts.from_user,
                   callee_original=facts.callee_user, callee_final=facts.callee_user)


@dataclass(slots=True, init=False, unsafe_hash=True)
class RouteDecision:
    """What to do with a new call.

    - `forward`: ring `targets` by `strategy` (`sequential`: one after the other on failure).
    - `reject` / `busy` / `abort`: answer `status` (4xx-6xx) with `reason` as reason phrase.
    - `spam`: drop the INVITE without an answer (`status` is what to send if one must be sent).
    - `not_handled`: no route; look the callee up in the registrar, else answer `status` (404).
    - `answer`: answer the call and run `steps` (call-control objects).

    `status` is 0 for forward and answer. `headers` go on the outgoing INVITEs (for a reject:
    on the response); `record`, `timeout_s` (maximum duration), `max_ring_time_s` and
    `rtp_timeout_s` are None when the router did not say. `trunk` is the first target's trunk.
    """

    action: Final[Action]
    targets: Final[tuple[RouteTarget, ...]]
    strategy: Final[Strategy]
    status: Final[int]
    reason: Final[str | None]
    record: Final[bool | None]
    timeout_s: Final[float | None]
    max_ring_time_s: Final[float | None]
    rtp_timeout_s: Final[float | None]
    headers: Final[tuple[tuple[str, str], ...]]
    with_original_headers: Final[bool]
    extensions: Final[Mapping[str, Any]]
    allow_codecs: Final[tuple[str, ...]]
    steps: Final[tuple[Mapping[str, Any], ...] | None]
    answer_url: Final[str | None]  # answer: where the steps come from, when not given
    fallback_answer_url: Final[str | None]
    event_url: Final[str | None]  # answer: where the call's events go
    route_name: Final[str | None]
    trunk: Final[str | None]
    rewrite: Final[Rewrite]
    source: Final[Source]

    def __init__(
        self, *, action: Action, targets: tuple[RouteTarget, ...] = (),
        strategy: Strategy = "sequential", status: int = 0, reason: str | None = None,
        record: bool | None = None, timeout_s: float | None = None,
        max_ring_time_s: float | None = None, rtp_timeout_s: float | None = None,
        headers: tuple[tuple[str, str], ...] = (), with_original_headers: bool = False,
        extensions: Mapping[str, Any] = _EMPTY, allow_codecs: tuple[str, ...] = (),
        steps: tuple[Mapping[str, Any], ...] | None = None, answer_url: str | None = None,
        fallback_answer_url: str | None = None, event_url: str | None = None,
        route_name: str | None = None, trunk: str | None = None, rewrite: Rewrite | None = None,
        source: Source = "static",
    ) -> None:
        self.action = action
        self.targets = targets
        self.strategy = strategy
        self.status = status
        self.reason = reason
        self.record = record
        self.timeout_s = timeout_s
        self.max_ring_time_s = max_ring_time_s
        self.rtp_timeout_s = rtp_timeout_s
        self.headers = headers
        self.with_original_headers = with_original_headers
        self.extensions = extensions
        self.allow_codecs = allow_codecs
        self.steps = steps
        self.answer_url = answer_url
        self.fallback_answer_url = fallback_answer_url
        self.event_url = event_url
        self.route_name = route_name
        self.trunk = trunk
        self.rewrite = Rewrite() if rewrite is None else rewrite
        self.source = source

    @classmethod
    def not_handled(cls, facts: CallFacts, *, source: Source = "static",
                    extensions: Mapping[str, Any] = _EMPTY) -> RouteDecision:
        """No route decided: the registrar is next, then 404."""
        return cls(action="not_handled", status=NOT_FOUND_STATUS, extensions=extensions,
                   rewrite=Rewrite.identity(facts), source=source)


# --- static routes ------------------------------------------------------------------------


class _Matcher:
    """One `match` key: exact (hosts case-insensitively) or a precompiled regex (searched)."""

    __slots__ = ("get", "groups", "key", "pattern", "text")

    def __init__(self, key: str, text: str) -> None:
        self.key = key
        self.get = _getter(key)
        is_host = key in _HOST_KEYS
        self.pattern: re.Pattern[str] | None = None
        self.text = text
        if _REGEX_MARKERS.intersection(text):
            try:
                self.pattern = re.compile(text, re.IGNORECASE if is_host else 0)
            except re.error as exc:
                raise ValueError(f"match {key!r}: bad regular expression {text!r}: {exc}"
                                 ) from None
        elif is_host:
            self.text = host_key(text)
        self.groups = 0 if self.pattern is None else self.pattern.groups

    def captures(self, facts: CallFacts) -> tuple[str, ...] | None:
        """None when the field does not match; else `{0}`, `{1}`... of the match."""
        value = self.get(facts)
        if value is None:
            return None
        if self.pattern is None:
            return (value,) if value == self.text else None
        found = self.pattern.search(value)
        if found is None:
            return None
        return (found.group(0), *(group or "" for group in found.groups()))


class _Template:
    """A rewrite value: literal text with `{n}` capture references, split once."""

    __slots__ = ("key", "parts")

    def __init__(self, key: str, text: str, groups: int | None) -> None:
        self.key = key
        parts: list[str | int] = []
        position = 0
        for found in _PLACEHOLDER.finditer(text):
            index = int(found.group(1))
            if index > 0 and (groups is None or index > groups):
                have = "no regex match" if groups is None else f"{groups} group(s)"
                raise ValueError(
                    f"rewrite {key!r} = {text!r}: {{{index}}} refers to a capture group the "
                    f"match on {key!r} does not have ({have})"
                )
            parts += [text[position:found.start()], index]
            position = found.end()
        parts.append(text[position:])
        self.parts = tuple(part for part in parts if part != "")

    def render(self, captures: tuple[str, ...] | None, current: str) -> str:
        if len(self.parts) == 1 and isinstance(self.parts[0], str):
            return self.parts[0]
        out: list[str] = []
        for part in self.parts:
            if isinstance(part, str):
                out.append(part)
            elif captures is not None:
                out.append(captures[part])
            else:  # {0} without a match on this key: the field's current value
                out.append(current)
        return "".join(out)


@dataclass(slots=True)
class _Trunk:
    name: str
    uri: SipUri  # `dest`, with the transport parameter filled in from `transport`
    backup: SipUri | None
    weight: int
    codecs: tuple[str, ...]
    usable: bool  # enabled and may carry calls out


def _trunk_uri(name: str, which: str, text: str, transport: str | None) -> SipUri:
    try:
        uri = parse_sip_uri(text)
    except SipParseError as exc:
        raise ValueError(f"trunk {name!r}: {which} {text!r} is not a SIP URI: {exc}") from None
    if transport is not None and uri.transport is None:
        uri = uri.with_param("transport", transport)
    return uri


def _compile_trunks(trunks: Mapping[str, TrunkConfig]) -> dict[str, _Trunk]:
    compiled: dict[str, _Trunk] = {}
    for name, trunk in trunks.items():
        compiled[name] = _Trunk(
            name=name,
            uri=_trunk_uri(name, "dest", trunk.dest, trunk.transport),
            backup=None if trunk.backup_dest is None
            else _trunk_uri(name, "backup_dest", trunk.backup_dest, trunk.transport),
            weight=1 if trunk.weight is None else trunk.weight,
            codecs=tuple(trunk.codec),
            usable=not trunk.disabled and trunk.direction != "inbound",
        )
    return compiled


class _Route:
    __slots__ = ("action", "codecs", "dest", "hash_get", "matchers", "name", "next_rr",
                 "reject_headers", "reject_reason", "reject_status", "rewrites", "select",
                 "source_trunks")

    def __init__(self, config: RouteConfig, trunks: Mapping[str, _Trunk]) -> None:
        self.name = config.name
        self.source_trunks = frozenset(name.lower() for name in config.source_trunks)
        self.matchers = tuple(_Matcher(key, text) for key, text in config.match.items())
        groups = {m.key: m.groups for m in self.matchers if m.pattern is not None}
        self.rewrites = tuple(
            _Template(key, text, groups.get(key)) for key, text in config.rewrite.items()
        )
        for key in config.rewrite:
            _getter(key)  # an unknown key is a config error now, not at the first call
        for name in config.dest:
            if name not in trunks:
                raise ValueError(f"route {config.name!r}: dest {name!r} is not a trunk")
        # Disabled and inbound-only trunks never carry a call out of this route.
        self.dest = tuple(name for name in config.dest if trunks[name].usable)
        self.select = config.select
        self.hash_get = None if config.hash_key is None else _getter(config.hash_key)
        self.codecs = tuple(config.codecs)
        self.next_rr = 0
        reject = config.reject
        self.reject_status = DEFAULT_REJECT_STATUS if reject is None else reject.code
        self.reject_reason = None if reject is None else reject.reason
        self.reject_headers = () if reject is None else tuple(reject.headers.items())
        self.action: Action = config.action
        if config.action == "forward" and not config.dest and reject is not None:
            self.action = "reject"  # the config allows a "forward" that only names a reject

    def captures(self, facts: CallFacts) -> dict[str, tuple[str, ...]] | None:
        """Every key's captures when the route matches the call, else None."""
        if self.source_trunks and (
            facts.source_trunk is None or facts.source_trunk.lower() not in self.source_trunks
        ):
            return None
        found: dict[str, tuple[str, ...]] = {}
        for matcher in self.matchers:
            captures = matcher.captures(facts)
            if captures is None:
                return None
            found[matcher.key] = captures
        return found


class StaticRouter:
    """`[[proxy.routes]]` over `[proxy.trunks]`. Raises `ValueError` at construction for a
    `dest` that names no trunk, a bad regex, an unknown key, or a rewrite `{n}` its match lacks.

    `route(facts)` returns None when no route matches. A forward decision lists every usable
    trunk of the route, the selected one first (`select`): the B2BUA tries them in order, each
    trunk's `backup_dest` right after its `dest`.
    """

    def __init__(
        self,
        routes: Sequence[RouteConfig],
        trunks: Mapping[str, TrunkConfig],
        draw: Draw,
    ) -> None:
        self._trunks = _compile_trunks(trunks)
        self._draw = draw
        enabled = [(index, route) for index, route in enumerate(routes) if not route.disabled]
        # Higher priority first; sorted() is stable, so equal priorities keep file order.
        enabled.sort(key=lambda pair: -pair[1].priority)
        self._routes = tuple(_Route(route, self._trunks) for _, route in enabled)

    @property
    def route_names(self) -> tuple[str, ...]:
        """The enabled routes in the order they are tried."""
        return tuple(route.name for route in self._routes)

    def route(self, facts: CallFacts) -> RouteDecision | None:
        for route in self._routes:
            captures = route.captures(facts)
            if captures is not None:
                return self._decide(route, facts, captures)
        return None

    def _decide(
        self, route: _Route, facts: CallFacts, captures: dict[str, tuple[str, ...]]
    ) -> RouteDecision:
        rewrite, added_headers = _rewrite(route, facts, captures)
        if route.action == "busy":
            return RouteDecision(action="busy", status=BUSY_STATUS, route_name=route.name,
                                 rewrite=rewrite)
        if route.action == "reject":
            return RouteDecision(
                action="reject", status=route.reject_status, reason=route.reject_reason,
                headers=route.reject_headers, route_name=route.name, rewrite=rewrite,
            )
        if not route.dest:
            return RouteDecision(
                action="reject", status=NO_TRUNK_STATUS, reason="No Trunk Available",
                route_name=route.name, rewrite=rewrite,
            )
        order = self._order(route, facts)
        targets: list[RouteTarget] = []
        for name in order:
            trunk = self._trunks[name]
            user = rewrite.callee_final or None
            targets.append(RouteTarget(str(trunk.uri.replace(user=user, headers=())), name))
            if trunk.backup is not None:
                targets.append(RouteTarget(str(trunk.backup.replace(user=user, headers=())),
                                           name))
        first = self._trunks[order[0]]
        return RouteDecision(
            action="forward",
            targets=tuple(targets),
            headers=added_headers,
            allow_codecs=route.codecs or first.codecs,
            route_name=route.name,
            trunk=first.name,
            rewrite=rewrite,
        )

    def _order(self, route: _Route, facts: CallFacts) -> list[str]:
        names = list(route.dest)
        count = len(names)
        if count == 1:
            return names
        if route.select == "rr":
            start = route.next_rr % count
            route.next_rr = (start + 1) % count
            return names[start:] + names[:start]
        if route.select == "hash":
            key = route.hash_get(facts) if route.hash_get is not None else facts.caller
            digest = hashlib.blake2b((key or "").encode("utf-8", "surrogatepass"),
                                     digest_size=8).digest()
            start = int.from_bytes(digest, "big") % count
            return names[start:] + names[:start]
        if route.select == "random":
            weights = [1] * count
        else:  # weighted
            weights = [self._trunks[name].weight for name in names]
        return _weighted_order(names, weights, self._draw)


def _weighted_order(names: list[str], weights: list[int], draw: Draw) -> list[str]:
    """A random order in which each next trunk is drawn in proportion to its weight (weight 0
    comes last; all zero: uniform). With equal weights this is a uniform shuffle."""
    names = list(names)
    weights = list(weights)
    order: list[str] = []
    while names:
        total = sum(weights)
        if total <= 0:
            index = min(int(draw() * len(names)), len(names) - 1)
        else:
            point = draw() * total
            index = len(names) - 1
            running = 0
            for i, weight in enumerate(weights):
                running += weight
                if point < running:
                    index = i
                    break
        order.append(names.pop(index))
        weights.pop(index)
    return order


def _rewrite(
    route: _Route, facts: CallFacts, captures: dict[str, tuple[str, ...]]
) -> tuple[Rewrite, tuple[tuple[str, str], ...]]:
    caller = facts.from_user
    callee = facts.callee_user
    if not route.rewrites:
        return Rewrite(caller_original=caller, caller_final=caller,
                       callee_original=callee, callee_final=callee), ()
    values: dict[str, str] = {}
    headers: list[tuple[str, str]] = []
    for template in route.rewrites:
        current = facts.value(template.key) or ""
        value = template.render(captures.get(template.key), current)
        values[template.key] = value
        if template.key.startswith("header."):
            headers.append((template.key[7:], value))
    caller_final = values.get("from.user", caller)
    if "from.user" not in values and "caller" in values:
        caller_final = values["caller"].partition("@")[0]
    # The number called: the Request-URI user wins over the To user (RustPBX rewrites its
    # `callee`, which becomes the outgoing Request-URI, from `to.user`).
    callee_final = values.get("request_uri.user", values.get("to.user", callee))
    if "request_uri.user" not in values and "to.user" not in values and "callee" in values:
        callee_final = values["callee"].partition("@")[0]
    rewrite = Rewrite(caller_original=caller, caller_final=caller_final,
                      callee_original=callee, callee_final=callee_final,
                      fields=tuple(values.items()))
    return rewrite, tuple(headers)


# --- trunks ---------------------------------------------------------------------------------

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


_IDENTIFIED_MAX = 4096


def _address(text: str) -> _Address | None:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return address


class TrunkDirectory:
    """Which trunk a call comes from, and how to authenticate to one.

    A trunk is recognised by the source IP of the INVITE: one of its `inbound_hosts` (IPs or
    CIDRs), or, when it lists none, the host of its `dest` / `backup_dest` when that is an IP.
    An exact address wins over a network, a longer prefix over a shorter one, then file order.
    Host names are not resolved (no DNS here): they are listed in `unresolved` so the caller
    can warn. Disabled and outbound-only trunks are never the source of a call.
    """

    __slots__ = ("_by_host", "_exact", "_identified", "_networks", "_trunks", "unresolved")

    def __init__(self, trunks: Mapping[str, TrunkConfig]) -> None:
        self._trunks = dict(trunks)
        self._exact: dict[_Address, str] = {}
        networks: list[tuple[int, int, _Network, str]] = []
        unresolved: list[tuple[str, str]] = []
        # (host key, port or None) -> trunk, for the targets a routing webhook names.
        self._by_host: dict[str, list[tuple[int | None, str]]] = {}
        for order, (name, trunk) in enumerate(trunks.items()):
            uris = [trunk.dest] + ([trunk.backup_dest] if trunk.backup_dest else [])
            for text in uris:
                try:
                    uri = parse_sip_uri(text)
                except SipParseError:
                    continue
                self._by_host.setdefault(host_key(uri.host), []).append((uri.port, name))
            if trunk.disabled or trunk.direction == "outbound":
                continue
            hosts = list(trunk.inbound_hosts)
            if not hosts:
                for text in uris:
                    try:
                        hosts.append(parse_sip_uri(text).host)
                    except SipParseError:
                        continue
            for host in hosts:
                address = _address(host)
                if address is not None:
                    self._exact.setdefault(address, name)
                    continue
                try:
                    network = ipaddress.ip_network(host.strip(), strict=False)
                except ValueError:
                    unresolved.append((name, host))
                    continue
                networks.append((-network.prefixlen, order, network, name))
        networks.sort(key=lambda item: (item[0], item[1]))
        self._networks = tuple((network, name) for _, _, network, name in networks)
        self.unresolved: tuple[tuple[str, str], ...] = tuple(unresolved)
        # Source text -> answer: parsing the address took ~3% of a call's CPU, and calls come
        # from few addresses. Bounded, so a flood from random sources cannot grow it.
        self._identified: dict[str, str | None] = {}

    def identify(self, ip: str) -> str | None:
        """The trunk whose hosts include `ip` (a source address without port), or None."""
        known = self._identified
        if ip in known:
            return known[ip]
        name = self._lookup(ip)
        if len(known) >= _IDENTIFIED_MAX:
            known.clear()
        known[ip] = name
        return name

    def _lookup(self, ip: str) -> str | None:
        address = _address(ip)
        if address is None:
            return None
        name = self._exact.get(address)
        if name is not None:
            return name
        for network, trunk in self._networks:
            if address in network:
                return trunk
        return None

    def credentials(self, name: str) -> tuple[str, str] | None:
        """(username, password) to answer the trunk's digest challenges, when both are set."""
        trunk = self._trunks.get(name)
        if trunk is None or trunk.username is None or trunk.password is None:
            return None
        return trunk.username, trunk.password

    def trunk_for(self, uri: SipUri) -> str | None:
        """The trunk whose `dest` or `backup_dest` is at `uri`'s host (and port, when both
        name one), e.g. for a target a routing webhook returned."""
        candidates = self._by_host.get(host_key(uri.host))
        if not candidates:
            return None
        for port, name in candidates:
            if port is None or uri.port is None or port == uri.port:
                return name
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._trunks


class TrunkLimiter:
    """`max_calls` and `max_cps` per trunk. `acquire` before sending (or accepting) a call on
    a trunk, `release` when that call ends; a refused `acquire` holds nothing.

    `max_cps` counts the calls acquired in the last second (a sliding window: at most
    `max_cps` starts in any interval of one second). A limit of 0 admits no call; a trunk
    without limits, or unknown, is never refused. Memory per trunk is bounded by `max_cps`.
    """

    __slots__ = ("_active", "_limits", "_starts")

    def __init__(self, trunks: Mapping[str, TrunkConfig]) -> None:
        self._limits: dict[str, tuple[int | None, int | None]] = {
            name: (trunk.max_calls, trunk.max_cps)
            for name, trunk in trunks.items()
            if trunk.max_calls is not None or trunk.max_cps is not None
        }
        self._active: dict[str, int] = dict.fromkeys(self._limits, 0)
        self._starts: dict[str, deque[float]] = {
            name: deque() for name, (_, cps) in self._limits.items() if cps is not None
        }

    def acquire(self, name: str, now: float) -> Limit | None:
        """None: admitted (and counted). Else the limit that refuses it."""
        limits = self._limits.get(name)
        if limits is None:
            return None
        max_calls, max_cps = limits
        if max_calls is not None and self._active[name] >= max_calls:
            return "max_calls"
        if max_cps is not None:
            starts = self._starts[name]
            while starts and starts[0] <= now - 1.0:
                starts.popleft()
            if len(starts) >= max_cps:
                return "max_cps"
            starts.append(now)
        self._active[name] += 1
        return None

    def release(self, name: str) -> None:
        """A call admitted by `acquire(name, ...)` ended."""
        active = self._active.get(name)
        if active:  # never below zero, whatever the caller does
            self._active[name] = active - 1

    def active(self, name: str) -> int:
        """Calls on `name` now (0 for a trunk without limits: those are not counted)."""
        return self._active.get(name, 0)

    def carry_over(self, previous: TrunkLimiter) -> None:
        """Take the calls `previous` counts (a reload replaced it) for the trunks still limited
        here, so a reload neither forgets calls in progress nor lets `max_calls` be exceeded."""
        for name, count in previous._active.items():
            if name in self._active:
                self._active[name] = count
        for name, starts in previous._starts.items():
            if name in self._starts:
                self._starts[name] = deque(starts)
