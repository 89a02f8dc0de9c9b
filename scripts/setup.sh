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
here=$(pwd -P)
# The key: the [project] tables (dependencies) and [tool.setuptools] (which top-level packages the
# editable install maps: a new package needs a new install; pytest and ruff settings do not count), the
# interpreter, and this checkout's path — the environment holds an editable install of the project, so
# two checkouts must never share one (each would silently import the other's code).
key=$( (sed -n '/^\[project\]/,/^\[tool\.pytest/p' pyproject.toml; "$py" --version; echo "$here") | sha256sum | cut -c1-16)
cache_root=${RTE_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/reverse-encoder-interp}
venv="$cache_root/venv-$key"

if [ ! -x "$venv/bin/python" ] || [ ! -f "$venv/.complete" ]; then
    echo "setup: building the environment in $venv (first run only) ..." >&2
    rm -rf "$venv"
    mkdir -p "$cache_root"
    # Environments of checkouts untouched for a week (e.g. deleted CI clones) are removed.
    find "$cache_root" -maxdepth 1 -name 'venv-*' -type d -mtime +7 -exec rm -rf {} + 2>/dev/null || true
    "$py" -m venv "$venv"
    pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
    # Prefer a CPU build of torch found in pip's local find-links (no CUDA download); otherwise
    # take the newest release the project's range admits from the index.
    torch_spec=$(sed -n 's/^ *"\(torch[<>=!~][^"]*\)",*$/\1/p' pyproject.toml | head -1)
    "${pip[@]}" --no-index --no-deps "$torch_spec" 2>/dev/null || true
    "${pip[@]}" "$torch_spec"
    "${pip[@]}" -e ".[dev]"
    # First-use costs paid here rather than by the first command or test: matplotlib's font cache
    # (~1 s on a fresh machine, in ~/.cache/matplotlib unless MPLCONFIGDIR says otherwise).
    "$venv/bin/python" -c "import matplotlib.font_manager" 2>/dev/null || true
    touch "$venv/.complete"
fi
# The project's own modules byte-compiled (only those changed since the last run: ~0.3 CPU s for a
# fresh clone, nothing later), instead of by each process of the test suite that imports them first.
"$venv/bin/python" -m compileall -q models interp analyses reports >/dev/null 2>&1 || true
touch "$venv"  # marks it as in use for the clean-up above
ln -sfn "$venv" .venv
