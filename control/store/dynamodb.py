"""The cloud backend: every store on DynamoDB through aioboto3, for many edges and Lambdas.

Tables (defined in `template.yaml`, names `<prefix>-<suffix>`; the tests create them from that
file, so schema and code cannot drift):

- `calls`: pk `call_id`. Sparse GSI `by-edge` (`edge_id`, `active`): `active` (the creation
  time) is present only while the call is not final, so the index holds exactly the active
  calls. Final records get a `ttl` and expire a day after they end.
- `registrations`: pk `aor`, sk `contact`; `ttl` = expires_at + a short grace; GSI
  `by-edge-expiry` (`edge_id`, `expires_at`) for the offline sweep. An empty edge id is not
  written (an index key may not be an empty string), so such bindings stay out of the GSI.
- `directory`: pk/sk = `user`/`<realm>#<username>`, `entry#<kind>`/`<name>`, `apikey`/`<id>`,
  and `meta`/`revision`, the counter bumped in the same `TransactWriteItems` as every write.
- `cdrs`: pk `call_id`; GSI `by-day` (`day` = UTC `YYYY-MM-DD` of the start, `start_time`):
  a range query reads one day partition after the other, newest first.
- `edges`: pk `edge_id`, `ttl` = expires_at + an hour.

Times are DynamoDB numbers written from the float's shortest repr, which reads back as the
same float. Free-form JSON (call legs and data, directory entry data) is kept as a JSON string:
exact round trips (DynamoDB numbers would turn 1.0 into 1 and cap precision) and no per-field
conversion cost. Expiry is always decided at read time: TTL deletion is late (moto: never).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from control.store.aws import AwsClients, ClientOptions, call, cancellation_codes, sdk_cause
from control.store.errors import Conflict, NotFound, StoreUnavailable
from control.store.models import (
    ApiKey,
    Binding,
    CallRecord,
    CdrEntry,
    DirectoryEntry,
    DirectoryKind,
    EdgeInfo,
    Page,
    User,
)
from control.store.ports import (
    BlobStore,
    CallStore,
    CdrQuery,
    CdrStore,
    DirectoryStore,
    EdgeRegistry,
    RegistrationStore,
    Stores,
    StoreSettings,
)

Item = dict[str, Any]  # an item in DynamoDB's attribute-value form

BY_EDGE = "by-edge"
BY_EDGE_EXPIRY = "by-edge-expiry"
BY_DAY = "by-day"

# DynamoDB deletes an expired item hours to days after its `ttl`, DynamoDB Local 1-11 s
# after. The short grace gives the offline sweep (`expired`) a chance to see a binding that
# just expired even there, yet lets DynamoDB Local's deletion show within seconds.
BINDING_TTL_GRACE_S = 5
EDGE_TTL_GRACE_S = 3600
CALL_TTL_AFTER_END_S = 86_400

_TX_ATTEMPTS = 6  # TransactionConflict: another transaction holds the meta item; retry
_BATCH_ATTEMPTS = 8  # BatchWriteItem UnprocessedItems under throttling


@dataclass(frozen=True, slots=True, kw_only=True)
class TableNames:
    calls: str
    registrations: str
    directory: str
    cdrs: str
    edges: str

    @classmethod
    def for_prefix(cls, prefix: str) -> TableNames:
        return cls(
            calls=f"{prefix}-calls",
            registrations=f"{prefix}-registrations",
            directory=f"{prefix}-directory",
            cdrs=f"{prefix}-cdrs",
            edges=f"{prefix}-edges",
        )


# --- attribute values -------------------------------------------------------------------------


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    if isinstance(value, int):
        return {"N": str(value)}
    if not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be stored as a DynamoDB number")
    # repr is the shortest string that reads back as the same float; Decimal normalises the
    # exponent notation ("1e-07" -> "1E-7") to one DynamoDB accepts.
    return {"N": str(Decimal(repr(float(value))))}


def _json(value: Any) -> dict[str, str]:
    return {"S": json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)}


def _strings(values: tuple[str, ...]) -> dict[str, list[dict[str, str]]]:
    return {"L": [{"S": value} for value in values]}


def _get_s(item: Item, name: str, default: str = "") -> str:
    value = item.get(name)
    return default if value is None else str(value["S"])


def _get_f(item: Item, name: str) -> float:
    return float(item[name]["N"])


def _get_opt_f(item: Item, name: str) -> float | None:
    value = item.get(name)
    return None if value is None else float(value["N"])


def _get_i(item: Item, name: str) -> int:
    return int(item[name]["N"])


def _get_strings(item: Item, name: str) -> tuple[str, ...]:
    value = item.get(name)
    return () if value is None else tuple(str(v["S"]) for v in value["L"])


def _ttl(at: float, grace_s: int) -> dict[str, str]:
    # TTL attributes are whole epoch seconds.
    return {"N": str(math.ceil(at) + grace_s)}


def day_of(at: float) -> str:
    """The UTC day of a Unix time, `YYYY-MM-DD`: the CDR index's partition."""
    return time.strftime("%Y-%m-%d", time.gmtime(at))


# --- cursors ----------------------------------------------------------------------------------


def encode_cursor(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> Any:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise ValueError(f"bad page cursor {cursor!r}") from None


def _is_key(value: Any) -> bool:
    """A LastEvaluatedKey-shaped map: attribute name -> {"S"|"N": str}."""
    return isinstance(value, dict) and bool(value) and all(
        isinstance(name, str)
        and isinstance(av, dict)
        and len(av) == 1
        and next(iter(av)) in ("S", "N")
        and isinstance(next(iter(av.values())), str)
        for name, av in value.items()
    )


def _start_key(cursor: str | None) -> Item | None:
    if cursor is None:
        return None
    key = decode_cursor(cursor)
    if not _is_key(key):
        raise ValueError(f"bad page cursor {cursor!r}")
    return dict(key)


def _key_of(item: Item, names: tuple[str, ...]) -> Item:
    return {name: item[name] for name in names}


def _limit(limit: int) -> int:
    return max(1, int(limit))


# --- one table --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    """A table name with the client and deadline every request on it uses."""

    client: Any
    name: str
    deadline_s: float

    async def request(self, operation: str, **params: Any) -> dict[str, Any]:
        return await call(
            self.client, operation, self.name, self.deadline_s, TableName=self.name, **params
        )

    async def transact(self, items: list[dict[str, Any]]) -> None:
        """TransactWriteItems, retried when it lost to a concurrent transaction on the same
        items (TransactionConflict: nothing was written). botocore supplies one
        ClientRequestToken per call, so its own retries after a lost answer are idempotent."""
        for attempt in range(_TX_ATTEMPTS):
            try:
                await call(self.client, "transact_write_items", self.name, self.deadline_s,
                           TransactItems=items)
                return
            except StoreUnavailable as exc:
                codes = _cancellation_codes(exc)
                if "TransactionConflict" not in codes or attempt == _TX_ATTEMPTS - 1:
                    raise
            await asyncio.sleep(random.uniform(0.01, 0.05) * 2**attempt)

    async def pages(self, operation: str, **params: Any) -> list[Item]:
        """Every item of a Query or Scan, following LastEvaluatedKey."""
        items: list[Item] = []
        while True:
            response = await self.request(operation, **params)
            items.extend(response.get("Items", ()))
            last = response.get("LastEvaluatedKey")
            if not last:
                return items
            params["ExclusiveStartKey"] = last

    async def collect(
        self, operation: str, params: dict[str, Any], want: int, *,
        start: Item | None = None, filtered: bool = False,
    ) -> list[Item]:
        """Up to `want` items of a Query or Scan from `start` on. DynamoDB applies `Limit`
        before a FilterExpression, so a filtered read may take several requests: those ask for
        a bigger batch than they need."""
        found: list[Item] = []
        while len(found) < want:
            need = want - len(found)
            request = dict(params, Limit=max(need, 100) if filtered else need)
            if start is not None:
                request["ExclusiveStartKey"] = start
            response = await self.request(operation, **request)
            found.extend(response.get("Items", ()))
            start = response.get("LastEvaluatedKey")
            if not start:
                break
        return found[:want]

    async def page(
        self,
        operation: str,
        params: dict[str, Any],
        *,
        limit: int,
        cursor: str | None,
        key_names: tuple[str, ...],
        filtered: bool = False,
    ) -> tuple[list[Item], str | None]:
        """One page of a Query or Scan: `limit` items and a cursor when more exist.

        Reads `limit + 1` items and makes the cursor from the key of the last item returned
        (the table's key plus the index's), so a cursor always leads to at least one more item
        and the last page has none.
        """
        want = _limit(limit) + 1
        found = await self.collect(
            operation, params, want, start=_start_key(cursor), filtered=filtered
        )
        if len(found) < want:
            return found, None
        page = found[:-1]
        return page, encode_cursor(_key_of(page[-1], key_names))


def _cancellation_codes(exc: BaseException) -> list[str]:
    cause = sdk_cause(exc)
    return [] if cause is None else cancellation_codes(cause)


def _old_item_present(exc: BaseException, position: int | None = None) -> bool:
    """After a lost condition with ReturnValuesOnConditionCheckFailure=ALL_OLD: did the item
    exist? DynamoDB returns the item as it was, nothing when there was none; in a transaction,
    in the cancellation reason at the item's `position`."""
    cause = sdk_cause(exc)
    if cause is None:
        return True
    if position is None:
        return bool(cause.response.get("Item"))
    reasons = cause.response.get("CancellationReasons") or []
    return position < len(reasons) and bool(reasons[position].get("Item"))


# --- calls ------------------------------------------------------------------------------------

_CALL_INDEX_KEY = ("call_id", "edge_id", "active")


def call_item(record: CallRecord) -> Item:
    if not record.edge_id:
        # The by-edge index cannot hold an empty string, and every call has an owning edge.
        raise ValueError(f"call {record.call_id!r} has no edge_id")
    item: Item = {
        "call_id": _s(record.call_id),
        "edge_id": _s(record.edge_id),
        "state": _s(record.state),
        "direction": _s(record.direction),
        "caller": _s(record.caller),
        "callee": _s(record.callee),
        "created_at": _n(record.created_at),
        "updated_at": _n(record.updated_at),
        "legs": _json([dict(leg) for leg in record.legs]),
        "data": _json(dict(record.data)),
        "version": _n(record.version),
    }
    if record.answered_at is not None:
        item["answered_at"] = _n(record.answered_at)
    if record.ended_at is not None:
        item["ended_at"] = _n(record.ended_at)
    if record.active:
        item["active"] = _n(record.created_at)  # sparse: only active calls are in by-edge
    else:
        ended = record.ended_at if record.ended_at is not None else record.updated_at
        item["ttl"] = _ttl(ended, CALL_TTL_AFTER_END_S)
    return item


def call_record(item: Item) -> CallRecord:
    legs = json.loads(_get_s(item, "legs", "[]"))
    return CallRecord(
        call_id=_get_s(item, "call_id"),
        edge_id=_get_s(item, "edge_id"),
        state=_get_s(item, "state"),  # type: ignore[arg-type]  # written from a CallState
        direction=_get_s(item, "direction"),
        caller=_get_s(item, "caller"),
        callee=_get_s(item, "callee"),
        created_at=_get_f(item, "created_at"),
        updated_at=_get_f(item, "updated_at"),
        answered_at=_get_opt_f(item, "answered_at"),
        ended_at=_get_opt_f(item, "ended_at"),
        legs=tuple(legs),
        data=json.loads(_get_s(item, "data", "{}")),
        version=_get_i(item, "version"),
    )


class DynamoCallStore:
    def __init__(self, table: _Table) -> None:
        self._t = table

    async def create(self, record: CallRecord) -> CallRecord:
        stored = replace(record, version=1)
        try:
            await self._t.request(
                "put_item",
                Item=call_item(stored),
                ConditionExpression="attribute_not_exists(call_id)",
            )
        except Conflict:
            raise Conflict(f"call {record.call_id!r} exists") from None
        return stored

    async def get(self, call_id: str) -> CallRecord:
        response = await self._t.request(
            "get_item", Key={"call_id": _s(call_id)}, ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"no call {call_id!r}")
        return call_record(item)

    async def update(self, record: CallRecord, expected_version: int) -> CallRecord:
        stored = replace(record, version=expected_version + 1)
        try:
            await self._t.request(
                "put_item",
                Item=call_item(stored),
                ConditionExpression="#version = :expected",
                ExpressionAttributeNames={"#version": "version"},
                ExpressionAttributeValues={":expected": _n(expected_version)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except Conflict as exc:
            if not _old_item_present(exc):
                raise NotFound(f"no call {record.call_id!r}") from None
            raise Conflict(
                f"call {record.call_id!r} is no longer at version {expected_version}"
            ) from None
        return stored

    async def delete(self, call_id: str) -> None:
        try:
            await self._t.request(
                "delete_item",
                Key={"call_id": _s(call_id)},
                ConditionExpression="attribute_exists(call_id)",
            )
        except Conflict:
            raise NotFound(f"no call {call_id!r}") from None

    async def list_active(
        self, *, edge_id: str | None = None, limit: int = 100, cursor: str | None = None
    ) -> Page[CallRecord]:
        # The sparse by-edge index holds only active calls: a Query for one edge, a Scan of
        # the index (not of the table, which also holds finished calls) for all of them.
        params: dict[str, Any] = {"IndexName": BY_EDGE}
        if edge_id is None:
            operation = "scan"
        else:
            operation = "query"
            params |= {
                "KeyConditionExpression": "edge_id = :edge",
                "ExpressionAttributeValues": {":edge": _s(edge_id)},
            }
        items, next_cursor = await self._t.page(
            operation, params, limit=limit, cursor=cursor, key_names=_CALL_INDEX_KEY
        )
        return Page(items=[call_record(item) for item in items], cursor=next_cursor)


# --- registrations ----------------------------------------------------------------------------


def binding_item(binding: Binding, grace_s: int) -> Item:
    item: Item = {
        "aor": _s(binding.aor),
        "contact": _s(binding.contact),
        "expires_at": _n(binding.expires_at),
        "ttl": _ttl(binding.expires_at, grace_s),
        "q": _n(binding.q),
        "call_id": _s(binding.call_id),
        "cseq": _n(binding.cseq),
        "source": _s(binding.source),
        "transport": _s(binding.transport),
        "user_agent": _s(binding.user_agent),
        "path": _strings(binding.path),
        "instance_id": _s(binding.instance_id),
        "registered_at": _n(binding.registered_at),
    }
    if binding.edge_id:  # a GSI key: absent rather than empty
        item["edge_id"] = _s(binding.edge_id)
    if binding.reg_id is not None:
        item["reg_id"] = _n(binding.reg_id)
    return item


def binding_of(item: Item) -> Binding:
    reg_id = item.get("reg_id")
    return Binding(
        aor=_get_s(item, "aor"),
        contact=_get_s(item, "contact"),
        expires_at=_get_f(item, "expires_at"),
        q=_get_f(item, "q"),
        call_id=_get_s(item, "call_id"),
        cseq=_get_i(item, "cseq"),
        source=_get_s(item, "source"),
        transport=_get_s(item, "transport", "UDP"),
        user_agent=_get_s(item, "user_agent"),
        edge_id=_get_s(item, "edge_id"),
        path=_get_strings(item, "path"),
        instance_id=_get_s(item, "instance_id"),
        reg_id=None if reg_id is None else int(reg_id["N"]),
        registered_at=_get_f(item, "registered_at"),
    )


class DynamoRegistrationStore:
    def __init__(self, table: _Table, ttl_grace_s: int = BINDING_TTL_GRACE_S) -> None:
        self._t = table
        self._grace_s = ttl_grace_s

    async def bindings(self, aor: str, now: float) -> list[Binding]:
        items = await self._t.pages(
            "query",
            KeyConditionExpression="aor = :aor",
            FilterExpression="expires_at > :now",  # TTL deletion is late: decide here
            ExpressionAttributeValues={":aor": _s(aor), ":now": _n(now)},
            ConsistentRead=True,
        )
        found = [binding_of(item) for item in items]
        found.sort(key=lambda b: (-b.q, -b.registered_at))
        return found

    async def put(self, binding: Binding) -> None:
        await self._t.request("put_item", Item=binding_item(binding, self._grace_s))

    async def remove(self, aor: str, contact: str) -> None:
        await self._t.request("delete_item", Key={"aor": _s(aor), "contact": _s(contact)})

    async def remove_all(self, aor: str) -> None:
        keys = await self._t.pages(
            "query",
            KeyConditionExpression="aor = :aor",
            ExpressionAttributeValues={":aor": _s(aor)},
            ProjectionExpression="aor, contact",
            ConsistentRead=True,
        )
        for start in range(0, len(keys), 25):  # BatchWriteItem takes 25 requests at most
            await self._batch_delete(keys[start : start + 25])

    async def _batch_delete(self, keys: list[Item]) -> None:
        pending: dict[str, Any] = {
            self._t.name: [{"DeleteRequest": {"Key": key}} for key in keys]
        }
        for attempt in range(_BATCH_ATTEMPTS):
            response = await call(self._t.client, "batch_write_item", self._t.name,
                                  self._t.deadline_s, RequestItems=pending)
            pending = response.get("UnprocessedItems") or {}
            if not pending:
                return
            await asyncio.sleep(random.uniform(0.02, 0.1) * 2**attempt)
        raise StoreUnavailable(f"{self._t.name}: deletes still unprocessed after retries")

    async def expired(self, edge_id: str, now: float, limit: int = 500) -> list[Binding]:
        want = _limit(limit)
        if edge_id:
            operation = "query"
            params: dict[str, Any] = {
                "IndexName": BY_EDGE_EXPIRY,
                "KeyConditionExpression": "edge_id = :edge AND expires_at <= :now",
                "ExpressionAttributeValues": {":edge": _s(edge_id), ":now": _n(now)},
            }
        else:  # bindings of no edge are not in the index
            operation = "scan"
            params = {
                "FilterExpression": "attribute_not_exists(edge_id) AND expires_at <= :now",
                "ExpressionAttributeValues": {":now": _n(now)},
                "ConsistentRead": True,
            }
        items = await self._t.collect(operation, params, want, filtered=operation == "scan")
        return [binding_of(item) for item in items]

    async def count(self, now: float) -> int:
        total = 0
        params: dict[str, Any] = {
            "Select": "COUNT",
            "FilterExpression": "expires_at > :now",
            "ExpressionAttributeValues": {":now": _n(now)},
            "ConsistentRead": True,
        }
        while True:
            response = await self._t.request("scan", **params)
            total += int(response.get("Count", 0))
            last = response.get("LastEvaluatedKey")
            if not last:
                return total
            params["ExclusiveStartKey"] = last


# --- directory --------------------------------------------------------------------------------

_USERS_PK = "user"
_API_KEYS_PK = "apikey"
_DIRECTORY_KEY = ("pk", "sk")
_META_KEY: Item = {"pk": _s("meta"), "sk": _s("revision")}


def _entry_pk(kind: str) -> str:
    return f"entry#{kind}"


def _user_sk(username: str, realm: str) -> str:
    # `%` and `#` escaped in the realm so that no two (realm, username) pairs share a key.
    return f"{realm.replace('%', '%25').replace('#', '%23')}#{username}"


def user_item(user: User) -> Item:
    return {
        "pk": _s(_USERS_PK),
        "sk": _s(_user_sk(user.username, user.realm)),
        "username": _s(user.username),
        "realm": _s(user.realm),
        "ha1_md5": _s(user.ha1_md5),
        "ha1_sha256": _s(user.ha1_sha256),
        "enabled": {"BOOL": user.enabled},
        "display_name": _s(user.display_name),
        "allow_guest_calls": {"BOOL": user.allow_guest_calls},
        "version": _n(user.version),
    }


def user_of(item: Item) -> User:
    return User(
        username=_get_s(item, "username"),
        realm=_get_s(item, "realm"),
        ha1_md5=_get_s(item, "ha1_md5"),
        ha1_sha256=_get_s(item, "ha1_sha256"),
        enabled=bool(item["enabled"]["BOOL"]),
        display_name=_get_s(item, "display_name"),
        allow_guest_calls=bool(item["allow_guest_calls"]["BOOL"]),
        version=_get_i(item, "version"),
    )


def entry_item(entry: DirectoryEntry) -> Item:
    return {
        "pk": _s(_entry_pk(entry.kind)),
        "sk": _s(entry.name),
        "kind": _s(entry.kind),
        "name": _s(entry.name),
        "data": _json(dict(entry.data)),
        "version": _n(entry.version),
    }


def entry_of(item: Item) -> DirectoryEntry:
    return DirectoryEntry(
        kind=_get_s(item, "kind"),  # type: ignore[arg-type]  # written from a DirectoryKind
        name=_get_s(item, "name"),
        data=json.loads(_get_s(item, "data", "{}")),
        version=_get_i(item, "version"),
    )


def api_key_item(key: ApiKey) -> Item:
    return {
        "pk": _s(_API_KEYS_PK),
        "sk": _s(key.key_id),
        "key_id": _s(key.key_id),
        "secret_sha256": _s(key.secret_sha256),
        "scopes": _strings(key.scopes),
        "name": _s(key.name),
        "created_at": _n(key.created_at),
    }


def api_key_of(item: Item) -> ApiKey:
    return ApiKey(
        key_id=_get_s(item, "key_id"),
        secret_sha256=_get_s(item, "secret_sha256"),
        scopes=_get_strings(item, "scopes"),
        name=_get_s(item, "name"),
        created_at=_get_f(item, "created_at"),
    )


class DynamoDirectoryStore:
    """Users, entries and API keys in one table; each write and the `meta` revision counter
    change together in one transaction, so the counter moves exactly when the directory
    does (a lost condition cancels both)."""

    def __init__(self, table: _Table) -> None:
        self._t = table

    # writes

    def _bump(self) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._t.name,
                "Key": _META_KEY,
                "UpdateExpression": "ADD #revision :one",
                "ExpressionAttributeNames": {"#revision": "revision"},
                "ExpressionAttributeValues": {":one": _n(1)},
            }
        }

    async def _put_versioned(self, item: Item, expected_version: int | None, what: str) -> None:
        put: dict[str, Any] = {"TableName": self._t.name, "Item": item}
        if expected_version is None:
            put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            put["ConditionExpression"] = "#version = :expected"
            put["ExpressionAttributeNames"] = {"#version": "version"}
            put["ExpressionAttributeValues"] = {":expected": _n(expected_version)}
            put["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        try:
            await self._t.transact([{"Put": put}, self._bump()])
        except Conflict as exc:
            if expected_version is None:
                raise Conflict(f"{what} exists") from None
            if not _old_item_present(exc, position=0):
                raise NotFound(f"no {what}") from None
            raise Conflict(f"{what} is not at version {expected_version}") from None

    async def _delete(self, key: Item, what: str) -> None:
        delete = {
            "TableName": self._t.name,
            "Key": key,
            "ConditionExpression": "attribute_exists(pk)",
        }
        try:
            await self._t.transact([{"Delete": delete}, self._bump()])
        except Conflict:
            raise NotFound(f"no {what}") from None

    async def _get(self, key: Item, what: str) -> Item:
        response = await self._t.request("get_item", Key=key, ConsistentRead=True)
        item = response.get("Item")
        if item is None:
            raise NotFound(f"no {what}")
        return dict(item)

    async def _page(
        self, pk: str, limit: int, cursor: str | None
    ) -> tuple[list[Item], str | None]:
        params = {
            "KeyConditionExpression": "pk = :pk",
            "ExpressionAttributeValues": {":pk": _s(pk)},
            "ConsistentRead": True,
        }
        return await self._t.page(
            "query", params, limit=limit, cursor=cursor, key_names=_DIRECTORY_KEY
        )

    # users

    async def get_user(self, username: str, realm: str) -> User:
        key = {"pk": _s(_USERS_PK), "sk": _s(_user_sk(username, realm))}
        return user_of(await self._get(key, f"user {username!r} in {realm!r}"))

    async def put_user(self, user: User, expected_version: int | None = None) -> User:
        version = 1 if expected_version is None else expected_version + 1
        stored = replace(user, version=version)
        what = f"user {user.username!r} in {user.realm!r}"
        await self._put_versioned(user_item(stored), expected_version, what)
        return stored

    async def delete_user(self, username: str, realm: str) -> None:
        key = {"pk": _s(_USERS_PK), "sk": _s(_user_sk(username, realm))}
        await self._delete(key, f"user {username!r} in {realm!r}")

    async def list_users(self, *, limit: int = 100, cursor: str | None = None) -> Page[User]:
        items, next_cursor = await self._page(_USERS_PK, limit, cursor)
        return Page(items=[user_of(item) for item in items], cursor=next_cursor)

    # trunks, routes, applications

    async def get_entry(self, kind: DirectoryKind, name: str) -> DirectoryEntry:
        key = {"pk": _s(_entry_pk(kind)), "sk": _s(name)}
        return entry_of(await self._get(key, f"{kind} {name!r}"))

    async def put_entry(
        self, entry: DirectoryEntry, expected_version: int | None = None
    ) -> DirectoryEntry:
        version = 1 if expected_version is None else expected_version + 1
        stored = replace(entry, version=version)
        await self._put_versioned(
            entry_item(stored), expected_version, f"{entry.kind} {entry.name!r}"
        )
        return stored

    async def delete_entry(self, kind: DirectoryKind, name: str) -> None:
        await self._delete({"pk": _s(_entry_pk(kind)), "sk": _s(name)}, f"{kind} {name!r}")

    async def list_entries(
        self, kind: DirectoryKind, *, limit: int = 100, cursor: str | None = None
    ) -> Page[DirectoryEntry]:
        items, next_cursor = await self._page(_entry_pk(kind), limit, cursor)
        return Page(items=[entry_of(item) for item in items], cursor=next_cursor)

    # API keys

    async def get_api_key(self, key_id: str) -> ApiKey:
        key = {"pk": _s(_API_KEYS_PK), "sk": _s(key_id)}
        return api_key_of(await self._get(key, f"API key {key_id!r}"))

    async def put_api_key(self, key: ApiKey) -> None:
        """Store (or replace) an API key."""
        put = {"TableName": self._t.name, "Item": api_key_item(key)}
        await self._t.transact([{"Put": put}, self._bump()])

    async def delete_api_key(self, key_id: str) -> None:
        await self._delete({"pk": _s(_API_KEYS_PK), "sk": _s(key_id)}, f"API key {key_id!r}")

    async def list_api_keys(self) -> list[ApiKey]:
        items = await self._t.pages(
            "query",
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": _s(_API_KEYS_PK)},
            ConsistentRead=True,
        )
        return [api_key_of(item) for item in items]

    async def revision(self) -> int:
        """One strongly consistent GetItem of the `meta` item (0 before the first write)."""
        response = await self._t.request("get_item", Key=_META_KEY, ConsistentRead=True)
        item = response.get("Item")
        return 0 if item is None or "revision" not in item else _get_i(item, "revision")


# --- CDR index --------------------------------------------------------------------------------

_CDR_INDEX_KEY = ("call_id", "day", "start_time")
_CDR_FILTERS = ("caller", "callee", "status", "direction")


def cdr_item(entry: CdrEntry) -> Item:
    return {
        "call_id": _s(entry.call_id),
        "day": _s(day_of(entry.start_time)),
        "start_time": _n(entry.start_time),
        "end_time": _n(entry.end_time),
        "caller": _s(entry.caller),
        "callee": _s(entry.callee),
        "direction": _s(entry.direction),
        "status": _s(entry.status),
        "duration": _n(entry.duration),
        "cdr_key": _s(entry.cdr_key),
        "recording_key": _s(entry.recording_key),
        "edge_id": _s(entry.edge_id),
    }


def cdr_of(item: Item) -> CdrEntry:
    return CdrEntry(
        call_id=_get_s(item, "call_id"),
        start_time=_get_f(item, "start_time"),
        end_time=_get_f(item, "end_time"),
        caller=_get_s(item, "caller"),
        callee=_get_s(item, "callee"),
        direction=_get_s(item, "direction"),
        status=_get_s(item, "status"),
        duration=_get_f(item, "duration"),
        cdr_key=_get_s(item, "cdr_key"),
        recording_key=_get_s(item, "recording_key"),
        edge_id=_get_s(item, "edge_id"),
    )


def _previous_day(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def _cdr_cursor(cursor: str) -> tuple[str, Item]:
    value = decode_cursor(cursor)
    ok = isinstance(value, dict) and isinstance(value.get("d"), str) and _is_key(value.get("k"))
    if ok:
        try:
            date.fromisoformat(value["d"])
        except ValueError:
            ok = False
    if not ok:
        raise ValueError(f"bad page cursor {cursor!r}")
    return str(value["d"]), dict(value["k"])


class DynamoCdrStore:
    def __init__(self, table: _Table) -> None:
        self._t = table

    async def put(self, entry: CdrEntry) -> None:
        """Index a CDR; putting the same call again replaces it (the consumer may retry)."""
        await self._t.request("put_item", Item=cdr_item(entry))

    async def get(self, call_id: str) -> CdrEntry:
        response = await self._t.request(
            "get_item", Key={"call_id": _s(call_id)}, ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"no CDR for call {call_id!r}")
        return cdr_of(item)

    async def query(self, query: CdrQuery) -> Page[CdrEntry]:
        """Query the by-day index one UTC day at a time, newest day first and newest first
        within a day, until a page is full; never a Scan."""
        limit = _limit(query.limit)
        if query.end <= query.start:
            return Page(items=[])
        first_day = day_of(query.start)
        last_day = day_of(math.nextafter(query.end, -math.inf))  # end is exclusive
        day, start = last_day, None
        if query.cursor is not None:
            cursor_day, start = _cdr_cursor(query.cursor)
            if cursor_day < last_day:
                day = cursor_day
            elif cursor_day > last_day:
                start = None

        names = {"#day": "day", "#start": "start_time"}
        values: dict[str, Any] = {}
        filters = []
        for n, field in enumerate(_CDR_FILTERS):
            wanted = getattr(query, field)
            if wanted is not None:
                names[f"#f{n}"] = field
                values[f":f{n}"] = _s(wanted)
                filters.append(f"#f{n} = :f{n}")

        want = limit + 1
        found: list[Item] = []
        while day >= first_day and len(found) < want:
            condition = "#day = :day"
            bounds: dict[str, Any] = {":day": _s(day)}
            low = day == first_day
            high = day == last_day
            if low and high:
                condition += " AND #start BETWEEN :low AND :high"
                bounds[":low"] = _n(query.start)
                bounds[":high"] = _n(math.nextafter(query.end, -math.inf))
            elif low:
                condition += " AND #start >= :low"
                bounds[":low"] = _n(query.start)
            elif high:
                condition += " AND #start < :high"
                bounds[":high"] = _n(query.end)
            used_names = {k: v for k, v in names.items() if k != "#start" or low or high}
            params: dict[str, Any] = {
                "IndexName": BY_DAY,
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": used_names,
                "ExpressionAttributeValues": {**values, **bounds},
                "ScanIndexForward": False,
            }
            if filters:
                params["FilterExpression"] = " AND ".join(filters)
            found.extend(await self._t.collect(
                "query", params, want - len(found), start=start, filtered=bool(filters)
            ))
            day, start = _previous_day(day), None

        if len(found) < want:
            return Page(items=[cdr_of(item) for item in found])
        page = found[:limit]
        last = page[-1]
        cursor = encode_cursor({"d": _get_s(last, "day"), "k": _key_of(last, _CDR_INDEX_KEY)})
        return Page(items=[cdr_of(item) for item in page], cursor=cursor)


# --- edges ------------------------------------------------------------------------------------


def edge_item(edge: EdgeInfo, grace_s: int) -> Item:
    return {
        "edge_id": _s(edge.edge_id),
        "sip_addresses": _strings(edge.sip_addresses),
        "http_address": _s(edge.http_address),
        "load": _n(edge.load),
        "started_at": _n(edge.started_at),
        "heartbeat_at": _n(edge.heartbeat_at),
        "expires_at": _n(edge.expires_at),
        "ttl": _ttl(edge.expires_at, grace_s),
    }


def edge_of(item: Item) -> EdgeInfo:
    return EdgeInfo(
        edge_id=_get_s(item, "edge_id"),
        sip_addresses=_get_strings(item, "sip_addresses"),
        http_address=_get_s(item, "http_address"),
        load=_get_i(item, "load"),
        started_at=_get_f(item, "started_at"),
        heartbeat_at=_get_f(item, "heartbeat_at"),
        expires_at=_get_f(item, "expires_at"),
    )


class DynamoEdgeRegistry:
    def __init__(self, table: _Table, ttl_grace_s: int = EDGE_TTL_GRACE_S) -> None:
        self._t = table
        self._grace_s = ttl_grace_s

    async def heartbeat(self, edge: EdgeInfo) -> None:
        await self._t.request("put_item", Item=edge_item(edge, self._grace_s))

    async def get(self, edge_id: str) -> EdgeInfo:
        response = await self._t.request(
            "get_item", Key={"edge_id": _s(edge_id)}, ConsistentRead=True
        )
        item = response.get("Item")
        if item is None:
            raise NotFound(f"no edge {edge_id!r}")
        return edge_of(item)

    async def alive(self, now: float) -> list[EdgeInfo]:
        # A handful of items: a Scan is the cheapest read there is.
        items = await self._t.pages(
            "scan",
            FilterExpression="expires_at > :now",
            ExpressionAttributeValues={":now": _n(now)},
            ConsistentRead=True,
        )
        return sorted((edge_of(item) for item in items), key=lambda edge: edge.edge_id)

    async def remove(self, edge_id: str) -> None:
        """Forget an edge; removing one that is gone is not an error."""
        await self._t.request("delete_item", Key={"edge_id": _s(edge_id)})


# --- the bundle -------------------------------------------------------------------------------


class DynamoStores:
    """Every store on DynamoDB through one client, plus the blob store it was given (closed
    with it)."""

    def __init__(
        self,
        clients: AwsClients,
        client: Any,
        tables: TableNames,
        blobs: BlobStore,
        *,
        binding_ttl_grace_s: int = BINDING_TTL_GRACE_S,
        edge_ttl_grace_s: int = EDGE_TTL_GRACE_S,
    ) -> None:
        self.tables = tables
        self._clients = clients
        deadline_s = clients.options.deadline_s

        def table(name: str) -> _Table:
            return _Table(client, name, deadline_s)

        self.calls: CallStore = DynamoCallStore(table(tables.calls))
        self.registrations: RegistrationStore = DynamoRegistrationStore(
            table(tables.registrations), binding_ttl_grace_s
        )
        self.directory: DirectoryStore = DynamoDirectoryStore(table(tables.directory))
        self.cdrs: CdrStore = DynamoCdrStore(table(tables.cdrs))
        self.edges: EdgeRegistry = DynamoEdgeRegistry(table(tables.edges), edge_ttl_grace_s)
        self.blobs: BlobStore = blobs

    @classmethod
    async def open(
        cls,
        settings: StoreSettings,
        *,
        blobs: BlobStore,
        options: ClientOptions | None = None,
        session: Any = None,
        binding_ttl_grace_s: int = BINDING_TTL_GRACE_S,
        edge_ttl_grace_s: int = EDGE_TTL_GRACE_S,
    ) -> DynamoStores:
        """Build the one DynamoDB client (no request is made: a Lambda cold start stays
        cheap, and a missing table is reported by the first request that needs it)."""
        base = options or ClientOptions()
        options = replace(
            base,
            region=settings.region or base.region,
            endpoint_url=settings.endpoint_url or base.endpoint_url,
        )
        clients = AwsClients(options, session)
        try:
            client = await clients.client("dynamodb")
        except BaseException:
            await clients.close()
            raise
        return cls(
            clients, client, TableNames.for_prefix(settings.table_prefix), blobs,
            binding_ttl_grace_s=binding_ttl_grace_s, edge_ttl_grace_s=edge_ttl_grace_s,
        )

    async def close(self) -> None:
        try:
            await self._clients.close()
        finally:
            await close_blobs(self.blobs)


async def close_blobs(blobs: BlobStore) -> None:
    """Close a blob store that holds resources (S3's client); the local one has none."""
    close: Callable[[], object] | None = getattr(blobs, "close", None)
    if close is not None:
        result = close()
        if inspect.isawaitable(result):
            await result


def _conforms(stores: DynamoStores) -> Stores:  # mypy proves the bundle matches the port
    return stores


