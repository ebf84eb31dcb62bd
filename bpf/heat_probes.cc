#include "bpf/heat_probes.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <linux/membarrier.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <tuple>

#include "bpf/heat.skel.h"

// The header shared with the BPF side, with its layouts pinned.
#include "bpf/heat.h"

static_assert(sizeof(heat_key) == 24, "heat_key layout changed: rebuild both sides");
static_assert(sizeof(heat_val) == 40, "heat_val layout changed: rebuild both sides");
static_assert(sizeof(heat_cgroup_val) == 16, "heat_cgroup_val layout changed");
static_assert(sizeof(heat_sample) == 48, "heat_sample layout changed");
static_assert(sizeof(heat_file_key) == 16, "heat_file_key layout changed");
static_assert(sizeof(heat_cgroup_pending) == 24, "heat_cgroup_pending layout changed");
static_assert(sizeof(heat_served_memo) == 24, "heat_served_memo layout changed");
static_assert(sizeof(heat_chunk_slot) == 64, "heat_chunk_slot layout changed");
static_assert(sizeof(heat_chunk_cache) == 64 * HEAT_CHUNK_CACHE_SLOTS, "heat_chunk_cache layout changed");

namespace hotshard::bpf {
namespace {

constexpr uint32_t kDrainBatch = 4096;
constexpr int kEnotsupp = 524;  // the kernel's ENOTSUPP, not in userspace errno.h

// libbpf's messages go to spdlog at debug level (a failed tp_btf attempt before
// the raw_tp fallback is not worth a warning); the first warning of this thread
// since the attempt began is kept to explain a failed load.
thread_local std::string first_libbpf_warning;

int libbpfPrint(enum libbpf_print_level level, const char* format, va_list args) {
  char line[1024];
  vsnprintf(line, sizeof(line), format, args);
  std::string text(line);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  if (text.rfind("libbpf: ", 0) == 0) text.erase(0, 8);
  // The first warning is the cause; the memlock one is noise since Linux 5.11
  // (memcg accounting), and the skeleton's is an echo.
  if (level == LIBBPF_WARN && first_libbpf_warning.empty() &&
      text.rfind("Failed to bump RLIMIT_MEMLOCK", 0) != 0)
    first_libbpf_warning = text;
  spdlog::debug("libbpf: {}", text);
  return 0;
}

void installLibbpfLogger() {
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(libbpfPrint); });
}

bool tracefsHas(const TracepointSpec& tp) {
  for (const char* root : {"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}) {
    std::string path = std::string(root) + "/events/" + tp.category + "/" + tp.name;
    if (access(path.c_str(), F_OK) == 0) return true;
  }
  return false;
}

// tp_btf and raw_tp need the tracepoint's btf_trace_<name> typedef in vmlinux BTF.
bool btfHas(const ::btf* vmlinux, const TracepointSpec& tp) {
  if (vmlinux == nullptr) return false;
  std::string type = "btf_trace_" + tp.name;
  return btf__find_by_name_kind(vmlinux, type.c_str(), BTF_KIND_TYPEDEF) >= 0;
}

bpf_program* programFor(heat_bpf* skel, Probe probe, ProgramKind kind) {
  const auto& p = skel->progs;
  // Rows in Probe order, columns in ProgramKind order.
  bpf_program* const programs[][3] = {
      {p.btf_get_pages, p.raw_get_pages, p.tp_get_pages},
      {p.btf_add_to_page_cache, p.raw_add_to_page_cache, p.tp_add_to_page_cache},
      {p.btf_fault, p.raw_fault, p.tp_fault},
      {p.btf_map_pages, p.raw_map_pages, p.tp_map_pages},
  };
  return programs[static_cast<int>(probe)][static_cast<int>(kind)];
}

std::string tracepointName(const TracepointSpec& tp) { return tp.category + ":" + tp.name; }

bpf_link* attachProgram(bpf_program* prog, ProgramKind kind, const TracepointSpec& tp) {
  switch (kind) {
    case ProgramKind::kTpBtf:
      return bpf_program__attach(prog);  // target fixed at load by set_attach_target
    case ProgramKind::kRawTp:
      return bpf_program__attach_raw_tracepoint(prog, tp.name.c_str());
    case ProgramKind::kTracepoint:
      return bpf_program__attach_tracepoint(prog, tp.category.c_str(), tp.name.c_str());
  }
  errno = EINVAL;
  return nullptr;
}

bool isUnsupported(int err) { return err == EINVAL || err == ENOTSUP || err == kEnotsupp; }

// Reads and deletes every entry of a hash map, handing each (key, value) to
// fn: with BPF_MAP_LOOKUP_AND_DELETE_BATCH when allowed and supported, else
// get_next_key over all keys then lookup_and_delete (or lookup + delete) each.
Result<uint64_t> drainMap(int fd, size_t key_size, size_t value_size, bool* use_batch,
                          const std::function<void(const void*, const void*)>& fn) {
  uint64_t drained = 0;
  if (*use_batch) {
    uint32_t capacity = kDrainBatch;
    std::vector<uint8_t> keys(key_size * capacity), values(value_size * capacity);
    uint64_t in_batch = 0, out_batch = 0;
    bool first = true;
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    for (;;) {
      uint32_t count = capacity;
      int rc = bpf_map_lookup_and_delete_batch(fd, first ? nullptr : &in_batch, &out_batch,
                                               keys.data(), values.data(), &count, &opts);
      int err = rc < 0 ? errno : 0;
      for (uint32_t i = 0; i < count; ++i) fn(&keys[i * key_size], &values[i * value_size]);
      drained += count;
      if (err == ENOENT) return drained;
      if (err == ENOSPC && count == 0) {  // a bucket holds more than the buffers: grow
        capacity *= 2;
        keys.resize(key_size * capacity);
        values.resize(value_size * capacity);
        continue;
      }
      if (err != 0) {
        if (first && drained == 0 && isUnsupported(err)) {
          spdlog::info("heat probes: batch map operations unsupported ({}), draining key by key",
                       strerror(err));
          *use_batch = false;
          break;
        }
        return sysError(err, "bpf(BPF_MAP_LOOKUP_AND_DELETE_BATCH) on heat map");
      }
      in_batch = out_batch;
      first = false;
    }
  }

  std::vector<uint8_t> keys;
  std::vector<uint8_t> key(key_size), next(key_size), value(value_size);
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, next.data()) == 0) {
    keys.insert(keys.end(), next.begin(), next.end());
    key = next;
    prev = key.data();
  }
  for (size_t off = 0; off < keys.size(); off += key_size) {
    const void* k = &keys[off];
    if (bpf_map_lookup_and_delete_elem(fd, k, value.data()) != 0) {
      if (!isUnsupported(errno)) continue;  // ENOENT: evicted meanwhile
      if (bpf_map_lookup_elem(fd, k, value.data()) != 0) continue;
      bpf_map_delete_elem(fd, k);
    }
    fn(k, value.data());
    ++drained;
  }
  return drained;
}

// load()'s stages. Each returns an error that names what failed; the ones that
// try a program kind name the attempt, "<what> <kind> programs: <strerror>",
// with libbpf's first warning since the attempt began when it gave one.

Status checkProbeOptions(const ProbeOptions& options, long page_size) {
  if (!std::has_single_bit(options.chunk_bytes) ||
      options.chunk_bytes < static_cast<uint64_t>(page_size))
    return makeError(Errc::kInvalidArgument, "heat probes: chunk_bytes " +
                                                 std::to_string(options.chunk_bytes) +
                                                 " must be a power of two of at least one page");
  if (options.sample_rate > 0 && (!std::has_single_bit(options.ring_bytes) ||
                                  options.ring_bytes < static_cast<uint32_t>(page_size)))
    return makeError(Errc::kInvalidArgument,
                     "heat probes: ring_bytes must be a power of two of at least one page");
  if (options.kinds.empty())
    return makeError(Errc::kInvalidArgument, "heat probes: no program kind to try");
  return Ok{};
}

// The feature probe: which of the wanted tracepoints this kernel has, by BTF or
// by tracefs. The others are logged and named in `skipped`.
Result<std::vector<TracepointSpec>> presentTracepoints(const std::vector<TracepointSpec>& wanted,
                                                       std::vector<std::string>& skipped) {
  std::unique_ptr<::btf, void (*)(::btf*)> vmlinux(btf__load_vmlinux_btf(), btf__free);
  std::vector<TracepointSpec> present;
  for (const auto& tp : wanted) {
    if (!btfHas(vmlinux.get(), tp) && !tracefsHas(tp)) {
      spdlog::warn("heat probes: tracepoint {} not found in this kernel: skipped",
                   tracepointName(tp));
      skipped.push_back(tracepointName(tp) + ": not found");
      continue;
    }
    for (const auto& other : present)
      if (other.probe == tp.probe)
        return makeError(Errc::kInvalidArgument, "heat probes: " + tracepointName(tp) + " and " +
                                                     tracepointName(other) +
                                                     " use the same program");
    present.push_back(tp);
  }
  if (present.empty())
    return makeError(Errc::kUnsupported, "heat probes: none of the tracepoints exists");
  return present;
}

Error attemptError(const std::string& what, ProgramKind kind, int err) {
  std::string why = what + " " + programKindName(kind) + " programs: " + strerror(err);
  if (!first_libbpf_warning.empty()) why += " (libbpf: " + first_libbpf_warning + ")";
  return Error{Errc::kUnsupported, err, why};
}

// The programs' settings (read-only globals) and map sizes, before load.
void setRodata(heat_bpf* skel, const ProbeOptions& options, uint32_t page_shift, long page_size) {
  skel->rodata->page_shift = page_shift;
  skel->rodata->chunk_page_shift = std::countr_zero(options.chunk_bytes) - page_shift;
  skel->rodata->sample_rate = options.sample_rate;
  skel->rodata->count_cgroups = options.cgroup_totals;
  skel->rodata->ignore_tgid = static_cast<uint32_t>(options.ignore_pid);
  skel->rodata->cgroup_files_only = options.cgroup_files_only;
  bpf_map__set_max_entries(skel->maps.samples, options.sample_rate > 0
                                                   ? options.ring_bytes
                                                   : static_cast<uint32_t>(page_size));
  if (options.chunk_entries > 0) {
    bpf_map__set_max_entries(skel->maps.chunks0, options.chunk_entries);
    bpf_map__set_max_entries(skel->maps.chunks1, options.chunk_entries);
  }
}

// Loads only the programs of `kind` for the present tracepoints; tp_btf ones
// get their target fixed here.
void selectPrograms(heat_bpf* skel, const std::vector<TracepointSpec>& present, ProgramKind kind) {
  bpf_program* prog;
  bpf_object__for_each_program(prog, skel->obj) bpf_program__set_autoload(prog, false);
  for (const auto& tp : present) {
    prog = programFor(skel, tp.probe, kind);
    bpf_program__set_autoload(prog, true);
    if (kind == ProgramKind::kTpBtf) bpf_program__set_attach_target(prog, 0, tp.name.c_str());
  }
}

}  // namespace

const char* programKindName(ProgramKind kind) {
  switch (kind) {
    case ProgramKind::kTpBtf:
      return "tp_btf";
    case ProgramKind::kRawTp:
      return "raw_tp";
    case ProgramKind::kTracepoint:
      return "tracepoint";
  }
  return "?";
}

std::vector<TracepointSpec> defaultTracepoints() {
  return {
      {"filemap", "mm_filemap_get_pages", Probe::kGetPages},
      {"filemap", "mm_filemap_add_to_page_cache", Probe::kAddToPageCache},
      {"filemap", "mm_filemap_fault", Probe::kFault},
      {"filemap", "mm_filemap_map_pages", Probe::kMapPages},
  };
}

dev_t kernelDevToStDev(uint32_t kdev) { return makedev(kdev >> 20, kdev & ((1u << 20) - 1)); }

uint32_t stDevToKernelDev(dev_t dev) { return (major(dev) << 20) | minor(dev); }

std::string devName(dev_t dev) {
  return std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
}

std::string probeUnavailableReason() {
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
    return std::string("no kernel BTF: /sys/kernel/btf/vmlinux: ") + strerror(errno);
  installLibbpfLogger();
  int rc = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_TRACEPOINT, nullptr);
  if (rc < 0) return std::string("bpf(BPF_PROG_LOAD) of a tracepoint program: ") + strerror(-rc);
  if (rc == 0) return "the kernel does not support tracepoint BPF programs";
  return "";
}

// Stages: check the options, probe which tracepoints exist, then for each
// program kind in turn (best first) open, set rodata, select, load and attach;
// the first kind that attaches anything wins.
Result<std::unique_ptr<HeatProbes>> HeatProbes::load(const ProbeOptions& options) {
  installLibbpfLogger();
  const long page_size = sysconf(_SC_PAGESIZE);
  RETURN_IF_ERROR(checkProbeOptions(options, page_size));
  std::vector<std::string> skipped;
  ASSIGN_OR_RETURN(auto present, presentTracepoints(options.tracepoints, skipped));

  std::optional<Error> first_failure;
  for (ProgramKind kind : options.kinds) {
    auto probes = loadAs(kind, options, page_size, present, skipped);
    if (probes.ok()) return probes;
    spdlog::info("heat probes: {}", probes.error().message);
    if (!first_failure) first_failure = probes.takeError();
  }
  // options.kinds is not empty, so there was a first failure.
  const int err = first_failure->sys_errno;
  bool denied = err == EPERM || err == EACCES;
  return Error{denied ? Errc::kPermission : Errc::kUnsupported, err,
               "BPF unavailable: " + first_failure->message +
                   (denied ? "; needs root, or CAP_BPF with CAP_PERFMON" : "")};
}

Result<std::unique_ptr<HeatProbes>> HeatProbes::loadAs(ProgramKind kind,
                                                       const ProbeOptions& options, long page_size,
                                                       const std::vector<TracepointSpec>& present,
                                                       const std::vector<std::string>& skipped) {
  std::unique_ptr<HeatProbes> probes(new HeatProbes());
  probes->page_shift_ = std::countr_zero(static_cast<uint64_t>(page_size));
  probes->chunk_bytes_ = options.chunk_bytes;
  probes->sample_rate_ = options.sample_rate;
  probes->batch_ops_ = options.batch_ops;
  probes->cgroup_totals_ = options.cgroup_totals;
  probes->skipped_ = skipped;
  probes->ncpus_ = std::max(1, libbpf_num_possible_cpus());

  first_libbpf_warning.clear();
  RETURN_IF_ERROR(probes->openSkeleton(kind));
  setRodata(probes->skel_, options, probes->page_shift_, page_size);
  selectPrograms(probes->skel_, present, kind);
  if (int rc = heat_bpf__load(probes->skel_); rc != 0)
    return attemptError("bpf(BPF_PROG_LOAD)", kind, -rc);  // the destructor closes the rest
  RETURN_IF_ERROR(probes->attach(present, kind));
  spdlog::info(
      "heat probes: {} tracepoint(s) attached as {}, chunk {} bytes, sampling {}",
      probes->links_.size(), programKindName(kind), options.chunk_bytes,
      options.sample_rate > 0 ? "1/" + std::to_string(options.sample_rate) : std::string("off"));
  return probes;
}

Status HeatProbes::openSkeleton(ProgramKind kind) {
  errno = 0;
  skel_ = heat_bpf__open();
  if (skel_ == nullptr) return attemptError("open", kind, errno ? errno : EINVAL);
  return Ok{};
}

// A tracepoint that fails to attach is skipped; an error only when none attached.
Status HeatProbes::attach(const std::vector<TracepointSpec>& present, ProgramKind kind) {
  const char* kind_name = programKindName(kind);
  for (const auto& tp : present) {
    errno = 0;
    bpf_link* link = attachProgram(programFor(skel_, tp.probe, kind), kind, tp);
    if (link == nullptr) {
      int err = errno ? errno : EINVAL;
      spdlog::warn("heat probes: attach {} as {}: {}: skipped", tracepointName(tp), kind_name,
                   strerror(err));
      skipped_.push_back(tracepointName(tp) + ": attach " + kind_name + ": " + strerror(err));
      continue;
    }
    links_.push_back(link);
    attached_.push_back({tracepointName(tp), kind});
  }
  if (links_.empty()) return attemptError("attach", kind, ENOENT);
  return Ok{};
}

HeatProbes::~HeatProbes() {
  if (ring_ != nullptr) ring_buffer__free(ring_);
  for (bpf_link* link : links_) bpf_link__destroy(link);
  if (skel_ != nullptr) heat_bpf__destroy(skel_);
}

// The filter lives in the programs' .bss, mapped here: entries first, then the
// count, so a program never reads an entry the count does not cover yet.
Status HeatProbes::watchDevice(dev_t st_dev) {
  uint32_t kdev = stDevToKernelDev(st_dev);
  auto* bss = skel_->bss;
  uint32_t n = __atomic_load_n(&bss->nr_watched_devs, __ATOMIC_RELAXED);
  for (uint32_t i = 0; i < n; ++i)
    if (bss->watched_devs[i] == kdev) return Ok{};
  if (n == HEAT_MAX_DEVICES)
    return makeError(Errc::kNoSpace, "heat probes: watch device " + devName(st_dev) +
                                         ": already watching " + std::to_string(HEAT_MAX_DEVICES) +
                                         " devices");
  __atomic_store_n(&bss->watched_devs[n], kdev, __ATOMIC_RELAXED);
  __atomic_store_n(&bss->nr_watched_devs, n + 1, __ATOMIC_RELEASE);
  return Ok{};
}

// Moves the last entry into the freed slot, then shrinks the count: a program
// racing with this may count one more event of either device, never crash.
Status HeatProbes::unwatchDevice(dev_t st_dev) {
  uint32_t kdev = stDevToKernelDev(st_dev);
  auto* bss = skel_->bss;
  uint32_t n = __atomic_load_n(&bss->nr_watched_devs, __ATOMIC_RELAXED);
  for (uint32_t i = 0; i < n; ++i) {
    if (bss->watched_devs[i] != kdev) continue;
    __atomic_store_n(&bss->watched_devs[i], bss->watched_devs[n - 1], __ATOMIC_RELAXED);
    __atomic_store_n(&bss->nr_watched_devs, n - 1, __ATOMIC_RELEASE);
    return Ok{};
  }
  return makeError(Errc::kNotFound,
                   "heat probes: unwatch device " + devName(st_dev) + ": not watched");
}

// The served-files set: a syscall each, safe from any thread.
Status HeatProbes::watchFile(dev_t st_dev, uint64_t ino) {
  heat_file_key key{.dev = stDevToKernelDev(st_dev), .pad = 0, .ino = ino};
  uint8_t one = 1;
  if (bpf_map_update_elem(bpf_map__fd(skel_->maps.served_files), &key, &one, BPF_ANY) != 0)
    return lastSysError("heat probes: watch file " + devName(st_dev) + ":" + std::to_string(ino));
  __atomic_fetch_add(&skel_->bss->served_gen, 1, __ATOMIC_RELEASE);  // per-CPU memos go stale
  return Ok{};
}

Status HeatProbes::unwatchFile(dev_t st_dev, uint64_t ino) {
  heat_file_key key{.dev = stDevToKernelDev(st_dev), .pad = 0, .ino = ino};
  if (bpf_map_delete_elem(bpf_map__fd(skel_->maps.served_files), &key) != 0)
    return lastSysError("heat probes: unwatch file " + devName(st_dev) + ":" + std::to_string(ino));
  __atomic_fetch_add(&skel_->bss->served_gen, 1, __ATOMIC_RELEASE);  // per-CPU memos go stale
  return Ok{};
}

// Points the programs at the other counter set and returns the one they used,
// once no program can still be writing to it: programs run under
// rcu_read_lock(), and MEMBARRIER_CMD_GLOBAL returns after synchronize_rcu().
// Where that command is refused (nohz_full), a pause far longer than any
// program runs stands in for it.
uint32_t HeatProbes::retireSet(uint32_t* set) {
  const uint32_t old = __atomic_load_n(set, __ATOMIC_ACQUIRE);
  __atomic_store_n(set, old ^ 1, __ATOMIC_RELEASE);
  if (syscall(__NR_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) != 0 ||
      sysconf(_SC_NPROCESSORS_ONLN) == 1)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return old;
}

Result<uint64_t> HeatProbes::readStat(uint32_t slot) const {
  std::vector<uint64_t> per_cpu(ncpus_);
  if (bpf_map__lookup_elem(skel_->maps.stats, &slot, sizeof(slot), per_cpu.data(),
                           per_cpu.size() * sizeof(uint64_t), 0) != 0)
    return lastSysError("heat probes: read stats");
  uint64_t sum = 0;
  for (uint64_t v : per_cpu) sum += v;
  return sum;
}

Result<std::vector<ChunkDelta>> HeatProbes::drain() {
  // Every key inserted before this read is either drained below or was evicted.
  ASSIGN_OR_RETURN(uint64_t inserts_before, readStat(HEAT_STAT_INSERTS));
  const uint32_t retired = retireSet(&skel_->bss->chunk_set);
  std::vector<ChunkDelta> deltas;
  ASSIGN_OR_RETURN(
      uint64_t drained,
      drainMap(bpf_map__fd(retired ? skel_->maps.chunks1 : skel_->maps.chunks0), sizeof(heat_key),
               sizeof(heat_val), &batch_ops_, [&](const void* k, const void* v) {
                 const auto* key = static_cast<const heat_key*>(k);
                 const auto* val = static_cast<const heat_val*>(v);
                 deltas.push_back(ChunkDelta{.dev = kernelDevToStDev(key->dev),
                                             .ino = key->ino,
                                             .chunk = key->chunk,
                                             .bytes_requested = pagesToBytes(val->pages_requested),
                                             .bytes_missed = pagesToBytes(val->pages_missed),
                                             .mmap_faults = val->mmap_faults,
                                             .first_ns = val->first_ns,
                                             .last_ns = val->last_ns});
               }));
  keys_drained_ += drained;
  if (inserts_before > keys_drained_)
    evicted_estimate_ = std::max(evicted_estimate_, inserts_before - keys_drained_);
  RETURN_IF_ERROR(drainChunkCaches(retired, &deltas));
  return deltas;
}

// What the CPUs' chunk caches of the retired set still hold (no program writes
// them after retireSet), added to `deltas`: to the chunk's delta from the map
// when there is one, else as a delta of its own. The caches are emptied.
Status HeatProbes::drainChunkCaches(uint32_t retired, std::vector<ChunkDelta>* deltas) {
  std::vector<heat_chunk_cache> caches(ncpus_);
  const size_t size = caches.size() * sizeof(heat_chunk_cache);
  if (bpf_map__lookup_elem(skel_->maps.chunk_caches, &retired, sizeof(retired), caches.data(), size,
                           0) != 0)
    return lastSysError("heat probes: read chunk caches");
  std::map<std::tuple<dev_t, uint64_t, uint64_t>, size_t> index;
  for (size_t i = 0; i < deltas->size(); ++i) {
    const ChunkDelta& d = (*deltas)[i];
    index.emplace(std::make_tuple(d.dev, d.ino, d.chunk), i);
  }
  for (const auto& cache : caches) {
    for (const heat_chunk_slot& s : cache.slots) {
      if (s.pages_requested == 0 && s.pages_missed == 0 && s.mmap_faults == 0) continue;
      const dev_t dev = kernelDevToStDev(s.key.dev);
      auto [it, fresh] = index.emplace(std::make_tuple(dev, s.key.ino, s.key.chunk), deltas->size());
      if (fresh)
        deltas->push_back(ChunkDelta{.dev = dev, .ino = s.key.ino, .chunk = s.key.chunk,
                                     .first_ns = s.first_ns, .last_ns = s.last_ns});
      ChunkDelta& d = (*deltas)[it->second];
      d.bytes_requested += pagesToBytes(s.pages_requested);
      d.bytes_missed += pagesToBytes(s.pages_missed);
      d.mmap_faults += s.mmap_faults;
      d.first_ns = std::min<uint64_t>(d.first_ns, s.first_ns);
      d.last_ns = std::max<uint64_t>(d.last_ns, s.last_ns);
    }
  }
  std::vector<heat_chunk_cache> empty(ncpus_);
  if (bpf_map__update_elem(skel_->maps.chunk_caches, &retired, sizeof(retired), empty.data(), size,
                           BPF_ANY) != 0)
    return lastSysError("heat probes: reset chunk caches");
  return Ok{};
}

// What the CPUs' pending slots of the retired set still hold (no program
// writes them after retireSet), added to `totals`; the slots are emptied.
Status HeatProbes::drainPendingCgroups(uint32_t retired, std::vector<CgroupTotals>* totals) {
  std::vector<heat_cgroup_pending> slots(ncpus_);
  const size_t size = slots.size() * sizeof(heat_cgroup_pending);
  if (bpf_map__lookup_elem(skel_->maps.cgroup_pending, &retired, sizeof(retired), slots.data(),
                           size, 0) != 0)
    return lastSysError("heat probes: read pending cgroup totals");
  for (const auto& p : slots) {
    if (p.pages_requested == 0 && p.pages_missed == 0) continue;
    auto it = std::find_if(totals->begin(), totals->end(),
                           [&](const CgroupTotals& t) { return t.cgroup_id == p.cgroup_id; });
    if (it == totals->end()) it = totals->insert(totals->end(), CgroupTotals{.cgroup_id = p.cgroup_id});
    it->bytes_requested += pagesToBytes(p.pages_requested);
    it->bytes_missed += pagesToBytes(p.pages_missed);
  }
  std::vector<heat_cgroup_pending> empty(ncpus_);
  if (bpf_map__update_elem(skel_->maps.cgroup_pending, &retired, sizeof(retired), empty.data(),
                           size, BPF_ANY) != 0)
    return lastSysError("heat probes: reset pending cgroup totals");
  return Ok{};
}

Result<std::vector<CgroupTotals>> HeatProbes::drainCgroups() {
  std::vector<CgroupTotals> totals;
  if (!cgroup_totals_) return totals;  // nothing counted: spare the grace period
  const size_t value_size = sizeof(heat_cgroup_val) * ncpus_;  // per-CPU values, 8-byte aligned
  const uint32_t retired = retireSet(&skel_->bss->cgroup_set);
  RETURN_IF_ERROR(drainMap(bpf_map__fd(retired ? skel_->maps.cgroups1 : skel_->maps.cgroups0),
                           sizeof(uint64_t), value_size, &batch_ops_,
                           [&](const void* k, const void* v) {
                             const auto* per_cpu = static_cast<const heat_cgroup_val*>(v);
                             CgroupTotals t{.cgroup_id = *static_cast<const uint64_t*>(k)};
                             for (int cpu = 0; cpu < ncpus_; ++cpu) {
                               t.bytes_requested += pagesToBytes(per_cpu[cpu].pages_requested);
                               t.bytes_missed += pagesToBytes(per_cpu[cpu].pages_missed);
                             }
                             totals.push_back(std::move(t));
                           }));
  RETURN_IF_ERROR(drainPendingCgroups(retired, &totals));
  for (auto& t : totals) t.path = cgroupPath(t.cgroup_id);
  return totals;
}

namespace {

// A mount point as /proc/self/mountinfo writes it: space, tab, newline and
// backslash as \ooo octal escapes.
std::string unescapeMountField(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

// mountinfo: "id parent major:minor root mount-point options [optional...] -
// fstype source super-options". The first cgroup2 mount whose root is the
// hierarchy's root ("/"): /sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts.
std::string cgroup2MountPoint() {
  std::ifstream mounts("/proc/self/mountinfo");
  std::string line;
  while (std::getline(mounts, line)) {
    std::istringstream in(line);
    std::string id, parent, devno, root, target, field;
    if (!(in >> id >> parent >> devno >> root >> target)) continue;
    while (in >> field && field != "-") {
    }
    std::string fstype;
    if (in >> fstype && fstype == "cgroup2" && root == "/") return unescapeMountField(target);
  }
  return "";
}

// bpf_get_current_cgroup_id() is the v2 cgroup's id: the inode number of its
// directory under the cgroup2 mount. The path is the job's v2 path as
// /proc/PID/cgroup shows it ("0::/system.slice/x.service"): "/" for the root.
std::string HeatProbes::cgroupPath(uint64_t cgroup_id) {
  if (auto it = cgroup_paths_.find(cgroup_id); it != cgroup_paths_.end()) return it->second;
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path root = cgroup2MountPoint();
  if (root.empty()) return "";
  auto remember = [&](const fs::path& dir) {
    struct stat st;
    if (stat(dir.c_str(), &st) != 0) return;
    std::string rel = dir.lexically_relative(root).string();
    cgroup_paths_[st.st_ino] = rel == "." ? "/" : "/" + rel;
  };
  remember(root);
  for (fs::recursive_directory_iterator it(root, fs::directory_options::skip_permission_denied, ec),
       end;
       !ec && it != end; it.increment(ec)) {
    if (it->is_directory(ec)) remember(it->path());
  }
  auto it = cgroup_paths_.find(cgroup_id);
  if (it != cgroup_paths_.end()) return it->second;
  cgroup_paths_[cgroup_id] = "";  // gone, or not v2: do not rescan for it
  return "";
}

ProbeHealth HeatProbes::health() const {
  ProbeHealth h;
  auto stat = [&](uint32_t slot) {
    auto v = readStat(slot);
    return v.ok() ? *v : 0;
  };
  h.events = stat(HEAT_STAT_EVENTS);
  h.chunk_inserts = stat(HEAT_STAT_INSERTS);
  h.lost_updates = stat(HEAT_STAT_LOST);
  h.cgroup_lost_updates = stat(HEAT_STAT_CG_LOST);
  h.continued_reads = stat(HEAT_STAT_CONTINUED);
  h.samples_dropped = stat(HEAT_STAT_SAMPLES_DROPPED);
  h.evicted_estimate = evicted_estimate_;
  h.batch_ops = batch_ops_;
  h.attached = attached_;
  h.skipped = skipped_;
  return h;
}

Status HeatProbes::pollSamples(int timeout_ms,
                               const std::function<void(const SampleEvent&)>& on_sample) {
  if (sample_rate_ == 0)
    return makeError(Errc::kUnsupported, "heat probes: sampling is off (sample_rate = 0)");
  if (ring_ == nullptr) {
    auto handle = [](void* ctx, void* data, size_t size) -> int {
      auto* self = static_cast<HeatProbes*>(ctx);
      if (size < sizeof(heat_sample) || self->on_sample_ == nullptr) return 0;
      const auto* s = static_cast<const heat_sample*>(data);
      (*self->on_sample_)(SampleEvent{.dev = kernelDevToStDev(s->dev),
                                      .ino = s->ino,
                                      .offset = self->pagesToBytes(s->index),
                                      .length = self->pagesToBytes(s->nr_pages),
                                      .kind = static_cast<SampleKind>(s->kind),
                                      .cgroup_id = s->cgroup_id,
                                      .time_ns = s->ts_ns});
      return 0;
    };
    ring_ = ring_buffer__new(bpf_map__fd(skel_->maps.samples), handle, this, nullptr);
    if (ring_ == nullptr) return lastSysError("heat probes: open sample ring buffer");
  }
  on_sample_ = &on_sample;
  int n = ring_buffer__poll(ring_, timeout_ms);
  on_sample_ = nullptr;
  if (n < 0 && n != -EINTR) return sysError(-n, "heat probes: poll sample ring buffer");
  return Ok{};
}

}  // namespace hotshard::bpf
