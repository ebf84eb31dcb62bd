// Restart without unmount (docs/restart.md): `hotshard run` is a supervisor
// that holds the FUSE connection; its worker is killed with SIGKILL or replaced
// by `hotshard restart` while jobs read, and the jobs see no error.
//
// HOTSHARD_TAKEOVER_ITERATIONS sets the number of kills of the crash test and
// of restarts of the restart test (default 50; `make soak` runs 1000).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "daemon/config.h"
#include "daemon/supervisor.h"
#include "tests/integration/harness.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kBigSize = 1ull << 30;  // the streamed file: 1 GiB
constexpr size_t kSmallSize = 16 << 10;    // each file opened every 100 ms
constexpr int kSmallFiles = 4000;

// The pattern: 8-byte words, each a function of its offset and the file's seed,
// so that every byte read is checked without a copy to compare with.
uint64_t patternWord(uint64_t seed, uint64_t word) {
  uint64_t x = seed + word * 0x9E3779B97F4A7C15ull;  // splitmix64
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

void fillPattern(uint64_t seed, uint64_t offset, uint64_t* words, size_t count) {
  for (size_t i = 0; i < count; i++) words[i] = patternWord(seed, offset / 8 + i);
}

void writePatternFile(const std::string& path, uint64_t seed, uint64_t size) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::vector<uint64_t> buf((4 << 20) / 8);
  for (uint64_t off = 0; off < size; off += buf.size() * 8) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size() * 8, size - off));
    fillPattern(seed, off, buf.data(), n / 8);
    ASSERT_EQ(::pwrite(fd, buf.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
  }
  ::close(fd);
}

// Bytes of buf (read at offset) that differ from the pattern.
uint64_t wrongBytes(uint64_t seed, uint64_t offset, const char* buf, size_t n) {
  uint64_t wrong = 0;
  for (size_t i = 0; i < n; i += 8) {
    uint64_t want = patternWord(seed, (offset + i) / 8);
    size_t len = std::min<size_t>(8, n - i);
    if (std::memcmp(buf + i, &want, len) != 0) wrong += len;
  }
  return wrong;
}

int iterationsFromEnv(int fallback) {
  const char* v = std::getenv("HOTSHARD_TAKEOVER_ITERATIONS");
  return v != nullptr && std::atoi(v) > 0 ? std::atoi(v) : fallback;
}

bool alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(stat, line)) return false;
  size_t paren = line.rfind(')');
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] != 'Z';
}


// The log's warning and error lines, the last 40: what a failure shows.
std::string logProblems(const std::string& log) {
  std::vector<std::string> lines;
  std::istringstream in(log);
  for (std::string line; std::getline(in, line);) {
    if (line.find("[warning]") != std::string::npos || line.find("[error]") != std::string::npos ||
        line.find("[critical]") != std::string::npos) {
      lines.push_back(line);
    }
  }
  std::string out;
  for (size_t i = lines.size() > 40 ? lines.size() - 40 : 0; i < lines.size(); i++) {
    out += lines[i] + "\n";
  }
  return out;
}

// What jobs see while the worker is replaced: a reader streams the 1 GiB file
// (reopening it at each pass) and an opener opens, reads and checks a new file
// every 100 ms. Every error and wrong byte is counted, every open timed.
class Jobs {
 public:
  Jobs(std::string big, std::string small_dir) : big_(std::move(big)), small_(std::move(small_dir)) {
    reader_ = std::thread([this] { read(); });
    opener_ = std::thread([this] { open(); });
  }
  ~Jobs() { stop(); }
  void stop() {
    stop_ = true;
    if (reader_.joinable()) reader_.join();
    if (opener_.joinable()) opener_.join();
  }
  uint64_t errors() const { return errors_; }
  uint64_t wrong() const { return wrong_; }
  uint64_t bytes() const { return bytes_; }
  uint64_t opens() const { return opens_; }
  std::string firstError() {
    std::lock_guard lock(mu_);
    return first_error_;
  }
  // Open latencies, in ms: max and 99th percentile.
  std::pair<double, double> openLatencyMs() {
    std::lock_guard lock(mu_);
    if (latencies_.empty()) return {0, 0};
    std::vector<double> v = latencies_;
    std::sort(v.begin(), v.end());
    return {v.back(), v[std::min(v.size() - 1, v.size() * 99 / 100)]};
  }

 private:
  void fail(const std::string& what) {
    errors_++;
    std::lock_guard lock(mu_);
    if (first_error_.empty()) first_error_ = what + ": " + std::strerror(errno);
  }
  void timeOpen(Clock::time_point t0) {
    std::lock_guard lock(mu_);
    latencies_.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  void read() {
    std::vector<char> buf(1 << 20);
    while (!stop_) {
      auto t0 = Clock::now();
      int fd = ::open(big_.c_str(), O_RDONLY | O_CLOEXEC);
      timeOpen(t0);
      if (fd < 0) {
        fail("open " + big_);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      for (uint64_t off = 0; off < kBigSize && !stop_;) {
        ssize_t n = ::pread(fd, buf.data(), buf.size(), static_cast<off_t>(off));
        if (n <= 0) {
          fail("read " + big_ + " at " + std::to_string(off));
          break;
        }
        wrong_ += wrongBytes(1, off, buf.data(), static_cast<size_t>(n));
        off += static_cast<uint64_t>(n);
        bytes_ += static_cast<uint64_t>(n);
      }
      ::close(fd);
    }
  }
  void open() {
    std::vector<char> buf(kSmallSize);
    for (int i = 0; !stop_; i = (i + 1) % kSmallFiles) {
      std::string path = small_ + "/f" + std::to_string(i);
      auto t0 = Clock::now();
      int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      timeOpen(t0);
      opens_++;
      if (fd < 0) {
        fail("open " + path);
      } else {
        ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
        if (n != static_cast<ssize_t>(kSmallSize)) fail("read " + path);
        if (n > 0) wrong_ += wrongBytes(100 + i, 0, buf.data(), static_cast<size_t>(n));
        ::close(fd);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::string big_, small_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> errors_{0}, wrong_{0}, bytes_{0}, opens_{0};
  std::mutex mu_;
  std::string first_error_;
  std::vector<double> latencies_;
  std::thread reader_, opener_;
};

class IntegrationTakeover : public MountFixture {
 protected:
  void SetUp() override {
    MountFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    writeFile(remote_ + "/hello", "hello\n");
  }
  void start(std::vector<std::string> extra = {}) {
    startDaemonWith({.mount = mnt_, .extra_args = std::move(extra)});
  }
  // The worker's pid from its status, once a worker other than `not` answers.
  pid_t workerPid(pid_t not_this = 0, int timeout_s = 30) {
    auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    while (Clock::now() < deadline) {
      json s = daemon_->status();
      pid_t pid = s.value("pid", 0);
      if (pid > 0 && pid != not_this) return pid;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return 0;
  }
  void makeDataSet() {
    writePatternFile(remote_ + "/big", 1, kBigSize);
    fs::create_directories(remote_ + "/small");
    for (int i = 0; i < kSmallFiles; i++) {
      writePatternFile(remote_ + "/small/f" + std::to_string(i), 100 + i, kSmallSize);
    }
  }
  // A copy of build/hotshard at another path, as an upgrade would install it.
  std::string binaryCopy(const std::string& name) {
    fs::create_directories(tmp_ / "bin");
    std::string path = tmp_ / ("bin/" + name);
    fs::copy_file(hotshardBinary(), path, fs::copy_options::overwrite_existing);
    ::chmod(path.c_str(), 0755);
    return path;
  }
  void expectJobsUnharmed(Jobs& jobs, const std::string& what) {
    jobs.stop();
    auto [max_ms, p99_ms] = jobs.openLatencyMs();
    std::printf("%s: %.1f GiB read, %llu small files opened, open latency max %.0f ms, p99 %.0f ms\n",
                what.c_str(), static_cast<double>(jobs.bytes()) / (1 << 30),
                static_cast<unsigned long long>(jobs.opens()), max_ms, p99_ms);
    RecordProperty("open_latency_max_ms", std::to_string(max_ms));
    RecordProperty("open_latency_p99_ms", std::to_string(p99_ms));
    EXPECT_EQ(jobs.errors(), 0u) << jobs.firstError() << "\nthe daemon's warnings and errors:\n"
                                 << logProblems(daemon_->log());
    EXPECT_EQ(jobs.wrong(), 0u);
    EXPECT_LT(max_ms, 5000.0) << "an open waited more than 5 s";
    EXPECT_GT(jobs.bytes(), kBigSize / 4) << "the reader hardly read";
    EXPECT_GT(jobs.opens(), 5u);
  }
  void expectHealthyAfter() {
    json s = daemon_->status();
    EXPECT_FALSE(s.contains("error")) << s.dump();
    auto v = hs({"verify", "--json"});
    EXPECT_EQ(v.exit_code, 0) << v.out;
    EXPECT_EQ(readFile(mnt_ + "/hello"), "hello\n");
  }
  void crashTest(bool cached, int iterations);
};

TEST_F(IntegrationTakeover, RunIsASupervisorThatHoldsTheMountAndRunsAWorker) {
  start();
  json s = daemon_->status();
  pid_t worker = s.value("pid", 0);
  EXPECT_NE(worker, daemon_->pid());
  EXPECT_EQ(s["supervisor"].value("pid", 0), daemon_->pid()) << s.dump();
  EXPECT_EQ(s["supervisor"].value("takeovers", 99), 0) << s.dump();
  EXPECT_EQ(childrenOf(daemon_->pid()), std::vector<pid_t>{worker});
  auto st = hs({"status"});
  EXPECT_NE(st.out.find("supervisor   pid " + std::to_string(daemon_->pid())), std::string::npos)
      << st.out;
  const std::string state = takeoverStateDirFor(mnt_) + "/state";
  EXPECT_TRUE(fs::exists(state)) << "the worker keeps its state for a successor";
  // SIGTERM to the supervisor: the worker unmounts, both exit 0, and the state
  // goes with the mount.
  EXPECT_EQ(daemon_->stop(/*keep_dead_mount=*/true), 0) << daemon_->log();
  EXPECT_FALSE(isHotshardMount(mnt_));
  EXPECT_FALSE(alive(worker));
  EXPECT_FALSE(fs::exists(state));
}

TEST_F(IntegrationTakeover, NoSupervisorKeepsOneProcess) {
  start({"--no-supervisor"});
  json s = daemon_->status();
  EXPECT_EQ(s.value("pid", 0), daemon_->pid());
  EXPECT_FALSE(s.contains("supervisor")) << s.dump();
  EXPECT_TRUE(childrenOf(daemon_->pid()).empty());
}

TEST_F(IntegrationTakeover, KillOfTheSupervisorEndsTheWorker) {
  start();
  pid_t worker = workerPid();
  ASSERT_GT(worker, 0);
  ::kill(daemon_->pid(), SIGKILL);
  EXPECT_EQ(daemon_->waitExit(10), 128 + SIGKILL);
  auto deadline = Clock::now() + std::chrono::seconds(5);
  while (alive(worker) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(alive(worker)) << "an orphaned worker holds the mount";
  // Nothing holds the connection: the mount is dead, as a killed daemon's was.
  struct stat st;
  EXPECT_NE(::stat((mnt_ + "/hello").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOTCONN);
  ::umount2(mnt_.c_str(), MNT_DETACH);
  // The state of a mount whose supervisor was killed stays (nobody ends it): ours goes.
  const std::string state_dir = takeoverStateDirFor(mnt_);
  ::unlink((state_dir + "/state").c_str());
  ::rmdir(state_dir.c_str());
}

TEST_F(IntegrationTakeover, CrashLoopIsBounded) {
  start();
  pid_t worker = workerPid();
  ASSERT_GT(worker, 0);
  // A worker that always dies: each one is killed as soon as it is there.
  std::vector<pid_t> killed;
  auto t0 = Clock::now();
  while (daemon_->running() && Clock::now() - t0 < std::chrono::seconds(50)) {
    for (pid_t child : childrenOf(daemon_->pid())) {
      if (std::find(killed.begin(), killed.end(), child) != killed.end()) continue;
      ::kill(child, SIGKILL);
      killed.push_back(child);
    }
    if (!alive(daemon_->pid())) {  // a zombie: it exited
      EXPECT_EQ(daemon_->waitExit(5), 1) << daemon_->log();
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  double took = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_FALSE(daemon_->running()) << "the supervisor did not give up";
  // The first worker served (not an early crash); a successor that got to
  // serve before its kill would start the count again.
  EXPECT_GE(killed.size(), kMaxEarlyCrashes + 1);
  EXPECT_LT(took, 30.0);
  EXPECT_FALSE(isHotshardMount(mnt_)) << "the mount was left behind";
  std::string log = daemon_->log();
  EXPECT_NE(log.find("10 workers in a row died before they served; the last: worker " +
                     std::to_string(killed.back()) + " killed by SIGKILL"),
            std::string::npos)
      << log;
  daemon_->stop();
}

TEST_F(IntegrationTakeover, BadBinaryIsRefusedBeforeAnythingStops) {
  start();
  pid_t worker = workerPid();
  ASSERT_GT(worker, 0);
  std::string writable = binaryCopy("hotshard-writable");
  ::chmod(writable.c_str(), 0777);
  std::string failing = tmp_ / "bin/hotshard-no-version";
  writeFile(failing, "#!/bin/sh\necho broken >&2\nexit 1\n");
  ::chmod(failing.c_str(), 0755);
  for (const auto& [binary, why] : std::vector<std::pair<std::string, std::string>>{
           {tmp_ / "bin/missing", "No such file"},
           {writable, "writable by group or others"},
           {failing, "--version failed (exit 1)"}}) {
    auto r = hs({"restart", "--binary", binary});
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find(why), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("nothing was stopped"), std::string::npos) << r.out;
  }
  json s = daemon_->status();
  EXPECT_EQ(s.value("pid", 0), worker);
  EXPECT_EQ(s["supervisor"].value("takeovers", 99), 0) << s.dump();
}

TEST_F(IntegrationTakeover, RestartRollsBackWhenTheNewWorkerFails) {
  start();
  pid_t worker = workerPid();
  ASSERT_GT(worker, 0);
  // Passes the --version check, then fails as a worker.
  fs::create_directories(tmp_ / "bin");
  std::string bad = tmp_ / "bin/hotshard-bad";
  writeFile(bad, "#!/bin/sh\n[ \"$1\" = --version ] && exec " + hotshardBinary() +
                     " --version\necho 'cannot start' >&2\nexit 1\n");
  ::chmod(bad.c_str(), 0755);
  auto r = hs({"restart", "--binary", bad, "--timeout", "20"});
  EXPECT_EQ(r.exit_code, 1) << r.out << daemon_->log();
  EXPECT_NE(r.out.find("the new worker failed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("rolled back"), std::string::npos) << r.out;
  pid_t back = workerPid(worker);
  EXPECT_GT(back, 0);
  json s = daemon_->status();
  EXPECT_EQ(s["supervisor"].value("takeovers", 0), 2) << s.dump();
  EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(back) + "/exe"), hotshardBinary());
  expectHealthyAfter();
}

void IntegrationTakeover::crashTest(bool cached, int iterations) {
  makeDataSet();
  // Without heat probes, whose loading (seconds on a loaded machine) would
  // space the kills out, not shorten any wait: a successor serves FUSE first.
  start({"--probes", "off"});
  if (cached) {
    auto w = hs({"warm", mnt_ + "/big"});
    ASSERT_EQ(w.exit_code, 0) << w.out;
    ASSERT_EQ(statOf(mnt_ + "/big").value("state", ""), "cached");
  }
  pid_t worker = workerPid();
  ASSERT_GT(worker, 0);
  Jobs jobs(mnt_ + "/big", mnt_ + "/small");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  // Kills a sixth slower than the crash bound's rate (kMaxCrashes within
  // kCrashWindow: 700 ms apart), however fast the machine; each successor
  // serves before the next kill, so none is an early crash.
  const auto spacing =
      std::chrono::duration_cast<std::chrono::milliseconds>(kCrashWindow) * 7 / 6 / kMaxCrashes;
  for (int i = 0; i < iterations; i++) {
    auto killed_at = Clock::now();
    ASSERT_EQ(::kill(worker, SIGKILL), 0);
    pid_t next = workerPid(worker);
    ASSERT_GT(next, 0) << "no successor serves after kill " << i + 1 << ":\n" << daemon_->log();
    worker = next;
    std::this_thread::sleep_until(killed_at + spacing);
  }
  expectJobsUnharmed(jobs, std::string(cached ? "cached" : "uncached") + ", " +
                               std::to_string(iterations) + " kills");
  json s = daemon_->status();
  EXPECT_EQ(s["supervisor"].value("takeovers", 0), iterations) << s.dump();
  expectHealthyAfter();
}

TEST_F(IntegrationTakeover, JobsSeeNoErrorWhileTheWorkerIsKilledUncached) {
  crashTest(/*cached=*/false, iterationsFromEnv(50));
}

TEST_F(IntegrationTakeover, JobsSeeNoErrorWhileTheWorkerIsKilledCached) {
  crashTest(/*cached=*/true, std::max(10, iterationsFromEnv(50) / 5));
}

TEST_F(IntegrationTakeover, JobsSeeNoErrorWhileRestartsAlternateBinaries) {
  makeDataSet();
  start({"--probes", "off"});
  const std::string copy = binaryCopy("hotshard-next");
  Jobs jobs(mnt_ + "/big", mnt_ + "/small");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const int restarts = iterationsFromEnv(50);
  std::vector<int64_t> ready_ms;
  for (int i = 0; i < restarts; i++) {
    const std::string binary = i % 2 == 0 ? copy : hotshardBinary();
    pid_t before = workerPid();
    auto r = hs({"restart", "--binary", binary, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.out << daemon_->log();
    json reply = json::parse(r.out, nullptr, false);
    EXPECT_EQ(reply.value("old_pid", 0), before) << r.out;
    pid_t after = reply.value("new_pid", 0);
    EXPECT_EQ(fs::read_symlink("/proc/" + std::to_string(after) + "/exe"), binary);
    ready_ms.push_back(reply.value("ready_ms", int64_t{-1}));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::sort(ready_ms.begin(), ready_ms.end());
  std::printf("%d restarts alternating %s and %s: new worker ready after %lld ms median, %lld ms max\n",
              restarts, copy.c_str(), hotshardBinary().c_str(),
              static_cast<long long>(ready_ms[ready_ms.size() / 2]),
              static_cast<long long>(ready_ms.back()));
  expectJobsUnharmed(jobs, std::to_string(restarts) + " restarts");
  json s = daemon_->status();
  EXPECT_EQ(s["supervisor"].value("takeovers", 0), restarts) << s.dump();
  expectHealthyAfter();
}

// Requests that queued while one worker handed over, answered by a successor
// that has not yet seen any of their files: four threads open and read 200
// files in a tight loop across back-to-back restarts. Before the fix, the
// successor's second libfuse worker answered a queued open EIO before the
// replayed FUSE_INIT was done, and every first strict open of a file in a new
// worker was answered ESTALE (the mode it had never seen "changed"), which the
// kernel retries once only: a second restart within that retry failed the open.
TEST_F(IntegrationTakeover, ParallelOpenersSeeNoErrorAcrossBackToBackRestarts) {
  constexpr int kFiles = 200, kThreads = 4;
  fs::create_directories(remote_ + "/many");
  for (int i = 0; i < kFiles; i++) {
    writePatternFile(remote_ + "/many/f" + std::to_string(i), 100 + i, 4096);
  }
  start({"--probes", "off"});
  const std::string copy = binaryCopy("hotshard-next");
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> opens{0}, errors{0}, wrong{0};
  std::mutex mu;
  std::string first_error;
  std::vector<std::thread> openers;
  for (int t = 0; t < kThreads; t++) {
    openers.emplace_back([&] {
      std::vector<char> buf(4096);
      while (!stop) {
        for (int i = 0; i < kFiles && !stop; i++) {
          std::string path = mnt_ + "/many/f" + std::to_string(i);
          int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
          ssize_t n = fd >= 0 ? ::pread(fd, buf.data(), buf.size(), 0) : -1;
          int err = errno;
          if (fd >= 0) ::close(fd);
          opens++;
          if (n != static_cast<ssize_t>(buf.size())) {
            errors++;
            std::lock_guard lock(mu);
            if (first_error.empty()) first_error = path + ": " + std::strerror(err);
          } else {
            wrong += wrongBytes(100 + i, 0, buf.data(), buf.size());
          }
        }
      }
    });
  }
  const int restarts = std::max(20, iterationsFromEnv(50) * 2);
  for (int i = 0; i < restarts; i++) {
    auto r = hs({"restart", "--binary", i % 2 == 0 ? copy : hotshardBinary()});
    if (r.exit_code != 0) {
      ADD_FAILURE() << "restart " << i + 1 << ": " << r.out;
      break;
    }
  }
  stop = true;
  for (auto& t : openers) t.join();
  std::printf("%d back-to-back restarts: %llu opens by %d threads, %llu errors\n", restarts,
              static_cast<unsigned long long>(opens.load()), kThreads,
              static_cast<unsigned long long>(errors.load()));
  EXPECT_EQ(errors.load(), 0u) << first_error << "\nthe daemon's warnings and errors:\n"
                               << logProblems(daemon_->log());
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(opens.load(), static_cast<uint64_t>(kFiles * kThreads));
}

}  // namespace
}  // namespace hotshard::testing
