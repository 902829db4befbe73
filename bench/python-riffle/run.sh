#!/usr/bin/env bash
# The heater controller in Python on Riffle (python/examples/heater.py, the
# rule in python/riffle/heater.py) as a benchmark peer of the book's
# Python/Ray controller (bench/python-ray): same input, same output, same
# driver flags (--brokers --input --output --group --guarantee), both
# guarantees. Runs until SIGTERM; prints "heater: running: ..." on stderr
# once it owns every input partition. Builds the venv with the package
# (python/setup.sh) if it is missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${RIFFLE_PY_VENV:-$repo/.cache/python-venv}
[ -x "$venv/bin/python" ] || "$repo/python/setup.sh" >/dev/null
export PYTHONUNBUFFERED=1
exec "$venv/bin/python" "$repo/python/examples/heater.py" "$@"
