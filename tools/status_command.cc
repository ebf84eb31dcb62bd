// `hotshard status`: what the daemon is doing, for people or (--json) scripts.
#include <cstdio>

#include "base/units.h"
#include "tools/client.h"
#include "tools/commands.h"

namespace hotshard::cli {
namespace {

void printHuman(const json& s) {
  std::printf("hotshard %s (pid %d)\n", s.value("version", "?").c_str(), s.value("pid", 0));
  std::printf("  mount        %s%s\n", s.value("mount", "").c_str(),
              s.value("overmount", false) ? "  (over the remote)" : "");
  std::printf("  remote       %s\n", s.value("remote", "").c_str());
  std::printf("  cache        %s\n", s.value("cache_dir", "").c_str());
  if (s.contains("cache") && s["cache"].is_object()) {
    const json& c = s["cache"];
    std::printf("  cache fill   %s of %s, %llu objects, %llu promotions in flight\n",
                formatBytes(c.value("used_bytes", 0ull)).c_str(),
                formatBytes(c.value("capacity_bytes", 0ull)).c_str(),
                static_cast<unsigned long long>(c.value("objects", 0ull)),
                static_cast<unsigned long long>(c.value("promotions_in_flight", 0ull)));
  }
  std::printf("  consistency  %s\n", s.value("consistency", "").c_str());
  std::printf("  passthrough  %s  (%s)\n", s.value("passthrough", false) ? "yes" : "NO",
              s.value("passthrough_reason", "").c_str());
  if (s.contains("probes")) {
    const json& p = s["probes"];
    if (p.value("mode", "") == "bpf") {
      std::printf("  probes       bpf, %llu programs, %llu events, %llu lost updates\n",
                  static_cast<unsigned long long>(p.value("attached", 0ull)),
                  static_cast<unsigned long long>(p.value("events", 0ull)),
                  static_cast<unsigned long long>(p.value("lost_updates", 0ull)));
    } else {
      std::printf("  probes       DEGRADED (%s)\n", p.value("reason", "").c_str());
    }
  }
  if (s.contains("policy")) {
    std::printf("  policy       %s (placement %s)\n", s["policy"].value("spec", "").c_str(),
                s["placement"].value("automatic", false) ? "auto" : "manual");
  }
  if (s.contains("fuse")) {
    const json& f = s["fuse"];
    std::printf("  opens        %llu passthrough, %llu in user space; %llu from the cache, %llu "
                "from the remote\n",
                static_cast<unsigned long long>(f.value("opens_passthrough", 0ull)),
                static_cast<unsigned long long>(f.value("opens_userspace", 0ull)),
                static_cast<unsigned long long>(f.value("opens_cache", 0ull)),
                static_cast<unsigned long long>(f.value("opens_remote", 0ull)));
    if (f.contains("requests")) {
      std::printf("  requests    ");
      for (const auto& [name, n] : f["requests"].items()) {
        if (n.get<uint64_t>() > 0) {
          std::printf(" %s=%llu", name.c_str(), static_cast<unsigned long long>(n.get<uint64_t>()));
        }
      }
      std::printf("\n");
    }
  }
}

void printTopFive(const json& s) {
  if (!s.contains("top") || s["top"].empty()) return;
  std::printf("  hottest\n");
  for (const auto& sh : s["top"]) {
    std::printf("    %-9s %10s read  %s\n", sh.value("state", "").c_str(),
                formatBytes(sh.value("bytes_read", 0ull)).c_str(), sh.value("path", "").c_str());
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
    json s = callDaemon("status", *target, json{{"cmd", "status"}});
    s.erase("ok");
    if (target->json) {
      std::printf("%s\n", s.dump().c_str());
    } else {
      printHuman(s);
      printTopFive(s);
    }
  });
}

}  // namespace hotshard::cli
