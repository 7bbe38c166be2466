#!/usr/bin/env bash
# Create or update the virtual environment that `make run` and `make test` use.
#   scripts/setup_env.sh          the console's dependencies
#   scripts/setup_env.sh test     plus the test tools and Debian's chromium for browser tests
# torch is installed first, for the machine: set TORCH_INDEX_URL to choose the build (for example
# PyTorch's CPU wheel index on a machine without a GPU); otherwise pip's default build is used.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
want=${1:-run}
stamp="$VENV/.installed-$want"

if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
pip=("$VENV/bin/python" -m pip --quiet --disable-pip-version-check)

# Reinstall only when the dependency list changed since the last install.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
    if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
        echo "installing torch $TORCH_VERSION"
        if [ -n "${TORCH_INDEX_URL:-}" ]; then
            "${pip[@]}" install "torch==$TORCH_VERSION" --index-url "$TORCH_INDEX_URL"
        else
            "${pip[@]}" install "torch==$TORCH_VERSION"
        fi
    fi
    echo "installing TrainDeck's dependencies into $VENV (the first time takes a few minutes; later runs skip this)"
    if [ "$want" = test ]; then
        # llama-cpp-python compiles llama.cpp; without this it tunes for the build machine's CPU,
        # which can fail to build on some and crash on another (pip caches the built wheel)
        CMAKE_ARGS=${CMAKE_ARGS:--DGGML_NATIVE=OFF} "${pip[@]}" install -e ".[test]"
    else
        "${pip[@]}" install -e .
    fi
    touch "$stamp"
fi

# Debian packages the tests start themselves: chromium (browser tests), Slurm and munge (a real
# single-node cluster for the cluster tests).
apt_install() {
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "warning: cannot install $* without root; the tests that need them will be skipped" >&2
    fi
}

if [ "$want" = test ] && { [ ! -x /usr/sbin/slurmctld ] || [ ! -x /usr/sbin/munged ]; }; then
    echo "installing Debian's slurm-wlm and munge for the cluster tests"
    apt_install --no-install-recommends slurm-wlm munge || echo "warning: Slurm could not be installed; the cluster tests will be skipped" >&2
fi

if [ "$want" = test ] && [ ! -x /usr/bin/chromium ]; then
    echo "installing Debian's chromium for the browser tests"
    apt_install chromium || echo "warning: chromium could not be installed; the browser tests will be skipped" >&2
fi
