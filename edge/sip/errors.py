"""Errors of the SIP layer: whose fault it is, and which response it maps to."""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error raised by `edge.sip`."""


class SipParseError(SipError, ValueError):
    """The peer sent something malformed (the remote party's fault).

    `status` and `reason` are what a server answers when a response can be built (RFC 3261
    §21.4.1: 400 with a reason phrase naming the problem; 505, 416, 420 for the other syntax-level
    refusals). The one error any parser in `edge.sip` raises on bad input.
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class LocalProtocolError(SipError):
    """Our own code asked for something the protocol forbids (a bug on this side)."""
