#!/usr/bin/env bash
# namespace-bench: `stat` of 10,000 files at 5-deep paths (deep/b/c/dNN/fNNN)
# after a daemon restart in immutable mode, answered from the persistent
# namespace (fuse/namespace_cache.h; issue 16 item 4), against the same tree
# read natively from local disk. The remote is sshfs (the data set served by
# sftp-server -l DEBUG1 through a stand-in for ssh, sshfs's own caches off),
# so the metadata requests that reach the server are counted on the server's
# side (its log: lstat, stat, fstat, opendir, readdir, realpath, readlink).
#
#   1. the daemon starts, one walk + stat of every file through it (learning);
#   2. the daemon is restarted; `echo 2 > /proc/sys/vm/drop_caches` (dentries
#      and inodes) before the first pass, natively as through the mount;
#   3. first pass (cold) and second pass (warm), each `hotshard-readbench stat`.
# Writes docs/benchmarks.d/namespace.md (make bench appends it) and prints it.
#
#   NS_BENCH_DIR=/var/tmp/hotshard-ns-bench   data set, mounts, cache
#   NS_BENCH_REPS=3                           runs per cell (median)
#   NS_BENCH_OUT=docs/benchmarks.d/namespace.md
#   NS_BENCH_PROBES=on                        the daemon's --probes (on, off)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${NS_BENCH_DIR:-/var/tmp/hotshard-ns-bench}
REPS=${NS_BENCH_REPS:-3}
PROBES=${NS_BENCH_PROBES:-on}
OUT=${NS_BENCH_OUT:-docs/benchmarks.d/namespace.md}
BIN=$PWD/build/hotshard
RB=$PWD/build/hotshard-readbench
SOURCE=$ROOT/source REMOTE=$ROOT/remote MNT=$ROOT/mnt CACHE=$ROOT/cache SOCK=$ROOT/ctl.sock
LOG=$ROOT/sftp.log
[[ $(id -u) -eq 0 ]] || { echo "namespace-bench: needs root (mounts, drop_caches)" >&2; exit 1; }

# shellcheck source=tools/bench/daemon-lib.sh
source tools/bench/daemon-lib.sh
cleanup() {
  stop_daemon
  if mountpoint -q "$REMOTE"; then umount -l "$REMOTE"; fi
}
trap cleanup EXIT INT TERM

start_daemon() {
  stop_daemon
  "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" --cache "$CACHE" \
    --consistency immutable --control-socket "$SOCK" --log-level warn --placement manual \
    --probes "$PROBES" --metrics off 2>>"$ROOT/daemon.log" &
  daemon_pid=$!
  for _ in $(seq 200); do
    "$BIN" status --socket "$SOCK" --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "namespace-bench: hotshard did not start; see $ROOT/daemon.log" >&2
  exit 1
}

# Metadata requests in the server's log so far.
remote_ops() {
  grep -cE '^(debug1: request [0-9]+: )?(lstat name|stat name|fstat|opendir|readdir|realpath|readlink|statvfs) ' \
    "$LOG" || true
}
field() { grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
# timed_stat DIR: "stats_per_s walk_and_stat_seconds" of one hotshard-readbench stat run.
timed_stat() {
  local t0 out
  t0=$(date +%s.%N)
  out=$("$RB" stat "$1")
  printf '%s %s\n' "$(field ops_per_s <<<"$out")" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.3f", b - a}')"
}
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# The FUSE requests the daemon has answered so far, by opcode (`hotshard status --json`).
requests() { "$BIN" status --socket "$SOCK" --json | jq -c '.fuse.requests // {}'; }
# "op N, ..." of the requests between two `requests` snapshots.
req_delta() {
  jq -rn --argjson a "$1" --argjson b "$2" \
    '[$b | to_entries[] | select(.value - ($a[.key] // 0) > 0) | "\(.key) \(.value - ($a[.key] // 0))"] | join(", ")'
}

mkdir -p "$SOURCE" "$REMOTE" "$MNT"
if [[ ! -f "$ROOT/.made-deep" ]]; then
  echo "namespace-bench: generating the tree in $SOURCE/deep (once)"
  for d in $(seq -w 1 100); do
    mkdir -p "$SOURCE/deep/b/c/d$d"
    for f in $(seq -w 1 100); do printf '%s' "$f" > "$SOURCE/deep/b/c/d$d/f$f"; done
  done
  sync
  touch "$ROOT/.made-deep"
fi
cat > "$ROOT/fake-ssh" <<EOF
#!/bin/bash
exec /usr/lib/openssh/sftp-server -e -l DEBUG1 2>>$LOG
EOF
chmod 755 "$ROOT/fake-ssh"
: > "$LOG"
: > "$ROOT/daemon.log"
sshfs -o "ssh_command=$ROOT/fake-ssh" -o dir_cache=no,entry_timeout=0,attr_timeout=0,negative_timeout=0 \
  "localhost:$SOURCE" "$REMOTE"

rm -rf "$CACHE"
mkdir -p "$CACHE"
start_daemon
learn_t0=$(date +%s.%N)
"$RB" stat "$MNT/deep" >/dev/null
learn_s=$(awk -v a="$learn_t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
learn_ops=$(remote_ops)

cold_n=() cold_m=() warm_n=() warm_m=() ops=() wall_n=() wall_m=()
for rep in $(seq "$REPS"); do
  sync; echo 2 > /proc/sys/vm/drop_caches
  read -r v w < <(timed_stat "$SOURCE/deep"); cold_n+=("$v"); wall_n+=("$w")
  warm_n+=("$("$RB" stat "$SOURCE/deep" | field ops_per_s)")
  start_daemon  # a restart: the kernel's caches of the mount go with it
  sync; echo 2 > /proc/sys/vm/drop_caches
  before=$(remote_ops)
  read -r v w < <(timed_stat "$MNT/deep"); cold_m+=("$v"); wall_m+=("$w")
  ops+=($(( $(remote_ops) - before )))
  req_a=$(requests)
  warm_m+=("$("$RB" stat "$MNT/deep" | field ops_per_s)")
  warm_req=$(req_delta "$req_a" "$(requests)")
done
# For comparison, once: the same restart with the namespace deleted before it.
stop_daemon
rm -f "$CACHE"/namespace.mdb*
start_daemon
sync; echo 2 > /proc/sys/vm/drop_caches
before=$(remote_ops)
read -r without_m without_w < <(timed_stat "$MNT/deep")
without_ops=$(( $(remote_ops) - before ))
stop_daemon
# Records: every file and directory of the tree, and the root.
records=$(( $(find "$SOURCE" -mindepth 1 | wc -l) + 1 ))
db_bytes=$(stat -c %s "$CACHE/namespace.mdb")

cn=$(printf '%s\n' "${cold_n[@]}" | median) cm=$(printf '%s\n' "${cold_m[@]}" | median)
wn=$(printf '%s\n' "${warm_n[@]}" | median) wm=$(printf '%s\n' "${warm_m[@]}" | median)
max_ops=$(printf '%s\n' "${ops[@]}" | sort -g | tail -1)
wn_s=$(printf '%s\n' "${wall_n[@]}" | median) wm_s=$(printf '%s\n' "${wall_m[@]}" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b / a}'; }
mkdir -p "$(dirname "$OUT")"
{
  echo "## Persistent namespace: stat after a restart (immutable)"
  echo
  echo "\`tools/bench/namespace-bench.sh\` ($(date -u +%Y-%m-%d), $(nproc) cores, medians of $REPS)."
  echo "10,000 files at 5-deep paths; the remote is sshfs (sftp-server on this machine, sshfs's"
  echo "caches off), learnt once through the mount ($learn_s s, $learn_ops remote metadata requests),"
  echo "then each run restarts the daemon and drops dentries and inodes (\`echo 2 >"
  echo "/proc/sys/vm/drop_caches\`) before the first pass, natively (the same tree on local disk) as"
  echo "through the mount. Remote requests: counted in sftp-server's own log (DEBUG1), over the"
  echo "whole \`hotshard-readbench stat\` run: its walk of the tree (readdir, untimed, as in the"
  echo "table above) and the timed \`stat\` of every file. The timed stats come after the walk,"
  echo "which (readdirplus) has filled the kernel's caches, with or without the namespace; the"
  echo "seconds rows time the whole run, walk included (ratio: native seconds / hotshard seconds)."
  echo
  echo "| figure | native | hotshard immutable | ratio | target |"
  echo "|---|---|---|---|---|"
  echo "| stat of 10,000 files, 1st pass after a restart (cold), stats/s | $cn | $cm | **$(ratio "$cn" "$cm")** | >= 0.80 |"
  echo "| the same pass: remote metadata requests (most of $REPS runs) | - | $max_ops | | 0 |"
  echo "| stat of 10,000 files, 2nd pass (warm), stats/s | $wn | $wm | **$(ratio "$wn" "$wm")** | >= 0.90 |"
  echo "| the same pass: FUSE requests the daemon answered (last run; the untimed walk's included) | - | $warm_req | | - |"
  echo "| for comparison, 1st pass after a restart without the namespace (one run), stats/s | $cn | $without_m | $(ratio "$cn" "$without_m") | - |"
  echo "| the same pass: remote metadata requests | - | $without_ops | | - |"
  echo "| 1st pass after a restart (cold), the walk and the stats, seconds (lower is better) | $wn_s | $wm_s | $(ratio "$wm_s" "$wn_s") | - |"
  echo "| the same, without the namespace (one run), seconds | $wn_s | $without_w | $(ratio "$without_w" "$wn_s") | - |"
  echo
  echo "Namespace after the runs: $records records (every file and directory, the root), namespace.mdb"
  echo "$db_bytes bytes: $(( db_bytes / records )) bytes per record."
} > "$OUT.new"
mv "$OUT.new" "$OUT"
cat "$OUT"
