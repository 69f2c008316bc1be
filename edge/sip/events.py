"""What the SIP endpoint hands to its transport adapter and to the transaction user.

Outputs for the transport (`Transmit`, `CloseConnection`) and events for the transaction user
(`RequestReceived`, `ResponseReceived`, ...) are small frozen dataclasses, as in h11/aioquic.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.sip.message import Request, Response

Address = tuple[str, int]


@dataclass(slots=True, frozen=True, kw_only=True)
class Peer:
    """Where a message came from or goes to.

    `connection` names the stream (TCP) connection a message arrived on, so that responses and
    requests to a peer behind NAT go back over the same connection (RFC 3261 §18.2.2).
    """

    transport: str  # "UDP" | "TCP"
    address: Address
    connection: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


@dataclass(slots=True, frozen=True, kw_only=True)
class Transmit:
    """Bytes the adapter must send to `peer`."""

    data: bytes
    peer: Peer


@dataclass(slots=True, frozen=True, kw_only=True)
class CloseConnection:
    """The adapter must close a stream connection (framing lost, or the peer misbehaved)."""

    connection: int
    reason: str


Output = Transmit | CloseConnection


class Event:
    """Base class of events for the transaction user."""

    __slots__ = ()


@dataclass(slots=True, frozen=True, kw_only=True)
class RequestReceived(Event):
    """A new request (not a retransmission) for the TU; answer with `SipEndpoint.respond`.

    ACK for a 2xx (which has no transaction of its own, RFC 3261 §17.1.1.3) arrives here too,
    with `transaction_id` None.
    """

    request: Request
    peer: Peer
    transaction_id: int | None


@dataclass(slots=True, frozen=True, kw_only=True)
class ResponseReceived(Event):
    """A response matched one of our client transactions (or a 2xx retransmission, RFC 6026)."""

    response: Response
    peer: Peer
    transaction_id: int | None


@dataclass(slots=True, frozen=True, kw_only=True)
class TransactionFailed(Event):
    """A client transaction got no final response (Timer B or F), a server INVITE transaction
    got no ACK (Timer H), or the transport could not deliver (RFC 3261 §17.1.4, §17.2.4)."""

    transaction_id: int
    request: Request
    reason: str  # "timeout" | "transport error"


@dataclass(slots=True, frozen=True, kw_only=True)
class CancelReceived(Event):
    """A CANCEL matched a pending INVITE server transaction; the endpoint already answered the
    CANCEL with 200 (RFC 3261 §9.2); the TU should answer the INVITE with 487."""

    request: Request
    invite_transaction_id: int
