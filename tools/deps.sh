#!/usr/bin/env bash
# Installs the Debian packages hotshard needs, and only those that are missing.
# Idempotent: with everything present it costs one dpkg-query and exits 0.
set -euo pipefail

PACKAGES=(
  # build
  g++ make pkg-config clang llvm bpftool universal-ctags
  # libraries
  libfuse3-dev fuse3 libbpf-dev libelf-dev zlib1g-dev liburing-dev
  prometheus-cpp-dev libcli11-dev libtomlplusplus-dev libspdlog-dev libfmt-dev
  libxxhash-dev libsystemd-dev nlohmann-json3-dev libcurl4-openssl-dev libssl-dev libibverbs-dev librdmacm-dev libgtest-dev
  liblmdb-dev
  # tests and benchmarks
  attr coreutils util-linux iproute2 sshfs openssh-server openssh-client socat prometheus jq systemd logrotate
  etcd-server etcd-client
  sqlite3
  groff-base man-db
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "hotshard deps: missing packages: ${missing[*]}" >&2
  echo "hotshard deps: run 'sudo make deps' (needs root to install them)" >&2
  exit 1
fi
echo "hotshard deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# The prometheus package would start a system-wide server on :9090; tests start their own.
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# etcd-server enables and starts a system-wide etcd on :2379; the peer tests start
# their own on free ports, and an operator sets up the cluster's (docs/cluster.md).
# Disabled whether or not it is running now (a container without systemd as PID 1
# still gets the unit disabled; the stop then fails harmlessly).
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
echo "hotshard deps: done"
