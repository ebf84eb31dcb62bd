#include "tests/integration/harness.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "daemon/config.h"
#include "fuse/mount.h"
#include "fuse/takeover_state.h"

namespace hotshard::testing {

namespace fs = std::filesystem;

std::string hotshardBinary() {
  return (fs::read_symlink("/proc/self/exe").parent_path() / "hotshard").string();
}

namespace {

// Lazily unmounts every hotshard mount at or below `root`, deepest first.
void unmountBelow(const std::string& root) {
  auto table = fuse::readMountTable();
  if (!table.ok()) return;
  std::vector<std::string> points;
  for (const auto& e : *table) {
    if (e.mountpoint == root || e.mountpoint.rfind(root + "/", 0) == 0) {
      points.push_back(e.mountpoint);
    }
  }
  for (auto it = points.rbegin(); it != points.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
}

const char* kTestRoot = "/var/tmp";

// Whatever this run, or a crashed earlier one, left behind is swept at the end.
// Directories are named hotshard-test.<pid>.XXXXXX; those of another live run
// are left alone.
class LeftoverSweeper : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(kTestRoot, ec)) {
      std::string name = entry.path().filename().string();
      if (name.rfind("hotshard-test.", 0) != 0) continue;
      pid_t owner = static_cast<pid_t>(std::atol(name.c_str() + std::strlen("hotshard-test.")));
      if (owner != ::getpid() && owner > 0 && ::kill(owner, 0) == 0) continue;
      unmountBelow(entry.path().string());
      fs::remove_all(entry.path(), ec);
    }
  }
};
[[maybe_unused]] auto* const kSweeper = ::testing::AddGlobalTestEnvironment(new LeftoverSweeper);

}  // namespace

TempDir::TempDir() {
  std::string tmpl =
      std::string(kTestRoot) + "/hotshard-test." + std::to_string(::getpid()) + ".XXXXXX";
  char* p = ::mkdtemp(tmpl.data());
  if (p == nullptr) throw std::runtime_error("mkdtemp: " + std::string(std::strerror(errno)));
  path_ = p;
  ::chmod(path_.c_str(), 0755);
}

TempDir::~TempDir() {
  unmountBelow(path_);
  // Every way a test's mount ends must take its takeover state out of /run: a
  // supervisor that stops removes it, DaemonProcess removes what a killed one
  // left, and a test that kills a supervisor outside DaemonProcess does it
  // itself. What is left here is a leak (one state dir per test run, for good).
  for (const auto& [dir, mount] : takeoverStatesBelow(path_)) {
    ADD_FAILURE() << "takeover state " << dir << " of the mount " << mount
                  << " outlived the mount (removed now)";
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::vector<std::pair<std::string, std::string>> takeoverStatesBelow(const std::string& root) {
  std::vector<std::pair<std::string, std::string>> found;
  const fs::path top = fs::path(takeoverStateDirFor("/")).parent_path();
  std::error_code ec;
  for (auto it = fs::directory_iterator(top, ec); !ec && it != fs::directory_iterator();
       it.increment(ec)) {
    auto conn = fuse::TakeoverState::connectionOf(it->path());
    if (!conn.ok()) continue;
    const std::string& m = conn->mount_path;
    if (m == root || m.rfind(root + "/", 0) == 0) found.emplace_back(it->path(), m);
  }
  return found;
}

void writeRandomFile(const std::string& path, uint64_t size, uint64_t seed) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> buf(1 << 17);  // 1 MiB
  while (size > 0) {
    for (auto& w : buf) w = rng();
    uint64_t n = std::min<uint64_t>(size, buf.size() * 8);
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
    size -= n;
  }
}

void dropPageCache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  ::fdatasync(fd);
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

std::string sha256File(const std::string& path) {
  CommandResult r = runCommand({"sha256sum", "--", path});
  if (r.exit_code != 0) return "error: " + r.out;
  return r.out.substr(0, 64);
}

int runAs(uid_t uid, gid_t gid, const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid == 0) {
    gid_t groups[] = {gid};
    if (::setgroups(1, groups) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      ::_exit(255);
    }
    ::_exit(fn() & 0xff);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

CommandResult runCommand(const std::vector<std::string>& argv, int timeout_s) {
  CommandResult result;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return result;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipefd[1], STDOUT_FILENO);
    ::dup2(pipefd[1], STDERR_FILENO);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  char buf[4096];
  ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
  int status = 0;
  bool done = false;
  while (!done) {
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) result.out.append(buf, n);
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      done = true;
      while ((n = ::read(pipefd[0], buf, sizeof(buf))) > 0) result.out.append(buf, n);
      break;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.out += "\n[timed out]";
      ::close(pipefd[0]);
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  ::close(pipefd[0]);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// ---- daemon ------------------------------------------------------------------

DaemonProcess::DaemonProcess(Options opts, std::string workdir)
    : opts_(std::move(opts)), workdir_(std::move(workdir)) {
  mountpoint_ = opts_.mount.empty() ? opts_.remote : opts_.mount;
  socket_ = workdir_ + "/control.sock";
  log_path_ = workdir_ + "/daemon.log";
}

DaemonProcess::~DaemonProcess() { stop(); }

bool isHotshardMount(const std::string& path) {
  auto table = fuse::readMountTable();
  if (!table.ok()) return false;
  auto top = fuse::topMountAt(*table, path);
  return top && top->fstype == fuse::kFsType;
}

dev_t mountDevice(const std::string& path) {
  auto table = fuse::readMountTable();
  if (!table.ok()) return 0;
  auto top = fuse::topMountAt(*table, path);
  return top ? top->dev : 0;
}

::testing::AssertionResult DaemonProcess::start() {
  std::vector<std::string> argv = {hotshardBinary(), "run", "--foreground",
                                   "--remote", opts_.remote, "--cache", opts_.cache,
                                   "--consistency", opts_.consistency,
                                   "--control-socket", socket_, "--log-level", "debug",
                                   "--passthrough", opts_.passthrough ? "on" : "off"};
  if (!opts_.mount.empty()) {
    argv.push_back("--mount");
    argv.push_back(opts_.mount);
  }
  // Test daemons serve no metrics unless asked: parallel runs would fight over 9464.
  if (std::find(opts_.extra_args.begin(), opts_.extra_args.end(), "--metrics") ==
      opts_.extra_args.end()) {
    argv.push_back("--metrics");
    argv.push_back("off");
  }
  for (const auto& a : opts_.extra_args) argv.push_back(a);

  pid_ = ::fork();
  if (pid_ == 0) {
    int log = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(log, STDOUT_FILENO);
    ::dup2(log, STDERR_FILENO);
    if (opts_.fd_soft_limit != 0 || opts_.fd_hard_limit != 0) {
      struct rlimit rl;
      ::getrlimit(RLIMIT_NOFILE, &rl);
      if (opts_.fd_hard_limit != 0) rl.rlim_max = opts_.fd_hard_limit;
      if (opts_.fd_soft_limit != 0) rl.rlim_cur = opts_.fd_soft_limit;
      rl.rlim_cur = std::min(rl.rlim_cur, rl.rlim_max);
      if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) ::_exit(126);
    }
    if (!opts_.netns.empty()) {
      int ns = ::open(opts_.netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "setns %s: %s\n", opts_.netns.c_str(), std::strerror(errno));
        ::_exit(126);
      }
    }
    for (int fd : opts_.inherit_fds) ::fcntl(fd, F_SETFD, 0);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    int status;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return ::testing::AssertionFailure() << "hotshard run exited during start-up:\n" << log();
    }
    if (isHotshardMount(mountpoint_)) {
      auto client = ControlClient::connect(socket_);
      if (client.ok() && client->call(json{{"cmd", "status"}}).ok()) {
        return ::testing::AssertionSuccess();
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  stop();
  return ::testing::AssertionFailure() << "hotshard run did not come up in 15 s:\n" << log();
}

std::vector<pid_t> childrenOf(pid_t parent) {
  std::vector<pid_t> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc", ec)) {
    pid_t pid = std::atoi(e.path().filename().c_str());
    if (pid <= 0) continue;
    std::ifstream stat(e.path() / "stat");
    std::string line;
    if (!std::getline(stat, line)) continue;
    size_t paren = line.rfind(')');
    if (paren == std::string::npos) continue;
    char state;
    int ppid = 0;
    if (std::sscanf(line.c_str() + paren + 1, " %c %d", &state, &ppid) == 2 && ppid == parent &&
        state != 'Z') {
      out.push_back(pid);
    }
  }
  return out;
}

namespace {
// Where each thread of pid waits (wchan), for a process that does not end.
std::string threadsWaiting(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (const auto& t : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::string comm = readFile((t.path() / "comm").string());
    if (!comm.empty() && comm.back() == '\n') comm.pop_back();
    out += " " + t.path().filename().string() + "(" + comm + "):" +
           readFile((t.path() / "wchan").string());
  }
  return out;
}

// The workers a supervisor started end with it (PR_SET_PDEATHSIG) or before:
// waits until they are gone, so that the next start finds the cache free. One
// still there after 10 s is named, with where its threads wait, and killed.
void waitForWorkers(const std::vector<pid_t>& workers) {
  for (pid_t w : workers) {
    auto alive = [w] { return ::kill(w, 0) == 0 && fs::exists("/proc/" + std::to_string(w) + "/task"); };
    for (int i = 0; i < 1000 && alive(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!alive()) continue;
    std::fprintf(stderr, "harness: worker %d did not end within 10 s of its supervisor; threads:%s\n",
                 w, threadsWaiting(w).c_str());
    ::kill(w, SIGKILL);
    for (int i = 0; i < 500 && alive(); i++) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}
}  // namespace

int DaemonProcess::stop(bool keep_dead_mount) {
  if (pid_ <= 0) return 0;
  const std::vector<pid_t> workers = childrenOf(pid_);
  ::kill(pid_, SIGTERM);
  int status = 0, rc = -1;
  bool exited = false;
  for (int i = 0; i < 1000 && !exited; i++) {  // 10 s
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited = true;
      rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  if (!exited) {
    std::fprintf(stderr, "harness: hotshard run %d did not end within 10 s of SIGTERM; threads:%s\n",
                 pid_, threadsWaiting(pid_).c_str());
    for (pid_t w : workers) {
      std::fprintf(stderr, "harness: its worker %d; threads:%s\n", w, threadsWaiting(w).c_str());
    }
    ::kill(pid_, SIGKILL);
    // A thread blocked in a FUSE call its server has taken (a hung remote)
    // waits out even SIGKILL (fs/fuse/dev.c request_wait_answer): bounded here,
    // so a test's teardown (which ends its remotes) still runs.
    bool reaped = false;
    for (int i = 0; i < 1000 && !reaped; i++) {
      reaped = ::waitpid(pid_, &status, WNOHANG) == pid_;
      if (!reaped) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!reaped) std::fprintf(stderr, "harness: hotshard run %d not reaped 10 s after SIGKILL\n", pid_);
  }
  waitForWorkers(workers);
  pid_ = -1;
  // A daemon that died (or was killed) leaves its mount behind, dead.
  if (!keep_dead_mount && isHotshardMount(mountpoint_)) ::umount2(mountpoint_.c_str(), MNT_DETACH);
  forgetTakeoverState(rc);
  return rc;
}

void DaemonProcess::forgetTakeoverState(int exit_code) {
  // A supervisor removes its mount's takeover state when the mount ends
  // (docs/restart.md); one that was killed cannot. Test mounts live in
  // temporary directories, so the state would pile up in /run: gone with the
  // mount. After a clean end (exit 0) nothing may be left to remove.
  if (mountpoint_.empty() || isHotshardMount(mountpoint_)) return;
  const std::string dir = takeoverStateDirFor(mountpoint_);
  if (!fs::exists(dir)) return;
  if (exit_code == 0) {
    ADD_FAILURE() << "hotshard run exited 0 and its mount " << mountpoint_
                  << " is gone, but its takeover state " << dir << " is still there";
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
}

int DaemonProcess::waitExit(int timeout_s) {
  if (pid_ <= 0) return -1;
  for (int i = 0; i < timeout_s * 100; i++) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      forgetTakeoverState(rc);
      return rc;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

json DaemonProcess::status() {
  auto client = ControlClient::connect(socket_);
  if (!client.ok()) return json{{"error", client.error().message}};
  auto reply = client->call(json{{"cmd", "status"}});
  if (!reply.ok()) return json{{"error", reply.error().message}};
  return *reply;
}

std::string DaemonProcess::log() const { return readFile(log_path_); }

// ---- fixture -------------------------------------------------------------------

void MountFixture::SetUp() {
  HS_REQUIRE_ROOT();
  HS_REQUIRE(::access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse");
  remote_ = tmp_ / "remote";
  mnt_ = tmp_ / "mnt";
  cache_ = tmp_ / "cache";
  fs::create_directories(remote_);
  fs::create_directories(mnt_);
  ::chmod(remote_.c_str(), 0755);
}

void MountFixture::startDaemonWith(DaemonProcess::Options opts) {
  if (opts.remote.empty()) opts.remote = remote_;
  if (opts.cache.empty()) opts.cache = cache_;
  daemon_ = std::make_unique<DaemonProcess>(std::move(opts), tmp_.path());
  ASSERT_TRUE(daemon_->start());
}

CommandResult MountFixture::hs(std::vector<std::string> args) {
  args.insert(args.begin(), hotshardBinary());
  args.push_back("--socket");
  args.push_back(daemon_->socket());
  return runCommand(args);
}

json MountFixture::statOf(const std::string& path) {
  CommandResult r = hs({"stat", path, "--json"});
  if (r.exit_code != 0) return json{{"error", r.out}};
  return fromWire(json::parse(r.out, nullptr, false));  // names that are not UTF-8: bytes again
}

// ---- tracefs -------------------------------------------------------------------

namespace {

const char* kTracefs = "/sys/kernel/tracing";

bool writeText(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace

unsigned kernelDev(dev_t dev) { return (major(dev) << 20) | minor(dev); }

std::string fuseReadFilter(dev_t connection) {
  return "opcode == 15 && connection == " + std::to_string(kernelDev(connection));
}

std::string fileFilter(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return "i_ino == " + std::to_string(st.st_ino) + " && s_dev == " + std::to_string(kernelDev(st.st_dev));
}

TraceCounter::TraceCounter(const std::string& event, const std::string& filter) : event_(event) {
  static std::atomic<int> serial{0};
  struct stat st;
  if (::stat((std::string(kTracefs) + "/instances").c_str(), &st) != 0) {
    ::mount("nodev", kTracefs, "tracefs", 0, nullptr);
  }
  dir_ = std::string(kTracefs) + "/instances/hotshard-test-" + std::to_string(::getpid()) + "-" +
         std::to_string(serial++);
  ::rmdir(dir_.c_str());
  if (::mkdir(dir_.c_str(), 0755) != 0) {
    error_ = "mkdir " + dir_ + ": " + std::strerror(errno);
    dir_.clear();
    return;
  }
  std::string ev = dir_ + "/events/" + event_;
  if (!writeText(ev + "/filter", filter) || !writeText(ev + "/enable", "1")) {
    error_ = "cannot enable " + event_ + " with filter '" + filter + "' in " + dir_;
  }
}

TraceCounter::~TraceCounter() {
  if (dir_.empty()) return;
  writeText(dir_ + "/events/" + event_ + "/enable", "0");
  ::rmdir(dir_.c_str());
}

::testing::AssertionResult TraceCounter::ok() const {
  if (error_.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << error_;
}

uint64_t TraceCounter::stopAndCount() {
  writeText(dir_ + "/events/" + event_ + "/enable", "0");
  std::ifstream trace(dir_ + "/trace");
  std::string line, name = event_.substr(event_.find('/') + 1);
  uint64_t n = 0;
  while (std::getline(trace, line)) {
    if (!line.empty() && line[0] != '#' && line.find(name) != std::string::npos) n++;
  }
  return n;
}

}  // namespace hotshard::testing
