#!/usr/bin/env bash
# Runs the book's Python heater controller (Ray actors + confluent_kafka)
# until SIGTERM or Ctrl-C, then stops the consumer actors, commits and flushes.
#
#   run.sh --brokers H:P --input T --output T --group G [--consumers N]
#          [--offset-reset earliest|latest] [--commit-interval-ms MS] [--verbose]
#          [--guarantee at-least-once]
#
# Prints "controller: running: ..." on stderr once the consumers own every
# partition of the input topic. Needs setup.sh to have been run (it is run
# here if the venv is missing).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=${BENCH_RAY_VENV:-$repo/.cache/bench-ray-venv}
[ -x "$venv/bin/python" ] || "$here/setup.sh" >/dev/null

export RAY_USAGE_STATS_ENABLED=0
export RAY_DEDUP_LOGS=0
export RAY_COLOR_PREFIX=0
export PYTHONUNBUFFERED=1
exec "$venv/bin/python" "$here/controller.py" "$@"
