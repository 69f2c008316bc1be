"""edge.io.cdr_push against a real HTTP receiver (Starlette on uvicorn, 127.0.0.1, port 0) that
checks each signature with `control.contracts.signing` and parses the multipart body with an
independent parser (the stdlib's MIME parser; also Starlette's `request.form()` when
python-multipart is installed): the CDR and the recording arrive byte for byte, failures are
retried with backoff until delivered, a restart delivers what was pending (recording included),
and `CdrWriter` feeds it end to end."""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import importlib.util
import json
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from control.contracts.blob_keys import cdr_key, recording_key
from control.contracts.cdr import CallDetailRecord
from control.contracts.signing import SIGNATURE_HEADER, sign, verification_failure
from control.store.local_blobs import LocalBlobStore
from control.store.spool import Backoff, BlobSpool
from edge.io.cdr_push import (
    ENVELOPE_CONTENT_TYPE,
    CdrPusher,
    CdrPushError,
    CdrSigner,
    HttpCdrSink,
)
from edge.io.http import HttpServer
from edge.pbx.cdr import CdrWriter, build_cdr

SECRET = "cdr-receiver-secret"
KEY_ID = "k1"
FAST = Backoff(base_s=0.005, cap_s=0.02)
START = datetime(2026, 11, 27, 23, 59, 1, 123000, tzinfo=UTC).timestamp()
CALL_ID = 'a84b4c76e66710@pc33.atlanta.example.com'
HAVE_MULTIPART = importlib.util.find_spec("python_multipart") is not None
T = TypeVar("T")


def run(scenario: Callable[[], Awaitable[T]], timeout_s: float = 20.0) -> T:
    async def main() -> T:
        async with asyncio.timeout(timeout_s):
            return await scenario()
    return asyncio.run(main())


@dataclass
class Part:
    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class Delivery:
    body: bytes
    headers: dict[str, str]
    failure: str | None  # None: the signature verified
    parts: dict[str, Part]
    status: int


@dataclass
class Receiver:
    url: str = ""
    statuses: list[int] = field(default_factory=list)  # answers to give first, then 200
    deliveries: list[Delivery] = field(default_factory=list)
    errors: list[AssertionError] = field(default_factory=list)  # the body did not parse

    @property
    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.status == 200]


def parse_multipart(content_type: str, body: bytes) -> dict[str, Part]:
    """The parts, by name, read with the stdlib MIME parser (not the code under test)."""
    message = email.message_from_bytes(
        b"Content-Type: " + content_type.encode("ascii") + b"\r\n\r\n" + body,
        policy=email.policy.HTTP,
    )
    assert message.get_content_type() == "multipart/form-data"
    assert not message.defects, message.defects
    parts: dict[str, Part] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        assert isinstance(name, str) and name not in parts
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        parts[name] = Part(part.get_filename(), part.get("content-type"), payload)
    return parts


async def check_with_starlette(request: Request, parts: dict[str, Part]) -> None:
    """When python-multipart is installed, Starlette's own parser must agree."""
    if not HAVE_MULTIPART:
        return
    async with request.form() as form:
        assert set(form.keys()) == set(parts)
        for name, part in parts.items():
            value = form[name]
            if isinstance(value, UploadFile):
                assert value.filename == part.filename
                assert await value.read() == part.data
            else:
                assert value.encode("utf-8") == part.data


@contextlib.asynccontextmanager
async def receiver(**settings: Any) -> AsyncIterator[Receiver]:
    state = Receiver(**settings)

    async def hook(request: Request) -> Response:
        body = await request.body()  # the raw bytes: verify before parsing
        failure = verification_failure(body, request.headers, secrets={KEY_ID: SECRET},
                                       now=time.time())
        try:
            parts = parse_multipart(request.headers["content-type"], body)
            await check_with_starlette(request, parts)
        except AssertionError as exc:
            # Accept it (no endless retries), and fail the test when the receiver closes.
            state.errors.append(exc)
            parts = {}
        status = state.statuses.pop(0) if state.statuses else 200
        state.deliveries.append(Delivery(body, dict(request.headers), failure, parts, status))
        return JSONResponse({"ok": status == 200}, status_code=status)

    server = await HttpServer.start(
        Starlette(routes=[Route("/cdr", hook, methods=["POST"])]), "127.0.0.1", 0
    )
    state.url = f"http://127.0.0.1:{server.address[1]}/cdr"
    try:
        yield state
    finally:
        await server.close()
    if state.errors:
        raise state.errors[0]


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cdr"


def signer(clock: Callable[[], float] = time.time) -> CdrSigner:
    return CdrSigner(secret=SECRET, key_id=KEY_ID, clock=clock)


def make_pusher(root: Path, client: httpx.AsyncClient, url: str, **options: Any) -> CdrPusher:
    options.setdefault("signer", signer())
    options.setdefault("backoff", FAST)
    return CdrPusher(root, client, url, **options)


def a_cdr(call_id: str = CALL_ID) -> CallDetailRecord:
    return build_cdr(call_id=call_id, caller="sip:1001@pbx.example.com",
                     callee="sip:1002@pbx.example.com", direction="internal",
                     start_time=START, answer_time=START + 2, end_time=START + 30,
                     status_code=200, hangup_reason="byCaller", edge_id="edge-1")


def audio(size: int = 300_000) -> bytes:
    # Random bytes plus what a sloppy parser would trip over: CR, LF, a fake delimiter.
    return b"RIFF" + os.urandom(size) + b"\r\n--sdpbx-\r\n\r" + os.urandom(64) + b"\n"


async def queue_push(pusher: CdrPusher, cdr: CallDetailRecord, recording: Path | None,
                     track_id: str = "stereo") -> None:
    staged = await pusher.stage_recording(str(recording)) if recording else None
    await pusher.enqueue(cdr.to_json_bytes(), key=cdr_key(cdr.call_id, START),
                         call_id=cdr.call_id, recording=staged,
                         track_id=track_id if staged else None)


def test_push_carries_the_cdr_and_the_recording(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with receiver() as rx, httpx.AsyncClient(trust_env=False) as client:
            pusher = make_pusher(tmp_path / "cdr-push", client, rx.url,
                                 headers={"Authorization": "Bearer t0ken"})
            wav = tmp_path / "call.wav"
            sound = audio()
            wav.write_bytes(sound)
            cdr = a_cdr()
            await queue_push(pusher, cdr, wav)
            wav.unlink()  # the main spool would take it away and delete it after upload
            await pusher.start()
            try:
                await pusher.wait_empty()
            finally:
                await pusher.stop()
            [delivery] = rx.deliveries
            assert delivery.failure is None
            assert set(delivery.parts) == {"calllog.json", "call_id", "track_id", "recording"}
            calllog = delivery.parts["calllog.json"]
            assert calllog.filename is None  # a text field, as RustPBX sends it
            assert calllog.data == cdr.to_json_bytes()
            assert CallDetailRecord.from_json_bytes(calllog.data) == cdr
            assert delivery.parts["call_id"].data == CALL_ID.encode()
            assert delivery.parts["track_id"].data == b"stereo"
            recording = delivery.parts["recording"]
            assert recording.filename == f"{CALL_ID}.wav"
            assert recording.content_type == "audio/wav"
            assert recording.data == sound
            # Streamed with a length (not chunked), and our header made it through.
            assert delivery.headers["content-length"] == str(len(delivery.body))
            assert "transfer-encoding" not in delivery.headers
            assert delivery.headers["authorization"] == "Bearer t0ken"
            assert list((tmp_path / "cdr-push" / "media").iterdir()) == []  # done with it
            assert pusher.sink.delivered == 1

    run(scenario)


def test_a_failing_receiver_gets_the_cdr_on_the_third_attempt(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with receiver(statuses=[503, 500]) as rx, \
                httpx.AsyncClient(trust_env=False) as client:
            pusher = make_pusher(tmp_path / "push", client, rx.url)
            await pusher.start()
            try:
                await queue_push(pusher, a_cdr(), None)
                await pusher.wait_empty()
            finally:
                await pusher.stop()
            assert [d.status for d in rx.deliveries] == [503, 500, 200]
            assert all(d.failure is None for d in rx.deliveries)  # each attempt re-signed
            assert set(rx.accepted[0].parts) == {"calllog.json"}
            assert rx.accepted[0].parts["calllog.json"].data == a_cdr().to_json_bytes()
            assert pusher.sink.failed == 2 and pusher.spool.failed_attempts == 2

    run(scenario)


def test_a_refusing_receiver_is_retried_and_reported_throttled(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with receiver(statuses=[400, 401, 400, 400, 400, 429]) as rx, \
                httpx.AsyncClient(trust_env=False) as client:
            pusher = make_pusher(tmp_path / "push", client, rx.url)
            await pusher.start()
            try:
                await queue_push(pusher, a_cdr(), None)
                await pusher.wait_empty()
            finally:
                await pusher.stop()
            assert len(rx.deliveries) == 7 and len(rx.accepted) == 1

    with caplog.at_level(logging.WARNING, logger="sdpbx.cdr_push"):
        run(scenario)
    refused = [r for r in caplog.records
               if r.name == "sdpbx.cdr_push" and "refused" in r.getMessage()]
    # 400 x4 (3 logged, then throttled) + 401 (its own key); 429 is retryable: not "refused".
    assert [r.levelno for r in refused] == [logging.WARNING] * 4
    assert sorted(r.__dict__["status"] for r in refused) == [400, 400, 400, 401]


def test_a_restart_delivers_what_was_pending_with_its_recording(tmp_path: Path) -> None:
    async def scenario() -> None:
        root = tmp_path / "cdr-push"
        sound = audio(50_000)
        failures: list[float] = []
        tried_both = asyncio.Event()

        async def backoff_sleep(delay: float) -> None:  # the spool sleeps after each failure
            failures.append(delay)
            if len(failures) >= 2:
                tried_both.set()
            await asyncio.sleep(delay)

        async with httpx.AsyncClient(trust_env=False) as client:
            down = make_pusher(root, client, closed_port_url(), sleep=backoff_sleep)
            await down.start()
            wav = tmp_path / "call.wav"
            wav.write_bytes(sound)
            await queue_push(down, a_cdr("first"), wav)
            await queue_push(down, a_cdr("second"), None)
            await tried_both.wait()
            await down.stop()
            wav.unlink()
            assert down.pending() == 2

            async with receiver() as rx:
                again = make_pusher(root, client, rx.url)  # a new process, the same folder
                await again.start()
                try:
                    await again.wait_empty()
                finally:
                    await again.stop()
            by_call = {json.loads(d.parts["calllog.json"].data)["callId"]: d
                       for d in rx.deliveries}
            assert set(by_call) == {"first", "second"}
            assert by_call["first"].parts["recording"].data == sound
            assert by_call["first"].parts["recording"].filename == "first.wav"
            assert "recording" not in by_call["second"].parts
            assert all(d.failure is None for d in rx.deliveries)
            assert list((root / "media").iterdir()) == []

    run(scenario)


def test_start_removes_recordings_no_push_refers_to(tmp_path: Path) -> None:
    async def scenario() -> None:
        root = tmp_path / "push"
        async with receiver() as rx, httpx.AsyncClient(trust_env=False) as client:
            first = make_pusher(root, client, rx.url)
            wav = tmp_path / "a.wav"
            wav.write_bytes(b"RIFF-kept")
            await queue_push(first, a_cdr(), wav)  # queued, not started: stays on disk
            (root / "media" / "0000-orphan.wav").write_bytes(b"crashed before queueing")
            (root / "media" / "0001-half.wav.tmp").write_bytes(b"a copy cut short")
            second = make_pusher(root, client, rx.url)
            await second.start()
            try:
                await second.wait_empty()
            finally:
                await second.stop()
            assert rx.accepted[0].parts["recording"].data == b"RIFF-kept"
            assert list((root / "media").iterdir()) == []

    run(scenario)


def test_an_unreadable_envelope_is_set_aside_not_retried_forever(tmp_path: Path) -> None:
    async def scenario() -> None:
        root = tmp_path / "push"
        async with receiver() as rx, httpx.AsyncClient(trust_env=False) as client:
            pusher = make_pusher(root, client, rx.url)
            await pusher.spool.write("cdr/2026/11/27/bad.json", b"{not json",
                                     ENVELOPE_CONTENT_TYPE)
            await queue_push(pusher, a_cdr(), None)
            await pusher.start()
            try:
                await pusher.wait_empty()
            finally:
                await pusher.stop()
            assert len(rx.deliveries) == 1  # the good one; the bad one never went out
            [kept] = list((root / "rejected").iterdir())
            assert kept.read_bytes() == b"{not json"

    run(scenario)


def test_the_signature_is_the_webhook_signature_of_the_exact_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        now = float(int(time.time()))
        async with receiver() as rx, httpx.AsyncClient(trust_env=False) as client:
            sink = HttpCdrSink(client, rx.url, signer=signer(lambda: now))
            wav = tmp_path / "r.wav"
            wav.write_bytes(audio(10_000))
            for recording in (None, wav):
                assert await sink.send(b'{"callId":"x"}', call_id="x", recording=recording,
                                       track_id="stereo") == 200
            for delivery in rx.deliveries:
                expected = sign(delivery.body, secret=SECRET, key_id=KEY_ID, now=now)
                assert delivery.headers[SIGNATURE_HEADER.lower()] == expected[SIGNATURE_HEADER]
                assert delivery.failure is None
            # A receiver with another secret refuses it.
            tampered = rx.deliveries[0]
            assert verification_failure(tampered.body + b" ", tampered.headers,
                                        secrets={KEY_ID: SECRET}, now=now) is not None

    run(scenario)


def test_send_raises_for_transport_errors_and_non_2xx(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with receiver(statuses=[404]) as rx, httpx.AsyncClient(trust_env=False) as client:
            with pytest.raises(CdrPushError) as refused:
                await HttpCdrSink(client, rx.url).send(b"{}", call_id="x")
            assert refused.value.status == 404
            with pytest.raises(CdrPushError) as unreachable:
                await HttpCdrSink(client, closed_port_url()).send(b"{}", call_id="x")
            assert unreachable.value.status is None
            assert rx.deliveries[0].failure is not None  # no signer: unsigned

    run(scenario)


def test_without_media_only_the_calllog_is_pushed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with receiver() as rx, httpx.AsyncClient(trust_env=False) as client:
            pusher = make_pusher(tmp_path / "push", client, rx.url, with_media=False)
            wav = tmp_path / "r.wav"
            wav.write_bytes(b"RIFF")
            assert await pusher.stage_recording(str(wav)) is None
            await queue_push(pusher, a_cdr(), wav)
            await pusher.start()
            try:
                await pusher.wait_empty()
            finally:
                await pusher.stop()
            assert set(rx.deliveries[0].parts) == {"calllog.json"}

    run(scenario)


def test_writer_pushes_what_it_stores(tmp_path: Path) -> None:
    """CdrWriter + the blob spool + the push queue, end to end: the receiver gets the same
    CDR bytes as the blob store, and the recording the blob store got."""

    class MemoryIndex:
        def __init__(self) -> None:
            self.entries: list[Any] = []

        async def put(self, entry: Any) -> None:
            self.entries.append(entry)

        async def get(self, call_id: str) -> Any:
            raise NotImplementedError

        async def query(self, query: Any) -> Any:
            raise NotImplementedError

    async def scenario() -> None:
        blobs = LocalBlobStore(tmp_path / "blobs")
        spool = BlobSpool(tmp_path / "spool", blobs, backoff=FAST)
        index = MemoryIndex()
        async with receiver(statuses=[503]) as rx, \
                httpx.AsyncClient(trust_env=False) as client:
            pusher = make_pusher(tmp_path / "spool-push", client, rx.url)
            writer = CdrWriter(spool, index, edge_id="edge-9", push=pusher)
            await spool.start()
            await pusher.start()
            try:
                wav = tmp_path / "rec.wav"
                sound = audio(120_000)
                wav.write_bytes(sound)
                cdr = a_cdr().model_copy(update={"edge_id": None})
                await writer.write(cdr, recording_path=str(wav))
                await spool.wait_empty()
                await pusher.wait_empty()
                await writer.close()
            finally:
                await pusher.stop()
                await spool.stop()
            stored = await blobs.get(cdr_key(CALL_ID, START))
            assert await blobs.get(recording_key(CALL_ID, START)) == sound
            [delivery] = rx.accepted
            assert delivery.parts["calllog.json"].data == stored
            assert delivery.parts["recording"].data == sound
            assert delivery.parts["track_id"].data == b"stereo"
            assert json.loads(stored)["edgeId"] == "edge-9"
            assert json.loads(stored)["recorder"][0]["size"] == len(sound)
            assert [e.call_id for e in index.entries] == [CALL_ID]
            assert list((tmp_path / "spool-push" / "media").iterdir()) == []

    run(scenario)
