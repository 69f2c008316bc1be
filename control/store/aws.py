"""AWS plumbing shared by the DynamoDB and S3 stores: one aioboto3 session, clients built once,
the retry and timeout policy, and the translation of SDK errors into the store's domain errors.

Only standard AWS configuration is read: the region from the settings or `AWS_REGION` /
`AWS_DEFAULT_REGION`, the endpoint from the settings or `AWS_ENDPOINT_URL[_<SERVICE>]` (botocore
resolves those itself), credentials from the default chain.
"""

from __future__ import annotations

import asyncio
import os
import threading
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from control.store.errors import Conflict, NotFound, StoreError, StoreUnavailable

# Error codes that mean "the key is not there" (S3 answers HEAD with a bare 404).
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientOptions:
    """How the SDK clients talk to AWS.

    botocore's adaptive mode retries throttling, 5xx and connection errors up to
    `max_retries` times after the first try (its `retries.max_attempts`), with exponential
    backoff and a client-side rate limiter. `deadline_s` bounds one store operation, retries
    included, so an unreachable endpoint becomes a `StoreUnavailable` in bounded time instead
    of a stall.
    """

    region: str | None = None
    endpoint_url: str | None = None
    max_retries: int = 8
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 10.0
    deadline_s: float = 10.0
    max_pool_connections: int = 32


def resolve_region(region: str | None) -> str | None:
    """The explicit region, else `AWS_REGION` (set by Lambda; botocore itself only reads
    `AWS_DEFAULT_REGION`), else None for botocore's own chain (`AWS_DEFAULT_REGION`, profile)."""
    return region or os.environ.get("AWS_REGION") or None


def client_config(options: ClientOptions, **extra: Any) -> Config:
    return Config(
        # In the `retries` dict, botocore's `max_attempts` counts the retries only.
        retries={"mode": "adaptive", "max_attempts": options.max_retries},
        connect_timeout=options.connect_timeout_s,
        read_timeout=options.read_timeout_s,
        max_pool_connections=options.max_pool_connections,
        **extra,
    )


_sessions = threading.local()


def shared_session() -> Any:
    """This thread's aioboto3 session. A fresh session parses botocore's service models again
    (~100-250 ms of CPU); clients made from one session share them (~5 ms each). Sessions are
    not thread-safe, hence one per thread."""
    session = getattr(_sessions, "session", None)
    if session is None:
        session = _sessions.session = aioboto3.Session()
    return session


class AwsClients:
    """The clients opened from one session; `close()` closes them all.

    Clients are made once (at process start or Lambda cold start) and shared by every request:
    building one costs milliseconds of CPU and a connection pool.
    """

    def __init__(self, options: ClientOptions, session: Any = None) -> None:
        self.options = options
        self._session = session if session is not None else shared_session()
        self._stack = AsyncExitStack()

    async def client(self, service: str, **config: Any) -> Any:
        """A client for `service` (`dynamodb`, `s3`), closed with this holder."""
        try:
            maker = self._session.client(
                service,
                region_name=resolve_region(self.options.region),
                endpoint_url=self.options.endpoint_url,
                config=client_config(self.options, **config),
            )
            return await self._stack.enter_async_context(maker)
        except BotoCoreError as exc:  # NoRegionError, unknown endpoint, bad config
            raise StoreUnavailable(f"cannot create the {service} client: {exc}") from exc

    async def close(self) -> None:
        await self._stack.aclose()


def sdk_cause(exc: BaseException) -> Any | None:
    """The botocore ClientError a domain error was translated from, if any."""
    cause = exc.__cause__
    return cause if isinstance(cause, ClientError) else None


def error_code(exc: ClientError) -> str:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code


def cancellation_codes(exc: ClientError) -> list[str]:
    """The per-item reason codes of a TransactionCanceledException, in request order."""
    reasons = exc.response.get("CancellationReasons") or []
    return [str(reason.get("Code", "None")) for reason in reasons]


def translate(exc: BaseException, resource: str) -> StoreError:
    """The domain error for an SDK failure on `resource` (a table or bucket name).

    Called after botocore's own retries gave up, so anything that is not a lost condition or a
    missing key is `StoreUnavailable`.
    """
    if isinstance(exc, ClientError):
        code = error_code(exc)
        message = exc.response.get("Error", {}).get("Message", "")
        if code == "ConditionalCheckFailedException":
            return Conflict(f"{resource}: a conditional write lost")
        if code == "TransactionCanceledException" and (
            "ConditionalCheckFailed" in cancellation_codes(exc)
        ):
            return Conflict(f"{resource}: a conditional write in a transaction lost")
        if code == "ResourceNotFoundException":
            return StoreUnavailable(
                f"DynamoDB table {resource!r} (or one of its indexes) does not exist: "
                "deploy template.yaml or check the table prefix"
            )
        if code == "NoSuchBucket":
            return StoreUnavailable(f"S3 bucket {resource!r} does not exist")
        if code in _NOT_FOUND_CODES:
            return NotFound(f"{resource}: no such key")
        return StoreUnavailable(f"{resource}: {code or 'error'}: {message}".rstrip(": "))
    if isinstance(exc, TimeoutError):
        return StoreUnavailable(f"{resource}: no answer within the operation deadline")
    return StoreUnavailable(f"{resource}: {type(exc).__name__}: {exc}")


# What a call to the SDK may raise besides our own errors: service errors, botocore's
# transport errors, and aiohttp errors that escape while a response body is being read.
SDK_ERRORS: tuple[type[BaseException], ...] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    TimeoutError,
)


async def call(
    client: Any, operation: str, resource: str, deadline_s: float, **params: Any
) -> dict[str, Any]:
    """`client.<operation>(**params)` within `deadline_s`, SDK errors translated."""
    try:
        async with asyncio.timeout(deadline_s):
            response: dict[str, Any] = await getattr(client, operation)(**params)
    except TimeoutError as exc:
        raise StoreUnavailable(
            f"{resource}: {operation} got no answer within {deadline_s:g} s (retries included)"
        ) from exc
    except SDK_ERRORS as exc:
        raise translate(exc, resource) from exc
    return response
