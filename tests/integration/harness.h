// Integration-test harness: real mounts of the real binary, cleaned up even when
// a test fails (TearDown and a global environment unmount and kill what is left).
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "daemon/control.h"
#include "tests/test_util.h"

namespace hotshard::testing {

// Path of build/hotshard, next to the test binary.
std::string hotshardBinary();

// The takeover states in /run/hotshard/takeover whose header names a mount at
// `root` or below it: (state dir, mount path) pairs.
std::vector<std::pair<std::string, std::string>> takeoverStatesBelow(const std::string& root);

// A fresh directory under /var/tmp; its destructor unmounts what is mounted
// below it, fails the test if a takeover state of such a mount is left, and
// removes it all. Mode 0755 so other users' tests can traverse it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return path_ + "/" + rel; }

 private:
  std::string path_;
};

// Writes `size` pseudo-random bytes (deterministic in seed).
void writeRandomFile(const std::string& path, uint64_t size, uint64_t seed);
std::string sha256File(const std::string& path);
// Writes back and drops the file's pages, so the next read comes from its device.
void dropPageCache(const std::string& path);

// Runs fn in a child process with the given ids; returns fn's result (an errno,
// 0 for success) or -1 if the child died.
int runAs(uid_t uid, gid_t gid, const std::function<int()>& fn);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr together
};
CommandResult runCommand(const std::vector<std::string>& argv, int timeout_s = 60);

// One `hotshard run --foreground` process.
// Live children of pid (/proc/*/stat), e.g. a supervisor's worker.
std::vector<pid_t> childrenOf(pid_t parent);

class DaemonProcess {
 public:
  struct Options {
    std::string remote;
    std::string mount;  // empty: over the remote
    std::string cache;
    std::string consistency = "strict";
    bool passthrough = true;
    std::vector<std::string> extra_args;
    uint64_t fd_soft_limit = 0;  // RLIMIT_NOFILE's soft limit for the daemon; 0: as ours
    uint64_t fd_hard_limit = 0;  // and its hard limit (the daemon raises soft to hard); 0: as ours
    // A network namespace ("/run/netns/NAME") the daemon runs in (setns(2) before
    // exec; its mount namespace stays ours, so its mount is seen here); empty: ours.
    std::string netns;
    // Descriptors the daemon inherits (their FD_CLOEXEC cleared in the child),
    // e.g. a supervisor's --fuse-fd and --ready-fd.
    std::vector<int> inherit_fds;
  };
  explicit DaemonProcess(Options opts, std::string workdir);
  ~DaemonProcess();  // stop()

  // Starts and waits until the mount answers and the control socket responds.
  ::testing::AssertionResult start();
  // SIGTERM, wait; SIGKILL if it does not stop in time; then lazily unmount a
  // mount it left behind unless keep_dead_mount. Returns the exit status (or -1
  // when it had to be killed).
  int stop(bool keep_dead_mount = false);
  // Waits (without signalling it) for the daemon to exit on its own, as after
  // `hotshard stop`; its exit status, or -1 if it did not exit in time.
  int waitExit(int timeout_s);
  // Removes the default takeover state of this daemon's mount once the mount
  // is gone (stop and waitExit call it with the exit status); a failure of the
  // test if there was one to remove after exit 0 (the supervisor's job).
  void forgetTakeoverState(int exit_code);
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  json status();
  const std::string& mountpoint() const { return mountpoint_; }
  const std::string& socket() const { return socket_; }
  std::string log() const;

 private:
  Options opts_;
  std::string workdir_;
  std::string mountpoint_;
  std::string socket_;
  std::string log_path_;
  pid_t pid_ = -1;
};

bool isHotshardMount(const std::string& path);
dev_t mountDevice(const std::string& path);  // from /proc/self/mountinfo, 0 if none

// A remote directory, a mount point and a cache under a fresh TempDir, a daemon
// over them, and the CLI against it. Needs root and /dev/fuse.
class MountFixture : public ::testing::Test {
 protected:
  void SetUp() override;
  // Starts the daemon with opts (remote, mount and cache default to the fixture's).
  void startDaemonWith(DaemonProcess::Options opts);
  // `hotshard ARGS... --socket <this daemon's socket>`.
  CommandResult hs(std::vector<std::string> args);
  // `hotshard stat PATH --json` (strings that are not UTF-8 decoded), or {"error": ...}.
  json statOf(const std::string& path);

  TempDir tmp_;
  std::string remote_, mnt_, cache_;
  std::unique_ptr<DaemonProcess> daemon_;
};

// Counts the events of one tracepoint that pass a filter, in a private tracefs
// instance (removed on destruction).
class TraceCounter {
 public:
  TraceCounter(const std::string& event /* "fuse/fuse_request_send" */, const std::string& filter);
  ~TraceCounter();
  ::testing::AssertionResult ok() const;
  uint64_t stopAndCount();

 private:
  std::string dir_;
  std::string event_;
  std::string error_;
};

// The kernel's dev_t (major << 20 | minor), as tracepoints print it.
unsigned kernelDev(dev_t dev);
// FUSE_READ requests sent on one FUSE connection.
std::string fuseReadFilter(dev_t connection);
// Page-cache lookups of one file (filemap:mm_filemap_get_pages).
std::string fileFilter(const std::string& path);

}  // namespace hotshard::testing
