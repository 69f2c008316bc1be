"""Lambda cold start: import time of each handler module and the deployment package size.

    python bench/coldstart.py [--runs 5]

For each module named in `HANDLER_MODULES`, a fresh interpreter runs `python -X importtime -c
"import <module>"` (`--runs` times; the best is kept, as a cold container pays it once) and the
cumulative import time of the module is printed, with the slowest imports it pulls in. The
baseline in the same run is `import json` (the interpreter's own floor). The package size is the
`control/` tree plus the installed files of every distribution the handlers import, without
boto3/botocore (the Lambda runtime provides them) and without `__pycache__`.

Targets (issue 6): under 150 ms of import per handler module, under 10 MB of package.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HANDLER_MODULES = ("control.handlers",)
IMPORT_TARGET_MS = 150.0
SIZE_TARGET_MB = 10.0
# Distributions the Lambda package ships (boto3/botocore come with the runtime).
SHIPPED = ("starlette", "mangum", "pydantic", "pydantic-core", "anyio", "sniffio", "idna",
           "typing-extensions", "annotated-types", "typing-inspection", "httpx", "httpcore",
           "h11", "certifi")
_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def import_profile(module: str) -> tuple[float, list[tuple[float, str]]]:
    """(cumulative ms of `module`, the heaviest top-level imports under it)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True, text=True, cwd=ROOT, check=True, timeout=60,
    )
    total = 0.0
    children: list[tuple[float, str]] = []
    for line in result.stderr.splitlines():
        found = _LINE.match(line)
        if not found:
            continue
        cumulative_ms = int(found.group(2)) / 1000
        depth = len(found.group(3)) // 2
        name = found.group(4)
        if name == module:
            total = cumulative_ms
        elif depth <= 1:
            children.append((cumulative_ms, name))
    return total, sorted(children, reverse=True)[:8]


def best_of(module: str, runs: int) -> tuple[float, list[tuple[float, str]]]:
    return min((import_profile(module) for _ in range(runs)), key=lambda item: item[0])


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts)


def distribution_size(name: str) -> int:
    try:
        dist = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return 0
    total = 0
    for file in dist.files or ():
        if "__pycache__" in file.parts:
            continue
        located = Path(str(dist.locate_file(file)))
        if located.is_file():
            total += located.stat().st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    baseline, _ = best_of("json", args.runs)
    print(f"baseline: import json = {baseline:.1f} ms (best of {args.runs})")
    ok = True
    for module in HANDLER_MODULES:
        total, heaviest = best_of(module, args.runs)
        ok &= total < IMPORT_TARGET_MS
        print(f"\n{module}: {total:.1f} ms cumulative import "
              f"({total / max(baseline, 0.001):.0f}x import json); target < {IMPORT_TARGET_MS:.0f}"
              f" ms: {'met' if total < IMPORT_TARGET_MS else 'NOT met'}")
        for ms, name in heaviest:
            print(f"  {ms:7.1f} ms  {name}")
        loaded = subprocess.run(
            [sys.executable, "-c",
             f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules "
             "if m.split('.')[0] in ('numpy', 'edge', 'boto3', 'aioboto3'))))"],
            capture_output=True, text=True, cwd=ROOT, check=True, timeout=60,
        ).stdout.strip()
        print(f"  numpy/edge/boto3 modules loaded: {loaded or 'none'}")
        ok &= not loaded

    sizes = {"control/": tree_size(ROOT / "control")}
    sizes.update({name: distribution_size(name) for name in SHIPPED})
    total_mb = sum(sizes.values()) / 1e6
    print("\npackage (without boto3/botocore, without __pycache__):")
    for name, size in sorted(sizes.items(), key=lambda item: -item[1]):
        if size:
            print(f"  {size / 1e6:7.2f} MB  {name}")
    print(f"  {total_mb:7.2f} MB  total; target < {SIZE_TARGET_MB:.0f} MB: "
          f"{'met' if total_mb < SIZE_TARGET_MB else 'NOT met'}")
    ok &= total_mb < SIZE_TARGET_MB
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
