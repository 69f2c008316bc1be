"""Relay capacity of `edge.io.rtp_relay.RtpRelay` on uvloop against a bare uvloop relay.

For each number of sessions: a C generator (`udpgen`, compiled from /work/shared/bench-ref at
run time into a temp dir) sends 172-byte RTP packets (20 ms G.711) flat out, round-robin over
the a-side RTP ports of N sessions; the relay forwards them to a C sink. Generator and sink run on
CPU0, the relay process alone on CPU1 (`taskset`). Relay CPU is read from /proc/<pid>/stat.
The baseline, measured in the same run, is one DatagramProtocol per socket forwarding each
datagram with one `sendto` (no session logic). Loopback only, bounded in count and time.

    .venv/bin/python bench/rtp_relay.py            # 1, 50, 200 sessions, 5 s per step
    .venv/bin/python bench/rtp_relay.py --quick    # 1 and 50 sessions, 2 s per step
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
UDPGEN_C = Path("/work/shared/bench-ref/media/udpgen.c")
LOCAL = "127.0.0.1"
PACKET_SIZE = 172  # 12-byte RTP header + 160 bytes of G.711 (20 ms at 8 kHz)
RTP_RANGE = (46000, 47999)
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- the relay process (runs pinned on CPU1) ----------------------------------------------


class _Bare:
    """The baseline: one protocol per socket, one sendto per datagram, a counter."""

    __slots__ = ("dest", "n", "out")

    def __init__(self, dest: tuple[str, int]) -> None:
        self.dest = dest
        self.out: Any = None
        self.n = 0


async def serve(mode: str, sessions: int, sink: int, ports_file: str, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    ports: list[int] = []
    counted: list[Any] = []
    relay: Any = None
    if mode == "ours":
        sys.path.insert(0, str(ROOT))
        from edge.io.rtp_relay import RtpRelay

        relay = RtpRelay(LOCAL, *RTP_RANGE)
        for _ in range(sessions):
            call = await relay.open_session((LOCAL, 9), (LOCAL, sink))
            ports.append(call.a_ports[0])
    else:
        class Leg(asyncio.DatagramProtocol):
            def __init__(self, state: _Bare) -> None:
                self.state = state

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                state = self.state
                state.out.sendto(data, state.dest)
                state.n += 1

        for _ in range(sessions):
            state = _Bare((LOCAL, sink))
            rx, _ = await loop.create_datagram_endpoint(
                lambda state=state: Leg(state), local_addr=(LOCAL, 0)  # type: ignore[misc]
            )
            out, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(LOCAL, 0)
            )
            state.out = out
            counted.append(state)
            ports.append(rx.get_extra_info("sockname")[1])
    _write_ports(ports_file, ports)  # before any load starts: blocking is harmless here
    print(json.dumps({"ready": True}), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), deadline)
    relayed = relay.packets_relayed if relay is not None else sum(s.n for s in counted)
    print(json.dumps({"relayed": relayed}), flush=True)


def _write_ports(path: str, ports: list[int]) -> None:
    Path(path).write_text("".join(f"{p}\n" for p in ports))


# --- the driver ---------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, from /proc/<pid>/stat (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {}


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOCAL, 0))
        port: int = s.getsockname()[1]
        return port


class Runner:
    def __init__(self, udpgen: str, pin: bool) -> None:
        self.udpgen = udpgen
        self.pin = pin
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, argv: list[str], cpu: int) -> subprocess.Popen[str]:
        if self.pin:
            argv = ["taskset", "-c", str(cpu), *argv]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)

    def step(self, mode: str, sessions: int, seconds: float, tmp: str) -> dict[str, Any]:
        sink_port = free_udp_port()
        ports_file = os.path.join(tmp, f"ports-{mode}-{sessions}")
        sink = self.start([self.udpgen, "sink", str(sink_port), str(seconds + 8)], 0)
        relay = self.start([sys.executable, __file__, "--serve", mode, "--sessions",
                            str(sessions), "--sink", str(sink_port), "--ports-file", ports_file,
                            "--deadline", str(seconds + 20)], 1)
        assert relay.stdout is not None
        line = relay.stdout.readline()
        if not line.startswith('{"ready"'):
            raise RuntimeError(f"relay did not start: {line}{relay.communicate(timeout=5)[1]}")
        time.sleep(0.3)
        cpu0 = proc_cpu_s(relay.pid)
        ports = Path(ports_file).read_text().split()
        # udpgen connects to its port argument for one destination, round-robins over @FILE.
        target = [ports[0], "0", str(seconds), str(PACKET_SIZE)]
        if len(ports) > 1:
            target = ["0", "0", str(seconds), str(PACKET_SIZE), f"@{ports_file}"]
        gen = self.start([self.udpgen, "send", *target], 0)
        g_out, _ = gen.communicate(timeout=seconds + 15)
        time.sleep(0.3)  # let the relay drain its socket buffers
        cpu = proc_cpu_s(relay.pid) - cpu0
        relay.terminate()
        r_out, r_err = relay.communicate(timeout=10)
        s_out, _ = sink.communicate(timeout=seconds + 15)
        for proc in (gen, relay, sink):
            self.procs.remove(proc)
        g, r, s = last_json(g_out), last_json(r_out), last_json(s_out)
        sent, relayed, received = g.get("sent") or 0, r.get("relayed") or 0, s.get("received", 0)
        if not relayed:
            raise RuntimeError(f"nothing relayed ({mode}, {sessions}): {r_err[-500:]}")
        return {
            "mode": mode, "sessions": sessions, "gen_pps": round(sent / seconds),
            "relay_pps": round(relayed / seconds), "relayed": relayed,
            "loss_pct": round(100 * (1 - received / sent), 1) if sent else None,
            "relay_cpu_s": round(cpu, 2), "cpu_us_per_pkt": round(cpu * 1e6 / relayed, 2),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", default="1,50,200", help="comma-separated session counts")
    ap.add_argument("--seconds", type=float, default=5.0, help="generator time per step")
    ap.add_argument("--quick", action="store_true", help="1 and 50 sessions, 2 s per step")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON too")
    ap.add_argument("--serve", choices=["ours", "bare"], help=argparse.SUPPRESS)
    ap.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ports-file", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve:
        import uvloop

        uvloop.run(serve(args.serve, int(args.sessions), args.sink, args.ports_file,
                         min(args.deadline, 120.0)))
        return

    counts = [1, 50] if args.quick else [int(n) for n in args.sessions.split(",")]
    seconds = 2.0 if args.quick else args.seconds
    if not 0 < seconds <= 30 or not all(0 < n <= 250 for n in counts):
        sys.exit("bounded: 0 < seconds <= 30, 1..250 sessions (4 ports each in 46000-47999)")
    gcc = shutil.which("gcc")
    if gcc is None or not UDPGEN_C.exists():
        sys.exit(f"needs gcc and {UDPGEN_C} to build the load generator")
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rtp-bench-") as tmp:
        udpgen = os.path.join(tmp, "udpgen")
        subprocess.run([gcc, "-O2", "-o", udpgen, str(UDPGEN_C)], check=True, timeout=60)
        runner = Runner(udpgen, pin)
        try:
            for n in counts:
                for mode in ("bare", "ours"):
                    rows.append(runner.step(mode, n, seconds, tmp))
                    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                    time.sleep(0.5)
        finally:
            runner.stop_all()
    print(f"relay pinned to CPU1: {pin}; {seconds:g} s per step, {PACKET_SIZE}-byte packets, "
          "generator unpaced (the relay's ceiling)")
    print("| sessions | relay | gen pps | relayed pps | sink loss % | relay CPU s | CPU µs/pkt |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['sessions']} | {r['mode']} | {r['gen_pps']:,} | {r['relay_pps']:,} | "
              f"{r['loss_pct']} | {r['relay_cpu_s']} | {r['cpu_us_per_pkt']} |")
    print()
    print("| sessions | ours/bare CPU per packet | ours/bare relayed pps |")
    print("|---|---|---|")
    for n in counts:
        bare = next(r for r in rows if r["sessions"] == n and r["mode"] == "bare")
        ours = next(r for r in rows if r["sessions"] == n and r["mode"] == "ours")
        print(f"| {n} | {ours['cpu_us_per_pkt'] / bare['cpu_us_per_pkt']:.2f} | "
              f"{ours['relay_pps'] / bare['relay_pps']:.2f} |")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
