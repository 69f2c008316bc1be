"""IVR capacity of the media engine (`edge.io.media_engine`) on one core, against relaying.

Each step runs two processes on 127.0.0.1, every one stopped by its PID:
- the server (pinned to CPU1 with `taskset`, uvloop): an `RtpRelay` and a `MediaEngine`. In
  `ivr` mode it opens N relayed calls, attaches leg a of each to the engine (PCMU +
  telephone-event 101), plays a prompt to every caller in a loop (/work/shared/audio/
  welcome_8k.wav) and collects their digits; in `relay` mode (the baseline) it opens N calls
  relayed both ways; in `conference` mode N parties in one room (`Endpoint.join`: their in-band
  detectors rest while they are in it), recorded with `--conference-record`.
- the load (pinned to CPU0, plain Python sockets): the parties. Each sends 50 packets/s of PCMU
  (a speech prompt, so the in-band detector sees speech), the N streams spread evenly over each
  20 ms, and receives what comes back. With `--dtmf rfc4733` (default) each party presses a key
  every ~3 s as RFC 4733 events (the engine then turns its in-band detector off for that leg);
  with `--dtmf inband` as in-band tones (the Goertzel detector runs on every frame, all the
  time: the worst case). In `relay` mode both ends of each call send.
CPU is the server's user + system time from /proc/PID/stat over the measured window (after a
warm-up), so the load's CPU is not counted. Late ticks are the engine's: ticks that ran more
than 5 ms after their due time on the media clock (DESIGN §5, issue 7 item 8).

    .venv/bin/python bench/ivr.py                       # ladder 100..600, conference of 20
    .venv/bin/python bench/ivr.py --quick               # 100 and 300, 4 s steps
    .venv/bin/python bench/ivr.py --ladder 300,500 --dtmf inband --seconds 8
    .venv/bin/python bench/ivr.py --ladder 400 --profile 400   # + py-spy profile of that step
    .venv/bin/python bench/ivr.py --ladder "" --conference 20 --conference-record
    .venv/bin/python bench/ivr.py --per-leg 300         # in process: engine CPU per leg/tick

Bounded: at most 1500 calls, 30 s per step; the server exits on its own after a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from rtp_relay import (  # noqa: E402
    ProcessGroup,
    proc_cpu_s,
    wait_until_quiet,
)

from edge.media import g711  # noqa: E402
from edge.media.audio import decode_wav, tone  # noqa: E402
from edge.rtp.dtmf import DtmfSender  # noqa: E402

LOCAL = "127.0.0.1"
PROMPT = Path("/work/shared/audio/welcome_8k.wav")
RTP_RANGE = (30000, 39999)  # 4 ports per call: room for 2,500
LADDER = (100, 200, 300, 400, 500, 600)
QUICK = (100, 300)
MAX_CALLS = 1500
CONFERENCE = 20
WARMUP_S = 1.5
GOAL_CALLS = 300
GOAL_LATE_PCT = 1.0
GOAL_CONF_PCT = 5.0
TE_PT = 101
DIGIT_EVERY_S = 3.0
_HEADER = struct.Struct("!BBHII")


# --- the server (CPU1) --------------------------------------------------------------------


async def serve(mode: str, calls: int, peers: tuple[int, int], ports_file: str,
                deadline: float, prompt: Any, inband: bool, freeze: bool,
                record: str | None) -> None:
    from edge.io.media_engine import Codec, Endpoint, MediaEngine
    from edge.io.rtp_relay import RtpRelay

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    relay = RtpRelay(LOCAL, *RTP_RANGE)
    side_a, side_b = (LOCAL, peers[0]), (LOCAL, peers[1])
    lines: list[str] = []
    engine: MediaEngine | None = None
    digits = Counter[str]()
    tasks: list[asyncio.Task[None]] = []

    async def collect_digits(endpoint: Endpoint) -> None:
        while True:
            press = await endpoint.digits.get()
            digits[press.source] += 1

    if mode != "relay":
        engine = MediaEngine(relay)
        engine.start()
    for _ in range(calls):
        call = await relay.open_session(side_a, side_b)
        lines.append(f"{call.a_ports[0]} {call.b_ports[0]}")
        if engine is not None:
            endpoint = engine.attach(call, "a", Codec(0, "PCMU", TE_PT))
            endpoint.inband_dtmf = inband
            if mode == "conference":
                endpoint.join("bench")
            else:
                endpoint.play(prompt, loop=0)
                tasks.append(loop.create_task(collect_digits(endpoint)))
    room_recording = None
    if engine is not None and mode == "conference" and record:
        room_recording = engine.rooms["bench"].start_recording(record)
    _write_lines(ports_file, lines)  # before any load starts: blocking is harmless
    if freeze:
        gc.freeze()  # the calls' long-lived objects leave the collector's scans
    snapshot: dict[str, float] = {}

    def take_snapshot() -> None:
        snapshot.update(_engine_counters(engine, digits))
        if engine is not None:
            engine.stats.max_lag_s = 0.0

    loop.add_signal_handler(signal.SIGUSR1, take_snapshot)
    # The longest garbage-collector pause: it stops the media clock like any other work.
    gc_max = [0.0]
    gc_started = [0.0]

    def gc_watch(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_max[0] = max(gc_max[0], time.perf_counter() - gc_started[0])

    gc.callbacks.append(gc_watch)
    print(json.dumps({"ready": True}), flush=True)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), deadline)
    end = _engine_counters(engine, digits)
    result: dict[str, Any] = {k: round(end[k] - snapshot.get(k, 0.0), 6) for k in end}
    result["relayed"] = relay.packets_relayed
    result["digits"] = dict(digits)  # the whole run, as the load counts what it sent
    result["gc_max_ms"] = round(gc_max[0] * 1000, 2)
    if engine is not None:
        result["max_lag_ms"] = round(engine.stats.max_lag_s * 1000, 2)
        result["tick_errors"] = engine.stats.tick_errors
        await engine.aclose()
    if room_recording is not None and room_recording.done():
        result["recorded_s"] = round(room_recording.result().duration_s, 2)
    for task in tasks:
        task.cancel()
    relay.close()
    print(json.dumps(result), flush=True)


def _write_lines(path: str, lines: list[str]) -> None:
    Path(path).write_text("".join(f"{line}\n" for line in lines))


def _engine_counters(engine: Any, digits: Counter[str]) -> dict[str, float]:
    if engine is None:
        return {}
    s = engine.stats
    return {"ticks": s.ticks, "late_ticks": s.late_ticks, "skipped_ticks": s.skipped_ticks,
            "busy_s": s.busy_s, "mix_s": s.mix_s, "packets_sent": s.packets_sent}


# --- the load (CPU0) ----------------------------------------------------------------------


def _bind() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
    sock.bind((LOCAL, 0))
    sock.setblocking(False)
    return sock


def run_load(mode: str, ports_file: str, seconds: float, dtmf: str) -> None:
    """The parties: prints {"a", "b"} ports, waits for "go" on stdin, sends for `seconds`,
    prints one JSON line of counts."""
    a, b = _bind(), _bind()
    print(json.dumps({"a": a.getsockname()[1], "b": b.getsockname()[1]}), flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    rng = random.Random(7)
    pairs = [tuple(int(p) for p in line.split()) for line in Path(ports_file).read_text()
             .splitlines() if line.strip()]
    speech = decode_wav(PROMPT.read_bytes())
    frames = [g711.ulaw_encode(speech[i:i + 160]) for i in range(0, len(speech) - 159, 160)]
    key = g711.ulaw_encode(_key_tone("5", 100))
    key_frames = [key[i:i + 160] for i in range(0, len(key), 160)]
    # One stream per party (and per callee in relay mode): socket, destination, state.
    streams: list[dict[str, Any]] = []
    for a_port, b_port in pairs:
        sides = [(a, a_port)] + ([(b, b_port)] if mode == "relay" else [])
        for sock, port in sides:
            streams.append({"sock": sock, "dest": (LOCAL, port), "ssrc": 0x10000 + len(streams),
                            "seq": rng.getrandbits(16), "ts": rng.getrandbits(32),
                            "frame": rng.randrange(len(frames)),
                            "next_digit": rng.uniform(0.5, DIGIT_EVERY_S),
                            "sender": None, "inband": 0})
    count = len(streams)
    for sock in (a, b):  # what the engine sent before the parties started
        with contextlib.suppress(BlockingIOError):
            while True:
                sock.recv(2048)
    sent = received = digits = 0
    late: list[float] = []
    start = time.monotonic() + 0.05
    end = start + seconds
    cycle = 0
    index = 0
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = start + cycle * 0.02 + index * 0.02 / count
        while due <= now:
            late.append(now - due)
            st = streams[index]
            sent += _send_one(st, now - start, mode, dtmf, frames, key_frames)
            if st.pop("digit_done", False):
                digits += 1
            index += 1
            if index == count:
                index, cycle = 0, cycle + 1
            due = start + cycle * 0.02 + index * 0.02 / count
        for sock in (a, b):
            while True:
                try:
                    sock.recv(2048)
                except BlockingIOError:
                    break
                received += 1
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, 0.001))
    late.sort()
    print(json.dumps({"sent": sent, "received": received, "digits_sent": digits,
                      "streams": count, "secs": seconds,
                      "late_p99_ms": round(1000 * late[int(0.99 * (len(late) - 1))], 2)
                      if late else None,
                      "late_max_ms": round(1000 * late[-1], 2) if late else None}), flush=True)


def _key_tone(key: str, ms: float) -> Any:
    rows = {"5": (770.0, 1336.0)}
    low, high = rows[key]
    return tone([low, high], ms, -10.0)


def _send_one(st: dict[str, Any], t: float, mode: str, dtmf: str, frames: list[bytes],
              key_frames: list[bytes]) -> int:
    """One 20 ms tick of one stream: its RFC 4733 packets, or an audio frame."""
    sock, dest = st["sock"], st["dest"]
    packets: list[bytes] = []
    if mode == "ivr" and dtmf != "none" and t >= st["next_digit"]:
        st["next_digit"] = t + DIGIT_EVERY_S
        if dtmf == "rfc4733":
            st["sender"] = DtmfSender("5", payload_type=TE_PT, ssrc=st["ssrc"])
            st["ended"] = False
        else:
            st["inband"] = len(key_frames)
    sender = st["sender"]
    if sender is not None:
        packets = sender.packets_for_tick(st["seq"], st["ts"])
        if packets and not st["ended"] and packets[0][13] & 0x80:
            # Counted when its first end packet (E bit, RFC 4733 §2.5.1.4) leaves: the
            # engine emits the digit on that packet.
            st["ended"] = st["digit_done"] = True
        if sender.done:
            st["sender"] = None
    if packets:
        for packet in packets:
            sock.sendto(packet, dest)
        st["seq"] = (st["seq"] + len(packets)) & 0xFFFF
    else:
        if st["inband"]:
            payload = key_frames[len(key_frames) - st["inband"]]
            st["inband"] -= 1
            if st["inband"] == len(key_frames) - 2:
                st["digit_done"] = True  # 40 ms of tone out: the detector needs 25 ms
        else:
            payload = frames[st["frame"]]
            st["frame"] = (st["frame"] + 1) % len(frames)
        sock.sendto(_HEADER.pack(0x80, 0, st["seq"], st["ts"], st["ssrc"]) + payload, dest)
        st["seq"] = (st["seq"] + 1) & 0xFFFF
        packets = [b""]
    st["ts"] = (st["ts"] + 160) & 0xFFFFFFFF
    return len(packets)


# --- per leg, in process ------------------------------------------------------------------


async def per_leg(legs: int, speech: Any, ticks: int = 500, runs: int = 3) -> None:
    """The engine's tick cost per leg (`MediaEngine._process`, driven by hand: no timer, no
    load process): each leg gets one PCMU packet of speech per tick straight into its jitter
    buffer and sends its packet to a socket nobody reads. Best of `runs`, after 50 ticks."""
    from edge.io.media_engine import Codec, MediaEngine
    from edge.io.rtp_relay import RtpRelay

    frames = [g711.ulaw_encode(speech[i:i + 160]) for i in range(0, len(speech) - 159, 160)]
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((LOCAL, 0))
    sink_addr = sink.getsockname()
    modes = {"play only": "play", "play + in-band DTMF": "inband",
             "conference (rooms of 20)": "conference"}
    try:
        for label, mode in modes.items():
            best = float("inf")
            for _ in range(runs):
                relay = RtpRelay(LOCAL, *RTP_RANGE)
                engine = MediaEngine(relay)  # not started: ticks are driven here
                endpoints = []
                for i in range(legs):
                    call = await relay.open_session(sink_addr, (LOCAL, 9))
                    endpoint = engine.attach(call, "a", Codec(0, "PCMU", TE_PT))
                    if mode == "conference":
                        endpoint.join(f"room{i // CONFERENCE}")
                    else:
                        endpoint.inband_dtmf = mode == "inband"
                        endpoint.play(speech, loop=0)
                    endpoints.append(endpoint)
                now = 1000.0
                spent = 0.0
                for tick in range(ticks + 50):
                    for i, endpoint in enumerate(endpoints):
                        endpoint.jitter.push(_HEADER.pack(
                            0x80, 0, tick & 0xFFFF, (tick * 160) & 0xFFFFFFFF, 0x10000 + i)
                            + frames[(tick + 7 * i) % len(frames)], now)
                    started = time.perf_counter()
                    engine._process(now)
                    if tick >= 50:
                        spent += time.perf_counter() - started
                    now += 0.02
                best = min(best, spent / ticks / legs)
                await engine.aclose()
                relay.close()
            print(f"{label:28s} {legs} legs: {best * 1e6:6.2f} us per leg and tick "
                  f"({100 * best * 50:.3f}% of a core per leg)")
    finally:
        sink.close()


# --- the driver ---------------------------------------------------------------------------


def last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            result: dict[str, Any] = json.loads(line)
            return result
    return {}


class Runner(ProcessGroup):
    """The benchmark's processes (the relay runner's pinning and stopping) and its options."""

    def __init__(self, pin: bool, realtime: bool = False, no_inband: bool = False,
                 gc_freeze: bool = False, record: bool = False) -> None:
        super().__init__(pin, realtime)
        self.gc_freeze = gc_freeze
        self.record = record
        self.no_inband = no_inband

    def step(self, mode: str, calls: int, seconds: float, dtmf: str, tmp: str,
             profile: str | None = None) -> dict[str, Any]:
        ports_file = os.path.join(tmp, f"ports-{mode}-{calls}")
        load_mode = "relay" if mode == "relay" else ("conf" if mode == "conference" else "ivr")
        load = self.start([sys.executable, __file__, "--load", load_mode, "--ports-file",
                           ports_file, "--seconds", str(seconds + WARMUP_S), "--dtmf", dtmf],
                          0, stdin=True)
        assert load.stdout is not None and load.stdin is not None
        peers = json.loads(load.stdout.readline() or "{}")
        if "a" not in peers:
            raise RuntimeError(f"load did not start: {load.communicate(timeout=5)[1]}")
        server = self.start([sys.executable, __file__, "--serve", mode, "--calls", str(calls),
                             "--peers", f"{peers['a']},{peers['b']}", "--ports-file",
                             ports_file, "--deadline", str(seconds + 60),
                             *(["--no-inband"] if self.no_inband else []),
                             *(["--gc-freeze"] if self.gc_freeze else []),
                             *(["--record", os.path.join(tmp, "room.wav")]
                               if self.record and mode == "conference" else [])], 1)
        assert server.stdout is not None
        line = server.stdout.readline()
        if not line.startswith('{"ready"'):
            raise RuntimeError(f"server did not start: {line}{server.communicate(timeout=5)[1]}")
        load.stdin.write("go\n")
        load.stdin.flush()
        time.sleep(WARMUP_S)
        server.send_signal(signal.SIGUSR1)
        cpu0 = proc_cpu_s(server.pid)
        started = time.monotonic()
        spy: subprocess.Popen[str] | None = None
        if profile is not None:
            spy = self.start([profile, "record", "-r", "250", "-d", str(int(seconds)), "-p",
                              str(server.pid), "-f", "raw", "-o",
                              os.path.join(tmp, "profile.txt")], 0)
        l_out, l_err = load.communicate(timeout=seconds + 30)
        wall = time.monotonic() - started
        cpu = proc_cpu_s(server.pid) - cpu0
        server.terminate()
        s_out, s_err = server.communicate(timeout=20)
        self.procs.remove(load)
        self.procs.remove(server)
        if spy is not None:
            spy.communicate(timeout=seconds + 30)
            self.procs.remove(spy)
        g, s = last_json(l_out), last_json(s_out)
        if not g or not s:
            raise RuntimeError(f"step {mode} {calls} failed: {l_err[-400:]} {s_err[-800:]}")
        row: dict[str, Any] = {
            "mode": mode, "calls": calls, "dtmf": dtmf, "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2), "core_pct": round(100 * cpu / wall, 1),
            "cpu_pct_per_call": round(100 * cpu / wall / calls, 3),
            "load_sent": g["sent"], "load_received": g["received"],
            "load_late_p99_ms": g["late_p99_ms"], "digits_sent": g["digits_sent"],
        }
        # What the parties received while sending, against 50 packets/s per stream.
        expected = 50 * calls * (seconds + WARMUP_S) * (2 if mode == "relay" else 1)
        row["received_pct"] = round(100 * g["received"] / expected, 1)
        row["gc_max_ms"] = s.get("gc_max_ms")
        if mode != "relay":
            ticks = s.get("ticks", 0)
            row.update({
                "ticks": ticks, "ticks_per_s": round(ticks / wall, 1),
                "late_ticks": s.get("late_ticks", 0), "skipped_ticks": s.get("skipped_ticks"),
                "late_pct": round(100 * s.get("late_ticks", 0) / ticks, 2) if ticks else None,
                "max_lag_ms": s.get("max_lag_ms"), "tick_errors": s.get("tick_errors"),
                "engine_busy_pct": round(100 * s.get("busy_s", 0.0) / wall, 2),
                "mix_pct": round(100 * s.get("mix_s", 0.0) / wall, 3),
                "digits_got": sum(s.get("digits", {}).values()),
            })
        if "recorded_s" in s:
            row["recorded_s"] = s["recorded_s"]
        return row


def print_profile(path: str, top: int = 20) -> None:
    """py-spy raw (collapsed) stacks: the functions with the most samples on top of the stack
    (own time), and the share of samples under each engine phase."""
    own = Counter[str]()
    total = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        own[stack.split(";")[-1]] += n
    print(f"\npy-spy: {total} samples; own time, top {top}:")
    for name, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {name}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ladder", default=",".join(map(str, LADDER)),
                    help="comma-separated numbers of concurrent IVR calls")
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time per step")
    ap.add_argument("--quick", action="store_true", help="100 and 300 calls, 4 s steps")
    ap.add_argument("--dtmf", choices=["rfc4733", "inband", "none"], default="rfc4733",
                    help="how the parties press keys (inband: Goertzel runs all the time)")
    ap.add_argument("--conference", type=int, default=CONFERENCE,
                    help=f"parties in the conference step (0: none; default {CONFERENCE})")
    ap.add_argument("--no-inband", action="store_true",
                    help="turn the engine's in-band DTMF detector off on every leg "
                         "(Endpoint.inband_dtmf = False)")
    ap.add_argument("--gc-freeze", action="store_true",
                    help="gc.freeze() in the server once its calls are set up")
    ap.add_argument("--no-baseline", action="store_true", help="skip the relay steps")
    ap.add_argument("--keep-going", action="store_true", help="go on after a failing step")
    ap.add_argument("--profile", type=int, metavar="CALLS",
                    help="py-spy the server during the IVR step of this many calls")
    ap.add_argument("--profile-conference", action="store_true",
                    help="py-spy the server during the conference step")
    ap.add_argument("--conference-record", action="store_true",
                    help="record the conference room (Room.start_recording) during its step")
    ap.add_argument("--per-leg", type=int, metavar="LEGS",
                    help="instead of the steps: the engine's CPU per leg and tick in this "
                         "process, ticks driven by hand on LEGS legs with real sockets "
                         "(play only, play + in-band DTMF, conference rooms of 20)")
    ap.add_argument("--json", help="write the rows to this file")
    ap.add_argument("--realtime", action="store_true",
                    help="run server and load under SCHED_FIFO (chrt, needs root): on a shared "
                         "machine, keeps neighbours from deciding the late ticks")
    ap.add_argument("--quiet-wait", type=float, default=0.0, metavar="SECONDS",
                    help="before each step, wait up to this long for the machine to be nearly "
                         "idle (< 0.3 busy cores)")
    ap.add_argument("--serve", choices=["ivr", "relay", "conference"], help=argparse.SUPPRESS)
    ap.add_argument("--load", choices=["ivr", "relay", "conf"], help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--peers", help=argparse.SUPPRESS)
    ap.add_argument("--ports-file", help=argparse.SUPPRESS)
    ap.add_argument("--deadline", type=float, default=60.0, help=argparse.SUPPRESS)
    ap.add_argument("--record", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.serve:
        import uvloop

        peers = tuple(int(p) for p in args.peers.split(","))
        prompt = decode_wav(PROMPT.read_bytes())
        uvloop.run(serve(args.serve, args.calls, (peers[0], peers[1]), args.ports_file,
                         min(args.deadline, 120.0), prompt, not args.no_inband,
                         args.gc_freeze, args.record))
        return
    if args.per_leg is not None:
        if not 20 <= args.per_leg <= MAX_CALLS:
            sys.exit(f"bounded: 20..{MAX_CALLS} legs")
        import uvloop

        uvloop.run(per_leg(args.per_leg, decode_wav(PROMPT.read_bytes())))
        return
    if args.load:
        dtmf = "none" if args.load == "conf" else args.dtmf
        run_load(args.load, args.ports_file, min(args.seconds, 40.0), dtmf)
        return

    counts = list(QUICK) if args.quick else [int(n) for n in args.ladder.split(",") if n]
    seconds = 4.0 if args.quick else args.seconds
    if not 0 < seconds <= 30 or not all(0 < n <= MAX_CALLS for n in counts):
        sys.exit(f"bounded: 0 < seconds <= 30, 1..{MAX_CALLS} calls")
    if not 0 <= args.conference <= 200:
        sys.exit("bounded: 0..200 conference parties")
    pin = shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2
    spy = None
    if args.profile is not None or args.profile_conference:
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            sys.exit("--profile needs py-spy (.venv/bin/pip install py-spy)")
    rows: list[dict[str, Any]] = []
    if not 0 <= args.quiet_wait <= 600:
        sys.exit("bounded: 0 <= --quiet-wait <= 600")
    runner = Runner(pin, args.realtime, args.no_inband, args.gc_freeze,
                    args.conference_record)
    with tempfile.TemporaryDirectory(prefix="ivr-bench-") as tmp:
        try:
            failed = False
            for n in counts:
                modes = ["ivr"] if args.no_baseline else ["relay", "ivr"]
                for mode in modes:
                    if mode == "ivr" and failed:
                        continue
                    profile = spy if mode == "ivr" and n == args.profile else None
                    if args.quiet_wait:
                        wait_until_quiet(args.quiet_wait)
                    row = runner.step(mode, n, seconds, args.dtmf, tmp, profile)
                    rows.append(row)
                    print(json.dumps(row), file=sys.stderr, flush=True)
                    if profile is not None:
                        print_profile(os.path.join(tmp, "profile.txt"))
                    if mode == "ivr" and (row["late_pct"] or 0) >= GOAL_LATE_PCT \
                            and not args.keep_going:
                        failed = True
                    time.sleep(0.5)
            if args.conference:
                if args.quiet_wait:
                    wait_until_quiet(args.quiet_wait)
                profile = spy if args.profile_conference else None
                row = runner.step("conference", args.conference, seconds, "none", tmp, profile)
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if profile is not None:
                    print_profile(os.path.join(tmp, "profile.txt"))
        finally:
            runner.stop_all()
    report(rows, pin, seconds, args.dtmf, args.realtime)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def report(rows: list[dict[str, Any]], pin: bool, seconds: float, dtmf: str,
           realtime: bool) -> None:
    print(f"server pinned to CPU1, load to CPU0: {pin}; SCHED_FIFO: {realtime}; {seconds:g} s "
          f"measured per step after {WARMUP_S:g} s warm-up; parties press keys as: {dtmf}")
    print("| calls | mode | server CPU % of a core | CPU % per call | ticks/s | late ticks % "
          "| max lag ms | GC max ms | engine busy % | received % | digits got/sent |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        if r["mode"] == "conference":
            continue
        engine = r["mode"] != "relay"
        print(f"| {r['calls']} | {r['mode']} | {r['core_pct']} | {r['cpu_pct_per_call']} | "
              f"{r.get('ticks_per_s', '-') if engine else '-'} | "
              f"{r.get('late_pct', '-') if engine else '-'} | "
              f"{r.get('max_lag_ms', '-') if engine else '-'} | {r.get('gc_max_ms', '-')} | "
              f"{r.get('engine_busy_pct', '-') if engine else '-'} | {r['received_pct']} | "
              f"{str(r.get('digits_got', '-')) + '/' + str(r['digits_sent']) if engine else '-'} |")
    print()
    for r in rows:
        if r["mode"] != "ivr":
            continue
        base = next((b for b in rows if b["mode"] == "relay" and b["calls"] == r["calls"]), None)
        if base and base["cpu_pct_per_call"]:
            print(f"{r['calls']} calls: IVR / relayed call CPU = "
                  f"{r['cpu_pct_per_call'] / base['cpu_pct_per_call']:.2f}")
    passing = [r for r in rows if r["mode"] == "ivr" and (r["late_pct"] or 0) < GOAL_LATE_PCT]
    best = max((r["calls"] for r in passing), default=0)
    print(f"max IVR calls with < {GOAL_LATE_PCT:g}% late ticks: {best} "
          f"(goal >= {GOAL_CALLS}: {'met' if best >= GOAL_CALLS else 'NOT met'})")
    for r in rows:
        if r["mode"] == "conference":
            recorded = (f", room recorded {r['recorded_s']} s" if "recorded_s" in r else "")
            print(f"conference of {r['calls']}: server {r['core_pct']}% of a core in all "
                  f"(engine ticks {r['engine_busy_pct']}%, of which rooms {r['mix_pct']}%"
                  f"{recorded}), late ticks {r['late_pct']}% (goal < {GOAL_CONF_PCT:g}% of a "
                  f"core: {'met' if r['core_pct'] < GOAL_CONF_PCT else 'NOT met'})")


if __name__ == "__main__":
    main()
