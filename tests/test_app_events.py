"""Application event payloads (control/contracts/events.py): Vonage's shapes plus our fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from control.contracts.events import (
    CALL_STATUSES,
    FINAL_STATUSES,
    RING_TIMEOUT,
    CallStatusEvent,
    InputEvent,
    IvrState,
    RecordEvent,
    call_status_event,
    error_event,
    event_dict,
    event_json,
    input_event,
    iso_ms,
    notify_event,
    record_event,
    ring_timeout_events,
)
from control.contracts.ncco import StepsInvalid, parse_steps

T0 = 1767607200.0  # 2026-01-05T10:00:00Z
IDS: dict[str, Any] = {
    "uuid": "63f61863-4a51-4f6b-86e1-46edebcf9356",
    "conversation_uuid": "CON-f972836a-550f-45fa-956c-12a2ab5b7d22",
    "call_id": "a84b4c76e66710@127.0.0.1",
}


def test_iso_ms_is_utc_with_three_decimals() -> None:
    assert iso_ms(T0) == "2026-01-05T10:00:00.000Z"
    assert iso_ms(T0 + 0.1206) == "2026-01-05T10:00:00.121Z"


def test_status_event_has_vonage_fields_and_ours() -> None:
    event = call_status_event(
        status="answered", sequence=3, from_="1001", to="2002", direction="inbound",
        now=T0 + 0.12, **IDS,
    )
    body = event_dict(event)
    assert body == {
        "uuid": IDS["uuid"],
        "conversation_uuid": IDS["conversation_uuid"],
        "from": "1001",
        "to": "2002",
        "status": "answered",
        "direction": "inbound",
        "timestamp": "2026-01-05T10:00:00.120Z",
        "call_id": IDS["call_id"],
        "sequence": 3,
    }
    # A receiver parses it back with the same model.
    assert CallStatusEvent.model_validate_json(event_json(event)) == event


def test_completed_carries_times_and_string_duration() -> None:
    event = call_status_event(
        status="completed", sequence=9, from_="1001", to="2002", direction="outbound",
        now=T0 + 65, start=T0 + 2.5, end=T0 + 65.4, disconnected_by="user", **IDS,
    )
    body = event_dict(event)
    assert body["start_time"] == "2026-01-05T10:00:02.500Z"
    assert body["end_time"] == "2026-01-05T10:01:05.400Z"
    assert body["duration"] == "62"  # whole seconds, a string, as Vonage sends it
    assert body["disconnected_by"] == "user"
    with pytest.raises(ValueError, match="start and end"):
        call_status_event(
            status="completed", sequence=1, from_="a", to="b", direction="inbound", now=T0,
            **IDS,
        )


def test_statuses() -> None:
    assert {"started", "ringing", "answered", "completed", "busy", "failed", "timeout",
            "no-answer", "cancelled", "rejected", "unanswered"} == CALL_STATUSES
    assert "answered" not in FINAL_STATUSES
    assert "completed" in FINAL_STATUSES
    with pytest.raises(ValidationError):
        CallStatusEvent.model_validate({
            "status": "hungup", "from": "a", "to": "b", "direction": "inbound",
            "timestamp": "x", "sequence": 1, **IDS,
        })


def test_ring_timeout_reports_timeout_then_no_answer() -> None:
    events = ring_timeout_events(
        first_sequence=4, from_="1001", to="2002", direction="outbound", now=T0,
        sip_code=408, **IDS,
    )
    assert [e.status for e in events] == list(RING_TIMEOUT) == ["timeout", "no-answer"]
    assert [e.sequence for e in events] == [4, 5]
    assert all(e.detail == "ring_timeout" and e.sip_code == 408 for e in events)


def test_input_event_is_vonage_shape_with_state() -> None:
    state = IvrState(step=1, values={"menu": "1"})
    event = input_event(
        digits="1", timed_out=False, sequence=5, from_="1001", to="2002", now=T0,
        state=state, **IDS,
    )
    body = json.loads(event_json(event))
    assert body["dtmf"] == {"digits": "1", "timed_out": False}
    assert body["state"] == {"step": 1, "values": {"menu": "1"}}
    assert "speech" not in body
    assert body["from"] == "1001"
    assert InputEvent.model_validate(body).dtmf.digits == "1"


def test_record_event() -> None:
    event = record_event(
        recording_url="http://127.0.0.1:8080/recordings/r1.wav",
        recording_uuid="r1", size=12345, start=T0, end=T0 + 60, sequence=7,
        now=T0 + 60.2, **IDS,
    )
    body = event_dict(event)
    assert body["start_time"] == "2026-01-05T10:00:00.000Z"
    assert body["end_time"] == "2026-01-05T10:01:00.000Z"
    assert body["size"] == 12345
    assert body["recording_url"].endswith(".wav")
    assert RecordEvent.model_validate(body) == event


def test_notify_sends_the_payload_back_unchanged_beside_our_fields() -> None:
    event = notify_event(payload={"foo": "bar", "sequence": "mine"}, sequence=2, now=T0,
                         **IDS)
    body = json.loads(event_json(event))
    assert body["foo"] == "bar"
    assert body["sequence"] == "mine"  # the application's key wins over ours
    assert body["uuid"] == IDS["uuid"]
    assert "payload" not in body


def test_error_event_from_invalid_steps() -> None:
    with pytest.raises(StepsInvalid) as info:
        parse_steps('[{"action": "talk", "text": "hi"}, {"action": "input", "type": ["speech"]}]')
    event = error_event(reason=str(info.value), errors=info.value.error_dicts(), sequence=1,
                        now=T0, source="http://127.0.0.1:9/answer", **IDS)
    body = event_dict(event)
    assert "step 1 (input)" in body["reason"]
    assert "speech input is not supported" in body["reason"]
    assert body["errors"][0]["index"] == 1
    assert body["errors"][0]["action"] == "input"
    assert body["conversation_uuid"] == IDS["conversation_uuid"]


def test_sequence_must_be_positive() -> None:
    with pytest.raises(ValidationError):
        call_status_event(status="started", sequence=0, from_="a", to="b",
                          direction="inbound", now=T0, **IDS)
