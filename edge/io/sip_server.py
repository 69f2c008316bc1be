"""The asyncio side of SIP: UDP and TCP sockets feeding one sans-IO `SipEndpoint`.

Everything here is plumbing: bytes in -> `endpoint.receive_*`, then `flush()` sends what the
endpoint produced and re-arms the one timer the endpoint asks for (the aioquic adapter shape).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from edge.io.tokens import TokenSource
from edge.pbx.security import ACCEPT, LogThrottle
from edge.sip.endpoint import EndpointConfig, SipEndpoint
from edge.sip.events import CloseConnection, Event, Peer, Transmit
from edge.sip.message import Request, Response

if TYPE_CHECKING:
    from edge.config import ProxyConfig
    from edge.metrics import Metrics
    from edge.pbx.security import Admission

TOKENS = TokenSource()  # one per process: tags, branches and Call-IDs
_TIMER_GRID_S = 0.01  # see SipServer._arm_timer

log = logging.getLogger("sdpbx.sip.io")


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: SipServer) -> None:
        self._server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDPTransport does not subclass asyncio.DatagramTransport: no isinstance.
        self._server._udp = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        server = self._server
        now = server._loop.time()
        admission = server._datagram_admission
        if admission is not None and not admission.admit(addr[0], now):
            server.refused(addr[0], admission.last_refusal)
            return
        try:
            server.endpoint.receive_datagram(data, (addr[0], addr[1]), now)
        except Exception:
            # A bug must cost one message, never the listener: uvloop closes a UDP transport
            # whose protocol raises.
            log.exception("internal error on a datagram from %s:%s", addr[0], addr[1])
        server.flush()

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable and friends: the transactions' timers deal with the loss.
        log.debug("udp error: %s", exc)


class _TcpProtocol(asyncio.Protocol):
    def __init__(self, server: SipServer, connection_id: int) -> None:
        self._server = server
        self._id = connection_id
        self._address: tuple[str, int] = ("", 0)
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)
        peer = stream.get_extra_info("peername")
        self._address = (peer[0], peer[1])
        server = self._server
        admission = server.admission
        if admission is not None and not admission.admit(peer[0], server._loop.time()):
            server.refused(peer[0], admission.last_refusal)
            self._refused = True
            stream.abort()
            return
        self._server._connections[self._id] = stream
        self._server.endpoint.connection_made(self._id, self._address)
        self._server.metrics.tcp_connections_changed(len(self._server._connections))

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        server = self._server
        try:
            server.endpoint.receive_stream_data(self._id, data, server._loop.time())
        except Exception:
            log.exception("internal error on tcp data from %s:%s", *self._address)
        server.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        server = self._server
        server._connections.pop(self._id, None)
        server.endpoint.connection_lost(self._id)
        server.metrics.tcp_connections_changed(len(server._connections))


class SipServer:
    """Binds the SIP UDP and TCP listeners of `[proxy]` and drives the endpoint."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        metrics: Metrics,
        on_event: Callable[[Event], None] | None = None,
        admission: Admission | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.metrics = metrics
        self.admission = admission
        # The admission as datagrams see it: None when it would let every datagram in.
        self._datagram_admission = (
            admission if admission is not None and admission.checks_datagrams else None
        )
        # Under attack a refusal per packet must not become a log line per packet.
        self._refusal_log = LogThrottle(10.0, burst=3)
        self.on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[int, asyncio.Transport] = {}
        self._connection_ids = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._config: ProxyConfig | None = None
        self._flushing = False
        self.udp_address: tuple[str, int] = ("", 0)
        self.tcp_address: tuple[str, int] = ("", 0)

    @classmethod
    def create(
        cls,
        config: ProxyConfig,
        metrics: Metrics,
        *,
        methods: tuple[str, ...] = (),
        supported: tuple[str, ...] = (),
        admission: Admission | None = None,
    ) -> SipServer:
        """Build the server without binding: the TU is wired (`on_event`) before `listen()`,
        so no request can arrive with nobody to answer it. `methods` are those the TU handles
        (the rest get 501), `supported` the option tags it implements."""
        endpoint = SipEndpoint(
            EndpointConfig(
                methods=methods,
                supported=supported,
                user_agent=config.useragent,
                t1=config.t1_ms / 1000,
                t2=config.t2_ms / 1000,
                t4=config.t4_ms / 1000,
                max_message_size=config.max_message_size,
            ),
            token=TOKENS.token,
            observer=metrics,
        )
        server = cls(endpoint, metrics, None, admission)
        server._config = config
        if admission is not None and admission.checks_requests:
            endpoint.set_request_filter(server._check_request)
        metrics.on_scrape(server._report_transactions)
        return server

    async def listen(self) -> None:
        """Bind the UDP and TCP listeners of `[proxy]`."""
        config = self._config
        assert config is not None
        loop = self._loop
        udp, _ = await loop.create_datagram_endpoint(
            lambda: _UdpProtocol(self), local_addr=(config.addr, config.udp_port)
        )
        self.udp_address = udp.get_extra_info("sockname")[:2]
        self._tcp = await loop.create_server(
            lambda: _TcpProtocol(self, next(self._connection_ids)),
            host=config.addr,
            port=config.tcp_port,
            reuse_address=True,
        )
        self.tcp_address = self._tcp.sockets[0].getsockname()[:2]
        self.endpoint.set_local_addresses(udp=self.udp_address, tcp=self.tcp_address)

    @classmethod
    async def start(
        cls,
        config: ProxyConfig,
        metrics: Metrics,
        on_event: Callable[[Event], None] | None = None,
        *,
        methods: tuple[str, ...] = (),
        admission: Admission | None = None,
    ) -> SipServer:
        """`create` + `listen` in one step, for callers with their TU at hand."""
        server = cls.create(config, metrics, methods=methods, admission=admission)
        server.on_event = on_event
        await server.listen()
        return server

    # --- admission ---------------------------------------------------------------------------

    def refused(self, ip: str, reason: str | None) -> None:
        """Count (and, throttled, log) a datagram or connection refused before parsing."""
        label = reason or "refused"
        self.metrics.dropped(label)
        suppressed = self._refusal_log.allow(f"{label}:{ip}", self._loop.time())
        if suppressed is not None:
            log.info("refused %s from %s (%d more not logged)", label, ip, suppressed,
                     extra={"peer": ip, "reason": label})

    def _check_request(self, request: Request, peer: Peer, now: float) -> str | None:
        assert self.admission is not None
        verdict = self.admission.check_request(request, peer, now)
        if verdict is ACCEPT or verdict.accepted:
            return None
        suppressed = self._refusal_log.allow(f"{verdict.reason}:{peer.address[0]}", now)
        if suppressed is not None:
            log.info("dropped %s from %s: %s (%d more not logged)", request.method,
                     peer.address[0], verdict.reason, suppressed,
                     extra={"peer": peer.address[0], "reason": verdict.reason})
        return verdict.reason

    # --- what the transaction user may do (edge.pbx.core.SipTransport) -------------------

    def now(self) -> float:
        return self._loop.time()

    def respond(self, transaction_id: int, response: Response) -> None:
        self.endpoint.respond(transaction_id, response, self._loop.time())
        self.flush()

    def drop(self, transaction_id: int) -> None:
        """Give up on a request without answering (a spam verdict, a blocked source)."""
        self.endpoint.abandon(transaction_id)
        self.flush()

    def send_request(self, request: Request, peer: Peer) -> int:
        transaction_id = self.endpoint.send_request(request, peer, self._loop.time())
        self.flush()
        return transaction_id

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Send outside any transaction: the ACK for a 2xx (RFC 3261 §13.2.2.4)."""
        self.endpoint.send_stateless(message, peer)
        self.flush()

    def _report_transactions(self, metrics: Metrics) -> None:
        for kind, count in self.endpoint.transaction_counts().items():
            metrics.set_transactions(kind, count)

    def flush(self) -> None:
        """Send what the endpoint produced, hand events on, and re-arm the timer.

        The TU may answer inside `on_event` (a handler that needs no I/O runs to completion
        there), which calls `respond()` and so `flush()` again: that nested call returns at
        once and this loop sends what the answer produced.
        """
        if self._flushing:
            return
        self._flushing = True
        endpoint = self.endpoint
        try:
            while True:
                outputs = endpoint.outputs()
                for output in outputs:
                    if isinstance(output, Transmit):
                        self._transmit(output)
                    elif isinstance(output, CloseConnection):
                        transport = self._connections.get(output.connection)
                        if transport is not None:
                            log.info("closing tcp connection: %s", output.reason)
                            transport.close()
                event = endpoint.next_event()
                if event is None:
                    if not outputs:
                        break
                    continue
                if self.on_event is not None:
                    self.on_event(event)
        finally:
            self._flushing = False
        self._arm_timer()

    def _transmit(self, output: Transmit) -> None:
        peer = output.peer
        if peer.transport == "UDP":
            if self._udp is not None:
                self._udp.sendto(output.data, peer.address)
            return
        transport = self._connections.get(peer.connection) if peer.connection else None
        if transport is None or transport.is_closing():
            # The edge opens no outbound TCP connection yet; a message for a closed one is lost
            # and the transaction's timers report it.
            log.info("no tcp connection to %s:%s, message dropped", *peer.address)
            return
        transport.write(output.data)

    def _arm_timer(self) -> None:
        when = self.endpoint.get_timer()
        if when is not None:
            # Fire on a 10 ms grid: under load thousands of transactions end every second
            # (Timer J, 32 s after each answered REGISTER); deadlines that fall in the same
            # 10 ms are then handled in one wake-up instead of one each. RFC 3261 timers are
            # times to wait at least: 10 ms more is what a busy loop adds anyway.
            slot = math.ceil(when / _TIMER_GRID_S) * _TIMER_GRID_S
            when = slot if slot >= when else slot + _TIMER_GRID_S
        if when == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = when
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire_timer)

    def _fire_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.endpoint.handle_timer(self._loop.time())
        except Exception:
            log.exception("internal error in a SIP timer")
        self.flush()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for transport in list(self._connections.values()):
                transport.close()
            await self._tcp.wait_closed()
