"""edge.cli_users end to end on a temporary SQLite config (`sdpbx user ...`, `sdpbx apikey ...`),
and the secrets helpers behind them (control.store.passwords)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from control.store.errors import NotFound
from control.store.models import ApiKey
from control.store.passwords import (
    make_user,
    new_api_key,
    parse_token,
    secret_digest,
    verify_api_key,
)
from edge.cli import main
from edge.config import DEFAULT_REALM, default_realm, parse_config, store_settings
from edge.sip.digest import compute_ha1

PASSWORD = "Tr0ub4dor&3-never-stored"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "sdpbx.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path / "db" / "sdpbx.sqlite3"}"\n'
        f'[callrecord]\nroot = "{tmp_path / "cdr"}"\n',
        encoding="utf-8",
    )
    return path


def db_path(config_file: Path) -> Path:
    return config_file.parent / "db" / "sdpbx.sqlite3"


def rows(config_file: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(db_path(config_file))) as conn:
        return conn.execute(sql).fetchall()


def sdpbx(config_file: Path, *argv: str) -> int:
    return main([*argv, "--config", str(config_file)])


def test_add_list_del_a_user(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sdpbx(config_file, "user", "add", "1001", "--password", PASSWORD,
                 "--display-name", "Alice Smith") == 0
    assert sdpbx(config_file, "user", "add", "1002", "--password", "other", "--disabled") == 0
    assert capsys.readouterr().out == "user 1001@sdpbx added\nuser 1002@sdpbx added\n"

    assert sdpbx(config_file, "user", "list") == 0
    assert capsys.readouterr().out.splitlines() == [
        "USERNAME  REALM  ENABLED  DISPLAY NAME",
        "1001      sdpbx  yes      Alice Smith",
        "1002      sdpbx  no",
    ]

    # The stored HA1s are hashlib's digests of user:realm:password, as the edge computes them.
    stored = rows(config_file, "SELECT username, ha1_md5, ha1_sha256, version FROM users "
                               "WHERE username = '1001'")
    md5 = hashlib.md5(f"1001:sdpbx:{PASSWORD}".encode()).hexdigest()
    sha256 = hashlib.sha256(f"1001:sdpbx:{PASSWORD}".encode()).hexdigest()
    assert stored == [("1001", md5, sha256, 1)]
    assert md5 == compute_ha1("1001", "sdpbx", PASSWORD, "MD5")
    assert sha256 == compute_ha1("1001", "sdpbx", PASSWORD, "SHA-256")

    assert sdpbx(config_file, "user", "del", "1002") == 0
    assert capsys.readouterr().out == "user 1002@sdpbx deleted\n"
    assert rows(config_file, "SELECT username FROM users") == [("1001",)]


def test_duplicate_add_and_missing_del_exit_1(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sdpbx(config_file, "user", "add", "1001", "--password", PASSWORD) == 0
    assert sdpbx(config_file, "user", "add", "1001", "--password", "different") == 1
    assert sdpbx(config_file, "user", "del", "1009") == 1
    assert sdpbx(config_file, "user", "passwd", "1009", "--password", "x") == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "sdpbx: user '1001' in realm 'sdpbx' exists",
        "sdpbx: no user '1009' in realm 'sdpbx'",
        "sdpbx: no user '1009' in realm 'sdpbx'",
    ]
    # The first password is still the one stored.
    assert rows(config_file, "SELECT ha1_md5 FROM users") == [
        (hashlib.md5(f"1001:sdpbx:{PASSWORD}".encode()).hexdigest(),)]


def test_the_password_is_never_at_rest_nor_printed(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sdpbx(config_file, "user", "add", "1001", "--password", PASSWORD) == 0
    assert sdpbx(config_file, "user", "passwd", "1001", "--password", PASSWORD + "2") == 0
    assert sdpbx(config_file, "user", "list") == 0
    assert sdpbx(config_file, "user", "add", "1001", "--password", PASSWORD) == 1
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    # Every byte SQLite left behind: the database, and a WAL or journal if one is left.
    at_rest = b"".join(file.read_bytes() for file in db_path(config_file).parent.iterdir())
    assert hashlib.md5(f"1001:sdpbx:{PASSWORD}2".encode()).hexdigest().encode() in at_rest
    assert PASSWORD.encode() not in at_rest


def test_passwd_changes_the_digests_and_bumps_the_version(
    config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sdpbx(config_file, "user", "add", "1001", "--password", "old",
                 "--display-name", "Bob") == 0
    assert sdpbx(config_file, "user", "passwd", "1001", "--password", "new") == 0
    assert capsys.readouterr().out.endswith("password of 1001@sdpbx changed\n")
    assert rows(config_file, "SELECT ha1_md5, display_name, version FROM users") == [
        (hashlib.md5(b"1001:sdpbx:new").hexdigest(), "Bob", 2)]


def test_password_from_stdin(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\nignored\n"))
    assert sdpbx(config_file, "user", "add", "1001", "--password-stdin") == 0
    assert rows(config_file, "SELECT ha1_sha256 FROM users") == [
        (hashlib.sha256(f"1001:sdpbx:{PASSWORD}".encode()).hexdigest(),)]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_password_prompt_on_a_terminal(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prompts: list[str] = []
    answers = iter([PASSWORD, PASSWORD, "first", "second"])

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("sys.stdin", _Terminal())
    monkeypatch.setattr("getpass.getpass", fake_getpass)
    assert sdpbx(config_file, "user", "add", "1001") == 0
    assert prompts == ["Password for 1001@sdpbx: ", "Repeat it: "]
    assert sdpbx(config_file, "user", "add", "1002") == 2  # the two entries differ
    assert "do not match" in capsys.readouterr().err
    assert rows(config_file, "SELECT username FROM users") == [("1001",)]


def test_no_password_without_a_terminal_is_a_usage_error(
    config_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert sdpbx(config_file, "user", "add", "1001") == 2
    assert "no password" in capsys.readouterr().err
    assert sdpbx(config_file, "user", "add", "1001", "--password", "") == 2
    assert sdpbx(config_file, "user", "add", "10:01", "--password", "x") == 2
    assert sdpbx(config_file, "user", "add", "1001", "--password", "x",
                 "--password-stdin") == 2  # argparse: not both
    assert rows(config_file, "SELECT count(*) FROM users") == [(0,)]


def test_realm_from_the_option_the_config_or_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "sdpbx.toml"
    config_file.write_text(
        f'[proxy]\nrealms = ["pbx.example.com", "other.example.com"]\n'
        f'[store]\npath = "{tmp_path / "db" / "sdpbx.sqlite3"}"\n', encoding="utf-8")
    assert sdpbx(config_file, "user", "add", "1001", "--password", "a") == 0
    assert sdpbx(config_file, "user", "add", "1001", "--password", "a",
                 "--realm", "other.example.com") == 0
    assert sdpbx(config_file, "user", "list", "--realm", "other.example.com") == 0
    out = capsys.readouterr().out
    assert "1001@pbx.example.com added" in out
    assert out.splitlines()[-1].split() == ["1001", "other.example.com", "yes"]
    assert sdpbx(config_file, "user", "del", "1001", "--realm", "other.example.com") == 0
    assert rows(config_file, "SELECT username, realm FROM users") == [
        ("1001", "pbx.example.com")]

    assert default_realm(parse_config("")) == DEFAULT_REALM == "sdpbx"


def test_apikey_create_list_del(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sdpbx(config_file, "apikey", "create", "--scope", "read", "--scope", "calls",
                 "--name", "crm") == 0
    captured = capsys.readouterr()
    token = captured.out.strip()
    parsed = parse_token(token)
    assert parsed is not None
    key_id, secret = parsed
    assert "shown only this once" in captured.err and key_id in captured.err
    assert rows(config_file, "SELECT key_id, secret_sha256, scopes, name FROM api_keys") == [
        (key_id, hashlib.sha256(secret.encode()).hexdigest(), '["read","calls"]', "crm")]

    assert sdpbx(config_file, "apikey", "list") == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].split() == ["KEY", "ID", "NAME", "SCOPES", "CREATED"]
    assert listing.splitlines()[1].split()[:3] == [key_id, "crm", "read,calls"]
    assert secret not in listing and secret_digest(secret) not in listing

    assert sdpbx(config_file, "apikey", "del", key_id) == 0
    assert sdpbx(config_file, "apikey", "del", key_id) == 1
    assert capsys.readouterr().err == f"sdpbx: no API key {key_id!r}\n"
    assert rows(config_file, "SELECT count(*) FROM api_keys") == [(0,)]

    assert sdpbx(config_file, "apikey", "create", "--scope", "Not A Scope") == 2
    assert sdpbx(config_file, "apikey", "create") == 2  # --scope is required


def test_every_directory_change_bumps_the_revision(config_file: Path) -> None:
    sdpbx(config_file, "user", "add", "1001", "--password", "a")
    sdpbx(config_file, "user", "passwd", "1001", "--password", "b")
    sdpbx(config_file, "apikey", "create", "--scope", "read")
    sdpbx(config_file, "user", "del", "1001")
    sdpbx(config_file, "user", "del", "1001")  # fails: no change
    assert rows(config_file, "SELECT revision FROM directory_revision") == [(4,)]


def test_config_from_the_environment_and_config_errors(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("SDPBX_CONFIG", str(config_file))
    assert main(["user", "add", "1001", "--password", "a"]) == 0
    assert rows(config_file, "SELECT username FROM users") == [("1001",)]

    bad = tmp_path / "bad.toml"
    bad.write_text('[store]\nbackend = "mongodb"\n', encoding="utf-8")
    assert main(["user", "list", "--config", str(bad)]) == 2
    assert "store.backend" in capsys.readouterr().err
    assert main(["user", "list", "--config", str(tmp_path / "missing.toml")]) == 2


def test_an_unusable_database_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    config_file = tmp_path / "sdpbx.toml"
    config_file.write_text(f'[store]\npath = "{blocker / "db.sqlite3"}"\n', encoding="utf-8")
    assert sdpbx(config_file, "user", "list") == 1
    assert "cannot open the sqlite store" in capsys.readouterr().err


def test_store_settings_follow_the_config() -> None:
    local = store_settings(parse_config('[store]\npath = "/var/lib/sdpbx/db.sqlite3"\n'))
    # Blob keys carry their kind (cdr/..., recordings/...): the local root holds both folders.
    assert (local.backend, local.sqlite_path, local.blobs.kind, local.blobs.root) == (
        "sqlite", "/var/lib/sdpbx/db.sqlite3", "local", os.path.abspath("./data"))
    cloud = store_settings(parse_config(
        '[store]\nbackend = "dynamodb"\ntable_prefix = "prod"\n'
        '[callrecord]\ntype = "s3"\nbucket = "calls"\nregion = "eu-west-1"\n'
        'endpoint = "http://127.0.0.1:9000"\n'))
    assert (cloud.backend, cloud.table_prefix) == ("dynamodb", "prod")
    assert (cloud.blobs.kind, cloud.blobs.bucket, cloud.blobs.root, cloud.blobs.region,
            cloud.blobs.endpoint_url) == ("s3", "calls", "", "eu-west-1",
                                          "http://127.0.0.1:9000")


# --- control.store.passwords ------------------------------------------------------------------


def test_make_user_keeps_fields_and_refuses_ambiguous_names() -> None:
    user = make_user("1001", "sdpbx", "pw", display_name="A", enabled=False)
    assert (user.display_name, user.enabled, user.version) == ("A", False, 0)
    assert user.ha1("MD5-sess") == hashlib.md5(b"1001:sdpbx:pw").hexdigest()
    for username, realm in (("", "r"), ("u", ""), ("a:b", "r"), ("u", "r:x")):
        with pytest.raises(ValueError):
            make_user(username, realm, "pw")
    # Non-ASCII passwords hash as UTF-8, as the edge's digest code does.
    assert make_user("u", "r", "pässwörd").ha1_md5 == compute_ha1("u", "r", "pässwörd")


def test_new_api_key_with_injected_randomness() -> None:
    token, record = new_api_key(["read", "read", "calls"], "n", 12.5,
                                random_bytes=lambda n: bytes(range(n)))
    assert token == "sdpbx_0001020304050607_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"
    assert record == ApiKey(
        key_id="0001020304050607",
        secret_sha256=hashlib.sha256(b"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8").hexdigest(),
        scopes=("read", "calls"), name="n", created_at=12.5,
    )
    with pytest.raises(ValueError, match="at least one scope"):
        new_api_key([], "n", 0)


def test_verify_api_key() -> None:
    token, record = new_api_key(["read"], "n", 0)
    keys = {record.key_id: record}

    async def lookup(key_id: str) -> ApiKey:
        if key_id not in keys:
            raise NotFound(key_id)
        return keys[key_id]

    async def verify(candidate: str) -> ApiKey | None:
        return await verify_api_key(candidate, lookup)

    assert asyncio.run(verify(token)) == record
    wrong_secret = token[:-1] + ("A" if token[-1] != "A" else "B")
    _, other = new_api_key(["read"], "n", 0)
    for bad in (wrong_secret, "sdpbx_" + other.key_id + token[22:], "", "Bearer x",
                token.replace("sdpbx_", "xxxxx_"), token + "x"):
        assert asyncio.run(verify(bad)) is None, bad
