// The daemon's configuration: one struct, one table of items. Each item has a
// default, a help text and a parser; it is read from the TOML file given by
// --config and can be overridden by the flag of the same name.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "base/result.h"
#include "base/units.h"
#include "fuse/filesystem.h"

namespace hotshard {

struct RunConfig {
  std::string remote;                 // the directory to cache (required)
  std::string remote_canonical;       // realpath of remote, set at start (not an option)
  std::string mount;                  // where to mount; default: over the remote itself
  std::string cache;                  // the cache directory (required)
  fuse::Consistency consistency;       // strict (default) | ttl=DURATION | immutable
  bool foreground = false;
  // true: one process holds the mount and serves it, as before the supervisor
  // (docs/restart.md): a crash then ends the mount; for debugging under gdb or
  // strace, or where fork/exec of a helper is not wanted.
  bool no_supervisor = false;
  bool passthrough = true;  // false: serve reads and writes in user space
  std::string control_socket;         // default: /run/hotshard/<mount>.sock
  std::string log_file;               // default: /var/log/hotshard/<mount>.log in the background
  std::string log_level = "info";     // trace | debug | info | warn | error
  unsigned fuse_threads = 16;         // most FUSE worker threads
  // Deadline of each call into the remote on the FUSE request path (lookup,
  // getattr, open, opendir, statfs): past it the request fails with ETIMEDOUT.
  Duration remote_timeout = std::chrono::seconds(30);  // 100ms..1h

  // Cache store and promoter.
  uint64_t cache_size = 0;             // bytes; 0: 80% of what the cache fs can hold for us
  std::string io_engine = "uring";     // uring | sync
  uint64_t promote_chunk = 1 << 20;    // bytes per read/write, multiple of 4 KiB
  unsigned promote_depth = 8;          // chunks in flight per promotion
  unsigned promote_concurrency = 2;    // promotions at once
  uint64_t promote_buffers = 32ull << 20;  // bytes of chunk buffers, all promotions together
  uint64_t promote_rate = 0;           // bytes/s for all promotions; 0: unlimited
  uint64_t scrub_rate = 32ull << 20;   // bytes/s re-read by the background scrub; 0: off

  // Heat and placement.
  bool probes = true;                  // false: heat from FUSE opens only
  unsigned probe_sample_rate = 0;      // 1 in N probe events to the ring buffer for
                                       // `trace record`; 0: off (records per chunk and tick)
  std::string policy = "hotshard";     // "name;k=v;..."
  bool automatic_placement = true;     // false (manual): only warm/evict/pin copy or drop
  Duration tick = std::chrono::seconds(1);  // placement tick, 10ms..1h

  // Prometheus endpoint: HOST:PORT (IPv4 literal), [IPv6]:PORT, or off.
  std::string metrics = "127.0.0.1:9464";

  // The peer tier (docs/cluster.md): off unless `cluster` is set, which then
  // requires etcd, peer_listen, ns and cluster_token_file.
  std::string cluster;             // cluster name: keys under /hotshard/<cluster>/ in etcd
  std::string etcd;                // "http://HOST:PORT[,http://HOST:PORT...]"
  std::string peer_listen;         // HOST:PORT of this host's peer listener
  std::string peer_advertise;      // HOST:PORT peers dial; default: peer_listen
  std::string ns;                  // namespace: the data set's name, the same on every host
  std::string cluster_token_file;  // the shared secret; mode 0600 (or 0400), owned by us
  std::string peer_id;             // this host in the cluster; default: the hostname
  std::string peer_transports = "rdma,tcp";  // offered, best first; rdma only where present
  Duration peer_timeout = std::chrono::seconds(30);  // one peer fetch, 100ms..1h

  // Set by the supervisor (`hotshard run` holding the mount), never by a user:
  // command-line only (hidden from --help, not in the TOML file). See
  // docs/restart.md, "The worker: adopting a live connection".
  struct Worker {
    // --fuse-fd=N: an inherited /dev/fuse fd already mounted at `mount`; the
    // worker does not mount (nor unmount on a hand-over). -1: mount ourselves.
    int fuse_fd = -1;
    // --remote-fd=N: an inherited fd (O_PATH is enough) of the remote
    // directory, opened before anything was mounted over it; needed when the
    // mount covers the remote's path. -1: open `remote`.
    int remote_fd = -1;
    // --ready-fd=M: the line "ready\n" is written there (then it is closed)
    // once the worker serves requests. -1: sd_notify as usual.
    int ready_fd = -1;
    // --takeover: the connection is live (a predecessor answered FUSE_INIT);
    // adopt it from the state in state_dir. Exit status 3 when that state is
    // missing or belongs to another connection.
    bool takeover = false;
    // --state-dir: where the state a successor adopts lives; default
    // /run/hotshard/takeover/<hash of the mount path>/ (set by finalizeRunConfig).
    std::string state_dir;
  } worker;
};

// The list in a comma-separated option ("a,b" -> {"a", "b"}); empty items dropped.
std::vector<std::string> splitList(const std::string& text);

struct ConfigItem {
  std::string name;  // flag --NAME and TOML key NAME (dashes or underscores)
  std::string help;
  bool is_flag = false;  // a boolean that can be given as a bare flag
  std::function<std::string(const RunConfig&)> get;
  std::function<Status(RunConfig&, const std::string&)> set;
};

const std::vector<ConfigItem>& runConfigItems();

// Applies the TOML file's keys to cfg, except those in `overridden` (given as
// flags). Unknown keys and bad values are errors naming the file and key.
Status applyConfigFile(const std::string& path, const std::set<std::string>& overridden,
                       RunConfig& cfg);

// An example TOML file: every item, its help as a comment and its default as a
// commented-out `key = value` line (what `hotshard run --print-config` prints and
// tools/hotshard.toml.example holds).
std::string exampleConfigToml();

// Fills defaults that depend on other items and checks the whole.
Status finalizeRunConfig(RunConfig& cfg);

// Where the daemon for `mount` listens: /run/hotshard/<mount with / as _>.sock
std::string controlSocketFor(const std::string& mount);
inline constexpr const char* kRunDir = "/run/hotshard";
inline constexpr const char* kLogDir = "/var/log/hotshard";
// The default --state-dir for a mount: /run/hotshard/takeover/<16 hex digits of
// a hash (FNV-1a 64) of the normal mount path>.
std::string takeoverStateDirFor(const std::string& mount);

}  // namespace hotshard
