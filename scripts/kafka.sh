#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft mode) on 127.0.0.1 for tests,
# benchmarks and local use.
#
#   scripts/kafka.sh fetch    resolve the broker's jars from Maven Central (cached)
#   scripts/kafka.sh start    fetch if needed, format storage, start, wait until it serves
#   scripts/kafka.sh stop     stop the broker started by `start`
#   scripts/kafka.sh status   say whether it is running
#
# Environment:
#   KAFKA_PORT      client port (default 9092); the controller uses KAFKA_PORT+1
#   RIFFLE_CACHE    cache directory (default <repo>/.cache); jars go to
#                   $RIFFLE_CACHE/kafka-<version>/libs, data to $RIFFLE_CACHE/kafka-data
#   KAFKA_FRESH=1   wipe the broker's data before starting
#   KAFKA_REBALANCE_DELAY_MS
#                   how long a new group waits for more members before its
#                   first assignment (default 0, so that tests start at once;
#                   Kafka's own default is 3000)
#
# Prints the bootstrap address (127.0.0.1:PORT) on success.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
port=${KAFKA_PORT:-9092}
controller_port=$((port + 1))
cache=${RIFFLE_CACHE:-$repo/.cache}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
libs=$cache/kafka-$version/libs
data=$cache/kafka-data-$port
pidfile=$data/broker.pid

die() { echo "kafka.sh: $*" >&2; exit 1; }

fetch() {
  if [ -f "$libs/.complete" ]; then return; fi
  command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven)"
  command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
  echo "kafka.sh: resolving Apache Kafka $version from Maven Central into $libs" >&2
  rm -rf "$libs" && mkdir -p "$libs"
  mvn -q -B -f "$here/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2 \
    || die "could not resolve org.apache.kafka:kafka_2.13:$version with mvn"
  touch "$libs/.complete"
}

running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

# True when the broker answers a metadata request (bash /dev/tcp is enough to
# see the port open; the broker only opens it once it can serve).
serving() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

java_cmd() {
  local main=$1; shift
  java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$data/logs" \
    -cp "$libs/*" "$main" "$@"
}

write_config() {
  mkdir -p "$data/logs"
  cat > "$data/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$data/log
# Everything else is at Apache Kafka's defaults (auto.create.topics.enable=true
# among them), as users run it, except what follows.
# One node: the internal topics cannot have three replicas.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests: a new group is assigned at once (see KAFKA_REBALANCE_DELAY_MS).
group.initial.rebalance.delay.ms=${KAFKA_REBALANCE_DELAY_MS:-0}
EOF
}

start() {
  if running; then echo "127.0.0.1:$port"; return; fi
  fetch
  if [ "${KAFKA_FRESH:-0}" = 1 ]; then rm -rf "$data"; fi
  write_config
  if [ ! -f "$data/log/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format \
      -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      -c "$data/server.properties" >"$data/logs/format.out" 2>&1 \
      || { cat "$data/logs/format.out" >&2; die "storage format failed"; }
  fi
  nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$here/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$data/logs" -cp "$libs/*" kafka.Kafka "$data/server.properties" \
    >"$data/logs/stdout.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  for _ in $(seq 1 120); do
    if serving; then echo "127.0.0.1:$port"; return; fi
    running || { tail -n 40 "$data/logs/stdout.log" "$data/logs/server.log" >&2 2>/dev/null; die "broker exited during start-up"; }
    sleep 0.5
  done
  die "broker did not open 127.0.0.1:$port within 60 s (logs in $data/logs)"
}

stop() {
  running || { echo "kafka.sh: not running" >&2; return 0; }
  local pid; pid=$(cat "$pidfile")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$pidfile"; return 0; }; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "not running"; exit 1; fi ;;
  *) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
