// Opens through the real mount that reuse the backing file an inode kept after
// its last release (fuse/inode_table.h, "idle"): the reuse must never serve
// what a fresh open would not: a dropped copy, a remote that changed, a
// read-only backing to a writer.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

class IntegrationOpens : public MountFixture {
 protected:
  void startDaemon(const std::string& consistency) {
    startDaemonWith({.mount = mnt_,
                     .consistency = consistency,
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
  uint64_t fuseCount(const char* key) {
    json st = daemon_->status();
    return st["fuse"].value(key, uint64_t{0});
  }
  // Idle backings, once they are `want` (FUSE_RELEASE is sent after close()
  // returns, in the background), or what they are after 5 s.
  uint64_t idleBackings(uint64_t want) {
    uint64_t n = 0;
    for (int i = 0; i < 100 && (n = fuseCount("idle_backings")) != want; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return n;
  }
  // What the daemon's open fds name under the cache directory.
  std::vector<std::string> cacheFdTargets() {
    std::string fd_dir = "/proc/" + std::to_string(daemon_->status()["pid"].get<int>()) + "/fd";
    std::vector<std::string> targets;
    for (const auto& e : std::filesystem::directory_iterator(fd_dir)) {
      std::error_code ec;
      std::string target = std::filesystem::read_symlink(e.path(), ec).string();
      if (!ec && target.rfind(cache_ + "/", 0) == 0) targets.push_back(target);
    }
    return targets;
  }
  // The daemon's open fds that name a file under the cache directory that is
  // no longer there (a dropped copy kept open keeps its blocks allocated).
  int deletedCacheFds() {
    return static_cast<int>(std::ranges::count_if(cacheFdTargets(), [](const std::string& t) {
      return t.find("(deleted)") != std::string::npos;
    }));
  }
  // The daemon's open fds on copies: files in the store's objects/, or dropped ones.
  int copyFds() {
    return static_cast<int>(std::ranges::count_if(cacheFdTargets(), [](const std::string& t) {
      return t.find("/objects/") != std::string::npos || t.find("(deleted)") != std::string::npos;
    }));
  }
  // Copies of any kind (valid or dirty) in the store's objects/.
  int storedCopies() {
    int n = 0;
    for (const auto& e : std::filesystem::recursive_directory_iterator(cache_ + "/objects")) {
      n += e.is_regular_file() ? 1 : 0;
    }
    return n;
  }
};

TEST_F(IntegrationOpens, AReopenReusesTheIdleBackingAndAWarmMovesItToTheCopy) {
  writeFile(remote_ + "/f", "remote bytes");
  startDaemon("immutable");
  EXPECT_EQ(readFile(mnt_ + "/f"), "remote bytes");
  uint64_t reused = fuseCount("opens_reused");
  EXPECT_EQ(idleBackings(1), 1u);
  EXPECT_EQ(readFile(mnt_ + "/f"), "remote bytes");
  EXPECT_EQ(fuseCount("opens_reused"), reused + 1);

  // Warmed: the next open goes to the copy, not to the idle remote file.
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  uint64_t cache_opens = fuseCount("opens_cache");
  EXPECT_EQ(idleBackings(1), 1u);  // released: the next open is not a share of an open one
  EXPECT_EQ(readFile(mnt_ + "/f"), "remote bytes");
  EXPECT_EQ(fuseCount("opens_cache"), cache_opens + 1);
  EXPECT_EQ(fuseCount("opens_reused"), reused + 1);
  EXPECT_EQ(idleBackings(1), 1u);
  EXPECT_EQ(readFile(mnt_ + "/f"), "remote bytes");  // and reuses the copy
  EXPECT_EQ(fuseCount("opens_cache"), cache_opens + 2);
  EXPECT_EQ(fuseCount("opens_reused"), reused + 2);
}

// Strict: an idle backing is reused once validated against the open's own
// forced stat of the remote: a copy while the store holds it as valid, the
// remote file while unchanged since it was opened (what an NFS client's
// close-to-open GETATTR decides for its cached data); a writer never, and the
// write moves the remote past the idle backing's validator.
TEST_F(IntegrationOpens, StrictReusesValidatedBackingsAndWritersNever) {
  writeFile(remote_ + "/plain", "plain");
  writeFile(remote_ + "/warmed", "warmed");
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/warmed"}).exit_code, 0);
  for (const char* f : {"plain", "warmed"}) EXPECT_EQ(readFile(mnt_ + "/" + f), f);
  EXPECT_EQ(idleBackings(2), 2u);
  uint64_t reused = fuseCount("opens_reused"), remote_opens = fuseCount("opens_remote");
  EXPECT_EQ(readFile(mnt_ + "/plain"), "plain");
  EXPECT_EQ(fuseCount("opens_reused"), reused + 1);
  EXPECT_EQ(idleBackings(2), 2u);
  EXPECT_EQ(readFile(mnt_ + "/warmed"), "warmed");
  EXPECT_EQ(fuseCount("opens_reused"), reused + 2);
  EXPECT_EQ(idleBackings(2), 2u);
  writeFile(mnt_ + "/plain", "written");  // its read-write idle backing is not reused either
  EXPECT_EQ(fuseCount("opens_reused"), reused + 2);
  EXPECT_EQ(readFile(remote_ + "/plain"), "written");
  EXPECT_EQ(idleBackings(2), 2u);
  // The remote moved on since the idle backing was opened (by the write): afresh.
  EXPECT_EQ(readFile(mnt_ + "/plain"), "written");
  EXPECT_EQ(fuseCount("opens_reused"), reused + 2);
  EXPECT_EQ(fuseCount("opens_remote"), remote_opens + 3);  // reused, the writer's, this one
  EXPECT_EQ(idleBackings(2), 2u);
  EXPECT_EQ(readFile(mnt_ + "/plain"), "written");
  EXPECT_EQ(fuseCount("opens_reused"), reused + 3);
}

TEST_F(IntegrationOpens, AReopenAfterTheCopyWasEvictedDoesNotPassThroughToIt) {
  writeRandomFile(remote_ + "/f", 1 << 20, 7);
  startDaemon("immutable");
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  std::string want = sha256File(remote_ + "/f");
  EXPECT_EQ(sha256File(mnt_ + "/f"), want);
  ASSERT_EQ(statOf(mnt_ + "/f")["state"], "cached");
  EXPECT_EQ(idleBackings(1), 1u);

  CommandResult evict = hs({"evict", mnt_ + "/f"});
  ASSERT_EQ(evict.exit_code, 0) << evict.out;
  // The store told the mount: the idle copy is closed, its blocks freed.
  EXPECT_EQ(idleBackings(0), 0u);
  EXPECT_EQ(deletedCacheFds(), 0);

  uint64_t reused = fuseCount("opens_reused"), remote_opens = fuseCount("opens_remote");
  EXPECT_EQ(sha256File(mnt_ + "/f"), want);
  EXPECT_EQ(fuseCount("opens_reused"), reused);
  EXPECT_EQ(fuseCount("opens_remote"), remote_opens + 1);

  // Invalidated through the mount (a writer), with the copy idle: the same.
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(sha256File(mnt_ + "/f"), want);
  EXPECT_EQ(idleBackings(1), 1u);
  {
    UniqueFd fd(::open((mnt_ + "/f").c_str(), O_WRONLY));
    ASSERT_TRUE(fd) << strerror(errno);
    ASSERT_EQ(::pwrite(fd.get(), "NEW", 3, 0), 3);
  }
  EXPECT_EQ(deletedCacheFds(), 0);
  EXPECT_EQ(readFile(mnt_ + "/f").substr(0, 3), "NEW");
  EXPECT_EQ(sha256File(mnt_ + "/f"), sha256File(remote_ + "/f"));
}

TEST_F(IntegrationOpens, AStrictReopenSeesARemoteChangeWithTheBackingIdle) {
  writeFile(remote_ + "/plain", "version one");
  writeFile(remote_ + "/warmed", "version one");
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/warmed"}).exit_code, 0);
  for (const char* f : {"plain", "warmed"}) EXPECT_EQ(readFile(mnt_ + "/" + f), "version one");
  EXPECT_EQ(idleBackings(2), 2u);

  // In place on the remote, behind the mount's back: same size, new bytes.
  uint64_t reused = fuseCount("opens_reused");
  for (const char* f : {"plain", "warmed"}) writeFile(remote_ + "/" + f, "version TWO");
  for (const char* f : {"plain", "warmed"}) EXPECT_EQ(readFile(mnt_ + "/" + f), "version TWO") << f;
  EXPECT_EQ(fuseCount("opens_reused"), reused);  // both moved past their idle backings
  EXPECT_EQ(statOf(mnt_ + "/warmed")["state"], "remote");  // the stale copy went
  EXPECT_EQ(deletedCacheFds(), 0);
  writeFile(remote_ + "/plain", "version three, longer");
  EXPECT_EQ(readFile(mnt_ + "/plain"), "version three, longer");
}

TEST_F(IntegrationOpens, AWriterAfterReadersClosedGetsAWritableBacking) {
  writeFile(remote_ + "/f", "0123456789");
  ASSERT_EQ(::chmod((remote_ + "/f").c_str(), 0644), 0);
  startDaemon("ttl=60");
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "0123456789");  // idle now: the read-only copy
  EXPECT_EQ(idleBackings(1), 1u);
  uint64_t conflicts = fuseCount("cache_conflicts");
  {
    UniqueFd fd(::open((mnt_ + "/f").c_str(), O_RDWR));
    ASSERT_TRUE(fd) << strerror(errno);
    ASSERT_EQ(::pwrite(fd.get(), "ab", 2, 0), 2) << strerror(errno);
  }
  EXPECT_EQ(readFile(remote_ + "/f"), "ab23456789");
  EXPECT_EQ(readFile(mnt_ + "/f"), "ab23456789");
  EXPECT_EQ(fuseCount("cache_conflicts"), conflicts);  // no retired inode: nothing was open
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");
  EXPECT_EQ(deletedCacheFds(), 0);
}

// docs/cache.md "One file, one truth" with idle backings: a writer joining a
// reader that reused the idle copy adopts it (one inode: the reader sees the
// write); at the last close the dirty copy is written back and goes, never kept
// idle for the next open.
TEST_F(IntegrationOpens, AWriterJoiningAReaderOfTheReusedCopyAdoptsItAndItIsNotKeptIdle) {
  writeFile(remote_ + "/f", "old-old-old");
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "old-old-old");
  EXPECT_EQ(idleBackings(1), 1u);
  uint64_t reused = fuseCount("opens_reused"), conflicts = fuseCount("cache_conflicts");

  UniqueFd reader(::open((mnt_ + "/f").c_str(), O_RDONLY));
  ASSERT_TRUE(reader) << strerror(errno);
  EXPECT_EQ(fuseCount("opens_reused"), reused + 1);  // the idle copy
  {
    UniqueFd writer(::open((mnt_ + "/f").c_str(), O_WRONLY));
    ASSERT_TRUE(writer) << strerror(errno);
    ASSERT_EQ(::pwrite(writer.get(), "NEW", 3, 0), 3);
    ASSERT_EQ(::close(writer.release()), 0);  // the write-back's errors are close()'s
  }
  char buf[32];
  ssize_t n = ::pread(reader.get(), buf, sizeof buf, 0);
  EXPECT_EQ(std::string(buf, n > 0 ? n : 0), "NEW-old-old");
  EXPECT_EQ(readFile(remote_ + "/f"), "NEW-old-old");
  EXPECT_EQ(fuseCount("cache_conflicts"), conflicts);  // adopted, not retired
  reader.reset();

  // FUSE_RELEASE comes after close() returns: wait for the copy's fd to go.
  int fds = -1;
  for (int i = 0; i < 100 && (fds = copyFds()) != 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(fds, 0) << "the adopted copy was kept open after the last close";
  EXPECT_EQ(fuseCount("idle_backings"), 0u);
  EXPECT_EQ(storedCopies(), 0);
  EXPECT_FALSE(std::filesystem::exists(cache_ + "/lost+found"));
  EXPECT_EQ(readFile(mnt_ + "/f"), "NEW-old-old");
  EXPECT_EQ(fuseCount("opens_reused"), reused + 1);
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");
}

// truncate(2) with no open file and the copy idle: not adopted nor written
// through (nothing is open to share it); the copy is dropped and closed and
// the remote truncated, as with no backing kept.
TEST_F(IntegrationOpens, ATruncateWithTheCopyIdleDropsItAndTruncatesTheRemote) {
  writeFile(remote_ + "/f", "0123456789");
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "0123456789");
  EXPECT_EQ(idleBackings(1), 1u);
  ASSERT_EQ(storedCopies(), 1);
  uint64_t conflicts = fuseCount("cache_conflicts");

  ASSERT_EQ(::truncate((mnt_ + "/f").c_str(), 4), 0) << strerror(errno);
  EXPECT_EQ(readFile(remote_ + "/f"), "0123");
  EXPECT_EQ(storedCopies(), 0) << "the idle copy was adopted instead of dropped";
  EXPECT_EQ(copyFds(), 0);
  EXPECT_FALSE(std::filesystem::exists(cache_ + "/lost+found"));
  EXPECT_EQ(readFile(mnt_ + "/f"), "0123");
  EXPECT_EQ(std::filesystem::file_size(mnt_ + "/f"), 4u);
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");
  EXPECT_EQ(fuseCount("cache_conflicts"), conflicts);
}

// A lookup of an inode the mount knows already (another name of it: a hard
// link) answers without a new O_PATH fd; with its copy adopted, the size it
// gives is the copy's, as stat of the open file's other name is natively.
TEST_F(IntegrationOpens, ALookupOfAKnownInodeWithAnAdoptedCopyGivesTheCopysSize) {
  const std::string grown = "0123456789ABCDEF";
  std::string native_dir = tmp_ / "native";
  std::filesystem::create_directories(native_dir);
  for (const std::string& dir : {native_dir, remote_}) {
    writeFile(dir + "/f", "old-old-old");
    ASSERT_EQ(::link((dir + "/f").c_str(), (dir + "/g").c_str()), 0) << strerror(errno);
  }
  startDaemon("ttl=60");  // the lookup's attributes are what stat says for a minute
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  for (const std::string& dir : {native_dir, mnt_}) {
    UniqueFd reader(::open((dir + "/f").c_str(), O_RDONLY));  // the copy, through the mount
    ASSERT_TRUE(reader) << dir << ": " << strerror(errno);
    UniqueFd writer(::open((dir + "/f").c_str(), O_WRONLY));  // joins it
    ASSERT_TRUE(writer) << dir << ": " << strerror(errno);
    ASSERT_EQ(::pwrite(writer.get(), grown.data(), grown.size(), 0),
              static_cast<ssize_t>(grown.size()));
    struct stat st {};
    ASSERT_EQ(::stat((dir + "/g").c_str(), &st), 0) << dir << ": " << strerror(errno);
    EXPECT_EQ(st.st_size, static_cast<off_t>(grown.size())) << dir;
  }
  EXPECT_EQ(readFile(remote_ + "/f"), grown);  // written back at the last close
}

}  // namespace
}  // namespace hotshard::testing
