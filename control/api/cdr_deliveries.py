"""`/cdr-deliveries`: the CDR pushes that failed every attempt (kept by the CDR consumer as
`cdr-delivery` directory entries), and pushing one again on demand.

The retry needs the consumer that knows the push URL and the signing secret: the composition
root puts it in `app.state.cdr_consumer` (`control.handlers` does on Lambda); without one a
retry answers 409 (nothing is configured to deliver to).
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response

from control.api.endpoints import (
    ApiContext,
    Endpoint,
    bad_cursor,
    json_response,
    page_args,
    path_param,
)
from control.api.errors import ApiError
from control.cdr_consumer import DELIVERY_KIND, CdrConsumer, FailedDelivery
from control.contracts.times import rfc3339
from control.store.errors import NotFound


class CdrDeliveryView(BaseModel):
    call_id: str
    cdr_key: str = Field(description="The CDR blob (cdr/YYYY/MM/DD/...json).")
    attempts: int = Field(description="Pushes tried so far.")
    last_error: str = Field(description='e.g. "HTTP 503" or "ConnectError: ..."')
    first_failed_at: str = Field(description="RFC 3339 UTC.")
    last_failed_at: str = Field(description="RFC 3339 UTC.")


class CdrDeliveryPage(BaseModel):
    items: list[CdrDeliveryView]
    cursor: str | None = None


class CdrRetryReply(BaseModel):
    message: str
    call_id: str


def view(failed: FailedDelivery) -> CdrDeliveryView:
    return CdrDeliveryView(
        call_id=failed.call_id, cdr_key=failed.cdr_key, attempts=failed.attempts,
        last_error=failed.last_error, first_failed_at=rfc3339(failed.first_failed_at),
        last_failed_at=rfc3339(failed.last_failed_at),
    )


async def list_failed(request: Request, ctx: ApiContext) -> Response:
    limit, cursor = page_args(request)
    stores = await ctx.stores()
    try:
        page = await stores.directory.list_entries(DELIVERY_KIND, limit=limit, cursor=cursor)
    except ValueError:
        raise bad_cursor() from None
    items = [view(FailedDelivery.model_validate(entry.data)) for entry in page.items]
    return json_response(CdrDeliveryPage(items=items, cursor=page.cursor))


async def retry(request: Request, ctx: ApiContext) -> Response:
    call_id = path_param(request, "call_id")
    consumer = getattr(request.app.state, "cdr_consumer", None)
    if not isinstance(consumer, CdrConsumer) or consumer.push_url is None:
        raise ApiError(409, "CDR push is not configured (no push URL)")
    try:
        still = await consumer.redeliver(call_id)
    except NotFound:
        raise ApiError(404, f"no failed CDR delivery of call {call_id!r}") from None
    if still is not None:
        raise ApiError(502, f"the CDR endpoint still fails: {still.last_error}")
    return json_response(CdrRetryReply(message="delivered", call_id=call_id))


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(method="GET", path="/cdr-deliveries", handler=list_failed, scope="read",
             summary="CDR pushes that failed every attempt", tag="cdr-deliveries",
             response=CdrDeliveryPage,
             query=(("limit", "page size, 1..1000 (default 100)"),
                    ("cursor", "the cursor of the previous page"))),
    Endpoint(method="POST", path="/cdr-deliveries/{call_id}/retry", handler=retry,
             scope="write", summary="Push a failed CDR again now (200 delivered, 502 still "
             "failing, 404 unknown, 409 no push configured)", tag="cdr-deliveries",
             response=CdrRetryReply),
)
