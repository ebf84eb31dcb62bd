#!/usr/bin/env bash
# epoch-bench: a training-like reader in front of a slow remote. K epochs, each
# reading every file of a data set once, whole, in a fresh seeded shuffle; the
# data set is twice the cache. In one run, on the same files and the same
# shuffles:
#
#   direct    the epochs read from the slow remote itself (the sshfs mount)
#   hotshard  the epochs read through `hotshard run` over that remote, with a
#             fresh empty cache of half the data set, the default policy and
#             automatic placement: nobody calls `hotshard warm`; the placement
#             loop promotes and evicts while the epochs run
#
# The page cache is dropped before every epoch (the data set stands for one much
# bigger than RAM, which the page cache could not hold from one epoch to the next).
# Per epoch: seconds, MiB/s, bytes over the link (tbf counters, so promotion
# copies count too) and, for hotshard, what the cache held. Writes a markdown
# section to docs/benchmarks.d/epochs.md (make bench appends it to
# docs/benchmarks.md) and prints it. Everything it starts is torn down on exit,
# failure or Ctrl-C; every step runs under a timeout and the whole run stops
# after EPOCH_BENCH_TIMEOUT s.
#
#   RATE=400mbit               link rate (tbf, both directions)
#   EPOCH_FILES=24 EPOCH_FILE_MIB=16   the data set
#   EPOCHS=4                   epochs on each side
#   EPOCH_WORKERS=1            readers at once (a DataLoader's workers): each epoch's shuffle is
#                              shared out among them, each file read whole by one of them
#   EPOCH_DROP=1               drop the page cache before every epoch (0: only before epoch 1)
#   EPOCH_TITLE=               the section's title (default: shuffled epochs, data set vs cache)
#   EPOCH_SKIP_VAR=BENCH_EPOCHS  the make bench switch that skips this run (for the text)
#   EPOCH_CACHE_MIB=           hotshard --cache-size in MiB (default: half the data set)
#   EPOCH_TICK=500ms           hotshard --tick
#   EPOCH_PAUSE=3              seconds of pause after each epoch, both sides (0: none)
#   EPOCH_SEED=1               shuffle seeds: epoch e uses SEED*1000+e, both sides
#   EPOCH_BENCH_OUT=docs/benchmarks.d/epochs.md
#   EPOCH_BENCH_TIMEOUT=600
#   EPOCH_POLICY=              hotshard --policy NAME;k=v (default: the daemon's default policy)
#   EPOCH_LOG_LEVEL=warn       hotshard --log-level (debug logs each promotion and eviction)
#   SLOW_DIR=/var/tmp/hotshard-slow   everything lives here (data set kept between runs)
set -eEuo pipefail
cd "$(dirname "$0")/../.."
shopt -s inherit_errexit
trap 'echo "epoch-bench: line $LINENO: \"$BASH_COMMAND\" failed" >&2' ERR

export RATE=${RATE:-400mbit}
export SLOW_DIR=${SLOW_DIR:-/var/tmp/hotshard-slow}
NFILES=${EPOCH_FILES:-24}
FILE_MIB=${EPOCH_FILE_MIB:-16}
EPOCHS=${EPOCHS:-4}
TOTAL_MIB=$((NFILES * FILE_MIB))
CACHE_MIB=${EPOCH_CACHE_MIB:-$((TOTAL_MIB / 2))}
TICK=${EPOCH_TICK:-500ms}
PAUSE=${EPOCH_PAUSE:-3}
SEED=${EPOCH_SEED:-1}
WORKERS=${EPOCH_WORKERS:-1}
DROP=${EPOCH_DROP:-1}
OUT=${EPOCH_BENCH_OUT:-docs/benchmarks.d/epochs.md}
BIN=$PWD/build/hotshard
RB=$PWD/build/hotshard-readbench
SLOW=tools/bench/slow-remote.sh

EXPORT=$SLOW_DIR/export         # the remote's files, as the server sees them
REMOTE=$SLOW_DIR/remote         # the sshfs mount: the slow remote
MNT=$SLOW_DIR/epochs-mnt        # hotshard over REMOTE
CACHE=$SLOW_DIR/epochs-cache    # hotshard's cache directory
SOCK=$SLOW_DIR/epochs.sock
LOG=$SLOW_DIR/epochs-daemon.log
STATUS_LOG=$SLOW_DIR/epochs-status.jsonl  # hotshard status --json and top --json after each epoch
SET=epochs                      # the file set, under EXPORT / REMOTE / MNT

BENCH=epoch-bench BENCH_TIMEOUT=${EPOCH_BENCH_TIMEOUT:-600} BENCH_TIMEOUT_VAR=EPOCH_BENCH_TIMEOUT
CLEAN_PATHS=("$CACHE")
# shellcheck source=tools/bench/slow-lib.sh
source tools/bench/slow-lib.sh
command -v jq >/dev/null || { say "needs jq (make deps)"; exit 1; }
((EPOCHS >= 2 && NFILES >= 2 && CACHE_MIB > 0)) || { say "need EPOCHS >= 2, EPOCH_FILES >= 2, a cache"; exit 1; }

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
status_field() { hs status --json | jq -r "$1"; }

prepare() { file_set "$EXPORT/$SET" "$NFILES" "$FILE_MIB" sample; }

start_daemon() {
  : > "$LOG"; : > "$STATUS_LOG"
  rm -rf "$CACHE"; mkdir -p "$CACHE" "$MNT"  # a fresh, empty cache
  "$BIN" run --foreground --remote "$REMOTE" --mount "$MNT" --cache "$CACHE" \
    --cache-size "${CACHE_MIB}MiB" --tick "$TICK" ${EPOCH_POLICY:+--policy "$EPOCH_POLICY"} \
    --control-socket "$SOCK" --log-level "${EPOCH_LOG_LEVEL:-warn}" 2>>"$LOG" &
  daemon_pid=$!
  for _ in $(seq 200); do
    hs status --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  say "hotshard did not start; see $LOG"
  exit 1
}

# order EPOCH: the file names in the epoch's shuffle (same on both sides).
order() {
  (cd "$EXPORT/$SET" && ls sample-*.bin) |
    awk -v s=$((SEED * 1000 + $1)) 'BEGIN { srand(s) } { printf "%.17f\t%s\n", rand(), $0 }' |
    sort -k1,1g | cut -f2
}
cached_files() {  # the names of the set's files hotshard holds, sorted, one line
  hs stat "$MNT/$SET"/sample-*.bin --json | jq -r '.. | objects | select(.state? == "cached") | .path' |
    xargs -rn1 basename | sort | xargs
}

# read_epoch ROOT E: every file under ROOT/SET once, whole, in epoch E's order,
# by WORKERS readers at once (xargs -P hands each the next file of the order).
read_epoch() {
  local root=$1 e=$2 outs
  outs=$(order "$e" | bounded xargs -P "$WORKERS" -I{} "$RB" seq "$root/$SET/{}" --block 1MiB)
  [[ $(jq -r .bytes <<<"$outs" | grep -cx $((FILE_MIB << 20))) == "$NFILES" ]] ||
    { say "short reads under $root/$SET: $outs"; exit 1; }
}

# epoch SIDE ROOT E: drops the page cache, reads every file under ROOT/SET once in
# epoch E's order, pauses; records seconds (reading only) and link bytes (reading
# and the pause: promotions still running then are counted in the epoch).
declare -A secs link copied used promos held kept from_pc from_remote
epoch() {
  local side=$1 root=$2 e=$3 b0 t0 p0=0 c0=0 pc0=0 rm0=0 held_before=
  if [[ $side == hotshard ]]; then
    p0=$(status_field .placement.promotions); c0=$(status_field .cache.promoter.bytes_copied)
    pc0=$(status_field '.cache.promoter.read_page_cache_bytes // 0')
    rm0=$(status_field '.cache.promoter.read_remote_bytes // 0')
    held_before=$(cached_files)
  fi
  if [[ $DROP == 1 || $e == 1 ]]; then drop_caches; fi
  b0=$("$SLOW" bytes); t0=$(now)
  read_epoch "$root" "$e"
  secs[$side,$e]=$(since "$t0")
  ((PAUSE > 0)) && sleep "$PAUSE"
  link[$side,$e]=$(($("$SLOW" bytes) - b0))
  local line
  line="$side epoch $e: $(printf '%7.2f' "${secs[$side,$e]}") s  $(mib "${link[$side,$e]}") MiB over the link"
  if [[ $side == hotshard ]]; then
    local now_held; now_held=$(cached_files)
    { hs status --json | jq -c --argjson e "$e" '{epoch: $e, status: .}'
      hs top --json -n 100 | jq -c --argjson e "$e" '{epoch: $e, top: .}'; } >>"$STATUS_LOG" || true
    copied[$e]=$(($(status_field .cache.promoter.bytes_copied) - c0))
    from_pc[$e]=$(($(status_field '.cache.promoter.read_page_cache_bytes // 0') - pc0))
    from_remote[$e]=$(($(status_field '.cache.promoter.read_remote_bytes // 0') - rm0))
    promos[$e]=$(($(status_field .placement.promotions) - p0))
    used[$e]=$(status_field .cache.used_bytes)
    held[$e]=$(wc -w <<<"$now_held")
    # of the files held when the epoch began, how many are still held at its end
    kept[$e]=$(comm -12 <(tr ' ' '\n' <<<"$held_before" | sed '/^$/d') <(tr ' ' '\n' <<<"$now_held" | sed '/^$/d') | wc -l)
    line+=", $(mib "${copied[$e]}") MiB promoted ($(mib "${from_pc[$e]}") from the page cache, $(mib "${from_remote[$e]}") from the remote), ${promos[$e]} promotions, cache $(mib "${used[$e]}") MiB in ${held[$e]} files, ${kept[$e]}/$(wc -w <<<"$held_before") kept"
  fi
  say "$line"
}

run_started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$SLOW" down >/dev/null 2>&1 || true
"$SLOW" up
prepare

say "direct: $EPOCHS epochs over $REMOTE/$SET ($TOTAL_MIB MiB), pause ${PAUSE}s"
for e in $(seq "$EPOCHS"); do epoch direct "$REMOTE" "$e"; done

start_daemon
passthrough=$(status_field .passthrough 2>/dev/null || echo unknown)
policy=$(status_field .policy.spec)
say "hotshard: $EPOCHS epochs over $MNT/$SET, cache ${CACHE_MIB} MiB, tick $TICK, policy $policy"
for e in $(seq "$EPOCHS"); do epoch hotshard "$MNT" "$e"; done
final=$(hs status --json)
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
reconnects=$(($(grep -c 'accepting connection' "$SLOW_DIR/run/socat.log" || true) - 2))
((reconnects <= 0)) || say "warning: sshfs reconnected $reconnects time(s) during the run"
stop_daemon

rate() { awk -v s="$1" -v m="$TOTAL_MIB" 'BEGIN { printf "%.1f", m / s }'; }
sum() {  # SIDE KEY(secs|link) FROM TO
  local t=0 e
  for ((e = $3; e <= $4; e++)); do
    if [[ $2 == secs ]]; then t=$(awk -v a="$t" -v b="${secs[$1,$e]}" 'BEGIN { printf "%.3f", a + b }')
    else t=$((t + ${link[$1,$e]})); fi
  done
  echo "$t"
}
frac=$(awk -v c="$CACHE_MIB" -v t="$TOTAL_MIB" 'BEGIN { f = c / t; if (f > 1) f = 1; printf "%.3f", f }')
ideal_epoch=$(awk -v f="$frac" -v t="$TOTAL_MIB" 'BEGIN { printf "%.1f", (1 - f) * t }')
ideal_later=$(awk -v i="$ideal_epoch" -v k="$EPOCHS" 'BEGIN { printf "%.1f", i * (k - 1) }')
direct_later=$(mib "$(sum direct link 2 "$EPOCHS")")
hs_later=$(mib "$(sum hotshard link 2 "$EPOCHS")")
saved=$(awk -v d="$direct_later" -v h="$hs_later" -v i="$ideal_later" 'BEGIN { printf "%.2f", ((d - i) > 0 ? (d - h) / (d - i) : 0) }')

copied_all=0
for e in $(seq "$EPOCHS"); do copied_all=$((copied_all + ${copied[$e]})); done

policy_word="default policy"
[[ -z ${EPOCH_POLICY:-} ]] || policy_word="not the default: policy"
tmp=$(mktemp)
{
  echo "## ${EPOCH_TITLE:-Epochs: a shuffled training reader, data set twice the cache}"
  echo
  echo "Generated by \`tools/bench/epoch-bench.sh\` (run by \`make bench\` unless \`${EPOCH_SKIP_VAR:-BENCH_EPOCHS}=0\`) on"
  echo "$run_started, kernel $(uname -r), $(nproc) cores. Load average $load_before at the start,"
  echo "$load_after at the end (the machine is shared: other builds and tests ran beside it)."
  echo "The remote is the slow one of the section above (\`tools/bench/slow-remote.sh\`, $RATE)."
  echo "Data set: $NFILES files x $FILE_MIB MiB of random data ($TOTAL_MIB MiB). $EPOCHS epochs; each reads"
  if ((WORKERS == 1)); then
    echo "every file once, whole, in 1 MiB reads, one file after another, in a fresh shuffle (awk"
  else
    echo "every file once, whole, in 1 MiB reads, by $WORKERS readers at once (like a DataLoader's workers:"
    echo "each takes the next file of the shuffle), in a fresh shuffle (awk"
  fi
  echo "\`srand($SEED*1000+epoch)\`: the same $EPOCHS orders on both sides). Both sides ran in this"
  echo "one invocation, direct first. Each cell is one epoch (no repetitions)."
  echo
  echo "- **direct**: the epochs read \`$REMOTE/$SET\`, the slow remote itself."
  echo "- **hotshard**: \`hotshard run --remote $REMOTE --mount $MNT --cache $CACHE"
  # shellcheck disable=SC2016  # the single quotes are literal, inside double quotes
  echo "  --cache-size ${CACHE_MIB}MiB --tick $TICK${EPOCH_POLICY:+ --policy '$EPOCH_POLICY'}\` started with an empty cache ($policy_word"
  echo "  \`$policy\`, \`--placement auto\`, passthrough $passthrough); the epochs read \`$MNT/$SET\`."
  echo "  No \`hotshard warm\`: whatever the cache holds, the placement loop put there while the"
  echo "  epochs ran."
  echo
  if [[ $DROP == 1 ]]; then
    echo "The page cache is dropped (\`sync; echo 3 > /proc/sys/vm/drop_caches\`) before every epoch:"
    echo "the data set stands for one much bigger than RAM, which the page cache could not carry"
    echo "from one epoch to the next; without the drop, epochs 2..$EPOCHS of both sides would mostly"
    echo "read RAM."
  else
    echo "The page cache is dropped (\`sync; echo 3 > /proc/sys/vm/drop_caches\`) before epoch 1 only."
    echo "A new open of an sshfs file drops that file's page cache, so the direct side's later epochs"
    echo "read the link again as a real job's would."
  fi
  echo "After each epoch both sides pause ${PAUSE} s (not timed) so promotions under way can"
  echo "finish. \"Over the link\" is the bytes the remote sent during the epoch and its pause"
  echo "(tbf counters on the remote's side of the link): on the hotshard side that includes"
  echo "whatever the promotion copies read from the remote (\"promoted\": \`cache.promoter.bytes_copied\`;"
  echo "of it, \"from page cache\" were copied from the pages the epoch's own reads had brought in,"
  echo "\"from remote\" read over the link again: \`cache.promoter.read_page_cache_bytes\` and"
  echo "\`read_remote_bytes\`). \"Held\" is what the cache holds at the end of the epoch"
  echo "(\`hotshard stat\`, \`cache.used_bytes\`), \"kept\" how many of the files held when the"
  echo "epoch began were still held at its end."
  ((reconnects <= 0)) || echo "**sshfs lost its connection $reconnects time(s) during this run; treat the figures with care.**"
  echo
  echo "| epoch | direct s | direct MiB/s | direct MiB over the link | hotshard s | hotshard MiB/s | hotshard MiB over the link | promoted | from page cache | from remote | promotions | held at end | kept |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for e in $(seq "$EPOCHS"); do
    echo "| $e | ${secs[direct,$e]} | $(rate "${secs[direct,$e]}") | $(mib "${link[direct,$e]}") | ${secs[hotshard,$e]} | $(rate "${secs[hotshard,$e]}") | $(mib "${link[hotshard,$e]}") | $(mib "${copied[$e]}") | $(mib "${from_pc[$e]}") | $(mib "${from_remote[$e]}") | ${promos[$e]} | $(mib "${used[$e]}") MiB, ${held[$e]} files | ${kept[$e]} |"
  done
  ds=$(sum direct secs 1 "$EPOCHS"); hsum=$(sum hotshard secs 1 "$EPOCHS")
  echo "| **all** | $ds | $(awk -v s="$ds" -v m=$((TOTAL_MIB * EPOCHS)) 'BEGIN { printf "%.1f", m / s }') | $(mib "$(sum direct link 1 "$EPOCHS")") | $hsum | $(awk -v s="$hsum" -v m=$((TOTAL_MIB * EPOCHS)) 'BEGIN { printf "%.1f", m / s }') | $(mib "$(sum hotshard link 1 "$EPOCHS")") | $(mib "$copied_all") | | | $(jq .placement.promotions <<<"$final") | | |"
  d2=$(sum direct secs 2 "$EPOCHS"); h2=$(sum hotshard secs 2 "$EPOCHS")
  echo "| **2..$EPOCHS** | $d2 | | $direct_later | $h2 | | $hs_later | | | | | | |"
  echo
  echo "**Epoch 1** (the cache empty when it began): hotshard took"
  echo "$(awk -v h="${secs[hotshard,1]}" -v d="${secs[direct,1]}" 'BEGIN { printf "%.2f", h / d }')x the direct time, and the link carried"
  echo "$(awk -v b="${link[hotshard,1]}" -v t="$TOTAL_MIB" 'BEGIN { printf "%.3f", b / 1048576 / t }')x the data set for it (direct: $(awk -v b="${link[direct,1]}" -v t="$TOTAL_MIB" 'BEGIN { printf "%.3f", b / 1048576 / t }')x, SFTP's own"
  echo "overhead included; hotshard over direct: $(awk -v h="${link[hotshard,1]}" -v d="${link[direct,1]}" 'BEGIN { printf "%.3f", h / d }')x);"
  echo "its promotions copied $(mib "${from_pc[1]}") MiB from the page cache and read $(mib "${from_remote[1]}") MiB from the remote."
  echo
  echo "Epochs 2..$EPOCHS, hotshard against direct: $(awk -v d="$d2" -v h="$h2" 'BEGIN { printf "%.2f", d / h }')x the speed,"
  echo "$(awk -v d="$direct_later" -v h="$hs_later" 'BEGIN { printf "%.2f", h / d }') of the remote bytes."
  echo
  echo "**The ideal to compare with.** A shuffled epoch reads every file once, so no file is"
  echo "hotter than another: the best a cache of a fraction f = $frac of the data set can do is hold"
  echo "one fixed subset of that size from epoch 2 on and never change it. Each later epoch then"
  echo "reads (1 - f) x $TOTAL_MIB = **$ideal_epoch MiB** from the remote ($ideal_later MiB over epochs 2..$EPOCHS),"
  echo "plus, once, the $(( CACHE_MIB < TOTAL_MIB ? CACHE_MIB : TOTAL_MIB )) MiB that fill the cache (which a cache filled by copies that read the"
  echo "remote again reads in addition to epoch 1's $TOTAL_MIB MiB; hotshard's promotions copy what the epoch's"
  echo "reads left in the page cache). hotshard read"
  echo "$hs_later MiB over epochs 2..$EPOCHS against direct's $direct_later MiB: it saved **$saved** of what the"
  echo "fixed subset would save (1.00 = as good as the ideal; 0 = no better than no cache; below 0"
  echo "= worse, the promotions cost more than the cache gives back)."
  echo
  later_promos=0; later_copied=0
  for ((e = 2; e <= EPOCHS; e++)); do later_promos=$((later_promos + ${promos[$e]})); later_copied=$((later_copied + ${copied[$e]})); done
  if ((later_promos > 0)); then
    echo "**Churn:** after the first fill, the placement loop made $later_promos more promotions in epochs"
    echo "2..$EPOCHS ($(mib "$later_copied") MiB copied over the link), each displacing a cached file that the"
    echo "same shuffle reads just as often: with every file read once per epoch, replacing one cached"
    echo "file by another saves nothing, so those copies are pure cost."
  else
    echo "After the first fill the placement loop made no more promotions: the cached subset stayed put."
  fi
  echo
  store_ev=$(($(jq .cache.evictions <<<"$final") - $(jq .placement.evictions <<<"$final")))
  echo "At the end: placement promotions $(jq .placement.promotions <<<"$final"), evictions $(jq .placement.evictions <<<"$final") by the"
  echo "placement loop and $store_ev more by the cache store itself (its watermarks: it makes room when a"
  echo "promotion would pass the high watermark, whatever the policy's books say),"
  echo "promotion failures $(jq .placement.promotion_failures <<<"$final"); cache $(mib "$(jq .cache.used_bytes <<<"$final")") of $(mib "$(jq .cache.capacity_bytes <<<"$final")") MiB;"
  echo "heat: $(mib "$(jq .heat.bytes_read_remote <<<"$final")") MiB read from the remote's file system, $(mib "$(jq .heat.bytes_read_cache <<<"$final")") MiB from the cache's,"
  echo "$(mib "$(jq .heat.unattributed_bytes <<<"$final")") MiB unattributed. Policy counters: \`$(jq -c .policy.counters <<<"$final")\`."
  echo
  echo "Slow remote: \`SLOW_DIR=$SLOW_DIR SLOW_NS=${SLOW_NS:-hs-remote} SLOW_IF=${SLOW_IF:-hs-slow} SLOW_NET=${SLOW_NET:-10.201.0} SLOW_PORT=${SLOW_PORT:-7022}\`."
  echo
  echo "Commands (\$REMOTE = $REMOTE, \$MNT = $MNT, \$CACHE = $CACHE):"
  echo
  echo '```'
  echo "tools/bench/slow-remote.sh up                       # RATE=$RATE"
  echo "# direct, for e in 1..$EPOCHS (page cache dropped first$( [[ $DROP == 1 ]] || echo ' in epoch 1'), then a ${PAUSE} s pause):"
  echo "shuffle e | xargs -P $WORKERS -I{} hotshard-readbench seq \$REMOTE/$SET/{} --block 1MiB"
  # shellcheck disable=SC2016
  echo "hotshard run --foreground --remote \$REMOTE --mount \$MNT --cache \$CACHE --cache-size ${CACHE_MIB}MiB --tick $TICK${EPOCH_POLICY:+ --policy '$EPOCH_POLICY'} &"
  echo "# hotshard, the same $EPOCHS epochs:"
  echo "shuffle e | xargs -P $WORKERS -I{} hotshard-readbench seq \$MNT/$SET/{} --block 1MiB"
  echo "tools/bench/slow-remote.sh bytes                    # before and after each epoch"
  echo "tools/bench/slow-remote.sh down"
  echo '```'
  echo
  echo "Rerun with other sizes: \`EPOCHS=6 EPOCH_FILES=48 EPOCH_PAUSE=0 RATE=1gbit tools/bench/epoch-bench.sh\`."
  echo
  echo "Exactly this run: \`RATE=$RATE EPOCHS=$EPOCHS EPOCH_FILES=$NFILES EPOCH_FILE_MIB=$FILE_MIB EPOCH_CACHE_MIB=$CACHE_MIB EPOCH_WORKERS=$WORKERS EPOCH_DROP=$DROP EPOCH_PAUSE=$PAUSE EPOCH_TICK=$TICK EPOCH_BENCH_OUT=$OUT tools/bench/epoch-bench.sh\`."
} > "$tmp"
mkdir -p "$(dirname "$OUT")"
mv "$tmp" "$OUT"
chmod 644 "$OUT"
cat "$OUT"
say "wrote $OUT"
