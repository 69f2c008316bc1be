"""The dependency rules of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IO_MODULES = {"asyncio", "socket", "selectors", "time", "random", "threading", "uvloop", "ssl"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


SANS_IO = sorted(
    path for layer in ("sip", "rtp", "media") for path in (ROOT / "edge" / layer).glob("*.py")
)


@pytest.mark.parametrize("path", SANS_IO, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_sans_io_core_imports_no_io(path: Path) -> None:
    """edge/sip and edge/rtp are sans-IO: no sockets, no event loop, no clock, no randomness."""
    bad = {name for name in imported_modules(path) if name.split(".")[0] in IO_MODULES}
    assert not bad, f"{path.name} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "path", sorted((ROOT / "control").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_control_never_imports_edge(path: Path) -> None:
    """control/ runs on Lambda: it must not pull in the edge (SIP, numpy, uvloop)."""
    bad = {
        name for name in imported_modules(path)
        if name.split(".")[0] in ("edge", "numpy", "uvloop")
    }
    assert not bad, f"{path} imports {sorted(bad)}"
