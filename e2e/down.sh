#!/usr/bin/env bash
# Stops what e2e/up.sh started on this machine, by PID, and removes what
# the test bed's node made (containers, mounts, links, iptables rules).
set -euo pipefail
cd "$(dirname "$0")/.."
state=${NESTOR_STATE_DIR:-${TMPDIR:-/tmp}/nestor}
if [ -f "$state/testbed/pids" ]; then
  cargo build --quiet --locked --bins -p nestor-e2e
  ./target/debug/nestor-testbed down "$state/testbed"
fi
rm -rf "$state"
