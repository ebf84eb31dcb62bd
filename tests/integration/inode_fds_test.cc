// Inodes the kernel remembers do not cost the daemon a descriptor each
// (fuse/inode_table.h; issue 16 item 1): a walk of 100,000 files with the
// daemon at a 1,024-descriptor limit (soft and hard) sees them all, and an
// inode whose O_PATH fd was closed is reached again by its names: through a
// rename of its directory through the mount, never as another object when the
// remote renamed it behind the mount.
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kFdLimit = 1024;

class IntegrationInodeFds : public MountFixture {
 protected:
  // Immutable mode: the kernel keeps every name and inode it looked up (strict
  // mode's zero entry timeout has fuse_dentry_delete() drop each at once).
  void startDaemon(const std::string& consistency = "strict") {
    startDaemonWith({.mount = mnt_,
                     .consistency = consistency,
                     .extra_args = {"--placement", "manual", "--scrub-rate", "0"},
                     .fd_soft_limit = kFdLimit,
                     .fd_hard_limit = kFdLimit});
  }
  uint64_t fuseCount(const char* key) {
    json st = daemon_->status();
    return st["fuse"].value(key, uint64_t{0});
  }
  // Descriptors the daemon holds now.
  size_t daemonFds() {
    std::string dir = "/proc/" + std::to_string(daemon_->status()["pid"].get<int>()) + "/fd";
    size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) n++;
    return n;
  }
  // `dirs` directories of `per_dir` empty files under remote_/rel, made on the
  // remote itself (not through the mount), by syscalls: fast enough for 100,000.
  void makeTree(const std::string& rel, int dirs, int per_dir) {
    for (int d = 0; d < dirs; d++) {
      std::string dir = remote_ + "/" + rel + "/d" + std::to_string(d);
      fs::create_directories(dir);
      int dfd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      ASSERT_GE(dfd, 0) << dir;
      for (int f = 0; f < per_dir; f++) {
        int fd = ::openat(dfd, ("f" + std::to_string(f)).c_str(),
                          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        ASSERT_GE(fd, 0) << dir << "/f" << f << ": " << std::strerror(errno);
        ::close(fd);
      }
      ::close(dfd);
    }
  }
  // Looks up `n` names the kernel did not know, so that the daemon's fd cache
  // (a quarter of the limit: 256) closes the fds of what came before.
  void lookUpOthers(int n) {
    makeTree("others", 1, n);
    for (int f = 0; f < n; f++) {
      struct stat st;
      ASSERT_EQ(::lstat((mnt_ + "/others/d0/f" + std::to_string(f)).c_str(), &st), 0);
    }
  }
};

struct WalkCount {
  uint64_t files = 0, dirs = 0, failures = 0;
  std::string first_failure;
};
WalkCount* g_walk = nullptr;  // nftw's callback takes no context

int countEntry(const char* path, const struct stat* /*st*/, int type, struct FTW* /*ftw*/) {
  if (type == FTW_F) {
    g_walk->files++;
  } else if (type == FTW_D) {
    g_walk->dirs++;
  } else {
    if (g_walk->failures++ == 0) g_walk->first_failure = std::string(path) + ": " + std::strerror(errno);
  }
  return 0;
}

TEST_F(IntegrationInodeFds, AWalkOf100000FilesAtA1024DescriptorLimitSeesThemAll) {
  auto t0 = std::chrono::steady_clock::now();
  makeTree("tree", 1000, 100);
  auto made = std::chrono::steady_clock::now();
  startDaemon("immutable");
  // nftw: readdir of each directory, lstat of each name (a lookup and a getattr
  // through the mount), at most 16 directory streams open at once.
  WalkCount walk;
  g_walk = &walk;
  ASSERT_EQ(::nftw((mnt_ + "/tree").c_str(), countEntry, 16, FTW_PHYS), 0)
      << std::strerror(errno);
  g_walk = nullptr;
  EXPECT_EQ(walk.failures, 0u) << walk.first_failure;
  EXPECT_EQ(walk.files, 100000u);
  EXPECT_EQ(walk.dirs, 1001u);
  // And a stat of each by its path, while the kernel still holds every inode.
  uint64_t stat_ok = 0;
  std::string first_error;
  for (int d = 0; d < 1000; d++) {
    for (int f = 0; f < 100; f++) {
      std::string p = mnt_ + "/tree/d" + std::to_string(d) + "/f" + std::to_string(f);
      struct stat st;
      if (::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
        stat_ok++;
      } else if (first_error.empty()) {
        first_error = p + ": " + std::strerror(errno);
      }
    }
  }
  EXPECT_EQ(stat_ok, 100000u) << first_error;
  EXPECT_GE(fuseCount("inodes"), 100000u);  // the kernel remembers them all
  size_t fds = daemonFds();
  EXPECT_LT(fds, kFdLimit);
  EXPECT_LE(fuseCount("inode_fds"), kFdLimit / 4 + 1);
  EXPECT_EQ(daemon_->log().find("Too many open files"), std::string::npos) << daemon_->log();
  auto done = std::chrono::steady_clock::now();
  auto ms = [](auto d) { return std::chrono::duration_cast<std::chrono::milliseconds>(d).count(); };
  std::printf("100,000 files: made in %lld ms, walked and stat'ed in %lld ms; daemon fds %zu\n",
              static_cast<long long>(ms(made - t0)), static_cast<long long>(ms(done - made)), fds);
}

// A directory renamed through the mount: the files under it, whose fds the
// cache closed meanwhile, are reached by their names under the new one.
TEST_F(IntegrationInodeFds, FilesUnderADirectoryRenamedThroughTheMountWorkAfterTheirFdsWereClosed) {
  for (int i = 0; i < 10; i++) {
    testing::writeFile(remote_ + "/d/f" + std::to_string(i), "content " + std::to_string(i));
  }
  testing::writeFile(remote_ + "/d/open", "open and unlinked");
  startDaemon();
  std::vector<int> held;  // O_PATH: the kernel keeps the inodes; no FUSE open
  for (int i = 0; i < 10; i++) {
    int fd = ::open((mnt_ + "/d/f" + std::to_string(i)).c_str(), O_PATH | O_CLOEXEC);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    held.push_back(fd);
  }
  int open_fd = ::open((mnt_ + "/d/open").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(open_fd, 0) << std::strerror(errno);
  ASSERT_EQ(::rename((mnt_ + "/d").c_str(), (mnt_ + "/e").c_str()), 0) << std::strerror(errno);
  ASSERT_EQ(::unlink((mnt_ + "/e/open").c_str()), 0) << std::strerror(errno);
  uint64_t walks_before = fuseCount("path_walks");
  lookUpOthers(600);
  for (int i = 0; i < 10; i++) {
    struct stat st;
    ASSERT_EQ(::fstat(held[i], &st), 0) << "f" << i << ": " << std::strerror(errno);
    EXPECT_EQ(st.st_size, static_cast<off_t>(std::string("content 0").size()));
    // A fresh open of the held inode (FUSE_OPEN on it): its own bytes.
    std::string content = testing::readFile("/proc/self/fd/" + std::to_string(held[i]));
    EXPECT_EQ(content, "content " + std::to_string(i));
    ::close(held[i]);
  }
  EXPECT_GT(fuseCount("path_walks"), walks_before);  // the fds were closed, and found again
  // Unlinked while open: its fd stays (no name leads to it any more).
  struct stat st;
  ASSERT_EQ(::fstat(open_fd, &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_nlink, 0u);
  char buf[64] = {};
  EXPECT_EQ(::pread(open_fd, buf, sizeof(buf), 0), 17);
  EXPECT_EQ(std::string(buf), "open and unlinked");
  ::close(open_fd);
  EXPECT_EQ(testing::readFile(mnt_ + "/e/f3"), "content 3");
}

// A file renamed on the remote behind the mount, and another file given its
// name: the kernel's old inode is never served as the other file. Its
// attributes and a fresh open answer ESTALE (or ENOENT), or the old file's own.
TEST_F(IntegrationInodeFds, AnInodeRenamedOnTheRemoteIsNeverAnotherFile) {
  testing::writeFile(remote_ + "/a", "AAAA");
  testing::writeFile(remote_ + "/b", "BBBBBBBB");
  startDaemon();
  int held = ::open((mnt_ + "/a").c_str(), O_PATH | O_CLOEXEC);
  ASSERT_GE(held, 0) << std::strerror(errno);
  struct stat before;
  ASSERT_EQ(::fstat(held, &before), 0);
  lookUpOthers(600);  // a's fd is closed
  fs::rename(remote_ + "/a", remote_ + "/a.moved");
  fs::rename(remote_ + "/b", remote_ + "/a");
  struct stat st;
  int res = ::fstat(held, &st);
  if (res == 0) {
    EXPECT_EQ(st.st_ino, before.st_ino);
    EXPECT_EQ(st.st_size, 4);
  } else {
    EXPECT_TRUE(errno == ESTALE || errno == ENOENT) << std::strerror(errno);
  }
  int fd = ::open(("/proc/self/fd/" + std::to_string(held)).c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[16] = {};
    EXPECT_EQ(::read(fd, buf, sizeof(buf)), 4);
    EXPECT_EQ(std::string(buf), "AAAA");
    ::close(fd);
  } else {
    EXPECT_TRUE(errno == ESTALE || errno == ENOENT) << std::strerror(errno);
  }
  ::close(held);
  // The name itself now leads to the other file, through a fresh lookup.
  EXPECT_EQ(testing::readFile(mnt_ + "/a"), "BBBBBBBB");
  EXPECT_EQ(testing::readFile(mnt_ + "/a.moved"), "AAAA");
}

}  // namespace
}  // namespace hotshard::testing
