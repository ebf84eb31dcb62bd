// `hotshard policy ...`: offline tools over policy/: simulate policies on a trace
// (OPT beside them), generate synthetic traces, list policies and their parameters.
// Live `policy show|set` belong to the daemon's control socket.
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/units.h"
#include "policy/generate.h"
#include "policy/params.h"
#include "policy/registry.h"
#include "policy/simulator.h"
#include "policy/trace.h"
#include "tools/commands.h"

namespace hotshard::cli {
namespace {

using namespace hotshard::policy;

[[noreturn]] void fail(const std::string& command, const std::string& message,
                       int code = kExitFailure) {
  std::fprintf(stderr, "hotshard policy %s: %s\n", command.c_str(), message.c_str());
  throw CLI::RuntimeError(code);
}

std::vector<std::string> splitList(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto pos = text.find(sep, start);
    std::string part =
        text.substr(start, pos == std::string::npos ? std::string::npos : pos - start);
    if (!part.empty()) out.push_back(part);
    if (pos == std::string::npos) break;
    start = pos + 1;
  }
  return out;
}

// --format, or guessed from the file: native magic, then the extension.
TraceFormat traceFormatOf(const std::string& command, const std::string& path,
                          const std::string& format) {
  if (!format.empty()) {
    auto f = parseTraceFormat(format);
    if (!f) fail(command, f.error().message, kExitUsage);
    return *f;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(command, "cannot open trace " + path + ": " + std::strerror(errno));
  char magic[sizeof kNativeMagic] = {};
  in.read(magic, sizeof magic);
  if (in.gcount() == sizeof magic && std::memcmp(magic, kNativeMagic, sizeof magic) == 0)
    return TraceFormat::kNative;
  if (path.ends_with(".csv")) return TraceFormat::kCsv;
  if (path.find("oracleGeneral") != std::string::npos) return TraceFormat::kOracleGeneral;
  fail(command, "cannot tell the format of " + path + ": pass --format native|csv|oracleGeneral",
       kExitUsage);
}

// --format for a file to write, or csv for *.csv, else native.
TraceFormat outputFormatOf(const std::string& command, const std::string& path,
                           const std::string& format) {
  if (format.empty()) return path.ends_with(".csv") ? TraceFormat::kCsv : TraceFormat::kNative;
  auto f = parseTraceFormat(format);
  if (!f) fail(command, f.error().message, kExitUsage);
  return *f;
}

struct SimulateOptions {
  std::string trace;
  std::string format;
  std::string capacity;
  std::string policies = "hotshard,lru,lfu,arc,s3fifo,sieve";
  std::vector<std::string> params;  // NAME:k=v
  std::string sweep;                // k=a..b:step
  bool json = false;
  bool no_opt = false;
  bool timing = false;
  bool instant = false;
  std::string promote_rate = "1GiB";  // per second
  unsigned promote_concurrency = 2;
  std::uint64_t windows = 0;
};

// The cost model: charged unless --instant; windows of equal read counts.
SimOptions simOptions(const SimulateOptions& o, const TraceStats& stats) {
  const std::string cmd = "simulate";
  SimOptions options{.instant = o.instant, .promote_concurrency = o.promote_concurrency};
  auto rate = parseSize(o.promote_rate);
  if (!rate || *rate == 0) fail(cmd, "--promote-rate: need bytes per second > 0", kExitUsage);
  options.promote_rate = static_cast<double>(*rate);
  if (o.promote_concurrency == 0) fail(cmd, "--promote-concurrency: must be > 0", kExitUsage);
  if (o.windows > 0) options.window_requests = (stats.requests + o.windows - 1) / o.windows;
  return options;
}

// --param NAME:k=v entries added to the specs of policy NAME.
void addParams(const std::string& cmd, const std::vector<std::string>& params,
               std::vector<PolicySpec>& specs) {
  for (const auto& p : params) {
    auto colon = p.find(':');
    if (colon == std::string::npos)
      fail(cmd, "--param wants NAME:k=v, got '" + p + "'", kExitUsage);
    auto kv = parseKeyValue(p.substr(colon + 1));
    if (!kv) fail(cmd, "--param " + p + ": " + kv.error().message, kExitUsage);
    bool used = false;
    for (auto& s : specs) {
      if (s.name == p.substr(0, colon)) s.params.push_back(*kv), used = true;
    }
    if (!used)
      fail(cmd, "--param " + p + ": no policy '" + p.substr(0, colon) + "' in --policy",
           kExitUsage);
  }
}

bool acceptsParam(const PolicySpec& spec, const std::string& key) {
  bool accepts = false;
  for (const auto& info : listPolicies()) {
    for (const auto& doc : info.params)
      accepts |= info.name == spec.name && doc.starts_with(key + " ");
  }
  return accepts;
}

// --sweep k=a..b:step: each spec whose policy has parameter k, once per value.
std::vector<PolicySpec> expandSweep(const std::string& cmd, const std::string& sweep,
                                    const std::vector<PolicySpec>& specs) {
  auto kv = parseKeyValue(sweep);
  auto dots = kv ? kv->value.find("..") : std::string::npos;
  auto colon = kv ? kv->value.find(':') : std::string::npos;
  if (!kv || dots == std::string::npos || colon == std::string::npos || colon < dots) {
    fail(cmd, "--sweep wants k=a..b:step, got '" + sweep + "'", kExitUsage);
  }
  auto from = parseDouble(kv->value.substr(0, dots));
  auto to = parseDouble(kv->value.substr(dots + 2, colon - dots - 2));
  auto step = parseDouble(kv->value.substr(colon + 1));
  if (!from || !to || !step || *step <= 0 || *to < *from) {
    fail(cmd, "--sweep " + sweep + ": need numbers a <= b and step > 0", kExitUsage);
  }
  std::vector<PolicySpec> swept;
  for (const auto& s : specs) {
    if (!acceptsParam(s, kv->key)) {
      swept.push_back(s);
      continue;
    }
    for (int i = 0;; ++i) {
      // Rounded so that 0.1 steps print as 0.3, not 0.30000000000000004.
      double v = std::round((*from + i * *step) * 1e9) / 1e9;
      if (v > *to + *step * 1e-9) break;
      PolicySpec variant = s;
      variant.params.push_back({kv->key, formatDouble(v)});
      swept.push_back(variant);
    }
  }
  if (swept.size() == specs.size())
    fail(cmd, "--sweep: no policy in --policy has parameter " + kv->key, kExitUsage);
  return swept;
}

// The policy specs to run: --policy entries, --param added, --sweep expanded.
std::vector<PolicySpec> policySpecs(const SimulateOptions& o) {
  const std::string cmd = "simulate";
  std::vector<PolicySpec> specs;
  for (const auto& item : splitList(o.policies, ',')) {
    auto spec = parsePolicySpec(item);
    if (!spec) fail(cmd, spec.error().message, kExitUsage);
    specs.push_back(*spec);
  }
  if (specs.empty()) fail(cmd, "--policy names no policy", kExitUsage);
  addParams(cmd, o.params, specs);
  if (o.sweep.empty()) return specs;
  return expandSweep(cmd, o.sweep, specs);
}

std::string label(const PolicySpec& spec) {
  std::string out = spec.name;
  for (const auto& kv : spec.params) out += ";" + kv.key + "=" + kv.value;
  return out;
}

struct SimRow {
  std::string label;
  SimResult result;
  double seconds;      // wall clock
  double cpu_seconds;  // this process's CPU time: fairer on a shared machine
};

// --capacity, a size or a percentage of the trace's working set.
std::uint64_t simulateCapacity(const SimulateOptions& o, const TraceStats& stats) {
  const std::string cmd = "simulate";
  auto capacity = parseSize(o.capacity, stats.working_set_bytes);
  if (!capacity) fail(cmd, "--capacity: " + capacity.error().message, kExitUsage);
  if (*capacity == 0) fail(cmd, "--capacity: must be more than 0 bytes", kExitUsage);
  return *capacity;
}

// Each spec from the start of the trace, timed.
std::vector<SimRow> simulatePolicies(TraceReader& reader, const std::vector<PolicySpec>& specs,
                                     std::uint64_t capacity, const SimOptions& options) {
  const std::string cmd = "simulate";
  std::vector<SimRow> rows;
  for (const auto& spec : specs) {
    auto policy = createPolicy(spec, capacity);
    if (!policy) fail(cmd, policy.error().message, kExitUsage);
    if (auto st = reader.rewind(); !st) fail(cmd, st.error().message);
    auto start = std::chrono::steady_clock::now();
    std::clock_t cpu_start = std::clock();
    auto result = simulate(reader, **policy, options);
    double cpu = double(std::clock() - cpu_start) / CLOCKS_PER_SEC;
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - start;
    if (!result) fail(cmd, result.error().message);
    rows.push_back({label(spec), *result, took.count(), cpu});
  }
  return rows;
}

// Per window: reads, hit ratio, byte hit ratio.
nlohmann::json windowsJson(const SimResult& r) {
  auto out = nlohmann::json::array();
  for (const auto& w : r.windows) {
    out.push_back({{"requests", w.requests},
                   {"hit_ratio", w.requests ? double(w.hits) / double(w.requests) : 0.0},
                   {"byte_hit_ratio", w.byteHitRatio()}});
  }
  return out;
}

void printSimulateJson(const SimulateOptions& o, const std::vector<SimRow>& rows,
                       const std::optional<SimResult>& opt, std::uint64_t capacity,
                       const TraceStats& stats) {
  nlohmann::json out;
  out["results"] = nlohmann::json::array();
  for (const auto& row : rows) {
    nlohmann::json r = {{"policy", row.label},
                        {"params", row.result.policy},
                        {"hit_ratio", row.result.hitRatio()},
                        {"byte_hit_ratio", row.result.byteHitRatio()},
                        {"promoted_bytes", row.result.promoted_bytes},
                        {"nvme_bytes_written", row.result.promoted_bytes},
                        {"remote_bytes", row.result.remote_bytes},
                        {"misses_during_copy", row.result.misses_during_copy},
                        {"windows", windowsJson(row.result)},
                        {"promotions", row.result.promotions},
                        {"evictions", row.result.evictions},
                        {"requests", row.result.requests},
                        {"hits", row.result.hits}};
    if (o.timing) {
      r["requests_per_second"] = double(row.result.requests) / row.seconds;
      r["requests_per_cpu_second"] = double(row.result.requests) / row.cpu_seconds;
    }
    out["results"].push_back(r);
  }
  if (opt) {
    out["opt"] = {
        {"hit_ratio", opt->hitRatio()},          {"byte_hit_ratio", opt->byteHitRatio()},
        {"promoted_bytes", opt->promoted_bytes}, {"nvme_bytes_written", opt->promoted_bytes},
        {"remote_bytes", opt->remote_bytes},     {"windows", windowsJson(*opt)}};
  } else {
    out["opt"] = nullptr;
  }
  out["model"] = o.instant ? "instant" : "charged";
  out["capacity_bytes"] = capacity;
  out["working_set_bytes"] = stats.working_set_bytes;
  out["requests"] = stats.requests;
  out["unique_objects"] = stats.unique_objects;
  out["bytes_read"] = stats.bytes_read;
  out["first_read_bytes"] = stats.first_read_bytes;
  std::cout << out.dump(2) << "\n";
}

// --windows: byte hit ratio per window of reads, one line per policy.
void printWindows(const std::vector<SimRow>& rows, const std::optional<SimResult>& opt) {
  auto line = [](const std::string& label, const SimResult& r) {
    std::printf("%-32s", label.c_str());
    for (const auto& w : r.windows) std::printf(" %.3f", w.byteHitRatio());
    std::printf("\n");
  };
  std::printf("\nbyte hit ratio per window of %llu reads:\n",
              (unsigned long long)(rows.empty() || rows[0].result.windows.empty()
                                       ? 0
                                       : rows[0].result.windows[0].requests));
  for (const auto& row : rows) line(row.label, row.result);
  if (opt) line("opt", *opt);
}

void printSimulateTable(const SimulateOptions& o, TraceFormat format,
                        const std::vector<SimRow>& rows, const std::optional<SimResult>& opt,
                        std::uint64_t capacity, const TraceStats& stats) {
  std::printf("trace     %s (%s): %llu requests, %llu objects, working set %s, %s read\n",
              o.trace.c_str(), std::string(traceFormatName(format)).c_str(),
              (unsigned long long)stats.requests, (unsigned long long)stats.unique_objects,
              formatBytes(stats.working_set_bytes).c_str(), formatBytes(stats.bytes_read).c_str());
  std::printf("capacity  %s (%.1f%% of the working set read)\n", formatBytes(capacity).c_str(),
              100.0 * double(capacity) / double(stats.working_set_bytes));
  std::printf("model     %s\n\n", o.instant ? "instant (promotions free and immediate)"
                                            : ("charged (copies at " + o.promote_rate + "/s, " +
                                               std::to_string(o.promote_concurrency) + " at once)")
                                                  .c_str());
  std::printf("%-32s %9s %9s %12s %12s %10s%s\n", "policy", "hit", "byte hit", "remote",
              "NVMe written", "evictions", o.timing ? "    Mreq/s  cpu Mreq/s" : "");
  for (const auto& row : rows) {
    std::printf("%-32s %9.4f %9.4f %12s %12s %10llu", row.label.c_str(), row.result.hitRatio(),
                row.result.byteHitRatio(), formatBytes(row.result.remote_bytes).c_str(),
                formatBytes(row.result.promoted_bytes).c_str(),
                (unsigned long long)row.result.evictions);
    if (o.timing) {
      std::printf(" %9.2f %11.2f", double(row.result.requests) / row.seconds / 1e6,
                  double(row.result.requests) / row.cpu_seconds / 1e6);
    }
    std::printf("\n");
  }
  if (opt) {
    std::printf("%-32s %9.4f %9.4f %12s %12s %10llu\n", "opt (size-aware Belady)", opt->hitRatio(),
                opt->byteHitRatio(), formatBytes(opt->remote_bytes).c_str(),
                formatBytes(opt->promoted_bytes).c_str(), (unsigned long long)opt->evictions);
  }
  if (o.windows > 0) printWindows(rows, opt);
}

void runSimulate(const SimulateOptions& o) {
  const std::string cmd = "simulate";
  TraceFormat format = traceFormatOf(cmd, o.trace, o.format);
  std::ifstream in(o.trace, std::ios::binary);
  if (!in) fail(cmd, "cannot open trace " + o.trace + ": " + std::strerror(errno));
  auto reader = makeTraceReader(format, in, o.trace);
  auto specs = policySpecs(o);

  auto stats = scanTrace(*reader);
  if (!stats) fail(cmd, stats.error().message);
  if (stats->requests == 0) fail(cmd, "trace " + o.trace + " has no requests");
  const std::uint64_t capacity = simulateCapacity(o, *stats);
  const SimOptions options = simOptions(o, *stats);
  auto rows = simulatePolicies(*reader, specs, capacity, options);
  std::optional<SimResult> opt;
  if (!o.no_opt) {
    if (auto st = reader->rewind(); !st) fail(cmd, st.error().message);
    auto result = simulateOpt(*reader, capacity, options);
    if (!result) fail(cmd, result.error().message);
    opt = *result;
  }
  if (o.json)
    printSimulateJson(o, rows, opt, capacity, *stats);
  else
    printSimulateTable(o, format, rows, opt, capacity, *stats);
}

struct GenerateOptions {
  std::string family;
  std::string out;
  std::string format;
  std::uint64_t seed = 1;
  std::vector<std::string> params;
};

void runGenerate(const GenerateOptions& o) {
  const std::string cmd = "generate";
  std::vector<KeyValue> params;
  for (const auto& p : o.params) {
    auto kv = parseKeyValue(p);
    if (!kv) fail(cmd, "--param: " + kv.error().message, kExitUsage);
    if (kv->key.ends_with("size")) {
      // Sizes accept units here too.
      auto bytes = parseSize(kv->value);
      if (!bytes) fail(cmd, "--param " + p + ": " + bytes.error().message, kExitUsage);
      kv->value = std::to_string(*bytes);
    }
    params.push_back(*kv);
  }
  TraceFormat format = outputFormatOf(cmd, o.out, o.format);
  std::ofstream out(o.out, std::ios::binary | std::ios::trunc);
  if (!out) fail(cmd, "cannot create " + o.out + ": " + std::strerror(errno));
  auto writer = makeTraceWriter(format, out);
  std::uint64_t count = 0;
  bool write_failed = false;
  auto st = generateTrace(o.family, params, o.seed, [&](const Request& r) {
    ++count;
    auto written = writer->write(r);
    write_failed = !written;
    return written;
  });
  if (!st) {
    fail(cmd, write_failed ? o.out + ": " + st.error().message : st.error().message,
         write_failed ? kExitFailure : kExitUsage);
  }
  if (auto fin = writer->finish(); !fin) fail(cmd, o.out + ": " + fin.error().message);
  std::fprintf(stderr, "wrote %llu requests to %s (%s)\n", (unsigned long long)count, o.out.c_str(),
               std::string(traceFormatName(format)).c_str());
}

struct ConvertOptions {
  std::string in, from, out, to;
};

void runConvert(const ConvertOptions& o) {
  const std::string cmd = "convert";
  TraceFormat from = traceFormatOf(cmd, o.in, o.from);
  TraceFormat to = outputFormatOf(cmd, o.out, o.to);
  std::ifstream in(o.in, std::ios::binary);
  if (!in) fail(cmd, "cannot open trace " + o.in + ": " + std::strerror(errno));
  std::ofstream out(o.out, std::ios::binary | std::ios::trunc);
  if (!out) fail(cmd, "cannot create " + o.out + ": " + std::strerror(errno));
  auto reader = makeTraceReader(from, in, o.in);
  auto writer = makeTraceWriter(to, out);
  Request r;
  std::uint64_t count = 0;
  while (reader->next(r)) {
    if (auto st = writer->write(r); !st) fail(cmd, o.out + ": " + st.error().message);
    ++count;
  }
  if (!reader->status()) fail(cmd, reader->status().error().message);
  if (auto fin = writer->finish(); !fin) fail(cmd, o.out + ": " + fin.error().message);
  std::fprintf(stderr, "converted %llu requests: %s (%s) -> %s (%s)\n", (unsigned long long)count,
               o.in.c_str(), std::string(traceFormatName(from)).c_str(), o.out.c_str(),
               std::string(traceFormatName(to)).c_str());
}

void runList() {
  std::printf("Policies (--policy NAME, parameters as NAME:k=v or \"NAME;k=v;k=v\"):\n");
  for (const auto& p : listPolicies()) {
    std::printf("  %-10s %s\n", p.name.c_str(), p.summary.c_str());
    for (const auto& doc : p.params) std::printf("      %s\n", doc.c_str());
  }
  std::printf("\nTrace families (hotshard policy generate FAMILY --param k=v):\n");
  for (const auto& g : listGenerators()) {
    std::printf("  %-10s %s\n", g.name.c_str(), g.summary.c_str());
    for (const auto& doc : g.params) std::printf("      %s\n", doc.c_str());
  }
}

std::string policyNamesText() {
  std::string names;
  for (const auto& n : policyNames()) names += (names.empty() ? "" : ", ") + n;
  return names;
}

void addSimulateCommand(CLI::App* policy) {
  auto sim = std::make_shared<SimulateOptions>();
  auto* simulate = policy->add_subcommand(
      "simulate", "Replay a trace through policies, with Belady's OPT beside");
  simulate->add_option("--trace", sim->trace, "Trace file")->required();
  simulate->add_option("--format", sim->format,
                       "native|csv|oracleGeneral (default: guessed from the file)");
  simulate
      ->add_option("--capacity", sim->capacity,
                   "Cache size: bytes with a unit (64MiB, 10GiB) or a % of the working set")
      ->required();
  simulate
      ->add_option(
          "--policy", sim->policies,
          "Comma-separated policies, each NAME or \"NAME;k=v;k=v\" (" + policyNamesText() + ")")
      ->capture_default_str();
  simulate->add_option("--param", sim->params,
                       "NAME:k=v, a parameter for policy NAME (repeatable)");
  simulate->add_option("--sweep", sim->sweep,
                       "k=a..b:step, run every policy having parameter k at each value");
  simulate->add_flag("--json", sim->json, "Print JSON: {\"results\": [...], \"opt\": {...}}");
  simulate->add_flag("--no-opt", sim->no_opt, "Skip Belady's OPT");
  simulate->add_flag("--timing", sim->timing, "Add simulation speed (requests/s) per policy");
  simulate->add_flag("--instant", sim->instant,
                     "Old cost model: promotions are immediate and free (default: charged, "
                     "copies take time and read the remote)");
  simulate
      ->add_option("--promote-rate", sim->promote_rate,
                   "Charged model: copy rate per second, all copies together (64MiB, 1GiB)")
      ->capture_default_str();
  simulate
      ->add_option("--promote-concurrency", sim->promote_concurrency,
                   "Charged model: copies at once")
      ->capture_default_str();
  simulate->add_option("--windows", sim->windows,
                       "Also print the hit ratio over time: N windows of equal read counts");
  simulate->footer(
      "Examples:\n"
      "  hotshard policy simulate --trace t.trace --capacity 10% --policy "
      "hotshard,lru,arc,s3fifo,sieve,lfu\n"
      "  hotshard policy simulate --trace t.csv --capacity 64GiB --policy hotshard --param "
      "hotshard:hysteresis=0.3\n"
      "  hotshard policy simulate --trace t.trace --capacity 5% --policy hotshard --sweep "
      "hysteresis=0..1:0.25 --json\n"
      "  hotshard policy simulate --trace shift.trace --capacity 10% --windows 20\n"
      "  hotshard policy simulate --trace t.trace --capacity 10% --instant\n"
      "  hotshard policy simulate --trace w.oracleGeneral.bin --format oracleGeneral --capacity "
      "1GiB --policy lru");
  simulate->callback([sim] { runSimulate(*sim); });
}

void addGenerateCommand(CLI::App* policy) {
  auto gen = std::make_shared<GenerateOptions>();
  std::string families;
  for (const auto& g : listGenerators()) families += (families.empty() ? "" : ", ") + g.name;
  auto* generate =
      policy->add_subcommand("generate", "Write a seeded synthetic trace (" + families + ")");
  generate->add_option("family", gen->family, "One of: " + families + " (see 'list')")->required();
  generate->add_option("--out", gen->out, "Output file")->required();
  generate->add_option("--format", gen->format,
                       "native|csv|oracleGeneral (default: csv for *.csv, else native)");
  generate->add_option("--seed", gen->seed, "Seed: same seed, same trace")->capture_default_str();
  generate->add_option("--param", gen->params,
                       "k=v family parameter (repeatable; sizes take units); see 'list'");
  generate->footer(
      "Examples:\n"
      "  hotshard policy generate zipf --out zipf.trace --param requests=10000000 --param "
      "objects=1000000\n"
      "  hotshard policy generate epoch --out epoch.trace --seed 3 --param jobs=4 --param "
      "epochs=8\n"
      "  hotshard policy generate scan --out scan.csv --param hot_objects=500\n"
      "  hotshard policy generate modelload --out m.trace --param model_shard_size=1GiB\n"
      "  hotshard policy generate kvspill --out kv.trace --param live=64");
  generate->callback([gen] { runGenerate(*gen); });
}

void addConvertCommand(CLI::App* policy) {
  auto conv = std::make_shared<ConvertOptions>();
  auto* convert =
      policy->add_subcommand("convert", "Convert a trace between native, csv and oracleGeneral");
  convert->add_option("--in", conv->in, "Input trace")->required();
  convert->add_option("--from", conv->from, "native|csv|oracleGeneral (default: guessed)");
  convert->add_option("--out", conv->out, "Output trace")->required();
  convert->add_option("--to", conv->to,
                      "native|csv|oracleGeneral (default: csv for *.csv, else native)");
  convert->footer(
      "Examples:\n"
      "  hotshard policy convert --in trace.csv --out trace.native\n"
      "  hotshard policy convert --in epoch.trace --out epoch.oracleGeneral.bin --to "
      "oracleGeneral");
  convert->callback([conv] { runConvert(*conv); });
}

void addListCommand(CLI::App* policy) {
  auto* list =
      policy->add_subcommand("list", "List the policies and trace families with their parameters");
  list->footer("Examples:\n  hotshard policy list");
  list->callback([] { runList(); });
}

}  // namespace

CLI::App* addPolicyCommand(CLI::App& app) {
  auto* policy = app.add_subcommand(
      "policy", "Placement policies: simulate on traces, generate and convert traces, list");
  policy->require_subcommand(1);
  policy->footer(
      "Examples:\n"
      "  hotshard policy list\n"
      "  hotshard policy generate epoch --out epoch.trace --seed 7\n"
      "  hotshard policy simulate --trace epoch.trace --capacity 10% --policy "
      "hotshard,lru,arc,s3fifo");
  addSimulateCommand(policy);
  addGenerateCommand(policy);
  addConvertCommand(policy);
  addListCommand(policy);
  return policy;
}

}  // namespace hotshard::cli
