"""Benchmark of the SIP message codec (`edge.sip.message`): parse, parse + the header reads a
B2BUA makes, serialize, and parse + serialize, in messages per second per core.

Run from the repository root (about 3 s; CPU time, one core):

    .venv/bin/python bench/sip_codec.py             # the table
    .venv/bin/python bench/sip_codec.py --profile   # cProfile of the parse + access loop
    .venv/bin/python bench/sip_codec.py --check     # exit 1 when parse is under the target

A baseline runs in the same process on the same bytes: the standard library's
`email.parser.BytesHeaderParser`, a generic RFC 822 header parser (no SIP rules, no body framing,
no structured headers), so the ratio shows what our SIP-specific work costs on this machine.
"""

from __future__ import annotations

import argparse
import cProfile
import email.parser
import email.policy
import functools
import io
import platform
import pstats
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# Runnable as `python bench/sip_codec.py` from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.sip.message import Request, Response, parse_message

TARGET_PARSES_PER_SECOND = 40_000

_SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.101\r\n"
    b"t=0 0\r\n"
    b"m=audio 49172 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

# A typical INVITE as a softphone sends it through one proxy (~900 bytes with its SDP).
INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;received=192.0.2.101;branch=z9hG4bK74bf9;rport=5060\r\n"
    b"Max-Forwards: 69\r\n"
    b"Record-Route: <sip:ss1.atlanta.example.com;lr>\r\n"
    b"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"To: <sip:bob@biloxi.example.com>\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.101:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer, 100rel\r\n"
    b"User-Agent: Example-Softphone/5.2.1\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_SDP)).encode() + b"\r\n"
    b"\r\n" + _SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP ss1.atlanta.example.com:5060;branch=z9hG4bK2d4790.1\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.101:5060;received=192.0.2.101;branch=z9hG4bK74bf9;rport=5060\r\n"
    b"Record-Route: <sip:ss1.atlanta.example.com;lr>\r\n"
    b"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n"
    b"To: <sip:bob@biloxi.example.com>;tag=8321234356\r\n"
    b"Call-ID: 3848276298220188511@atlanta.example.com\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.201:5060>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(_SDP)).encode() + b"\r\n"
    b"\r\n" + _SDP
)


def parse_only(data: bytes) -> object:
    return parse_message(data)


def parse_and_access(data: bytes) -> object:
    """What a B2BUA reads of every message: transaction and dialog identifiers."""
    message = parse_message(data)
    return (
        message.top_via.branch,
        message.cseq,
        message.call_id,
        message.from_addr.tag,
        message.to_addr.tag,
    )


def parse_and_serialize(data: bytes) -> object:
    return parse_message(data).to_bytes()


_EMAIL_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


def baseline_parse(data: bytes) -> object:
    return _EMAIL_PARSER.parsebytes(data)


def baseline_parse_and_access(data: bytes) -> object:
    message = _EMAIL_PARSER.parsebytes(data)
    return (message["Via"], message["CSeq"], message["Call-ID"], message["From"], message["To"])


@dataclass(frozen=True)
class Result:
    message: str
    size: int
    operation: str
    per_second: float  # messages per CPU second
    wall_per_second: float


def measure(
    name: str, data: bytes, operation: str, run: Callable[[], object], budget: float
) -> Result:
    """Call `run` in batches until `budget` CPU seconds are spent; messages per CPU second."""
    for _ in range(200):  # warm caches and the memo of interned names
        run()
    count = 0
    batch = 500
    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    while True:
        for _ in range(batch):
            run()
        count += batch
        cpu = time.process_time() - cpu_start
        if cpu >= budget:
            break
    wall = time.perf_counter() - wall_start
    return Result(name, len(data), operation, count / cpu, count / wall)


def _serializer(data: bytes) -> Callable[[], object]:
    parsed: Request | Response = parse_message(data)
    return parsed.to_bytes


def run_all(budget: float) -> list[Result]:
    results: list[Result] = []
    for name, data in (("INVITE", INVITE), ("200 OK", OK_200)):
        cases: list[tuple[str, Callable[[], object]]] = [
            ("parse", functools.partial(parse_only, data)),
            ("parse + B2BUA reads", functools.partial(parse_and_access, data)),
            ("serialize", _serializer(data)),
            ("parse + serialize", functools.partial(parse_and_serialize, data)),
            ("baseline parse", functools.partial(baseline_parse, data)),
            ("baseline parse + reads", functools.partial(baseline_parse_and_access, data)),
        ]
        for operation, run in cases:
            results.append(measure(name, data, operation, run, budget))
    return results


def report(results: list[Result]) -> bool:
    print(
        f"sdpbx SIP codec benchmark - Python {platform.python_version()} "
        f"({platform.python_implementation()}), one core, rates per CPU second "
        "(time.process_time); wall-clock rate (time.perf_counter) alongside"
    )
    print()
    print(f"{'message':<8} {'bytes':>5}  {'operation':<24} {'msgs/s/core':>12} {'us/msg':>8}"
          f" {'wall msgs/s':>12}")
    for r in results:
        print(f"{r.message:<8} {r.size:>5}  {r.operation:<24} {r.per_second:>12,.0f}"
              f" {1e6 / r.per_second:>8.1f} {r.wall_per_second:>12,.0f}")
    print()
    print("baseline = email.parser.BytesHeaderParser (Python stdlib, compat32 policy): a generic")
    print("RFC 822 header parser on the same bytes - no SIP grammar, no Content-Length framing,")
    print("no Via/From/To/CSeq structure. Ratio > 1 means sdpbx is faster than the baseline.")
    rate = {(r.message, r.operation): r.per_second for r in results}
    for name in ("INVITE", "200 OK"):
        parse_ratio = rate[(name, "parse")] / rate[(name, "baseline parse")]
        reads_ratio = rate[(name, "parse + B2BUA reads")] / rate[(name, "baseline parse + reads")]
        print(f"  {name:<7} parse vs baseline: {parse_ratio:.2f}x   "
              f"parse + reads vs baseline parse + reads: {reads_ratio:.2f}x")
    worst = min(rate[(name, "parse")] for name in ("INVITE", "200 OK"))
    worst_reads = min(rate[(name, "parse + B2BUA reads")] for name in ("INVITE", "200 OK"))
    met = worst >= TARGET_PARSES_PER_SECOND
    print()
    print(f"target: >= {TARGET_PARSES_PER_SECOND:,} parses/s per core -> slowest parse "
          f"{worst:,.0f}/s: {'met' if met else 'MISSED'}")
    print(f"with the B2BUA reads: {worst_reads:,.0f}/s = {1e6 / worst_reads:.0f} us per message"
          " (the budget, 0.8 ms per 14-message call, is ~57 us per message for everything)")
    return met


def profile(seconds: float) -> None:
    """cProfile of the parse + access loop on the INVITE; the 15 costliest functions."""
    profiler = cProfile.Profile()
    deadline = time.process_time() + seconds
    count = 0
    profiler.enable()
    while time.process_time() < deadline:
        for _ in range(200):
            parse_and_access(INVITE)
        count += 200
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(15)
    print(f"cProfile: parse + B2BUA reads of the {len(INVITE)}-byte INVITE, {count:,} messages,"
          " sorted by own time (tottime)")
    print(out.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.5,
                        help="total CPU time for the table (default 2.5)")
    parser.add_argument("--profile", action="store_true",
                        help="profile the parse + access loop instead of printing the table")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the slowest parse is under the target")
    args = parser.parse_args(argv)
    if args.profile:
        profile(max(args.seconds, 0.5))
        return 0
    met = report(run_all(args.seconds / 12))
    return 0 if met or not args.check else 1


if __name__ == "__main__":
    raise SystemExit(main())
