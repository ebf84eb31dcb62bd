// Helpers for the metrics tests (unit and integration): a full status snapshot,
// a minimal HTTP GET on loopback, and a parser of the Prometheus text format.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <sstream>
#include <string>

#include "daemon/control.h"
#include "daemon/status.h"

namespace hotshard::testing {

// Every field the daemon's status JSON has, with distinct values.
inline json fullStatusFixture() {
  return json::parse(R"({
    "version": "0.1.0", "pid": 1234, "mount": "/mnt/data", "remote": "/mnt/data",
    "cache_dir": "/nvme/cache", "overmount": true, "passthrough": true,
    "passthrough_reason": "kernel passthrough", "consistency": "strict",
    "fuse": {"requests": {"lookup": 11, "getattr": 9, "open": 12, "read": 3, "release": 12},
             "inodes": 42, "opens_passthrough": 12, "opens_userspace": 0, "opens_cache": 7,
             "opens_remote": 5, "cache_conflicts": 1, "userspace_read_bytes": 4096},
    "cache": {"used_bytes": 600000000, "capacity_bytes": 1000000000, "objects": 9,
              "promotions_in_flight": 1, "pinned_objects": 2, "evictions": 4, "stale_drops": 5,
              "invalidations": 6, "corrupt_drops": 1, "disk_healthy": false,
              "disk_error": "open cached copy: Input/output error", "disk_since": 1790000000,
              "promoter": {"started": 20, "published": 10, "already_cached": 2, "linked": 7,
                           "failed_stale": 1,
                           "failed_no_space": 2, "failed_remote_io": 3, "failed_cache_io": 4,
                           "vanished": 5, "queued": 3, "bytes_copied": 123456789,
                           "read_page_cache_bytes": 100000000, "read_remote_bytes": 23456789,
                           "yields": 7},
              "scrub": {"passes": 2, "objects_checked": 18, "objects_dropped": 1}},
    "probes": {"mode": "bpf", "reason": "tp_btf", "events": 1000, "lost_updates": 0, "attached": 6},
    "heat": {"bytes_read_remote": 3000, "bytes_missed_remote": 1000, "bytes_read_cache": 8000,
             "bytes_missed_cache": 6000, "remote_bytes_avoided": 6000, "unattributed_bytes": 77,
             "shards": 15},
    "jobs": [{"cgroup": "/system.slice/train.service", "bytes_read": 9000, "bytes_missed": 5000},
             {"cgroup": "other", "bytes_read": 2000, "bytes_missed": 2000}],
    "policy": {"name": "hotshard", "spec": "hotshard;decay=30s;weight=2",
               "params": {"decay": "30s", "weight": 2},
               "counters": {"capacity_bytes": 1000000000, "admits": 14, "rejects": 6}},
    "placement": {"automatic": true, "tick_seconds": 0.5, "ticks": 100, "promotions": 12,
                  "promotion_failures": 2, "evictions": 3},
    "top": [{"path": "shard-0.tar", "heat": 1.5}],
    "cluster": {"name": "train-a", "namespace": "datasets", "id": "host-a",
                "address": "10.0.1.1:7464", "connected": false,
                "alone_reason": "etcd http://10.0.0.11:2379: connection refused",
                "members": [{"id": "host-a", "address": "10.0.1.1:7464",
                             "transports": ["tcp"], "capacity_bytes": 1000000000, "self": true},
                            {"id": "host-b", "address": "10.0.1.2:7464",
                             "transports": ["rdma", "tcp"], "capacity_bytes": 2000000000,
                             "self": false}],
                "fetched": [{"peer": "host-b", "transport": "tcp", "bytes": 7340032,
                             "fetches": 3}],
                "fetched_bytes": 7340032, "fetch_failures": {"io": 2, "stale": 1},
                "owner_promotions": 4, "served_bytes": 5242880, "served_objects": 2,
                "refused": 1, "protocol_errors": 3, "not_served": 5}
  })");
}

// The same, typed: what the daemon's snapshot callback returns.
inline StatusSnapshot fullStatusSnapshot() { return fullStatusFixture().get<StatusSnapshot>(); }

struct HttpReply {
  int status = 0;  // 0: no reply
  std::string body;
};

// A loopback TCP port that was free a moment ago (for a daemon's --metrics).
inline uint16_t freeLoopbackPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  ::bind(fd, reinterpret_cast<sockaddr*>(&sin), len);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
  ::close(fd);
  return ntohs(sin.sin_port);
}

// GET http://127.0.0.1:port/path (HTTP/1.0: the reply ends at EOF).
inline HttpReply httpGet(uint16_t port, const std::string& path, int timeout_s = 5) {
  HttpReply reply;
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return reply;
  timeval tv{timeout_s, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
    ::close(fd);
    return reply;
  }
  std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return reply;
  }
  std::string raw;
  char buf[16384];
  ssize_t n;
  while ((n = ::recv(fd, buf, sizeof(buf), 0)) > 0) raw.append(buf, n);
  ::close(fd);
  size_t sp = raw.find(' ');
  size_t end = raw.find("\r\n\r\n");
  if (raw.rfind("HTTP/", 0) != 0 || sp == std::string::npos || end == std::string::npos)
    return reply;
  reply.status = std::atoi(raw.c_str() + sp + 1);
  reply.body = raw.substr(end + 4);
  return reply;
}

// "name{labels}" exactly as exposed -> value; comments skipped.
inline std::map<std::string, double> parseMetricsText(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

}  // namespace hotshard::testing
