"""The edge's defences against scanners and password guessing, as sans-IO policies.

- `AccessList`: `[proxy] acl_rules`, checked on the real source address of every datagram.
- `RateLimiter`: a token bucket per source address (`rate_limit_per_source`, `rate_limit_burst`).
- `BruteForceGuard`: after N failed authentications from an address in a window, block it.
- `ScannerFilter`: known scanner User-Agents (`scanner_user_agents`), dropped silently.
- `Admission` puts the per-datagram checks (ACL, rate, blocked) in front of the parser, and the
  per-request check (scanner) behind it. Every refusal comes with a reason from a fixed
  vocabulary (`REASONS`), for `Metrics.dropped(reason)` and for logs throttled by `LogThrottle`.

Time is passed in (`now`, the loop's monotonic clock), nothing here sleeps, reads a clock or
touches a socket. Every table keyed by address is bounded: an attacker cycling through source
addresses (IPv6 gives them plenty) costs at most `max_sources` entries per table, never memory
without bound.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from edge.sip.events import Peer
    from edge.sip.message import Request

# Refusal reasons: a small fixed vocabulary, each one a metrics label value.
ACL = "acl"
RATE_LIMIT = "rate_limit"
BLOCKED = "blocked"
SCANNER = "scanner"
REASONS = (ACL, RATE_LIMIT, BLOCKED, SCANNER)

DEFAULT_MAX_SOURCES = 100_000
# A token refilled over exactly 1/rate seconds can come out as 0.9999999999 in floating point.
_ONE_TOKEN = 1.0 - 1e-9

_ACL_RULE = re.compile(r"^\s*(allow|deny)\s+(\S+)\s*$", re.IGNORECASE)


# --- the IP access list ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AclRule:
    """One `allow|deny all|IP|CIDR` rule; `network` None means `all`."""

    allow: bool
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None
    text: str

    @classmethod
    def parse(cls, text: str) -> AclRule:
        """Parse one rule; `ValueError` names the rule and what is wrong with it."""
        found = _ACL_RULE.match(text)
        if found is None:
            raise ValueError(f"ACL rule {text!r}: expected 'allow|deny all|IP|CIDR'")
        action, target = found.group(1).lower(), found.group(2)
        if target.lower() == "all":
            return cls(allow=action == "allow", network=None, text=text)
        try:
            # strict=False: "10.1.2.3/8" means 10.0.0.0/8, as RustPBX reads it.
            network = ipaddress.ip_network(target, strict=False)
        except ValueError:
            raise ValueError(f"ACL rule {text!r}: {target!r} is not an IP or CIDR") from None
        return cls(allow=action == "allow", network=network, text=text)


def _address_value(ip: str) -> tuple[int, int] | None:
    """`(IP version, address as an int)` of an IP literal, or None if it is not one."""
    if ip.count(".") == 3 and ":" not in ip:
        # The common case, without ipaddress (3x faster): it matters under an address-cycling
        # flood, where every datagram misses the decision cache.
        digits = ip.replace(".", "")
        if not (digits.isascii() and digits.isdigit()):
            return None
        try:
            return 4, int.from_bytes(bytes(map(int, ip.split("."))), "big")
        except ValueError:  # an empty part, or one above 255
            return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d: match them as IPv4, or an
        # "allow 10.0.0.0/8" rule would not apply to them.
        mapped = address.ipv4_mapped
        if mapped is not None:
            return 4, int(mapped)
    return address.version, int(address)


class AccessList:
    """`acl_rules` (RustPBX semantics, `src/proxy/acl.rs`): the first matching rule decides.

    No rules at all allows everyone (the embedded default); once there are rules, an address
    no rule matches is denied (end a list with `allow all` to allow the rest). IPv4 and IPv6;
    an IPv4-mapped IPv6 source matches IPv4 rules. Unlike RustPBX, which reads the address
    from the top Via (the sender writes it), we check the address the packet came from.

    Decisions are cached per address in a dict that is emptied when it reaches `cache_size`
    (cheaper than evicting one by one, and a refill costs one rule scan per address), so the
    steady-state cost is one dict look-up.
    """

    __slots__ = ("_cache", "_cache_size", "_rules", "rules")

    def __init__(self, rules: Iterable[str], *, cache_size: int = 65_536) -> None:
        self.rules: tuple[AclRule, ...] = tuple(AclRule.parse(rule) for rule in rules)
        # Precomputed (allow, version, network int, mask int); version 0 = "all".
        self._rules: tuple[tuple[bool, int, int, int], ...] = tuple(
            (rule.allow, 0, 0, 0) if rule.network is None
            else (rule.allow, rule.network.version, int(rule.network.network_address),
                  int(rule.network.netmask))
            for rule in self.rules
        )
        self._cache: dict[str, bool] = {}
        self._cache_size = max(1, cache_size)

    @property
    def empty(self) -> bool:
        """No rules: everyone is allowed (callers may skip the check)."""
        return not self._rules

    def allowed(self, ip: str) -> bool:
        """May a packet from `ip` (a literal, as the socket reports it) come in?"""
        cached = self._cache.get(ip)
        if cached is not None:
            return cached
        decision = self._decide(ip)
        cache = self._cache
        if len(cache) >= self._cache_size:
            cache.clear()
        cache[ip] = decision
        return decision

    def _decide(self, ip: str) -> bool:
        if not self._rules:
            return True
        parsed = _address_value(ip)
        if parsed is None:
            return False  # not an IP literal: nothing legitimate looks like that
        version, value = parsed
        for allow, rule_version, network, mask in self._rules:
            if rule_version == 0 or (rule_version == version and value & mask == network):
                return allow
        return False


# --- per-source request rate ----------------------------------------------------------------


class RateLimiter:
    """A token bucket per source address: `rate` requests per second, bursts of `burst`.

    A bucket left alone for `burst / rate` seconds is full again, which is the same as having
    no bucket: such idle buckets are evicted as they are met at the old end of the table
    (kept in last-use order), and when the table holds `max_sources` buckets the least
    recently used goes. So memory stays bounded by the number of addresses active in the last
    refill period, capped at `max_sources`. (An attacker with more addresses than that can
    get a fresh burst per address; no per-source limit can stop that, the ACL can.)

    `rate` 0 turns the limiter off (every request allowed).
    """

    __slots__ = ("_buckets", "_burst", "_idle_s", "_max_sources", "_rate")

    def __init__(self, rate: float, burst: int, *,
                 max_sources: int = DEFAULT_MAX_SOURCES) -> None:
        if rate < 0 or burst < 1:
            raise ValueError(f"rate limit needs rate >= 0 and burst >= 1 (got {rate}, {burst})")
        self._rate = float(rate)
        self._burst = float(burst)
        self._idle_s = self._burst / self._rate if rate else 0.0
        self._max_sources = max(1, max_sources)
        # ip -> [tokens left, time of last update], least recently used first. An OrderedDict:
        # a plain dict's next(iter(d)) slows to O(n) once many entries left its front.
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._rate > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, ip: str, now: float) -> bool:
        """Take one token from `ip`'s bucket; False when it is empty (refuse the request)."""
        rate = self._rate
        if not rate:
            return True
        buckets = self._buckets
        state = buckets.get(ip)
        if state is None:
            state = buckets[ip] = [self._burst, now]
            self._evict(now)
        else:
            elapsed = now - state[1]
            if elapsed > 0:
                state[0] = min(self._burst, state[0] + elapsed * rate)
            state[1] = now
            buckets.move_to_end(ip)
            if len(buckets) > 1:
                self._evict(now)
        if state[0] >= _ONE_TOKEN:
            state[0] -= 1.0
            return True
        return False

    def _evict(self, now: float) -> None:
        buckets = self._buckets
        # At most two idle buckets per call: the cost stays flat, and the table still drains
        # faster than one new address per call can fill it.
        for _ in range(2):
            oldest = next(iter(buckets.values()))
            if now - oldest[1] < self._idle_s:
                break
            buckets.popitem(last=False)
        while len(buckets) > self._max_sources:
            buckets.popitem(last=False)


# --- brute-force protection -----------------------------------------------------------------


class BruteForceGuard:
    """Blocks a source address after `max_failures` failed authentications within `window_s`.

    Counting uses a fixed window that opens at an address's first failure: failures are
    counted until `window_s` has passed since that first one, then the count starts again at
    the next failure. (An exact sliding window would keep every failure's time, up to
    `max_failures` floats per address; this keeps two numbers. The price: a guesser who
    times failures around a window's end can make up to `2 * (max_failures - 1)` attempts in
    quick succession, while the average rate stays under `max_failures` per `window_s`.)

    The failure that reaches `max_failures` blocks the address for `block_s` seconds, and the
    count is cleared; a block is not extended by further attempts (they are refused before
    they can fail). `success` clears an address's failures.

    Both tables hold at most `max_sources` addresses, oldest first out: for the blocks,
    oldest means the block that expires first (every block lasts `block_s`).
    """

    __slots__ = ("_blocks", "_failures", "_max_failures", "_max_sources", "_window_s",
                 "block_s", "blocks_started")

    def __init__(self, max_failures: int, window_s: float, block_s: float, *,
                 max_sources: int = DEFAULT_MAX_SOURCES) -> None:
        if max_failures < 1 or window_s <= 0 or block_s <= 0:
            raise ValueError("brute-force guard needs max_failures >= 1, window_s > 0, "
                             f"block_s > 0 (got {max_failures}, {window_s}, {block_s})")
        self._max_failures = max_failures
        self._window_s = float(window_s)
        self.block_s = float(block_s)
        self._max_sources = max(1, max_sources)
        # ip -> (window start, failures in it), oldest window first.
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()
        # ip -> blocked until, first to expire first.
        self._blocks: OrderedDict[str, float] = OrderedDict()
        self.blocks_started = 0  # for metrics: blocks imposed since start

    def blocked(self, ip: str, now: float) -> bool:
        """Is `ip` blocked at `now`? (One dict look-up when it is not.)"""
        until = self._blocks.get(ip)
        if until is None:
            return False
        if now < until:
            return True
        del self._blocks[ip]
        return False

    def blocked_until(self, ip: str) -> float | None:
        """When `ip`'s block ends (for a Retry-After), or None if it has none."""
        return self._blocks.get(ip)

    def failure(self, ip: str, now: float) -> bool:
        """Count one failed authentication from `ip`; True if this one blocks it."""
        failures = self._failures
        state = failures.get(ip)
        if state is None or now - state[0] >= self._window_s:
            if state is not None:
                failures.move_to_end(ip)  # a new window: to the young end
            start, count = now, 1
        else:
            start, count = state[0], state[1] + 1
        blocking = count >= self._max_failures
        if blocking:
            failures.pop(ip, None)
            self._block(ip, now)
        else:
            failures[ip] = (start, count)
        if failures:
            self._trim(now)
        return blocking

    def success(self, ip: str) -> None:
        """`ip` authenticated: forget its failures."""
        self._failures.pop(ip, None)

    def failures(self, ip: str, now: float) -> int:
        """Failures counted for `ip` in its current window."""
        state = self._failures.get(ip)
        if state is None or now - state[0] >= self._window_s:
            return 0
        return state[1]

    def _block(self, ip: str, now: float) -> None:
        blocks = self._blocks
        blocks.pop(ip, None)
        blocks[ip] = now + self.block_s
        self.blocks_started += 1
        for _ in range(2):  # expired blocks at the old end
            if next(iter(blocks.values())) > now:
                break
            blocks.popitem(last=False)
        while len(blocks) > self._max_sources:
            blocks.popitem(last=False)

    def _trim(self, now: float) -> None:
        failures = self._failures
        for _ in range(2):  # windows that have closed, at the old end
            if not failures or now - next(iter(failures.values()))[0] < self._window_s:
                break
            failures.popitem(last=False)
        while len(failures) > self._max_sources:
            failures.popitem(last=False)

    @property
    def sizes(self) -> tuple[int, int]:
        """(addresses with failures, addresses blocked): for tests and gauges."""
        return len(self._failures), len(self._blocks)


# --- scanners -------------------------------------------------------------------------------


class ScannerFilter:
    """Known SIP scanners by User-Agent substring, case-insensitive (`friendly-scanner`,
    `sipvicious`, ...). One precompiled alternation: a single regex search per request."""

    __slots__ = ("_pattern", "_seen", "substrings")

    def __init__(self, substrings: Iterable[str]) -> None:
        self.substrings = tuple(s for s in substrings if s)
        self._pattern = (
            re.compile("|".join(re.escape(s) for s in self.substrings), re.IGNORECASE)
            if self.substrings else None
        )
        # User-Agent -> verdict: a phone sends the same one every time, and a case-insensitive
        # search costs more than a lookup. Bounded (cleared when full): the text is the peer's.
        self._seen: dict[str, bool] = {}

    def is_scanner(self, user_agent: str | None) -> bool:
        if not user_agent or self._pattern is None:
            return False
        verdict = self._seen.get(user_agent)
        if verdict is None:
            verdict = self._pattern.search(user_agent) is not None
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[user_agent] = verdict
        return verdict


# --- admission ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with a parsed request: accept it, drop it unanswered, or reject it with
    `status`. `reason` is one of `REASONS` ("" when accepted)."""

    action: Literal["accept", "drop", "reject"]
    reason: str = ""
    status: int | None = None

    @property
    def accepted(self) -> bool:
        return self.action == "accept"


ACCEPT = Verdict("accept")
DROP_SCANNER = Verdict("drop", SCANNER)
DROP_BLOCKED = Verdict("drop", BLOCKED)


class Admission:
    """The transport's gate: `admit(ip, now)` before parsing each datagram (and on each TCP
    connection), `check_request(request, peer, now)` on each parsed request.

    Per datagram: the ACL, then (when `drop_blocked`, i.e. `auth_block_action = "drop"`) the
    brute-force blocks, then the rate limit, so that a refused or blocked source does not use
    up rate tokens. Per request: the scanner User-Agents (when `drop_scanners`). With the
    "403" block action the authenticating handler answers blocked sources itself.

    `refused` counts refusals by reason; `last_refusal` is the reason of the latest one.
    """

    __slots__ = ("_acl", "_guard", "_limiter", "_scanners", "last_refusal", "refused")

    def __init__(
        self,
        *,
        acl: AccessList | None = None,
        limiter: RateLimiter | None = None,
        guard: BruteForceGuard | None = None,
        drop_blocked: bool = False,
        scanners: ScannerFilter | None = None,
    ) -> None:
        # Policies that cannot refuse anything are left out, so the common configuration
        # (no ACL, no rate limit) costs close to nothing per datagram.
        self._acl = acl if acl is not None and not acl.empty else None
        self._limiter = limiter if limiter is not None and limiter.enabled else None
        self._guard = guard if drop_blocked else None
        self._scanners = scanners if scanners is not None and scanners.substrings else None
        self.refused: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.last_refusal = ""

    @property
    def checks_datagrams(self) -> bool:
        """False when `admit` lets everything in (no ACL, no drop of blocked sources, no rate
        limit): the transport may then skip it."""
        return self._acl is not None or self._guard is not None or self._limiter is not None

    @property
    def checks_requests(self) -> bool:
        """False when `check_request` accepts every request (no scanner list, no drop of
        blocked sources): the transport may then skip it."""
        return self._scanners is not None or self._guard is not None

    def refusal(self, ip: str, now: float) -> str | None:
        """The reason to drop a datagram from `ip` unparsed, or None to let it in."""
        acl = self._acl
        if acl is not None and not acl.allowed(ip):
            return self._refuse(ACL)
        guard = self._guard
        if guard is not None and guard.blocked(ip, now):
            return self._refuse(BLOCKED)
        limiter = self._limiter
        if limiter is not None and not limiter.allow(ip, now):
            return self._refuse(RATE_LIMIT)
        return None

    def admit(self, ip: str, now: float) -> bool:
        """True to parse the datagram; on False, `last_refusal` says why."""
        return self.refusal(ip, now) is None

    def check_request(self, request: Request, peer: Peer, now: float) -> Verdict:
        """Checks that need the parsed request (its User-Agent)."""
        scanners = self._scanners
        if scanners is not None and scanners.is_scanner(request.headers.get("User-Agent")):
            self._refuse(SCANNER)
            return DROP_SCANNER
        guard = self._guard
        if guard is not None and guard.blocked(peer.address[0], now):
            # Over TCP `admit` runs once per connection; a block may start mid-connection.
            self._refuse(BLOCKED)
            return DROP_BLOCKED
        return ACCEPT

    def _refuse(self, reason: str) -> str:
        self.refused[reason] += 1
        self.last_refusal = reason
        return reason


# --- log throttling -------------------------------------------------------------------------


class LogThrottle:
    """At most `burst` log lines per key every `interval_s`; the rest are counted.

    Under attack a refusal per packet must not become a log line per packet:

        suppressed = throttle.allow("acl", now)
        if suppressed is not None:
            log.warning("dropped datagram from %s (acl; %d similar not logged)", ip, suppressed)

    `allow` returns None to stay quiet, else how many lines were suppressed for that key since
    the last one logged. Keys should be a small vocabulary (reasons, not addresses); at most
    `max_keys` are remembered.
    """

    __slots__ = ("_burst", "_interval_s", "_max_keys", "_state")

    def __init__(self, interval_s: float = 10.0, *, burst: int = 1, max_keys: int = 1024) -> None:
        if interval_s <= 0 or burst < 1:
            raise ValueError("log throttle needs interval_s > 0 and burst >= 1")
        self._interval_s = interval_s
        self._burst = burst
        self._max_keys = max(1, max_keys)
        # key -> [window start, lines logged in the window, lines suppressed since last log]
        self._state: OrderedDict[str, list[float]] = OrderedDict()

    def allow(self, key: str, now: float) -> int | None:
        state = self._state.get(key)
        if state is None:
            if len(self._state) >= self._max_keys:
                self._state.popitem(last=False)
            self._state[key] = [now, 1.0, 0.0]
            return 0
        if now - state[0] >= self._interval_s:
            state[0], state[1] = now, 0.0
        if state[1] < self._burst:
            state[1] += 1.0
            suppressed = int(state[2])
            state[2] = 0.0
            return suppressed
        state[2] += 1.0
        return None

