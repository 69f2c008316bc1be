"""edge.pbx.security with a fake clock: ACL, rate limit, brute-force guard, scanners, admission.

Cost of `Admission.admit`, measured on the dev container (CPython 3.11, `timeit`, 1M calls;
`test_admit_cost_note` re-measures the first two, run it with `-s`):
  - default config (no ACL, no rate limit):              ~0.08 µs
  - ACL of 3-4 rules (cached) + rate limit, one source:   ~0.4-0.5 µs
  - the same, 100k distinct IPv4 sources cycling:         ~2.1 µs (every look-up misses the
    ACL cache and parses the address; IPv6: ~4.3 µs)
So ~1 µs or less in normal operation, next to the ~5 µs a UDP packet costs in syscalls; an
address-cycling flood costs a few µs per packet, with memory capped.
"""

from __future__ import annotations

import ipaddress
import timeit
from functools import partial

import pytest

from edge.pbx.security import (
    ACCEPT,
    ACL,
    BLOCKED,
    RATE_LIMIT,
    SCANNER,
    AccessList,
    AclRule,
    Admission,
    BruteForceGuard,
    LogThrottle,
    RateLimiter,
    ScannerFilter,
)
from edge.sip.events import Peer
from edge.sip.message import Request, parse_message

# --- AccessList ---------------------------------------------------------------------------------


def test_no_rules_allows_everyone() -> None:
    acl = AccessList([])
    assert acl.empty
    assert acl.allowed("203.0.113.5") and acl.allowed("2001:db8::1")


def test_first_match_wins() -> None:
    # RustPBX's own test case (src/proxy/acl.rs): a deny before a wider allow.
    acl = AccessList(["deny 192.168.1.100", "allow 192.168.1.0/24", "allow 10.0.0.0/8",
                      "deny all"])
    assert acl.allowed("192.168.1.1")
    assert acl.allowed("10.2.3.4")
    assert not acl.allowed("192.168.1.100")
    assert not acl.allowed("172.16.1.1")


def test_order_matters() -> None:
    assert AccessList(["allow all", "deny 10.0.0.1"]).allowed("10.0.0.1")
    assert not AccessList(["deny 10.0.0.1", "allow all"]).allowed("10.0.0.1")


def test_rules_but_no_match_denies() -> None:
    # RustPBX: once rules exist, an address none of them matches is refused.
    acl = AccessList(["allow 10.0.0.0/8"])
    assert acl.allowed("10.9.9.9")
    assert not acl.allowed("11.0.0.1")


def test_ipv6_rules() -> None:
    acl = AccessList(["deny 2001:db8:bad::/48", "allow 2001:db8::/32", "allow ::1",
                      "deny all"])
    assert acl.allowed("2001:db8:1::5")
    assert not acl.allowed("2001:db8:bad::5")
    assert acl.allowed("::1")
    assert not acl.allowed("2001:db9::1")
    assert not acl.allowed("10.0.0.1")  # IPv4 does not match IPv6 rules


def test_ipv4_rules_do_not_match_ipv6_addresses_of_the_same_bits() -> None:
    acl = AccessList(["allow 0.0.0.0/0", "deny all"])
    assert acl.allowed("198.51.100.1")
    assert not acl.allowed("::c633:6401")  # 198.51.100.1's bits, but an IPv6 address


def test_ipv4_mapped_ipv6_sources_match_ipv4_rules() -> None:
    acl = AccessList(["allow 10.0.0.0/8", "deny all"])
    assert acl.allowed("::ffff:10.1.2.3")
    assert not acl.allowed("::ffff:192.0.2.1")


def test_scoped_ipv6_source() -> None:
    acl = AccessList(["allow fe80::/10", "deny all"])
    assert acl.allowed("fe80::1%eth0")


def test_host_bits_in_a_cidr_are_ignored_and_case_is_free() -> None:
    acl = AccessList(["ALLOW 10.1.2.3/8", "Deny All"])
    assert acl.allowed("10.200.0.1") and not acl.allowed("11.0.0.1")


def test_garbage_source_is_denied_when_there_are_rules() -> None:
    assert not AccessList(["allow all"]).allowed("not-an-ip")
    assert not AccessList(["deny 10.0.0.0/8", "allow 192.0.2.0/24"]).allowed("not-an-ip")


@pytest.mark.parametrize(("ip", "allowed"), [
    ("10.0.0.1", True), ("10.255.255.255", True), ("11.0.0.1", False),
    ("10.0.0.256", False), ("10..0.1", False), ("10.0.0.", False), ("10.0.0.-1", False),
    ("+10.0.0.1", False), ("10.0.0.1 ", False), ("1\u0660.0.0.1", False), ("10.0.0.0.1", False),
])
def test_ipv4_fast_path_agrees_with_the_rules(ip: str, allowed: bool) -> None:
    assert AccessList(["allow 10.0.0.0/8", "deny all"]).allowed(ip) is allowed


@pytest.mark.parametrize("rule", ["permit 10.0.0.1", "allow", "allow 10.0.0.1 extra",
                                  "deny 10.0.0.300", "allow 10.0.0.0/33", "allow example.com"])
def test_bad_rules_are_refused_by_name(rule: str) -> None:
    with pytest.raises(ValueError, match="ACL rule"):
        AccessList([rule])


def test_rule_parse() -> None:
    rule = AclRule.parse("  deny   2001:db8::/32 ")
    assert not rule.allow and rule.network == ipaddress.ip_network("2001:db8::/32")
    assert AclRule.parse("allow all").network is None


def test_acl_cache_is_bounded() -> None:
    acl = AccessList(["allow 10.0.0.0/8", "deny all"], cache_size=1000)
    for n in range(100_000):
        acl.allowed(str(ipaddress.IPv4Address(0x0A000000 + n)))
    assert len(acl._cache) == 1000
    # Decisions stay right after evictions.
    assert acl.allowed("10.0.0.1") and not acl.allowed("11.0.0.1")


# --- RateLimiter --------------------------------------------------------------------------------


def test_burst_then_refill() -> None:
    limiter = RateLimiter(rate=10, burst=5)
    assert [limiter.allow("a", 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert not limiter.allow("a", 100.05)  # half a token
    assert limiter.allow("a", 100.1)  # one token after 0.1 s at 10/s
    assert not limiter.allow("a", 100.1)
    # A long pause refills to the burst, not beyond.
    assert [limiter.allow("a", 200.0) for _ in range(6)] == [True] * 5 + [False]


def test_sources_are_limited_separately() -> None:
    limiter = RateLimiter(rate=1, burst=2)
    assert limiter.allow("a", 0) and limiter.allow("a", 0) and not limiter.allow("a", 0)
    assert limiter.allow("b", 0)


def test_refused_requests_do_not_borrow_tokens() -> None:
    limiter = RateLimiter(rate=1, burst=1)
    assert limiter.allow("a", 0)
    for _ in range(100):
        assert not limiter.allow("a", 0.5)
    assert limiter.allow("a", 1.0)  # refusals did not push the next token further away


def test_rate_zero_is_off() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    assert not limiter.enabled
    assert all(limiter.allow("a", 0) for _ in range(1000))
    assert len(limiter) == 0


def test_idle_buckets_are_evicted() -> None:
    limiter = RateLimiter(rate=10, burst=20)  # a bucket is full again after 2 s
    for n in range(1000):
        limiter.allow(f"10.0.{n // 256}.{n % 256}", 0.0)
    assert len(limiter) == 1000
    for n in range(600):  # later traffic from other addresses sweeps the idle ones out
        limiter.allow(f"192.0.2.{n % 50}", 5.0)
    assert len(limiter) <= 50


def test_memory_is_bounded_under_100k_distinct_addresses() -> None:
    limiter = RateLimiter(rate=1, burst=10, max_sources=10_000)
    for n in range(100_000):  # an attacker cycling addresses, all within one second
        limiter.allow(str(ipaddress.IPv6Address((0x20010DB8 << 96) + n)), n / 100_000)
    assert len(limiter) == 10_000
    # The most recent sources are the ones kept (least recently used go first).
    last = str(ipaddress.IPv6Address((0x20010DB8 << 96) + 99_999))
    assert [limiter.allow(last, 1.0) for _ in range(10)].count(False) == 1


def test_bad_rate_settings() -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate=-1, burst=1)
    with pytest.raises(ValueError):
        RateLimiter(rate=1, burst=0)


# --- BruteForceGuard ----------------------------------------------------------------------------


def test_blocks_after_max_failures_in_the_window_and_expires() -> None:
    guard = BruteForceGuard(max_failures=3, window_s=60, block_s=300)
    assert not guard.failure("a", 0) and not guard.failure("a", 10)
    assert not guard.blocked("a", 10)
    assert guard.failure("a", 20)  # the third within 60 s
    assert guard.blocked("a", 20) and guard.blocked("a", 319.9)
    assert guard.blocked_until("a") == 320
    assert not guard.blocked("a", 320)  # the block is over
    assert guard.failures("a", 320) == 0  # and it starts from a clean count
    assert guard.blocks_started == 1
    assert not guard.blocked("b", 20)


def test_failures_outside_the_window_do_not_add_up() -> None:
    guard = BruteForceGuard(max_failures=3, window_s=60, block_s=300)
    guard.failure("a", 0)
    guard.failure("a", 30)
    assert guard.failures("a", 59) == 2
    assert not guard.failure("a", 61)  # the window opened at 0 has closed: a new one
    assert guard.failures("a", 61) == 1
    assert not guard.failure("a", 100)
    assert guard.failure("a", 120)  # 61, 100, 120: three within the window opened at 61


def test_fixed_window_worst_case_is_documented() -> None:
    # Failures timed around a window's end: 2 * (max - 1) pass before a block, as documented.
    guard = BruteForceGuard(max_failures=3, window_s=60, block_s=300)
    guard.failure("a", 0)
    guard.failure("a", 59.9)
    assert not guard.failure("a", 60.0) and not guard.failure("a", 60.1)
    assert guard.failure("a", 60.2)


def test_success_clears_failures() -> None:
    guard = BruteForceGuard(max_failures=3, window_s=60, block_s=300)
    guard.failure("a", 0)
    guard.failure("a", 1)
    guard.success("a")
    assert guard.failures("a", 2) == 0
    assert not guard.failure("a", 2) and not guard.failure("a", 3)


def test_one_failure_max_blocks_at_once() -> None:
    guard = BruteForceGuard(max_failures=1, window_s=60, block_s=10)
    assert guard.failure("a", 0) and guard.blocked("a", 5) and not guard.blocked("a", 10)


def test_guard_memory_is_bounded_under_100k_distinct_addresses() -> None:
    guard = BruteForceGuard(max_failures=2, window_s=60, block_s=300, max_sources=5000)
    for n in range(100_000):
        ip = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
        guard.failure(ip, n * 0.001)
        guard.failure(ip, n * 0.001)  # the second failure blocks it
    failures, blocks = guard.sizes
    assert failures <= 5000 and blocks == 5000
    assert guard.blocked("10.1.134.159", 100.0)  # the newest block is kept (n = 99_999)
    assert not guard.blocked("10.0.0.0", 100.0)  # the oldest went first


def test_expired_windows_and_blocks_drain_away() -> None:
    guard = BruteForceGuard(max_failures=5, window_s=10, block_s=10)
    for n in range(1000):
        guard.failure(f"a{n}", 0.0)
    assert guard.sizes == (1000, 0)
    for n in range(600):  # later failures from new addresses sweep out closed windows
        guard.failure(f"b{n % 10}", 20.0)
    assert guard.sizes[0] <= 10


def test_bad_guard_settings() -> None:
    with pytest.raises(ValueError):
        BruteForceGuard(max_failures=0, window_s=1, block_s=1)


# --- ScannerFilter ------------------------------------------------------------------------------


DEFAULT_SCANNERS = ["friendly-scanner", "sipvicious", "sipcli", "sip-scan", "VaxSIPUserAgent",
                    "iWar", "sipsak-scan", "pplsip"]


@pytest.mark.parametrize(("user_agent", "scanner"), [
    ("friendly-scanner", True),
    ("Friendly-Scanner/1.0", True),
    ("SIPVicious 0.3.4", True),
    ("sipcli/v1.8", True),
    ("VaxSIPUserAgent/3.1", True),
    ("IWAR", True),
    ("pplsip", True),
    ("MicroSIP/3.21.3", False),
    ("Linphone/5.2 (belle-sip/5.2)", False),
    ("baresip v3.10.1 (x86_64/linux)", False),
    ("sipsak 0.9.8", False),  # sipsak itself is a legitimate test tool
    ("", False),
    (None, False),
])
def test_scanner_user_agents(user_agent: str | None, scanner: bool) -> None:
    assert ScannerFilter(DEFAULT_SCANNERS).is_scanner(user_agent) is scanner


def test_scanner_substrings_are_literal_not_regex() -> None:
    scanners = ScannerFilter(["a.b", "x(y"])
    assert scanners.is_scanner("A.B") and scanners.is_scanner("zx(y")
    assert not scanners.is_scanner("axb")


def test_no_scanner_substrings_matches_nothing() -> None:
    assert not ScannerFilter([]).is_scanner("friendly-scanner")


# --- Admission ----------------------------------------------------------------------------------


def request(user_agent: str | None) -> Request:
    ua = f"User-Agent: {user_agent}\r\n" if user_agent is not None else ""
    data = (
        "OPTIONS sip:100@192.0.2.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK-1\r\n"
        "From: <sip:scan@203.0.113.9>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\n"
        f"Call-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n{ua}Content-Length: 0\r\n\r\n"
    ).encode()
    parsed = parse_message(data)
    assert isinstance(parsed, Request)
    return parsed


PEER = Peer(transport="UDP", address=("203.0.113.9", 5060))


def test_admission_acl_then_rate_with_reasons() -> None:
    admission = Admission(acl=AccessList(["allow 203.0.113.0/24", "deny all"]),
                          limiter=RateLimiter(rate=1, burst=2))
    assert admission.refusal("198.51.100.1", 0) == ACL
    assert admission.admit("203.0.113.9", 0) and admission.admit("203.0.113.9", 0)
    assert not admission.admit("203.0.113.9", 0)
    assert admission.last_refusal == RATE_LIMIT
    assert admission.refused == {ACL: 1, RATE_LIMIT: 1, BLOCKED: 0, SCANNER: 0}


def test_acl_refusals_do_not_spend_rate_tokens() -> None:
    admission = Admission(acl=AccessList(["deny 198.51.100.1", "allow all"]),
                          limiter=RateLimiter(rate=1, burst=1))
    for _ in range(10):
        assert admission.refusal("198.51.100.1", 0) == ACL
    assert admission.refused[RATE_LIMIT] == 0


def test_admission_drops_blocked_sources_only_with_the_drop_action() -> None:
    guard = BruteForceGuard(max_failures=1, window_s=60, block_s=60)
    guard.failure("203.0.113.9", 0)
    dropping = Admission(guard=guard, drop_blocked=True)
    assert dropping.refusal("203.0.113.9", 1) == BLOCKED
    assert dropping.admit("203.0.113.10", 1)
    assert dropping.admit("203.0.113.9", 61)  # the block ended
    answering = Admission(guard=guard, drop_blocked=False)  # "403": the auth handler answers
    guard.failure("203.0.113.9", 100)
    assert answering.admit("203.0.113.9", 101)


def test_check_request_drops_scanners() -> None:
    admission = Admission(scanners=ScannerFilter(DEFAULT_SCANNERS))
    verdict = admission.check_request(request("friendly-scanner"), PEER, 0)
    assert verdict.action == "drop" and verdict.reason == SCANNER and verdict.status is None
    assert not verdict.accepted
    assert admission.check_request(request("MicroSIP/3.21"), PEER, 0) is ACCEPT
    assert admission.check_request(request(None), PEER, 0) is ACCEPT
    assert admission.refused[SCANNER] == 1


def test_check_request_without_scanner_filtering() -> None:
    admission = Admission(scanners=None)
    assert admission.check_request(request("friendly-scanner"), PEER, 0).accepted


def test_check_request_catches_a_block_that_started_mid_connection() -> None:
    guard = BruteForceGuard(max_failures=1, window_s=60, block_s=60)
    admission = Admission(guard=guard, drop_blocked=True)
    tcp_peer = Peer(transport="TCP", address=("203.0.113.9", 40000), connection=7)
    assert admission.check_request(request("MicroSIP"), tcp_peer, 0).accepted
    guard.failure("203.0.113.9", 1)
    assert admission.check_request(request("MicroSIP"), tcp_peer, 2).reason == BLOCKED


def test_default_admission_admits_everything() -> None:
    admission = Admission(acl=AccessList([]), limiter=RateLimiter(0, 1),
                          guard=BruteForceGuard(1, 1, 1), scanners=ScannerFilter([]))
    assert all(admission.admit(f"10.0.0.{n}", 0) for n in range(256))
    assert admission.check_request(request("friendly-scanner"), PEER, 0).accepted


def test_admission_says_which_checks_can_refuse_anything() -> None:
    # The transport skips a check that cannot refuse (the default configuration's cost).
    quiet = Admission(acl=AccessList([]), limiter=RateLimiter(0, 1),
                      guard=BruteForceGuard(1, 1, 1), scanners=ScannerFilter([]))
    assert not quiet.checks_datagrams and not quiet.checks_requests
    assert Admission(acl=AccessList(["deny all"])).checks_datagrams
    assert Admission(limiter=RateLimiter(1, 1)).checks_datagrams
    blocking = Admission(guard=BruteForceGuard(1, 1, 1), drop_blocked=True)
    assert blocking.checks_datagrams and blocking.checks_requests
    scanning = Admission(scanners=ScannerFilter(DEFAULT_SCANNERS))
    assert scanning.checks_requests and not scanning.checks_datagrams


def test_scanner_verdicts_are_remembered_and_bounded() -> None:
    scanners = ScannerFilter(DEFAULT_SCANNERS)
    for _ in range(2):
        assert scanners.is_scanner("friendly-scanner")
        assert not scanners.is_scanner("MicroSIP/3.21")
    for n in range(10_000):
        assert not scanners.is_scanner(f"phone {n}")
    assert len(scanners._seen) <= 4096
    assert scanners.is_scanner("sipvicious 0.3")


def test_admit_cost_note() -> None:
    """Not a timed assertion: prints the per-call cost (run with `-s`) for the module note."""
    default = Admission()
    busy = Admission(acl=AccessList(["deny 10.9.0.0/16", "allow 10.0.0.0/8", "deny all"]),
                     limiter=RateLimiter(rate=1e9, burst=1_000_000))
    n = 100_000
    for name, admission in (("default", default), ("acl+rate", busy)):
        seconds = timeit.timeit(partial(admission.admit, "10.1.2.3", 1.0), number=n)
        print(f"Admission.admit {name}: {seconds / n * 1e6:.2f} µs")
        assert admission.admit("10.1.2.3", 1.0)


# --- LogThrottle --------------------------------------------------------------------------------


def test_log_throttle_counts_what_it_suppresses() -> None:
    throttle = LogThrottle(10.0)
    assert throttle.allow("acl", 0.0) == 0
    assert [throttle.allow("acl", 0.1 * i) for i in range(1, 6)] == [None] * 5
    assert throttle.allow("rate_limit", 1.0) == 0  # keys are independent
    assert throttle.allow("acl", 10.0) == 5  # the next line says how many were skipped
    assert throttle.allow("acl", 10.5) is None


def test_log_throttle_burst_and_bounded_keys() -> None:
    throttle = LogThrottle(1.0, burst=3, max_keys=10)
    assert [throttle.allow("k", 0.0) for _ in range(5)] == [0, 0, 0, None, None]
    assert throttle.allow("k", 1.0) == 2
    for n in range(1000):
        throttle.allow(f"key{n}", 2.0)
    assert len(throttle._state) == 10
