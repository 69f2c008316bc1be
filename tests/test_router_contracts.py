"""The routing webhook's wire models (control.contracts.router): RustPBX's field names, lenient
where RustPBX is (nulls, unknown fields), strict where a value would reach the SIP wire."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from control.contracts.router import ROUTE_ACTIONS, RouteRequest, RouteResponse


def test_request_serialises_from_under_its_wire_name() -> None:
    request = RouteRequest(
        call_id="c1", from_="<sip:1001@pbx>;tag=a", to="<sip:2002@pbx>",
        source_addr="198.51.100.7:5060", direction="internal", uri="sip:2002@pbx",
        headers={"User-Agent": "phone"}, body="v=0\r\n",
    )
    wire = request.model_dump(by_alias=True)
    assert list(wire) == ["call_id", "from", "to", "source_addr", "direction", "method", "uri",
                          "headers", "body"]
    assert wire["from"] == "<sip:1001@pbx>;tag=a"
    assert wire["method"] == "INVITE"
    # What a receiver (the control plane's default router) parses back is the same request.
    assert RouteRequest.model_validate(json.loads(json.dumps(wire))) == request


def test_request_direction_is_one_of_three() -> None:
    with pytest.raises(ValidationError):
        RouteRequest.model_validate({"call_id": "c", "from": "f", "to": "t",
                                     "source_addr": "1.2.3.4:5", "direction": "sideways",
                                     "uri": "sip:x@y"})


def test_full_rustpbx_reply_parses_and_unknown_fields_are_ignored() -> None:
    reply = RouteResponse.model_validate_json(json.dumps({
        "action": "forward", "targets": ["sip:1001@pbx", "2002"], "strategy": "parallel",
        "record": True, "timeout": 3600, "max_ring_time": 30, "rtp_timeout": 15.5,
        "headers": {"X-Account": "42"}, "with_original_headers": True,
        "extensions": {"crm_id": "A-7", "score": 3}, "allow_codecs": ["PCMU"],
        "media_proxy": "auto",  # a RustPBX field we do not use
    }))
    assert reply.targets == ["sip:1001@pbx", "2002"]
    assert reply.strategy == "parallel"
    assert (reply.timeout, reply.max_ring_time, reply.rtp_timeout) == (3600, 30, 15.5)
    assert reply.extensions == {"crm_id": "A-7", "score": 3}
    assert reply.headers == {"X-Account": "42"}


def test_nulls_mean_defaults_as_in_rustpbx() -> None:
    reply = RouteResponse.model_validate_json(
        '{"action": "not_handled", "targets": null, "strategy": null, "headers": null,'
        ' "extensions": null, "with_original_headers": null, "allow_codecs": null}'
    )
    assert reply.targets == [] and reply.headers == {} and reply.extensions == {}
    assert reply.strategy == "sequential" and reply.with_original_headers is False
    assert reply.status is None and reply.record is None


@pytest.mark.parametrize("action", sorted(ROUTE_ACTIONS))
def test_every_action_parses(action: str) -> None:
    body: dict[str, Any] = {"action": action}
    if action == "forward":
        body["targets"] = ["1001"]
    if action == "answer":
        body["steps"] = [{"action": "talk", "text": "hello"}]
    assert RouteResponse.model_validate(body).action == action


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ('{"action": "teleport"}', "action"),
        ("{}", "action"),
        ("not json", "json"),
        ("", "json"),
        ('["forward"]', "RouteResponse"),
        ('{"action": "forward"}', "target"),
        ('{"action": "forward", "targets": []}', "target"),
        ('{"action": "forward", "targets": [""]}', "targets"),
        ('{"action": "answer"}', "steps"),
        ('{"action": "reject", "status": 200}', "status 200"),
        ('{"action": "reject", "status": 900}', "status"),
        ('{"action": "forward", "targets": ["1"], "timeout": -1}', "timeout"),
        ('{"action": "forward", "targets": ["1"], "strategy": "random"}', "strategy"),
        # A header must not smuggle a second SIP header (or end the header section).
        ('{"action": "forward", "targets": ["1"], "headers": {"X-A": "1\\r\\nVia: evil"}}',
         "line break"),
        ('{"action": "forward", "targets": ["1"], "headers": {"X A": "1"}}', "token"),
        ('{"action": "reject", "reason": "no\\r\\nVia: x"}', "reason"),
    ],
)
def test_invalid_replies_raise_validation_error(body: str, where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        RouteResponse.model_validate_json(body)
    assert where.lower() in str(caught.value).lower()


def test_contract_imports_nothing_from_the_edge() -> None:
    # Lambda code: no edge, numpy or uvloop may come along with the contract.
    code = ("import sys, control.contracts.router; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('edge', 'numpy', 'uvloop', 'httpx')))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=60)
    assert out.stdout.strip() == "[]"
