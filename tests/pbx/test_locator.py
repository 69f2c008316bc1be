"""The locator webhook: payloads (control.contracts.locator) and the notifier (edge.pbx.locator),
checked against the pydantic contract, COMPAT.md's field names, and a real receiver."""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from control.contracts.locator import (
    LOCATOR_EVENT_ADAPTER,
    Location,
    LocationEvent,
    OfflineEvent,
    format_destination,
    location_payload,
    locator_event_json_schema,
)
from control.contracts.signing import verification_failure
from control.store.models import Binding
from edge.io.http import HttpServer
from edge.io.webhooks import FireAndForgetQueue, WebhookSender
from edge.pbx.locator import LocatorNotifier

# COMPAT.md, "Locator webhook": the location fields RustPBX receivers read; `contact` is ours.
COMPAT_LOCATION_FIELDS = {
    "aor", "expires", "destination", "transport", "user_agent", "supports_webrtc", "home_proxy",
}
OURS = {"contact"}
NOW = 1_700_000_000.4


class Sink:
    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []

    def submit(self, payload: Mapping[str, Any]) -> None:
        self.payloads.append(dict(payload))


def binding(**changes: Any) -> Binding:
    fields: dict[str, Any] = {
        "aor": "sip:1001@pbx.example.com",
        "contact": "<sip:1001@192.168.1.20:5062;ob>",
        "expires_at": NOW + 3600,
        "source": "198.51.100.7:5062",
        "transport": "UDP",
        "user_agent": "MicroSIP/3.21.3",
        "edge_id": "edge-a",
        "call_id": "c1",
        "cseq": 2,
    }
    fields.update(changes)
    return Binding(**fields)


def notifier(sink: Sink, events: set[str] | None = None, **kwargs: Any) -> LocatorNotifier:
    return LocatorNotifier(
        sink, events=events if events is not None else {"registered", "unregistered", "offline"},
        home_proxy="edge-home", clock=lambda: NOW, **kwargs,
    )


def through_json(payload: dict[str, Any]) -> dict[str, Any]:
    """What the receiver gets: the queue's encoding, decoded."""
    decoded: dict[str, Any] = json.loads(json.dumps(payload, separators=(",", ":")))
    return decoded


# --- payload shapes -----------------------------------------------------------------------------


def test_registered_payload_matches_compat_and_the_model() -> None:
    sink = Sink()
    notifier(sink).registered(binding())
    [payload] = sink.payloads
    assert payload == {
        "event": "registered",
        "timestamp": 1_700_000_000,
        "location": {
            "aor": "sip:1001@pbx.example.com",
            "expires": 3600,
            "destination": "UDP 198.51.100.7:5062",
            "transport": "UDP",
            "user_agent": "MicroSIP/3.21.3",
            "supports_webrtc": False,
            "home_proxy": "edge-a",
            "contact": "<sip:1001@192.168.1.20:5062;ob>",
        },
    }
    assert set(payload["location"]) == COMPAT_LOCATION_FIELDS | OURS
    model = LOCATOR_EVENT_ADAPTER.validate_python(through_json(payload))
    assert isinstance(model, LocationEvent)
    assert model.model_dump(mode="json") == payload  # the model describes it field for field


def test_registered_expires_is_the_remaining_time() -> None:
    sink = Sink()
    notifier(sink).registered(binding(expires_at=NOW + 59.7))
    assert sink.payloads[0]["location"]["expires"] == 60


def test_unregistered_payload() -> None:
    sink = Sink()
    notifier(sink).unregistered(binding())
    [payload] = sink.payloads
    assert payload["event"] == "unregistered" and payload["timestamp"] == 1_700_000_000
    assert payload["location"]["expires"] == 0
    assert isinstance(LOCATOR_EVENT_ADAPTER.validate_python(through_json(payload)),
                      LocationEvent)


def test_offline_payload_lists_locations() -> None:
    sink = Sink()
    gone = [binding(aor=f"sip:{n}@pbx.example.com", expires_at=NOW - 1) for n in (1, 2)]
    notifier(sink).offline(gone)
    [payload] = sink.payloads
    assert set(payload) == {"event", "timestamp", "locations"}
    assert payload["event"] == "offline"
    assert [loc["aor"] for loc in payload["locations"]] == [
        "sip:1@pbx.example.com", "sip:2@pbx.example.com",
    ]
    assert all(set(loc) == COMPAT_LOCATION_FIELDS | OURS for loc in payload["locations"])
    assert all(loc["expires"] == 0 for loc in payload["locations"])
    model = LOCATOR_EVENT_ADAPTER.validate_python(through_json(payload))
    assert isinstance(model, OfflineEvent) and len(model.locations) == 2


def test_offline_is_split_into_batches_and_nothing_for_no_bindings() -> None:
    sink = Sink()
    notifier(sink, offline_batch=500).offline(
        binding(aor=f"sip:{n}@pbx", expires_at=NOW - 1) for n in range(1201)
    )
    assert [len(p["locations"]) for p in sink.payloads] == [500, 500, 201]
    assert {p["timestamp"] for p in sink.payloads} == {1_700_000_000}
    assert sink.payloads[2]["locations"][-1]["aor"] == "sip:1200@pbx"
    notifier(sink).offline([])
    assert len(sink.payloads) == 3


def test_events_not_configured_are_not_sent() -> None:
    sink = Sink()
    only_offline = notifier(sink, events={"offline"})
    only_offline.registered(binding())
    only_offline.unregistered(binding())
    assert sink.payloads == [] and not only_offline.wants("registered")
    only_offline.offline([binding()])
    assert [p["event"] for p in sink.payloads] == ["offline"]


def test_unknown_event_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown locator events"):
        notifier(Sink(), events={"registered", "online"})


def test_notifier_methods_return_at_once() -> None:
    for name in ("registered", "unregistered", "offline"):
        assert not inspect.iscoroutinefunction(getattr(LocatorNotifier, name))


@pytest.mark.parametrize(("transport", "source", "destination"), [
    ("UDP", "198.51.100.7:5062", "UDP 198.51.100.7:5062"),
    ("tcp", "[2001:db8::7]:5060", "TCP [2001:db8::7]:5060"),
    ("WSS", "203.0.113.9:443", "WSS 203.0.113.9:443"),
    ("UDP", "", None),
])
def test_destination_is_transport_then_address(
    transport: str, source: str, destination: str | None
) -> None:
    assert format_destination(transport, source) == destination


def test_optional_fields_are_null_not_empty() -> None:
    loc = location_payload(binding(user_agent="", source="", edge_id=""), expires=5,
                           home_proxy="edge-home")
    assert loc["user_agent"] is None and loc["destination"] is None
    assert loc["home_proxy"] == "edge-home"  # the edge's own id when the binding has none
    Location.model_validate(loc)


@pytest.mark.parametrize(("transport", "contact", "webrtc"), [
    ("WS", "<sip:a@x.invalid;transport=ws>", True),
    ("WSS", "<sip:a@x.invalid>", True),
    ("TCP", "<sip:a@df7jal23ls0d.invalid;transport=WS>", True),  # behind a WS gateway
    ("UDP", "<sip:a@192.0.2.1>", False),
    ("TCP", "<sip:a@192.0.2.1;transport=tcp>", False),
])
def test_supports_webrtc(transport: str, contact: str, webrtc: bool) -> None:
    loc = location_payload(binding(transport=transport, contact=contact), expires=1,
                           home_proxy="e")
    assert loc["supports_webrtc"] is webrtc


def test_text_with_invalid_utf8_from_the_wire_is_made_encodable() -> None:
    # SIP text is decoded with surrogateescape: b"\xff" arrives as "\udcff".
    ua = b"Phone\xff/1".decode("utf-8", "surrogateescape")
    loc = location_payload(binding(user_agent=ua), expires=1, home_proxy="e")
    assert loc["user_agent"] == "Phone\ufffd/1"
    json.dumps(loc, ensure_ascii=False).encode("utf-8")  # would raise on a lone surrogate


# --- the contract ---------------------------------------------------------------------------------


def test_models_refuse_unknown_and_missing_fields() -> None:
    good = through_json({"event": "registered", "timestamp": 1,
                         "location": location_payload(binding(), expires=1, home_proxy="e")})
    LOCATOR_EVENT_ADAPTER.validate_python(good)
    extra = {**good, "location": {**good["location"], "surprise": 1}}
    missing = {**good, "location": {k: v for k, v in good["location"].items() if k != "aor"}}
    wrong_shape = {"event": "offline", "timestamp": 1, "location": good["location"]}
    for bad in (extra, missing, wrong_shape, {**good, "event": "online"}):
        with pytest.raises(ValueError):
            LOCATOR_EVENT_ADAPTER.validate_python(bad)


def test_json_schema_export() -> None:
    schema = locator_event_json_schema()
    json.dumps(schema)  # plain JSON, publishable as is
    assert schema["discriminator"]["propertyName"] == "event"
    assert set(schema["discriminator"]["mapping"]) == {"registered", "unregistered", "offline"}
    defs = schema["$defs"]
    location = defs["Location"]
    assert set(location["properties"]) == COMPAT_LOCATION_FIELDS | OURS
    assert set(location["required"]) == COMPAT_LOCATION_FIELDS  # `contact` may be absent
    assert location["additionalProperties"] is False
    assert set(defs["LocationEvent"]["required"]) == {"event", "timestamp", "location"}
    assert set(defs["OfflineEvent"]["required"]) == {"event", "timestamp", "locations"}
    assert defs["LocationEvent"]["properties"]["event"]["enum"] == ["registered", "unregistered"]


# --- end to end: notifier -> queue -> signed POST -> receiver -----------------------------------


def test_end_to_end_events_arrive_signed_and_valid() -> None:
    secret, key_id = "locator-secret", "k1"
    received: list[tuple[bytes, str | None]] = []

    async def hook(request: Request) -> Response:
        body = await request.body()
        failure = verification_failure(body, request.headers, secrets={key_id: secret},
                                       now=time.time())
        received.append((body, failure))
        return Response(status_code=204)

    async def scenario() -> None:
        server = await HttpServer.start(
            Starlette(routes=[Route("/events", hook, methods=["POST"])]), "127.0.0.1", 0
        )
        try:
            async with httpx.AsyncClient() as client:
                sender = WebhookSender(client, secret=secret, key_id=key_id, clock=time.time)
                queue = FireAndForgetQueue(
                    sender, f"http://127.0.0.1:{server.address[1]}/events",
                    maxsize=100, timeout=5,
                )
                queue.start()
                locator = LocatorNotifier(
                    queue, events={"registered", "unregistered", "offline"},
                    home_proxy="edge-a", clock=time.time,
                )
                now = time.time()
                locator.registered(binding(expires_at=now + 600))
                locator.unregistered(binding(expires_at=now + 600))
                locator.offline([binding(expires_at=now - 1)])
                await queue.stop(drain_timeout=5)
                assert queue.delivered == 3
        finally:
            await server.close()

    asyncio.run(scenario())
    assert [failure for _, failure in received] == [None, None, None]
    models = [LOCATOR_EVENT_ADAPTER.validate_json(body) for body, _ in received]
    assert [m.event for m in models] == ["registered", "unregistered", "offline"]
    first = models[0]
    assert isinstance(first, LocationEvent) and 598 <= first.location.expires <= 600
