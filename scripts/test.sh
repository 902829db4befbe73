#!/usr/bin/env bash
# Runs every test: installs what is missing, starts a fresh single-node Kafka
# broker on 127.0.0.1 (scripts/kafka.sh), runs the workspace's tests against
# it and against the embedded log, and stops the broker.
#
# Extra arguments go to `cargo test` (e.g. scripts/test.sh -p riffle kafka).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

source scripts/setup.sh --test

export KAFKA_PORT=${KAFKA_PORT:-19092}
scripts/kafka.sh stop >/dev/null 2>&1 || true
KAFKA_FRESH=1 scripts/kafka.sh start >/dev/null
trap 'scripts/kafka.sh stop' EXIT
export RIFFLE_TEST_BROKERS=127.0.0.1:$KAFKA_PORT
echo "test: Kafka broker on $RIFFLE_TEST_BROKERS" >&2

cargo fmt --all -- --check
cargo test --workspace --release "$@"
