"""The control functions the edge invokes for its decisions, directory-driven: the default router
(`POST /functions/router`, the routing webhook's contract) and the default user backend
(`GET|POST /functions/users`, the HTTP user backend's contract; COMPAT.md).

The router: the called user part (of the Request-URI, else of To) that names an enabled
extension -> `forward` to it (a bare extension, which the edge resolves through its registrar;
a disabled one -> `reject` 480); a number of an application -> `answer` with its `answer_url`;
anything else -> `not_handled`, so the edge's static routes (config and directory routes,
trunks) decide. The user backend: a directory extension's HA1s and `enabled`; an unknown user
-> 404 `{"reason": "not_found"}`, the answer the edge reads as "ask the next backend".

Both answer only the edge: a request must carry the webhook signature of the secret the edges
share (`control.contracts.signing`; a bodiless GET is signed over its raw query string), else
401. In-process requests of the embedded mode (the edge's `control:` transport marks their ASGI
scope, which no network client can) are trusted without one. No `edge` import (Lambda code).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.requests import Request
from starlette.responses import Response

from control.api.active_calls import EdgeCommandClient
from control.api.endpoints import ApiContext, Endpoint, read_model
from control.api.errors import JSON, ApiError
from control.contracts.directory import REALM_PATTERN
from control.contracts.router import RouteRequest, RouteResponse
from control.contracts.signing import SIGNATURE_HEADER, verification_failure
from control.contracts.user_backend import (
    UserBackendAnswer,
    UserBackendQuery,
    UserBackendRefusal,
)
from control.store.errors import NotFound
from control.store.ports import DirectoryStore

# The ASGI scope key the edge's in-process transport sets (edge.io.control_client, same literal).
IN_PROCESS_SCOPE_KEY = "sdpbx.in_process"
ROUTER_PATH = "/functions/router"
USERS_PATH = "/functions/users"
# RFC 3261 §21.4.18 would be 480 too: the extension exists, but takes no calls now.
DISABLED_STATUS = 480
SECURITY_SCHEME = "edgeSignature"

_REALM = re.compile(REALM_PATTERN)
_NAME_ADDR = re.compile(r"<([^>]*)>")


def _user_and_host(value: str) -> tuple[str, str]:
    """The user part and lower-case host of a SIP URI, a name-addr or a `tel:` URI
    (RFC 3261 §19.1.1, §20.10; RFC 3966); ("", "") when there is none."""
    match = _NAME_ADDR.search(value)
    # An addr-spec without <> ends at the header's own parameters (RFC 3261 §20.10).
    uri = match.group(1) if match else value
    scheme, sep, rest = uri.strip().partition(":")
    if not sep:
        return "", ""
    scheme = scheme.lower()
    if scheme == "tel":
        return unquote(rest.split(";", 1)[0]), ""
    if scheme not in ("sip", "sips"):
        return "", ""
    rest = rest.split("?", 1)[0]  # URI headers
    userinfo, at, hostport = rest.rpartition("@")
    host = hostport.split(";", 1)[0]
    host = host[1:].split("]", 1)[0] if host.startswith("[") else host.split(":", 1)[0]
    if not at:
        return "", host.lower()
    # user-params such as `;phone-context=` and a password are not part of the number.
    user = userinfo.split(":", 1)[0].split(";", 1)[0]
    return unquote(user), host.lower()


def called_party(request: RouteRequest) -> tuple[str, str]:
    """(number or extension, host) the call is for: the Request-URI's user part, else To's."""
    user, host = _user_and_host(request.uri)
    if user:
        return user, host
    to_user, to_host = _user_and_host(request.to)
    return to_user, to_host or host


def edge_secrets_of(commands: EdgeCommandClient | None) -> dict[str, str | bytes]:
    """The secret the edges share, as held by the client that signs commands to them
    (`EdgeCommandClient`): requests from the edges are signed with the same one."""
    if commands is None:
        return {}
    key_id, secret = commands.signing_key
    return {key_id: secret} if secret else {}


@dataclass(slots=True)
class _ApplicationIndex:
    """number -> the answer of every application (its answer, fallback and event URLs),
    rebuilt when the directory revision moves (checked at most every `poll_s`)."""

    revision: int | None = None
    checked_at: float = float("-inf")
    by_number: dict[str, RouteResponse] = field(default_factory=dict)

    async def answer_for(self, directory: DirectoryStore, number: str, now: float,
                         poll_s: float) -> RouteResponse | None:
        if now - self.checked_at >= poll_s:
            revision = await directory.revision()
            if revision != self.revision:
                self.by_number = await _applications(directory)
                self.revision = revision
            self.checked_at = now
        return self.by_number.get(number)


async def _applications(directory: DirectoryStore) -> dict[str, RouteResponse]:
    found: dict[str, RouteResponse] = {}
    cursor: str | None = None
    while True:
        page = await directory.list_entries("application", limit=1000, cursor=cursor)
        for entry in sorted(page.items, key=lambda e: e.name):
            url = entry.data.get("answer_url")
            if entry.name.startswith("_") or not isinstance(url, str):
                continue
            answer = RouteResponse(
                action="answer", answer_url=url,
                fallback_answer_url=_url_or_none(entry.data.get("fallback_answer_url")),
                event_url=_url_or_none(entry.data.get("event_url")),
            )
            for number in entry.data.get("numbers") or ():
                found.setdefault(str(number), answer)  # the first application by name wins
        cursor = page.cursor
        if cursor is None:
            return found


def _url_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


class Functions:
    """The control functions of one app: `endpoints` to mount, `secrets` (key id -> secret)
    that verify the edges' signatures. `clock` is the wall clock (signature freshness),
    `monotonic` paces the application index's revision checks."""

    def __init__(
        self,
        secrets: Mapping[str, str | bytes] | None = None,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        revision_poll_s: float = 2.0,
    ) -> None:
        self.secrets: dict[str, str | bytes] = dict(secrets or {})
        self._clock = clock
        self._monotonic = monotonic
        self._poll_s = revision_poll_s
        self._applications = _ApplicationIndex()
        query = (("username", "the user asking to authenticate"),
                 ("realm", "the digest realm (default: the API's realm)"),
                 ("request_uri", "the Request-URI of the SIP request"))
        self.endpoints: tuple[Endpoint, ...] = (
            Endpoint(method="POST", path=ROUTER_PATH, handler=self.route, scope=None,
                     summary="Default router: extensions, applications, else not_handled",
                     tag="functions", body=RouteRequest, response=RouteResponse),
            Endpoint(method="GET", path=USERS_PATH, handler=self.users, scope=None,
                     summary="Default user backend: a directory extension's HA1",
                     tag="functions", response=UserBackendAnswer, query=query),
            Endpoint(method="POST", path=USERS_PATH, handler=self.users, scope=None,
                     summary="Default user backend (form body)", tag="functions",
                     response=UserBackendAnswer),
        )

    def _authenticate(self, request: Request, body: bytes) -> None:
        if request.scope.get(IN_PROCESS_SCOPE_KEY) is True:
            return
        if not self.secrets:
            raise ApiError(401, "control functions answer only signed requests of the edges, "
                           "and no edge secret is configured here")
        payload = body or bytes(request.scope.get("query_string") or b"")
        failure = verification_failure(payload, request.headers, secrets=self.secrets,
                                       now=self._clock())
        if failure is not None:
            raise ApiError(401, f"{SIGNATURE_HEADER}: {failure}")

    async def route(self, request: Request, ctx: ApiContext) -> Response:
        self._authenticate(request, await request.body())
        call = await read_model(request, RouteRequest)
        number, host = called_party(call)
        if not number:
            return _route_reply(RouteResponse(action="not_handled"))
        directory = (await ctx.stores()).directory
        realms = [host] if host and _REALM.match(host) else []
        for realm in dict.fromkeys([*realms, ctx.realm]):
            try:
                user = await directory.get_user(number, realm)
            except NotFound:
                continue
            if not user.enabled:
                return _route_reply(RouteResponse(action="reject", status=DISABLED_STATUS,
                                                  reason="Extension Disabled"))
            return _route_reply(RouteResponse(action="forward", targets=[user.username]))
        answer = await self._applications.answer_for(directory, number, self._monotonic(),
                                                     self._poll_s)
        if answer is not None:
            return _route_reply(answer)
        return _route_reply(RouteResponse(action="not_handled"))

    async def users(self, request: Request, ctx: ApiContext) -> Response:
        body = await request.body()
        self._authenticate(request, body)
        query = UserBackendQuery.model_validate(_user_query(request, body))
        realm = query.realm or ctx.realm
        try:
            user = await (await ctx.stores()).directory.get_user(query.username, realm)
        except NotFound:
            refusal = UserBackendRefusal(reason="not_found", message="no such user")
            return Response(refusal.model_dump_json(exclude_none=True), status_code=404,
                            media_type=JSON)
        if not user.enabled:  # no HA1 for a user who may not authenticate anyway
            answer = UserBackendAnswer(username=user.username, enabled=False, realm=user.realm)
        else:
            answer = UserBackendAnswer(
                username=user.username, ha1=user.ha1_md5, ha1_sha256=user.ha1_sha256,
                enabled=True, realm=user.realm, display_name=user.display_name or None,
                allow_guest_calls=user.allow_guest_calls)
        return Response(answer.model_dump_json(exclude_none=True), media_type=JSON)

    def add_to_openapi(self, document: dict[str, Any], version: str) -> None:
        """Put the functions (served at the root, not under the API prefixes) into `document`,
        with the edge signature as their security scheme."""
        from control.api.openapi import build

        own = build(self.endpoints, ("",), version)
        error = {"$ref": "#/components/schemas/ErrorBody"}
        for path, methods in own["paths"].items():
            for method, op in methods.items():
                op["security"] = [{SECURITY_SCHEME: []}]
                op["description"] = ("Signed by the edge (`X-Sdpbx-Signature`, docs/webhooks.md);"
                                     " in-process requests of the embedded mode need none.")
                op["responses"]["401"] = {"description": "Missing or invalid edge signature",
                                          "content": {JSON: {"schema": error}}}
                if path == USERS_PATH:
                    op["responses"]["404"] = {
                        "description": "No such user: `{\"reason\": \"not_found\"}`",
                        "content": {JSON: {"schema": {
                            "$ref": "#/components/schemas/UserBackendRefusal"}}}}
                    if method == "post":
                        op["requestBody"] = {"required": True, "content": {
                            "application/x-www-form-urlencoded": {
                                "schema": {"$ref": "#/components/schemas/UserBackendQuery"}}}}
            document["paths"][path] = methods
        schemas = document["components"]["schemas"]
        schemas.update(own["components"]["schemas"])
        for model in (UserBackendQuery, UserBackendRefusal):
            schemas[model.__name__] = model.model_json_schema()
        document["components"]["schemas"] = dict(sorted(schemas.items()))
        document["components"]["securitySchemes"][SECURITY_SCHEME] = {
            "type": "apiKey", "in": "header", "name": SIGNATURE_HEADER,
            "description": "t=<unix s>,kid=<key id>,v1=<HMAC-SHA256 of the body, or of the "
                           "query string when there is none> with the secret the edges share"}


def _route_reply(reply: RouteResponse) -> Response:
    return Response(reply.model_dump_json(exclude_defaults=True), media_type=JSON)


def _user_query(request: Request, body: bytes) -> dict[str, Any]:
    """The user backend's fields: the query string of a GET, the form (or JSON) of a POST."""
    if request.method != "POST":
        return dict(request.query_params)
    if "json" in request.headers.get("content-type", "").lower():
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, "the body is not valid JSON") from None
        if not isinstance(data, dict):
            raise ApiError(422, "the body must be a JSON object")
        return data
    return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))


__all__ = ["IN_PROCESS_SCOPE_KEY", "Functions", "called_party", "edge_secrets_of"]
