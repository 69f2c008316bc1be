"""User backends: memory, directory (cached, revision-checked) and HTTP against a real local
server (GET and POST form, password and ha1, reasons, retry, timeout, a slow backend)."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from control.store.errors import NotFound, StoreUnavailable
from control.store.local_blobs import LocalBlobStore
from control.store.models import User
from control.store.ports import DirectoryStore
from control.store.sqlite import SqliteStores
from edge.config import MemoryUserBackend as MemoryUserBackendConfig
from edge.config import parse_config
from edge.io.http import HttpServer
from edge.pbx.auth import DigestAuthenticator
from edge.pbx.registrar import Registrar
from edge.pbx.users import (
    DirectoryUserBackend,
    HttpUserBackend,
    LookupResult,
    MemoryUserBackend,
    Refused,
    Unavailable,
    UserBackendChain,
    UserRecord,
    _Bounded,
)
from edge.sip.digest import compute_ha1
from tests.pbx import (
    Clock,
    EndpointTransport,
    Harness,
    MemoryRegistrationStore,
    answer,
    register,
)


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


# --- memory -----------------------------------------------------------------------------------


def test_memory_backend_from_config_password_ha1_and_realms() -> None:
    config = parse_config("""
[[proxy.user_backends]]
type = "memory"
users = [
  { username = "1001", password = "pw1" },
  { username = "1002", ha1 = "HA1", realm = "pbx.test" },
  { username = "1003", password = "pw3", realm = "pbx.test", enabled = false },
]
""".replace("HA1", compute_ha1("1002", "pbx.test", "pw2", "MD5")))
    section = config.proxy.user_backends[0]
    assert isinstance(section, MemoryUserBackendConfig)
    backend = MemoryUserBackend.from_config(section)

    any_realm = backend.get("1001", "example.com")
    assert any_realm is not None and any_realm.realm == "example.com"
    assert any_realm.ha1_for("SHA-256", "example.com") == compute_ha1(
        "1001", "example.com", "pw1", "SHA-256")
    assert any_realm.ha1_for("MD5-sess", "example.com") == compute_ha1(
        "1001", "example.com", "pw1", "MD5")
    assert backend.get("1001", "example.com") is any_realm  # computed once per realm

    hashed = backend.get("1002", "pbx.test")
    assert hashed is not None
    assert hashed.ha1_for("MD5", "pbx.test") == compute_ha1("1002", "pbx.test", "pw2", "MD5")
    assert hashed.ha1_for("SHA-256", "pbx.test") is None  # a 32-digit ha1 is MD5 only
    assert backend.get("1002", "other.test") is None  # a user with a realm has only that one

    disabled = backend.get("1003", "pbx.test")
    assert disabled is not None and not disabled.enabled
    assert backend.get("nobody", "pbx.test") is None


def test_memory_backend_bounds_the_realms_it_derives() -> None:
    backend = MemoryUserBackend([UserRecord(username="u", password="p")], max_derived=4)
    for index in range(10):
        assert backend.get("u", f"realm{index}.test") is not None
    assert 2 <= len(backend._derived) <= 4
    assert backend.get("u", "realm0.test") is not None  # evicted ones are derived again


def test_bounded_cache_keeps_what_is_used_and_evicts_in_constant_time() -> None:
    cache: _Bounded[int, int] = _Bounded(4)
    for key in range(4):
        cache.put(key, key)
    assert cache.get(0) == 0  # a hit in the old generation moves it to the young one
    for key in range(4, 6):
        cache.put(key, key)
    assert cache.get(0) == 0
    assert cache.get(1) is None and cache.get(2) is None
    assert len(cache) <= 4
    cache.pop(0)
    assert cache.get(0) is None
    cache.clear()
    assert len(cache) == 0
    # 200,000 inserts into a full cache stay O(1) each: the old first-in eviction rescanned
    # the holes at the front of the dict (seconds at this size, here well under one).
    big: _Bounded[int, int] = _Bounded(100_000)
    started = time.perf_counter()
    for key in range(200_000):
        big.put(key, key)
    assert time.perf_counter() - started < 1.0
    assert len(big) <= 100_000


# --- directory --------------------------------------------------------------------------------


class FakeDirectory:
    """The two DirectoryStore methods the backend uses; counts reads."""

    def __init__(self) -> None:
        self.users: dict[tuple[str, str], User] = {}
        self.rev = 1
        self.reads = 0
        self.revision_checks = 0
        self.fail = False
        self.gate: asyncio.Event | None = None

    def add(self, username: str, realm: str, password: str, *, enabled: bool = True) -> None:
        self.users[(username, realm)] = User(
            username=username, realm=realm,
            ha1_md5=compute_ha1(username, realm, password, "MD5"),
            ha1_sha256=compute_ha1(username, realm, password, "SHA-256"),
            enabled=enabled,
        )

    async def get_user(self, username: str, realm: str) -> User:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise StoreUnavailable("down (test)")
        try:
            return self.users[(username, realm)]
        except KeyError:
            raise NotFound(username) from None

    async def revision(self) -> int:
        self.revision_checks += 1
        return self.rev


def directory_backend(fake: FakeDirectory, clock: Clock, **options: Any) -> DirectoryUserBackend:
    return DirectoryUserBackend(cast(DirectoryStore, fake), clock=clock, **options)


def test_directory_backend_caches_users_and_misses() -> None:
    async def scenario() -> None:
        fake, clock = FakeDirectory(), Clock(100.0)
        fake.add("alice", "pbx.test", "pw")
        backend = directory_backend(fake, clock, ttl_s=60, negative_ttl_s=5)
        found = await backend.lookup("alice", "pbx.test", "sip:pbx.test")
        assert isinstance(found, UserRecord) and found.backend == "directory"
        assert found.ha1_for("SHA-256", "pbx.test") == compute_ha1(
            "alice", "pbx.test", "pw", "SHA-256")
        assert await backend.lookup("alice", "pbx.test", "sip:pbx.test") == found
        assert await backend.lookup("nobody", "pbx.test", "") is None
        assert await backend.lookup("nobody", "pbx.test", "") is None
        assert fake.reads == 2
        clock.now += 6  # the miss is forgotten first
        assert await backend.lookup("nobody", "pbx.test", "") is None
        assert fake.reads == 3
        clock.now += 60
        await backend.lookup("alice", "pbx.test", "")
        assert fake.reads == 4
        await backend.aclose()

    run(scenario())


def test_directory_backend_reloads_when_the_revision_moves() -> None:
    async def scenario() -> None:
        fake, clock = FakeDirectory(), Clock(100.0)
        fake.add("alice", "pbx.test", "old")
        backend = directory_backend(fake, clock, ttl_s=3600, revision_poll_s=2)
        first = await backend.lookup("alice", "pbx.test", "")
        await asyncio.sleep(0)  # the background revision check
        assert fake.revision_checks == 1
        fake.add("alice", "pbx.test", "new", enabled=False)
        fake.rev = 2
        clock.now += 1  # not yet time to poll: still the cached user
        assert await backend.lookup("alice", "pbx.test", "") == first
        clock.now += 2
        assert await backend.lookup("alice", "pbx.test", "") == first  # served, poll started
        await asyncio.sleep(0)
        changed = await backend.lookup("alice", "pbx.test", "")
        assert isinstance(changed, UserRecord) and not changed.enabled
        assert fake.revision_checks == 2
        await backend.aclose()

    run(scenario())


def test_directory_backend_shares_one_read_and_reports_failures() -> None:
    async def scenario() -> None:
        fake, clock = FakeDirectory(), Clock(100.0)
        fake.add("alice", "pbx.test", "pw")
        fake.gate = asyncio.Event()
        backend = directory_backend(fake, clock)
        lookups = [asyncio.create_task(backend.lookup("alice", "pbx.test", "")) for _ in range(5)]
        await asyncio.sleep(0)
        fake.gate.set()
        results = await asyncio.gather(*lookups)
        assert fake.reads == 1 and len({id(r) for r in results}) == 1
        fake.gate = None
        fake.fail = True
        assert await backend.lookup("bob", "pbx.test", "") == Unavailable(
            "directory: StoreUnavailable")
        fake.fail = False
        assert await backend.lookup("bob", "pbx.test", "") is None  # the failure was not cached
        await backend.aclose()

    run(scenario())


def test_directory_read_started_before_a_change_does_not_refill_the_cache() -> None:
    async def scenario() -> None:
        fake, clock = FakeDirectory(), Clock(100.0)
        fake.add("alice", "pbx.test", "pw")
        fake.gate = asyncio.Event()
        backend = directory_backend(fake, clock)
        pending = asyncio.create_task(backend.lookup("alice", "pbx.test", ""))
        await asyncio.sleep(0)
        backend.invalidate()  # the revision moved while the read was in flight
        fake.gate.set()
        await pending
        assert len(backend._cache) == 0
        await backend.aclose()

    run(scenario())


def test_directory_backend_on_sqlite(tmp_path: Path) -> None:
    async def scenario() -> None:
        stores = await SqliteStores.open(tmp_path / "users.sqlite3",
                                         blobs=LocalBlobStore(str(tmp_path / "blobs")))
        try:
            await stores.directory.put_user(User(
                username="1001", realm="pbx.test",
                ha1_md5=compute_ha1("1001", "pbx.test", "pw", "MD5"),
                ha1_sha256=compute_ha1("1001", "pbx.test", "pw", "SHA-256"),
            ))
            backend = DirectoryUserBackend(stores.directory)
            found = await backend.lookup("1001", "pbx.test", "sip:pbx.test")
            assert isinstance(found, UserRecord)
            assert found.ha1_for("MD5", "pbx.test") == compute_ha1("1001", "pbx.test", "pw")
            assert await backend.lookup("1002", "pbx.test", "") is None
            await backend.aclose()
        finally:
            await stores.close()

    run(scenario())


# --- http -------------------------------------------------------------------------------------


class UserSystem:
    """The business system's user endpoint: answers by username, records every request."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.hits: dict[str, int] = {}
        self.slow_s = 0.5
        self.app = Starlette(routes=[Route("/auth", self.auth, methods=["GET", "POST"])])

    async def auth(self, request: HttpRequest) -> Response:
        if request.method == "POST":
            # (Starlette's form parser needs python-multipart; a urlencoded body is this.)
            body = (await request.body()).decode()
            fields = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
        else:
            fields = dict(request.query_params)
        self.requests.append({"method": request.method, "fields": fields,
                              "key": request.headers.get("x-api-key")})
        user = fields.get("username") or fields.get("user") or ""
        realm = fields.get("realm") or fields.get("domain") or ""
        self.hits[user] = self.hits.get(user, 0) + 1
        if user == "slow":
            await asyncio.sleep(self.slow_s)
            return JSONResponse({"username": "slow", "password": "slow-secret"})
        if user in ("alice", "bob"):
            return JSONResponse({"username": user, "password": f"{user}-secret",
                                 "display_name": user.title(), "allow_guest_calls": True})
        if user == "hashed":
            return JSONResponse({"username": user,
                                 "ha1": compute_ha1(user, realm, "hashed-secret", "SHA-256")})
        if user == "off":
            return JSONResponse({"username": user, "password": "x", "enabled": False})
        if user == "nosecret":
            return JSONResponse({"username": user})
        if user == "garbage":
            return PlainTextResponse("not json")
        if user == "flaky":
            if self.hits[user] == 1:
                return JSONResponse({"reason": "overloaded"}, status_code=503)
            return JSONResponse({"username": user, "password": "flaky-secret"})
        if user == "down":
            return PlainTextResponse("boom", status_code=500)
        if user == "bare404":
            return Response(status_code=404)
        reasons = {"disabled": 403, "blocked": 403, "spam": 403, "payment_required": 402,
                   "invalid_password": 401, "not_found": 404, "weird": 400}
        if user in reasons:
            return JSONResponse({"reason": user, "message": f"{user} says no"},
                                status_code=reasons[user])
        return JSONResponse({"reason": "not_found", "message": "no such user"},
                            status_code=404)


@asynccontextmanager
async def user_system() -> AsyncIterator[tuple[UserSystem, str]]:
    system = UserSystem()
    server = await HttpServer.start(system.app, "127.0.0.1", 0)
    try:
        yield system, f"http://127.0.0.1:{server.address[1]}/auth"
    finally:
        await server.close()


def test_http_get_with_password_answer() -> None:
    async def scenario() -> None:
        async with user_system() as (system, url):
            backend = HttpUserBackend(url, headers={"X-API-Key": "k1"})
            found = await backend.lookup("alice", "pbx.test", "sip:pbx.test")
            assert found == UserRecord(
                username="alice", realm="pbx.test", password="alice-secret",
                display_name="Alice", allow_guest_calls=True, backend="http",
            )
            assert system.requests == [{
                "method": "GET",
                "fields": {"username": "alice", "realm": "pbx.test",
                           "request_uri": "sip:pbx.test"},
                "key": "k1",
            }]
            await backend.aclose()

    run(scenario())


def test_http_post_form_with_custom_fields_and_ha1_answer() -> None:
    async def scenario() -> None:
        async with user_system() as (system, url):
            backend = HttpUserBackend(url, method="POST", username_field="user",
                                      realm_field="domain", request_uri_field="ruri")
            found = await backend.lookup("hashed", "pbx.test", "sip:pbx.test")
            assert isinstance(found, UserRecord) and found.password is None
            assert found.ha1_for("SHA-256", "pbx.test") == compute_ha1(
                "hashed", "pbx.test", "hashed-secret", "SHA-256")
            assert found.ha1_for("MD5", "pbx.test") is None
            assert system.requests[0]["method"] == "POST"
            assert system.requests[0]["fields"] == {
                "user": "hashed", "domain": "pbx.test", "ruri": "sip:pbx.test"}
            await backend.aclose()

    run(scenario())


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("off", Refused("disabled", "enabled is false")),
        ("disabled", Refused("disabled", "disabled says no")),
        ("blocked", Refused("blocked", "blocked says no")),
        ("spam", Refused("spam", "spam says no")),
        ("payment_required", Refused("payment_required", "payment_required says no")),
        ("invalid_password", Refused("invalid_password", "invalid_password says no")),
        ("not_found", None),
        ("bare404", None),
        ("weird", Unavailable("HTTP 400 (weird)")),
        ("nosecret", Unavailable("invalid answer: neither password nor ha1")),
    ],
)
def test_http_answers_and_reasons_map_to_results(user: str, expected: LookupResult) -> None:
    async def scenario() -> None:
        async with user_system() as (_system, url):
            backend = HttpUserBackend(url)
            assert await backend.lookup(user, "pbx.test", "sip:pbx.test") == expected
            await backend.aclose()

    run(scenario())


def test_http_answer_that_is_not_json_is_unavailable() -> None:
    async def scenario() -> None:
        async with user_system() as (_system, url):
            backend = HttpUserBackend(url)
            result = await backend.lookup("garbage", "pbx.test", "")
            assert isinstance(result, Unavailable)
            assert result.reason.startswith("invalid answer: body: Invalid JSON")
            await backend.aclose()

    run(scenario())


def test_http_5xx_is_retried_once() -> None:
    async def scenario() -> None:
        async with user_system() as (system, url):
            backend = HttpUserBackend(url)
            found = await backend.lookup("flaky", "pbx.test", "")
            assert isinstance(found, UserRecord) and found.password == "flaky-secret"
            assert system.hits["flaky"] == 2
            assert await backend.lookup("down", "pbx.test", "") == Unavailable("HTTP 500")
            assert system.hits["down"] == 2
            await backend.aclose()

    run(scenario())


def test_http_timeout_is_unavailable_and_not_retried() -> None:
    async def scenario() -> None:
        async with user_system() as (system, url):
            backend = HttpUserBackend(url, timeout_s=0.1)
            started = time.monotonic()
            assert await backend.lookup("slow", "pbx.test", "") == Unavailable("timeout")
            assert time.monotonic() - started < 0.4
            assert system.hits["slow"] == 1
            await backend.aclose()

    run(scenario())


def test_http_dead_backend_is_unavailable() -> None:
    async def scenario() -> None:
        async with user_system() as (_system, url):
            pass  # the server is gone: connection refused
        backend = HttpUserBackend(url, timeout_s=1)
        assert await backend.lookup("alice", "pbx.test", "") == Unavailable(
            "transport error: ConnectError")
        await backend.aclose()

    run(scenario())


def test_http_misses_are_remembered_briefly_and_lookups_shared() -> None:
    async def scenario() -> None:
        clock = Clock(0.0)
        async with user_system() as (system, url):
            backend = HttpUserBackend(url, negative_ttl_s=5, clock=clock)
            assert await backend.lookup("ghost", "pbx.test", "") is None
            assert await backend.lookup("ghost", "pbx.test", "") is None
            assert system.hits["ghost"] == 1
            clock.now = 6
            assert await backend.lookup("ghost", "pbx.test", "") is None
            assert system.hits["ghost"] == 2
            system.slow_s = 0.2
            both = await asyncio.gather(backend.lookup("slow", "pbx.test", "sip:x"),
                                        backend.lookup("slow", "pbx.test", "sip:x"))
            assert both[0] == both[1] and system.hits["slow"] == 1
            await backend.aclose()

    run(scenario())


def test_http_backend_uses_a_shared_client_without_closing_it() -> None:
    async def scenario() -> None:
        import httpx

        async with user_system() as (_system, url), httpx.AsyncClient() as client:
            backend = HttpUserBackend(url, client=client)
            assert isinstance(await backend.lookup("alice", "pbx.test", ""), UserRecord)
            await backend.aclose()
            assert not client.is_closed

    run(scenario())


# --- the chain --------------------------------------------------------------------------------


class Fixed:
    def __init__(self, name: str, result: LookupResult) -> None:
        self.name = name
        self.result = result
        self.asked = 0

    async def lookup(self, username: str, realm: str, request_uri: str) -> LookupResult:
        self.asked += 1
        return self.result

    async def aclose(self) -> None:
        return None


def test_chain_first_hit_wins_refusal_stops_unavailable_falls_through() -> None:
    async def scenario() -> None:
        alice = UserRecord(username="alice", password="pw")
        down, missing, found = Fixed("down", Unavailable("x")), Fixed("m", None), Fixed("f", alice)
        later = Fixed("later", UserRecord(username="alice", password="other"))
        assert await UserBackendChain([down, missing, found, later]).lookup("alice", "r", "") \
            is alice
        assert later.asked == 0
        refused = Fixed("r", Refused("blocked"))
        assert await UserBackendChain([refused, found]).lookup("a", "r", "") == Refused("blocked")
        assert await UserBackendChain([missing, down]).lookup("a", "r", "") == Unavailable("x")
        assert await UserBackendChain([missing]).lookup("a", "r", "") is None

    run(scenario())


def test_chain_from_config_builds_each_type() -> None:
    config = parse_config("""
[[proxy.user_backends]]
type = "memory"
users = [{ username = "1001", password = "pw" }]
[[proxy.user_backends]]
type = "http"
url = "http://127.0.0.1:9/auth"
method = "post"
http_timeout_ms = 1500
[[proxy.user_backends]]
type = "directory"
""")
    chain = UserBackendChain.from_config(config.proxy.user_backends,
                                         directory=cast(DirectoryStore, FakeDirectory()))
    assert [b.name for b in chain.backends] == ["memory", "http", "directory"]
    http = chain.backends[1]
    assert isinstance(http, HttpUserBackend)
    assert http._post and http._timeout.read == 1.5
    with pytest.raises(ValueError, match="directory store"):
        UserBackendChain.from_config(config.proxy.user_backends)
    run(chain.aclose())


# --- through the registrar --------------------------------------------------------------------


def http_registrar(url: str, clock: Clock) -> tuple[Harness, UserBackendChain]:
    chain = UserBackendChain([HttpUserBackend(url, timeout_s=2)])
    auth = DigestAuthenticator(
        chain, secret=b"users-test-secret-0123456789abcd", realms=("pbx.test",),
    )

    def build(transport: EndpointTransport) -> Registrar:
        return Registrar(transport, store=MemoryRegistrationStore(), authenticator=auth,
                         edge_id="edge-a", wall_clock=clock, realms=("pbx.test",))

    return Harness(build, clock), chain


def test_slow_backend_does_not_block_another_users_registration() -> None:
    async def scenario() -> None:
        async with user_system() as (system, url):
            clock = Clock()
            h, chain = http_registrar(url, clock)
            answers = {}
            for user in ("slow", "alice"):
                challenge = await h.send(register(user=user, call_id=f"{user}-reg"))
                assert challenge is not None and challenge.status == 401
                answers[user] = answer(challenge, user=user, password=f"{user}-secret",
                                       uri="sip:pbx.test")
            system.slow_s = 0.5
            started = time.monotonic()
            h.feed(register(user="slow", call_id="slow-reg", cseq=2, extra=[answers["slow"]]))
            h.feed(register(user="alice", call_id="alice-reg", cseq=2,
                            extra=[answers["alice"]]))
            assert len(h.core._tasks) == 2
            await asyncio.wait(set(h.core._tasks), return_when=asyncio.FIRST_COMPLETED)
            fast_done = time.monotonic() - started
            assert [r.call_id for r in h.transport.responded[2:]] == ["alice-reg"]
            await h.settle()
            final = [(r.call_id, r.status) for r in h.transport.responded[2:]]
            assert final == [("alice-reg", 200), ("slow-reg", 200)]
            assert fast_done < 0.4
            await h.core.close()
            await chain.aclose()

    run(scenario())


def test_http_backend_disabled_user_gets_403_on_register() -> None:
    async def scenario() -> None:
        async with user_system() as (_system, url):
            clock = Clock()
            h, chain = http_registrar(url, clock)
            challenge = await h.send(register(user="off"))
            assert challenge is not None and challenge.status == 401
            line = answer(challenge, user="off", password="x", uri="sip:pbx.test")
            refused = await h.send(register(user="off", cseq=2, extra=[line]))
            assert refused is not None and refused.status == 403
            spam_challenge = await h.send(register(user="spam", call_id="s"))
            assert spam_challenge is not None
            line = answer(spam_challenge, user="spam", password="x", uri="sip:pbx.test")
            assert await h.send(register(user="spam", call_id="s", cseq=2, extra=[line])) is None
            await chain.aclose()

    run(scenario())


def test_wire_models_round_trip_the_compat_fields() -> None:
    from control.contracts.user_backend import UserBackendAnswer, UserBackendRefusal

    answer_ = UserBackendAnswer.model_validate_json(json.dumps({
        "username": "1001", "password": "pw", "enabled": None, "realm": "pbx.test",
        "display_name": "Desk", "allow_guest_calls": True, "extra": "ignored",
    }))
    assert answer_.is_enabled and answer_.has_secret and answer_.ha1_by_algorithm() == {}
    assert "pw" not in repr(answer_)
    ha1 = "A" * 64
    both = UserBackendAnswer.model_validate({"username": "x", "ha1": ha1, "ha1_md5": "b" * 32})
    assert both.ha1_by_algorithm() == {"SHA-256": "a" * 64, "MD5": "b" * 32}
    with pytest.raises(ValueError, match="32 or 64 hexadecimal digits"):
        UserBackendAnswer.model_validate({"username": "x", "ha1": "xyz"})
    assert UserBackendRefusal.model_validate({"reason": "Disabled"}).known_reason == "disabled"
    assert UserBackendRefusal.model_validate({"reason": "other"}).known_reason is None
