// Strict mode through the real mount: NFS's close-to-open (fuse/consistency.h).
// Names and attributes are kept between opens for the attribute-cache timeouts
// (ac, acdir), so a stat storm costs the remote nothing after its first pass,
// while every open checks its path and the file's attributes with the remote:
// what an open reads is the remote's file as it is now, whatever the kernel kept.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"
#include "fuse/consistency.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationStrict : public MountFixture {
 protected:
  void startDaemon(const std::string& consistency = "strict") {
    startDaemonWith({.mount = mnt_,
                     .consistency = consistency,
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
  // Every FUSE request the daemon has read, by opcode name.
  std::map<std::string, uint64_t> requests() {
    json status = daemon_->status();
    std::map<std::string, uint64_t> out;
    for (const auto& [op, n] : status["fuse"]["requests"].items()) out[op] = n.get<uint64_t>();
    return out;
  }
  static uint64_t total(const std::map<std::string, uint64_t>& r) {
    uint64_t n = 0;
    for (const auto& [op, count] : r) n += count;
    return n;
  }
  // A tree of kFiles files at 5-component paths, a/b/c/dI/fJ.
  static constexpr int kLeafDirs = 4, kFilesPerDir = 50, kFiles = kLeafDirs * kFilesPerDir;
  static constexpr int kDepth = 5;
  void makeDeepTree() {
    for (int i = 0; i < kLeafDirs; i++) {
      std::string dir = remote_ + "/a/b/c/d" + std::to_string(i);
      fs::create_directories(dir);
      for (int j = 0; j < kFilesPerDir; j++) writeFile(dir + "/f" + std::to_string(j), "x");
    }
  }
  // stat() of every file of the tree through the mount; the requests it cost.
  std::map<std::string, uint64_t> statPass() {
    auto before = requests();
    for (int i = 0; i < kLeafDirs; i++) {
      for (int j = 0; j < kFilesPerDir; j++) {
        std::string path = mnt_ + "/a/b/c/d" + std::to_string(i) + "/f" + std::to_string(j);
        struct stat st;
        EXPECT_EQ(::stat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
      }
    }
    auto after = requests();
    std::map<std::string, uint64_t> delta;
    for (const auto& [op, n] : after) {
      if (n > before[op]) delta[op] = n - before[op];
    }
    return delta;
  }
  static std::string show(const std::map<std::string, uint64_t>& r) {
    std::string s;
    for (const auto& [op, n] : r) s += op + " " + std::to_string(n) + ", ";
    return s;
  }
  static std::set<std::string> listing(const std::string& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename());
    return names;
  }
  static int openErrno(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    return fd ? 0 : errno;
  }
};

// The second pass of a stat storm over 5-component paths is answered by the
// kernel's caches: at most one FUSE request per stat (strict kept nothing
// before: 5 lookups and 6 getattrs per stat, every pass).
TEST_F(IntegrationStrict, ADeepStatStormCostsAtMostOneRequestPerStatAfterTheFirstPass) {
  makeDeepTree();
  startDaemon("strict");
  auto first = statPass();
  EXPECT_GE(first["lookup"], uint64_t{kFiles}) << show(first);  // the pass did reach the daemon
  auto second = statPass();
  EXPECT_LE(total(second), uint64_t{kFiles}) << "second pass: " << show(second);
  std::printf("strict: first pass %s; second pass %s (%d stats)\n", show(first).c_str(),
              show(second).c_str(), kFiles);
}

// strict;ac=0 keeps nothing, as strict did before: every component of every
// path is looked up again, every pass, and each stat asks for the attributes of
// the mount's root and of every component (5 lookups and 6 getattrs a stat).
TEST_F(IntegrationStrict, AcZeroLooksUpEveryComponentOfEveryStat) {
  makeDeepTree();
  startDaemon("strict;ac=0");
  (void)statPass();
  auto second = statPass();
  EXPECT_EQ(second["lookup"], uint64_t{kDepth * kFiles}) << show(second);
  EXPECT_EQ(second["getattr"], uint64_t{(kDepth + 1) * kFiles}) << show(second);
  std::printf("strict;ac=0: second pass %s (%d stats)\n", show(second).c_str(), kFiles);
}

// A file changed on the remote, within the attribute timeout of a stat that
// showed the old one: the next open reads the new contents, and stat and fstat
// after it show the new size.
TEST_F(IntegrationStrict, AnOpenSeesARemoteChangeWithinTheAttributeTimeout) {
  writeFile(remote_ + "/f", "version one");
  startDaemon("strict");
  const std::string f = mnt_ + "/f";
  ASSERT_EQ(readFile(f), "version one");
  ASSERT_EQ(fs::file_size(f), 11u);

  writeFile(remote_ + "/f", "version two, longer");  // in place: the same inode
  {
    // The open alone, before any read (a read drops the cached atime, so stat
    // would ask again after it anyway): fstat shows what the open saw.
    UniqueFd fd(::open(f.c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(fd) << std::strerror(errno);
    struct stat st;
    ASSERT_EQ(::fstat(fd.get(), &st), 0);
    EXPECT_EQ(st.st_size, 19);
  }
  EXPECT_EQ(fs::file_size(f), 19u);
  EXPECT_EQ(readFile(f), "version two, longer");

  writeFile(remote_ + "/g", "replaced by rename");  // a new inode under the same name
  fs::rename(remote_ + "/g", remote_ + "/f");
  EXPECT_EQ(readFile(f), "replaced by rename");
  EXPECT_EQ(fs::file_size(f), 18u);

  // A cached copy is revalidated by that open as well (never a stale copy).
  ASSERT_EQ(hs({"warm", f}).exit_code, 0);
  ASSERT_EQ(readFile(f), "replaced by rename");
  writeFile(remote_ + "/g", "a copy must not serve this");
  fs::rename(remote_ + "/g", remote_ + "/f");
  EXPECT_EQ(readFile(f), "a copy must not serve this");
}

// A file's mode changed on the remote within the attribute timeout: the next
// open is checked against the new mode (the kernel checks permissions itself,
// default_permissions, against the attributes it kept).
TEST_F(IntegrationStrict, AnOpenIsCheckedAgainstAModeChangedOnTheRemote) {
  constexpr uid_t kOtherUid = 54321;
  constexpr gid_t kOtherGid = 54321;
  writeFile(remote_ + "/f", "was public");
  ASSERT_EQ(::chmod((remote_ + "/f").c_str(), 0644), 0);
  startDaemon("strict");
  const std::string f = mnt_ + "/f";
  auto openAsOther = [&] { return runAs(kOtherUid, kOtherGid, [&] { return openErrno(f); }); };
  ASSERT_EQ(openAsOther(), 0);
  ASSERT_EQ(::chmod((remote_ + "/f").c_str(), 0600), 0);
  EXPECT_EQ(openAsOther(), EACCES);
  ASSERT_EQ(::chmod((remote_ + "/f").c_str(), 0644), 0);
  EXPECT_EQ(openAsOther(), 0);
}

// A file removed on the remote: the next open fails with ENOENT (never the old
// file), and from then on stat does too.
TEST_F(IntegrationStrict, AnOpenOfAFileRemovedOnTheRemoteFailsWithEnoent) {
  writeFile(remote_ + "/gone", "old");
  startDaemon("strict");
  const std::string gone = mnt_ + "/gone";
  ASSERT_EQ(readFile(gone), "old");
  ASSERT_TRUE(fs::exists(gone));
  fs::remove(remote_ + "/gone");
  EXPECT_EQ(openErrno(gone), ENOENT);
  EXPECT_FALSE(fs::exists(gone));
}

// A directory renamed on the remote within the directory timeout: an open by
// the old path fails with ENOENT, one by the new path reads the file, and a
// new directory under the old name is what the old path opens.
TEST_F(IntegrationStrict, AnOpenWalksADirectoryRenamedOnTheRemoteAgain) {
  fs::create_directories(remote_ + "/d/e");
  writeFile(remote_ + "/d/e/f", "first");
  startDaemon("strict");
  ASSERT_EQ(readFile(mnt_ + "/d/e/f"), "first");
  fs::rename(remote_ + "/d", remote_ + "/moved");
  EXPECT_EQ(openErrno(mnt_ + "/d/e/f"), ENOENT);
  EXPECT_EQ(readFile(mnt_ + "/moved/e/f"), "first");

  ASSERT_EQ(readFile(mnt_ + "/moved/e/f"), "first");
  fs::create_directories(remote_ + "/d/e");
  writeFile(remote_ + "/d/e/f", "second");
  fs::rename(remote_ + "/moved/e", remote_ + "/d/old-e");
  EXPECT_EQ(readFile(mnt_ + "/d/e/f"), "second");
  EXPECT_EQ(openErrno(mnt_ + "/moved/e/f"), ENOENT);
}

// Names changed through the mount move with the object: a file open under a
// name renamed or removed through the mount is opened again through
// /proc/self/fd (whose path the kernel does not walk again), as natively.
TEST_F(IntegrationStrict, AReopenThroughProcFollowsNamesChangedThroughTheMount) {
  writeFile(remote_ + "/a", "renamed");
  writeFile(remote_ + "/b", "removed");
  startDaemon("strict");
  UniqueFd a(::open((mnt_ + "/a").c_str(), O_RDONLY | O_CLOEXEC));
  UniqueFd b(::open((mnt_ + "/b").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(a && b) << std::strerror(errno);
  fs::rename(mnt_ + "/a", mnt_ + "/a2");
  ASSERT_EQ(::unlink((mnt_ + "/b").c_str()), 0) << std::strerror(errno);
  EXPECT_EQ(readFile("/proc/self/fd/" + std::to_string(a.get())), "renamed");
  EXPECT_EQ(readFile("/proc/self/fd/" + std::to_string(b.get())), "removed");
  EXPECT_EQ(readFile(mnt_ + "/a2"), "renamed");
  EXPECT_EQ(openErrno(mnt_ + "/a"), ENOENT);
  EXPECT_EQ(openErrno(mnt_ + "/b"), ENOENT);
}

// A name created on the remote shows in listings and answers stat within the
// directory timeout (negative entries are not kept, and listings are read
// afresh at each opendir, so in fact at once); one created through the mount
// at once.
TEST_F(IntegrationStrict, NewNamesShowWithinTheDirectoryTimeout) {
  fs::create_directories(remote_ + "/dir");
  writeFile(remote_ + "/dir/old", "o");
  startDaemon("strict");
  const std::string dir = mnt_ + "/dir";
  ASSERT_EQ(listing(dir), (std::set<std::string>{"old"}));
  struct stat st;
  ASSERT_EQ(::stat((dir + "/new").c_str(), &st), -1);  // looked up, absent

  writeFile(remote_ + "/dir/new", "made on the remote");
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration<double>(fuse::Consistency::kDefaultAcdirSeconds + 2);
  bool listed = false, stated = false;
  while (!(listed && stated) && std::chrono::steady_clock::now() < deadline) {
    listed = listing(dir).contains("new");
    stated = ::stat((dir + "/new").c_str(), &st) == 0;
    if (!(listed && stated)) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(listed);
  EXPECT_TRUE(stated);
  EXPECT_EQ(readFile(dir + "/new"), "made on the remote");

  writeFile(dir + "/through-the-mount", "mine");
  EXPECT_TRUE(listing(dir).contains("through-the-mount"));
  ASSERT_EQ(::stat((dir + "/through-the-mount").c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_size, 4);
  EXPECT_EQ(readFile(remote_ + "/dir/through-the-mount"), "mine");
}

}  // namespace
}  // namespace hotshard::testing
