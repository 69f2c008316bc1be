"""The B2BUA: every call is an A-leg (we are the callee's UAS) and B-legs (we are the UAC).

A new INVITE is answered 100 at once, its caller identified (a trunk by source address, anyone
else by digest, 407), routed (webhook, static routes, or the registrar), and sent on as one or
more B-leg INVITEs in groups: the targets of a group are forked in parallel (first answer wins,
the others get CANCEL), groups are tried one after another (failover). Provisional responses go
back to the caller with early media, the winning 2xx is ACKed and answered to the caller, whose
2xx we retransmit until its ACK (RFC 3261 §13.3.1.4; RFC 6026 leaves that to the TU). BYE, CANCEL,
re-INVITE, UPDATE and INFO are carried across; ring and call-duration limits and RTP inactivity
end calls. Media is anchored by `edge.pbx.media.CallMedia` unless `media_proxy = "none"`.

Everything here runs on the event loop of the SIP server; one `Call` object owns a call's state,
and the `CallManager` finds it by transaction id or dialog id. What a call leaves behind (the call
record, the CDR) goes to the injected `CallSink` off the SIP path.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from edge.pbx.auth import Authenticated, Drop, outcome_response
from edge.pbx.bindings import Target
from edge.pbx.core import SipTransport
from edge.pbx.media import (
    CallMedia,
    LegName,
    MediaRelay,
    NegotiatedCodec,
    negotiated_codec,
    with_direction,
)
from edge.pbx.registrar import Authenticator
from edge.pbx.routing import RouteDecision, RouteTarget
from edge.pbx.users import UserRecord
from edge.sip.dialog import Dialog, DialogId, DialogState, request_dialog_id
from edge.sip.digest import build_authorization, choose_challenge, parse_challenge
from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.events import (
    CancelReceived,
    Event,
    Peer,
    RequestReceived,
    ResponseReceived,
    TransactionFailed,
)
from edge.sip.grammar import format_host_port, is_ip_address
from edge.sip.message import Request, Response, make_response, new_request
from edge.sip.sdp import SessionDescription
from edge.sip.transaction import build_cancel
from edge.sip.uri import SipUri, TelUri, parse_uri
from edge.sip.via import MAGIC_COOKIE, Via

log = logging.getLogger("sdpbx.calls")

CallPhase = Literal["trying", "ringing", "answered", "completed", "failed"]
Direction = Literal["inbound", "internal", "outbound"]

# Headers never copied from the caller's INVITE to a B-leg: they belong to one hop or one dialog,
# or we set them ourselves (RFC 3261 §16.6 lists what a proxy rewrites; a B2BUA rewrites more).
_NOT_COPIED = frozenset({
    "via", "from", "to", "call-id", "cseq", "contact", "record-route", "route", "max-forwards",
    "content-length", "content-type", "authorization", "proxy-authorization", "proxy-require",
    "require", "supported", "allow", "session-expires", "min-se", "rseq", "rack",
})
# In-dialog requests carried across to the other leg (OPTIONS is answered by the endpoint).
RELAYED_METHODS = ("INVITE", "UPDATE", "INFO")
SDP = "application/sdp"


class CallRouter(Protocol):
    async def route(
        self,
        request: Request,
        *,
        source_addr: str,
        direction: Direction,
        source_trunk: str | None,
    ) -> RouteDecision: ...


class TargetLookup(Protocol):
    """The registrar, as the B2BUA uses it."""

    def aor_for(self, uri: Any) -> str | None: ...
    async def lookup(self, aor: str) -> list[Target]: ...


class UserLookup(Protocol):
    async def lookup(self, username: str, realm: str, request_uri: str) -> Any: ...


class Trunks(Protocol):
    def identify(self, ip: str) -> str | None: ...
    def credentials(self, name: str) -> tuple[str, str] | None: ...


class TrunkLimits(Protocol):
    def acquire(self, name: str, now: float) -> str | None: ...
    def release(self, name: str) -> None: ...


class LimitObserver(Protocol):
    def trunk_limited(self, trunk: str, limit: str) -> None: ...


class CallSink(Protocol):
    """Where calls report themselves: the call-state writer, the CDR writer, metrics."""

    def call_changed(self, call: Call) -> None: ...
    def call_ended(self, call: Call) -> None: ...


class Resolver(Protocol):
    async def __call__(self, host: str, port: int) -> str: ...


class CallHooks(Protocol):
    """What a call the edge places for an application (`CallManager.originate`) tells it."""

    def ringing(self, call: Call) -> None: ...
    def answered(self, call: Call) -> None: ...
    def ended(self, call: Call) -> None: ...


class MediaTerminator(Protocol):
    """The media engine, as the B2BUA uses it: `attach` makes the edge itself the party that
    a relay leg talks to (prompts, DTMF, recording, conferences); `detach` gives the leg back
    to plain relaying (a `connect` bridged it to another party)."""

    def attach(self, session: Any, leg: LegName, codec: NegotiatedCodec) -> Any: ...
    def detach(self, endpoint: Any, *, hangup: bool = False) -> None: ...


class ApplicationStarter(Protocol):
    """Makes the application of a call the router said to `answer` (its `CallHooks`)."""

    def __call__(self, call: Call, decision: RouteDecision) -> CallHooks: ...


@dataclass(slots=True, frozen=True, kw_only=True)
class Origination:
    """A call to place (the outbound-call API): who to ring and on whose behalf."""

    call_id: str
    to: str  # an extension, a number (routed) or a SIP URI
    from_user: str  # the caller ID presented
    domain: str  # completes bare numbers into SIP URIs
    ring_time_s: float | None = None
    max_duration_s: float | None = None
    record: bool = False
    headers: tuple[tuple[str, str], ...] = ()
    version: int = 0  # the call record's version, when someone else created it


@dataclass(slots=True, frozen=True)
class ConnectResult:
    """How a `connect` ended: the party answered (and is bridged), or the final status."""

    answered: bool
    status: int
    reason: str


@dataclass(slots=True, frozen=True, kw_only=True)
class CallSettings:
    """The `[proxy]` values the B2BUA needs (the router may override the last three per call)."""

    max_ring_time_s: float = 60.0
    max_call_duration_s: float = 14_400.0  # 0 = no limit
    rtp_timeout_s: float = 60.0  # 0 = never
    t1: float = 0.5
    t2: float = 4.0
    user_agent: str = "sdpbx"
    advertised_host: str | None = None  # external_ip
    record_all: bool = False  # [recording] enabled + auto_start
    recording_dir: str | None = None  # where recordings are written while the call runs


@dataclass(slots=True, init=False, unsafe_hash=True)
class Destination:
    """One B-leg to try: where the INVITE goes and what it says."""

    request_uri: Final[str]
    to_uri: Final[str]
    peer: Final[Peer]
    route: Final[tuple[str, ...]]
    trunk: Final[str | None]
    label: Final[str]  # what hangupMessages call this target

    def __init__(
        self, *, request_uri: str, to_uri: str, peer: Peer, route: tuple[str, ...] = (),
        trunk: str | None = None, label: str = "",
    ) -> None:
        self.request_uri = request_uri
        self.to_uri = to_uri
        self.peer = peer
        self.route = route
        self.trunk = trunk
        self.label = label


@dataclass(slots=True, init=False, unsafe_hash=True)
class LegEvent:
    timestamp: Final[float]
    leg: Final[str]
    event: Final[str]

    def __init__(self, timestamp: float, leg: str, event: str) -> None:
        self.timestamp = timestamp
        self.leg = leg
        self.event = event


@dataclass(slots=True, eq=False, init=False)
class OutboundLeg:
    """One B-leg attempt (one INVITE client transaction, later one dialog)."""

    call: Call
    destination: Destination
    invite: Request
    transaction_id: int
    leg_id: str
    state: Literal["calling", "proceeding", "answered", "failed", "cancelled"]
    dialog: Dialog | None
    cancel_pending: bool
    auth_tried: bool
    ack: Request | None
    final_status: int | None
    extra: tuple[tuple[str, str], ...]  # headers this leg's INVITE carries (and a retry)

    def __init__(
        self, *, call: Call, destination: Destination, invite: Request, transaction_id: int,
        leg_id: str,
        state: Literal["calling", "proceeding", "answered", "failed", "cancelled"] = "calling",
        dialog: Dialog | None = None, cancel_pending: bool = False, auth_tried: bool = False,
        ack: Request | None = None, final_status: int | None = None,
        extra: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.call = call
        self.destination = destination
        self.invite = invite
        self.transaction_id = transaction_id
        self.leg_id = leg_id
        self.state = state
        self.dialog = dialog
        self.cancel_pending = cancel_pending
        self.auth_tried = auth_tried
        self.ack = ack
        self.final_status = final_status
        self.extra = extra


@dataclass(slots=True, eq=False, init=False)
class _Relayed:
    """An in-dialog request carried from one leg to the other, waiting for its answer."""

    call: Call
    origin: LegName
    server_transaction_id: int
    request: Request

    def __init__(
        self, *, call: Call, origin: LegName, server_transaction_id: int, request: Request,
    ) -> None:
        self.call = call
        self.origin = origin
        self.server_transaction_id = server_transaction_id
        self.request = request


@dataclass(slots=True, eq=False, init=False)
class _LocalOffer:
    """A re-INVITE of our own to one leg (hold / resume), waiting for its answer."""

    call: Call
    leg: LegName
    on_hold: bool

    def __init__(self, *, call: Call, leg: LegName, on_hold: bool) -> None:
        self.call = call
        self.leg = leg
        self.on_hold = on_hold


@dataclass(slots=True, eq=False, init=False)
class _Retransmit:
    """A 2xx to an INVITE we keep sending until its ACK (RFC 3261 §13.3.1.4)."""

    transaction_id: int
    response: Response
    interval: float
    deadline: float
    handle: asyncio.TimerHandle | None

    def __init__(
        self, *, transaction_id: int, response: Response, interval: float, deadline: float,
        handle: asyncio.TimerHandle | None = None,
    ) -> None:
        self.transaction_id = transaction_id
        self.response = response
        self.interval = interval
        self.deadline = deadline
        self.handle = handle


@dataclass(slots=True, eq=False, init=False)
class Call:
    """One call's whole state. Times are Unix seconds (wall clock) for records and CDRs."""

    call_id: str
    invite: Request
    server_transaction_id: int
    peer: Peer
    a_tag: str
    direction: Direction
    caller: str
    callee: str
    from_number: str
    to_number: str
    source_trunk: str | None
    username: str | None
    phase: CallPhase
    created_at: float
    ring_at: float | None
    answered_at: float | None
    ended_at: float | None
    decision: RouteDecision | None
    groups: list[list[Destination]]
    legs: list[OutboundLeg]
    answered: OutboundLeg | None
    a_dialog: Dialog | None
    media: CallMedia | None
    record: bool
    timers: dict[str, asyncio.TimerHandle]
    retransmit: _Retransmit | None
    pending_ack_sdp: OutboundLeg | None  # late offer: B's ACK waits for A's answer
    relaying: _Relayed | None
    local_offer: _LocalOffer | None  # our own re-INVITE in progress
    transferring: OutboundLeg | None  # a blind transfer's new B-leg, ringing
    trunks_held: list[str]
    status_code: int | None
    hangup_reason: str | None
    hangup_messages: list[dict[str, Any]]
    last_error: tuple[int, str] | None
    timeline: list[LegEvent]
    recording: Any  # what the media layer returned for the recording, if any
    version: int  # the call record's version in the store (the sink keeps it)
    sdp_sent: dict[str, bytes]  # last SDP we sent each leg
    held: set[str]  # legs we put on hold (command)
    store_data: dict[str, Any]  # kept in the call record
    # A call placed for an application: nobody is on leg a until a `connect` puts a party
    # there (a UAC dialog of ours); the application hears of the call through `hooks`.
    origin: Literal["sip", "api"]
    hooks: CallHooks | None
    extra_headers: tuple[tuple[str, str], ...]
    ring_time_s: float | None
    max_duration_s: float | None
    remote_sdp: dict[str, bytes]  # the last SDP each leg sent
    connecting: OutboundLeg | None
    connect_result: asyncio.Future[ConnectResult] | None
    # The leg whose party the edge itself talks to (an application's call), its codec and
    # the media engine's endpoint there; a `connect` hands the leg back to the relay.
    app_leg: LegName | None
    codec: NegotiatedCodec | None
    endpoint: Any

    def __init__(
        self, *, call_id: str, invite: Request, server_transaction_id: int, peer: Peer, a_tag: str,
        direction: Direction = "internal", caller: str = "", callee: str = "",
        from_number: str = "", to_number: str = "", source_trunk: str | None = None,
        username: str | None = None, phase: CallPhase = "trying", created_at: float = 0.0,
        ring_at: float | None = None, answered_at: float | None = None,
        ended_at: float | None = None, decision: RouteDecision | None = None,
        groups: list[list[Destination]] | None = None, legs: list[OutboundLeg] | None = None,
        answered: OutboundLeg | None = None, a_dialog: Dialog | None = None,
        media: CallMedia | None = None, record: bool = False,
        timers: dict[str, asyncio.TimerHandle] | None = None,
        retransmit: _Retransmit | None = None, pending_ack_sdp: OutboundLeg | None = None,
        relaying: _Relayed | None = None, local_offer: _LocalOffer | None = None,
        transferring: OutboundLeg | None = None, trunks_held: list[str] | None = None,
        status_code: int | None = None, hangup_reason: str | None = None,
        hangup_messages: list[dict[str, Any]] | None = None,
        last_error: tuple[int, str] | None = None, timeline: list[LegEvent] | None = None,
        recording: Any = None, version: int = 0, sdp_sent: dict[str, bytes] | None = None,
        held: set[str] | None = None, store_data: dict[str, Any] | None = None,
        origin: Literal["sip", "api"] = "sip", hooks: CallHooks | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (), ring_time_s: float | None = None,
        max_duration_s: float | None = None, remote_sdp: dict[str, bytes] | None = None,
        connecting: OutboundLeg | None = None,
        connect_result: asyncio.Future[ConnectResult] | None = None,
        app_leg: LegName | None = None, codec: NegotiatedCodec | None = None, endpoint: Any = None,
    ) -> None:
        self.call_id = call_id
        self.invite = invite
        self.server_transaction_id = server_transaction_id
        self.peer = peer
        self.a_tag = a_tag
        self.direction = direction
        self.caller = caller
        self.callee = callee
        self.from_number = from_number
        self.to_number = to_number
        self.source_trunk = source_trunk
        self.username = username
        self.phase = phase
        self.created_at = created_at
        self.ring_at = ring_at
        self.answered_at = answered_at
        self.ended_at = ended_at
        self.decision = decision
        self.groups = list() if groups is None else groups
        self.legs = list() if legs is None else legs
        self.answered = answered
        self.a_dialog = a_dialog
        self.media = media
        self.record = record
        self.timers = dict() if timers is None else timers
        self.retransmit = retransmit
        self.pending_ack_sdp = pending_ack_sdp
        self.relaying = relaying
        self.local_offer = local_offer
        self.transferring = transferring
        self.trunks_held = list() if trunks_held is None else trunks_held
        self.status_code = status_code
        self.hangup_reason = hangup_reason
        self.hangup_messages = list() if hangup_messages is None else hangup_messages
        self.last_error = last_error
        self.timeline = list() if timeline is None else timeline
        self.recording = recording
        self.version = version
        self.sdp_sent = dict() if sdp_sent is None else sdp_sent
        self.held = set() if held is None else held
        self.store_data = dict() if store_data is None else store_data
        self.origin = origin
        self.hooks = hooks
        self.extra_headers = extra_headers
        self.ring_time_s = ring_time_s
        self.max_duration_s = max_duration_s
        self.remote_sdp = dict() if remote_sdp is None else remote_sdp
        self.connecting = connecting
        self.connect_result = connect_result
        self.app_leg = app_leg
        self.codec = codec
        self.endpoint = endpoint

    @property
    def ended(self) -> bool:
        return self.phase in ("completed", "failed")

    def note(self, leg: str, event: str, now: float) -> None:
        self.timeline.append(LegEvent(now, leg, event))


class CallManager:
    """The INVITE/BYE/UPDATE/INFO handler and the owner of every call on this edge."""

    def __init__(
        self,
        transport: SipTransport,
        *,
        local_address: Callable[[str], tuple[str, int]],
        authenticator: Authenticator | None,
        router: CallRouter,
        registrar: TargetLookup,
        users: UserLookup | None = None,
        realm: Callable[[Request], str] | None = None,
        trunks: Trunks | None = None,
        limits: TrunkLimits | None = None,
        media: MediaRelay | None = None,
        sink: CallSink | None = None,
        settings: CallSettings | None = None,
        wall_clock: Callable[[], float] = time.time,
        token: Callable[[], str] | None = None,
        resolve: Resolver | None = None,
        observer: LimitObserver | None = None,
        terminator: MediaTerminator | None = None,
        applications: ApplicationStarter | None = None,
    ) -> None:
        self._transport = transport
        self._local = local_address
        self._auth = authenticator
        self._router = router
        self._registrar = registrar
        self._users = users
        self._realm = realm
        self._trunks = trunks
        self._limits = limits
        self._relay = media
        self._sink = sink
        self.settings = settings or CallSettings()
        self._wall = wall_clock
        self._token = token or (lambda: secrets.token_hex(8))
        self._resolve = resolve or _resolve_host
        self._observer = observer
        self._terminator = terminator
        self._applications = applications
        self.calls: dict[str, Call] = {}  # by the caller's Call-ID
        self._by_server: dict[int, Call] = {}  # the caller's INVITE transaction
        self._by_client: dict[int, OutboundLeg | _Relayed | _LocalOffer] = {}
        self._by_dialog: dict[DialogId, tuple[Call, LegName]] = {}
        self._by_b_call_id: dict[str, OutboundLeg] = {}
        self._loop = asyncio.get_running_loop()
        self.started = 0

    # ================================================================ requests

    async def handle(self, event: RequestReceived) -> None:
        request = event.request
        transaction_id = event.transaction_id
        assert transaction_id is not None
        if request.to_addr.tag:
            self._in_dialog(request, event.peer, transaction_id)
        elif request.method == "INVITE":
            await self._new_call(request, event.peer, transaction_id)
        else:
            # BYE/UPDATE/INFO outside any dialog (RFC 3261 §12.2.2).
            self._reply(request, transaction_id, 481)

    def _reply(
        self,
        request: Request,
        transaction_id: int,
        status: int,
        reason: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        self._transport.respond(
            transaction_id,
            make_response(request, status, reason, to_tag=self._token(), headers=headers),
        )

    # ---------------------------------------------------------------- a new call

    async def _new_call(self, request: Request, peer: Peer, transaction_id: int) -> None:
        call_id = request.call_id
        if call_id in self.calls:
            # A second INVITE with the same Call-ID and no To tag: a merged request (RFC 3261
            # §8.2.2.2) or a looped one.
            self._reply(request, transaction_id, 482)
            return
        # 100 at once: the caller stops retransmitting while we authenticate and route.
        self._transport.respond(transaction_id, make_response(request, 100))
        now = self._wall()
        forwards = request.max_forwards
        if forwards is not None and forwards <= 0:
            self._reply(request, transaction_id, 483)
            return
        call = Call(
            call_id=call_id, invite=request, server_transaction_id=transaction_id, peer=peer,
            a_tag=self._token(), created_at=now,
        )
        call.note("a", "invite", now)
        trunk = self._trunks.identify(peer.address[0]) if self._trunks is not None else None
        if trunk is not None:
            call.direction, call.source_trunk = "inbound", trunk
        else:
            if self._auth is None:
                self._reply(request, transaction_id, 403, "Caller not identified")
                return
            outcome = await self._auth.authenticate(
                request, peer, now, monotonic=self._transport.now()
            )
            if isinstance(outcome, Drop):
                self._transport.drop(transaction_id)
                return
            if not isinstance(outcome, Authenticated):
                self._transport.respond(
                    transaction_id, outcome_response(request, outcome, self._token())
                )
                return
            call.username = outcome.username
        self._describe_parties(call)
        self.calls[call_id] = call
        self._by_server[transaction_id] = call
        self.started += 1
        # Routing runs in a task of its own: `PbxCore` starts handlers eagerly, outside any
        # task, and the router's HTTP client needs one (asyncio.timeout).
        task = self._loop.create_task(self._route_safely(call))
        task.add_done_callback(_log_failure)

    async def _route_safely(self, call: Call) -> None:
        try:
            await self._route(call)
        except SipParseError as exc:
            self._fail(call, exc.status, exc.reason, "failed")
        except Exception:
            log.exception("routing a call failed", extra={"call_id": call.call_id})
            self._fail(call, 500, "Internal error", "failed")

    def _describe_parties(self, call: Call) -> None:
        request = call.invite
        from_uri, to_uri = request.from_addr.uri, request.uri
        call.from_number = _user_of(from_uri)
        call.to_number = _user_of(request.to_addr.uri) or _user_of(to_uri)
        call.caller = call.username or call.from_number
        call.callee = _user_of(to_uri) or call.to_number

    async def _route(self, call: Call) -> None:
        request = call.invite
        decision = await self._router.route(
            request,
            source_addr=f"{call.peer.address[0]}:{call.peer.address[1]}",
            direction=call.direction,
            source_trunk=call.source_trunk,
        )
        if call.ended:
            return  # cancelled while the router thought about it
        call.decision = decision
        call.record = call.record or (
            self.settings.record_all if decision.record is None else bool(decision.record)
        )
        action = decision.action
        if action == "spam":
            log.info("call dropped as spam", extra={"call_id": call.call_id})
            self._drop(call)
            return
        if action in ("reject", "abort", "busy"):
            status = 486 if action == "busy" else (decision.status or 403)
            self._fail(call, status, decision.reason, "rejected")
            return
        if action == "answer":
            await self._answer_by_application(call, decision)
            return
        if decision.rewrite.callee_final:
            call.callee = decision.rewrite.callee_final
        targets: Sequence[RouteTarget] = decision.targets
        if action == "not_handled" or not targets:
            await self._route_to_user(call)
            return
        if decision.trunk and call.direction == "internal":
            call.direction = "outbound"
        groups: list[list[Destination]] = []
        for target in targets:
            group = await self._destinations(call, target)
            if decision.strategy == "parallel":
                if not groups:
                    groups.append([])
                groups[0].extend(group)
            elif group:
                groups.append(group)
        if not groups or not any(groups):
            self._fail(call, 480, "No reachable target", "failed")
            return
        call.groups = groups
        self._start_media_and_ring(call)

    async def _answer_by_application(self, call: Call, decision: RouteDecision) -> None:
        """The router said `answer`: the edge takes the call itself (200 with its own SDP at the
        relay port facing the caller, the media engine on that leg) and the application runs
        its steps; a `connect` step later brings in another party on leg b."""
        if self._applications is None or self._relay is None or self._terminator is None:
            self._fail(call, 501, "Call applications need the media relay", "failed")
            return
        if not call.invite.body:
            # Our offer would go in the 200 and the caller's answer in its ACK: not yet.
            self._fail(call, 488, "An SDP offer is required", "failed")
            return
        call.media = CallMedia(self._relay, self._media_address(call))
        try:
            sdp, codec = await call.media.answer("a", call.invite.body, int(call.created_at))
        except SipParseError as exc:
            self._fail(call, exc.status, exc.reason, "failed")
            return
        if call.ended:
            return
        call.hooks = self._applications(call, decision)
        now = self._wall()
        call.answered_at = now
        call.ring_at = call.ring_at or now
        call.phase = "answered"
        call.note("a", "answer", now)
        self._terminate(call, "a", codec)
        self._respond_a(call, 200, None, body=sdp)
        limit = decision.timeout_s or self.settings.max_call_duration_s
        if limit:
            call.timers["duration"] = self._loop.call_later(
                limit, self._hang_up, call, "bySystem"
            )
        self._changed(call)
        call.hooks.answered(call)

    def _terminate(self, call: Call, leg: LegName, codec: NegotiatedCodec | None) -> None:
        """The edge becomes the party `leg` talks to."""
        call.app_leg = leg
        call.codec = codec
        if self._terminator is not None and codec is not None and call.media is not None \
                and call.media.session is not None:
            call.endpoint = self._terminator.attach(call.media.session, leg, codec)

    def _release(self, call: Call, *, hangup: bool = False) -> None:
        """The leg goes back to plain relaying (`hangup`: the call ends)."""
        endpoint, call.endpoint = call.endpoint, None
        call.app_leg = None
        if endpoint is not None and self._terminator is not None:
            try:
                self._terminator.detach(endpoint, hangup=hangup)
            except Exception:
                log.exception("media endpoint not detached", extra={"call_id": call.call_id})

    async def _route_to_user(self, call: Call) -> None:
        """No route: the Request-URI names a user of ours (or nobody: 404, offline: 480)."""
        uri = call.invite.request_uri
        aor = self._registrar.aor_for(uri) if isinstance(uri, SipUri) else None
        targets = await self._registrar.lookup(aor) if aor else []
        if call.ended:
            return
        if not targets:
            known = await self._user_exists(call, uri)
            if call.ended:
                return
            if known:
                self._fail(call, 480, "Temporarily Unavailable", "failed")
            else:
                self._fail(call, 404, "Not Found", "failed")
            return
        call.groups = [[self._registered_destination(t) for t in targets]]
        self._start_media_and_ring(call)

    async def _user_exists(self, call: Call, uri: Any) -> bool:
        if self._users is None or not isinstance(uri, SipUri) or not uri.user:
            return False
        realm = self._realm(call.invite) if self._realm is not None else uri.host
        found = await self._users.lookup(uri.user, realm, str(uri))
        return isinstance(found, UserRecord)

    async def _destinations(self, call: Call, target: RouteTarget) -> list[Destination]:
        if target.aor:
            return [self._registered_destination(t) for t in
                    await self._registrar.lookup(target.aor)]
        uri = parse_uri(target.uri)
        if not isinstance(uri, SipUri):
            log.info("target %s is not a SIP URI, skipped", target.uri,
                     extra={"call_id": call.call_id})
            return []
        transport = (uri.transport or "udp").upper()
        port = uri.port or 5060
        try:
            host = await self._resolve(uri.host, port)
        except OSError as exc:
            call.hangup_messages.append({"code": 503, "reason": f"DNS: {exc}",
                                         "target": target.uri})
            return []
        if transport != "UDP":
            # Outbound stream connections are not opened by this edge yet: use UDP.
            transport = "UDP"
        return [Destination(
            request_uri=str(uri), to_uri=str(uri.without_params("transport")),
            peer=Peer(transport=transport, address=(host, port)), trunk=target.trunk,
            label=target.uri,
        )]

    def _registered_destination(self, target: Target) -> Destination:
        aor = target.aor if target.aor.startswith(("sip:", "sips:")) else f"sip:{target.aor}"
        return Destination(
            request_uri=target.contact, to_uri=aor, peer=target.peer, route=target.path,
            label=target.aor,
        )

    def _start_media_and_ring(self, call: Call) -> None:
        decision = call.decision
        ring = call.ring_time_s or (decision.max_ring_time_s if decision else None) or (
            self.settings.max_ring_time_s
        )
        call.timers["ring"] = self._loop.call_later(ring, self._ring_timeout, call)
        task = self._loop.create_task(self._next_group(call))
        task.add_done_callback(_log_failure)

    async def _next_group(self, call: Call) -> None:
        """Send the INVITEs of the next group of destinations, or give up."""
        while call.groups and not call.ended:
            group = call.groups.pop(0)
            body = call.invite.body
            if (body or call.origin == "api") and self._relay is not None and call.media is None:
                call.media = CallMedia(self._relay, self._media_address(call))
            if call.origin == "api" and call.media is not None:
                body = await call.media.offer(int(call.created_at))
            elif body and call.media is not None:
                try:
                    body = await call.media.rewrite("a", body)
                except SipParseError as exc:
                    self._fail(call, 488, f"Bad SDP: {exc.reason}", "failed")
                    return
            if call.ended:
                return
            sent = 0
            for destination in group:
                if self._send_invite(call, destination, body):
                    sent += 1
            if sent:
                return
        if not call.ended and not self._pending_legs(call):
            self._fail_from_legs(call)

    def _media_address(self, call: Call) -> str:
        if self.settings.advertised_host:
            return self.settings.advertised_host
        return self._local(call.peer.transport)[0]

    def _send_invite(self, call: Call, destination: Destination, body: bytes) -> bool:
        now = self._wall()
        trunk = destination.trunk
        if trunk is not None and self._limits is not None:
            refused = self._limits.acquire(trunk, self._transport.now())
            if refused is not None:
                if self._observer is not None:
                    self._observer.trunk_limited(trunk, refused)
                call.hangup_messages.append({"code": 503, "reason": f"trunk {refused}",
                                             "target": destination.label})
                return False
            call.trunks_held.append(trunk)
        invite = self._build_invite(call, destination, body, extra=call.extra_headers)
        transaction_id = self._transport.send_request(invite, destination.peer)
        leg = OutboundLeg(call=call, destination=destination, invite=invite,
                          transaction_id=transaction_id, leg_id=f"b{len(call.legs) + 1}",
                          extra=call.extra_headers)
        call.legs.append(leg)
        call.note(leg.leg_id, "invite", now)
        self._by_client[transaction_id] = leg
        self._by_b_call_id[invite.call_id] = leg
        return True

    def _build_invite(
        self, call: Call, destination: Destination, body: bytes, *, cseq: int = 1,
        call_id: str | None = None, from_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (), from_user: str | None = None,
    ) -> Request:
        transport = destination.peer.transport
        host, port = self._local(transport)
        decision = call.decision
        source = call.invite
        caller = source.from_addr.without_params("tag")
        if decision is not None and decision.rewrite.caller_final and isinstance(
            caller.uri, SipUri
        ) and decision.rewrite.caller_final != caller.uri.user:
            caller = caller.replace(uri=caller.uri.replace(user=decision.rewrite.caller_final))
        if from_user and isinstance(caller.uri, SipUri):
            caller = caller.replace(uri=caller.uri.replace(user=from_user))
        headers: list[tuple[str, str]] = [("Route", route) for route in destination.route]
        if decision is not None and decision.with_original_headers:
            headers.extend(
                (name, value) for name, value in source.headers
                if name.lower() not in _NOT_COPIED
            )
        if decision is not None:
            headers.extend(decision.headers)
        headers.append(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"))
        headers.append(("User-Agent", self.settings.user_agent))
        headers.extend(extra)
        if body:
            headers.append(("Content-Type", source.headers.get("Content-Type") or SDP))
        forwards = source.max_forwards
        contact_params = "" if transport == "UDP" else f";transport={transport.lower()}"
        return new_request(
            "INVITE",
            destination.request_uri,
            via=Via.build(transport, host, port, MAGIC_COOKIE + self._token()),
            from_=caller.with_tag(from_tag or self._token()),
            to=f"<{destination.to_uri}>",
            call_id=call_id or f"{self._token()}{self._token()}",
            cseq=cseq,
            max_forwards=70 if forwards is None else min(70, forwards - 1),
            contact=f"<sip:{format_host_port(host, port)}{contact_params}>",
            headers=headers,
            body=body,
        )

    # ---------------------------------------------------------------- in-dialog requests

    def _in_dialog(self, request: Request, peer: Peer, transaction_id: int) -> None:
        found = self._by_dialog.get(request_dialog_id(request))
        if found is None:
            self._reply(request, transaction_id, 481)
            return
        call, leg = found
        dialog = call.a_dialog if leg == "a" else (
            call.answered.dialog if call.answered is not None else None
        )
        if dialog is None:
            self._reply(request, transaction_id, 481)
            return
        refused = dialog.receive_request(request)
        if refused is not None:
            self._reply(request, transaction_id, refused)
            return
        method = request.method
        if method == "BYE":
            self._transport.respond(transaction_id, make_response(request, 200))
            call.note(leg, "bye", self._wall())
            if call.answered_at is None:
                # A BYE in an early dialog ends the attempt like a CANCEL would (§15).
                self._cancel_call(call, "canceled")
            else:
                self._hang_up(call, "byCaller" if leg == "a" else "byCallee", spare=leg)
            return
        if method not in RELAYED_METHODS:
            self._reply(request, transaction_id, 501)
            return
        if call.answered_at is None or call.ended:
            self._reply(request, transaction_id, 491 if method != "INFO" else 481)
            return
        if (call.relaying is not None or call.local_offer is not None) and method in (
            "INVITE", "UPDATE"
        ):
            # RFC 3261 §14.2: an offer crossing one of ours.
            self._reply(request, transaction_id, 491)
            return
        if leg == call.app_leg and self._other_dialog(call, leg) is None:
            self._answer_locally(call, leg, request, transaction_id)
            return
        task = self._loop.create_task(self._relay_request(call, leg, request, transaction_id))
        task.add_done_callback(_log_failure)

    async def _relay_request(
        self, call: Call, origin: LegName, request: Request, transaction_id: int
    ) -> None:
        other = self._other_dialog(call, origin)
        if other is None:
            self._reply(request, transaction_id, 481)
            return
        dialog, peer = other
        body = request.body
        content_type = request.headers.get("Content-Type")
        if body and call.media is not None and _is_sdp(content_type):
            try:
                body = await call.media.rewrite(origin, body)
            except SipParseError as exc:
                self._reply(request, transaction_id, 488, exc.reason)
                return
        headers: list[tuple[str, str]] = []
        if body:
            headers.append(("Content-Type", content_type or SDP))
        for name in ("Info-Package", "Content-Disposition", "Event"):
            value = request.headers.get(name)
            if value is not None:
                headers.append((name, value))
        try:
            outgoing = dialog.create_request(request.method, headers=headers, body=body)
        except LocalProtocolError:
            self._reply(request, transaction_id, 481)
            return
        relayed = _Relayed(call=call, origin=origin, server_transaction_id=transaction_id,
                           request=request)
        if request.method in ("INVITE", "UPDATE"):
            call.relaying = relayed
        if body:
            call.sdp_sent["b" if origin == "a" else "a"] = body
        self._by_client[self._transport.send_request(outgoing, peer)] = relayed

    def _answer_locally(
        self, call: Call, leg: LegName, request: Request, transaction_id: int
    ) -> None:
        """An in-dialog request while nobody is on the other side (an application's call
        before `connect`): INFO is taken, an offer is answered with our last SDP to that leg
        (the relay follows the party's new address)."""
        body = b""
        headers: list[tuple[str, str]] = []
        if request.method == "INFO" and call.endpoint is not None:
            for digit in info_digits(request):
                call.endpoint.feed_info_digit(digit)
        if request.method in ("INVITE", "UPDATE"):
            if request.body and call.media is not None and _is_sdp(
                request.headers.get("Content-Type")
            ):
                call.remote_sdp[leg] = request.body
                task = self._loop.create_task(call.media.rewrite(leg, request.body))
                task.add_done_callback(_log_rewrite_failure)
            body = call.sdp_sent.get(leg, b"") if request.body else b""
            headers.append(("Contact", self._contact_for(leg, call)))
        if body:
            headers.append(("Content-Type", SDP))
        response = make_response(request, 200, headers=headers, body=body)
        self._transport.respond(transaction_id, response)
        if request.method == "INVITE":
            self._retransmit_2xx(call, transaction_id, response, origin=leg)

    def _other_dialog(self, call: Call, origin: LegName) -> tuple[Dialog, Peer] | None:
        if origin == "a":
            leg = call.answered
            if leg is None or leg.dialog is None or leg.dialog.terminated:
                return None
            return leg.dialog, leg.destination.peer
        if call.a_dialog is None or call.a_dialog.terminated:
            return None
        return call.a_dialog, call.peer

    # ================================================================ other events

    def on_event(self, event: Event) -> None:
        """Responses, CANCELs, ACKs and transaction failures (`PbxCore` hands them here)."""
        if isinstance(event, ResponseReceived):
            self._response(event)
        elif isinstance(event, CancelReceived):
            call = self._by_server.get(event.invite_transaction_id)
            if call is not None:
                call.note("a", "cancel", self._wall())
                self._cancel_call(call, "canceled")
        elif isinstance(event, RequestReceived):
            if event.request.method == "ACK":
                self._ack(event.request)
        elif isinstance(event, TransactionFailed):
            self._transaction_failed(event)

    # ---------------------------------------------------------------- responses

    def _response(self, event: ResponseReceived) -> None:
        response = event.response
        if event.transaction_id is None:
            # A 2xx retransmission after the INVITE transaction ended (RFC 6026 §8.4).
            leg = self._by_b_call_id.get(response.call_id)
            if leg is not None:
                self._b_2xx_again(leg, response)
            return
        owner = self._by_client.get(event.transaction_id)
        if isinstance(owner, OutboundLeg):
            self._leg_response(owner, response)
        elif isinstance(owner, _Relayed):
            self._relayed_response(owner, response, event.transaction_id)
        elif isinstance(owner, _LocalOffer):
            self._local_offer_response(owner, response, event.transaction_id)

    def _leg_response(self, leg: OutboundLeg, response: Response) -> None:
        status = response.status
        if response.cseq.method != "INVITE":
            return
        if status == 100:
            return
        if status < 200:
            self._leg_provisional(leg, response)
        elif status < 300:
            self._by_client.pop(leg.transaction_id, None)
            self._leg_answered(leg, response)
        else:
            self._by_client.pop(leg.transaction_id, None)
            if status in (401, 407) and self._retry_with_credentials(leg, response):
                return
            self._leg_failed(leg, status, response.reason)

    def _leg_provisional(self, leg: OutboundLeg, response: Response) -> None:
        call = leg.call
        if leg.state == "calling":
            leg.state = "proceeding"
        if (leg is call.transferring or leg is call.connecting) and not call.ended:
            return  # the caller was answered long ago: nothing to tell it
        if leg.cancel_pending or _settled(call):
            self._cancel_leg(leg)
            return
        now = self._wall()
        if call.ring_at is None:
            call.ring_at = now
        if call.phase == "trying":
            call.phase = "ringing"
            self._changed(call)
            if call.hooks is not None:
                call.hooks.ringing(call)
        call.note(leg.leg_id, "ringing" if response.status == 180 else "progress", now)
        status = response.status
        body = response.body
        if body and _is_sdp(response.headers.get("Content-Type")):
            task = self._loop.create_task(self._early_media(call, status, body))
            task.add_done_callback(_log_failure)
            return
        self._respond_a(call, 180 if status == 180 else status, response.reason)

    async def _early_media(self, call: Call, status: int, body: bytes) -> None:
        if call.media is not None:
            try:
                body = await call.media.rewrite("b", body)
            except SipParseError:
                body = b""
        if _settled(call):
            return
        self._respond_a(call, status, None, body=body)

    def _leg_answered(self, leg: OutboundLeg, response: Response) -> None:
        call = leg.call
        try:
            dialog = Dialog.create_uac(
                leg.invite, response, new_branch=self._branch,
            )
        except (SipParseError, LocalProtocolError) as exc:
            log.info("unusable 2xx from %s: %s", leg.destination.label, exc,
                     extra={"call_id": call.call_id})
            dialog = None
        if dialog is None:
            self._leg_failed(leg, 502, "Bad 2xx")
            return
        leg.dialog = dialog
        if leg is call.transferring and not call.ended:
            self._transfer_answered(leg, response)
            return
        if leg is call.connecting and not call.ended:
            self._connect_answered(leg, response)
            return
        if _settled(call) or leg.state in ("cancelled", "failed"):
            # Lost the race (another fork answered, or the caller gave up): ACK and BYE.
            self._send_ack(leg, response, b"")
            self._send_bye(dialog, leg.destination.peer)
            leg.state = "cancelled"
            return
        leg.state = "answered"
        call.answered = leg
        if leg.invite.body:
            call.sdp_sent["b"] = leg.invite.body
        now = self._wall()
        call.answered_at = now
        if call.ring_at is None:
            call.ring_at = now
        call.phase = "answered"
        call.note(leg.leg_id, "answer", now)
        self._by_dialog[dialog.id] = (call, "b")
        self._cancel_timer(call, "ring")
        for other in call.legs:
            if other is not leg and other.state in ("calling", "proceeding"):
                self._cancel_leg(other)
        call.groups.clear()
        task = self._loop.create_task(self._answer_a(call, leg, response))
        task.add_done_callback(_log_failure)

    async def _answer_a(self, call: Call, leg: OutboundLeg, response: Response) -> None:
        body = response.body
        if body:
            call.remote_sdp["b"] = body
        late_offer = call.origin == "sip" and not call.invite.body and bool(body)
        if body and call.media is None and self._relay is not None:
            call.media = CallMedia(self._relay, self._media_address(call))
        if body and call.media is not None:
            try:
                body = await call.media.rewrite("b", body)
            except SipParseError as exc:
                log.info("bad SDP in 2xx: %s", exc.reason, extra={"call_id": call.call_id})
                body = b""
        if late_offer:
            call.pending_ack_sdp = leg  # A's ACK carries the answer for B's ACK
        else:
            self._send_ack(leg, response, b"")
        if call.ended:
            return
        if call.origin == "api":
            answer = call.remote_sdp.get("b")
            codec = None
            if answer:
                try:
                    codec = negotiated_codec(SessionDescription.parse(answer))
                except SipParseError:
                    codec = None
            self._terminate(call, "b", codec)
        if call.record and call.media is not None and call.media.session is not None:
            self._start_recording(call)
        self._respond_a(call, 200, None, body=body)
        limit = call.max_duration_s or (call.decision.timeout_s if call.decision else None) or (
            self.settings.max_call_duration_s
        )
        if limit:
            call.timers["duration"] = self._loop.call_later(
                limit, self._hang_up, call, "bySystem"
            )
        self._changed(call)
        if call.hooks is not None:
            call.hooks.answered(call)

    def _start_recording(self, call: Call) -> None:
        start = getattr(self._relay, "start_recording", None)
        directory = self.settings.recording_dir
        if start is None or directory is None or call.media is None or call.media.session is None:
            return
        name = "".join(c if c.isalnum() or c in "._-" else "_" for c in call.call_id)[:120]
        try:
            start(call.media.session, f"{directory}/{name}-{self._token()}.wav")
        except Exception:
            log.exception("recording could not start", extra={"call_id": call.call_id})

    def _send_ack(self, leg: OutboundLeg, response: Response, body: bytes) -> None:
        dialog = leg.dialog
        if dialog is None:
            return
        headers = [("Content-Type", SDP)] if body else []
        leg.ack = dialog.create_ack(leg.invite.cseq.seq, headers=headers, body=body)
        self._transport.send_stateless(leg.ack, leg.destination.peer)

    def _b_2xx_again(self, leg: OutboundLeg, response: Response) -> None:
        if leg.ack is not None:
            self._transport.send_stateless(leg.ack, leg.destination.peer)
        elif leg.call.pending_ack_sdp is not leg and leg is not leg.call.answered:
            # A fork's 2xx crossing our CANCEL: ACK and end that dialog.
            self._leg_answered(leg, response)

    def _leg_failed(self, leg: OutboundLeg, status: int, reason: str) -> None:
        call = leg.call
        was_cancelled = leg.state == "cancelled"
        leg.state = "cancelled" if was_cancelled else "failed"
        leg.final_status = status
        call.note(leg.leg_id, f"failed:{status}", self._wall())
        if not was_cancelled:
            call.hangup_messages.append(
                {"code": status, "reason": reason, "target": leg.destination.label}
            )
        if leg is call.connecting:
            self._connect_done(call, ConnectResult(False, status, reason))
            return
        if leg is call.transferring:
            # The transfer target did not answer: the caller has nobody left.
            call.transferring = None
            self._cancel_timer(call, "transfer")
            self._hang_up(call, "failed", error=(status, f"transfer failed: {reason}"))
            return
        if _settled(call):
            return
        if self._pending_legs(call):
            return
        if status >= 600 and not was_cancelled:
            self._fail(call, status, reason, "rejected")  # §16.7: a 6xx ends the search
            return
        if call.groups:
            task = self._loop.create_task(self._next_group(call))
            task.add_done_callback(_log_failure)
            return
        self._fail_from_legs(call)

    def _pending_legs(self, call: Call) -> bool:
        return any(leg.state in ("calling", "proceeding") for leg in call.legs)

    def _fail_from_legs(self, call: Call) -> None:
        """Every B-leg failed: answer the caller with the most telling status (§16.7.6)."""
        codes = [m["code"] for m in call.hangup_messages if isinstance(m.get("code"), int)]
        status, reason = 480, "Temporarily Unavailable"
        if codes:
            best = min(codes, key=_failure_rank)
            reasons = [m["reason"] for m in call.hangup_messages if m["code"] == best]
            status, reason = best, reasons[0] if reasons else ""
        if status in (401, 407):
            status, reason = 503, "Trunk authentication failed"
        elif status == 487:
            status, reason = 480, "No answer"
        hangup = {486: "rejected", 600: "rejected", 603: "rejected"}.get(status, "failed")
        self._fail(call, status, reason or None, hangup)

    def _retry_with_credentials(self, leg: OutboundLeg, response: Response) -> bool:
        """A carrier challenged our INVITE: answer once with the trunk's credentials."""
        trunk = leg.destination.trunk
        if leg.auth_tried or trunk is None or self._trunks is None or leg.call.ended:
            return False
        credentials = self._trunks.credentials(trunk)
        if credentials is None:
            return False
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        try:
            challenge = choose_challenge(
                parse_challenge(value) for value in response.headers.get_all(header)
            )
            username, password = credentials
            authorization = build_authorization(
                challenge, method="INVITE", uri=leg.destination.request_uri,
                username=username, password=password, cnonce=self._token(),
            )
        except SipParseError as exc:
            log.info("trunk %s challenge not answerable: %s", trunk, exc.reason,
                     extra={"call_id": leg.call.call_id})
            return False
        call = leg.call
        invite = self._build_invite(
            call, leg.destination, leg.invite.body, cseq=leg.invite.cseq.seq + 1,
            call_id=leg.invite.call_id, from_tag=leg.invite.from_addr.tag,
            extra=[*leg.extra, (answer, str(authorization))],
            from_user=_user_of(leg.invite.from_addr.uri) or None,
        )
        leg.invite = invite
        leg.auth_tried = True
        leg.state = "calling"
        leg.transaction_id = self._transport.send_request(invite, leg.destination.peer)
        self._by_client[leg.transaction_id] = leg
        return True

    def _relayed_response(self, relayed: _Relayed, response: Response, tid: int) -> None:
        status = response.status
        if status < 200:
            return
        self._by_client.pop(tid, None)
        call = relayed.call
        if call.relaying is relayed:
            call.relaying = None
        request = relayed.request
        other: LegName = "b" if relayed.origin == "a" else "a"
        if response.cseq.method == "INVITE" and status < 300:
            dialog_peer = self._other_dialog(call, relayed.origin)
            if dialog_peer is not None:
                dialog, peer = dialog_peer
                dialog.receive_response(response)
                self._transport.send_stateless(dialog.create_ack(response.cseq.seq), peer)
        task = self._loop.create_task(
            self._answer_relayed(call, relayed, request, response, other)
        )
        task.add_done_callback(_log_failure)
        if status in (408, 481) and not call.ended:
            self._hang_up(call, "failed")

    async def _answer_relayed(
        self, call: Call, relayed: _Relayed, request: Request, response: Response,
        other: LegName,
    ) -> None:
        body = response.body
        headers: list[tuple[str, str]] = []
        if body and call.media is not None and _is_sdp(response.headers.get("Content-Type")):
            try:
                body = await call.media.rewrite(other, body)
            except SipParseError:
                body = b""
        if body:
            headers.append(("Content-Type", response.headers.get("Content-Type") or SDP))
        dialog = call.a_dialog if relayed.origin == "a" else (
            call.answered.dialog if call.answered else None
        )
        if response.status < 300 and request.method in ("INVITE", "UPDATE"):
            headers.append(("Contact", self._contact_for(relayed.origin, call)))
        answer = make_response(request, response.status, response.reason, headers=headers,
                               body=body)
        if body:
            call.sdp_sent[relayed.origin] = body
        self._transport.respond(relayed.server_transaction_id, answer)
        if dialog is not None and request.method == "INVITE" and response.status < 300:
            self._retransmit_2xx(call, relayed.server_transaction_id, answer,
                                 origin=relayed.origin)

    # ---------------------------------------------------------------- the A-leg's answers

    def _contact_for(self, leg: LegName, call: Call) -> str:
        transport = call.peer.transport if leg == "a" else (
            call.answered.destination.peer.transport if call.answered else "UDP"
        )
        host, port = self._local(transport)
        params = "" if transport == "UDP" else f";transport={transport.lower()}"
        return f"<sip:{format_host_port(host, port)}{params}>"

    def _respond_a(self, call: Call, status: int, reason: str | None, *,
                   body: bytes = b"") -> None:
        if call.ended or call.origin == "api":
            return  # an application's call has no caller to answer
        headers: list[tuple[str, str]] = []
        if status < 300:
            headers.append(("Contact", self._contact_for("a", call)))
            headers.append(("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO"))
        if body:
            headers.append(("Content-Type", SDP))
        response = make_response(call.invite, status, reason, to_tag=call.a_tag,
                                 headers=headers, body=body)
        if body:
            call.sdp_sent["a"] = body
        if call.a_dialog is None and 100 < status < 300:
            host, port = self._local(call.peer.transport)
            try:
                call.a_dialog = Dialog.create_uas(
                    call.invite, call.a_tag, new_branch=self._branch, via_host=host,
                    via_port=port, via_transport=call.peer.transport,
                    local_contact=self._contact_for("a", call),
                )
            except SipParseError as exc:
                self._fail(call, exc.status, exc.reason, "failed")
                return
            self._by_dialog[call.a_dialog.id] = (call, "a")
        if call.a_dialog is not None:
            call.a_dialog.response_sent(response)
        self._transport.respond(call.server_transaction_id, response)
        if status >= 200:
            self._by_server.pop(call.server_transaction_id, None)
        if 200 <= status < 300:
            self._retransmit_2xx(call, call.server_transaction_id, response, origin="a")

    def _retransmit_2xx(self, call: Call, transaction_id: int, response: Response, *,
                        origin: LegName) -> None:
        """RFC 3261 §13.3.1.4: resend the 2xx at T1, 2T1... (at most T2) until the ACK; with
        no ACK after 64*T1, end the dialog with a BYE."""
        if call.peer.reliable and origin == "a":
            return  # a reliable transport delivers it; the ACK may still come, or not
        if origin == "b":
            leg = call.answered
            if leg is None or leg.destination.peer.reliable:
                return
        self._stop_retransmit(call)
        t1 = self.settings.t1
        state = _Retransmit(transaction_id=transaction_id, response=response, interval=t1,
                            deadline=self._loop.time() + 64 * t1)
        call.retransmit = state
        state.handle = self._loop.call_later(t1, self._resend_2xx, call, state)

    def _resend_2xx(self, call: Call, state: _Retransmit) -> None:
        if call.retransmit is not state or call.ended:
            return
        if self._loop.time() >= state.deadline:
            call.retransmit = None
            log.info("no ACK for our 2xx: ending the call", extra={"call_id": call.call_id})
            self._hang_up(call, "failed", error=(408, "No ACK"))
            return
        self._transport.respond(state.transaction_id, state.response)
        state.interval = min(state.interval * 2, self.settings.t2)
        state.handle = self._loop.call_later(state.interval, self._resend_2xx, call, state)

    def _stop_retransmit(self, call: Call) -> None:
        state = call.retransmit
        if state is not None:
            if state.handle is not None:
                state.handle.cancel()
            call.retransmit = None

    def _ack(self, request: Request) -> None:
        found = self._by_dialog.get(request_dialog_id(request))
        if found is None:
            return
        call, leg = found
        self._stop_retransmit(call)
        pending = call.pending_ack_sdp
        if leg == "a" and pending is not None:
            call.pending_ack_sdp = None
            task = self._loop.create_task(self._late_answer(call, pending, request.body))
            task.add_done_callback(_log_failure)

    async def _late_answer(self, call: Call, leg: OutboundLeg, body: bytes) -> None:
        if body and call.media is not None:
            try:
                body = await call.media.rewrite("a", body)
            except SipParseError:
                body = b""
        dialog = leg.dialog
        if dialog is None:
            return
        headers = [("Content-Type", SDP)] if body else []
        leg.ack = dialog.create_ack(leg.invite.cseq.seq, headers=headers, body=body)
        if body:
            call.sdp_sent["b"] = body
        self._transport.send_stateless(leg.ack, leg.destination.peer)

    # ---------------------------------------------------------------- failures and timers

    def _transaction_failed(self, event: TransactionFailed) -> None:
        owner = self._by_client.pop(event.transaction_id, None)
        if isinstance(owner, OutboundLeg):
            status = 408 if event.reason == "timeout" else 503
            self._leg_failed(owner, status, f"Transaction {event.reason}")
        elif isinstance(owner, _LocalOffer):
            owner.call.local_offer = None
            self._hang_up(owner.call, "failed", error=(408, "No answer to our re-INVITE"))
        elif isinstance(owner, _Relayed):
            call = owner.call
            if call.relaying is owner:
                call.relaying = None
            self._reply(owner.request, owner.server_transaction_id, 408)
            self._hang_up(call, "failed", error=(408, "Peer not answering in dialog"))
        else:
            unacked = self._by_server.get(event.transaction_id)
            if unacked is not None:
                self._hang_up(unacked, "failed", error=(408, "No ACK"))

    def _ring_timeout(self, call: Call) -> None:
        call.timers.pop("ring", None)
        if _settled(call):
            return
        for leg in call.legs:
            if leg.state in ("calling", "proceeding"):
                self._cancel_leg(leg)
        call.groups.clear()
        self._fail(call, 480, "No answer", "noAnswer")

    def _cancel_timer(self, call: Call, name: str) -> None:
        handle = call.timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    # ---------------------------------------------------------------- ending calls

    def _cancel_leg(self, leg: OutboundLeg) -> None:
        """CANCEL a pending B-leg (§9.1: only once it answered provisionally)."""
        if leg.state == "calling":
            leg.cancel_pending = True
            return
        if leg.state != "proceeding":
            return
        leg.state = "cancelled"
        leg.cancel_pending = False
        self._transport.send_request(build_cancel(leg.invite), leg.destination.peer)

    def _cancel_call(self, call: Call, reason: str) -> None:
        """The caller gave up before an answer: 487 to it, CANCEL every B-leg."""
        if call.ended:
            return
        if call.answered is not None:
            self._hang_up(call, "byCaller")
            return
        for leg in call.legs:
            self._cancel_leg(leg)
        call.groups.clear()
        self._fail(call, 487, None, reason)

    def _fail(self, call: Call, status: int, reason: str | None, hangup: str) -> None:
        """End a call that was never answered, answering the caller `status`."""
        if call.ended:
            return
        call.status_code = status
        call.hangup_reason = hangup
        if status >= 500 or hangup == "failed":
            call.last_error = (status, reason or "")
        self._respond_a(call, status, reason)
        self._finish(call, "failed")

    def _drop(self, call: Call) -> None:
        call.status_code = None
        call.hangup_reason = "rejected"
        if call.origin == "sip":
            self._transport.drop(call.server_transaction_id)
        self._by_server.pop(call.server_transaction_id, None)
        self._finish(call, "failed")

    def _hang_up(self, call: Call, reason: str, *, spare: LegName | None = None,
                 error: tuple[int, str] | None = None) -> None:
        """End an answered call: BYE to each leg (but the one that sent BYE)."""
        if call.ended:
            return
        if call.answered_at is None:
            self._cancel_call(call, reason)
            return
        call.hangup_reason = reason
        call.status_code = 200
        if error is not None:
            call.last_error = error
        if call.transferring is not None:
            self._cancel_leg(call.transferring)
            call.transferring = None
        if call.connecting is not None:
            self._cancel_leg(call.connecting)
            self._connect_done(call, ConnectResult(False, 487, "Call ended"))
        if spare != "a" and call.a_dialog is not None and not call.a_dialog.terminated:
            self._send_bye(call.a_dialog, call.peer)
        leg = call.answered
        if spare != "b" and leg is not None and leg.dialog is not None \
                and not leg.dialog.terminated:
            self._send_bye(leg.dialog, leg.destination.peer)
        self._finish(call, "completed")

    def hold(self, call_id: str, leg: LegName, on: bool) -> str | None:
        """Put `leg` on hold (a re-INVITE offering our last SDP as sendonly, RFC 3264 §8.4;
        the media towards it stopped) or resume it (sendrecv). None when the re-INVITE went
        out, else why it could not."""
        call = self.calls.get(call_id)
        if call is None:
            return "no such call"
        if call.answered_at is None or call.ended:
            return "the call is not answered"
        if call.relaying is not None or call.local_offer is not None:
            return "an offer is in progress on this call"
        found = self._leg_dialog(call, leg)
        body = call.sdp_sent.get(leg)
        if found is None or not body:
            return "that leg has no dialog or SDP to re-offer"
        dialog, peer = found
        offer = with_direction(body, "sendonly" if on else "sendrecv")
        try:
            request = dialog.create_request("INVITE", headers=[("Content-Type", SDP)],
                                            body=offer)
        except LocalProtocolError as exc:
            return str(exc)
        call.sdp_sent[leg] = offer
        state = _LocalOffer(call=call, leg=leg, on_hold=on)
        call.local_offer = state
        (call.held.add if on else call.held.discard)(leg)
        if call.media is not None:
            call.media.set_muted(leg, on)
        call.note(leg, "hold" if on else "unhold", self._wall())
        self._by_client[self._transport.send_request(request, peer)] = state
        return None

    def send_dtmf(self, call_id: str, leg: LegName, digits: str, *, duration_ms: int = 160,
                  gap_s: float = 0.1) -> str | None:
        """Send `digits` to the party on `leg`, one INFO each (application/dtmf-relay, the
        de-facto format of SIP phones and gateways), `gap_s` apart so the party takes them in
        order. None when started, else why not."""
        call = self.calls.get(call_id)
        if call is None:
            return "no such call"
        if call.answered_at is None or call.ended:
            return "the call is not answered"
        if self._leg_dialog(call, leg) is None:
            return "that leg has no dialog"
        task = self._loop.create_task(self._send_digits(call, leg, digits, duration_ms, gap_s))
        task.add_done_callback(_log_failure)
        return None

    async def _send_digits(self, call: Call, leg: LegName, digits: str, duration_ms: int,
                           gap_s: float) -> None:
        for index, digit in enumerate(digits):
            if index:
                await asyncio.sleep(gap_s + duration_ms / 1000)
            found = self._leg_dialog(call, leg)
            if call.ended or found is None or found[0].terminated:
                return
            dialog, peer = found
            body = f"Signal={digit}\r\nDuration={duration_ms}\r\n".encode()
            try:
                info = dialog.create_request(
                    "INFO", headers=[("Content-Type", "application/dtmf-relay")], body=body)
            except LocalProtocolError:
                return
            self._transport.send_request(info, peer)

    def _leg_dialog(self, call: Call, leg: LegName) -> tuple[Dialog, Peer] | None:
        if leg == "a":
            return None if call.a_dialog is None else (call.a_dialog, call.peer)
        answered = call.answered
        if answered is None or answered.dialog is None:
            return None
        return answered.dialog, answered.destination.peer

    def _local_offer_response(self, state: _LocalOffer, response: Response, tid: int) -> None:
        if response.status < 200:
            return
        self._by_client.pop(tid, None)
        call = state.call
        if call.local_offer is state:
            call.local_offer = None
        found = self._leg_dialog(call, state.leg)
        if found is None:
            return
        dialog, peer = found
        if response.status >= 300:
            log.info("re-INVITE to %s refused: %d", state.leg, response.status,
                     extra={"call_id": call.call_id})
            if response.status in (408, 481):
                self._hang_up(call, "failed", error=(response.status, response.reason))
            return
        dialog.receive_response(response)
        self._transport.send_stateless(dialog.create_ack(response.cseq.seq), peer)
        body = response.body
        if body and call.media is not None and _is_sdp(response.headers.get("Content-Type")):
            # The held party's answer may move its media: the relay follows.
            task = self._loop.create_task(call.media.rewrite(state.leg, body))
            task.add_done_callback(_log_rewrite_failure)

    async def transfer(self, call_id: str, target: str) -> str | None:
        """Blind transfer of the caller to `target` (an extension of ours, a SIP URI, or a
        number through the routes and trunks): BYE to the callee, an INVITE to the target
        offering the same anchored SDP, and once it answers the relay sends the caller's media
        there. The caller is not re-INVITEd: its media stays anchored at our port, so this
        needs the relay. None when started, else why not."""
        call = self.calls.get(call_id)
        if call is None:
            return "no such call"
        if call.answered_at is None or call.ended or call.answered is None:
            return "the call is not answered"
        if call.media is None or call.media.session is None:
            return "blind transfer needs the call's media relayed (media_proxy = \"all\")"
        if call.relaying or call.local_offer or call.transferring:
            return "an offer or a transfer is in progress on this call"
        body = call.sdp_sent.get("b")
        if not body:
            return "no SDP to offer the transfer target"
        # An extension of ours (its registrations), a SIP URI, or a number (the routes).
        destinations = await self._targets_of(call, target)
        if not destinations:
            return f"transfer target {target!r} is not reachable"
        if call.ended or call.transferring is not None:
            return "the call changed meanwhile"
        old = call.answered
        if old.dialog is not None and not old.dialog.terminated:
            self._send_bye(old.dialog, old.destination.peer)
        call.note(old.leg_id, "transferred", self._wall())
        call.media.set_muted("b", True)  # nothing to send to the callee that left
        destination = destinations[0]
        invite = self._build_invite(call, destination, body)
        leg = OutboundLeg(call=call, destination=destination, invite=invite,
                          transaction_id=self._transport.send_request(invite, destination.peer),
                          leg_id=f"b{len(call.legs) + 1}")
        call.legs.append(leg)
        call.transferring = leg
        self._by_client[leg.transaction_id] = leg
        self._by_b_call_id[invite.call_id] = leg
        call.note(leg.leg_id, "invite", self._wall())
        call.timers["transfer"] = self._loop.call_later(
            self.settings.max_ring_time_s, self._transfer_timeout, call, leg)
        return None

    def _transfer_answered(self, leg: OutboundLeg, response: Response) -> None:
        call = leg.call
        assert leg.dialog is not None
        self._cancel_timer(call, "transfer")
        call.transferring = None
        old = call.answered
        if old is not None and old.dialog is not None:
            self._by_dialog.pop(old.dialog.id, None)
        leg.state = "answered"
        call.answered = leg
        self._by_dialog[leg.dialog.id] = (call, "b")
        call.note(leg.leg_id, "answer", self._wall())
        self._send_ack(leg, response, b"")
        if call.media is not None:
            task = self._loop.create_task(self._transfer_media(call, response.body))
            task.add_done_callback(_log_failure)
        self._changed(call)

    async def _transfer_media(self, call: Call, answer: bytes) -> None:
        """The new callee's address replaces the old one's in the relay, then media flows."""
        media = call.media
        if media is None:
            return
        if answer:
            try:
                await media.rewrite("b", answer)
            except SipParseError as exc:
                log.info("transfer target's SDP not usable: %s", exc.reason,
                         extra={"call_id": call.call_id})
        if not call.ended:
            media.set_muted("b", False)

    def _transfer_timeout(self, call: Call, leg: OutboundLeg) -> None:
        call.timers.pop("transfer", None)
        if call.transferring is leg and not call.ended:
            self._cancel_leg(leg)
            call.transferring = None
            self._hang_up(call, "failed", error=(480, "transfer target did not answer"))

    # ---------------------------------------------------------------- calls for applications

    async def originate(self, spec: Origination, hooks: CallHooks | None = None) -> Call:
        """Place a call for an application (the outbound-call API): ring `spec.to` (a user of
        ours, a number through the routes, or a SIP URI) with our own SDP offer; once it
        answers, `hooks.answered` runs the application, which may `connect` a second party.
        Raises `ValueError` for a call that cannot be placed at all."""
        if spec.call_id in self.calls:
            raise ValueError(f"call {spec.call_id!r} exists on this edge")
        if self._relay is None:
            raise ValueError('calls placed by the edge need media_proxy = "all"')
        host, port = self._local("UDP")
        to_uri = _as_uri(spec.to, spec.domain)
        from_uri = _as_uri(spec.from_user, spec.domain)
        tag = self._token()
        invite = new_request(
            "INVITE", to_uri,
            via=Via.build("UDP", host, port, self._branch()),
            from_=f"<{from_uri}>;tag={tag}", to=f"<{to_uri}>", call_id=spec.call_id, cseq=1,
            max_forwards=70, contact=f"<sip:{format_host_port(host, port)}>",
        )
        now = self._wall()
        call = Call(
            call_id=spec.call_id, invite=invite, server_transaction_id=-1,
            peer=Peer(transport="UDP", address=("0.0.0.0", 0)), a_tag=tag, created_at=now,
            direction="outbound", origin="api", hooks=hooks, extra_headers=spec.headers,
            ring_time_s=spec.ring_time_s, max_duration_s=spec.max_duration_s,
            record=spec.record, version=spec.version,
        )
        call.note("a", "originate", now)
        self._describe_parties(call)
        self.calls[spec.call_id] = call
        self.started += 1
        self._changed(call)
        task = self._loop.create_task(self._route_safely(call))
        task.add_done_callback(_log_failure)
        return call

    async def connect(
        self, call_id: str, target: str, *, from_user: str | None = None,
        ring_time_s: float | None = None, headers: Sequence[tuple[str, str]] = (),
    ) -> ConnectResult:
        """Bridge an application's answered call to `target` (an extension, a number through
        the routes, or a SIP URI): an INVITE offering the callee's media (anchored) to the new
        party, who joins on leg a once it answers. Returns when it answered or failed."""
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return ConnectResult(False, 481, "No such call")
        party = call.app_leg
        if party is None or call.answered_at is None or call.media is None:
            return ConnectResult(False, 409, "Only an answered application call can connect")
        free: LegName = "a" if party == "b" else "b"
        if self._leg_dialog(call, free) is not None or call.connecting is not None:
            return ConnectResult(False, 409, "The call is connected already")
        destinations = await self._targets_of(call, target)
        if not destinations:
            return ConnectResult(False, 404, f"{target} is not reachable")
        if call.ended or call.connecting is not None:
            return ConnectResult(False, 409, "The call changed meanwhile")
        # The new party is offered what the application's party speaks, at the relay ports
        # facing the free leg; once it answers, the relay joins the two.
        body = await call.media.offer(int(self._wall()), free, codec=call.codec)
        destination = destinations[0]
        invite = self._build_invite(call, destination, body, extra=headers, from_user=from_user)
        leg = OutboundLeg(call=call, destination=destination, invite=invite,
                          transaction_id=self._transport.send_request(invite, destination.peer),
                          leg_id=f"b{len(call.legs) + 1}", extra=tuple(headers))
        call.legs.append(leg)
        call.connecting = leg
        self._by_client[leg.transaction_id] = leg
        self._by_b_call_id[invite.call_id] = leg
        call.note(leg.leg_id, "invite", self._wall())
        result: asyncio.Future[ConnectResult] = self._loop.create_future()
        call.connect_result = result
        call.timers["connect"] = self._loop.call_later(
            ring_time_s or self.settings.max_ring_time_s, self._connect_timeout, call, leg)
        return await result

    async def _targets_of(self, call: Call, target: str) -> list[Destination]:
        """Where `target` is: the registrations of a user of ours, else a SIP URI as it is,
        else a number through the router (static routes, trunks)."""
        uri = parse_uri(_as_uri(target, _domain_of(call)))
        aor = self._registrar.aor_for(uri) if isinstance(uri, SipUri) else None
        if aor is not None:
            found = [self._registered_destination(t) for t in await self._registrar.lookup(aor)]
            if found:
                return found
        if target.startswith(("sip:", "sips:")):
            return await self._destinations(call, RouteTarget(uri=target))
        host, port = self._local("UDP")
        request = new_request(
            "INVITE", str(uri), via=Via.build("UDP", host, port, self._branch()),
            from_=str(call.invite.from_addr), to=f"<{uri}>", call_id=call.call_id,
            cseq=call.invite.cseq.seq, max_forwards=70,
        )
        decision = await self._router.route(request, source_addr="0.0.0.0:0",
                                            direction="outbound", source_trunk=None)
        if decision.action != "forward":
            return []
        destinations: list[Destination] = []
        for route_target in decision.targets:
            destinations.extend(await self._destinations(call, route_target))
        return destinations

    def _connect_answered(self, leg: OutboundLeg, response: Response) -> None:
        call = leg.call
        dialog = leg.dialog
        assert dialog is not None
        leg.state = "answered"
        free: LegName = "a" if call.app_leg == "b" else "b"
        if free == "a":
            call.a_dialog = dialog
            call.peer = leg.destination.peer
        else:
            call.answered = leg
        self._by_dialog[dialog.id] = (call, free)
        self._send_ack(leg, response, b"")
        call.sdp_sent[free] = leg.invite.body
        call.note(leg.leg_id, "answer", self._wall())
        self._release(call)  # the party's leg is relayed again, to the new party
        if response.body and call.media is not None:
            call.remote_sdp[free] = response.body
            task = self._loop.create_task(call.media.rewrite(free, response.body))
            task.add_done_callback(_log_rewrite_failure)
        self._connect_done(call, ConnectResult(True, response.status, response.reason))
        self._changed(call)

    def _connect_done(self, call: Call, result: ConnectResult) -> None:
        self._cancel_timer(call, "connect")
        call.connecting = None
        future = call.connect_result
        if future is not None and not future.done():
            future.set_result(result)

    def _connect_timeout(self, call: Call, leg: OutboundLeg) -> None:
        call.timers.pop("connect", None)
        if call.connecting is leg:
            self._cancel_leg(leg)
            self._connect_done(call, ConnectResult(False, 480, "No answer"))

    async def take_over(self, call_id: str, decision: RouteDecision) -> str | None:
        """The edge takes the caller itself and runs an application (`decision`: answer with
        steps or an answer URL): a ringing call is answered by the edge (its B-legs
        cancelled), an answered one loses its callee (BYE) and the caller's leg is terminated
        on the media engine. None when done, else why not."""
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return "no such call"
        if self._applications is None or self._terminator is None:
            return "call applications need the media relay and engine"
        if call.origin != "sip":
            return "the call was placed by an application: transfer its steps instead"
        if call.relaying or call.local_offer or call.transferring or call.connecting:
            return "an offer or a transfer is in progress on this call"
        if call.answered_at is None:
            for leg in call.legs:
                self._cancel_leg(leg)
            call.groups.clear()
            self._cancel_timer(call, "ring")
            call.decision = decision
            await self._answer_by_application(call, decision)
            return None
        codec = None
        if call.media is None or call.media.session is None:
            return "the call's media is not relayed by this edge"
        try:
            codec = negotiated_codec(SessionDescription.parse(call.sdp_sent.get("a", b"")))
        except SipParseError:
            codec = None
        if codec is None:
            return "the caller does not speak G.711"
        old = call.answered
        if old is not None and old.dialog is not None:
            self._by_dialog.pop(old.dialog.id, None)
            if not old.dialog.terminated:
                self._send_bye(old.dialog, old.destination.peer)
            call.note(old.leg_id, "transferred", self._wall())
        call.answered = None
        call.media.set_muted("b", True)
        self._terminate(call, "a", codec)
        call.hooks = self._applications(call, decision)
        self._changed(call)
        call.hooks.answered(call)
        return None

    def start_recording(self, call_id: str) -> str | None:
        """Record an answered, relayed call from now on (stereo, caller left); None if
        started, else why not."""
        call = self.calls.get(call_id)
        if call is None or call.ended or call.answered_at is None:
            return "the call is not answered"
        if call.media is None or call.media.session is None or call.endpoint is not None:
            return "the call's media is not relayed between two parties on this edge"
        if call.record or call.recording is not None:
            return "the call is recorded already"
        call.record = True
        self._start_recording(call)
        call.note("system", "record", self._wall())
        return None

    def stop_recording(self, call_id: str) -> str | None:
        """Stop a call's recording; the WAV is kept for the CDR. None if stopped."""
        call = self.calls.get(call_id)
        stop = getattr(self._relay, "stop_recording", None)
        if call is None or call.ended or not call.record or stop is None \
                or call.media is None or call.media.session is None:
            return "the call is not being recorded"
        call.record = False
        try:
            call.recording = stop(call.media.session)
        except Exception:
            log.exception("recording could not be finished", extra={"call_id": call.call_id})
        return None

    def replace_trunks(self, trunks: Trunks, limits: TrunkLimits) -> None:
        """New trunks and limits (a directory reload). Calls in progress release what they
        hold on the new limiter (`TrunkLimiter.carry_over` moved their counts there)."""
        self._trunks = trunks
        self._limits = limits

    def hang_up(self, call_id: str, reason: str = "bySystem", *, code: int | None = None,
                phrase: str | None = None) -> bool:
        """End a call from outside SIP (a command, the RTP watchdog); False if unknown. An
        answered call gets BYE on both legs; a ringing one is answered `code` (default 480)
        with `phrase`, its B-legs cancelled."""
        call = self.calls.get(call_id)
        if call is None:
            return False
        call.note("system", "hangup", self._wall())
        if call.answered_at is not None:
            self._hang_up(call, reason)
            return True
        for leg in call.legs:
            self._cancel_leg(leg)
        call.groups.clear()
        self._fail(call, code or 480, phrase, reason)
        return True

    def _send_bye(self, dialog: Dialog, peer: Peer) -> None:
        try:
            bye = dialog.create_bye()
        except LocalProtocolError:
            return
        dialog.state = DialogState.TERMINATED
        self._transport.send_request(bye, peer)

    def _finish(self, call: Call, phase: CallPhase) -> None:
        call.phase = phase
        call.ended_at = self._wall()
        for name in list(call.timers):
            self._cancel_timer(call, name)
        self._stop_retransmit(call)
        self._release(call, hangup=True)
        if call.media is not None:
            stop = getattr(self._relay, "stop_recording", None)
            if call.record and stop is not None and call.media.session is not None:
                try:
                    call.recording = stop(call.media.session)
                except Exception:
                    log.exception("recording could not be finished",
                                  extra={"call_id": call.call_id})
            call.media.close()
        if self._limits is not None:
            for trunk in call.trunks_held:
                self._limits.release(trunk)
        call.trunks_held.clear()
        self.calls.pop(call.call_id, None)
        self._by_server.pop(call.server_transaction_id, None)
        if call.a_dialog is not None:
            self._by_dialog.pop(call.a_dialog.id, None)
        for leg in call.legs:
            self._by_b_call_id.pop(leg.invite.call_id, None)
            if leg.dialog is not None:
                self._by_dialog.pop(leg.dialog.id, None)
            if leg.state in ("answered", "failed", "cancelled"):
                self._by_client.pop(leg.transaction_id, None)
        log.info(
            "call ended: %s %s", call.hangup_reason, call.status_code,
            extra={"call_id": call.call_id, "reason": call.hangup_reason},
        )
        if call.connect_result is not None and not call.connect_result.done():
            call.connect_result.set_result(ConnectResult(False, 487, "Call ended"))
        if self._sink is not None:
            try:
                self._sink.call_ended(call)
            except Exception:
                log.exception("call sink failed", extra={"call_id": call.call_id})
        if call.hooks is not None:
            try:
                call.hooks.ended(call)
            except Exception:
                log.exception("call application failed", extra={"call_id": call.call_id})
        self._loop.call_later(DISSOLVE_AFTER_S, dissolve, call)

    def record_changed(self, call: Call) -> None:
        """Something outside the B2BUA changed what the call record keeps (`store_data`)."""
        if not call.ended:
            self._changed(call)

    def _changed(self, call: Call) -> None:
        if self._sink is not None:
            try:
                self._sink.call_changed(call)
            except Exception:
                log.exception("call sink failed", extra={"call_id": call.call_id})

    def _branch(self) -> str:
        return MAGIC_COOKIE + self._token()

    # ---------------------------------------------------------------- watchdog, shutdown

    def check_media(self, now: float, timed_out: Callable[[Call], bool]) -> list[str]:
        """Hang up answered calls whose media stopped (`timed_out(call)`); their ids."""
        ended = []
        for call in list(self.calls.values()):
            if call.answered_at is not None and call.media is not None and timed_out(call):
                call.note("system", "rtp_timeout", now)
                self._hang_up(call, "rtpTimeout")
                ended.append(call.call_id)
        return ended

    def close(self) -> None:
        """Shutdown: end every call (BYE to answered legs, 503 to ringing callers)."""
        for call in list(self.calls.values()):
            if call.answered_at is not None:
                self._hang_up(call, "bySystem")
            else:
                for leg in call.legs:
                    self._cancel_leg(leg)
                self._fail(call, 503, "Service shutting down", "bySystem")


# ==================================================================== helpers


def _failure_rank(status: int) -> tuple[int, int]:
    """Lower is more telling for the caller (RFC 3261 §16.7.6 spirit): 6xx, then busy and the
    specific 4xx, then 5xx, then timeouts and cancellations."""
    if status >= 600:
        return (0, status)
    if status in (408, 487):
        return (4, status)
    if status in (401, 407):
        return (3, status)
    if 400 <= status < 500:
        return (1, status)
    return (2, status)


def _user_of(uri: Any) -> str:
    if isinstance(uri, SipUri):
        return uri.user or ""
    if isinstance(uri, TelUri):
        return uri.digits
    return ""


def _settled(call: Call) -> bool:
    """Ended, or answered (by a B-leg, or by the edge itself): ringing B-legs are history."""
    return call.ended or call.answered is not None or call.answered_at is not None


def info_digits(request: Request) -> list[str]:
    """The DTMF digits of an INFO: `application/dtmf-relay` (`Signal=5`) or
    `application/dtmf` (the digit alone), the formats phones and gateways send."""
    kind = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    text = request.body.decode("ascii", errors="replace")
    if kind == "application/dtmf-relay":
        found = [line.split("=", 1)[1].strip() for line in text.splitlines()
                 if line.lower().startswith("signal=")]
    elif kind == "application/dtmf":
        found = [text.strip()]
    else:
        return []
    return [d.upper() for d in found if len(d) == 1 and d.upper() in "0123456789*#ABCD"]


def _as_uri(party: str, domain: str) -> str:
    """A SIP URI as it is; a number or extension as `sip:<it>@<domain>`."""
    return party if party.startswith(("sip:", "sips:")) else f"sip:{party}@{domain}"


def _domain_of(call: Call) -> str:
    uri = call.invite.request_uri
    return uri.host if isinstance(uri, SipUri) else "localhost"


def _is_sdp(content_type: str | None) -> bool:
    return content_type is None or content_type.split(";")[0].strip().lower() == SDP


def _log_rewrite_failure(task: asyncio.Task[bytes]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.info("answer SDP not usable: %s", task.exception())


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("call task failed", exc_info=task.exception())


# An ended call and its parts point at each other (a leg at its call, the call at its legs,
# an application at its call): left alone they wait for the cyclic GC, whose passes over
# such garbage cost ~50 us a call at 600 calls/s. Once its CDR and last record write have
# what they need (they start within milliseconds of the end), the call lets go of its parts,
# and all of it is freed as soon as nothing else holds it.
DISSOLVE_AFTER_S = 2.0


def dissolve(call: Call) -> None:
    """Drop an ended call's references to its legs, pending helpers and application. The
    INVITEs stay with their transactions for up to 32 s more (RFC 6026 Timer L and M),
    parsed headers forgotten: fewer live objects for the cyclic GC to walk."""
    call.invite.forget_parsed()
    for leg in call.legs:
        leg.invite.forget_parsed()
    call.legs = []
    call.answered = None
    call.pending_ack_sdp = None
    call.transferring = None
    call.connecting = None
    call.relaying = None
    call.local_offer = None
    call.retransmit = None
    call.hooks = None
    call.connect_result = None


async def _resolve_host(host: str, port: int) -> str:
    """An IP literal as is; a name through the resolver (first IPv4 answer)."""
    host = host.strip("[]")
    if is_ip_address(host):  # the grammar's check: ipaddress.ip_address cost ~1% of a call
        return host
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=2)
    if not infos:
        raise OSError(f"{host} does not resolve")
    return str(infos[0][4][0])


__all__ = [
    "DISSOLVE_AFTER_S",
    "ApplicationStarter",
    "Call",
    "CallHooks",
    "CallManager",
    "CallRouter",
    "CallSettings",
    "CallSink",
    "ConnectResult",
    "Destination",
    "MediaTerminator",
    "Origination",
    "OutboundLeg",
    "dissolve",
    "info_digits",
]
