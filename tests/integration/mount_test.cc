// The mount, for real: the hotshard binary mounts a remote directory (a local
// directory standing in for NFS) and every check goes through the kernel.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <map>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kOtherUid = 54321;
constexpr gid_t kOtherGid = 54321;

class IntegrationMount : public MountFixture {
 protected:
  // Starts a daemon on mnt_ (or over the remote when overmount).
  void startDaemon(const std::string& consistency = "strict", bool passthrough = true,
                   bool overmount = false) {
    startDaemonWith({.mount = overmount ? "" : mnt_,
                     .consistency = consistency,
                     .passthrough = passthrough});
  }

  uint64_t daemonReads() { return daemon_->status()["fuse"]["requests"]["read"].get<uint64_t>(); }
};

TEST_F(IntegrationMount, ContentIsByteIdentical) {
  const std::map<std::string, uint64_t> sizes = {{"zero", 0},
                                                 {"one", 1},
                                                 {"page", 4096},
                                                 {"mib-plus-one", (1 << 20) + 1},
                                                 {"big", 256ull << 20}};
  uint64_t seed = 1;
  for (const auto& [name, size] : sizes) writeRandomFile(remote_ + "/" + name, size, seed++);
  startDaemon();
  for (const auto& [name, size] : sizes) {
    SCOPED_TRACE(name);
    EXPECT_EQ(fs::file_size(mnt_ + "/" + name), size);
    EXPECT_EQ(sha256File(mnt_ + "/" + name), sha256File(remote_ + "/" + name));
  }
  json st = daemon_->status();
  EXPECT_TRUE(st["passthrough"].get<bool>()) << st.dump();
}

struct EntryInfo {
  fs::file_type type;
  uint64_t size;
  mode_t mode;
  bool operator==(const EntryInfo&) const = default;
};

std::map<std::string, EntryInfo> listTree(const std::string& root) {
  std::map<std::string, EntryInfo> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
       ++it) {
    struct stat st;
    ::lstat(it->path().c_str(), &st);
    std::string rel = fs::relative(it->path(), root).string();
    out[rel] = EntryInfo{it->symlink_status().type(),
                         S_ISREG(st.st_mode) || S_ISLNK(st.st_mode) ? uint64_t(st.st_size) : 0,
                         st.st_mode};
  }
  return out;
}

TEST_F(IntegrationMount, DirectoryListingsMatchTheRemote) {
  fs::create_directories(remote_ + "/a/b/c");
  writeRandomFile(remote_ + "/a/one", 123, 1);
  writeRandomFile(remote_ + "/a/b/two", 4567, 2);
  ::chmod((remote_ + "/a/b/two").c_str(), 0640);
  ::symlink("../one", (remote_ + "/a/b/link").c_str());
  ::mkfifo((remote_ + "/a/fifo").c_str(), 0600);
  for (int i = 0; i < 300; i++) writeFile(remote_ + "/a/b/c/f" + std::to_string(i), "x");
  startDaemon();
  auto expected = listTree(remote_);
  auto got = listTree(mnt_);
  EXPECT_EQ(got.size(), expected.size());
  EXPECT_TRUE(got == expected);
  EXPECT_EQ(fs::read_symlink(mnt_ + "/a/b/link"), "../one");
  EXPECT_EQ(readFile(mnt_ + "/a/b/link"), readFile(remote_ + "/a/one"));
}

TEST_F(IntegrationMount, WritesThroughTheMountReachTheRemote) {
  writeFile(remote_ + "/existing", "0123456789");
  writeFile(remote_ + "/doomed", "bye");
  fs::create_directories(remote_ + "/olddir");
  startDaemon();

  writeFile(mnt_ + "/new", "fresh data");
  EXPECT_EQ(readFile(remote_ + "/new"), "fresh data");

  {  // in-place write at an offset, then append
    int fd = ::open((mnt_ + "/existing").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::pwrite(fd, "AB", 2, 3), 2);
    ::close(fd);
    fd = ::open((mnt_ + "/existing").c_str(), O_WRONLY | O_APPEND);
    ASSERT_EQ(::write(fd, "Z", 1), 1);
    ::close(fd);
  }
  EXPECT_EQ(readFile(remote_ + "/existing"), "012AB56789Z");

  ASSERT_EQ(::truncate((mnt_ + "/existing").c_str(), 4), 0);
  EXPECT_EQ(fs::file_size(remote_ + "/existing"), 4u);
  int fd = ::open((mnt_ + "/existing").c_str(), O_WRONLY | O_TRUNC);
  ASSERT_GE(fd, 0);
  ::close(fd);
  EXPECT_EQ(fs::file_size(remote_ + "/existing"), 0u);

  ASSERT_EQ(::rename((mnt_ + "/new").c_str(), (mnt_ + "/renamed").c_str()), 0);
  EXPECT_FALSE(fs::exists(remote_ + "/new"));
  EXPECT_EQ(readFile(remote_ + "/renamed"), "fresh data");
  ASSERT_EQ(::rename((mnt_ + "/olddir").c_str(), (mnt_ + "/newdir").c_str()), 0);
  EXPECT_TRUE(fs::is_directory(remote_ + "/newdir"));

  ASSERT_EQ(::unlink((mnt_ + "/doomed").c_str()), 0);
  EXPECT_FALSE(fs::exists(remote_ + "/doomed"));

  ASSERT_EQ(::mkdir((mnt_ + "/d").c_str(), 0750), 0);
  EXPECT_EQ(fs::status(remote_ + "/d").permissions(), fs::perms(0750));
  ASSERT_EQ(::rmdir((mnt_ + "/d").c_str()), 0);
  EXPECT_FALSE(fs::exists(remote_ + "/d"));

  ASSERT_EQ(::symlink("renamed", (mnt_ + "/sym").c_str()), 0);
  EXPECT_EQ(fs::read_symlink(remote_ + "/sym"), "renamed");
  ASSERT_EQ(::link((mnt_ + "/renamed").c_str(), (mnt_ + "/hard").c_str()), 0);
  EXPECT_EQ(fs::hard_link_count(remote_ + "/renamed"), 2u);

  ASSERT_EQ(::chmod((mnt_ + "/renamed").c_str(), 0604), 0);
  EXPECT_EQ(fs::status(remote_ + "/renamed").permissions(), fs::perms(0604));
  ASSERT_EQ(::chown((mnt_ + "/renamed").c_str(), kOtherUid, kOtherGid), 0);
  struct stat st;
  ::stat((remote_ + "/renamed").c_str(), &st);
  EXPECT_EQ(st.st_uid, kOtherUid);
  struct timespec times[2] = {{.tv_sec = 1000000, .tv_nsec = 0}, {.tv_sec = 2000000, .tv_nsec = 5}};
  ASSERT_EQ(::utimensat(AT_FDCWD, (mnt_ + "/renamed").c_str(), times, 0), 0);
  ::stat((remote_ + "/renamed").c_str(), &st);
  EXPECT_EQ(st.st_mtim.tv_sec, 2000000);
  EXPECT_EQ(st.st_mtim.tv_nsec, 5);

  ASSERT_EQ(::setxattr((mnt_ + "/renamed").c_str(), "user.k", "v", 1, 0), 0);
  char v[8] = {};
  EXPECT_EQ(::getxattr((remote_ + "/renamed").c_str(), "user.k", v, sizeof(v)), 1);
  EXPECT_EQ(::getxattr((mnt_ + "/renamed").c_str(), "user.k", v, sizeof(v)), 1);

  // Errors from the remote come back unchanged.
  errno = 0;
  EXPECT_EQ(::rmdir((mnt_ + "/newdir/missing").c_str()), -1);
  EXPECT_EQ(errno, ENOENT);
  writeFile(remote_ + "/newdir/x", "x");
  EXPECT_EQ(::rmdir((mnt_ + "/newdir").c_str()), -1);
  EXPECT_EQ(errno, ENOTEMPTY);
  EXPECT_EQ(::mkdir((mnt_ + "/renamed").c_str(), 0755), -1);
  EXPECT_EQ(errno, EEXIST);
}

TEST_F(IntegrationMount, StrictModeSeesRemoteChangesAtOnce) {
  writeFile(remote_ + "/f", "version one");
  startDaemon("strict");
  EXPECT_EQ(readFile(mnt_ + "/f"), "version one");

  writeFile(remote_ + "/f", "version two, longer");  // in place
  EXPECT_EQ(readFile(mnt_ + "/f"), "version two, longer");
  EXPECT_EQ(fs::file_size(mnt_ + "/f"), 19u);

  writeFile(remote_ + "/g", "replacement");  // replaced by rename: a new inode
  fs::rename(remote_ + "/g", remote_ + "/f");
  EXPECT_EQ(readFile(mnt_ + "/f"), "replacement");

  writeFile(remote_ + "/appeared", "hi");
  EXPECT_EQ(readFile(mnt_ + "/appeared"), "hi");
  fs::remove(remote_ + "/appeared");
  // The open checks the path (close-to-open); a stat alone may show the name for
  // up to the attribute timeout (strict's ac, docs/user-guide.md), not after it.
  EXPECT_EQ(::open((mnt_ + "/appeared").c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_FALSE(fs::exists(mnt_ + "/appeared"));
}

TEST_F(IntegrationMount, OtherUsersGetTheRemotesPermissions) {
  writeFile(remote_ + "/private", "secret");
  ::chmod((remote_ + "/private").c_str(), 0600);
  writeFile(remote_ + "/public", "hello");
  ::chmod((remote_ + "/public").c_str(), 0644);
  startDaemon();
  std::string priv = mnt_ + "/private", pub = mnt_ + "/public";
  EXPECT_EQ(runAs(kOtherUid, kOtherGid, [&] {
              int fd = ::open(priv.c_str(), O_RDONLY);
              return fd < 0 ? errno : 0;
            }),
            EACCES);
  EXPECT_EQ(runAs(kOtherUid, kOtherGid, [&] {
              int fd = ::open(pub.c_str(), O_RDONLY);
              if (fd < 0) return errno;
              char buf[5];
              return ::read(fd, buf, 5) == 5 ? 0 : EIO;
            }),
            0);
  EXPECT_EQ(runAs(kOtherUid, kOtherGid, [&] {
              int fd = ::open(pub.c_str(), O_WRONLY);
              return fd < 0 ? errno : 0;
            }),
            EACCES);
}

TEST_F(IntegrationMount, FilesCreatedByAUserBelongToThatUser) {
  fs::create_directories(remote_ + "/shared");
  ::chmod((remote_ + "/shared").c_str(), 0777);
  startDaemon();
  std::string dir = mnt_ + "/shared";
  ASSERT_EQ(runAs(kOtherUid, kOtherGid, [&] {
              int fd = ::open((dir + "/mine").c_str(), O_CREAT | O_WRONLY | O_EXCL, 0640);
              if (fd < 0) return errno;
              if (::write(fd, "data", 4) != 4) return EIO;
              ::close(fd);
              if (::mkdir((dir + "/subdir").c_str(), 0700) < 0) return errno;
              if (::symlink("mine", (dir + "/link").c_str()) < 0) return errno;
              return 0;
            }),
            0);
  for (const char* name : {"mine", "subdir", "link"}) {
    struct stat st;
    ASSERT_EQ(::lstat((remote_ + "/shared/" + name).c_str(), &st), 0) << name;
    EXPECT_EQ(st.st_uid, kOtherUid) << name;
    EXPECT_EQ(st.st_gid, kOtherGid) << name;
  }
  EXPECT_EQ(readFile(remote_ + "/shared/mine"), "data");
  struct stat st;
  ::stat((remote_ + "/shared/mine").c_str(), &st);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  // Not in a directory the user may not write.
  EXPECT_EQ(runAs(kOtherUid, kOtherGid, [&] {
              int fd = ::open((mnt_ + "/nope").c_str(), O_CREAT | O_WRONLY, 0644);
              return fd < 0 ? errno : 0;
            }),
            EACCES);
}

TEST_F(IntegrationMount, OvermountServesTheRemotePathAndLeavesItIntactOnStop) {
  writeRandomFile(remote_ + "/shard-0001.tar", 3 << 20, 7);
  fs::create_directories(remote_ + "/sub");
  writeFile(remote_ + "/sub/meta.json", "{}");
  std::string before = sha256File(remote_ + "/shard-0001.tar");
  auto tree_before = listTree(remote_);

  startDaemon("strict", true, /*overmount=*/true);
  EXPECT_TRUE(isHotshardMount(remote_));
  EXPECT_EQ(sha256File(remote_ + "/shard-0001.tar"), before);
  json st = daemon_->status();
  EXPECT_TRUE(st["overmount"].get<bool>());
  EXPECT_GE(st["fuse"]["opens_passthrough"].get<uint64_t>(), 1u) << st.dump();
  // Writes through the overmount land in the real directory underneath.
  writeFile(remote_ + "/written-through", "ok");

  // A second daemon on the same path is refused with a clear message.
  CommandResult second = runCommand({hotshardBinary(), "run", "--foreground", "--remote", remote_,
                                     "--cache", cache_ + "2", "--control-socket",
                                     tmp_ / "other.sock"});
  EXPECT_NE(second.exit_code, 0);
  EXPECT_NE(second.out.find("already covered by a hotshard mount"), std::string::npos)
      << second.out;

  EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
  EXPECT_FALSE(isHotshardMount(remote_));
  auto tree_after = listTree(remote_);
  tree_after.erase("written-through");
  EXPECT_TRUE(tree_after == tree_before);
  EXPECT_EQ(sha256File(remote_ + "/shard-0001.tar"), before);
  EXPECT_EQ(readFile(remote_ + "/written-through"), "ok");
  EXPECT_FALSE(fs::exists(tmp_ / "control.sock"));
}

// Someone detaches the overmount (umount -l) while a file stays open, so the
// daemon keeps serving; on SIGTERM it must not unmount what is at the path now:
// the remote's own mount (here a tmpfs standing in for NFS).
TEST_F(IntegrationMount, StopAfterAnExternalLazyUnmountLeavesTheRemotesMountAlone) {
  ASSERT_EQ(::mount("tmpfs", remote_.c_str(), "tmpfs", 0, "size=16m"), 0) << strerror(errno);
  writeFile(remote_ + "/held.txt", "held");
  dev_t remote_dev = mountDevice(remote_);
  ASSERT_NE(remote_dev, 0u);
  startDaemon("strict", true, /*overmount=*/true);
  ASSERT_TRUE(isHotshardMount(remote_));
  int held = ::open((remote_ + "/held.txt").c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(held, 0) << strerror(errno);
  ASSERT_EQ(::umount2(remote_.c_str(), MNT_DETACH), 0) << strerror(errno);
  ASSERT_FALSE(isHotshardMount(remote_));
  ASSERT_EQ(mountDevice(remote_), remote_dev);

  daemon_->stop();
  ::close(held);
  EXPECT_EQ(mountDevice(remote_), remote_dev) << "the remote's mount was unmounted\n"
                                              << daemon_->log();
  EXPECT_EQ(readFile(remote_ + "/held.txt"), "held");
  ::umount2(remote_.c_str(), MNT_DETACH);
}

TEST_F(IntegrationMount, PassthroughSendsNoReadRequestsToUserSpace) {
  writeRandomFile(remote_ + "/big", 256ull << 20, 42);
  startDaemon();
  ASSERT_TRUE(daemon_->status()["passthrough"].get<bool>()) << daemon_->status().dump();
  TraceCounter reads("fuse/fuse_request_send", fuseReadFilter(mountDevice(mnt_)));
  ASSERT_TRUE(reads.ok());
  uint64_t daemon_before = daemonReads();

  int fd = ::open((mnt_ + "/big").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<char> buf(1 << 20);
  uint64_t total = 0;
  ssize_t n;
  while ((n = ::read(fd, buf.data(), buf.size())) > 0) total += n;
  ::close(fd);
  ASSERT_EQ(total, 256ull << 20);

  EXPECT_EQ(reads.stopAndCount(), 0u);
  EXPECT_EQ(daemonReads() - daemon_before, 0u);
}

// The counterpart that keeps the test above honest: with passthrough off, the
// tracepoint and the daemon's own counter see the same, non-zero, number of reads.
TEST_F(IntegrationMount, UserspaceReadPathIsCountedByBothWitnesses) {
  writeRandomFile(remote_ + "/mid", 16ull << 20, 43);
  startDaemon("strict", /*passthrough=*/false);
  json st = daemon_->status();
  ASSERT_FALSE(st["passthrough"].get<bool>());
  EXPECT_NE(st["passthrough_reason"].get<std::string>().find("configuration"), std::string::npos);
  TraceCounter reads("fuse/fuse_request_send", fuseReadFilter(mountDevice(mnt_)));
  ASSERT_TRUE(reads.ok());
  uint64_t daemon_before = daemonReads();
  EXPECT_EQ(sha256File(mnt_ + "/mid"), sha256File(remote_ + "/mid"));
  uint64_t traced = reads.stopAndCount();
  EXPECT_GT(traced, 0u);
  EXPECT_EQ(daemonReads() - daemon_before, traced);
  // And the user-space path writes correctly too.
  writeFile(mnt_ + "/w", "through user space");
  EXPECT_EQ(readFile(remote_ + "/w"), "through user space");
}

TEST_F(IntegrationMount, TtlAndImmutableModesServeReadsAndWrites) {
  writeFile(remote_ + "/f", "content");
  for (const char* mode : {"ttl=30", "immutable"}) {
    SCOPED_TRACE(mode);
    startDaemon(mode);
    EXPECT_EQ(readFile(mnt_ + "/f"), "content");
    writeFile(mnt_ + "/g", mode);
    EXPECT_EQ(readFile(remote_ + "/g"), mode);
    EXPECT_EQ(daemon_->status()["consistency"].get<std::string>(), mode);
    EXPECT_EQ(daemon_->stop(), 0);
  }
}

TEST_F(IntegrationMount, StatusCommandPrintsJson) {
  startDaemon();
  CommandResult r = runCommand({hotshardBinary(), "status", "--json", "--socket", daemon_->socket()});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json st = json::parse(r.out);
  EXPECT_EQ(st["mount"], mnt_);
  EXPECT_EQ(st["remote"], remote_);
  EXPECT_TRUE(st["passthrough"].is_boolean());
  EXPECT_EQ(st["consistency"], "strict");
  r = runCommand({hotshardBinary(), "status", "--socket", daemon_->socket()});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("passthrough  yes"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hotshard::testing
