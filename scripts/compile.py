"""Compile the edge's hot modules to C extension modules with mypyc, in place.

    .venv/bin/python scripts/compile.py           compile (skipped when already up to date)
    .venv/bin/python scripts/compile.py --force   compile again
    .venv/bin/python scripts/compile.py --clean   remove the compiled modules: pure Python

The same source runs either way. Compiled, the SIP core, the registrar and the B2BUA take
about half the CPU they take interpreted (`bench/register.sh`, `bench/calls.sh`); mypyc reads
the type hints `mypy --strict` already checks, so nothing is written twice. The build needs a C
compiler and the interpreter's headers (Debian: gcc, python3-dev) and mypy (the `compile` and
`dev` extras); without them this says why, removes any old build, and exits 0: the edge then
runs its Python sources.

Beside the extension modules it writes `edge/_compiled.json`, the SHA-256 of each source
compiled. `edge/__init__.py` checks it at import time and loads the Python sources instead when
one changed since (or with SDPBX_PURE_PYTHON=1), so an edit is never shadowed by an old build.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the checkout's edge

from edge import MANIFEST, build_record  # noqa: E402 - after the path it comes from

PACKAGE = ROOT / "edge"
GROUP = "edge.native"  # mypyc's shared library for the group: edge/native__mypyc.*.so

# What runs per message, per call and per registration: the sans-IO SIP core whole, the PBX
# logic around REGISTER and INVITE, the sans-IO RTP relay. (Not the asyncio plumbing of
# edge/io, not the application engine, whose time goes to I/O and numpy.)
MODULES = (
    "sip/*.py",
    "pbx/auth.py", "pbx/bindings.py", "pbx/call_records.py", "pbx/calls.py", "pbx/cdr.py",
    "pbx/core.py", "pbx/http_router.py", "pbx/locator.py", "pbx/media.py", "pbx/registrar.py",
    "pbx/routing.py", "pbx/security.py", "pbx/users.py",
    "rtp/packet.py", "rtp/ports.py", "rtp/relay.py",
)


def sources() -> list[Path]:
    found = {path for pattern in MODULES for path in PACKAGE.glob(pattern)}
    return sorted(path for path in found if path.name != "__init__.py")


def built_files() -> list[Path]:
    """What a build leaves in the package: the extension modules of any interpreter (mypyc's
    shared library among them) and the manifest. Its C sources stay in build/mypyc."""
    found = [path for path in PACKAGE.rglob("*") if path.suffix in (".so", ".pyd")]
    if MANIFEST.exists():
        found.append(MANIFEST)
    return found


def clean() -> None:
    for path in built_files():
        path.unlink()


def missing_prerequisite() -> str | None:
    if importlib.util.find_spec("mypyc") is None:
        return "mypy is not installed (pip install -e '.[compile]')"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler}; Debian: apt-get install gcc)"
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not headers.exists():
        return f"no Python headers ({headers}; Debian: apt-get install python3-dev)"
    return None


def compile_modules() -> int:
    # mypyc's own command line names the shared library after a hash and puts it at the top
    # level, where an installed `sdpbx` could not import it: build through mypycify instead.
    build = ROOT / "build" / "mypyc"
    build.mkdir(parents=True, exist_ok=True)
    modules = [str(path.relative_to(ROOT)) for path in sources()]
    # multi_file: one C file per module, compiled in parallel. With a dotted group name mypyc
    # writes the group's headers into a subfolder (build/mypyc/edge) its C files do not look in.
    headers = build / GROUP.rpartition(".")[0].replace(".", "/")
    (build / "setup.py").write_text(
        "from setuptools import setup\n"
        "from mypyc.build import mypycify\n"
        f"extensions = mypycify({modules!r}, opt_level='3', multi_file=True,"
        f" group_name={GROUP!r}, target_dir={str(build)!r})\n"
        f"for extension in extensions:\n    extension.include_dirs.append({str(headers)!r})\n"
        "setup(name='sdpbx-native', ext_modules=extensions)\n"
    )
    print(f"compile: mypyc on {len(modules)} modules of edge/ (a minute or two)", flush=True)
    result = subprocess.run(
        [sys.executable, str(build / "setup.py"), "build_ext", "--inplace",
         "--parallel", str(os.cpu_count() or 1), "--build-temp", str(build / "temp")],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        clean()
        print(result.stdout[-4000:], result.stderr[-4000:], sep="\n", file=sys.stderr)
        print("compile: mypyc failed; the edge runs its Python sources", file=sys.stderr)
        return 1
    MANIFEST.write_text(json.dumps(build_record(sources()), indent=1, sort_keys=True) + "\n")
    print(f"compile: done ({len(modules)} modules)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="compile even when up to date")
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    args = parser.parse_args()
    if args.clean:
        clean()
        print("compile: removed the compiled modules; the edge runs its Python sources")
        return 0
    up_to_date = MANIFEST.exists() and json.loads(MANIFEST.read_text()) == build_record(sources())
    if up_to_date and not args.force:
        print("compile: the compiled modules are up to date")
        return 0
    clean()  # an old build must not outlive its sources, whatever happens next
    reason = missing_prerequisite()
    if reason is not None:
        print(f"compile: skipped, {reason}; the edge runs its Python sources", file=sys.stderr)
        return 0
    return compile_modules()


if __name__ == "__main__":
    raise SystemExit(main())
