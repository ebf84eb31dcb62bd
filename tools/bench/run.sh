#!/usr/bin/env bash
# make bench: every read pattern through a hotshard mount against the same files
# read natively, side by side in one run, cold and warm page cache. Writes the
# table to docs/benchmarks.md (or $BENCH_OUT).
#
#   BENCH_DIR=/var/tmp/hotshard-bench  where the data set and mount live
#   BENCH_REPS=3                        runs per cell; the median is reported
#   BENCH_CACHE=0                       skip tools/bench/cache-bench.sh (the cache in
#                                       front of a slow remote; writes docs/benchmarks.d/extra.md)
#   BENCH_PROBES=0                      skip tools/bench/probe_overhead.sh (probes attached vs
#                                       detached; writes docs/benchmarks.d/probes.md)
#   BENCH_WARM=0                        skip tools/bench/warm-read-bench.sh (warm reads through the mount
#                                       against native with the daemon's probes on and off; writes
#                                       docs/benchmarks.d/warm.md)
#   BENCH_EPOCHS=0                      skip tools/bench/epoch-bench.sh (shuffled epochs over a data
#                                       set twice the cache; writes docs/benchmarks.d/epochs.md)
#   BENCH_MEMORY=0                      skip tools/bench/memory-bench.sh (daemon RSS warming 20,000
#                                       files; writes docs/benchmarks.d/memory.md)
#   BENCH_FIRST_EPOCH=0                 skip the "first epoch" run of epoch-bench.sh (a DataLoader-like
#                                       reader, 4 workers, data set within the cache, 200 Mbit/s;
#                                       writes docs/benchmarks.d/first-epoch.md)
#   BENCH_OPENS=0                       skip tools/bench/open-bench.sh (us per open+close, cached and
#                                       uncached, against native; writes docs/benchmarks.d/opens.md)
#   BENCH_NAMESPACE=0                   skip tools/bench/namespace-bench.sh (stat of 10,000 files after a
#                                       restart in immutable mode, from the persistent namespace, over
#                                       sshfs; writes docs/benchmarks.d/namespace.md)
#   BENCH_CLUSTER=0                     skip tools/bench/cluster-bench.sh (the peer tier: peer fetch rate
#                                       over a shaped link, cold start of a 1 GiB file on three hosts
#                                       at once; writes docs/benchmarks.d/cluster.md)
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${BENCH_DIR:-/var/tmp/hotshard-bench}
REPS=${BENCH_REPS:-3}
OUT=${BENCH_OUT:-docs/benchmarks.md}
BIN=$PWD/build/hotshard
RB=$PWD/build/hotshard-readbench
REMOTE=$ROOT/remote MNT=$ROOT/mnt CACHE=$ROOT/cache SOCK=$ROOT/control.sock

[[ $(id -u) -eq 0 ]] || { echo "bench: needs root (mounts, drop_caches)" >&2; exit 1; }

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

start_daemon() {  # consistency
  stop_daemon
  "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" --cache "$CACHE" \
    --consistency "$1" --control-socket "$SOCK" --log-level warn --placement manual \
    --metrics off 2>>"$ROOT/daemon.log" &
  daemon_pid=$!
  for _ in $(seq 200); do
    "$BIN" status --socket "$SOCK" --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench: hotshard did not start; see $ROOT/daemon.log" >&2
  exit 1
}

prepare() {
  rm -rf "$CACHE"  # a fresh cache each run: nothing left by an earlier run or build
  mkdir -p "$REMOTE/small" "$REMOTE/stat" "$MNT" "$CACHE"
  [[ -f "$ROOT/.prepared-v1" ]] && return
  echo "bench: generating the data set in $REMOTE (once)"
  head -c $((1024 << 20)) /dev/urandom > "$REMOTE/seq.bin"
  for i in $(seq -w 1 256); do head -c $((1 << 20)) /dev/urandom > "$REMOTE/small/f$i"; done
  for i in $(seq -w 1 10000); do printf '%s' "$i" > "$REMOTE/stat/s$i"; done
  sync
  touch "$ROOT/.prepared-v1"
}

# 10,000 files at 5-component paths under the mount: deep/b/c/dNN/fNNN.
prepare_deep() {
  [[ -f "$ROOT/.prepared-deep-v1" ]] && return
  echo "bench: generating the deep tree in $REMOTE/deep (once)"
  for d in $(seq -w 1 100); do
    mkdir -p "$REMOTE/deep/b/c/d$d"
    for f in $(seq -w 1 100); do printf '%s' "$f" > "$REMOTE/deep/b/c/d$d/f$f"; done
  done
  sync
  touch "$ROOT/.prepared-deep-v1"
}

# FUSE requests per stat of one more pass over DIR (through the mount), by
# opcode, counted by the daemon: "lookup 0.00, getattr 0.00".
stat_requests() {
  local a b n
  n=$("$RB" stat "$1" | field ops)
  a=$("$BIN" status --socket "$SOCK" --json | jq -c '.fuse.requests')
  "$RB" stat "$1" >/dev/null
  b=$("$BIN" status --socket "$SOCK" --json | jq -c '.fuse.requests')
  jq -rn --argjson a "$a" --argjson b "$b" --argjson n "$n" \
    '[("lookup", "getattr") as $op | "\($op) \((($b[$op] // 0) - ($a[$op] // 0)) / $n * 100 | round / 100)"] | join(", ")'
}

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
field() { grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# measure NAME STATE METRIC ARGS...: runs the pattern natively (on $REMOTE) and
# through the mount ($MNT), alternating which goes first, and prints
# "native mount" medians. ARGS use @ for the root.
measure() {
  local state=$1 metric=$2; shift 2
  local native=() mount=() native_cpu=() mount_cpu=()
  for rep in $(seq "$REPS"); do
    local order=(native mount)
    (( rep % 2 == 0 )) && order=(mount native)
    for side in "${order[@]}"; do
      local root=$REMOTE; [[ $side == mount ]] && root=$MNT
      local args=("${@//@/$root}")
      if [[ $state == cold ]]; then drop_caches; else "$RB" "${args[@]}" >/dev/null; fi
      local line v c
      line=$("$RB" "${args[@]}")
      v=$(field "$metric" <<<"$line")
      c=$(field cpu_seconds <<<"$line")
      if [[ $side == native ]]; then native+=("$v"); native_cpu+=("$c"); else mount+=("$v"); mount_cpu+=("$c"); fi
    done
  done
  printf '%s %s %s %s\n' "$(printf '%s\n' "${native[@]}" | median)" "$(printf '%s\n' "${mount[@]}" | median)" \
    "$(printf '%s\n' "${native_cpu[@]}" | median)" "$(printf '%s\n' "${mount_cpu[@]}" | median)"
}

rows=()
row() {  # workload state unit target native mount native_cpu_s mount_cpu_s
  local ratio cpu; ratio=$(awk -v a="$5" -v b="$6" 'BEGIN {printf "%.3f", b / a}')
  cpu=$(awk -v a="$7" -v b="$8" 'BEGIN {printf "%.3f", (b > 0 ? a / b : 0)}')
  rows+=("| $1 | $2 | $5 | $6 | **$ratio** | $cpu | $4 |")
  printf 'bench: %-36s %-5s native %10s %-6s hotshard %10s  ratio %s (target %s)\n' "$1" "$2" "$5" "$3" "$6" "$ratio" "$4"
}

if [[ ${BENCH_CACHE:-1} != 0 ]]; then tools/bench/cache-bench.sh; fi
if [[ ${BENCH_PROBES:-1} != 0 ]]; then
  mkdir -p docs/benchmarks.d
  tools/bench/probe_overhead.sh --seconds 2 --rounds 5 > docs/benchmarks.d/probes.md.new
  mv docs/benchmarks.d/probes.md.new docs/benchmarks.d/probes.md
fi
if [[ ${BENCH_WARM:-1} != 0 ]]; then tools/bench/warm-read-bench.sh; fi
if [[ ${BENCH_EPOCHS:-1} != 0 ]]; then tools/bench/epoch-bench.sh; fi
if [[ ${BENCH_FIRST_EPOCH:-1} != 0 ]]; then
  RATE=200mbit EPOCHS=3 EPOCH_FILES=64 EPOCH_FILE_MIB=4 EPOCH_CACHE_MIB=384 EPOCH_WORKERS=4 \
    EPOCH_DROP=0 EPOCH_PAUSE=2 EPOCH_BENCH_OUT=docs/benchmarks.d/first-epoch.md \
    EPOCH_SKIP_VAR=BENCH_FIRST_EPOCH \
    EPOCH_TITLE="First epoch: a DataLoader-like reader, the data set within the cache" \
    tools/bench/epoch-bench.sh
fi
if [[ ${BENCH_MEMORY:-1} != 0 ]]; then tools/bench/memory-bench.sh; fi
if [[ ${BENCH_OPENS:-1} != 0 ]]; then tools/bench/open-bench.sh; fi
if [[ ${BENCH_FD_WALK:-1} != 0 ]]; then tools/bench/fd-walk-bench.sh; fi
if [[ ${BENCH_NAMESPACE:-1} != 0 ]]; then tools/bench/namespace-bench.sh; fi
if [[ ${BENCH_CLUSTER:-1} != 0 ]]; then tools/bench/cluster-bench.sh; fi

prepare
prepare_deep
: > "$ROOT/daemon.log"
start_daemon strict
passthrough=$("$BIN" status --socket "$SOCK" --json | grep -o '"passthrough":[a-z]*' | cut -d: -f2)

for state in cold warm; do
  read -r n m nc mc < <(measure $state mib_per_s seq @/seq.bin --block 1MiB)
  row "sequential 1 MiB reads, 1 GiB file" $state MiB/s ">= 0.95" "$n" "$m" "$nc" "$mc"
  ops=200000; [[ $state == cold ]] && ops=20000
  read -r n m nc mc < <(measure $state ops_per_s rand @/seq.bin --block 4KiB --ops $ops)
  row "4 KiB random reads, 1 GiB file" $state IOPS ">= 0.90" "$n" "$m" "$nc" "$mc"
  read -r n m nc mc < <(measure $state mib_per_s whole @/small --block 4KiB)
  row "256 x 1 MiB files read in 4 KiB chunks" $state MiB/s "-" "$n" "$m" "$nc" "$mc"
done
deep="stat of 10,000 files (5-deep paths), second pass"
read -r n m nc mc < <(measure warm ops_per_s stat @/deep)
row "$deep (strict)" warm stats/s ">= 0.50" "$n" "$m" "$nc" "$mc"
req_strict=$(stat_requests "$MNT/deep")
start_daemon "strict;ac=0"
read -r n m nc mc < <(measure warm ops_per_s stat @/deep)
row "$deep (strict;ac=0)" warm stats/s "-" "$n" "$m" "$nc" "$mc"
req_ac0=$(stat_requests "$MNT/deep")

start_daemon immutable
read -r n m nc mc < <(measure warm mib_per_s whole @/small --block 4KiB)
row "256 x 1 MiB files read in 4 KiB chunks (immutable)" warm MiB/s "-" "$n" "$m" "$nc" "$mc"
read -r n m nc mc < <(measure warm ops_per_s stat @/stat)
row "stat of 10,000 files, second pass (immutable)" warm stats/s ">= 0.80" "$n" "$m" "$nc" "$mc"
start_daemon immutable  # the kernel forgets the flat tree's inodes (one descriptor each)
read -r n m nc mc < <(measure warm ops_per_s stat @/deep)
row "$deep (immutable)" warm stats/s ">= 0.90" "$n" "$m" "$nc" "$mc"
req_immutable=$(stat_requests "$MNT/deep")
stop_daemon

{
  echo "# Benchmarks"
  echo
  echo "Generated by \`make bench\` (tools/bench/run.sh) on $(date -u +%Y-%m-%d), kernel $(uname -r),"
  echo "$(nproc) cores. Each cell is the median of $REPS runs; native and hotshard runs alternate"
  echo "within one invocation, on the same files. \"Remote\" here is a local directory, so the"
  echo "ratios measure what the mount itself costs: the daemon runs with \`--placement manual\`,"
  echo "so nothing is promoted mid-run and every read goes to the same files natively and"
  echo "through the mount (what the cache buys is measured in the sections below)."
  echo "Passthrough active: $passthrough."
  echo
  echo "Cold: \`sync; echo 3 > /proc/sys/vm/drop_caches\` before every run. Warm: one unmeasured"
  echo "run first. Ratio = hotshard / native (higher is better; 1.0 is parity)."
  echo
  echo "## The mount (passthrough)"
  echo
  echo "| workload | page cache | native | hotshard | ratio | CPU ratio | target |"
  echo "| --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "Units: MiB/s for sequential and whole-file reads, IOPS for random reads, stat calls/s."
  echo "Many small files are where a FUSE mount pays: every open and close is a round trip to"
  echo "the daemon (tens of microseconds on this 2-vCPU VM), which a 1 MiB file read from RAM"
  echo "cannot hide. In \`strict\` mode each open also checks its path and the file's attributes"
  echo "with the remote (close-to-open); names and attributes are kept between opens for \`ac\`"
  echo "(3 s) and \`acdir\` (30 s); \`strict;ac=0\` keeps none, as strict did before."
  echo "\`ttl\`/\`immutable\` leave open and release (read-only opens skip FLUSH)."
  echo
  echo "FUSE requests per \`stat\` of a 5-deep path, over one more run after the timed ones"
  echo "(its listing included; counted by the daemon, \`hotshard status --json\` .fuse.requests):"
  echo "strict: $req_strict;"
  echo "strict;ac=0: $req_ac0; immutable: $req_immutable."
  echo "CPU ratio = native CPU seconds / hotshard CPU seconds for the same work (user + system"
  echo "time of the reading process): for warm-cache runs, which never wait on a device, it is"
  echo "the per-read cost of the mount, steadier than wall time on a busy machine."
  echo
  echo "Commands (ROOT=$ROOT; @ is \$ROOT/remote natively, \$ROOT/mnt through hotshard):"
  echo
  echo '```'
  echo "hotshard run --foreground --remote \$ROOT/remote --mount \$ROOT/mnt --cache \$ROOT/cache --consistency strict --placement manual"
  echo "hotshard-readbench seq   @/seq.bin --block 1MiB"
  echo "hotshard-readbench rand  @/seq.bin --block 4KiB --ops 20000    # 200000 warm"
  echo "hotshard-readbench whole @/small   --block 4KiB"
  echo "hotshard-readbench stat  @/deep   # twice, second timed; also with --consistency 'strict;ac=0'"
  echo "hotshard run ... --consistency immutable; hotshard-readbench stat @/stat   # twice, second timed"
  echo '```'
  for part in opens opens-profile extra probes warm epochs first-epoch memory fd-walk namespace cluster; do
    if [[ -f docs/benchmarks.d/$part.md ]]; then echo; cat "docs/benchmarks.d/$part.md"; fi
  done
} > "$OUT"
echo "bench: wrote $OUT"
