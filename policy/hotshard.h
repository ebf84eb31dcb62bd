// hotshard: the default placement policy. Value-per-byte with admission control.
//
// Heat: each object carries an exponentially decayed sum of the bytes read from it,
// remote-miss bytes weighted above page-cache hits (miss_weight, hit_weight). The
// decay clock runs on bytes read, not on wall time, so idle hours erase nothing and
// the behaviour does not depend on a trace's time scale. The half-life is the larger
// of half_life x capacity and reuse_factor x the mean reuse distance (bytes read
// between two reads of the same object): memory must span many reuses, or objects
// read at the same long-run rate (shuffled epochs, several jobs) differ in heat by
// mere Poisson noise and the cache churns. Heat is remembered for recently seen
// non-resident objects too (a bounded history).
//
// Idle detection: each object also keeps its own reuse distance (a running mean). A
// resident idle for more than idle_gaps of its reuse distances (its own, at least the
// mean one, and against a newcomer at least the newcomer's) counts half its heat per
// further reuse distance, in the eviction order and against newcomers: the old hot set
// after a popularity shift, or the data of a finished job, stops standing in the way
// within a few of its own reuse distances, instead of after the long half-life that
// keeps shuffled epochs stable. Live objects read at the same rate are left alone: the
// threshold sits far in the tail of their gaps, and it is off until the mean reuse
// distance has averaged a full window of reuses (before that it is biased short; with
// reuse_factor=0 it is never measured, so idle detection stays off). A round-robin
// sweep re-keys two residents per access, so idle ones sink in the heap (keys
// otherwise only rise, lazily).
//
// Finished data sets (dataset_idle): each read carries its data set (Access::dataset,
// the top-level directory: one training job's files, the models, the checkpoints). Per
// data set the policy keeps its longest gap: the bytes read by everything between two
// of its reads, its own read included. A data set not read for more than dataset_idle
// of its longest gaps is finished, its job has ended: its residents count heat 0 (first
// in the eviction order) and their room counts as free space, so a newcomer that fits
// in free space plus that room is admitted as into free space, without having to beat
// anyone. A read of a finished data set makes it active again. Why the longest gap: a
// job that pauses (an evaluation, a checkpoint) has shown how long it pauses, and
// dataset_idle of those is far beyond its pauses; a job that ended is seen within
// dataset_idle x (its longest gap) bytes, where per-object idleness waits for several
// of the object's own reuse distances (an epoch each), often longer than the other
// jobs run. The cost of being wrong is bounded: a data set whose first long pause
// comes before any gap that long has been seen (an eval set read once, then idle for
// hundreds of training reads) counts as finished once and loses its room; its next
// read makes it live again, and its files, whose heat is remembered, come back by the
// usual admission. Unknown data sets (0: old traces, files at the top level) never
// finish.
// This is fairness between data sets where it matters most: a dead job's data never
// holds the room of the live ones (first-come lock-in), whatever its heat. Between
// data sets that are all being read, heat per byte decides, with no fixed shares.
//
// Eviction order: heat per byte of the object (lowest first), kept in an indexed heap
// whose keys are refreshed lazily, only near the top. For whole reads this orders by
// access rate, the greedy knapsack order for bytes saved from the remote.
//
// Admission: a missed object is promoted only if
//   - it fits, and has had at least min_read_ratio x its size read in total, so a huge
//     file whose header alone is read again and again is never copied whole;
//   - it fits in free space, or its heat *before* this access exceeds (1 + hysteresis)
//     times the heat of the coldest residents it would displace (each victim's whole
//     heat, since it leaves whole), plus `margin` full reads. Counting only
//     earlier reads makes a one-off scan worthless (no earlier reads), and comparing
//     against the coldest residents with a margin keeps a stable subset under
//     epoch-shuffled training reads, where every shard is read once per epoch and
//     LRU-like policies churn the whole cache without a single hit. Victims count their
//     live heat (after the idle penalty).
//
// Related work: GDSF (Cherkasova, "Improving WWW proxies performance with
// Greedy-Dual-Size-Frequency caching policy", HP Labs 1998) for value per byte,
// TinyLFU (Einziger et al., "TinyLFU: A Highly Efficient Cache Admission Policy",
// ACM ToS 2017) for frequency-based admission against the eviction victim; the idle
// test is the inter-reference-gap idea of LRFU/LIRS (Jiang and Zhang, "LIRS: An
// Efficient Low Inter-reference Recency Set Replacement Policy", SIGMETRICS 2002).
#pragma once

#include <deque>
#include <unordered_map>

#include "policy/detail.h"
#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

class HotshardPolicy final : public Policy {
 public:
  struct Config {
    double half_life = 64;     // heat halves every half_life x capacity bytes read
    double miss_weight = 1.0;  // weight of a byte fetched from the remote
    double hit_weight = 0.25;  // weight of a byte served by the page cache
    double hysteresis = 0.5;  // a newcomer's heat must exceed (1 + hysteresis) x the displaced heat
    double margin = 2.0;      // ... plus this many full reads of itself
    double min_read_ratio = 1.0;  // bytes read (all time) over size before a promotion
    double history = 4;           // non-resident objects remembered, x max(residents, 1024)
    double reuse_factor = 16;     // half-life at least this many mean reuse distances
    double idle_gaps = 6;  // idle past this many reuse distances: heat halves per further one
    double dataset_idle = 8;  // a data set unread for this many of its longest gaps is finished
    void bind(ParamTable& t) {
      t.add("half_life", &half_life, "heat halves every half_life x capacity bytes read, > 0")
          .add("miss_weight", &miss_weight, "heat per byte read from the remote, > 0")
          .add("hit_weight", &hit_weight, "heat per byte served by the page cache, >= 0")
          .add("hysteresis", &hysteresis,
               "a newcomer's heat must exceed (1 + hysteresis) x the displaced residents', >= 0")
          .add("margin", &margin, "... plus this many full remote reads of the newcomer, >= 0")
          .add("min_read_ratio", &min_read_ratio,
               "bytes read over object size needed before a promotion, >= 0")
          .add("reuse_factor", &reuse_factor,
               "the half-life stretches to this many mean reuse distances (bytes read between "
               "two reads of an object), >= 0; 0 keeps it at half_life")
          .add("idle_gaps", &idle_gaps,
               "a resident idle for more than this many of its reuse distances (its own "
               "average, at least the mean) counts half its heat per further one, >= 0; 0: off")
          .add("dataset_idle", &dataset_idle,
               "a data set (Access::dataset) not read for more than this many of its longest "
               "gaps between two of its reads (bytes read by all) is finished: its residents "
               "count as free room, >= 0; 0: off")
          .add("history", &history,
               "non-resident objects remembered, as a multiple of max(residents, 1024), >= 0");
    }
    Status validate() const;
  };

  HotshardPolicy(std::uint64_t capacity, Config config);
  explicit HotshardPolicy(std::uint64_t capacity) : HotshardPolicy(capacity, Config()) {}

  std::string_view name() const noexcept override { return "hotshard"; }
  std::vector<std::string> params() const override { return currentParams(config_); }
  void recordAccess(const Access& access) noexcept override;
  bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept override;
  void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept override;
  void remove(ObjectId id) noexcept override;
  void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept override;
  bool contains(ObjectId id) const noexcept override;
  void prefetch(ObjectId id, int stage) const noexcept override;
  void residents(std::vector<Resident>& out) const override;
  void visitExtraCounters(const CounterVisitor& visit) const override;

  // Current heat of an object (decayed weighted bytes, the numerator of the eviction
  // order's heat per byte), also remembered for non-residents; 0 when unknown.
  double heat(ObjectId id) const noexcept override;

 private:
  // One cache line per object: the simulator's speed is its memory traffic.
  struct alignas(64) Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
    double log_heat = detail::kLogZero;   // scaled to the clock, see detail::logAdd
    double log_prior = detail::kLogZero;  // log_heat before the latest access
    double last_read_at = -1;             // bytes_clock_ at its latest read
    float bytes_read = 0;                 // all time, for min_read_ratio
    float log_size = 0;                   // log2(max(size, 1)), cached for density()
    std::uint32_t ghost_seq = 0;          // != 0 while non-resident and in history_
    float gap = 0;                        // its reuse distance (bytes, running mean); 0: none yet
    std::uint32_t dataset = 0;            // Access::dataset of its latest read
    bool resident = false;
  };
  static_assert(sizeof(Node) == 64);
  // A data set's reads, to tell when the job reading it has ended (dataset_idle).
  struct Dataset {
    double last_read_at = -1;         // bytes_clock_ after its latest read
    double longest_gap = 0;           // bytes read by all between two of its reads, its own included
    std::uint64_t reads = 0;
    std::uint64_t resident_bytes = 0;
    bool finished = false;  // as of the latest updateFinished()
  };
  detail::Slot node(ObjectId id, std::uint64_t size);
  double density(const Node& n) const noexcept;
  // log_heat less the idle penalty (idle_gaps), in the same log2 domain.
  // Idleness is counted in reuse distances of at least `at_least` bytes.
  double liveLogHeat(const Node& n, double at_least = 0) const noexcept;
  // Re-keys a few residents in turn, so idle ones sink in the heap (keys only rise lazily).
  void sweepIdle() noexcept;
  std::uint32_t nextGhostSeq() noexcept {
    if (next_ghost_seq_ == 0) next_ghost_seq_ = 1;
    return next_ghost_seq_++;
  }
  static void setSize(Node& n, std::uint64_t size) noexcept;
  void forgetOldHistory();
  // Brings the heap keys of the coldest residents covering `bytes` up to date.
  void refreshColdest(std::uint64_t bytes) noexcept;
  // admit()'s victims: the coldest residents freeing `need` bytes, into scratch_; false
  // when the newcomer's heat does not beat theirs by the hysteresis margin.
  bool pickVictims(const Node& n, std::uint64_t need) noexcept;
  // Resident -> remembered non-resident (its heat is kept).
  void demote(detail::Slot s) noexcept;
  // Data sets: the read of `n`'s data set (its finished state ends), and whether it is
  // finished now.
  void recordDatasetRead(Node& n, std::uint32_t dataset) noexcept;
  bool isFinished(const Dataset& d) const noexcept;
  // Recomputes Dataset::finished; a data set that has just finished has its residents
  // re-keyed (heat 0), so they come first in the eviction order. Returns the resident
  // bytes of finished data sets.
  std::uint64_t updateFinished() noexcept;
  // admit()'s victims when `need` bytes fit in the residents of finished data sets: the
  // first of those in the eviction order, into scratch_; false if they do not free `need`.
  bool pickFinished(std::uint64_t need) noexcept;
  void accountResident(const Node& n, bool add) noexcept;

  Config config_;
  double clock_ = 0;                            // in half-lives
  double bytes_clock_ = 0;                      // bytes read so far, for reuse distances
  double min_half_life_bytes_;                  // half_life x capacity
  double half_life_bytes_;                      // max(min, reuse_factor x mean reuse distance)
  static constexpr double kReuseWindow = 4096;  // reuses the mean reuse distance averages
  double mean_reuse_bytes_ = 0;                 // EWMA of bytes read between two reads of an object
  std::uint64_t reuses_seen_ = 0;
  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::MinHeap heap_;  // residents by log2(heat per byte)
  std::deque<std::pair<ObjectId, std::uint32_t>> history_;
  std::uint32_t next_ghost_seq_ = 1;  // wraps after 4G demotions; 0 is skipped
  std::uint64_t tracked_ghosts_ = 0;
  std::uint64_t rejected_read_ratio_ = 0;
  std::uint64_t rejected_hysteresis_ = 0;
  std::uint64_t admitted_finished_ = 0;  // admissions into the room of finished data sets
  std::unordered_map<std::uint32_t, Dataset> datasets_;  // by Access::dataset, 0 left out
  std::size_t sweep_hand_ = 0;  // sweepIdle()'s position in the heap array
  std::vector<detail::Slot> scratch_;
  std::vector<detail::Slot> stale_;
};

}  // namespace hotshard::policy
