#!/usr/bin/env bash
# Registration benchmark: SIPp REGISTER with digest auth at rising rates against `sdpbx up` and
# Kamailio in the same run (CPU per registration, the ratio). Arguments go to bench/register.py:
#
#   bench/register.sh                 full ladder 250..3000/s, 10 s steps
#   bench/register.sh --quick         500, 1000, 2000/s, 3 s steps
#   bench/register.sh --profile       + a py-spy profile of sdpbx (.venv/bin/pip install py-spy)
#   bench/register.sh --help
#
# Needs: sipp (Debian sip-tester), kamailio, taskset (util-linux), the project's .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
if [[ ! -x $PYTHON ]]; then
    echo "bench/register.sh: $PYTHON missing (run scripts/test.sh once)" >&2
    exit 2
fi
cd "$ROOT"
exec "$PYTHON" "$ROOT/bench/register.py" "$@"
