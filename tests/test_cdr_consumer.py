"""control.cdr_consumer: the recorded S3 event against DynamoDB + S3 on a moto server (and the
Lambda entry `cdr_handler` the same way), duplicate events, invalid CDRs, and the signed
multipart push to a real Starlette receiver on 127.0.0.1 (retried within the invocation; a
permanent failure kept, listed and re-delivered through the API).

The receiver checks each signature with `control.contracts.signing` and parses the body with
the stdlib's MIME parser, not the code under test."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.api import create_app
from control.cdr_consumer import (
    DELIVERY_KIND,
    Backoff,
    CdrConsumer,
    delivered_marker,
)
from control.contracts.cdr import CallDetailRecord, RecorderMedia, rfc3339
from control.contracts.signing import verification_failure
from control.store.errors import NotFound
from control.store.factory import open_stores
from control.store.ports import BlobSettings, Stores, StoreSettings
from edge.io.http import HttpServer
from tests.api import add_keys, sqlite_settings
from tests.store.aws_servers import (  # noqa: F401 (a fixture)
    REGION,
    create_bucket,
    create_tables,
    moto_endpoint,
)

EVENTS = Path(__file__).resolve().parent / "events"
SECRET = "cdr-consumer-test-secret"
KEY_ID = "k7"
FAST = Backoff(base_s=0.005, cap_s=0.02)
START = datetime(2026, 11, 28, 0, 0, 1, 250000, tzinfo=UTC).timestamp()
EVENT_CALL_ID = "1-2345@127.0.0.1"  # the recorded event's key, URL-decoded
EVENT_KEY = f"cdr/2026/11/28/{EVENT_CALL_ID}.json"
EVENT_BUCKET = "sdpbx-blobbucket-1x2y3z4w5v6u"
WAV = b"RIFF" + bytes(range(256)) * 40
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 30.0) -> T:
    async def main() -> T:
        async with asyncio.timeout(timeout_s):
            return await scenario()
    return asyncio.run(main())


def recorded_event() -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / "s3_object_created_cdr.json").read_text())
    return event


def s3_event(key: str, name: str = "ObjectCreated:Put",
             bucket: str = EVENT_BUCKET) -> dict[str, Any]:
    """The recorded event with another object key (given raw; encoded as S3 does)."""
    from urllib.parse import quote_plus

    event = recorded_event()
    record = event["Records"][0]
    record["eventName"] = name
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"]["key"] = quote_plus(key, safe="/")
    return event


def make_cdr(call_id: str = EVENT_CALL_ID, *, recording: str | None = None) -> CallDetailRecord:
    recorder = ([RecorderMedia(track_id="stereo", path=recording, size=len(WAV))]
                if recording else [])
    return CallDetailRecord(
        call_id=call_id, start_time=rfc3339(START), ring_time=rfc3339(START + 1),
        answer_time=rfc3339(START + 3), end_time=rfc3339(START + 33),
        caller="sip:1001@pbx.test", callee="sip:1002@pbx.test", from_number="1001",
        to_number="1002", direction="internal", status="completed", status_code=200,
        hangup_reason="byCaller", recorder=recorder, edge_id="edge-a", duration_secs=32.0,
        billsec_secs=30.0,
    )


async def put_cdr(stores: Stores, cdr: CallDetailRecord, key: str) -> bytes:
    body = cdr.to_json_bytes()
    await stores.blobs.put(key, body, "application/json")
    return body


# --- the receiver ------------------------------------------------------------------------------


@dataclass
class Delivery:
    failure: str | None  # None: the signature verified
    parts: dict[str, tuple[str | None, bytes]]  # name -> (filename, data)
    status: int


@dataclass
class Receiver:
    url: str = ""
    statuses: list[int] = field(default_factory=list)  # answers to give first, then `then`
    then: int = 200
    deliveries: list[Delivery] = field(default_factory=list)
    clock: Callable[[], float] = lambda: datetime.now(UTC).timestamp()  # to verify signatures

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.status < 300]


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode("ascii") + b"\r\n\r\n" + body,
        policy=email.policy.HTTP)
    assert message.get_content_type() == "multipart/form-data"
    assert not message.defects, message.defects
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str) and name not in parts
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts[name] = (part.get_filename(), payload)
    return parts


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    state = Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        failure = verification_failure(body, request.headers, secrets={KEY_ID: SECRET},
                                       now=state.clock())
        parts = parse_multipart(request.headers["content-type"], body)
        status = state.statuses.pop(0) if state.statuses else state.then
        state.deliveries.append(Delivery(failure, parts, status))
        return JSONResponse({"ok": status == 200}, status_code=status)

    server = await HttpServer.start(
        Starlette(routes=[Route("/cdr", hook, methods=["POST"])]), "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.address[1]}/cdr"
    try:
        yield state
    finally:
        await server.close()


def consumer(stores: Stores, url: str | None, **options: Any) -> CdrConsumer:
    return CdrConsumer(stores, push_url=url, signer_secret=SECRET, key_id=KEY_ID,
                       backoff=FAST, **options)


@asynccontextmanager
async def sqlite_stores(root: Path) -> AsyncIterator[Stores]:
    stores = await open_stores(sqlite_settings(root))
    try:
        yield stores
    finally:
        await stores.close()


# --- moto: the recorded event ------------------------------------------------------------------


@pytest.fixture
def moto_settings(moto_endpoint: str) -> StoreSettings:  # noqa: F811 (the fixture)
    """Fresh tables (from template.yaml) and the recorded event's bucket on the moto server."""
    prefix = f"cc{uuid.uuid4().hex[:10]}"
    create_tables(moto_endpoint, prefix)
    import boto3

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    try:
        s3.head_bucket(Bucket=EVENT_BUCKET)
    except s3.exceptions.ClientError:
        create_bucket(moto_endpoint, EVENT_BUCKET)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=EVENT_BUCKET):
        keys = [{"Key": blob["Key"]} for blob in page.get("Contents", ())]
        if keys:
            s3.delete_objects(Bucket=EVENT_BUCKET, Delete={"Objects": keys})
    return StoreSettings(
        backend="dynamodb", table_prefix=prefix, region=REGION, endpoint_url=moto_endpoint,
        blobs=BlobSettings(kind="s3", root="", bucket=EVENT_BUCKET, region=REGION,
                           endpoint_url=moto_endpoint))


def test_recorded_s3_event_on_moto_indexes_and_pushes_once(moto_settings: StoreSettings) -> None:
    cdr = make_cdr(recording="recordings/2026/11/28/1-2345@127.0.0.1.wav")

    async def scenario() -> None:
        stores = await open_stores(moto_settings)
        try:
            body = await put_cdr(stores, cdr, EVENT_KEY)
            await stores.blobs.put(cdr.recorder[0].path, WAV, "audio/wav")
            async with receiver() as rx:
                sut = consumer(stores, rx.url, bucket=EVENT_BUCKET)
                report = await sut.handle_s3_event(recorded_event())
                assert report.summary() == {"records": 1, "indexed": 1, "skipped": 0,
                                            "missing": 0, "invalid": 0, "retryable": 0,
                                            "delivered": 1, "duplicate": 0, "failed": 0}
                entry = await stores.cdrs.get(EVENT_CALL_ID)
                assert entry.cdr_key == EVENT_KEY
                assert entry.recording_key == cdr.recorder[0].path
                assert entry.start_time == pytest.approx(START)
                assert (entry.caller, entry.status, entry.edge_id) == (
                    "sip:1001@pbx.test", "completed", "edge-a")
                (delivery,) = rx.deliveries
                assert delivery.failure is None
                assert delivery.parts["calllog.json"] == (None, body)
                assert delivery.parts["recording"] == (f"{EVENT_CALL_ID}.wav", WAV)
                assert delivery.parts["call_id"][1] == EVENT_CALL_ID.encode()
                assert delivery.parts["track_id"][1] == b"stereo"
                assert await stores.blobs.exists(delivered_marker(EVENT_KEY))

                # S3 delivers at least once: the same event again changes nothing.
                again = await sut.handle_s3_event(recorded_event())
                assert [o.push for o in again.outcomes] == ["duplicate"]
                assert len(rx.deliveries) == 1
                assert await stores.cdrs.get(EVENT_CALL_ID) == entry
        finally:
            await stores.close()

    run(scenario)


@pytest.fixture
def handlers_module() -> Iterator[Any]:
    # Importing control.handlers builds Mangum, which takes the thread's event loop (or makes
    # one nothing closes): give it one, and close it after (as tests/test_template.py does).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from control import handlers

    yield handlers
    asyncio.set_event_loop(None)
    loop.close()


def test_cdr_handler_runs_the_event_on_moto(moto_settings: StoreSettings, handlers_module: Any,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # The Lambda entry as deployed: stores from the environment, one loop per container.
    handlers = handlers_module
    env = {"SDPBX_STORE_BACKEND": "dynamodb", "SDPBX_TABLE_PREFIX": moto_settings.table_prefix,
           "SDPBX_BLOB_BUCKET": EVENT_BUCKET, "AWS_ENDPOINT_URL": str(
               moto_settings.endpoint_url)}
    monkeypatch.setenv("AWS_ENDPOINT_URL", env["AWS_ENDPOINT_URL"])
    lazy = handlers.LazyStores(env)
    monkeypatch.setattr(handlers, "cdr_stores", lazy)
    monkeypatch.setattr(handlers, "cdr_consumer", handlers.consumer_from_env(lazy, env))

    async def seed() -> None:
        stores = await open_stores(moto_settings)
        try:
            await put_cdr(stores, make_cdr(), EVENT_KEY)
            await put_cdr(stores, make_cdr("broken"), "cdr/2026/11/28/broken.json")
            await stores.blobs.put("cdr/2026/11/28/broken.json", b'{"callId": "broken"}')
        finally:
            await stores.close()

    run(seed)
    event = recorded_event()
    broken = json.loads(json.dumps(event["Records"][0]))
    broken["s3"]["object"]["key"] = "cdr/2026/11/28/broken.json"
    event["Records"].append(broken)
    try:
        first = handlers.cdr_handler(event, None)
        second = handlers.cdr_handler(event, None)  # the same loop and clients, reused
    finally:
        handlers.close_cdr_handler()
    assert first == second == {"records": 2, "indexed": 1, "skipped": 0, "missing": 0,
                               "invalid": 1, "retryable": 0, "delivered": 0, "duplicate": 0,
                               "failed": 0}

    async def check() -> None:
        stores = await open_stores(moto_settings)
        try:
            assert (await stores.cdrs.get(EVENT_CALL_ID)).cdr_key == EVENT_KEY
            with pytest.raises(NotFound):
                await stores.cdrs.get("broken")
        finally:
            await stores.close()

    run(check)


# --- event filtering and invalid CDRs (SQLite and a local folder) ----------------------------


def test_only_object_created_cdr_keys_are_consumed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores:
            await put_cdr(stores, make_cdr("a b+c"), "cdr/2026/11/28/a b+c.json")
            await put_cdr(stores, make_cdr("p"), "cdr/2026/11/28/p.json")
            sut = consumer(stores, None)
            # A space travels as "+", a "+" as "%2B" (form encoding): both decode right.
            report = await sut.handle_s3_event(s3_event("cdr/2026/11/28/a b+c.json"))
            assert [(o.status, o.call_id) for o in report.outcomes] == [("indexed", "a b+c")]
            assert report.outcomes[0].push == "off"
            for event in (s3_event("cdr/2026/11/28/p.json", "ObjectRemoved:Delete"),
                          s3_event("recordings/2026/11/28/p.wav"),
                          s3_event("cdr/2026/11/p.json"),
                          s3_event("cdr/2026/11/28/p.json", bucket="someone-else")):
                skipped = await consumer(stores, None, bucket=EVENT_BUCKET).handle_s3_event(
                    event)
                assert [o.status for o in skipped.outcomes] == ["skipped"], event
            with pytest.raises(NotFound):
                await stores.cdrs.get("p")
            test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent",
                          "Bucket": EVENT_BUCKET}
            assert (await sut.handle_s3_event(test_event)).outcomes == []
            # Under a blob prefix, the event names the whole object key.
            prefixed = consumer(stores, None, key_prefix="/tenant-a/")
            report = await prefixed.handle_s3_event(s3_event("tenant-a/cdr/2026/11/28/p.json"))
            assert [(o.status, o.call_id) for o in report.outcomes] == [("indexed", "p")]
            report = await prefixed.handle_s3_event(s3_event("cdr/2026/11/28/p.json"))
            assert [o.status for o in report.outcomes] == ["skipped"]
            # A key the blob store refuses (a control character) is skipped, not raised.
            report = await sut.handle_s3_event(s3_event("cdr/2026/11/28/p\x01.json"))
            assert [o.status for o in report.outcomes] == ["skipped"]

    run(scenario)


@pytest.mark.parametrize("blob", [
    b"not json", b"{}", b'{"callId": "x"}', b"[1, 2]",
    json.dumps({**json.loads(make_cdr("x").to_json_bytes()), "startTime": "yesterday"}).encode(),
])
def test_an_invalid_cdr_is_reported_not_raised(tmp_path: Path, blob: bytes) -> None:
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores, receiver() as rx:
            await stores.blobs.put("cdr/2026/11/28/x.json", blob)
            await put_cdr(stores, make_cdr("y"), "cdr/2026/11/28/y.json")
            event = s3_event("cdr/2026/11/28/x.json")
            event["Records"] += s3_event("cdr/2026/11/28/y.json")["Records"]
            event["Records"] += s3_event("cdr/2026/11/28/gone.json")["Records"]
            report = await consumer(stores, rx.url).handle_s3_event(event)
            assert [o.status for o in report.outcomes] == ["invalid", "indexed", "missing"]
            assert report.outcomes[0].error
            assert not report.retryable
            assert len(rx.accepted) == 1  # only y
            with pytest.raises(NotFound):
                await stores.cdrs.get("x")
            outcome = await consumer(stores, None).consume_key("cdr/2026/11/28/x.json")
            assert outcome.status == "invalid"

    run(scenario)


# --- the push ----------------------------------------------------------------------------------


def test_push_retries_within_the_invocation_and_is_signed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores, receiver() as rx:
            key = "cdr/2026/11/28/r.json"
            body = await put_cdr(stores, make_cdr("r", recording="recordings/x/none.wav"), key)
            rx.statuses = [503, 500]
            outcome = await consumer(stores, rx.url).consume_key(key)
            assert (outcome.status, outcome.push) == ("indexed", "delivered")
            assert [d.status for d in rx.deliveries] == [503, 500, 200]
            assert [d.failure for d in rx.deliveries] == [None, None, None]
            # The listed recording is not in the store: the CDR goes without it.
            assert set(rx.deliveries[-1].parts) == {"calllog.json"}
            assert rx.deliveries[-1].parts["calllog.json"][1] == body
            page = await stores.directory.list_entries(DELIVERY_KIND)
            assert page.items == []

    run(scenario)


def test_a_wrong_secret_does_not_verify(tmp_path: Path) -> None:
    # The receiver's check is real: a push signed with another secret is told apart.
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores, receiver() as rx:
            key = "cdr/2026/11/28/w.json"
            await put_cdr(stores, make_cdr("w"), key)
            sut = CdrConsumer(stores, push_url=rx.url, signer_secret="another-secret",
                              key_id=KEY_ID, backoff=FAST)
            await sut.consume_key(key)
            assert [d.failure for d in rx.deliveries] == ["signature does not match"]

    run(scenario)


def test_a_client_error_is_final_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores, receiver() as rx:
            key = "cdr/2026/11/28/f.json"
            await put_cdr(stores, make_cdr("f"), key)
            rx.then = 404
            outcome = await consumer(stores, rx.url, attempts=5).consume_key(key)
            assert (outcome.push, outcome.error) == ("failed", "HTTP 404")
            assert len(rx.deliveries) == 1

    run(scenario)


def test_permanent_failure_is_kept_and_the_api_redelivers_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores, receiver() as rx:
            key = "cdr/2026/11/28/p@x.json"
            body = await put_cdr(stores, make_cdr("p@x"), key)
            rx.then = 503
            rx.clock = lambda: START + 60  # the consumer's clock signs the pushes
            sut = consumer(stores, rx.url, clock=lambda: START + 60)
            outcome = await sut.consume_key(key)
            assert (outcome.push, outcome.error) == ("failed", "HTTP 503")
            assert len(rx.deliveries) == 3
            # A duplicate event while it still fails: one record, attempts add up.
            await sut.handle_s3_event(s3_event(key))
            assert len(rx.deliveries) == 6
            assert not await stores.blobs.exists(delivered_marker(key))

            app = create_app(stores, clock=lambda: START + 120)
            app.state.cdr_consumer = sut
            tokens = await add_keys(stores)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as api:
                def auth(scope: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {tokens[scope]}"}

                listed = await api.get("/console/cdr-deliveries", headers=auth("read"))
                assert listed.status_code == 200
                assert listed.json() == {"items": [{
                    "call_id": "p@x", "cdr_key": key, "attempts": 6,
                    "last_error": "HTTP 503", "first_failed_at": "2026-11-28T00:01:01.250Z",
                    "last_failed_at": "2026-11-28T00:01:01.250Z"}], "cursor": None}
                retry = "/api/v1/cdr-deliveries/p@x/retry"
                assert (await api.post(retry, headers=auth("read"))).status_code == 403
                assert (await api.post(retry)).status_code == 401
                still = await api.post(retry, headers=auth("write"))
                assert still.status_code == 502
                assert "HTTP 503" in still.json()["error"]["message"]
                assert len(rx.deliveries) == 9

                rx.then = 200  # the customer fixed their endpoint
                done = await api.post(retry, headers=auth("admin"))
                assert done.status_code == 200
                assert done.json() == {"message": "delivered", "call_id": "p@x"}
                assert rx.deliveries[-1].failure is None
                assert rx.deliveries[-1].parts["calllog.json"][1] == body
                assert len(rx.accepted) == 1
                assert (await api.get("/console/cdr-deliveries", headers=auth("read"))
                        ).json()["items"] == []
                gone = await api.post(retry, headers=auth("write"))
                assert gone.status_code == 404
                # Delivered now: the event coming again does not push twice.
                again = await sut.consume_key(key)
                assert again.push == "duplicate" and len(rx.accepted) == 1

                app.state.cdr_consumer = consumer(stores, None)
                off = await api.post(retry, headers=auth("write"))
                assert off.status_code == 409

    run(scenario)


def test_unreachable_endpoint_is_a_failed_delivery(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with sqlite_stores(tmp_path) as stores:
            async with receiver() as rx:
                url = rx.url  # then closed: nothing listens there any more
            key = "cdr/2026/11/28/u.json"
            await put_cdr(stores, make_cdr("u"), key)
            outcome = await consumer(stores, url).consume_key(key)
            assert outcome.push == "failed" and outcome.error is not None
            assert "ConnectError" in outcome.error
            page = await consumer(stores, url).failed()
            assert [(f.call_id, f.attempts) for f in page.items] == [("u", 3)]

    run(scenario)
