#!/usr/bin/env bash
# warm-read-bench: where the rest of the warm-read gap between the mount and a
# native read goes. The two warm rows of make bench (sequential 1 MiB reads and
# 4 KiB random reads of a 1 GiB file, page cache hot), each read natively and
# through the mount (passthrough to the same file), with the daemon's heat probes
# on (the default) and off (--probes off), side by side in one run:
#
#   per round, for probes in (on, off), rotating which goes first:
#     start the daemon; one unmeasured read of each side;
#     for pattern in (seq, rand): native then mount, or mount then native (alternating)
#
# Every mount run is paired with the native run next to it, and the report takes
# the median of the pairs' ratios (this shared VM drifts by several percent
# within a minute, far more than within a pair). With the probes on, native
# reads of the file are counted too (the probes filter by device, and the file
# is on the remote's device), so "on" measures what the mount costs on top of
# the probes and "off" what it costs with no BPF program attached at all; the
# native medians of the two lines give the probes' own cost. Also printed: the
# readahead windows the two read paths use and the CPU frequency governor.
# Writes a markdown section to docs/benchmarks.d/warm.md (make bench appends it
# to docs/benchmarks.md) and prints it.
#
#   WARM_BENCH_DIR=/var/tmp/hotshard-warm   data set (1 GiB, kept), mount, cache
#   WARM_BENCH_ROUNDS=5                     rounds; each gives one pair per cell
#   WARM_BENCH_RAND_OPS=200000              4 KiB reads per random run
#   WARM_BENCH_OUT=docs/benchmarks.d/warm.md
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${WARM_BENCH_DIR:-/var/tmp/hotshard-warm}
ROUNDS=${WARM_BENCH_ROUNDS:-5}
RAND_OPS=${WARM_BENCH_RAND_OPS:-200000}
OUT=${WARM_BENCH_OUT:-docs/benchmarks.d/warm.md}
BIN=$PWD/build/hotshard
RB=$PWD/build/hotshard-readbench
REMOTE=$ROOT/remote MNT=$ROOT/mnt CACHE=$ROOT/cache SOCK=$ROOT/control.sock LOG=$ROOT/daemon.log

say() { echo "warm-read-bench: $*" >&2; }
[[ $(id -u) -eq 0 ]] || { say "needs root (mounts, BPF)"; exit 1; }
[[ -x $BIN && -x $RB ]] || { say "build first: make build"; exit 1; }

# shellcheck source=tools/bench/daemon-lib.sh
source tools/bench/daemon-lib.sh
work=$(mktemp -d)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_daemon
  rm -rf "$CACHE" "$work"
  [[ $rc -eq 0 ]] || say "failed (exit $rc); daemon log: $LOG"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_daemon() {  # on|off
  stop_daemon
  rm -rf "$CACHE"; mkdir -p "$CACHE" "$MNT"
  "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" --cache "$CACHE" \
    --consistency strict --control-socket "$SOCK" --log-level warn --placement manual \
    --metrics off --probes "$1" 2>>"$LOG" &
  daemon_pid=$!
  for _ in $(seq 200); do
    timeout 10 "$BIN" status --socket "$SOCK" --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  say "hotshard did not start; see $LOG"
  exit 1
}

mkdir -p "$REMOTE"
if [[ ! -f $REMOTE/seq.bin || $(stat -c %s "$REMOTE/seq.bin") -ne $((1024 << 20)) ]]; then
  say "generating $REMOTE/seq.bin (1 GiB, once)"
  head -c $((1024 << 20)) /dev/urandom > "$REMOTE/seq.bin"
  sync
fi
: > "$LOG"

field() { grep -o "\"$1\":[0-9.]*" | cut -d: -f2; }
run() {  # pattern root: prints MiB/s (seq) or IOPS (rand), then the reader's CPU seconds
  local line
  case "$1" in
    seq) line=$("$RB" seq "$2/seq.bin" --block 1MiB); echo "$(field mib_per_s <<<"$line") $(field cpu_seconds <<<"$line")" ;;
    rand) line=$("$RB" rand "$2/seq.bin" --block 4KiB --ops "$RAND_OPS"); echo "$(field ops_per_s <<<"$line") $(field cpu_seconds <<<"$line")" ;;
  esac
}

# Lines of $work/pairs: "probes pattern native native_cpu_s mount mount_cpu_s".
: > "$work/pairs"
for ((r = 0; r < ROUNDS; r++)); do
  order=(on off); (( r % 2 )) && order=(off on)
  for probes in "${order[@]}"; do
    start_daemon "$probes"
    passthrough=$("$BIN" status --socket "$SOCK" --json | grep -o '"passthrough":[a-z]*' | cut -d: -f2)
    [[ $passthrough == true ]] || { say "passthrough is off: the comparison would be meaningless"; exit 1; }
    for side in "$REMOTE" "$MNT"; do run seq "$side" >/dev/null; run rand "$side" >/dev/null; done
    for pattern in seq rand; do
      if (( r % 2 )); then m=$(run "$pattern" "$MNT"); n=$(run "$pattern" "$REMOTE")
      else n=$(run "$pattern" "$REMOTE"); m=$(run "$pattern" "$MNT"); fi
      echo "$probes $pattern $n $m" >> "$work/pairs"
    done
  done
done
# The readahead windows: the FUSE inode's (its bdi) and the backing file's (the
# remote file system's block device), as passthrough reads use the latter.
fuse_ra=$(cat "/sys/class/bdi/$(mountpoint -d "$MNT")/read_ahead_kb" 2>/dev/null || echo "?")
stop_daemon
backing_dev=$(stat -c '%d' "$REMOTE/seq.bin")
backing_ra=$(cat "/sys/dev/block/$((backing_dev >> 8)):$((backing_dev & 255))/bdi/read_ahead_kb" 2>/dev/null || echo "?")
governor=$(cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "none (no cpufreq in this VM)")

report() {
  python3 - "$work/pairs" "$ROUNDS" "$RAND_OPS" "$fuse_ra" "$backing_ra" "$governor" "$(nproc)" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" <<'EOF'
import statistics, sys
pairs_file, rounds, rand_ops, fuse_ra, backing_ra, governor, ncpu, load = sys.argv[1:]
cells = {}
for line in open(pairs_file):
    probes, pattern, n, ncpu_s, m, mcpu_s = line.split()
    cells.setdefault((probes, pattern), []).append((float(n), float(m), float(ncpu_s), float(mcpu_s)))
print("## Warm reads: the mount against native, probes on and off\n")
print(f"Generated by `make bench` (tools/bench/warm-read-bench.sh): {rounds} rounds, each starting the "
      f"daemon once with the probes on and once with `--probes off` (which first alternates); in each, one "
      f"unmeasured read of both sides, then a native and a mount run back to back (alternating which goes "
      f"first) per pattern. The 1 GiB file is on the remote directory (local ext4); the mount passes "
      f"reads through to that same file, so both sides read the same page-cache pages. {ncpu} vCPUs, load "
      f"average at the end {load}.\n")
print("| pattern | probes | native (median) | mount (median) | mount / native (median of pairs) | pairs >= 0.95 "
      "| CPU ratio (median of pairs) |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
names = {"seq": "sequential 1 MiB reads (MiB/s)", "rand": f"4 KiB random reads, {int(rand_ops):,} (IOPS)"}
for pattern in ("seq", "rand"):
    for probes in ("on", "off"):
        ps = cells.get((probes, pattern), [])
        if not ps:
            continue
        ratios = [m / n for n, m, _, _ in ps]
        cpu = [nc / mc for _, _, nc, mc in ps if mc > 0]
        print(f"| {names[pattern]} | {probes} | {statistics.median(p[0] for p in ps):,.1f} | "
              f"{statistics.median(p[1] for p in ps):,.1f} | **{statistics.median(ratios):.3f}** | "
              f"{sum(r >= 0.95 for r in ratios)} of {len(ratios)} | {statistics.median(cpu):.3f} |")
print("\nThe probes' own cost on the native reads (median native with the probes on / off): " +
      ", ".join(f"{p}: {statistics.median(c[0] for c in cells[('on', p)]) / statistics.median(c[0] for c in cells[('off', p)]):.3f}"
                for p in ("seq", "rand") if ("on", p) in cells and ("off", p) in cells) + ".")
print("\nCPU ratio = native CPU seconds / mount CPU seconds of the reading process (user + system) for "
      "the same reads: the per-read cost of the mount, which leaves out the time other tasks took the CPUs.")
print(f"\nReadahead: the FUSE inode's bdi {fuse_ra} KiB, the backing file's device {backing_ra} KiB "
      f"(passthrough reads use the backing file's own readahead state, as native reads do). "
      f"CPU frequency governor: {governor}.")
print("\nWhere the 4 KiB gap goes (a `perf` profile of both sides): docs/probes.md, \"Warm reads through the mount, with the probes off\".")
print("\nCommands (ROOT=/var/tmp/hotshard-warm; @ is $ROOT/remote natively, $ROOT/mnt through hotshard):\n")
print("```")
print("hotshard run --foreground --remote $ROOT/remote --mount $ROOT/mnt --cache $ROOT/cache --consistency strict --placement manual --probes on|off")
print("hotshard-readbench seq  @/seq.bin --block 1MiB")
print(f"hotshard-readbench rand @/seq.bin --block 4KiB --ops {rand_ops}")
print("```")
EOF
}
mkdir -p "$(dirname "$OUT")"
report > "$OUT.new"
mv "$OUT.new" "$OUT"
cat "$OUT"
