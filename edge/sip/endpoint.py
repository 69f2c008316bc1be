"""The sans-IO SIP endpoint: datagrams and stream bytes in, datagrams, timers and events out.

It owns what every SIP element does before any PBX logic runs: framing and parsing, the
RFC 3261 §8.2 checks a UAS makes (505, 501, 416, 420, 400), Via stamping (§18.2.1, RFC 3581),
response routing (§18.2.2), the transaction layer (§17), answering OPTIONS (§11.2), and RFC 5626
keep-alives. The transaction user (registrar, B2BUA...) sees only `Event`s and answers through
`respond()` / `send_request()`.

The shape is aioquic's: `receive_datagram(data, addr, now)`, `outputs()`, `next_event()`,
`get_timer()`, `handle_timer(now)`. No sockets, no clock, no randomness inside: `now` is passed
in and `token()` is injected.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from edge.sip.errors import SipParseError
from edge.sip.events import (
    Address,
    CancelReceived,
    CloseConnection,
    Event,
    Output,
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionFailed,
    Transmit,
)
from edge.sip.framing import PONG, KeepAlivePing, StreamFramer
from edge.sip.message import (
    SIP_VERSION,
    Request,
    Response,
    make_response,
    parse_message,
    parse_message_head,
    validate_request,
    validate_response,
)
from edge.sip.timers import TimerConfig
from edge.sip.transaction import (
    DeliverRequest,
    DeliverResponse,
    SendMessage,
    ServerTransaction,
    State,
    TimedOut,
    TransactionOutput,
    TransactionTable,
    TransportFailed,
    client_transaction,
    server_key,
    server_transaction,
)
from edge.sip.uri import SipUri, TelUri
from edge.sip.via import Via

log = logging.getLogger("sdpbx.sip")

# `_check_request`'s answer for a request that may proceed (never modified).
_PROCEED: tuple[int, str, list[tuple[str, str]]] = (0, "", [])

# Source addresses whose `Peer` is kept for reuse (cleared whole when full: a bound, not an LRU).
_MAX_UDP_PEERS = 4096

# Methods the endpoint itself always processes (RFC 3261 §17: ACK and CANCEL are handled at the
# transaction layer; OPTIONS is answered by the core, §11.2).
CORE_METHODS = ("OPTIONS", "ACK", "CANCEL")


class EndpointObserver(Protocol):
    """What the endpoint reports for metrics (the edge's `Metrics` implements it)."""

    def message_received(self, transport: str, kind: str) -> None: ...
    def message_sent(self, transport: str, kind: str) -> None: ...
    def parse_error(self, transport: str) -> None: ...
    def rejected(self, status: int) -> None: ...
    def dropped(self, reason: str) -> None: ...


class _NullObserver:
    def message_received(self, transport: str, kind: str) -> None:
        pass

    def message_sent(self, transport: str, kind: str) -> None:
        pass

    def parse_error(self, transport: str) -> None:
        pass

    def rejected(self, status: int) -> None:
        pass

    def dropped(self, reason: str) -> None:
        pass


@dataclass(slots=True, kw_only=True)
class EndpointConfig:
    user_agent: str = "sdpbx"
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65535
    # Methods the transaction user handles, on top of CORE_METHODS; anything else gets 501.
    methods: tuple[str, ...] = ()
    # Option tags we implement (Supported; Require checks, §8.2.2.3).
    supported: tuple[str, ...] = ()
    accept: tuple[str, ...] = ("application/sdp",)
    uri_schemes: tuple[str, ...] = ("sip", "sips", "tel")


@dataclass(slots=True)
class _Connection:
    address: Address
    framer: StreamFramer
    peer: Peer = field(init=False)

    def __post_init__(self) -> None:
        self.peer = Peer(transport="TCP", address=self.address, connection=None)


class SipEndpoint:
    """One SIP element's transport-facing half. See the module docstring."""

    def __init__(
        self,
        config: EndpointConfig | None = None,
        *,
        token: Callable[[], str],
        observer: EndpointObserver | None = None,
        request_filter: Callable[[Request, Peer, float], str | None] | None = None,
    ) -> None:
        """`request_filter(request, peer, now)` may return a reason to drop a parsed request
        unanswered (scanner User-Agents, blocked sources); None lets it through."""
        self.config = config or EndpointConfig()
        self._request_filter = request_filter
        self._token = token
        self._observer: EndpointObserver = observer or _NullObserver()
        self._outputs: list[Output] = []
        self._events: deque[Event] = deque()
        self._connections: dict[int, _Connection] = {}
        self._udp_peers: dict[Address, Peer] = {}
        self._timer_config = TimerConfig(t1=self.config.t1, t2=self.config.t2, t4=self.config.t4)
        self._transactions = TransactionTable()
        self.local_udp: Address | None = None
        self.local_tcp: Address | None = None
        methods = dict.fromkeys((*self.config.methods, *CORE_METHODS))
        self._allow = ", ".join(methods)
        self._allow_set = frozenset(methods)

    # ---------------------------------------------------------------- adapter API

    def set_request_filter(
        self, request_filter: Callable[[Request, Peer, float], str | None] | None
    ) -> None:
        self._request_filter = request_filter

    def set_local_addresses(self, *, udp: Address | None, tcp: Address | None) -> None:
        self.local_udp = udp
        self.local_tcp = tcp

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """One UDP datagram: exactly one message (RFC 3261 §18.3), or a keep-alive."""
        if data[:1] in (b"\r", b"\n", b"") and not data.strip(b"\r\n"):
            return  # CRLF keep-alive over UDP: nothing to answer
        # Peers are frozen: one per source address serves all its datagrams (and the
        # transactions that keep it), instead of a new object each time.
        peer = self._udp_peers.get(addr)
        if peer is None:
            peer = Peer(transport="UDP", address=addr)
            if len(self._udp_peers) >= _MAX_UDP_PEERS:
                self._udp_peers.clear()
            self._udp_peers[addr] = peer
        if len(data) > self.config.max_message_size:
            self._reject_unparsed(data, peer, "message too large", 513)
            return
        self._receive_message(data, peer, now)

    def connection_made(self, connection: int, addr: Address) -> None:
        conn = _Connection(addr, StreamFramer(self.config.max_message_size))
        conn.peer = Peer(transport="TCP", address=addr, connection=connection)
        self._connections[connection] = conn

    def connection_lost(self, connection: int) -> None:
        self._connections.pop(connection, None)

    def receive_stream_data(self, connection: int, data: bytes, now: float) -> None:
        conn = self._connections.get(connection)
        if conn is None:
            return
        try:
            items = conn.framer.feed(data)
        except SipParseError as exc:
            # Framing is lost for good (RFC 4475 §3.1.2.3): answer if we can, then close.
            self._observer.parse_error("TCP")
            log.warning(
                "tcp framing error from %s:%s: %s", *conn.address, exc.reason,
                extra={"peer": f"{conn.address[0]}:{conn.address[1]}", "reason": exc.reason},
            )
            self._outputs.append(CloseConnection(connection=connection, reason=exc.reason))
            self._connections.pop(connection, None)
            return
        for item in items:
            if isinstance(item, KeepAlivePing):
                self._outputs.append(Transmit(data=PONG, peer=conn.peer))  # RFC 5626 §4.4.1
            else:
                self._receive_message(item, conn.peer, now)

    def outputs(self) -> list[Output]:
        """Take the transmissions and connection closes produced so far."""
        out, self._outputs = self._outputs, []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def transaction_counts(self) -> dict[str, int]:
        """Live transactions by kind ("client", "server"), for metrics."""
        counts = {"client": 0, "server": 0}
        for transaction in self._transactions.transactions():
            counts["server" if isinstance(transaction, ServerTransaction) else "client"] += 1
        return counts

    def get_timer(self) -> float | None:
        """When `handle_timer` must next run (loop time), or None."""
        return self._transactions.next_deadline()

    def handle_timer(self, now: float) -> None:
        self._process(self._transactions.handle_timer(now), now)

    # ---------------------------------------------------------------- TU API

    def respond(self, transaction_id: int, response: Response, now: float) -> None:
        """Send the TU's response to the request of a server transaction."""
        transaction = self._transactions.by_id(transaction_id)
        if not isinstance(transaction, ServerTransaction):
            log.info("response %d for a finished transaction not sent", response.status)
            return
        self._process(transaction.send_response(response, now), now)
        if response.status >= 200:
            # The response is kept as sent (its bytes) for retransmissions only: its parsed
            # headers are not needed any more.
            response.headers.forget_parsed()
        if transaction.state is State.COMPLETED and not transaction.FOR_INVITE:
            # A non-INVITE server transaction now only absorbs retransmissions for Timer J
            # (32 s on UDP): thousands of them stay alive under load. Their request's parsed
            # headers are not needed any more (the response destination is kept): fewer live
            # objects for the cyclic GC to walk.
            transaction.request.forget_parsed()

    def abandon(self, transaction_id: int) -> None:
        """Forget a server transaction without answering it: the TU chose silence (RFC 3261
        allows dropping a request). Retransmissions then look new and meet the same verdict."""
        transaction = self._transactions.by_id(transaction_id)
        if transaction is not None:
            self._transactions.remove(transaction)

    def send_request(self, request: Request, peer: Peer, now: float) -> int:
        """Start a client transaction for `request` to `peer`; returns its id."""
        transaction = client_transaction(
            request, reliable=peer.reliable, config=self._timer_config, peer=peer
        )
        self._transactions.add(transaction)
        self._process(transaction.start(now), now)
        return transaction.id

    def send_stateless(self, message: Request | Response, peer: Peer) -> None:
        """Send a message outside any transaction (ACK for 2xx, stateless replies)."""
        self._send(message, peer)

    # ---------------------------------------------------------------- receive path

    def _receive_message(self, data: bytes, peer: Peer, now: float) -> None:
        try:
            message = parse_message(data, stream=peer.reliable)
        except SipParseError as exc:
            self._reject_unparsed(data, peer, exc.reason, exc.status)
            return
        if isinstance(message, Response):
            self._observer.message_received(peer.transport, "response")
            self._receive_response(message, peer, now)
        else:
            self._observer.message_received(peer.transport, "request")
            if self._request_filter is not None:
                refusal = self._request_filter(message, peer, now)
                if refusal is not None:
                    self._observer.dropped(refusal)  # counted; logged by the filter's owner
                    return
            self._receive_request(message, peer, now)

    def _reject_unparsed(self, data: bytes, peer: Peer, reason: str, status: int) -> None:
        """A message that does not parse: answer 4xx/5xx when its head allows, else drop."""
        self._observer.parse_error(peer.transport)
        head = parse_message_head(data)
        if isinstance(head, Request):
            self._reject_stateless(head, peer, status, reason)
        else:
            self._drop(peer, "unparseable", reason)

    def _receive_response(self, response: Response, peer: Peer, now: float) -> None:
        try:
            validate_response(response)
            transaction = self._transactions.find_client(response)
        except SipParseError as exc:
            self._drop(peer, "malformed_response", f"malformed response: {exc.reason}")
            return
        if transaction is not None:
            self._process(transaction.receive_response(response, now), now)
        elif response.status // 100 == 2 and response.cseq.method == "INVITE":
            # RFC 6026 §8.4: a 2xx to INVITE outliving its transaction still goes to the TU,
            # which owns the dialog and re-sends the ACK. Anything else is stray (§18.1.2).
            self._events.append(ResponseReceived(response=response, peer=peer, transaction_id=None))
        else:
            self._drop(peer, "stray_response", "response matches no transaction")

    def _receive_request(self, request: Request, peer: Peer, now: float) -> None:
        transactions = self._transactions
        try:
            validate_request(request)
            self._stamp_via(request, peer)
            # Retransmissions and ACKs to our final responses belong to their transactions.
            key = server_key(request)
            transaction = transactions.find_server(request, key)
        except SipParseError as exc:
            self._reject_stateless(request, peer, exc.status, exc.reason)
            return
        if transaction is not None:
            self._process(transaction.receive_request(request, now), now)
            return
        if request.method == "ACK":
            # An ACK for a 2xx is a request of its own for the TU (§17.1.1.3).
            self._events.append(RequestReceived(request=request, peer=peer, transaction_id=None))
            return
        transaction = server_transaction(
            request, reliable=peer.reliable, config=self._timer_config, peer=peer, key=key
        )
        transactions.add(transaction)
        self._process(transaction.start(now), now)

    def _dispatch(self, transaction: ServerTransaction, request: Request, now: float) -> None:
        """A new request passed its transaction: the §8.2 checks, then the core or the TU."""
        peer = transaction.peer
        assert isinstance(peer, Peer)
        if request.method == "ACK":  # RFC 6026 §8.7: an ACK to our 2xx, in Accepted
            self._events.append(
                RequestReceived(request=request, peer=peer, transaction_id=transaction.id)
            )
            return
        status, reason, extra = self._check_request(request)
        if status:
            self._observer.rejected(status)
            log.info(
                "rejecting %s from %s:%s with %d: %s", request.method, *peer.address, status,
                reason, extra={"call_id": request.call_id, "reason": reason},
            )
            response = make_response(request, status, reason, to_tag=self._token(), headers=extra)
            self._process(transaction.send_response(response, now), now)
        elif request.method == "CANCEL":
            self._receive_cancel(transaction, request, now)
        elif request.method == "OPTIONS" and "OPTIONS" not in self.config.methods:
            self._process(transaction.send_response(self._options_response(request), now), now)
        else:
            self._events.append(
                RequestReceived(request=request, peer=peer, transaction_id=transaction.id)
            )

    def _receive_cancel(self, transaction: ServerTransaction, cancel: Request, now: float) -> None:
        invite = self._transactions.find_cancel_target(cancel)
        if invite is None:
            response = make_response(cancel, 481, to_tag=self._token())
            self._process(transaction.send_response(response, now), now)
            return
        # §9.2: the CANCEL itself is answered 200 by the UAS; the TU then ends the INVITE (487).
        # A CANCEL that crosses our final response still gets its 200 but changes nothing.
        to_tag = invite.last_response.to_addr.tag if invite.last_response else None
        response = make_response(cancel, 200, to_tag=to_tag or self._token())
        self._process(transaction.send_response(response, now), now)
        if invite.cancellable:
            self._events.append(CancelReceived(request=cancel, invite_transaction_id=invite.id))

    def _check_request(self, request: Request) -> tuple[int, str, list[tuple[str, str]]]:
        """RFC 3261 §8.2 checks in their order; (0, "", []) when the request may proceed."""
        if request.version != SIP_VERSION:
            return 505, "Version Not Supported", []
        method = request.method
        if method not in self._allow_set:
            return 501, "Not Implemented", [("Allow", self._allow)]  # §8.2.1
        uri = request.request_uri
        if type(uri) is SipUri:
            scheme = uri.scheme
        elif isinstance(uri, SipUri | TelUri):
            scheme = uri_scheme(uri)
        else:
            scheme = ""
        if scheme not in self.config.uri_schemes:
            return 416, "Unsupported URI Scheme", []  # §8.2.2.1
        if method != "ACK" and method != "CANCEL":
            required = request.headers.get_lines("Require")
            if required:
                unsupported = [
                    tag for tag in _option_tags(request.headers.get_all("Require"))
                    if tag not in self.config.supported
                ]
                if unsupported:
                    # §8.2.2.3
                    return 420, "Bad Extension", [("Unsupported", ", ".join(unsupported))]
        return _PROCEED

    def _options_response(self, request: Request) -> Response:
        """§11.2: what we can do, the same answer as to an INVITE capability query."""
        return make_response(
            request,
            200,
            to_tag=self._token(),
            headers=[
                ("Allow", self._allow),
                ("Accept", ", ".join(self.config.accept)),
                ("Supported", ", ".join(self.config.supported)),
                ("Server", self.config.user_agent),
            ],
        )

    # ---------------------------------------------------------------- helpers

    def _stamp_via(self, request: Request, peer: Peer) -> None:
        """Record where the request really came from in its top Via (§18.2.1, RFC 3581 §4)."""
        via = request.top_via
        stamped = via.with_source(*peer.address)
        if stamped is not via:
            request.replace_top_via(stamped)

    def response_peer(self, response: Response, received_on: Peer) -> Peer:
        """Where a response to a request received on `received_on` goes (§18.2.2, RFC 3581)."""
        if received_on.reliable:
            return received_on
        return _via_destination(response.top_via)

    def _transaction_response_peer(self, request: Request, received_on: Peer) -> Peer:
        # The response's top Via is the request's stamped one, already parsed: use that.
        if received_on.transport != "UDP":
            return received_on
        address = _via_address(request.top_via)
        # Usually the source itself (received + rport): share its Peer.
        if address == received_on.address:
            return received_on
        return Peer(transport="UDP", address=address)

    def _reject_stateless(
        self, request: Request, peer: Peer, status: int, reason: str
    ) -> None:
        """Answer a request that cannot enter a transaction (malformed), outside any state.

        ACK is never answered (§17.1.1.3), and a response needs the request's Via lines: without
        any the request is dropped. With a Via we cannot parse (RFC 4475 §3.1.2.1), the response
        goes back to the source address, the only place we know.
        """
        if request.method == "ACK" or "Via" not in request.headers:
            self._drop(peer, "unanswerable", reason)
            return
        try:
            self._stamp_via(request, peer)
            response = make_response(request, status, reason, to_tag=self._token())
            destination = self.response_peer(response, peer)
        except SipParseError:
            response = make_response(request, status, reason, to_tag=self._token())
            destination = peer
        self._observer.rejected(status)
        call_id = request.headers.get("Call-ID") or "-"
        log.info(
            "rejecting %s from %s:%s with %d: %s", request.method, *peer.address, status, reason,
            extra={"call_id": call_id, "reason": reason},
        )
        self._send(response, destination)

    def _drop(self, peer: Peer, category: str, reason: str) -> None:
        """Drop a message: `category` labels the metric (a few fixed values), `reason` is logged."""
        self._observer.dropped(category)
        log.info(
            "dropped message from %s:%s: %s", *peer.address, reason,
            extra={"peer": f"{peer.address[0]}:{peer.address[1]}", "reason": reason},
        )

    def _send(self, message: Request | Response, peer: Peer) -> None:
        kind = "request" if isinstance(message, Request) else "response"
        self._observer.message_sent(peer.transport, kind)
        self._outputs.append(Transmit(data=message.to_bytes(), peer=peer))

    def _process(self, outputs: list[TransactionOutput], now: float) -> None:
        """Carry out what the transactions produced: send, dispatch, report."""
        for output in outputs:
            if isinstance(output, SendMessage):
                peer = output.transaction.peer
                assert isinstance(peer, Peer)
                message = output.message
                if isinstance(message, Response):
                    transaction = output.transaction
                    assert isinstance(transaction, ServerTransaction)
                    response_peer = transaction.response_peer
                    if response_peer is None:
                        response_peer = transaction.response_peer = (
                            self._transaction_response_peer(transaction.request, peer)
                        )
                    assert isinstance(response_peer, Peer)
                    peer = response_peer
                    self._observer.message_sent(peer.transport, "response")
                else:
                    self._observer.message_sent(peer.transport, "request")
                self._outputs.append(Transmit(data=output.data, peer=peer))
            elif isinstance(output, DeliverRequest):
                transaction = output.transaction
                assert isinstance(transaction, ServerTransaction)
                self._dispatch(transaction, output.request, now)
            elif isinstance(output, DeliverResponse):
                peer = output.transaction.peer
                assert isinstance(peer, Peer)
                self._events.append(
                    ResponseReceived(
                        response=output.response, peer=peer, transaction_id=output.transaction.id
                    )
                )
            elif isinstance(output, TimedOut | TransportFailed):
                self._events.append(
                    TransactionFailed(
                        transaction_id=output.transaction.id,
                        request=output.transaction.request,
                        reason="timeout" if isinstance(output, TimedOut) else "transport error",
                    )
                )


def _via_destination(via: Via) -> Peer:
    """§18.2.2 for UDP: the `received` address (else sent-by host), at `rport` (RFC 3581 §4)
    when the client asked for it, else the sent-by port (default 5060)."""
    return Peer(transport="UDP", address=_via_address(via))


def _via_address(via: Via) -> Address:
    host = via.received or via.host.strip("[]")
    port = via.rport or via.port or 5060
    return host, port


def uri_scheme(uri: SipUri | TelUri) -> str:
    return uri.scheme if isinstance(uri, SipUri) else "tel"


def _option_tags(values: Iterable[str]) -> list[str]:
    return [value.strip().lower() for value in values if value.strip()]


__all__ = ["CORE_METHODS", "EndpointConfig", "EndpointObserver", "SipEndpoint"]
