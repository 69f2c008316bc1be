"""control.contracts.cdr: the CDR's camelCase keys exactly as COMPAT.md lists them, always all
present, RFC 3339 UTC times with `Z`, a lossless round trip, and an import a Lambda can afford."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from control.contracts.cdr import (
    HANGUP_REASONS,
    CallDetailRecord,
    HangupMessage,
    LastError,
    LegEvent,
    LegTimeline,
    RecorderMedia,
    Rewrite,
    parse_rfc3339,
    rfc3339,
)

ROOT = Path(__file__).resolve().parents[1]

# COMPAT.md "CDR (camelCase JSON)", then ours.
COMPAT_KEYS = {
    "callId", "sessionId", "startTime", "ringTime", "answerTime", "endTime", "caller", "callee",
    "fromNumber", "toNumber", "direction", "status", "statusCode", "hangupReason",
    "hangupMessages", "recorder", "recordingUrl", "recordingDurationSecs", "rewrite",
    "sipTrunkId", "sipGateway", "legTimeline", "lastError", "metadata",
}
OUR_KEYS = {"edgeId", "durationSecs", "billsecSecs"}


def full_cdr() -> CallDetailRecord:
    return CallDetailRecord(
        call_id="a84b4c76e66710@pc33.atlanta.example.com",
        session_id="a84b4c76e66710@pc33.atlanta.example.com",
        start_time="2026-11-27T23:59:01.123Z",
        ring_time="2026-11-27T23:59:01.500Z",
        answer_time="2026-11-27T23:59:05.000Z",
        end_time="2026-11-28T00:01:05.250Z",
        caller="sip:+15551234567@carrier.example",
        callee="sip:1002@pbx.example.com",
        from_number="+15551234567",
        to_number="1002",
        direction="inbound",
        status="completed",
        status_code=200,
        hangup_reason="byCallee",
        hangup_messages=[HangupMessage(code=486, reason="Busy Here", target="sip:1003@x")],
        recorder=[RecorderMedia(track_id="stereo", path="recordings/2026/11/27/a.wav",
                                size=1_920_044)],
        recording_url="https://pbx.example.com/console/call-records/a/recording",
        recording_duration_secs=120,
        rewrite=Rewrite(caller_original="5551234567", caller_final="+15551234567",
                        callee_original="02", callee_final="1002"),
        sip_trunk_id="carrier-a",
        sip_gateway="198.51.100.10:5060",
        leg_timeline=LegTimeline(events=[
            LegEvent(timestamp="2026-11-27T23:59:05.000Z", leg_id="leg-b",
                     event_type="bridged")]),
        last_error=LastError(code=486, reason="Busy Here"),
        metadata={"crm_id": 42, "tags": ["vip"]},
        edge_id="edge-1",
        duration_secs=124.127,
        billsec_secs=120.25,
    )


def test_every_key_is_the_camel_case_name_compat_lists() -> None:
    document = json.loads(full_cdr().to_json_bytes())
    assert set(document) == COMPAT_KEYS | OUR_KEYS
    assert set(document["hangupMessages"][0]) == {"code", "reason", "target"}
    assert set(document["recorder"][0]) == {"trackId", "path", "size"}
    assert set(document["rewrite"]) == {
        "callerOriginal", "callerFinal", "calleeOriginal", "calleeFinal"}
    assert set(document["legTimeline"]) == {"events"}
    assert set(document["legTimeline"]["events"][0]) == {"timestamp", "legId", "eventType"}
    assert set(document["lastError"]) == {"code", "reason"}
    assert document["callId"] == "a84b4c76e66710@pc33.atlanta.example.com"
    assert document["startTime"] == "2026-11-27T23:59:01.123Z"
    assert document["statusCode"] == 200
    assert document["recorder"][0]["trackId"] == "stereo"
    assert document["metadata"] == {"crm_id": 42, "tags": ["vip"]}


def test_round_trip_is_lossless() -> None:
    cdr = full_cdr()
    data = cdr.to_json_bytes()
    again = CallDetailRecord.from_json_bytes(data)
    assert again == cdr
    assert again.to_json_bytes() == data


def test_unknown_values_are_null_not_missing() -> None:
    cdr = CallDetailRecord(
        call_id="c1", start_time="2026-01-01T00:00:00.000Z", end_time="2026-01-01T00:00:03.000Z",
        caller="sip:1001@pbx", callee="sip:1002@pbx", direction="internal", status="missed",
        status_code=487, hangup_reason="canceled",
    )
    document = json.loads(cdr.to_json_bytes())
    assert set(document) == COMPAT_KEYS | OUR_KEYS  # the same shape as a full one
    for key in ("sessionId", "ringTime", "answerTime", "fromNumber", "toNumber", "recordingUrl",
                "recordingDurationSecs", "rewrite", "sipTrunkId", "sipGateway", "lastError",
                "edgeId"):
        assert document[key] is None, key
    assert document["hangupMessages"] == [] and document["recorder"] == []
    assert document["legTimeline"] == {"events": []}
    assert document["metadata"] == {}


def test_built_from_camel_case_or_snake_case_alike() -> None:
    document = json.loads(full_cdr().to_json_bytes())
    assert CallDetailRecord.model_validate(document) == full_cdr()
    snake = full_cdr().model_dump()
    assert CallDetailRecord.model_validate(snake) == full_cdr()


@pytest.mark.parametrize("change", [
    {"direction": "sideways"},
    {"status": "answered"},
    {"statusCode": 700},
    {"callId": ""},
    {"startTime": "2026-11-27T23:59:01+01:00"},  # UTC with Z only
    {"startTime": "2026-11-27 23:59:01Z"},
    {"endTime": "2026-13-01T00:00:00Z"},  # the pattern fits, the date does not
    {"ringTime": "yesterday"},
    {"billing": 3},  # a key the contract does not list
])
def test_invalid_documents_are_refused(change: dict[str, Any]) -> None:
    document = json.loads(full_cdr().to_json_bytes())
    document.update(change)
    with pytest.raises(ValidationError):
        CallDetailRecord.model_validate(document)


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    moment = datetime(2026, 11, 27, 23, 59, 1, 123000, tzinfo=UTC).timestamp()
    assert rfc3339(moment) == "2026-11-27T23:59:01.123Z"
    assert rfc3339(moment - 0.123) == "2026-11-27T23:59:01.000Z"
    # Rounded to the millisecond, carrying into the next day when it must.
    midnight = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    assert rfc3339(midnight - 0.0004) == "2026-11-28T00:00:00.000Z"
    assert rfc3339(midnight - 0.0006) == "2026-11-27T23:59:59.999Z"
    assert parse_rfc3339("2026-11-27T23:59:01.123Z") == pytest.approx(moment, abs=1e-6)
    assert parse_rfc3339("2026-11-27T23:59:01Z") == pytest.approx(moment - 0.123, abs=1e-6)
    with pytest.raises(ValueError):
        parse_rfc3339("2026-11-27T23:59:01.123+00:00")


@given(st.floats(min_value=0, max_value=4_102_444_800, allow_nan=False))
def test_time_strings_round_trip_to_the_millisecond(timestamp: float) -> None:
    text = rfc3339(timestamp)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    assert abs(parse_rfc3339(text) - timestamp) <= 0.0005 + 1e-6


def test_text_that_is_not_utf8_cannot_cost_the_cdr() -> None:
    # A From header with bytes that were not UTF-8, decoded with surrogateescape.
    cdr = full_cdr().model_copy(update={"caller": "sip:caf\udce9@pbx", "metadata": {"k": "\ud800"}})
    document = json.loads(cdr.to_json_bytes().decode("utf-8"))  # strict UTF-8: must decode
    assert document["caller"] == "sip:caf\ufffd@pbx"
    assert document["metadata"] == {"k": "?"}
    assert set(document) == COMPAT_KEYS | OUR_KEYS


def test_hangup_reasons_include_compat_list() -> None:
    assert {"byCaller", "byCallee", "byRefer", "bySystem", "noAnswer", "canceled", "rejected",
            "failed", "rtpTimeout"} <= HANGUP_REASONS


def test_import_is_lambda_safe() -> None:
    """No numpy and nothing of the edge: the control plane's Lambdas import it."""
    code = (
        "import sys, control.contracts.cdr\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('edge', 'numpy', 'httpx'))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == ""
