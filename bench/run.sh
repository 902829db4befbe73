#!/usr/bin/env bash
# Throughput and latency of Riffle on Apache Kafka, next to a librdkafka
# pass-through (the physical limit), the heater controller written by hand
# on librdkafka (the bare baseline) and the peers: Kafka Streams and the
# book's Python/Ray controller; and a second workload, per-heater statistics
# over windows of event time, in Riffle and Kafka Streams (riffle-window-*,
# kafka-streams-window-*, with an input of their own).
#
#   bench/run.sh [--quick|--full] [riffle-bench run flags...]
#
# Builds riffle-bench in release and, when they are among the systems run
# (all by default, else --only), the Kafka Streams jar
# (bench/kafka-streams/build.sh) and the Python/Ray venv
# (bench/python-ray/setup.sh); then starts a fresh single-node broker on
# 127.0.0.1:$KAFKA_PORT (default 29092; scripts/kafka.sh, data under
# .cache/kafka-data-$KAFKA_PORT) with Kafka's default initial rebalance delay
# (3 s, so that a system's consumers are assigned together, once), runs the
# suite and stops the broker. The
# report goes to bench/results/<mode>-<timestamp>.{json,md}. Quick mode (the
# default) takes about 5 minutes for the heater workload's systems, about
# 8 more with the windowed workload's; full mode about 22 for the former. Full mode runs each
# system's throughput phase 3 times, interleaved across the systems, and
# reports the median run (--repeat N overrides; quick mode runs it once).
# `target/release/riffle-bench run --help` lists the other flags
# (--only, --records, --rate, --latency, --repeat, ...); `riffle-bench
# systems` lists the systems. The windowed workload alone, as BENCHMARKS.md
# reports it:
#   bench/run.sh --quick --latency 60s --warmup 10s \
#     --only riffle-window-alo,riffle-window-eos,kafka-streams-window-alo,kafka-streams-window-eos
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cd "$repo"

mode=quick
args=()
only=
prev=
for a in "$@"; do
  case "$a" in
    --quick) mode=quick ;;
    --full) mode=full ;;
    --only=*) only=${a#--only=}; args+=("$a") ;;
    *) [ "$prev" = --only ] && only=$a; args+=("$a") ;;
  esac
  prev=$a
done

export KAFKA_PORT=${KAFKA_PORT:-29092}
kafka_version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)

# Whether a system whose name starts with $1 is selected.
selected() { [ -z "$only" ] || [[ ",$only," == *",$1"* ]]; }

cargo build --release -q -p riffle-bench
# The peers' builds, before the broker starts: they are slow and must not
# share the machine with it.
# The jar is rebuilt only when a source is newer (Maven takes ~15 s even then).
ks=bench/kafka-streams
if selected kafka-streams && { [ ! -f $ks/target/heater-kafka-streams.jar ] ||
    [ -n "$(find $ks/src $ks/pom.xml -newer $ks/target/heater-kafka-streams.jar | head -1)" ]; }; then
  $ks/build.sh >/dev/null
fi
if selected python-ray; then bench/python-ray/setup.sh >/dev/null; fi
if selected python-riffle; then python/setup.sh >/dev/null; fi
KAFKA_FRESH=1 KAFKA_REBALANCE_DELAY_MS=3000 scripts/kafka.sh start >/dev/null
trap 'scripts/kafka.sh stop' EXIT

target/release/riffle-bench run --mode "$mode" --brokers "127.0.0.1:$KAFKA_PORT" \
  --out-dir bench/results --kafka-version "$kafka_version" \
  --command "bench/run.sh --$mode${args[*]:+ ${args[*]}}" ${args[@]+"${args[@]}"}
