# shellcheck shell=bash
# Sourced by up.sh and test.sh: create .venv with $PYTHON (>= 3.11). Debian's python3 lacks the
# venv module until python3-venv is installed: install it when we are root (or have sudo), else
# say exactly what to run.
make_venv() {
    local python=$1 venv=$2
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        echo "sdpbx: $python is older than 3.11 (set PYTHON=...)" >&2
        exit 2
    }
    if "$python" -m venv "$venv" 2>/dev/null; then
        return 0
    fi
    rm -rf "$venv"
    local package
    package="python$("$python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        else
            echo "sdpbx: $python cannot create a venv; run: sudo apt-get install -y $package" >&2
            exit 2
        fi
    fi
    echo "==> apt-get install $package (the venv module)" >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" \
        || "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
    "$python" -m venv "$venv"
}
