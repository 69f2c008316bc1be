"""Wire models of the directory the management API edits: extensions, trunks, routes and
applications.

Trunks and routes mirror the TOML keys of COMPAT.md (`[proxy.trunks.NAME]`, `[[proxy.routes]]`),
so an entry stored through the API reads like the static config. Validation happens here, on
write: a trunk's `dest` is a `sip:`/`sips:` URI (RFC 3261 §19.1), a match value that looks like a
regex (contains one of ``^ $ * + ? [ ( \\``) must compile, match and rewrite keys are from the
fixed set below. An extension's password is accepted on write and never part of any reply (the
store keeps HA1 digests only). Pydantic and the stdlib only (Lambda code).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from control.contracts.api import PageOf

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# RFC 3261 §25.1 user part, minus the characters that would break `user:realm:password`.
USERNAME_PATTERN = r"^[A-Za-z0-9._~!$&'*+,;=?/%-]{1,64}$"
REALM_PATTERN = r"^[A-Za-z0-9._-]{1,253}$"
NUMBER_PATTERN = r"^\+?[A-Za-z0-9*#._-]{1,64}$"

_REGEX_CHARS = frozenset("^$*+?[(\\")
_FIXED_KEYS = frozenset({
    "from.user", "from.host", "to.user", "to.host", "to.port",
    "request_uri.user", "request_uri.host", "request_uri.port",
    "from", "to", "caller", "callee",
})
_HEADER_KEY = re.compile(r"^header\.[A-Za-z0-9!%'*+._`~-]+$")  # RFC 3261 §25.1 token
_SIP_URI = re.compile(r"^sips?:[^\s<>\"]+$", re.IGNORECASE)
_HTTP_URL = re.compile(r"^https?://[^\s/?#]+[^\s]*$", re.IGNORECASE)


def is_regex(value: str) -> bool:
    """COMPAT.md: a match value is a regex if it contains one of ^ $ * + ? [ ( \\ ."""
    return not _REGEX_CHARS.isdisjoint(value)


def _check_key(key: str) -> str:
    if key not in _FIXED_KEYS and not _HEADER_KEY.match(key):
        raise ValueError(
            f"unknown key {key!r} (one of {', '.join(sorted(_FIXED_KEYS))} or header.NAME)"
        )
    return key


def _check_sip_uri(value: str) -> str:
    if not _SIP_URI.match(value):
        raise ValueError("must be a sip: or sips: URI")
    return value


def _check_http_url(value: str) -> str:
    if not _HTTP_URL.match(value):
        raise ValueError("must be an http:// or https:// URL")
    return value


SipUri = Annotated[str, AfterValidator(_check_sip_uri)]
HttpUrl = Annotated[str, AfterValidator(_check_http_url)]
EntryName = Annotated[str, Field(pattern=NAME_PATTERN)]
Number = Annotated[str, Field(pattern=NUMBER_PATTERN)]


def _route_dest(value: str) -> str:
    # A route sends to trunks by name (COMPAT.md) or straight to a SIP URI.
    if ":" in value:
        return _check_sip_uri(value)
    if not re.match(NAME_PATTERN, value):
        raise ValueError("must be a trunk name or a sip:/sips: URI")
    return value


RouteDest = Annotated[str, AfterValidator(_route_dest)]


# defer_build: a model's validator is built on first use, not at import (Lambda cold start).
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


# --- extensions --------------------------------------------------------------------------------


class ExtensionCreate(_Strict):
    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Field(min_length=1, max_length=256)
    realm: str | None = Field(default=None, pattern=REALM_PATTERN)
    display_name: str = Field(default="", max_length=128)
    enabled: bool = True
    allow_guest_calls: bool = False


class ExtensionPatch(_Strict):
    """Only the fields given change; a new password re-computes the HA1s. `version` (or an
    `If-Match` header) makes the write conditional: 409 when the extension moved on."""

    password: str | None = Field(default=None, min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=128)
    enabled: bool | None = None
    allow_guest_calls: bool | None = None
    version: int | None = Field(default=None, ge=1)


class Extension(BaseModel):
    """An extension as the API shows it: never a password nor an HA1."""

    model_config = ConfigDict(defer_build=True)

    username: str
    realm: str
    display_name: str
    enabled: bool
    allow_guest_calls: bool
    version: int


# --- trunks ------------------------------------------------------------------------------------


class TrunkSpec(_Strict):
    """`[proxy.trunks.NAME]` of COMPAT.md."""

    dest: SipUri
    username: str | None = Field(default=None, max_length=128)
    password: str | None = Field(default=None, max_length=256)
    inbound_hosts: list[str] = Field(default_factory=list)
    max_calls: int | None = Field(default=None, ge=0)
    max_cps: int | None = Field(default=None, ge=0)
    direction: Literal["inbound", "outbound", "bidirectional"] = "bidirectional"
    weight: int = Field(default=1, ge=0)  # for routes with select = "weighted"


class TrunkCreate(TrunkSpec):
    name: EntryName


class TrunkPatch(_Strict):
    dest: SipUri | None = None
    username: str | None = Field(default=None, max_length=128)
    password: str | None = Field(default=None, max_length=256)
    inbound_hosts: list[str] | None = None
    max_calls: int | None = Field(default=None, ge=0)
    max_cps: int | None = Field(default=None, ge=0)
    direction: Literal["inbound", "outbound", "bidirectional"] | None = None
    weight: int | None = Field(default=None, ge=0)
    version: int | None = Field(default=None, ge=1)


class Trunk(BaseModel):
    """A trunk as the API shows it: the password stays write-only (`has_password`)."""

    model_config = ConfigDict(defer_build=True)

    name: str
    dest: str
    username: str | None
    has_password: bool
    inbound_hosts: list[str]
    max_calls: int | None
    max_cps: int | None
    direction: str
    weight: int
    version: int


# --- routes ------------------------------------------------------------------------------------


def _check_match_value(value: str) -> str:
    if is_regex(value):
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"not a valid regex: {error}") from None
    return value


# As dict keys and values, so a bad one is reported at ("match", "<key>").
FieldKey = Annotated[str, AfterValidator(_check_key)]
MatchValue = Annotated[str, AfterValidator(_check_match_value)]


class RejectSpec(_Strict):
    code: int = Field(default=403, ge=400, le=699)
    reason: str = Field(default="", max_length=128)


class RouteSpec(_Strict):
    """`[[proxy.routes]]` of COMPAT.md: higher `priority` is tried first."""

    priority: int = 0
    dest: list[RouteDest] = Field(default_factory=list)
    select: Literal["rr", "random", "hash", "weighted"] = "rr"
    match: dict[FieldKey, MatchValue] = Field(default_factory=dict)
    rewrite: dict[FieldKey, str] = Field(default_factory=dict)
    action: Literal["forward", "reject", "busy"] = "forward"
    reject: RejectSpec | None = None

    @model_validator(mode="after")
    def _needs_dest(self) -> RouteSpec:
        if self.action == "forward" and not self.dest:
            raise ValueError("a forward route needs at least one dest")
        return self


class RouteCreate(RouteSpec):
    name: EntryName


class RoutePatch(_Strict):
    priority: int | None = None
    dest: list[RouteDest] | None = None
    select: Literal["rr", "random", "hash", "weighted"] | None = None
    match: dict[FieldKey, MatchValue] | None = None
    rewrite: dict[FieldKey, str] | None = None
    action: Literal["forward", "reject", "busy"] | None = None
    reject: RejectSpec | None = None
    version: int | None = Field(default=None, ge=1)


class Route(RouteSpec):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str
    version: int


# --- applications ------------------------------------------------------------------------------


class ApplicationSpec(_Strict):
    """Numbers or extensions whose calls the default router answers with `answer_url`."""

    numbers: list[Number] = Field(min_length=1)
    answer_url: HttpUrl
    fallback_answer_url: HttpUrl | None = None
    event_url: HttpUrl | None = None


class ApplicationCreate(ApplicationSpec):
    name: EntryName


class ApplicationPatch(_Strict):
    numbers: list[Number] | None = Field(default=None, min_length=1)
    answer_url: HttpUrl | None = None
    fallback_answer_url: HttpUrl | None = None
    event_url: HttpUrl | None = None
    version: int | None = Field(default=None, ge=1)


class Application(ApplicationSpec):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    name: str
    version: int


# Concrete pages, so each has a plain name in the OpenAPI document.
class ExtensionPage(PageOf[Extension]):
    pass


class TrunkPage(PageOf[Trunk]):
    pass


class RoutePage(PageOf[Route]):
    pass


class ApplicationPage(PageOf[Application]):
    pass
