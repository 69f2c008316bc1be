#!/usr/bin/env bash
# Run sdpbx on this machine: creates .venv and installs sdpbx into it when needed, then runs
# `sdpbx up` with the arguments given. Data (SQLite, CDRs, recordings) goes under ./data of the
# directory you run it from.
#
#   ./scripts/up.sh                      defaults: SIP 127.0.0.1:5060, HTTP 127.0.0.1:8080
#   ./scripts/up.sh --config sdpbx.toml  your config (start from config/sdpbx.example.toml)
#
#   PYTHON=python3.12   the interpreter that creates .venv (default python3, needs >= 3.11)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}

# shellcheck source=scripts/venv.sh
. "$ROOT/scripts/venv.sh"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating $VENV" >&2
    make_venv "$PYTHON" "$VENV"
fi

# Reinstall only when pyproject.toml changed (a dev install from scripts/test.sh counts too).
wanted=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
installed=no
for stamp in "$VENV/.sdpbx-installed" "$VENV/.sdpbx-installed-dev"; do
    if [[ -f "$stamp" && $(<"$stamp") == "$wanted" ]]; then
        installed=yes
    fi
done
if [[ $installed == no ]]; then
    echo "==> pip install -e $ROOT[compile]" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[compile]"
    echo "$wanted" >"$VENV/.sdpbx-installed"
fi

# Compile the hot modules with mypyc (once, and again after an edit); without a C compiler and
# the Python headers the edge runs its Python sources, only slower.
"$VENV/bin/python" "$ROOT/scripts/compile.py" >&2 || echo "==> running the Python sources" >&2

exec "$VENV/bin/sdpbx" up "$@"
