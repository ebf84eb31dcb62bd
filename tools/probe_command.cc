// `hotshard probe`: a debug command that loads the heat probes on its own (no
// daemon), watches the file systems of the given paths for a while and prints
// what it counted per (dev, ino, chunk) and per cgroup. For tests, benchmarks
// and checking a host before running the daemon on it.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <tuple>

#include "base/units.h"
#include "bpf/heat_probes.h"
#include "tools/commands.h"

namespace hotshard::cli {
namespace {

using namespace ::hotshard::bpf;

volatile std::sig_atomic_t stop_requested = 0;

struct ProbeArgs {
  std::vector<std::string> paths;
  std::string duration = "5s";
  std::string interval = "1s";
  std::string chunk = "16MiB";
  uint32_t sample_rate = 0;
  std::string kind;
  bool no_cgroups = false;
  bool only_files = false;
  bool verbose = false;
  bool json = false;
};

// What the arguments say, checked: durations, the chunk size, the devices to
// watch and the regular files named (--only-files keeps only those).
struct ProbeTargets {
  Duration duration{};
  Duration interval{};
  uint64_t chunk_bytes = 0;
  std::set<dev_t> devices;
  std::set<std::pair<dev_t, uint64_t>> files;
};

// What was counted, summed over drains.
struct ProbeCounts {
  std::map<std::tuple<dev_t, uint64_t, uint64_t>, ChunkDelta> chunks;
  std::map<uint64_t, CgroupTotals> cgroups;
  uint64_t samples = 0;
  double seconds = 0;
};

Result<ProbeTargets> probeTargets(const ProbeArgs& args) {
  auto duration = parseDuration(args.duration);
  auto interval = parseDuration(args.interval);
  auto chunk = parseSize(args.chunk);
  if (!duration.ok()) return duration.takeError();
  if (!interval.ok() || interval->count() <= 0)
    return makeError(Errc::kInvalidArgument, "bad --interval '" + args.interval + "'");
  if (!chunk.ok()) return chunk.takeError();
  ProbeTargets t{.duration = *duration, .interval = *interval, .chunk_bytes = *chunk};
  for (const auto& path : args.paths) {
    struct stat st;
    if (stat(path.c_str(), &st) != 0) return lastSysError("stat " + path);
    t.devices.insert(st.st_dev);
    if (S_ISREG(st.st_mode)) t.files.insert({st.st_dev, st.st_ino});
  }
  return t;
}

Result<ProbeOptions> probeOptions(const ProbeArgs& args, uint64_t chunk_bytes) {
  ProbeOptions options{.chunk_bytes = chunk_bytes,
                       .sample_rate = args.sample_rate,
                       .cgroup_totals = !args.no_cgroups};
  if (args.kind.empty()) return options;
  options.kinds.clear();
  for (ProgramKind k : {ProgramKind::kTpBtf, ProgramKind::kRawTp, ProgramKind::kTracepoint})
    if (args.kind == programKindName(k)) options.kinds.push_back(k);
  if (options.kinds.empty())
    return makeError(Errc::kInvalidArgument,
                     "bad --kind '" + args.kind + "' (tp_btf, raw_tp or tracepoint)");
  return options;
}

// One drain of the chunk and cgroup counters, added to `counts`.
Status drainInto(HeatProbes& probes, const ProbeArgs& args, const ProbeTargets& targets,
                 ProbeCounts& counts) {
  ASSIGN_OR_RETURN(auto deltas, probes.drain());
  for (const auto& d : deltas) {
    if (args.only_files && !targets.files.count({d.dev, d.ino})) continue;
    auto [it, fresh] = counts.chunks.try_emplace({d.dev, d.ino, d.chunk}, d);
    if (fresh) continue;
    auto& c = it->second;
    c.bytes_requested += d.bytes_requested;
    c.bytes_missed += d.bytes_missed;
    c.mmap_faults += d.mmap_faults;
    c.first_ns = std::min(c.first_ns, d.first_ns);
    c.last_ns = std::max(c.last_ns, d.last_ns);
  }
  ASSIGN_OR_RETURN(auto totals, probes.drainCgroups());
  for (const auto& t : totals) {
    auto [it, fresh] = counts.cgroups.try_emplace(t.cgroup_id, t);
    if (fresh) continue;
    it->second.bytes_requested += t.bytes_requested;
    it->second.bytes_missed += t.bytes_missed;
  }
  return Ok{};
}

// Until the duration is over or a signal asks to stop: count samples (when
// sampling) or sleep, and drain every interval; then a last drain.
Status watch(HeatProbes& probes, const ProbeArgs& args, const ProbeTargets& targets,
             ProbeCounts& counts) {
  using Clock = std::chrono::steady_clock;
  auto start = Clock::now();
  auto deadline = start + targets.duration;
  while (!stop_requested && Clock::now() < deadline) {
    auto next = std::min(deadline, Clock::now() + targets.interval);
    if (args.sample_rate > 0) {
      while (!stop_requested && Clock::now() < next)
        RETURN_IF_ERROR(probes.pollSamples(100, [&](const SampleEvent&) { ++counts.samples; }));
    } else {
      while (!stop_requested && Clock::now() < next)
        std::this_thread::sleep_for(
            std::min<Clock::duration>(next - Clock::now(), std::chrono::milliseconds(100)));
    }
    RETURN_IF_ERROR(drainInto(probes, args, targets, counts));
  }
  RETURN_IF_ERROR(drainInto(probes, args, targets, counts));
  counts.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  return Ok{};
}

void printProbeJson(const ProbeCounts& counts, const ProbeHealth& h, uint64_t chunk_bytes) {
  const double seconds = counts.seconds;
  nlohmann::json out;
  out["seconds"] = seconds;
  out["chunk_bytes"] = chunk_bytes;
  out["attached"] = nlohmann::json::array();
  for (const auto& a : h.attached)
    out["attached"].push_back({{"tracepoint", a.tracepoint}, {"kind", programKindName(a.kind)}});
  out["skipped"] = h.skipped;
  out["health"] = {{"events", h.events},
                   {"events_per_second", seconds > 0 ? h.events / seconds : 0},
                   {"chunk_inserts", h.chunk_inserts},
                   {"lost_updates", h.lost_updates},
                   {"cgroup_lost_updates", h.cgroup_lost_updates},
                   {"continued_reads", h.continued_reads},
                   {"samples", counts.samples},
                   {"samples_dropped", h.samples_dropped},
                   {"evicted_estimate", h.evicted_estimate},
                   {"batch_ops", h.batch_ops}};
  out["chunks"] = nlohmann::json::array();
  for (const auto& [_, c] : counts.chunks)
    out["chunks"].push_back({{"dev", devName(c.dev)},
                             {"ino", c.ino},
                             {"chunk", c.chunk},
                             {"bytes_requested", c.bytes_requested},
                             {"bytes_missed", c.bytes_missed},
                             {"mmap_faults", c.mmap_faults},
                             {"first_ns", c.first_ns},
                             {"last_ns", c.last_ns}});
  out["cgroups"] = nlohmann::json::array();
  for (const auto& [_, t] : counts.cgroups)
    out["cgroups"].push_back({{"cgroup_id", t.cgroup_id},
                              {"path", t.path},
                              {"bytes_requested", t.bytes_requested},
                              {"bytes_missed", t.bytes_missed}});
  std::printf("%s\n", out.dump(2).c_str());
}

void printProbeText(const ProbeCounts& counts, const ProbeHealth& h) {
  std::printf("%zu tracepoint(s) as %s; %lu events in %.1fs, %lu lost, %lu evicted (estimate)\n",
              h.attached.size(), h.attached.empty() ? "-" : programKindName(h.attached[0].kind),
              static_cast<unsigned long>(h.events), counts.seconds,
              static_cast<unsigned long>(h.lost_updates),
              static_cast<unsigned long>(h.evicted_estimate));
  for (const auto& s : h.skipped) std::printf("skipped %s\n", s.c_str());
  std::printf("%-9s %12s %8s %14s %14s %10s\n", "DEV", "INO", "CHUNK", "REQUESTED", "MISSED",
              "FAULTS");
  for (const auto& [_, c] : counts.chunks)
    std::printf("%-9s %12lu %8lu %14lu %14lu %10lu\n", devName(c.dev).c_str(),
                static_cast<unsigned long>(c.ino), static_cast<unsigned long>(c.chunk),
                static_cast<unsigned long>(c.bytes_requested),
                static_cast<unsigned long>(c.bytes_missed),
                static_cast<unsigned long>(c.mmap_faults));
  for (const auto& [_, t] : counts.cgroups)
    std::printf("cgroup %lu %s: requested %lu missed %lu\n",
                static_cast<unsigned long>(t.cgroup_id), t.path.empty() ? "?" : t.path.c_str(),
                static_cast<unsigned long>(t.bytes_requested),
                static_cast<unsigned long>(t.bytes_missed));
}

// Check the arguments, load the probes, watch, print.
Status probeAndPrint(const ProbeArgs& args) {
  ASSIGN_OR_RETURN(ProbeTargets targets, probeTargets(args));
  if (args.json) spdlog::set_level(spdlog::level::warn);
  if (args.verbose) spdlog::set_level(spdlog::level::debug);  // libbpf's messages too
  ASSIGN_OR_RETURN(ProbeOptions options, probeOptions(args, targets.chunk_bytes));
  ASSIGN_OR_RETURN(auto probes, HeatProbes::load(options));
  for (dev_t dev : targets.devices) RETURN_IF_ERROR(probes->watchDevice(dev));

  std::signal(SIGINT, [](int) { stop_requested = 1; });
  std::signal(SIGTERM, [](int) { stop_requested = 1; });
  ProbeCounts counts;
  RETURN_IF_ERROR(watch(*probes, args, targets, counts));
  ProbeHealth h = probes->health();
  if (args.json)
    printProbeJson(counts, h, targets.chunk_bytes);
  else
    printProbeText(counts, h);
  return Ok{};
}

int runProbe(const ProbeArgs& args) {
  Status done = probeAndPrint(args);
  if (done.ok()) return cli::kExitOk;
  if (args.json)
    std::printf("%s\n", nlohmann::json{{"error", done.error().message}}.dump().c_str());
  else
    std::fprintf(stderr, "hotshard probe: %s\n", done.error().message.c_str());
  return cli::kExitFailure;
}

}  // namespace

void addProbeCommand(CLI::App& app) {
  auto args = std::make_shared<ProbeArgs>();
  auto* cmd = app.add_subcommand(
      "probe", "Load the heat probes alone and show what they count (needs root)");
  cmd->add_option("--path,-p", args->paths, "Watch the file system holding PATH (repeatable)")
      ->required();
  cmd->add_option("--duration,-d", args->duration, "How long to watch (ms, s, m, h)")
      ->capture_default_str();
  cmd->add_option("--interval", args->interval, "Drain the kernel maps this often")
      ->capture_default_str();
  cmd->add_option("--chunk", args->chunk, "Chunk size, a power of two (KiB, MiB, GiB)")
      ->capture_default_str();
  cmd->add_option("--sample-rate", args->sample_rate,
                  "Also count 1 in N events through the ring buffer");
  cmd->add_option("--kind", args->kind, "Attach only as this kind: tp_btf, raw_tp or tracepoint");
  cmd->add_flag("--no-cgroups", args->no_cgroups,
                "Do not count per-cgroup totals (cheaper events)");
  cmd->add_flag("--only-files", args->only_files, "Show only the regular files named by --path");
  cmd->add_flag("--verbose,-v", args->verbose, "Log libbpf's messages (why a load failed)");
  cmd->add_flag("--json", args->json, "Print JSON");
  cmd->footer(
      "Examples:\n"
      "  hotshard probe --path /mnt/datasets --duration 10s\n"
      "  hotshard probe --path /var/tmp/shard.bin --only-files --chunk 4MiB --json");
  cmd->callback([args] {
    int rc = runProbe(*args);
    if (rc != cli::kExitOk) throw CLI::RuntimeError(rc);
  });
}

}  // namespace hotshard::cli
