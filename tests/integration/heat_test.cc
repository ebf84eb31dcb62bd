// Heat through the real mount: probes attribute bytes to shards whether they
// come from the remote or the cache copy; degraded mode; live policy changes;
// trace recording that the simulator reads.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include "bpf/heat_probes.h"
#include "policy/registry.h"
#include "policy/simulator.h"
#include "policy/trace.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;


uint64_t readAll(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return 0;
  std::vector<char> buf(1 << 20);
  uint64_t n = 0;
  ssize_t r;
  while ((r = ::read(fd, buf.data(), buf.size())) > 0) n += r;
  ::close(fd);
  return n;
}

class IntegrationHeat : public MountFixture {
 protected:
  void startDaemon(std::vector<std::string> extra) {
    extra.insert(extra.end(), {"--scrub-rate", "0", "--tick", "100ms"});
    startDaemonWith({.mount = mnt_, .extra_args = extra});
  }
  json shard(const std::string& rel) {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));  // a few ticks
    CommandResult r = hs({"top", "--json", "-n", "100"});
    json top = json::parse(r.out, nullptr, false);
    if (top.is_discarded()) return json{{"error", r.out}};
    for (const auto& s : top["shards"]) {
      if (s["path"] == rel) return s;
    }
    return json{{"error", "no shard " + rel + " in " + r.out}};
  }
  // The records of `hotshard trace record` (1.5 s, native format, tmp_/name) while
  // `work` runs on a thread of its own; failures are test failures.
  std::vector<policy::Request> recordWhile(const std::string& name,
                                           const std::function<void()>& work) {
    std::thread worker(work);
    std::string path = tmp_ / name;
    CommandResult rec = hs({"trace", "record", "--out", path, "--duration", "1500ms", "--json"});
    worker.join();
    EXPECT_EQ(rec.exit_code, 0) << rec.out;
    std::ifstream in(path, std::ios::binary);
    auto reader = policy::makeTraceReader(policy::TraceFormat::kNative, in, path);
    auto records = policy::readAll(*reader);
    EXPECT_TRUE(records.ok()) << (records.ok() ? "" : records.error().message);
    return records.ok() ? *records : std::vector<policy::Request>{};
  }
};

// Readahead may bring in up to a window past what was asked; page granularity
// rounds up. Bytes are checked within [size, size + 1 MiB].
constexpr uint64_t kSlack = 1 << 20;

TEST_F(IntegrationHeat, ProbesAttributeRemoteAndCacheBytesToTheShard) {
  writeRandomFile(remote_ + "/shard.bin", 8 << 20, 1);
  startDaemon({"--placement", "manual"});
  json st = daemon_->status();
  ASSERT_EQ(st["probes"]["mode"], "bpf") << st.dump();

  dropPageCache(remote_ + "/shard.bin");
  ASSERT_EQ(readAll(mnt_ + "/shard.bin"), 8u << 20);
  json s = shard("shard.bin");
  ASSERT_FALSE(s.contains("error")) << s.dump();
  EXPECT_EQ(s["state"], "remote");
  EXPECT_GE(s["remote_miss_bytes"].get<uint64_t>(), (8u << 20) * 99 / 100) << s.dump();
  EXPECT_LE(s["remote_miss_bytes"].get<uint64_t>(), (8u << 20) + kSlack) << s.dump();
  EXPECT_GE(s["remote_read_bytes"].get<uint64_t>(), (8u << 20) * 3 / 4) << s.dump();
  EXPECT_EQ(s["cache_bytes"], 0);

  ASSERT_EQ(hs({"warm", mnt_ + "/shard.bin"}).exit_code, 0);
  json before = shard("shard.bin");
  std::string object = json::parse(hs({"stat", mnt_ + "/shard.bin", "--json"}).out)["object"];
  dropPageCache(object);
  ASSERT_EQ(readAll(mnt_ + "/shard.bin"), 8u << 20);
  s = shard("shard.bin");
  EXPECT_EQ(s["state"], "cached");
  uint64_t cache_bytes = s["cache_bytes"].get<uint64_t>() - before["cache_bytes"].get<uint64_t>();
  EXPECT_GE(cache_bytes, (8u << 20) * 3 / 4) << s.dump();
  EXPECT_LE(cache_bytes, (8u << 20) + kSlack) << s.dump();
  EXPECT_EQ(s["remote_miss_bytes"], before["remote_miss_bytes"]) << "cached reads counted as remote";
  st = daemon_->status();
  EXPECT_GE(st["heat"]["remote_bytes_avoided"].get<uint64_t>(), (8u << 20) * 99 / 100) << st.dump();
}

TEST_F(IntegrationHeat, MmapReadsAreCountedAndOtherFileSystemsAreNot) {
  writeRandomFile(remote_ + "/mapped.bin", 4 << 20, 2);
  fs::create_directories(tmp_ / "elsewhere");
  ASSERT_EQ(::mount("tmpfs", (tmp_ / "elsewhere").c_str(), "tmpfs", 0, "size=16m"), 0);
  writeRandomFile(tmp_ / "elsewhere/unrelated.bin", 4 << 20, 3);
  startDaemon({"--placement", "manual"});
  dropPageCache(remote_ + "/mapped.bin");
  {
    int fd = ::open((mnt_ + "/mapped.bin").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    void* p = ::mmap(nullptr, 4 << 20, PROT_READ, MAP_PRIVATE, fd, 0);
    ASSERT_NE(p, MAP_FAILED);
    volatile uint64_t sum = 0;
    for (size_t off = 0; off < (4u << 20); off += 4096) sum = sum + static_cast<const char*>(p)[off];
    ::munmap(p, 4 << 20);
    ::close(fd);
  }
  readAll(tmp_ / "elsewhere/unrelated.bin");
  json s = shard("mapped.bin");
  ASSERT_FALSE(s.contains("error")) << s.dump();
  EXPECT_GT(s["mmap_faults"].get<uint64_t>(), 0u) << s.dump();
  EXPECT_GE(s["remote_miss_bytes"].get<uint64_t>(), (4u << 20) * 99 / 100) << s.dump();
  // The tmpfs read is no shard's. (That the probes' device filter drops other
  // file systems' events altogether is tested in tests/bpf with a loop-mounted
  // ext4; here the remote shares its device with the rest of the machine.)
  json st = daemon_->status();
  EXPECT_EQ(st["heat"]["shards"], 1) << st.dump();
}

// A cgroup made for one test under the cgroup2 mount, removed afterwards.
class TestCgroup {
 public:
  TestCgroup(const std::string& mount, const std::string& name)
      : v2_path_("/" + name), dir_(mount + v2_path_) {
    ok_ = ::mkdir(dir_.c_str(), 0755) == 0;
  }
  ~TestCgroup() {
    // The cgroup is empty once its reader is reaped; the kernel may lag a little.
    for (int i = 0; i < 50 && ::rmdir(dir_.c_str()) != 0 && errno == EBUSY; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bool ok() const { return ok_; }
  const std::string& v2Path() const { return v2_path_; }  // the job's label

  // Runs a child that joins this cgroup and reads `path` to its end; returns
  // the bytes read, or -1. The child only makes system calls (fork of a
  // threaded process), into a buffer allocated before the fork.
  int64_t readIn(const std::string& path) {
    const std::string procs = dir_ + "/cgroup.procs";
    std::vector<char> buf(1 << 20);
    int pipefd[2];
    if (::pipe(pipefd) != 0) return -1;
    pid_t pid = ::fork();
    if (pid == 0) {
      char pidbuf[32];
      int len = std::snprintf(pidbuf, sizeof pidbuf, "%d", static_cast<int>(::getpid()));
      int cfd = ::open(procs.c_str(), O_WRONLY);
      int64_t n = -1;
      if (cfd >= 0 && ::write(cfd, pidbuf, len) == len) {
        int fd = ::open(path.c_str(), O_RDONLY);
        ssize_t r = 0;
        for (n = 0; fd >= 0 && (r = ::read(fd, buf.data(), buf.size())) > 0;) n += r;
        if (fd < 0 || r < 0) n = -1;
      }
      (void)!::write(pipefd[1], &n, sizeof n);
      ::_exit(0);
    }
    ::close(pipefd[1]);
    int64_t n = -1;
    if (pid < 0 || ::read(pipefd[0], &n, sizeof n) != sizeof n) n = -1;
    ::close(pipefd[0]);
    if (pid > 0) ::waitpid(pid, nullptr, 0);
    return n;
  }

 private:
  std::string v2_path_, dir_;
  bool ok_ = false;
};

// Issue 13: per-job bytes are the bytes of files this mount serves, labelled
// with the job's cgroup v2 path; a big read elsewhere on the remote's file
// system (same device, not under the mount) is no job's bytes.
TEST_F(IntegrationHeat, JobBytesCountOnlyFilesServedByTheMount) {
  HS_REQUIRE_ROOT();
  const std::string cg2 = bpf::cgroup2MountPoint();
  HS_REQUIRE(!cg2.empty(), "no cgroup v2 hierarchy mounted");
  const uint64_t served = 64ull << 20, outside = 200ull << 20;
  writeRandomFile(remote_ + "/job.bin", served, 4);
  const std::string elsewhere = (fs::path(remote_).parent_path() / "outside.bin").string();
  writeRandomFile(elsewhere, outside, 5);
  startDaemon({"--placement", "manual"});
  ASSERT_EQ(daemon_->status()["probes"]["mode"], "bpf");

  const std::string tag = "hotshard-test-" + std::to_string(::getpid());
  TestCgroup in_mount(cg2, tag + "-mount"), off_mount(cg2, tag + "-outside");
  ASSERT_TRUE(in_mount.ok() && off_mount.ok()) << "mkdir under " << cg2 << ": " << strerror(errno);
  dropPageCache(remote_ + "/job.bin");
  dropPageCache(elsewhere);
  ASSERT_EQ(in_mount.readIn(mnt_ + "/job.bin"), static_cast<int64_t>(served));
  ASSERT_EQ(off_mount.readIn(elsewhere), static_cast<int64_t>(outside));

  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // a few ticks
  json st = daemon_->status();
  uint64_t mount_bytes = 0, outside_bytes = 0;
  bool mount_seen = false;
  for (const auto& job : st["jobs"]) {
    if (job["cgroup"] == in_mount.v2Path()) mount_seen = true;
    if (job["cgroup"] == in_mount.v2Path()) mount_bytes = job["bytes_read"].get<uint64_t>();
    // Any label naming the outside cgroup (a full path as well as the v2 path).
    const std::string label = job["cgroup"].get<std::string>();
    if (label.ends_with(off_mount.v2Path())) outside_bytes += job["bytes_read"].get<uint64_t>();
  }
  EXPECT_TRUE(mount_seen) << "no job " << in_mount.v2Path() << ": " << st["jobs"].dump();
  EXPECT_GE(mount_bytes, served * 3 / 4) << st["jobs"].dump();
  EXPECT_LE(mount_bytes, served + kSlack) << st["jobs"].dump();
  EXPECT_EQ(outside_bytes, 0u) << st["jobs"].dump();
  ::unlink(elsewhere.c_str());
}

TEST_F(IntegrationHeat, DegradedModeCountsOpensAndSaysWhy) {
  writeRandomFile(remote_ + "/f.bin", 1 << 20, 4);
  startDaemon({"--probes", "off", "--placement", "manual"});
  json st = daemon_->status();
  EXPECT_EQ(st["probes"]["mode"], "degraded");
  EXPECT_NE(st["probes"]["reason"].get<std::string>().find("disabled by configuration"),
            std::string::npos);
  readAll(mnt_ + "/f.bin");
  readAll(mnt_ + "/f.bin");
  json s = shard("f.bin");
  ASSERT_FALSE(s.contains("error")) << s.dump();
  EXPECT_EQ(s["opens"], 2);
  EXPECT_GT(s["heat"].get<double>(), 0);
  CommandResult r = hs({"status"});
  EXPECT_NE(r.out.find("DEGRADED"), std::string::npos) << r.out;
  CommandResult t = hs({"trace", "record", "--out", tmp_ / "t.trace", "--duration", "1s"});
  EXPECT_NE(t.exit_code, 0);
  EXPECT_NE(t.out.find("needs the BPF probes"), std::string::npos) << t.out;
}

TEST_F(IntegrationHeat, PolicyCanBeChangedLiveWithoutLosingCopies) {
  writeFile(remote_ + "/a", "aaaa");
  writeFile(remote_ + "/b", "bbbb");
  startDaemon({"--placement", "manual"});
  ASSERT_EQ(hs({"warm", mnt_}).exit_code, 0);
  CommandResult show = hs({"policy", "show", "--json"});
  ASSERT_EQ(show.exit_code, 0) << show.out;
  EXPECT_EQ(json::parse(show.out)["name"], "hotshard");

  CommandResult set = hs({"policy", "set", "lfu", "half_life=60", "--json"});
  ASSERT_EQ(set.exit_code, 0) << set.out;
  json j = json::parse(set.out);
  EXPECT_EQ(j["name"], "lfu");
  EXPECT_EQ(j["residents"], 2);
  json policy = json::parse(hs({"policy", "show", "--json"}).out);
  EXPECT_EQ(policy["params"]["half_life"], "60");
  EXPECT_EQ(daemon_->status()["cache"]["objects"], 2);

  CommandResult bad = hs({"policy", "set", "lfru"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("known: hotshard, lru, lfu, arc, s3fifo, sieve"), std::string::npos)
      << bad.out;
  bad = hs({"policy", "set", "lfu", "halflife=3"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("half_life"), std::string::npos) << bad.out;
  EXPECT_EQ(json::parse(hs({"policy", "show", "--json"}).out)["name"], "lfu");
}

TEST_F(IntegrationHeat, TraceRecordWritesATraceTheSimulatorReads) {
  writeRandomFile(remote_ + "/x.bin", 2 << 20, 5);
  writeRandomFile(remote_ + "/y.bin", 1 << 20, 6);
  // Per chunk and tick (no sampling), and raw ring-buffer samples (every event).
  for (const std::string rate : {"0", "1"}) {
    SCOPED_TRACE("probe-sample-rate " + rate);
    startDaemon({"--placement", "manual", "--probe-sample-rate", rate});
    std::thread reader([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      // Passes a few ticks apart: without sampling, one record per chunk per tick.
      for (int i = 0; i < 3; i++) {
        dropPageCache(remote_ + "/x.bin");
        dropPageCache(remote_ + "/y.bin");
        readAll(mnt_ + "/x.bin");
        readAll(mnt_ + "/y.bin");
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
      }
    });
    std::string trace = tmp_ / ("t" + rate + ".trace");
    CommandResult rec = hs({"trace", "record", "--out", trace, "--duration", "1500ms", "--json"});
    reader.join();
    ASSERT_EQ(rec.exit_code, 0) << rec.out;
    json r = json::parse(rec.out);
    EXPECT_EQ(r["mode"], rate == "0" ? "chunks" : "samples");
    EXPECT_GT(r["records"].get<uint64_t>(), rate == "0" ? 2u : 100u) << rec.out;
    CommandResult sim = runCommand({hotshardBinary(), "policy", "simulate", "--trace", trace,
                                    "--capacity", "4MiB", "--policy", "lru", "--json"});
    ASSERT_EQ(sim.exit_code, 0) << sim.out;
    json result = json::parse(sim.out);
    ASSERT_EQ(result["results"].size(), 1u);
    EXPECT_GT(result["results"][0]["hit_ratio"].get<double>(), 0) << sim.out;
    daemon_->stop();
  }
}

TEST_F(IntegrationHeat, TraceRecordMarksWritesAndMissSamples) {
  writeRandomFile(remote_ + "/w.bin", 1 << 20, 7);
  for (const std::string rate : {"0", "1"}) {
    SCOPED_TRACE("probe-sample-rate " + rate);
    startDaemon({"--placement", "manual", "--probe-sample-rate", rate});
    std::thread writer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      dropPageCache(remote_ + "/w.bin");
      readAll(mnt_ + "/w.bin");
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      int fd = ::open((mnt_ + "/w.bin").c_str(), O_WRONLY | O_CLOEXEC);
      ASSERT_GE(fd, 0) << std::strerror(errno);
      ASSERT_EQ(::pwrite(fd, "x", 1, 0), 1);
      ::close(fd);
    });
    std::string trace = tmp_ / ("w" + rate + ".trace");
    CommandResult rec = hs({"trace", "record", "--out", trace, "--duration", "1500ms", "--json"});
    writer.join();
    ASSERT_EQ(rec.exit_code, 0) << rec.out;
    std::ifstream in(trace, std::ios::binary);
    auto reader = policy::makeTraceReader(policy::TraceFormat::kNative, in, trace);
    policy::Request r;
    int writes = 0, miss_samples = 0, reads = 0;
    while (reader->next(r)) {
      writes += (r.flags & policy::kFlagWrite) != 0;
      miss_samples += (r.flags & policy::kFlagMissSample) != 0;
      reads += policy::isRead(r.flags) && r.bytes_read > 0;
    }
    ASSERT_TRUE(reader->status().ok()) << reader->status().error().message;
    EXPECT_GT(reads, 0);
    EXPECT_EQ(writes, 1) << "the open for writing is a record of its own";
    if (rate == "1") {
      EXPECT_GT(miss_samples, 0) << "the read after dropping the page cache missed";
    }
    daemon_->stop();
  }
}

// Each record carries its file's data set, the top-level directory under the mount
// (policy/trace.h datasetOf), which the default policy uses to tell when a job ended.
TEST_F(IntegrationHeat, TraceRecordCarriesEachFilesDataSet) {
  fs::create_directories(remote_ + "/imagenet/train");
  fs::create_directories(remote_ + "/coco");
  writeRandomFile(remote_ + "/imagenet/train/a.bin", 1 << 20, 8);
  writeRandomFile(remote_ + "/coco/b.bin", 2 << 20, 9);
  writeRandomFile(remote_ + "/top.bin", 3 << 20, 10);
  startDaemon({"--placement", "manual"});
  auto trace = recordWhile("datasets.trace", [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (const char* f : {"/imagenet/train/a.bin", "/coco/b.bin", "/top.bin"}) {
      dropPageCache(remote_ + f);
      readAll(mnt_ + f);
    }
  });
  std::map<uint64_t, std::set<uint32_t>> datasets_of_size;  // sizes tell the files apart
  for (const auto& r : trace) {
    if (policy::isRead(r.flags) && r.bytes_read > 0) datasets_of_size[r.size].insert(r.dataset);
  }
  using Set = std::set<uint32_t>;
  EXPECT_EQ(datasets_of_size[1 << 20], Set{policy::datasetOf("imagenet/train/a.bin")});
  EXPECT_EQ(datasets_of_size[2 << 20], Set{policy::datasetOf("coco/b.bin")});
  EXPECT_EQ(datasets_of_size[3 << 20], Set{0u}) << "a file at the top has none";
  EXPECT_NE(policy::datasetOf("imagenet/train/a.bin"), policy::datasetOf("coco/b.bin"));
  daemon_->stop();
}

// Truncates, unlinks and renames through the mount are records of their own
// (fuse/cache_hooks.h Change -> policy/trace.h flags), and the simulator drops its
// copy on them: a file read again after a truncate is not a hit.
TEST_F(IntegrationHeat, TraceRecordMarksTruncatesUnlinksAndRenames) {
  // Sizes tell the files apart in the trace (ids are path hashes).
  writeRandomFile(remote_ + "/a.bin", 1 << 20, 8);
  writeRandomFile(remote_ + "/b.bin", 2 << 20, 9);
  writeRandomFile(remote_ + "/c.bin", 3 << 20, 10);
  startDaemon({"--placement", "manual", "--probe-sample-rate", "0"});
  auto trace = recordWhile("changes.trace", [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (const char* f : {"/a.bin", "/b.bin", "/c.bin"}) {
      dropPageCache(remote_ + f);
      readAll(mnt_ + f);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    EXPECT_EQ(::truncate((mnt_ + "/a.bin").c_str(), 4096), 0) << std::strerror(errno);
    EXPECT_EQ(::unlink((mnt_ + "/b.bin").c_str()), 0) << std::strerror(errno);
    EXPECT_EQ(::rename((mnt_ + "/c.bin").c_str(), (mnt_ + "/d.bin").c_str()), 0)
        << std::strerror(errno);
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    dropPageCache(remote_ + "/a.bin");
    readAll(mnt_ + "/a.bin");  // after the truncate: a miss, not a hit on the old copy
  });
  std::map<uint64_t, policy::ObjectId> id_of_size;  // from the reads
  for (const auto& r : trace) {
    if (policy::isRead(r.flags) && r.bytes_read > 0) id_of_size[r.size] = r.id;
  }
  ASSERT_TRUE(id_of_size.count(1 << 20) && id_of_size.count(2 << 20) && id_of_size.count(3 << 20))
      << "every file's reads were recorded";
  auto changes = [&](uint32_t flag) {
    std::vector<policy::Request> out;
    for (const auto& r : trace) {
      if (r.flags & flag) out.push_back(r);
    }
    return out;
  };
  auto truncated = changes(policy::kFlagTruncate);
  ASSERT_EQ(truncated.size(), 1u);
  EXPECT_EQ(truncated[0].id, id_of_size[1 << 20]);
  EXPECT_EQ(truncated[0].size, 4096u) << "a truncate record carries the new size";
  auto unlinked = changes(policy::kFlagUnlink);
  ASSERT_EQ(unlinked.size(), 1u) << "d.bin did not exist: the rename replaced nothing";
  EXPECT_EQ(unlinked[0].id, id_of_size[2 << 20]);
  auto renamed = changes(policy::kFlagRename);
  ASSERT_EQ(renamed.size(), 1u);
  EXPECT_EQ(renamed[0].id, id_of_size[3 << 20]) << "the old path's id";
  EXPECT_TRUE(changes(policy::kFlagWrite).empty()) << "nothing was opened for writing";
  // a.bin's records replayed with room for everything: the bytes hit after the
  // truncate record (all of a run less the run of the records before it) are none;
  // without that record, the read after the truncate hits the first copy.
  auto bytesHit = [](const std::vector<policy::Request>& t) {
    auto lru = policy::createPolicy("lru", 1ull << 30);
    EXPECT_TRUE(lru.ok());
    auto mem = policy::makeMemoryReader(t);
    auto r = policy::simulate(*mem, **lru);
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->bytes_hit : 0;
  };
  std::vector<policy::Request> of_a;
  size_t truncate_at = 0;
  for (const auto& r : trace) {
    if (r.id != truncated[0].id) continue;
    if (r.flags & policy::kFlagTruncate) truncate_at = of_a.size();
    of_a.push_back(r);
  }
  std::vector<policy::Request> before(of_a.begin(), of_a.begin() + truncate_at);
  ASSERT_LT(truncate_at + 1, of_a.size()) << "a.bin was read after the truncate";
  EXPECT_EQ(bytesHit(of_a) - bytesHit(before), 0u);
  std::vector<policy::Request> without = of_a;
  without.erase(without.begin() + truncate_at);
  EXPECT_GT(bytesHit(without) - bytesHit(before), 0u);
  daemon_->stop();
}

}  // namespace
}  // namespace hotshard::testing

namespace hotshard::testing {
namespace {

// The whole loop, no `warm`: heat from the probes, the default policy, the
// promoter, the store's capacity.
TEST_F(IntegrationHeat, HotSetIsPromotedAndServedFromTheCacheColdSetIsNot) {
  const int kHot = 4, kCold = 8;
  const uint64_t kSize = 2 << 20;
  for (int i = 0; i < kHot; i++) writeRandomFile(remote_ + "/hot/h" + std::to_string(i), kSize, i);
  for (int i = 0; i < kCold; i++) {
    writeRandomFile(remote_ + "/cold/c" + std::to_string(i), kSize, 100 + i);
  }
  // Room for the hot set, not for a cold file beside it.
  const uint64_t kCapacity = 9 << 20;
  startDaemon({"--cache-size", "9MiB"});
  ASSERT_EQ(daemon_->status()["probes"]["mode"], "bpf");
  auto readHot = [&] {
    for (int i = 0; i < kHot; i++) {
      std::string f = remote_ + "/hot/h" + std::to_string(i);
      dropPageCache(f);
      readAll(mnt_ + "/hot/h" + std::to_string(i));
    }
  };
  auto state = [&](const std::string& rel) {
    return json::parse(hs({"stat", mnt_ + "/" + rel, "--json"}).out)["state"].get<std::string>();
  };
  auto allHotCached = [&] {
    for (int i = 0; i < kHot; i++) {
      if (state("hot/h" + std::to_string(i)) != "cached") return false;
    }
    return true;
  };

  uint64_t first_tick = daemon_->status()["placement"]["ticks"].get<uint64_t>();
  uint64_t cached_at = 0;
  std::set<int> cold_ever_cached;
  for (int round = 0; round < 12; round++) {
    readHot();
    if (round >= 3) {  // the cold set, each file once, between hot passes
      for (int i = round - 3; i < kCold; i += 9) readAll(mnt_ + "/cold/c" + std::to_string(i));
    }
    if (round == 2) {
      for (int i = 0; i < kCold; i++) readAll(mnt_ + "/cold/c" + std::to_string(i));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
    json st = daemon_->status();
    EXPECT_LE(st["cache"]["used_bytes"].get<uint64_t>(), kCapacity) << st.dump();
    if (cached_at == 0 && allHotCached()) cached_at = st["placement"]["ticks"].get<uint64_t>();
    for (int i = 0; i < kCold; i++) {
      if (state("cold/c" + std::to_string(i)) != "remote") cold_ever_cached.insert(i);
    }
  }
  ASSERT_NE(cached_at, 0u) << "the hot set was never all cached: " << daemon_->status().dump();
  EXPECT_LE(cached_at - first_tick, 40u) << "ticks until the hot set was cached";
  // Never promoted at any point (a policy that admits every miss, like LRU,
  // copies cold files and evicts them again).
  EXPECT_TRUE(cold_ever_cached.empty()) << cold_ever_cached.size() << " cold files were promoted";
  EXPECT_EQ(daemon_->status()["placement"]["promotions"].get<uint64_t>(), static_cast<uint64_t>(kHot));

  // Served from the cache now: opens by backing, and the probes' cache bytes.
  json before = daemon_->status();
  readHot();
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  json after = daemon_->status();
  EXPECT_GE(after["fuse"]["opens_cache"].get<uint64_t>() -
                before["fuse"]["opens_cache"].get<uint64_t>(),
            static_cast<uint64_t>(kHot));
  EXPECT_GE(after["heat"]["bytes_read_cache"].get<uint64_t>() -
                before["heat"]["bytes_read_cache"].get<uint64_t>(),
            kHot * kSize * 3 / 4);
  EXPECT_EQ(after["heat"]["bytes_missed_remote"], before["heat"]["bytes_missed_remote"]);
  EXPECT_LE(after["cache"]["used_bytes"].get<uint64_t>(), kCapacity);
  EXPECT_GE(after["placement"]["promotions"].get<uint64_t>(), static_cast<uint64_t>(kHot));
}

}  // namespace
}  // namespace hotshard::testing
