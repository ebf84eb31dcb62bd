#!/usr/bin/env bash
# cache-bench: what the cache buys in front of a slow remote. Builds the slow
# remote (tools/bench/slow-remote.sh: sshfs over a tbf-limited veth into a
# network namespace), mounts hotshard over it and measures, on one set of shard
# files, in rounds:
#
#   promotion   `hotshard warm` of the set   vs  dd of the same files to /dev/null
#   model load  the set read whole through the mount, cold (from the remote) and
#               cached (from the cache copy), vs the cache's own object files read
#               natively from the cache disk, and the remote read without hotshard
#
# The page cache is dropped before every measured step. Writes a markdown section
# to docs/benchmarks.d/extra.md (make bench appends it to docs/benchmarks.md) and
# prints it. Everything it starts is torn down on exit, failure or Ctrl-C; every
# step runs under a timeout and the whole run stops after CACHE_BENCH_TIMEOUT s.
#
#   RATE=400mbit              link rate (tbf, both directions)
#   SHARDS=4 SHARD_MIB=128    the file set
#   CACHE_BENCH_ROUNDS=3      rounds; medians are reported
#   CACHE_BENCH_LOCAL_REPS=5  reads from the cache disk per round (cached, native)
#   CACHE_BENCH_OUT=docs/benchmarks.d/extra.md
#   CACHE_BENCH_TIMEOUT=900
#   SLOW_DIR=/var/tmp/hotshard-slow   everything lives here (data set kept between runs)
set -eEuo pipefail
cd "$(dirname "$0")/../.."
shopt -s inherit_errexit
trap 'echo "cache-bench: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

export RATE=${RATE:-400mbit}
export SLOW_DIR=${SLOW_DIR:-/var/tmp/hotshard-slow}
SHARDS=${SHARDS:-4}
SHARD_MIB=${SHARD_MIB:-128}
ROUNDS=${CACHE_BENCH_ROUNDS:-3}
LOCAL_REPS=${CACHE_BENCH_LOCAL_REPS:-5}
OUT=${CACHE_BENCH_OUT:-docs/benchmarks.d/extra.md}
BIN=$PWD/build/hotshard
RB=$PWD/build/hotshard-readbench
SLOW=tools/bench/slow-remote.sh

EXPORT=$SLOW_DIR/export         # the remote's files, as the server sees them
REMOTE=$SLOW_DIR/remote         # the sshfs mount: the slow remote
MNT=$SLOW_DIR/mnt               # hotshard over REMOTE
CACHE=$SLOW_DIR/cache           # hotshard's cache directory
LINKS=$SLOW_DIR/native          # symlinks to the cache's object files
SOCK=$SLOW_DIR/control.sock
LOG=$SLOW_DIR/daemon.log
SET=shards                      # the file set, under EXPORT / REMOTE / MNT

BENCH=cache-bench BENCH_TIMEOUT=${CACHE_BENCH_TIMEOUT:-900} BENCH_TIMEOUT_VAR=CACHE_BENCH_TIMEOUT
CLEAN_PATHS=("$LINKS" "$CACHE")
# shellcheck source=tools/bench/slow-lib.sh
source tools/bench/slow-lib.sh
field() { grep -o "\"$1\":[0-9.]*" | head -1 | cut -d: -f2; }
median() { sort -g | awk '{ a[NR] = $1 } END { printf "%.3f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
link_mib() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1048576 }'; }

prepare() {
  mkdir -p "$MNT" "$CACHE"
  file_set "$EXPORT/$SET" "$SHARDS" "$SHARD_MIB" shard
}

start_daemon() {
  : > "$LOG"
  rm -rf "$CACHE"; mkdir -p "$CACHE"  # a fresh cache: no copies left from another run
  "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" --cache "$CACHE" \
    --consistency strict --control-socket "$SOCK" --log-level warn 2>>"$LOG" &
  daemon_pid=$!
  for _ in $(seq 200); do
    hs status --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  say "hotshard did not start; see $LOG"
  exit 1
}

files() { ls "$EXPORT/$SET"; }
states() { hs stat "$MNT/$SET"/* --json | grep -o '"state":"[a-z]*"' | cut -d'"' -f4 | sort | uniq -c | xargs; }
expect_state() {  # all files in STATE, or fail
  local s; s=$(states)
  [[ $s == "$SHARDS $1" ]] || { say "expected all $SHARDS files $1, got: $s"; exit 1; }
}

# Each step prints "seconds link_bytes" and appends its raw output to the log.
step_warm() {
  { hs evict "$MNT/$SET" >/dev/null || true; }; expect_state remote; drop_caches
  local b0 t0 out; b0=$("$SLOW" bytes); t0=$(now)
  out=$(hs warm "$MNT/$SET" --json)
  local t; t=$(since "$t0")
  [[ $(field warmed <<<"$out") == "$SHARDS" ]] || { say "warm failed: $out"; exit 1; }
  expect_state cached
  echo "$t $(("$("$SLOW" bytes)" - b0))"
}
step_dd() {
  drop_caches
  local b0 t0 f; b0=$("$SLOW" bytes); t0=$(now)
  for f in $(files); do bounded dd if="$REMOTE/$SET/$f" of=/dev/null bs=1M status=none; done
  echo "$(since "$t0") $(("$("$SLOW" bytes)" - b0))"
}
step_read() {  # DIR
  drop_caches
  local b0 out; b0=$("$SLOW" bytes)
  out=$(bounded "$RB" whole "$1" --block 1MiB)
  [[ $(field bytes <<<"$out") == $((SHARDS * SHARD_MIB << 20)) ]] || { say "short read of $1: $out"; exit 1; }
  echo "$(field seconds <<<"$out") $(("$("$SLOW" bytes)" - b0))"
}
step_cold() { { hs evict "$MNT/$SET" >/dev/null || true; }; expect_state remote; step_read "$MNT/$SET"; }
link_objects() {  # LINKS/<name> -> the cache's object file for MNT/SET/<name>
  rm -rf "$LINKS"; mkdir -p "$LINKS"
  local f obj
  for f in $(files); do
    obj=$(hs stat "$MNT/$SET/$f" --json | grep -o '"object":"[^"]*"' | cut -d'"' -f4)
    [[ -f $obj ]] || { say "no object file for $f"; exit 1; }
    ln -s "$obj" "$LINKS/$f"
  done
}

declare -A secs bytes
measure() {  # KEY STEP [ARGS]: runs the step, records "seconds bytes"
  local key=$1 r s b; shift
  r=$("$@")
  read -r s b <<<"$r"
  [[ -n $s && -n $b ]] || { say "step $* printed '$r'"; exit 1; }
  secs[$key]+="$s "; bytes[$key]+="$b "
  say "round $round $(printf '%-7s' "$key") $(printf '%8.3f' "$s") s  $(link_mib 0 "$b") MiB over the link"
}

local_reads() {  # reads from the cache disk are short: LOCAL_REPS pairs, alternating
  link_objects
  for rep in $(seq "$LOCAL_REPS"); do
    if (( rep % 2 )); then
      measure cached step_read "$MNT/$SET"; measure native step_read "$LINKS"
    else
      measure native step_read "$LINKS"; measure cached step_read "$MNT/$SET"
    fi
  done
}

run_started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$SLOW" down >/dev/null 2>&1 || true
"$SLOW" up
prepare
start_daemon
passthrough=$(hs status --json | grep -o '"passthrough":[a-z]*' | cut -d: -f2)
total_mib=$((SHARDS * SHARD_MIB))

for round in $(seq "$ROUNDS"); do
  # Alternate which of warm and dd touches the remote first.
  if (( round % 2 )); then
    measure warm step_warm; local_reads
    measure cold step_cold; measure dd step_dd
  else
    measure cold step_cold; measure dd step_dd
    measure warm step_warm; local_reads
  fi
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
# The listener logs each connection: one for its own readiness probe, one for sshfs.
reconnects=$(($(grep -c 'accepting connection' "$SLOW_DIR/run/socat.log" || true) - 2))
((reconnects <= 0)) || say "warning: sshfs reconnected $reconnects time(s) during the run"
stop_daemon

declare -A med mibs link
for k in warm dd cold cached native; do
  med[$k]=$(tr ' ' '\n' <<<"${secs[$k]}" | grep . | median)
  mibs[$k]=$(awk -v m="$total_mib" -v s="${med[$k]}" 'BEGIN { printf "%.1f", m / s }')
  link[$k]=$(tr ' ' '\n' <<<"${bytes[$k]}" | grep . | median | awk '{ printf "%.1f", $1 / 1048576 }')
done
ratio() { awk -v a="${med[$1]}" -v b="${med[$2]}" 'BEGIN { printf "%.2f", b / a }'; }  # speed of $1 relative to $2
spread() { tr ' ' '\n' <<<"${secs[$1]}" | grep . | sort -g | awk '{ a[NR] = $1 } END { printf "%.2f-%.2f", a[1], a[NR] }'; }

tmp=$(mktemp)
{
  echo "## The cache in front of a slow remote"
  echo
  echo "Generated by \`tools/bench/cache-bench.sh\` (run by \`make bench\` unless \`BENCH_CACHE=0\`) on"
  echo "$run_started, kernel $(uname -r), $(nproc) cores. Load average $load_before at the start,"
  echo "$load_after at the end (the machine is shared: other builds and tests ran beside it)."
  echo "File set: $SHARDS files x $SHARD_MIB MiB of random data ($total_mib MiB). $ROUNDS rounds, and in each"
  echo "round $LOCAL_REPS reads of each kind from the cache disk (cached, native; they are short). Each"
  echo "cell is the median, with the range in brackets. The page cache is dropped"
  echo "(\`sync; echo 3 > /proc/sys/vm/drop_caches\`) before every measured step. Passthrough"
  echo "active: $passthrough. \"Over the link\" counts the bytes the remote sent (tbf counters)."
  ((reconnects <= 0)) || echo "**sshfs lost its connection $reconnects time(s) during this run; treat the figures with care.**"
  echo
  echo "### The slow remote"
  echo
  echo "\`tools/bench/slow-remote.sh up\` (root) builds it on one machine, \`down\` removes it:"
  echo
  echo "- a network namespace \`hs-remote\` and a veth pair, \`hs-slow0\` 10.201.0.1/30 on the"
  echo "  host and \`hs-slow1\` 10.201.0.2/30 in the namespace (addresses on these two only);"
  echo "- \`tc qdisc replace dev IF root tbf rate $RATE burst 512kb latency 50ms\` on the egress of"
  echo "  both ends (this kernel has tbf but no netem: the link is limited in bandwidth, with no"
  echo "  added delay);"
  echo "- in the namespace, \`socat TCP-LISTEN:7022,bind=10.201.0.2,reuseaddr,fork EXEC:/usr/lib/openssh/sftp-server\`"
  echo "  serves \`$EXPORT\` over plain SFTP, no sshd and no encryption (the script starts"
  echo "  sftp-server through a symlink of its own name, so that tests which kill sftp-server"
  echo "  processes by name leave it alone);"
  echo "- \`sshfs -o directport=7022,allow_other,reconnect,noforget 10.201.0.2:$EXPORT $REMOTE\`"
  echo "  mounts it on the host: that sshfs mount is the remote hotshard caches. \`noforget\`"
  echo "  matters: SFTP has no inode numbers, so sshfs makes them up, and without it a file gets"
  echo "  a new one each time the kernel forgets its inode (\`drop_caches\` does that). The inode"
  echo "  is part of a cached copy's validator, so every copy would look stale and be dropped."
  echo
  echo "hotshard runs with \`--remote $REMOTE --mount $MNT --cache $CACHE --consistency strict\`;"
  echo "the cache directory is on the machine's one disk (virtio, ext4), the same disk that"
  echo "holds \`$EXPORT\`. \`RATE=1gbit tools/bench/cache-bench.sh\` reruns it at another rate."
  echo
  echo "### Promotion throughput"
  echo
  echo "| copy | seconds | MiB/s | MiB over the link | vs dd |"
  echo "| --- | --- | --- | --- | --- |"
  echo "| \`dd if=REMOTE/FILE of=/dev/null bs=1M\`, the files one after another | ${med[dd]} ($(spread dd)) | ${mibs[dd]} | ${link[dd]} | 1.00 |"
  echo "| \`hotshard warm MNT/$SET\` (into the cache, fsynced) | ${med[warm]} ($(spread warm)) | ${mibs[warm]} | ${link[warm]} | **$(ratio warm dd)** |"
  echo
  echo "Target: \`hotshard warm\` at >= 0.9 of dd's rate from the same remote. dd only reads;"
  echo "warm also writes and fsyncs the copies and checksums them."
  echo
  echo "### Model load: every shard read whole, 1 MiB reads"
  echo
  echo "| read | bytes come from | seconds | MiB/s | MiB over the link | vs native from cache disk |"
  echo "| --- | --- | --- | --- | --- | --- |"
  echo "| through the hotshard mount, cold | the slow remote (passthrough to the sshfs file) | ${med[cold]} ($(spread cold)) | ${mibs[cold]} | ${link[cold]} | $(ratio cold native) |"
  echo "| through the hotshard mount, cached | the cache copy (passthrough to the object file) | ${med[cached]} ($(spread cached)) | ${mibs[cached]} | ${link[cached]} | **$(ratio cached native)** |"
  echo "| the object files, natively | the cache disk | ${med[native]} ($(spread native)) | ${mibs[native]} | ${link[native]} | 1.00 |"
  echo
  echo "Cached through the mount against the object files read natively: **$(ratio cached native)**"
  echo "(1.0: once a copy is cached, reading through hotshard costs what reading the cache disk"
  echo "costs; these reads last a fraction of a second, so the range is wide on a busy machine)."
  echo "Cached against cold through the mount: **$(ratio cached cold)x** faster. The remote read"
  echo "without hotshard (the dd row above, same bytes) took ${med[dd]} s; cold through the mount"
  echo "runs at $(ratio cold dd) of that."
  echo
  echo "Commands (\$MNT = $MNT, \$REMOTE = $REMOTE, \$CACHE = $CACHE):"
  echo
  echo '```'
  echo "tools/bench/slow-remote.sh up                       # RATE=$RATE"
  echo "hotshard run --foreground --remote \$REMOTE --mount \$MNT --cache \$CACHE --consistency strict &"
  echo "# each round, page cache dropped before each line:"
  echo "hotshard evict \$MNT/$SET; hotshard warm \$MNT/$SET      # promotion (timed: warm)"
  echo "for f in \$REMOTE/$SET/*; do dd if=\$f of=/dev/null bs=1M; done"
  echo "hotshard evict \$MNT/$SET; hotshard-readbench whole \$MNT/$SET --block 1MiB   # cold"
  echo "hotshard warm \$MNT/$SET;  hotshard-readbench whole \$MNT/$SET --block 1MiB   # cached"
  echo "hotshard-readbench whole \$DIR --block 1MiB   # native: \$DIR holds symlinks to the"
  echo "                                             # \"object\" of each \`hotshard stat --json\`"
  echo "tools/bench/slow-remote.sh down"
  echo '```'
} > "$tmp"
mkdir -p "$(dirname "$OUT")"
mv "$tmp" "$OUT"
chmod 644 "$OUT"
cat "$OUT"
say "wrote $OUT"
