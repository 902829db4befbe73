#!/usr/bin/env bash
# Runs every test: installs what is missing, starts a fresh single-node Kafka
# broker on 127.0.0.1 (scripts/kafka.sh), runs the workspace's tests against
# it and against the embedded log, and stops the broker.
#
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p riffle kafka);
# without them the Python package's tests (python/tests) run too, in the
# venv python/setup.sh builds under .cache/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/setup.sh --test

export KAFKA_PORT=${KAFKA_PORT:-19092}
scripts/kafka.sh stop >/dev/null 2>&1 || true
KAFKA_FRESH=1 scripts/kafka.sh start >/dev/null
trap 'scripts/kafka.sh stop' EXIT
# RIFFLE_TEST_BROKERS (PLAINTEXT), RIFFLE_TEST_SASL_SSL (SCRAM-SHA-512),
# RIFFLE_TEST_SSL (mTLS) and RIFFLE_TEST_TLS_DIR (certificates and client
# .properties files): see scripts/kafka.sh.
while IFS= read -r var; do export "${var?}"; done < <(scripts/kafka.sh env)
echo "test: Kafka broker on $RIFFLE_TEST_BROKERS, SASL_SSL on $RIFFLE_TEST_SASL_SSL, mTLS on $RIFFLE_TEST_SSL" >&2

cargo fmt --all -- --check
cargo test --workspace --release "$@"

# The Python package: installed from python/ into .cache/python-venv (with
# pytest and Ray), then tested against the same broker and the embedded
# log. Only on a full run: arguments select cargo tests.
if [ $# -eq 0 ]; then
  venv=$(python/setup.sh)
  RAY_USAGE_STATS_ENABLED=0 "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests
fi
