#include "policy/hotshard.h"

#include <algorithm>

namespace hotshard::policy {

Status HotshardPolicy::Config::validate() const {
  if (!(half_life > 0)) return makeError(Errc::kInvalidArgument, "hotshard: half_life must be > 0");
  if (!(miss_weight > 0))
    return makeError(Errc::kInvalidArgument, "hotshard: miss_weight must be > 0");
  if (!(hit_weight >= 0))
    return makeError(Errc::kInvalidArgument, "hotshard: hit_weight must be >= 0");
  if (!(hysteresis >= 0))
    return makeError(Errc::kInvalidArgument, "hotshard: hysteresis must be >= 0");
  if (!(margin >= 0)) return makeError(Errc::kInvalidArgument, "hotshard: margin must be >= 0");
  if (!(min_read_ratio >= 0))
    return makeError(Errc::kInvalidArgument, "hotshard: min_read_ratio must be >= 0");
  if (!(history >= 0)) return makeError(Errc::kInvalidArgument, "hotshard: history must be >= 0");
  if (!(idle_gaps >= 0))
    return makeError(Errc::kInvalidArgument, "hotshard: idle_gaps must be >= 0");
  if (!(dataset_idle >= 0))
    return makeError(Errc::kInvalidArgument, "hotshard: dataset_idle must be >= 0");
  if (!(reuse_factor >= 0))
    return makeError(Errc::kInvalidArgument, "hotshard: reuse_factor must be >= 0");
  return {};
}

HotshardPolicy::HotshardPolicy(std::uint64_t capacity, Config config)
    : Policy(capacity),
      config_(config),
      min_half_life_bytes_(config.half_life *
                           static_cast<double>(std::max<std::uint64_t>(capacity, 1))),
      half_life_bytes_(min_half_life_bytes_) {}

bool HotshardPolicy::contains(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s != detail::kNoSlot && nodes_[s].resident;
}

void HotshardPolicy::prefetch(ObjectId id, int stage) const noexcept {
  if (stage == 0) {
    index_.prefetch(id);
  } else if (detail::Slot s = index_.find(id); s != detail::kNoSlot) {
    detail::prefetchAddress(&nodes_[s]);
  }
}

double HotshardPolicy::heat(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s == detail::kNoSlot ? 0.0 : detail::logValueNow(nodes_[s].log_heat, clock_);
}

void HotshardPolicy::setSize(Node& n, std::uint64_t size) noexcept {
  n.size = size;
  n.log_size = static_cast<float>(std::log2(static_cast<double>(std::max<std::uint64_t>(size, 1))));
}

double HotshardPolicy::liveLogHeat(const Node& n, double at_least) const noexcept {
  if (n.dataset != 0 && config_.dataset_idle > 0) {
    auto d = datasets_.find(n.dataset);
    if (d != datasets_.end() && d->second.finished) return detail::kLogZero;
  }
  // Until the mean reuse distance has seen a full window of reuses it is biased short
  // (only short reuses have completed yet), and idleness would be overestimated.
  if (config_.idle_gaps <= 0 || n.last_read_at < 0 || reuses_seen_ < kReuseWindow)
    return n.log_heat;
  double gap = std::max({static_cast<double>(n.gap), mean_reuse_bytes_, at_least});
  double idle = bytes_clock_ - n.last_read_at;
  return n.log_heat - std::max(0.0, idle / gap - config_.idle_gaps);
}

double HotshardPolicy::density(const Node& n) const noexcept { return liveLogHeat(n) - n.log_size; }

void HotshardPolicy::sweepIdle() noexcept {
  for (int i = 0; i < 2 && !heap_.empty(); ++i) {
    if (sweep_hand_ >= heap_.size()) sweep_hand_ = 0;
    detail::Slot v = heap_.at(sweep_hand_++);
    heap_.update(v, density(nodes_[v]));
  }
}

void HotshardPolicy::forgetOldHistory() {
  auto limit = static_cast<std::size_t>(
      config_.history * static_cast<double>(std::max<std::uint64_t>(objects(), 1024)));
  // The newest entry always stays: it may be the node node() is about to hand out.
  while (history_.size() > std::max<std::size_t>(limit, 1)) {
    auto [id, seq] = history_.front();
    history_.pop_front();
    detail::Slot s = index_.find(id);
    if (s == detail::kNoSlot || nodes_[s].resident || nodes_[s].ghost_seq != seq)
      continue;  // stale entry
    index_.erase(id);
    nodes_.release(s);
    --tracked_ghosts_;
  }
}

detail::Slot HotshardPolicy::node(ObjectId id, std::uint64_t size) {
  detail::Slot s = index_.find(id);
  if (s != detail::kNoSlot) {
    if (!nodes_[s].resident && nodes_[s].size != size)
      setSize(nodes_[s], size);  // a resident keeps its copy's size
    return s;
  }
  s = nodes_.alloc();
  nodes_[s].id = id;
  setSize(nodes_[s], size);
  nodes_[s].ghost_seq = nextGhostSeq();
  index_.insert(id, s);
  history_.emplace_back(id, nodes_[s].ghost_seq);
  ++tracked_ghosts_;
  forgetOldHistory();
  return s;
}

void HotshardPolicy::recordAccess(const Access& access) noexcept {
  if (access.bytes_read == 0) return;
  clock_ += static_cast<double>(access.bytes_read) / half_life_bytes_;
  detail::Slot s = node(access.id, access.size);
  Node& n = nodes_[s];
  if (n.last_read_at >= 0 && config_.reuse_factor > 0) {
    // Heat remembers reuse_factor typical reuse distances: long enough that objects
    // read at the same long-run rate (epoch-shuffled shards) end up with nearly equal
    // heat instead of Poisson noise, short enough to follow a moving hot set.
    double reuse = bytes_clock_ - n.last_read_at;
    n.gap =
        n.gap == 0 ? static_cast<float>(reuse) : n.gap + (static_cast<float>(reuse) - n.gap) / 2;
    mean_reuse_bytes_ = mean_reuse_bytes_ == 0
                            ? reuse
                            : mean_reuse_bytes_ + (reuse - mean_reuse_bytes_) / kReuseWindow;
    ++reuses_seen_;
    half_life_bytes_ = std::max(min_half_life_bytes_, config_.reuse_factor * mean_reuse_bytes_);
  }
  bytes_clock_ += static_cast<double>(access.bytes_read);
  n.last_read_at = bytes_clock_;
  recordDatasetRead(n, access.dataset);
  std::uint64_t missed = std::min(access.bytes_missed, access.bytes_read);
  double weight = config_.miss_weight * static_cast<double>(missed) +
                  config_.hit_weight * static_cast<double>(access.bytes_read - missed);
  n.log_prior = n.log_heat;
  if (weight > 0) n.log_heat = detail::logAdd(n.log_heat, std::log2(weight) + clock_);
  n.bytes_read += static_cast<float>(access.bytes_read);
  if (config_.idle_gaps > 0) sweepIdle();
  // A resident's heap key is left stale here: heat only grows on access, so the stored
  // key is a lower bound, fixed by refreshColdest() when the node nears the top. Hot
  // objects, deep in the heap, are never touched: hits cost no heap work.
}

void HotshardPolicy::accountResident(const Node& n, bool add) noexcept {
  if (n.dataset == 0 || config_.dataset_idle <= 0) return;
  auto& bytes = datasets_[n.dataset].resident_bytes;
  bytes = add ? bytes + n.size : bytes - std::min(bytes, n.size);
}

void HotshardPolicy::recordDatasetRead(Node& n, std::uint32_t dataset) noexcept {
  if (n.dataset != dataset) {
    if (n.resident) accountResident(n, false);
    n.dataset = dataset;
    if (n.resident) accountResident(n, true);
  }
  if (dataset == 0 || config_.dataset_idle <= 0) return;
  Dataset& d = datasets_[dataset];
  if (d.last_read_at >= 0) d.longest_gap = std::max(d.longest_gap, bytes_clock_ - d.last_read_at);
  d.last_read_at = bytes_clock_;
  ++d.reads;
  // Read again: active. Its residents' heap keys, -inf while it was finished, are now
  // below their density, the lower bounds that refreshColdest() lifts when they matter.
  d.finished = false;
}

bool HotshardPolicy::isFinished(const Dataset& d) const noexcept {
  return d.reads >= 2 && d.longest_gap > 0 &&
         bytes_clock_ - d.last_read_at > config_.dataset_idle * d.longest_gap;
}

std::uint64_t HotshardPolicy::updateFinished() noexcept {
  std::uint64_t bytes = 0;
  bool newly = false;
  for (auto& [id, d] : datasets_) {
    bool now = isFinished(d);
    newly |= now && !d.finished;
    d.finished = now;
    if (now) bytes += d.resident_bytes;
  }
  if (newly) {  // their keys fall to -inf: heap keys only rise lazily, so re-key them now
    stale_.clear();
    for (std::size_t i = 0; i < heap_.size(); ++i) {
      detail::Slot v = heap_.at(i);
      if (density(nodes_[v]) < heap_.keyOf(v)) stale_.push_back(v);
    }
    for (detail::Slot v : stale_) heap_.update(v, density(nodes_[v]));
    stale_.clear();
  }
  return bytes;
}

bool HotshardPolicy::pickFinished(std::uint64_t need) noexcept {
  std::uint64_t freed = 0;
  scratch_.clear();
  stale_.clear();
  // The residents of finished data sets are keyed -inf (updateFinished()), so they come
  // first; so do those of a data set read again since, whose keys are not lifted yet:
  // those are passed over (and re-keyed after the walk).
  heap_.visitAscending([&](detail::Slot v) {
    if (heap_.keyOf(v) != detail::kLogZero) return false;
    if (liveLogHeat(nodes_[v]) != detail::kLogZero || nodes_[v].dataset == 0) {
      stale_.push_back(v);
      return true;
    }
    scratch_.push_back(v);
    freed += nodes_[v].size;
    return freed < need;
  });
  for (detail::Slot v : stale_) heap_.update(v, density(nodes_[v]));
  stale_.clear();
  return freed >= need;
}

void HotshardPolicy::refreshColdest(std::uint64_t bytes) noexcept {
  for (int round = 0; round < 1024; ++round) {
    stale_.clear();
    std::uint64_t covered = 0;
    heap_.visitAscending([&](detail::Slot v) {
      if (density(nodes_[v]) > heap_.keyOf(v)) {
        stale_.push_back(v);
        return stale_.size() < 64;
      }
      covered += nodes_[v].size;
      return covered < bytes;
    });
    if (stale_.empty()) return;
    for (detail::Slot v : stale_) heap_.update(v, density(nodes_[v]));
  }
}

// The coldest residents per byte that make `need` bytes of room, into scratch_, and
// whether the newcomer's earlier heat beats theirs by the hysteresis margin. Victims
// count their live heat (liveLogHeat): one idle past idle_gaps reuse distances, such
// as the data of a finished job or an old hot set, stands in the way less and less.
bool HotshardPolicy::pickVictims(const Node& n, std::uint64_t need) noexcept {
  std::uint64_t freed = 0;
  double candidate = detail::logValueNow(n.log_prior, clock_);
  const double margin = config_.margin * config_.miss_weight * static_cast<double>(n.size);
  bool beaten = margin >= candidate;  // most misses: objects read once, or rarely
  // Walk the coldest residents; a key left stale by hits (see recordAccess) is
  // refreshed and the walk starts over, so the walk sees the true order.
  for (int round = 0; !beaten && round < 1024; ++round) {
    double bar = margin;
    bool stale = false;
    scratch_.clear();
    freed = 0;
    heap_.visitAscending([&](detail::Slot v) {
      const Node& victim = nodes_[v];
      if (density(victim) > heap_.keyOf(v)) {
        stale_.push_back(v);
        stale = true;
        return false;
      }
      // A victim leaves whole, so its whole heat counts against the newcomer.
      // (Counting only the bytes the newcomer lacks let a nearly full cache trade
      // a whole hot object for a few KiB of room: it churned live on shuffled
      // epochs, where every object is read at the same rate.)
      bar += (1.0 + config_.hysteresis) *
             detail::logValueNow(liveLogHeat(victim, static_cast<double>(n.gap)), clock_);
      if (bar >= candidate) {
        beaten = true;
        return false;
      }
      scratch_.push_back(v);
      freed += victim.size;
      return freed < need;
    });
    if (!stale) break;
    for (detail::Slot v : stale_) heap_.update(v, density(nodes_[v]));
    stale_.clear();
  }
  return !beaten && freed >= need;
}

bool HotshardPolicy::admit(const Access& access, std::vector<ObjectId>& victims) noexcept {
  detail::Slot s = node(access.id, access.size);
  const Node& n = nodes_[s];
  if (n.resident || n.size > capacity()) {
    countAdmit(false);
    return false;
  }
  // bytes_read is a float: allow for its rounding (24-bit mantissa), or a whole read of a
  // size it cannot hold exactly would count as a little less than one read.
  if (static_cast<double>(n.bytes_read) * (1 + 1e-6) <
      config_.min_read_ratio * static_cast<double>(n.size)) {
    ++rejected_read_ratio_;
    countAdmit(false);
    return false;
  }
  std::uint64_t free = used() < capacity() ? capacity() - used() : 0;
  std::uint64_t finished = config_.dataset_idle > 0 ? updateFinished() : 0;
  scratch_.clear();
  // The room of finished data sets is as good as free: their jobs have ended.
  bool room = n.size <= free;
  if (!room && n.size <= free + finished) {
    room = pickFinished(n.size - free);
    admitted_finished_ += room ? 1 : 0;
  }
  if (!room && !pickVictims(n, n.size - free)) {
    scratch_.clear();
    ++rejected_hysteresis_;
    countAdmit(false);
    return false;
  }
  for (detail::Slot v : scratch_) {
    demote(v);
    victims.push_back(nodes_[v].id);
    countEviction();
  }
  Node& admitted = nodes_[s];
  admitted.resident = true;
  admitted.ghost_seq = 0;
  --tracked_ghosts_;
  heap_.push(s, density(admitted));
  accountAdd(admitted.size);
  accountResident(admitted, true);
  countAdmit(true);
  forgetOldHistory();
  return true;
}

void HotshardPolicy::add(ObjectId id, std::uint64_t size, TimeNs) noexcept {
  detail::Slot s = node(id, size);
  Node& n = nodes_[s];
  if (n.resident) return;
  n.resident = true;
  n.ghost_seq = 0;
  --tracked_ghosts_;
  heap_.push(s, density(n));
  accountAdd(n.size);
  accountResident(n, true);
}

void HotshardPolicy::remove(ObjectId id) noexcept {
  detail::Slot s = index_.find(id);
  if (s == detail::kNoSlot || !nodes_[s].resident) return;
  demote(s);
  forgetOldHistory();
}

void HotshardPolicy::demote(detail::Slot s) noexcept {
  Node& n = nodes_[s];
  heap_.erase(s);
  n.resident = false;
  n.ghost_seq = nextGhostSeq();  // keep its heat: it may come back
  history_.emplace_back(n.id, n.ghost_seq);
  ++tracked_ghosts_;
  accountRemove(n.size);
  accountResident(n, false);
}

void HotshardPolicy::evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept {
  if (config_.dataset_idle > 0) updateFinished();
  refreshColdest(bytes);
  std::vector<detail::Slot> slots;
  heap_.collectAscending(bytes, slots, [&](detail::Slot s) { return nodes_[s].size; });
  for (detail::Slot s : slots) out.push_back(nodes_[s].id);
}

void HotshardPolicy::residents(std::vector<Resident>& out) const {
  heap_.visitAscending([&](detail::Slot s) {
    out.push_back({nodes_[s].id, nodes_[s].size});
    return true;
  });
}

void HotshardPolicy::visitExtraCounters(const CounterVisitor& visit) const {
  visit("hotshard_rejected_read_ratio", static_cast<double>(rejected_read_ratio_));
  visit("hotshard_rejected_hysteresis", static_cast<double>(rejected_hysteresis_));
  visit("hotshard_tracked_non_resident", static_cast<double>(tracked_ghosts_));
  visit("hotshard_admitted_finished_dataset", static_cast<double>(admitted_finished_));
}

}  // namespace hotshard::policy
