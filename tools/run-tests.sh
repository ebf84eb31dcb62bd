#!/usr/bin/env bash
# Runs the test binary after making sure the kernel facilities it needs are at
# hand (tracefs mounted). Extra arguments go to GoogleTest.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -eq 0 ]] && ! mountpoint -q /sys/kernel/tracing; then
  mount -t tracefs nodev /sys/kernel/tracing || echo "run-tests: could not mount tracefs" >&2
fi
exec build/hotshard-tests --gtest_color=no "$@"
