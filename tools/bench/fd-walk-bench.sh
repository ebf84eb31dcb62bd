#!/usr/bin/env bash
# fd-walk-bench: a walk of many files with the daemon at a small descriptor
# limit (issue 16 item 1: inodes must not cost a descriptor each). 10,000 files
# in 100 directories, made on the remote; the daemon started with RLIMIT_NOFILE
# soft and hard at 1,024 (`prlimit --nofile=1024:1024`; the daemon raises soft
# to hard, so both are set) in immutable mode (the kernel keeps every inode it
# looked up); then `find -printf '%s'` through the mount (readdir, and a stat of
# each name). Reports the files seen (target: all), the walk's time natively
# and through the mount, and the daemon's descriptors after the walk (from
# /proc/PID/fd) beside its cached inode fds and walks (`hotshard status`).
# Writes docs/benchmarks.d/fd-walk.md (make bench appends it to
# docs/benchmarks.md) and prints it.
#
#   FD_WALK_DIR=/var/tmp/hotshard-fd-walk   data set, mount, cache (data set kept)
#   FD_WALK_FILES=10000    files (in FD_WALK_FILES / 100 directories)
#   FD_WALK_LIMIT=1024     the daemon's descriptor limit, soft and hard
#   FD_WALK_OUT=docs/benchmarks.d/fd-walk.md
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${FD_WALK_DIR:-/var/tmp/hotshard-fd-walk}
NFILES=${FD_WALK_FILES:-10000}
LIMIT=${FD_WALK_LIMIT:-1024}
OUT=${FD_WALK_OUT:-docs/benchmarks.d/fd-walk.md}
BIN=$PWD/build/hotshard
REMOTE=$ROOT/remote MNT=$ROOT/mnt CACHE=$ROOT/cache SOCK=$ROOT/ctl.sock
[[ $(id -u) -eq 0 ]] || { echo "fd-walk-bench: needs root (mounts)" >&2; exit 1; }

daemon_pid=
stop_daemon() {
  if [[ -n "$daemon_pid" ]]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=
  fi
  if mountpoint -q "$MNT"; then umount -l "$MNT"; fi
}
trap stop_daemon EXIT INT TERM

rm -rf "$CACHE"
mkdir -p "$MNT" "$CACHE"
dirs=$(( (NFILES + 99) / 100 ))
if [[ ! -f "$REMOTE/.made-$NFILES" ]]; then
  rm -rf "$REMOTE"; mkdir -p "$REMOTE/walk"
  for d in $(seq 1 "$dirs"); do
    mkdir "$REMOTE/walk/d$d"
    (cd "$REMOTE/walk/d$d" && seq 1 100 | sed 's/^/f/' | xargs touch)
  done
  touch "$REMOTE/.made-$NFILES"
fi

prlimit --nofile="$LIMIT:$LIMIT" "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" \
  --cache "$CACHE" --consistency immutable --control-socket "$SOCK" --log-level warn \
  --placement manual --metrics off 2>"$ROOT/daemon.log" &
daemon_pid=$!
for _ in $(seq 200); do
  "$BIN" status --socket "$SOCK" --json >/dev/null 2>&1 && break
  sleep 0.05
done

walk() {  # dir -> "files seconds"
  local t0 t1 n
  t0=$(date +%s.%N)
  n=$(find "$1" -type f -printf '%s\n' 2>>"$ROOT/walk-errors.log" | wc -l)
  t1=$(date +%s.%N)
  echo "$n $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f", b - a}')"
}
: > "$ROOT/walk-errors.log"
read -r native_seen native_s < <(walk "$REMOTE/walk")
read -r mount_seen mount_s < <(walk "$MNT/walk")
errors=$(grep -c . "$ROOT/walk-errors.log" || true)
daemon_fds=$(ls "/proc/$daemon_pid/fd" | wc -l)
status=$("$BIN" status --socket "$SOCK" --json)
field() { grep -o "\"$1\":[0-9]*" <<<"$status" | head -1 | cut -d: -f2; }
stop_daemon

{
  echo "## A walk of $NFILES files with the daemon at $LIMIT descriptors"
  echo
  echo "\`tools/bench/fd-walk-bench.sh\`: $NFILES files in $dirs directories, \`find -printf '%s'\`"
  echo "(readdir and a stat of each name), the daemon under \`prlimit --nofile=$LIMIT:$LIMIT\` in"
  echo "immutable mode (the kernel keeps every inode it looked up). Target: every file seen."
  echo
  echo "| | files seen | errors | walk (s) | daemon fds after | inodes | cached inode fds | walks |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  echo "| native | $native_seen | - | $native_s | - | - | - | - |"
  echo "| hotshard | **$mount_seen** | $errors | $mount_s | $daemon_fds | $(field inodes) | $(field inode_fds) | $(field path_walks) |"
} > "$OUT.new"
mv "$OUT.new" "$OUT"
cat "$OUT"
