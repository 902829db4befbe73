#!/usr/bin/env bash
# Builds Riffle and runs its main job on the embedded log (nothing else
# needed). Extra arguments go to the demo, e.g. scripts/demo.sh --duration 60s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cargo build --release -q -p riffle-cli
exec target/release/riffle demo heater "$@"
