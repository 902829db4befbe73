#!/usr/bin/env bash
# Builds the Kafka Streams heater controller into one runnable jar:
# bench/kafka-streams/target/heater-kafka-streams.jar
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
command -v mvn >/dev/null || { echo "build.sh: mvn not found (apt-get install maven)" >&2; exit 1; }
mvn -q -B -Dstyle.color=never -f "$here/pom.xml" package -DskipTests >&2
echo "$here/target/heater-kafka-streams.jar"
