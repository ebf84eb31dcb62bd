#!/usr/bin/env bash
# A slow remote on one machine: a directory served over SFTP from inside a
# network namespace, through a rate-limited veth link, mounted with sshfs.
#
#   tools/bench/slow-remote.sh up       build it (idempotent: a working one is kept)
#   tools/bench/slow-remote.sh down     unmount, stop the server, delete the namespace
#   tools/bench/slow-remote.sh status   say what is up; exit 0 only if all of it is
#   tools/bench/slow-remote.sh bytes    bytes sent so far from the namespace to the host
#                                       (the data direction), from tbf's counters
#
#   host                                     namespace hs-remote
#   SLOW_DIR/remote (sshfs)                  socat TCP-LISTEN:7022 -> sftp-server
#     10.201.0.1/30 hs-slow0 <-- veth -->    hs-slow1 10.201.0.2/30
#        tbf RATE (requests)                 tbf RATE (data)
#
# sshfs speaks SFTP straight to the TCP port (-o directport), so there is no ssh
# encryption in the way and the link rate is the limit. The namespace shares the
# file system, so the served directory (SLOW_DIR/export) is an ordinary host
# directory: fill it locally, read it back through SLOW_DIR/remote at link speed.
# The kernel here has tbf but not netem: the link is bandwidth-limited, with no
# added delay.
#
# Environment (same values for up and down):
#   RATE=400mbit          tbf rate, both directions (tc units: 100mbit, 1gbit, 50mbps)
#   BURST=512kb           tbf bucket (tc units; at least RATE/HZ bytes)
#   SLOW_DIR=/var/tmp/hotshard-slow
#   SLOW_NS=hs-remote  SLOW_PORT=7022  SLOW_NET=10.201.0   (host .1, namespace .2, /30)
#   SLOW_IF=hs-slow       veth names: SLOW_IF0 on the host, SLOW_IF1 in the namespace
set -euo pipefail

RATE=${RATE:-400mbit}
BURST=${BURST:-512kb}
DIR=${SLOW_DIR:-/var/tmp/hotshard-slow}
NS=${SLOW_NS:-hs-remote}
PORT=${SLOW_PORT:-7022}
NET=${SLOW_NET:-10.201.0}
IF=${SLOW_IF:-hs-slow}
HOST_IF=${IF}0 NS_IF=${IF}1
HOST_IP=$NET.1 NS_IP=$NET.2
EXPORT=$DIR/export MNT=$DIR/remote RUN=$DIR/run
SFTP_SERVER=${SFTP_SERVER:-/usr/lib/openssh/sftp-server}

say() { echo "slow-remote: $*" >&2; }
die() { say "$*"; exit 1; }
ns() { ip netns exec "$NS" "$@"; }

need() {
  [[ $(id -u) -eq 0 ]] || die "needs root (namespaces, tc, mount)"
  local missing=()
  for t in ip tc socat sshfs fusermount3 "$SFTP_SERVER"; do command -v "$t" >/dev/null || missing+=("$t"); done
  [[ ${#missing[@]} -eq 0 ]] || die "missing: ${missing[*]} (run 'make deps')"
}

server_pid() {  # the socat listener we started, if it still runs
  local pid
  pid=$(cat "$RUN/socat.pid" 2>/dev/null) || return 1
  [[ -n $pid && -d /proc/$pid ]] && grep -q socat "/proc/$pid/comm" 2>/dev/null && echo "$pid"
}

is_up() {
  ip netns list 2>/dev/null | grep -qw "^$NS" &&
    ip link show "$HOST_IF" >/dev/null 2>&1 &&
    server_pid >/dev/null &&
    mountpoint -q "$MNT" &&
    timeout 5 stat "$MNT/." >/dev/null 2>&1
}

down() {
  if mountpoint -q "$MNT" 2>/dev/null || grep -qs " $MNT fuse.sshfs " /proc/mounts; then
    if ! timeout 10 fusermount3 -u "$MNT" 2>/dev/null; then
      # Busy or hung: abort our sshfs connection (its fusectl entry is named by the
      # mount's minor number) so no reader stays blocked, then detach it.
      local minor
      minor=$(mountpoint -d "$MNT" 2>/dev/null | cut -d: -f2) || true
      if [[ -n $minor && -e /sys/fs/fuse/connections/$minor/abort ]]; then
        echo 1 > "/sys/fs/fuse/connections/$minor/abort" || true
      fi
      umount -l "$MNT" 2>/dev/null || true
    fi
  fi
  local pid
  if pid=$(server_pid); then
    # socat was started with setsid: its process group holds it and the
    # sftp-server it forked, and nothing else.
    kill -TERM -- "-$pid" 2>/dev/null || true
    for _ in $(seq 50); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$RUN/socat.pid"
  # Deleting the namespace deletes its end of the veth and with it the pair.
  if ip netns list 2>/dev/null | grep -qw "^$NS"; then ip netns delete "$NS"; fi
  if ip link show "$HOST_IF" >/dev/null 2>&1; then ip link delete "$HOST_IF" 2>/dev/null || true; fi
  return 0
}

up() {
  need
  if is_up; then say "already up ($MNT)"; return 0; fi
  down
  # Any failure or interruption from here on leaves nothing behind.
  trap 'rc=$?; if ((rc)); then say "up failed; tearing down"; down; fi' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if ip -o addr show | grep -v " $HOST_IF " | grep -q "inet $NET\."; then
    die "$NET.0/30 is already used by another interface; pick SLOW_NET=..."
  fi
  mkdir -p "$EXPORT" "$MNT" "$RUN"

  ip netns add "$NS"
  ip link add "$HOST_IF" type veth peer name "$NS_IF" netns "$NS"
  ip addr add "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ns ip addr add "$NS_IP/30" dev "$NS_IF"
  ns ip link set "$NS_IF" up
  ns ip link set lo up
  # Token bucket on each egress: host->ns carries SFTP requests, ns->host the data.
  tc qdisc replace dev "$HOST_IF" root tbf rate "$RATE" burst "$BURST" latency 50ms
  ns tc qdisc replace dev "$NS_IF" root tbf rate "$RATE" burst "$BURST" latency 50ms

  # One sftp-server per connection, bound to the namespace address only; run/socat.log
  # notes each connection (a second one means sshfs had to reconnect). The server is
  # started through a link of our own name, so that cleanups elsewhere that kill
  # sftp-server processes by name (some tests do) leave this one alone.
  ln -sfn "$SFTP_SERVER" "$RUN/hs-slow-sftp-server"
  setsid ip netns exec "$NS" socat -d -d \
    "TCP-LISTEN:$PORT,bind=$NS_IP,reuseaddr,fork" "EXEC:$RUN/hs-slow-sftp-server" \
    </dev/null >"$RUN/socat.log" 2>&1 &
  echo $! >"$RUN/socat.pid"
  for _ in $(seq 50); do
    ns socat -u OPEN:/dev/null "TCP:$NS_IP:$PORT,connect-timeout=1" 2>/dev/null && break
    sleep 0.1
  done

  timeout 20 sshfs -o directport="$PORT",allow_other,reconnect,noforget \
    "$NS_IP:$EXPORT" "$MNT"
  is_up || die "mount of $MNT did not come up"
  say "up: $EXPORT served from namespace $NS at $RATE, mounted on $MNT"
}

status() {
  local ok=0
  if ip netns list 2>/dev/null | grep -qw "^$NS"; then echo "namespace $NS: present"; else echo "namespace $NS: absent"; ok=1; fi
  if ip link show "$HOST_IF" >/dev/null 2>&1; then
    echo "link $HOST_IF ($HOST_IP) <-> $NS_IF ($NS_IP)"
    tc qdisc show dev "$HOST_IF" | sed 's/^/  host egress: /'
    ns tc qdisc show dev "$NS_IF" 2>/dev/null | sed 's/^/  ns egress:   /'
  else
    echo "link $HOST_IF: absent"; ok=1
  fi
  local pid
  if pid=$(server_pid); then echo "sftp listener: pid $pid on $NS_IP:$PORT"; else echo "sftp listener: not running"; ok=1; fi
  if mountpoint -q "$MNT" 2>/dev/null; then echo "sshfs: $MNT mounted (serves $EXPORT)"; else echo "sshfs: $MNT not mounted"; ok=1; fi
  return $ok
}

link_bytes() {
  ns tc -s qdisc show dev "$NS_IF" | awk '/^ Sent / { print $2; exit }'
}

case ${1:-} in
  up) up ;;
  bytes) link_bytes ;;
  down) down; say "down" ;;
  status) status ;;
  *) echo "usage: $0 up|down|status|bytes   (RATE=400mbit SLOW_DIR=/var/tmp/hotshard-slow)" >&2; exit 2 ;;
esac
