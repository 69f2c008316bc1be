"""`/call-records`: the CDR query (time range, caller, callee, status, direction, cursor
pages), one CDR's JSON from the blob store, and its recording (a 302 to a presigned URL when
the blob store is S3, else the WAV streamed from the local folder).

`from`/`to` are RFC 3339 (with a zone) or Unix seconds; `to` is exclusive and defaults to now,
`from` to 30 days before `to`. A range is at most 366 days: the DynamoDB index is read one day
at a time, so an unbounded range would be an unbounded number of queries.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from control.api.endpoints import (
    ApiContext,
    Endpoint,
    bad_cursor,
    json_response,
    path_param,
    read_optional_model,
)
from control.api.errors import JSON, ApiError
from control.contracts.api import CdrIndexEntry, CdrPage, CdrQueryBody
from control.contracts.blob_keys import step_recording_key
from control.contracts.times import rfc3339
from control.store.errors import NotFound
from control.store.models import CdrEntry
from control.store.ports import CdrQuery

DAY_S = 86400.0
DEFAULT_RANGE_S = 30 * DAY_S
MAX_RANGE_S = 366 * DAY_S
PRESIGN_EXPIRES_S = 900


def parse_time(value: str | float, field: str) -> float:
    """Unix seconds from Unix seconds or an RFC 3339 time with a zone ("Z" or "+02:00")."""
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(422, f"{field}: not RFC 3339 nor Unix seconds", field=field) from None
    if moment.tzinfo is None:
        raise ApiError(422, f"{field}: an RFC 3339 time needs a zone (Z or +hh:mm)",
                       field=field)
    return moment.timestamp()


def view(entry: CdrEntry) -> CdrIndexEntry:
    return CdrIndexEntry(
        call_id=entry.call_id, start_time=rfc3339(entry.start_time),
        end_time=rfc3339(entry.end_time), caller=entry.caller, callee=entry.callee,
        direction=entry.direction, status=entry.status, duration=entry.duration,
        has_recording=bool(entry.recording_key), edge_id=entry.edge_id,
    )


def to_query(body: CdrQueryBody, now: float) -> CdrQuery:
    end = now if body.to is None else parse_time(body.to, "to")
    start = end - DEFAULT_RANGE_S if body.from_ is None else parse_time(body.from_, "from")
    if end - start > MAX_RANGE_S:
        raise ApiError(422, "from: the range may span at most 366 days", field="from")
    return CdrQuery(start=start, end=end, caller=body.caller, callee=body.callee,
                    status=body.status, direction=body.direction, limit=body.limit,
                    cursor=body.cursor)


async def _answer(ctx: ApiContext, body: CdrQueryBody) -> Response:
    query = to_query(body, ctx.clock())
    stores = await ctx.stores()
    try:
        page = await stores.cdrs.query(query)
    except ValueError:
        raise bad_cursor() from None
    return json_response(CdrPage(items=[view(e) for e in page.items], cursor=page.cursor))


async def list_records(request: Request, ctx: ApiContext) -> Response:
    return await _answer(ctx, CdrQueryBody.model_validate(dict(request.query_params)))


async def query_records(request: Request, ctx: ApiContext) -> Response:
    return await _answer(ctx, await read_optional_model(request, CdrQueryBody))


async def get_record(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    call_id = path_param(request, "call_id")
    entry = await stores.cdrs.get(call_id)
    if not entry.cdr_key:
        raise ApiError(404, f"call {call_id!r} has no stored CDR")
    try:
        data = await stores.blobs.get(entry.cdr_key)
    except NotFound:
        raise ApiError(404, f"the CDR of call {call_id!r} is missing from the blob store") from None
    return Response(data, media_type=JSON)


async def get_recording(request: Request, ctx: ApiContext) -> Response:
    stores = await ctx.stores()
    call_id = path_param(request, "call_id")
    entry = await stores.cdrs.get(call_id)
    key = entry.recording_key
    if not key:
        raise ApiError(404, f"call {call_id!r} has no recording")
    url = await stores.blobs.presign(key, PRESIGN_EXPIRES_S)
    if url is not None:
        return RedirectResponse(url, status_code=302)
    if not await stores.blobs.exists(key):
        raise ApiError(404, f"the recording of call {call_id!r} is missing from the blob store")
    filename = f"{call_id}.wav".replace('"', "")
    return StreamingResponse(
        stores.blobs.stream(key), media_type="audio/wav",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def get_step_recording(request: Request, ctx: ApiContext) -> Response:
    """A `record` step's WAV (it may be requested while the call still runs)."""
    stores = await ctx.stores()
    call_id = path_param(request, "call_id")
    raw = path_param(request, "index")
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise ApiError(404, f"no recording {raw!r}")
    key = step_recording_key(call_id, int(raw))
    url = await stores.blobs.presign(key, PRESIGN_EXPIRES_S)
    if url is not None:
        return RedirectResponse(url, status_code=302)
    if not await stores.blobs.exists(key):
        raise ApiError(404, f"call {call_id!r} has no recording {raw} (yet)")
    return StreamingResponse(stores.blobs.stream(key), media_type="audio/wav")


_Q = (
    ("from", "start, RFC 3339 or Unix seconds (default: 30 days before `to`)"),
    ("to", "end (exclusive), RFC 3339 or Unix seconds (default: now)"),
    ("caller", "exact caller"), ("callee", "exact callee"),
    ("status", "completed | failed | missed"), ("direction", "inbound | outbound | internal"),
    ("limit", "page size, 1..1000 (default 100)"), ("cursor", "the cursor of the previous page"),
)
ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="GET", path="/call-records", handler=list_records, scope="read",
             summary="Query call records, newest first", tag="call-records",
             response=CdrPage, query=_Q),
    Endpoint(method="POST", path="/call-records/query", handler=query_records, scope="read",
             summary="Query call records (RustPBX POST=query)", tag="call-records",
             body=CdrQueryBody, response=CdrPage, alias=True),
    Endpoint(method="GET", path="/call-records/{call_id}", handler=get_record, scope="read",
             summary="One CDR (camelCase JSON, as stored)", tag="call-records"),
    Endpoint(method="GET", path="/call-records/{call_id}/recording", handler=get_recording,
             scope="read", summary="The recording: 302 to a presigned URL, or the WAV",
             tag="call-records"),
    Endpoint(method="GET", path="/call-records/{call_id}/recordings/{index}",
             handler=get_step_recording, scope="read", tag="call-records",
             summary="The WAV of a call's n-th record step (302 to S3, or streamed)"),
)
