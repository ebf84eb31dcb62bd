// The daemon's status as types: one snapshot that each component fills with its
// part (the file system, CacheService::fillStatus, Placement::fillStatus), that
// the metrics exporter reads at every scrape, and that `hotshard status|top`
// print. Its JSON (`hotshard status --json`, the control replies "status" and
// "top") is written and read by the one to_json/from_json pair below, from the
// key list each struct gives in fields(): a key is spelt once, here.
//
// Every field is optional: a status read back from JSON (an older daemon, a
// partial reply such as "top"'s) may lack any of them, and a field that is
// absent gives no metric series rather than a misleading zero. from_json never
// throws: a field of the wrong type reads as absent. Counts are since the daemon
// started; sizes are bytes.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace hotshard {

using json = nlohmann::json;

template <class T>
using Opt = std::optional<T>;

// "fuse": what the file system and its passthrough shim counted.
struct FuseStatus {
  Opt<std::map<std::string, uint64_t>> requests;  // FUSE requests received, by op ("lookup", ...)
  Opt<uint64_t> inodes;                           // inodes the kernel holds through the mount
  Opt<uint64_t> opens_passthrough, opens_userspace;  // opens by how their I/O is served
  Opt<uint64_t> opens_cache, opens_remote;           // opens by the file backing them
  Opt<uint64_t> cache_conflicts;       // opens that fell back to the remote: a writer held it
  Opt<uint64_t> userspace_read_bytes;  // bytes read for opens served in user space
  // Remote calls past --remote-timeout (answered ETIMEDOUT), refused at once
  // (EIO: every remote worker blocked), and workers still blocked in the remote.
  Opt<uint64_t> remote_timeouts, remote_refused, remote_calls_blocked;
  // Opens that reused a backing file kept registered since the inode's last
  // release, and such idle backings kept now.
  Opt<uint64_t> opens_reused, idle_backings;
  // The inodes' O_PATH fds open now (fuse/inode_table.h: a bounded cache, the
  // root's included), and walks that opened an inode's fd again from its names.
  Opt<uint64_t> inode_fds, path_walks;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("requests", s.requests);
    f("inodes", s.inodes);
    f("opens_passthrough", s.opens_passthrough);
    f("opens_userspace", s.opens_userspace);
    f("opens_cache", s.opens_cache);
    f("opens_remote", s.opens_remote);
    f("cache_conflicts", s.cache_conflicts);
    f("userspace_read_bytes", s.userspace_read_bytes);
    f("remote_timeouts", s.remote_timeouts);
    f("remote_refused", s.remote_refused);
    f("remote_calls_blocked", s.remote_calls_blocked);
    f("opens_reused", s.opens_reused);
    f("idle_backings", s.idle_backings);
    f("inode_fds", s.inode_fds);
    f("path_walks", s.path_walks);
  }
};

// "cache.promoter": Promoter::Stats. Every "failed_X" key is one failure reason X
// (the metrics export each as hotshard_promotion_failures_total{reason="X"}).
struct PromoterStatus {
  Opt<uint64_t> started, published, already_cached;  // promotions
  Opt<uint64_t> linked;  // promotions that shared a hard link's copy instead of copying
  // The remote file went before or during the copy (rsync's temp files): no failure.
  Opt<uint64_t> vanished;
  Opt<uint64_t> failed_stale, failed_no_space, failed_remote_io, failed_cache_io;
  Opt<uint64_t> queued;        // waiting for a promoter slot now
  Opt<uint64_t> bytes_copied;  // bytes
  // Bytes promotions read, by source: the remote file's page cache (what the
  // jobs' reads had brought in) or the remote itself.
  Opt<uint64_t> read_page_cache_bytes, read_remote_bytes;
  Opt<uint64_t> yields;  // chunks that waited for the jobs' reads of the remote

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("started", s.started);
    f("published", s.published);
    f("already_cached", s.already_cached);
    f("linked", s.linked);
    f("vanished", s.vanished);
    f("failed_stale", s.failed_stale);
    f("failed_no_space", s.failed_no_space);
    f("failed_remote_io", s.failed_remote_io);
    f("failed_cache_io", s.failed_cache_io);
    f("queued", s.queued);
    f("bytes_copied", s.bytes_copied);
    f("read_page_cache_bytes", s.read_page_cache_bytes);
    f("read_remote_bytes", s.read_remote_bytes);
    f("yields", s.yields);
  }
};

// "cache.scrub": present only when the background scrub runs.
struct ScrubStatus {
  Opt<uint64_t> passes, objects_checked, objects_dropped;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("passes", s.passes);
    f("objects_checked", s.objects_checked);
    f("objects_dropped", s.objects_dropped);
  }
};

// "cache": the cache store (CacheStore::Stats) and its promoter and scrub.
struct CacheStatus {
  Opt<uint64_t> used_bytes, capacity_bytes;  // bytes
  Opt<uint64_t> objects, promotions_in_flight, pinned_objects;
  Opt<uint64_t> evictions, stale_drops, invalidations, corrupt_drops;  // objects
  Opt<PromoterStatus> promoter;
  Opt<ScrubStatus> scrub;
  // The cache disk (CacheStore::health()): false from the first disk fault
  // (EIO, EROFS, ...) until a probe succeeds; disk_error is that fault, and
  // disk_since the last change, unix seconds (absent before any).
  Opt<bool> disk_healthy;
  Opt<std::string> disk_error;
  Opt<uint64_t> disk_since;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("disk_healthy", s.disk_healthy);
    f("disk_error", s.disk_error);
    f("disk_since", s.disk_since);
    f("used_bytes", s.used_bytes);
    f("capacity_bytes", s.capacity_bytes);
    f("objects", s.objects);
    f("promotions_in_flight", s.promotions_in_flight);
    f("pinned_objects", s.pinned_objects);
    f("evictions", s.evictions);
    f("stale_drops", s.stale_drops);
    f("invalidations", s.invalidations);
    f("corrupt_drops", s.corrupt_drops);
    f("promoter", s.promoter);
    f("scrub", s.scrub);
  }
};

// "probes": mode "bpf" (with the counters and programs) or "degraded" (with reason).
struct ProbeStatus {
  Opt<std::string> mode;    // "bpf" | "degraded"
  Opt<std::string> reason;  // why degraded
  Opt<uint64_t> events;     // tracepoint events on the watched devices
  Opt<uint64_t> lost_updates;
  Opt<uint64_t> attached;                  // programs attached
  Opt<std::vector<std::string>> programs;  // "tracepoint:kind"
  Opt<std::vector<std::string>> skipped;   // "filemap:foo: not found" and the like

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("mode", s.mode);
    f("reason", s.reason);
    f("events", s.events);
    f("lost_updates", s.lost_updates);
    f("attached", s.attached);
    f("programs", s.programs);
    f("skipped", s.skipped);
  }
};

// "heat": bytes jobs read through the mount. bytes_read_X: requested from files
// backed by X, page-cache hits included; bytes_missed_X: the part read from X.
struct HeatStatus {
  Opt<uint64_t> bytes_read_remote, bytes_missed_remote, bytes_read_cache, bytes_missed_cache;
  Opt<uint64_t> remote_bytes_avoided;  // read off the cache copy instead of the remote
  Opt<uint64_t> unattributed_bytes;    // seen on watched devices, no file of the mount
  Opt<uint64_t> shards;                // files placement keeps heat for

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("bytes_read_remote", s.bytes_read_remote);
    f("bytes_missed_remote", s.bytes_missed_remote);
    f("bytes_read_cache", s.bytes_read_cache);
    f("bytes_missed_cache", s.bytes_missed_cache);
    f("remote_bytes_avoided", s.remote_bytes_avoided);
    f("unattributed_bytes", s.unattributed_bytes);
    f("shards", s.shards);
  }
};

// One entry of "jobs": a cgroup path (the top jobs, then "other").
struct JobStatus {
  Opt<std::string> cgroup;
  Opt<uint64_t> bytes_read, bytes_missed;  // bytes

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("cgroup", s.cgroup);
    f("bytes_read", s.bytes_read);
    f("bytes_missed", s.bytes_missed);
  }
};

// "policy"; also the reply of policy_show (with available) and policy_set (with
// residents).
struct PolicyStatus {
  Opt<std::string> name;
  Opt<std::string> spec;                           // "name;k=v;..."
  Opt<std::map<std::string, std::string>> params;  // k -> v
  Opt<std::map<std::string, double>> counters;     // the policy's own, by name
  Opt<std::vector<std::string>> available;         // policy_show: every policy name
  Opt<uint64_t> residents;                         // policy_set: objects the policy keeps

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("name", s.name);
    f("spec", s.spec);
    f("params", s.params);
    f("counters", s.counters);
    f("available", s.available);
    f("residents", s.residents);
  }
};

// "placement": the placement loop.
struct PlacementStatus {
  Opt<bool> automatic;       // false: --placement manual
  Opt<double> tick_seconds;  // seconds
  Opt<uint64_t> ticks, promotions, promotion_failures, evictions;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("automatic", s.automatic);
    f("tick_seconds", s.tick_seconds);
    f("ticks", s.ticks);
    f("promotions", s.promotions);
    f("promotion_failures", s.promotion_failures);
    f("evictions", s.evictions);
  }
};

// One entry of "cluster.members": a live member as registered in etcd.
struct MemberStatus {
  Opt<std::string> id, address;                // address: HOST:PORT of its peer listener
  Opt<std::vector<std::string>> transports;    // offered, best first
  Opt<uint64_t> capacity_bytes;                // its cache's capacity, bytes
  Opt<bool> self;                              // this host

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("id", s.id);
    f("address", s.address);
    f("transports", s.transports);
    f("capacity_bytes", s.capacity_bytes);
    f("self", s.self);
  }
};

// One entry of "cluster.fetched": bytes fetched from one peer over one transport.
struct PeerTrafficStatus {
  Opt<std::string> peer, transport;
  Opt<uint64_t> bytes, fetches;  // payload bytes; objects published

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("peer", s.peer);
    f("transport", s.transport);
    f("bytes", s.bytes);
    f("fetches", s.fetches);
  }
};

// "cluster": the peer tier (docs/cluster.md); present only with --cluster.
struct ClusterStatus {
  Opt<std::string> name, ns, id, address;  // ns: --namespace; id, address: this host's
  Opt<bool> connected;         // etcd answered and our lease is alive
  Opt<std::string> alone_reason;  // why not connected (hosts go on alone)
  Opt<std::vector<MemberStatus>> members;  // live members of the namespace, self included
  Opt<std::vector<PeerTrafficStatus>> fetched;  // from peers, by peer and transport
  Opt<uint64_t> fetched_bytes;  // all of fetched, bytes
  // Fetches that fell back to the remote, by reason ("not_found", "stale",
  // "busy", "corrupt", "refused", "protocol", "no_space", "io", "other").
  Opt<std::map<std::string, uint64_t>> fetch_failures;
  Opt<uint64_t> owner_promotions;  // opens of keys this host owns that promoted at once
  // The listener: bytes and objects served to peers, connections refused
  // (bad token), protocol errors, requests answered without an object.
  Opt<uint64_t> served_bytes, served_objects, refused, protocol_errors, not_served;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("name", s.name);
    f("namespace", s.ns);
    f("id", s.id);
    f("address", s.address);
    f("connected", s.connected);
    f("alone_reason", s.alone_reason);
    f("members", s.members);
    f("fetched", s.fetched);
    f("fetched_bytes", s.fetched_bytes);
    f("fetch_failures", s.fetch_failures);
    f("owner_promotions", s.owner_promotions);
    f("served_bytes", s.served_bytes);
    f("served_objects", s.served_objects);
    f("refused", s.refused);
    f("protocol_errors", s.protocol_errors);
    f("not_served", s.not_served);
  }
};

// One row of "top" (Placement::top): a shard by heat. Always complete.
struct ShardRow {
  std::string path;  // relative to the remote root
  double heat = 0;   // decayed bytes, misses weighted above hits
  uint64_t size = 0, bytes_read = 0, remote_read_bytes = 0, remote_miss_bytes = 0;  // bytes
  uint64_t cache_bytes = 0;  // bytes read from the cache copy
  uint64_t mmap_faults = 0, opens = 0;
  std::string state;  // "cached" | "promoting" | "remote"
  bool pinned = false;
  std::string owner;  // cluster mode: the member owning it (rendezvous); "" otherwise

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("path", s.path);
    f("heat", s.heat);
    f("size", s.size);
    f("bytes_read", s.bytes_read);
    f("remote_read_bytes", s.remote_read_bytes);
    f("remote_miss_bytes", s.remote_miss_bytes);
    f("cache_bytes", s.cache_bytes);
    f("mmap_faults", s.mmap_faults);
    f("opens", s.opens);
    f("state", s.state);
    f("pinned", s.pinned);
    f("owner", s.owner);
  }
};

// "supervisor": the process that holds the mount and runs this daemon as its
// worker (daemon/supervisor.h); absent with --no-supervisor.
struct SupervisorStatus {
  Opt<int64_t> pid;                   // the supervisor's pid (the daemon's own: StatusSnapshot.pid)
  Opt<uint64_t> takeovers;            // workers replaced without unmounting, since the mount
  Opt<std::string> last_takeover;     // why the last one went ("worker 812 killed by SIGKILL")

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("pid", s.pid);
    f("takeovers", s.takeovers);
    f("last_takeover", s.last_takeover);
  }
};

// The whole status: the reply of "status" and each metrics scrape.
struct StatusSnapshot {
  Opt<std::string> version;
  Opt<int64_t> pid;
  Opt<std::string> mount, remote, cache_dir;  // paths
  Opt<bool> overmount;                        // mounted over the remote's own path
  Opt<bool> passthrough;                      // opens answered with kernel passthrough
  Opt<std::string> passthrough_reason, consistency;
  Opt<FuseStatus> fuse;
  Opt<CacheStatus> cache;
  Opt<ProbeStatus> probes;
  Opt<HeatStatus> heat;
  Opt<std::vector<JobStatus>> jobs;
  Opt<PolicyStatus> policy;
  Opt<PlacementStatus> placement;
  Opt<std::vector<ShardRow>> top;  // the hottest few
  Opt<ClusterStatus> cluster;
  Opt<SupervisorStatus> supervisor;

  template <class Self, class F>
  static void fields(Self& s, F&& f) {
    f("version", s.version);
    f("pid", s.pid);
    f("mount", s.mount);
    f("remote", s.remote);
    f("cache_dir", s.cache_dir);
    f("overmount", s.overmount);
    f("passthrough", s.passthrough);
    f("passthrough_reason", s.passthrough_reason);
    f("consistency", s.consistency);
    f("fuse", s.fuse);
    f("cache", s.cache);
    f("probes", s.probes);
    f("heat", s.heat);
    f("jobs", s.jobs);
    f("policy", s.policy);
    f("placement", s.placement);
    f("top", s.top);
    f("cluster", s.cluster);
    f("supervisor", s.supervisor);
  }
};

// A struct above: one that lists its fields.
template <class T>
concept StatusRecord = requires(T& t) {
  T::fields(t, [](const char*, auto&) {});
};

namespace status_json {

// Lenient readers: true and v set when j has a usable value, else false and v
// untouched. Strings take any scalar (numbers and bools as their JSON text);
// counts take non-negative numbers and bools (0/1).
bool read(const json& j, std::string& v);
bool read(const json& j, uint64_t& v);
bool read(const json& j, int64_t& v);
bool read(const json& j, double& v);
bool read(const json& j, bool& v);

template <StatusRecord T>
bool read(const json& j, T& v);

template <class V>
bool read(const json& j, std::map<std::string, V>& m) {
  if (!j.is_object()) return false;
  for (const auto& [k, item] : j.items()) {
    V x{};
    if (read(item, x)) m[k] = std::move(x);
  }
  return true;
}

template <class V>
bool read(const json& j, std::vector<V>& v) {
  if (!j.is_array()) return false;
  for (const auto& item : j) {
    V x{};
    if (read(item, x)) v.push_back(std::move(x));
  }
  return true;
}

template <class T>
void readField(const json& j, Opt<T>& field) {
  T x{};
  if (read(j, x)) field = std::move(x);
}
template <class T>
void readField(const json& j, T& field) {
  (void)read(j, field);
}

template <class T>
void writeField(json& j, const char* key, const Opt<T>& field) {
  if (field) j[key] = *field;
}
template <class T>
void writeField(json& j, const char* key, const T& field) {
  j[key] = field;
}

template <StatusRecord T>
bool read(const json& j, T& v) {
  if (!j.is_object()) return false;
  T::fields(v, [&](const char* key, auto& field) {
    if (auto it = j.find(key); it != j.end()) readField(*it, field);
  });
  return true;
}

}  // namespace status_json

// The one JSON form of every type above (nlohmann finds these by ADL). to_json
// writes the fields that are set, under the keys fields() names.
template <StatusRecord T>
void to_json(json& j, const T& v) {
  j = json::object();
  T::fields(v, [&](const char* key, const auto& field) { status_json::writeField(j, key, field); });
}
template <StatusRecord T>
void from_json(const json& j, T& v) {
  v = T{};
  (void)status_json::read(j, v);
}

}  // namespace hotshard
