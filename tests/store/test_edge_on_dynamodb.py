"""`sdpbx up` on the cloud backend: state in DynamoDB, blobs in S3 (moto server, 127.0.0.1).

A real edge process is configured with `[store] backend = "dynamodb"` and `[callrecord] type =
"s3"` and nothing else but the standard AWS environment (AWS_ENDPOINT_URL, region, keys). A user
added with the CLI against the same config registers over UDP with digest authentication; the
binding and the edge's heartbeat are then read back from DynamoDB by a second process.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from control.store.factory import open_stores
from control.store.ports import BlobSettings, StoreSettings
from edge.sip.digest import build_authorization, parse_challenge
from edge.sip.message import Response, parse_message
from tests.edge_process import running_edge
from tests.store.aws_servers import create_bucket, create_tables, moto_reset

PREFIX = "edgetest"
BUCKET = "edgetest-blobs"


def register(port: int, authorization: str | None, cseq: int) -> Response:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        local = sock.getsockname()[1]
        lines = [
            f"REGISTER sip:127.0.0.1:{port} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-ddb-{cseq};rport",
            "Max-Forwards: 70",
            "From: <sip:1001@sdpbx>;tag=ddb1",
            "To: <sip:1001@sdpbx>",
            "Call-ID: ddb-edge-1",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:1001@127.0.0.1:{local}>",
            "Expires: 300",
            *([f"Authorization: {authorization}"] if authorization else []),
            "Content-Length: 0",
            "",
            "",
        ]
        sock.sendto("\r\n".join(lines).encode(), ("127.0.0.1", port))
        data, _ = sock.recvfrom(65535)
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


def test_sdpbx_up_keeps_its_state_in_dynamodb_and_s3(
    moto_endpoint: str, tmp_path: Path
) -> None:
    moto_reset(moto_endpoint)
    create_tables(moto_endpoint, PREFIX)
    create_bucket(moto_endpoint, BUCKET)
    env = {"AWS_ENDPOINT_URL": moto_endpoint}
    state = (
        f'[store]\nbackend = "dynamodb"\ntable_prefix = "{PREFIX}"\n'
        f'spool_path = "{tmp_path / "spool"}"\n'
        f'[callrecord]\ntype = "s3"\nbucket = "{BUCKET}"\n'
    )
    config = tmp_path / "cli.toml"
    config.write_text(state)
    added = subprocess.run(
        [sys.executable, "-m", "edge", "user", "add", "1001", "--password", "s3cret",
         "--config", str(config)],
        capture_output=True, text=True, env=dict(os.environ, **env), timeout=60, check=False,
    )
    assert added.returncode == 0, added.stderr

    with running_edge(tmp_path, state_config=state, env=env) as edge:
        port = edge.sip_udp[1]
        challenge = register(port, None, 1)
        assert challenge.status == 401
        offered = [parse_challenge(v) for v in challenge.headers.get_lines("WWW-Authenticate")]
        credentials = build_authorization(
            offered[0], method="REGISTER", uri=f"sip:127.0.0.1:{port}", username="1001",
            password="s3cret", cnonce="0a4f113b",
        )
        ok = register(port, str(credentials), 2)
        assert ok.status == 200, ok.reason

        async def read_back() -> None:
            os.environ["AWS_ENDPOINT_URL"] = moto_endpoint
            try:
                stores = await open_stores(StoreSettings(
                    backend="dynamodb", table_prefix=PREFIX,
                    blobs=BlobSettings(kind="s3", root="", bucket=BUCKET),
                ))
            finally:
                del os.environ["AWS_ENDPOINT_URL"]
            try:
                bindings = await stores.registrations.bindings("sip:1001@sdpbx", time.time())
                assert [b.contact.startswith("sip:1001@127.0.0.1:") for b in bindings] == [True]
                assert bindings[0].edge_id == edge.edge_id
                alive = await stores.edges.alive(time.time())
                assert [info.edge_id for info in alive] == [edge.edge_id]
                await stores.blobs.put("cdr/probe.json", b"{}")  # the bucket is reachable
            finally:
                await stores.close()

        asyncio.run(read_back())
