// The worker side of restart without unmount (docs/restart.md): the test plays
// the supervisor. It mounts /dev/fuse itself (fuse::mountFuse), keeps the fd,
// and starts `hotshard run --fuse-fd=N --ready-fd=M` workers on it: a fresh
// one, then successors with --takeover after a SIGKILL or a SIGUSR2 hand-over.
// The mount is lazily unmounted and its connection aborted in every path.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "fuse/mount.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationTakeoverWorker : public MountFixture {
 protected:
  void SetUp() override {
    MountFixture::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    state_dir_ = tmp_ / "state";
  }

  void TearDown() override {
    workers_.clear();  // SIGTERM: a live worker unmounts
    if (conn_dev_ != 0 && mountDevice(mnt_) == conn_dev_) {
      fuse::abortConnection(conn_dev_);
      ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    if (fuse_fd_ >= 0) ::close(fuse_fd_);
  }

  // What a supervisor does first: mount, and keep the /dev/fuse fd.
  void mountConnection() {
    auto fd = fuse::mountFuse(mnt_, "hotshard:" + remote_);
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    fuse_fd_ = *fd;
    conn_dev_ = mountDevice(mnt_);
    ASSERT_NE(conn_dev_, 0u);
  }

  // Starts a worker on the connection; waits for its "ready" line (at most 15 s)
  // and for its control socket. Returns the ms from start to "ready".
  double startWorker(bool takeover, std::vector<std::string> extra = {}) {
    int ready[2];
    EXPECT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    std::vector<std::string> args = {"--fuse-fd", std::to_string(fuse_fd_), "--ready-fd",
                                     std::to_string(ready[1]), "--state-dir", state_dir_};
    if (takeover) args.push_back("--takeover");
    args.insert(args.end(), extra.begin(), extra.end());
    auto start = std::chrono::steady_clock::now();
    workers_.push_back(std::make_unique<DaemonProcess>(
        DaemonProcess::Options{.remote = remote_,
                               .mount = mnt_,
                               .cache = cache_,
                               .extra_args = args,
                               .inherit_fds = {fuse_fd_, ready[1]}},
        tmp_.path()));
    bool started = workers_.back()->start();
    ::close(ready[1]);
    std::string line;
    pollfd p{.fd = ready[0], .events = POLLIN, .revents = 0};
    char buf[64];
    while (started && ::poll(&p, 1, 15000) == 1) {
      ssize_t n = ::read(ready[0], buf, sizeof(buf));
      if (n <= 0) break;
      line.append(buf, n);
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                    .count();
    ::close(ready[0]);
    EXPECT_TRUE(started) << workers_.back()->log();
    EXPECT_EQ(line, "ready\n") << workers_.back()->log();
    return ms;
  }

  DaemonProcess& worker() { return *workers_.back(); }

  std::string state_dir_;
  int fuse_fd_ = -1;
  dev_t conn_dev_ = 0;
  std::vector<std::unique_ptr<DaemonProcess>> workers_;
};

TEST_F(IntegrationTakeoverWorker, ServesAFreshConnectionItDidNotMount) {
  writeRandomFile(remote_ + "/a", (1 << 20) + 3, 7);
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(sha256File(mnt_ + "/a"), sha256File(remote_ + "/a"));
  json st = worker().status();
  EXPECT_TRUE(st["passthrough"].get<bool>()) << st.dump();
  // SIGTERM keeps its meaning: the worker unmounts and exits 0.
  EXPECT_EQ(worker().stop(), 0) << worker().log();
  EXPECT_NE(mountDevice(mnt_), conn_dev_);
}

TEST_F(IntegrationTakeoverWorker, RefusesAnFdThatIsNotDevFuse) {
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  int null = ::open("/dev/null", O_RDWR);  // inherited by the child below
  CommandResult r = runCommand({hotshardBinary(), "run", "--foreground", "--remote", remote_,
                                "--mount", mnt_, "--cache", cache_, "--metrics", "off",
                                "--fuse-fd", std::to_string(null)});
  ::close(null);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("is not /dev/fuse"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hotshard::testing
