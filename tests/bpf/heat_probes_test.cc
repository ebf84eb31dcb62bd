// Heat probes against the real kernel: files on /var/tmp read with read() and
// mmap, counted per (dev, ino, chunk). Needs root and BPF (HS_REQUIRE).
#include "bpf/heat_probes.h"

#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sched.h>
#include <grp.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "bpf/heat.h"
#include "tests/test_util.h"

namespace hotshard::bpf {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kChunk = 16 * kMiB;

void ensureTracefs() {
  if (access("/sys/kernel/tracing/events", F_OK) != 0)
    mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr);
}

// A file under /var/tmp (the root file system), written, synced and dropped
// from the page cache so the next read misses.
class ColdFile {
 public:
  explicit ColdFile(uint64_t bytes, const char* dir = "/var/tmp") : bytes_(bytes) {
    path_ = std::string(dir) + "/hotshard-heat-XXXXXX";
    int fd = mkstemp(path_.data());
    EXPECT_GE(fd, 0) << path_;
    std::vector<char> buf(kMiB);
    for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 7 + 1);
    for (uint64_t off = 0; off < bytes; off += buf.size())
      EXPECT_EQ(write(fd, buf.data(), std::min<uint64_t>(buf.size(), bytes - off)),
                static_cast<ssize_t>(std::min<uint64_t>(buf.size(), bytes - off)));
    EXPECT_EQ(fsync(fd), 0);
    close(fd);
    struct stat st;
    EXPECT_EQ(stat(path_.c_str(), &st), 0);
    dev_ = st.st_dev;
    ino_ = st.st_ino;
    dropCache();
  }
  ~ColdFile() { unlink(path_.c_str()); }

  void dropCache() const {
    int fd = open(path_.c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
    close(fd);
  }

  // read() through the whole file in 1 MiB calls; returns a checksum so the
  // reads cannot be optimised away.
  uint64_t readAll() const {
    int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    std::vector<char> buf(kMiB);
    uint64_t sum = 0;
    ssize_t n;
    while ((n = read(fd, buf.data(), buf.size())) > 0)
      sum += static_cast<unsigned char>(buf[n - 1]);
    close(fd);
    return sum;
  }

  // Touches every page through a fresh read-only mapping.
  uint64_t mmapAll() const {
    int fd = open(path_.c_str(), O_RDONLY);
    EXPECT_GE(fd, 0);
    auto* p =
        static_cast<volatile unsigned char*>(mmap(nullptr, bytes_, PROT_READ, MAP_SHARED, fd, 0));
    EXPECT_NE(p, MAP_FAILED);
    uint64_t sum = 0;
    for (uint64_t off = 0; off < bytes_; off += 4096) sum += p[off];
    munmap(const_cast<unsigned char*>(p), bytes_);
    close(fd);
    return sum;
  }

  dev_t dev() const { return dev_; }
  uint64_t ino() const { return ino_; }
  uint64_t bytes() const { return bytes_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  uint64_t bytes_;
  dev_t dev_ = 0;
  uint64_t ino_ = 0;
};

// The deltas of one file, summed per chunk.
std::map<uint64_t, ChunkDelta> chunksOf(const std::vector<ChunkDelta>& deltas, const ColdFile& f) {
  std::map<uint64_t, ChunkDelta> out;
  for (const auto& d : deltas) {
    if (d.dev != f.dev() || d.ino != f.ino()) continue;
    auto& c = out.try_emplace(d.chunk, ChunkDelta{.dev = d.dev, .ino = d.ino, .chunk = d.chunk})
                  .first->second;
    c.bytes_requested += d.bytes_requested;
    c.bytes_missed += d.bytes_missed;
    c.mmap_faults += d.mmap_faults;
  }
  return out;
}

ChunkDelta total(const std::map<uint64_t, ChunkDelta>& chunks) {
  ChunkDelta t{};
  for (const auto& [_, c] : chunks) {
    t.bytes_requested += c.bytes_requested;
    t.bytes_missed += c.bytes_missed;
    t.mmap_faults += c.mmap_faults;
  }
  return t;
}

// Runs `access` over a file just read (so cached) and returns its counts. Other
// work on the host (a drop_caches, proactive reclaim) can evict pages between
// the two passes: then the pass itself re-warmed the file, and is run again.
template <typename Access>
ChunkDelta warmPass(HeatProbes& probes, const ColdFile& file, Access access) {
  ChunkDelta counted{};
  for (int attempt = 0; attempt < 3; ++attempt) {
    EXPECT_TRUE(probes.drain().ok());
    access();
    auto deltas = probes.drain();
    EXPECT_TRUE(deltas.ok());
    if (!deltas.ok()) break;
    counted = total(chunksOf(*deltas, file));
    if (counted.bytes_missed == 0) break;
  }
  return counted;
}

std::unique_ptr<HeatProbes> loadOrFail(const ProbeOptions& options = {}) {
  auto probes = HeatProbes::load(options);
  EXPECT_TRUE(probes.ok()) << (probes.ok() ? "" : probes.error().message);
  return probes.ok() ? std::move(probes).value() : nullptr;
}

// A cold read() can lose part of its requested range: when the last folio of
// the first batch is still locked for I/O, filemap_get_pages() returns the rest
// of the batch without firing the tracepoint, and the next call (which does)
// starts after it. Misses are exact; requested on warm data is exact.
constexpr uint64_t kColdRequestedPercent = 75;

// Kernel pages are the counting unit: a 40 MiB file split 16 + 16 + 8 MiB.
constexpr uint64_t kFileBytes = 40 * kMiB;
const uint64_t kChunkBytes[] = {16 * kMiB, 16 * kMiB, 8 * kMiB};

TEST(BpfDevEncoding, KernelAndStatEncodingsRoundTrip) {
  EXPECT_EQ(kernelDevToStDev((254u << 20) | 1), makedev(254, 1));
  EXPECT_EQ(stDevToKernelDev(makedev(259, 65537)), (259u << 20) | 65537u);
  EXPECT_EQ(kernelDevToStDev(stDevToKernelDev(makedev(8, 17))), makedev(8, 17));
}

TEST(BpfHeatProbes, RejectsChunkSizeThatIsNotAPowerOfTwo) {
  auto probes = HeatProbes::load({.chunk_bytes = 3 * kMiB});
  ASSERT_FALSE(probes.ok());
  EXPECT_EQ(probes.error().code, Errc::kInvalidArgument);
}

// Runs the read test under each attach kind, so the raw_tp and classic
// tracepoint fallbacks are exercised on this kernel too.
class BpfHeatRead : public ::testing::TestWithParam<ProgramKind> {
 protected:
  void SetUp() override {
    HS_REQUIRE_ROOT();
    ensureTracefs();
  }
};

TEST_P(BpfHeatRead, ReadColdThenWarmCountsPerChunk) {
  ColdFile file(kFileBytes);
  auto probes = loadOrFail({.chunk_bytes = kChunk, .kinds = {GetParam()}});
  ASSERT_NE(probes, nullptr);
  ASSERT_EQ(probes->health().attached.size(), 4u);
  EXPECT_EQ(probes->health().attached[0].kind, GetParam());
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  ASSERT_TRUE(probes->drain().ok());  // forget what happened before

  file.readAll();
  auto cold = probes->drain();
  ASSERT_TRUE(cold.ok()) << cold.error().message;
  auto chunks = chunksOf(*cold, file);
  ASSERT_EQ(chunks.size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    ASSERT_TRUE(chunks.count(i)) << "chunk " << i;
    // Requested, cold: at most the chunk for tp_btf/raw_tp (clamped to the file
    // size); the classic tracepoint has no file size and counts the last read()'s
    // whole buffer. At least kColdRequestedPercent: see kColdRequestedPercent.
    uint64_t slack = GetParam() == ProgramKind::kTracepoint && i == 2 ? kMiB : 0;
    EXPECT_GE(chunks[i].bytes_requested, kChunkBytes[i] * kColdRequestedPercent / 100)
        << "chunk " << i;
    EXPECT_LE(chunks[i].bytes_requested, kChunkBytes[i] + slack) << "chunk " << i;
    // Missed: every page came from disk; readahead never crosses the end of file,
    // so the whole file is inserted once (exactly, unless the cache was not
    // fully dropped: 1% tolerance).
    EXPECT_GE(chunks[i].bytes_missed, kChunkBytes[i] * 99 / 100) << "chunk " << i;
    EXPECT_LE(chunks[i].bytes_missed, kChunkBytes[i]) << "chunk " << i;
    EXPECT_EQ(chunks[i].mmap_faults, 0u);
  }

  auto again = warmPass(*probes, file, [&] { file.readAll(); });
  EXPECT_GE(again.bytes_requested, kFileBytes);
  EXPECT_LE(again.bytes_requested,
            kFileBytes + (GetParam() == ProgramKind::kTracepoint ? kMiB : 0));
  EXPECT_EQ(again.bytes_missed, 0u);

  auto h = probes->health();
  EXPECT_EQ(h.lost_updates, 0u);
  EXPECT_GT(h.continued_reads, 0u);  // 1 MiB reads take several folio batches
}

INSTANTIATE_TEST_SUITE_P(BpfKinds, BpfHeatRead,
                         ::testing::Values(ProgramKind::kTpBtf, ProgramKind::kRawTp,
                                           ProgramKind::kTracepoint),
                         [](const auto& info) { return std::string(programKindName(info.param)); });

TEST(BpfHeatProbes, PrefersTpBtf) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  auto probes = loadOrFail();
  ASSERT_NE(probes, nullptr);
  auto h = probes->health();
  ASSERT_EQ(h.attached.size(), 4u);
  for (const auto& a : h.attached) EXPECT_EQ(a.kind, ProgramKind::kTpBtf) << a.tracepoint;
  EXPECT_TRUE(h.skipped.empty());
  EXPECT_TRUE(h.batch_ops);
}

// 1 MiB reads over 64 KiB chunks: every read is split over 16 chunks.
TEST(BpfHeatProbes, ReadsSpanningChunksAreSplitAtTheBoundaries) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  constexpr uint64_t kSmallChunk = 64 << 10;
  ColdFile file(4 * kMiB);
  auto probes = loadOrFail({.chunk_bytes = kSmallChunk});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  file.readAll();  // cold pass: makes the file warm
  auto warm = warmPass(*probes, file, [&] { file.readAll(); });
  EXPECT_EQ(warm.bytes_requested, 4 * kMiB);
  ASSERT_TRUE(probes->drain().ok());
  file.readAll();
  auto deltas = probes->drain();
  ASSERT_TRUE(deltas.ok());
  auto chunks = chunksOf(*deltas, file);
  ASSERT_EQ(chunks.size(), 4 * kMiB / kSmallChunk);
  for (const auto& [index, c] : chunks) {
    EXPECT_LT(index, 4 * kMiB / kSmallChunk);
    EXPECT_EQ(c.bytes_requested, kSmallChunk) << "chunk " << index;
  }
}

// Draining in a loop while another thread reads: every page read is counted
// exactly once (the programs write one set of maps while the other is drained).
TEST(BpfHeatProbes, DrainWhileReadingLosesNothing) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(4 * kMiB);
  file.readAll();  // warm: requested is exact from here on
  auto probes = loadOrFail({.chunk_bytes = 64 << 10});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  ASSERT_TRUE(probes->drain().ok());

  constexpr int kPasses = 300;
  std::atomic<bool> done{false};
  std::thread reader([&] {
    for (int i = 0; i < kPasses; ++i) file.readAll();
    done = true;
  });
  uint64_t requested = 0, missed = 0, drains = 0;
  auto add = [&](const std::vector<ChunkDelta>& deltas) {
    auto t = total(chunksOf(deltas, file));
    requested += t.bytes_requested;
    missed += t.bytes_missed;
  };
  while (!done) {
    auto deltas = probes->drain();
    ASSERT_TRUE(deltas.ok());
    add(*deltas);
    ++drains;
  }
  reader.join();
  auto rest = probes->drain();
  ASSERT_TRUE(rest.ok());
  add(*rest);
  EXPECT_GT(drains, 1u);
  if (missed == 0) {  // nothing evicted the file meanwhile
    EXPECT_EQ(requested, kPasses * 4 * kMiB);
  } else {
    EXPECT_GE(requested, kPasses * 4 * kMiB * kColdRequestedPercent / 100);
  }
}

// More distinct chunks than the map and the CPUs' chunk caches hold: the LRU
// evicts, and health says so.
TEST(BpfHeatProbes, EvictionsAreEstimated) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(32 * kMiB);  // 512 chunks of 64 KiB
  auto probes = loadOrFail({.chunk_bytes = 64 << 10, .chunk_entries = 32});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  file.readAll();
  auto deltas = probes->drain();
  ASSERT_TRUE(deltas.ok());
  // Chunks still in a CPU's cache at the drain never reached the map.
  const uint64_t cached = uint64_t{HEAT_CHUNK_CACHE_SLOTS} * libbpf_num_possible_cpus();
  ASSERT_LT(32 + cached, 512u);
  EXPECT_LE(chunksOf(*deltas, file).size(), 32 + cached);
  auto h = probes->health();
  EXPECT_GE(h.evicted_estimate, 512 - 32 - cached);
  EXPECT_EQ(h.lost_updates, 0u);
}

// One page from each of many chunks, in an order that makes the CPUs' chunk
// caches evict (more chunks than slots, each read three times, far apart):
// every chunk still adds up to exactly what was read.
TEST(BpfHeatProbes, ChunkCacheEvictionsKeepExactCounts) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  // 16 KiB chunks: a 1 MiB read spans 64, the most one event may split into.
  constexpr uint64_t kPage = 4096, kChunk = 16 << 10, kChunks = 1024;
  ColdFile file(kChunks * kChunk);
  file.readAll();  // warm: requested is exact from here on
  auto probes = loadOrFail({.chunk_bytes = kChunk});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  auto counted = warmPass(*probes, file, [&] {
    int fd = open(file.path().c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    char buf[kPage];
    for (uint64_t round = 0; round < 3; ++round)
      for (uint64_t i = 0; i < kChunks; ++i) {
        uint64_t chunk = (i * 389 + round * 7) % kChunks;  // 389 is prime: a permutation
        ASSERT_EQ(pread(fd, buf, kPage, static_cast<off_t>(chunk * kChunk)),
                  static_cast<ssize_t>(kPage));
      }
    close(fd);
  });
  EXPECT_EQ(counted.bytes_requested, 3 * kChunks * kPage);
  ASSERT_TRUE(probes->drain().ok());
  file.readAll();
  file.readAll();
  auto deltas = probes->drain();
  ASSERT_TRUE(deltas.ok());
  auto chunks = chunksOf(*deltas, file);
  EXPECT_EQ(chunks.size(), kChunks);
  for (const auto& [index, c] : chunks) EXPECT_EQ(c.bytes_requested, 2 * kChunk) << "chunk " << index;
  EXPECT_EQ(probes->health().lost_updates, 0u);
}

TEST(BpfHeatProbes, IgnoredProcessIsNotCounted) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(4 * kMiB);
  auto probes = loadOrFail({.ignore_pid = getpid()});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  file.readAll();  // this process: ignored
  auto mine = probes->drain();
  ASSERT_TRUE(mine.ok());
  EXPECT_TRUE(chunksOf(*mine, file).empty());

  pid_t pid = fork();  // another process reading the same file: counted
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    file.readAll();
    _exit(0);
  }
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  auto theirs = probes->drain();
  ASSERT_TRUE(theirs.ok());
  EXPECT_EQ(total(chunksOf(*theirs, file)).bytes_requested, 4 * kMiB);
}

TEST(BpfHeatProbes, MmapColdThenWarm) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(kFileBytes);
  auto probes = loadOrFail({.chunk_bytes = kChunk});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  ASSERT_TRUE(probes->drain().ok());

  file.mmapAll();
  auto cold = probes->drain();
  ASSERT_TRUE(cold.ok());
  auto chunks = chunksOf(*cold, file);
  ASSERT_EQ(chunks.size(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    EXPECT_GE(chunks[i].bytes_missed, kChunkBytes[i] * 99 / 100) << "chunk " << i;
    EXPECT_LE(chunks[i].bytes_missed, kChunkBytes[i]) << "chunk " << i;
    // mmap "requested" is what the tracepoints show being mapped: fault-around
    // windows plus one page per fault. Large folios mapped whole (by fault-around
    // or finish_fault) count only their traced part, and reads of mapped pages
    // are invisible to any tracepoint: a lower bound, never above the touched
    // pages by more than the re-traced windows (10%).
    EXPECT_GT(chunks[i].bytes_requested, 0u) << "chunk " << i;
    EXPECT_LE(chunks[i].bytes_requested, kChunkBytes[i] * 110 / 100) << "chunk " << i;
  }
  EXPECT_GT(total(chunks).mmap_faults, 0u);

  auto again = warmPass(*probes, file, [&] { file.mmapAll(); });
  EXPECT_EQ(again.bytes_missed, 0u);
  EXPECT_GT(again.bytes_requested, 0u);
  EXPECT_LE(again.bytes_requested, kFileBytes * 110 / 100);
}

TEST(BpfHeatProbes, DrainWithoutBatchOpsGivesTheSameCounts) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(kFileBytes);
  auto probes = loadOrFail({.chunk_bytes = kChunk, .batch_ops = false});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  ASSERT_TRUE(probes->drain().ok());
  file.readAll();
  auto cold = probes->drain();
  ASSERT_TRUE(cold.ok());
  auto t = total(chunksOf(*cold, file));
  EXPECT_GE(t.bytes_requested, kFileBytes * kColdRequestedPercent / 100);
  EXPECT_LE(t.bytes_requested, kFileBytes);
  EXPECT_GE(t.bytes_missed, kFileBytes * 99 / 100);
  EXPECT_LE(t.bytes_missed, kFileBytes);
  EXPECT_FALSE(probes->health().batch_ops);
  // Drained means gone.
  auto empty = probes->drain();
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(chunksOf(*empty, file).empty());
}

// A loop-mounted ext4 not in the filter: its reads fire the same filemap
// tracepoints (checked by watching it afterwards) but are not counted.
TEST(BpfHeatProbes, UnwatchedFileSystemIsNotCounted) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  char dir[] = "/var/tmp/hotshard-loop-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  std::string image = std::string(dir) + ".img";
  std::string cmd = "truncate -s 64M " + image + " && mkfs.ext4 -q -F " + image +
                    " && mount -o loop " + image + " " + dir;
  int rc = system(cmd.c_str());
  HS_REQUIRE(rc == 0, "cannot loop-mount an ext4 image (" + cmd + ")");
  {
    ColdFile other(8 * kMiB, dir);
    ColdFile mine(8 * kMiB);
    ASSERT_NE(other.dev(), mine.dev());
    auto probes = loadOrFail({.chunk_bytes = kChunk});
    ASSERT_NE(probes, nullptr);
    ASSERT_TRUE(probes->watchDevice(mine.dev()).ok());
    ASSERT_TRUE(probes->drain().ok());
    other.readAll();
    mine.readAll();
    auto deltas = probes->drain();
    ASSERT_TRUE(deltas.ok());
    for (const auto& d : *deltas) EXPECT_NE(d.dev, other.dev()) << "ino " << d.ino;
    EXPECT_GE(total(chunksOf(*deltas, mine)).bytes_requested,
              8 * kMiB * kColdRequestedPercent / 100);

    // The same reads are seen once the loop device is watched...
    ASSERT_TRUE(probes->watchDevice(other.dev()).ok());
    other.dropCache();
    other.readAll();
    auto watched = probes->drain();
    ASSERT_TRUE(watched.ok());
    auto t = total(chunksOf(*watched, other));
    EXPECT_GE(t.bytes_requested, 8 * kMiB * kColdRequestedPercent / 100);
    EXPECT_LE(t.bytes_requested, 8 * kMiB);
    EXPECT_GE(t.bytes_missed, 8 * kMiB * 99 / 100);

    // ...and not after it is unwatched again.
    ASSERT_TRUE(probes->unwatchDevice(other.dev()).ok());
    EXPECT_EQ(probes->unwatchDevice(other.dev()).error().code, Errc::kNotFound);
    other.readAll();
    auto after = probes->drain();
    ASSERT_TRUE(after.ok());
    EXPECT_TRUE(chunksOf(*after, other).empty());
  }
  umount(dir);
  rmdir(dir);
  unlink(image.c_str());
}

TEST(BpfHeatProbes, MissingTracepointIsSkipped) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ProbeOptions options;
  options.tracepoints.insert(
      options.tracepoints.begin(),
      TracepointSpec{"filemap", "mm_filemap_no_such_event", Probe::kGetPages});
  options.tracepoints.push_back({"hotshard_bogus", "nothing_here", Probe::kFault});
  // Drop the real fault tracepoint: the bogus one stands in for it.
  std::erase_if(options.tracepoints, [](const auto& tp) { return tp.name == "mm_filemap_fault"; });
  auto probes = loadOrFail(options);
  ASSERT_NE(probes, nullptr);
  auto h = probes->health();
  EXPECT_EQ(h.attached.size(), 3u);
  ASSERT_EQ(h.skipped.size(), 2u);
  EXPECT_NE(h.skipped[0].find("filemap:mm_filemap_no_such_event"), std::string::npos)
      << h.skipped[0];
  EXPECT_NE(h.skipped[1].find("hotshard_bogus:nothing_here"), std::string::npos) << h.skipped[1];

  // Only bogus names: an error, not a crash.
  auto none = HeatProbes::load(
      {.tracepoints = {{"filemap", "mm_filemap_no_such_event", Probe::kGetPages}}});
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::kUnsupported);
}

TEST(BpfHeatProbes, CgroupTotalsResolveToTheCallersCgroup) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(8 * kMiB);
  auto probes = loadOrFail();
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  ASSERT_TRUE(probes->drainCgroups().ok());
  file.readAll();
  auto totals = probes->drainCgroups();
  ASSERT_TRUE(totals.ok()) << totals.error().message;

  // Our v2 cgroup: "0::/path" in /proc/self/cgroup, under the cgroup2 mount.
  std::ifstream cgroup_file("/proc/self/cgroup");
  std::string line, mine;
  while (std::getline(cgroup_file, line))
    if (line.rfind("0::", 0) == 0) mine = line.substr(3);
  std::string mount_point = cgroup2MountPoint();
  HS_REQUIRE(!mount_point.empty(), "no cgroup v2 hierarchy mounted");
  std::string expected = mine;  // the v2 path itself, not the mount point's

  bool found = false;
  for (const auto& t : *totals) {
    if (t.path != expected) continue;
    found = true;
    EXPECT_GE(t.bytes_requested, 8 * kMiB);
    EXPECT_GE(t.bytes_missed, 8 * kMiB * 99 / 100);
  }
  EXPECT_TRUE(found) << "no totals for " << expected << " among " << totals->size()
                     << " cgroup(s), first " << (totals->empty() ? "" : (*totals)[0].path);
}

// An ext4 image loop-mounted on a fresh directory under /var/tmp: a file
// system no one else reads. Unmounted and removed on destruction.
class LoopFs {
 public:
  LoopFs() {
    if (mkdtemp(dir_) == nullptr) return;
    image_ = std::string(dir_) + ".img";
    cmd_ = "truncate -s 64M " + image_ + " && mkfs.ext4 -q -F " + image_ + " && mount -o loop " +
           image_ + " " + dir_;
    mounted_ = system(cmd_.c_str()) == 0;
  }
  ~LoopFs() {
    if (mounted_) umount(dir_);
    rmdir(dir_);
    if (!image_.empty()) unlink(image_.c_str());
  }
  bool mounted() const { return mounted_; }
  const char* dir() const { return dir_; }
  const std::string& command() const { return cmd_; }

 private:
  char dir_[64] = "/var/tmp/hotshard-loop-XXXXXX";
  std::string image_, cmd_;
  bool mounted_ = false;
};

// With cgroup_files_only, each CPU keeps its latest served_files answer; a
// file watched or unwatched after it was read must be seen at once (the memo
// goes stale with served_gen), and what the CPU still holds pending for our
// cgroup is in the next drain. On a file system only this test reads, from
// one CPU, so the memo is this file's between reads.
TEST(BpfHeatProbes, CgroupTotalsFollowWatchFileAtOnce) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  HS_REQUIRE(!cgroup2MountPoint().empty(), "no cgroup v2 hierarchy mounted");
  LoopFs fs;
  HS_REQUIRE(fs.mounted(), "cannot loop-mount an ext4 image (" + fs.command() + ")");
  cpu_set_t old_cpus, one_cpu;
  ASSERT_EQ(sched_getaffinity(0, sizeof old_cpus, &old_cpus), 0);
  CPU_ZERO(&one_cpu);
  CPU_SET(sched_getcpu(), &one_cpu);
  ASSERT_EQ(sched_setaffinity(0, sizeof one_cpu, &one_cpu), 0);
  {
    ColdFile file(4 * kMiB, fs.dir());
    auto probes = loadOrFail({.cgroup_files_only = true});
    ASSERT_NE(probes, nullptr);
    ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
    std::ifstream cgroup_file("/proc/self/cgroup");
    std::string line, mine;
    while (std::getline(cgroup_file, line))
      if (line.rfind("0::", 0) == 0) mine = line.substr(3);
    auto ours = [&]() -> uint64_t {
      auto totals = probes->drainCgroups();
      EXPECT_TRUE(totals.ok()) << totals.error().message;
      uint64_t bytes = 0;
      for (const auto& t : totals.ok() ? *totals : std::vector<CgroupTotals>{})
        if (t.path == mine) bytes += t.bytes_requested;
      return bytes;
    };
    auto readThrice = [&] {
      for (int i = 0; i < 3; ++i) file.readAll();
    };
    readThrice();
    const uint64_t unwatched = ours();
    ASSERT_TRUE(probes->watchFile(file.dev(), file.ino()).ok());
    readThrice();
    const uint64_t watched = ours();
    ASSERT_TRUE(probes->unwatchFile(file.dev(), file.ino()).ok());
    readThrice();
    const uint64_t again = ours();
    EXPECT_EQ(unwatched, 0u);
    EXPECT_GE(watched, 3 * 4 * kMiB);
    EXPECT_LE(watched, 3 * 4 * kMiB + 3 * 4096);  // a last single-page batch counts twice
    EXPECT_EQ(again, 0u);
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof old_cpus, &old_cpus), 0);
}

TEST(BpfHeatProbes, CgroupTotalsCanBeTurnedOff) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(4 * kMiB);
  auto probes = loadOrFail({.cgroup_totals = false});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  file.readAll();
  auto totals = probes->drainCgroups();
  ASSERT_TRUE(totals.ok());
  EXPECT_TRUE(totals->empty());
  auto deltas = probes->drain();
  ASSERT_TRUE(deltas.ok());
  EXPECT_GE(total(chunksOf(*deltas, file)).bytes_missed,
            4 * kMiB * 99 / 100);  // chunks still counted
}

TEST(BpfHeatProbes, SamplesCarryRawEvents) {
  HS_REQUIRE_ROOT();
  ensureTracefs();
  ColdFile file(4 * kMiB);
  auto probes = loadOrFail({.sample_rate = 1});
  ASSERT_NE(probes, nullptr);
  ASSERT_TRUE(probes->watchDevice(file.dev()).ok());
  file.readAll();
  uint64_t read_bytes = 0, missed_bytes = 0;
  auto status = probes->pollSamples(100, [&](const SampleEvent& e) {
    if (e.dev != file.dev() || e.ino != file.ino()) return;
    if (e.kind == SampleKind::kRead) read_bytes += e.length;
    if (e.kind == SampleKind::kMiss) missed_bytes += e.length;
    EXPECT_GT(e.time_ns, 0u);
  });
  ASSERT_TRUE(status.ok()) << status.error().message;
  EXPECT_GE(read_bytes, 4 * kMiB * kColdRequestedPercent / 100);
  EXPECT_LE(read_bytes, 4 * kMiB);
  EXPECT_EQ(missed_bytes, 4 * kMiB);
  EXPECT_EQ(probes->health().samples_dropped, 0u);

  auto off = loadOrFail();
  ASSERT_NE(off, nullptr);
  EXPECT_FALSE(off->pollSamples(0, [](const SampleEvent&) {}).ok());
}

// Without privilege the load fails with a reason the daemon can log before it
// runs degraded: checked in a child that becomes nobody (losing every capability).
TEST(BpfHeatProbes, DegradedWithoutPrivilege) {
  HS_REQUIRE_ROOT();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    std::string report;
    if (setgroups(0, nullptr) != 0 || setresgid(65534, 65534, 65534) != 0 ||
        setresuid(65534, 65534, 65534) != 0) {
      report = "setuid failed";
    } else {
      auto probes = HeatProbes::load({});
      report = probes.ok() ? "loaded" : probes.error().message;
      report += "\n" + probeUnavailableReason();
    }
    (void)!write(fds[1], report.data(), report.size());
    _exit(0);
  }
  close(fds[1]);
  std::string report;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) report.append(buf, n);
  close(fds[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  ASSERT_NE(report, "setuid failed");
  auto newline = report.find('\n');
  ASSERT_NE(newline, std::string::npos) << report;
  std::string load_error = report.substr(0, newline), reason = report.substr(newline + 1);
  EXPECT_EQ(load_error.rfind("BPF unavailable: ", 0), 0u) << load_error;
  EXPECT_NE(load_error.find("Operation not permitted"), std::string::npos) << load_error;
  EXPECT_FALSE(reason.empty());
}

}  // namespace
}  // namespace hotshard::bpf
