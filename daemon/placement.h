// Placement: the daemon's loop from heat to copies. Each tick it drains its
// HeatSource (the eBPF probes, or degraded, FUSE opens), attributes the bytes to
// shards through the backing files fuse/ reported at open (the remote file or
// the cache copy), updates per-shard totals and per-job totals, feeds the
// policy, and applies its evictions and promotions within the tick's byte
// budget. It also answers `top`, `policy show|set` and `trace record`.
//
// The policy is the one eviction authority: placement evicts the policy's
// victims itself (CacheStore::evictIdle, which refuses pinned and open copies)
// and hands the store the policy's order each tick, which the store's watermark
// eviction (its safety net) follows. Every copy that left the store since the
// last hand-over, whatever took it (the watermarks, `hotshard evict`, verify or
// the scrub, an invalidation, a stale open), comes back with the next one and
// leaves the policy's books, so a file read again is promoted again.
//
// Lock order: tick_mu_ before mu_. mu_ guards placement's state and the
// policy; it is never held while calling the store, the promoter or the heat
// source, and the store calls nothing back (no hook runs under its lock), so
// Placement::mu_ and CacheStore's lock are never held together. Promotion
// completions take Alive::mu, then mu_, on the promoter's worker thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/result.h"
#include "daemon/cache_store.h"
#include "daemon/control.h"
#include "daemon/heat_source.h"
#include "daemon/status.h"
#include "daemon/promoter.h"
#include "fuse/cache_hooks.h"
#include "policy/policy.h"
#include "policy/trace.h"

namespace hotshard {

struct PlacementOptions {
  double tick_seconds = 1.0;             // <= 0: no loop; the owner calls tick() (tests)
  std::string policy = "hotshard";       // "name;k=v;..." as `hotshard policy simulate` takes it
  bool automatic = true;                 // false: heat and policy are kept, nothing is copied
  uint64_t promote_budget_per_tick = 0;  // bytes; 0: 1 GiB
  size_t top_jobs = 8;                   // per-job totals beyond these are summed as "other"
};

// What placement works with, built by its creator. store and promoter must
// outlive the Placement.
struct PlacementDeps {
  CacheStore* store = nullptr;
  Promoter* promoter = nullptr;
  std::unique_ptr<HeatSource> heat;
};

class Placement {
 public:
  // Builds the policy within the store's high watermark, counts the copies the
  // store already holds, and starts the tick loop (unless tick_seconds <= 0).
  static Result<std::unique_ptr<Placement>> start(const PlacementOptions& opts, PlacementDeps deps);
  ~Placement();  // stop(), then joins the loop
  // Ends the tick loop and any `trace record` early (it writes what it has).
  // Thread-safe; the daemon calls it before stopping the control socket.
  void stop();

  // From fuse (through CacheService::opened): rel_path is open on a backing file.
  void noteOpen(const std::string& rel_path, const struct stat& backing, bool from_cache,
                bool for_write);
  // From fuse (through CacheService::invalidate): rel_path was truncated, unlinked,
  // renamed away or changed in place. While a trace is recorded, a record with the
  // matching policy/trace.h flag, for a file placement has seen opened (the
  // simulator has nothing to drop for any other).
  void noteChange(const std::string& rel_path, const fuse::Change& change);

  // Its part of the status: probes, heat, jobs (the top_jobs, then "other"),
  // policy and placement. Leaves the other sections of status as they are.
  void fillStatus(StatusSnapshot& status) const;
  // The n hottest shards, hottest first (ties: most recently read first).
  std::vector<ShardRow> top(size_t n) const;
  // Cluster mode: who owns a path (the peer tier's rendezvous), for top's
  // owner column. Set before the control socket and the metrics serve.
  using OwnerOf = std::function<std::string(const std::string& rel_path)>;
  void setOwnerOf(OwnerOf owner_of) { owner_of_ = std::move(owner_of); }
  void addHandlers(std::map<std::string, ControlServer::Handler>& handlers);

  // One tick now (tests drive it; the loop calls it every tick_seconds).
  void tick();
  // The policy's capacity: the store's capacity at its high watermark, less 1%.
  uint64_t policyCapacity() const;

 private:
  OwnerOf owner_of_;
  struct Shard {
    policy::ObjectId id = 0;
    uint64_t size = 0;
    uint32_t dataset = 0;  // policy::datasetOf(its path): its top-level directory
    uint64_t remote_read = 0, remote_missed = 0, cache_read = 0, cache_missed = 0, faults = 0;
    uint64_t tick_read = 0, tick_missed = 0;  // since the last tick, for the policy
    uint64_t opens = 0;
    uint64_t last_ns = 0;  // latest read or open attributed to it
  };
  struct Backing {
    std::string rel;
    bool is_cache = false;
  };
  struct Job {
    uint64_t bytes_read = 0, bytes_missed = 0;
  };

  // A shard read this tick, as the policy was told.
  struct Active {
    std::string rel;
    policy::Access access;
  };
  struct Decisions {
    std::vector<std::pair<policy::ObjectId, std::string>> promote, evict;
  };

  Placement() = default;
  Status init(PlacementDeps deps);
  void loop();
  // The tick's steps, in order. attribute() and feedPolicy() take mu_;
  // attribute() returns the bytes the jobs missed on remote backings.
  HeatBatch drainHeat();
  uint64_t attribute(const HeatBatch& batch, uint64_t now);
  std::vector<Active> feedPolicy(uint64_t now);
  Decisions plan(std::vector<Active> active);
  // promote_budget_per_tick, or 1 GiB when it is 0 (unlimited).
  int64_t promoteBudgetPerTick() const {
    return static_cast<int64_t>(opts_.promote_budget_per_tick ? opts_.promote_budget_per_tick
                                                              : 1ull << 30);
  }
  // This tick's promotion budget for `candidates` (under mu_); see promote_credit_.
  uint64_t tickBudgetLocked(const std::vector<policy::Access>& candidates);
  void applyEvictions(const Decisions& d, uint64_t now);
  void applyPromotions(const Decisions& d);
  // A promotion placement asked for ended (on the promoter's worker).
  void promotionDone(policy::ObjectId id, const std::string& rel, const Status& result);
  // Hands the store the policy's eviction order; every copy the store dropped
  // since the last hand-over leaves the policy's books.
  void syncEvictionOrder();
  void attributeLocked(const FileHeat& f, uint64_t now);
  // Makes the policy count every copy the store holds (warm, or a restart, put
  // copies there without it). Takes mu_; call without it.
  void reconcileResidents();
  Result<json> policySet(const std::string& spec);
  Result<json> traceRecord(const json& req);
  Result<uint64_t> recordSamples(policy::TraceWriter& writer, double duration);

  PlacementOptions opts_;
  CacheStore* store_ = nullptr;
  Promoter* promoter_ = nullptr;
  std::unique_ptr<HeatSource> heat_;
  bool degraded_ = false;         // heat_->health().degraded, fixed at start
  uint64_t policy_capacity_ = 0;  // what the policy was built with
  uint64_t eviction_span_ = 0;    // bytes of the policy's order handed to the store

  mutable std::mutex mu_;  // guards everything below
  std::unique_ptr<policy::Policy> policy_;
  std::unordered_map<std::string, Shard> shards_;
  std::unordered_map<policy::ObjectId, std::string> rel_of_;
  std::map<std::pair<dev_t, ino_t>, Backing> backings_;
  std::map<std::string, Job> jobs_;
  uint64_t ticks_ = 0, promotions_ = 0, evictions_ = 0, promotion_failures_ = 0;
  uint64_t unattributed_bytes_ = 0;
  // Promotion bytes the ticks may still plan: topped up by one tick's budget
  // each tick, never above it. A file larger than a whole tick's budget is
  // planned on its own when the credit is whole, and the credit goes below zero
  // until later ticks have paid for it: large files get promoted, and over time
  // the plan keeps to promote_budget_per_tick.
  int64_t promote_credit_ = 0;
  policy::TraceWriter* trace_ = nullptr;  // while `trace record` runs
  bool trace_samples_ = false;            // ... in sample mode: ticks write no records
  uint64_t trace_records_ = 0;

  std::mutex tick_mu_;  // one tick at a time
  uint64_t last_tick_ns_ = 0;  // guarded by tick_mu_
  std::atomic<bool> stopping_{false};
  std::mutex wake_mu_;
  std::condition_variable wake_;
  std::thread thread_;
  // What promotion callbacks reach placement through: they may run after it is
  // gone (the promoter calls them when it shuts down, and it outlives us).
  struct Alive {
    explicit Alive(Placement* p) : placement(p) {}
    std::mutex mu;  // before mu_
    Placement* placement;
  };
  std::shared_ptr<Alive> alive_ = std::make_shared<Alive>(this);
};

}  // namespace hotshard
