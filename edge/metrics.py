"""The edge's Prometheus metrics: one registry per `Metrics` object, and cheap hooks for IO code.

The SIP IO code calls plain methods (`metrics.message_received("udp", "request")`). The
per-message counters are plain ints that a collector of ours reports when the registry is read:
a prometheus_client counter takes a lock on every increment, ~3% of the edge's CPU at 600
calls/s. The other labelled children are bound once and kept in dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

# The classic text exposition format, which every Prometheus version scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# `*_created` series double the exposition and no dashboard of ours reads them. The switch is
# process-wide in prometheus_client; nothing else in sdpbx exposes metrics.
disable_created_metrics()  # type: ignore[no-untyped-call]

TRANSPORTS = ("udp", "tcp")
MESSAGE_KINDS = ("request", "response")
TRANSACTION_KINDS = ("client", "server")


class _MessageCounts(Collector):
    """`sdpbx_sip_messages_{received,sent}_total` from the plain ints `Metrics` keeps (the
    usual series are reported at 0 before the first message)."""

    def __init__(self, received: dict[tuple[str, str], int],
                 sent: dict[tuple[str, str], int]) -> None:
        self._received = received
        self._sent = sent

    def describe(self) -> Iterable[Metric]:
        return [self._family("received", "SIP messages received and parsed.", {}),
                self._family("sent", "SIP messages sent.", {})]

    def collect(self) -> Iterable[Metric]:
        return [self._family("received", "SIP messages received and parsed.", self._received),
                self._family("sent", "SIP messages sent.", self._sent)]

    @staticmethod
    def _family(which: str, documentation: str,
                counts: dict[tuple[str, str], int]) -> CounterMetricFamily:
        family = CounterMetricFamily(f"sdpbx_sip_messages_{which}", documentation,
                                     labels=["transport", "kind"])
        totals = {(t, k): 0 for t in TRANSPORTS for k in MESSAGE_KINDS}
        for (transport, kind), count in list(counts.items()):  # "UDP" and "udp" are one series
            key = (transport.lower(), kind)
            totals[key] = totals.get(key, 0) + count
        for (transport, kind), total in totals.items():
            family.add_metric([transport, kind], total)
        return family


class Metrics:
    """The edge's metrics in a private registry (tests can create as many as they like)."""

    def __init__(self, version: str = "unknown") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._scrape_hooks: list[Callable[[Metrics], None]] = []
        registry = self.registry
        # (transport as given, kind) -> messages so far, reported by `_MessageCounts`.
        self._received_counts: dict[tuple[str, str], int] = {}
        self._sent_counts: dict[tuple[str, str], int] = {}
        registry.register(_MessageCounts(self._received_counts, self._sent_counts))
        self._parse_errors = Counter(
            "sdpbx_sip_parse_errors", "Datagrams or stream messages that did not parse as SIP.",
            ["transport"], registry=registry,
        )
        self._rejected = Counter(
            "sdpbx_sip_rejected", "Requests refused with a final response, by status code.",
            ["status"], registry=registry,
        )
        self._dropped = Counter(
            "sdpbx_sip_dropped", "SIP messages dropped without a response, by reason.",
            ["reason"], registry=registry,
        )
        self._transactions = Gauge(
            "sdpbx_sip_transactions", "SIP transactions in progress.",
            ["kind"], registry=registry,
        )
        self._tcp_connections = Gauge(
            "sdpbx_tcp_connections", "Open SIP TCP connections.", registry=registry,
        )
        self._webhooks = Histogram(
            "sdpbx_webhook_seconds", "Webhook deliveries, by event kind and outcome.",
            ["event", "outcome"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self._webhooks_dropped = Counter(
            "sdpbx_webhook_dropped", "Webhook events never delivered, by event kind and reason.",
            ["event", "reason"], registry=registry,
        )
        self._router = Histogram(
            "sdpbx_router_seconds", "Routing webhook requests, by outcome (the reply's "
            "action, or timeout, transport, http_status, invalid).",
            ["outcome"], registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self._router_requests = Counter(
            "sdpbx_router_requests", "Routing webhook requests, by outcome.",
            ["outcome"], registry=registry,
        )
        self._trunk_limited = Counter(
            "sdpbx_trunk_limited", "Calls refused by a trunk limit (max_calls, max_cps).",
            ["trunk", "limit"], registry=registry,
        )
        self._spool_pending = Gauge(
            "sdpbx_spool_pending", "CDRs and recordings spooled on disk, not yet uploaded.",
            registry=registry,
        )
        self._spool_oldest = Gauge(
            "sdpbx_spool_oldest_seconds", "Age of the oldest spooled blob (0 when none).",
            registry=registry,
        )
        self._calls_active = Gauge(
            "sdpbx_calls_active", "Calls in progress on this edge (ringing or answered).",
            registry=registry,
        )
        self._calls_started = Gauge(
            "sdpbx_calls_started", "Calls accepted for routing since start (monotonic).",
            registry=registry,
        )
        self._calls_ended = Counter(
            "sdpbx_calls_ended", "Calls ended, by hangup reason and whether answered.",
            ["reason", "answered"], registry=registry,
        )
        self._rtp_relayed = Gauge(
            "sdpbx_rtp_packets_relayed", "RTP/RTCP datagrams relayed since start (monotonic).",
            registry=registry,
        )
        self._rtp_dropped = Gauge(
            "sdpbx_rtp_packets_dropped", "RTP/RTCP datagrams refused or lost since start.",
            registry=registry,
        )
        self._rtp_sessions = Gauge(
            "sdpbx_rtp_sessions", "Relayed media sessions open now.", registry=registry,
        )
        build_info = Gauge(
            "sdpbx_build_info", "Always 1; the labels name the running build.",
            ["version"], registry=registry,
        )
        build_info.labels(version).set(1)

        # Bound children for the label sets known up front, under the transport's name in
        # either case ("UDP" as in a Via, "udp" as a label); others are bound on first use.
        spellings = [(t, t) for t in TRANSPORTS] + [(t.upper(), t) for t in TRANSPORTS]
        self._parse_errors_by: dict[str, Counter] = {
            name: self._parse_errors.labels(t) for name, t in spellings
        }
        self._rejected_by: dict[int, Counter] = {}
        self._router_by: dict[str, tuple[Histogram, Counter]] = {}
        self._dropped_by: dict[str, Counter] = {}
        self._transactions_by: dict[str, Gauge] = {
            k: self._transactions.labels(k) for k in TRANSACTION_KINDS
        }

    # --- SIP messages ---------------------------------------------------------------------

    def message_received(self, transport: str, kind: str) -> None:
        """A SIP message parsed; `transport` is "udp"/"UDP", `kind` "request" or "response".
        Call from the event loop's thread only (a plain int, no lock)."""
        counts = self._received_counts
        key = (transport, kind)
        counts[key] = counts.get(key, 0) + 1

    def message_sent(self, transport: str, kind: str) -> None:
        counts = self._sent_counts
        key = (transport, kind)
        counts[key] = counts.get(key, 0) + 1

    def parse_error(self, transport: str) -> None:
        child = self._parse_errors_by.get(transport)
        if child is None:
            child = self._parse_errors.labels(transport.lower())
            self._parse_errors_by[transport] = child
        child.inc()

    def rejected(self, status: int) -> None:
        """We refused a request with final response `status` (400, 403, 423, 503, ...)."""
        child = self._rejected_by.get(status)
        if child is None:
            child = self._rejected_by[status] = self._rejected.labels(str(status))
        child.inc()

    def dropped(self, reason: str) -> None:
        """A message was discarded unanswered. Keep `reason` to a small fixed vocabulary
        ("acl", "too_large", "stray_response", ...): each value is a time series."""
        child = self._dropped_by.get(reason)
        if child is None:
            child = self._dropped_by[reason] = self._dropped.labels(reason)
        child.inc()

    # --- state gauges -----------------------------------------------------------------------

    def transaction_started(self, kind: str) -> None:
        """A transaction began; `kind` is "client" or "server"."""
        self._transaction_gauge(kind).inc()

    def transaction_ended(self, kind: str) -> None:
        self._transaction_gauge(kind).dec()

    def set_transactions(self, kind: str, count: int) -> None:
        """Set the in-progress count outright (for code that counts its own table)."""
        self._transaction_gauge(kind).set(count)

    def _transaction_gauge(self, kind: str) -> Gauge:
        child = self._transactions_by.get(kind)
        if child is None:
            child = self._transactions_by[kind] = self._transactions.labels(kind)
        return child

    def tcp_connection_opened(self) -> None:
        self._tcp_connections.inc()

    def tcp_connection_closed(self) -> None:
        self._tcp_connections.dec()

    def tcp_connections_changed(self, count: int) -> None:
        """Set the number of open SIP TCP connections outright."""
        self._tcp_connections.set(count)

    def set_spool(self, pending: int, oldest_age_s: float) -> None:
        self._spool_pending.set(pending)
        self._spool_oldest.set(oldest_age_s)

    # --- webhooks ---------------------------------------------------------------------------

    def webhook_delivered(self, event: str, status: int | None, latency_s: float) -> None:
        """One delivery finished; outcome is the status class ("2xx"...) or "error"."""
        outcome = f"{status // 100}xx" if status is not None else "error"
        self._webhooks.labels(event, outcome).observe(latency_s)

    def webhook_dropped(self, event: str, reason: str) -> None:
        self._webhooks_dropped.labels(event, reason).inc()

    # --- routing ------------------------------------------------------------------------

    def router_request(self, outcome: str, latency_s: float) -> None:
        """One routing webhook request finished: `outcome` is the reply's action
        ("forward", "not_handled"...) or why it failed ("timeout", "transport",
        "http_status", "invalid"): a small fixed vocabulary, each value a time series."""
        children = self._router_by.get(outcome)
        if children is None:
            children = self._router_by[outcome] = (
                self._router.labels(outcome), self._router_requests.labels(outcome)
            )
        children[0].observe(latency_s)
        children[1].inc()

    def trunk_limited(self, trunk: str, limit: str) -> None:
        """A call was refused because `trunk` reached `limit` ("max_calls" or "max_cps")."""
        self._trunk_limited.labels(trunk, limit).inc()

    # --- calls and media ------------------------------------------------------------------

    def set_calls(self, active: int, started: int) -> None:
        self._calls_active.set(active)
        self._calls_started.set(started)

    def call_ended(self, reason: str, *, answered: bool) -> None:
        self._calls_ended.labels(reason, "yes" if answered else "no").inc()

    def set_rtp(self, relayed: int, dropped: int, sessions: int) -> None:
        self._rtp_relayed.set(relayed)
        self._rtp_dropped.set(dropped)
        self._rtp_sessions.set(sessions)

    # --- exposition -----------------------------------------------------------------------

    def on_scrape(self, hook: Callable[[Metrics], None]) -> None:
        """Run `hook` before each render: gauges that are cheaper to read than to track."""
        self._scrape_hooks.append(hook)

    def render(self) -> tuple[bytes, str]:
        """The registry in Prometheus text format: `(body, content_type)`."""
        for hook in self._scrape_hooks:
            hook(self)
        return generate_latest(self.registry), CONTENT_TYPE
