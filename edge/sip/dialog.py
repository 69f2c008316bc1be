"""SIP dialogs (RFC 3261 §12): the state two user agents share between an INVITE and its BYE.

A `Dialog` holds what §12 lists: the dialog id (Call-ID, local tag, remote tag), the local and
remote parties, the remote target (the peer's Contact), the route set (from Record-Route), both
CSeq counters and the secure flag, plus a state (early, confirmed, terminated). It builds the
requests we send inside the dialog (§12.2.1.1, with loose and strict routing) and checks the
requests we receive (§12.2.2). Sans-IO: Via branches come from an injected `new_branch`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from edge.sip.address import NameAddr, parse_name_addr
from edge.sip.errors import LocalProtocolError, SipParseError
from edge.sip.message import MAX_CSEQ, Request, Response, new_request
from edge.sip.uri import SipUri
from edge.sip.via import MAGIC_COOKIE, Via

# Requests whose Contact replaces the remote target (RFC 3261 §12.2: re-INVITE; RFC 3311 §5:
# UPDATE; RFC 6665 §4.1.2.1 and §4.1.3: SUBSCRIBE and NOTIFY).
TARGET_REFRESH_METHODS: frozenset[str] = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class DialogId(NamedTuple):
    """A dialog's identity as seen from our side (RFC 3261 §12)."""

    call_id: str
    local_tag: str
    remote_tag: str


def request_dialog_id(request: Request) -> DialogId:
    """The id of the dialog a received request belongs to: local tag in To, remote in From."""
    return DialogId(request.call_id, request.to_addr.tag or "", request.from_addr.tag or "")


def response_dialog_id(response: Response) -> DialogId:
    """The id of the dialog a received response belongs to: local tag in From, remote in To."""
    return DialogId(response.call_id, response.from_addr.tag or "", response.to_addr.tag or "")


def _contact_uri(message: Request | Response) -> str | None:
    """The URI of the single Contact a dialog-creating or target refresh message carries."""
    values = message.headers.get_all("Contact")
    if not values:
        return None
    if len(values) > 1:
        raise SipParseError("more than one Contact in a dialog message (RFC 3261 §12.1)")
    return str(parse_name_addr(values[0]).uri)


def _is_sips(uri_text: str) -> bool:
    return uri_text[:5].lower() == "sips:"


@dataclass(slots=True, eq=False, init=False)
class Dialog:
    """One dialog, from our side. Build one with `create_uac` or `create_uas`.

    `local_party` / `remote_party` are the From / To values of our requests (with the tags);
    `route_set` holds Route values in the order our requests carry them; `local_seq` and
    `remote_seq` are None while empty (§12.1.1: a UAS has sent nothing yet).
    """

    call_id: str
    local_tag: str
    remote_tag: str
    local_party: NameAddr
    remote_party: NameAddr
    remote_target: str
    route_set: tuple[str, ...]
    local_seq: int | None
    remote_seq: int | None
    secure: bool
    is_uac: bool
    state: DialogState
    new_branch: Callable[[], str] = field(repr=False)
    via_transport: str
    via_host: str
    via_port: int | None
    local_contact: str | None

    def __init__(
        self, *, call_id: str, local_tag: str, remote_tag: str, local_party: NameAddr,
        remote_party: NameAddr, remote_target: str, route_set: tuple[str, ...],
        local_seq: int | None, remote_seq: int | None, secure: bool, is_uac: bool,
        state: DialogState, new_branch: Callable[[], str], via_transport: str = "UDP",
        via_host: str, via_port: int | None = None, local_contact: str | None = None,
    ) -> None:
        self.call_id = call_id
        self.local_tag = local_tag
        self.remote_tag = remote_tag
        self.local_party = local_party
        self.remote_party = remote_party
        self.remote_target = remote_target
        self.route_set = route_set
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.secure = secure
        self.is_uac = is_uac
        self.state = state
        self.new_branch = new_branch
        self.via_transport = via_transport
        self.via_host = via_host
        self.via_port = via_port
        self.local_contact = local_contact

    # --- creation -------------------------------------------------------------------------

    @classmethod
    def create_uac(
        cls,
        invite: Request,
        response: Response,
        *,
        new_branch: Callable[[], str],
        local_contact: str | None = None,
        tls: bool = False,
    ) -> Dialog | None:
        """The dialog a response to our INVITE creates (RFC 3261 §12.1.2), or None when it
        creates none: only 101-199 with a To tag (early) and 2xx (confirmed) do.

        The route set is the response's Record-Route in reverse order, the remote target its
        Contact. Our Via (sent-by, transport) for later requests is the INVITE's top Via;
        `local_contact` defaults to the INVITE's Contact.
        """
        if invite.method != "INVITE":
            raise LocalProtocolError(f"create_uac needs our INVITE, not {invite.method}")
        status = response.status
        remote = response.to_addr
        if status >= 300 or status == 100 or (status < 200 and not remote.tag):
            return None
        target = _contact_uri(response)
        if target is None:
            if status >= 200:
                raise SipParseError("2xx to INVITE without Contact (RFC 3261 §13.3.1.4)")
            target = invite.uri  # an early dialog may learn the target from a later response
        local = invite.from_addr
        local_tag = local.tag
        if not local_tag:
            raise LocalProtocolError("our INVITE has no From tag")
        via = invite.top_via
        contact = local_contact
        if contact is None:
            contacts = invite.headers.get_all("Contact")
            contact = contacts[0] if contacts else None
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            # §12.1.2: a response without To tag (RFC 2543 peer) gives a null remote tag.
            remote_tag=remote.tag or "",
            local_party=local,
            remote_party=remote,
            remote_target=target,
            route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
            local_seq=invite.cseq.seq,
            remote_seq=None,
            secure=tls and _is_sips(invite.uri),
            is_uac=True,
            state=DialogState.EARLY if status < 200 else DialogState.CONFIRMED,
            new_branch=new_branch,
            via_transport=via.transport,
            via_host=via.host,
            via_port=via.port,
            local_contact=contact,
        )

    @classmethod
    def create_uas(
        cls,
        invite: Request,
        local_tag: str,
        *,
        new_branch: Callable[[], str],
        via_host: str,
        via_port: int | None = None,
        via_transport: str = "UDP",
        local_contact: str | None = None,
        tls: bool = False,
    ) -> Dialog:
        """The dialog we create by answering a received INVITE with To tag `local_tag`
        (RFC 3261 §12.1.1). It starts early; `response_sent` confirms or ends it.

        The route set is the request's Record-Route in order, the remote target its Contact.
        `via_*` say what our Via carries in the requests we send in this dialog.
        """
        target = _contact_uri(invite)
        if target is None:
            raise SipParseError("INVITE without Contact (RFC 3261 §8.1.1.8)")
        remote = invite.from_addr
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=remote.tag or "",
            local_party=invite.to_addr.with_tag(local_tag),
            remote_party=remote,
            remote_target=target,
            route_set=tuple(invite.headers.get_all("Record-Route")),
            local_seq=None,
            remote_seq=invite.cseq.seq,
            secure=tls and _is_sips(invite.uri),
            is_uac=False,
            state=DialogState.EARLY,
            new_branch=new_branch,
            via_transport=via_transport,
            via_host=via_host,
            via_port=via_port,
            local_contact=local_contact,
        )

    # --- views ----------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    @property
    def local_uri(self) -> str:
        return str(self.local_party.uri)

    @property
    def remote_uri(self) -> str:
        return str(self.remote_party.uri)

    @property
    def terminated(self) -> bool:
        return self.state is DialogState.TERMINATED

    def request_target(self) -> tuple[str, list[str]]:
        """The Request-URI and Route values of our next request (RFC 3261 §12.2.1.1).

        Empty route set: the remote target, no Route. First route loose (`lr`): the remote
        target, Route = the route set. First route strict (no `lr`, RFC 2543 router): that
        route's URI as Request-URI (without the parameters a Request-URI may not carry), the
        rest of the route set, then the remote target as the last Route.
        """
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if isinstance(first, SipUri) and first.lr:
            return self.remote_target, list(self.route_set)
        if isinstance(first, SipUri):
            # §19.1.1 table: `method` and headers are not allowed in a Request-URI.
            request_uri = str(first.without_params("method").without_headers())
        else:
            request_uri = str(first)
        return request_uri, [*self.route_set[1:], f"<{self.remote_target}>"]

    @property
    def next_hop(self) -> str:
        """The URI our in-dialog requests are sent towards (§8.1.2): the first Route, or the
        remote target when the route set is empty."""
        if not self.route_set:
            return self.remote_target
        return str(parse_name_addr(self.route_set[0]).uri)

    # --- requests we send -----------------------------------------------------------------

    def create_request(
        self,
        method: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        contact: str | None = None,
    ) -> Request:
        """A request inside the dialog (RFC 3261 §12.2.1.1).

        The local CSeq goes up by one, except for ACK and CANCEL, which reuse the current one
        (use `create_ack` for the ACK of a 2xx, `transaction.build_cancel` for CANCEL). Target
        refresh requests carry `contact`, or the dialog's `local_contact`.
        """
        if self.state is DialogState.TERMINATED:
            raise LocalProtocolError(f"cannot send {method} in a terminated dialog")
        if method in ("ACK", "CANCEL"):
            if self.local_seq is None:
                raise LocalProtocolError(f"no request of ours for a {method} to refer to")
            seq = self.local_seq
        else:
            # §12.2.1.1: an empty local sequence number starts anywhere below 2**31 (§8.1.1.5).
            seq = 1 if self.local_seq is None else self.local_seq + 1
            if seq > MAX_CSEQ:
                raise LocalProtocolError("local CSeq would exceed 2**32-1")
            self.local_seq = seq
        if contact is None and method in TARGET_REFRESH_METHODS:
            contact = self.local_contact
        return self._build(method, seq, headers, body, contact)

    def create_ack(
        self,
        invite_seq: int,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> Request:
        """The ACK for a 2xx to our INVITE with CSeq `invite_seq` (RFC 3261 §13.2.2.4): same
        CSeq number, method ACK, routed like any in-dialog request, with a new branch (it is a
        transaction of its own). Allowed in any state: a 2xx retransmission is ACKed again."""
        return self._build("ACK", invite_seq, headers, body, None)

    def create_bye(self, *, headers: Iterable[tuple[str, str]] = ()) -> Request:
        """A BYE for this dialog (RFC 3261 §15.1.1)."""
        return self.create_request("BYE", headers=headers)

    def _build(
        self,
        method: str,
        seq: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        contact: str | None,
    ) -> Request:
        uri, routes = self.request_target()
        token = self.new_branch()
        branch = token if token.startswith(MAGIC_COOKIE) else MAGIC_COOKIE + token
        via = Via.build(self.via_transport, self.via_host, self.via_port, branch)
        extra = [("Route", route) for route in routes]
        extra.extend(headers)
        return new_request(
            method,
            uri,
            via=via,
            from_=self.local_party,
            to=self.remote_party,
            call_id=self.call_id,
            cseq=seq,
            contact=contact,
            headers=extra,
            body=body,
        )

    # --- what we receive and answer -------------------------------------------------------

    def receive_request(self, request: Request) -> int | None:
        """Account for a request received in this dialog (RFC 3261 §12.2.2).

        Returns the status to reject it with, or None to go on: 500 when its CSeq is lower
        than the remote CSeq (out of order), 481 when the dialog is over. Updates the remote
        CSeq, takes the Contact of a target refresh request as the new remote target, and a BYE
        terminates the dialog. ACK and CANCEL carry the CSeq of the request they refer to and
        are not ordered.
        """
        if self.state is DialogState.TERMINATED:
            return 481
        method = request.method
        if method in ("ACK", "CANCEL"):
            return None
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return 500
        self.remote_seq = seq
        if method in TARGET_REFRESH_METHODS:
            target = _contact_uri(request)
            if target is not None:
                self.remote_target = target
        elif method == "BYE":
            self.state = DialogState.TERMINATED
        return None

    def response_sent(self, response: Response) -> None:
        """Account for a response we sent to a request of this dialog (UAS side, §12.1.1,
        §13.3.1.4): a 2xx to the INVITE confirms an early dialog, a non-2xx final ends it."""
        status = response.status
        if status < 200 or response.cseq.method != "INVITE":
            return
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED if status < 300 else DialogState.TERMINATED

    def receive_response(self, response: Response) -> None:
        """Account for a response to a request we sent in this dialog (§12.1.2, §12.2.1.2).

        A 2xx to the INVITE confirms an early dialog and recomputes its route set and remote
        target from that 2xx (§13.2.2.4); a non-2xx final ends an early dialog. A 2xx to a
        target refresh request takes its Contact as the new remote target. 481 and 408 end the
        dialog (§12.2.1.2), and so does any final response to our BYE.
        """
        status = response.status
        if status < 200 or self.state is DialogState.TERMINATED:
            return
        method = response.cseq.method
        if method == "INVITE" and self.state is DialogState.EARLY:
            if status >= 300:
                self.state = DialogState.TERMINATED
                return
            if self.is_uac:
                self.route_set = tuple(reversed(response.headers.get_all("Record-Route")))
            self.state = DialogState.CONFIRMED
        if status in (408, 481) or method == "BYE":
            self.state = DialogState.TERMINATED
        elif status < 300 and method in TARGET_REFRESH_METHODS:
            target = _contact_uri(response)
            if target is not None:
                self.remote_target = target


__all__ = [
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "request_dialog_id",
    "response_dialog_id",
]
