#!/usr/bin/env bash
# Creates the virtual environment of the Python (Ray + confluent_kafka) peer in
# <repo>/.cache/bench-ray-venv and installs requirements.txt into it.
# Idempotent: a second run with unchanged requirements does nothing.
#
# Environment: BENCH_RAY_VENV overrides the venv location; PYTHON the
# interpreter used to create it (default python3; needs 3.9 .. 3.13).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${BENCH_RAY_VENV:-$repo/.cache/bench-ray-venv}
python=${PYTHON:-python3}
req=$here/requirements.txt
stamp=$venv/.requirements.sha256

die() { echo "setup.sh: $*" >&2; exit 1; }

want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv"
  exit 0
fi

command -v "$python" >/dev/null || die "$python not found"
if [ ! -x "$venv/bin/python" ]; then
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" 2>/dev/null || {
    rm -rf "$venv"
    die "could not create a venv with $python (on Debian/Ubuntu: sudo apt-get install -y python3-venv)"
  }
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip >&2
"$venv/bin/python" -m pip install --quiet -r "$req" >&2
"$venv/bin/python" -c 'import ray, confluent_kafka' || die "installed packages do not import"
echo "$want" >"$stamp"
echo "$venv"
