#!/usr/bin/env bash
# Stops what e2e/up.sh started on this machine, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
state=${NESTOR_STATE_DIR:-${TMPDIR:-/tmp}/nestor}
if [ -f "$state/operator.pid" ]; then
  pid=$(cat "$state/operator.pid")
  kill "$pid" 2>/dev/null && echo "down: stopped the operator (PID $pid)" || true
  rm -f "$state/operator.pid"
fi
if [ -f "$state/testbed/pids" ]; then
  cargo build --quiet --bins -p nestor-e2e
  ./target/debug/nestor-testbed down "$state/testbed"
fi
rm -rf "$state"
