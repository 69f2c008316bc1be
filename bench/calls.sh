#!/usr/bin/env bash
# Call benchmark: SIPp calls at rising rates through `sdpbx up` (media relayed and not) and
# through Kamailio (stateful proxy) in the same run: CPU per call, the highest zero-failure
# rate, the ratio. Arguments go to bench/calls.py:
#
#   bench/calls.sh                          ladder 100, 200, 400, 600, 800 calls/s, 10 s steps
#   bench/calls.sh --quick                  200, 400, 800 calls/s, 3 s steps
#   bench/calls.sh --targets kamailio --rates 1000,2000 --out /tmp/calls.json
#   bench/calls.sh --help
#
# Needs: sipp (Debian sip-tester), kamailio, taskset (util-linux), the project's .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
if [[ ! -x $PYTHON ]]; then
    echo "bench/calls.sh: $PYTHON missing (run scripts/test.sh once)" >&2
    exit 2
fi
cd "$ROOT"
exec "$PYTHON" "$ROOT/bench/calls.py" "$@"
