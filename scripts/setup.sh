#!/usr/bin/env bash
# Build (or reuse) the project's virtual environment and link it at ./.venv.
#
# The environment lives in a cache folder keyed by a hash of pyproject.toml, so a fresh clone
# (CI included) reuses it when the dependencies have not changed and builds it from nothing
# otherwise. Override the folder with RTE_VENV_CACHE. Quiet unless something fails.
#
#   bash scripts/setup.sh            the Python environment (enough for every command)
#   bash scripts/setup.sh --browser  also Debian's chromium, which the browser tests drive
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing Debian's chromium for the browser tests ..." >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "setup: chromium is missing; install it (e.g. 'sudo apt-get install chromium') for the browser tests" >&2
        exit 1
    fi
fi

py=${PYTHON:-python3}
# Only the [project] tables (dependencies) decide the key; tool settings do not.
key=$( (sed -n '/^\[project\]/,/^\[tool/p' pyproject.toml; "$py" --version) | sha256sum | cut -c1-16)
cache_root=${RTE_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reverse-encoder-interp}
venv="$cache_root/venv-$key"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "setup: building the environment in $venv (first run only) ..." >&2
    rm -rf "$venv"
    mkdir -p "$cache_root"
    "$py" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    # Prefer a CPU build of torch found in pip's local find-links (no CUDA download); otherwise
    # take the newest release the project's range admits from the index.
    torch_spec=$(sed -n 's/^ *"\(torch[<>=!~][^"]*\)",*$/\1/p' pyproject.toml | head -1)
    "${pip[@]}" --no-index --no-deps "$torch_spec" 2>/dev/null || true
    "${pip[@]}" "$torch_spec"
    "${pip[@]}" -e ".[dev]"
    touch "$venv/.complete"
fi
# Point the editable install at this checkout (cheap; needed when the cache serves another clone).
here=$(pwd -P)
installed=$(cd / && "$venv/bin/python" -c "import models; print(models.__file__)" 2>/dev/null || true)
if [ "$installed" != "$here/models/__init__.py" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
fi
ln -sfn "$venv" .venv
