"""The call routing webhook (`HttpRouter`) and the router the B2BUA asks (`CallRouter`).

`HttpRouter.decide` POSTs a `RouteRequest` to `[proxy.http_router] url` (https, `lambda:` or
`control:`, through `edge.io.control_client`; SigV4-signed too with `sigv4`), signed like every
webhook (`control.contracts.signing`, docs/webhooks.md) and with the configured headers, and
returns the parsed `RouteResponse` or a `RouterFailure` saying why there is none: a timeout
(`timeout_ms` bounds the whole exchange, reply body included), a transport error, a non-2xx
status, or a reply that is not valid JSON for the schema. It never raises for any of these.

`CallRouter.route` applies COMPAT.md's semantics: the webhook first when configured;
`not_handled` -> the static routes; a failure -> the static routes when `fallback_to_static`,
else 503 (RustPBX answers 500 for an invalid reply; ours treats it as any failure); `spam`
passes through for the B2BUA to drop. When no static route matches, the decision is
`not_handled` (the B2BUA then asks the registrar, else answers 404).

A webhook target that is a bare extension ("1001") or a SIP URI in one of our domains becomes a
`RouteTarget` with `aor` set, for the registrar; other SIP URIs are rung as they are (and carry
the trunk whose address they name, so its credentials and limits apply). Log lines name the call
id and the failure, never the URL's query, the headers or the body (they may hold API keys).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx
from pydantic import ValidationError

from control.contracts.router import Direction, RouteRequest, RouteResponse
from control.contracts.signing import sign
from edge.io.control_client import build_client, internal_url, sigv4_auth
from edge.io.webhooks import redact_url
from edge.pbx.registrar import aor_key
from edge.pbx.routing import (
    CallFacts,
    Draw,
    Rewrite,
    RouteDecision,
    RouteTarget,
    StaticRouter,
    TrunkDirectory,
)
from edge.sip.errors import SipParseError
from edge.sip.grammar import host_key
from edge.sip.headers import canonical_name
from edge.sip.uri import SipUri, parse_uri

if TYPE_CHECKING:
    from starlette.types import ASGIApp

    from edge.config import HttpRouterConfig, ProxyConfig
    from edge.sip.message import Request

log = logging.getLogger("sdpbx.pbx.routing")

_JSON = "application/json"
# A routing reply is a few hundred bytes; `answer` steps a few kilobytes. More is a mistake.
MAX_REPLY_BYTES = 1 << 20
UNAVAILABLE_STATUS = 503  # RFC 3261 §21.5.4: the router could not say where the call goes

FailureKind = Literal["timeout", "transport", "http_status", "invalid"]
# The reason phrase of the 503 when the webhook fails without fallback: says which side to
# look at, names no URL.
_FAILURE_REASONS: dict[FailureKind, str] = {
    "timeout": "Router Timeout",
    "transport": "Router Unreachable",
    "http_status": "Router Error",
    "invalid": "Router Reply Invalid",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterFailure:
    """Why the webhook gave no usable answer: `kind` (a metrics label) and a short `detail`
    to log (the validation error text for an invalid reply; never the body itself)."""

    kind: FailureKind
    detail: str
    status: int | None = None  # the HTTP status, for http_status and invalid
    latency_s: float = 0.0

    def __str__(self) -> str:
        return self.detail


class RouterObserver(Protocol):
    """Metrics hooks (the edge's `Metrics` implements it)."""

    def router_request(self, outcome: str, latency_s: float) -> None:
        """`outcome`: the reply's action, or the `RouterFailure.kind`."""
        ...


def _describe_validation(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:  # pragma: no cover - pydantic always names at least one
        return "invalid reply"
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"]) or "body"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"invalid reply: {where}: {first['msg']}{more}"


class HttpRouter:
    """The routing webhook client: one signed POST per new call, over a shared pooled
    `httpx.AsyncClient` (never closed here; without one, the router builds its own with
    `build_client`, reaching `control_app` for `control:` URLs, and `aclose()` closes it).
    `clock` is the wall clock for the signature's timestamp; `monotonic` measures latency."""

    def __init__(
        self,
        config: HttpRouterConfig,
        *,
        client: httpx.AsyncClient | None = None,
        secret: str | bytes,
        key_id: str,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        observer: RouterObserver | None = None,
        control_app: ASGIApp | None = None,
    ) -> None:
        sign(b"", secret=secret, key_id=key_id, now=0)  # a bad secret or key id fails now
        self._owns_client = client is None
        internal_url(config.url)  # a `lambda:` URL without a function fails now
        self._client = client if client is not None else build_client(control_app=control_app)
        self._auth = sigv4_auth(config.sigv4)
        self._url = config.url
        self.safe_url = redact_url(config.url)
        self._timeout = config.timeout_ms / 1000
        self._headers = dict(config.headers)
        self._secret = secret
        self._key_id = key_id
        self._clock = clock
        self._monotonic = monotonic
        self._observer = observer

    async def decide(self, request: RouteRequest) -> RouteResponse | RouterFailure:
        """Ask the webhook where `request`'s call goes. Never raises for network problems."""
        started = self._monotonic()
        result = await self._exchange(request)
        latency = self._monotonic() - started
        outcome: str
        if isinstance(result, RouterFailure):
            result = replace(result, latency_s=latency)
            outcome = result.kind
        else:
            outcome = result.action
        if self._observer is not None:
            self._observer.router_request(outcome, latency)
        return result

    async def _exchange(self, request: RouteRequest) -> RouteResponse | RouterFailure:
        # ASCII JSON: lone surrogates from odd SIP text stay encodable.
        body = json.dumps(request.model_dump(by_alias=True), separators=(",", ":")
                          ).encode("ascii")
        # httpx.Headers merge names case-insensitively: a configured Content-Type replaces ours.
        headers = httpx.Headers({"Content-Type": _JSON, "Accept": _JSON})
        headers.update(self._headers)
        # Signed last, so a configured header cannot replace the signature.
        headers.update(sign(body, secret=self._secret, key_id=self._key_id, now=self._clock()))
        timeout = self._timeout
        too_large = False
        try:
            # httpx's timeout bounds each phase; this deadline bounds the sum, so a router that
            # trickles its reply cannot hold the call past timeout_ms.
            async with asyncio.timeout(timeout):
                async with self._client.stream(
                    "POST", self._url, content=body, headers=headers, timeout=timeout,
                    auth=self._auth or httpx.USE_CLIENT_DEFAULT,
                ) as response:
                    status = response.status_code
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():
                        size += len(chunk)
                        if size > MAX_REPLY_BYTES:
                            too_large = True
                            break
                        chunks.append(chunk)
        except (TimeoutError, httpx.TimeoutException):
            return RouterFailure(kind="timeout", detail=f"timeout after {timeout:g} s")
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            text = str(exc)
            name = type(exc).__name__
            return RouterFailure(
                kind="transport", detail=f"{name}: {text[:200]}" if text else name
            )
        if not 200 <= status < 300:
            return RouterFailure(kind="http_status", detail=f"HTTP {status}", status=status)
        if too_large:
            return RouterFailure(kind="invalid", status=status,
                                 detail=f"invalid reply: larger than {MAX_REPLY_BYTES} bytes")
        try:
            return RouteResponse.model_validate_json(b"".join(chunks))
        except ValidationError as exc:
            return RouterFailure(kind="invalid", detail=_describe_validation(exc), status=status)

    async def aclose(self) -> None:
        """Close the client, if this router built it."""
        if self._owns_client:
            await self._client.aclose()


# --- the request, and the reply as a decision ----------------------------------------------


def _text(value: str) -> str:
    # SIP text is decoded with surrogateescape; a JSON receiver wants real UTF-8.
    if value.isascii():
        return value
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def route_request(request: Request, *, source_addr: str, direction: Direction) -> RouteRequest:
    """The webhook body for `request`. Headers keep the first spelling of their (canonical)
    name; repeated ones are joined with ", " (RFC 3261 §7.3.1)."""
    headers: dict[str, str] = {}
    for name, value in request.headers:
        name = canonical_name(name)
        value = _text(value)
        previous = headers.get(name)
        headers[name] = value if previous is None else f"{previous}, {value}"
    return RouteRequest(
        call_id=_text(request.headers.get("Call-ID") or ""),
        from_=_text(request.headers.get("From") or ""),
        to=_text(request.headers.get("To") or ""),
        source_addr=source_addr,
        direction=direction,
        method=request.method,
        uri=_text(request.uri),
        headers=headers,
        body=request.body.decode("utf-8", "replace"),
    )


def webhook_target(
    text: str,
    *,
    local_domains: Collection[str],
    default_domain: str,
    trunks: TrunkDirectory | None = None,
) -> RouteTarget | None:
    """A reply's target as a `RouteTarget`, or None when it is not a SIP address.

    `local_domains` are host keys (lower-case); a bare extension is filed under
    `default_domain`. A `tel:` or other non-SIP URI is not routable here (None).
    """
    text = text.strip()
    bare = ":" not in text and "@" not in text  # "1001": an extension of ours
    if bare:
        text = f"sip:{text}@{default_domain}"
    elif ":" not in text:  # "1001@pbx.example.com": a SIP address without its scheme
        text = f"sip:{text}"
    try:
        uri = parse_uri(text)
    except SipParseError:
        return None
    if not isinstance(uri, SipUri):
        return None
    trunk = None if trunks is None or bare else trunks.trunk_for(uri)
    if trunk is not None:
        return RouteTarget(uri=text, trunk=trunk)
    # With a port, the URI names one SIP service: ours only when `host:port` is listed (the
    # same address may serve a SIP peer on another port, e.g. a gateway beside the PBX).
    host = host_key(uri.host)
    local = host in local_domains if uri.port is None else (
        f"{host}:{uri.port}" in local_domains
    )
    if bare or local:
        return RouteTarget(uri=text, aor=aor_key(uri))
    return RouteTarget(uri=text)


def decision_from_reply(
    reply: RouteResponse,
    facts: CallFacts,
    *,
    local_domains: Collection[str],
    default_domain: str,
    trunks: TrunkDirectory | None = None,
) -> RouteDecision | RouterFailure:
    """What a valid reply means for the call; a forward whose targets are all unusable
    (not SIP addresses) is a `RouterFailure` of kind "invalid"."""
    extensions: Mapping[str, Any] = MappingProxyType(dict(reply.extensions))
    identity = Rewrite.identity(facts)
    action = reply.action
    if action == "not_handled":
        return RouteDecision.not_handled(facts, source="webhook", extensions=extensions)
    if action in ("reject", "abort", "spam"):
        status = reply.status if reply.status is not None and reply.status >= 400 else 403
        return RouteDecision(action=action, status=status, reason=reply.reason,
                             headers=tuple(reply.headers.items()), extensions=extensions,
                             rewrite=identity, source="webhook")
    targets: tuple[RouteTarget, ...] = ()
    steps: tuple[Mapping[str, Any], ...] | None = None
    if action == "forward":
        found = [
            webhook_target(target, local_domains=local_domains,
                           default_domain=default_domain, trunks=trunks)
            for target in reply.targets
        ]
        targets = tuple(target for target in found if target is not None)
        if not targets:
            return RouterFailure(kind="invalid",
                                 detail="invalid reply: targets: no SIP address among them")
        unusable = [text for text, target in zip(reply.targets, found, strict=True)
                    if target is None]
        if unusable:
            log.warning("call %s: routing webhook targets skipped (not SIP addresses): %s",
                        facts.call_id, ", ".join(repr(t[:80]) for t in unusable[:5]),
                        extra={"call_id": facts.call_id})
    else:  # answer
        steps = (tuple(MappingProxyType(dict(step)) for step in reply.steps)
                 if reply.steps else None)
    return RouteDecision(
        action=action,
        targets=targets,
        strategy=reply.strategy,
        record=reply.record,
        timeout_s=reply.timeout,
        max_ring_time_s=reply.max_ring_time,
        rtp_timeout_s=reply.rtp_timeout,
        headers=tuple(reply.headers.items()),
        with_original_headers=reply.with_original_headers,
        extensions=extensions,
        allow_codecs=tuple(reply.allow_codecs),
        answer_url=reply.answer_url,
        fallback_answer_url=reply.fallback_answer_url,
        event_url=reply.event_url,
        steps=steps,
        trunk=targets[0].trunk if targets else None,
        rewrite=identity,
        source="webhook",
    )


# --- the combined router -------------------------------------------------------------------


class CallRouter:
    """Decides where each new call goes: the webhook (when configured), then the static
    routes, as COMPAT.md's "Call routing webhook" says (see the module docstring).

    `local_domains` are the domains (and addresses) this PBX serves: a webhook target there
    goes through the registrar. `trunks` lets a webhook target carry the trunk it names.
    """

    def __init__(
        self,
        static: StaticRouter,
        http: HttpRouter | None,
        fallback_to_static: bool,
        local_domains: Collection[str],
        *,
        trunks: TrunkDirectory | None = None,
    ) -> None:
        self.static = static
        self.http = http
        self._fallback = fallback_to_static
        domains = [host_key(domain) for domain in local_domains]
        self._domains = frozenset(domains)
        # A bare extension is filed under the first domain (the first realm, by convention).
        self._first_domain = domains[0] if domains else None
        self._trunks = trunks

    def replace_static(self, static: StaticRouter, trunks: TrunkDirectory) -> None:
        """New static routes and trunks (a directory reload); calls in progress keep theirs."""
        self.static = static
        self._trunks = trunks

    def add_local_domains(self, domains: Collection[str]) -> None:
        """More names for this PBX, known only once it listens (`host:port` of its sockets)."""
        self._domains = self._domains | {host_key(domain) for domain in domains}

    @classmethod
    def from_config(
        cls,
        proxy: ProxyConfig,
        *,
        draw: Draw,
        local_domains: Collection[str],
        client: httpx.AsyncClient | None = None,
        secret: str | bytes = b"",
        key_id: str = "k1",
        clock: Callable[[], float] = time.time,
        observer: RouterObserver | None = None,
    ) -> CallRouter:
        """The router `[proxy]` describes. `client` and the signing `secret` are needed only
        when `[proxy.http_router]` is set. Raises `ValueError` for a route the static router
        cannot use (see `StaticRouter`)."""
        trunks = TrunkDirectory(proxy.trunks)
        static = StaticRouter(proxy.routes, proxy.trunks, draw)
        http: HttpRouter | None = None
        fallback = False
        if proxy.http_router is not None:
            if client is None:
                raise ValueError("[proxy.http_router] needs an HTTP client")
            http = HttpRouter(proxy.http_router, client=client, secret=secret, key_id=key_id,
                              clock=clock, observer=observer)
            fallback = proxy.http_router.fallback_to_static
        return cls(static, http, fallback, local_domains, trunks=trunks)

    async def route(
        self,
        request: Request,
        *,
        source_addr: str,
        direction: Direction,
        source_trunk: str | None,
    ) -> RouteDecision:
        """The decision for a new INVITE (validated: From, To and Call-ID present)."""
        facts = CallFacts.from_request(request, source_trunk)
        if self.http is None:
            return self._static(facts)
        reply = await self.http.decide(
            route_request(request, source_addr=source_addr, direction=direction)
        )
        if isinstance(reply, RouteResponse):
            decision = decision_from_reply(
                reply, facts, local_domains=self._domains,
                default_domain=self._default_domain(facts), trunks=self._trunks,
            )
            if isinstance(decision, RouteDecision):
                if decision.action != "not_handled":
                    return decision
                static = self._static(facts)
                if decision.extensions:  # the router's extensions still reach the CDR
                    static = replace(static, extensions=decision.extensions)
                return static
            failure = decision
        else:
            failure = reply
        if self._fallback:
            log.warning(
                "call %s: routing webhook failed (%s); using the static routes",
                facts.call_id, failure.detail,
                extra={"call_id": facts.call_id, "failure": failure.kind},
            )
            return self._static(facts)
        log.warning(
            "call %s: routing webhook failed (%s); answering %d",
            facts.call_id, failure.detail, UNAVAILABLE_STATUS,
            extra={"call_id": facts.call_id, "failure": failure.kind},
        )
        return RouteDecision(
            action="reject", status=UNAVAILABLE_STATUS,
            reason=_FAILURE_REASONS[failure.kind],
            rewrite=Rewrite.identity(facts), source="webhook",
        )

    def _static(self, facts: CallFacts) -> RouteDecision:
        decision = self.static.route(facts)
        return decision if decision is not None else RouteDecision.not_handled(facts)

    def _default_domain(self, facts: CallFacts) -> str:
        return self._first_domain or facts.request_uri_host or facts.to_host or "localhost"
