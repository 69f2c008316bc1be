"""Registration benchmark: SIPp REGISTER with digest authentication, at rising rates, against
`sdpbx up` and against Kamailio in the same run, on one pinned core each; CPU per registration.

Run from the repository root (bench/register.sh wraps this with the venv's Python):

    bench/register.sh                      # ladder 250, 500, 1000, 2000, 3000/s, 10 s steps
    bench/register.sh --quick              # 500, 1000, 2000/s, 3 s steps (~1 min)
    bench/register.sh --profile            # + py-spy profile of sdpbx at its best passing rate
    bench/register.sh --targets sdpbx --rates 1000,4000 --duration 5 --keep-going

What runs: both targets on CPU 1 (`taskset -c 1`), SIPp on CPU 0, everything on 127.0.0.1 with
free ports. One "call" of `bench/sipp/register.xml` is one authenticated registration
(REGISTER -> 401 -> REGISTER with credentials -> 200) of one of N users (default 10,000,
`u10000`.., password `<user>-pw`) from a generated injection CSV; sdpbx has the same users in
its memory user backend, Kamailio checks the same passwords (`bench/kamailio/register.cfg`).
The targets are stepped alternately (sdpbx at 250/s, Kamailio at 250/s, sdpbx at 500/s...),
so that machine noise hits both alike. A step is bounded in count (SIPp `-m rate*duration`)
and in time (SIPp `-timeout`, and a subprocess timeout).

CPU is the target's user+system time from /proc/PID/stat (every Kamailio process) before and
after the step, divided by the successful registrations. A step passes when SIPp exits 0, no
registration failed, all were made, and the achieved rate is at least 95% of the asked one.
Every process started here is stopped by its PID (SIGTERM, then SIGKILL), also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "bench" / "sipp" / "register.xml"
KAMAILIO_CONFIG = ROOT / "bench" / "kamailio" / "register.cfg"
LOOPBACK = "127.0.0.1"  # the only address anything here binds to or sends to
REALM = LOOPBACK  # both targets challenge with realm 127.0.0.1 (the AOR domain)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = ("sdpbx", "kamailio")
FULL_LADDER = (250, 500, 1000, 2000, 3000)
QUICK_LADDER = (500, 1000, 2000)
# The goals of issue 4: per authenticated registration, on one core, with zero failures.
GOAL_CPU_US = 200.0
GOAL_RATE = 2000


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- processes we start, and only those, stopped by PID -----------------------------------------


class Processes:
    """Every process this run started, stopped by PID in reverse start order."""

    def __init__(self) -> None:
        self._started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], *, cwd: Path, log_path: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with log_path.open("wb") as output:
            process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                cwd=cwd, env=env,
            )
        self._started.append((name, process))
        log(f"started {name} pid={process.pid}: {' '.join(argv)}")
        return process

    def track(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self._started.append((name, process))

    def forget(self, process: subprocess.Popen[bytes]) -> None:
        self._started = [(n, p) for n, p in self._started if p is not process]

    def stop(self, process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        if process.poll() is None:
            children = [(pid, start_time(pid)) for pid in child_pids(process.pid)]
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            # Kamailio's workers leave with their main process; make sure of it, by their PIDs
            # (the same processes: a PID is only ours while its start time is the one we saw).
            for pid, started in children:
                if started is not None and start_time(pid) == started:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        self.forget(process)

    def stop_all(self) -> None:
        while self._started:
            name, process = self._started[-1]
            try:
                self.stop(process)
            except (OSError, subprocess.SubprocessError) as error:
                log(f"stopping {name}: {error}")
                self.forget(process)


PROCESSES = Processes()


def stop_on_signals() -> None:
    """SIGTERM/SIGINT stop every process this benchmark started, then exit."""
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    PROCESSES.stop_all()
    sys.exit(128 + signum)


def child_pids(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            children.append(int(entry))
    return children


def start_time(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU of `pids` (every thread of each), from /proc/PID/stat."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / CLOCK_TICKS


def busy_cpu_seconds() -> float:
    """CPU time used by the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = values[:8]
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def wait_until_quiet(max_wait: float, threshold: float = 0.3) -> float:
    """Wait (at most `max_wait` s) until the machine's other work uses under `threshold` cores
    over one second: on a shared machine the neighbours otherwise decide the rates. Returns the
    busy cores of the last sample."""
    deadline = time.monotonic() + max_wait
    while True:
        before = busy_cpu_seconds()
        time.sleep(1.0)
        cores = busy_cpu_seconds() - before
        if cores < threshold or time.monotonic() >= deadline:
            return round(cores, 2)


def free_port(kind: socket.SocketKind) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_udp_listening(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    wanted = f"{socket.inet_aton(LOOPBACK)[::-1].hex().upper()}:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening on {port}")
        with open("/proc/net/udp") as table:
            if any(line.split()[1] == wanted for line in list(table)[1:]):
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on udp {LOOPBACK}:{port} after {timeout} s")


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


# --- the users, in the SIPp injection file and in the sdpbx config -----------------------------


def user_names(count: int) -> Iterator[str]:
    return (f"u{10_000 + index}" for index in range(count))


def password_of(user: str) -> str:
    return f"{user}-pw"  # the same rule is in bench/kamailio/register.cfg


def write_injection_csv(path: Path, count: int) -> None:
    lines = ["SEQUENTIAL"]
    lines += [
        f"{user};[authentication username={user} password={password_of(user)}]"
        for user in user_names(count)
    ]
    path.write_text("\n".join(lines) + "\n")


def sdpbx_config(store_dir: Path, users: int, udp_port: int) -> str:
    user_rows = ",\n".join(
        f'  {{ username = "{user}", password = "{password_of(user)}" }}'
        for user in user_names(users)
    )
    security = [
        # SIPp registers every user from one address: per-source limits would throttle it.
        "rate_limit_per_source = 0",
        "auth_failures_max = 1000000",
        # SIPp 3.6 answers only the topmost challenge, and only if it is MD5
        'digest_algorithms = ["MD5"]',
    ]
    return "\n".join([
        "[proxy]",
        f'addr = "{LOOPBACK}"', f"udp_port = {udp_port}", "tcp_port = 0",
        f'realms = ["{REALM}"]',
        "[proxy.security]", *security,
        "[[proxy.user_backends]]", 'type = "memory"', f"users = [\n{user_rows}\n]",
        "[http]", f'addr = "{LOOPBACK}:0"',
        "[store]", f'path = "{store_dir / "sdpbx.sqlite3"}"',
        "[callrecord]", f'root = "{store_dir / "cdr"}"',
        "[recording]", f'path = "{store_dir / "recordings"}"',
        # Kamailio runs with debug=0: both log only warnings and errors.
        "[log]", 'level = "warning"', 'format = "json"',
        "",
    ])


# --- the targets -------------------------------------------------------------------------------


@dataclass(slots=True)
class Target:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    pids: list[int]
    client_port: int  # SIPp's port: fixed per target, so each user keeps one Contact


def start_sdpbx(workdir: Path, store_dir: Path, users: int, cpu: int | None) -> Target:
    port = free_port(socket.SOCK_DGRAM)
    config = workdir / "sdpbx.toml"
    config.write_text(sdpbx_config(store_dir, users, port))
    ready = workdir / "sdpbx-ready.json"
    env = dict(os.environ, SDPBX_READY_FILE=str(ready), PYTHONPATH=str(ROOT))
    process = PROCESSES.start(
        "sdpbx", pinned(cpu, [sys.executable, "-m", "edge", "up", "--config", str(config)]),
        cwd=workdir, log_path=workdir / "sdpbx.log", env=env,
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("sdpbx did not start:\n" + (workdir / "sdpbx.log").read_text())
        time.sleep(0.05)
    listening = json.loads(ready.read_text())["sip_udp"]
    return Target("sdpbx", process, int(listening[1]), [process.pid],
                  free_port(socket.SOCK_DGRAM))


def start_kamailio(workdir: Path, cpu: int | None) -> Target:
    port = free_port(socket.SOCK_DGRAM)
    argv = [
        "kamailio", "-DD", "-E", "-f", str(KAMAILIO_CONFIG), "-m", "512", "-M", "32",
        "-A", f"BENCH_LISTEN=udp:{LOOPBACK}:{port}",
        "-A", f'BENCH_CTL="unix:{workdir / "kamailio.ctl"}"',
        "-P", str(workdir / "kamailio.pid"),
    ]
    process = PROCESSES.start("kamailio", pinned(cpu, argv), cwd=workdir,
                              log_path=workdir / "kamailio.log")
    wait_udp_listening(port, process, 15)
    time.sleep(0.5)  # every worker forked
    return Target("kamailio", process, port, [process.pid, *child_pids(process.pid)],
                  free_port(socket.SOCK_DGRAM))


# --- one step ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Step:
    target: str
    rate: int
    asked: int
    rc: int | str = -1
    successful: int = 0
    failed: int = 0
    retransmissions: int = 0
    wall_s: float = 0.0
    achieved_rate: float = 0.0
    target_cpu_s: float = 0.0
    cpu_us_per_registration: float | None = None
    sipp_cpu_s: float = 0.0
    # Machine CPU used by anything but the target and SIPp. Approximate: /proc/stat is sampled
    # at each tick while per-process times are exact, so it can even come out a little negative.
    other_cpu_s: float = 0.0
    busy_cores_before: float | None = None  # with --quiet-wait: the machine's load at the start
    p99_response: str | None = None  # the SIPp response-time bucket holding the 99th percentile
    errors: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return (self.rc == 0 and self.failed == 0 and self.successful == self.asked
                and self.achieved_rate >= 0.95 * self.rate)


def read_sipp_stats(path: Path) -> dict[str, str]:
    """The last row of a SIPp `-trace_stat` file (';'-separated, header first)."""
    lines = path.read_text(errors="replace").splitlines()
    if len(lines) < 2:
        return {}
    header = lines[0].split(";")
    return dict(zip(header, lines[-1].split(";"), strict=False))


def p99_bucket(row: dict[str, str]) -> str | None:
    """The response-time bucket (`<1` ms, `<2`...) holding the 99th percentile, from the
    scenario's ResponseTimeRepartition (first REGISTER to the 200)."""
    prefix = "ResponseTimeRepartition1_"
    buckets = [(k[len(prefix):], int(v or 0)) for k, v in row.items() if k.startswith(prefix)]
    total = sum(count for _, count in buckets)
    seen = 0
    for label, count in buckets:
        seen += count
        if total and seen >= 0.99 * total:
            return f"{label} ms"
    return None


def error_kinds(path: Path, top: int = 4) -> dict[str, int]:
    """The commonest SIPp error lines, with numbers and Call-IDs blurred so that they group."""
    if not path.exists():
        return {}
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        if not re.match(r"^\d{4}-\d\d-\d\d", line):
            continue
        message = line.split(": ", 1)[-1]
        counts[re.sub(r"\d+", "N", message)[:110].strip()] += 1
    return dict(counts.most_common(top))


def run_step(target: Target, rate: int, duration: float, workdir: Path, users_csv: Path,
             cpu: int | None, quiet_wait: float = 0.0) -> Step:
    asked = max(1, int(rate * duration))
    tag = f"{target.name}_{rate}"
    stats = workdir / f"{tag}_stat.csv"
    errors = workdir / f"{tag}_errors.log"
    for stale in (stats, errors):
        stale.unlink(missing_ok=True)
    timeout_s = int(duration) + 30
    argv = pinned(cpu, [
        "sipp", f"{LOOPBACK}:{target.port}", "-sf", str(SCENARIO), "-inf", str(users_csv),
        "-i", LOOPBACK, "-p", str(target.client_port), "-t", "u1",
        "-r", str(rate), "-rp", "1000", "-m", str(asked), "-l", str(max(1000, rate * 5)),
        "-timeout", f"{timeout_s}s", "-timeout_error", "-recv_timeout", "10000",
        "-nostdin", "-buff_size", "4194304", "-max_recv_loops", "5000",
        "-max_sched_loops", "5000", "-trace_stat", "-stf", str(stats), "-fd", "1",
        "-trace_err", "-error_file", str(errors),
    ])
    step = Step(target=target.name, rate=rate, asked=asked)
    if quiet_wait > 0:
        step.busy_cores_before = wait_until_quiet(quiet_wait)
    busy_before = busy_cpu_seconds()
    cpu_before = cpu_seconds(target.pids)
    started = time.monotonic()
    with (workdir / f"{tag}_sipp.out").open("wb") as output:
        sipp = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output,
                                stderr=subprocess.STDOUT, cwd=workdir)
    PROCESSES.track("sipp", sipp)
    sipp_cpu = 0.0
    deadline = started + timeout_s + 15
    while True:
        pid, status, usage = os.wait4(sipp.pid, os.WNOHANG)
        if pid == sipp.pid:
            sipp.returncode = os.waitstatus_to_exitcode(status)
            sipp_cpu = usage.ru_utime + usage.ru_stime
            step.rc = sipp.returncode
            break
        if time.monotonic() > deadline:
            PROCESSES.stop(sipp)
            step.rc = "killed"
            break
        time.sleep(0.02)
    PROCESSES.forget(sipp)
    step.wall_s = round(time.monotonic() - started, 3)
    step.target_cpu_s = round(cpu_seconds(target.pids) - cpu_before, 3)
    step.sipp_cpu_s = round(sipp_cpu, 3)
    step.other_cpu_s = round(
        busy_cpu_seconds() - busy_before - step.target_cpu_s - step.sipp_cpu_s, 2
    )
    row = read_sipp_stats(stats) if stats.exists() else {}
    step.successful = int(row.get("SuccessfulCall(C)") or 0)
    step.failed = int(row.get("FailedCall(C)") or 0)
    step.retransmissions = int(row.get("Retransmissions(C)") or 0)
    step.p99_response = p99_bucket(row)
    step.achieved_rate = round(step.successful / step.wall_s, 1) if step.wall_s else 0.0
    if step.successful:
        step.cpu_us_per_registration = round(step.target_cpu_s * 1e6 / step.successful, 1)
    step.errors = error_kinds(errors)
    return step


# --- profile -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Profile:
    rate: int
    error: str | None = None
    step: Step | None = None
    samples: int = 0
    raw_file: str = ""
    own: list[tuple[str, float]] = field(default_factory=list)  # (frame, % of samples)
    inclusive: list[tuple[str, float]] = field(default_factory=list)


def profile_sdpbx(target: Target, rate: int, duration: float, workdir: Path,
                  users_csv: Path, sipp_cpu: int | None, quiet_wait: float = 0.0,
                  top: int = 15) -> Profile:
    """py-spy samples sdpbx while SIPp drives it at `rate`."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return Profile(rate, error="py-spy not installed (.venv/bin/pip install py-spy)")
    raw = workdir / "sdpbx-profile.txt"
    if quiet_wait > 0:
        wait_until_quiet(quiet_wait)
    # The sampler runs beside SIPp, off the target's CPU.
    sampler = PROCESSES.start(
        "py-spy", pinned(sipp_cpu, [
            # Blocking sampling (py-spy stops the process for each sample): without it the
            # stacks it reads from a running interpreter are often torn.
            py_spy, "record", "--pid", str(target.pids[0]), "--rate", "250",
            "--format", "raw", "--output", str(raw), "--duration", str(int(duration) + 1),
        ]),
        cwd=workdir, log_path=workdir / "py-spy.log",
    )
    time.sleep(0.5)
    step = run_step(target, rate, duration, workdir, users_csv, sipp_cpu)
    try:
        sampler.wait(timeout=duration + 30)
    except subprocess.TimeoutExpired:
        PROCESSES.stop(sampler)
    PROCESSES.forget(sampler)
    if not raw.exists():
        return Profile(rate, step=step, error="py-spy wrote nothing: "
                       + (workdir / "py-spy.log").read_text()[-500:])
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit() or not stack:
            continue
        frames = [_frame_name(frame) for frame in stack.split(";")]
        if frames[-1] in _IDLE_LEAVES:
            continue  # a thread waiting for work, which py-spy does not recognise as idle
        count = int(count_text)
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            if not name.startswith(_ENTRY_FRAMES):
                inclusive[name] += count
    total = max(total, 1)
    return Profile(
        rate, step=step, samples=total, raw_file=str(raw),
        own=[(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
        inclusive=[(name, round(100 * n / total, 1)) for name, n in inclusive.most_common(top)],
    )


# The SQLite store's worker thread blocked on its queue (the work itself is in deeper frames).
_IDLE_LEAVES = frozenset({"_worker (concurrent/futures/thread.py)",
                          "SqliteWorker._serve (control/store/sqlite.py)"})
# Frames every sample of a thread passes through: not worth a line in the inclusive list.
_ENTRY_FRAMES = ("_run_module_as_main ", "_run_code ", "<module> ", "main (edge/cli.py)",
                 "_up (edge/cli.py)", "serve (edge/app.py)", "Thread.run ", "Thread._bootstrap")


def _frame_name(frame: str) -> str:
    # py-spy raw frames look like "handle (edge/pbx/registrar.py:123)": keep function and file.
    name, _, location = frame.partition(" (")
    path = location.rstrip(")").rsplit(":", 1)[0]
    for prefix in (str(ROOT) + "/", "/usr/lib/python3", "/usr/local/lib/python3"):
        if path.startswith(prefix):
            path = path[len(prefix):]
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    return f"{name} ({path})" if path else name


# --- report ------------------------------------------------------------------------------------


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(steps: Sequence[Step], rates: Sequence[int]) -> str:
    by_key = {(step.target, step.rate): step for step in steps}
    lines = [
        "| rate/s | sdpbx ok | failed | retrans | achieved/s | CPU us/reg | kamailio ok | failed "
        "| retrans | achieved/s | CPU us/reg | sdpbx/kamailio |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rate in rates:
        ours, theirs = by_key.get(("sdpbx", rate)), by_key.get(("kamailio", rate))
        if ours is None and theirs is None:
            continue
        cells = [str(rate)]
        for step in (ours, theirs):
            if step is None:
                cells += ["-"] * 5
            else:
                mark = "" if step.passed else " (fail)"
                cells += [f"{step.successful}/{step.asked}{mark}", str(step.failed),
                          str(step.retransmissions), f"{step.achieved_rate:.0f}",
                          _us(step.cpu_us_per_registration)]
        ratio = "-"
        if ours and theirs and ours.cpu_us_per_registration and theirs.cpu_us_per_registration:
            ratio = f"{ours.cpu_us_per_registration / theirs.cpu_us_per_registration:.1f}x"
        cells.append(ratio)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(steps: Sequence[Step]) -> list[str]:
    lines = []
    for name in TARGETS:
        passing = [s for s in steps if s.target == name and s.passed]
        if not any(s.target == name for s in steps):
            continue
        if not passing:
            lines.append(f"{name}: no step passed")
            continue
        best = max(passing, key=lambda s: s.rate)
        measured = [s.cpu_us_per_registration for s in passing if s.cpu_us_per_registration]
        cpu = min(measured) if measured else None
        lines.append(
            f"{name}: highest zero-failure rate {best.rate}/s; CPU per registration "
            f"{_us(best.cpu_us_per_registration)} us there, best {_us(cpu)} us"
        )
        if name == "sdpbx":
            ok_rate = best.rate >= GOAL_RATE
            ok_cpu = (best.cpu_us_per_registration or 1e9) <= GOAL_CPU_US
            lines.append(
                f"  goal >= {GOAL_RATE}/s with zero failures: {'met' if ok_rate else 'NOT met'};"
                f" goal <= {GOAL_CPU_US:.0f} us CPU per registration: "
                f"{'met' if ok_cpu else 'NOT met'}"
            )
    return lines


# --- main --------------------------------------------------------------------------------------


def ladder_parser(description: str | None, *, unit: str, targets: Sequence[str],
                  settle_s: float) -> argparse.ArgumentParser:
    """The options every rate-ladder benchmark takes (this one and bench/calls.py)."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short ladder, 3 s steps")
    parser.add_argument("--rates", help=f"comma-separated {unit} per second")
    parser.add_argument("--duration", type=float, help="seconds per step (default 10, quick 3)")
    parser.add_argument("--targets", default=",".join(targets), help=",".join(targets))
    parser.add_argument("--keep-going", action="store_true",
                        help="go on up a target's ladder after a failing step")
    parser.add_argument("--settle", type=float, default=settle_s,
                        help="pause between steps (s)")
    parser.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                        help="before each step, wait up to this long for the machine to be "
                             "nearly idle (< 0.3 busy cores; for shared machines)")
    parser.add_argument("--no-pin", action="store_true", help="do not taskset")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and stats here")
    return parser


def ladder_args(parser: argparse.ArgumentParser, args: argparse.Namespace, *,
                targets: Sequence[str], quick: Sequence[int], full: Sequence[int],
                max_rate: int) -> argparse.Namespace:
    """Normalise and bound the options of `ladder_parser` (the parser's error on a bad one)."""
    if args.rates:
        args.rates = [int(rate) for rate in args.rates.split(",")]
    else:
        args.rates = list(quick if args.quick else full)
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    args.targets = [name.strip() for name in args.targets.split(",") if name.strip()]
    unknown = set(args.targets) - set(targets)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if not 0 < args.duration <= 120:
        parser.error("bounded: 0 < --duration <= 120")
    if not 0 <= args.quiet_wait <= 600:
        parser.error("bounded: 0 <= --quiet-wait <= 600")
    if any(not 1 <= rate <= max_rate for rate in args.rates):
        parser.error(f"bounded: 1 <= rate <= {max_rate}")
    return args


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ladder_parser(__doc__, unit="registrations", targets=TARGETS, settle_s=2.0)
    parser.add_argument("--users", type=int, default=10_000, help="distinct users (<= 100000)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy sdpbx at its highest zero-failure rate")
    parser.add_argument("--json", type=Path, help="write every step as JSON here")
    args = ladder_args(parser, parser.parse_args(argv), targets=TARGETS, quick=QUICK_LADDER,
                       full=FULL_LADDER, max_rate=50_000)
    if not 1 <= args.users <= 100_000:
        parser.error("bounded: 1 <= --users <= 100000")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    needed = ["sipp"] + (["kamailio"] if "kamailio" in args.targets else [])
    needed += [] if args.no_pin else ["taskset"]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        log(f"missing: {', '.join(missing)} (apt-get install -y sip-tester kamailio util-linux)")
        return 2
    two_cores = (os.cpu_count() or 1) >= 2
    target_cpu, sipp_cpu = (None, None) if args.no_pin or not two_cores else (1, 0)
    atexit.register(PROCESSES.stop_all)
    stop_on_signals()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sdpbx-regbench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # The SQLite store on tmpfs when there is one: Kamailio keeps usrloc in memory.
    shm = Path("/dev/shm")
    store_dir = Path(tempfile.mkdtemp(prefix="sdpbx-regbench-", dir=shm if shm.is_dir() else None))
    users_csv = workdir / "users.csv"
    write_injection_csv(users_csv, args.users)
    log(f"workdir {workdir}; {args.users} users; ladder {args.rates} x {args.duration:g} s; "
        f"targets on CPU {target_cpu}, SIPp on CPU {sipp_cpu}")

    targets: dict[str, Target] = {}
    if "sdpbx" in args.targets:
        targets["sdpbx"] = start_sdpbx(workdir, store_dir, args.users, target_cpu)
    if "kamailio" in args.targets:
        targets["kamailio"] = start_kamailio(workdir, target_cpu)
    for target in targets.values():
        idle = cpu_seconds(target.pids)
        time.sleep(1.0)
        log(f"{target.name} idle CPU: {1e3 * (cpu_seconds(target.pids) - idle):.0f} ms/s")

    steps: list[Step] = []
    stopped: set[str] = set()
    for rate in args.rates:
        for name, target in targets.items():
            if name in stopped:
                continue
            step = run_step(target, rate, args.duration, workdir, users_csv, sipp_cpu,
                            args.quiet_wait)
            steps.append(step)
            log(json.dumps(asdict(step) | {"passed": step.passed}))
            if target.process.poll() is not None:
                log(f"{name} died: see {workdir}/{name}.log")
                stopped.add(name)
            elif not step.passed and not args.keep_going:
                stopped.add(name)
            time.sleep(args.settle)

    profile: Profile | None = None
    if args.profile and "sdpbx" in targets and targets["sdpbx"].process.poll() is None:
        passing = [s.rate for s in steps if s.target == "sdpbx" and s.passed]
        if passing:
            profile = profile_sdpbx(targets["sdpbx"], max(passing), args.duration, workdir,
                                    users_csv, sipp_cpu, args.quiet_wait)
    PROCESSES.stop_all()
    shutil.rmtree(store_dir, ignore_errors=True)

    print(f"\nREGISTER with digest (qop=auth), {args.users} users, {args.duration:g} s steps, "
          f"targets pinned to CPU {target_cpu}, SIPp to CPU {sipp_cpu}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print(format_table(steps, args.rates))
    print()
    for line in verdict(steps):
        print(line)
    noisy = [s for s in steps if s.other_cpu_s > 0.1 * s.wall_s]
    if noisy:
        print(f"note: {len(noisy)} step(s) ran while other processes used > 10% of a core "
              "(see other_cpu_s in the JSON)")
    failing = [s for s in steps if s.errors]
    for step in failing:
        print(f"{step.target} at {step.rate}/s errors: {step.errors}")
    if profile is not None:
        print(f"\nsdpbx profile (py-spy) at {profile.rate} registrations/s:")
        if profile.step is not None:
            print(f"  during the profile: {profile.step.successful} ok, {profile.step.failed} "
                  f"failed, {_us(profile.step.cpu_us_per_registration)} us CPU/registration")
        if profile.error:
            print("  ", profile.error)
        else:
            print(f"  {profile.samples} busy samples (threads waiting for work left out); "
                  f"raw stacks in {profile.raw_file}")
            print("  own time (leaf frames):")
            for name, share in profile.own:
                print(f"    {share:5.1f}%  {name}")
            print("  inclusive time:")
            for name, share in profile.inclusive:
                print(f"    {share:5.1f}%  {name}")
    if args.json:
        args.json.write_text(json.dumps({
            "rates": args.rates, "duration_s": args.duration, "users": args.users,
            "pinned": target_cpu is not None,
            "steps": [asdict(s) | {"passed": s.passed} for s in steps],
            "profile": None if profile is None else asdict(profile),
        }, indent=1))
    print(f"\nlogs and SIPp statistics: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
