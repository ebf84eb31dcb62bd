// Client commands for the running daemon's cache: warm, evict, pin, unpin,
// stat, verify. Paths are as the user sees them (under the mount).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "base/paths.h"
#include "base/units.h"
#include "daemon/control_protocol.h"
#include "tools/client.h"
#include "tools/commands.h"
#include "tools/terminal.h"

namespace hotshard::cli {
namespace {

struct PathArgs {
  DaemonTarget target;
  std::vector<std::string> paths;
};

// {"cmd": cmd, "paths": [...]} with each path made absolute.
json pathsRequest(const char* cmd, const std::vector<std::string>& paths) {
  json out = json::array();
  for (const auto& p : paths) out.push_back(normalPath(p));
  json req = control::request(cmd);
  req[control::kPaths] = std::move(out);
  return req;
}

CLI::App* pathCommand(CLI::App& app, const std::string& name, const std::string& help,
                      std::shared_ptr<PathArgs> args, const std::string& examples,
                      bool paths_required = true) {
  auto* cmd = app.add_subcommand(name, help);
  auto* opt = cmd->add_option("paths", args->paths, "Files or directories (recursively) under the mount");
  if (paths_required) opt->required();
  addTargetOptions(cmd, args->target);
  cmd->footer("Examples:\n" + examples);
  return cmd;
}

// Prints per-path results; returns how many failed. A result with done_key
// false and no error did nothing, as it needed to: it is printed as `noop`.
int printResults(const json& reply, const char* verb, bool as_json, const char* done_key = nullptr,
                 const char* noop = nullptr) {
  int failed = 0;
  for (const auto& r : reply.value(control::kResults, json::array())) {
    if (r.contains(control::kError)) failed++;
  }
  if (as_json) {
    json out = reply;
    out.erase(control::kOk);
    std::printf("%s\n", toWire(out).dump().c_str());
    return failed;
  }
  for (const auto& r : reply.value(control::kResults, json::array())) {
    if (r.contains(control::kError)) {
      std::printf("%-8s %s: %s\n", "FAILED", quoteEscape(r.value(control::kPath, "")).c_str(),
                  r[control::kError].get<std::string>().c_str());
    } else if (done_key != nullptr && !r.value(done_key, true)) {
      std::printf("%s: %s\n", quoteEscape(r.value(control::kPath, "")).c_str(), noop);
    } else {
      std::printf("%-8s %s\n", verb, quoteEscape(r.value(control::kPath, "")).c_str());
    }
  }
  return failed;
}

// Renders warm's progress frames: a line per finished file ("warmed" when
// copied now, "cached" when it was already); on a terminal also one updating
// line with the file being copied and the total: bytes, rate and ETA.
class WarmView {
 public:
  explicit WarmView(bool tty) : tty_(tty), t0_(Clock::now()) {}

  void frame(const json& p) {
    std::string path = quoteEscape(p.value(control::kPath, ""));
    bool finished = p.contains(control::kOk);
    if (!finished) {
      if (!tty_) return;
      File& f = files_[path];
      uint64_t copied = p.value(control::kCopied, 0ull);
      if (f.first == Clock::time_point{}) f = {Clock::now(), copied, copied};
      f.copied = copied;
      size_t columns = terminalColumns(STDOUT_FILENO) - 1;  // the last column would wrap
      std::string counts = "[" + std::to_string(p.value(control::kDone, 0)) + "/" +
                           std::to_string(p.value(control::kTotal, 0)) + "] ";
      std::string rest = fileLine(p, f) + " | total " + totalLine(p);
      // The path takes what the numbers leave, cut at its front.
      size_t room = columns > counts.size() + rest.size() + 10
                        ? columns - counts.size() - rest.size()
                        : 10;
      std::string line = counts + ellipsizeFront(path, room) + rest;
      std::printf("\r\033[K%s", ellipsize(line, columns).c_str());
      std::fflush(stdout);
      return;
    }
    std::string line = "[" + std::to_string(p.value(control::kDone, 0)) + "/" +
                       std::to_string(p.value(control::kTotal, 0)) + "] ";
    if (p.value(control::kOk, false)) {
      bool cached = p.value(control::kCached, false);
      line += std::string(cached ? "cached " : "warmed ") + path + "  " +
              formatBytes(p.value(control::kSize, 0ull));
      files_[path].copied = cached ? 0 : p.value(control::kSize, 0ull);
    } else {
      line += "FAILED " + path + ": " + p.value(control::kError, "");
    }
    std::printf("%s%s\n", tty_ ? "\r\033[K" : "", line.c_str());
    std::fflush(stdout);
  }

 private:
  using Clock = std::chrono::steady_clock;
  struct File {
    Clock::time_point first;  // its first progress frame
    uint64_t first_copied = 0, copied = 0;
  };
  static double since(Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  }
  static std::string rateEta(double rate, uint64_t left) {
    if (rate <= 0) return "--/s  ETA --";
    return formatBytes(static_cast<uint64_t>(rate)) + "/s  ETA " + formatEta(left / rate);
  }
  // "  12.0 MiB/64.0 MiB  16.0 MiB/s  ETA 3s": the file being copied.
  std::string fileLine(const json& p, const File& f) const {
    uint64_t size = p.value(control::kSize, 0ull);
    double secs = since(f.first);
    double rate = secs > 0.2 ? (f.copied - f.first_copied) / secs : 0;
    return "  " + formatBytes(f.copied) + "/" + formatBytes(size) + "  " +
           rateEta(rate, size - std::min(size, f.copied));
  }
  // The rate is of bytes copied by this warm; already cached files add none.
  std::string totalLine(const json& p) const {
    uint64_t done = p.value(control::kBytesDone, 0ull), all = p.value(control::kBytesTotal, 0ull);
    uint64_t copied = 0;
    for (const auto& [path, f] : files_) copied += f.copied;
    double secs = since(t0_);
    return formatBytes(done) + "/" + formatBytes(all) + "  " +
           rateEta(secs > 0.2 ? copied / secs : 0, all - std::min(all, done));
  }

  bool tty_;
  Clock::time_point t0_;
  std::map<std::string, File> files_;
};

}  // namespace

void addWarmCommand(CLI::App& app) {
  auto args = std::make_shared<PathArgs>();
  auto* cmd = pathCommand(app, "warm", "Copy files into the cache now (directories recursively)",
                          args,
                          "  hotshard warm /mnt/datasets/imagenet/train\n"
                          "  hotshard warm /mnt/models/llama/*.safetensors --json");
  cmd->callback([args] {
    WarmView view(::isatty(STDOUT_FILENO));
    json reply = callDaemon(control::kWarm, args->target, pathsRequest(control::kWarm, args->paths),
                            [&](const json& p) {
                              if (!args->target.json) view.frame(p);
                            });
    reply.erase(control::kOk);
    size_t failed = reply.value(control::kFailed, json::array()).size();
    uint64_t cached = reply.value(control::kCached, 0ull);
    if (args->target.json) {
      std::printf("%s\n", toWire(reply).dump().c_str());
    } else {
      std::string also = cached ? ", " + std::to_string(cached) + " already cached" : "";
      if (failed) also += ", " + std::to_string(failed) + " failed";
      std::printf("warmed %llu of %llu files (%s)%s\n",
                  static_cast<unsigned long long>(reply.value(control::kWarmed, 0ull)),
                  static_cast<unsigned long long>(reply.value(control::kFiles, 0ull)),
                  formatBytes(reply.value(control::kBytes, 0ull)).c_str(), also.c_str());
    }
    if (failed) throw CLI::RuntimeError(kExitFailure);
  });
}

void addEvictCommand(CLI::App& app) {
  auto args = std::make_shared<PathArgs>();
  auto* cmd = pathCommand(app, "evict", "Drop cached copies (they are read from the remote again)",
                          args, "  hotshard evict /mnt/datasets/old-run\n");
  cmd->callback([args] {
    json reply =
        callDaemon(control::kEvict, args->target, pathsRequest(control::kEvict, args->paths));
    if (printResults(reply, "evicted", args->target.json, control::kEvicted,
                     "not cached, nothing to evict")) {
      throw CLI::RuntimeError(kExitFailure);
    }
  });
}

void addPinCommand(CLI::App& app, bool pin) {
  auto args = std::make_shared<PathArgs>();
  std::string name = pin ? control::kPin : control::kUnpin;
  auto* cmd = pathCommand(
      app, name,
      pin ? "Keep files in the cache: never evicted to make room (not yet cached ones too)"
          : "Let pinned files be evicted again",
      args, "  hotshard " + name + " /mnt/models/llama-70b\n");
  cmd->callback([args, name, pin] {
    json reply = callDaemon(name, args->target, pathsRequest(name.c_str(), args->paths));
    if (printResults(reply, pin ? "pinned" : "unpinned", args->target.json)) {
      throw CLI::RuntimeError(kExitFailure);
    }
  });
}

void addStatCommand(CLI::App& app) {
  auto args = std::make_shared<PathArgs>();
  auto* cmd =
      pathCommand(app, "stat",
                  "Show whether files are cached, promoting or remote (directories: "
                  "every file below, one line each)",
                  args,
                  "  hotshard stat /mnt/datasets/shard-0042.tar\n"
                  "  hotshard stat /mnt/datasets/shard-0042.tar --json\n"
                  "  hotshard stat /mnt/datasets/train --json   # an array, one per file\n");
  cmd->callback([args] {
    json reply =
        callDaemon(control::kStat, args->target, pathsRequest(control::kStat, args->paths));
    const json& results = reply[control::kResults];
    if (args->target.json) {
      // One file asked for: the object itself, as scripts expect; several, or
      // a directory (however many files it holds): an array.
      bool one_file = args->paths.size() == 1 && results.size() == 1 &&
                      results[0].value(control::kPath, "") == normalPath(args->paths[0]);
      std::printf("%s\n", toWire(one_file ? results[0] : results).dump().c_str());
      return;
    }
    for (const auto& r : results) {
      std::string state = r.value(control::kState, "");
      if (r.contains(control::kUnusable)) state = "unusable";  // cached, but the disk failed
      uint64_t size = r.value(control::kSize, 0ull);
      if (r.contains(control::kCopied) && size > 0) {  // a copy in flight: how far it is
        state += " " + std::to_string(r.value(control::kCopied, 0ull) * 100 / size) + "%";
      }
      std::string shared;
      if (r.contains(control::kLinks)) {  // hard links of one remote file share one copy
        shared = "  (one copy for " + std::to_string(r.value(control::kLinks, 0ull)) + " names)";
      }
      std::printf("%-10s %s%s  %s%s\n", state.c_str(),
                  r.value(control::kPinned, false) ? "pinned " : "",
                  quoteEscape(r.value(control::kPath, "")).c_str(), formatBytes(size).c_str(),
                  shared.c_str());
      if (r.contains(control::kUnusable)) {
        std::printf("           (%s; opens go to the remote)\n",
                    r.value(control::kUnusable, "").c_str());
      }
    }
  });
}

void addVerifyCommand(CLI::App& app) {
  auto args = std::make_shared<PathArgs>();
  auto* cmd = pathCommand(app, "verify",
                          "Re-read cached copies and drop those whose checksum does not match "
                          "(all of them without PATH)",
                          args, "  hotshard verify\n  hotshard verify /mnt/datasets/train\n",
                          /*paths_required=*/false);
  cmd->callback([args] {
    json req = args->paths.empty() ? control::request(control::kVerify)
                                   : pathsRequest(control::kVerify, args->paths);
    json reply = callDaemon(control::kVerify, args->target, req);
    reply.erase(control::kOk);
    if (args->target.json) {
      std::printf("%s\n", toWire(reply).dump().c_str());
    } else {
      std::printf("verified %llu cached objects, dropped %llu\n",
                  static_cast<unsigned long long>(reply.value(control::kChecked, 0ull)),
                  static_cast<unsigned long long>(reply.value(control::kDropped, 0ull)));
    }
  });
}

}  // namespace hotshard::cli
