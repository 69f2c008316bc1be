"""The composition root: builds the edge from a `Config`, runs it until a signal, shuts it down.

This is the one module that knows every part (SIP listeners, HTTP listener, metrics; later the
store, the control app and the B2BUA) and the order they start and stop in.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from control.store.factory import open_stores
from edge.config import VERSION, Config, store_settings
from edge.io.heartbeat import Heartbeat
from edge.io.http import EdgeStatus, HttpServer, build_http_app, format_address
from edge.io.sip_server import SipServer
from edge.metrics import Metrics

log = logging.getLogger(__name__)

READY_FILE_ENV = "SDPBX_READY_FILE"


@dataclass(frozen=True, slots=True, kw_only=True)
class RunningEdge:
    """A started edge: its real bound addresses (port 0 resolved) and its metrics."""

    config: Config
    metrics: Metrics
    sip_udp: tuple[str, int]
    sip_tcp: tuple[str, int]
    http: tuple[str, int]
    edge_id: str = ""

    def addresses(self) -> dict[str, list[str | int] | str]:
        """What `SDPBX_READY_FILE` receives: `{"sip_udp": [host, port], ...}`."""
        return {
            "sip_udp": [self.sip_udp[0], self.sip_udp[1]],
            "sip_tcp": [self.sip_tcp[0], self.sip_tcp[1]],
            "http": [self.http[0], self.http[1]],
            "edge_id": self.edge_id,
        }


async def run(config: Config, *, ready: Callable[[RunningEdge], None] | None = None) -> None:
    """Start everything, call `ready`, serve until SIGINT/SIGTERM or cancellation, stop cleanly.

    Start order is SIP, then HTTP, so `/health` never reports a listener that is not bound;
    stop order is the reverse. A bind failure raises `OSError` after closing what had started.
    """
    stop = asyncio.Event()
    metrics = Metrics(VERSION)
    async with contextlib.AsyncExitStack() as stack:
        received = stack.enter_context(_stop_on_signals(stop))
        stores = await open_stores(store_settings(config))
        stack.push_async_callback(stores.close)
        sip = await SipServer.start(config.proxy, metrics)
        stack.push_async_callback(sip.close)
        status = EdgeStatus(
            version=VERSION,
            sip={"udp": format_address(sip.udp_address), "tcp": format_address(sip.tcp_address)},
        )
        app = build_http_app(status=status, metrics=metrics)
        http = await HttpServer.start(app, config.http.host, config.http.port)
        stack.push_async_callback(http.close)

        edge_id = config.edge_id or f"{socket.gethostname()}-{sip.udp_address[1]}"
        heartbeat = Heartbeat(
            registry=stores.edges,
            edge_id=edge_id,
            sip_addresses=(f"udp:{format_address(sip.udp_address)}",
                           f"tcp:{format_address(sip.tcp_address)}"),
            http_address=format_address(http.address),
        )
        await heartbeat.start()
        stack.push_async_callback(heartbeat.stop)
        status.store = {"backend": config.store.backend, "edge_id": edge_id}

        edge = RunningEdge(config=config, metrics=metrics, sip_udp=sip.udp_address,
                           sip_tcp=sip.tcp_address, http=http.address, edge_id=edge_id)
        log.info("sdpbx ready", extra={
            "version": VERSION,
            "sip_udp": format_address(edge.sip_udp),
            "sip_tcp": format_address(edge.sip_tcp),
            "http": format_address(edge.http),
        })
        ready_file = os.environ.get(READY_FILE_ENV)
        if ready_file:
            _write_atomically(Path(ready_file), json.dumps(edge.addresses()))
        if ready is not None:
            ready(edge)

        await stop.wait()
        log.info("sdpbx stopping", extra={"signal": received[0] if received else None})
    log.info("sdpbx stopped")


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[list[str]]:
    """Set `stop` on SIGINT/SIGTERM while inside; yields the names of the signals received."""
    loop = asyncio.get_running_loop()
    received: list[str] = []
    installed: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread, or a platform without loop signal handlers: the caller stops
            # the edge by cancelling `run()` instead.
            continue
        installed.append(sig)
    try:
        yield received
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _write_atomically(path: Path, text: str) -> None:
    # Readers poll for this file: they must never see it half written.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def serve(config: Config) -> None:
    """Run the edge in a new event loop (uvloop when installed) until SIGINT/SIGTERM."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(config))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(config))
