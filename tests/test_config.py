"""edge.config: defaults, every section, and error messages that name the bad key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import edge.config
from edge.config import (
    Config,
    ConfigError,
    config_from_mapping,
    load_config,
    parse_config,
    split_host_port,
)

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "config" / "sdpbx.example.toml"

# COMPAT.md's "Config sections" example, written as valid TOML (the doc joins keys with ';').
COMPAT_EXAMPLE = """\
[proxy]
addr = "0.0.0.0"
udp_port = 5060
tcp_port = 5060
realms = ["pbx.example.com"]
registrar_expires = 60
max_registrar_expires = 3600
rtp_start_port = 20000
rtp_end_port = 30000
rtp_timeout = 60
external_ip = "203.0.113.7"
acl_rules = ["allow 10.0.0.0/8", "deny all"]

[proxy.http_router]
url = "https://your-api.com/route"
timeout_ms = 5000
fallback_to_static = true
headers = { "X-API-Key" = "..." }

[[proxy.user_backends]]
type = "memory"
users = [{ username = "1001", password = "secret" }]
[[proxy.user_backends]]
type = "http"
url = "https://your-api.com/auth"
method = "GET"
username_field = "username"
realm_field = "realm"
request_uri_field = "request_uri"
http_timeout_ms = 5000

[proxy.locator_webhook]
url = "https://your-api.com/sip-events"
events = ["registered", "unregistered", "offline"]
timeout_ms = 5000

[[proxy.routes]]
name = "to-carrier"
priority = 10
dest = ["carrierA"]
select = "rr"
[proxy.routes.match]
"to.user" = "^00([0-9]+)$"
[proxy.routes.rewrite]
"to.user" = "+{1}"

[[proxy.routes]]
name = "blocked"
action = "reject"
reject = { code = 403, reason = "blocked" }
match = { "from.user" = "666" }

[[proxy.routes]]
name = "busy"
action = "busy"
match = { "header.X-Busy" = "yes" }

[proxy.trunks.carrierA]
dest = "sip:198.51.100.10:5060"
username = "acct"
password = "..."
inbound_hosts = ["198.51.100.10"]
max_calls = 100
max_cps = 10
direction = "bidirectional"

[callrecord]
type = "s3"
bucket = "cdr-bucket"
region = "eu-west-1"

[recording]
enabled = true
auto_start = true
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="test.toml")
    return list(caught.value.problems)


# --- defaults ---------------------------------------------------------------------------------


def test_no_file_is_the_embedded_default() -> None:
    assert load_config(None) == Config()


def test_embedded_default_binds_loopback_only() -> None:
    config = Config()
    assert config.proxy.addr == "127.0.0.1"
    assert (config.http.host, config.http.port) == ("127.0.0.1", 8080)


def test_defaults() -> None:
    proxy = Config().proxy
    assert (proxy.udp_port, proxy.tcp_port) == (5060, 5060)
    assert proxy.useragent == "sdpbx"
    assert (proxy.t1_ms, proxy.t2_ms, proxy.t4_ms) == (500, 4000, 5000)
    assert proxy.max_message_size == 65535
    assert (proxy.rtp_start_port, proxy.rtp_end_port, proxy.rtp_timeout) == (20000, 30000, 60)
    assert proxy.min_registrar_expires <= proxy.registrar_expires <= proxy.max_registrar_expires
    assert proxy.realms == [] and proxy.acl_rules == [] and proxy.external_ip is None
    assert proxy.http_router is None and proxy.locator_webhook is None
    assert proxy.user_backends == [] and proxy.routes == [] and proxy.trunks == {}
    config = Config()
    assert config.store.backend == "sqlite"
    assert config.store.path == "./data/sdpbx.sqlite3"
    assert config.callrecord.type == "local" and config.callrecord.root == "./data/cdr"
    assert config.recording.enabled is False and config.recording.auto_start is False
    assert (config.log.level, config.log.format) == ("info", "text")


def test_empty_file_is_the_default() -> None:
    assert parse_config("") == Config()


def test_config_is_immutable() -> None:
    config = Config()
    with pytest.raises(ValueError, match="frozen"):
        config.proxy.udp_port = 1  # type: ignore[misc]


# --- every section ----------------------------------------------------------------------------


def test_every_section_loads() -> None:
    config = parse_config("""
        [proxy]
        addr = "0.0.0.0"
        udp_port = 5070
        tcp_port = 0
        realms = ["pbx.example.com", "example.org"]
        external_ip = "203.0.113.7"
        useragent = "acme-pbx"
        t1_ms = 250
        t2_ms = 2000
        t4_ms = 2500
        registrar_expires = 600
        min_registrar_expires = 30
        max_registrar_expires = 900
        rtp_start_port = 40000
        rtp_end_port = 40100
        rtp_timeout = 0
        acl_rules = ["allow 192.168.1.0/24", "allow ::1", "deny all"]
        max_message_size = 131072

        [http]
        addr = "[::1]:9090"

        [store]
        backend = "dynamodb"
        path = "/var/lib/sdpbx/state.db"
        table_prefix = "prod-sdpbx"

        [callrecord]
        type = "http"
        url = "https://cdr.example.com/push"
        headers = { Authorization = "Bearer x" }

        [recording]
        enabled = true
        auto_start = true
        path = "/srv/recordings"

        [log]
        level = "DEBUG"
        format = "json"
    """)
    proxy = config.proxy
    assert (proxy.addr, proxy.udp_port, proxy.tcp_port) == ("0.0.0.0", 5070, 0)
    assert proxy.realms == ["pbx.example.com", "example.org"]
    assert (proxy.external_ip, proxy.useragent) == ("203.0.113.7", "acme-pbx")
    assert (proxy.t1_ms, proxy.t2_ms, proxy.t4_ms) == (250, 2000, 2500)
    assert (proxy.registrar_expires, proxy.min_registrar_expires,
            proxy.max_registrar_expires) == (600, 30, 900)
    assert (proxy.rtp_start_port, proxy.rtp_end_port, proxy.rtp_timeout) == (40000, 40100, 0)
    assert proxy.acl_rules == ["allow 192.168.1.0/24", "allow ::1", "deny all"]
    assert proxy.max_message_size == 131072
    assert (config.http.host, config.http.port) == ("::1", 9090)
    assert (config.store.backend, config.store.table_prefix) == ("dynamodb", "prod-sdpbx")
    assert config.store.path == "/var/lib/sdpbx/state.db"
    assert config.callrecord.type == "http"
    assert config.callrecord.url == "https://cdr.example.com/push"
    assert config.callrecord.headers == {"Authorization": "Bearer x"}
    assert (config.recording.enabled, config.recording.auto_start) == (True, True)
    assert config.recording.path == "/srv/recordings"
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_compat_example_validates() -> None:
    config = parse_config(COMPAT_EXAMPLE)
    proxy = config.proxy
    assert proxy.http_router is not None
    assert proxy.http_router.fallback_to_static is True
    assert proxy.http_router.headers == {"X-API-Key": "..."}
    memory, http = proxy.user_backends
    assert memory.type == "memory" and memory.users[0].username == "1001"
    assert memory.users[0].password == "secret"
    assert http.type == "http" and http.method == "GET" and http.url.endswith("/auth")
    assert proxy.locator_webhook is not None
    assert proxy.locator_webhook.events == ["registered", "unregistered", "offline"]
    to_carrier, blocked, busy = proxy.routes
    assert to_carrier.dest == ["carrierA"] and to_carrier.priority == 10
    assert to_carrier.match == {"to.user": "^00([0-9]+)$"}
    assert to_carrier.rewrite == {"to.user": "+{1}"}
    assert blocked.action == "reject" and blocked.reject is not None
    assert blocked.reject.code == 403
    assert busy.action == "busy"
    trunk = proxy.trunks["carrierA"]
    assert (trunk.max_calls, trunk.max_cps, trunk.direction) == (100, 10, "bidirectional")
    assert config.callrecord.type == "s3" and config.callrecord.bucket == "cdr-bucket"
    assert config.callrecord.root == "cdr"  # the s3 default prefix, not the local folder
    assert config.recording.enabled and config.recording.auto_start


def test_route_dest_may_be_a_single_name() -> None:
    config = parse_config("""
        [[proxy.routes]]
        name = "r"
        dest = "t"
        [proxy.trunks.t]
        dest = "sip:192.0.2.1"
    """)
    assert config.proxy.routes[0].dest == ["t"]


def test_ports_zero_are_allowed() -> None:
    config = parse_config('[proxy]\nudp_port = 0\ntcp_port = 0\n[http]\naddr = "127.0.0.1:0"\n')
    assert (config.proxy.udp_port, config.proxy.tcp_port, config.http.port) == (0, 0, 0)


# --- error messages ---------------------------------------------------------------------------


def test_bad_value_is_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[proxy]\nudp_port = 70000\n")
    assert str(caught.value) == (
        "config error: proxy.udp_port: Input should be less than or equal to 65535"
    )


def test_unknown_key_is_named_with_a_suggestion() -> None:
    assert problems("[proxy]\nudp_prot = 5060\n") == [
        "proxy.udp_prot: unknown key (did you mean 'udp_port'?)"
    ]


def test_unknown_section_is_named() -> None:
    assert problems("[prxy]\naddr = '0.0.0.0'\n") == [
        "prxy: unknown key (did you mean 'proxy'?)"
    ]


def test_every_bad_key_is_listed() -> None:
    found = problems("""
        [proxy]
        udp_port = -1
        tcp_port = "5060"
        colour = "blue"
        [http]
        addr = "localhost"
        [log]
        level = "loud"
    """)
    assert found == [
        "proxy.udp_port: Input should be greater than or equal to 0",
        "proxy.tcp_port: Input should be a valid integer",
        "proxy.colour: unknown key",
        "http.addr: 'localhost' is not host:port (e.g. \"127.0.0.1:8080\")",
        "log.level: Input should be 'debug', 'info', 'warning', 'error' or 'critical'",
    ]


def test_rustpbx_keys_that_moved_say_where() -> None:
    assert problems('http_addr = "0.0.0.0:8080"\n') == ["http_addr: unknown key (use [http] addr)"]
    assert problems("[proxy.user_backend]\ntype = 'memory'\n") == [
        "proxy.user_backend: unknown key (use [[proxy.user_backends]] (a list))"
    ]


def test_errors_inside_lists_and_tables_have_exact_paths() -> None:
    found = problems("""
        [[proxy.user_backends]]
        type = "memory"
        users = [{ username = "a" }, { username = "b", pasword = "x" }]
        [[proxy.user_backends]]
        type = "http"
        urll = "https://x"
        [[proxy.user_backends]]
        type = "database"
        [proxy.trunks."carrier.b"]
        dest = "198.51.100.10"
    """)
    assert found == [
        "proxy.user_backends[0].users[0].password: user 'a' needs a password or an ha1",
        "proxy.user_backends[0].users[1].pasword: unknown key (did you mean 'password'?)",
        "proxy.user_backends[1].url: Field required",
        "proxy.user_backends[1].urll: unknown key (did you mean 'url'?)",
        "proxy.user_backends[2]: Input tag 'database' found using 'type' does not match any "
        "of the expected tags: 'memory', 'http', 'directory'",
        'proxy.trunks."carrier.b".dest: \'198.51.100.10\' is not a SIP URI '
        '(e.g. "sip:198.51.100.10:5060")',
    ]


def test_route_checks() -> None:
    assert problems("""
        [[proxy.routes]]
        name = "r"
        dest = "nowhere"
    """) == ["proxy.routes[0].dest: 'nowhere' is not a trunk (define [proxy.trunks.nowhere])"]
    bad_regex = problems("""
        [[proxy.routes]]
        name = "r"
        action = "busy"
        match = { "to.user" = "^(00" }
    """)
    assert len(bad_regex) == 1
    assert bad_regex[0].startswith('proxy.routes[0].match."to.user": bad regular expression')
    assert problems("""
        [[proxy.routes]]
        name = "r"
        action = "busy"
        match = { "to.usr" = "1" }
    """)[0].startswith('proxy.routes[0].match."to.usr": unknown field')
    assert problems('[[proxy.routes]]\nname = "r"\n') == [
        "proxy.routes[0].dest: a forward route needs dest (one or more trunk names)"
    ]


@pytest.mark.parametrize(("toml", "expected"), [
    ('[proxy]\nacl_rules = ["allow 10.0.0.0/8", "deny everyone"]\n',
     "proxy.acl_rules[1]: 'deny everyone': 'everyone' is not an IP or CIDR"),
    ('[proxy]\nacl_rules = ["permit all"]\n',
     "proxy.acl_rules[0]: 'permit all': expected 'allow|deny all|IP|CIDR'"),
    ('[proxy]\naddr = "example.com"\n', "proxy.addr: 'example.com' is not an IP address"),
    ("[proxy]\nt1_ms = 5000\nt2_ms = 4000\n", "proxy.t1_ms: 5000 must not exceed t2_ms (4000)"),
    ("[proxy]\nrtp_start_port = 30000\nrtp_end_port = 20000\n",
     "proxy.rtp_start_port: 30000 must be below rtp_end_port (20000)"),
    ("[proxy]\nregistrar_expires = 10\n",
     "proxy.registrar_expires: need min_registrar_expires <= registrar_expires <= "
     "max_registrar_expires (got 60, 10, 7200)"),
    ('[callrecord]\ntype = "s3"\n', 'callrecord.bucket: required when type = "s3"'),
    ('[callrecord]\ntype = "http"\n', 'callrecord.url: required when type = "http"'),
    ('[store]\nbackend = "postgres"\n', "store.backend: Input should be 'sqlite' or 'dynamodb'"),
    ('[http]\naddr = "::1:8080"\n',
     "http.addr: '::1:8080': write an IPv6 address in brackets, e.g. \"[::1]:8080\""),
    ("[recording]\nenabled = 1\n", "recording.enabled: Input should be a valid boolean"),
    ('[log]\nformat = "xml"\n', "log.format: Input should be 'json' or 'text'"),
])
def test_bad_values(toml: str, expected: str) -> None:
    assert problems(toml) == [expected]


def test_toml_syntax_error_names_the_file() -> None:
    found = problems("[proxy\n")
    assert len(found) == 1
    assert found[0].startswith("test.toml: not valid TOML: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == (f"{path}: cannot read: No such file or directory",)


def test_load_config_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "sdpbx.toml"
    path.write_text('[proxy]\nudp_port = 5080\n', encoding="utf-8")
    assert load_config(path).proxy.udp_port == 5080


def test_config_from_mapping() -> None:
    assert config_from_mapping({"log": {"format": "json"}}).log.format == "json"


@pytest.mark.parametrize(("text", "expected"), [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)),
    ("[::1]:0", ("::1", 0)),
    ("localhost:80", ("localhost", 80)),
])
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "host:", "host:http", "host:65536", "::1:80"])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=r"host:port|port must be|brackets"):
        split_host_port(text)


# --- every model forbids unknown keys -----------------------------------------------------------


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Every model reachable from `model` through field annotations (lists, unions, dicts)."""
    seen.add(model)
    for field in model.model_fields.values():
        for found in re.findall(r"edge\.config\.(\w+)", repr(field.annotation)):
            cls = getattr(edge.config, found)
            if cls not in seen:
                _models(cls, seen)
    return seen


def test_every_section_forbids_unknown_keys() -> None:
    models = _models(Config, set())
    assert len(models) >= 15  # the walk really found the nested sections
    for model in models:
        assert model.model_config.get("extra") == "forbid", model.__name__


# --- the example file ---------------------------------------------------------------------------


def _uncommented(text: str) -> str:
    # The example writes optional settings as "#key = value" (no space after '#').
    return re.sub(r"(?m)^#(?=[\[\"a-z])", "", text)


def test_example_file_is_the_default() -> None:
    assert load_config(EXAMPLE) == Config()


def test_example_file_with_every_option_enabled_validates() -> None:
    config = parse_config(_uncommented(EXAMPLE.read_text(encoding="utf-8")), source="example")
    proxy = config.proxy
    assert proxy.http_router is not None and proxy.locator_webhook is not None
    assert [backend.type for backend in proxy.user_backends] == ["memory", "http", "directory"]
    assert [route.name for route in proxy.routes] == ["to-carrier", "block-premium"]
    assert list(proxy.trunks) == ["carrierA"]
    assert config.callrecord.bucket == "my-cdr-bucket"


def _all_keys(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    keys: set[str] = set()
    for submodel in _models(model, seen):
        keys.update(submodel.model_fields)
    return keys


def _keys_in(data: Any) -> set[str]:
    if isinstance(data, dict):
        return set(data) | {key for value in data.values() for key in _keys_in(value)}
    if isinstance(data, list):
        return {key for value in data for key in _keys_in(value)}
    return set()


def test_example_file_shows_every_key() -> None:
    data = tomllib.loads(_uncommented(EXAMPLE.read_text(encoding="utf-8")))
    missing = _all_keys(Config, set()) - _keys_in(data)
    assert not missing, f"keys missing from {EXAMPLE.name}: {sorted(missing)}"


def test_application_fallback_steps_are_validated_at_load() -> None:
    good = parse_config('[applications]\nfallback_steps = [{ action = "talk", text = "Sorry" }, '
                        '{ action = "hangup" }]\n', source="test.toml")
    assert [step["action"] for step in good.applications.fallback_steps] == ["talk", "hangup"]
    [problem] = problems('[applications]\nfallback_steps = [{ action = "input", dtmf = '
                         '{ maxDigits = 99 } }]\n')
    assert "applications.fallback_steps" in problem and "maxDigits" in problem
