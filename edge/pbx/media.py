"""Media anchoring for one B2BUA call: the SDP each leg sees and the relay session behind it.

Leg `a` is the caller's side, leg `b` the callee's. Every SDP from one leg is rewritten for the
other with the edge's address and the ports of the relay's socket pair that faces that other leg,
so both peers send their RTP to us (DESIGN §5: the relay is the fast path). The first audio stream
is anchored; any other stream (video, a second audio) is declined with port 0 (RFC 3264 §6: a
stream may be refused that way), since the relay carries one stream per call.

The session opens on the first SDP seen, from either leg (an INVITE without SDP makes the callee's
answer the offer). Until the other leg's SDP says where it listens, media towards it is held back
(the leg is muted), so nothing is ever sent to an unknown address.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from edge.rtp.relay import Address, RelayLeg, RelaySession
from edge.sip.errors import SipParseError
from edge.sip.sdp import Attribute, Direction, SessionDescription

log = logging.getLogger("sdpbx.media")

LegName = Literal["a", "b"]
_UNKNOWN: Address = ("0.0.0.0", 0)
_DIRECTIONS = frozenset({"sendrecv", "sendonly", "recvonly", "inactive"})


class RelayedSession(Protocol):
    """What the call needs of `edge.io.rtp_relay.RelayedCall`."""

    @property
    def a_ports(self) -> tuple[int, int]: ...
    @property
    def b_ports(self) -> tuple[int, int]: ...
    @property
    def session(self) -> RelaySession: ...


class MediaRelay(Protocol):
    """What the call needs of `edge.io.rtp_relay.RtpRelay`."""

    async def open_session(
        self,
        a_sdp_addr: Address,
        b_sdp_addr: Address,
        *,
        a_sdp_rtcp: Address | None = None,
        b_sdp_rtcp: Address | None = None,
        a_rtcp_mux: bool = False,
        b_rtcp_mux: bool = False,
    ) -> RelayedSession: ...

    def close_session(self, call: RelayedSession) -> None: ...


@dataclass(slots=True, frozen=True)
class AudioStream:
    """The anchored stream of one SDP: where its owner receives RTP and RTCP."""

    index: int
    rtp: Address
    rtcp: Address
    rtcp_mux: bool
    codecs: dict[tuple[str, int], int]  # (encoding lower-case, clock rate) -> payload type


def audio_stream(sdp: SessionDescription) -> AudioStream | None:
    """The first audio stream with a port and an address, or None (no audio, or declined)."""
    for index, media in enumerate(sdp.media):
        if media.media != "audio" or media.port == 0:
            continue
        connection = sdp.effective_connection(media)
        if connection is None:
            raise SipParseError("SDP audio stream without a connection address", 488)
        host = connection.address
        rtcp_attr = media.rtcp
        mux = media.rtcp_mux
        if rtcp_attr is not None:
            rtcp = (rtcp_attr.address or host, rtcp_attr.port)
        else:
            rtcp = (host, media.port) if mux else (host, media.port + 1)
        codecs = {
            (rtpmap.encoding.lower(), rtpmap.clock_rate): payload_type
            for payload_type, rtpmap in reversed(media.rtpmap().items())
        }
        return AudioStream(index, (host, media.port), rtcp, mux, codecs)
    return None


@dataclass(slots=True, frozen=True)
class NegotiatedCodec:
    """What a terminated leg speaks: the G.711 payload type agreed in its SDP and the
    telephone-event payload type (RFC 4733), if any."""

    payload_type: int
    name: Literal["PCMU", "PCMA"]
    telephone_event_pt: int | None = None


_G711 = {("pcmu", 8000): "PCMU", ("pcma", 8000): "PCMA"}


def negotiated_codec(sdp: SessionDescription) -> NegotiatedCodec | None:
    """The first G.711 codec of the first audio stream, in the SDP's order of preference
    (RFC 3264 §5.1), with its telephone-event payload type; None without G.711."""
    for media in sdp.media:
        if media.media != "audio" or media.port == 0:
            continue
        rtpmap = media.rtpmap()
        events = [pt for pt, m in rtpmap.items()
                  if m.encoding.lower() == "telephone-event" and m.clock_rate == 8000]
        for text in media.formats:
            if not text.isdigit():
                continue
            found = rtpmap.get(int(text))
            name = _G711.get((found.encoding.lower(), found.clock_rate)) if found else None
            if name is not None:
                return NegotiatedCodec(int(text), "PCMU" if name == "PCMU" else "PCMA",
                                       events[0] if events else None)
        return None
    return None


def payload_type_map(sender: AudioStream, receiver: AudioStream) -> dict[int, int]:
    """PT numbers in packets from `sender` -> the numbers `receiver` negotiated for the same
    codec, where they differ (RFC 3264 §6.1 lets each side use its own dynamic numbers)."""
    mapping: dict[int, int] = {}
    for codec, sent in sender.codecs.items():
        wanted = receiver.codecs.get(codec)
        if wanted is not None and wanted != sent:
            mapping[sent] = wanted
    return mapping


def with_direction(body: bytes, direction: Direction) -> bytes:
    """The SDP `body` as a new offer (o= version + 1, RFC 3264 §8) whose media all carry
    `direction` (RFC 3264 §8.4: sendonly puts the peer on hold, sendrecv resumes)."""
    sdp = SessionDescription.parse(body)
    media = tuple(
        dataclasses.replace(m, attributes=(
            *(a for a in m.attributes if a.name not in _DIRECTIONS or a.value is not None),
            Attribute(direction),
        ))
        for m in sdp.media
    )
    session_attributes = tuple(
        a for a in sdp.attributes if a.name not in _DIRECTIONS or a.value is not None
    )
    return dataclasses.replace(sdp, origin=sdp.origin.bumped(), media=media,
                               attributes=session_attributes).to_bytes()


def _on_hold_address(address: Address) -> bool:
    # RFC 3264 §8.4 (and RFC 2543 style c=0.0.0.0): no media expected from here for now.
    return address[0] in ("0.0.0.0", "::") or address[1] == 0


class CallMedia:
    """The anchored media of one call. `rewrite(leg, sdp)` is the only call the B2BUA makes per
    SDP; `close()` gives the ports back."""

    def __init__(self, relay: MediaRelay, address: str) -> None:
        self._relay = relay
        self.address = address  # what our SDP advertises (external_ip or the bound address)
        self.session: RelayedSession | None = None
        self._streams: dict[LegName, AudioStream] = {}
        self._muted: set[LegName] = set()  # muted by command (towards that leg)

    async def rewrite(self, leg: LegName, body: bytes) -> bytes:
        """The SDP that `leg` sent, as the other leg must see it."""
        sdp = SessionDescription.parse(body)
        stream = audio_stream(sdp)
        if stream is None:
            return body if self.session is None else self._decline_all(sdp)
        if self.session is None:
            await self._open(leg, stream)
        else:
            self._update(leg, stream)
        session = self.session
        assert session is not None
        # SDP from a goes to b, which must send to our b-side ports, and the other way round.
        rtp_port, rtcp_port = session.b_ports if leg == "a" else session.a_ports
        ports: list[int | None] = [0] * len(sdp.media)
        rtcp_ports: list[int | None] = [None] * len(sdp.media)
        ports[stream.index] = rtp_port
        rtcp_ports[stream.index] = rtp_port if stream.rtcp_mux else rtcp_port
        rewritten = sdp.with_transport(
            self.address, ports, rtcp_ports=rtcp_ports, origin_address=self.address
        )
        return rewritten.to_bytes()

    async def offer(self, session_version: int, leg: LegName = "b",
                    codec: NegotiatedCodec | None = None) -> bytes:
        """Our own SDP offer to `leg`, when the edge is the other party (a call it places, or
        a party it brings into a call it answered): G.711 (only `codec` when given) and
        telephone-event at the relay ports facing `leg`. Media towards the other leg stays
        held back until a party is there (its SDP, `rewrite`)."""
        if self.session is None:
            self.session = await self._relay.open_session(
                _UNKNOWN, _UNKNOWN, a_sdp_rtcp=_UNKNOWN, b_sdp_rtcp=_UNKNOWN
            )
            self._apply()
        rtp_port, rtcp_port = self.session.a_ports if leg == "a" else self.session.b_ports
        if codec is None:
            formats = [(0, "PCMU"), (8, "PCMA")]
            event_pt: int | None = 101
        else:
            formats = [(codec.payload_type, codec.name)]
            event_pt = codec.telephone_event_pt
        return _local_sdp(self.address, session_version, rtp_port, rtcp_port, formats,
                          event_pt)

    async def answer(self, leg: LegName, offer: bytes,
                     session_version: int) -> tuple[bytes, NegotiatedCodec]:
        """Our SDP answer to `leg`'s offer when the edge itself takes the call (RFC 3264 §6):
        the offer's first G.711 codec and its telephone-event, at the relay ports facing
        `leg`; 488 (SipParseError) when it offers no G.711."""
        sdp = SessionDescription.parse(offer)
        stream = audio_stream(sdp)
        codec = negotiated_codec(sdp)
        if stream is None or codec is None:
            raise SipParseError("no G.711 audio offered", 488)
        if self.session is None:
            await self._open(leg, stream)
        else:
            self._update(leg, stream)
        assert self.session is not None
        rtp_port, rtcp_port = self.session.a_ports if leg == "a" else self.session.b_ports
        formats = [(codec.payload_type, codec.name)]
        return _local_sdp(self.address, session_version, rtp_port, rtcp_port, formats,
                          codec.telephone_event_pt), codec

    def _decline_all(self, sdp: SessionDescription) -> bytes:
        rewritten = sdp.with_transport(self.address, [0] * len(sdp.media),
                                       origin_address=self.address)
        return rewritten.to_bytes()

    async def _open(self, leg: LegName, stream: AudioStream) -> None:
        if leg == "a":
            self.session = await self._relay.open_session(
                stream.rtp, _UNKNOWN, a_sdp_rtcp=stream.rtcp, b_sdp_rtcp=_UNKNOWN,
                a_rtcp_mux=stream.rtcp_mux,
            )
        else:
            self.session = await self._relay.open_session(
                _UNKNOWN, stream.rtp, a_sdp_rtcp=_UNKNOWN, b_sdp_rtcp=stream.rtcp,
                b_rtcp_mux=stream.rtcp_mux,
            )
        self._streams[leg] = stream
        self._apply()

    def _update(self, leg: LegName, stream: AudioStream) -> None:
        previous = self._streams.get(leg)
        self._streams[leg] = stream
        if previous is not None and (
            previous.rtp == stream.rtp or _on_hold_address(stream.rtp)
        ):
            self._apply(moved=None)
            return
        self._apply(moved=leg)

    def _apply(self, moved: LegName | None = None) -> None:
        """Push what the SDPs say into the relay legs: addresses, PT maps, who may receive."""
        session = self.session
        if session is None:
            return
        legs: dict[LegName, RelayLeg] = {"a": session.session.a, "b": session.session.b}
        if moved is not None:
            stream = self._streams[moved]
            legs[moved].update_remote(stream.rtp, stream.rtcp)
        a_stream, b_stream = self._streams.get("a"), self._streams.get("b")
        if a_stream is not None and b_stream is not None:
            legs["a"].pt_map = payload_type_map(a_stream, b_stream)
            legs["b"].pt_map = payload_type_map(b_stream, a_stream)
        for name, relay_leg in legs.items():
            # Media towards a leg flows once its SDP is known and no command muted it.
            relay_leg.muted = name not in self._streams or name in self._muted

    def set_muted(self, leg: LegName, muted: bool) -> None:
        """Stop (or resume) the media sent towards `leg` (RTCP keeps flowing)."""
        if muted:
            self._muted.add(leg)
        else:
            self._muted.discard(leg)
        self._apply()

    def close(self) -> None:
        if self.session is not None:
            self._relay.close_session(self.session)


def _local_sdp(address: str, version: int, rtp_port: int, rtcp_port: int,
               formats: Sequence[tuple[int, str]], event_pt: int | None) -> bytes:
    family = "IP6" if ":" in address else "IP4"
    payloads = [pt for pt, _ in formats] + ([event_pt] if event_pt is not None else [])
    lines = [
        "v=0",
        f"o=sdpbx {version} {version} IN {family} {address}",
        "s=sdpbx",
        f"c=IN {family} {address}",
        "t=0 0",
        f"m=audio {rtp_port} RTP/AVP {' '.join(map(str, payloads))}",
        *(f"a=rtpmap:{pt} {name}/8000" for pt, name in formats),
    ]
    if event_pt is not None:
        lines += [f"a=rtpmap:{event_pt} telephone-event/8000", f"a=fmtp:{event_pt} 0-16"]
    lines += ["a=ptime:20", f"a=rtcp:{rtcp_port}", "a=sendrecv", ""]
    return "\r\n".join(lines).encode()


__all__ = [
    "AudioStream",
    "CallMedia",
    "MediaRelay",
    "NegotiatedCodec",
    "audio_stream",
    "negotiated_codec",
    "payload_type_map",
    "with_direction",
]
