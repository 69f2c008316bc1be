"""The records the stores keep: small frozen dataclasses, JSON-friendly field types.

These are the domain shapes shared by the edge and the control plane. They are not the public
wire contracts (those are pydantic models in `control.contracts`); adapters map them to SQLite
rows and DynamoDB items. Times are Unix seconds (float, UTC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")

CallState = Literal["trying", "ringing", "answered", "completed", "failed"]
FINAL_CALL_STATES: frozenset[str] = frozenset({"completed", "failed"})
# "cdr-delivery": a CDR push that failed for good, kept for re-delivery (control.cdr_consumer).
DirectoryKind = Literal["trunk", "route", "application", "cdr-delivery"]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; pass `cursor` back to get the next one (None: no more)."""

    items: list[T]
    cursor: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """A call's shared state (DESIGN.md §4), written on call-level state changes.

    `legs` hold each leg's dialog identifiers and media addresses; `data` the call
    application's position and variables. `version` is the optimistic-locking counter: a
    store sets it to 1 on create and increments it on every update.
    """

    call_id: str
    edge_id: str
    state: CallState
    direction: str = "internal"
    caller: str = ""
    callee: str = ""
    created_at: float
    updated_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    legs: tuple[Mapping[str, Any], ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    version: int = 0

    @property
    def active(self) -> bool:
        return self.state not in FINAL_CALL_STATES


@dataclass(frozen=True, slots=True, kw_only=True)
class Binding:
    """One contact bound to an address-of-record (RFC 3261 §10.3), with where it really is.

    `source` is the address the REGISTER came from (`ip:port`, after NAT) and `transport` the
    transport it came over; `edge_id` is the edge holding that NAT binding (or TCP connection).
    """

    aor: str
    contact: str
    expires_at: float
    q: float = 1.0
    call_id: str = ""
    cseq: int = 0
    source: str = ""
    transport: str = "UDP"
    user_agent: str = ""
    edge_id: str = ""
    path: tuple[str, ...] = ()
    instance_id: str = ""
    reg_id: int | None = None
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        return max(0, int(self.expires_at - now + 0.5))


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    """An extension that may register and call. Only HA1 digests are kept, never passwords.

    HA1 depends on the digest algorithm, so one is stored per algorithm we offer
    (RFC 8760: SHA-256 and MD5).
    """

    username: str
    realm: str
    ha1_md5: str
    ha1_sha256: str
    enabled: bool = True
    display_name: str = ""
    allow_guest_calls: bool = False
    version: int = 0

    def ha1(self, algorithm: str) -> str | None:
        """The HA1 for a digest algorithm name (`MD5`, `SHA-256`, their `-sess` forms)."""
        base = algorithm.upper().removesuffix("-SESS")
        if base == "MD5":
            return self.ha1_md5
        if base == "SHA-256":
            return self.ha1_sha256
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectoryEntry:
    """A trunk, a static route or an application (number -> answer_url): opaque `data`
    validated by the control plane's contracts before it is stored."""

    kind: DirectoryKind
    name: str
    data: Mapping[str, Any]
    version: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiKey:
    """An API key: the secret is kept only as its SHA-256 digest (hex)."""

    key_id: str
    secret_sha256: str
    scopes: tuple[str, ...]
    name: str = ""
    created_at: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CdrEntry:
    """The index entry of one CDR; the CDR JSON itself is a blob at `cdr_key`."""

    call_id: str
    start_time: float
    end_time: float
    caller: str
    callee: str
    direction: str
    status: str  # completed | failed | missed
    duration: float = 0.0
    cdr_key: str = ""
    recording_key: str = ""
    edge_id: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class EdgeInfo:
    """An edge process, as it announces itself with each heartbeat."""

    edge_id: str
    sip_addresses: tuple[str, ...]
    http_address: str
    load: int = 0
    started_at: float = 0.0
    heartbeat_at: float = 0.0
    expires_at: float = 0.0
