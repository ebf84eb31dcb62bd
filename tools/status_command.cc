// `hotshard status`: what the daemon is doing, for people or (--json) scripts.
#include <cstdio>
#include <ctime>
#include <string>

#include "base/units.h"
#include "daemon/control_protocol.h"
#include "tools/client.h"
#include "tools/commands.h"
#include "tools/terminal.h"

namespace hotshard::cli {
namespace {

unsigned long long count(const Opt<uint64_t>& v) { return v.value_or(0); }

// Unix seconds as "2026-11-29 12:59:01 UTC".
std::string formatUtc(uint64_t unix_s) {
  time_t t = static_cast<time_t>(unix_s);
  struct tm tm {};
  char buf[40];
  if (::gmtime_r(&t, &tm) == nullptr || std::strftime(buf, sizeof buf, "%F %T UTC", &tm) == 0)
    return std::to_string(unix_s);
  return buf;
}

void printIdentity(const StatusSnapshot& s) {
  std::printf("hotshard %s (pid %d)\n", s.version.value_or("?").c_str(),
              static_cast<int>(s.pid.value_or(0)));
  if (const auto& sup = s.supervisor) {
    std::printf("  supervisor   pid %lld, %llu takeovers%s%s\n",
                static_cast<long long>(sup->pid.value_or(0)), count(sup->takeovers),
                sup->last_takeover.value_or("").empty() ? "" : "; the last: ",
                sup->last_takeover.value_or("").c_str());
  } else {
    std::printf("  supervisor   none (--no-supervisor: a crash ends the mount)\n");
  }
  std::printf("  mount        %s%s\n", s.mount.value_or("").c_str(),
              s.overmount.value_or(false) ? "  (over the remote)" : "");
  std::printf("  remote       %s\n", s.remote.value_or("").c_str());
  std::printf("  cache        %s\n", s.cache_dir.value_or("").c_str());
  if (const auto& c = s.cache) {
    std::printf("  cache fill   %s of %s, %llu objects, %llu promotions in flight\n",
                formatBytes(c->used_bytes.value_or(0)).c_str(),
                formatBytes(c->capacity_bytes.value_or(0)).c_str(), count(c->objects),
                count(c->promotions_in_flight));
    if (c->disk_healthy && !*c->disk_healthy) {
      std::printf("  cache disk   FAILED (%s, since %s); opens go to the remote, promotions paused\n",
                  c->disk_error.value_or("?").c_str(),
                  formatUtc(c->disk_since.value_or(0)).c_str());
    } else if (c->disk_healthy) {
      std::printf("  cache disk   ok\n");
    }
    if (const auto& p = c->promoter) {
      std::printf("  promotions   %llu published; read %s from the page cache, %s from the remote\n",
                  count(p->published), formatBytes(p->read_page_cache_bytes.value_or(0)).c_str(),
                  formatBytes(p->read_remote_bytes.value_or(0)).c_str());
    }
  }
  std::printf("  consistency  %s\n", s.consistency.value_or("").c_str());
  std::printf("  passthrough  %s  (%s)\n", s.passthrough.value_or(false) ? "yes" : "NO",
              s.passthrough_reason.value_or("").c_str());
}

void printProbesAndPolicy(const StatusSnapshot& s) {
  if (const auto& p = s.probes) {
    if (p->mode == "bpf") {
      std::printf("  probes       bpf, %llu programs, %llu events, %llu lost updates\n",
                  count(p->attached), count(p->events), count(p->lost_updates));
    } else {
      std::printf("  probes       DEGRADED (%s)\n", p->reason.value_or("").c_str());
    }
  }
  if (s.policy) {
    bool automatic = s.placement && s.placement->automatic.value_or(false);
    std::printf("  policy       %s (placement %s)\n", s.policy->spec.value_or("").c_str(),
                automatic ? "auto" : "manual");
  }
}

void printFuse(const StatusSnapshot& s) {
  if (!s.fuse) return;
  const FuseStatus& f = *s.fuse;
  std::printf(
      "  opens        %llu passthrough, %llu in user space; %llu from the cache, %llu "
      "from the remote\n",
      count(f.opens_passthrough), count(f.opens_userspace), count(f.opens_cache),
      count(f.opens_remote));
  std::string requests;
  for (const auto& [name, n] : f.requests.value_or(std::map<std::string, uint64_t>{})) {
    if (n > 0) requests += " " + name + "=" + std::to_string(n);
  }
  if (!requests.empty()) std::printf("  requests    %s\n", requests.c_str());  // none when idle
}

// The peer tier: connected or alone (and why), members, bytes from peers.
void printCluster(const StatusSnapshot& s) {
  if (!s.cluster) return;
  const ClusterStatus& c = *s.cluster;
  bool connected = c.connected.value_or(false);
  std::printf("  cluster      %s, namespace %s, member %s at %s: %s\n", c.name.value_or("?").c_str(),
              c.ns.value_or("?").c_str(), c.id.value_or("?").c_str(),
              c.address.value_or("?").c_str(),
              connected ? "connected"
                        : ("ALONE (" + c.alone_reason.value_or("etcd not reached") + ")").c_str());
  for (const MemberStatus& m : c.members.value_or(std::vector<MemberStatus>{})) {
    std::string transports;
    for (const auto& t : m.transports.value_or(std::vector<std::string>{})) {
      transports += (transports.empty() ? "" : ",") + t;
    }
    std::printf("    member     %-16s %-22s %-9s %s cache%s\n", m.id.value_or("?").c_str(),
                m.address.value_or("?").c_str(), transports.c_str(),
                formatBytes(m.capacity_bytes.value_or(0)).c_str(),
                m.self.value_or(false) ? "  (this host)" : "");
  }
  uint64_t remote = 0;
  if (s.cache && s.cache->promoter) remote += s.cache->promoter->read_remote_bytes.value_or(0);
  if (s.heat) remote += s.heat->bytes_missed_remote.value_or(0);
  uint64_t failures = 0;
  std::string reasons;
  for (const auto& [reason, n] : c.fetch_failures.value_or(std::map<std::string, uint64_t>{})) {
    failures += n;
    reasons += (reasons.empty() ? " (" : ", ") + reason + " " + std::to_string(n);
  }
  if (!reasons.empty()) reasons += ")";
  std::printf("  peer bytes   %s from peers, %s from the remote; %s served to peers\n",
              formatBytes(c.fetched_bytes.value_or(0)).c_str(), formatBytes(remote).c_str(),
              formatBytes(c.served_bytes.value_or(0)).c_str());
  std::printf("  peer fetch   %llu failed%s, %llu refused connections\n",
              static_cast<unsigned long long>(failures), reasons.c_str(), count(c.refused));
}

void printTopFive(const StatusSnapshot& s) {
  if (!s.top || s.top->empty()) return;
  std::printf("  hottest\n");
  for (const ShardRow& sh : *s.top) {
    std::printf("    %-9s %10s read  %s\n", sh.state.c_str(), formatBytes(sh.bytes_read).c_str(),
                quoteEscape(sh.path).c_str());
  }
}

}  // namespace

void addStatusCommand(CLI::App& app) {
  auto target = std::make_shared<DaemonTarget>();
  auto* cmd = app.add_subcommand("status", "Show what a running hotshard daemon is doing");
  addTargetOptions(cmd, *target);
  cmd->footer(
      "Examples:\n"
      "  hotshard status\n"
      "  hotshard status --mount /mnt/datasets --json | jq .passthrough");
  cmd->callback([target] {
    json reply = callDaemon(control::kStatus, *target, control::request(control::kStatus));
    reply.erase(control::kOk);
    if (target->json) {
      std::printf("%s\n", toWire(reply).dump().c_str());
      return;
    }
    auto s = reply.get<StatusSnapshot>();
    printIdentity(s);
    printProbesAndPolicy(s);
    printFuse(s);
    printCluster(s);
    printTopFive(s);
  });
}

}  // namespace hotshard::cli
