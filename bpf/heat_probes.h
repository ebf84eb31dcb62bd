// bpf/: the heat probes' loader. Loads bpf/heat.bpf.c on the filemap tracepoints
// (tp_btf, else raw_tp, else classic tracepoints, whichever the kernel accepts),
// keeps a filter of watched devices, and drains the per (dev, ino, chunk) and
// per-cgroup counters the programs aggregate in kernel. Without BPF, load()
// fails with a reason the daemon logs before it runs degraded.
//
//   ASSIGN_OR_RETURN(auto probes, HeatProbes::load({.chunk_bytes = 16 << 20}));
//   RETURN_IF_ERROR(probes->watchDevice(st.st_dev));
//   every tick: ASSIGN_OR_RETURN(auto deltas, probes->drain());
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/result.h"

struct heat_bpf;
struct ring_buffer;
struct bpf_link;

namespace hotshard::bpf {

// How a program is attached, best first.
enum class ProgramKind { kTpBtf, kRawTp, kTracepoint };
const char* programKindName(ProgramKind kind);  // "tp_btf", "raw_tp", "tracepoint"

// What a tracepoint is counted as; each has one program per ProgramKind.
enum class Probe {
  kGetPages,        // buffered reads: pages requested
  kAddToPageCache,  // pages inserted: misses, readahead included
  kFault,           // mmap faults not served by fault-around
  kMapPages,        // mmap fault-around: pages requested
};

struct TracepointSpec {
  std::string category;  // "filemap"
  std::string name;      // "mm_filemap_get_pages"
  Probe probe;
};

// The four filemap tracepoints.
std::vector<TracepointSpec> defaultTracepoints();

struct ProbeOptions {
  // A power of two, at least one page. One event spanning more than 64 chunks
  // (1 GiB at 16 MiB) counts the rest as lost_updates.
  uint64_t chunk_bytes = 16ull << 20;
  uint32_t sample_rate = 0;        // 1 in N events to the ring buffer; 0: sampling off
  uint32_t ring_bytes = 1u << 20;  // ring buffer size when sampling (power of two)
  uint32_t chunk_entries = 0;      // LRU capacity of the chunk map; 0: HEAT_CHUNK_ENTRIES (65536)
  pid_t ignore_pid = 0;  // a process (the daemon: getpid()) whose reads are not counted; 0: none
  bool cgroup_totals = true;  // per-cgroup totals for drainCgroups(); off saves a third of the cost
  // Per-cgroup totals count only the files given to watchFile() (the daemon:
  // the backing files its mount opened); false: every file on watched devices.
  bool cgroup_files_only = false;
  std::vector<TracepointSpec> tracepoints = defaultTracepoints();
  std::vector<ProgramKind> kinds = {ProgramKind::kTpBtf, ProgramKind::kRawTp,
                                    ProgramKind::kTracepoint};  // tried in this order
  bool batch_ops = true;  // false: drain with get_next_key + lookup_and_delete (tests)
};

// Counters of one file chunk since the previous drain. Offsets are
// [chunk * chunk_bytes, (chunk + 1) * chunk_bytes).
struct ChunkDelta {
  dev_t dev;  // st_dev as stat(2) reports it
  uint64_t ino;
  uint64_t chunk;
  uint64_t bytes_requested;  // read() and mmap accesses, page granular
  uint64_t bytes_missed;     // inserted into the page cache (read from the backing store)
  uint64_t mmap_faults;
  uint64_t first_ns;  // CLOCK_MONOTONIC (bpf_ktime_get_ns) of the first and last event, to a tick
  uint64_t last_ns;
};

struct CgroupTotals {
  uint64_t cgroup_id;
  // The v2 path as /proc/PID/cgroup shows it ("/" for the root, "/a/b"),
  // relative to the cgroup2 mount; "" when not found (no v2, or cgroup gone).
  std::string path;
  uint64_t bytes_requested;
  uint64_t bytes_missed;
};

struct AttachedProbe {
  std::string tracepoint;  // "filemap:mm_filemap_get_pages"
  ProgramKind kind;
};

struct ProbeHealth {
  uint64_t events = 0;               // events on watched devices
  uint64_t chunk_inserts = 0;        // chunk keys created in the map
  uint64_t lost_updates = 0;         // chunk updates dropped (a cache slot's insert failed, range too wide)
  uint64_t cgroup_lost_updates = 0;  // cgroup updates dropped
  uint64_t continued_reads = 0;      // get_pages calls folded into the read they continue
  uint64_t samples_dropped = 0;      // ring buffer full
  uint64_t evicted_estimate = 0;     // keys the LRU evicted before a drain (lower bound)
  bool batch_ops = false;            // drains use BPF_MAP_LOOKUP_AND_DELETE_BATCH
  std::vector<AttachedProbe> attached;
  std::vector<std::string> skipped;  // "filemap:foo: not found" and the like
};

enum class SampleKind : uint32_t { kRead = 1, kMiss = 2, kFault = 3, kMap = 4 };

struct SampleEvent {
  dev_t dev;
  uint64_t ino;
  uint64_t offset;  // bytes
  uint64_t length;  // bytes
  SampleKind kind;
  uint64_t cgroup_id;
  uint64_t time_ns;  // CLOCK_MONOTONIC, to a tick
};

// The tracepoints' dev_t (major << 20 | minor) and stat(2)'s st_dev: the one
// place where one becomes the other.
dev_t kernelDevToStDev(uint32_t kdev);
uint32_t stDevToKernelDev(dev_t dev);
std::string devName(dev_t dev);  // "major:minor"

// Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or
// /sys/fs/cgroup/unified on hybrid hosts); "" without one.
std::string cgroup2MountPoint();

// Why BPF probes cannot load here (no BTF, no privilege, ...), or "" when a
// trial load would be worth it. Cheap; load() gives the definitive answer.
std::string probeUnavailableReason();

// Not thread-safe: one owner (the placement loop) calls everything but
// pollSamples(), which one other thread (a trace recorder) may call.
class HeatProbes {
 public:
  // Opens, loads and attaches the programs. Tracepoints the kernel lacks are
  // skipped with a log line; an error only when none could be attached, its
  // message starting "BPF unavailable: " when the kernel refused BPF.
  // Errors: Errc::kInvalidArgument for bad options; kUnsupported when none of
  // the tracepoints exists, or when every kind failed; kPermission (with the
  // errno) when the first failure was EPERM or EACCES. A failed kind reads
  // "<stage> <kind> programs: <strerror>" (stage: open, bpf(BPF_PROG_LOAD) or
  // attach), with libbpf's first warning in parentheses.
  static Result<std::unique_ptr<HeatProbes>> load(const ProbeOptions& options);
  ~HeatProbes();
  HeatProbes(const HeatProbes&) = delete;
  HeatProbes& operator=(const HeatProbes&) = delete;

  // Counts events on the file system of st_dev (as stat(2) reports it).
  Status watchDevice(dev_t st_dev);
  Status unwatchDevice(dev_t st_dev);
  // With options.cgroup_files_only, per-cgroup totals count reads of these
  // files only (st_dev as stat(2) reports it). Thread-safe (a syscall each);
  // watchFile fails with E2BIG past HEAT_FILE_ENTRIES files.
  Status watchFile(dev_t st_dev, uint64_t ino);
  Status unwatchFile(dev_t st_dev, uint64_t ino);

  // Deltas since the previous drain, exact: the programs switch to a second
  // set of maps first, and the drained set is emptied once no program can
  // write to it (an RCU grace period: a few milliseconds).
  Result<std::vector<ChunkDelta>> drain();
  // Empty when options.cgroup_totals is off.
  Result<std::vector<CgroupTotals>> drainCgroups();

  ProbeHealth health() const;

  // Waits up to timeout_ms for sampled events (options.sample_rate > 0) and
  // hands each to on_sample. Error when sampling is off.
  Status pollSamples(int timeout_ms, const std::function<void(const SampleEvent&)>& on_sample);

  uint64_t chunkBytes() const { return chunk_bytes_; }

 private:
  HeatProbes() = default;
  // load()'s stages for one program kind: open, set rodata, select, load, attach.
  static Result<std::unique_ptr<HeatProbes>> loadAs(ProgramKind kind, const ProbeOptions& options,
                                                    long page_size,
                                                    const std::vector<TracepointSpec>& present,
                                                    const std::vector<std::string>& skipped);
  Status openSkeleton(ProgramKind kind);
  Status attach(const std::vector<TracepointSpec>& present, ProgramKind kind);
  uint64_t pagesToBytes(uint64_t pages) const { return pages << page_shift_; }
  Result<uint64_t> readStat(uint32_t slot) const;
  static uint32_t retireSet(uint32_t* set);
  Status drainPendingCgroups(uint32_t retired, std::vector<CgroupTotals>* totals);
  Status drainChunkCaches(uint32_t retired, std::vector<ChunkDelta>* deltas);
  std::string cgroupPath(uint64_t cgroup_id);

  heat_bpf* skel_ = nullptr;
  std::vector<bpf_link*> links_;
  ring_buffer* ring_ = nullptr;
  const std::function<void(const SampleEvent&)>* on_sample_ = nullptr;
  uint32_t page_shift_ = 12;
  uint64_t chunk_bytes_ = 0;
  uint32_t sample_rate_ = 0;
  bool batch_ops_ = true;
  bool cgroup_totals_ = true;
  int ncpus_ = 1;
  uint64_t keys_drained_ = 0;
  uint64_t evicted_estimate_ = 0;
  std::vector<AttachedProbe> attached_;
  std::vector<std::string> skipped_;
  std::unordered_map<uint64_t, std::string> cgroup_paths_;
};

}  // namespace hotshard::bpf
