"""The edge: SIP and RTP on the wire, the PBX logic, and the composition root (`edge.app`).

`scripts/compile.py` may compile the hot modules (the sans-IO SIP core, the registrar, the
B2BUA...) with mypyc into extension modules beside their sources, recording each source's
SHA-256 in `_compiled.json`. The compiled modules are used only while every one of those sources
still matches the record; after an edit (or with SDPBX_PURE_PYTHON=1, or a build for another
interpreter) all of them load from their .py files instead: compiled modules call each other
directly, so a mix would run stale code.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
MANIFEST = _HERE / "_compiled.json"


def build_record(sources: Iterable[Path]) -> dict[str, object]:
    """What `_compiled.json` holds for a build of `sources` (files of this package): the
    interpreter it is for and each source's SHA-256. scripts/compile.py writes it; the check
    below compares it with the sources as they are now."""
    return {
        "cache_tag": sys.implementation.cache_tag,
        "sources": {path.relative_to(_HERE).as_posix(): _digest(path) for path in sources},
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _compiled_state() -> tuple[bool, str]:
    """(use the compiled modules?, why)."""
    if not MANIFEST.exists():
        return False, "pure Python (not compiled: scripts/compile.py)"
    if os.environ.get("SDPBX_PURE_PYTHON") == "1":
        return False, "pure Python (SDPBX_PURE_PYTHON=1)"
    try:
        record = json.loads(MANIFEST.read_text())
        if record.get("cache_tag") != sys.implementation.cache_tag:
            return False, "pure Python (compiled for another interpreter)"
        for name, digest in record["sources"].items():
            if _digest(_HERE / name) != digest:
                return False, f"pure Python (edge/{name} changed since compiled)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return False, f"pure Python (unreadable {MANIFEST.name}: {error})"
    return True, "compiled (mypyc)"


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds every module of this package in its .py file, passing over an extension module
    beside it."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top, _, rest = fullname.partition(".")
        source = _HERE / (rest.replace(".", "/") + ".py")
        if top != __name__ or not rest or not source.is_file():
            return None
        return importlib.util.spec_from_file_location(fullname, source)


COMPILED, BUILD = _compiled_state()
if not COMPILED and (MANIFEST.exists() or any(_HERE.glob("native__mypyc.*"))):
    sys.meta_path.insert(0, _SourcesFirst())


def running_compiled() -> bool:
    """Whether the hot modules really loaded compiled (not only whether they may)."""
    message = sys.modules.get(f"{__name__}.sip.message")
    return message is not None and not str(message.__file__).endswith(".py")


def describe_build() -> str:
    """What the start-up log and /health report: "compiled (mypyc)", or why the edge runs
    its Python sources."""
    if running_compiled():
        return "compiled (mypyc)"
    return BUILD if not COMPILED else "pure Python (the compiled modules did not load)"
