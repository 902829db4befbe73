#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft mode) on 127.0.0.1 for tests,
# benchmarks and local use.
#
#   scripts/kafka.sh fetch    resolve the broker's jars from Maven Central (cached)
#   scripts/kafka.sh start    fetch if needed, format storage, start, wait until it serves
#   scripts/kafka.sh stop     stop the broker started by `start`
#   scripts/kafka.sh status   say whether it is running
#   scripts/kafka.sh env      print the test variables below as shell assignments
#
# Listeners, all on 127.0.0.1 (inter-broker and controller traffic is PLAINTEXT):
#   KAFKA_PORT      PLAINTEXT
#   KAFKA_PORT+1    the KRaft controller
#   KAFKA_PORT+2    SASL_SSL, SCRAM-SHA-512, user riffle / riffle-secret
#                   (created when the storage is formatted)
#   KAFKA_PORT+3    SSL with client certificates required (mTLS)
# The certificates are made with openssl under $data/tls (TLS_DIR below):
#   ca.pem                the CA that signed the server's and the client's
#   server.pem            the broker's key and chain (SAN IP:127.0.0.1, DNS:localhost)
#   client.pem client.key the client certificate (CN=riffle-client) and its key
#   other-ca.pem          a CA that signed nothing here, for failure tests
#   sasl-ssl.properties   librdkafka settings for the SASL_SSL listener
#   ssl.properties        librdkafka settings for the mTLS listener
#
# `env` prints, for scripts/test.sh and the tests:
#   RIFFLE_TEST_BROKERS   127.0.0.1:KAFKA_PORT
#   RIFFLE_TEST_SASL_SSL  127.0.0.1:KAFKA_PORT+2
#   RIFFLE_TEST_SSL       127.0.0.1:KAFKA_PORT+3
#   RIFFLE_TEST_TLS_DIR   the directory above, with the two .properties files
#
# Environment:
#   KAFKA_PORT      client port (default 9092); the other listeners follow it
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
sasl_port=$((port + 2))
ssl_port=$((port + 3))
cache=${RIFFLE_CACHE:-$repo/.cache}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/kafka/pom.xml")
libs=$cache/kafka-$version/libs
data=$cache/kafka-data-$port
pidfile=$data/broker.pid
tls=$data/tls
scram_user=riffle
scram_password=riffle-secret

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
# see the ports open; the broker only opens them once it can serve).
open_port() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
serving() { open_port "$port" && open_port "$sasl_port" && open_port "$ssl_port"; }

# A CA, the broker's certificate and a client certificate signed by it, an
# unrelated CA, and client settings for both secured listeners. The broker
# reads PEM files directly (ssl.keystore.type=PEM): no Java keystore.
make_tls() {
  if [ -f "$tls/.complete" ]; then return; fi
  command -v openssl >/dev/null || die "openssl not found: install it (apt-get install openssl)"
  rm -rf "$tls" && mkdir -p "$tls"
  (
    cd "$tls"
    quiet() { "$@" >/dev/null 2>&1 || die "failed: $*"; }
    quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Riffle test CA" \
      -keyout ca.key -out ca.pem
    quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Untrusted CA" \
      -keyout other-ca.key -out other-ca.pem
    sign() { # name subject extensions
      quiet openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr"
      printf '%s\n' "$3" >"$1.ext"
      quiet openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 3650 -extfile "$1.ext" -out "$1.crt"
    }
    sign server /CN=localhost "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth"
    sign client /CN=riffle-client "extendedKeyUsage=clientAuth"
    cat server.key server.crt ca.pem >server.pem
    cp client.crt client.pem
    chmod 600 ./*.key server.pem
    cat >sasl-ssl.properties <<EOF
# The test broker's SASL_SSL listener (scripts/kafka.sh)
bootstrap.servers=127.0.0.1:$sasl_port
security.protocol=SASL_SSL
sasl.mechanisms=SCRAM-SHA-512
sasl.username=$scram_user
sasl.password=$scram_password
ssl.ca.location=$tls/ca.pem
EOF
    cat >ssl.properties <<EOF
# The test broker's mTLS listener (scripts/kafka.sh)
bootstrap.servers=127.0.0.1:$ssl_port
security.protocol=SSL
ssl.ca.location=$tls/ca.pem
ssl.certificate.location=$tls/client.pem
ssl.key.location=$tls/client.key
EOF
    touch .complete
  )
}

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
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port,SASL_SSL://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port,SASL_SSL://127.0.0.1:$sasl_port,SSL://127.0.0.1:$ssl_port
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,SSL:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PEM
ssl.keystore.location=$tls/server.pem
ssl.truststore.type=PEM
ssl.truststore.location=$tls/ca.pem
listener.name.ssl.ssl.client.auth=required
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
  make_tls
  if [ ! -f "$data/log/meta.properties" ]; then
    java_cmd kafka.tools.StorageTool format \
      -t "$(java_cmd kafka.tools.StorageTool random-uuid)" \
      --add-scram "SCRAM-SHA-512=[name=$scram_user,password=$scram_password]" \
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
  die "broker did not open 127.0.0.1:$port, $sasl_port and $ssl_port within 60 s (logs in $data/logs)"
}

env_vars() {
  echo "RIFFLE_TEST_BROKERS=127.0.0.1:$port"
  echo "RIFFLE_TEST_SASL_SSL=127.0.0.1:$sasl_port"
  echo "RIFFLE_TEST_SSL=127.0.0.1:$ssl_port"
  echo "RIFFLE_TEST_TLS_DIR=$tls"
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
  env) env_vars ;;
  status) if running; then echo "running on 127.0.0.1:$port (pid $(cat "$pidfile"))"; else echo "not running"; exit 1; fi ;;
  *) sed -n '2,41p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
