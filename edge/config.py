"""The sdpbx configuration: one TOML file read at start-up into immutable, validated models.

Every section forbids unknown keys and every value is type-checked (strict: "5060" is not a port),
so a typo or a bad value stops start-up with a message naming the key by its dotted path
(`config error: proxy.udp_port: Input should be less than or equal to 65535`). Key names follow
RustPBX's (see COMPAT.md) so an existing RustPBX config validates; sections whose behaviour comes
later (`http_router`, `user_backends`, `locator_webhook`, `routes`, `trunks`) are validated now.

No file means the embedded default: every listener binds 127.0.0.1 only. To serve other hosts set
`[proxy] addr = "0.0.0.0"` (SIP) and `[http] addr = "0.0.0.0:8080"` (health, metrics, API).
"""

from __future__ import annotations

import difflib
import importlib.metadata
import ipaddress
import os
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from control.store.ports import BlobSettings, StoreSettings


def _package_version() -> str:
    try:
        return importlib.metadata.version("sdpbx")
    except importlib.metadata.PackageNotFoundError:  # a source tree that is not installed
        return "0+unknown"


# The running build (package metadata), as `--version`, `/health` and `sdpbx_build_info` report
# it. It lives here because every entry point imports the config and nothing heavier.
VERSION = _package_version()


class ConfigError(Exception):
    """The configuration cannot be used; `problems` holds one `dotted.key: message` per fault."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(f"config error: {problem}" for problem in self.problems))


class _BadKey(ValueError):
    """A check on a whole section that blames one key inside it (`subpath`, e.g. "t1_ms")."""

    def __init__(self, subpath: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.subpath = subpath


class _Section(BaseModel):
    # strict: TOML is typed, so a quoted number is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


Port = Annotated[int, Field(ge=0, le=65535)]  # 0 = let the OS pick a free port (tests use it)
RtpPort = Annotated[int, Field(ge=1024, le=65535)]
TimeoutMs = Annotated[int, Field(gt=0, le=600_000)]
NonEmptyStr = Annotated[str, Field(min_length=1)]


def _one_or_many(value: object) -> object:
    # RustPBX accepts `dest = "trunk"` as well as `dest = ["a", "b"]`.
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError("expected a trunk name or a list of trunk names")
    return value


def _lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _upper(value: object) -> object:
    return value.upper() if isinstance(value, str) else value


def _ip_literal(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def split_host_port(value: str) -> tuple[str, int]:
    """Split `host:port` or `[v6]:port` into its parts; `ValueError` names what is wrong."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not host:port (e.g. \"127.0.0.1:8080\")")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{value!r}: write an IPv6 address in brackets, e.g. \"[::1]:8080\"")
    if not port_text.isdigit() or int(port_text) > 65535:
        raise ValueError(f"{value!r}: port must be a number from 0 to 65535")
    return host, int(port_text)


# --- [proxy] and the integration sections RustPBX users bring --------------------------------


class SigV4Config(_Section):
    """Ours: `sigv4 = {service = "lambda", region = "eu-west-1"}` on a control function's
    section signs its https requests with AWS SigV4 (credentials from the default chain):
    `execute-api` for an IAM-authorised API Gateway route, `lambda` for a function URL.
    `region` defaults to `AWS_REGION`. `lambda:` URLs are signed by the AWS SDK anyway."""

    service: Literal["execute-api", "lambda"] = "execute-api"
    region: NonEmptyStr | None = None


class HttpRouterConfig(_Section):
    """`[proxy.http_router]`: the call routing webhook (COMPAT.md, "Call routing webhook").
    `url` may also be `lambda:<function>[/path]` or `control:/path` (edge.io.control_client)."""

    url: NonEmptyStr
    timeout_ms: TimeoutMs = 5000
    fallback_to_static: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    sigv4: SigV4Config | None = None


class MemoryUser(_Section):
    username: NonEmptyStr
    password: str | None = None
    ha1: str | None = None  # ours: hex digest for the realm, so no plaintext needs to be stored
    realm: str | None = None
    enabled: bool = True
    display_name: str | None = None
    allow_guest_calls: bool = False

    @model_validator(mode="after")
    def _has_secret(self) -> MemoryUser:
        if self.password is None and self.ha1 is None:
            raise _BadKey(("password",), f"user {self.username!r} needs a password or an ha1")
        return self


class MemoryUserBackend(_Section):
    type: Literal["memory"]
    users: list[MemoryUser] = Field(default_factory=list)


class HttpUserBackend(_Section):
    type: Literal["http"]
    url: NonEmptyStr
    method: Annotated[Literal["GET", "POST"], BeforeValidator(_upper)] = "GET"
    username_field: NonEmptyStr = "username"
    realm_field: NonEmptyStr = "realm"
    request_uri_field: NonEmptyStr = "request_uri"
    http_timeout_ms: TimeoutMs = 5000
    headers: dict[str, str] = Field(default_factory=dict)
    sigv4: SigV4Config | None = None  # ours, as on [proxy.http_router]


class DirectoryUserBackend(_Section):
    """Ours: the users stored in the directory (`sdpbx user ...`, the management API)."""

    type: Literal["directory"]


UserBackendConfig = Annotated[
    MemoryUserBackend | HttpUserBackend | DirectoryUserBackend, Field(discriminator="type")
]


LocatorEvent = Literal["registered", "unregistered", "offline"]


def _all_locator_events() -> list[LocatorEvent]:
    return ["registered", "unregistered", "offline"]


class LocatorWebhookConfig(_Section):
    """`[proxy.locator_webhook]`: fire-and-forget registration events."""

    url: NonEmptyStr
    events: list[LocatorEvent] = Field(default_factory=_all_locator_events)
    timeout_ms: TimeoutMs = 5000
    headers: dict[str, str] = Field(default_factory=dict)
    # Ours: events wait in a bounded queue; when it is full the oldest is dropped (and counted).
    queue_size: Annotated[int, Field(ge=1, le=1_000_000)] = 10_000


class WebhookSigningConfig(_Section):
    """`[webhooks]`: every webhook the PBX sends is signed (HMAC-SHA256, docs/webhooks.md).

    Without a secret the edge generates one at start-up and logs only its key id: set one so
    receivers can verify across restarts. Several keys allow rotation: the first signs.
    """

    secret: str | None = None
    key_id: NonEmptyStr = "k1"


DigestAlgorithm = Literal["SHA-256", "MD5"]


def _default_digest_algorithms() -> list[DigestAlgorithm]:
    return ["MD5"]


class SecurityConfig(_Section):
    """`[proxy.security]` (ours): limits that protect the edge from scanners and guessing."""

    # Brute force: after `auth_failures_max` failed authentications from one source address
    # within `auth_failures_window_s`, refuse it for `auth_block_s` ("403" answers, "drop" ignores).
    auth_failures_max: Annotated[int, Field(ge=1)] = 10
    auth_failures_window_s: Annotated[int, Field(ge=1)] = 60
    auth_block_s: Annotated[int, Field(ge=1)] = 300
    auth_block_action: Literal["403", "drop"] = "403"
    # Requests per second per source address (token bucket of `rate_limit_burst`); 0 = off.
    rate_limit_per_source: Annotated[float, Field(ge=0)] = 0
    rate_limit_burst: Annotated[int, Field(ge=1)] = 50
    max_contacts_per_aor: Annotated[int, Field(ge=1, le=1000)] = 10
    # Silently drop requests whose User-Agent contains one of these (case-insensitive).
    drop_scanner_user_agents: bool = True
    scanner_user_agents: list[NonEmptyStr] = Field(
        default_factory=lambda: ["friendly-scanner", "sipvicious", "sipcli", "sip-scan",
                                 "VaxSIPUserAgent", "iWar", "sipsak-scan", "pplsip"]
    )
    # Digest nonces (stateless, RFC 7616 §3.3 / §5.4): how long one stays valid, and the key
    # they are signed with (set the same one on every edge so nonces survive restarts and
    # moves between edges; default: derived from [webhooks] secret, else random per process).
    nonce_lifetime_s: Annotated[int, Field(ge=5, le=86_400)] = 300
    nonce_secret: str | None = None
    # Challenges offered, preferred first (RFC 8760 §2.4: one WWW-Authenticate per algorithm).
    # MD5 alone by default, as Kamailio, Asterisk and FreeSWITCH do: of the Debian 12 clients,
    # baresip refuses any non-MD5 challenge and SIPp and sipsak answer only the topmost one;
    # ["SHA-256", "MD5"] serves RFC 8760 clients (linphone) with SHA-256.
    digest_algorithms: list[DigestAlgorithm] = Field(
        default_factory=_default_digest_algorithms, min_length=1
    )


class RejectConfig(_Section):
    code: Annotated[int, Field(ge=400, le=699)] = 403
    reason: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)


# A value is a regex when it contains one of these (COMPAT.md: `[[proxy.routes]]`).
_REGEX_MARKERS = frozenset("^$*+?[(\\")
_ROUTE_FIELDS = frozenset({
    "from.user", "from.host", "to.user", "to.host", "to.port",
    "request_uri.user", "request_uri.host", "request_uri.port",
    "from", "to", "caller", "callee",
})


def _check_route_keys(table: dict[str, str], *, compile_values: bool) -> dict[str, str]:
    for key, value in table.items():
        if key not in _ROUTE_FIELDS and not (key.startswith("header.") and len(key) > 7):
            known = ", ".join(sorted(_ROUTE_FIELDS))
            raise _BadKey((key,), f"unknown field (use one of {known}, or header.NAME)")
        if compile_values and _REGEX_MARKERS.intersection(value):
            try:
                re.compile(value)
            except re.error as exc:
                raise _BadKey((key,), f"bad regular expression {value!r}: {exc}") from None
    return table


class RouteConfig(_Section):
    """`[[proxy.routes]]`: a static route; higher `priority` is tried first."""

    name: NonEmptyStr
    description: str | None = None
    priority: int = 0
    disabled: bool = False
    source_trunks: list[str] = Field(default_factory=list)
    match: dict[str, str] = Field(default_factory=dict)
    rewrite: dict[str, str] = Field(default_factory=dict)
    action: Literal["forward", "reject", "busy"] = "forward"
    dest: Annotated[list[NonEmptyStr], BeforeValidator(_one_or_many)] = Field(
        default_factory=list
    )
    select: Literal["rr", "random", "hash", "weighted"] = "rr"
    hash_key: str | None = None
    reject: RejectConfig | None = None
    codecs: list[str] = Field(default_factory=list)

    @field_validator("match")
    @classmethod
    def _match_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_route_keys(value, compile_values=True)

    @field_validator("rewrite")
    @classmethod
    def _rewrite_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return _check_route_keys(value, compile_values=False)

    @model_validator(mode="after")
    def _forward_has_dest(self) -> RouteConfig:
        if self.action == "forward" and not self.dest and self.reject is None:
            raise _BadKey(("dest",), "a forward route needs dest (one or more trunk names)")
        return self


class TrunkConfig(_Section):
    """`[proxy.trunks.NAME]`: a SIP carrier or gateway."""

    dest: NonEmptyStr
    backup_dest: str | None = None
    username: str | None = None
    password: str | None = None
    codec: list[str] = Field(default_factory=list)
    disabled: bool = False
    max_calls: Annotated[int, Field(ge=0)] | None = None
    max_cps: Annotated[int, Field(ge=0)] | None = None
    weight: Annotated[int, Field(ge=0)] | None = None
    transport: Annotated[Literal["udp", "tcp"], BeforeValidator(_lower)] | None = None
    direction: Literal["inbound", "outbound", "bidirectional"] = "bidirectional"
    inbound_hosts: list[str] = Field(default_factory=list)

    @field_validator("dest", "backup_dest")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("sip:", "sips:")):
            raise ValueError(f"{value!r} is not a SIP URI (e.g. \"sip:198.51.100.10:5060\")")
        return value


_ACL_RULE = re.compile(r"^(allow|deny)\s+(\S+)$")


class ProxyConfig(_Section):
    """`[proxy]`: the SIP side of the edge."""

    addr: str = "127.0.0.1"  # "0.0.0.0" (or "::") to serve other hosts
    udp_port: Port = 5060
    tcp_port: Port = 5060
    external_ip: str | None = None
    realms: list[NonEmptyStr] = Field(default_factory=list)
    useragent: str = "sdpbx"
    # RFC 3261 §17.1.1.1 timer defaults: T1 = RTT estimate, T2 = max non-INVITE retransmit
    # interval, T4 = max time a message stays in the network.
    t1_ms: Annotated[int, Field(ge=50, le=10_000)] = 500
    t2_ms: Annotated[int, Field(ge=50, le=60_000)] = 4000
    t4_ms: Annotated[int, Field(ge=50, le=60_000)] = 5000
    # RFC 3261 §10.3 step 7: expiry granted when the REGISTER names none, the floor answered
    # with 423 (Interval Too Brief), and the ceiling we shorten longer requests to.
    registrar_expires: Annotated[int, Field(ge=1)] = 3600
    min_registrar_expires: Annotated[int, Field(ge=1)] = 60
    max_registrar_expires: Annotated[int, Field(ge=1)] = 7200
    rtp_start_port: RtpPort = 20000
    rtp_end_port: RtpPort = 30000
    rtp_timeout: Annotated[int, Field(ge=0)] = 60  # seconds without media; 0 = never
    # Ours: "all" anchors every call's media in the edge's RTP relay; "none" passes SDP through.
    media_proxy: Literal["all", "none"] = "all"
    # Ours: defaults the routing webhook may override per call (max_ring_time, timeout).
    max_ring_time: Annotated[int, Field(ge=1, le=3600)] = 60  # s before CANCEL and 480
    max_call_duration: Annotated[int, Field(ge=0)] = 14_400  # s, then BYE both; 0 = no limit
    acl_rules: list[str] = Field(default_factory=list)  # first match wins; empty = allow all
    max_message_size: Annotated[int, Field(ge=1024, le=16 * 1024 * 1024)] = 65535

    http_router: HttpRouterConfig | None = None
    user_backends: list[UserBackendConfig] = Field(default_factory=list)
    locator_webhook: LocatorWebhookConfig | None = None
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    routes: list[RouteConfig] = Field(default_factory=list)
    trunks: dict[str, TrunkConfig] = Field(default_factory=dict)

    @field_validator("addr", "external_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        return None if value is None else _ip_literal(value)

    @field_validator("acl_rules")
    @classmethod
    def _acl(cls, rules: list[str]) -> list[str]:
        for index, rule in enumerate(rules):
            found = _ACL_RULE.match(rule.strip())
            if found is None:
                raise _BadKey((index,), f"{rule!r}: expected 'allow|deny all|IP|CIDR'")
            target = found.group(2)
            if target != "all":
                try:
                    ipaddress.ip_network(target, strict=False)
                except ValueError:
                    raise _BadKey((index,), f"{rule!r}: {target!r} is not an IP or CIDR"
                                    ) from None
        return rules

    @model_validator(mode="after")
    def _consistent(self) -> ProxyConfig:
        if self.t1_ms > self.t2_ms:
            raise _BadKey(("t1_ms",), f"{self.t1_ms} must not exceed t2_ms ({self.t2_ms})")
        if not (self.min_registrar_expires <= self.registrar_expires
                <= self.max_registrar_expires):
            raise _BadKey(
                ("registrar_expires",),
                "need min_registrar_expires <= registrar_expires <= max_registrar_expires "
                f"(got {self.min_registrar_expires}, {self.registrar_expires}, "
                f"{self.max_registrar_expires})",
            )
        # RFC 3550 §11: RTP on an even port, RTCP on the next odd one, so a pair needs 2 ports.
        if self.rtp_end_port - self.rtp_start_port < 1:
            raise _BadKey(
                ("rtp_start_port",),
                f"{self.rtp_start_port} must be below rtp_end_port ({self.rtp_end_port})",
            )
        for index, route in enumerate(self.routes):
            for field, names in (("dest", route.dest), ("source_trunks", route.source_trunks)):
                for name in names:
                    if name not in self.trunks:
                        raise _BadKey(("routes", index, field), f"{name!r} is not a trunk "
                                        f"(define [proxy.trunks.{name}])")
        return self


# --- the other sections -----------------------------------------------------------------------


class HttpConfig(_Section):
    """`[http]`: health, metrics and (embedded mode) the control API, on one listener."""

    addr: str = "127.0.0.1:8080"

    @field_validator("addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_host_port(value)
        return value

    @property
    def host(self) -> str:
        return split_host_port(self.addr)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.addr)[1]


class StoreConfig(_Section):
    """`[store]`: where state lives; sqlite for one box, DynamoDB for many edges."""

    backend: Literal["sqlite", "dynamodb"] = "sqlite"
    path: NonEmptyStr = "./data/sdpbx.sqlite3"
    table_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,200}$")] = "sdpbx"
    # Ours: CDRs and recordings are written here first (fsync'd), then uploaded with retries.
    spool_path: NonEmptyStr = "./data/spool"


class CallRecordConfig(_Section):
    """`[callrecord]`: where CDRs go. Fields of the other types are allowed and unused."""

    type: Literal["local", "s3", "http"] = "local"
    root: str = "./data/cdr"  # local: a folder; s3: a key prefix (default "cdr")
    bucket: str | None = None
    region: str | None = None
    endpoint: str | None = None  # an S3-compatible endpoint; default: AWS (or AWS_ENDPOINT_URL)
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    with_media: bool = True
    # Accepted from RustPBX configs; prefer IAM roles or the AWS_* environment to keys here.
    vendor: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    keep_media_copy: bool = False

    @model_validator(mode="before")
    @classmethod
    def _s3_root(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("type") == "s3" and "root" not in data:
            return {**data, "root": "cdr"}
        return data

    @model_validator(mode="after")
    def _required_for_type(self) -> CallRecordConfig:
        if self.type == "s3" and not self.bucket:
            raise _BadKey(("bucket",), "required when type = \"s3\"")
        if self.type == "http" and not self.url:
            raise _BadKey(("url",), "required when type = \"http\"")
        return self


class RecordingConfig(_Section):
    """`[recording]`: stereo WAV recordings (caller left, callee right)."""

    enabled: bool = False
    auto_start: bool = False
    path: NonEmptyStr = "./data/recordings"


class LogConfig(_Section):
    level: Annotated[
        Literal["debug", "info", "warning", "error", "critical"], BeforeValidator(_lower)
    ] = "info"
    format: Literal["json", "text"] = "text"


class MediaConfig(_Section):
    """`[media]` (ours): prompts for call applications (play/stream steps, edge.io.prompts)."""

    # File sources of play steps are names relative to this folder (no `..`, no absolute paths).
    prompts_dir: NonEmptyStr = "./prompts"
    # URL prompts and speech are cached here (decoded 8 kHz WAV); default: <spool_path>/cache.
    cache_dir: NonEmptyStr | None = None
    # Seconds a cached URL prompt is played before the origin is asked again (a conditional GET:
    # 304 keeps the cached audio); 0 = ask on every play.
    prompt_revalidate_s: Annotated[int, Field(ge=0, le=31_536_000)] = 300
    prompt_timeout_ms: TimeoutMs = 10_000
    prompt_max_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024 * 1024)] = 20 * 1024 * 1024
    # Decoded prompts and speech kept in memory (least recently used dropped first).
    memory_cache_mb: Annotated[int, Field(ge=0, le=65_536)] = 64


class ApplicationsConfig(_Section):
    """`[applications]` (ours): how the edge runs call applications (docs/ncco.md)."""

    # The whole exchange with an answer URL or event URL, a retry after a failed connection
    # included.
    timeout_ms: TimeoutMs = 5000
    # Steps run instead when an application's step list cannot be had or does not validate
    # (its answer URL and fallback failed, or the steps are invalid); empty: hang up. The
    # CDR's lastError says why either way.
    fallback_steps: list[dict[str, Any]] = Field(default_factory=list)

    @field_validator("fallback_steps")
    @classmethod
    def _valid_steps(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if value:
            from control.contracts.ncco import StepsInvalid, parse_steps

            try:
                parse_steps(value)
            except StepsInvalid as exc:
                raise ValueError(str(exc)) from None
        return value


class TtsConfig(_Section):
    """`[tts]` (ours): the text-to-speech engine of say/talk steps (edge.io.tts)."""

    engine: Literal["espeak", "polly"] = "espeak"
    # The voice when a step names none: an espeak-ng voice ("en-us", "en-gb+f3") or a Polly
    # VoiceId ("Joanna"). None: the step's language decides, else English (US).
    voice: NonEmptyStr | None = None
    polly_region: NonEmptyStr | None = None  # default: AWS_REGION / AWS_DEFAULT_REGION
    polly_engine: Literal["standard", "neural"] = "standard"
    timeout_ms: TimeoutMs = 20_000


class Config(_Section):
    """The whole file. `Config()` is the embedded default."""

    proxy: ProxyConfig = Field(default_factory=ProxyConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    callrecord: CallRecordConfig = Field(default_factory=CallRecordConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    webhooks: WebhookSigningConfig = Field(default_factory=WebhookSigningConfig)
    media: MediaConfig = Field(default_factory=MediaConfig)
    applications: ApplicationsConfig = Field(default_factory=ApplicationsConfig)
    tts: TtsConfig = Field(default_factory=TtsConfig)
    edge_id: str | None = None  # this edge's id in the shared state; default: hostname-port


# --- loading and error messages ---------------------------------------------------------------

# RustPBX keys that live elsewhere here: named in the error so a migrating user knows where.
_MOVED_KEYS: dict[tuple[str | int, ...], str] = {
    ("http_addr",): "use [http] addr",
    ("log_level",): "use [log] level",
    ("external_ip",): "use [proxy] external_ip",
    ("rtp_start_port",): "use [proxy] rtp_start_port",
    ("rtp_end_port",): "use [proxy] rtp_end_port",
    ("recorder_path",): "use [recording] path",
    ("database_url",): "use [store] backend and path",
    ("proxy", "user_backend"): "use [[proxy.user_backends]] (a list)",
}


def load_config(path: Path | None) -> Config:
    """Read and validate `path`; `None` gives the embedded default. Raises `ConfigError`."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"{path}: cannot read: {reason}"]) from None
    return parse_config(text, source=str(path))


def parse_config(text: str, *, source: str = "<config>") -> Config:
    """Validate TOML text; `source` names it in syntax errors. Raises `ConfigError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{source}: not valid TOML: {exc}"]) from None
    return config_from_mapping(data)


def config_from_mapping(data: Mapping[str, Any]) -> Config:
    """Validate already-parsed data (what `tomllib` returns). Raises `ConfigError`."""
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError([_describe(error, data) for error in exc.errors()]) from None
    # What only the compiled routes can tell: a rewrite's {n} beyond its match's groups, an
    # unknown hash_key field. Imported here: the router needs this module's models.
    from edge.pbx.routing import StaticRouter

    try:
        StaticRouter(config.proxy.routes, config.proxy.trunks, lambda: 0.0)
    except ValueError as exc:
        raise ConfigError([f"proxy.routes: {exc}"]) from None
    return config


def _describe(error: ErrorDetails, data: Mapping[str, Any]) -> str:
    loc = tuple(error["loc"])
    key = _dotted(loc, data) or "(top level)"
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, _BadKey):
        return f"{_dotted(loc + cause.subpath, data)}: {cause}"
    if error["type"] == "extra_forbidden":
        message = "unknown key"
        hint = _MOVED_KEYS.get(loc)
        if hint is None:
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]), n=1)
            hint = f"did you mean {close[0]!r}?" if close else None
        return f"{key}: {message}" + (f" ({hint})" if hint else "")
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}"


def _dotted(loc: tuple[str | int, ...], data: Mapping[str, Any]) -> str:
    """`("proxy", "user_backends", 0, "http", "url")` -> `proxy.user_backends[0].url`.

    Pydantic puts a tagged union's tag in the path; it is not a key of the input, so walking
    the input shows which path parts are the user's keys and which are not.
    """
    parts: list[str] = []
    node: Any = data
    for index, part in enumerate(loc):
        is_last = index == len(loc) - 1
        if isinstance(part, int):
            parts.append(f"[{part}]")
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif not is_last:
            continue  # a union tag or member name, not a key the user wrote
        text = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'
        parts.append(text if not parts else f".{text}")
    return "".join(parts)


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The keys the section at `loc` accepts (for "did you mean"), or [] if unknown."""
    node: Any = Config
    for part in loc:
        node = _unwrap(node)
        origin = get_origin(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                return []
            node = field.annotation
        elif origin is list and isinstance(part, int):
            node = get_args(node)[0]
        elif origin is dict:
            node = get_args(node)[1]
        elif origin in (Union, types.UnionType):  # tagged union: `part` is the tag
            node = next((member for member in get_args(node)
                         if part in get_args(member.model_fields["type"].annotation)), None)
        else:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return list(node.model_fields)
    return []


# --- what the config means for other parts -----------------------------------------------------

DEFAULT_REALM = "sdpbx"


def default_realm(config: Config) -> str:
    """The realm users are created in and challenged with when none is named: the first of
    `[proxy] realms`, else "sdpbx"."""
    return config.proxy.realms[0] if config.proxy.realms else DEFAULT_REALM


def media_cache_dir(config: Config) -> str:
    """Where URL prompts and speech are cached: `[media] cache_dir`, else `cache` inside
    `[store] spool_path` (the spool reads only its own `*.json`/`*.data` entries there)."""
    return config.media.cache_dir or os.path.join(config.store.spool_path, "cache")


def store_settings(config: Config) -> StoreSettings:
    """The `StoreSettings` a config describes: `[store]` for state, `[callrecord]` and
    `[recording]` for blobs.

    Blob keys carry their kind (`cdr/YYYY/MM/DD/...`, `recordings/YYYY/MM/DD/...`, DESIGN §4), so
    a local blob store is rooted at the folder that holds both `[callrecord] root` and
    `[recording] path` (with the defaults, `./data`), and an S3 one at the bucket's top.
    `[callrecord] type = "http"` pushes CDRs elsewhere; blobs then stay local.
    Region and endpoint for DynamoDB come from the standard AWS environment.
    """
    record = config.callrecord
    if record.type == "s3":
        assert record.bucket is not None  # the model requires it for s3
        blobs = BlobSettings(kind="s3", root="", bucket=record.bucket,
                             region=record.region, endpoint_url=record.endpoint)
    else:
        root = record.root if record.type == "local" else "./data/cdr"
        parent = os.path.commonpath(
            [os.path.dirname(os.path.abspath(root)),
             os.path.dirname(os.path.abspath(config.recording.path))]
        )
        blobs = BlobSettings(kind="local", root=parent)
    return StoreSettings(
        backend=config.store.backend,
        sqlite_path=config.store.path,
        table_prefix=config.store.table_prefix,
        blobs=blobs,
    )
