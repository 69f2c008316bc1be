"""`python -m edge ...`: the `sdpbx` command without the installed script."""

from __future__ import annotations

from edge.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
