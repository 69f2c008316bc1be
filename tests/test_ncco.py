"""Call-control steps (control/contracts/ncco.py): Vonage NCCOs parse unchanged, our names and
Vonage's are the same models, bad lists name the step and the field, the schema is published."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from control.contracts.ncco import (
    ACTIONS,
    CANONICAL_ACTION,
    MAX_STEPS,
    AppEndpoint,
    ConferenceStep,
    ConnectStep,
    HangupStep,
    InputStep,
    NotifyStep,
    PhoneEndpoint,
    PlayStep,
    RecordStep,
    SayStep,
    SipEndpoint,
    StepsInvalid,
    WaitStep,
    WebsocketEndpoint,
    parse_steps,
    steps_json_schema,
    steps_to_json,
)

ROOT = Path(__file__).resolve().parents[1]

# NCCOs as printed in Vonage's NCCO reference (developer.vonage.com/voice/voice-api/ncco-reference
# and its examples), copied unchanged: they are the compatibility promise.
VONAGE_EXAMPLES: dict[str, str] = {
    "record_then_connect": """[
      {"action": "record", "eventUrl": ["https://example.com/recordings"]},
      {"action": "connect", "eventUrl": ["https://example.com/events"],
       "from": "447700900000",
       "endpoint": [{"type": "phone", "number": "447700900001"}]}
    ]""",
    "talk_input_ivr": """[
      {"action": "talk", "text": "Please enter a digit", "bargeIn": true},
      {"action": "input", "eventUrl": ["https://example.com/ivr"], "type": ["dtmf"],
       "dtmf": {"maxDigits": 1}}
    ]""",
    "input_legacy_form": """[
      {"action": "talk", "text": "Please enter a digit"},
      {"action": "input", "eventUrl": ["https://example.com/ivr"]}
    ]""",
    "stream": """[
      {"action": "stream", "streamUrl": ["https://acme.com/streams/music.mp3"]}
    ]""",
    "talk": """[
      {"action": "talk", "text": "You are listening to a test text-to-speech call made with
 the Vonage Voice API", "language": "en-US", "style": 0, "premium": false}
    ]""".replace("\n", ""),
    "conversation_standard": """[
      {"action": "conversation", "name": "nexmo-conference-standard", "record": "true"}
    ]""",
    "conversation_moderated": """[
      {"action": "talk", "text": "Welcome to a Vonage moderated conference. We will connect
 you when an agent is available", "voiceName": "Amy"},
      {"action": "conversation", "name": "nexmo-conference-moderated",
       "startOnEnter": "false",
       "musicOnHoldUrl": ["https://nexmo-community.github.io/ncco-examples/assets/voice_api_audio_streaming.mp3"]}
    ]""".replace("\n you", " you"),
    "connect_phone": """[
      {"action": "connect", "from": "447700900000",
       "endpoint": [{"type": "phone", "number": "447700900001", "dtmfAnswer": "2p02p"}]}
    ]""",
    "connect_sip_headers": """[
      {"action": "connect", "from": "447700900000",
       "endpoint": [{"type": "sip", "uri": "sip:rebekka@sip.example.com",
                     "headers": {"location": "New York City", "occupation": "developer"}}]}
    ]""",
    "connect_websocket": """[
      {"action": "connect",
       "endpoint": [{"type": "websocket", "uri": "ws://example.com/socket",
                     "content-type": "audio/l16;rate=16000",
                     "headers": {"name": "J Doe", "age": 40,
                                 "address": {"line_1": "123 Main Street",
                                             "city": "New York"},
                                 "system_roles": [183493, 1038492, 22],
                                 "enable_auditing": false}}]}
    ]""",
    "connect_app": """[
      {"action": "connect", "endpoint": [{"type": "app", "user": "jamie"}]}
    ]""",
    "notify": """[
      {"action": "notify", "payload": {"foo": "bar"},
       "eventUrl": ["https://example.com/webhooks/event"], "eventMethod": "POST"}
    ]""",
}


@pytest.mark.parametrize("name", sorted(VONAGE_EXAMPLES))
def test_vonage_examples_parse_unchanged(name: str) -> None:
    raw = json.loads(VONAGE_EXAMPLES[name])
    steps = parse_steps(VONAGE_EXAMPLES[name])
    assert [step.action for step in steps] == [item["action"] for item in raw]
    # The wire form round-trips: what the call record stores parses to the same steps.
    assert parse_steps(steps_to_json(steps)) == steps


def test_vonage_example_values() -> None:
    record, connect = parse_steps(VONAGE_EXAMPLES["record_then_connect"])
    assert isinstance(record, RecordStep) and isinstance(connect, ConnectStep)
    assert record.event_url == "https://example.com/recordings"
    assert record.time_out == 7200 and record.end_on_silence is None
    assert record.output_format == "wav"
    assert connect.from_ == "447700900000"
    assert connect.target == PhoneEndpoint(type="phone", number="447700900001")
    assert connect.timeout == 60 and connect.limit == 7200

    talk, ivr = parse_steps(VONAGE_EXAMPLES["talk_input_ivr"])
    assert isinstance(talk, SayStep) and isinstance(ivr, InputStep)
    assert talk.barge_in and talk.loop == 1 and talk.level == 0 and talk.language == "en-US"
    assert ivr.dtmf.max_digits == 1 and ivr.dtmf.time_out == 3
    assert not ivr.dtmf.submit_on_hash
    assert ivr.event_url == "https://example.com/ivr" and ivr.event_method == "POST"

    (_, legacy) = parse_steps(VONAGE_EXAMPLES["input_legacy_form"])
    assert isinstance(legacy, InputStep) and legacy.type == ["dtmf"]
    assert legacy.dtmf.max_digits == 4  # Vonage's default

    (conference,) = parse_steps(VONAGE_EXAMPLES["conversation_standard"])
    assert isinstance(conference, ConferenceStep)
    assert conference.record is True and conference.start_on_enter is True
    (_, moderated) = parse_steps(VONAGE_EXAMPLES["conversation_moderated"])
    assert isinstance(moderated, ConferenceStep) and moderated.start_on_enter is False
    assert moderated.music_on_hold is not None and moderated.music_on_hold.endswith(".mp3")

    (sip,) = parse_steps(VONAGE_EXAMPLES["connect_sip_headers"])
    assert isinstance(sip, ConnectStep) and isinstance(sip.target, SipEndpoint)
    assert sip.target.invite_headers == [
        ("X-location", "New York City"), ("X-occupation", "developer"),
    ]
    (ws,) = parse_steps(VONAGE_EXAMPLES["connect_websocket"])
    assert isinstance(ws, ConnectStep) and isinstance(ws.target, WebsocketEndpoint)
    assert ws.target.content_type == "audio/l16;rate=16000"
    assert ws.target.headers["address"]["city"] == "New York"
    (app,) = parse_steps(VONAGE_EXAMPLES["connect_app"])
    assert isinstance(app, ConnectStep) and app.target == AppEndpoint(type="app", user="jamie")

    (notify,) = parse_steps(VONAGE_EXAMPLES["notify"])
    assert isinstance(notify, NotifyStep)
    assert notify.payload == {"foo": "bar"}
    assert notify.event_url == "https://example.com/webhooks/event"


def test_aliases_map_to_the_same_models() -> None:
    pairs = [
        ({"action": "play", "streamUrl": ["https://x.test/a.wav"]},
         {"action": "stream", "streamUrl": ["https://x.test/a.wav"]}, PlayStep),
        ({"action": "say", "text": "hi"}, {"action": "talk", "text": "hi"}, SayStep),
        ({"action": "conference", "name": "room"},
         {"action": "conversation", "name": "room"}, ConferenceStep),
    ]
    for ours, theirs, model in pairs:
        a, b = parse_steps([ours, theirs])
        assert type(a) is type(b) is model
        assert a.kind == b.kind == CANONICAL_ACTION[str(ours["action"])]
        assert a.model_dump(exclude={"action"}) == b.model_dump(exclude={"action"})
    assert frozenset(CANONICAL_ACTION) == ACTIONS


def test_our_additions() -> None:
    play_url, play_file, say, wait, hangup = parse_steps({"steps": [
        {"action": "play", "url": "http://127.0.0.1:8000/p.wav", "loop": 0},
        {"action": "play", "file": "prompts/welcome.wav"},
        {"action": "say", "text": "hi", "voice": "en-us+f3"},
        {"action": "wait", "timeout": 0.5},
        {"action": "hangup", "reason": "done"},
    ]})
    assert isinstance(play_url, PlayStep) and isinstance(play_file, PlayStep)
    assert (play_url.source, play_url.source_kind) == ("http://127.0.0.1:8000/p.wav", "url")
    assert play_url.loop == 0
    assert (play_file.source, play_file.source_kind) == ("prompts/welcome.wav", "file")
    assert isinstance(say, SayStep) and say.voice_id == "en-us+f3"
    assert isinstance(wait, WaitStep) and wait.timeout == 0.5
    assert WaitStep(action="wait").timeout == 10
    assert isinstance(hangup, HangupStep) and hangup.reason == "done"
    assert parse_steps({"ncco": [{"action": "hangup"}]}) == [HangupStep(action="hangup")]
    assert parse_steps(b"[]") == []


def test_event_url_string_is_a_one_element_list() -> None:
    (step,) = parse_steps([{"action": "input", "eventUrl": "https://e.test/ivr"}])
    assert isinstance(step, InputStep) and step.event_url == "https://e.test/ivr"
    (step,) = parse_steps([{"action": "input"}])
    assert isinstance(step, InputStep) and step.event_url is None


def _error(data: Any) -> StepsInvalid:
    with pytest.raises(StepsInvalid) as info:
        parse_steps(data)
    return info.value


@pytest.mark.parametrize(("data", "index", "field", "needle"), [
    ([{"action": "talk"}], 0, "text", "Field required"),
    ([{"action": "talk", "text": "a"}, {"action": "input", "dtmf": {"maxDigits": 30}}],
     1, "dtmf.maxDigits", "less than or equal to 20"),
    ([{"action": "input", "type": ["speech"]}], 0, "", "speech input is not supported"),
    ([{"action": "input", "type": ["dtmf"], "speech": {"language": "en-GB"}}], 0, "",
     "speech input is not supported"),
    ([{"action": "talk", "text": "x", "bargin": True}], 0, "bargin", "Extra inputs"),
    ([{"action": "stream", "streamUrl": ["file:///etc/passwd"]}], 0, "streamUrl.0",
     "http:// or https://"),
    ([{"action": "play", "file": "../secret.wav"}], 0, "file", "no .."),
    ([{"action": "play", "file": "/etc/passwd"}], 0, "file", "relative"),
    ([{"action": "play"}], 0, "", "exactly one of streamUrl, url, file"),
    ([{"action": "stream", "streamUrl": ["https://a.test/1", "https://a.test/2"]}], 0,
     "streamUrl", "at most 1"),
    ([{"action": "dance"}], 0, "", "unknown action 'dance'"),
    ([{"text": "hello"}], 0, "", "needs an \"action\""),
    ([{"action": "connect", "endpoint": [{"type": "sip", "uri": "http://x.test"}]}], 0,
     "endpoint.0.uri", "sip: or sips:"),
    ([{"action": "connect", "endpoint": [{"type": "sip", "uri": "sip:a@b",
                                          "headers": {"Bad Name": "x"}}]}],
     0, "endpoint.0.headers", "not a SIP token"),
    ([{"action": "connect", "endpoint": [{"type": "sip", "uri": "sip:a@b",
                                          "headers": {"a": "x\r\nVia: evil"}}]}],
     0, "endpoint.0.headers", "line break"),
    ([{"action": "connect", "endpoint": [{"type": "vbc", "extension": "1234"}]}], 0,
     "endpoint.0", "vbc"),
    ([{"action": "connect", "endpoint": []}], 0, "endpoint", "at least 1"),
    ([{"action": "connect", "endpoint": [{"type": "phone", "number": "12ab"}]}], 0,
     "endpoint.0.number", "pattern"),
    ([{"action": "record", "endOnSilence": 1}], 0, "endOnSilence", "greater than or equal"),
    ([{"action": "record", "endOnKey": "12"}], 0, "endOnKey", "pattern"),
    ([{"action": "notify", "payload": {}}], 0, "eventUrl", "Field required"),
    ([{"action": "wait", "timeout": 0}], 0, "timeout", "greater than or equal to 0.1"),
    ([{"action": "talk", "text": "x", "level": 2}], 0, "level", "less than or equal to 1"),
    ([{"action": "transfer", "destination": {}}], 0, "", "unknown action 'transfer'"),
    ([{"action": "input", "mode": "asynchronous"}], 0, "", "asynchronous input"),
    (["talk"], 0, "", "valid dictionary"),
])
def test_invalid_lists_name_index_and_field(
    data: Any, index: int, field: str, needle: str
) -> None:
    error = _error(data)
    first = error.errors[0]
    assert (first.index, first.field) == (index, field), error.errors
    assert needle in first.message, first.message
    # The text names them too, for a person reading the error event.
    assert f"step {index}" in str(error) and field in str(error)


def test_every_problem_is_reported() -> None:
    error = _error([{"action": "talk"}, {"action": "wait"}, {"action": "input",
                                                            "dtmf": {"maxDigits": 0}}])
    assert [(e.index, e.field) for e in error.errors] == [(0, "text"), (2, "dtmf.maxDigits")]
    assert error.error_dicts()[1] == {
        "index": 2, "action": "input", "field": "dtmf.maxDigits",
        "message": error.errors[1].message,
    }


@pytest.mark.parametrize(("data", "needle"), [
    (b"{not json", "not JSON"),
    (b"\xff\xfe", "not JSON"),
    ('{"action": "talk", "text": "x"}', "\"steps\" or \"ncco\""),
    ('{"steps": [], "ncco": []}', "\"steps\" or \"ncco\""),
    ('"talk"', "JSON array"),
    ([{"action": "wait"}] * (MAX_STEPS + 1), f"at most {MAX_STEPS} steps"),
])
def test_invalid_containers(data: Any, needle: str) -> None:
    error = _error(data)
    assert error.errors[0].index is None
    assert needle in str(error)


def test_limits_accept_the_maximum() -> None:
    assert len(parse_steps([{"action": "wait"}] * MAX_STEPS)) == MAX_STEPS


def test_legacy_and_nested_dtmf_settings_conflict_is_an_error() -> None:
    error = _error([{"action": "input", "maxDigits": 2, "dtmf": {"maxDigits": 3}}])
    assert error.errors[0].field == "maxDigits"


def test_sip_header_values_and_standard_headers() -> None:
    (step,) = parse_steps([{"action": "connect", "endpoint": [{
        "type": "sip", "uri": "sips:bob@127.0.0.1;transport=tls",
        "headers": {"X-Tenant": "7", "hobbies": ["fishing", "cooking"], "vip": True},
        "standardHeaders": {"User-to-User": "342342ef34;encoding=hex"},
    }]}])
    assert isinstance(step, ConnectStep) and isinstance(step.target, SipEndpoint)
    assert step.target.invite_headers == [
        ("X-Tenant", "7"), ("X-hobbies", '["fishing","cooking"]'), ("X-vip", "true"),
        ("User-to-User", "342342ef34;encoding=hex"),
    ]
    error = _error([{"action": "connect", "endpoint": [{
        "type": "sip", "uri": "sip:a@b", "standardHeaders": {"Via": "x"}}]}])
    assert error.errors[0].field.startswith("endpoint.0.standardHeaders")


def test_record_formats_fall_back_to_wav() -> None:
    for fmt in ("mp3", "ogg", "wav"):
        (step,) = parse_steps([{"action": "record", "format": fmt}])
        assert isinstance(step, RecordStep) and step.output_format == "wav"
    assert _error([{"action": "record", "format": "flac"}]).errors[0].field == "format"


def test_schema_covers_every_action() -> None:
    schema = steps_json_schema()
    assert schema["type"] == "array" and schema["maxItems"] == MAX_STEPS
    text = json.dumps(schema)
    for action in ACTIONS:
        assert f'"{action}"' in text
    for vonage_name in ("streamUrl", "bargeIn", "maxDigits", "eventUrl", "content-type",
                        "musicOnHoldUrl", "dtmfAnswer", "ringbackTone"):
        assert f'"{vonage_name}"' in text


def test_committed_schema_file_is_current() -> None:
    committed = (ROOT / "docs" / "ncco.schema.json").read_text(encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_ncco_schema.py"), "--stdout"],
        capture_output=True, text=True, check=True, timeout=60, cwd=ROOT,
    )
    assert result.stdout == committed, "run scripts/gen_ncco_schema.py and commit the file"


# Vonage's examples that write booleans as strings ("true") parse (the parser is lax about
# JSON scalar types, as Vonage is) but the schema documents the strict types.
_LAX_EXAMPLES = {"conversation_standard", "conversation_moderated", "input_legacy_form"}


def test_published_schema_accepts_the_examples_and_rejects_bad_lists() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft202012Validator(steps_json_schema())
    for name, text in VONAGE_EXAMPLES.items():
        if name not in _LAX_EXAMPLES:
            errors = list(validator.iter_errors(json.loads(text)))
            assert not errors, (name, errors[0].message)
    for bad in ([{"action": "talk"}], [{"action": "dance"}],
                [{"action": "wait"}] * (MAX_STEPS + 1),
                [{"action": "stream", "streamUrl": ["ftp://x"]}]):
        assert not validator.is_valid(bad), bad
