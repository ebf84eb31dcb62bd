// Names through the real mount: unnamed files (open(dir, O_TMPFILE)) and what
// the immutable mode promises for names that appear, go or move on the remote
// (docs/user-guide.md, "Consistency modes"). Each call is also made on the remote
// directory itself, and the mount must answer as it does.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

// The outcome of one call: its result, or -errno.
long outcome(long res) { return res < 0 ? -errno : res; }

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return {"opendir: " + std::string(strerror(errno))};
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

long statOutcome(const std::string& path) {
  struct stat st {};
  return outcome(::stat(path.c_str(), &st));
}

// ---- O_TMPFILE ------------------------------------------------------------------

class IntegrationTmpfile : public MountFixture {
 protected:
  void startDaemon(bool passthrough) {
    startDaemonWith({.mount = mnt_,
                     .passthrough = passthrough,
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
};

// What one unnamed file went through, in a directory: native or through the mount.
struct TmpfileRun {
  long open_errno = 0;        // 0, or -errno of the O_TMPFILE open
  std::string read_back;      // what pread gave after the write
  mode_t type = 0;            // fstat's S_IFMT
  mode_t perms = 0;           // fstat's permission bits
  nlink_t nlink_before = 99;  // before linkat
  nlink_t nlink_after = 99;   // after linkat
  off_t size = -1;
  long link_result = 1;  // linkat's outcome
  bool operator==(const TmpfileRun&) const = default;
};

// O_TMPFILE in dir, write+read back, then linkat to `name` (empty: no link) by
// AT_EMPTY_PATH or through /proc/self/fd with AT_SYMLINK_FOLLOW.
TmpfileRun tmpfileRun(const std::string& dir, const std::string& content, const std::string& name,
                      bool empty_path, int extra_flags = 0) {
  TmpfileRun run;
  int fd = ::open(dir.c_str(), O_TMPFILE | O_RDWR | extra_flags, 0600);
  if (fd < 0) {
    run.open_errno = -errno;
    return run;
  }
  if (::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size())) {
    std::string buf(content.size(), '\0');
    ssize_t n = ::pread(fd, buf.data(), buf.size(), 0);
    run.read_back = buf.substr(0, n < 0 ? 0 : static_cast<size_t>(n));
  }
  struct stat st {};
  ::fstat(fd, &st);
  run.type = st.st_mode & S_IFMT;
  run.perms = st.st_mode & 07777;
  run.nlink_before = st.st_nlink;
  run.size = st.st_size;
  if (!name.empty()) {
    std::string target = dir + "/" + name;
    run.link_result =
        empty_path ? outcome(::linkat(fd, "", AT_FDCWD, target.c_str(), AT_EMPTY_PATH))
                   : outcome(::linkat(AT_FDCWD, ("/proc/self/fd/" + std::to_string(fd)).c_str(),
                                      AT_FDCWD, target.c_str(), AT_SYMLINK_FOLLOW));
    ::fstat(fd, &st);
    run.nlink_after = st.st_nlink;
  }
  ::close(fd);
  return run;
}

TEST_F(IntegrationTmpfile, UnnamedFilesWorkAsOnTheRemote) {
  fs::create_directories(remote_ + "/native");
  fs::create_directories(remote_ + "/d");
  for (bool passthrough : {true, false}) {
    SCOPED_TRACE(passthrough ? "passthrough" : "user space");
    startDaemon(passthrough);
    for (bool empty_path : {true, false}) {
      SCOPED_TRACE(empty_path ? "linkat AT_EMPTY_PATH" : "linkat /proc/self/fd");
      std::string name = std::string(empty_path ? "empty" : "proc") + (passthrough ? "-pt" : "-us");
      std::string content = "unnamed until linked as " + name;
      TmpfileRun native = tmpfileRun(remote_ + "/native", content, name, empty_path);
      ASSERT_EQ(native.open_errno, 0);
      ASSERT_EQ(native.link_result, 0);
      TmpfileRun through = tmpfileRun(mnt_ + "/d", content, name, empty_path);
      EXPECT_EQ(through, native);
      EXPECT_EQ(through.read_back, content);
      EXPECT_EQ(through.type, S_IFREG);
      EXPECT_EQ(through.nlink_before, 0u);
      EXPECT_EQ(through.nlink_after, 1u);
      // Linked under the name, with its bytes, on the remote itself.
      EXPECT_EQ(readFile(remote_ + "/d/" + name), content);
      EXPECT_EQ(readFile(mnt_ + "/d/" + name), content);
    }
    // O_EXCL: never linkable (ENOENT), natively as through the mount.
    TmpfileRun native = tmpfileRun(remote_ + "/native", "x", "excl", false, O_EXCL);
    EXPECT_EQ(native.link_result, -ENOENT);
    EXPECT_EQ(tmpfileRun(mnt_ + "/d", "x", "excl", false, O_EXCL), native);
    // Closed without a link: nothing left behind on the remote.
    std::vector<std::string> before = listing(remote_ + "/d");
    TmpfileRun unlinked = tmpfileRun(mnt_ + "/d", "gone", "", false);
    EXPECT_EQ(unlinked.open_errno, 0);
    EXPECT_EQ(unlinked.nlink_before, 0u);
    EXPECT_EQ(listing(remote_ + "/d"), before);
    EXPECT_EQ(listing(mnt_ + "/d"), before);
    EXPECT_EQ(daemon_->stop(), 0);
  }
}

TEST_F(IntegrationTmpfile, UnnamedFileBelongsToTheCaller) {
  fs::create_directories(remote_ + "/shared");
  ::chmod((remote_ + "/shared").c_str(), 0777);
  startDaemon(true);
  constexpr uid_t kUid = 4242;
  constexpr gid_t kGid = 4343;
  // Linked through /proc/self/fd: AT_EMPTY_PATH may need CAP_DAC_READ_SEARCH.
  int err = runAs(kUid, kGid, [&] {
    int fd = ::open((mnt_ + "/shared").c_str(), O_TMPFILE | O_WRONLY, 0640);
    if (fd < 0) return errno;
    int res = ::linkat(AT_FDCWD, ("/proc/self/fd/" + std::to_string(fd)).c_str(), AT_FDCWD,
                       (mnt_ + "/shared/mine").c_str(), AT_SYMLINK_FOLLOW);
    int link_errno = res < 0 ? errno : 0;
    ::close(fd);
    return link_errno;
  });
  ASSERT_EQ(err, 0) << strerror(err);
  struct stat st {};
  ASSERT_EQ(::stat((remote_ + "/shared/mine").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kUid);
  EXPECT_EQ(st.st_gid, kGid);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
}

// A remote directory whose file system has no O_TMPFILE (bpffs, as vfat or NFS):
// the mount answers what the remote answers, and only for that directory (the
// kernel did not turn O_TMPFILE off for the whole mount, as an ENOSYS would).
TEST_F(IntegrationTmpfile, RemoteWithoutTmpfileAnswersAsTheRemote) {
  std::string bpf = remote_ + "/bpf";
  fs::create_directories(bpf);
  fs::create_directories(remote_ + "/plain");
  HS_REQUIRE(::mount("bpf", bpf.c_str(), "bpf", 0, nullptr) == 0, "needs to mount bpffs");
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{bpf};
  TmpfileRun native = tmpfileRun(bpf, "x", "", false);
  ASSERT_EQ(native.open_errno, -EOPNOTSUPP);
  startDaemon(true);
  EXPECT_EQ(tmpfileRun(mnt_ + "/bpf", "x", "", false).open_errno, native.open_errno);
  EXPECT_EQ(tmpfileRun(mnt_ + "/bpf", "x", "", false).open_errno, native.open_errno);
  TmpfileRun plain = tmpfileRun(mnt_ + "/plain", "still works", "named", false);
  EXPECT_EQ(plain.open_errno, 0);
  EXPECT_EQ(plain.link_result, 0);
  EXPECT_EQ(readFile(remote_ + "/plain/named"), "still works");
  EXPECT_EQ(daemon_->stop(), 0);
}

// ---- immutable: names ---------------------------------------------------------------

class IntegrationImmutableNames : public MountFixture {
 protected:
  void SetUp() override {
    MountFixture::SetUp();
    for (int i = 0; i < 3; i++) writeFile(shard(remote_, i), "shard " + std::to_string(i));
    startDaemonWith({.mount = mnt_,
                     .consistency = "immutable",
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
  static std::string shard(const std::string& root, int i) {
    return root + "/ds/shard-000" + std::to_string(i) + ".tar";
  }
};

// The loader: it lists, a new shard lands on the remote, it lists again.
TEST_F(IntegrationImmutableNames, NewNameAnswersAtOnceAndShowsInTheNextListing) {
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);
  writeFile(shard(remote_, 3), "shard 3");
  EXPECT_EQ(statOutcome(shard(mnt_, 3)), 0);  // negative entries are never cached
  EXPECT_EQ(listing(mnt_ + "/ds"), listing(remote_ + "/ds"));
  EXPECT_EQ(listing(mnt_ + "/ds").size(), 4u);
  EXPECT_EQ(readFile(shard(mnt_, 3)), "shard 3");
  // The directory's own attributes were refreshed with its listing (ls -ld).
  struct stat through {
  }, native{};
  ASSERT_EQ(::stat((mnt_ + "/ds").c_str(), &through), 0);
  ASSERT_EQ(::stat((remote_ + "/ds").c_str(), &native), 0);
  EXPECT_EQ(timespecNs(through.st_mtim), timespecNs(native.st_mtim));
}

TEST_F(IntegrationImmutableNames, RemovedNameLeavesAtTheNextListing) {
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);
  ASSERT_EQ(statOutcome(shard(mnt_, 1)), 0);  // the kernel now holds its entry
  fs::remove(shard(remote_, 1));
  EXPECT_EQ(listing(mnt_ + "/ds"), listing(remote_ + "/ds"));
  EXPECT_EQ(statOutcome(shard(mnt_, 1)), statOutcome(shard(remote_, 1)));
  EXPECT_EQ(statOutcome(shard(mnt_, 1)), -ENOENT);
  EXPECT_EQ(::open(shard(mnt_, 1).c_str(), O_RDONLY), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(IntegrationImmutableNames, RenamedNameMovesAtTheNextListing) {
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);
  ASSERT_EQ(readFile(shard(mnt_, 2)), "shard 2");
  fs::rename(shard(remote_, 2), shard(remote_, 9));
  EXPECT_EQ(statOutcome(shard(mnt_, 9)), 0);  // the new name at once
  std::vector<std::string> now = listing(mnt_ + "/ds");
  EXPECT_EQ(now, listing(remote_ + "/ds"));
  EXPECT_EQ(std::count(now.begin(), now.end(), "shard-0009.tar"), 1);
  EXPECT_EQ(std::count(now.begin(), now.end(), "shard-0002.tar"), 0);
  EXPECT_EQ(statOutcome(shard(mnt_, 2)), -ENOENT);
  EXPECT_EQ(readFile(shard(mnt_, 9)), "shard 2");
}

// The validator keeps listings cached where nothing changed: a quiet directory's
// listing costs no READDIR, and a change still shows at the next one.
TEST_F(IntegrationImmutableNames, QuietDirectoryListingComesFromTheKernelCache) {
  std::string filter = "(opcode == 28 || opcode == 44) && connection == " +
                       std::to_string(kernelDev(mountDevice(mnt_)));
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);
  // Listings are kept only once the directory had been unchanged for a second
  // (Consistency::kQuietListingSeconds) when they were taken.
  ::usleep(1'200'000);
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);  // read afresh: now the validator holds
  // Kept. (The kernel may still read it once here: each listing read afresh made
  // it look its names up again, and it may have dropped the directory's inode,
  // cached listing included, on the way.)
  ASSERT_EQ(listing(mnt_ + "/ds").size(), 3u);
  {
    TraceCounter readdirs("fuse/fuse_request_send", filter);
    ASSERT_TRUE(readdirs.ok());
    EXPECT_EQ(listing(mnt_ + "/ds").size(), 3u);
    EXPECT_EQ(readdirs.stopAndCount(), 0u);
  }
  writeFile(shard(remote_, 4), "shard 4");
  TraceCounter readdirs("fuse/fuse_request_send", filter);
  ASSERT_TRUE(readdirs.ok());
  EXPECT_EQ(listing(mnt_ + "/ds"), listing(remote_ + "/ds"));
  EXPECT_GT(readdirs.stopAndCount(), 0u);
}

// ---- names as bytes through the control protocol --------------------------------

// A Linux name is any bytes but '/' and NUL. One with 0xff (never UTF-8) and a
// newline goes through warm, stat, pin, unpin, evict and top as its bytes: the
// CLI's lines print it as `ls --quoting-style=escape` does, --json as
// {"base64": ...} (daemon/control.h).
class IntegrationByteNames : public MountFixture {};

TEST_F(IntegrationByteNames, NameThatIsNotUtf8PassesThroughEveryPathCommand) {
  // Short enough for top's PATH column at 80 columns (17), so it is not cut.
  const std::string name = "\xff\n 1.bin";
  const std::string escaped = "\\377\\n\\ 1.bin";  // as ls -b prints it
  const std::string content(100000, 'q');
  writeFile(remote_ + "/ds/" + name, content);
  startDaemonWith(
      {.mount = mnt_,
       .extra_args = {"--placement", "manual", "--scrub-rate", "0", "--tick", "100ms"}});
  const std::string path = mnt_ + "/ds/" + name;

  CommandResult r = hs({"warm", path});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("warmed ds/" + escaped + "  "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("warmed 1 of 1 files"), std::string::npos) << r.out;
  json st = statOf(path);
  EXPECT_EQ(st.value("state", ""), "cached")
      << st.dump(-1, ' ', false, json::error_handler_t::replace);
  EXPECT_EQ(st.value("path", ""), path);
  EXPECT_EQ(st.value("size", 0ull), content.size());
  // The directory's listing names it too, as its bytes.
  json dir = fromWire(json::parse(hs({"stat", mnt_ + "/ds", "--json"}).out, nullptr, false));
  ASSERT_TRUE(dir.is_array()) << dir.dump(-1, ' ', false, json::error_handler_t::replace);
  ASSERT_EQ(dir.size(), 1u);
  EXPECT_EQ(dir[0].value("path", ""), path);
  r = hs({"stat", path});
  EXPECT_NE(r.out.find("cached     " + mnt_ + "/ds/" + escaped), std::string::npos) << r.out;

  r = hs({"pin", path});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("pinned   ds/" + escaped + "\n"), std::string::npos) << r.out;
  EXPECT_TRUE(statOf(path).value("pinned", false));
  ASSERT_EQ(hs({"unpin", path}).exit_code, 0);
  EXPECT_FALSE(statOf(path).value("pinned", true));

  // Read through the mount, it is a shard in top, under its bytes.
  EXPECT_EQ(readFile(path), content);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  json top = fromWire(json::parse(hs({"top", "--json", "-n", "100"}).out, nullptr, false));
  std::vector<std::string> shards;
  for (const auto& s : top.value("shards", json::array())) shards.push_back(s.value("path", ""));
  EXPECT_EQ(shards, std::vector<std::string>{"ds/" + name});
  r = hs({"top", "--iterations", "1", "-n", "100"});
  EXPECT_NE(r.out.find(" ds/" + escaped + "\n"), std::string::npos) << r.out;

  r = hs({"evict", path});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("evicted  ds/" + escaped + "\n"), std::string::npos) << r.out;
  EXPECT_EQ(statOf(path).value("state", ""), "remote");
  EXPECT_EQ(readFile(path), content);
  EXPECT_EQ(daemon_->stop(), 0);
}

}  // namespace
}  // namespace hotshard::testing
