"""The registrar through a real SipEndpoint + PbxCore: REGISTER flows of RFC 3261 §10.3, digest
authentication (RFC 7616, RFC 8760), NAT handling, expiry sweep; and the same through SQLite."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import pytest

from control.store.local_blobs import LocalBlobStore
from control.store.models import Binding
from control.store.sqlite import SqliteStores
from edge.pbx.auth import DigestAuthenticator
from edge.pbx.bindings import Target
from edge.pbx.locator import LocatorNotifier
from edge.pbx.registrar import Registrar, aor_key
from edge.pbx.security import BruteForceGuard
from edge.pbx.users import MemoryUserBackend, UserBackendChain, UserRecord
from edge.sip.digest import parse_challenge
from edge.sip.events import Peer
from edge.sip.message import Response
from edge.sip.uri import parse_sip_uri
from tests.pbx import (
    PHONE,
    T0,
    Clock,
    EndpointTransport,
    Harness,
    MemoryRegistrationStore,
    RecordingNotifier,
    answer,
    contacts_of,
    register,
)

SECRET = b"registrar-test-nonce-secret-0123"
USERS = [
    UserRecord(username="alice", password="alice-secret"),
    UserRecord(username="bob", password="bob-secret"),
]


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class Setup:
    """A harness with a memory user backend, a recording notifier and a memory store."""

    def __init__(
        self,
        *,
        realms: tuple[str, ...] = ("pbx.test",),
        guard: BruteForceGuard | None = None,
        block_action: str = "403",
        store: Any = None,
        authenticate: bool = True,
        nonce_lifetime_s: float = 300,
        **registrar: Any,
    ) -> None:
        self.clock = Clock()
        self.store = store if store is not None else MemoryRegistrationStore()
        self.notifier = RecordingNotifier()
        self.guard = guard
        self.auth = DigestAuthenticator(
            UserBackendChain([MemoryUserBackend(USERS)]),
            secret=SECRET,
            realms=realms,
            nonce_lifetime_s=nonce_lifetime_s,
            guard=guard,
            block_action=block_action,  # type: ignore[arg-type]
        )

        def build(transport: EndpointTransport) -> Registrar:
            return Registrar(
                transport,
                store=self.store,
                authenticator=self.auth if authenticate else None,
                notifier=self.notifier,
                edge_id="edge-a",
                wall_clock=self.clock,
                realms=realms,
                local_hosts=("127.0.0.1",),
                **{"default_expires": 3600, "min_expires": 60, "max_expires": 7200,
                   **registrar},
            )

        self.h = Harness(build, self.clock)
        self.registrar = self.h.registrar

    async def send(self, data: bytes, source: tuple[str, int] = PHONE,
                   connection: int | None = None) -> Response:
        response = await self.h.send(data, source, connection=connection)
        assert response is not None
        return response

    async def login(
        self,
        *,
        user: str = "alice",
        password: str | None = None,
        cseq: int = 1,
        algorithm: str = "SHA-256",
        extra: tuple[str, ...] = (),
        source: tuple[str, int] = PHONE,
        connection: int | None = None,
        **kw: Any,
    ) -> Response:
        """REGISTER, take the 401, answer it: the final response to the second REGISTER."""
        password = password or f"{user}-secret"
        challenge = await self.send(register(user=user, cseq=cseq, extra=extra, **kw), source,
                                    connection)
        assert challenge.status == 401, challenge
        uri = kw.get("uri") or f"sip:{kw.get('domain', 'pbx.test')}"
        authorization = answer(challenge, user=user, password=password, uri=uri,
                               algorithm=algorithm)
        return await self.send(
            register(user=user, cseq=cseq + 1, extra=(authorization, *extra), **kw), source,
            connection,
        )


def expires_of(response: Response) -> dict[str, int]:
    """Contact URI -> expires parameter, from a 200's Contact values."""
    out: dict[str, int] = {}
    for value in contacts_of(response):
        uri, _, params = value.partition(">")
        expires = [p.split("=")[1] for p in params.split(";") if p.startswith("expires=")]
        out[uri.lstrip("<")] = int(expires[0])
    return out


# --- digest authentication through the registrar --------------------------------------------


def test_challenge_offers_sha256_then_md5_and_the_answer_registers() -> None:
    async def scenario() -> None:
        s = Setup()
        challenge = await s.send(register())
        assert challenge.status == 401
        offered = [parse_challenge(v) for v in challenge.headers.get_lines("WWW-Authenticate")]
        assert [c.algorithm for c in offered] == ["SHA-256", "MD5"]
        assert all(c.realm == "pbx.test" and c.qop == ("auth",) and not c.stale for c in offered)
        assert offered[0].nonce == offered[1].nonce
        assert challenge.to_addr.tag  # §8.2.6.2
        assert s.store.calls == {}  # a challenge costs no store round trip

        authorization = answer(challenge, user="alice", password="alice-secret",
                               uri="sip:pbx.test")
        ok = await s.send(register(cseq=2, extra=[authorization]))
        assert ok.status == 200
        assert expires_of(ok) == {"sip:alice@192.0.2.10:5060": 3600}
        assert ok.headers.get("Date") == "Fri, 15 Jan 2027 08:00:00 GMT"
        (binding,) = s.store.all("sip:alice@pbx.test")
        assert binding.contact == "sip:alice@192.0.2.10:5060"
        assert binding.expires_at == T0 + 3600
        assert binding.source == "192.0.2.10:5060"
        assert binding.transport == "UDP"
        assert binding.edge_id == "edge-a"
        assert binding.user_agent == "TestPhone/1.0"
        assert (binding.call_id, binding.cseq) == ("reg-1@phone", 2)
        assert s.notifier.kinds() == ["registered"]

    run(scenario())


def test_md5_answer_registers_too() -> None:
    async def scenario() -> None:
        s = Setup()
        ok = await s.login(algorithm="MD5")
        assert ok.status == 200

    run(scenario())


def test_wrong_password_is_challenged_again_then_blocked_with_403() -> None:
    async def scenario() -> None:
        s = Setup(guard=BruteForceGuard(3, 60, 300))
        for attempt in range(3):
            response = await s.login(password="guess", cseq=10 * attempt + 1)
            assert response.status == 401, attempt
            assert not parse_challenge(response.headers.get_lines("WWW-Authenticate")[0]).stale
        blocked = await s.send(register(cseq=100))
        assert blocked.status == 403
        assert blocked.reason == "Too many failed authentications"
        # Even the right password is refused while the block lasts; other sources are not.
        assert (await s.send(register(cseq=101, call_id="x"))).status == 403
        other = ("198.51.100.7", 5060)
        assert (await s.login(source=other, call_id="other", via="198.51.100.7:5060")).status \
            == 200
        assert s.store.all("sip:alice@pbx.test")[0].source == "198.51.100.7:5060"

    run(scenario())


def test_blocked_source_is_dropped_when_the_action_is_drop() -> None:
    async def scenario() -> None:
        s = Setup(guard=BruteForceGuard(1, 60, 300), block_action="drop")
        assert (await s.login(password="guess")).status == 401
        assert await s.h.send(register(cseq=5)) is None
        assert len(s.h.transport.dropped) == 1

    run(scenario())


def test_stale_nonce_gets_stale_true_and_a_fresh_nonce_works() -> None:
    async def scenario() -> None:
        s = Setup(nonce_lifetime_s=60)
        challenge = await s.send(register())
        s.clock.now += 61
        late = answer(challenge, user="alice", password="alice-secret", uri="sip:pbx.test")
        stale = await s.send(register(cseq=2, extra=[late]))
        assert stale.status == 401
        offered = [parse_challenge(v) for v in stale.headers.get_lines("WWW-Authenticate")]
        assert all(c.stale for c in offered)
        fresh = answer(stale, user="alice", password="alice-secret", uri="sip:pbx.test")
        assert (await s.send(register(cseq=3, extra=[fresh]))).status == 200

    run(scenario())


def test_stale_nonce_with_a_wrong_password_is_not_stale() -> None:
    async def scenario() -> None:
        s = Setup(nonce_lifetime_s=60)
        challenge = await s.send(register())
        s.clock.now += 61
        late = answer(challenge, user="alice", password="wrong", uri="sip:pbx.test")
        response = await s.send(register(cseq=2, extra=[late]))
        assert response.status == 401
        assert not parse_challenge(response.headers.get_lines("WWW-Authenticate")[0]).stale

    run(scenario())


def test_nonce_count_replay_is_rejected_and_a_higher_count_accepted() -> None:
    async def scenario() -> None:
        s = Setup()
        challenge = await s.send(register())
        first = answer(challenge, user="alice", password="alice-secret", uri="sip:pbx.test")
        assert (await s.send(register(cseq=2, extra=[first]))).status == 200
        # The same Authorization on a new REGISTER (a replay): fresh challenge, stale=true.
        replay = await s.send(register(cseq=3, extra=[first]))
        assert replay.status == 401
        assert parse_challenge(replay.headers.get_lines("WWW-Authenticate")[0]).stale
        # The client's next request with the same nonce and the next nc is fine.
        second = answer(challenge, user="alice", password="alice-secret", uri="sip:pbx.test",
                        nc=2)
        assert (await s.send(register(cseq=4, extra=[second]))).status == 200
        lower = answer(challenge, user="alice", password="alice-secret", uri="sip:pbx.test",
                       nc=1, cnonce="another")
        assert (await s.send(register(cseq=5, extra=[lower]))).status == 401

    run(scenario())


def test_credentials_for_another_users_aor_are_refused() -> None:
    async def scenario() -> None:
        s = Setup()
        challenge = await s.send(register(user="alice"))
        as_bob = answer(challenge, user="bob", password="bob-secret", uri="sip:pbx.test")
        refused = await s.send(register(user="alice", cseq=2, extra=[as_bob]))
        assert refused.status == 403
        assert s.store.all("sip:alice@pbx.test") == []

    run(scenario())


def test_digest_uri_must_match_the_request_uri() -> None:
    async def scenario() -> None:
        s = Setup()
        challenge = await s.send(register())
        elsewhere = answer(challenge, user="alice", password="alice-secret",
                           uri="sip:other.test")
        response = await s.send(register(cseq=2, extra=[elsewhere]))
        assert response.status == 400
        assert "uri" in response.reason

    run(scenario())


# --- RFC 3261 §10.3 ---------------------------------------------------------------------------


def test_request_uri_of_another_domain_is_404() -> None:
    async def scenario() -> None:
        s = Setup()
        response = await s.send(register(domain="elsewhere.test"))
        assert response.status == 404
        # Our own address in the Request-URI is fine: the AOR is filed under the realm.
        ok = await s.login(uri="sip:127.0.0.1", domain="127.0.0.1")
        assert ok.status == 200
        assert s.store.all("sip:alice@pbx.test")

    run(scenario())


def test_too_brief_expiry_is_423_with_min_expires() -> None:
    async def scenario() -> None:
        s = Setup()
        response = await s.login(expires=30)
        assert response.status == 423
        assert response.headers.get("Min-Expires") == "60"
        param = await s.login(contacts=["<sip:alice@192.0.2.10>;expires=59"], cseq=10)
        assert param.status == 423
        assert s.store.all("sip:alice@pbx.test") == []

    run(scenario())


def test_expiry_from_param_header_default_and_ceiling() -> None:
    async def scenario() -> None:
        s = Setup()
        ok = await s.login(
            contacts=["<sip:a@192.0.2.10:1>;expires=120", "<sip:a@192.0.2.10:2>"], expires=300
        )
        assert expires_of(ok) == {"sip:a@192.0.2.10:1": 120, "sip:a@192.0.2.10:2": 300}
        longer = await s.login(contacts=["<sip:a@192.0.2.10:3>"], expires=99999, cseq=10)
        assert expires_of(longer)["sip:a@192.0.2.10:3"] == 7200
        huge = await s.login(contacts=["<sip:a@192.0.2.10:4>;expires=" + "9" * 40], cseq=20)
        assert expires_of(huge)["sip:a@192.0.2.10:4"] == 7200
        default = await s.login(contacts=["<sip:a@192.0.2.10:5>"], cseq=30)
        assert expires_of(default)["sip:a@192.0.2.10:5"] == 3600

    run(scenario())


def test_the_200_lists_every_binding_with_its_remaining_expiry() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login(contacts=["<sip:alice@192.0.2.10:5060>"], call_id="phone-1")
        s.clock.now += 100
        ok = await s.login(contacts=["<sip:alice@192.0.2.20:5060>"], call_id="phone-2",
                           via="192.0.2.20:5060", source=("192.0.2.20", 5060))
        assert expires_of(ok) == {"sip:alice@192.0.2.20:5060": 3600,
                                  "sip:alice@192.0.2.10:5060": 3500}

    run(scenario())


def test_several_contacts_are_listed_by_q_and_looked_up_in_that_order() -> None:
    async def scenario() -> None:
        s = Setup()
        ok = await s.login(contacts=[
            "<sip:alice@192.0.2.10:5001>;q=0.1",
            "<sip:alice@192.0.2.10:5002>;q=0.9",
            "<sip:alice@192.0.2.10:5003>",
        ])
        assert [v.split(">")[0] for v in contacts_of(ok)] == [
            "<sip:alice@192.0.2.10:5003", "<sip:alice@192.0.2.10:5002",
            "<sip:alice@192.0.2.10:5001",
        ]
        assert contacts_of(ok)[1].endswith(";q=0.9")
        targets = await s.registrar.lookup("sip:alice@pbx.test")
        assert [(t.contact, t.q) for t in targets] == [
            ("sip:alice@192.0.2.10:5003", 1.0), ("sip:alice@192.0.2.10:5002", 0.9),
            ("sip:alice@192.0.2.10:5001", 0.1),
        ]
        # A URI works as well as a key (the B2BUA passes a Request-URI).
        by_uri = await s.registrar.lookup(parse_sip_uri("sip:alice@PBX.test:5060;user=phone"))
        assert by_uri == targets

    run(scenario())


def test_star_with_expires_zero_removes_every_binding() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login(contacts=["<sip:alice@192.0.2.10:1>", "<sip:alice@192.0.2.10:2>"])
        removed = await s.login(contacts=["*"], expires=0, cseq=10, call_id="other-call")
        assert removed.status == 200
        assert contacts_of(removed) == []
        assert s.store.all("sip:alice@pbx.test") == []
        assert s.notifier.kinds() == ["registered"] * 2 + ["unregistered"] * 2
        assert await s.registrar.lookup("sip:alice@pbx.test") == []

    run(scenario())


def test_star_needs_expires_zero_and_no_other_contact() -> None:
    async def scenario() -> None:
        s = Setup()
        assert (await s.login(contacts=["*"], expires=3600)).status == 400
        assert (await s.login(contacts=["*"], cseq=10)).status == 400
        both = await s.login(contacts=["*", "<sip:alice@192.0.2.10>"], expires=0, cseq=20)
        assert both.status == 400
        assert "Contact *" in both.reason

    run(scenario())


def test_expires_zero_removes_one_binding() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login(contacts=["<sip:alice@192.0.2.10:1>", "<sip:alice@192.0.2.10:2>"])
        ok = await s.login(contacts=["<sip:alice@192.0.2.10:1>;expires=0"], cseq=10)
        assert list(expires_of(ok)) == ["sip:alice@192.0.2.10:2"]
        assert [b.contact for b in s.store.all("sip:alice@pbx.test")] == [
            "sip:alice@192.0.2.10:2"
        ]
        assert s.notifier.kinds()[-1] == "unregistered"

    run(scenario())


def test_older_cseq_for_the_same_call_id_is_refused_and_a_new_call_id_replaces() -> None:
    async def scenario() -> None:
        s = Setup(authenticate=False)
        assert (await s.send(register(cseq=5))).status == 200
        stale = await s.send(register(cseq=5, expires=1800))
        assert stale.status == 500
        assert "CSeq" in stale.reason
        assert (await s.send(register(cseq=4))).status == 500
        assert s.store.all("sip:alice@pbx.test")[0].cseq == 5
        # A different Call-ID (the phone rebooted) replaces the binding whatever its CSeq.
        assert (await s.send(register(cseq=1, call_id="after-reboot"))).status == 200
        (binding,) = s.store.all("sip:alice@pbx.test")
        assert (binding.call_id, binding.cseq) == ("after-reboot", 1)
        # `*` obeys the same rule.
        star = await s.send(register(cseq=1, call_id="after-reboot", contacts=["*"], expires=0))
        assert star.status == 500

    run(scenario())


def test_the_same_contact_twice_in_one_request_counts_once() -> None:
    async def scenario() -> None:
        s = Setup(authenticate=False)
        ok = await s.send(register(contacts=["<sip:alice@192.0.2.10>;expires=100",
                                             "<sip:alice@192.0.2.10>;expires=200"]))
        assert expires_of(ok) == {"sip:alice@192.0.2.10": 200}
        gone = await s.send(register(cseq=2, contacts=["<sip:alice@192.0.2.10>",
                                                       "<sip:alice@192.0.2.10>;expires=0"]))
        assert gone.status == 200 and contacts_of(gone) == []
        assert s.store.all("sip:alice@pbx.test") == []
        assert s.notifier.kinds() == ["registered", "unregistered"]

    run(scenario())


def test_without_realms_any_domain_is_served() -> None:
    async def scenario() -> None:
        s = Setup(realms=())
        ok = await s.login(domain="Example.COM")
        assert ok.status == 200
        assert s.store.all("sip:alice@example.com")
        challenge = await s.send(register(domain="other.example", call_id="o"))
        assert parse_challenge(challenge.headers.get_lines("WWW-Authenticate")[0]).realm == \
            "other.example"

    run(scenario())


def test_max_contacts_per_aor_is_enforced_with_a_reason() -> None:
    async def scenario() -> None:
        s = Setup(max_contacts=2)
        ok = await s.login(contacts=["<sip:alice@192.0.2.10:1>", "<sip:alice@192.0.2.10:2>"])
        assert ok.status == 200
        refused = await s.login(contacts=["<sip:alice@192.0.2.10:3>"], cseq=10)
        assert refused.status == 403
        assert refused.reason == "Too many contacts (at most 2 per AOR)"
        assert len(s.store.all("sip:alice@pbx.test")) == 2
        # Refreshing the existing ones is still fine.
        again = await s.login(contacts=["<sip:alice@192.0.2.10:1>"], cseq=20)
        assert again.status == 200

    run(scenario())


def test_path_is_stored_and_echoed_to_a_client_that_supports_it() -> None:
    async def scenario() -> None:
        s = Setup()
        path = ("Path: <sip:edge-proxy.test;lr>", "Supported: path")
        ok = await s.login(extra=path)
        assert ok.headers.get_all("Path") == ["<sip:edge-proxy.test;lr>"]
        (binding,) = s.store.all("sip:alice@pbx.test")
        assert binding.path == ("<sip:edge-proxy.test;lr>",)
        (target,) = await s.registrar.lookup("sip:alice@pbx.test")
        assert target.path == ("<sip:edge-proxy.test;lr>",)
        silent = await s.login(extra=("Path: <sip:edge-proxy.test;lr>",), cseq=10)
        assert "Path" not in silent.headers

    run(scenario())


def test_outbound_instance_and_reg_id_are_stored_and_identify_the_binding() -> None:
    async def scenario() -> None:
        s = Setup()
        instance = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
        await s.login(contacts=[f"<sip:alice@192.0.2.10:5060;ob>;{instance};reg-id=1"])
        (binding,) = s.store.all("sip:alice@pbx.test")
        assert binding.instance_id == "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
        assert binding.reg_id == 1
        # The phone's address changed: same instance and reg-id, the old binding goes.
        ok = await s.login(contacts=[f"<sip:alice@192.0.2.99:5060;ob>;{instance};reg-id=1"],
                           cseq=10)
        assert list(expires_of(ok)) == ["sip:alice@192.0.2.99:5060;ob"]
        assert ';reg-id=1' in contacts_of(ok)[0] and "+sip.instance=" in contacts_of(ok)[0]
        assert [b.contact for b in s.store.all("sip:alice@pbx.test")] == [
            "sip:alice@192.0.2.99:5060;ob"
        ]

    run(scenario())


def test_query_without_contact_lists_bindings() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login()
        listed = await s.login(contacts=None, cseq=10)
        assert listed.status == 200
        assert list(expires_of(listed)) == ["sip:alice@192.0.2.10:5060"]
        assert s.notifier.kinds() == ["registered"]

    run(scenario())


def test_malformed_expires_is_400_naming_it() -> None:
    async def scenario() -> None:
        s = Setup(authenticate=False)
        response = await s.send(register(expires="soon"))
        assert response.status == 400
        assert response.reason == "malformed Expires: not delta-seconds"

    run(scenario())


# --- NAT --------------------------------------------------------------------------------------


def test_private_contact_behind_nat_is_fixed_to_the_source() -> None:
    async def scenario() -> None:
        s = Setup()
        nat = ("203.0.113.5", 40000)
        ok = await s.login(contacts=["<sip:alice@192.168.1.10:5060>"], via="192.168.1.10:5060",
                           source=nat)
        assert ok.status == 200
        (binding,) = s.store.all("sip:alice@pbx.test")
        assert binding.contact == "sip:alice@192.168.1.10:5060"  # kept as registered
        assert binding.source == "203.0.113.5:40000"
        (target,) = await s.registrar.lookup("sip:alice@pbx.test")
        assert target == Target(
            aor="sip:alice@pbx.test", contact="sip:alice@192.168.1.10:5060",
            peer=Peer(transport="UDP", address=nat), q=1.0, path=(), edge_id="edge-a",
            local=True, instance_id="", reg_id=None, expires_at=T0 + 3600, nat_fixed=True,
        )

    run(scenario())


def test_public_contact_is_used_as_registered() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login(contacts=["<sip:alice@198.51.100.20:5070>"], source=("203.0.113.5", 5060))
        (target,) = await s.registrar.lookup("sip:alice@pbx.test")
        assert target.peer == Peer(transport="UDP", address=("198.51.100.20", 5070))
        assert not target.nat_fixed

    run(scenario())


def test_tcp_binding_targets_the_connection_it_came_on() -> None:
    async def scenario() -> None:
        s = Setup()
        source = ("203.0.113.9", 51234)
        ok = await s.login(contacts=["<sip:alice@10.0.0.7:5060;transport=tcp>"],
                           transport="TCP", via="10.0.0.7:5060", source=source, connection=7)
        assert ok.status == 200
        (binding,) = s.store.all("sip:alice@pbx.test")
        assert (binding.transport, binding.source) == ("TCP", "203.0.113.9:51234")
        (target,) = await s.registrar.lookup("sip:alice@pbx.test")
        assert target.peer == Peer(transport="TCP", address=source, connection=7)

    run(scenario())


# --- state: store round trips, failures, expiry ----------------------------------------------


def test_a_refresh_costs_one_store_round_trip() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login()
        assert s.store.calls == {"bindings": 1, "put": 1}
        await s.login(cseq=10)
        assert s.store.calls == {"bindings": 1, "put": 2}  # the AOR is cached: no read
        await s.registrar.lookup("sip:alice@pbx.test")
        assert s.store.calls["bindings"] == 1

    run(scenario())


def test_store_failure_is_500_and_the_cache_is_dropped() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login()
        s.store.fail = True
        failed = await s.login(cseq=10, contacts=["<sip:alice@192.0.2.10:9>"])
        assert failed.status == 500
        assert failed.headers.get("Retry-After") == "5"
        assert "sip:alice@pbx.test" not in s.registrar.cache
        s.store.fail = False
        ok = await s.login(cseq=20)
        assert list(expires_of(ok)) == ["sip:alice@192.0.2.10:5060"]
        assert s.store.calls["bindings"] == 2  # re-read after the failure

    run(scenario())


def test_sweep_removes_expired_bindings_and_reports_one_offline_batch() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login(contacts=["<sip:alice@192.0.2.10:1>;expires=60"])
        await s.login(user="bob", contacts=["<sip:bob@192.0.2.11:1>;expires=120"],
                      call_id="bob-reg")
        s.clock.now += 61
        gone = await s.registrar.sweep(s.clock.now)
        assert [b.aor for b in gone] == ["sip:alice@pbx.test"]
        assert s.notifier.events[-1] == ("offline", gone)
        assert s.store.all("sip:alice@pbx.test") == []
        assert await s.registrar.lookup("sip:alice@pbx.test") == []
        assert "sip:alice@pbx.test" not in s.registrar.cache
        s.clock.now += 100
        assert [b.aor for b in await s.registrar.sweep(s.clock.now)] == ["sip:bob@pbx.test"]
        assert await s.registrar.sweep(s.clock.now) == []
        assert s.notifier.kinds().count("offline") == 2

    run(scenario())


def test_sweep_keeps_a_binding_refreshed_after_the_store_listed_it() -> None:
    async def scenario() -> None:
        s = Setup()
        await s.login(contacts=["<sip:alice@192.0.2.10:1>;expires=60"])
        stale_view = Binding(**{**_fields(s.store.all("sip:alice@pbx.test")[0])})
        await s.login(contacts=["<sip:alice@192.0.2.10:1>;expires=600"], cseq=10)
        assert not await s.registrar._expire(stale_view, T0 + 61)
        assert s.store.all("sip:alice@pbx.test")

    run(scenario())


def _fields(binding: Binding) -> dict[str, Any]:
    return {name: getattr(binding, name) for name in binding.__dataclass_fields__}


def test_aor_key_is_canonical() -> None:
    assert aor_key(parse_sip_uri("sip:Alice@PBX.Test:5060;transport=tcp")) == \
        "sip:Alice@pbx.test"
    assert aor_key(parse_sip_uri("sip:al%69ce@pbx.test")) == "sip:alice@pbx.test"
    assert aor_key(parse_sip_uri("sip:a%20b@pbx.test")) == "sip:a%20b@pbx.test"
    assert aor_key(parse_sip_uri("SIPS:bob@[2001:DB8::1]")) == "sips:bob@[2001:db8::1]"
    assert aor_key(parse_sip_uri("sip:pbx.test")) == "sip:pbx.test"


def test_real_locator_notifier_gets_the_compat_payloads() -> None:
    async def scenario() -> None:
        submitted: list[Mapping[str, Any]] = []

        class Queue:
            def submit(self, payload: Mapping[str, Any]) -> None:
                submitted.append(payload)

        s = Setup()
        s.registrar._notifier = LocatorNotifier(
            Queue(), events=("registered", "unregistered", "offline"), home_proxy="edge-a",
            clock=s.clock,
        )
        await s.login(contacts=["<sip:alice@192.168.1.10:5060>;expires=60"],
                      source=("203.0.113.5", 40000))
        s.clock.now += 61
        await s.registrar.sweep(s.clock.now)
        assert [p["event"] for p in submitted] == ["registered", "offline"]
        location = submitted[0]["location"]
        assert location["aor"] == "sip:alice@pbx.test"
        assert location["expires"] == 60
        assert location["destination"] == "UDP 203.0.113.5:40000"
        assert location["home_proxy"] == "edge-a"
        assert location["user_agent"] == "TestPhone/1.0"
        assert [loc["aor"] for loc in submitted[1]["locations"]] == ["sip:alice@pbx.test"]

    run(scenario())


# --- the real SQLite store --------------------------------------------------------------------


def test_register_refresh_and_expire_through_sqlite(tmp_path: Path) -> None:
    async def scenario() -> None:
        stores = await SqliteStores.open(tmp_path / "pbx.sqlite3",
                                         blobs=LocalBlobStore(str(tmp_path / "blobs")))
        try:
            s = Setup(store=stores.registrations)
            ok = await s.login(contacts=["<sip:alice@192.168.1.10:5060>;expires=60"],
                               source=("203.0.113.5", 40000), extra=("Path: <sip:p.test;lr>",))
            assert ok.status == 200
            (stored,) = await stores.registrations.bindings("sip:alice@pbx.test", s.clock.now)
            assert (stored.contact, stored.source, stored.edge_id, stored.path) == (
                "sip:alice@192.168.1.10:5060", "203.0.113.5:40000", "edge-a",
                ("<sip:p.test;lr>",),
            )
            assert stored.expires_at == T0 + 60
            refreshed = await s.login(contacts=["<sip:alice@192.168.1.10:5060>"], cseq=10,
                                      source=("203.0.113.5", 40000))
            assert expires_of(refreshed) == {"sip:alice@192.168.1.10:5060": 3600}
            # A fresh registrar (an edge restart) reads the binding back from the store.
            other = Setup(store=stores.registrations)
            other.clock.now = s.clock.now
            (target,) = await other.registrar.lookup("sip:alice@pbx.test")
            assert target.peer == Peer(transport="UDP", address=("203.0.113.5", 40000))
            s.clock.now += 3601
            gone = await s.registrar.sweep(s.clock.now)
            assert [b.contact for b in gone] == ["sip:alice@192.168.1.10:5060"]
            assert await stores.registrations.bindings("sip:alice@pbx.test", T0) == []
        finally:
            await stores.close()

    run(scenario())


@pytest.mark.parametrize("text", ["<sip:alice@192.0.2.10>;reg-id=x", "<sip:alice@192.0.2.10>;q=2"])
def test_bad_contact_params_are_400(text: str) -> None:
    async def scenario() -> None:
        s = Setup(authenticate=False)
        response = await s.send(register(contacts=[text]))
        assert response.status == 400

    run(scenario())
