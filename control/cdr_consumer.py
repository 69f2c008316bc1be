"""The CDR consumer: what happens to a CDR once its JSON is in the blob store.

For each `cdr/YYYY/MM/DD/*.json` blob (an S3 `ObjectCreated:*` notification on Lambda, or
`consume_key` called in-process) it reads the blob, validates it as a `CallDetailRecord`,
indexes it into the `CdrStore` and, when a push URL is configured, POSTs it to the customer's
endpoint as multipart/form-data (COMPAT.md "CDR": text field `calllog.json`, and when the CDR
lists a recording that exists, a file part `recording` with the text fields `call_id` and
`track_id`), signed as every webhook is (`control.contracts.signing`).

Delivery is at least once, and duplicate events are harmless:
- indexing replaces the entry of the same call (`CdrStore.put` is idempotent);
- a delivered CDR leaves a marker blob `cdr-deliveries/delivered/YYYY/MM/DD/<name>.json`; an
  event for a CDR whose marker exists is not pushed again;
- a push is retried a few times with backoff inside the invocation (transport errors, 5xx,
  408, 429; another 4xx is final at once); when every attempt fails the CDR is kept as a
  directory entry of the reserved kind `cdr-delivery` named by its call id (both backends:
  SQLite and DynamoDB list entries by kind, which the blob store cannot do), listed by
  `GET /console/cdr-deliveries` and pushed again by `.../{id}/retry` (`redeliver`).

Nothing raises out of `handle_s3_event` / `consume_key`: an invalid CDR is logged and
reported as `invalid`. A store that is down is reported `retryable`, so the Lambda entry can
fail the invocation and let Lambda's own retries of asynchronous events redo it. Imports
nothing from `edge`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # imported when a CDR is pushed: the API's cold start does not pay for httpx
    import httpx

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from control.contracts.cdr_push import CALLLOG_FIELD, closing, recording_heads, text_part
from control.contracts.signing import sign
from control.store.errors import Conflict, NotFound, StoreError
from control.store.factory import StoresProvider, as_provider
from control.store.models import CdrEntry, DirectoryEntry, DirectoryKind, Page
from control.store.ports import Stores

if TYPE_CHECKING:
    from control.contracts.cdr import CallDetailRecord

log = logging.getLogger("sdpbx.cdr_consumer")

# Not one of the directory kinds the API manages (trunk, route, application): a reserved one.
DELIVERY_KIND: DirectoryKind = "cdr-delivery"
DELIVERED_PREFIX = "cdr-deliveries/delivered/"
CDR_KEY = re.compile(r"cdr/(\d{4}/\d{2}/\d{2}/[^/]+\.json)")
MAX_MEDIA_BYTES = 200 * 1024 * 1024  # held in memory to sign it: a Lambda has 512 MB
_RETRYABLE_4XX = frozenset({408, 429})

Status = Literal["indexed", "skipped", "missing", "invalid", "retryable"]
PushResult = Literal["delivered", "duplicate", "failed", "off"]


# --- the S3 event notification (AWS S3 User Guide, "Event message structure")


class _S3Model(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class S3ObjectRef(_S3Model):
    key: str = Field(description="URL-encoded as in a form (spaces are '+').")
    size: int = 0


class S3BucketRef(_S3Model):
    name: str


class S3Entity(_S3Model):
    bucket: S3BucketRef
    object_: S3ObjectRef = Field(alias="object")


class S3EventRecord(_S3Model):
    event_source: str = Field(default="aws:s3", alias="eventSource")
    event_name: str = Field(alias="eventName")
    s3: S3Entity


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """Delay before push attempt n+1: min(cap, base * 2**(n-1)), scaled into [1 - jitter, 1]
    by a random draw (the shape of `control.store.spool.Backoff`, not imported: it brings the
    spool's file code into a Lambda's cold start)."""

    base_s: float = 0.5
    cap_s: float = 4.0
    jitter: float = 0.5

    def delay(self, failures: int, draw: float) -> float:
        return min(self.cap_s, self.base_s * 2.0 ** max(0, failures - 1)) * (
            1.0 - self.jitter * draw)


_PUSH_BACKOFF = Backoff()  # 0.5, 1, 2 s (jittered): well within the function's timeout


class FailedDelivery(BaseModel):
    """A CDR whose push failed every attempt: the `data` of a `cdr-delivery` entry."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    call_id: str
    cdr_key: str
    attempts: int = Field(ge=0, description="Pushes tried so far, over every invocation.")
    last_error: str
    first_failed_at: float = Field(description="Unix seconds.")
    last_failed_at: float = Field(description="Unix seconds.")


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyOutcome:
    """What became of one blob key."""

    key: str
    status: Status
    call_id: str | None = None
    push: PushResult | None = None  # None: not reached (not indexed)
    error: str | None = None


@dataclass(slots=True)
class ConsumerReport:
    outcomes: list[KeyOutcome] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for outcome in self.outcomes if outcome.status == status)

    @property
    def retryable(self) -> bool:
        """A store was down: running the event again (idempotent) may succeed."""
        return any(outcome.status == "retryable" for outcome in self.outcomes)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly counts, the Lambda's return value."""
        statuses: tuple[Status, ...] = ("indexed", "skipped", "missing", "invalid", "retryable")
        pushes: tuple[PushResult, ...] = ("delivered", "duplicate", "failed")
        return {
            "records": len(self.outcomes),
            **{status: self.count(status) for status in statuses},
            **{push: sum(1 for o in self.outcomes if o.push == push) for push in pushes},
        }


class PushError(Exception):
    """A push attempt failed; `final` when another attempt would fail the same way."""

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


def _default_client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(timeout=httpx.Timeout(10.0), follow_redirects=False)


def multipart_body(
    boundary: str, cdr_json: bytes, *, call_id: str,
    recording: tuple[str, bytes] | None = None,
) -> bytes:
    """The push body (RFC 7578): `calllog.json`, then, with `recording` = (track id, WAV
    bytes), the fields `call_id`, `track_id` and the file part `recording`."""
    body = text_part(boundary, CALLLOG_FIELD, cdr_json)
    if recording is not None:
        track_id, wav = recording
        body += recording_heads(boundary, call_id, track_id) + wav + b"\r\n"
    return body + closing(boundary)


def delivered_marker(cdr_key: str) -> str:
    """The blob that records the delivery of the CDR at `cdr_key`."""
    match = CDR_KEY.fullmatch(cdr_key)
    if match is None:
        raise ValueError(f"{cdr_key!r} is not a CDR key")
    return DELIVERED_PREFIX + match.group(1)


def parse_cdr(data: bytes) -> CallDetailRecord:
    # Imported on first use: building the CDR models costs ~10 ms of cold start, which the
    # API function (it shares this module for retries) need not pay on every container.
    from control.contracts.cdr import CallDetailRecord

    return CallDetailRecord.from_json_bytes(data)


def index_entry(cdr: CallDetailRecord, key: str) -> CdrEntry:
    """The `CdrStore` entry of `cdr`, stored at blob `key` (the same fields the edge writes)."""
    recording = next((track.path for track in cdr.recorder if track.path), "")
    return CdrEntry(
        call_id=cdr.call_id, start_time=cdr.start_timestamp, end_time=cdr.end_timestamp,
        caller=cdr.caller, callee=cdr.callee, direction=cdr.direction, status=cdr.status,
        duration=cdr.duration_secs, cdr_key=key, recording_key=recording,
        edge_id=cdr.edge_id or "",
    )


class CdrConsumer:
    """Indexes CDR blobs and pushes them to `push_url` (when set); see the module docstring.

    `key_prefix` is the blob store's prefix in the bucket (`SDPBX_BLOB_PREFIX`): S3 events
    name whole object keys. `bucket`, when set, is the only bucket whose events are taken.
    `attempts` pushes per invocation, `backoff` between them; `clock`, `sleep` and
    `random_draw` are injected for tests.
    """

    def __init__(
        self,
        stores: Stores | StoresProvider,
        *,
        push_url: str | None = None,
        push_headers: Mapping[str, str] | None = None,
        signer_secret: str | None = None,
        key_id: str = "k1",
        http_client_factory: Callable[[], httpx.AsyncClient] = _default_client,
        key_prefix: str = "",
        bucket: str | None = None,
        attempts: int = 3,
        backoff: Backoff = _PUSH_BACKOFF,
        max_media_bytes: int = MAX_MEDIA_BYTES,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        random_draw: Callable[[], float] = random.random,
    ) -> None:
        if signer_secret is not None and not signer_secret:
            raise ValueError("signer_secret is empty")
        self._stores = as_provider(stores)
        self.push_url = push_url or None
        self._push_headers = dict(push_headers or {})
        self._secret = signer_secret
        self._key_id = key_id
        self._client_factory = http_client_factory
        self._prefix = "/".join(part for part in key_prefix.split("/") if part)
        self._bucket = bucket or None
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_media = max_media_bytes
        self._clock = clock
        self._sleep = sleep
        self._draw = random_draw

    # --- entry points -----------------------------------------------------------------------

    async def handle_s3_event(self, event: Mapping[str, Any]) -> ConsumerReport:
        """Consume every `ObjectCreated:*` record of an S3 notification, in order."""
        report = ConsumerReport()
        records = event.get("Records")
        if not isinstance(records, list):  # e.g. the `s3:TestEvent` S3 sends on subscribing
            log.info("S3 event without records ignored: %s", event.get("Event", "?"))
            return report
        async with self._client_factory() as client:
            for raw in records:
                key = self._blob_key(raw, report)
                if key is not None:
                    report.outcomes.append(await self._consume(key, client))
        return report

    async def consume_key(self, key: str) -> KeyOutcome:
        """Index (and push) the CDR blob at `key` (a blob store key, `cdr/YYYY/MM/DD/...`)."""
        if CDR_KEY.fullmatch(key) is None:
            return KeyOutcome(key=key, status="skipped", error="not a cdr/YYYY/MM/DD/*.json key")
        async with self._client_factory() as client:
            return await self._consume(key, client)

    async def redeliver(self, call_id: str) -> FailedDelivery | None:
        """Push a failed delivery again now: None once delivered (its entry is removed),
        else the updated record. `NotFound` when no delivery of `call_id` failed."""
        stores = await self._stores()
        entry = await stores.directory.get_entry(DELIVERY_KIND, call_id)
        failed = FailedDelivery.model_validate(entry.data)
        try:
            data = await stores.blobs.get(failed.cdr_key)
        except NotFound:
            raise NotFound(f"the CDR of call {call_id!r} is gone from the blob store") from None
        cdr = parse_cdr(data)
        async with self._client_factory() as client:
            error = await self._push(stores, client, cdr, data, failed.cdr_key)
        if error is None:
            await stores.directory.delete_entry(DELIVERY_KIND, call_id)
            return None
        return await self._record_failure(stores, call_id, failed.cdr_key, error)

    async def failed(self, *, limit: int = 100, cursor: str | None = None
                     ) -> Page[FailedDelivery]:
        """The deliveries that failed, by call id."""
        stores = await self._stores()
        page = await stores.directory.list_entries(DELIVERY_KIND, limit=limit, cursor=cursor)
        return Page([FailedDelivery.model_validate(e.data) for e in page.items], page.cursor)

    # --- one key ------------------------------------------------------------------------------

    def _blob_key(self, raw: object, report: ConsumerReport) -> str | None:
        """The blob key of one event record, or None (recorded as skipped)."""
        try:
            record = S3EventRecord.model_validate(raw)
        except ValidationError as exc:
            log.warning("S3 event record ignored: not an S3 record (%s)",
                        exc.errors(include_url=False, include_input=False)[0]["msg"])
            report.outcomes.append(KeyOutcome(key="", status="skipped", error="not an S3 record"))
            return None
        # Keys arrive URL-encoded as a form value (S3 docs): "+" is a space, "%40" an "@".
        key = urllib.parse.unquote_plus(record.s3.object_.key)
        why: str | None = None
        if record.event_source != "aws:s3" or not record.event_name.startswith("ObjectCreated:"):
            why = f"event {record.event_name!r} is not ObjectCreated"
        elif self._bucket is not None and record.s3.bucket.name != self._bucket:
            why = f"bucket {record.s3.bucket.name!r} is not {self._bucket!r}"
        elif self._prefix:
            if key.startswith(self._prefix + "/"):
                key = key[len(self._prefix) + 1:]
            else:
                why = f"not under the blob prefix {self._prefix!r}"
        if why is None and CDR_KEY.fullmatch(key) is None:
            why = "not a cdr/YYYY/MM/DD/*.json key"
        if why is not None:
            log.info("S3 object %r skipped: %s", key, why)
            report.outcomes.append(KeyOutcome(key=key, status="skipped", error=why))
            return None
        return key

    async def _consume(self, key: str, client: httpx.AsyncClient) -> KeyOutcome:
        try:
            stores = await self._stores()
            data = await stores.blobs.get(key)
        except NotFound:
            log.warning("CDR blob %r is gone (deleted since the event)", key)
            return KeyOutcome(key=key, status="missing", error="no such blob")
        except ValueError as exc:  # a key the blob store refuses (control characters, ...)
            log.warning("CDR blob %r skipped: %s", key, exc)
            return KeyOutcome(key=key, status="skipped", error=str(exc))
        except StoreError as exc:
            log.error("CDR blob %r not read: %s", key, exc)
            return KeyOutcome(key=key, status="retryable", error=str(exc))
        try:
            cdr = parse_cdr(data)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "$"
            log.error("CDR blob %r is not a valid CDR: %s: %s", key, where, first["msg"])
            return KeyOutcome(key=key, status="invalid", error=f"{where}: {first['msg']}")
        try:
            await stores.cdrs.put(index_entry(cdr, key))
        except StoreError as exc:
            # Not pushed either: the event's retry does both, and the receiver sees it once.
            log.error("CDR of call %s not indexed: %s", cdr.call_id, exc,
                      extra={"call_id": cdr.call_id})
            return KeyOutcome(key=key, status="retryable", call_id=cdr.call_id, error=str(exc))
        push: PushResult = "off"
        error: str | None = None
        if self.push_url is not None:
            push, error = await self._deliver(stores, client, cdr, data, key)
        return KeyOutcome(key=key, status="indexed", call_id=cdr.call_id, push=push, error=error)

    async def _deliver(self, stores: Stores, client: httpx.AsyncClient, cdr: CallDetailRecord,
                       data: bytes, key: str) -> tuple[PushResult, str | None]:
        marker = delivered_marker(key)
        try:
            if await stores.blobs.exists(marker):
                return "duplicate", None
        except StoreError as exc:  # cannot tell: pushing twice beats not pushing
            log.warning("delivery marker of %r not read: %s", key, exc)
        error = await self._push(stores, client, cdr, data, key)
        if error is None:
            return "delivered", None
        try:
            await self._record_failure(stores, cdr.call_id, key, error)
        except StoreError as exc:
            log.error("failed delivery of call %s not recorded: %s", cdr.call_id, exc,
                      extra={"call_id": cdr.call_id})
        return "failed", error

    # --- the push -----------------------------------------------------------------------------

    async def _push(self, stores: Stores, client: httpx.AsyncClient, cdr: CallDetailRecord,
                    data: bytes, key: str) -> str | None:
        """Push with retries: None once delivered (and marked), else the last error."""
        assert self.push_url is not None
        recording = await self._recording(stores, cdr)
        boundary = f"sdpbx-{secrets.token_hex(16)}"
        body = multipart_body(boundary, data, call_id=cdr.call_id, recording=recording)
        error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                await self._post(client, body, boundary)
            except PushError as exc:
                error = str(exc)
                log.warning("CDR push of call %s failed (attempt %d/%d): %s", cdr.call_id,
                            attempt, self._attempts, error, extra={"call_id": cdr.call_id})
                if exc.final or attempt == self._attempts:
                    break
                await self._sleep(self._backoff.delay(attempt, self._draw()))
                continue
            try:
                await stores.blobs.put(delivered_marker(key), _marker(cdr.call_id, self._clock()),
                                       "application/json")
            except StoreError as exc:  # delivered anyway; a duplicate event may push again
                log.warning("delivery marker of call %s not written: %s", cdr.call_id, exc)
            return None
        return error or "not delivered"

    async def _post(self, client: httpx.AsyncClient, body: bytes, boundary: str) -> None:
        import httpx

        assert self.push_url is not None
        headers = {**self._push_headers,
                   "Content-Type": f"multipart/form-data; boundary={boundary}"}
        if self._secret is not None:
            headers.update(sign(body, secret=self._secret, key_id=self._key_id,
                                now=self._clock()))
        try:
            response = await client.post(self.push_url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise PushError(f"{type(exc).__name__}: {exc}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        final = 400 <= status < 500 and status not in _RETRYABLE_4XX
        raise PushError(f"HTTP {status}", final=final)

    async def _recording(self, stores: Stores, cdr: CallDetailRecord
                         ) -> tuple[str, bytes] | None:
        track = next((t for t in cdr.recorder if t.path), None)
        if track is None:
            return None
        if track.size > self._max_media:
            log.warning("recording of call %s (%d bytes) is pushed without its WAV: above "
                        "%d bytes", cdr.call_id, track.size, self._max_media)
            return None
        try:
            return track.track_id, await stores.blobs.get(track.path)
        except (NotFound, ValueError):
            log.warning("recording %r of call %s is missing: pushed without it", track.path,
                        cdr.call_id)
            return None

    async def _record_failure(self, stores: Stores, call_id: str, key: str,
                              error: str) -> FailedDelivery:
        """Create or update the `cdr-delivery` entry of `call_id` (one retry on a race)."""
        now = self._clock()
        for _ in range(2):
            try:
                entry: DirectoryEntry | None = await stores.directory.get_entry(
                    DELIVERY_KIND, call_id)
            except NotFound:
                entry = None
            previous = None if entry is None else FailedDelivery.model_validate(entry.data)
            failed = FailedDelivery(
                call_id=call_id, cdr_key=key, last_error=error, last_failed_at=now,
                attempts=(0 if previous is None else previous.attempts) + self._attempts,
                first_failed_at=now if previous is None else previous.first_failed_at,
            )
            record = DirectoryEntry(kind=DELIVERY_KIND, name=call_id, data=failed.model_dump())
            try:
                await stores.directory.put_entry(
                    record, None if entry is None else entry.version)
                return failed
            except (Conflict, NotFound):
                continue
        raise Conflict(f"the failed delivery of call {call_id!r} changed twice meanwhile")


def _marker(call_id: str, now: float) -> bytes:
    return json.dumps({"callId": call_id, "deliveredAt": now}).encode("utf-8")
