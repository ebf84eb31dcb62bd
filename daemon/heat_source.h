// HeatSource: where the placement loop's heat comes from, behind one face. Each
// tick the loop drains what files' backings saw since the previous drain: per
// (st_dev, ino, offset) bytes read and missed, and per-job totals. Placement
// attributes them to shards; a source knows nothing of shards or policies.
//
// Two live sources: the eBPF probes (ProbeHeatSource, over bpf::HeatProbes) and,
// degraded, the opens FUSE observes (OpenHeatSource: an open stands for a whole
// read of the file from its backing). Tests drive placement with a fake.
// makeHeatSource() loads the probes and falls back to degraded with the reason.
//
// Thread safety: drain() is called by one thread (the placement tick);
// noteOpen() from any thread (FUSE workers); health() and pollSamples() from a
// control thread. Implementations guard what they share with a leaf lock.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

namespace hotshard {
namespace bpf {
class HeatProbes;
}

// Bytes read from one backing file's range since the previous drain.
struct FileHeat {
  dev_t dev = 0;  // st_dev as stat(2) reports it
  uint64_t ino = 0;
  uint64_t offset = 0;  // where the range starts (a probe chunk), for traces
  uint64_t bytes_read = 0;
  uint64_t bytes_missed = 0;  // of those, fetched from the backing store
  uint64_t mmap_faults = 0;
  uint64_t time_ns = 0;  // of the latest read, for traces; 0: unknown (the tick's time)
};

// One job's (cgroup's) totals since the previous drain.
struct JobHeat {
  std::string job;  // cgroup path, or "cgroup:<id>" when it has none
  uint64_t bytes_read = 0, bytes_missed = 0;
};

struct HeatBatch {
  std::vector<FileHeat> files;
  std::vector<JobHeat> jobs;
};

// What `status` says of the source.
struct HeatSourceHealth {
  bool degraded = false;
  std::string reason;  // why degraded
  uint64_t events = 0, lost_updates = 0;
  std::vector<std::string> programs;  // "filemap:mm_filemap_get_pages:tp_btf"
  std::vector<std::string> skipped;
};

// One sampled read, for `trace record` in sample mode.
struct HeatSample {
  dev_t dev = 0;
  uint64_t ino = 0;
  uint64_t offset = 0, length = 0;
  bool miss = false;
  uint64_t time_ns = 0;
};

class HeatSource {
 public:
  virtual ~HeatSource() = default;
  // Heat since the previous drain.
  virtual Result<HeatBatch> drain() = 0;
  // An open through the mount, on `backing` (the cache copy when from_cache).
  virtual void noteOpen(const struct stat& backing, bool from_cache, bool for_write) {
    (void)backing, (void)from_cache, (void)for_write;
  }
  virtual HeatSourceHealth health() const = 0;
  // Waits up to timeout_ms for sampled reads; kUnsupported unless sampling is on.
  virtual Status pollSamples(int timeout_ms,
                             const std::function<void(const HeatSample&)>& on_sample);
  // True when sampling is on (pollSamples() delivers).
  virtual bool samples() const { return false; }
};

// The eBPF probes (bpf::HeatProbes), watching the given devices.
class ProbeHeatSource final : public HeatSource {
 public:
  explicit ProbeHeatSource(std::unique_ptr<bpf::HeatProbes> probes, uint32_t sample_rate);
  ~ProbeHeatSource() override;
  Result<HeatBatch> drain() override;
  // Adds the backing to the probes' served files: only those count per job.
  // Once per file (a map update, and every CPU's served-files memo made stale,
  // per open would cost the reopen of a known file for nothing).
  void noteOpen(const struct stat& backing, bool from_cache, bool for_write) override;
  HeatSourceHealth health() const override;
  Status pollSamples(int timeout_ms,
                     const std::function<void(const HeatSample&)>& on_sample) override;
  bool samples() const override { return sample_rate_ > 0; }
  // Files added to the probes' served files by noteOpen so far.
  size_t watchedFiles();

 private:
  std::unique_ptr<bpf::HeatProbes> probes_;
  uint32_t sample_rate_;
  // The files watchFile added, by (st_dev, st_ino): the served-files map keeps
  // them for good (nothing unwatches), so this set mirrors it and is bounded
  // by the map's HEAT_FILE_ENTRIES. Guarded by watched_mu_, a leaf.
  std::mutex watched_mu_;
  std::set<std::pair<dev_t, uint64_t>> watched_;
};

// Degraded: each read-only open counts as a whole read of the file, missed when
// it came from the remote.
class OpenHeatSource final : public HeatSource {
 public:
  explicit OpenHeatSource(std::string reason) : reason_(std::move(reason)) {}
  Result<HeatBatch> drain() override;
  void noteOpen(const struct stat& backing, bool from_cache, bool for_write) override;
  HeatSourceHealth health() const override;

 private:
  std::string reason_;
  std::mutex mu_;  // leaf; guards pending_
  std::vector<FileHeat> pending_;
};

struct HeatSourceOptions {
  bool probes = true;  // false: degraded by configuration
  uint64_t chunk_bytes = 16ull << 20;
  uint32_t sample_rate = 0;
  std::vector<dev_t> watch_devices;
};

// The probes when they load, else degraded with the reason (logged either way).
std::unique_ptr<HeatSource> makeHeatSource(const HeatSourceOptions& options);

}  // namespace hotshard
