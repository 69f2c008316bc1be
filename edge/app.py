"""The composition root: builds the edge from a `Config`, runs it until a signal, shuts it down.

This is the one module that knows every part (stores and spool, SIP listeners, registrar, the
B2BUA with its router, RTP relay, call records and CDRs, HTTP listener, metrics) and the order
they start and stop in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import logging
import os
import random
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import httpx
from starlette.routing import Mount

from control.api.active_calls import EdgeCommandClient
from control.api.app import create_app
from control.contracts.ncco import AnyStep, parse_steps
from control.store.factory import open_stores
from control.store.ports import Stores
from control.store.spool import BlobSpool
from edge import describe_build
from edge.config import VERSION, Config, default_realm, store_settings
from edge.config import DirectoryUserBackend as DirectoryUserBackendConfig
from edge.io.app_media import AppMediaSources, SpoolRecordings
from edge.io.applications import ApplicationClient, EventChannel
from edge.io.cdr_push import CdrPusher, CdrSigner
from edge.io.commands import command_route, originate_route
from edge.io.control_client import RequestSigner, build_client
from edge.io.heartbeat import Heartbeat
from edge.io.http import EdgeStatus, HttpServer, build_http_app, format_address
from edge.io.media_engine import Codec, Endpoint, MediaEngine
from edge.io.prompts import PcmLru, PromptLibrary
from edge.io.rtp_relay import RelayedCall, RtpRelay
from edge.io.sip_server import TOKENS, SipServer
from edge.io.tts import Speech
from edge.io.webhooks import FireAndForgetQueue, WebhookSender
from edge.metrics import Metrics
from edge.pbx.application import InboundApplications, MediaServices
from edge.pbx.auth import DigestAuthenticator, nonce_secret
from edge.pbx.call_records import CallLedger, CallStateWriter, recover_calls
from edge.pbx.calls import Call, CallManager, CallSettings
from edge.pbx.cdr import CdrWriter
from edge.pbx.core import PbxCore
from edge.pbx.directory_routing import DirectoryRouting
from edge.pbx.http_router import CallRouter, HttpRouter
from edge.pbx.locator import LocatorNotifier
from edge.pbx.media import MediaRelay, NegotiatedCodec
from edge.pbx.registrar import Registrar
from edge.pbx.routing import StaticRouter, TrunkDirectory, TrunkLimiter
from edge.pbx.security import AccessList, Admission, BruteForceGuard, RateLimiter, ScannerFilter
from edge.pbx.users import UserBackendChain

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
    proxy, security = config.proxy, config.proxy.security
    async with contextlib.AsyncExitStack() as stack:
        received = stack.enter_context(_stop_on_signals(stop))
        stores = await open_stores(store_settings(config))
        stack.push_async_callback(stores.close)
        # Blobs (CDRs, recordings) go through a disk spool; a restart uploads what is left.
        spool = BlobSpool(config.store.spool_path, stores.blobs)
        await spool.start()
        stack.push_async_callback(spool.stop)
        metrics.on_scrape(lambda m: m.set_spool(spool.pending(), spool.oldest_age()))
        # One pooled HTTP client for every webhook, HTTP user backend and control function of
        # this edge: the URL picks the transport (https, `lambda:`, or `control:` = a control
        # app in-process over the same stores); an unsigned request gets the [webhooks] signature.
        http_client = build_client(
            control_app=create_app(stores, realm=default_realm(config)),
            signer=(RequestSigner(config.webhooks.secret, config.webhooks.key_id)
                    if config.webhooks.secret else None),
            limits=httpx.Limits(max_connections=200))
        stack.push_async_callback(http_client.aclose)
        # Audio of call applications: prompts (URLs and files) and speech, cached on disk, in
        # the blob store and in memory (closed before the HTTP client: the stack unwinds).
        memory = PcmLru(config.media.memory_cache_mb * 2**20)
        prompts = PromptLibrary.from_config(config, http_client=http_client, blobs=stores.blobs,
                                            memory=memory)
        stack.push_async_callback(prompts.aclose)
        speech = Speech.from_config(config, blobs=stores.blobs, memory=memory)
        stack.push_async_callback(speech.aclose)

        guard = BruteForceGuard(
            security.auth_failures_max, security.auth_failures_window_s, security.auth_block_s
        )
        admission = Admission(
            acl=AccessList(proxy.acl_rules),
            limiter=RateLimiter(security.rate_limit_per_source, security.rate_limit_burst),
            guard=guard,
            drop_blocked=security.auth_block_action == "drop",
            scanners=ScannerFilter(
                security.scanner_user_agents if security.drop_scanner_user_agents else ()
            ),
        )
        sip = SipServer.create(
            proxy, metrics, methods=("REGISTER", *CALL_METHODS), supported=("path",),
            admission=admission,
        )
        edge_id = config.edge_id or f"{socket.gethostname()}-{proxy.udp_port or os.getpid()}"

        webhook_secret = config.webhooks.secret or secrets.token_hex(32)
        if config.webhooks.secret is None:
            log.warning("no [webhooks] secret: webhooks are signed with a key made for this run")
        sender = WebhookSender(
            http_client, secret=webhook_secret, key_id=config.webhooks.key_id, clock=time.time
        )
        notifier: LocatorNotifier | None = None
        if proxy.locator_webhook is not None:
            hook = proxy.locator_webhook
            queue = FireAndForgetQueue(
                sender, hook.url, maxsize=hook.queue_size, timeout=hook.timeout_ms / 1000,
                headers=hook.headers, metrics=metrics, name="locator webhook",
            )
            queue.start()
            # Stopped before the HTTP client closes (the stack unwinds in reverse order).
            stack.push_async_callback(queue.stop, 5.0)
            notifier = LocatorNotifier(
                queue, events=set(hook.events), home_proxy=edge_id, clock=time.time
            )

        # With no [[proxy.user_backends]], the users are those of the directory
        # (`sdpbx user add`): nobody registers without credentials.
        users = UserBackendChain.from_config(
            proxy.user_backends or [DirectoryUserBackendConfig(type="directory")],
            directory=stores.directory,
            http_client=http_client,
        )
        stack.push_async_callback(users.aclose)
        authenticator = DigestAuthenticator(
            users,
            secret=nonce_secret(security.nonce_secret or config.webhooks.secret),
            # With no [proxy] realms, challenge in the realm `sdpbx user add` stores users in,
            # whatever domain a phone registers to (the registrar itself serves any domain).
            realms=proxy.realms or [default_realm(config)],
            nonce_lifetime_s=security.nonce_lifetime_s,
            algorithms=security.digest_algorithms,
            guard=guard,
            block_action=security.auth_block_action,
        )
        registrar = Registrar(
            sip,
            store=stores.registrations,
            authenticator=authenticator,
            notifier=notifier,
            edge_id=edge_id,
            wall_clock=time.time,
            realms=proxy.realms,
            local_hosts=[h for h in (proxy.external_ip, proxy.addr) if h and h not in _ANY],
            default_expires=proxy.registrar_expires,
            min_expires=proxy.min_registrar_expires,
            max_expires=proxy.max_registrar_expires,
            max_contacts=security.max_contacts_per_aor,
            # Only a single embedded edge may trust its own cache of the AORs it serves.
            cache_authoritative=config.store.backend == "sqlite",
            token=TOKENS.token,
        )
        calls, ledger, router, apps = await _build_calls(
            config, stack, sip=sip, stores=stores, spool=spool, http_client=http_client,
            authenticator=authenticator, registrar=registrar, users=users, metrics=metrics,
            edge_id=edge_id, webhook_secret=webhook_secret,
            sources=AppMediaSources(prompts, speech),
        )
        core = PbxCore(
            sip, {"REGISTER": registrar, **dict.fromkeys(CALL_METHODS, calls)},
            on_other=calls.on_event,
        )
        stack.push_async_callback(core.close)
        sip.on_event = core.on_event
        await sip.listen()
        stack.push_async_callback(sip.close)
        # A webhook target with a port is ours only at our own SIP ports (`webhook_target`).
        router.add_local_domains([
            f"{host}:{port}" for host in (*proxy.realms, default_realm(config), proxy.addr,
                                          proxy.external_ip or proxy.addr)
            for port in {sip.udp_address[1], sip.tcp_address[1]}
        ])
        # Calls a previous run of this edge left behind: BYE to their legs, CDRs bySystem.
        for record in await recover_calls(stores.calls, edge_id, sip, token=TOKENS.token,
                                          clock=time.time):
            await ledger.write_recovered(record)
        # At shutdown (the stack unwinds in reverse), end live calls while SIP still runs.
        stack.callback(calls.close)
        sweeper = asyncio.get_running_loop().create_task(_sweep(registrar))
        stack.callback(sweeper.cancel)

        status = EdgeStatus(
            version=VERSION,
            sip={"udp": format_address(sip.udp_address), "tcp": format_address(sip.tcp_address)},
        )
        # The control plane reaches this edge's calls here, signed with the shared secret.
        commands = command_route(calls, secrets={config.webhooks.key_id: webhook_secret})
        # ... and places calls for the outbound-call API, whose applications it then runs.
        originate = originate_route(
            calls, secrets={config.webhooks.key_id: webhook_secret},
            applications=apps.client, media=apps.media, fallback=apps.fallback,
            # A bare extension or number is completed with the domain phones register to:
            # the first realm, else this edge's own SIP address.
            domain=proxy.realms[0] if proxy.realms else _advertised(sip.udp_address),
            edge_id=edge_id,
        )
        # Embedded mode: the control plane's API (/console, /api/v1, /openapi.json) is served
        # here, in-process, over the same stores; its commands reach this edge (or another
        # one sharing the stores) through the signed endpoint above.
        control = create_app(
            stores, realm=default_realm(config),
            commands=EdgeCommandClient(http_client, secret=webhook_secret,
                                       key_id=config.webhooks.key_id),
        )
        app = build_http_app(status=status, metrics=metrics,
                             routes=[commands, originate, Mount("", app=control)])
        http = await HttpServer.start(app, config.http.host, config.http.port)
        stack.push_async_callback(http.close)
        apps.public_url = f"http://{format_address((_advertised(http.address), http.address[1]))}"

        heartbeat = Heartbeat(
            registry=stores.edges,
            edge_id=edge_id,
            sip_addresses=(f"udp:{format_address(sip.udp_address)}",
                           f"tcp:{format_address(sip.tcp_address)}"),
            # Where the control plane sends this edge's call commands: a wildcard bind is
            # announced as the host's primary address (in a VPC, the private one).
            http_address=format_address((_advertised(http.address), http.address[1])),
        )
        await heartbeat.start()
        stack.push_async_callback(heartbeat.stop)
        status.store = {"backend": config.store.backend, "edge_id": edge_id}
        status.build = describe_build()

        edge = RunningEdge(config=config, metrics=metrics, sip_udp=sip.udp_address,
                           sip_tcp=sip.tcp_address, http=http.address, edge_id=edge_id)
        log.info("sdpbx ready", extra={
            "version": VERSION,
            "sip_udp": format_address(edge.sip_udp),
            "sip_tcp": format_address(edge.sip_tcp),
            "http": format_address(edge.http),
            "build": status.build,
        })
        ready_file = os.environ.get(READY_FILE_ENV)
        if ready_file:
            _write_atomically(Path(ready_file), json.dumps(edge.addresses()))
        if ready is not None:
            ready(edge)

        # What start-up built (stores, pools, routing, caches) lives as long as the edge: out
        # of the cyclic collector's way, whose full passes otherwise stall the media clock.
        gc.freeze()
        await stop.wait()
        log.info("sdpbx stopping", extra={"signal": received[0] if received else None})
    log.info("sdpbx stopped")


_ANY = ("0.0.0.0", "::")
CALL_METHODS = ("INVITE", "BYE", "UPDATE", "INFO")
MEDIA_CHECK_INTERVAL_S = 2.0


async def _build_calls(
    config: Config,
    stack: contextlib.AsyncExitStack,
    *,
    sip: SipServer,
    stores: Stores,
    spool: BlobSpool,
    http_client: httpx.AsyncClient,
    authenticator: DigestAuthenticator,
    registrar: Registrar,
    users: UserBackendChain,
    metrics: Metrics,
    edge_id: str,
    webhook_secret: str,
    sources: AppMediaSources | None = None,
) -> tuple[CallManager, CallLedger, CallRouter, _Applications]:
    """The B2BUA and what it needs: routes, trunks, the RTP relay, call records, CDRs, and
    the call applications' HTTP client and media."""
    proxy = config.proxy
    trunks = TrunkDirectory(proxy.trunks)
    http_router = None
    if proxy.http_router is not None:
        http_router = HttpRouter(
            proxy.http_router, client=http_client, secret=webhook_secret,
            key_id=config.webhooks.key_id, observer=metrics,
        )
    local_domains = [*proxy.realms, default_realm(config)]
    local_domains += [h for h in (proxy.external_ip, proxy.addr) if h and h not in _ANY]
    router = CallRouter(
        StaticRouter(proxy.routes, proxy.trunks, random.random),
        http_router,
        proxy.http_router.fallback_to_static if proxy.http_router is not None else False,
        local_domains,
        trunks=trunks,
    )
    relay: RtpRelay | None = None
    terminator: EngineTerminator | None = None
    if proxy.media_proxy == "all":
        relay = RtpRelay(proxy.addr, proxy.rtp_start_port, proxy.rtp_end_port)
        stack.callback(relay.close)
        # Legs the edge itself talks to (call applications) run on one media clock.
        engine = MediaEngine(relay)
        engine.start()
        stack.push_async_callback(engine.aclose)
        terminator = EngineTerminator(engine)
        metrics.on_scrape(lambda m: m.set_rtp(relay.packets_relayed, relay.packets_dropped,
                                              len(relay.sessions)) if relay else None)
    writer = CallStateWriter(stores.calls, edge_id, time.time)
    writer.start()
    stack.push_async_callback(writer.aclose)
    pusher = None
    if config.callrecord.type == "http":
        record = config.callrecord
        assert record.url is not None
        pusher = CdrPusher(
            Path(config.store.spool_path) / "cdr-push", http_client, record.url,
            headers=record.headers, with_media=record.with_media,
            signer=CdrSigner(secret=webhook_secret, key_id=config.webhooks.key_id),
        )
        await pusher.start()
        stack.push_async_callback(pusher.stop)
    cdr_writer = CdrWriter(spool, stores.cdrs, edge_id=edge_id, push=pusher)
    stack.push_async_callback(cdr_writer.close)
    ledger = CallLedger(writer, cdr_writer, edge_id=edge_id, observer=metrics)
    stack.push_async_callback(ledger.aclose)
    recordings = Path(config.store.spool_path) / "recording"
    recordings.mkdir(parents=True, exist_ok=True)
    limiter = TrunkLimiter(proxy.trunks)
    client = ApplicationClient(client=http_client, secret=webhook_secret,
                               key_id=config.webhooks.key_id, observer=metrics,
                               timeout_s=config.applications.timeout_ms / 1000)
    apps = _Applications(client=client)
    apps.media = MediaServices(
        sources=sources,
        recordings=SpoolRecordings(spool, recordings / "steps", lambda: apps.public_url))
    apps.fallback = tuple(parse_steps(config.applications.fallback_steps))
    starter = InboundApplications(fetcher=client, events=lambda: EventChannel(client),
                                  clock=time.time, media=apps.media, fallback=apps.fallback)
    calls = CallManager(
        sip,
        local_address=lambda transport: (
            proxy.external_ip or _advertised(sip.udp_address if transport == "UDP"
                                             else sip.tcp_address),
            (sip.udp_address if transport == "UDP" else sip.tcp_address)[1],
        ),
        authenticator=authenticator,
        router=router,
        registrar=registrar,
        users=users,
        realm=authenticator.realm_for,
        trunks=trunks,
        limits=limiter,
        media=cast(MediaRelay, relay) if relay is not None else None,
        sink=ledger,
        observer=metrics,
        token=TOKENS.token,
        applications=starter,
        terminator=terminator,
        settings=CallSettings(
            max_ring_time_s=proxy.max_ring_time,
            max_call_duration_s=proxy.max_call_duration,
            rtp_timeout_s=proxy.rtp_timeout,
            t1=proxy.t1_ms / 1000,
            t2=proxy.t2_ms / 1000,
            user_agent=proxy.useragent,
            advertised_host=proxy.external_ip,
            record_all=config.recording.enabled and config.recording.auto_start,
            recording_dir=str(recordings),
        ),
    )
    starter.calls = calls
    metrics.on_scrape(lambda m: m.set_calls(len(calls.calls), calls.started))
    if relay is not None and proxy.rtp_timeout:
        watchdog = asyncio.get_running_loop().create_task(
            _watch_media(calls, relay, float(proxy.rtp_timeout))
        )
        stack.callback(watchdog.cancel)
    # Trunks and routes written through the API (the directory) join the config's, and are
    # reloaded within a few seconds of a change, without a restart.
    routing = DirectoryRouting(routes=proxy.routes, trunks=proxy.trunks,
                               directory=stores.directory, router=router, calls=calls,
                               limiter=limiter)
    await routing.start()
    stack.push_async_callback(routing.stop)
    return calls, ledger, router, apps


@dataclass(slots=True)
class EngineTerminator:
    """The B2BUA's `MediaTerminator` over the media engine."""

    engine: MediaEngine

    def attach(self, session: Any, leg: Literal["a", "b"], codec: NegotiatedCodec) -> Endpoint:
        return self.engine.attach(cast(RelayedCall, session), leg, Codec(
            codec.payload_type, codec.name, codec.telephone_event_pt))

    def detach(self, endpoint: Any, *, hangup: bool = False) -> None:
        self.engine.detach(cast(Endpoint, endpoint), hangup=hangup)


@dataclass(slots=True, kw_only=True)
class _Applications:
    """The call applications' parts the HTTP side needs too (outbound calls)."""

    client: ApplicationClient
    media: MediaServices | None = None
    fallback: tuple[AnyStep, ...] = ()  # [applications] fallback_steps
    public_url: str = "http://127.0.0.1"  # the control API, as applications reach it


def _advertised(address: tuple[str, int]) -> str:
    """The address to put in Via/Contact/SDP for a wildcard bind: the host's primary IP."""
    host = address[0]
    if host not in _ANY:
        return host
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET: no packet is sent by connect()
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


async def _watch_media(calls: CallManager, relay: RtpRelay, timeout_s: float) -> None:
    """End answered calls whose media stopped in both directions for `timeout_s`."""
    while True:
        await asyncio.sleep(MEDIA_CHECK_INTERVAL_S)
        now = relay.now()
        try:
            calls.check_media(
                time.time(), functools.partial(_media_timed_out, now=now, timeout_s=timeout_s)
            )
        except Exception:
            log.exception("media watchdog failed")


def _media_timed_out(call: Call, now: float, timeout_s: float) -> bool:
    media = call.media
    if media is None or media.session is None:
        return False
    limit = (call.decision.rtp_timeout_s if call.decision else None) or timeout_s
    return cast(RelayedCall, media.session).session.timed_out(now, limit)
SWEEP_INTERVAL_S = 5.0


async def _sweep(registrar: Registrar) -> None:
    """Expire bindings every few seconds (their `offline` events go out in one batch)."""
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_S)
        try:
            await registrar.sweep(time.time())
        except Exception:
            log.exception("registration sweep failed")


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


def tune_gc() -> None:
    """Collect garbage less often: a busy edge allocates many short-lived objects per message,
    and with the default thresholds the cyclic collector took ~20% of the CPU of a
    REGISTER flood. Objects alive at start-up (modules, config) are frozen out of it.

    A young-generation pass walks what survived since the last one, and the loop (media
    included) waits meanwhile: at 800 calls/s a 50,000-object generation took ~50 ms a pass,
    a 10,000-object one ~9 ms, for no more CPU in all (measured: 0.32 s against 0.44 s per
    8000 calls). The middle generation is collected after as many objects as before."""
    gc.freeze()
    gc.set_threshold(10_000, 250, 100)


def serve(config: Config) -> None:
    """Run the edge in a new event loop (uvloop when installed) until SIGINT/SIGTERM."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(run(config))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run(config))
