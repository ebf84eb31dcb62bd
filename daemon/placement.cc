#include "daemon/placement.h"

#include <spdlog/spdlog.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>

#include "base/clock.h"
#include "bpf/heat_probes.h"
#include "daemon/control_protocol.h"
#include "policy/plan.h"
#include "policy/registry.h"

namespace hotshard {
namespace {

// Page-cache hits count a quarter of a miss: a miss is what the remote pays.
constexpr double kHitWeight = 0.25;
// CacheStoreOptions' default high watermark, which CacheService uses.
constexpr double kStoreHighWatermark = CacheStoreOptions{}.high_watermark;

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
                                                    CacheService* cache,
                                                    const std::vector<dev_t>& watch_devices) {
  auto p = std::unique_ptr<Placement>(new Placement());
  p->opts_ = opts;
  p->cache_ = cache;
  // The policy plans within what the store keeps without evicting on its own:
  // its high watermark, less a little for block rounding (the store counts
  // allocated blocks, the policy file sizes). Two evictors would fight.
  uint64_t capacity = static_cast<uint64_t>(
      static_cast<double>(cache->store().stats().capacity_bytes) * kStoreHighWatermark * 0.99);
  auto created = policy::createPolicy(opts.policy, capacity);
  if (!created.ok()) return makeError(Errc::kInvalidArgument, "policy: " + created.message());
  p->policy_ = std::move(created).value();
  uint64_t now = static_cast<uint64_t>(wallNs());
  for (const auto& obj : cache->store().list()) {
    policy::ObjectId id = idOf(obj.rel_path);
    p->policy_->add(id, obj.allocated_bytes, now);
    p->rel_of_[id] = obj.rel_path;
  }
  // The store asks the policy whom to evict when it needs room; the store's own
  // order (least recently opened) fills in whatever the policy does not name.
  cache->store().setEvictionHook(
      [raw = p.get()](std::vector<CacheStore::EvictionCandidate> candidates, uint64_t bytes) {
        std::vector<std::string> order;
        std::unordered_map<std::string, bool> offered;
        for (const auto& c : candidates) offered[c.rel_path] = false;
        {
          std::lock_guard lock(raw->mu_);
          std::vector<policy::ObjectId> ids;
          raw->policy_->evictionCandidates(bytes, ids);
          for (auto id : ids) {
            auto it = raw->rel_of_.find(id);
            if (it == raw->rel_of_.end()) continue;
            auto o = offered.find(it->second);
            if (o == offered.end() || o->second) continue;
            o->second = true;
            order.push_back(it->second);
          }
          for (const auto& c : candidates) {
            if (!offered[c.rel_path]) order.push_back(c.rel_path);
          }
          // What the store evicts leaves the policy's books too.
          for (const auto& rel : order) raw->policy_->remove(idOf(rel));
        }
        return order;
      });

  if (!opts.probes) {
    p->probes_reason_ = "disabled by configuration (--probes off)";
  } else {
    bpf::ProbeOptions po;
    po.chunk_bytes = opts.chunk_bytes;
    po.sample_rate = opts.sample_rate;
    po.ignore_pid = ::getpid();  // our own promotion reads are not heat
    auto probes = bpf::HeatProbes::load(po);
    if (!probes.ok()) {
      p->probes_reason_ = probes.error().message;
    } else {
      p->probes_ = std::move(*probes);
      for (dev_t dev : watch_devices) {
        Status st = p->probes_->watchDevice(dev);
        if (!st.ok()) spdlog::warn("probes: watch device {}: {}", dev, st.error().message);
      }
    }
  }
  if (p->probes_) {
    spdlog::info("probes: bpf ({} programs attached)", p->probes_->health().attached.size());
  } else {
    spdlog::warn("probes: degraded, heat comes from FUSE opens only: {}", p->probes_reason_);
  }
  p->last_decay_s_ = monotonicSeconds();
  p->thread_ = std::thread([raw = p.get()] { raw->loop(); });
  return p;
}

Placement::~Placement() {
  stopping_ = true;
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  cache_->store().setEvictionHook(nullptr);
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
  std::lock_guard lock(mu_);
  backings_[{backing.st_dev, backing.st_ino}] = Backing{rel, from_cache};
  Shard& s = shards_[rel];
  s.id = idOf(rel);
  s.size = static_cast<uint64_t>(backing.st_size);
  s.opens++;
  rel_of_[s.id] = rel;
  if (for_write) policy_->remove(s.id);  // its copy is gone (beginWrite)
  if (!probes_ && !for_write) {
    // Degraded: an open stands for a whole read of the file, from where it was opened.
    s.tick_read += s.size;
    if (!from_cache) s.tick_missed += s.size;
    (from_cache ? s.cache_read : s.remote_read) += s.size;
    if (!from_cache) s.remote_missed += s.size;
    s.last_ns = static_cast<uint64_t>(wallNs());
  }
}

void Placement::reconcileResidents() {
  std::vector<CacheStore::ObjectSummary> objects = cache_->store().list();  // no mu_ held
  uint64_t now = static_cast<uint64_t>(wallNs());
  std::lock_guard lock(mu_);
  for (const auto& obj : objects) {
    policy::ObjectId id = idOf(obj.rel_path);
    rel_of_[id] = obj.rel_path;
    if (!policy_->contains(id)) policy_->add(id, obj.allocated_bytes, now);
  }
}

void Placement::decayLocked(double now_s) {
  double dt = now_s - last_decay_s_;
  if (dt <= 0) return;
  double f = std::exp2(-dt / opts_.heat_half_life_seconds);
  for (auto& [rel, s] : shards_) s.heat *= f;
  last_decay_s_ = now_s;
}

void Placement::tick() {
  std::lock_guard tick_lock(tick_mu_);
  std::vector<bpf::ChunkDelta> deltas;
  std::vector<bpf::CgroupTotals> cgroups;
  if (probes_) {
    auto d = probes_->drain();
    if (d.ok()) deltas = std::move(*d);
    auto c = probes_->drainCgroups();
    if (c.ok()) cgroups = std::move(*c);
  }
  uint64_t now = static_cast<uint64_t>(wallNs());
  std::vector<std::pair<std::string, policy::Access>> active;
  {
    std::lock_guard lock(mu_);
    for (const auto& d : deltas) {
      auto it = backings_.find({d.dev, d.ino});
      if (it == backings_.end()) {
        unattributed_bytes_ += d.bytes_requested;
        continue;
      }
      Shard& s = shards_[it->second.rel];
      if (it->second.is_cache) {
        s.cache_read += d.bytes_requested;
        s.cache_missed += d.bytes_missed;
      } else {
        s.remote_read += d.bytes_requested;
        s.remote_missed += d.bytes_missed;
      }
      s.faults += d.mmap_faults;
      s.tick_read += d.bytes_requested;
      s.tick_missed += d.bytes_missed;
      s.last_ns = now;
      if (trace_ != nullptr) {
        policy::Request r{.time_ns = d.last_ns ? d.last_ns : now,
                          .id = s.id,
                          .size = s.size,
                          .offset = d.chunk * probes_->chunkBytes(),
                          .bytes_read = d.bytes_requested,
                          .bytes_missed = d.bytes_missed};
        if (trace_->write(r)) trace_records_++;
      }
    }
    for (const auto& c : cgroups) {
      Job& j = jobs_[c.path.empty() ? "cgroup:" + std::to_string(c.cgroup_id) : c.path];
      j.bytes_read += c.bytes_requested;
      j.bytes_missed += c.bytes_missed;
    }
    decayLocked(monotonicSeconds());
    for (auto& [rel, s] : shards_) {
      if (s.tick_read == 0 && s.tick_missed == 0) continue;
      double hits = static_cast<double>(s.tick_read > s.tick_missed ? s.tick_read - s.tick_missed : 0);
      s.heat += static_cast<double>(s.tick_missed) + kHitWeight * hits;
      policy::Access a{.id = s.id,
                       .size = s.size,
                       .bytes_read = std::max(s.tick_read, s.tick_missed),
                       .bytes_missed = s.tick_missed,
                       .time_ns = now};
      policy_->recordAccess(a);
      active.emplace_back(rel, a);
      s.tick_read = s.tick_missed = 0;
    }
    ticks_++;
  }
  if (ticks_ % 10 == 0) reconcileResidents();
  if (!opts_.automatic || active.empty()) return;

  // Which of them are still only on the remote (store calls without mu_).
  std::vector<std::pair<std::string, policy::Access>> candidates;
  for (auto& [rel, a] : active) {
    if (cache_->store().info(rel).state == CacheStore::State::kRemote && a.size > 0) {
      candidates.emplace_back(rel, a);
    }
  }
  if (candidates.empty()) return;
  std::sort(candidates.begin(), candidates.end(), [](const auto& x, const auto& y) {
    return x.second.bytes_missed > y.second.bytes_missed;
  });
  std::vector<policy::Access> accesses;
  for (const auto& c : candidates) accesses.push_back(c.second);
  uint64_t budget = opts_.promote_budget_per_tick ? opts_.promote_budget_per_tick : (1ull << 30);
  policy::PromotionPlan plan;
  std::vector<std::pair<policy::ObjectId, std::string>> promote, evict;
  {
    std::lock_guard lock(mu_);
    plan = policy::planPromotions(*policy_, accesses, budget);
    for (auto id : plan.promote) promote.emplace_back(id, rel_of_[id]);
    for (auto id : plan.evict) evict.emplace_back(id, rel_of_[id]);
  }
  for (const auto& [id, rel] : evict) {
    Status st = cache_->store().evict(rel);
    if (st.ok()) {
      std::lock_guard lock(mu_);
      evictions_++;
      spdlog::debug("placement: evicted {}", rel);
    } else if (st.error().code == Errc::kBusy) {
      // Pinned: it stays, so the policy keeps counting it.
      std::lock_guard lock(mu_);
      policy_->add(id, cache_->store().info(rel).size, now);
    }
  }
  for (const auto& [id, rel] : promote) {
    Status st = cache_->promoter().enqueue(rel, nullptr, [this, id = id, rel = rel](const Status& s) {
      std::lock_guard lock(mu_);
      if (s.ok()) {
        spdlog::debug("placement: promoted {}", rel);
        return;
      }
      promotion_failures_++;
      policy_->remove(id);
      spdlog::info("placement: promotion of {} failed: {}", rel, s.error().message);
    });
    std::lock_guard lock(mu_);
    if (st.ok()) {
      promotions_++;
    } else if (st.error().code != Errc::kExists) {
      policy_->remove(id);
    }
  }
}

namespace {

ProbeStatus probeStatusOf(const bpf::HeatProbes* probes, const std::string& degraded_reason) {
  if (probes == nullptr) return ProbeStatus{.mode = "degraded", .reason = degraded_reason};
  bpf::ProbeHealth h = probes->health();
  std::vector<std::string> programs;
  for (const auto& a : h.attached) {
    programs.push_back(a.tracepoint + ":" + bpf::programKindName(a.kind));
  }
  return ProbeStatus{.mode = "bpf",
                     .events = h.events,
                     .lost_updates = h.lost_updates + h.cgroup_lost_updates,
                     .attached = h.attached.size(),
                     .programs = std::move(programs),
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
  status.probes = probeStatusOf(probes_.get(), probes_reason_);
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
  std::vector<std::pair<std::string, Shard>> rows;
  {
    std::lock_guard lock(mu_);
    rows.assign(shards_.begin(), shards_.end());
  }
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) {
    return a.second.heat != b.second.heat ? a.second.heat > b.second.heat
                                          : a.second.last_ns > b.second.last_ns;
  });
  if (rows.size() > n) rows.resize(n);
  std::vector<ShardRow> out;
  for (const auto& [rel, s] : rows) {
    CacheStore::ObjectInfo info = cache_->store().info(rel);
    out.push_back(ShardRow{.path = rel,
                           .heat = s.heat,
                           .size = s.size,
                           .bytes_read = s.remote_read + s.cache_read,
                           .remote_read_bytes = s.remote_read,
                           .remote_miss_bytes = s.remote_missed,
                           .cache_bytes = s.cache_read,
                           .mmap_faults = s.faults,
                           .opens = s.opens,
                           .state = stateName(info.state),
                           .pinned = info.pinned});
  }
  return out;
}

Result<json> Placement::policySet(const std::string& spec) {
  reconcileResidents();
  std::lock_guard lock(mu_);
  auto rebuilt = policy::rebuildPolicy(*policy_, spec, static_cast<uint64_t>(wallNs()));
  if (!rebuilt.ok()) return makeError(Errc::kInvalidArgument, rebuilt.message());
  policy_ = std::move(rebuilt).value();
  spdlog::info("policy set to {}", policy::describePolicy(*policy_));
  return json{{"name", std::string(policy_->name())},
              {"spec", policy::describePolicy(*policy_)},
              {"params", paramsJson(*policy_)},
              {"residents", policy_->objects()}};
}

Result<json> Placement::traceRecord(const json& req) {
  if (!probes_) {
    return makeError(Errc::kUnsupported,
                     "trace record needs the BPF probes, which are degraded: " + probes_reason_);
  }
  std::string out = req.value("out", "");
  double duration = req.value("duration", 0.0);
  if (out.empty() || out[0] != '/') {
    return makeError(Errc::kInvalidArgument, "\"out\" must be an absolute path");
  }
  if (!(duration > 0 && duration <= 86400)) {
    return makeError(Errc::kInvalidArgument, "\"duration\" must be in (0, 86400] seconds");
  }
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  if (!file) return lastSysError("open " + out);
  auto writer = policy::makeTraceWriter(policy::TraceFormat::kNative, file);
  uint64_t records = 0;
  const char* mode = opts_.sample_rate > 0 ? "samples" : "chunks";
  if (opts_.sample_rate > 0) {
    // Raw sampled events from the ring buffer, one record each; a page-cache
    // miss is a record of its own, with its bytes counted as read and missed.
    auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(duration);
    Status failed = Ok{};
    while (failed.ok() && std::chrono::steady_clock::now() < deadline) {
      failed = probes_->pollSamples(100, [&](const bpf::SampleEvent& e) {
        std::lock_guard lock(mu_);
        auto it = backings_.find({e.dev, e.ino});
        if (it == backings_.end()) return;
        const Shard& s = shards_[it->second.rel];
        bool miss = e.kind == bpf::SampleKind::kMiss;
        policy::Request r{.time_ns = e.time_ns,
                          .id = s.id,
                          .size = s.size,
                          .offset = e.offset,
                          .bytes_read = e.length,
                          .bytes_missed = miss ? e.length : 0};
        if (writer->write(r)) records++;
      });
    }
    if (!failed.ok()) return failed.takeError();
  } else {
    // Per chunk and tick, as the placement loop drains them.
    {
      std::lock_guard lock(mu_);
      if (trace_ != nullptr) return makeError(Errc::kBusy, "a trace is already being recorded");
      trace_ = writer.get();
      trace_records_ = 0;
    }
    std::this_thread::sleep_for(std::chrono::duration<double>(duration));
    tick();  // what the last partial tick saw
    std::lock_guard lock(mu_);
    trace_ = nullptr;
    records = trace_records_;
  }
  if (auto st = writer->finish(); !st) return makeError(Errc::kIo, "write " + out + ": " + st.message());
  file.close();
  return json{{"out", out}, {"records", records}, {"format", "native"}, {"mode", mode}};
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
