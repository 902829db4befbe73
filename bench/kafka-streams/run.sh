#!/usr/bin/env bash
# Runs the Kafka Streams heater controller until SIGTERM or SIGINT; builds the
# jar first if there is none. `run.sh --help` lists the flags. JAVA_OPTS
# passes options to the JVM.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
jar=$here/target/heater-kafka-streams.jar
[ -f "$jar" ] || "$here/build.sh" >/dev/null
# exec: the JVM gets the signals itself, and its shutdown hook closes
# Kafka Streams.
# shellcheck disable=SC2086
exec java ${JAVA_OPTS:-} -jar "$jar" "$@"
