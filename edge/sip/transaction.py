"""The SIP transaction layer's state machines (RFC 3261 §17, updated by RFC 6026), sans-IO.

Each of the four machines is a table `{state: {input: (next_state, actions)}}`; which timers run
in which state is a second table, and how retransmission timers back off a third. The code below
the tables only interprets them, so the tables are the whole protocol: an input that a state has
no entry for raises one `LocalProtocolError` naming the machine, the state and the input.
Messages a peer may legitimately send at any time (a late retransmission, a stray response) have
explicit "absorb" entries instead, so that only our own mistakes raise.

Every method takes `now` and returns the list of outputs it produced: messages for the transport
(`SendMessage`, already serialized, the endpoint sends them) and notices for the transaction user
(`DeliverRequest`, `DeliverResponse`, `TimedOut`, `TransportFailed`, `Terminated`). A transaction
never touches a socket or a clock; `next_deadline()` says when it wants `handle_timer(now)`.

Matching (§17.1.3, §17.2.3, §9.2) turns a message into a `TransactionKey`; `TransactionTable`
holds the live transactions by key, and a heap of their deadlines so that the earliest one is
cheap to find among thousands.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Final, Literal, NamedTuple

from edge.sip.errors import LocalProtocolError
from edge.sip.grammar import host_key
from edge.sip.headers import Headers
from edge.sip.message import Request, Response, make_response
from edge.sip.timers import FIRST_INTERVAL, Timer, TimerConfig, first_interval
from edge.sip.via import MAGIC_COOKIE, Via


class State(enum.Enum):
    """Transaction states (RFC 3261 figures 5-8; `ACCEPTED` from RFC 6026 §7.1/§7.2).

    `INITIAL` is the state before the first input (the request the transaction is made for).
    """

    # Members are singletons: hash them by identity, in C (Enum.__hash__ is Python code
    # and these are dict keys on every transition).
    __hash__ = object.__hash__

    INITIAL = "Initial"
    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    TERMINATED = "Terminated"


class Input(enum.Enum):
    """What can happen to a transaction: a message, a TU command, a timer, a transport error."""

    # Members are singletons: hash them by identity, in C (Enum.__hash__ is Python code
    # and these are dict keys on every transition).
    __hash__ = object.__hash__

    START = "request from TU"  # client: the TU hands over the request
    RECV_REQUEST = "request received"  # server: the request, or a retransmission of it
    RECV_ACK = "ACK received"  # INVITE server
    RECV_1XX = "1xx received"  # client
    RECV_2XX = "2xx received"
    RECV_3XX_6XX = "300-699 received"
    SEND_1XX = "1xx from TU"  # server
    SEND_2XX = "2xx from TU"
    SEND_3XX_6XX = "300-699 from TU"
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    TIMER_TRYING = "100 Trying timer"
    TRANSPORT_ERROR = "transport error"


TIMER_INPUT: dict[Timer, Input] = {
    Timer.A: Input.TIMER_A,
    Timer.B: Input.TIMER_B,
    Timer.D: Input.TIMER_D,
    Timer.E: Input.TIMER_E,
    Timer.F: Input.TIMER_F,
    Timer.G: Input.TIMER_G,
    Timer.H: Input.TIMER_H,
    Timer.I: Input.TIMER_I,
    Timer.J: Input.TIMER_J,
    Timer.K: Input.TIMER_K,
    Timer.L: Input.TIMER_L,
    Timer.M: Input.TIMER_M,
    Timer.TRYING: Input.TIMER_TRYING,
}
INPUT_TIMER: dict[Input, Timer] = {value: key for key, value in TIMER_INPUT.items()}


class Action(enum.Enum):
    """Side effects of a transition, performed in the order the table lists them."""

    # Members are singletons: hash them by identity, in C (Enum.__hash__ is Python code
    # and these are dict keys on every transition).
    __hash__ = object.__hash__

    SEND_REQUEST = "send the request"
    RETRANSMIT_REQUEST = "retransmit the request"
    SEND_ACK = "build and send the ACK for a non-2xx final response"  # §17.1.1.3
    RESEND_ACK = "retransmit the ACK"
    DELIVER_REQUEST = "pass the request to the TU"
    DELIVER_RESPONSE = "pass the response to the TU"
    SEND_RESPONSE = "send the TU's response"
    RESEND_RESPONSE = "retransmit the last response sent"
    SEND_TRYING = "send 100 Trying"
    STOP_TRYING_TIMER = "stop the 100 Trying timer"
    REPORT_TIMEOUT = "tell the TU the transaction timed out"
    REPORT_TRANSPORT_ERROR = "tell the TU the transport failed"


Transition = tuple[State, tuple[Action, ...]]
Table = dict[State, dict[Input, Transition]]

S = State
I = Input  # noqa: E741 - local shorthand for the tables
A = Action
_ABSORB: tuple[Action, ...] = ()

# --- RFC 3261 §17.1.1 (figure 5) with RFC 6026 §7.2 / §8.4 (Accepted, Timer M) -----------------
CLIENT_INVITE: Table = {
    S.INITIAL: {I.START: (S.CALLING, (A.SEND_REQUEST,))},
    S.CALLING: {
        I.TIMER_A: (S.CALLING, (A.RETRANSMIT_REQUEST,)),
        I.TIMER_B: (S.TERMINATED, (A.REPORT_TIMEOUT,)),
        I.RECV_1XX: (S.PROCEEDING, (A.DELIVER_RESPONSE,)),
        I.RECV_2XX: (S.ACCEPTED, (A.DELIVER_RESPONSE,)),
        I.RECV_3XX_6XX: (S.COMPLETED, (A.SEND_ACK, A.DELIVER_RESPONSE)),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.PROCEEDING: {
        I.RECV_1XX: (S.PROCEEDING, (A.DELIVER_RESPONSE,)),
        I.RECV_2XX: (S.ACCEPTED, (A.DELIVER_RESPONSE,)),
        I.RECV_3XX_6XX: (S.COMPLETED, (A.SEND_ACK, A.DELIVER_RESPONSE)),
        # Nothing is sent in Proceeding: a late report about the INVITE changes nothing.
        I.TRANSPORT_ERROR: (S.PROCEEDING, _ABSORB),
    },
    S.COMPLETED: {
        # §17.1.1.2: a retransmitted final response gets the ACK again, and is not passed up.
        I.RECV_3XX_6XX: (S.COMPLETED, (A.RESEND_ACK,)),
        I.RECV_1XX: (S.COMPLETED, _ABSORB),
        I.RECV_2XX: (S.COMPLETED, _ABSORB),
        I.TIMER_D: (S.TERMINATED, _ABSORB),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.ACCEPTED: {
        # RFC 6026 §8.4: every 2xx goes to the TU, which sends (and re-sends) the ACK itself.
        I.RECV_2XX: (S.ACCEPTED, (A.DELIVER_RESPONSE,)),
        I.RECV_1XX: (S.ACCEPTED, _ABSORB),
        I.RECV_3XX_6XX: (S.ACCEPTED, _ABSORB),
        I.TIMER_M: (S.TERMINATED, _ABSORB),
        I.TRANSPORT_ERROR: (S.ACCEPTED, _ABSORB),
    },
    S.TERMINATED: {},
}

# --- RFC 3261 §17.1.2 (figure 6) -----------------------------------------------------------------
CLIENT_NON_INVITE: Table = {
    S.INITIAL: {I.START: (S.TRYING, (A.SEND_REQUEST,))},
    S.TRYING: {
        I.TIMER_E: (S.TRYING, (A.RETRANSMIT_REQUEST,)),
        I.TIMER_F: (S.TERMINATED, (A.REPORT_TIMEOUT,)),
        I.RECV_1XX: (S.PROCEEDING, (A.DELIVER_RESPONSE,)),
        I.RECV_2XX: (S.COMPLETED, (A.DELIVER_RESPONSE,)),
        I.RECV_3XX_6XX: (S.COMPLETED, (A.DELIVER_RESPONSE,)),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.PROCEEDING: {
        I.TIMER_E: (S.PROCEEDING, (A.RETRANSMIT_REQUEST,)),
        I.TIMER_F: (S.TERMINATED, (A.REPORT_TIMEOUT,)),
        I.RECV_1XX: (S.PROCEEDING, (A.DELIVER_RESPONSE,)),
        I.RECV_2XX: (S.COMPLETED, (A.DELIVER_RESPONSE,)),
        I.RECV_3XX_6XX: (S.COMPLETED, (A.DELIVER_RESPONSE,)),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.COMPLETED: {
        # §17.1.2.2: Completed only buffers response retransmissions.
        I.RECV_1XX: (S.COMPLETED, _ABSORB),
        I.RECV_2XX: (S.COMPLETED, _ABSORB),
        I.RECV_3XX_6XX: (S.COMPLETED, _ABSORB),
        I.TIMER_K: (S.TERMINATED, _ABSORB),
        I.TRANSPORT_ERROR: (S.COMPLETED, _ABSORB),
    },
    S.TERMINATED: {},
}

# --- RFC 3261 §17.2.1 as redrawn by RFC 6026 §7.1 (figure 7: Accepted, Timer L) ----------------
SERVER_INVITE: Table = {
    S.INITIAL: {I.RECV_REQUEST: (S.PROCEEDING, (A.DELIVER_REQUEST,))},
    S.PROCEEDING: {
        I.RECV_REQUEST: (S.PROCEEDING, (A.RESEND_RESPONSE,)),
        I.RECV_ACK: (S.PROCEEDING, _ABSORB),  # stray: there is no final response to acknowledge
        I.TIMER_TRYING: (S.PROCEEDING, (A.SEND_TRYING,)),
        I.SEND_1XX: (S.PROCEEDING, (A.STOP_TRYING_TIMER, A.SEND_RESPONSE)),
        I.SEND_2XX: (S.ACCEPTED, (A.SEND_RESPONSE,)),
        I.SEND_3XX_6XX: (S.COMPLETED, (A.SEND_RESPONSE,)),
        I.TRANSPORT_ERROR: (S.PROCEEDING, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.COMPLETED: {
        I.RECV_REQUEST: (S.COMPLETED, (A.RESEND_RESPONSE,)),
        I.RECV_ACK: (S.CONFIRMED, _ABSORB),
        I.TIMER_G: (S.COMPLETED, (A.RESEND_RESPONSE,)),
        I.TIMER_H: (S.TERMINATED, (A.REPORT_TIMEOUT,)),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.CONFIRMED: {
        # §17.2.1: Confirmed exists only to absorb ACK retransmissions.
        I.RECV_ACK: (S.CONFIRMED, _ABSORB),
        I.RECV_REQUEST: (S.CONFIRMED, _ABSORB),
        I.TIMER_I: (S.TERMINATED, _ABSORB),
        I.TRANSPORT_ERROR: (S.CONFIRMED, _ABSORB),
    },
    S.ACCEPTED: {
        # RFC 6026 §8.7: INVITE retransmissions are absorbed (the TU retransmits the 2xx),
        # ACKs go to the TU, further 2xx from the TU are sent.
        I.RECV_REQUEST: (S.ACCEPTED, _ABSORB),
        I.RECV_ACK: (S.ACCEPTED, (A.DELIVER_REQUEST,)),
        I.SEND_2XX: (S.ACCEPTED, (A.SEND_RESPONSE,)),
        I.TIMER_L: (S.TERMINATED, _ABSORB),
        I.TRANSPORT_ERROR: (S.ACCEPTED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.TERMINATED: {},
}

# --- RFC 3261 §17.2.2 (figure 8) -----------------------------------------------------------------
SERVER_NON_INVITE: Table = {
    S.INITIAL: {I.RECV_REQUEST: (S.TRYING, (A.DELIVER_REQUEST,))},
    S.TRYING: {
        I.RECV_REQUEST: (S.TRYING, _ABSORB),  # §17.2.2: discarded until the TU answers
        I.SEND_1XX: (S.PROCEEDING, (A.SEND_RESPONSE,)),
        I.SEND_2XX: (S.COMPLETED, (A.SEND_RESPONSE,)),
        I.SEND_3XX_6XX: (S.COMPLETED, (A.SEND_RESPONSE,)),
        I.TRANSPORT_ERROR: (S.TRYING, _ABSORB),  # nothing has been sent yet
    },
    S.PROCEEDING: {
        I.RECV_REQUEST: (S.PROCEEDING, (A.RESEND_RESPONSE,)),
        I.SEND_1XX: (S.PROCEEDING, (A.SEND_RESPONSE,)),
        I.SEND_2XX: (S.COMPLETED, (A.SEND_RESPONSE,)),
        I.SEND_3XX_6XX: (S.COMPLETED, (A.SEND_RESPONSE,)),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.COMPLETED: {
        I.RECV_REQUEST: (S.COMPLETED, (A.RESEND_RESPONSE,)),
        I.TIMER_J: (S.TERMINATED, _ABSORB),
        I.TRANSPORT_ERROR: (S.TERMINATED, (A.REPORT_TRANSPORT_ERROR,)),
    },
    S.TERMINATED: {},
}

# Which timers run in each state: entering a state starts the ones listed for it (if the
# transport runs them at all) and stops every other; staying in a state leaves them alone.
StateTimers = dict[State, tuple[Timer, ...]]
CLIENT_INVITE_TIMERS: StateTimers = {
    S.CALLING: (Timer.A, Timer.B),
    S.COMPLETED: (Timer.D,),
    S.ACCEPTED: (Timer.M,),
}
CLIENT_NON_INVITE_TIMERS: StateTimers = {
    S.TRYING: (Timer.E, Timer.F),
    S.PROCEEDING: (Timer.E, Timer.F),  # E and F keep running from Trying
    S.COMPLETED: (Timer.K,),
}
SERVER_INVITE_TIMERS: StateTimers = {
    S.PROCEEDING: (Timer.TRYING,),
    S.COMPLETED: (Timer.G, Timer.H),
    S.CONFIRMED: (Timer.I,),
    S.ACCEPTED: (Timer.L,),
}
SERVER_NON_INVITE_TIMERS: StateTimers = {
    S.COMPLETED: (Timer.J,),
}

# When a retransmission timer fires and the machine stays in its state, the timer starts again
# with the interval computed here from the previous one. Timers not listed fire once.
Backoff = Callable[[TimerConfig, float], float]
BACKOFF: dict[tuple[State, Timer], Backoff] = {
    (S.CALLING, Timer.A): lambda c, previous: 2 * previous,  # §17.1.1.2
    (S.TRYING, Timer.E): lambda c, previous: min(2 * previous, c.t2),  # §17.1.2.2
    (S.PROCEEDING, Timer.E): lambda c, previous: c.t2,  # §17.1.2.2: "reset with T2"
    (S.COMPLETED, Timer.G): lambda c, previous: min(2 * previous, c.t2),  # §17.2.1
}


# The timers whose next interval depends on the previous one (read only by BACKOFF).
_BACKOFF_TIMERS = frozenset(timer for _state, timer in BACKOFF)
_NO_INTERVALS: dict[Timer, float] = {}  # shared, never written: see Transaction._arm


# ------------------------------------------------------------------------------------- outputs


@dataclass(slots=True, init=False, unsafe_hash=True)
class SendMessage:
    """The endpoint must put `data` (the serialized `message`) on the wire.

    Client transactions send to the transaction's `peer`; responses go where RFC 3261 §18.2.2
    says (the endpoint decides). `retransmission` is True for copies of a message already sent.
    """

    transaction: Final[Transaction]
    message: Final[Request | Response]
    data: Final[bytes]
    retransmission: Final[bool]

    def __init__(self, *, transaction: Transaction, message: Request | Response, data: bytes,
                 retransmission: bool = False) -> None:
        self.transaction = transaction
        self.message = message
        self.data = data
        self.retransmission = retransmission


@dataclass(slots=True, init=False, unsafe_hash=True)
class DeliverRequest:
    """For the TU: the request that created a server transaction, or (INVITE server in
    Accepted, RFC 6026 §8.7) an ACK that matched it."""

    transaction: Final[Transaction]
    request: Final[Request]

    def __init__(self, *, transaction: Transaction, request: Request) -> None:
        self.transaction = transaction
        self.request = request


@dataclass(slots=True, init=False, unsafe_hash=True)
class DeliverResponse:
    """For the TU: a response to a client transaction's request (not a retransmission, except
    2xx to INVITE which RFC 6026 §8.4 passes up every time so that the TU re-sends its ACK)."""

    transaction: Final[Transaction]
    response: Final[Response]

    def __init__(self, *, transaction: Transaction, response: Response) -> None:
        self.transaction = transaction
        self.response = response


@dataclass(slots=True, init=False, unsafe_hash=True)
class TimedOut:
    """For the TU: no final response (Timer B, F) or no ACK (Timer H)."""

    transaction: Final[Transaction]
    timer: Final[Timer]

    def __init__(self, *, transaction: Transaction, timer: Timer) -> None:
        self.transaction = transaction
        self.timer = timer


@dataclass(slots=True, init=False, unsafe_hash=True)
class TransportFailed:
    """For the TU: the transport reported a failure to send (§17.1.4, §17.2.4)."""

    transaction: Final[Transaction]

    def __init__(self, *, transaction: Transaction) -> None:
        self.transaction = transaction


@dataclass(slots=True, init=False, unsafe_hash=True)
class Terminated:
    """The transaction reached Terminated; it is out of its table and must be forgotten."""

    transaction: Final[Transaction]

    def __init__(self, *, transaction: Transaction) -> None:
        self.transaction = transaction


TransactionOutput = (
    SendMessage | DeliverRequest | DeliverResponse | TimedOut | TransportFailed | Terminated
)


# ------------------------------------------------------------------------------------ matching


class TransactionKey(NamedTuple):
    """What identifies a transaction (RFC 3261 §17.1.3, §17.2.3).

    RFC 3261 keys: the top Via branch, the sent-by (server side only) and the method, with ACK
    counted as INVITE. RFC 2543 keys (a branch without the magic cookie, server side only) have
    an empty branch and `legacy` = (Request-URI, To tag, From tag, Call-ID, CSeq number, top Via).
    """

    role: Literal["client", "server"]
    method: str
    branch: str
    sent_by: str = ""
    legacy: tuple[str, str, str, str, int, str] | None = None


def _sent_by(via: Via) -> str:
    # Hosts compare case-insensitively; IPv6 in canonical form (§17.2.3 "equal sent-by").
    host = host_key(via.host)
    return f"{host}:{via.port}" if via.port is not None else host


def _via_identity(via: Via) -> str:
    """The top Via, as RFC 2543 matching compares it (transport, sent-by, branch)."""
    return f"{via.transport} {_sent_by(via)};{via.branch or ''}"


def server_key(request: Request) -> TransactionKey:
    """The key of the server transaction `request` belongs to (RFC 3261 §17.2.3).

    ACK maps to its INVITE. Without the magic cookie the RFC 2543 rules apply; for an ACK the
    To tag in its key is the one our response added, and `TransactionTable.find_server` also
    looks for the INVITE under the tag-less key it was created with.
    Raises SipParseError if a header the key needs is missing or malformed.
    """
    via = request.top_via
    method = "INVITE" if request.method == "ACK" else request.method
    if via.has_magic_cookie:
        return TransactionKey("server", method, via.branch or "", _sent_by(via))
    return _legacy_key(request, via, method)


def _legacy_key(request: Request, via: Via, method: str) -> TransactionKey:
    # RFC 3261 §17.2.3, second half: an RFC 2543 peer gives no unique branch.
    legacy = (
        request.uri.strip(),
        request.to_addr.tag or "",
        request.from_addr.tag or "",
        request.call_id,
        request.cseq.seq,
        _via_identity(via),
    )
    return TransactionKey("server", method, "", "", legacy)


def cancel_target_key(cancel: Request) -> TransactionKey:
    """The key of the INVITE server transaction a CANCEL names (RFC 3261 §9.2).

    The CANCEL is matched like any request, but to a transaction whose method is INVITE; the
    CANCEL itself has its own non-INVITE transaction (its `server_key`).
    """
    if cancel.method != "CANCEL":
        raise LocalProtocolError(f"cancel_target_key needs a CANCEL, not {cancel.method}")
    return server_key(cancel)._replace(method="INVITE")


def client_key(response: Response) -> TransactionKey:
    """The key of the client transaction a response belongs to (RFC 3261 §17.1.3): the top Via
    branch and the CSeq method (so a CANCEL's 200 does not reach its INVITE)."""
    return TransactionKey("client", response.cseq.method, response.top_via.branch or "")


def _request_client_key(request: Request) -> TransactionKey:
    via = request.top_via
    if not via.has_magic_cookie or via.branch is None:
        # §8.1.1.7: every request we originate carries an RFC 3261 branch.
        raise LocalProtocolError(f"{request.method} to send has no z9hG4bK branch in its Via")
    return TransactionKey("client", request.method, via.branch)


# ----------------------------------------------------------------------------- ACK and CANCEL


def _top_via_value(request: Request) -> str:
    values = request.headers.get_all("Via")
    if not values:
        raise LocalProtocolError(f"{request.method} has no Via header")
    return values[0]


def _hop_headers(request: Request, to_value: str, method: str) -> Headers:
    """Headers of an ACK/CANCEL that travels the same hops as `request` (§9.1, §17.1.1.3):
    its top Via only, its Route set, From, Call-ID, the CSeq number; To as given."""
    src = request.headers
    headers = Headers()
    headers.add("Via", _top_via_value(request))
    headers.add("Max-Forwards", src.get("Max-Forwards") or "70")
    for route in src.get_lines("Route"):
        headers.add("Route", route)
    headers.add("From", src.get("From") or "")
    headers.add("To", to_value)
    headers.add("Call-ID", request.call_id)
    headers.add("CSeq", f"{request.cseq.seq} {method}")
    return headers


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to `invite` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE (method ACK), the INVITE's top
    Via only (same branch), its Route headers, and the To of the response (with its tag).
    """
    to_value = response.headers.get("To")
    if to_value is None:
        raise LocalProtocolError("response to acknowledge has no To header")
    return Request("ACK", invite.uri, _hop_headers(invite, to_value, "ACK"))


def build_cancel(request: Request) -> Request:
    """A CANCEL for a pending request we sent, usually an INVITE (RFC 3261 §9.1).

    Request-URI, Call-ID, To, From and the CSeq number are the request's (CSeq method CANCEL);
    one Via, the request's top Via, so that the CANCEL follows the same path; its Route headers.
    Send it only once a provisional response has arrived (`ClientInviteTransaction.may_cancel`).
    """
    if request.method in ("ACK", "CANCEL"):
        raise LocalProtocolError(f"a {request.method} cannot be cancelled")
    to_value = request.headers.get("To") or ""
    return Request("CANCEL", request.uri, _hop_headers(request, to_value, "CANCEL"))


# -------------------------------------------------------------------------------- transactions


class Transaction:
    """What the four machines share: the table interpreter and the timers.

    `peer` is opaque to the transaction: the endpoint stores where the request goes or came
    from. `id` is set when the transaction joins a `TransactionTable`.
    """

    __slots__ = (
        "_intervals",
        "_table",
        "_timers",
        "config",
        "id",
        "key",
        "peer",
        "reliable",
        "request",
        "state",
    )

    KIND: ClassVar[str]
    TABLE: ClassVar[Table]
    TIMERS: ClassVar[StateTimers]
    FOR_INVITE: ClassVar[bool]  # the INVITE machines take INVITE only; the others never it

    def __init__(
        self,
        request: Request,
        key: TransactionKey,
        *,
        reliable: bool,
        config: TimerConfig | None,
        peer: object,
    ) -> None:
        if request.method == "ACK" or (request.method == "INVITE") != self.FOR_INVITE:
            # ACK has no transaction of its own (§17.1.1.3, §17.2.3).
            raise LocalProtocolError(f"a {self.KIND} transaction cannot handle {request.method}")
        self.request = request
        self.key = key
        self.reliable = reliable
        self.config = config if config is not None else TimerConfig()
        self.peer = peer
        self.state = State.INITIAL
        self.id = 0
        self._timers: dict[Timer, float] = {}  # running timer -> deadline
        # retransmission timer -> the interval it was last armed with (made on first use: most
        # transactions never retransmit, and thousands of them live for Timer J's 32 s)
        self._intervals: dict[Timer, float] = _NO_INTERVALS
        self._table: TransactionTable | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.key.method} {self.state.value} {self.key.branch}>"

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def timers(self) -> dict[Timer, float]:
        """The running timers and their deadlines (a copy, for inspection and tests)."""
        return dict(self._timers)

    def next_deadline(self) -> float | None:
        """When `handle_timer` must next be called, or None when no timer runs."""
        return min(self._timers.values()) if self._timers else None

    def handle_timer(self, now: float) -> list[TransactionOutput]:
        """Fire every timer due at `now`, earliest first."""
        out: list[TransactionOutput] = []
        self._fire_due(now, out)
        return out

    def transport_error(self, now: float) -> list[TransactionOutput]:
        """The transport could not deliver a message of this transaction (§17.1.4, §17.2.4)."""
        return self._run(Input.TRANSPORT_ERROR, now, None)

    # --- the interpreter ---------------------------------------------------------------------

    def _run(
        self, event: Input, now: float, message: Request | Response | None
    ) -> list[TransactionOutput]:
        out: list[TransactionOutput] = []
        self._step(event, now, message, out)
        # Zero-length timers (D, I, J, K on reliable transports) fire within the same call.
        if self._timers:
            self._fire_due(now, out)
        return out

    def _step(
        self,
        event: Input,
        now: float,
        message: Request | Response | None,
        out: list[TransactionOutput],
    ) -> None:
        state = self.state
        transition = self.TABLE.get(state, {}).get(event)
        if transition is None:
            raise LocalProtocolError(
                f"{self.KIND} transaction: no transition for {event.value!r} "
                f"in state {state.value}"
            )
        next_state, actions = transition
        for action in actions:
            self._perform(action, event, message, out)
        self.state = next_state
        if next_state is State.TERMINATED:
            self._timers.clear()
            out.append(Terminated(transaction=self))
            if self._table is not None:
                self._table._forget(self)
        elif next_state is not state:
            self._enter(next_state, now)
        else:
            timer = INPUT_TIMER.get(event)
            if timer is not None:
                backoff = BACKOFF.get((state, timer))
                if backoff is not None:
                    previous = self._intervals.get(timer, self.config.t1)
                    self._arm(timer, now, backoff(self.config, previous))

    def _enter(self, state: State, now: float) -> None:
        running = self.TIMERS.get(state, ())
        if self._timers:
            for timer in [t for t in self._timers if t not in running]:
                del self._timers[timer]
        for timer in running:
            if timer not in self._timers:
                interval = first_interval(timer, self.config, reliable=self.reliable)
                if interval is not None:
                    self._arm(timer, now, interval)

    def _arm(self, timer: Timer, now: float, interval: float) -> None:
        deadline = now + interval
        self._timers[timer] = deadline
        if timer in _BACKOFF_TIMERS:
            intervals = self._intervals
            if intervals is _NO_INTERVALS:
                intervals = self._intervals = {}
            intervals[timer] = interval
        if self._table is not None:
            self._table._schedule(self, deadline)

    def _fire_due(self, now: float, out: list[TransactionOutput]) -> None:
        timers = self._timers
        while timers:
            timer = min(timers, key=timers.__getitem__)
            if timers[timer] > now:
                return
            del timers[timer]
            self._step(TIMER_INPUT[timer], now, None, out)

    def _perform(
        self,
        action: Action,
        event: Input,
        message: Request | Response | None,
        out: list[TransactionOutput],
    ) -> None:
        raise NotImplementedError  # pragma: no cover - every machine overrides it

    def _has_deadline(self, deadline: float) -> bool:
        # A plain loop, not any(<genexpr>): this runs on every get_timer() of the endpoint.
        for armed in self._timers.values():  # noqa: SIM110
            if armed == deadline:
                return True
        return False


class ClientTransaction(Transaction):
    """A client transaction: sends a request, matches its responses (§17.1)."""

    __slots__ = ("_request_data",)

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        peer: object = None,
    ) -> None:
        super().__init__(
            request, _request_client_key(request), reliable=reliable, config=config, peer=peer
        )
        self._request_data = b""

    def start(self, now: float) -> list[TransactionOutput]:
        """Send the request for the first time and start the timers."""
        return self._run(Input.START, now, None)

    def receive_response(self, response: Response, now: float) -> list[TransactionOutput]:
        """A response that `client_key` matched to this transaction."""
        status = response.status
        if status < 200:
            event = Input.RECV_1XX
        elif status < 300:
            event = Input.RECV_2XX
        else:
            event = Input.RECV_3XX_6XX
        return self._run(event, now, response)

    def _perform(
        self,
        action: Action,
        event: Input,
        message: Request | Response | None,
        out: list[TransactionOutput],
    ) -> None:
        if action is Action.SEND_REQUEST or action is Action.RETRANSMIT_REQUEST:
            if not self._request_data:
                self._request_data = self.request.to_bytes()
            out.append(
                SendMessage(
                    transaction=self,
                    message=self.request,
                    data=self._request_data,
                    retransmission=action is Action.RETRANSMIT_REQUEST,
                )
            )
        elif action is Action.DELIVER_RESPONSE:
            assert isinstance(message, Response)
            out.append(DeliverResponse(transaction=self, response=message))
        elif action is Action.REPORT_TIMEOUT:
            out.append(TimedOut(transaction=self, timer=INPUT_TIMER[event]))
        elif action is Action.REPORT_TRANSPORT_ERROR:
            out.append(TransportFailed(transaction=self))
        else:
            self._perform_more(action, message, out)

    def _perform_more(
        self, action: Action, message: Request | Response | None, out: list[TransactionOutput]
    ) -> None:
        raise LocalProtocolError(f"{self.KIND} transaction cannot {action.value}")


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 §7.2): Timers A, B, D, M.

    `ack` is the ACK it built for a non-2xx final response (§17.1.1.3); the ACK for a 2xx is
    the TU's (a new transaction, `Dialog.create_ack`).
    """

    __slots__ = ("_ack_data", "ack")

    KIND = "INVITE client"
    FOR_INVITE = True
    TABLE = CLIENT_INVITE
    TIMERS = CLIENT_INVITE_TIMERS

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        peer: object = None,
    ) -> None:
        super().__init__(request, reliable=reliable, config=config, peer=peer)
        self.ack: Request | None = None
        self._ack_data = b""

    @property
    def may_cancel(self) -> bool:
        """A CANCEL may be sent: a provisional response arrived and no final one (§9.1)."""
        return self.state is State.PROCEEDING

    def _perform_more(
        self, action: Action, message: Request | Response | None, out: list[TransactionOutput]
    ) -> None:
        if action is Action.SEND_ACK:
            assert isinstance(message, Response)
            self.ack = build_ack(self.request, message)
            self._ack_data = self.ack.to_bytes()
            out.append(SendMessage(transaction=self, message=self.ack, data=self._ack_data))
        elif action is Action.RESEND_ACK:
            if self.ack is not None:
                out.append(
                    SendMessage(
                        transaction=self, message=self.ack, data=self._ack_data,
                        retransmission=True,
                    )
                )
        else:  # pragma: no cover - the tables name no other action for this machine
            super()._perform_more(action, message, out)


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 §17.1.2): Timers E, F, K."""

    __slots__ = ()

    KIND = "non-INVITE client"
    FOR_INVITE = False
    TABLE = CLIENT_NON_INVITE
    TIMERS = CLIENT_NON_INVITE_TIMERS


class ServerTransaction(Transaction):
    """A server transaction: receives a request, sends the TU's responses (§17.2).

    `key` may be given when the caller computed `server_key(request)` already (the endpoint
    looked for a matching transaction first). `response_peer`, like `peer`, is the endpoint's:
    where its responses go (RFC 3261 §18.2.2), found once."""

    __slots__ = ("_last_data", "last_response", "response_peer")

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        peer: object = None,
        key: TransactionKey | None = None,
    ) -> None:
        super().__init__(
            request, key or server_key(request), reliable=reliable, config=config, peer=peer
        )
        self.last_response: Response | None = None
        self.response_peer: object = None
        self._last_data = b""

    def start(self, now: float) -> list[TransactionOutput]:
        """Take the request that created the transaction: it goes to the TU."""
        return self._run(Input.RECV_REQUEST, now, self.request)

    def receive_request(self, request: Request, now: float) -> list[TransactionOutput]:
        """A request that `server_key` matched to this transaction: a retransmission, or for
        an INVITE its ACK."""
        event = Input.RECV_ACK if request.method == "ACK" else Input.RECV_REQUEST
        return self._run(event, now, request)

    def send_response(self, response: Response, now: float) -> list[TransactionOutput]:
        """The TU's response to the request."""
        status = response.status
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"cannot send a response with status {status}")
        if status < 200:
            event = Input.SEND_1XX
        elif status < 300:
            event = Input.SEND_2XX
        else:
            event = Input.SEND_3XX_6XX
        return self._run(event, now, response)

    def _send(self, response: Response, out: list[TransactionOutput]) -> None:
        self.last_response = response
        self._last_data = response.to_bytes()
        out.append(SendMessage(transaction=self, message=response, data=self._last_data))

    def _perform(
        self,
        action: Action,
        event: Input,
        message: Request | Response | None,
        out: list[TransactionOutput],
    ) -> None:
        if action is Action.SEND_RESPONSE:
            assert isinstance(message, Response)
            self._sent_final(message)
            self._send(message, out)
        elif action is Action.RESEND_RESPONSE:
            if self.last_response is not None:
                out.append(
                    SendMessage(
                        transaction=self,
                        message=self.last_response,
                        data=self._last_data,
                        retransmission=True,
                    )
                )
        elif action is Action.DELIVER_REQUEST:
            assert isinstance(message, Request)
            out.append(DeliverRequest(transaction=self, request=message))
        elif action is Action.REPORT_TIMEOUT:
            out.append(TimedOut(transaction=self, timer=INPUT_TIMER[event]))
        elif action is Action.REPORT_TRANSPORT_ERROR:
            out.append(TransportFailed(transaction=self))
        elif action is Action.SEND_TRYING:
            # §17.2.1: our own 100 Trying (§8.2.6.1: it copies Timestamp, no To tag needed).
            self._send(make_response(self.request, 100), out)
        elif action is Action.STOP_TRYING_TIMER:
            self._timers.pop(Timer.TRYING, None)
        else:  # pragma: no cover - the tables name no other action for servers
            raise LocalProtocolError(f"{self.KIND} transaction cannot {action.value}")

    def _sent_final(self, response: Response) -> None:
        """Hook: the INVITE server remembers the To tag for RFC 2543 ACK matching."""


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction (RFC 3261 §17.2.1, RFC 6026 §7.1): Timers G, H, I, L and the
    200 ms 100 Trying timer."""

    __slots__ = ("response_to_tag",)

    KIND = "INVITE server"
    FOR_INVITE = True
    TABLE = SERVER_INVITE
    TIMERS = SERVER_INVITE_TIMERS

    def __init__(
        self,
        request: Request,
        *,
        reliable: bool,
        config: TimerConfig | None = None,
        peer: object = None,
        key: TransactionKey | None = None,
    ) -> None:
        super().__init__(request, reliable=reliable, config=config, peer=peer, key=key)
        # The To tag of our final response: an RFC 2543 ACK is matched on it (§17.2.3).
        self.response_to_tag: str | None = None

    @property
    def cancellable(self) -> bool:
        """No final response yet: a matching CANCEL should end it with 487 (§9.2). Once a
        final response is out, a CANCEL is still answered 200 but has no other effect."""
        return self.state is State.PROCEEDING

    def _sent_final(self, response: Response) -> None:
        if self.key.legacy is not None and response.status >= 200:
            self.response_to_tag = response.to_addr.tag or ""


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 §17.2.2): Timer J.

    Its two common transitions (the request arrives; the TU's final response goes out over
    UDP) are also written out directly: one of each per REGISTER, OPTIONS or BYE. They do what
    the tables say, and are used only while the tables say it (`_DIRECT_NON_INVITE_SERVER`).
    """

    __slots__ = ()

    KIND = "non-INVITE server"
    FOR_INVITE = False
    TABLE = SERVER_NON_INVITE
    TIMERS = SERVER_NON_INVITE_TIMERS

    def start(self, now: float) -> list[TransactionOutput]:
        if self.state is State.INITIAL and _DIRECT_NON_INVITE_SERVER:
            # Initial --request--> Trying: pass it to the TU; no timer runs in Trying.
            self.state = State.TRYING
            return [DeliverRequest(transaction=self, request=self.request)]
        return super().start(now)

    def send_response(self, response: Response, now: float) -> list[TransactionOutput]:
        state = self.state
        if (
            (state is State.TRYING or state is State.PROCEEDING)
            and 200 <= response.status <= 699
            and not self.reliable
            and _DIRECT_NON_INVITE_SERVER
        ):
            # Trying/Proceeding --final response--> Completed: send it, start Timer J (no
            # timer runs before; J is 64*T1 > 0 over UDP, so nothing fires now).
            self.last_response = response
            data = self._last_data = response.to_bytes()
            self.state = State.COMPLETED
            self._arm(Timer.J, now, _TIMER_J(self.config))  # runs over UDP (not reliable)
            return [SendMessage(transaction=self, message=response, data=data)]
        return super().send_response(response, now)

    def _fire_due(self, now: float, out: list[TransactionOutput]) -> None:
        timers = self._timers
        if self.state is State.COMPLETED and len(timers) == 1 and _DIRECT_NON_INVITE_SERVER:
            deadline = timers.get(Timer.J)
            if deadline is not None and deadline <= now:
                # Completed --Timer J--> Terminated: the retransmission window is over.
                timers.clear()
                self.state = State.TERMINATED
                out.append(Terminated(transaction=self))
                if self._table is not None:
                    self._table._forget(self)
                return
        super()._fire_due(now, out)


_TIMER_J = FIRST_INTERVAL[Timer.J]

# The direct transitions of ServerNonInviteTransaction are what these tables say: checked here,
# so that a change to the tables switches them off rather than making them wrong.
_DIRECT_NON_INVITE_SERVER = (
    SERVER_NON_INVITE[S.INITIAL] == {I.RECV_REQUEST: (S.TRYING, (A.DELIVER_REQUEST,))}
    and all(
        SERVER_NON_INVITE[state].get(event) == (S.COMPLETED, (A.SEND_RESPONSE,))
        for state in (S.TRYING, S.PROCEEDING)
        for event in (I.SEND_2XX, I.SEND_3XX_6XX)
    )
    and not SERVER_NON_INVITE_TIMERS.get(S.TRYING)
    and not SERVER_NON_INVITE_TIMERS.get(S.PROCEEDING)
    and SERVER_NON_INVITE_TIMERS.get(S.COMPLETED) == (Timer.J,)
    and SERVER_NON_INVITE[S.COMPLETED].get(I.TIMER_J) == (S.TERMINATED, ())
    and Timer.J not in _BACKOFF_TIMERS
    and ServerTransaction._sent_final is ServerNonInviteTransaction._sent_final
)


def client_transaction(
    request: Request, *, reliable: bool, config: TimerConfig | None = None, peer: object = None
) -> ClientTransaction:
    """The client transaction for a request we send (never ACK: it has none, §17.1.1.3)."""
    if request.method == "INVITE":
        return ClientInviteTransaction(request, reliable=reliable, config=config, peer=peer)
    return ClientNonInviteTransaction(request, reliable=reliable, config=config, peer=peer)


def server_transaction(
    request: Request,
    *,
    reliable: bool,
    config: TimerConfig | None = None,
    peer: object = None,
    key: TransactionKey | None = None,
) -> ServerTransaction:
    """The server transaction for a new request (never ACK, which matches its INVITE's).
    `key`: its `server_key`, when the caller has it already."""
    if request.method == "INVITE":
        return ServerInviteTransaction(
            request, reliable=reliable, config=config, peer=peer, key=key
        )
    return ServerNonInviteTransaction(
        request, reliable=reliable, config=config, peer=peer, key=key
    )


# ------------------------------------------------------------------------------------- the table


_SLOTS_PER_S = 100  # the timer slots of a TransactionTable are 10 ms wide


class TransactionTable:
    """The live transactions of an endpoint, by key and by id, with their deadlines by time slot.

    A transaction in a table reports to it when it arms a timer and when it terminates, so the
    table stays right whichever method of the transaction the endpoint calls; a terminated
    transaction leaves the table by itself.

    Deadlines are kept in 10 ms slots (a dict of lists, and a heap of the slot numbers): under
    load tens of thousands of timers are armed (Timer F, J, L... run 32 s), and a heap entry per
    timer made each pop cost ~17 tuple comparisons. An entry is appended to its slot, and
    cleaned lazily: one whose transaction left or no longer has that deadline is skipped, and
    the slots are rebuilt from the live timers before such entries pile up. Timers still fire
    exactly at their deadlines, earliest first.
    """

    __slots__ = ("_by_id", "_by_key", "_entries", "_head", "_last_id", "_slot_heap", "_slots")

    def __init__(self) -> None:
        self._by_key: dict[TransactionKey, Transaction] = {}
        self._by_id: dict[int, Transaction] = {}
        self._slots: dict[int, list[tuple[float, Transaction]]] = {}
        self._slot_heap: list[int] = []  # the numbers of the slots in `_slots`
        self._entries = 0  # in all slots
        # The first slot's earliest live entry when `next_deadline` last looked, with the
        # slot's size then: while the slot is still first and as big, and that entry still
        # live, it is still the earliest (entries only go stale or arrive, and none arrived).
        self._head: tuple[int, int, float, Transaction] | None = None
        self._last_id = 0

    def __len__(self) -> int:
        return len(self._by_key)

    def __contains__(self, transaction: object) -> bool:
        return isinstance(transaction, Transaction) and transaction._table is self

    def add(self, transaction: Transaction) -> int:
        """Track `transaction` (before or after its `start`); returns the id it is given."""
        if transaction._table is not None:
            raise LocalProtocolError(f"{transaction!r} is already in a table")
        if transaction.terminated:
            raise LocalProtocolError(f"{transaction!r} is terminated")
        if transaction.key in self._by_key:
            raise LocalProtocolError(f"a transaction with key {transaction.key} already exists")
        self._last_id += 1
        transaction.id = self._last_id
        transaction._table = self
        self._by_key[transaction.key] = transaction
        self._by_id[transaction.id] = transaction
        for deadline in transaction._timers.values():
            self._schedule(transaction, deadline)
        return transaction.id

    def get(self, key: TransactionKey) -> Transaction | None:
        return self._by_key.get(key)

    def transactions(self) -> list[Transaction]:
        """A snapshot of the live transactions."""
        return list(self._by_key.values())

    def by_id(self, transaction_id: int) -> Transaction | None:
        return self._by_id.get(transaction_id)

    def find_server(
        self, request: Request, key: TransactionKey | None = None
    ) -> ServerTransaction | None:
        """The server transaction a received request (a retransmission, or an ACK) belongs to.
        `key`: its `server_key`, when the caller has it already."""
        if key is None:
            key = server_key(request)
        found = self._by_key.get(key)
        if found is None and key.legacy is not None and request.method == "ACK":
            # RFC 2543 ACK: its To tag is the one our response added, while the INVITE was keyed
            # on the To it arrived with (no tag, for a dialog-creating INVITE).
            uri, ack_to_tag, from_tag, call_id, seq, via = key.legacy
            invite_key = key._replace(legacy=(uri, "", from_tag, call_id, seq, via))
            candidate = self._by_key.get(invite_key)
            if (
                isinstance(candidate, ServerInviteTransaction)
                and candidate.response_to_tag == ack_to_tag
            ):
                found = candidate
        return found if isinstance(found, ServerTransaction) else None

    def find_client(self, response: Response) -> ClientTransaction | None:
        """The client transaction a received response belongs to (§17.1.3)."""
        found = self._by_key.get(client_key(response))
        return found if isinstance(found, ClientTransaction) else None

    def find_cancel_target(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a received CANCEL names (§9.2), if still alive."""
        found = self._by_key.get(cancel_target_key(cancel))
        return found if isinstance(found, ServerInviteTransaction) else None

    def remove(self, transaction: Transaction) -> None:
        """Stop tracking a transaction that has not terminated (the endpoint gives up on it)."""
        if transaction._table is self:
            self._forget(transaction)

    def next_deadline(self) -> float | None:
        """The earliest deadline of any transaction in the table (the endpoint's timer). A
        timer cancelled since this slot was last cleaned may still be named: a wake-up that
        finds nothing due, as cheap as the check it saves."""
        heap = self._slot_heap
        head = self._head
        if (head is not None and heap and head[0] == heap[0]
                and head[1] == len(self._slots[head[0]])
                and head[3]._table is self and head[3]._has_deadline(head[2])):
            return head[2]
        while heap:
            slot = heap[0]
            entries = self._slots[slot]
            live = [entry for entry in entries if entry[1]._table is self
                    and entry[1]._has_deadline(entry[0])]
            self._entries -= len(entries) - len(live)
            if live:
                self._slots[slot] = live
                earliest = min(live, key=_deadline_of)
                self._head = (slot, len(live), earliest[0], earliest[1])
                return earliest[0]
            heapq.heappop(heap)
            del self._slots[slot]
        self._head = None
        return None

    def handle_timer(self, now: float) -> list[TransactionOutput]:
        """Fire every timer due at `now` in every transaction, earliest first."""
        out: list[TransactionOutput] = []
        heap = self._slot_heap
        slots = self._slots
        current = int(now * _SLOTS_PER_S)  # the slot `now` falls in: only part of it is due
        while heap and heap[0] <= current:
            slot = heap[0]
            entries = slots[slot]
            if slot == current:
                due = [entry for entry in entries if entry[0] <= now]
                if not due:
                    break
                later = [entry for entry in entries if entry[0] > now]
                if later:
                    slots[slot] = later
                else:
                    heapq.heappop(heap)
                    del slots[slot]
            else:
                heapq.heappop(heap)
                del slots[slot]
                due = entries
            self._entries -= len(due)
            self._head = None
            due.sort(key=_deadline_of)  # stable: equal deadlines fire in the order armed
            for deadline, transaction in due:
                if transaction._table is self and transaction._has_deadline(deadline):
                    transaction._fire_due(now, out)  # what its handle_timer(now) does, in place
        return out

    # --- called by the transactions -------------------------------------------------------

    def _schedule(self, transaction: Transaction, deadline: float) -> None:
        slot = int(deadline * _SLOTS_PER_S)
        entries = self._slots.get(slot)
        if entries is None:
            self._slots[slot] = [(deadline, transaction)]
            heapq.heappush(self._slot_heap, slot)
        else:
            entries.append((deadline, transaction))
        self._entries += 1
        # Entries of cancelled timers linger until their time; rebuild before they pile up.
        if self._entries > 64 + 8 * len(self._by_key):
            self._rebuild()

    def _forget(self, transaction: Transaction) -> None:
        transaction._table = None
        if self._by_key.get(transaction.key) is transaction:
            del self._by_key[transaction.key]
        self._by_id.pop(transaction.id, None)

    def _rebuild(self) -> None:
        self._slots = {}
        self._slot_heap = []
        self._entries = 0
        self._head = None
        for transaction in self._by_key.values():
            for deadline in transaction._timers.values():
                self._schedule(transaction, deadline)


def _deadline_of(entry: tuple[float, Transaction]) -> float:
    return entry[0]


__all__ = [
    "BACKOFF",
    "CLIENT_INVITE",
    "CLIENT_INVITE_TIMERS",
    "CLIENT_NON_INVITE",
    "CLIENT_NON_INVITE_TIMERS",
    "MAGIC_COOKIE",
    "SERVER_INVITE",
    "SERVER_INVITE_TIMERS",
    "SERVER_NON_INVITE",
    "SERVER_NON_INVITE_TIMERS",
    "Action",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "DeliverRequest",
    "DeliverResponse",
    "Input",
    "SendMessage",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "Terminated",
    "TimedOut",
    "Transaction",
    "TransactionKey",
    "TransactionOutput",
    "TransactionTable",
    "TransportFailed",
    "build_ack",
    "build_cancel",
    "cancel_target_key",
    "client_key",
    "client_transaction",
    "server_key",
    "server_transaction",
]
