#!/usr/bin/env bash
# Installs what building and testing Riffle needs on a fresh Debian machine,
# skipping whatever is already there. Sourced by demo.sh and test.sh.
#
#   scripts/setup.sh            build prerequisites: C toolchain, and the libraries
#                               librdkafka links (zlib, zstd, OpenSSL, libcurl), Rust check
#   scripts/setup.sh --test     also Java, Maven, kcat and openssl for the test broker
#                               (and the certificates of its TLS listeners), and
#                               the servers the connector tests start (Mosquitto,
#                               NATS, RabbitMQ, Redis; none is left running) and
#                               Chromium, which renders the dashboard headless
set -euo pipefail

need=(build-essential pkg-config zlib1g-dev libzstd-dev libssl-dev libcurl4-openssl-dev)
if [ "${1:-}" = "--test" ]; then
  need+=(maven kcat openssl python3-venv mosquitto nats-server rabbitmq-server redis-server chromium)
  command -v java >/dev/null || need+=(openjdk-17-jre-headless)
fi

missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

if ! command -v cargo >/dev/null; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (https://rustup.rs)" >&2; exit 1; }
