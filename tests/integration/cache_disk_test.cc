// A failing cache disk through the real mount: flagged in status, stat and the
// metrics at once, new opens read the remote, promotions pause, and the daemon
// comes back by itself when the disk answers again.
//
// The fault injected: the cache directory is a tmpfs mount made read-only per
// mount (MS_REMOUNT | MS_BIND | MS_RDONLY): every open for writing, write,
// rename and unlink in it fails with EROFS, as on an ext4 cache disk that
// remounted itself read-only after an error (errors=remount-ro). Making it
// writable again is the disk answering again. (No device-mapper here for EIO;
// both errnos take the same path, CacheStore::isDiskFault.)
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "tests/daemon/metrics_test_util.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

class IntegrationCacheDisk : public MountFixture {
 protected:
  void startDaemon() {
    fs::create_directories(cache_);
    ASSERT_EQ(::mount("tmpfs", cache_.c_str(), "tmpfs", 0, "size=64m"), 0) << std::strerror(errno);
    port_ = freeLoopbackPort();
    startDaemonWith({.mount = mnt_,
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual", "--metrics",
                                    "127.0.0.1:" + std::to_string(port_)}});
  }
  // The fault. EBUSY while the daemon briefly holds a file open for writing
  // (its health probe): tried again for a while.
  void setReadOnly(bool ro) {
    unsigned long flags = MS_REMOUNT | MS_BIND | (ro ? MS_RDONLY : 0);
    int rc = -1;
    for (int i = 0; i < 100 && rc != 0; ++i) {
      rc = ::mount(nullptr, cache_.c_str(), nullptr, flags, nullptr);
      if (rc != 0 && errno != EBUSY) break;
      if (rc != 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ASSERT_EQ(rc, 0) << "remount " << cache_ << (ro ? " ro: " : " rw: ") << std::strerror(errno);
  }
  double healthyMetric() {
    auto m = parseMetricsText(httpGet(port_, "/metrics").body);
    auto it = m.find("hotshard_cache_healthy");
    return it == m.end() ? -1 : it->second;
  }
  uint16_t port_ = 0;
};

TEST_F(IntegrationCacheDisk, AFailedDiskIsFlaggedAtOnceOpensGoToTheRemoteAndItComesBack) {
  writeRandomFile(remote_ + "/a.bin", 3 << 20, 11);
  writeRandomFile(remote_ + "/b.bin", 1 << 20, 12);
  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_ + "/a.bin"}).exit_code, 0);
  ASSERT_EQ(statOf(mnt_ + "/a.bin")["state"], "cached");
  EXPECT_EQ(daemon_->status()["cache"]["disk_healthy"], true) << daemon_->status().dump();
  EXPECT_EQ(healthyMetric(), 1);

  setReadOnly(true);
  // The next open of the cached file meets the disk's error: it reads the
  // remote's bytes, and the disk is failed before the open returns.
  uint64_t opens_remote = daemon_->status()["fuse"]["opens_remote"].get<uint64_t>();
  EXPECT_EQ(sha256File(mnt_ + "/a.bin"), sha256File(remote_ + "/a.bin"));
  json status = daemon_->status();
  EXPECT_EQ(status["fuse"]["opens_remote"].get<uint64_t>(), opens_remote + 1) << status.dump();
  EXPECT_EQ(status["cache"]["disk_healthy"], false) << status.dump();
  EXPECT_NE(status["cache"].value("disk_error", "").find("Read-only file system"),
            std::string::npos)
      << status.dump();
  EXPECT_EQ(healthyMetric(), 0);
  CommandResult shown = hs({"status"});
  EXPECT_NE(shown.out.find("cache disk   FAILED (open cached copy"), std::string::npos) << shown.out;
  json st = statOf(mnt_ + "/a.bin");
  EXPECT_EQ(st["state"], "cached") << st.dump();
  EXPECT_NE(st.value("unusable", "").find("cache disk failed"), std::string::npos) << st.dump();
  CommandResult stat_text = hs({"stat", mnt_ + "/a.bin"});
  EXPECT_EQ(stat_text.out.rfind("unusable", 0), 0u) << stat_text.out;

  // Opens keep going to the remote; promotions pause instead of failing on the disk.
  EXPECT_EQ(sha256File(mnt_ + "/a.bin"), sha256File(remote_ + "/a.bin"));
  CommandResult warm = hs({"warm", mnt_ + "/b.bin"});
  EXPECT_NE(warm.exit_code, 0);
  EXPECT_NE(warm.out.find("promotions paused"), std::string::npos) << warm.out;
  EXPECT_EQ(statOf(mnt_ + "/b.bin")["state"], "remote");
  std::string log = daemon_->log();
  size_t first = log.find("FAILED");
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find("FAILED", first + 1), std::string::npos) << "logged more than once:\n" << log;

  // The disk answers again: the daemon's probe (every second while failed)
  // brings it back, and the copy is served again.
  setReadOnly(false);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (daemon_->status()["cache"]["disk_healthy"] != true && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(daemon_->status()["cache"]["disk_healthy"], true) << daemon_->log();
  EXPECT_EQ(healthyMetric(), 1);
  EXPECT_NE(daemon_->log().find("answers again"), std::string::npos);
  EXPECT_FALSE(statOf(mnt_ + "/a.bin").contains("unusable"));
  uint64_t opens_cache = daemon_->status()["fuse"]["opens_cache"].get<uint64_t>();
  EXPECT_EQ(sha256File(mnt_ + "/a.bin"), sha256File(remote_ + "/a.bin"));
  EXPECT_EQ(daemon_->status()["fuse"]["opens_cache"].get<uint64_t>(), opens_cache + 1);
  CommandResult warm_again = hs({"warm", mnt_ + "/b.bin"});
  EXPECT_EQ(warm_again.exit_code, 0) << warm_again.out;
  EXPECT_EQ(statOf(mnt_ + "/b.bin")["state"], "cached");
}

TEST_F(IntegrationCacheDisk, VerifyCopesWithADiskThatRejectsUnlinks) {
  writeRandomFile(remote_ + "/good.bin", 1 << 20, 21);
  writeRandomFile(remote_ + "/bad.bin", 1 << 20, 22);
  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_}).exit_code, 0);
  std::string object = statOf(mnt_ + "/bad.bin")["object"];
  {
    int fd = ::open(object.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c = 0;
    ASSERT_EQ(::pread(fd, &c, 1, 4096), 1);
    c ^= 0x01;
    ASSERT_EQ(::pwrite(fd, &c, 1, 4096), 1);
    ::close(fd);
  }
  setReadOnly(true);
  CommandResult v = hs({"verify", "--json", mnt_});
  ASSERT_EQ(v.exit_code, 0) << v.out << daemon_->log();
  json report = json::parse(v.out);
  EXPECT_EQ(report["checked"], 2) << report.dump();
  EXPECT_EQ(report["dropped"], 1) << report.dump();
  EXPECT_NE(report.dump().find("left on disk, never served"), std::string::npos) << report.dump();
  EXPECT_EQ(daemon_->status()["cache"]["disk_healthy"], false);
  EXPECT_EQ(statOf(mnt_ + "/bad.bin")["state"], "remote");
  EXPECT_EQ(sha256File(mnt_ + "/bad.bin"), sha256File(remote_ + "/bad.bin"));
  EXPECT_TRUE(daemon_->running());
  setReadOnly(false);
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (fs::exists(object) && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_FALSE(fs::exists(object)) << "the drop's leftover was not removed when the disk came back";
}

}  // namespace
}  // namespace hotshard::testing
