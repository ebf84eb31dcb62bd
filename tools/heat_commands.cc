// Client commands on heat and placement: top, trace record, policy show|set.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <string>
#include <thread>

#include "base/paths.h"
#include "base/units.h"
#include "daemon/control_protocol.h"
#include "tools/client.h"
#include "tools/commands.h"
#include "tools/options.h"
#include "tools/terminal.h"

namespace hotshard::cli {
namespace {

unsigned long long count(const Opt<uint64_t>& v) { return v.value_or(0); }

// One line of at most `columns` characters.
void printLine(const std::string& line, size_t columns) {
  std::printf("%s\n", ellipsize(line, columns).c_str());
}

std::string format(const char* fmt, auto... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

// Every line fits `columns`: the path column takes what the others leave, cut at
// its front (a path's end tells shards apart), and so do the header lines.
void printTop(const TopReply& reply, bool clear, size_t columns) {
  const StatusSnapshot& st = reply.status;
  if (clear) std::printf("\033[H\033[2J");
  HeatStatus heat = st.heat.value_or(HeatStatus{});
  PlacementStatus placement = st.placement.value_or(PlacementStatus{});
  printLine(format("hotshard top  probes: %s  policy: %s  ticks: %llu  promotions: %llu  "
                   "evictions: %llu",
                   st.probes ? st.probes->mode.value_or("?").c_str() : "?",
                   st.policy ? st.policy->spec.value_or("?").c_str() : "?", count(placement.ticks),
                   count(placement.promotions), count(placement.evictions)),
            columns);
  printLine(format("read: remote %s (missed %s), cache %s; remote bytes avoided %s",
                   formatBytes(count(heat.bytes_read_remote)).c_str(),
                   formatBytes(count(heat.bytes_missed_remote)).c_str(),
                   formatBytes(count(heat.bytes_read_cache)).c_str(),
                   formatBytes(count(heat.remote_bytes_avoided)).c_str()),
            columns);
  std::printf("\n");
  // Cluster mode: an OWNER column, the member each shard's key belongs to.
  bool owners = std::any_of(reply.shards.begin(), reply.shards.end(),
                            [](const ShardRow& s) { return !s.owner.empty(); });
  const size_t fixed = owners ? 76 : 63;  // the columns before PATH
  size_t path_width = columns > fixed + 10 ? columns - fixed : 10;
  std::string owner_head = owners ? format(" %-12s", "OWNER") : "";
  printLine(format("%7s %10s %10s %11s %10s %-9s%s %s", "HEAT", "SIZE", "READ", "REMOTE-MISS",
                   "CACHE", "STATE", owner_head.c_str(), "PATH"),
            columns);
  for (const ShardRow& s : reply.shards) {
    std::string path =
        ellipsizeFront((s.pinned ? "[pinned] " : "") + quoteEscape(s.path), path_width);
    std::string heat = format("%.3g", s.heat);
    if (heat.size() > 7) heat = format("%.1e", s.heat);  // "2.5e+04": HEAT is 7 wide
    std::string owner = owners ? format(" %-12s", s.owner.empty() ? "-" : s.owner.c_str()) : "";
    printLine(format("%7s %10s %10s %11s %10s %-9s%s %s", heat.c_str(),
                     formatBytes(s.size).c_str(), formatBytes(s.bytes_read).c_str(),
                     formatBytes(s.remote_miss_bytes).c_str(), formatBytes(s.cache_bytes).c_str(),
                     s.state.c_str(), owner.c_str(), path.c_str()),
              columns);
  }
  std::fflush(stdout);
}

volatile std::sig_atomic_t g_stop = 0;

}  // namespace

void addTopCommand(CLI::App& app) {
  auto target = std::make_shared<DaemonTarget>();
  auto n = std::make_shared<size_t>(control::kTopDefaultCount);
  auto interval = std::make_shared<double>(2.0);
  auto iterations = std::make_shared<int>(0);
  auto* cmd = app.add_subcommand(
      "top", "Hottest shards: heat, bytes read, remote misses, state (q quits, space refreshes)");
  addTargetOptions(cmd, *target);
  cmd->add_option("-n,--count", *n, "How many shards (default: 20)");
  cmd->add_option("-d,--delay", *interval, "Time between refreshes, e.g. 500ms (default: 2s)")
      ->transform(durationUnits());
  cmd->add_option("--iterations", *iterations, "Stop after this many refreshes (default: never)");
  cmd->footer(
      "Examples:\n"
      "  hotshard top\n"
      "  hotshard top -n 50 --json | jq '.shards[] | select(.state == \"remote\")'");
  cmd->callback([=] {
    json req = control::request(control::kTop);
    req[control::kTopCount] = *n;
    if (target->json) {
      json reply = callDaemon(control::kTop, *target, req);
      reply.erase(control::kOk);
      std::printf("%s\n", toWire(reply).dump().c_str());
      return;
    }
    // q quits: stdin (when a terminal) in raw mode, restored on exit and on ^C.
    RawInput keys;
    std::signal(SIGINT, [](int) {
      RawInput::restoreTerminal();
      g_stop = 1;
    });
    bool tty = ::isatty(STDOUT_FILENO);
    for (int i = 0; !g_stop && (*iterations == 0 || i < *iterations); i++) {
      printTop(callDaemon(control::kTop, *target, req).get<TopReply>(), tty,
               terminalColumns(STDOUT_FILENO));
      if (*iterations != 0 && i + 1 >= *iterations) break;
      for (int k = 0; k < static_cast<int>(*interval * 10) && !g_stop; k++) {
        if (!keys.active()) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
          continue;
        }
        TopKey key = topKey(keys.readKey(100));
        if (key == TopKey::kQuit) g_stop = 1;
        if (key == TopKey::kRefresh) break;
      }
    }
  });
}

void addTraceCommand(CLI::App& app) {
  auto target = std::make_shared<DaemonTarget>();
  auto out = std::make_shared<std::string>();
  auto duration = std::make_shared<std::string>("60s");
  auto* trace = app.add_subcommand("trace", "Record what jobs read, for the policy simulator");
  trace->require_subcommand(1);
  trace->footer(
      "Examples:\n"
      "  hotshard trace record --out /tmp/epoch.trace --duration 10m\n"
      "  hotshard trace record --mount /mnt/datasets --out /tmp/t.trace --duration 30s --json\n"
      "Run 'hotshard trace record --help' for its options.");
  auto* rec = trace->add_subcommand("record", "Record the probes' per-chunk reads to a trace file");
  addTargetOptions(rec, *target);
  rec->add_option("--out", *out, "Trace file to write (hotshard's native format)")->required();
  rec->add_option("--duration", *duration, "How long to record, e.g. 30s or 5m (default: 60s)");
  rec->footer(
      "Examples:\n"
      "  hotshard trace record --out /tmp/epoch.trace --duration 10m\n"
      "  hotshard policy simulate --trace /tmp/epoch.trace --capacity 10% --policy hotshard,lru");
  rec->callback([=] {
    auto secs = parseDurationSeconds(*duration);
    if (!secs.ok()) throw CLI::ValidationError("--duration", secs.error().message);
    std::string path = normalPath(*out);
    DaemonTarget t = *target;
    json req = control::request(control::kTraceRecord);
    req[control::kOut] = path;
    req[control::kDuration] = *secs;
    json reply =
        callDaemon("trace record", t, req, nullptr, static_cast<int>(*secs * 1000) + 30000);
    reply.erase(control::kOk);
    if (target->json) {
      std::printf("%s\n", toWire(reply).dump().c_str());
    } else {
      std::printf("recorded %llu records to %s\n",
                  static_cast<unsigned long long>(reply.value(control::kRecords, 0ull)),
                  path.c_str());
    }
  });
}

void addPolicyLiveCommands(CLI::App* policy) {
  auto target = std::make_shared<DaemonTarget>();
  auto* show = policy->add_subcommand("show", "Show the running daemon's policy and parameters");
  addTargetOptions(show, *target);
  show->footer("Examples:\n  hotshard policy show\n  hotshard policy show --json");
  show->callback([target] {
    json reply = callDaemon("policy show", *target, control::request(control::kPolicyShow));
    reply.erase(control::kOk);
    if (target->json) {
      std::printf("%s\n", toWire(reply).dump().c_str());
      return;
    }
    auto policy = reply.get<PolicyStatus>();
    std::printf("policy %s\n", policy.spec.value_or("").c_str());
    for (const auto& [k, v] : policy.params.value_or(std::map<std::string, std::string>{})) {
      std::printf("  %-20s %s\n", k.c_str(), v.c_str());
    }
    std::printf("available: ");
    for (const auto& a : policy.available.value_or(std::vector<std::string>{})) {
      std::printf("%s ", a.c_str());
    }
    std::printf("\n");
  });

  auto set_target = std::make_shared<DaemonTarget>();
  auto name = std::make_shared<std::string>();
  auto params = std::make_shared<std::vector<std::string>>();
  auto* set = policy->add_subcommand(
      "set", "Change the running daemon's policy or its parameters; cached data stays");
  set->add_option("name", *name, "Policy name (see 'hotshard policy list')")->required();
  set->add_option("params", *params, "Parameters as k=v");
  addTargetOptions(set, *set_target);
  set->footer(
      "Examples:\n"
      "  hotshard policy set hotshard margin=3\n"
      "  hotshard policy set lfu half_life=60");
  set->callback([=] {
    std::string spec = *name;
    for (const auto& p : *params) spec += ";" + p;
    json req = control::request(control::kPolicySet);
    req[control::kSpec] = spec;
    json reply = callDaemon("policy set", *set_target, req);
    reply.erase(control::kOk);
    if (set_target->json) {
      std::printf("%s\n", toWire(reply).dump().c_str());
    } else {
      auto policy = reply.get<PolicyStatus>();
      std::printf("policy now %s (%llu cached objects kept)\n", policy.spec.value_or("").c_str(),
                  count(policy.residents));
    }
  });
}

}  // namespace hotshard::cli
