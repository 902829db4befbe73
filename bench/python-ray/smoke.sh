#!/usr/bin/env bash
# Smoke test of the book's Python heater controller against a running broker:
# creates fresh topics (10 partitions), runs the app, produces settings and
# measurements for a few heaters with kcat, reads its commands with kcat and
# compares them with the commands expected by the rule. A second run with the
# same group must send nothing (every offset was committed after processing).
#
#   smoke.sh [--brokers H:P] [--consumers N]     (default 127.0.0.1:29292, 2)
#
# Exits non-zero on any mismatch.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
brokers=127.0.0.1:29292
consumers=2
while [ $# -gt 0 ]; do
  case $1 in
    --brokers) brokers=$2; shift 2 ;;
    --consumers) consumers=$2; shift 2 ;;
    *) echo "usage: smoke.sh [--brokers H:P] [--consumers N]" >&2; exit 2 ;;
  esac
done
command -v kcat >/dev/null || { echo "smoke.sh: kcat not found" >&2; exit 1; }
venv=$("$here/setup.sh")
py=$venv/bin/python

run_id=$(date +%s)-$$
input=smoke-sensor-$run_id
output=smoke-control-$run_id
group=smoke-ray-$run_id
work=$(mktemp -d)
app_pid=
cleanup() {
  if [ -n "$app_pid" ] && kill -0 "$app_pid" 2>/dev/null; then kill "$app_pid"; wait "$app_pid" || true; fi
  "$py" - "$brokers" "$input" "$output" <<'PY' || true
import sys
from confluent_kafka.admin import AdminClient
admin = AdminClient({'bootstrap.servers': sys.argv[1]})
for f in admin.delete_topics(sys.argv[2:]).values():
    f.result()
PY
  rm -rf "$work"
}
trap cleanup EXIT

echo "smoke: topics $input -> $output, group $group, $consumers consumers"
"$py" - "$brokers" "$input" "$output" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({'bootstrap.servers': sys.argv[1]})
for f in admin.create_topics([NewTopic(t, num_partitions=10, replication_factor=1)
                              for t in sys.argv[2:]]).values():
    f.result()
PY

# Input, key:value per line. Records of one heater go to one partition, in
# this order. Expected commands, by the rule (setting Td/up/down: m > Td+up ->
# OFF {"control":1}; m < Td-down -> ON {"control":0}; else nothing; send only
# when different from the last command sent to that heater; measurements
# before the first setting are ignored):
#   h1: 40.0 before any setting: ignored. Setting 45/1/1 (band 44..46).
#       44.0 not below 44: nothing. 43.5 -> ON. 43.9 -> ON again: not resent.
#       45.0 in band: nothing. 46.2 -> OFF. 46.5 -> OFF again: not resent.
#       43.0 -> ON.                                   => ON, OFF, ON
#   h2: setting 50/2/0.5 (band 49.5..52). 49.6 nothing. 49.4 -> ON.
#       52.0 not above 52: nothing. 52.1 -> OFF.      => ON, OFF
#   h3: measurements only, never a setting.           => nothing
#   h4: setting 45/1/1. 47.0 -> OFF. Setting 50/1/1 (band 49..51).
#       47.0 -> ON. 47.5 -> ON again: not resent.     => OFF, ON
#   h5: a malformed record (skipped), a measurement with a string value
#       (skipped), setting 30/1/1, 20.0 -> ON.        => ON
cat >"$work/input" <<'IN'
h1:{"measurement": 40.0}
h2:{"temperature": 50.0, "up_delta": 2.0, "down_delta": 0.5}
h3:{"measurement": 10.0}
h1:{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}
h4:{"temperature": 45.0, "up_delta": 1.0, "down_delta": 1.0}
h5:not json
h1:{"measurement": 44.0}
h2:{"measurement": 49.6}
h1:{"measurement": 43.5}
h5:{"measurement": "hot"}
h4:{"measurement": 47.0}
h1:{"measurement": 43.9}
h2:{"measurement": 49.4}
h3:{"measurement": 90.0}
h1:{"measurement": 45.0}
h4:{"temperature": 50.0, "up_delta": 1.0, "down_delta": 1.0}
h2:{"measurement": 52.0}
h1:{"measurement": 46.2}
h5:{"temperature": 30.0, "up_delta": 1.0, "down_delta": 1.0}
h4:{"measurement": 47.0}
h1:{"measurement": 46.5}
h2:{"measurement": 52.1}
h5:{"measurement": 20.0}
h4:{"measurement": 47.5}
h1:{"measurement": 43.0}
IN
cat >"$work/expected" <<'OUT'
h1 {"control":0}
h1 {"control":1}
h1 {"control":0}
h2 {"control":0}
h2 {"control":1}
h4 {"control":1}
h4 {"control":0}
h5 {"control":0}
OUT
n_expected=$(wc -l <"$work/expected")

# Reads the output topic: "key value" lines, stably sorted by key (each key's
# commands keep their order: one key, one partition).
read_output() {
  kcat -C -b "$brokers" -t "$output" -e -q -f '%k %s\n' 2>/dev/null | sort -s -k1,1
}

# Starts the app; waits for its "running" line; sets $ready to the seconds
# it took.
start_app() {
  local log=$1 t0; t0=$(date +%s.%N)
  "$here/run.sh" --brokers "$brokers" --input "$input" --output "$output" \
    --group "$group" --consumers "$consumers" >"$log.out" 2>"$log" &
  app_pid=$!
  for _ in $(seq 1 1200); do
    if grep -q '^controller: running' "$log"; then
      ready=$(echo "$(date +%s.%N) - $t0" | bc); return 0
    fi
    kill -0 "$app_pid" 2>/dev/null || { cat "$log" >&2; echo "smoke: app exited during start-up" >&2; exit 1; }
    sleep 0.1
  done
  cat "$log" >&2; echo "smoke: app not running after 120 s" >&2; exit 1
}

stop_app() {
  local log=$1 rc=0
  kill -TERM "$app_pid"
  wait "$app_pid" || rc=$?
  app_pid=
  grep '^controller: stopped' "$log" || true
  [ "$rc" = 0 ] || { cat "$log" >&2; echo "smoke: app exited with $rc on SIGTERM" >&2; exit 1; }
}

start_app "$work/run1.log"
echo "smoke: run 1 ready in ${ready} s (Ray start-up included)"
grep '^controller: running' "$work/run1.log"
# Input goes in once the group has settled: state lives in the consumer
# actors only, so a partition moving during the group's formation would lose
# its heaters' settings (the book's design).
kcat -P -b "$brokers" -t "$input" -K: -X partitioner=murmur2_random <"$work/input"
for _ in $(seq 1 300); do
  [ "$(read_output | wc -l)" -ge "$n_expected" ] && break
  sleep 0.1
done
sleep 2   # let any extra command arrive
stop_app "$work/run1.log"
read_output >"$work/actual"
if ! diff -u "$work/expected" "$work/actual"; then
  echo "smoke: FAIL: commands differ from the expected ones (diff above)" >&2; exit 1
fi
grep -c 'Skipping record' "$work/run1.log" | grep -qx 2 \
  || { cat "$work/run1.log" >&2; echo "smoke: FAIL: expected 2 skipped records" >&2; exit 1; }
echo "smoke: run 1: $n_expected commands as expected, byte for byte; 2 malformed records skipped"

# Run 2: same group. Every offset was committed after processing, so nothing
# is read again and nothing is sent.
start_app "$work/run2.log"
echo "smoke: run 2 ready in ${ready} s"
sleep 3
stop_app "$work/run2.log"
grep -q '^controller: stopped: 0 records' "$work/run2.log" \
  || { echo "smoke: FAIL: the restarted app read records again (offsets not committed)" >&2; exit 1; }
read_output >"$work/actual2"
if ! diff -u "$work/expected" "$work/actual2"; then
  echo "smoke: FAIL: the restarted app sent commands again (offsets not committed)" >&2; exit 1
fi
echo "smoke: run 2: nothing reprocessed"
echo "smoke: PASS"
