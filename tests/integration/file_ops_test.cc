// fallocate, SEEK_DATA/SEEK_HOLE and the file attribute ioctls through the real
// mount: each call is made twice, on a twin file in the remote directory itself
// and through the mount, and must answer the same (return value, errno, and the
// file's size, blocks, content and flags afterwards).
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationMountFileOps : public MountFixture {
 protected:
  void startDaemon() {
    startDaemonWith({.mount = mnt_, .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
};

// The outcome of one call: its result, or -errno.
long outcome(long res) { return res < 0 ? -errno : res; }

struct FileFacts {
  off_t size;
  blkcnt_t blocks;
  std::string sha;
  bool operator==(const FileFacts&) const = default;
};

FileFacts factsOf(const std::string& path) {
  struct stat st {};
  ::stat(path.c_str(), &st);
  return {st.st_size, st.st_blocks, sha256File(path)};
}

long fallocateAt(const std::string& path, int mode, off_t off, off_t len) {
  int fd = ::open(path.c_str(), O_RDWR);
  if (fd < 0) return -errno;
  long res = outcome(::fallocate(fd, mode, off, len));
  ::close(fd);
  return res;
}

TEST_F(IntegrationMountFileOps, FallocateAnswersAsTheRemoteDoes) {
  // The kernel sends FUSE_FALLOCATE only for these modes; COLLAPSE_RANGE and
  // INSERT_RANGE it refuses itself with EOPNOTSUPP (fs/fuse/file.c,
  // fuse_file_fallocate: "if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE |
  // FALLOC_FL_ZERO_RANGE)) return -EOPNOTSUPP;"), before the daemon sees them.
  const std::vector<std::pair<const char*, int>> forwarded = {
      {"default", 0},
      {"keep-size", FALLOC_FL_KEEP_SIZE},
      {"punch-hole", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE},
      {"zero-range", FALLOC_FL_ZERO_RANGE},
      {"punch-without-keep-size", FALLOC_FL_PUNCH_HOLE},  // the remote's EOPNOTSUPP
  };
  const std::vector<std::pair<const char*, int>> kernel_refused = {
      {"collapse-range", FALLOC_FL_COLLAPSE_RANGE}, {"insert-range", FALLOC_FL_INSERT_RANGE}};
  int i = 0;
  for (size_t n = 0; n < forwarded.size() + kernel_refused.size(); n++, i++) {
    writeRandomFile(remote_ + "/native-" + std::to_string(i), 1 << 20, 7);
    writeRandomFile(remote_ + "/mount-" + std::to_string(i), 1 << 20, 7);
  }
  startDaemon();
  i = 0;
  for (const auto& [name, mode] : forwarded) {
    SCOPED_TRACE(name);
    std::string native = remote_ + "/native-" + std::to_string(i);
    std::string through = remote_ + "/mount-" + std::to_string(i);
    std::string via_mount = mnt_ + "/mount-" + std::to_string(i);
    i++;
    // Past the end too, so the default mode grows the file.
    for (auto [off, len] : {std::pair<off_t, off_t>{65536, 131072}, {(1 << 20) - 4096, 1 << 20}}) {
      EXPECT_EQ(fallocateAt(via_mount, mode, off, len), fallocateAt(native, mode, off, len));
    }
    EXPECT_EQ(factsOf(through), factsOf(native));
    EXPECT_EQ(fs::file_size(via_mount), fs::file_size(native));
  }
  for (const auto& [name, mode] : kernel_refused) {
    SCOPED_TRACE(name);
    std::string native = remote_ + "/native-" + std::to_string(i);
    std::string via_mount = mnt_ + "/mount-" + std::to_string(i);
    i++;
    EXPECT_EQ(fallocateAt(native, mode, 65536, 65536), 0);
    EXPECT_EQ(fallocateAt(via_mount, mode, 65536, 65536), -EOPNOTSUPP);
  }

  // `fallocate -l 1M f` on a new file.
  int fd = ::open((mnt_ + "/new").c_str(), O_CREAT | O_RDWR, 0644);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::fallocate(fd, 0, 0, 1 << 20), 0) << strerror(errno);
  ::close(fd);
  EXPECT_EQ(fs::file_size(remote_ + "/new"), 1u << 20);
  EXPECT_EQ(fs::file_size(mnt_ + "/new"), 1u << 20);
}

TEST_F(IntegrationMountFileOps, FallocateDropsTheCachedCopy) {
  writeRandomFile(remote_ + "/f", 1 << 20, 3);
  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  ASSERT_EQ(statOf(mnt_ + "/f")["state"], "cached");
  ASSERT_EQ(fallocateAt(mnt_ + "/f", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 65536), 0);
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");
  EXPECT_EQ(sha256File(mnt_ + "/f"), sha256File(remote_ + "/f"));
  EXPECT_EQ(readFile(mnt_ + "/f").substr(0, 65536), std::string(65536, '\0'));
}

// lseek on a fresh descriptor: its result, or -errno.
long seekAt(const std::string& path, off_t off, int whence) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return -errno;
  long res = outcome(::lseek(fd, off, whence));
  ::close(fd);
  return res;
}

TEST_F(IntegrationMountFileOps, SeekDataAndSeekHoleMatchTheRemote) {
  constexpr off_t kHole = 1 << 20;
  {
    int fd = ::open((remote_ + "/sparse").c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "hello", 5, kHole), 5);
    ::close(fd);
  }
  writeRandomFile(remote_ + "/dense", 8192, 1);
  startDaemon();
  for (const char* name : {"sparse", "dense"}) {
    for (int whence : {SEEK_DATA, SEEK_HOLE}) {
      for (off_t off : {off_t{0}, off_t{4096}, kHole, kHole + 4, kHole + 5, kHole + 100}) {
        SCOPED_TRACE(std::string(name) + (whence == SEEK_DATA ? " SEEK_DATA " : " SEEK_HOLE ") +
                     std::to_string(off));
        EXPECT_EQ(seekAt(mnt_ + "/" + name, off, whence),
                  seekAt(remote_ + "/" + name, off, whence));
      }
    }
  }
  EXPECT_EQ(seekAt(mnt_ + "/sparse", 0, SEEK_DATA), seekAt(remote_ + "/sparse", 0, SEEK_DATA));
  EXPECT_GT(seekAt(remote_ + "/sparse", 0, SEEK_DATA), 0);  // the remote does keep the hole
}

// FS_IOC_GETFLAGS (FS_IOC_SETFLAGS with set >= 0 first) on path: the flags, or -errno.
long fileFlags(const std::string& path, long set = -1) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK);
  if (fd < 0) return -errno;
  int flags = static_cast<int>(set);
  long res = set >= 0 ? outcome(::ioctl(fd, FS_IOC_SETFLAGS, &flags)) : 0;
  if (res == 0) res = ::ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0 ? -errno : flags;
  ::close(fd);
  return res;
}

TEST_F(IntegrationMountFileOps, FileAttributeIoctlsAnswerAsTheRemoteDoes) {
  writeFile(remote_ + "/native", "x");
  writeFile(remote_ + "/through", "x");
  fs::create_directories(remote_ + "/dir");
  startDaemon();
  // lsattr, on a file and a directory.
  EXPECT_EQ(fileFlags(mnt_ + "/through"), fileFlags(remote_ + "/native"));
  EXPECT_EQ(fileFlags(mnt_ + "/dir"), fileFlags(remote_ + "/dir"));
  ASSERT_GE(fileFlags(remote_ + "/native"), 0) << "the remote file system has no flags";

  // chattr: flags the remote takes, and ones it refuses, answer alike.
  long base = fileFlags(remote_ + "/native");
  for (long add : {long{FS_NOATIME_FL}, long{FS_NODUMP_FL}, long{FS_APPEND_FL},
                   long{FS_COMPR_FL}, long{FS_NOCOW_FL}, long{FS_CASEFOLD_FL}, 0L}) {
    SCOPED_TRACE(add);
    EXPECT_EQ(fileFlags(mnt_ + "/through", base | add), fileFlags(remote_ + "/native", base | add));
    EXPECT_EQ(fileFlags(remote_ + "/through"), fileFlags(remote_ + "/native"));
  }
  // Immutable set through the mount holds on the remote; cleared again.
  ASSERT_EQ(fileFlags(mnt_ + "/through", base | FS_IMMUTABLE_FL), base | FS_IMMUTABLE_FL);
  int fd = ::open((mnt_ + "/through").c_str(), O_WRONLY);
  EXPECT_EQ(fd, -1);
  EXPECT_EQ(errno, EPERM);
  if (fd >= 0) ::close(fd);
  EXPECT_EQ(fileFlags(mnt_ + "/through", base), base);
  writeFile(mnt_ + "/through", "y");
  EXPECT_EQ(readFile(remote_ + "/through"), "y");

  struct fsxattr native {}, through {};
  int nfd = ::open((remote_ + "/native").c_str(), O_RDONLY);
  int tfd = ::open((mnt_ + "/through").c_str(), O_RDONLY);
  EXPECT_EQ(outcome(::ioctl(tfd, FS_IOC_FSGETXATTR, &through)),
            outcome(::ioctl(nfd, FS_IOC_FSGETXATTR, &native)));
  EXPECT_EQ(through.fsx_xflags, native.fsx_xflags);
  ::close(nfd);
  ::close(tfd);
}

}  // namespace
}  // namespace hotshard::testing
