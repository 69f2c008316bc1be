"""edge.app: the composition root started in-process (needs edge/io/sip_server.py)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest

from edge import describe_build
from edge.app import READY_FILE_ENV, RunningEdge, run
from edge.config import VERSION, Config
from edge.io.http import format_address


async def start(config: Config) -> tuple[asyncio.Task[None], RunningEdge]:
    started: asyncio.Future[RunningEdge] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run(config, ready=started.set_result))
    waiting: set[asyncio.Future[Any]] = {task, started}
    done, _ = await asyncio.wait(waiting, timeout=20, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert started in done, "run() did not call ready()"
    return task, started.result()


def test_run_serves_and_stops_on_cancel(port0_config: Config) -> None:
    async def scenario() -> None:
        task, edge = await start(port0_config)
        assert edge.config is port0_config
        assert 0 not in (edge.sip_udp[1], edge.sip_tcp[1], edge.http[1])
        async with httpx.AsyncClient(base_url=f"http://{format_address(edge.http)}") as client:
            health = (await client.get("/health")).json()
            metrics = (await client.get("/metrics")).text
        assert health["status"] == "ok" and health["version"] == VERSION
        assert health["sip"] == {"udp": format_address(edge.sip_udp),
                                 "tcp": format_address(edge.sip_tcp)}
        assert f'sdpbx_build_info{{version="{VERSION}"}} 1.0' in metrics.splitlines()
        assert health["build"] == describe_build()
        assert health["build"].startswith(("compiled (mypyc)", "pure Python ("))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Every listener is closed: the ports can be bound again.
        with socket.create_server(edge.http), socket.create_server(edge.sip_tcp), \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(edge.sip_udp)

    asyncio.run(scenario())


def test_sigterm_stops_run_cleanly(port0_config: Config) -> None:
    async def scenario() -> None:
        task, _ = await start(port0_config)
        signal.raise_signal(signal.SIGTERM)
        await asyncio.wait_for(task, timeout=20)  # returns normally: a clean stop

    asyncio.run(scenario())
    # run() removed its handlers on the way out.
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


def test_ready_file(port0_config: Config, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch) -> None:
    ready_file = tmp_path / "ready.json"
    monkeypatch.setenv(READY_FILE_ENV, str(ready_file))

    async def scenario() -> RunningEdge:
        task, edge = await start(port0_config)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return edge

    edge = asyncio.run(scenario())
    assert json.loads(ready_file.read_text()) == {
        "sip_udp": list(edge.sip_udp), "sip_tcp": list(edge.sip_tcp), "http": list(edge.http),
        "edge_id": edge.edge_id,
    }
    # no temporary file left behind (data/ holds the SQLite state of the run)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", ready_file.name]


def test_http_port_taken_raises_oserror(port0_config: Config) -> None:
    async def scenario() -> None:
        with socket.create_server(("127.0.0.1", 0)) as taken:
            port = taken.getsockname()[1]
            config = port0_config.model_copy(update={
                "http": port0_config.http.model_copy(update={"addr": f"127.0.0.1:{port}"}),
            })
            with pytest.raises(OSError):
                await run(config)

    asyncio.run(scenario())


def test_edge_persists_its_heartbeat_in_the_sqlite_store(port0_config: Config) -> None:
    """`sdpbx up` keeps shared state in SQLite by default: the edge registry shows it alive
    while it runs, and a clean shutdown removes it."""
    import time

    from control.store.factory import open_stores
    from edge.config import store_settings

    async def scenario() -> None:
        task, edge = await start(port0_config)
        stores = await open_stores(store_settings(port0_config))
        try:
            alive = await stores.edges.alive(time.time())
            assert [info.edge_id for info in alive] == [edge.edge_id]
            (info,) = alive
            assert info.sip_addresses == (f"udp:{format_address(edge.sip_udp)}",
                                          f"tcp:{format_address(edge.sip_tcp)}")
            assert info.http_address == format_address(edge.http)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            assert await stores.edges.alive(time.time()) == []
        finally:
            await stores.close()

    asyncio.run(scenario())


def test_edge_uploads_what_an_earlier_run_left_in_the_spool(port0_config: Config) -> None:
    """A CDR spooled by a run that died before uploading it reaches the blob store when the
    edge starts again (nothing is lost when the store or the process goes down)."""
    from control.store.factory import open_blobs
    from control.store.ports import BlobStore
    from control.store.spool import BlobSpool
    from edge.config import store_settings

    async def scenario() -> None:
        blobs = await open_blobs(store_settings(port0_config).blobs)
        # The "earlier run": spooled, never started its uploader. (A local folder is written
        # through; here it stands for a remote store, so the blob goes into the spool.)
        remote = SimpleNamespace(durable_writes=False)
        await BlobSpool(port0_config.store.spool_path, cast(BlobStore, remote)).write(
            "cdr/2026/11/27/earlier.json", b'{"callId": "earlier"}', "application/json"
        )
        assert not await blobs.exists("cdr/2026/11/27/earlier.json")
        task, _ = await start(port0_config)
        try:
            for _ in range(100):
                if await blobs.exists("cdr/2026/11/27/earlier.json"):
                    break
                await asyncio.sleep(0.05)
            assert await blobs.get("cdr/2026/11/27/earlier.json") == b'{"callId": "earlier"}'
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await blobs.close()

    asyncio.run(scenario())
