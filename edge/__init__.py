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
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent


def _compiled_state() -> tuple[bool, str, frozenset[str]]:
    """(use the compiled modules?, why, the compiled sources relative to this package)."""
    manifest = _HERE / "_compiled.json"
    if not manifest.exists():
        return False, "pure Python (not compiled: scripts/compile.py)", frozenset()
    try:
        record = json.loads(manifest.read_text())
        sources: dict[str, str] = record["sources"]
        names = frozenset(sources)
        if os.environ.get("SDPBX_PURE_PYTHON") == "1":
            return False, "pure Python (SDPBX_PURE_PYTHON=1)", names
        if record.get("cache_tag") != sys.implementation.cache_tag:
            return False, "pure Python (compiled for another interpreter)", names
        for name, digest in sources.items():
            if hashlib.sha256((_HERE / name).read_bytes()).hexdigest() != digest:
                return False, f"pure Python (edge/{name} changed since compiled)", names
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        # A broken record: every extension module beside a source is suspect.
        names = frozenset(path.relative_to(_HERE).as_posix().split(".", 1)[0] + ".py"
                          for path in _HERE.rglob("*.so"))
        return False, f"pure Python (unreadable {manifest.name}: {error})", names
    return True, "compiled (mypyc)", names


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the compiled modules of this package in their .py files instead."""

    def __init__(self, sources: frozenset[str]) -> None:
        self._sources = sources

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        top, _, rest = fullname.partition(".")
        relative = rest.replace(".", "/") + ".py"
        if top != __name__ or relative not in self._sources:
            return None
        return importlib.util.spec_from_file_location(fullname, _HERE / relative)


COMPILED, BUILD, _SOURCES = _compiled_state()
if not COMPILED and _SOURCES:
    sys.meta_path.insert(0, _SourcesFirst(_SOURCES))


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
