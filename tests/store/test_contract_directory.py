"""Contract of `DirectoryStore`, run on every backend: users (HA1 only), trunks, routes and
applications with optimistic locking and pagination, hashed API keys, and the revision counter
that the edge's directory cache polls."""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from control.store.errors import Conflict, NotFound
from control.store.models import ApiKey, DirectoryEntry, DirectoryKind, User
from control.store.ports import Stores
from tests.store.conftest import JSON_OBJECTS, Backend, all_pages, assert_same_json, run_all

pytestmark = pytest.mark.anyio

REALM = "pbx.example.com"
KINDS: tuple[DirectoryKind, ...] = ("trunk", "route", "application")


def user(username: str, realm: str = REALM, password: str = "secret", **fields: Any) -> User:
    """A user as the control plane builds it: the HA1s of RFC 7616 §3.4.2, no password."""
    a1 = f"{username}:{realm}:{password}".encode()
    return User(username=username, realm=realm, ha1_md5=hashlib.md5(a1).hexdigest(),
                ha1_sha256=hashlib.sha256(a1).hexdigest(), **fields)


def entry(kind: DirectoryKind, name: str, /, **data: Any) -> DirectoryEntry:
    return DirectoryEntry(kind=kind, name=name, data=data or {"name": name})


def api_key(key_id: str, secret: str = "s3cr3t", **fields: Any) -> ApiKey:
    return ApiKey(key_id=key_id, secret_sha256=hashlib.sha256(secret.encode()).hexdigest(),
                  scopes=("calls:write", "cdr:read"), **fields)


# Users

async def test_put_user_creates_version_1_and_get_round_trips(stores: Stores) -> None:
    alice = user("1001", display_name="Zoë Ålice ☎", allow_guest_calls=True, enabled=False)
    created = await stores.directory.put_user(alice)
    assert created == replace(alice, version=1)
    got = await stores.directory.get_user("1001", REALM)
    assert got == created
    a1 = f"1001:{REALM}:secret".encode()
    assert got.ha1("MD5") == hashlib.md5(a1).hexdigest()
    assert got.ha1("SHA-256-sess") == hashlib.sha256(a1).hexdigest()


async def test_no_password_is_kept_anywhere(backend: Backend, stores: Stores) -> None:
    assert not [f.name for f in dataclasses.fields(User) if "pass" in f.name.lower()]
    await stores.directory.put_user(user("1001", password="hunter2"))
    names = await backend.stored_field_names()
    assert names, "the backend stored nothing?"
    assert not [n for n in names if "pass" in n.lower()], names


async def test_users_are_keyed_by_username_and_realm(stores: Stores) -> None:
    here = await stores.directory.put_user(user("1001", REALM, password="a"))
    there = await stores.directory.put_user(user("1001", "other.example.com", password="b"))
    assert await stores.directory.get_user("1001", REALM) == here
    assert await stores.directory.get_user("1001", "other.example.com") == there
    assert here.ha1_md5 != there.ha1_md5
    with pytest.raises(NotFound):
        await stores.directory.get_user("1001", "third.example.com")
    with pytest.raises(NotFound):
        await stores.directory.get_user("100", REALM)


async def test_creating_an_existing_user_is_a_conflict(stores: Stores) -> None:
    await stores.directory.put_user(user("1001", password="first"))
    with pytest.raises(Conflict):
        await stores.directory.put_user(user("1001", password="second"))
    assert (await stores.directory.get_user("1001", REALM)).version == 1
    assert (await stores.directory.get_user("1001", REALM)) == replace(
        user("1001", password="first"), version=1)


async def test_update_user_with_its_version(stores: Stores) -> None:
    created = await stores.directory.put_user(user("1001"))
    changed = replace(user("1001", password="new"), display_name="Alice", enabled=False)
    updated = await stores.directory.put_user(changed, expected_version=1)
    assert updated == replace(changed, version=2)
    assert await stores.directory.get_user("1001", REALM) == updated
    with pytest.raises(Conflict):
        await stores.directory.put_user(created, expected_version=1)  # stale
    with pytest.raises(Conflict):
        await stores.directory.put_user(created, expected_version=5)
    assert await stores.directory.get_user("1001", REALM) == updated


async def test_update_of_a_missing_user_is_not_found(stores: Stores) -> None:
    """As `CallStore.update`: the caller learns the user is gone, not that it moved on."""
    with pytest.raises(NotFound):
        await stores.directory.put_user(user("ghost"), expected_version=1)
    with pytest.raises(NotFound):
        await stores.directory.get_user("ghost", REALM)


async def test_delete_user(stores: Stores) -> None:
    await stores.directory.put_user(user("1001"))
    await stores.directory.put_user(user("1002"))
    await stores.directory.delete_user("1001", REALM)
    with pytest.raises(NotFound):
        await stores.directory.get_user("1001", REALM)
    assert (await stores.directory.get_user("1002", REALM)).username == "1002"
    with pytest.raises(NotFound):
        await stores.directory.delete_user("1001", REALM)
    assert (await stores.directory.put_user(user("1001"))).version == 1


async def test_list_users_paginates(stores: Stores) -> None:
    users = [user(f"{2000 + n}", REALM if n % 2 else "b.example.com") for n in range(25)]
    await run_all(stores.directory.put_user(u) for u in users)
    assert (await stores.directory.list_users()).cursor is None
    pages = await all_pages(
        lambda cursor: stores.directory.list_users(limit=10, cursor=cursor), limit=10)
    got = [u for page in pages for u in page]
    assert len(got) == 25
    assert {(u.username, u.realm): u for u in got} == {
        (u.username, u.realm): replace(u, version=1) for u in users}
    assert [len(p) for p in pages[:2]] == [10, 10]


async def test_list_users_of_an_empty_directory(stores: Stores) -> None:
    page = await stores.directory.list_users()
    assert page.items == [] and page.cursor is None


# Trunks, routes, applications

@pytest.mark.parametrize("kind", KINDS)
async def test_entry_create_get_update_conflict_delete(stores: Stores, kind: DirectoryKind) -> None:
    first = entry(kind, "main", host="sip.carrier.example", port=5060,
                  codecs=["PCMU", "PCMA"], nested={"a": {"b": [1, 2.5, None, True]}},
                  label="Ünïcode ✓")
    created = await stores.directory.put_entry(first)
    assert created == replace(first, version=1)
    got = await stores.directory.get_entry(kind, "main")
    assert got == created
    assert_same_json(got.data, first.data, "data")
    with pytest.raises(Conflict):
        await stores.directory.put_entry(first)
    changed = entry(kind, "main", host="sip2.carrier.example")
    updated = await stores.directory.put_entry(changed, expected_version=1)
    assert updated == replace(changed, version=2)
    assert await stores.directory.get_entry(kind, "main") == updated
    with pytest.raises(Conflict):
        await stores.directory.put_entry(first, expected_version=1)
    with pytest.raises(NotFound):
        await stores.directory.put_entry(entry(kind, "absent"), expected_version=1)
    await stores.directory.delete_entry(kind, "main")
    with pytest.raises(NotFound):
        await stores.directory.get_entry(kind, "main")
    with pytest.raises(NotFound):
        await stores.directory.delete_entry(kind, "main")


async def test_entry_kinds_are_isolated(stores: Stores) -> None:
    for kind in KINDS:
        await stores.directory.put_entry(entry(kind, "shared-name", kind=kind))
        await stores.directory.put_entry(entry(kind, f"only-{kind}"))
    for kind in KINDS:
        got = await stores.directory.get_entry(kind, "shared-name")
        assert got.kind == kind and got.data == {"kind": kind}
        names = sorted(e.name for e in (await stores.directory.list_entries(kind)).items)
        assert names == [f"only-{kind}", "shared-name"]
    await stores.directory.delete_entry("route", "shared-name")
    assert (await stores.directory.get_entry("trunk", "shared-name")).kind == "trunk"
    assert (await stores.directory.get_entry("application", "shared-name")).version == 1
    with pytest.raises(NotFound):
        await stores.directory.get_entry("route", "shared-name")


async def test_list_entries_paginates(stores: Stores) -> None:
    await run_all(stores.directory.put_entry(entry("route", f"route-{n:02d}", prio=n))
                  for n in range(23))
    await stores.directory.put_entry(entry("trunk", "not-a-route"))
    pages = await all_pages(
        lambda cursor: stores.directory.list_entries("route", limit=10, cursor=cursor),
        limit=10)
    got = [e for page in pages for e in page]
    assert sorted(e.name for e in got) == [f"route-{n:02d}" for n in range(23)]
    assert all(e.kind == "route" and e.data == {"prio": int(e.name[-2:])} for e in got)
    assert (await stores.directory.list_entries("application")).items == []


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(min_size=1, max_size=40), data=JSON_OBJECTS,
       kind=st.sampled_from(KINDS))
async def test_any_entry_round_trips(
    stores: Stores, name: str, data: dict[str, Any], kind: DirectoryKind
) -> None:
    name = f"{name}/{uuid.uuid4().hex}"  # hypothesis may draw a name twice
    created = await stores.directory.put_entry(DirectoryEntry(kind=kind, name=name, data=data))
    got = await stores.directory.get_entry(kind, name)
    assert got == created and got.name == name and got.version == 1
    assert_same_json(got.data, data, "data")


# API keys

async def test_api_keys_put_get_list_delete(stores: Stores) -> None:
    assert await stores.directory.list_api_keys() == []
    one = api_key("key-1", name="CRM integration", created_at=1_700_000_000.5)
    two = api_key("key-2", secret="other")
    await stores.directory.put_api_key(one)
    await stores.directory.put_api_key(two)
    got = await stores.directory.get_api_key("key-1")
    assert got == one and isinstance(got.scopes, tuple)
    assert sorted(await stores.directory.list_api_keys(), key=lambda k: k.key_id) == [one, two]
    rotated = replace(one, secret_sha256=hashlib.sha256(b"rotated").hexdigest(), scopes=())
    await stores.directory.put_api_key(rotated)
    assert await stores.directory.get_api_key("key-1") == rotated
    await stores.directory.delete_api_key("key-1")
    with pytest.raises(NotFound):
        await stores.directory.get_api_key("key-1")
    assert await stores.directory.list_api_keys() == [two]
    with pytest.raises(NotFound):
        await stores.directory.delete_api_key("key-1")


# The revision counter

async def test_revision_grows_on_every_write_and_delete_and_not_on_reads(
    stores: Stores,
) -> None:
    d = stores.directory
    revisions = [await d.revision()]

    async def changes(action: Callable[[], Awaitable[object]]) -> None:
        await action()
        revisions.append(await d.revision())
        assert revisions[-1] > revisions[-2], f"revision did not grow: {revisions}"

    async def stays(action: Callable[[], Awaitable[object]]) -> None:
        await action()
        assert await d.revision() == revisions[-1], "a read moved the revision"

    await changes(lambda: d.put_user(user("1001")))
    await changes(lambda: d.put_user(user("1001", password="new"), expected_version=1))
    await stays(lambda: d.get_user("1001", REALM))
    await stays(lambda: d.list_users())
    await changes(lambda: d.put_entry(entry("trunk", "t")))
    await changes(lambda: d.put_entry(entry("trunk", "t", x=1), expected_version=1))
    await stays(lambda: d.get_entry("trunk", "t"))
    await stays(lambda: d.list_entries("trunk"))
    await changes(lambda: d.put_entry(entry("route", "r")))
    await changes(lambda: d.put_entry(entry("application", "a")))
    await changes(lambda: d.put_api_key(api_key("k")))
    await changes(lambda: d.put_api_key(api_key("k", secret="rotated")))
    await stays(lambda: d.get_api_key("k"))
    await stays(lambda: d.list_api_keys())
    await changes(lambda: d.delete_api_key("k"))
    await changes(lambda: d.delete_entry("trunk", "t"))
    await changes(lambda: d.delete_user("1001", REALM))
    assert len(set(revisions)) == len(revisions)


async def test_revision_is_shared_by_every_client(backend: Backend, stores: Stores) -> None:
    """The edge's cache and the control plane are different processes: a write through one
    bundle is seen by the other's `revision()`."""
    other = await backend.open()
    try:
        before = await other.directory.revision()
        await stores.directory.put_user(user("1001"))
        assert await other.directory.revision() > before
    finally:
        await other.close()
