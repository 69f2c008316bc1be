"""What the SIP endpoint hands to its transport adapter and to the transaction user.

Outputs for the transport (`Transmit`, `CloseConnection`) and events for the transaction user
(`RequestReceived`, `ResponseReceived`, ...) are small immutable dataclasses, as in h11/aioquic.
Their fields are `Final` and each has its own `__init__` (`init=False`): compiled, that builds
one in ~20 ns where a generated frozen-dataclass `__init__` takes ~400 (docs/architecture.md,
"Compiled build").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edge.sip.message import Request, Response

Address = tuple[str, int]


@dataclass(slots=True, init=False, unsafe_hash=True)
class Peer:
    """Where a message came from or goes to.

    `connection` names the stream (TCP) connection a message arrived on, so that responses and
    requests to a peer behind NAT go back over the same connection (RFC 3261 §18.2.2).
    """

    transport: Final[str]  # "UDP" | "TCP"
    address: Final[Address]
    connection: Final[int | None]

    def __init__(self, *, transport: str, address: Address, connection: int | None = None) -> None:
        self.transport = transport
        self.address = address
        self.connection = connection

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


@dataclass(slots=True, init=False, unsafe_hash=True)
class Transmit:
    """Bytes the adapter must send to `peer`."""

    data: Final[bytes]
    peer: Final[Peer]

    def __init__(self, *, data: bytes, peer: Peer) -> None:
        self.data = data
        self.peer = peer


@dataclass(slots=True, init=False, unsafe_hash=True)
class CloseConnection:
    """The adapter must close a stream connection (framing lost, or the peer misbehaved)."""

    connection: Final[int]
    reason: Final[str]

    def __init__(self, *, connection: int, reason: str) -> None:
        self.connection = connection
        self.reason = reason


Output = Transmit | CloseConnection


class Event:
    """Base class of events for the transaction user."""

    __slots__ = ()


@dataclass(slots=True, init=False, unsafe_hash=True)
class RequestReceived(Event):
    """A new request (not a retransmission) for the TU; answer with `SipEndpoint.respond`.

    ACK for a 2xx (which has no transaction of its own, RFC 3261 §17.1.1.3) arrives here too,
    with `transaction_id` None.
    """

    request: Final[Request]
    peer: Final[Peer]
    transaction_id: Final[int | None]

    def __init__(self, *, request: Request, peer: Peer, transaction_id: int | None) -> None:
        self.request = request
        self.peer = peer
        self.transaction_id = transaction_id


@dataclass(slots=True, init=False, unsafe_hash=True)
class ResponseReceived(Event):
    """A response matched one of our client transactions (or a 2xx retransmission, RFC 6026)."""

    response: Final[Response]
    peer: Final[Peer]
    transaction_id: Final[int | None]

    def __init__(self, *, response: Response, peer: Peer, transaction_id: int | None) -> None:
        self.response = response
        self.peer = peer
        self.transaction_id = transaction_id


@dataclass(slots=True, init=False, unsafe_hash=True)
class TransactionFailed(Event):
    """A client transaction got no final response (Timer B or F), a server INVITE transaction
    got no ACK (Timer H), or the transport could not deliver (RFC 3261 §17.1.4, §17.2.4)."""

    transaction_id: Final[int]
    request: Final[Request]
    reason: Final[str]  # "timeout" | "transport error"

    def __init__(self, *, transaction_id: int, request: Request, reason: str) -> None:
        self.transaction_id = transaction_id
        self.request = request
        self.reason = reason


@dataclass(slots=True, init=False, unsafe_hash=True)
class CancelReceived(Event):
    """A CANCEL matched a pending INVITE server transaction; the endpoint already answered the
    CANCEL with 200 (RFC 3261 §9.2); the TU should answer the INVITE with 487."""

    request: Final[Request]
    invite_transaction_id: Final[int]

    def __init__(self, *, request: Request, invite_transaction_id: int) -> None:
        self.request = request
        self.invite_transaction_id = invite_transaction_id
