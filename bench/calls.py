"""Call benchmark: SIPp calls at rising rates through `sdpbx up` (a B2BUA, media relayed and not)
and through Kamailio (a transaction-stateful proxy) in the same run; CPU per call of the target.

Run from the repository root (bench/calls.sh wraps this with the venv's Python):

    bench/calls.sh                         # ladder 100, 200, 400, 600, 800 calls/s, 10 s steps
    bench/calls.sh --quick                 # 200, 400, 800 calls/s, 3 s steps
    bench/calls.sh --targets kamailio --rates 500,1000,2000 --out /tmp/calls.json
    bench/calls.sh --targets sdpbx --rates 600 --duration 20 --hold-ms 2000
    bench/calls.sh --quiet-wait 60 --sipp /tmp/sip-tester-bench   # shared machine (README)

What runs, all on 127.0.0.1 with free ports: one SIPp UAS (`bench/sipp/uas_call.xml`: 180,
200 with SDP, echoes RTP with `-rtp_echo`), then, per target, a SIPp UAC
(`bench/sipp/uac_call.xml`: INVITE, 200, ACK, `--hold-ms` of call, BYE; with media
`uac_call_rtp.xml`, the same streaming G.711) at each rate.
The targets:

- `sdpbx`: `sdpbx up` with one static route sending every call to the trunk `uas` (the SIPp UAS);
  the UAC's address is in the trunk's `inbound_hosts`, so calls come in as a trusted trunk (no
  digest). `media_proxy = "none"`: SDP passes through, no RTP.
- `sdpbx-relay`: the same with `media_proxy = "all"`: the UAC streams G.711 (50 packets/s, from
  the answer to the BYE) and the UAS echoes it, so sdpbx relays 2 RTP streams per call.
- `kamailio`: `bench/kamailio/calls.cfg`, tm + record_route, every initial request to the UAS,
  2 UDP workers (the reference: no media, it has no relay of its own).

Targets on CPU 1 (`taskset -c 1`: every Kamailio process), the SIPp UAC and UAS on CPU 0. The
targets are stepped alternately (sdpbx at 100/s, sdpbx-relay at 100/s, Kamailio at 100/s,
sdpbx at 200/s...) so machine noise hits all alike. A step is bounded in count (SIPp
`-m rate*duration`) and in time (SIPp `-timeout`, and a subprocess timeout). Before its ladder,
each target must complete one probe call, else it is skipped with the reason.

CPU per call is the target's user+system time (all threads, all processes) from /proc/PID/stat
before and after the step, divided by the successful calls. A step passes when SIPp exits 0, no
call failed, all were made, and SIPp created them at >= 95% of the asked rate.
Every process started here is stopped by its PID (SIGTERM, then SIGKILL), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

# bench/register.py owns the process, /proc and SIPp-statistics helpers both benchmarks use.
from register import (
    LOOPBACK,
    PROCESSES,
    busy_cpu_seconds,
    child_pids,
    cpu_seconds,
    error_kinds,
    free_port,
    ladder_args,
    ladder_parser,
    log,
    pinned,
    read_sipp_stats,
    stop_on_signals,
    wait_udp_listening,
    wait_until_quiet,
)

ROOT = Path(__file__).resolve().parent.parent
UAC_SCENARIO = ROOT / "bench" / "sipp" / "uac_call.xml"
UAC_RTP_SCENARIO = ROOT / "bench" / "sipp" / "uac_call_rtp.xml"  # the same, streaming G.711
UAS_SCENARIO = ROOT / "bench" / "sipp" / "uas_call.xml"
KAMAILIO_CONFIG = ROOT / "bench" / "kamailio" / "calls.cfg"
TARGETS = ("sdpbx", "sdpbx-relay", "kamailio")
FULL_LADDER = (100, 200, 400, 600, 800)
QUICK_LADDER = (200, 400, 800)
# The goals of issue 5: per B2BUA call (two dialogs, state writes, CDR), on one core.
GOAL_CPU_US = 800.0
GOAL_RATE = 600
# sdpbx relays RTP from this range (2 port pairs per call): room for 2,500 calls in flight.
RTP_PORTS = (30000, 39999)
# The SIPp binary (--sipp): a copy under another name is safe from a neighbour's `pkill sipp`.
SIPP = ["sipp"]
PCMU_FILE = "bench-pcmu.raw"  # the name bench/sipp/uac_call.xml streams from its working dir


# --- the targets -------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    client_port: int  # the UAC's SIP port: fixed per target (it is the trunk's source address)
    media: bool  # the UAC streams RTP (and the target relays it)
    metrics_url: str | None = None  # sdpbx's /metrics: its RTP relay counters
    skipped: str | None = None  # why its ladder did not run

    def pids(self) -> list[int]:
        """The target's processes: Kamailio forks workers; sdpbx may start helpers."""
        return [self.process.pid, *child_pids(self.process.pid)]


def sdpbx_supports_media_proxy() -> bool:
    """Whether this tree's config knows `[proxy] media_proxy` (the key the relayed variant
    needs): asked of the config model itself, in a child process with the project on the path."""
    probe = "from edge.config import ProxyConfig; print('media_proxy' in ProxyConfig.model_fields)"
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False,
    )
    return result.stdout.strip() == "True"


def sdpbx_config(store_dir: Path, udp_port: int, uas_port: int, media_proxy: str | None) -> str:
    """Every call (any To user) forwarded to the trunk `uas`; the SIPp UAC, on 127.0.0.1, is
    recognised as that trunk by `inbound_hosts`, so no digest challenge."""
    proxy = [
        "[proxy]",
        f'addr = "{LOOPBACK}"', f"udp_port = {udp_port}", "tcp_port = 0",
        f"rtp_start_port = {RTP_PORTS[0]}", f"rtp_end_port = {RTP_PORTS[1]}",
    ]
    if media_proxy is not None:
        proxy.append(f'media_proxy = "{media_proxy}"')
    return "\n".join([
        *proxy,
        # Every call comes from one SIPp address: per-source limits would throttle it.
        "[proxy.security]", "rate_limit_per_source = 0",
        "[[proxy.routes]]", 'name = "bench"', 'dest = ["uas"]',
        "[proxy.routes.match]", '"to.user" = "^.*$"',
        "[proxy.trunks.uas]", f'dest = "sip:{LOOPBACK}:{uas_port}"',
        f'inbound_hosts = ["{LOOPBACK}"]',
        "[http]", f'addr = "{LOOPBACK}:0"',
        "[store]", f'path = "{store_dir / "sdpbx.sqlite3"}"',
        f'spool_path = "{store_dir / "spool"}"',
        "[callrecord]", f'root = "{store_dir / "cdr"}"',
        "[recording]", f'path = "{store_dir / "recordings"}"',
        # Kamailio runs with debug=0: both log only warnings and errors.
        "[log]", 'level = "warning"', 'format = "json"',
        "",
    ])


def start_sdpbx(name: str, workdir: Path, store_dir: Path, uas_port: int,
                media_proxy: str | None, cpu: int | None) -> Target:
    port = free_port(socket.SOCK_DGRAM)
    config = workdir / f"{name}.toml"
    config.write_text(sdpbx_config(store_dir, port, uas_port, media_proxy))
    ready = workdir / f"{name}-ready.json"
    ready.unlink(missing_ok=True)
    env = dict(os.environ, SDPBX_READY_FILE=str(ready), PYTHONPATH=str(ROOT))
    process = PROCESSES.start(
        name, pinned(cpu, [sys.executable, "-m", "edge", "up", "--config", str(config)]),
        cwd=workdir, log_path=workdir / f"{name}.log", env=env,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not start:\n" + (workdir / f"{name}.log").read_text())
        time.sleep(0.05)
    addresses = json.loads(ready.read_text())
    http = addresses.get("http")
    return Target(name, process, int(addresses["sip_udp"][1]), free_port(socket.SOCK_DGRAM),
                  media=media_proxy == "all",
                  metrics_url=f"http://{LOOPBACK}:{http[1]}/metrics" if http else None)


def rtp_counters(target: Target) -> tuple[int, int] | None:
    """(relayed, dropped) RTP/RTCP datagrams since start, from sdpbx's /metrics."""
    if target.metrics_url is None:
        return None
    # No proxy, whatever the environment says: this goes to 127.0.0.1 only.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(target.metrics_url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("sdpbx_rtp_packets_relayed", "sdpbx_rtp_packets_dropped"):
            values[name] = int(float(value))
    if len(values) != 2:
        return None
    return values["sdpbx_rtp_packets_relayed"], values["sdpbx_rtp_packets_dropped"]


def start_kamailio(workdir: Path, uas_port: int, cpu: int | None) -> Target:
    port = free_port(socket.SOCK_DGRAM)
    argv = [
        "kamailio", "-DD", "-E", "-f", str(KAMAILIO_CONFIG), "-m", "512", "-M", "32",
        "-A", f"BENCH_LISTEN=udp:{LOOPBACK}:{port}",
        "-A", f'BENCH_UAS="sip:{LOOPBACK}:{uas_port}"',
        "-A", f'BENCH_CTL="unix:{workdir / "kamailio.ctl"}"',
        "-P", str(workdir / "kamailio.pid"),
    ]
    process = PROCESSES.start("kamailio", pinned(cpu, argv), cwd=workdir,
                              log_path=workdir / "kamailio.log")
    wait_udp_listening(port, process, 15)
    time.sleep(0.5)  # every worker forked
    return Target("kamailio", process, port, free_port(socket.SOCK_DGRAM), media=False)


@dataclass(slots=True)
class Uas:
    process: subprocess.Popen[bytes]
    port: int
    media_port: int


def start_uas(workdir: Path, cpu: int | None, ports: tuple[int, int] | None = None) -> Uas:
    """One SIPp UAS for every target (they are stepped one at a time); it echoes RTP on its
    media port, where its answers' SDP point. `ports`: (SIP, media) to restart it on."""
    port, media_port = ports or (free_port(socket.SOCK_DGRAM), free_media_port())
    argv = pinned(cpu, [
        SIPP[0], "-sf", str(UAS_SCENARIO), "-i", LOOPBACK, "-p", str(port),
        "-mi", LOOPBACK, "-mp", str(media_port), "-rtp_echo", "-nostdin",
        "-buff_size", "4194304", "-max_recv_loops", "5000", "-max_sched_loops", "5000",
        "-trace_err", "-error_file", str(workdir / "uas_errors.log"),
        "-trace_stat", "-stf", str(workdir / "uas_stat.csv"), "-fd", "1",
    ])
    process = PROCESSES.start("sipp-uas", argv, cwd=workdir, log_path=workdir / "uas.out")
    wait_udp_listening(port, process, 15)
    return Uas(process, port, media_port)


def free_media_port() -> int:
    """An even port whose next two are free too (SIPp binds media port, +2 for video)."""
    for _ in range(100):
        port = free_port(socket.SOCK_DGRAM) & ~1
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as a, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as b:
                a.bind((LOOPBACK, port))
                b.bind((LOOPBACK, port + 2))
        except OSError:
            continue
        return port
    raise RuntimeError("no free media port pair")


# --- one step ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    target: str
    rate: int
    asked: int
    hold_ms: int
    rc: int | str = -1
    created: int = 0
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    wall_s: float = 0.0
    # Calls created per second while SIPp created them (the N-th call's creation time,
    # interpolated between SIPp's 1 s statistics rows): the hold time does not dilute it.
    achieved_rate: float = 0.0
    target_cpu_s: float = 0.0
    cpu_us_per_call: float | None = None
    uac_cpu_s: float = 0.0
    uas_cpu_s: float = 0.0
    # Machine CPU used by anything but the target and SIPp. Approximate: /proc/stat is sampled
    # at each tick while per-process times are exact, so it can even come out a little negative.
    other_cpu_s: float = 0.0
    busy_cores_before: float | None = None  # with --quiet-wait: the machine's load at the start
    p50_setup: str | None = None  # SIPp response-time bucket: INVITE sent to 200 received
    p99_setup: str | None = None
    # sdpbx: RTP/RTCP datagrams its relay sent on (and refused or lost) during the step
    rtp_relayed: int | None = None
    rtp_dropped: int | None = None
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (self.rc == 0 and self.failed == 0 and self.successful == self.asked
                and self.achieved_rate >= 0.95 * self.rate)


def _epoch(stamp: str) -> float | None:
    # SIPp writes "2026-11-27<TAB>23:36:18.737837<TAB>1795822578.737837": the last is the epoch.
    try:
        return float(stamp.split("\t")[-1])
    except ValueError:
        return None


def creation_rate(path: Path, asked: int) -> float:
    """Calls created per second up to the `asked`-th, from SIPp's `-trace_stat` rows."""
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) < 2:
        return 0.0
    header = lines[0].split(";")
    rows = [dict(zip(header, line.split(";"), strict=False)) for line in lines[1:]]
    start = _epoch(rows[0].get("StartTime", ""))
    if start is None:
        return 0.0
    previous_t, previous_n = 0.0, 0
    for row in rows:
        now = _epoch(row.get("CurrentTime", ""))
        count = int(row.get("OutgoingCall(C)") or 0)
        if now is None:
            continue
        elapsed = now - start
        if count >= asked:
            if count == previous_n:
                at = elapsed
            else:
                at = previous_t + (elapsed - previous_t) * (asked - previous_n) / (
                    count - previous_n)
            return round(asked / at, 1) if at > 0 else 0.0
        previous_t, previous_n = elapsed, count
    return 0.0  # never created them all


def setup_buckets(row: dict[str, str]) -> tuple[str | None, str | None]:
    """The response-time buckets (`<1` ms, `<2`...) holding the median and the 99th percentile
    of call setup (INVITE to 200, the scenario's only rtd)."""
    prefix = "ResponseTimeRepartition1_"
    buckets = [(k[len(prefix):], int(v or 0)) for k, v in row.items() if k.startswith(prefix)]
    total = sum(count for _, count in buckets)
    found: list[str | None] = []
    for share in (0.5, 0.99):
        seen = 0
        label_at: str | None = None
        for label, count in buckets:
            seen += count
            if total and seen >= share * total:
                label_at = f"{label} ms"
                break
        found.append(label_at)
    return found[0], found[1]


def run_step(target: Target, rate: int, duration: float, hold_ms: int, workdir: Path,
             uas: Uas, cpu: int | None, quiet_wait: float = 0.0, tag: str = "") -> Step:
    asked = max(1, int(rate * duration))
    tag = tag or f"{target.name}_{rate}"
    stats = workdir / f"{tag}_stat.csv"
    errors = workdir / f"{tag}_errors.log"
    for stale in (stats, errors):
        stale.unlink(missing_ok=True)
    hold_s = hold_ms / 1000
    timeout_s = int(duration + hold_s) + 30
    argv = [
        SIPP[0], f"{LOOPBACK}:{target.port}",
        "-sf", str(UAC_RTP_SCENARIO if target.media else UAC_SCENARIO), "-s", "bench",
        "-i", LOOPBACK, "-p", str(target.client_port),
        "-r", str(rate), "-rp", "1000", "-m", str(asked), "-d", str(hold_ms),
        # enough room for every call in its hold plus a few seconds of setup and teardown
        "-l", str(max(1000, int(rate * (hold_s + 10)))),
        "-pause_msg_ign", "-timeout", f"{timeout_s}s", "-timeout_error",
        "-recv_timeout", "10000", "-nostdin", "-buff_size", "4194304",
        "-max_recv_loops", "5000", "-max_sched_loops", "5000",
        "-trace_stat", "-stf", str(stats), "-fd", "1",
        "-trace_err", "-error_file", str(errors),
    ]
    # SIPp binds its media port (default 6000) in every run: a free one, on loopback. With
    # media, each call streams RTP from it (SIPp 3.6), and the SDP offers it.
    argv += ["-mi", LOOPBACK, "-mp", str(free_media_port())]
    argv = pinned(cpu, argv)
    step = Step(target=target.name, rate=rate, asked=asked, hold_ms=hold_ms)
    if quiet_wait > 0:
        step.busy_cores_before = wait_until_quiet(quiet_wait)
    rtp_before = rtp_counters(target)
    pids = target.pids()
    busy_before = busy_cpu_seconds()
    cpu_before = cpu_seconds(pids)
    uas_before = cpu_seconds([uas.process.pid])
    started = time.monotonic()
    with (workdir / f"{tag}_sipp.out").open("wb") as output:
        sipp = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, cwd=workdir)
    PROCESSES.track("sipp-uac", sipp)
    deadline = started + timeout_s + 15
    while True:
        pid, status, usage = os.wait4(sipp.pid, os.WNOHANG)
        if pid == sipp.pid:
            sipp.returncode = os.waitstatus_to_exitcode(status)
            step.uac_cpu_s = round(usage.ru_utime + usage.ru_stime, 3)
            step.rc = sipp.returncode
            break
        if time.monotonic() > deadline:
            PROCESSES.stop(sipp)
            step.rc = "killed"
            break
        time.sleep(0.02)
    PROCESSES.forget(sipp)
    step.wall_s = round(time.monotonic() - started, 3)
    step.target_cpu_s = round(cpu_seconds(pids) - cpu_before, 3)
    step.uas_cpu_s = round(cpu_seconds([uas.process.pid]) - uas_before, 3)
    step.other_cpu_s = round(
        busy_cpu_seconds() - busy_before - step.target_cpu_s - step.uac_cpu_s - step.uas_cpu_s,
        2,
    )
    row = read_sipp_stats(stats) if stats.exists() else {}
    step.created = int(row.get("OutgoingCall(C)") or 0)
    step.successful = int(row.get("SuccessfulCall(C)") or 0)
    step.failed = int(row.get("FailedCall(C)") or 0)
    step.retransmissions = int(row.get("Retransmissions(C)") or 0)
    step.p50_setup, step.p99_setup = setup_buckets(row)
    step.achieved_rate = creation_rate(stats, asked) if stats.exists() else 0.0
    if step.successful:
        step.cpu_us_per_call = round(step.target_cpu_s * 1e6 / step.successful, 1)
    step.errors = error_kinds(errors)
    rtp_after = rtp_counters(target)
    if rtp_before is not None and rtp_after is not None:
        step.rtp_relayed = rtp_after[0] - rtp_before[0]
        step.rtp_dropped = rtp_after[1] - rtp_before[1]
    return step


def probe(target: Target, workdir: Path, uas: Uas, cpu: int | None) -> str | None:
    """One call through the target before its ladder: None if it completed, else why not."""
    step = run_step(target, 1, 1.0, 200, workdir, uas, cpu, tag=f"{target.name}_probe")
    if step.passed or (step.rc == 0 and step.successful == 1):
        return None
    # The status line the target answered with, when it answered something unexpected.
    error_file = workdir / f"{target.name}_probe_errors.log"
    text = error_file.read_text(errors="replace") if error_file.exists() else ""
    answered = re.search(r"received 'SIP/2\.0 (\d{3}[^\r\n]*)", text)
    detail = (f"answered {answered.group(1)!r}" if answered else
              "; ".join(f"{n}x {e}" for e, n in step.errors.items()) or f"SIPp rc {step.rc}")
    return (f"one probe call did not complete ({detail}); see {workdir}/{target.name}_probe_*"
            f" and {workdir}/{target.name}.log")


# --- report ------------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def format_table(steps: Sequence[Step]) -> str:
    reference = {s.rate: s for s in steps if s.target == "kamailio"}
    lines = [
        "| rate/s | target | ok/asked | failed | retrans | created/s | setup p50 / p99 "
        "| target CPU s | CPU us/call | x Kamailio | RTP relayed | UAC+UAS CPU s |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for step in sorted(steps, key=lambda s: (s.rate, TARGETS.index(s.target))):
        mark = "" if step.passed else " (fail)"
        kam = reference.get(step.rate)
        ratio = "-"
        if (step.target != "kamailio" and kam is not None and kam.cpu_us_per_call
                and step.cpu_us_per_call):
            ratio = f"{step.cpu_us_per_call / kam.cpu_us_per_call:.1f}x"
        lines.append(
            f"| {step.rate} | {step.target} | {step.successful}/{step.asked}{mark} | "
            f"{step.failed} | {step.retransmissions} | {step.achieved_rate:.0f} | "
            f"{step.p50_setup or '-'} / {step.p99_setup or '-'} | {step.target_cpu_s:.2f} | "
            f"{_us(step.cpu_us_per_call)} | {ratio} | "
            f"{'-' if step.rtp_relayed is None else f'{step.rtp_relayed:,}'} | "
            f"{step.uac_cpu_s + step.uas_cpu_s:.1f} |"
        )
    return "\n".join(lines)


def verdict(steps: Sequence[Step], targets: Sequence[Target]) -> list[str]:
    lines = []
    for target in targets:
        if target.skipped:
            lines.append(f"{target.name}: not measured: {target.skipped}")
            continue
        passing = [s for s in steps if s.target == target.name and s.passed]
        if not passing:
            lines.append(f"{target.name}: no step passed")
            continue
        best = max(passing, key=lambda s: s.rate)
        measured = [s.cpu_us_per_call for s in passing if s.cpu_us_per_call]
        lines.append(
            f"{target.name}: highest zero-failure rate {best.rate} calls/s; CPU per call "
            f"{_us(best.cpu_us_per_call)} us there, best {_us(min(measured, default=None))} us"
        )
        if target.name.startswith("sdpbx"):
            ok_rate = best.rate >= GOAL_RATE
            ok_cpu = (best.cpu_us_per_call or 1e9) <= GOAL_CPU_US
            lines.append(
                f"  goal >= {GOAL_RATE} calls/s with zero failures: "
                f"{'met' if ok_rate else 'NOT met'}; goal <= {GOAL_CPU_US:.0f} us CPU per call: "
                f"{'met' if ok_cpu else 'NOT met'}"
            )
    return lines


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ladder_parser(__doc__, unit="calls", targets=TARGETS, settle_s=3.0)
    parser.add_argument("--hold-ms", type=int, default=1000, help="call hold (default 1000)")
    parser.add_argument("--sipp", default="sipp", help="the SIPp binary (default: sipp)")
    parser.add_argument("--out", type=Path, help="write every step as JSON here")
    args = ladder_args(parser, parser.parse_args(argv), targets=TARGETS, quick=QUICK_LADDER,
                       full=FULL_LADDER, max_rate=10_000)
    if not 0 <= args.hold_ms <= 30_000:
        parser.error("bounded: 0 <= --hold-ms <= 30000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    SIPP[0] = args.sipp
    needed = [args.sipp] + (["kamailio"] if "kamailio" in args.targets else [])
    needed += [] if args.no_pin else ["taskset"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        log(f"missing: {', '.join(missing)} (apt-get install -y sip-tester kamailio util-linux)")
        return 2
    two_cores = (os.cpu_count() or 1) >= 2
    target_cpu, sipp_cpu = (None, None) if args.no_pin or not two_cores else (1, 0)
    atexit.register(PROCESSES.stop_all)
    stop_on_signals()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sdpbx-callbench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / PCMU_FILE).write_bytes(b"\xff" * 8000)  # 1 s of PCMU silence, looped by SIPp
    # sdpbx's SQLite store and CDR spool on tmpfs when there is one (Kamailio keeps no state
    # on disk either).
    shm = Path("/dev/shm")
    store_root = Path(tempfile.mkdtemp(prefix="sdpbx-callbench-",
                                       dir=shm if shm.is_dir() else None))
    log(f"workdir {workdir}; ladder {args.rates} x {args.duration:g} s, hold {args.hold_ms} ms;"
        f" targets on CPU {target_cpu}, SIPp on CPU {sipp_cpu}")

    uas = start_uas(workdir, sipp_cpu)
    targets: list[Target] = []
    skipped: list[Target] = []
    media_key = any(t.startswith("sdpbx") for t in args.targets) and sdpbx_supports_media_proxy()
    for name in args.targets:
        if name == "kamailio":
            targets.append(start_kamailio(workdir, uas.port, target_cpu))
            continue
        if name == "sdpbx-relay" and not media_key:
            log("sdpbx-relay skipped: edge/config.py has no [proxy] media_proxy yet")
            continue
        mode = ("all" if name == "sdpbx-relay" else "none") if media_key else None
        store_dir = store_root / name
        store_dir.mkdir()
        targets.append(start_sdpbx(name, workdir, store_dir, uas.port, mode, target_cpu))
    for target in targets:
        idle = cpu_seconds(target.pids())
        time.sleep(1.0)
        log(f"{target.name} idle CPU: {1e3 * (cpu_seconds(target.pids()) - idle):.0f} ms/s")
        target.skipped = probe(target, workdir, uas, sipp_cpu)
        if target.skipped:
            log(f"{target.name} skipped: {target.skipped}")
            skipped.append(target)

    steps: list[Step] = []
    stopped = {t.name for t in skipped}
    for rate in args.rates:
        for target in targets:
            if target.name in stopped:
                continue
            if uas.process.poll() is not None:
                # Seen on a shared machine: something else stopped it. The targets route to
                # its port, so it comes back on the same ones.
                log(f"the SIPp UAS exited ({uas.process.returncode}): restarting it")
                PROCESSES.forget(uas.process)
                with contextlib.suppress(OSError):  # keep its screen: why it stopped
                    (workdir / "uas.out").rename(workdir / f"uas-exited-{int(time.time())}.out")
                uas = start_uas(workdir, sipp_cpu, (uas.port, uas.media_port))
            step = run_step(target, rate, args.duration, args.hold_ms, workdir, uas, sipp_cpu,
                            args.quiet_wait)
            steps.append(step)
            log(json.dumps(asdict(step) | {"passed": step.passed}))
            if target.process.poll() is not None:
                log(f"{target.name} died: see {workdir}/{target.name}.log")
                stopped.add(target.name)
            elif not step.passed and not args.keep_going:
                stopped.add(target.name)
            time.sleep(args.settle)
    PROCESSES.stop_all()
    shutil.rmtree(store_root, ignore_errors=True)

    print(f"\nCalls: INVITE-200-ACK, {args.hold_ms} ms hold, BYE-200; {args.duration:g} s of "
          f"call creation per step; targets pinned to CPU {target_cpu}, SIPp to CPU {sipp_cpu};"
          f" {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print(format_table(steps))
    print()
    for line in verdict(steps, targets):
        print(line)
    noisy = [s for s in steps if s.other_cpu_s > 0.1 * s.wall_s]
    if noisy:
        print(f"note: {len(noisy)} step(s) ran while other processes used > 10% of a core "
              "(see other_cpu_s in the JSON)")
    for step in steps:
        if step.errors:
            print(f"{step.target} at {step.rate}/s errors: {step.errors}")
    if args.out:
        args.out.write_text(json.dumps({
            "rates": args.rates, "duration_s": args.duration, "hold_ms": args.hold_ms,
            "pinned": target_cpu is not None,
            "targets": {t.name: {"skipped": t.skipped, "media": t.media} for t in targets},
            "steps": [asdict(s) | {"passed": s.passed} for s in steps],
        }, indent=1))
    print(f"\nlogs and SIPp statistics: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
