#include "daemon/heat_source.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include "bpf/heat_probes.h"

namespace hotshard {

Status HeatSource::pollSamples(int, const std::function<void(const HeatSample&)>&) {
  return makeError(Errc::kUnsupported, "this heat source does not sample reads");
}

// ---- eBPF probes ------------------------------------------------------------

ProbeHeatSource::ProbeHeatSource(std::unique_ptr<bpf::HeatProbes> probes, uint32_t sample_rate)
    : probes_(std::move(probes)), sample_rate_(sample_rate) {}

ProbeHeatSource::~ProbeHeatSource() = default;

Result<HeatBatch> ProbeHeatSource::drain() {
  HeatBatch batch;
  // A failed drain loses one tick's heat, not the other half of the batch.
  if (auto chunks = probes_->drain(); chunks.ok()) {
    batch.files.reserve(chunks->size());
    for (const auto& d : *chunks) {
      batch.files.push_back(FileHeat{.dev = d.dev,
                                     .ino = d.ino,
                                     .offset = d.chunk * probes_->chunkBytes(),
                                     .bytes_read = d.bytes_requested,
                                     .bytes_missed = d.bytes_missed,
                                     .mmap_faults = d.mmap_faults,
                                     .time_ns = d.last_ns});
    }
  }
  if (auto cgroups = probes_->drainCgroups(); cgroups.ok()) {
    for (const auto& c : *cgroups) {
      batch.jobs.push_back(
          JobHeat{.job = c.path.empty() ? "cgroup:" + std::to_string(c.cgroup_id) : c.path,
                  .bytes_read = c.bytes_requested,
                  .bytes_missed = c.bytes_missed});
    }
  }
  return batch;
}

void ProbeHeatSource::noteOpen(const struct stat& backing, bool, bool) {
  auto key = std::make_pair(backing.st_dev, static_cast<uint64_t>(backing.st_ino));
  std::lock_guard lock(watched_mu_);  // one update per file even when opened at once
  if (watched_.contains(key)) return;
  Status st = probes_->watchFile(backing.st_dev, backing.st_ino);
  if (!st.ok()) {
    spdlog::warn("probes: {} (its reads will not count per job)", st.error().message);
    return;
  }
  watched_.insert(key);
}

size_t ProbeHeatSource::watchedFiles() {
  std::lock_guard lock(watched_mu_);
  return watched_.size();
}

HeatSourceHealth ProbeHeatSource::health() const {
  bpf::ProbeHealth h = probes_->health();
  HeatSourceHealth out{.events = h.events,
                       .lost_updates = h.lost_updates + h.cgroup_lost_updates,
                       .skipped = h.skipped};
  for (const auto& a : h.attached) {
    out.programs.push_back(a.tracepoint + ":" + bpf::programKindName(a.kind));
  }
  return out;
}

Status ProbeHeatSource::pollSamples(int timeout_ms,
                                    const std::function<void(const HeatSample&)>& on_sample) {
  return probes_->pollSamples(timeout_ms, [&](const bpf::SampleEvent& e) {
    on_sample(HeatSample{.dev = e.dev,
                         .ino = e.ino,
                         .offset = e.offset,
                         .length = e.length,
                         .miss = e.kind == bpf::SampleKind::kMiss,
                         .time_ns = e.time_ns});
  });
}

// ---- degraded: FUSE opens ---------------------------------------------------

Result<HeatBatch> OpenHeatSource::drain() {
  HeatBatch batch;
  std::lock_guard lock(mu_);
  batch.files.swap(pending_);
  return batch;
}

void OpenHeatSource::noteOpen(const struct stat& backing, bool from_cache, bool for_write) {
  if (for_write) return;
  auto size = static_cast<uint64_t>(backing.st_size);
  std::lock_guard lock(mu_);
  pending_.push_back(FileHeat{.dev = backing.st_dev,
                              .ino = backing.st_ino,
                              .bytes_read = size,
                              .bytes_missed = from_cache ? 0 : size});
}

HeatSourceHealth OpenHeatSource::health() const {
  return HeatSourceHealth{.degraded = true, .reason = reason_};
}

// ---- choice -------------------------------------------------------------------

namespace {

Result<std::unique_ptr<HeatSource>> loadProbes(const HeatSourceOptions& o) {
  if (!o.probes) return makeError(Errc::kUnsupported, "disabled by configuration (--probes off)");
  bpf::ProbeOptions po;
  po.chunk_bytes = o.chunk_bytes;
  po.sample_rate = o.sample_rate;
  po.ignore_pid = ::getpid();  // our own promotion reads are not heat
  po.cgroup_files_only = true;  // jobs' bytes: the files this mount serves, not the whole device
  ASSIGN_OR_RETURN(auto probes, bpf::HeatProbes::load(po));
  for (dev_t dev : o.watch_devices) {
    Status st = probes->watchDevice(dev);
    if (!st.ok()) spdlog::warn("probes: watch device {}: {}", dev, st.error().message);
  }
  spdlog::info("probes: bpf ({} programs attached)", probes->health().attached.size());
  return std::unique_ptr<HeatSource>(new ProbeHeatSource(std::move(probes), o.sample_rate));
}

}  // namespace

std::unique_ptr<HeatSource> makeHeatSource(const HeatSourceOptions& options) {
  auto probes = loadProbes(options);
  if (probes.ok()) return std::move(probes).value();
  spdlog::warn("probes: degraded, heat comes from FUSE opens only: {}", probes.error().message);
  return std::make_unique<OpenHeatSource>(probes.error().message);
}

}  // namespace hotshard
