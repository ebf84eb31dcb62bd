// Placement: the daemon's loop from heat to copies. Each tick it drains the
// probes' per-chunk counts (or, degraded, takes FUSE opens as heat), attributes
// them to shards through the backing files fuse/ reported at open (the remote
// file or the cache copy), updates per-shard heat and per-job totals, feeds the
// policy, and applies its promotions and evictions within the tick's byte budget.
// It also answers `top`, `policy show|set` and `trace record`.
//
// Lock order: Placement::mu_ before the policy's use; never held while calling
// into the store or promoter (the store's eviction hook takes mu_ under the
// store's lock, so the store is never called with mu_ held).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon/cache_service.h"
#include "daemon/control.h"
#include "daemon/status.h"
#include "base/result.h"
#include "policy/policy.h"
#include "policy/trace.h"

namespace hotshard {
namespace bpf {
class HeatProbes;
}

struct PlacementOptions {
  double tick_seconds = 1.0;
  std::string policy = "hotshard";  // "name;k=v;..." as `hotshard policy simulate` takes it
  bool probes = true;               // false: degraded by configuration
  bool automatic = true;            // false: heat and policy are kept, nothing is copied
  uint64_t promote_budget_per_tick = 0;  // bytes; 0: from the promotion rate, else 1 GiB
  uint64_t chunk_bytes = 16ull << 20;
  uint32_t sample_rate = 0;  // probes' ring-buffer sampling, for trace record
  double heat_half_life_seconds = 300;
  size_t top_jobs = 8;  // per-job totals beyond these are summed as "other"
};

class Placement {
 public:
  static Result<std::unique_ptr<Placement>> start(const PlacementOptions& opts, CacheService* cache,
                                                  const std::vector<dev_t>& watch_devices);
  ~Placement();

  // From fuse (through CacheService::opened): rel_path is open on a backing file.
  void noteOpen(const std::string& rel_path, const struct stat& backing, bool from_cache,
                bool for_write);

  // Its part of the status: probes, heat, jobs (the top_jobs, then "other"),
  // policy and placement. Leaves the other sections of status as they are.
  void fillStatus(StatusSnapshot& status) const;
  // The n hottest shards, hottest first (ties: most recently read first).
  std::vector<ShardRow> top(size_t n) const;
  void addHandlers(std::map<std::string, ControlServer::Handler>& handlers);

  // One tick now (tests drive it; the loop calls it every tick_seconds).
  void tick();

 private:
  struct Shard {
    policy::ObjectId id = 0;
    uint64_t size = 0;
    uint64_t remote_read = 0, remote_missed = 0, cache_read = 0, cache_missed = 0, faults = 0;
    uint64_t tick_read = 0, tick_missed = 0;  // since the last tick, for the policy
    uint64_t opens = 0;
    double heat = 0;
    uint64_t last_ns = 0;
  };
  struct Backing {
    std::string rel;
    bool is_cache = false;
  };
  struct Job {
    uint64_t bytes_read = 0, bytes_missed = 0;
  };

  Placement() = default;
  void loop();
  void decayLocked(double now_s);
  // Makes the policy count every copy the store holds (warm, or a restart, put
  // copies there without it). Takes mu_; call without it.
  void reconcileResidents();
  Result<json> policySet(const std::string& spec);
  Result<json> traceRecord(const json& req);

  PlacementOptions opts_;
  CacheService* cache_ = nullptr;
  std::unique_ptr<bpf::HeatProbes> probes_;
  std::string probes_reason_;

  mutable std::mutex mu_;  // guards everything below
  std::unique_ptr<policy::Policy> policy_;
  std::unordered_map<std::string, Shard> shards_;
  std::unordered_map<policy::ObjectId, std::string> rel_of_;
  std::map<std::pair<dev_t, ino_t>, Backing> backings_;
  std::map<std::string, Job> jobs_;
  uint64_t ticks_ = 0, promotions_ = 0, evictions_ = 0, promotion_failures_ = 0;
  uint64_t unattributed_bytes_ = 0;
  double last_decay_s_ = 0;
  policy::TraceWriter* trace_ = nullptr;  // while `trace record` runs
  uint64_t trace_records_ = 0;

  std::mutex tick_mu_;  // one tick at a time
  std::atomic<bool> stopping_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::thread thread_;
};

}  // namespace hotshard
