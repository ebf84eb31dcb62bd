#!/usr/bin/env bash
# memory-bench: what the daemon keeps resident (issue 16: warming 20,000 files
# once grew it from 8.5 MB to 1.49 GB). On FILES files of 4 KiB, with the
# defaults (io_uring, registered buffers, 2 promotions of 8 x 1 MiB):
#
#   start       daemon on an empty cache                      VmRSS
#   warm        `hotshard warm` of all FILES                  VmRSS after, VmHWM
#   restart     daemon on the cache now holding FILES objects VmRSS  -> per object
#   lookup      `stat` of READ_FILES files through the mount   VmRSS  (inodes the kernel knows)
#   read        those files read through the mount, 11 ticks   VmRSS  -> per tracked shard
#                                                              (status heat.shards)
#
# Per object = (restart - start) / FILES; per tracked shard = (read - lookup) /
# heat.shards, so the inode the kernel holds (lookup) is not counted twice.
# Each RSS after a restart is read once 11 ticks have passed, so that the
# placement's periodic pass over the index (a copy of it every 10 ticks) is in
# the baseline and not charged to the shards.
# Writes a markdown section to docs/benchmarks.d/memory.md (make bench appends
# it to docs/benchmarks.md) and prints it. Stops its daemon and unmounts on
# exit, failure or Ctrl-C.
#
#   MEMORY_FILES=20000
#   MEMORY_READ_FILES=10000   (at most FILES; whole directories of 1000)
#   MEMORY_DIR=/var/tmp/hotshard-membench   data set (kept between runs), mount, cache
#   MEMORY_OUT=docs/benchmarks.d/memory.md
set -euo pipefail
cd "$(dirname "$0")/../.."

FILES=${MEMORY_FILES:-20000}
ROOT=${MEMORY_DIR:-/var/tmp/hotshard-membench}
OUT=${MEMORY_OUT:-docs/benchmarks.d/memory.md}
BIN=$PWD/build/hotshard
REMOTE=$ROOT/remote MNT=$ROOT/mnt CACHE=$ROOT/cache SOCK=$ROOT/control.sock LOG=$ROOT/daemon.log
PER_DIR=1000
# Files looked up and read through the mount: while the daemon holds a
# descriptor per inode (issue 16 item 1), at most half the descriptor limit.
READ_FILES=${MEMORY_READ_FILES:-$(( FILES < 10000 ? FILES : 10000 ))}

[[ $(id -u) -eq 0 ]] || { echo "memory-bench: needs root (it mounts)" >&2; exit 1; }

pid=
stop() {
  if [[ -n "$pid" ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
  fi
  if mountpoint -q "$MNT"; then umount -l "$MNT"; fi
}
trap stop EXIT INT TERM

start() {
  stop
  ulimit -n "$(ulimit -Hn)"  # one descriptor per inode the kernel knows (issue 16 item 1)
  "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" --cache "$CACHE" \
    --control-socket "$SOCK" --metrics off 2>>"$LOG" &
  pid=$!
  for _ in $(seq 400); do
    "$BIN" status --socket "$SOCK" --json >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  echo "memory-bench: hotshard did not start; see $LOG" >&2
  exit 1
}

kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$pid/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { printf "%.0f", (n > 0 ? (b - a) * 1024 / n : 0) }'; }

prepare() {
  mkdir -p "$MNT"
  rm -rf "$CACHE" && mkdir -p "$CACHE"
  : >"$LOG"
  [[ -f "$ROOT/.prepared-$FILES" ]] && return
  echo "memory-bench: generating $FILES files of 4 KiB in $REMOTE (once)" >&2
  rm -rf "$REMOTE" "$ROOT"/.prepared-*
  python3 - "$REMOTE" "$FILES" "$PER_DIR" <<'PY'
import os, sys
root, n, per = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(n):
    d = os.path.join(root, f"d{i // per}")
    if i % per == 0:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i % per}"), "wb") as f:
        f.write(os.urandom(4096))
PY
  touch "$ROOT/.prepared-$FILES"
}

prepare
subset=()
for ((d = 0; d * PER_DIR < READ_FILES; d++)); do subset+=("$MNT/d$d"); done
start
rss_start=$(kib VmRSS)
t0=$(date +%s.%N)
"$BIN" warm --socket "$SOCK" "$MNT" >/dev/null
warm_s=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
rss_warm=$(kib VmRSS) hwm_warm=$(kib VmHWM)
objects=$("$BIN" status --socket "$SOCK" --json | grep -o '"objects":[0-9]*' | head -1 | cut -d: -f2)

start
settle() { sleep 11; }  # past tick 10: placement's periodic pass over the index has run
settle
rss_restart=$(kib VmRSS)
find "${subset[@]}" -type f -exec stat -c %s {} + >/dev/null
rss_lookup=$(kib VmRSS)
find "${subset[@]}" -type f -exec cat {} + >/dev/null
settle  # heat drained into the policy, the periodic pass run again
rss_read=$(kib VmRSS)
shards=$("$BIN" status --socket "$SOCK" --json | grep -o '"shards":[0-9]*' | head -1 | cut -d: -f2)
stop

{
  echo "## Daemon memory"
  echo
  echo "$FILES files of 4 KiB ($((FILES / PER_DIR)) directories), the daemon at its defaults"
  echo "(\`tools/bench/memory-bench.sh\`, MEMORY_FILES=$FILES). VmRSS from /proc/PID/status."
  echo
  echo "| step | daemon RSS | target |"
  echo "| --- | ---: | --- |"
  echo "| started on an empty cache | $(mib "$rss_start") MiB | |"
  echo "| after \`hotshard warm\` of $FILES files ($objects cached, ${warm_s}s) | **$(mib "$rss_warm") MiB** | <= 64 MB |"
  echo "| peak while warming (VmHWM) | $(mib "$hwm_warm") MiB | |"
  echo "| restarted on the cache of $objects objects | $(mib "$rss_restart") MiB | |"
  echo "| after \`stat\` of $READ_FILES files through the mount | $(mib "$rss_lookup") MiB | |"
  echo "| after reading them ($shards shards tracked) | $(mib "$rss_read") MiB | |"
  echo
  echo "Per cached object (index entry): $(per "$rss_start" "$rss_restart" "$objects") B."
  echo "Per inode the kernel knows (lookup): $(per "$rss_restart" "$rss_lookup" "$READ_FILES") B."
  echo "Per tracked shard (heat and policy state, inode excluded): **$(per "$rss_lookup" "$rss_read" "$shards") B** (target <= 512 B)."
} >"$OUT.new"
mv "$OUT.new" "$OUT"
cat "$OUT"
