#!/usr/bin/env bash
# Smoke test of the Kafka Streams heater controller against a running broker:
# for each guarantee, fresh topics (10 partitions), a few settings and
# measurements for five heaters (some before the app starts, some while it
# runs, some after a restart that restores the state from the changelog into
# an empty state directory), and a check that the commands read back (read
# committed) and the dead letters are exactly the expected ones.
#
#   bench/kafka-streams/smoke.sh [BROKERS]     (default 127.0.0.1:$KAFKA_PORT, port 29192)
#
# Needs kcat. Exits non-zero on any mismatch.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
brokers=${1:-127.0.0.1:${KAFKA_PORT:-29192}}
jar=$("$here/build.sh")
work=$(mktemp -d)
app_pid=
cleanup() {
  if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then kill "$app_pid"; wait "$app_pid" || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

# The input, as kcat lines KEY|VALUE (a line without '|' has no key). The
# comments apply the rule by hand: with setting Td/up/down a measurement
# m > Td+up means OFF, m < Td-down means ON, else nothing; a command equal to
# the heater's last one is not sent again; no setting yet means nothing.
batch_before_start='h1|{"measurement": 40.0}
h1|{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}
h1|{"measurement": 43.0}
h1|{"measurement": 43.5}
h1|{"measurement": 45.0}
h1|{"measurement": 46.5}
h1|{"measurement": 47.0}
h1|{"measurement": 43.9}
h2|{"temperature": 20.0, "up_delta": 2.0, "down_delta": 0.5}
h2|{"measurement": 22}
h2|{"measurement": 22.1}
h2|{"measurement": 19.5}
h2|{"measurement": 19.4}
h2|{"temperature": 30.0, "up_delta": 1.0, "down_delta": 1.0}
h2|{"measurement": 25.0}
h2|{"measurement": 31.5}
h3|not json
h3|{"measurement": 10.0}
h3|{"temperature": 50.0, "up_delta": -1.0, "down_delta": 1.0}
h3|{"measurement": 60.0}
h3|{"temperature": 50.0, "up_delta": 1.0, "down_delta": 1.0}
h3|{"measurement": "hot"}
h3|{"measurement": 52.0}
h4|{"measurement": 0.0}
h4|{"measurement": 100.0}
h5|{"temperature": 10.0, "up_delta": 1.0, "down_delta": 1.0, "note": {"x": [1, 2]}}
h5|{"measurement": 9.0}
h5|{"measurement": 11.0}
h5|{"measurement": 8.99}
h5|{"measurement": 11.01}
h6|{"hello": 1}
{"measurement": 45.0}'
# h1: 40 ignored (no setting); band [44, 46]: 43 ON; 43.5 ON again, not sent;
#     45 in band; 46.5 OFF; 47 OFF again, not sent; 43.9 ON.      -> ON OFF ON
# h2: band [19.5, 22]: 22 and 19.5 are on the edges, nothing; 22.1 OFF;
#     19.4 ON; new band [29, 31]: 25 ON again, not sent; 31.5 OFF. -> OFF ON OFF
# h3: "not json", the negative up_delta and "hot" are dead letters; 10 and 60
#     come before any usable setting; band [49, 51]: 52 OFF.        -> OFF
# h4: measurements only.                                             -> nothing
# h5: band [9, 11] (the extra "note" field is ignored): 9 and 11 are on the
#     edges; 8.99 ON; 11.01 OFF.                                     -> ON OFF
# h6's body is neither message and the last record has no key: dead letters.
batch_while_running='h1|{"measurement": 47.0}
h4|{"temperature": 0.0, "up_delta": 0.5, "down_delta": 0.5}
h4|{"measurement": 1.0}'
# h1: last sent ON, 47 > 46: OFF.                                    -> OFF
# h4: first setting, band [-0.5, 0.5]: 1.0 OFF.                      -> OFF
batch_after_restart='h1|{"measurement": 47.5}
h1|{"measurement": 40.0}
h2|{"measurement": 28.0}
h3|{"measurement": 52.0}
h3|{"measurement": 48.0}
h5|{"measurement": 10.5}'
# Only a state restored from the changelog gives these:
# h1: last sent OFF, so 47.5 sends nothing; 40 ON.                   -> ON
# h2: the second setting (band [29, 31]) holds: 28 ON (the first, band
#     [19.5, 22], would have said OFF).                              -> ON
# h3: last sent OFF, so 52 sends nothing; 48 ON.                     -> ON
# h5: 10.5 in band.                                                  -> nothing
expected='h1 {"control":0}
h1 {"control":1}
h1 {"control":0}
h1 {"control":1}
h1 {"control":0}
h2 {"control":1}
h2 {"control":0}
h2 {"control":1}
h2 {"control":0}
h3 {"control":1}
h3 {"control":0}
h4 {"control":1}
h5 {"control":0}
h5 {"control":1}'
expected_dead_letters=5

produce() { # TOPIC LINES
  printf '%s\n' "$2" | kcat -P -b "$brokers" -t "$1" -K'|' -X partitioner=murmur2_random
}

# Records of TOPIC as "KEY VALUE" lines, per key in offset order (keys land
# on one partition each, so only the order within a key is meaningful).
read_topic() {
  kcat -C -b "$brokers" -t "$1" -o beginning -e -q -f '%k %s\n' \
    -X isolation.level=read_committed | sort -s -k1,1
}

start_app() { # LOG GUARANTEE ...
  local log=$1; shift
  "$here/run.sh" --brokers "$brokers" --input "$input" --output "$output" --group "$group" \
    --dead-letter "$dead" --threads 2 --guarantee "$@" 2>"$log" &
  app_pid=$!
  for _ in $(seq 1 180); do
    grep -q 'RUNNING' "$log" && return 0
    kill -0 "$app_pid" 2>/dev/null || { cat "$log" >&2; fail "the app exited during start-up"; }
    sleep 0.5
  done
  cat "$log" >&2; fail "the app did not reach RUNNING within 90 s"
}

stop_app() { # LOG
  local t0=$SECONDS rc=0
  kill -TERM "$app_pid"
  wait "$app_pid" || rc=$?
  app_pid=
  [ "$rc" = 0 ] || [ "$rc" = 143 ] || { cat "$1" >&2; fail "the app exited with $rc on SIGTERM"; }
  grep -q 'closed' "$1" || { cat "$1" >&2; fail "the app did not close Kafka Streams"; }
  echo "smoke:   stopped in $((SECONDS - t0)) s (exit $rc)"
}

wait_for_lines() { # TOPIC COUNT
  for _ in $(seq 1 60); do
    [ "$(read_topic "$1" | wc -l)" -ge "$2" ] && break
    sleep 1
  done
  sleep 2 # anything unexpected after the last expected record shows up too
}

run_id=$(date +%s)-$$
for guarantee in at-least-once exactly-once; do
  input=smoke-$run_id-$guarantee-sensor
  output=smoke-$run_id-$guarantee-control
  dead=smoke-$run_id-$guarantee-dlq
  group=smoke-$run_id-$guarantee
  echo "smoke: $guarantee: topics $input, $output, $dead"
  java -cp "$jar" dev.riffle.bench.kstreams.Topics "$brokers" 10 "$input" "$output" "$dead"

  produce "$input" "$batch_before_start"
  t0=$SECONDS
  start_app "$work/$guarantee-1.log" "$guarantee"
  echo "smoke:   RUNNING after $((SECONDS - t0)) s"
  produce "$input" "$batch_while_running"
  wait_for_lines "$output" 11
  stop_app "$work/$guarantee-1.log"

  t0=$SECONDS
  start_app "$work/$guarantee-2.log" "$guarantee"
  echo "smoke:   restarted, RUNNING after $((SECONDS - t0)) s"
  produce "$input" "$batch_after_restart"
  wait_for_lines "$output" 14
  stop_app "$work/$guarantee-2.log"

  got=$(read_topic "$output")
  if [ "$got" != "$expected" ]; then
    diff <(echo "$expected") <(echo "$got") >&2 || true
    fail "$guarantee: the commands differ from the expected ones (< expected, > got)"
  fi
  dead_letters=$(read_topic "$dead" | wc -l)
  [ "$dead_letters" = "$expected_dead_letters" ] \
    || { read_topic "$dead" >&2; fail "$guarantee: $dead_letters dead letters, not $expected_dead_letters"; }
  echo "smoke: $guarantee: OK ($(echo "$got" | wc -l) commands, $dead_letters dead letters)"
done
echo "smoke: all OK"
