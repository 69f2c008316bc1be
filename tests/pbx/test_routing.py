"""Static routes, trunks and trunk limits (edge.pbx.routing), sans-IO: config text in, decisions
out, with a seeded draw for the random selections."""

from __future__ import annotations

import ast
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge.config import ConfigError, ProxyConfig, parse_config
from edge.pbx.routing import (
    CallFacts,
    RouteDecision,
    StaticRouter,
    TrunkDirectory,
    TrunkLimiter,
)
from edge.sip.message import Request, parse_message

TRUNKS = """
[proxy.trunks.carrierA]
dest = "sip:198.51.100.10:5060"
inbound_hosts = ["198.51.100.10", "198.51.100.0/24"]
weight = 1
codec = ["PCMA"]
[proxy.trunks.carrierB]
dest = "sip:gw.carrier-b.example;transport=tcp"
backup_dest = "sip:203.0.113.20:5080"
weight = 3
[proxy.trunks.carrierC]
dest = "sip:192.0.2.30"
transport = "tcp"
"""


def proxy(routes: str, trunks: str = TRUNKS) -> ProxyConfig:
    return parse_config(routes + trunks).proxy


def router(routes: str, trunks: str = TRUNKS, seed: int = 7) -> StaticRouter:
    config = proxy(routes, trunks)
    return StaticRouter(config.routes, config.trunks, random.Random(seed).random)


def invite(
    ruri: str = "sip:0049301234@pbx.test",
    *,
    from_: str = "\"Alice\" <sip:1001@PBX.test>;tag=a1",
    to: str = "<sip:0049301234@pbx.test>",
    extra: tuple[str, ...] = (),
) -> Request:
    lines = [
        f"INVITE {ruri} SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1",
        "Max-Forwards: 70",
        f"From: {from_}",
        f"To: {to}",
        "Call-ID: call-1@test",
        "CSeq: 1 INVITE",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    message = parse_message("\r\n".join(lines).encode())
    assert isinstance(message, Request)
    return message


def facts(
    source_trunk: str | None = None,
    *,
    ruri: str = "sip:0049301234@pbx.test",
    from_: str = "\"Alice\" <sip:1001@PBX.test>;tag=a1",
    to: str = "<sip:0049301234@pbx.test>",
    extra: tuple[str, ...] = (),
) -> CallFacts:
    return CallFacts.from_request(invite(ruri, from_=from_, to=to, extra=extra), source_trunk)


def decide(static: StaticRouter, call: CallFacts) -> RouteDecision:
    decision = static.route(call)
    assert decision is not None, "no route matched"
    return decision


# --- facts ------------------------------------------------------------------------------------


def test_facts_from_an_invite() -> None:
    call = facts(
        ruri="sip:%2B4930@Pbx.Test:5070;user=phone",
        to="<sip:bob@Example.COM:5062>",
        extra=("X-Account: 42", "v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2"),
        source_trunk="carrierA",
    )
    assert (call.from_user, call.from_host) == ("1001", "pbx.test")
    assert call.from_uri == "sip:1001@PBX.test"
    assert (call.to_user, call.to_host, call.to_port) == ("bob", "example.com", "5062")
    # The user is %-decoded once; the port is as written.
    assert (call.request_uri_user, call.request_uri_host, call.request_uri_port) == (
        "+4930", "pbx.test", "5070")
    assert call.caller == "1001@pbx.test"
    assert call.callee == "+4930@pbx.test"
    assert call.callee_user == "+4930"
    assert call.call_id == "call-1@test"
    assert call.source_trunk == "carrierA"
    assert call.value("header.x-account") == "42"
    assert call.value("header.Via") is not None
    assert call.value("header.X-Missing") is None
    assert call.value("to.port") == "5062"
    assert facts().value("to.port") == ""  # no port written: no default assumed


def test_facts_of_a_tel_uri() -> None:
    call = facts(from_="<tel:+4930123>;tag=x")
    assert (call.from_user, call.from_host) == ("+4930123", "")


# --- matching -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "pattern", "request_args", "matches"),
    [
        ("to.user", "0049301234", {}, True),
        ("to.user", "004930", {}, False),  # exact: the whole field
        ("to.user", "^0049", {}, True),  # regex: searched
        ("to.user", "30(12)", {}, True),  # regex found mid-field
        ("to.user", "^30(12)", {}, False),
        ("from.user", "^10[0-9]{2}$", {}, True),
        ("from.user", "^20[0-9]{2}$", {}, False),
        ("from.host", "PBX.TEST", {}, True),  # hosts: case-insensitive
        ("from.host", "^pbx\\.TEST$", {}, True),
        ("from.user", "1001", {"from_": "<sip:1001@x>"}, True),
        ("to.user", "ALICE", {"to": "<sip:alice@x>"}, False),  # users: case-sensitive
        ("to.host", "pbx.test", {}, True),
        ("to.port", "5062", {"to": "<sip:b@h:5062>"}, True),
        ("to.port", "5060", {}, False),
        ("request_uri.user", "^00", {}, True),
        ("request_uri.host", "other.test", {}, False),
        ("request_uri.port", "5070", {"ruri": "sip:1@h:5070"}, True),
        ("from", "sip:1001@PBX.test", {}, True),
        ("to", "^sip:0049", {}, True),
        ("caller", "1001@pbx.test", {}, True),
        ("callee", "^0049301234@pbx\\.test$", {}, True),
        ("header.X-Account", "42", {"extra": ("X-Account: 42",)}, True),
        ("header.x-account", "^4", {"extra": ("X-Account: 42",)}, True),
        ("header.X-Account", "43", {"extra": ("X-Account: 42",)}, False),
        ("header.X-Account", "^.*$", {}, False),  # absent header: no match, even for .*
        ("header.User-Agent", "Yealink", {"extra": ("User-Agent: Yealink",)}, True),
    ],
)
def test_match_table(key: str, pattern: str, request_args: dict[str, Any],
                     matches: bool) -> None:
    routes = f"""
[[proxy.routes]]
name = "r"
dest = "carrierA"
[proxy.routes.match]
"{key}" = '{pattern}'
"""
    decision = router(routes).route(facts(**request_args))
    assert (decision is not None) is matches


def test_every_key_must_match() -> None:
    routes = """
[[proxy.routes]]
name = "both"
dest = "carrierA"
match = { "from.user" = "1001", "to.user" = "^99" }
"""
    assert router(routes).route(facts()) is None
    assert router(routes).route(facts(to="<sip:99@x>")) is not None


# --- rewrite ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "rewrite", "caller", "callee", "uri"),
    [
        # COMPAT.md's example: national prefix to E.164.
        ('"to.user" = "^00([0-9]+)$"', '"to.user" = "+{1}"', "1001", "+49301234",
         "sip:+49301234@198.51.100.10:5060"),
        ('"to.user" = "^00([0-9]+)$"', '"to.user" = "{0}"', "1001", "0049301234",
         "sip:0049301234@198.51.100.10:5060"),
        ('"to.user" = "^0049(30)([0-9]+)$"', '"to.user" = "0{1}-{2}"', "1001", "030-1234",
         "sip:030-1234@198.51.100.10:5060"),
        ('"from.user" = "^(10)([0-9]+)$"', '"from.user" = "+4930555{2}"', "+493055501",
         "0049301234", "sip:0049301234@198.51.100.10:5060"),
        # A literal rewrite, and {0} of an exact match (the field's value).
        ('"from.user" = "1001"', '"from.user" = "anonymous"', "anonymous", "0049301234",
         "sip:0049301234@198.51.100.10:5060"),
        ('"from.user" = "1001"', '"from.user" = "+49{0}"', "+491001", "0049301234",
         "sip:0049301234@198.51.100.10:5060"),
        # {0} of a key without a match: its current value.
        ('"to.user" = "^00"', '"from.user" = "9{0}"', "91001", "0049301234",
         "sip:0049301234@198.51.100.10:5060"),
        # The Request-URI user wins over the To user for the number called.
        ('"to.user" = "^00(.*)$"',
         '"to.user" = "x{1}"\n"request_uri.user" = "+{0}"', "1001", "+0049301234",
         "sip:+0049301234@198.51.100.10:5060"),
        # An unmatched optional group is empty.
        ('"to.user" = "^(\\\\*)?00([0-9]+)$"', '"to.user" = "{1}+{2}"', "1001", "+49301234",
         "sip:+49301234@198.51.100.10:5060"),
    ],
)
def test_rewrite_table(match: str, rewrite: str, caller: str, callee: str, uri: str) -> None:
    routes = f"""
[[proxy.routes]]
name = "out"
dest = "carrierA"
[proxy.routes.match]
{match}
[proxy.routes.rewrite]
{rewrite}
"""
    decision = decide(router(routes), facts())
    assert decision.rewrite.caller_original == "1001"
    assert decision.rewrite.callee_original == "0049301234"
    assert (decision.rewrite.caller_final, decision.rewrite.callee_final) == (caller, callee)
    assert decision.targets[0].uri == uri


def test_rewrite_fields_and_headers_are_reported() -> None:
    routes = """
[[proxy.routes]]
name = "out"
dest = "carrierA"
match = { "to.user" = "^00([0-9]+)$", "header.X-Account" = "^(A)-([0-9]+)$" }
rewrite = { "to.user" = "+{1}", "to.host" = "carrier.example", "header.X-Account" = "{2}" }
"""
    decision = decide(router(routes), facts(extra=("X-Account: A-77",)))
    assert dict(decision.rewrite.fields) == {
        "to.user": "+49301234", "to.host": "carrier.example", "header.X-Account": "77"}
    assert decision.headers == (("X-Account", "77"),)


def test_no_rewrite_keeps_the_numbers() -> None:
    decision = decide(router('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n'), facts())
    assert decision.rewrite.caller_final == "1001"
    assert decision.rewrite.callee_final == "0049301234"
    assert decision.rewrite.fields == ()


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        ('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n'
         'match = { "to.user" = "^00([0-9]+)$" }\nrewrite = { "to.user" = "{2}" }\n',
         "{2}"),
        ('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n'
         'match = { "to.user" = "0049" }\nrewrite = { "to.user" = "+{1}" }\n', "{1}"),
        ('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n'
         'rewrite = { "from.user" = "{1}" }\n', "{1}"),
        ('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\nselect = "hash"\n'
         'hash_key = "to.usr"\n', "to.usr"),
    ],
)
def test_route_config_errors_are_found_at_construction(routes: str, message: str) -> None:
    # Loading the config builds the router once, so `sdpbx check-config` reports these too.
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        router(routes)


def test_unknown_dest_trunk_is_a_config_error_naming_it() -> None:
    config = proxy('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n')
    trunks = {name: trunk for name, trunk in config.trunks.items() if name != "carrierA"}
    with pytest.raises(ValueError, match="'carrierA' is not a trunk"):
        StaticRouter(config.routes, trunks, random.random)


# --- order, actions, trunk filters -------------------------------------------------------------


def test_priority_higher_first_ties_in_file_order_disabled_skipped() -> None:
    routes = """
[[proxy.routes]]
name = "low"
priority = 1
dest = "carrierA"
[[proxy.routes]]
name = "disabled"
priority = 100
disabled = true
dest = "carrierA"
[[proxy.routes]]
name = "high-first"
priority = 10
dest = "carrierB"
[[proxy.routes]]
name = "high-second"
priority = 10
dest = "carrierC"
"""
    static = router(routes)
    assert static.route_names == ("high-first", "high-second", "low")
    assert decide(static, facts()).route_name == "high-first"


def test_match_falls_through_to_the_next_route() -> None:
    routes = """
[[proxy.routes]]
name = "international"
priority = 10
dest = "carrierB"
match = { "to.user" = "^00[1-9]" }
[[proxy.routes]]
name = "national"
dest = "carrierA"
match = { "to.user" = "^0[1-9]" }
"""
    static = router(routes)
    assert decide(static, facts(to="<sip:0301234@x>")).route_name == "national"
    assert decide(static, facts(to="<sip:0049301234@x>")).route_name == "international"
    assert static.route(facts(to="<sip:1002@x>")) is None


def test_source_trunks_filter_by_the_inbound_trunk() -> None:
    routes = """
[[proxy.routes]]
name = "from-a"
source_trunks = ["carrierA"]
dest = "carrierC"
"""
    static = router(routes)
    assert decide(static, facts(source_trunk="carrierA")).route_name == "from-a"
    assert static.route(facts(source_trunk="carrierB")) is None
    assert static.route(facts()) is None  # not from a trunk at all


def test_reject_busy_and_their_codes() -> None:
    routes = """
[[proxy.routes]]
name = "premium"
priority = 3
action = "reject"
match = { "to.user" = "^0900" }
reject = { code = 603, reason = "Premium Numbers Barred", headers = { "X-Why" = "tariff" } }
[[proxy.routes]]
name = "blocked"
priority = 2
action = "reject"
match = { "from.user" = "^666$" }
[[proxy.routes]]
name = "busy"
priority = 1
action = "busy"
match = { "to.user" = "^1002$" }
"""
    static = router(routes)
    premium = decide(static, facts(to="<sip:09001234@x>"))
    assert (premium.action, premium.status, premium.reason) == (
        "reject", 603, "Premium Numbers Barred")
    assert premium.headers == (("X-Why", "tariff"),)
    assert premium.targets == ()
    blocked = decide(static, facts(from_="<sip:666@x>;tag=1"))
    assert (blocked.action, blocked.status, blocked.reason) == ("reject", 403, None)
    busy = decide(static, facts(to="<sip:1002@x>"))
    assert (busy.action, busy.status) == ("busy", 486)


def test_forward_targets_keep_dest_params_and_backups() -> None:
    routes = '[[proxy.routes]]\nname = "r"\ndest = ["carrierB", "carrierC"]\nselect = "rr"\n'
    decision = decide(router(routes), facts())
    assert decision.action == "forward" and decision.strategy == "sequential"
    assert decision.status == 0 and decision.source == "static"
    assert [(t.uri, t.trunk, t.aor) for t in decision.targets] == [
        ("sip:0049301234@gw.carrier-b.example;transport=tcp", "carrierB", None),
        ("sip:0049301234@203.0.113.20:5080", "carrierB", None),  # B's backup, right after B
        ("sip:0049301234@192.0.2.30;transport=tcp", "carrierC", None),  # `transport` added
    ]
    assert decision.trunk == "carrierB"


def test_disabled_and_inbound_only_trunks_are_left_out() -> None:
    trunks = TRUNKS + """
[proxy.trunks.off]
dest = "sip:192.0.2.40"
disabled = true
[proxy.trunks.inonly]
dest = "sip:192.0.2.50"
direction = "inbound"
"""
    static = router('[[proxy.routes]]\nname = "r"\ndest = ["off", "inonly", "carrierC"]\n'
                    '[[proxy.routes]]\nname = "dead"\ndest = ["off", "inonly"]\n'
                    'match = { "to.user" = "1002" }\npriority = 1\n', trunks)
    decision = decide(static, facts())
    assert [t.trunk for t in decision.targets] == ["carrierC"]
    dead = decide(static, facts(to="<sip:1002@x>"))
    assert (dead.action, dead.status, dead.route_name) == ("reject", 503, "dead")


def test_codecs_from_the_route_else_the_first_trunk() -> None:
    with_codecs = router('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n'
                         'codecs = ["PCMU", "telephone-event"]\n')
    assert decide(with_codecs, facts()).allow_codecs == ("PCMU", "telephone-event")
    without = router('[[proxy.routes]]\nname = "r"\ndest = "carrierA"\n')
    assert decide(without, facts()).allow_codecs == ("PCMA",)


# --- trunk selection ----------------------------------------------------------------------------

THREE = '[[proxy.routes]]\nname = "r"\ndest = ["carrierA", "carrierB", "carrierC"]\n'


def firsts(static: StaticRouter, calls: int, to: str = "<sip:0049301234@pbx.test>"
           ) -> list[str | None]:
    return [decide(static, facts(to=to)).trunk for _ in range(calls)]


def test_rr_rotates_per_route() -> None:
    routes = THREE + 'select = "rr"\n' + (
        '[[proxy.routes]]\nname = "other"\npriority = 1\ndest = ["carrierA", "carrierB"]\n'
        'match = { "to.user" = "^1" }\n')
    static = router(routes)
    assert firsts(static, 6) == ["carrierA", "carrierB", "carrierC"] * 2
    # The other route has its own position, untouched by the first route's calls.
    assert firsts(static, 3, to="<sip:1002@x>") == ["carrierA", "carrierB", "carrierA"]
    # Every trunk is still listed, rotated (failover order).
    order = [t.trunk for t in decide(static, facts()).targets if t.uri.find("203.0.113") < 0]
    assert order == ["carrierA", "carrierB", "carrierC"]


def test_weighted_follows_the_weights() -> None:
    static = router(THREE + 'select = "weighted"\n', seed=2024)
    share = Counter(firsts(static, 6000))
    # Weights A=1, B=3, C=1 (default): expected 20 %, 60 %, 20 %.
    assert abs(share["carrierA"] / 6000 - 0.2) < 0.025
    assert abs(share["carrierB"] / 6000 - 0.6) < 0.025
    assert abs(share["carrierC"] / 6000 - 0.2) < 0.025


def test_weight_zero_is_never_first_unless_all_are_zero() -> None:
    trunks = TRUNKS.replace("weight = 1", "weight = 0").replace("weight = 3", "weight = 0")
    static = router(THREE + 'select = "weighted"\n', trunks, seed=1)
    assert set(firsts(static, 200)) == {"carrierC"}
    all_zero = trunks + '\n'
    static = router('[[proxy.routes]]\nname = "r"\ndest = ["carrierA", "carrierB"]\n'
                    'select = "weighted"\n', all_zero, seed=1)
    assert set(firsts(static, 200)) == {"carrierA", "carrierB"}


def test_random_is_uniform_and_lists_every_trunk() -> None:
    static = router(THREE + 'select = "random"\n', seed=99)
    share = Counter(firsts(static, 3000))
    for name in ("carrierA", "carrierB", "carrierC"):
        assert abs(share[name] / 3000 - 1 / 3) < 0.04
    trunks = {t.trunk for t in decide(static, facts()).targets}
    assert trunks == {"carrierA", "carrierB", "carrierC"}


def test_seeded_draw_is_deterministic() -> None:
    one = firsts(router(THREE + 'select = "random"\n', seed=5), 50)
    two = firsts(router(THREE + 'select = "random"\n', seed=5), 50)
    assert one == two


def test_hash_is_stable_per_key_and_spreads_keys() -> None:
    routes = THREE + 'select = "hash"\n'
    # Stable: the same caller goes to the same trunk, call after call and on another edge
    # (another router, another random seed): BLAKE2b, not Python's salted hash().
    first = router(routes, seed=1)
    second = router(routes, seed=2)
    for user in ("1001", "1002", "1003"):
        chosen = {decide(r, facts(from_=f"<sip:{user}@pbx.test>;tag=x")).trunk
                  for r in (first, second, first, second)}
        assert len(chosen) == 1
    spread = {decide(first, facts(from_=f"<sip:{n}@pbx.test>;tag=x")).trunk
              for n in range(1000, 1060)}
    assert spread == {"carrierA", "carrierB", "carrierC"}


def test_hash_key_names_the_field() -> None:
    static = router(THREE + 'select = "hash"\nhash_key = "to.user"\n')
    by_callee = {decide(static, facts(from_=f"<sip:{n}@x>;tag=t", to="<sip:555@x>")).trunk
                 for n in range(1000, 1040)}
    assert len(by_callee) == 1  # callers differ, the callee does not
    static = router(THREE + 'select = "hash"\nhash_key = "header.X-Tenant"\n')
    tenants = [decide(static, facts(extra=(f"X-Tenant: t{n % 2}",))).trunk for n in range(20)]
    assert len(set(tenants[0::2])) == 1 and len(set(tenants[1::2])) == 1


# --- trunks -------------------------------------------------------------------------------------


def directory() -> TrunkDirectory:
    return TrunkDirectory(parse_config(TRUNKS + """
[proxy.trunks.wide]
dest = "sip:carrier-d.example"
inbound_hosts = ["198.51.0.0/16", "2001:db8::/32", "sbc.carrier-d.example"]
username = "acct"
password = "s3cret"
[proxy.trunks.narrow]
dest = "sip:carrier-e.example"
inbound_hosts = ["198.51.7.0/28"]
[proxy.trunks.off]
dest = "sip:192.0.2.99"
disabled = true
[proxy.trunks.outonly]
dest = "sip:192.0.2.98"
direction = "outbound"
""").proxy.trunks)


@pytest.mark.parametrize(
    ("ip", "trunk"),
    [
        ("198.51.100.10", "carrierA"),  # exact
        ("198.51.100.77", "carrierA"),  # carrierA's /24 beats wide's /16
        ("198.51.7.1", "narrow"),  # a later /28 beats an earlier /16
        ("198.51.7.16", "wide"),
        ("::ffff:198.51.7.16", "wide"),  # IPv4-mapped, as a dual-stack socket reports it
        ("2001:DB8::1", "wide"),
        ("[2001:db8::1]", "wide"),
        ("203.0.113.20", "carrierB"),  # no inbound_hosts: the backup_dest's address
        ("192.0.2.30", "carrierC"),  # no inbound_hosts: the dest's address
        ("192.0.2.99", None),  # disabled
        ("192.0.2.98", None),  # outbound only
        ("10.0.0.1", None),
        ("not-an-ip", None),
    ],
)
def test_identify_by_address_and_cidr(ip: str, trunk: str | None) -> None:
    trunks = directory()
    assert trunks.identify(ip) == trunk
    assert trunks.identify(ip) == trunk  # the remembered answer


def test_identify_remembers_a_bounded_number_of_sources() -> None:
    from edge.pbx import routing

    trunks = directory()
    for n in range(routing._IDENTIFIED_MAX + 10):
        assert trunks.identify(f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}") is None
    assert len(trunks._identified) <= routing._IDENTIFIED_MAX
    assert trunks.identify("198.51.7.1") == "narrow"


def test_unresolved_host_names_are_reported_and_credentials_given() -> None:
    trunks = directory()
    assert trunks.unresolved == (("carrierB", "gw.carrier-b.example"),
                                 ("wide", "sbc.carrier-d.example"))
    assert trunks.credentials("wide") == ("acct", "s3cret")
    assert trunks.credentials("carrierA") is None
    assert trunks.credentials("nope") is None
    assert "wide" in trunks and "nope" not in trunks


def test_trunk_for_a_target_uri() -> None:
    from edge.sip.uri import parse_sip_uri

    trunks = directory()
    assert trunks.trunk_for(parse_sip_uri("sip:+4930@198.51.100.10:5060")) == "carrierA"
    assert trunks.trunk_for(parse_sip_uri("sip:+4930@198.51.100.10")) == "carrierA"
    assert trunks.trunk_for(parse_sip_uri("sip:+4930@198.51.100.10:5070")) is None
    assert trunks.trunk_for(parse_sip_uri("sip:x@GW.Carrier-B.example")) == "carrierB"
    assert trunks.trunk_for(parse_sip_uri("sip:x@elsewhere.example")) is None


# --- limits -------------------------------------------------------------------------------------


def limiter(max_calls: int | None = None, max_cps: int | None = None) -> TrunkLimiter:
    lines = ['[proxy.trunks.t]', 'dest = "sip:192.0.2.1"']
    if max_calls is not None:
        lines.append(f"max_calls = {max_calls}")
    if max_cps is not None:
        lines.append(f"max_cps = {max_cps}")
    return TrunkLimiter(parse_config("\n".join(lines) + "\n").proxy.trunks)


def test_max_calls_counts_concurrent_calls() -> None:
    limits = limiter(max_calls=2)
    assert limits.acquire("t", 0.0) is None
    assert limits.acquire("t", 10.0) is None
    assert limits.acquire("t", 20.0) == "max_calls"
    assert limits.active("t") == 2  # the refused one holds nothing
    limits.release("t")
    assert limits.acquire("t", 30.0) is None
    for _ in range(5):
        limits.release("t")
    assert limits.active("t") == 0  # never below zero


def test_max_cps_is_a_sliding_one_second_window() -> None:
    limits = limiter(max_cps=3)
    assert [limits.acquire("t", t) for t in (0.0, 0.2, 0.4)] == [None, None, None]
    assert limits.acquire("t", 0.5) == "max_cps"
    assert limits.acquire("t", 0.999) == "max_cps"
    assert limits.acquire("t", 1.0) is None  # the start at 0.0 left the window
    assert limits.acquire("t", 1.1) == "max_cps"  # 0.2, 0.4 and 1.0 are inside
    assert limits.acquire("t", 1.4) is None  # 0.2 and 0.4 left: 1.0, 1.4
    assert limits.acquire("t", 1.45) is None
    assert limits.acquire("t", 1.5) == "max_cps"
    # Refusals are not starts: a burst of refused calls does not extend the window.
    assert limits.acquire("t", 2.45) is None


def test_both_limits_and_zero_and_unlimited() -> None:
    limits = limiter(max_calls=1, max_cps=10)
    assert limits.acquire("t", 0.0) is None
    assert limits.acquire("t", 5.0) == "max_calls"
    assert limiter(max_calls=0).acquire("t", 0.0) == "max_calls"
    assert limiter(max_cps=0).acquire("t", 0.0) == "max_cps"
    free = limiter()
    assert all(free.acquire("t", float(n) / 1000) is None for n in range(1000))
    assert free.acquire("unknown", 0.0) is None
    free.release("unknown")


def test_routing_module_is_sans_io() -> None:
    path = Path(__file__).resolve().parents[2] / "edge" / "pbx" / "routing.py"
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"asyncio", "socket", "time", "random", "threading", "httpx"}
