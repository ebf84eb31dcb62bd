# What the benchmarks on the slow remote (cache-bench.sh, epoch-bench.sh) share:
# messages, steps bounded by the run's deadline, stopping the daemon, and a cleanup
# that takes everything down on exit, failure or Ctrl-C. Sourced, after setting:
#   BENCH              the script's name, for messages
#   BENCH_TIMEOUT      seconds the whole run may take; BENCH_TIMEOUT_VAR names its knob
#   BIN RB SLOW        build/hotshard, build/hotshard-readbench, tools/bench/slow-remote.sh
#   MNT SOCK LOG       the daemon's mount point, control socket and log
#   CLEAN_PATHS        directories removed on exit (the data set is kept)

say() { echo "$BENCH: $*" >&2; }
deadline=$((SECONDS + BENCH_TIMEOUT))
# bounded CMD...: runs CMD in the foreground (Ctrl-C reaches it) and stops it at the
# run's deadline.
bounded() {
  local left=$((deadline - SECONDS))
  ((left > 0)) || { say "out of time ($BENCH_TIMEOUT_VAR)"; exit 1; }
  timeout --foreground -k 10 "$left" "$@"
}
[[ $(id -u) -eq 0 ]] || { say "needs root (namespaces, mounts, drop_caches)"; exit 1; }
[[ -x $BIN && -x $RB ]] || { say "build first: make build"; exit 1; }

# shellcheck source=tools/bench/daemon-lib.sh
source tools/bench/daemon-lib.sh
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_daemon
  rm -rf "${CLEAN_PATHS[@]}"
  "$SLOW" down || true
  [[ $rc -eq 0 ]] || say "failed (exit $rc); slow remote and daemon torn down; daemon log: $LOG"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
hs() { bounded "$BIN" "$@" --socket "$SOCK"; }

# file_set DIR COUNT MIB PREFIX: COUNT files of MIB MiB of random data, named
# PREFIX-NN.bin, made once: DIR.set (beside DIR, so a warm of DIR sees only the
# set) records the shape, and a different shape regenerates the set.
file_set() {
  local dir=$1 count=$2 mib=$3 prefix=$4 tag="$2 x $3 MiB"
  [[ $(cat "$dir.set" 2>/dev/null) == "$tag" ]] && return 0
  say "generating $tag of random data in $dir (once)"
  rm -rf "${dir:?}"; mkdir -p "$dir"
  for i in $(seq -w 0 $((count - 1))); do
    head -c $((mib << 20)) /dev/urandom > "$dir/$prefix-$i.bin"
  done
  sync
  echo "$tag" > "$dir.set"
}
