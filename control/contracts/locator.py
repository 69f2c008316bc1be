"""The locator webhook's payloads (COMPAT.md "Locator webhook"): who registered, who left.

Wire shape, field for field RustPBX's (`src/proxy/locator_webhook.rs`):

    {"event": "registered" | "unregistered", "timestamp": <unix s>, "location": {...}}
    {"event": "offline", "timestamp": <unix s>, "locations": [{...}, ...]}

A location: `aor`, `expires`, `destination`, `transport`, `user_agent`, `supports_webrtc`,
`home_proxy`; ours adds `contact` (the bound Contact URI, which tells two devices of one AOR
apart). `destination` is written as RustPBX writes it on the wire, the transport then the
address: `"UDP 198.51.100.7:5062"`, `"TCP [2001:db8::7]:5060"`.

The pydantic models are the contract (docs, JSON Schema, tests); the edge builds the same
payloads as plain dicts with `location_payload` so that no pydantic runs on the REGISTER path.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from control.store.models import Binding

LocatorEventName = Literal["registered", "unregistered", "offline"]
LOCATOR_EVENTS: frozenset[str] = frozenset({"registered", "unregistered", "offline"})

# Transports on which a contact is a WebRTC endpoint (RFC 7118: SIP over WebSocket).
_WEBRTC_TRANSPORTS = frozenset({"WS", "WSS"})


class _Wire(BaseModel):
    # forbid: a field we send and the contract does not list is a bug in one of the two.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Location(_Wire):
    """Where one contact of an address-of-record can be reached."""

    aor: str = Field(description="The address-of-record, e.g. sip:1001@pbx.example.com.")
    expires: int = Field(
        ge=0,
        description="Seconds the binding stays valid; 0 in unregistered and offline events.",
    )
    destination: str | None = Field(
        description="Transport and the address the REGISTER really came from (after NAT), "
        "as RustPBX writes it: \"UDP 198.51.100.7:5062\"; null when unknown."
    )
    transport: str = Field(description="UDP, TCP, TLS, WS or WSS.")
    user_agent: str | None = Field(description="The User-Agent of the REGISTER, if any.")
    supports_webrtc: bool = Field(description="True when the contact is on WebSocket (RFC 7118).")
    home_proxy: str | None = Field(
        description="The id of the edge holding the NAT binding or connection."
    )
    contact: str | None = Field(
        default=None, description="Ours: the bound Contact URI (absent in RustPBX)."
    )


class LocationEvent(_Wire):
    """`registered` (a binding added or refreshed) or `unregistered` (removed by the phone)."""

    event: Literal["registered", "unregistered"]
    timestamp: int = Field(description="When it happened, Unix seconds.")
    location: Location


class OfflineEvent(_Wire):
    """`offline`: bindings that expired without a refresh (the expiry sweep)."""

    event: Literal["offline"]
    timestamp: int = Field(description="When the sweep found them expired, Unix seconds.")
    locations: list[Location]


LocatorEvent = Annotated[LocationEvent | OfflineEvent, Field(discriminator="event")]
LOCATOR_EVENT_ADAPTER: TypeAdapter[LocationEvent | OfflineEvent] = TypeAdapter(LocatorEvent)


def locator_event_json_schema() -> dict[str, Any]:
    """The JSON Schema of a locator webhook body (either shape), for receivers' docs."""
    return LOCATOR_EVENT_ADAPTER.json_schema()


def format_destination(transport: str, source: str) -> str | None:
    """`("udp", "198.51.100.7:5062")` -> `"UDP 198.51.100.7:5062"`; None without a source."""
    if not source:
        return None
    return f"{transport.upper()} {source}"


def _clean(text: str) -> str:
    # SIP text is decoded with surrogateescape; a lone surrogate is not valid in JSON text a
    # receiver can decode, so invalid bytes become U+FFFD. ASCII (nearly always) costs a check.
    if text.isascii():
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def location_payload(binding: Binding, *, expires: int, home_proxy: str) -> dict[str, Any]:
    """The wire dict of one location (a `Location`), built without pydantic.

    `home_proxy` is used when the binding does not name its edge.
    """
    transport = binding.transport.upper()
    return {
        "aor": _clean(binding.aor),
        "expires": max(0, expires),
        "destination": format_destination(transport, binding.source),
        "transport": transport,
        "user_agent": _clean(binding.user_agent) or None,
        "supports_webrtc": transport in _WEBRTC_TRANSPORTS
        or ";transport=ws" in binding.contact.lower(),
        "home_proxy": binding.edge_id or home_proxy or None,
        "contact": _clean(binding.contact) or None,
    }
