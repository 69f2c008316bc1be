"""RTP media: the wire format (`packet`) and the sans-IO relay between two legs (`relay`)."""

from __future__ import annotations

from edge.rtp.packet import (
    DtmfEvent,
    RtpHeader,
    RtpPacket,
    RtpParseError,
    is_rtcp,
    rewrite,
    seq_add,
    seq_diff,
    seq_gt,
    ts_add,
)
from edge.rtp.relay import Address, RelayLeg, RelaySession

__all__ = [
    "Address",
    "DtmfEvent",
    "RelayLeg",
    "RelaySession",
    "RtpHeader",
    "RtpPacket",
    "RtpParseError",
    "is_rtcp",
    "rewrite",
    "seq_add",
    "seq_diff",
    "seq_gt",
    "ts_add",
]
