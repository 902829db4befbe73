#!/usr/bin/env bash
# Throughput and latency of Riffle on Apache Kafka, next to a librdkafka
# pass-through (the physical limit).
#
#   bench/run.sh [--quick|--full] [riffle-bench run flags...]
#
# Builds riffle-bench in release, starts a fresh single-node broker on
# 127.0.0.1:29092 (scripts/kafka.sh, data under .cache/kafka-data-29092),
# runs the suite and stops the broker. The report goes to
# bench/results/<mode>-<timestamp>.{json,md}. Quick mode (the default)
# takes a few minutes; full mode about half an hour.
# `target/release/riffle-bench run --help` lists the other flags
# (--only, --records, --rate, --latency-secs, ...).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

mode=quick
args=()
for a in "$@"; do
  case "$a" in
    --quick) mode=quick ;;
    --full) mode=full ;;
    *) args+=("$a") ;;
  esac
done

export KAFKA_PORT=29092
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)

cargo build --release -q -p riffle-bench
KAFKA_FRESH=1 scripts/kafka.sh start >/dev/null
trap 'scripts/kafka.sh stop' EXIT

target/release/riffle-bench run --mode "$mode" --brokers "127.0.0.1:$KAFKA_PORT" \
  --out-dir bench/results --kafka-version "$kafka_version" \
  --command "bench/run.sh --$mode${args[*]:+ ${args[*]}}" ${args[@]+"${args[@]}"}
