"""The one HTTP client through which the edge invokes control functions (the routing webhook,
HTTP user backends): the URL picks the transport, so the callers keep one httpx code path.

- `http://`, `https://`: httpx's own pooled transport; requests may also carry an AWS SigV4
  signature (`SigV4Auth`, made with awscrt) for IAM-protected API Gateway routes
  (`execute-api`) or Lambda function URLs (`lambda`).
- `lambda:<function name or ARN>[/path]`: Lambda `Invoke` (RequestResponse) carrying an API
  Gateway HTTP API payload 2.0 event, so the Mangum handler that serves API Gateway serves this
  too; the function's `{statusCode, headers, body, isBase64Encoded, cookies}` becomes the
  response, a function error a 502.
- `control:/path`: the control app of the embedded mode, in-process over ASGI. Its requests
  carry a scope key no network client can set, which the control functions trust.

`RequestSigner` adds the webhook signature (`control.contracts.signing`) to every request that
has none. A request without a body (the user backend's GET) is signed over its raw query string.
Timeouts are the callers' (httpx's per-request `timeout`); the custom transports honour its
`read` part as a bound on the whole exchange. aioboto3 and awscrt are imported on first use.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import io
import json
import os
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from control.contracts.signing import SIGNATURE_HEADER, sign

# The ASGI scope key that marks an in-process request; control.api.functions trusts it (the
# same literal: the edge imports control.api only in its composition root).
IN_PROCESS_SCOPE_KEY = "sdpbx.in_process"
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)
DEFAULT_TIMEOUT_S = 5.0

# How the `lambda:` and `control:` forms look inside httpx, which needs a host to treat a URL
# as absolute: `lambda://invoke/<quoted function>/path`, `control://control/path`.
_LAMBDA_HOST = "invoke"
_CONTROL_HOST = "control"
_LAMBDA_DOMAIN = "lambda-invoke.sdpbx"  # the event's domainName and host header
# Hop-by-hop or rewritten-on-the-way headers that a SigV4 signature must not cover
# (botocore leaves out user-agent and expect for the same reason).
_UNSIGNED = frozenset({"connection", "expect", "user-agent", "accept-encoding",
                       "transfer-encoding", "x-amzn-trace-id", "keep-alive"})
# What the signature itself sets: a configured (or earlier) value is replaced, not signed.
_SIGV4_OUTPUT = ("authorization", "x-amz-date", "x-amz-security-token")
_TEXT_TYPES = ("text/", "json", "xml", "x-www-form-urlencoded", "javascript")
_DROPPED_REPLY_HEADERS = frozenset({"content-length", "transfer-encoding"})


def internal_url(url: httpx.URL | str) -> httpx.URL | str:
    """`lambda:fn/path` and `control:/path` in the form httpx routes to our transports; any
    other URL unchanged."""
    text = str(url)
    for scheme, host in (("lambda:", _LAMBDA_HOST), ("control:", _CONTROL_HOST)):
        if text[:len(scheme)].lower() != scheme or text[len(scheme):].startswith("//"):
            continue
        rest = text[len(scheme):]
        if host == _CONTROL_HOST:
            return f"control://{_CONTROL_HOST}/{rest.lstrip('/')}"
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        function, tail = rest[:cut], rest[cut:]
        if not function:
            raise httpx.InvalidURL(f"{scheme} URL without a function name")
        if tail.startswith("?"):
            tail = "/" + tail
        return f"lambda://{_LAMBDA_HOST}/{quote(function, safe='')}{tail or '/'}"
    return url


class ControlClient(httpx.AsyncClient):
    """An `httpx.AsyncClient` that also takes the `lambda:` and `control:` URL forms."""

    def build_request(self, method: str, url: httpx.URL | str, **kwargs: Any) -> httpx.Request:
        return super().build_request(method, internal_url(url), **kwargs)


def build_client(
    *,
    control_app: ASGIApp | None = None,
    signer: RequestSigner | None = None,
    lambda_region: str | None = None,
    lambda_endpoint_url: str | None = None,
    limits: httpx.Limits = DEFAULT_LIMITS,
    timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
) -> ControlClient:
    """A pooled client for every control function URL form (close it with `aclose()`).

    `control_app`: the embedded control app that `control:` URLs reach (without one they fail
    as a connection error). `signer`: signs each request that carries no signature yet.
    `lambda_region`/`lambda_endpoint_url`: for `lambda:` URLs (defaults: the region of an ARN,
    else `AWS_REGION`/`AWS_DEFAULT_REGION`; the endpoint of `AWS_ENDPOINT_URL_LAMBDA`).
    """
    control: httpx.AsyncBaseTransport = (
        InProcessTransport(control_app) if control_app is not None else _NoControlApp())
    mounts: dict[str, httpx.AsyncBaseTransport] = {
        "lambda://": LambdaTransport(region=lambda_region, endpoint_url=lambda_endpoint_url),
        "control://": control,
    }
    hooks: dict[str, list[Callable[..., Any]]] = (
        {"request": [signer]} if signer is not None else {})
    return ControlClient(limits=limits, timeout=timeout, mounts=mounts, event_hooks=hooks)


# --- the webhook signature ----------------------------------------------------------------------


class RequestSigner:
    """An httpx request hook: the `X-Sdpbx-Signature` of the body, or of the raw query string
    when there is no body, unless the caller signed already (the routing webhook does)."""

    __slots__ = ("_clock", "_key_id", "_secret")

    def __init__(self, secret: str | bytes, key_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        sign(b"", secret=secret, key_id=key_id, now=0)  # a bad secret or key id fails now
        self._secret = secret
        self._key_id = key_id
        self._clock = clock

    async def __call__(self, request: httpx.Request) -> None:
        if SIGNATURE_HEADER in request.headers:
            return
        payload = await request.aread() or request.url.query
        request.headers.update(
            sign(payload, secret=self._secret, key_id=self._key_id, now=self._clock()))


# --- SigV4 --------------------------------------------------------------------------------------


class SigV4Settings(Protocol):
    """`sigv4 = {service = "...", region = "..."}` of a config section."""

    @property
    def service(self) -> str: ...

    @property
    def region(self) -> str | None: ...


class SigV4Auth(httpx.Auth):
    """AWS Signature Version 4 on http(s) requests, computed by awscrt (byte-identical to
    botocore's). Credentials come from awscrt's default chain (environment, shared profile,
    web identity, container and instance roles) unless a provider is given; `clock` fixes the
    signing time (tests). `lambda:` and `control:` requests pass unsigned (the SDK signs an
    Invoke itself; in-process needs none)."""

    requires_request_body = True

    def __init__(self, *, service: str, region: str, credentials: Any = None,
                 clock: Callable[[], float] | None = None) -> None:
        if not service or not region:
            raise ValueError("SigV4 needs a service and a region")
        self.service = service
        self.region = region
        self._credentials = credentials
        self._clock = clock

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if request.url.scheme in ("http", "https"):
            await self._sign(request)
        yield request

    async def _sign(self, request: httpx.Request) -> None:
        from awscrt.auth import (
            AwsCredentialsProvider,
            AwsSignatureType,
            AwsSigningAlgorithm,
            AwsSigningConfig,
            aws_sign_request,
        )
        from awscrt.exceptions import AwsCrtError
        from awscrt.http import HttpHeaders, HttpRequest

        if self._credentials is None:
            self._credentials = AwsCredentialsProvider.new_default_chain()
        body = await request.aread()
        for name in _SIGV4_OUTPUT:
            request.headers.pop(name, None)
        headers = HttpHeaders([(name, value) for name, value in request.headers.multi_items()
                               if name.lower() not in _UNSIGNED])
        crt = HttpRequest(request.method, request.url.raw_path.decode("ascii"), headers,
                          io.BytesIO(body))
        when = None if self._clock is None else datetime.datetime.fromtimestamp(
            self._clock(), datetime.UTC)
        config = AwsSigningConfig(
            algorithm=AwsSigningAlgorithm.V4,
            signature_type=AwsSignatureType.HTTP_REQUEST_HEADERS,
            credentials_provider=self._credentials,
            region=self.region,
            service=self.service,
            date=when,
            should_sign_header=lambda name: name.lower() not in _UNSIGNED,
        )
        try:
            signed = await asyncio.wrap_future(aws_sign_request(crt, config))
        except AwsCrtError as exc:  # e.g. no credentials anywhere in the chain
            raise httpx.TransportError(f"SigV4: {exc.name}: {exc.message}",
                                       request=request) from exc
        except RuntimeError as exc:  # awscrt's synchronous failures
            raise httpx.TransportError(f"SigV4: {exc}", request=request) from exc
        for name in _SIGV4_OUTPUT:
            value = signed.headers.get(name)
            if value is not None:
                request.headers[name] = value


def sigv4_auth(settings: SigV4Settings | None, *, credentials: Any = None,
               clock: Callable[[], float] | None = None) -> SigV4Auth | None:
    """The auth of a config section's `sigv4` table (None: no SigV4). Without a region there,
    `AWS_REGION` or `AWS_DEFAULT_REGION`; a ValueError when none is set."""
    if settings is None:
        return None
    region = settings.region or os.environ.get("AWS_REGION") or os.environ.get(
        "AWS_DEFAULT_REGION")
    if not region:
        raise ValueError("sigv4: no region (set sigv4.region or AWS_REGION)")
    return SigV4Auth(service=settings.service, region=region, credentials=credentials,
                     clock=clock)


# --- in-process ---------------------------------------------------------------------------------


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = request.extensions.get("timeout") or {}
    value = timeout.get("read")
    return float(value) if value is not None else None


class InProcessTransport(httpx.AsyncBaseTransport):
    """`control:` URLs: the embedded control app over ASGI, its requests marked in-process.
    An exception in the app is a 500 (as from a server), never raised into the caller."""

    def __init__(self, app: ASGIApp) -> None:
        async def marked(scope: Scope, receive: Receive, send: Send) -> None:
            await app({**scope, IN_PROCESS_SCOPE_KEY: True}, receive, send)

        self._asgi = httpx.ASGITransport(app=marked, raise_app_exceptions=False)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.url = request.url.copy_with(scheme="http")
        try:
            async with asyncio.timeout(_read_timeout(request)):
                return await self._asgi.handle_async_request(request)
        except TimeoutError:
            raise httpx.ReadTimeout("the in-process control function did not answer in time",
                                    request=request) from None


class _NoControlApp(httpx.AsyncBaseTransport):
    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(
            "control: URLs need the control app of the embedded mode (sdpbx up)", request=request)


# --- Lambda Invoke ------------------------------------------------------------------------------


def _is_text(content_type: str) -> bool:
    lowered = content_type.lower()
    return any(marker in lowered for marker in _TEXT_TYPES)


def function_and_path(url: httpx.URL) -> tuple[str, str]:
    """(function name or ARN, raw path) of an internal `lambda://` URL."""
    raw = url.raw_path.decode("ascii").split("?", 1)[0]
    if url.host != _LAMBDA_HOST:  # `lambda://my-function/path` written by hand
        return url.host, raw or "/"
    function, _, path = raw.lstrip("/").partition("/")
    return unquote(function), "/" + path


def api_gateway_event(request: httpx.Request, body: bytes, *, path: str, now: float,
                      request_id: str) -> dict[str, Any]:
    """The API Gateway HTTP API payload 2.0 event for `request` (what API Gateway or a function
    URL would hand the function): lower-case headers (repeats joined with ","), cookies apart,
    a binary body base64-encoded."""
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers.multi_items():
        key = name.lower()
        if key == "cookie":
            cookies += [part.strip() for part in value.split(";") if part.strip()]
        elif key != "host":
            headers[key] = f"{headers[key]},{value}" if key in headers else value
    headers["host"] = _LAMBDA_DOMAIN
    query = request.url.query.decode("ascii")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params[key] = f"{params[key]},{value}" if key in params else value
    stamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "sdpbx-edge",
            "domainName": _LAMBDA_DOMAIN,
            "domainPrefix": _LAMBDA_DOMAIN.split(".", 1)[0],
            "http": {
                "method": request.method,
                "path": unquote(path),
                "protocol": "HTTP/1.1",
                "sourceIp": "0.0.0.0",  # an Invoke has no client address
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": stamp.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if params:
        event["queryStringParameters"] = params
    if body:
        text: str | None = None
        if _is_text(headers.get("content-type", "")):
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        if text is None:
            event["body"] = base64.b64encode(body).decode("ascii")
            event["isBase64Encoded"] = True
        else:
            event["body"] = text
    return event


def _bad_gateway(request: httpx.Request, message: str) -> httpx.Response:
    return httpx.Response(502, json={"error": {"status": 502, "message": message}},
                          request=request)


def response_from_result(request: httpx.Request, payload: bytes) -> httpx.Response:
    """The HTTP response a function's result stands for, by API Gateway's payload 2.0 rules:
    `{statusCode, headers, cookies, body, isBase64Encoded}`, or any other JSON as a 200 body."""
    try:
        result = json.loads(payload)
    except ValueError:
        return _bad_gateway(request, "the function's result is not JSON")
    if not isinstance(result, dict) or "statusCode" not in result:
        return httpx.Response(200, headers={"content-type": "application/json"},
                              content=payload, request=request)
    status = result.get("statusCode")
    if not isinstance(status, int) or not 100 <= status <= 599:
        return _bad_gateway(request, "the function's result has no valid statusCode")
    raw_headers = result.get("headers") or {}
    cookies = result.get("cookies") or []
    if not isinstance(raw_headers, Mapping) or not isinstance(cookies, list):
        return _bad_gateway(request, "the function's result has invalid headers or cookies")
    headers = [(str(name), str(value)) for name, value in raw_headers.items()
               if str(name).lower() not in _DROPPED_REPLY_HEADERS]
    headers += [("set-cookie", str(cookie)) for cookie in cookies]
    body = result.get("body") or ""
    if not isinstance(body, str):
        return _bad_gateway(request, "the function's result body is not a string")
    try:
        content = (base64.b64decode(body, validate=True) if result.get("isBase64Encoded")
                   else body.encode("utf-8"))
    except ValueError:
        return _bad_gateway(request, "the function's result body is not valid base64")
    return httpx.Response(status, headers=headers, content=content, request=request)


class LambdaTransport(httpx.AsyncBaseTransport):
    """`lambda:` URLs: one `Invoke` per request through an aioboto3 Lambda client per region,
    made at the first request and kept (`aclose()` closes them). The function name may be an
    ARN (its region is used) and carry a qualifier (`name:alias`)."""

    def __init__(self, *, region: str | None = None, endpoint_url: str | None = None,
                 clock: Callable[[], float] = time.time, max_retries: int = 1) -> None:
        self._region = region
        self._endpoint_url = endpoint_url
        self._clock = clock
        self._max_retries = max_retries
        self._holders: dict[str | None, Any] = {}
        self._clients: dict[str | None, Any] = {}
        self._lock = asyncio.Lock()

    async def _client(self, region: str | None) -> Any:
        client = self._clients.get(region)
        if client is not None:
            return client
        async with self._lock:
            if region not in self._clients:
                from control.store.aws import AwsClients, ClientOptions

                holder = AwsClients(ClientOptions(
                    region=region, endpoint_url=self._endpoint_url,
                    max_retries=self._max_retries, deadline_s=DEFAULT_TIMEOUT_S))
                self._holders[region] = holder
                self._clients[region] = await holder.client("lambda")
            return self._clients[region]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import aiohttp
        from botocore.exceptions import BotoCoreError, ClientError

        from control.store.errors import StoreError

        function, path = function_and_path(request.url)
        body = await request.aread()
        event = api_gateway_event(request, body, path=path, now=self._clock(),
                                  request_id=str(uuid.uuid4()))
        arn = function.split(":")
        region = arn[3] if function.startswith("arn:") and len(arn) > 3 else self._region
        try:
            async with asyncio.timeout(_read_timeout(request)):
                client = await self._client(region)
                reply = await client.invoke(
                    FunctionName=function, InvocationType="RequestResponse",
                    Payload=json.dumps(event, separators=(",", ":")).encode("utf-8"))
                payload = await reply["Payload"].read()
        except TimeoutError:
            raise httpx.ReadTimeout(f"Lambda {function} did not answer in time",
                                    request=request) from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            return _bad_gateway(request, f"Lambda Invoke failed: {code}")
        except (BotoCoreError, StoreError, aiohttp.ClientError, OSError) as exc:
            raise httpx.ConnectError(f"Lambda Invoke: {type(exc).__name__}: {exc}",
                                     request=request) from exc
        if reply.get("FunctionError"):
            return _bad_gateway(request, f"the function failed ({reply['FunctionError']})")
        return response_from_result(request, payload)

    async def aclose(self) -> None:
        holders, self._holders, self._clients = list(self._holders.values()), {}, {}
        for holder in holders:
            await holder.close()


__all__ = [
    "IN_PROCESS_SCOPE_KEY",
    "ControlClient",
    "InProcessTransport",
    "LambdaTransport",
    "RequestSigner",
    "SigV4Auth",
    "SigV4Settings",
    "api_gateway_event",
    "build_client",
    "internal_url",
    "response_from_result",
    "sigv4_auth",
]
