"""`sdpbx user ...` and `sdpbx apikey ...`: manage the directory from a shell.

The commands work on whichever backend the config's `[store]` names (SQLite file or DynamoDB),
through the same stores the edge uses, so they are safe to run while the edge is up (its
directory cache notices the new revision). Passwords become HA1 digests before anything is
stored and are never printed; an API key's token is printed once, at creation.

Realm: `--realm`, else the first of `[proxy] realms`, else "sdpbx" (DEFAULT_REALM).
Exit statuses: 0 ok, 1 not found / already exists / store unavailable, 2 bad usage or config.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from edge.config import (
    DEFAULT_REALM,
    Config,
    ConfigError,
    default_realm,
    load_config,
    store_settings,
)

if TYPE_CHECKING:  # the store code is imported only when a command runs
    from control.store.ports import Stores

# The same statuses and variable as edge.cli (not imported from it: it imports this module).
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
CONFIG_ENV = "SDPBX_CONFIG"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Action = Callable[["Stores", Config, argparse.Namespace], Awaitable[int]]


class UsageError(Exception):
    """Bad input found after parsing (no password, mismatched confirmation): exit 2."""


def _error(message: str) -> None:
    print(f"sdpbx: {message}", file=sys.stderr)


def _run(args: argparse.Namespace, action: Action) -> int:
    """Load the config, open the stores, run `action`, close; map failures to exit codes."""
    try:
        config = load_config(args.config)
    except ConfigError as error:
        for line in str(error).splitlines():
            _error(line)
        return EXIT_USAGE
    try:
        return asyncio.run(_with_stores(config, args, action))
    except UsageError as error:
        _error(str(error))
        return EXIT_USAGE


async def _with_stores(config: Config, args: argparse.Namespace, action: Action) -> int:
    from control.store.errors import Conflict, NotFound, StoreUnavailable
    from control.store.factory import open_stores

    try:
        stores = await open_stores(store_settings(config))
    except StoreUnavailable as error:
        _error(f"cannot open the {config.store.backend} store: {error}")
        return EXIT_FAILURE
    except (ValueError, ImportError) as error:
        _error(f"cannot open the {config.store.backend} store: {error}")
        return EXIT_USAGE
    try:
        return await action(stores, config, args)
    except (NotFound, Conflict) as error:
        _error(str(error))
        return EXIT_FAILURE
    except StoreUnavailable as error:
        _error(f"store unavailable: {error}")
        return EXIT_FAILURE
    finally:
        await stores.close()


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


# --- passwords --------------------------------------------------------------------------------


def _read_password(args: argparse.Namespace, who: str) -> str:
    """From --password, --password-stdin (one line), or a terminal prompt, in that order."""
    if args.password is not None:
        password: str = args.password
    elif args.password_stdin:
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"Password for {who}: ")
        if getpass.getpass("Repeat it: ") != password:
            raise UsageError("the passwords do not match")
    else:
        raise UsageError(
            "no password: give --password, --password-stdin, or run in a terminal to be asked"
        )
    if not password:
        raise UsageError("the password is empty")
    return password


def _password_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--password", metavar="PASSWORD",
        help="the password (visible to other local users in the process list: prefer "
             "--password-stdin or the prompt)",
    )
    group.add_argument("--password-stdin", action="store_true",
                       help="read the password from the first line of standard input")


# --- user -------------------------------------------------------------------------------------


async def _user_add(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    from control.store.passwords import make_user

    realm = args.realm or default_realm(config)
    password = _read_password(args, f"{args.username}@{realm}")
    try:
        user = make_user(args.username, realm, password, enabled=not args.disabled,
                         display_name=args.display_name or "",
                         allow_guest_calls=args.allow_guest_calls)
    except ValueError as error:
        raise UsageError(str(error)) from None
    await stores.directory.put_user(user)
    print(f"user {user.username}@{user.realm} added")
    return EXIT_OK


async def _user_list(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    rows: list[list[str]] = []
    cursor: str | None = None
    while True:
        page = await stores.directory.list_users(limit=500, cursor=cursor)
        rows.extend(
            [user.username, user.realm, "yes" if user.enabled else "no", user.display_name]
            for user in page.items
            if args.realm is None or user.realm == args.realm
        )
        cursor = page.cursor
        if cursor is None:
            break
    if rows:
        _table(["USERNAME", "REALM", "ENABLED", "DISPLAY NAME"], rows)
    else:
        print("no users", file=sys.stderr)
    return EXIT_OK


async def _user_del(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    realm = args.realm or default_realm(config)
    # Read first, so "not found" is reported whether or not the backend's delete says so.
    await stores.directory.get_user(args.username, realm)
    await stores.directory.delete_user(args.username, realm)
    print(f"user {args.username}@{realm} deleted")
    return EXIT_OK


async def _user_passwd(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    from control.store.passwords import make_user

    realm = args.realm or default_realm(config)
    current = await stores.directory.get_user(args.username, realm)
    password = _read_password(args, f"{args.username}@{realm}")
    updated = make_user(
        current.username, current.realm, password, enabled=current.enabled,
        display_name=current.display_name, allow_guest_calls=current.allow_guest_calls,
    )
    await stores.directory.put_user(updated, expected_version=current.version)
    print(f"password of {current.username}@{current.realm} changed")
    return EXIT_OK


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    return lambda args: _run(args, action)


def _common(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(CONFIG_ENV)
    parser.add_argument(
        "--config", "-c", type=Path, metavar="FILE", default=Path(default) if default else None,
        help=f"TOML config file (default: ${CONFIG_ENV}, else the built-in defaults: "
             "SQLite at ./data/sdpbx.sqlite3)",
    )


def _realm_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--realm", metavar="REALM",
        help=f"digest realm (default: the first of [proxy] realms, else {DEFAULT_REALM!r})",
    )


def add_user_command(commands: Subparsers) -> None:
    """`sdpbx user add|list|del|passwd`."""
    parser = commands.add_parser(
        "user", help="add, list, delete users (extensions) or change a password",
        description="Manage the users (extensions) that may register and call. Only HA1 "
                    "digests of passwords are stored.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add a user", description="Add a user.")
    add.add_argument("username", metavar="USERNAME")
    _realm_option(add)
    _password_options(add)
    add.add_argument("--display-name", metavar="NAME", help="caller name shown to others")
    add.add_argument("--disabled", action="store_true", help="create it disabled")
    add.add_argument("--allow-guest-calls", action="store_true",
                     help="let it take calls from unauthenticated callers")
    _common(add)
    add.set_defaults(handler=_command(_user_add))

    listing = actions.add_parser("list", help="list users (never any secret)",
                                 description="List users: username, realm, enabled, name.")
    listing.add_argument("--realm", metavar="REALM", help="only this realm")
    _common(listing)
    listing.set_defaults(handler=_command(_user_list))

    delete = actions.add_parser("del", aliases=["delete"], help="delete a user",
                                description="Delete a user.")
    delete.add_argument("username", metavar="USERNAME")
    _realm_option(delete)
    _common(delete)
    delete.set_defaults(handler=_command(_user_del))

    passwd = actions.add_parser("passwd", help="change a user's password",
                                description="Set a new password for a user.")
    passwd.add_argument("username", metavar="USERNAME")
    _realm_option(passwd)
    _password_options(passwd)
    _common(passwd)
    passwd.set_defaults(handler=_command(_user_passwd))


# --- apikey -----------------------------------------------------------------------------------


async def _apikey_create(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    from control.store.passwords import new_api_key

    try:
        token, record = new_api_key(args.scope, args.name or "", time.time())
    except ValueError as error:
        raise UsageError(str(error)) from None
    await stores.directory.put_api_key(record)
    print(token)
    _error(f"API key {record.key_id} created with scopes {', '.join(record.scopes)}; "
           "the token above is shown only this once")
    return EXIT_OK


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


async def _apikey_list(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    keys = await stores.directory.list_api_keys()
    if not keys:
        print("no API keys", file=sys.stderr)
        return EXIT_OK
    _table(
        ["KEY ID", "NAME", "SCOPES", "CREATED"],
        [[key.key_id, key.name, ",".join(key.scopes), _utc(key.created_at)] for key in keys],
    )
    return EXIT_OK


async def _apikey_del(stores: Stores, config: Config, args: argparse.Namespace) -> int:
    await stores.directory.get_api_key(args.key_id)
    await stores.directory.delete_api_key(args.key_id)
    print(f"API key {args.key_id} deleted")
    return EXIT_OK


def add_apikey_command(commands: Subparsers) -> None:
    """`sdpbx apikey create|list|del`."""
    parser = commands.add_parser(
        "apikey", help="create, list, delete API keys",
        description="Manage API keys for the HTTP API. A key's token is shown once, at "
                    "creation; only a hash of its secret is stored.",
    )
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    create = actions.add_parser("create", help="create a key and print its token once",
                                description="Create an API key; print its token once.")
    create.add_argument("--scope", action="append", required=True, metavar="SCOPE",
                        help="a scope the key grants (repeat for more), e.g. read, calls")
    create.add_argument("--name", metavar="NAME", help="what the key is for")
    _common(create)
    create.set_defaults(handler=_command(_apikey_create))

    listing = actions.add_parser("list", help="list keys (never a secret)",
                                 description="List API keys: id, name, scopes, created.")
    _common(listing)
    listing.set_defaults(handler=_command(_apikey_list))

    delete = actions.add_parser("del", aliases=["delete"], help="revoke a key",
                                description="Delete (revoke) an API key.")
    delete.add_argument("key_id", metavar="KEY_ID")
    _common(delete)
    delete.set_defaults(handler=_command(_apikey_del))
