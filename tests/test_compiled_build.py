"""The compiled build (scripts/compile.py, mypyc) and its guard in edge/__init__.py: compiled
modules load only while they match their sources, all of them or none.

`scripts/test.sh` compiles before the suite and sets SDPBX_EXPECT_COMPILED=1 when the build
succeeded, so there a missing or silently unused build fails here instead of going unnoticed.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edge
import edge.sip.message

ROOT = Path(__file__).resolve().parent.parent
COMPILED_HERE = (ROOT / "edge" / "_compiled.json").exists()
needs_build = pytest.mark.skipif(not COMPILED_HERE, reason="not compiled (scripts/compile.py)")

PROBE = (
    "import json, edge, edge.sip.message, edge.pbx.calls, edge.rtp.relay\n"
    "print(json.dumps({'build': edge.describe_build(), 'files': [m.__file__ for m in "
    "(edge.sip.message, edge.pbx.calls, edge.rtp.relay)]}))\n"
)


def probe(root: Path, **env: str) -> tuple[str, list[str]]:
    """Import the edge from `root` in a fresh interpreter: its build and some modules' files."""
    environment = {k: v for k, v in os.environ.items() if k != "SDPBX_PURE_PYTHON"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=root, capture_output=True, text=True, check=True,
        env={**environment, "PYTHONPATH": str(root), **env}, timeout=60,
    )
    found = json.loads(result.stdout)
    return str(found["build"]), [str(name) for name in found["files"]]


def test_this_run_uses_the_build_it_expects() -> None:
    pure = os.environ.get("SDPBX_PURE_PYTHON") == "1"
    if os.environ.get("SDPBX_EXPECT_COMPILED") == "1" and not pure:
        assert edge.running_compiled(), edge.describe_build()
    assert edge.describe_build() == ("compiled (mypyc)" if edge.running_compiled()
                                     else edge.BUILD)


def test_pure_python_on_request() -> None:
    build, files = probe(ROOT, SDPBX_PURE_PYTHON="1")
    assert build == (
        "pure Python (SDPBX_PURE_PYTHON=1)" if COMPILED_HERE
        else "pure Python (not compiled: scripts/compile.py)"
    )
    assert all(name.endswith(".py") for name in files)


@needs_build
def test_compiled_modules_load_while_they_match_their_sources() -> None:
    build, files = probe(ROOT)
    assert build == "compiled (mypyc)"
    assert not any(name.endswith(".py") for name in files)


@needs_build
def test_an_edited_source_sends_every_module_back_to_python(tmp_path: Path) -> None:
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "edge", copy / "edge", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "control", copy / "control",
                    ignore=shutil.ignore_patterns("__pycache__"))
    via = copy / "edge" / "sip" / "via.py"
    via.write_text(via.read_text() + "\n# edited after the build\n")
    build, files = probe(copy)
    assert build == "pure Python (edge/sip/via.py changed since compiled)"
    # not only via.py: the compiled modules would call the stale compiled via directly
    assert all(name.endswith(".py") and name.startswith(str(copy)) for name in files)


def _dataclass_keywords(node: ast.ClassDef) -> dict[str, ast.expr] | None:
    for decorator in node.decorator_list:
        if isinstance(decorator, ast.Call) and getattr(decorator.func, "id", "") == "dataclass":
            return {k.arg: k.value for k in decorator.keywords if k.arg}
    return None


def test_hand_written_dataclass_inits_set_every_field() -> None:
    """A hot dataclass of a compiled module writes its own `__init__` (`init=False`): compiled,
    a generated one runs as interpreted code, ~20x slower (docs/architecture.md). Such an
    `__init__` must set every field, also one added later."""
    checked = 0
    for path in sorted((ROOT / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            keywords = _dataclass_keywords(node)
            if keywords is None:
                continue
            init = next((item for item in node.body if isinstance(item, ast.FunctionDef)
                         and item.name == "__init__"), None)
            if init is None:
                continue
            where = f"{path.relative_to(ROOT)}: {node.name}"
            flag = keywords.get("init")
            assert isinstance(flag, ast.Constant) and flag.value is False, (
                f"{where} writes __init__: say init=False")
            assert "frozen" not in keywords, f"{where}: Final fields, not frozen=True"
            fields = [item.target.id for item in node.body
                      if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                      and "ClassVar" not in ast.unparse(item.annotation)]
            assigned = {target.attr for statement in ast.walk(init)
                        if isinstance(statement, (ast.Assign, ast.AnnAssign))
                        for target in (statement.targets if isinstance(statement, ast.Assign)
                                       else [statement.target])
                        if isinstance(target, ast.Attribute)
                        and getattr(target.value, "id", "") == "self"}
            missing = [name for name in fields if name not in assigned]
            assert not missing, f"{where}.__init__ does not set {missing}"
            checked += 1
    assert checked >= 8
