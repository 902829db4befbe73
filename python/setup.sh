#!/usr/bin/env bash
# Builds the virtual environment the Python package is tested and its
# examples run in: <repo>/.cache/python-venv, with maturin, pytest and Ray
# (requirements-dev.txt), then installs the package from python/ into it
# (`pip install ./python`, compiled in release mode with maturin; cargo
# reuses the workspace's target/ so only what changed is rebuilt).
# Prints the venv's path.
#
# Environment: RIFFLE_PY_VENV overrides the venv location; PYTHON the
# interpreter used to create it (default python3; 3.9 or later).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
venv=${RIFFLE_PY_VENV:-$repo/.cache/python-venv}
python=${PYTHON:-python3}
req=$here/requirements-dev.txt
stamp=$venv/.requirements.sha256

die() { echo "setup.sh: $*" >&2; exit 1; }

command -v "$python" >/dev/null || die "$python not found"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" 2>/dev/null || {
    rm -rf "$venv"
    die "could not create a venv with $python (on Debian/Ubuntu: sudo apt-get install -y python3-venv)"
  }
fi
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet -r "$req" >&2
  echo "$want" >"$stamp"
fi
# Always: cargo decides what is out of date. No build isolation: maturin is
# in the venv already, and an isolated build would fetch it each time.
PATH="$venv/bin:$PATH" "$venv/bin/python" -m pip install --quiet --no-build-isolation --force-reinstall --no-deps "$here" >&2
"$venv/bin/python" -c 'import riffle' || die "the installed package does not import"
echo "$venv"
