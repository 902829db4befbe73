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
# RIFFLE_TEST_BROKERS (PLAINTEXT), RIFFLE_TEST_SASL_SSL (SCRAM-SHA-512),
# RIFFLE_TEST_SSL (mTLS) and RIFFLE_TEST_TLS_DIR (certificates and client
# .properties files): see scripts/kafka.sh.
while IFS= read -r var; do export "${var?}"; done < <(scripts/kafka.sh env)
echo "test: Kafka broker on $RIFFLE_TEST_BROKERS, SASL_SSL on $RIFFLE_TEST_SASL_SSL, mTLS on $RIFFLE_TEST_SSL" >&2

cargo fmt --all -- --check
cargo test --workspace --release "$@"
