// `hotshard status`: what the daemon is doing, for people or (--json) scripts.
#include <cstdio>
#include <ctime>
#include <string>

#include "base/units.h"
#include "daemon/control_protocol.h"
#include "tools/client.h"
#include "tools/commands.h"

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

void printTopFive(const StatusSnapshot& s) {
  if (!s.top || s.top->empty()) return;
  std::printf("  hottest\n");
  for (const ShardRow& sh : *s.top) {
    std::printf("    %-9s %10s read  %s\n", sh.state.c_str(), formatBytes(sh.bytes_read).c_str(),
                sh.path.c_str());
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
      std::printf("%s\n", reply.dump().c_str());
      return;
    }
    auto s = reply.get<StatusSnapshot>();
    printIdentity(s);
    printProbesAndPolicy(s);
    printFuse(s);
    printTopFive(s);
  });
}

}  // namespace hotshard::cli
