#include "daemon/config.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <toml++/toml.h>

#include "daemon/metrics.h"
#include "daemon/promoter.h"
#include "base/units.h"
#include "fuse/filesystem.h"
#include "base/paths.h"

namespace hotshard {
namespace {

ConfigItem stringItem(std::string name, std::string help, std::string RunConfig::*field) {
  return ConfigItem{
      .name = std::move(name),
      .help = std::move(help),
      .get = [field](const RunConfig& c) { return c.*field; },
      .set = [field](RunConfig& c, const std::string& v) -> Status {
        c.*field = v;
        return Ok{};
      },
  };
}

// What a size item accepts (max 0: no upper limit).
struct SizeBounds {
  uint64_t multiple_of = 1;
  uint64_t min = 0;
  uint64_t max = 0;
};

ConfigItem sizeItem(std::string name, std::string help, uint64_t RunConfig::*field,
                    SizeBounds bounds = {}) {
  return ConfigItem{
      .name = name,
      .help = std::move(help),
      .get = [field](const RunConfig& c) { return std::to_string(c.*field); },
      .set = [field, name, bounds](RunConfig& c, const std::string& v) -> Status {
        auto size = parseSize(v);
        if (!size.ok()) return makeError(Errc::kInvalidArgument, name + ": " + size.error().message);
        const std::string what = name + " '" + v + "': must be ";
        if (*size % bounds.multiple_of != 0) {
          return makeError(Errc::kInvalidArgument,
                           what + "a multiple of " + std::to_string(bounds.multiple_of));
        }
        if (*size < bounds.min) {
          return makeError(Errc::kInvalidArgument, what + "at least " + formatBytes(bounds.min));
        }
        if (bounds.max != 0 && *size > bounds.max) {
          return makeError(Errc::kInvalidArgument, what + "at most " + formatBytes(bounds.max));
        }
        c.*field = *size;
        return Ok{};
      },
  };
}

ConfigItem countItem(std::string name, std::string help, unsigned RunConfig::*field,
                     unsigned lo, unsigned hi) {
  return ConfigItem{
      .name = name,
      .help = std::move(help),
      .get = [field](const RunConfig& c) { return std::to_string(c.*field); },
      .set = [field, name, lo, hi](RunConfig& c, const std::string& v) -> Status {
        char* end = nullptr;
        unsigned long n = std::strtoul(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || n < lo || n > hi) {
          return makeError(Errc::kInvalidArgument, name + " '" + v + "': expected a number from " +
                                                       std::to_string(lo) + " to " +
                                                       std::to_string(hi));
        }
        c.*field = static_cast<unsigned>(n);
        return Ok{};
      },
  };
}

// A duration from `lo` to `hi`; range_text says them in the error ("100ms to 1h").
ConfigItem durationItem(std::string name, std::string help, Duration RunConfig::*field,
                        Duration lo, Duration hi, std::string range_text) {
  return ConfigItem{
      .name = name,
      .help = std::move(help),
      .get = [field](const RunConfig& c) { return formatDuration(c.*field); },
      .set = [field, name, lo, hi, range_text](RunConfig& c, const std::string& v) -> Status {
        auto d = parseDuration(v);
        if (!d.ok()) return makeError(Errc::kInvalidArgument, name + ": " + d.error().message);
        if (*d < lo || *d > hi) {
          return makeError(Errc::kInvalidArgument,
                           name + " '" + v + "': expected " + range_text);
        }
        c.*field = *d;
        return Ok{};
      },
  };
}

Result<bool> parseBool(const std::string& name, const std::string& v) {
  if (v == "true" || v == "1" || v == "yes" || v == "on") return true;
  if (v == "false" || v == "0" || v == "no" || v == "off") return false;
  return makeError(Errc::kInvalidArgument, name + " '" + v + "': expected true or false");
}

// A boolean spelt with two words (on/off, auto/manual); is_flag: also a bare flag.
ConfigItem boolItem(std::string name, std::string help, bool RunConfig::*field,
                    std::string yes = "on", std::string no = "off", bool is_flag = false) {
  return ConfigItem{
      .name = name,
      .help = std::move(help),
      .is_flag = is_flag,
      .get = [field, yes, no](const RunConfig& c) { return c.*field ? yes : no; },
      .set = [field, name, yes, no](RunConfig& c, const std::string& v) -> Status {
        if (v == yes || v == no) {
          c.*field = v == yes;
          return Ok{};
        }
        auto b = parseBool(name, v);  // true/false, yes/no, 1/0 as well
        if (!b.ok()) {
          return makeError(Errc::kInvalidArgument,
                           name + " '" + v + "': expected " + yes + " or " + no);
        }
        c.*field = *b;
        return Ok{};
      },
  };
}

// A string that must be one of `choices`.
ConfigItem choiceItem(std::string name, std::string help, std::string RunConfig::*field,
                      std::vector<std::string> choices) {
  return ConfigItem{
      .name = name,
      .help = std::move(help),
      .get = [field](const RunConfig& c) { return c.*field; },
      .set = [field, name, choices](RunConfig& c, const std::string& v) -> Status {
        if (std::find(choices.begin(), choices.end(), v) == choices.end()) {
          std::string list;
          for (size_t i = 0; i < choices.size(); i++) {
            list += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + choices[i];
          }
          return makeError(Errc::kInvalidArgument, name + " '" + v + "': expected " + list);
        }
        c.*field = v;
        return Ok{};
      },
  };
}

// Where and how the mount serves: paths, consistency, the FUSE session, logs.
void addMountItems(std::vector<ConfigItem>& items) {
  items.push_back(stringItem("remote", "Remote directory to cache (NFS, Lustre, sshfs, ...)",
                             &RunConfig::remote));
  items.push_back(stringItem(
      "mount", "Where to mount (default: over the remote directory itself)", &RunConfig::mount));
  items.push_back(stringItem("cache", "Cache directory on local NVMe", &RunConfig::cache));
  items.push_back(ConfigItem{
      .name = "consistency",
      .help = "strict (close-to-open: every open revalidates; stat may be ac=3s old for files, "
              "acdir=30s for directories; e.g. 'strict;ac=1s', 'strict;ac=0' for none), "
              "ttl=DURATION (e.g. ttl=30s, ttl=5m), or immutable (default: strict)",
      .get = [](const RunConfig& c) { return c.consistency.toString(); },
      .set = [](RunConfig& c, const std::string& v) -> Status {
        ASSIGN_OR_RETURN(c.consistency, fuse::Consistency::parse(v));
        return Ok{};
      },
  });
  items.push_back(boolItem("foreground", "Stay in the foreground and log to stderr",
                           &RunConfig::foreground, "true", "false", /*is_flag=*/true));
  items.push_back(boolItem("no-supervisor",
                           "Serve the mount from this one process, with no supervisor: a crash "
                           "then ends the mount (docs/restart.md)",
                           &RunConfig::no_supervisor, "true", "false", /*is_flag=*/true));
  items.push_back(boolItem("passthrough",
                           "on: kernel passthrough when the kernel allows it (default); off: serve "
                           "reads and writes in user space",
                           &RunConfig::passthrough));
  items.push_back(stringItem("control-socket",
                             "Control socket path (default: /run/hotshard/<mount>.sock)",
                             &RunConfig::control_socket));
  items.push_back(stringItem(
      "log-file", "Log file in the background (default: /var/log/hotshard/<mount>.log)",
      &RunConfig::log_file));
  items.push_back(choiceItem("log-level", "trace, debug, info, warn or error (default: info)",
                             &RunConfig::log_level, {"trace", "debug", "info", "warn", "error"}));
  items.push_back(countItem("fuse-threads", "Most FUSE worker threads (default: 16)",
                            &RunConfig::fuse_threads, 1, 1024));
  items.push_back(durationItem(
      "remote-timeout",
      "Deadline of each call into the remote for a request (lookup, stat, open, opendir, "
      "statfs), 100ms to 1h; past it the request fails with ETIMEDOUT (default: 30s)",
      &RunConfig::remote_timeout, std::chrono::milliseconds(100), std::chrono::hours(1),
      "100ms to 1h"));
}

// The cache store, the promoter's I/O shape and the scrub.
void addCacheItems(std::vector<ConfigItem>& items) {
  items.push_back(sizeItem("cache-size",
                           "Cache capacity, e.g. 500GiB (default: 80% of what the cache file "
                           "system can hold for hotshard)",
                           &RunConfig::cache_size));
  items.push_back(choiceItem("io-engine",
                             "Promotion I/O: uring (io_uring) or sync (pread/pwrite) (default: uring)",
                             &RunConfig::io_engine, {"uring", "sync"}));
  items.push_back(sizeItem("promote-chunk",
                           "Promotion chunk size, a multiple of 4KiB up to 1GiB, e.g. 1.5MiB "
                           "(default: 1MiB)",
                           &RunConfig::promote_chunk,
                           {.multiple_of = 4096, .min = 4096, .max = kMaxPromoteChunk}));
  items.push_back(countItem("promote-depth", "Chunks in flight per promotion (default: 8)",
                            &RunConfig::promote_depth, 1, 256));
  items.push_back(countItem("promote-concurrency", "Promotions at once (default: 2)",
                            &RunConfig::promote_concurrency, 1, 64));
  items.push_back(sizeItem("promote-buffers",
                           "Most memory for promotion buffers, all promotions together, e.g. "
                           "16MiB; lowers --promote-depth to fit, at least one chunk per "
                           "promotion (default: 32MiB)",
                           &RunConfig::promote_buffers, {.min = 4096}));
  items.push_back(sizeItem("promote-rate",
                           "Bytes per second for all promotions together, e.g. 200MiB; 0: "
                           "unlimited (default: 0)",
                           &RunConfig::promote_rate));
  items.push_back(sizeItem("scrub-rate",
                           "Bytes per second the background scrub re-reads to verify checksums; "
                           "0: off (default: 32MiB)",
                           &RunConfig::scrub_rate));
}

// Heat, the policy and the placement loop; the metrics endpoint.
void addPlacementItems(std::vector<ConfigItem>& items) {
  items.push_back(boolItem("probes",
                           "on: eBPF heat probes (default); off: heat from FUSE opens only",
                           &RunConfig::probes));
  items.push_back(countItem("probe-sample-rate",
                            "Send 1 in N probe events to the ring buffer, so 'trace record' "
                            "writes raw sampled reads; 0: off, traces hold per-chunk counts per "
                            "tick (default: 0)",
                            &RunConfig::probe_sample_rate, 0, 1000000));
  items.push_back(stringItem("policy",
                             "Placement policy, name;k=v;... (default: hotshard; see "
                             "'hotshard policy list')",
                             &RunConfig::policy));
  items.push_back(boolItem("placement",
                           "auto: promote and evict by heat (default); manual: only "
                           "warm/evict/pin do",
                           &RunConfig::automatic_placement, "auto", "manual"));
  items.push_back(durationItem("tick", "Placement tick, e.g. 1s or 250ms (default: 1s)",
                               &RunConfig::tick, std::chrono::milliseconds(10),
                               std::chrono::hours(1), "10ms to 1h"));
  items.push_back(ConfigItem{
      .name = "metrics",
      .help = "Prometheus endpoint http://ADDR/metrics: HOST:PORT with an IP address, "
              "[IPv6]:PORT, or off (default: 127.0.0.1:9464)",
      .get = [](const RunConfig& c) { return c.metrics; },
      .set = [](RunConfig& c, const std::string& v) -> Status {
        if (v != "off") RETURN_IF_ERROR(parseMetricsAddress(v));
        c.metrics = v;
        return Ok{};
      },
  });
}

// The peer tier (docs/cluster.md). Checked together in finalizeRunConfig.
void addClusterItems(std::vector<ConfigItem>& items) {
  items.push_back(stringItem("cluster",
                             "Join the peer tier of this cluster name (letters, digits, . _ -); "
                             "off unless given (default: off)",
                             &RunConfig::cluster));
  items.push_back(stringItem(
      "etcd", "etcd endpoints of the cluster, http://HOST:PORT[,http://HOST:PORT...]",
      &RunConfig::etcd));
  items.push_back(stringItem("peer-listen", "HOST:PORT the peer listener binds, e.g. 0.0.0.0:7464",
                             &RunConfig::peer_listen));
  items.push_back(stringItem("peer-advertise",
                             "HOST:PORT peers dial to reach this host (default: --peer-listen; "
                             "required when it binds 0.0.0.0 or ::)",
                             &RunConfig::peer_advertise));
  items.push_back(stringItem("namespace",
                             "Name of the data set under the remote, the same on every host of "
                             "the cluster (letters, digits, . _ -)",
                             &RunConfig::ns));
  items.push_back(stringItem("cluster-token-file",
                             "File holding the cluster's shared token; refused if group or others "
                             "may read it (chmod 600)",
                             &RunConfig::cluster_token_file));
  items.push_back(stringItem("peer-id", "This host's id in the cluster (default: the hostname)",
                             &RunConfig::peer_id));
  items.push_back(ConfigItem{
      .name = "peer-transports",
      .help = "Peer transports offered, best first: rdma,tcp, tcp or rdma; rdma only where an "
              "RDMA device exists (default: rdma,tcp)",
      .get = [](const RunConfig& c) { return c.peer_transports; },
      .set = [](RunConfig& c, const std::string& v) -> Status {
        std::vector<std::string> list = splitList(v);
        if (list.empty()) {
          return makeError(Errc::kInvalidArgument,
                           "peer-transports '" + v + "': expected rdma,tcp, tcp or rdma");
        }
        for (const auto& t : list) {
          if (t != "rdma" && t != "tcp") {
            return makeError(Errc::kInvalidArgument,
                             "peer-transports '" + v + "': unknown transport '" + t +
                                 "' (expected rdma or tcp)");
          }
        }
        c.peer_transports = v;
        return Ok{};
      },
  });
  items.push_back(durationItem("peer-timeout",
                               "How long an open waits for a copy (a fetch from a peer, or "
                               "this host's own promotion as the owner), 100ms to 1h; past it "
                               "the open reads the remote (default: 30s)",
                               &RunConfig::peer_timeout, std::chrono::milliseconds(100),
                               std::chrono::hours(1), "100ms to 1h"));
}

std::vector<ConfigItem> makeItems() {
  std::vector<ConfigItem> items;
  addMountItems(items);
  addCacheItems(items);
  addPlacementItems(items);
  addClusterItems(items);
  return items;
}

std::string tomlValueText(const toml::node& node) {
  if (auto s = node.as_string()) return s->get();
  if (auto i = node.as_integer()) return std::to_string(i->get());
  if (auto f = node.as_floating_point()) return std::to_string(f->get());
  if (auto b = node.as_boolean()) return b->get() ? "true" : "false";
  return "";
}

// The cache must not lie inside the mount (its copies would be served through
// hotshard itself) nor inside the remote (hotshard would cache its own copies),
// neither as written nor where symlinks lead.
Status checkCacheOutside(const std::string& cache, const std::string& what,
                         const std::string& dir) {
  const std::string real = resolvedPath(cache);
  if (!pathIsWithin(cache, dir) && !pathIsWithin(real, resolvedPath(dir))) return Ok{};
  std::string where = real == cache ? cache : cache + " (" + real + ")";
  return makeError(Errc::kInvalidArgument, "the cache directory " + where +
                                               " must not be inside the " + what + " " + dir +
                                               "; put it on a local disk outside it");
}

// A cluster or namespace name: [A-Za-z0-9._-]+, as it appears in etcd keys.
bool isClusterName(const std::string& s) {
  return !s.empty() && s.size() <= 128 && s != "." && s != ".." &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) {
           return std::isalnum(c) || c == '.' || c == '_' || c == '-';
         });
}

// "HOST:PORT" or "[IPv6]:PORT" with a port 1..65535 (0 for a listener: any).
Status checkHostPort(const std::string& name, const std::string& v, bool any_port) {
  size_t colon = v.rfind(':');
  bool bracketed = !v.empty() && v[0] == '[';
  bool ok = colon != std::string::npos && colon > 0 && colon + 1 < v.size() &&
            (!bracketed || v[colon - 1] == ']');
  if (ok) {
    std::string port = v.substr(colon + 1);
    char* end = nullptr;
    unsigned long n = std::strtoul(port.c_str(), &end, 10);
    ok = *end == '\0' && std::isdigit(static_cast<unsigned char>(port[0])) && n <= 65535 &&
         (n > 0 || any_port);
  }
  if (ok) return Ok{};
  return makeError(Errc::kInvalidArgument,
                   name + " '" + v + "': expected HOST:PORT or [IPv6]:PORT, port 1 to 65535");
}

bool wildcardHost(const std::string& host_port) {
  std::string host = host_port.substr(0, host_port.rfind(':'));
  return host == "0.0.0.0" || host == "[::]" || host == "*" || host.empty();
}

// The peer tier's options as a whole: all or nothing around --cluster.
Status finalizeClusterConfig(RunConfig& cfg) {
  if (cfg.cluster.empty()) {
    for (const auto& [name, value] :
         {std::pair<const char*, const std::string*>{"etcd", &cfg.etcd},
          {"peer-listen", &cfg.peer_listen},
          {"peer-advertise", &cfg.peer_advertise},
          {"namespace", &cfg.ns},
          {"cluster-token-file", &cfg.cluster_token_file},
          {"peer-id", &cfg.peer_id}}) {
      if (!value->empty()) {
        return makeError(Errc::kInvalidArgument,
                         std::string("--") + name + " is for the peer tier: give --cluster NAME too");
      }
    }
    return Ok{};
  }
  if (!isClusterName(cfg.cluster)) {
    return makeError(Errc::kInvalidArgument,
                     "cluster '" + cfg.cluster + "': expected letters, digits, '.', '_' or '-'");
  }
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"etcd URL[,URL...]", &cfg.etcd},
        {"peer-listen HOST:PORT", &cfg.peer_listen},
        {"namespace NAME", &cfg.ns},
        {"cluster-token-file FILE", &cfg.cluster_token_file}}) {
    if (value->empty()) {
      return makeError(Errc::kInvalidArgument, std::string("--cluster needs --") + name);
    }
  }
  if (!isClusterName(cfg.ns)) {
    return makeError(Errc::kInvalidArgument,
                     "namespace '" + cfg.ns + "': expected letters, digits, '.', '_' or '-'");
  }
  for (const auto& url : splitList(cfg.etcd)) {
    if (url.rfind("http://", 0) != 0 && url.rfind("https://", 0) != 0) {
      return makeError(Errc::kInvalidArgument,
                       "etcd '" + url + "': expected http://HOST:PORT or https://HOST:PORT");
    }
  }
  RETURN_IF_ERROR(checkHostPort("peer-listen", cfg.peer_listen, /*any_port=*/true));
  if (cfg.peer_advertise.empty()) {
    if (wildcardHost(cfg.peer_listen)) {
      return makeError(Errc::kInvalidArgument,
                       "peer-listen " + cfg.peer_listen +
                           " binds every address: give --peer-advertise HOST:PORT, the address "
                           "other hosts reach this one at");
    }
  } else {
    RETURN_IF_ERROR(checkHostPort("peer-advertise", cfg.peer_advertise, /*any_port=*/false));
  }
  if (cfg.peer_id.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') {
      return makeError(Errc::kInvalidArgument, "cannot read the hostname: give --peer-id ID");
    }
    cfg.peer_id = host;
  }
  if (!isClusterName(cfg.peer_id)) {
    return makeError(Errc::kInvalidArgument,
                     "peer-id '" + cfg.peer_id + "': expected letters, digits, '.', '_' or '-'");
  }
  cfg.cluster_token_file = normalPath(cfg.cluster_token_file);
  return Ok{};
}

}  // namespace

std::vector<std::string> splitList(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    if (comma == std::string::npos) comma = text.size();
    std::string item = text.substr(start, comma - start);
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (!item.empty()) out.push_back(item);
    start = comma + 1;
  }
  return out;
}

const std::vector<ConfigItem>& runConfigItems() {
  static const std::vector<ConfigItem> items = makeItems();
  return items;
}

Status applyConfigFile(const std::string& path, const std::set<std::string>& overridden,
                       RunConfig& cfg) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return makeError(Errc::kInvalidArgument, "config " + path + ":" + std::to_string(where.line) +
                                                 ":" + std::to_string(where.column) + ": " +
                                                 std::string(e.description()));
  }
  for (const auto& [key, node] : table) {
    // "config FILE:LINE", so every complaint names where to look.
    std::string at = "config " + path + ":" + std::to_string(node.source().begin.line);
    std::string name(key.str());
    std::replace(name.begin(), name.end(), '_', '-');
    const auto& items = runConfigItems();
    auto it = std::find_if(items.begin(), items.end(),
                           [&](const ConfigItem& i) { return i.name == name; });
    if (it == items.end()) {
      std::string known;
      for (const auto& i : items) known += (known.empty() ? "" : ", ") + i.name;
      return makeError(Errc::kInvalidArgument,
                       at + ": unknown key '" + name + "' (known: " + known + ")");
    }
    std::string text = tomlValueText(node);
    if (text.empty() && !node.is_string()) {
      return makeError(Errc::kInvalidArgument,
                       at + ": key '" + name + "' must be a string, number or bool");
    }
    if (overridden.count(name)) continue;
    Status st = it->set(cfg, text);
    if (!st.ok()) return makeError(Errc::kInvalidArgument, at + ": " + st.error().message);
  }
  return Ok{};
}

namespace {

// A default as a TOML value: numbers and true/false bare, anything else quoted.
std::string tomlLiteral(const std::string& v) {
  bool number =
      !v.empty() && std::all_of(v.begin(), v.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (number || v == "true" || v == "false") return v;
  std::string quoted = "\"";
  for (char c : v) quoted += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
  return quoted + "\"";
}

}  // namespace

std::string exampleConfigToml() {
  std::string out =
      "# hotshard example configuration: `hotshard run --config FILE` (the systemd unit\n"
      "# hotshard@NAME.service reads /etc/hotshard/NAME.toml). Every key is a flag of\n"
      "# `hotshard run` (dashes or underscores); a flag given on the command line wins.\n"
      "# Each key is commented out with its default; remote and cache are required.\n"
      "# Generated by `hotshard run --print-config`; do not edit the shipped copy.\n";
  const RunConfig defaults;
  for (const auto& item : runConfigItems()) {
    out += "\n# " + item.help + "\n";
    out += "# " + item.name + " = " + tomlLiteral(item.get(defaults)) + "\n";
  }
  return out;
}

Status finalizeRunConfig(RunConfig& cfg) {
  if (cfg.remote.empty()) return makeError(Errc::kInvalidArgument, "--remote DIR is required");
  if (cfg.cache.empty()) return makeError(Errc::kInvalidArgument, "--cache DIR is required");
  cfg.remote = normalPath(cfg.remote);
  cfg.mount = normalPath(cfg.mount.empty() ? cfg.remote : cfg.mount);
  cfg.cache = normalPath(cfg.cache);
  RETURN_IF_ERROR(checkCacheOutside(cfg.cache, "mount", cfg.mount));
  RETURN_IF_ERROR(checkCacheOutside(cfg.cache, "remote", cfg.remote));
  if (cfg.promote_buffers < cfg.promote_chunk * cfg.promote_concurrency) {
    return makeError(Errc::kInvalidArgument,
                     "promote-buffers " + formatBytes(cfg.promote_buffers) +
                         ": must hold one promote-chunk (" + formatBytes(cfg.promote_chunk) +
                         ") for each of the " + std::to_string(cfg.promote_concurrency) +
                         " promotions at once");
  }
  RETURN_IF_ERROR(finalizeClusterConfig(cfg));
  if (cfg.control_socket.empty()) cfg.control_socket = controlSocketFor(cfg.mount);
  if (cfg.worker.state_dir.empty()) cfg.worker.state_dir = takeoverStateDirFor(cfg.mount);
  cfg.worker.state_dir = normalPath(cfg.worker.state_dir);
  if (cfg.worker.takeover && cfg.worker.fuse_fd < 0) {
    return makeError(Errc::kInvalidArgument, "--takeover needs --fuse-fd");
  }
  if (cfg.log_file.empty()) {
    std::string sock = controlSocketFor(cfg.mount);  // the same escaping of the mount path
    std::string name = sock.substr(sock.rfind('/') + 1);
    cfg.log_file = std::string(kLogDir) + "/" + name.substr(0, name.size() - 5) + ".log";
  }
  return Ok{};
}

std::string takeoverStateDirFor(const std::string& mount) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64
  for (unsigned char c : normalPath(mount)) h = (h ^ c) * 1099511628211ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return std::string(kRunDir) + "/takeover/" + hex;
}

std::string controlSocketFor(const std::string& mount) {
  std::string name = normalPath(mount);
  if (name == "/") return std::string(kRunDir) + "/root.sock";
  name.erase(0, 1);
  std::replace(name.begin(), name.end(), '/', '_');
  return std::string(kRunDir) + "/" + name + ".sock";
}

}  // namespace hotshard
