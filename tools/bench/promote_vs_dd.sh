#!/usr/bin/env bash
# Promotion throughput against dd copying the same file (docs/cache.md).
#   tools/bench/promote_vs_dd.sh REMOTE_DIR FILE CACHE_PARENT [ROUNDS] [cold|warm]
# REMOTE_DIR/FILE is copied ROUNDS times (default 3) by:
#   dd if=REMOTE_DIR/FILE of=CACHE_PARENT/dd.out bs=1M oflag=direct conv=fsync
#   hotshard cache promote --io-engine uring|sync (into CACHE_PARENT/cache)
# cold (default): page cache dropped before each copy (needs root); warm: the
# source stays in the page cache. Prints one line per copy and the ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."
remote=${1:?REMOTE_DIR}; file=${2:?FILE}; parent=${3:?CACHE_PARENT}
rounds=${4:-3}; mode=${5:-cold}
bin=build/hotshard
size=$(stat -c %s "$remote/$file")
mkdir -p "$parent"

drop() {
  sync
  if [[ $mode == cold ]]; then echo 3 > /proc/sys/vm/drop_caches; else cat "$remote/$file" > /dev/null; fi
}
mbps() { awk -v b="$size" -v s="$1" 'BEGIN { printf "%.0f", b / s / 1e6 }'; }

declare -A total=([dd]=0 [uring]=0 [sync]=0)
for ((r = 1; r <= rounds; r++)); do
  drop
  t0=$(date +%s.%N)
  dd if="$remote/$file" of="$parent/dd.out" bs=1M oflag=direct conv=fsync status=none
  t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  rm -f "$parent/dd.out"
  total[dd]=$(awk -v a="${total[dd]}" -v b="$t" 'BEGIN { print a + b }')
  echo "round $r dd:    $(mbps "$t") MB/s"
  for engine in uring sync; do
    rm -rf "$parent/cache"
    drop
    t0=$(date +%s.%N)
    "$bin" cache promote --cache "$parent/cache" --remote "$remote" --io-engine "$engine" "$file" > /dev/null
    t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
    total[$engine]=$(awk -v a="${total[$engine]}" -v b="$t" 'BEGIN { print a + b }')
    echo "round $r $engine: $(mbps "$t") MB/s"
  done
done
rm -rf "$parent/cache"
for k in dd uring sync; do
  echo "mean $k: $(mbps "$(awk -v t="${total[$k]}" -v n="$rounds" 'BEGIN { print t / n }')") MB/s"
done
awk -v d="${total[dd]}" -v u="${total[uring]}" -v s="${total[sync]}" \
  'BEGIN { printf "promote/dd throughput: uring %.2f, sync %.2f\n", d / u, d / s }'
