"""DigestAuthenticator: stateless nonces, nonce-count replay, realms, backend outcomes, logs."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from edge.pbx.auth import (
    Authenticated,
    AuthOutcome,
    Challenge,
    DigestAuthenticator,
    Drop,
    NonceCounts,
    Rejected,
    StatelessNonces,
    nonce_secret,
    outcome_response,
)
from edge.pbx.security import BruteForceGuard
from edge.pbx.users import LookupResult, Refused, Unavailable, UserRecord
from edge.sip.digest import (
    DigestCredentials,
    compute_ha1,
    compute_response,
    parse_challenge,
)
from edge.sip.events import Peer
from edge.sip.message import Request, parse_message
from tests.pbx import T0, answer, register

SECRET = b"auth-test-secret-0123456789abcdef"
PEER = Peer(transport="UDP", address=("192.0.2.10", 5060))
PASSWORD = "correct horse battery staple"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class Users:
    """A `UserLookup` answering from a dict, recording what it was asked."""

    def __init__(self, answers: dict[str, LookupResult] | None = None) -> None:
        self.answers: dict[str, LookupResult] = answers if answers is not None else {
            "alice": UserRecord(username="alice", password=PASSWORD),
        }
        self.asked: list[tuple[str, str, str]] = []

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        self.asked.append((username, realm, request_uri))
        return self.answers.get(username)


def request_of(data: bytes) -> Request:
    message = parse_message(data)
    assert isinstance(message, Request)
    return message


def invite(*, from_user: str = "alice", extra: tuple[str, ...] = ()) -> Request:
    lines = [
        "INVITE sip:bob@pbx.test SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-inv-1",
        "Max-Forwards: 70",
        f"From: <sip:{from_user}@pbx.test>;tag=f1",
        "To: <sip:bob@pbx.test>",
        "Call-ID: inv-1",
        "CSeq: 1 INVITE",
        *extra,
        "Content-Length: 0",
        "",
        "",
    ]
    return request_of("\r\n".join(lines).encode())


def authenticator(users: Users | None = None, **options: Any) -> DigestAuthenticator:
    options.setdefault("realms", ("pbx.test",))
    return DigestAuthenticator(users or Users(), secret=SECRET, **options)


async def challenge_then_answer(
    auth: DigestAuthenticator,
    *,
    user: str = "alice",
    password: str = PASSWORD,
    algorithm: str = "SHA-256",
    now: float = T0,
    nc: int = 1,
) -> AuthOutcome:
    first = await auth.authenticate(request_of(register(user=user)), PEER, now)
    assert isinstance(first, Challenge)
    response = outcome_response(request_of(register(user=user)), first, "tag")
    line = answer(response, user=user, password=password, uri="sip:pbx.test",
                  algorithm=algorithm, nc=nc)
    return await auth.authenticate(request_of(register(user=user, cseq=2, extra=[line])), PEER,
                                   now)


# --- nonces -----------------------------------------------------------------------------------


def test_nonce_is_43_base64url_characters_and_checks_fresh() -> None:
    nonces = StatelessNonces(SECRET, 300, random_bytes=lambda n: b"\x01" * n)
    nonce = nonces.issue("pbx.test", T0)
    assert len(nonce) == 43
    raw = base64.urlsafe_b64decode(nonce + "=")
    assert int.from_bytes(raw[:8], "big") == int(T0)
    assert raw[8:16] == b"\x01" * 8
    assert nonces.check(nonce, "pbx.test", T0 + 299) == ("fresh", T0)
    assert nonces.check(nonce, "pbx.test", T0 + 301) == ("stale", T0)


def test_nonce_refuses_tampering_other_realms_other_secrets_and_odd_spellings() -> None:
    nonces = StatelessNonces(SECRET, 300)
    nonce = nonces.issue("pbx.test", T0)
    flipped = nonce[:20] + ("A" if nonce[20] != "A" else "B") + nonce[21:]
    assert nonces.check(flipped, "pbx.test", T0)[0] == "invalid"
    assert nonces.check(nonce, "other.test", T0)[0] == "invalid"
    assert StatelessNonces(b"x" * 32, 300).check(nonce, "pbx.test", T0)[0] == "invalid"
    # The last character has 2 spare bits: another spelling of the same bytes is refused.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(nonce[-1])
    sibling = nonce[:-1] + alphabet[index ^ 1]
    assert base64.urlsafe_b64decode(sibling + "=") == base64.urlsafe_b64decode(nonce + "=")
    assert nonces.check(sibling, "pbx.test", T0)[0] == "invalid"
    for garbage in ("", "x" * 43, nonce + "A", nonce[:-1] + "=", "é" * 43, nonce[:42] + "+"):
        assert nonces.check(garbage, "pbx.test", T0)[0] == "invalid", garbage
    # From the future (beyond the allowed skew between edges): invalid.
    assert nonces.check(nonces.issue("pbx.test", T0 + 60), "pbx.test", T0)[0] == "invalid"
    assert nonces.check(nonces.issue("pbx.test", T0 + 10), "pbx.test", T0)[0] == "fresh"


def test_nonces_without_an_injected_source_are_all_different_and_check() -> None:
    # The default random source reads the kernel's CSPRNG in blocks: more than a block's
    # worth of nonces, each with its own 8 random bytes, each valid.
    nonces = StatelessNonces(SECRET, 300)
    issued = [nonces.issue("pbx.test", T0) for _ in range(1500)]
    assert len(set(issued)) == len(issued)
    randoms = {base64.urlsafe_b64decode(nonce + "=")[8:16] for nonce in issued}
    assert len(randoms) == len(issued)
    assert all(nonces.check(nonce, "pbx.test", T0) == ("fresh", T0) for nonce in issued)


def test_nonce_format_is_the_documented_hmac() -> None:
    # Edges sharing the secret (and other versions of this one) must agree on the bytes.
    import hashlib
    import hmac

    nonces = StatelessNonces(SECRET, 300, random_bytes=lambda n: bytes(range(n)))
    raw = base64.urlsafe_b64decode(nonces.issue("pbx.test", T0) + "=")
    body = int(T0).to_bytes(8, "big") + bytes(range(8))
    mac = hmac.digest(SECRET, b"sdpbx-nonce-1" + body + b"pbx.test", hashlib.sha256)[:16]
    assert raw == body + mac


def test_nonce_secret_is_derived_or_random() -> None:
    assert nonce_secret("master") == nonce_secret(b"master")
    assert len(nonce_secret("master")) == 32
    assert nonce_secret("master") != nonce_secret("other")
    assert nonce_secret(None) != nonce_secret(None)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        StatelessNonces(b"short", 300)


def test_nonce_counts_reject_repeats_and_lower_counts() -> None:
    counts = NonceCounts()
    assert not counts.replayed("n1", 1, T0)
    counts.record("n1", 1, T0, T0 + 300, T0)
    assert counts.replayed("n1", 1, T0)
    assert not counts.replayed("n1", 2, T0)
    counts.record("n1", 3, T0, T0 + 300, T0)
    assert counts.replayed("n1", 2, T0)
    assert not counts.replayed("n2", 1, T0)


def test_nonce_counts_are_bounded_and_never_reopen_a_forgotten_nonce() -> None:
    counts = NonceCounts(max_entries=2)
    counts.record("a", 1, T0, T0 + 300, T0)
    counts.record("b", 1, T0 + 1, T0 + 301, T0 + 1)
    counts.record("c", 1, T0 + 2, T0 + 302, T0 + 2)  # "a" is evicted while still valid
    assert len(counts) == 2
    assert counts.replayed("a", 5, T0)  # forgotten: treated as replayed, never re-opened
    assert not counts.replayed("d", 1, T0 + 3)  # newer nonces are unaffected
    # Expired entries leave as new ones arrive.
    counts.record("e", 1, T0 + 400, T0 + 700, T0 + 400)
    counts.record("f", 1, T0 + 401, T0 + 701, T0 + 401)
    assert len(counts) == 2


# --- realms and challenges ----------------------------------------------------------------------


def test_realm_comes_from_the_configured_realms_never_from_the_peer() -> None:
    auth = authenticator(realms=("PBX.test", "other.test"))
    assert auth.realm_for(request_of(register(domain="pbx.test"))) == "PBX.test"
    assert auth.realm_for(request_of(register(domain="other.test"))) == "other.test"
    assert auth.realm_for(request_of(register(domain="attacker.example"))) == "PBX.test"
    assert auth.realm_for(invite()) == "PBX.test"


def test_without_realms_the_to_host_or_from_host_is_the_realm() -> None:
    auth = authenticator(realms=())
    assert auth.realm_for(request_of(register(domain="Example.COM"))) == "example.com"
    assert auth.realm_for(invite()) == "pbx.test"


def test_invite_is_challenged_with_407_and_proxy_authenticate() -> None:
    async def scenario() -> None:
        users = Users()
        auth = authenticator(users)
        outcome = await auth.authenticate(invite(), PEER, T0)
        assert isinstance(outcome, Challenge) and outcome.status == 407
        assert [name for name, _ in outcome.headers] == ["Proxy-Authenticate"] * 2
        response = outcome_response(invite(), outcome, "t1")
        assert response.status == 407 and response.to_addr.tag == "t1"
        line = answer(response, user="alice", password=PASSWORD, uri="sip:bob@pbx.test",
                      method="INVITE")
        assert line.startswith("Proxy-Authorization: ")
        done = await auth.authenticate(invite(extra=(line,)), PEER, T0)
        assert isinstance(done, Authenticated) and done.username == "alice"
        # An Authorization header is not what a proxy reads: challenged again.
        wrong_header = "Authorization: " + line.partition(": ")[2]
        again = await auth.authenticate(invite(extra=(wrong_header,)), PEER, T0)
        assert isinstance(again, Challenge)
        assert users.asked == [("alice", "pbx.test", "sip:bob@pbx.test")]

    run(scenario())


def test_challenge_header_text() -> None:
    auth = authenticator(random_bytes=lambda n: bytes(n))
    challenge = auth.challenge(request_of(register()), T0, stale=True)
    nonce = auth._nonces.issue("pbx.test", T0)
    assert challenge.headers == (
        ("WWW-Authenticate",
         f'Digest realm="pbx.test", nonce="{nonce}", stale=true, algorithm=SHA-256, qop="auth"'),
        ("WWW-Authenticate",
         f'Digest realm="pbx.test", nonce="{nonce}", stale=true, algorithm=MD5, qop="auth"'),
    )


# --- outcomes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_correct_answer_authenticates(algorithm: str) -> None:
    async def scenario() -> None:
        outcome = await challenge_then_answer(authenticator(), algorithm=algorithm)
        assert isinstance(outcome, Authenticated)
        assert (outcome.username, outcome.realm, outcome.user.username) == (
            "alice", "pbx.test", "alice"
        )

    run(scenario())


def test_algorithm_not_offered_is_challenged() -> None:
    async def scenario() -> None:
        auth = authenticator(algorithms=("SHA-256",))
        first = await auth.authenticate(request_of(register()), PEER, T0)
        assert isinstance(first, Challenge) and len(first.headers) == 1
        nonce = parse_challenge(first.headers[0][1]).nonce
        ha1 = compute_ha1("alice", "pbx.test", PASSWORD, "MD5")
        credentials = DigestCredentials(
            username="alice", realm="pbx.test", nonce=nonce, uri="sip:pbx.test",
            response=compute_response(ha1, "REGISTER", "sip:pbx.test", nonce, qop="auth", nc=1,
                                      cnonce="c", algorithm="MD5"),
            algorithm="MD5", cnonce="c", qop="auth", nc="00000001",
        )
        line = f"Authorization: {credentials.to_header()}"
        outcome = await auth.authenticate(request_of(register(extra=[line])), PEER, T0)
        assert isinstance(outcome, Challenge)

    run(scenario())


@pytest.mark.parametrize(
    ("refusal", "expected"),
    [
        (Refused("disabled"), Rejected(status=403, reason="User disabled")),
        (Refused("blocked"), Rejected(status=403, reason="Blocked")),
        (Refused("payment_required"), Rejected(status=402, reason="Payment Required")),
        (Refused("spam"), Drop(reason="user backend answered spam")),
        (Unavailable("timeout"),
         Rejected(status=503, reason="User backend unavailable", headers=(("Retry-After", "5"),))),
    ],
)
def test_backend_answers_map_to_outcomes(refusal: LookupResult, expected: AuthOutcome) -> None:
    async def scenario() -> None:
        guard = BruteForceGuard(1, 60, 300)
        outcome = await challenge_then_answer(authenticator(Users({"alice": refusal}),
                                                            guard=guard))
        assert outcome == expected
        assert not guard.blocked("192.0.2.10", T0)  # none of these is a guessing failure

    run(scenario())


@pytest.mark.parametrize("answer_", [None, Refused("invalid_password")])
def test_unknown_user_and_invalid_password_count_as_failures(answer_: LookupResult) -> None:
    async def scenario() -> None:
        guard = BruteForceGuard(2, 60, 300)
        auth = authenticator(Users({"alice": answer_}), guard=guard)
        outcome = await challenge_then_answer(auth)
        assert isinstance(outcome, Challenge) and not outcome.stale
        assert guard.failures("192.0.2.10", T0) == 1

    run(scenario())


def test_disabled_user_is_refused_only_with_the_right_password() -> None:
    async def scenario() -> None:
        users = Users({"alice": UserRecord(username="alice", password=PASSWORD, enabled=False)})
        right = await challenge_then_answer(authenticator(users))
        assert right == Rejected(status=403, reason="User disabled")
        wrong = await challenge_then_answer(authenticator(users), password="nope")
        assert isinstance(wrong, Challenge)  # says nothing about the account

    run(scenario())


def test_guard_runs_on_the_monotonic_clock_when_given() -> None:
    async def scenario() -> None:
        guard = BruteForceGuard(1, 60, 300)
        auth = authenticator(guard=guard)
        first = await auth.authenticate(request_of(register()), PEER, T0)
        assert isinstance(first, Challenge)
        response = outcome_response(request_of(register()), first, "t")
        line = answer(response, user="alice", password="wrong", uri="sip:pbx.test")
        await auth.authenticate(request_of(register(extra=[line])), PEER, T0, monotonic=50.0)
        assert guard.blocked("192.0.2.10", 60.0)
        assert guard.blocked_until("192.0.2.10") == 350.0
        blocked = await auth.authenticate(request_of(register()), PEER, T0, monotonic=60.0)
        assert blocked == Rejected(status=403, reason="Too many failed authentications")

    run(scenario())


def test_forged_nonce_is_challenged_without_lookup_or_failure() -> None:
    async def scenario() -> None:
        users = Users()
        guard = BruteForceGuard(1, 60, 300)
        auth = authenticator(users, guard=guard)
        forged = DigestCredentials(
            username="alice", realm="pbx.test", nonce="A" * 43, uri="sip:pbx.test",
            response="0" * 64, algorithm="SHA-256", cnonce="c", qop="auth", nc="00000001",
        )
        outcome = await auth.authenticate(
            request_of(register(extra=[f"Authorization: {forged.to_header()}"])), PEER, T0
        )
        assert isinstance(outcome, Challenge) and not outcome.stale
        assert users.asked == [] and not guard.blocked("192.0.2.10", T0)

    run(scenario())


def test_credentials_for_another_realm_or_scheme_are_challenged() -> None:
    async def scenario() -> None:
        users = Users()
        auth = authenticator(users)
        for line in (
            'Authorization: Digest username="alice", realm="other.test", nonce="n", '
            'uri="sip:pbx.test", response="00"',
            "Authorization: Basic YWxpY2U6c2VjcmV0",
        ):
            outcome = await auth.authenticate(request_of(register(extra=[line])), PEER, T0)
            assert isinstance(outcome, Challenge), line
        assert users.asked == []

    run(scenario())


def test_malformed_credentials_are_400() -> None:
    async def scenario() -> None:
        auth = authenticator()
        outcome = await auth.authenticate(
            request_of(register(extra=['Authorization: Digest username="alice"'])), PEER, T0
        )
        assert outcome == Rejected(
            status=400, reason="malformed Authorization: Digest without realm"
        )
        first = await auth.authenticate(request_of(register()), PEER, T0)
        assert isinstance(first, Challenge)
        nonce = parse_challenge(first.headers[0][1]).nonce
        bad_nc = (f'Authorization: Digest username="alice", realm="pbx.test", nonce="{nonce}", '
                  'uri="sip:pbx.test", response="00", qop=auth, nc=0x000001, cnonce="c"')
        outcome = await auth.authenticate(request_of(register(extra=[bad_nc])), PEER, T0)
        assert outcome == Rejected(status=400, reason="malformed digest nc")

    run(scenario())


def test_rfc2069_answer_without_qop_is_single_use() -> None:
    async def scenario() -> None:
        auth = authenticator()
        first = await auth.authenticate(request_of(register()), PEER, T0)
        assert isinstance(first, Challenge)
        nonce = parse_challenge(first.headers[1][1]).nonce  # the MD5 one
        ha1 = compute_ha1("alice", "pbx.test", PASSWORD)
        digest = compute_response(ha1, "REGISTER", "sip:pbx.test", nonce)
        line = (f'Authorization: Digest username="alice", realm="pbx.test", nonce="{nonce}", '
                f'uri="sip:pbx.test", response="{digest}"')
        ok = await auth.authenticate(request_of(register(extra=[line])), PEER, T0)
        assert isinstance(ok, Authenticated)
        again = await auth.authenticate(request_of(register(extra=[line])), PEER, T0)
        assert isinstance(again, Challenge) and again.stale

    run(scenario())


def test_digest_uri_may_differ_in_spelling_only() -> None:
    async def scenario() -> None:
        auth = authenticator()
        first = await auth.authenticate(request_of(register(uri="sip:pbx.test")), PEER, T0)
        assert isinstance(first, Challenge)
        response = outcome_response(request_of(register()), first, "t")
        line = answer(response, user="alice", password=PASSWORD, uri="sip:PBX.test")
        outcome = await auth.authenticate(request_of(register(extra=[line])), PEER, T0)
        assert isinstance(outcome, Authenticated)

    run(scenario())


def test_passwords_and_ha1s_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    secrets = {
        PASSWORD,
        compute_ha1("alice", "pbx.test", PASSWORD, "MD5"),
        compute_ha1("alice", "pbx.test", PASSWORD, "SHA-256"),
    }

    async def scenario() -> None:
        guard = BruteForceGuard(2, 60, 300)
        auth = authenticator(guard=guard)
        await challenge_then_answer(auth)
        await challenge_then_answer(auth, password=PASSWORD + "x", nc=1)
        await challenge_then_answer(auth, password=PASSWORD + "y", nc=1)
        blocked = await auth.authenticate(request_of(register()), PEER, T0)
        assert isinstance(blocked, Rejected)
        users = Users({"alice": UserRecord(username="alice", password=PASSWORD, enabled=False)})
        await challenge_then_answer(authenticator(users))

    with caplog.at_level(logging.DEBUG, logger="sdpbx"):
        run(scenario())
    assert caplog.records, "the failures should have been logged"
    logged = "\n".join(
        f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records
    )
    assert "alice" in logged and "pbx.test" in logged
    for secret in secrets:
        assert secret not in logged
    assert "user disabled" in logged and "wrong password" in logged and "blocked" in logged
    assert repr(UserRecord(username="alice", password=PASSWORD)).count(PASSWORD) == 0
