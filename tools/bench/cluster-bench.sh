#!/usr/bin/env bash
# cluster-bench: the peer tier (docs/cluster.md) on one machine, over shaped links.
#
#   namespace hsbench-br: bridge br0, NET.254, etcd
#     port hN <-- veth --> namespace hsbench-hN: eth0 NET.N, sshfs + hotshard (N = 1..3)
#     port r  <-- veth --> namespace hsbench-r:  eth0 NET.4, socat -> sftp-server
#
# The remote's link is shaped at RATE (tc tbf at both ends; this kernel has no
# netem: bandwidth only). Each host mounts the remote with its own sshfs run in
# its namespace (nsenter --net: the mount lands in ours), and runs its daemon
# there too, so every remote byte crosses the shaped link and is counted at the
# remote's end (tbf's counter, headers included; sftp-server's log, file bytes).
# The tests build the same topology (tests/integration/cluster_topology.h).
#
# (a) peer fetch rate: host 2's link is shaped at PEER_RATE too. Host 2, alone
#     in the cluster, warms PEER_FILES files of PEER_FILE_MIB (from the remote:
#     the remote's rate through a promotion); host 1 joins and reads each file:
#     those host 2 owns come from host 2 over its shaped link (no remote
#     bytes), those host 1 owns from the remote. Rate = file size / time of the
#     read (open to last byte; the open waits for the fetch), and the daemon's
#     own: fetched bytes / hotshard_peer_fetch_seconds (request to publish).
#     Also: one file read straight from host 1's sshfs (the remote's rate for
#     a plain reader).
# (b) cold start: one COLD_FILE_MIB file read by the three hosts at once, through
#     hotshard in cluster mode (fresh caches, a fresh file), against the same
#     size of another fresh file read at once by the three hosts straight from
#     their sshfs mounts. Host links unshaped: the remote's link is the narrow one.
#     The cluster side runs once per --peer-timeout in PEER_TIMEOUTS (each with a
#     fresh file): the timeout bounds a whole fetch, the owner's own promotion
#     from the remote included.
#
# Writes a markdown section to docs/benchmarks.d/cluster.md (make bench appends it
# to docs/benchmarks.md) and prints it.
#
#   CLUSTER_BENCH_DIR=/var/tmp/hotshard-cluster   data, mounts, caches (removed at the end), logs
#   RATE=400mbit            the remote's link (tc units)
#   PEER_RATE=400mbit       host 2's link in (a)
#   PEER_FILES=6 PEER_FILE_MIB=128
#   COLD_FILE_MIB=1024
#   PEER_TIMEOUTS="30s 5m"  --peer-timeout of the cold-start runs (30s: the default)
#   CLUSTER_NET=10.78.0     addresses inside the namespaces only
#   CLUSTER_BENCH_OUT=docs/benchmarks.d/cluster.md
set -euo pipefail
cd "$(dirname "$0")/../.."

ROOT=${CLUSTER_BENCH_DIR:-/var/tmp/hotshard-cluster}
RATE=${RATE:-400mbit}
PEER_RATE=${PEER_RATE:-400mbit}
PEER_FILES=${PEER_FILES:-6}
PEER_FILE_MIB=${PEER_FILE_MIB:-128}
COLD_FILE_MIB=${COLD_FILE_MIB:-1024}
PEER_TIMEOUTS=${PEER_TIMEOUTS:-30s 5m}
NET=${CLUSTER_NET:-10.78.0}
OUT=${CLUSTER_BENCH_OUT:-docs/benchmarks.d/cluster.md}
BIN=$PWD/build/hotshard
SFTP_SERVER=/usr/lib/openssh/sftp-server
P=hsbench HOSTS=3 SFTP_PORT=7022 ETCD_PORT=2379 PEER_PORT=7464
EXPORT=$ROOT/export RUN=$ROOT/run

say() { echo "cluster-bench: $*" >&2; }
die() { say "$*"; exit 1; }
in_ns() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }
# Runs in a namespace's network only: mounts it makes land in ours.
on_net() { local ns=$1; shift; nsenter --net="/run/netns/$P-$ns" "$@"; }

need() {
  [[ $(id -u) -eq 0 ]] || die "needs root (namespaces, tc, mounts)"
  local missing=()
  for t in ip tc nsenter socat sshfs etcd etcdctl jq "$SFTP_SERVER"; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [[ ${#missing[@]} -eq 0 ]] || die "missing: ${missing[*]} (run 'make deps')"
  [[ -x $BIN ]] || die "build first: make build"
}

# ---- topology ------------------------------------------------------------------

pids_in() { ip netns pids "$P-$1" 2>/dev/null || true; }

down() {
  local n
  for n in $(seq "$HOSTS"); do stop_daemon "$n"; done
  for n in $(seq "$HOSTS"); do
    if mountpoint -q "$ROOT/h$n/remote" 2>/dev/null; then umount -l "$ROOT/h$n/remote" || true; fi
  done
  # What runs in our namespaces is ours (sshfs, socat, sftp-server, etcd): its ids
  # come from the namespace, nothing is matched by name.
  for ns in br h1 h2 h3 r; do
    local pids; pids=$(pids_in "$ns")
    [[ -z $pids ]] || kill -TERM $pids 2>/dev/null || true
  done
  sleep 0.5
  for ns in br h1 h2 h3 r; do
    local pids; pids=$(pids_in "$ns")
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    if ip netns list 2>/dev/null | grep -qw "^$P-$ns"; then ip netns delete "$P-$ns"; fi
  done
}

tbf() {  # NS DEV RATE
  in_ns "$1" tc qdisc replace dev "$2" root tbf rate "$3" burst 512kb latency 50ms
}
unshape() { in_ns "$1" tc qdisc del dev "$2" root 2>/dev/null || true; }

up() {
  local n
  for ns in br h1 h2 h3 r; do ip netns add "$P-$ns"; ip -n "$P-$ns" link set lo up; done
  ip -n "$P-br" link add br0 type bridge
  ip -n "$P-br" addr add "$NET.254/24" dev br0
  ip -n "$P-br" link set br0 up
  for n in 1 2 3 4; do
    local port=h$n; ((n <= HOSTS)) || port=r
    ip -n "$P-br" link add "$port" type veth peer name eth0 netns "$P-$port"
    ip -n "$P-br" link set "$port" master br0 up
    ip -n "$P-$port" addr add "$NET.$n/24" dev eth0
    ip -n "$P-$port" link set eth0 up
  done
  tbf r eth0 "$RATE"
  tbf br r "$RATE"

  mkdir -p "$EXPORT" "$RUN"
  printf '#!/bin/bash\nexec %s -e -l DEBUG1 2>>%s\n' "$SFTP_SERVER" "$RUN/sftp.log" > "$RUN/sftp-server.sh"
  chmod 0755 "$RUN/sftp-server.sh"
  setsid ip netns exec "$P-r" socat "TCP-LISTEN:$SFTP_PORT,bind=$NET.4,reuseaddr,fork" \
    "EXEC:$RUN/sftp-server.sh" </dev/null >"$RUN/socat.log" 2>&1 &
  for _ in $(seq 100); do
    in_ns h1 socat -u OPEN:/dev/null "TCP:$NET.4:$SFTP_PORT,connect-timeout=1" 2>/dev/null && break
    sleep 0.1
  done
  for n in $(seq "$HOSTS"); do
    mkdir -p "$ROOT/h$n/remote" "$ROOT/h$n/mnt"
    timeout 20 nsenter --net="/run/netns/$P-h$n" sshfs \
      -o "directport=$SFTP_PORT,allow_other,noforget,reconnect" "$NET.4:$EXPORT" "$ROOT/h$n/remote"
  done

  local url=http://$NET.254:$ETCD_PORT
  rm -rf "$RUN/etcd"
  setsid ip netns exec "$P-br" etcd --name bench --data-dir "$RUN/etcd" \
    --listen-client-urls "$url" --advertise-client-urls "$url" \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster bench=http://127.0.0.1:2380 </dev/null >"$RUN/etcd.log" 2>&1 &
  for _ in $(seq 100); do
    in_ns br etcdctl --endpoints "$url" --dial-timeout 1s endpoint health >/dev/null 2>&1 && break
    sleep 0.2
  done
  in_ns br etcdctl --endpoints "$url" endpoint health >/dev/null 2>&1 || die "etcd did not start; see $RUN/etcd.log"
  umask 077; echo "cluster-bench-token-$RANDOM$RANDOM" > "$RUN/token"; umask 022
}

# ---- daemons ---------------------------------------------------------------------

declare -A daemon_pid=()
hs() { local n=$1; shift; timeout 120 "$BIN" "$@" --socket "$RUN/h$n.sock"; }

start_daemon() {  # N [PEER_TIMEOUT]
  local n=$1 timeout=${2:-30s}
  rm -rf "$ROOT/h$n/cache"; mkdir -p "$ROOT/h$n/cache"
  # Metrics on the host's own address: each namespace has its own port space.
  on_net "h$n" "$BIN" run --foreground --remote "$ROOT/h$n/remote" --mount "$ROOT/h$n/mnt" \
    --cache "$ROOT/h$n/cache" --control-socket "$RUN/h$n.sock" --log-level info \
    --metrics "$NET.$n:9464" --cluster bench --etcd "http://$NET.254:$ETCD_PORT" \
    --peer-listen "$NET.$n:$PEER_PORT" --namespace ds --cluster-token-file "$RUN/token" \
    --peer-id "h$n" --peer-transports tcp --peer-timeout "$timeout" \
    2>>"$RUN/daemon-h$n.log" &
  daemon_pid[$n]=$!
  for _ in $(seq 300); do
    hs "$n" status --json >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  die "hotshard on h$n did not start; see $RUN/daemon-h$n.log"
}

stop_daemon() {  # N
  local n=$1 pid=${daemon_pid[$1]:-}
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    daemon_pid[$n]=
  fi
  if mountpoint -q "$ROOT/h$n/mnt" 2>/dev/null; then umount -l "$ROOT/h$n/mnt" || true; fi
}

wait_members() {  # N COUNT
  local n=$1 want=$2 got=
  for _ in $(seq 150); do
    got=$(hs "$n" status --json | jq '.cluster.members | length')
    [[ $got == "$want" ]] && return 0
    sleep 0.2
  done
  die "h$n sees $got members, not $want"
}

# ---- counters ----------------------------------------------------------------------

# One series' value from host N's /metrics (bash's /dev/tcp: no HTTP client needed).
metric() {  # N NAME
  in_ns "h$1" bash -c "exec 3<>/dev/tcp/$NET.$1/9464 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3" |
    awk -v name="$2" '$1 == name { print $2; found = 1 } END { if (!found) print 0 }'
}

link_bytes() { in_ns r tc -s qdisc show dev eth0 | awk '/^ Sent / { print $2; exit }'; }
# File bytes sftp-server has read out for PATH, each read clipped to SIZE.
file_bytes() {  # PATH SIZE
  awk -v key="read \"$1\"" -v size="$2" 'index($0, key) {
      sub(/\r$/, "")
      for (i = 1; i < NF; i++) { if ($i == "off") off = $(i + 1) + 0; if ($i == "len") len = $(i + 1) + 0 }
      if (off < size) total += (len < size - off ? len : size - off)
    } END { printf "%.0f\n", total }' "$RUN/sftp.log"
}
now() { date +%s.%N; }
mib_s() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }
# tc rate ("400mbit") in MiB/s
rate_mib_s() {
  awk -v r="$1" 'BEGIN { n = r + 0; u = tolower(substr(r, length(n "") + 1));
    m = (u == "gbit") ? 1e9 : (u == "mbit") ? 1e6 : (u == "kbit") ? 1e3 : 1;
    printf "%.1f", n * m / 8 / 1048576 }'
}

# ---- run -----------------------------------------------------------------------------

need
mkdir -p "$ROOT"
down
# The data (GiBs, made fresh each run) and the caches go; the logs stay in $RUN.
trap 'rc=$?; trap - EXIT; down; rm -rf "$EXPORT" "$ROOT"/h*/cache; ((rc == 0)) || say "failed (exit $rc); logs in $RUN"; exit $rc' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
rm -rf "$ROOT/export" "$RUN"
up
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# (a) the peer's rate against the remote's
say "(a) peer fetch rate: $PEER_FILES x $PEER_FILE_MIB MiB, peer link $PEER_RATE, remote $RATE"
size=$((PEER_FILE_MIB << 20))
mkdir -p "$EXPORT/peer"
for i in $(seq "$PEER_FILES"); do head -c "$size" /dev/urandom > "$EXPORT/peer/f$i.bin"; done
head -c "$size" /dev/urandom > "$EXPORT/peer/direct.bin"
t0=$(now); cat "$ROOT/h1/remote/peer/direct.bin" > /dev/null; t1=$(now)
direct_rate=$(mib_s "$size" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
start_daemon 2
wait_members 2 1
t0=$(now); hs 2 warm "$ROOT/h2/mnt/peer" >/dev/null; t1=$(now)
warm_rate=$(mib_s $((PEER_FILES * size)) "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
start_daemon 1
wait_members 1 2; wait_members 2 2
tbf h2 eth0 "$PEER_RATE"; tbf br h2 "$PEER_RATE"
peer_rates=() remote_rates=() rows_a=()
for i in $(seq "$PEER_FILES"); do
  f=peer/f$i.bin
  before=$(link_bytes)
  t0=$(now)
  cat "$ROOT/h1/mnt/$f" > /dev/null
  t1=$(now)
  [[ $(sha256sum < "$ROOT/h1/mnt/$f") == $(sha256sum < "$EXPORT/$f") ]] || die "h1 read $f wrong"
  from_remote=$(( $(link_bytes) - before ))
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  rate=$(mib_s "$size" "$secs")
  if ((from_remote < size / 10)); then src=peer; peer_rates+=("$rate"); else src=remote; remote_rates+=("$rate"); fi
  rows_a+=("| $f | $src | $secs | $rate | $(mib_s "$from_remote" 1) |")
  say "  $f from the $src: $secs s, $rate MiB/s"
done
unshape h2 eth0; unshape br h2
fetched_a=$(hs 1 status --json | jq '.cluster.fetched_bytes // 0')
fetch_seconds=$(metric 1 hotshard_peer_fetch_seconds_sum)
daemon_rate=$(awk -v b="$fetched_a" -v s="$fetch_seconds" 'BEGIN { if (s > 0) printf "%.1f", b / 1048576 / s; else print "-" }')
stop_daemon 1; stop_daemon 2
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { if (NR) printf "%.1f", NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; else print "-" }'; }
peer_median=$(echo "${peer_rates[*]:-}" | median)
remote_median=$(echo "${remote_rates[*]:-}" | median)
peer_shaped=$(rate_mib_s "$PEER_RATE")
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-") print "-"; else printf "%.2f", a / b }'; }
peer_ratio=$(ratio_of "$peer_median" "$peer_shaped")
daemon_ratio=$(ratio_of "$daemon_rate" "$peer_shaped")

# (b) cold start on three hosts at once
csize=$((COLD_FILE_MIB << 20))
say "(b) cold start of a $COLD_FILE_MIB MiB file on $HOSTS hosts at once, remote $RATE"
mkdir -p "$EXPORT/cold"

cold_run() {  # SIDE FILE: reads on every host at once, prints "seconds link_bytes file_bytes"
  local side=$1 file=$2 want n path l0 t0 t1 pids=() ok=1
  head -c "$csize" /dev/urandom > "$EXPORT/$file"
  want=$(sha256sum < "$EXPORT/$file" | cut -d' ' -f1)
  l0=$(link_bytes)
  t0=$(now)
  for n in $(seq "$HOSTS"); do
    if [[ $side == direct ]]; then path=$ROOT/h$n/remote/$file; else path=$ROOT/h$n/mnt/$file; fi
    (sha256sum < "$path" | cut -d' ' -f1 > "$RUN/cold-$side-h$n.sum") &
    pids+=($!)
  done
  for p in "${pids[@]}"; do wait "$p" || ok=0; done
  t1=$(now)
  for n in $(seq "$HOSTS"); do [[ $(cat "$RUN/cold-$side-h$n.sum") == "$want" ]] || ok=0; done
  ((ok)) || die "a host read $file wrong ($side)"
  echo "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') $(( $(link_bytes) - l0 )) $(file_bytes "$EXPORT/$file" "$csize")"
}
x() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
out=$(cold_run direct cold/direct.bin); read -r d_secs d_link d_file <<<"$out"
say "  direct:  $d_secs s, $d_file file bytes from the remote"
rows_b=("| three hosts straight from the remote | - | $d_secs | $(mib_s "$d_file" 1) | $(x "$d_file" "$csize") | $(mib_s "$d_link" 1) | - | - |")
for timeout in $PEER_TIMEOUTS; do
  for n in $(seq "$HOSTS"); do start_daemon "$n" "$timeout"; done
  for n in $(seq "$HOSTS"); do wait_members "$n" "$HOSTS"; done
  out=$(cold_run cluster "cold/cluster-$timeout.bin"); read -r c_secs c_link c_file <<<"$out"
  fetched_b=0 failures=
  for n in $(seq "$HOSTS"); do
    st=$(hs "$n" status --json)
    fetched_b=$((fetched_b + $(jq '.cluster.fetched_bytes // 0' <<<"$st")))
    f=$(jq -r '.cluster.fetch_failures // {} | to_entries | map("\(.key) \(.value)") | join(", ")' <<<"$st")
    failures+=${f:+ h$n: $f;}
  done
  say "  cluster, --peer-timeout $timeout: $c_secs s, $c_file file bytes from the remote; failures:${failures:- none}"
  rows_b+=("| three hosts through the cluster | $timeout | $c_secs | $(mib_s "$c_file" 1) | **$(x "$c_file" "$csize")** | $(mib_s "$c_link" 1) | $(mib_s "$fetched_b" 1) | ${failures:- none} |")
  for n in $(seq "$HOSTS"); do stop_daemon "$n"; done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

mkdir -p "$(dirname "$OUT")"
{
  echo "## Cluster: the peer tier"
  echo
  echo "Generated by \`tools/bench/cluster-bench.sh\` (run by \`make bench\` unless \`BENCH_CLUSTER=0\`) on"
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) cores; load average $load_start"
  echo "at the start, $load_end at the end (the machine is shared). Three hosts, each a network"
  echo "namespace with its own sshfs of the remote and its own daemon (\`--cluster\`, TCP transport),"
  echo "on a bridge with etcd; the remote is sftp-server in a fourth namespace behind a link shaped"
  echo "with tc tbf at $RATE (no netem on this kernel: bandwidth only, no added delay). Remote bytes"
  echo "are counted at the remote's end: file bytes from sftp-server's log, link bytes (headers"
  echo "included) from tbf's counter. Every read is checked by sha256 against the source."
  echo
  echo "### (a) Peer fetch rate"
  echo
  echo "Host 2's link shaped at $PEER_RATE ($peer_shaped MiB/s). Host 2, alone in the cluster, warmed"
  echo "$PEER_FILES files of $PEER_FILE_MIB MiB from the remote; host 1 then joined and read each file"
  echo "through its mount (\`cat FILE > /dev/null\`, timed from open to the last byte: the open"
  echo "waits for the fetch, which writes, verifies and publishes the copy; sha256 checked after)."
  echo "Files host 2 owns came from host 2; those host 1 owns, from the remote (host 1's own"
  echo "promotion)."
  echo
  echo "| file | from | seconds | MiB/s | remote link MiB |"
  echo "| --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows_a[@]}"
  echo
  echo "| rate | MiB/s |"
  echo "| --- | --- |"
  echo "| peer link, shaped ($PEER_RATE) | $peer_shaped |"
  echo "| **peer fetch, open to last byte, median** | **$peer_median** (**$peer_ratio** of the link; target >= 0.9) |"
  echo "| peer fetch, the daemon's own (bytes / hotshard_peer_fetch_seconds, request to publish) | $daemon_rate ($daemon_ratio of the link) |"
  echo "| remote via a promotion on host 1, median | $remote_median |"
  echo "| remote via \`hotshard warm\` on host 2 ($PEER_FILES files) | $warm_rate |"
  echo "| remote via host 1's plain sshfs (one file, \`cat\`) | $direct_rate |"
  echo "| remote link, shaped ($RATE) | $(rate_mib_s "$RATE") |"
  echo
  echo "Host 1 fetched $(mib_s "$fetched_a" 1) MiB from peers (its \`status\`: cluster.fetched_bytes)."
  echo
  echo "### (b) Cold start: one $COLD_FILE_MIB MiB file on three hosts at once"
  echo
  echo "Fresh caches and a fresh file (nothing in any page cache of a host's sshfs); the three"
  echo "hosts start reading at the same moment. Direct: each host reads its own sshfs mount."
  echo "Cluster: each host reads through its hotshard mount; host links unshaped. Once per"
  echo "\`--peer-timeout\` (a fresh file each): it bounds a whole fetch, the owner's promotion from"
  echo "the remote included, and a fetch past it is abandoned and the open reads the remote."
  echo
  echo "| | --peer-timeout | seconds (last host done) | remote file MiB | x file size | remote link MiB | from peers MiB | fetch failures |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  printf '%s\n' "${rows_b[@]}"
  echo
  echo "Exactly this run: \`RATE=$RATE PEER_RATE=$PEER_RATE PEER_FILES=$PEER_FILES PEER_FILE_MIB=$PEER_FILE_MIB COLD_FILE_MIB=$COLD_FILE_MIB PEER_TIMEOUTS=\"$PEER_TIMEOUTS\" tools/bench/cluster-bench.sh\`."
  echo "Each daemon: \`hotshard run --foreground --remote H/remote --mount H/mnt --cache H/cache"
  echo "--metrics $NET.N:9464 --cluster bench --etcd http://$NET.254:$ETCD_PORT --peer-listen $NET.N:$PEER_PORT"
  echo "--namespace ds --cluster-token-file TOKEN --peer-id hN --peer-transports tcp --peer-timeout T\` in namespace hN"
  echo "(\`nsenter --net\`); sshfs: \`sshfs -o directport=$SFTP_PORT,allow_other,noforget,reconnect $NET.4:EXPORT H/remote\`."
} > "$OUT.new"
mv "$OUT.new" "$OUT"
cat "$OUT"
