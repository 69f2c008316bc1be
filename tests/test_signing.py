"""Webhook signatures (control.contracts.signing): round trip, tampering, rotation, clock skew."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from control.contracts.signing import (
    SIGNATURE_HEADER,
    compute_signature,
    sign,
    verification_failure,
    verify,
)

BODY = b'{"event":"registered","timestamp":1700000000,"location":{"aor":"sip:1001@pbx"}}'
SECRET = "whsec-test-0123456789"
NOW = 1_700_000_000.75


def test_header_shape_and_known_vector() -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=NOW)
    assert list(headers) == [SIGNATURE_HEADER]
    # Computed independently of the module, straight from the documented formula.
    expected = hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"t=1700000000,kid=k1,v1={expected}"
    assert compute_signature(BODY, secret=SECRET, timestamp=1700000000) == expected


def test_round_trip() -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=NOW)
    assert verify(BODY, headers, secrets={"k1": SECRET}, now=NOW)
    assert verification_failure(BODY, headers, secrets={"k1": SECRET}, now=NOW) is None


def test_bytes_secret_is_the_same_key_as_its_utf8_text() -> None:
    headers = sign(BODY, secret=SECRET.encode(), key_id="k1", now=NOW)
    assert verify(BODY, headers, secrets={"k1": SECRET}, now=NOW)


def test_header_name_is_case_insensitive_for_plain_dicts() -> None:
    value = sign(BODY, secret=SECRET, key_id="k1", now=NOW)[SIGNATURE_HEADER]
    assert verify(BODY, {"x-sdpbx-signature": value}, secrets={"k1": SECRET}, now=NOW)
    assert verify(BODY, {"X-SDPBX-SIGNATURE": value}, secrets={"k1": SECRET}, now=NOW)


def test_tampered_body_is_rejected() -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=NOW)
    tampered = BODY.replace(b"1001", b"1002")
    assert not verify(tampered, headers, secrets={"k1": SECRET}, now=NOW)
    assert verification_failure(tampered, headers, secrets={"k1": SECRET}, now=NOW) == (
        "signature does not match"
    )
    # Even a re-serialisation that means the same JSON is a different body.
    assert not verify(BODY + b"\n", headers, secrets={"k1": SECRET}, now=NOW)


def test_tampered_timestamp_is_rejected() -> None:
    value = sign(BODY, secret=SECRET, key_id="k1", now=NOW)[SIGNATURE_HEADER]
    moved = value.replace("t=1700000000", "t=1700000001")
    assert not verify(BODY, {SIGNATURE_HEADER: moved}, secrets={"k1": SECRET}, now=NOW)


def test_tampered_key_id_is_rejected() -> None:
    value = sign(BODY, secret=SECRET, key_id="k1", now=NOW)[SIGNATURE_HEADER]
    swapped = value.replace("kid=k1", "kid=k2")
    secrets = {"k1": SECRET, "k2": "another-secret"}
    assert not verify(BODY, {SIGNATURE_HEADER: swapped}, secrets=secrets, now=NOW)
    # An unknown key id is refused by name, never tried against every secret.
    failure = verification_failure(BODY, {SIGNATURE_HEADER: swapped},
                                   secrets={"k1": SECRET}, now=NOW)
    assert failure == "unknown key id 'k2'"


def test_wrong_secret_is_rejected() -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=NOW)
    assert not verify(BODY, headers, secrets={"k1": SECRET + "x"}, now=NOW)


def test_rotation_receiver_holds_old_and_new_keys() -> None:
    secrets = {"2024-01": "old-secret", "2024-06": "new-secret"}
    before = sign(BODY, secret="old-secret", key_id="2024-01", now=NOW)
    after = sign(BODY, secret="new-secret", key_id="2024-06", now=NOW)
    assert verify(BODY, before, secrets=secrets, now=NOW)
    assert verify(BODY, after, secrets=secrets, now=NOW)
    # Once the old key is retired, its signatures stop verifying.
    assert not verify(BODY, before, secrets={"2024-06": "new-secret"}, now=NOW)


@pytest.mark.parametrize(("skew", "ok"), [
    (0, True), (299, True), (300, True), (301, False), (3600, False),
    (-299, True), (-300, True), (-301, False),
])
def test_clock_skew_within_tolerance_either_way(skew: float, ok: bool) -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=1_700_000_000)
    assert verify(BODY, headers, secrets={"k1": SECRET}, now=1_700_000_000 + skew) is ok


def test_custom_tolerance() -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=1_700_000_000)
    assert not verify(BODY, headers, secrets={"k1": SECRET}, now=1_700_000_031, tolerance_s=30)
    assert verify(BODY, headers, secrets={"k1": SECRET}, now=1_700_000_030, tolerance_s=30)


def test_old_timestamp_reason_names_it() -> None:
    headers = sign(BODY, secret=SECRET, key_id="k1", now=1_700_000_000)
    failure = verification_failure(BODY, headers, secrets={"k1": SECRET}, now=1_700_001_000)
    assert failure is not None and "more than 300 s from now" in failure


def test_unknown_fields_are_ignored_and_any_v1_may_match() -> None:
    good = compute_signature(BODY, secret=SECRET, timestamp=1700000000)
    value = f"t=1700000000,kid=k1,v2=future,v1={'0' * 64},v1={good}"
    assert verify(BODY, {SIGNATURE_HEADER: value}, secrets={"k1": SECRET}, now=NOW)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "missing X-Sdpbx-Signature header"),
    ("garbage", "malformed signature header: expected key=value items"),
    ("kid=k1,v1=00", "malformed signature header: missing t"),
    ("t=1700000000,v1=00", "malformed signature header: missing kid"),
    ("t=1700000000,kid=k1", "no v1 signature in the header"),
    ("t=1700000000,t=1700000000,kid=k1,v1=00", "malformed signature header: more than one t"),
    ("t=1700000000,kid=k1,kid=k2,v1=00", "malformed signature header: more than one kid"),
    ("t=-5,kid=k1,v1=00", "malformed signature header: t is not a Unix time in seconds"),
    ("t=1e9,kid=k1,v1=00", "malformed signature header: t is not a Unix time in seconds"),
    ("t=\u0661\u0667" + "\u0660" * 8 + ",kid=k1,v1=00",  # Arabic-Indic digits: isdigit()
     "malformed signature header: t is not a Unix time in seconds"),
    ("t=" + "9" * 40 + ",kid=k1,v1=00",
     "malformed signature header: t is not a Unix time in seconds"),
    ("t=1700000000,kid=k1,v1=ünïcödé", "signature does not match"),
])
def test_malformed_headers_are_refused_with_a_reason(value: str | None, reason: str) -> None:
    headers = {} if value is None else {SIGNATURE_HEADER: value}
    assert verification_failure(BODY, headers, secrets={"k1": SECRET}, now=NOW) == reason
    assert verify(BODY, headers, secrets={"k1": SECRET}, now=NOW) is False


@pytest.mark.parametrize("key_id", ["", "a,b", "a=b", "a b", "ключ", 'a"b'])
def test_unusable_key_ids_are_refused_at_signing(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        sign(BODY, secret=SECRET, key_id=key_id, now=NOW)


def test_empty_secret_is_refused_at_signing() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        sign(BODY, secret="", key_id="k1", now=NOW)


def test_empty_secret_on_the_receiver_never_verifies() -> None:
    value = f"t=1700000000,kid=k1,v1={compute_signature(BODY, secret='x', timestamp=0)}"
    assert not verify(BODY, {SIGNATURE_HEADER: value}, secrets={"k1": ""}, now=NOW)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_documented_openssl_one_liner_agrees(tmp_path: Path) -> None:
    """docs/webhooks.md's shell check computes the same v1 as `sign`."""
    body_file = tmp_path / "body.json"
    body_file.write_bytes(BODY + b"\n")  # a trailing newline must be kept, not stripped
    value = sign(BODY + b"\n", secret=SECRET, key_id="k1", now=NOW)[SIGNATURE_HEADER]
    script = (
        "{ printf '%s.' \"$T\"; cat \"$BODY_FILE\"; } "
        "| openssl dgst -sha256 -hmac \"$SECRET\" -r | cut -d' ' -f1"
    )
    output = subprocess.run(
        ["sh", "-c", script], check=True, capture_output=True, text=True,
        env={"T": "1700000000", "BODY_FILE": str(body_file), "SECRET": SECRET,
             "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    assert value.endswith(f"v1={output}")


# --- docs/webhooks.md stays true ----------------------------------------------------------------

DOCS = Path(__file__).resolve().parents[1] / "docs" / "webhooks.md"


def documented_verifier() -> Callable[..., bool]:
    """The receiver's snippet from docs/webhooks.md, run as written."""
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("<!-- verify-snippet -->", 1)[1].split("```python\n", 1)[1]
    namespace: dict[str, Any] = {}
    exec(compile(block.split("```", 1)[0], str(DOCS), "exec"), namespace)
    verifier: Callable[..., bool] = namespace["verify_sdpbx_webhook"]
    return verifier


def test_documented_example_signature() -> None:
    text = DOCS.read_text(encoding="utf-8")
    header = sign(b'{"event":"registered"}', secret="example-secret", key_id="k1",
                  now=1718000000)[SIGNATURE_HEADER]
    assert f"X-Sdpbx-Signature: {header}\n" in text


def test_documented_python_snippet_agrees_with_verify() -> None:
    check = documented_verifier()
    secrets = {"k1": SECRET, "k2": "new-secret"}
    header = sign(BODY, secret=SECRET, key_id="k1", now=NOW)[SIGNATURE_HEADER]
    assert check(BODY, header, secrets, now=NOW)
    assert check(BODY, sign(BODY, secret="new-secret", key_id="k2", now=NOW)[SIGNATURE_HEADER],
                 secrets, now=NOW)
    assert not check(BODY + b" ", header, secrets, now=NOW)  # tampered body
    assert not check(BODY, header.replace("kid=k1", "kid=k2"), secrets, now=NOW)
    assert not check(BODY, header, secrets, now=NOW + 301)  # too old
    assert not check(BODY, header, {"k2": "new-secret"}, now=NOW)  # retired key
    for bad in ("", "garbage", "t=1,kid=k1", "t=x,kid=k1,v1=00", header + ",t=5"):
        assert not check(BODY, bad, secrets, now=NOW)
    assert check(BODY, header, secrets) is False  # the real clock: NOW is long past
