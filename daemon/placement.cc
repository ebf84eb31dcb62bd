#include "daemon/placement.h"

#include <spdlog/spdlog.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <fstream>

#include "base/clock.h"
#include "base/paths.h"
#include "daemon/control_protocol.h"
#include "policy/plan.h"
#include "policy/registry.h"

namespace hotshard {
namespace {

policy::ObjectId idOf(const std::string& rel) { return XXH3_64bits(rel.data(), rel.size()); }

json paramsJson(const policy::Policy& p) {
  json params = json::object();
  for (const auto& kv : p.params()) {
    auto eq = kv.find('=');
    params[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  }
  return params;
}

}  // namespace

Result<std::unique_ptr<Placement>> Placement::start(const PlacementOptions& opts,
                                                    PlacementDeps deps) {
  auto p = std::unique_ptr<Placement>(new Placement());
  p->opts_ = opts;
  RETURN_IF_ERROR(p->init(std::move(deps)));
  if (opts.tick_seconds > 0) p->thread_ = std::thread([raw = p.get()] { raw->loop(); });
  return p;
}

Status Placement::init(PlacementDeps deps) {
  if (deps.store == nullptr || deps.promoter == nullptr || !deps.heat) {
    return makeError(Errc::kInvalidArgument,
                     "placement: needs a store, a promoter and a heat source");
  }
  store_ = deps.store;
  promoter_ = deps.promoter;
  heat_ = std::move(deps.heat);
  degraded_ = heat_->health().degraded;
  // The policy plans within what the store keeps without evicting on its own:
  // its high watermark, less a little for block rounding (the store counts
  // allocated blocks, the policy file sizes).
  CacheStore::Stats st = store_->stats();
  auto cap = static_cast<double>(st.capacity_bytes);
  policy_capacity_ = static_cast<uint64_t>(cap * st.high_watermark * 0.99);
  // The store's safety net frees at most its watermarks' span plus what a tick
  // promotes; the policy's order beyond that would never be read.
  eviction_span_ = static_cast<uint64_t>(cap * (st.high_watermark - st.low_watermark)) +
                   static_cast<uint64_t>(promoteBudgetPerTick());
  auto created = policy::createPolicy(opts_.policy, policy_capacity_);
  if (!created.ok()) return makeError(Errc::kInvalidArgument, "policy: " + created.error().message);
  policy_ = std::move(created).value();
  reconcileResidents();
  syncEvictionOrder();
  return Ok{};
}

uint64_t Placement::policyCapacity() const { return policy_capacity_; }

void Placement::stop() {
  {
    std::lock_guard lock(wake_mu_);
    stopping_ = true;
  }
  wake_.notify_all();
}

Placement::~Placement() {
  stop();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard lock(alive_->mu);  // waits for a callback running now
    alive_->placement = nullptr;
  }
  if (store_ != nullptr) store_->clearEvictionOrder();
}

void Placement::loop() {
  auto period = std::chrono::duration<double>(opts_.tick_seconds);
  while (!stopping_) {
    {
      std::unique_lock lock(wake_mu_);
      wake_.wait_for(lock, period, [&] { return stopping_.load(); });
    }
    if (stopping_) break;
    tick();
  }
}

void Placement::noteOpen(const std::string& rel, const struct stat& backing, bool from_cache,
                         bool for_write) {
  {
    std::lock_guard lock(mu_);
    backings_[{backing.st_dev, backing.st_ino}] = Backing{rel, from_cache};
    Shard& s = shards_[rel];
    s.id = idOf(rel);
    s.dataset = policy::datasetOf(rel);
    s.size = static_cast<uint64_t>(backing.st_size);
    s.opens++;
    rel_of_[s.id] = rel;
    if (for_write) policy_->remove(s.id);  // its copy is gone (beginWrite)
    if (for_write && trace_ != nullptr) {
      // The simulator invalidates its copy too (policy/trace.h kFlagWrite); the clock
      // is the probes' (CLOCK_MONOTONIC), which time the read records.
      policy::Request r{.time_ns = static_cast<uint64_t>(monotonicNs()),
                        .id = s.id,
                        .size = s.size,
                        .flags = policy::kFlagWrite,
                        .dataset = s.dataset};
      if (trace_->write(r)) trace_records_++;
    }
  }
  // After the backing is known, so the tick can attribute what the source saw.
  heat_->noteOpen(backing, from_cache, for_write);
}

void Placement::noteChange(const std::string& rel, const fuse::Change& change) {
  std::lock_guard lock(mu_);
  if (trace_ == nullptr) return;
  auto it = shards_.find(rel);
  if (it == shards_.end()) return;
  using Kind = fuse::Change::Kind;
  std::uint32_t flag = change.kind == Kind::kTruncate ? policy::kFlagTruncate
                       : change.kind == Kind::kUnlink ? policy::kFlagUnlink
                       : change.kind == Kind::kRename ? policy::kFlagRename
                                                      : policy::kFlagWrite;
  policy::Request r{.time_ns = static_cast<uint64_t>(monotonicNs()),
                    .id = it->second.id,
                    .size = change.kind == Kind::kTruncate ? change.new_size : it->second.size,
                    .flags = flag,
                    .dataset = it->second.dataset};
  if (trace_->write(r)) trace_records_++;
}

void Placement::reconcileResidents() {
  std::vector<CacheStore::ObjectSummary> objects = store_->list();  // no mu_ held
  uint64_t now = static_cast<uint64_t>(wallNs());
  std::lock_guard lock(mu_);
  for (const auto& obj : objects) {
    policy::ObjectId id = idOf(obj.rel_path);
    rel_of_[id] = obj.rel_path;
    if (!policy_->contains(id)) policy_->add(id, obj.allocated_bytes, now);
  }
}

// ---- the tick ---------------------------------------------------------------------

void Placement::tick() {
  std::lock_guard tick_lock(tick_mu_);
  auto now = static_cast<uint64_t>(wallNs());
  uint64_t remote_missed = attribute(drainHeat(), now);
  // How fast the jobs read the remote: promotions that must read it yield.
  if (last_tick_ns_ != 0 && now > last_tick_ns_) {
    promoter_->setForegroundRemoteRate(
        static_cast<uint64_t>(static_cast<double>(remote_missed) * 1e9 /
                              static_cast<double>(now - last_tick_ns_)));
  }
  last_tick_ns_ = now;
  std::vector<Active> active = feedPolicy(now);
  {
    std::lock_guard lock(mu_);
    promote_credit_ = std::min(promote_credit_ + promoteBudgetPerTick(), promoteBudgetPerTick());
  }
  if (ticks_ % 10 == 0) reconcileResidents();
  // A failed cache disk pauses promotions (CacheStore::health()); the policy
  // keeps learning meanwhile.
  if (opts_.automatic && !active.empty() && store_->healthy()) {
    Decisions d = plan(std::move(active));
    applyEvictions(d, now);
    applyPromotions(d);
  }
  syncEvictionOrder();
}

HeatBatch Placement::drainHeat() {
  auto batch = heat_->drain();  // no mu_ held
  if (!batch.ok()) {
    spdlog::debug("placement: drain heat: {}", batch.error().message);
    return {};
  }
  return std::move(batch).value();
}

uint64_t Placement::attribute(const HeatBatch& batch, uint64_t now) {
  std::lock_guard lock(mu_);
  uint64_t remote_missed = 0;
  for (const auto& f : batch.files) {
    attributeLocked(f, now);
    auto it = backings_.find({f.dev, f.ino});
    if (it != backings_.end() && !it->second.is_cache) remote_missed += f.bytes_missed;
  }
  for (const auto& j : batch.jobs) {
    Job& job = jobs_[j.job];
    job.bytes_read += j.bytes_read;
    job.bytes_missed += j.bytes_missed;
  }
  return remote_missed;
}

void Placement::attributeLocked(const FileHeat& f, uint64_t now) {
  auto it = backings_.find({f.dev, f.ino});
  if (it == backings_.end()) {
    unattributed_bytes_ += f.bytes_read;
    return;
  }
  Shard& s = shards_[it->second.rel];
  if (it->second.is_cache) {
    s.cache_read += f.bytes_read;
    s.cache_missed += f.bytes_missed;
  } else {
    s.remote_read += f.bytes_read;
    s.remote_missed += f.bytes_missed;
  }
  s.faults += f.mmap_faults;
  s.tick_read += f.bytes_read;
  s.tick_missed += f.bytes_missed;
  s.last_ns = now;
  if (trace_ != nullptr && !trace_samples_) {
    policy::Request r{.time_ns = f.time_ns ? f.time_ns : now,
                      .id = s.id,
                      .size = s.size,
                      .offset = f.offset,
                      .bytes_read = f.bytes_read,
                      .bytes_missed = f.bytes_missed,
                      .dataset = s.dataset};
    if (trace_->write(r)) trace_records_++;
  }
}

std::vector<Placement::Active> Placement::feedPolicy(uint64_t now) {
  std::vector<Active> active;
  std::lock_guard lock(mu_);
  for (auto& [rel, s] : shards_) {
    if (s.tick_read == 0 && s.tick_missed == 0) continue;
    policy::Access a{.id = s.id,
                     .size = s.size,
                     .bytes_read = std::max(s.tick_read, s.tick_missed),
                     .bytes_missed = s.tick_missed,
                     .time_ns = now,
                     .dataset = s.dataset};
    policy_->recordAccess(a);
    active.push_back(Active{rel, a});
    s.tick_read = s.tick_missed = 0;
  }
  ticks_++;
  return active;
}

Placement::Decisions Placement::plan(std::vector<Active> active) {
  // Which of them are still only on the remote (store calls without mu_),
  // most remote bytes first.
  std::vector<Active> candidates;
  for (auto& a : active) {
    if (a.access.size > 0 && store_->info(a.rel).state == CacheStore::State::kRemote) {
      candidates.push_back(std::move(a));
    }
  }
  Decisions d;
  if (candidates.empty()) return d;
  std::sort(candidates.begin(), candidates.end(), [](const Active& x, const Active& y) {
    return x.access.bytes_missed > y.access.bytes_missed;
  });
  std::vector<policy::Access> accesses;
  for (const auto& c : candidates) accesses.push_back(c.access);
  std::lock_guard lock(mu_);
  policy::PromotionPlan p = policy::planPromotions(*policy_, accesses, tickBudgetLocked(accesses));
  promote_credit_ -= static_cast<int64_t>(p.promote_bytes);
  for (auto id : p.promote) d.promote.emplace_back(id, rel_of_[id]);
  for (auto id : p.evict) d.evict.emplace_back(id, rel_of_[id]);
  return d;
}

uint64_t Placement::tickBudgetLocked(const std::vector<policy::Access>& candidates) {
  if (promote_credit_ <= 0) return 0;  // still paying for a large file
  auto budget = static_cast<uint64_t>(promote_credit_);
  if (promote_credit_ < promoteBudgetPerTick()) return budget;
  // A whole tick's credit: the first candidate the policy does not hold yet
  // may take it even when larger (planPromotions would defer it every tick).
  for (const auto& c : candidates) {
    if (policy_->contains(c.id)) continue;
    return std::max(budget, c.size);
  }
  return budget;
}

void Placement::applyEvictions(const Decisions& d, uint64_t now) {
  for (const auto& [id, rel] : d.evict) {
    Status st = store_->evictIdle(rel);  // no mu_ held
    if (st.ok()) {
      std::lock_guard lock(mu_);
      evictions_++;
      spdlog::debug("placement: evicted {}", rel);
    } else if (st.error().code == Errc::kBusy) {
      // Pinned or open: it stays, so the policy keeps counting it.
      uint64_t size = store_->info(rel).size;
      std::lock_guard lock(mu_);
      policy_->add(id, size, now);
    }
  }
}

void Placement::applyPromotions(const Decisions& d) {
  for (const auto& [id, rel] : d.promote) {
    Status st =
        promoter_->enqueue(rel, nullptr, [alive = alive_, id = id, rel = rel](const Status& s) {
          std::lock_guard lock(alive->mu);
          if (alive->placement != nullptr) alive->placement->promotionDone(id, rel, s);
        });
    std::lock_guard lock(mu_);
    if (st.ok()) {
      promotions_++;
    } else if (st.error().code != Errc::kExists) {
      policy_->remove(id);
    }
  }
}

void Placement::promotionDone(policy::ObjectId id, const std::string& rel, const Status& result) {
  std::lock_guard lock(mu_);
  if (result.ok()) {
    spdlog::debug("placement: promoted {}", rel);
    return;
  }
  policy_->remove(id);
  if (result.error().code == Errc::kNotFound) {  // removed meanwhile: no failure
    spdlog::info("placement: {} vanished before its promotion", rel);
    return;
  }
  promotion_failures_++;
  spdlog::info("placement: promotion of {} failed: {}", rel, result.error().message);
}

void Placement::syncEvictionOrder() {
  std::vector<std::string> order;
  {
    std::lock_guard lock(mu_);
    std::vector<policy::ObjectId> ids;
    policy_->evictionCandidates(std::min(eviction_span_, policy_->used()), ids);
    for (auto id : ids) {
      auto it = rel_of_.find(id);
      if (it != rel_of_.end()) order.push_back(it->second);
    }
  }
  std::vector<std::string> removed = store_->updateEvictionOrder(order);  // no mu_ held
  // A copy published again since it was dropped stays on the books.
  std::erase_if(removed, [&](const std::string& rel) {
    return store_->info(rel).state == CacheStore::State::kCached;
  });
  if (removed.empty()) return;
  std::lock_guard lock(mu_);
  for (const auto& rel : removed) policy_->remove(idOf(rel));
}

namespace {

ProbeStatus probeStatusOf(const HeatSourceHealth& h) {
  if (h.degraded) return ProbeStatus{.mode = "degraded", .reason = h.reason};
  return ProbeStatus{.mode = "bpf",
                     .events = h.events,
                     .lost_updates = h.lost_updates,
                     .attached = h.programs.size(),
                     .programs = h.programs,
                     .skipped = h.skipped};
}

// The top_jobs jobs by bytes read, then the rest summed as "other".
template <class JobMap>
std::vector<JobStatus> topJobsOf(const JobMap& jobs_by_cgroup, size_t top_jobs) {
  std::vector<std::pair<std::string, typename JobMap::mapped_type>> jobs(jobs_by_cgroup.begin(),
                                                                         jobs_by_cgroup.end());
  std::sort(jobs.begin(), jobs.end(),
            [](const auto& a, const auto& b) { return a.second.bytes_read > b.second.bytes_read; });
  std::vector<JobStatus> out;
  JobStatus other{.cgroup = "other", .bytes_read = 0, .bytes_missed = 0};
  for (size_t i = 0; i < jobs.size(); i++) {
    if (i < top_jobs) {
      out.push_back({.cgroup = jobs[i].first,
                     .bytes_read = jobs[i].second.bytes_read,
                     .bytes_missed = jobs[i].second.bytes_missed});
    } else {
      *other.bytes_read += jobs[i].second.bytes_read;
      *other.bytes_missed += jobs[i].second.bytes_missed;
    }
  }
  if (jobs.size() > top_jobs) out.push_back(std::move(other));
  return out;
}

const char* stateName(CacheStore::State s) {
  return s == CacheStore::State::kCached      ? "cached"
         : s == CacheStore::State::kPromoting ? "promoting"
                                              : "remote";
}

}  // namespace

void Placement::fillStatus(StatusSnapshot& status) const {
  status.probes = probeStatusOf(heat_->health());
  std::lock_guard lock(mu_);
  HeatStatus heat{.bytes_read_remote = 0,
                  .bytes_missed_remote = 0,
                  .bytes_read_cache = 0,
                  .bytes_missed_cache = 0};
  for (const auto& [rel, s] : shards_) {
    *heat.bytes_read_remote += s.remote_read;
    *heat.bytes_missed_remote += s.remote_missed;
    *heat.bytes_read_cache += s.cache_read;
    *heat.bytes_missed_cache += s.cache_missed;
  }
  // Bytes that came off the cache disk: without the copy, the remote's.
  heat.remote_bytes_avoided = heat.bytes_missed_cache;
  heat.unattributed_bytes = unattributed_bytes_;
  heat.shards = shards_.size();
  status.heat = heat;
  status.jobs = topJobsOf(jobs_, opts_.top_jobs);
  std::map<std::string, double> counters;
  policy_->visitCounters([&](std::string_view name, double v) { counters[std::string(name)] = v; });
  status.policy =
      PolicyStatus{.name = std::string(policy_->name()),
                   .spec = policy::describePolicy(*policy_),
                   .params = paramsJson(*policy_).get<std::map<std::string, std::string>>(),
                   .counters = std::move(counters)};
  status.placement = PlacementStatus{.automatic = opts_.automatic,
                                     .tick_seconds = opts_.tick_seconds,
                                     .ticks = ticks_,
                                     .promotions = promotions_,
                                     .promotion_failures = promotion_failures_,
                                     .evictions = evictions_};
}

std::vector<ShardRow> Placement::top(size_t n) const {
  // Ranked by the heat the policy decides with.
  struct Row {
    std::string rel;
    Shard s;
    double heat;
  };
  std::vector<Row> rows;
  {
    std::lock_guard lock(mu_);
    for (const auto& [rel, s] : shards_) rows.push_back(Row{rel, s, policy_->heat(s.id)});
  }
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) {
    return a.heat != b.heat ? a.heat > b.heat : a.s.last_ns > b.s.last_ns;
  });
  if (rows.size() > n) rows.resize(n);
  std::vector<ShardRow> out;
  for (const auto& [rel, s, heat] : rows) {
    CacheStore::ObjectInfo info = store_->info(rel);
    out.push_back(ShardRow{.path = rel,
                           .heat = heat,
                           .size = s.size,
                           .bytes_read = s.remote_read + s.cache_read,
                           .remote_read_bytes = s.remote_read,
                           .remote_miss_bytes = s.remote_missed,
                           .cache_bytes = s.cache_read,
                           .mmap_faults = s.faults,
                           .opens = s.opens,
                           .state = stateName(info.state),
                           .pinned = info.pinned,
                           .owner = owner_of_ ? owner_of_(rel) : std::string()});
  }
  return out;
}

Result<json> Placement::policySet(const std::string& spec) {
  reconcileResidents();
  std::lock_guard lock(mu_);
  auto rebuilt = policy::rebuildPolicy(*policy_, spec, static_cast<uint64_t>(wallNs()));
  if (!rebuilt.ok()) return makeError(Errc::kInvalidArgument, rebuilt.error().message);
  policy_ = std::move(rebuilt).value();
  spdlog::info("policy set to {}", policy::describePolicy(*policy_));
  PolicyStatus reply{.name = std::string(policy_->name()),
                     .spec = policy::describePolicy(*policy_),
                     .params = paramsJson(*policy_).get<std::map<std::string, std::string>>(),
                     .residents = policy_->objects()};
  return json(reply);
}

// Raw sampled events from the ring buffer, one record each, for `duration` seconds; a
// page-cache miss is a record of its own, flagged kFlagMissSample (not a second read).
Result<uint64_t> Placement::recordSamples(policy::TraceWriter& writer, double duration) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(duration);
  {
    // Shared with noteOpen(), which adds a record for each open for writing.
    std::lock_guard lock(mu_);
    if (trace_ != nullptr) return makeError(Errc::kBusy, "a trace is already being recorded");
    trace_ = &writer;
    trace_samples_ = true;
    trace_records_ = 0;
  }
  Status failed = Ok{};
  while (failed.ok() && !stopping_ && std::chrono::steady_clock::now() < deadline) {
    failed = heat_->pollSamples(100, [&](const HeatSample& e) {
      std::lock_guard lock(mu_);
      auto it = backings_.find({e.dev, e.ino});
      if (it == backings_.end()) return;
      const Shard& s = shards_[it->second.rel];
      policy::Request r{.time_ns = e.time_ns,
                        .id = s.id,
                        .size = s.size,
                        .offset = e.offset,
                        .bytes_read = e.length,
                        .bytes_missed = e.miss ? e.length : 0,
                        // The read itself is a record of its own: a miss only says
                        // its bytes came from the remote, so it is not read twice.
                        .flags = e.miss ? policy::kFlagMissSample : 0u,
                        .dataset = s.dataset};
      if (writer.write(r)) trace_records_++;
    });
  }
  std::lock_guard lock(mu_);
  trace_ = nullptr;
  trace_samples_ = false;
  if (!failed.ok()) return failed.takeError();
  return trace_records_;
}

Result<json> Placement::traceRecord(const json& req) {
  if (degraded_) {
    return makeError(Errc::kUnsupported, "trace record needs the BPF probes, which are degraded: " +
                                             heat_->health().reason);
  }
  std::string out = req.value(control::kOut, "");
  double duration = req.value(control::kDuration, 0.0);
  if (out.empty() || out[0] != '/') {
    return makeError(Errc::kInvalidArgument, "\"out\" must be an absolute path");
  }
  if (!(duration > 0 && duration <= 86400)) {
    return makeError(Errc::kInvalidArgument, "\"duration\" must be in (0, 86400] seconds");
  }
  RETURN_IF_ERROR(createFileNoWiderThan(out, 0640));  // the daemon runs with umask 0
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  if (!file) return lastSysError("open " + out);
  auto writer = policy::makeTraceWriter(policy::TraceFormat::kNative, file);
  uint64_t records = 0;
  const char* mode = heat_->samples() ? "samples" : "chunks";
  if (heat_->samples()) {
    auto sampled = recordSamples(*writer, duration);
    if (!sampled.ok()) return sampled.takeError();
    records = *sampled;
  } else {
    // Per chunk and tick, as the placement loop drains them.
    {
      std::lock_guard lock(mu_);
      if (trace_ != nullptr) return makeError(Errc::kBusy, "a trace is already being recorded");
      trace_ = writer.get();
      trace_records_ = 0;
    }
    {
      // The whole duration, or until the daemon stops.
      std::unique_lock lock(wake_mu_);
      wake_.wait_for(lock, std::chrono::duration<double>(duration),
                     [&] { return stopping_.load(); });
    }
    tick();  // what the last partial tick saw
    std::lock_guard lock(mu_);
    trace_ = nullptr;
    records = trace_records_;
  }
  if (auto st = writer->finish(); !st) {
    return makeError(Errc::kIo, "write " + out + ": " + st.error().message);
  }
  file.close();
  return json{{control::kOut, out},
              {control::kRecords, records},
              {control::kFormat, "native"},
              {control::kMode, mode}};
}

void Placement::addHandlers(std::map<std::string, ControlServer::Handler>& h) {
  h[control::kTop] = [this](const json& req, const ControlServer::Progress&) -> Result<json> {
    TopReply reply{.shards = top(req.value(control::kTopCount, control::kTopDefaultCount))};
    fillStatus(reply.status);
    return json(reply);
  };
  h[control::kPolicyShow] = [this](const json&, const ControlServer::Progress&) -> Result<json> {
    reconcileResidents();
    StatusSnapshot s;
    fillStatus(s);
    s.policy->available = policy::policyNames();
    return json(*s.policy);
  };
  h[control::kPolicySet] = [this](const json& req, const ControlServer::Progress&) -> Result<json> {
    if (!req.contains(control::kSpec) || !req[control::kSpec].is_string()) {
      return makeError(Errc::kInvalidArgument, "\"spec\" must be a string like \"lfu;half_life=60\"");
    }
    return policySet(req[control::kSpec].get<std::string>());
  };
  h[control::kTraceRecord] = [this](const json& req, const ControlServer::Progress&) {
    return traceRecord(req);
  };
}

}  // namespace hotshard
