"""Write docs/ncco.schema.json: the JSON Schema of a step list (control/contracts/ncco.py).

Run it after changing a step model; tests/test_ncco.py fails while the committed file differs.
`--stdout` prints the schema instead of writing it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control.contracts.ncco import steps_json_schema  # noqa: E402

TARGET = ROOT / "docs" / "ncco.schema.json"


def render() -> str:
    return json.dumps(steps_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--stdout" in argv:
        sys.stdout.write(text)
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
