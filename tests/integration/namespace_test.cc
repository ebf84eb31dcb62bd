// The persistent namespace (fuse/namespace_cache.h) through a real mount: an
// sshfs remote whose sftp-server logs every request it serves, so that the
// metadata operations reaching the server are counted on the server's side.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationNamespace : public MountFixture {
 protected:
  void SetUp() override {
    MountFixture::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    HS_REQUIRE(::access("/usr/bin/sshfs", X_OK) == 0, "needs sshfs (make deps)");
    HS_REQUIRE(::access("/usr/lib/openssh/sftp-server", X_OK) == 0,
               "needs openssh-sftp-server (make deps)");
    source_ = tmp_ / "source";
    fs::create_directories(source_);
    server_name_ = "hotshard-ns-sftp-" + std::to_string(::getpid());
    sftp_log_ = tmp_ / "sftp.log";
    writeFile(tmp_ / "fake-ssh", "#!/bin/bash\nexec -a " + server_name_ +
                                     " /usr/lib/openssh/sftp-server -e -l DEBUG1 2>>" +
                                     sftp_log_ + "\n");
    ::chmod((tmp_ / "fake-ssh").c_str(), 0755);
  }
  void TearDown() override {
    if (daemon_) daemon_->stop();
    for (int i = 0; i < 4 && !source_.empty() && mountDevice(remote_) != 0; i++) {
      ::umount2(remote_.c_str(), MNT_DETACH);
    }
  }
  // No cache in sshfs itself: every question reaches the server.
  void mountRemote() {
    CommandResult r = runCommand({"sshfs", "-o", "ssh_command=" + (tmp_ / "fake-ssh"), "-o",
                                  "dir_cache=no,entry_timeout=0,attr_timeout=0,negative_timeout=0",
                                  "localhost:" + source_, remote_});
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  void killRemote() {
    runCommand({"pkill", "-KILL", "-f", "^" + server_name_ + "( |$)"});
    for (int i = 0; i < 100 && mountDevice(remote_) != 0; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  void startDaemon(const std::string& consistency) {
    startDaemonWith({.mount = mnt_, .consistency = consistency,
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
  void restartDaemon(const std::string& consistency) {
    daemon_->stop();
    daemon_.reset();
    startDaemon(consistency);
  }
  // The server's metadata requests logged so far (sftp-server -l DEBUG1 logs
  // `lstat name "PATH"`, `opendir "PATH"`, `debug1: request N: readdir "PATH"
  // (handle H)` and the like, one line each).
  std::vector<std::string> metadataOps() {
    static const char* kOps[] = {"lstat name ", "stat name ", "fstat ",    "opendir ",
                                 "readdir ",    "realpath ",  "readlink ", "statvfs "};
    std::vector<std::string> ops;
    std::istringstream in(readFile(sftp_log_));
    for (std::string line; std::getline(in, line);) {
      std::string_view what = line;
      if (what.starts_with("debug1: request ")) {
        auto colon = what.find(": ", 16);
        if (colon == std::string_view::npos) continue;
        what.remove_prefix(colon + 2);
      }
      for (const char* op : kOps) {
        if (what.starts_with(op)) {
          ops.push_back(line);
          break;
        }
      }
    }
    return ops;
  }
  // A tree of `dirs` x `dirs` directories two levels below a/b, files in each
  // deepest one: paths five components deep (a/b/dI/dJ/fK).
  std::vector<std::string> makeTree(int dirs, int files) {
    std::vector<std::string> rels;
    for (int i = 0; i < dirs; i++) {
      for (int j = 0; j < dirs; j++) {
        std::string dir = "a/b/d" + std::to_string(i) + "/d" + std::to_string(j);
        fs::create_directories(source_ + "/" + dir);
        for (int k = 0; k < files; k++) {
          std::string rel = dir + "/f" + std::to_string(k);
          writeFile(source_ + "/" + rel, std::string(static_cast<size_t>(k + 1), 'x'));
          rels.push_back(rel);
        }
      }
    }
    return rels;
  }
  std::string source_;
  std::string server_name_;
  std::string sftp_log_;
};

struct Attrs {
  mode_t mode;
  off_t size;
  ino_t ino;
  nlink_t nlink;
  uid_t uid;
  int64_t mtime_ns;
  bool operator==(const Attrs&) const = default;
};

std::map<std::string, Attrs> statAll(const std::string& root, const std::vector<std::string>& rels) {
  std::map<std::string, Attrs> out;
  for (const auto& rel : rels) {
    struct stat st {};
    if (::stat((root + "/" + rel).c_str(), &st) != 0) {
      ADD_FAILURE() << "stat " << rel << ": " << std::strerror(errno);
      continue;
    }
    out[rel] = {st.st_mode, st.st_size, st.st_ino, st.st_nlink, st.st_uid,
                st.st_mtim.tv_sec * 1'000'000'000LL + st.st_mtim.tv_nsec};
  }
  return out;
}

std::string findWalk(const std::string& root) {
  CommandResult r = runCommand({"find", root, "-printf", "%P %y %s %i\n"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  std::vector<std::string> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  std::string all;
  for (const auto& l : lines) all += l + "\n";
  return all;
}

off_t sizeOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

std::string joined(const std::vector<std::string>& lines, size_t most = 10) {
  std::string out;
  for (size_t i = 0; i < lines.size() && i < most; i++) out += lines[i] + "\n";
  return out;
}

TEST_F(IntegrationNamespace, AfterARestartImmutableStatsAndWalksWithoutTheRemote) {
  std::vector<std::string> rels = makeTree(3, 4);
  mountRemote();
  startDaemon("immutable");
  std::string walk = findWalk(mnt_);
  auto first = statAll(mnt_, rels);
  ASSERT_GE(metadataOps().size(), rels.size()) << "the server's log misses requests: the test cannot tell";
  RecordProperty("remote_metadata_ops_first_pass", static_cast<int>(metadataOps().size()));

  restartDaemon("immutable");
  size_t before = metadataOps().size();
  auto second = statAll(mnt_, rels);
  EXPECT_EQ(findWalk(mnt_), walk);
  std::vector<std::string> ops = metadataOps();
  ops.erase(ops.begin(), ops.begin() + static_cast<long>(before));
  EXPECT_EQ(ops.size(), 0u) << "metadata requests reached the server after the restart:\n"
                            << joined(ops);
  EXPECT_EQ(second, first);
}

TEST_F(IntegrationNamespace, ImmutableOpensACachedFileNotLookedUpSinceTheRestartWithoutTheRemote) {
  writeRandomFile(source_ + "/model/weights.bin", 2 << 20, 7);
  writeFile(source_ + "/model/uncached.txt", "only on the remote");
  const std::string want = sha256File(source_ + "/model/weights.bin");
  mountRemote();
  startDaemon("immutable");
  findWalk(mnt_);
  ASSERT_EQ(hs({"warm", mnt_ + "/model/weights.bin"}).exit_code, 0);

  restartDaemon("immutable");
  killRemote();
  ASSERT_EQ(mountDevice(remote_), 0u) << "sshfs did not go away";
  EXPECT_EQ(sha256File(mnt_ + "/model/weights.bin"), want);
  auto t0 = std::chrono::steady_clock::now();
  CommandResult r = runCommand({"cat", mnt_ + "/model/uncached.txt"}, 40);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_TRUE(r.out.find("Transport endpoint is not connected") != std::string::npos ||
              r.out.find("Input/output error") != std::string::npos ||
              r.out.find("Connection timed out") != std::string::npos)
      << r.out;
  EXPECT_LT(seconds, 30.0) << "past the remote deadline";
  json st = daemon_->status();
  EXPECT_EQ(st["cache"]["objects"], 1) << st.dump();
  EXPECT_EQ(st["cache"]["stale_drops"], 0);
}

TEST_F(IntegrationNamespace, TtlSeesRemoteChangesAfterTheTtlAndNotBefore) {
  constexpr double kTtl = 10;  // room for two restarts on a busy machine
  writeFile(source_ + "/f", "1234");
  fs::create_directories(source_ + "/d");
  writeFile(source_ + "/d/one", "1");
  mountRemote();
  startDaemon("ttl=10s");
  auto learnt = std::chrono::steady_clock::now();
  ASSERT_EQ(sizeOf(mnt_ + "/f"), 4);
  const std::string listed = findWalk(mnt_ + "/d");
  // Changed behind the mount; the restart empties the kernel's caches, so what
  // answers next is the namespace.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // a new mtime second
  writeFile(source_ + "/f", "12345678");
  writeFile(source_ + "/d/two", "2");
  restartDaemon("ttl=10s");
  double age = std::chrono::duration<double>(std::chrono::steady_clock::now() - learnt).count();
  ASSERT_LT(age, kTtl - 1) << "the restart took too long for this test's ttl";
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 4) << "within the ttl the namespace answers";
  EXPECT_EQ(findWalk(mnt_ + "/d"), listed) << "within the ttl the listing is kept";
  std::this_thread::sleep_until(learnt + std::chrono::duration<double>(kTtl + 0.5));
  restartDaemon("ttl=10s");  // the kernel's own caches hold for the ttl too
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 8) << "past the ttl the remote is asked";
  std::string relisted = findWalk(mnt_ + "/d");
  EXPECT_NE(relisted.find("two f"), std::string::npos) << relisted;
}

TEST_F(IntegrationNamespace, ChangesThroughTheMountAreSeenAtOnceAndAfterARestart) {
  fs::create_directories(source_ + "/d");
  writeFile(source_ + "/d/gone", "bye");
  writeFile(source_ + "/d/moved", "move me");
  writeFile(source_ + "/d/cut", "0123456789");
  mountRemote();
  startDaemon("immutable");
  findWalk(mnt_);
  ASSERT_EQ(sizeOf(mnt_ + "/d/cut"), 10);

  writeFile(mnt_ + "/d/new", "fresh");
  ASSERT_EQ(::unlink((mnt_ + "/d/gone").c_str()), 0);
  ASSERT_EQ(::rename((mnt_ + "/d/moved").c_str(), (mnt_ + "/d/there").c_str()), 0);
  ASSERT_EQ(::truncate((mnt_ + "/d/cut").c_str(), 3), 0);
  auto check = [&](const char* when) {
    EXPECT_EQ(readFile(mnt_ + "/d/new"), "fresh") << when;
    EXPECT_EQ(sizeOf(mnt_ + "/d/gone"), -1) << when;
    EXPECT_EQ(sizeOf(mnt_ + "/d/moved"), -1) << when;
    EXPECT_EQ(readFile(mnt_ + "/d/there"), "move me") << when;
    EXPECT_EQ(sizeOf(mnt_ + "/d/cut"), 3) << when;
    CommandResult ls = runCommand({"ls", "-a", mnt_ + "/d"});
    EXPECT_EQ(ls.out, ".\n..\ncut\nnew\nthere\n") << when;
  };
  check("at once");
  restartDaemon("immutable");
  check("after a restart");
  findWalk(mnt_);  // listed again, from the remote
  restartDaemon("immutable");
  check("after a second restart");
}

TEST_F(IntegrationNamespace, ACorruptNamespaceOrOneOfAnotherModeIsDroppedNotServed) {
  writeFile(source_ + "/f", "1234");
  mountRemote();
  startDaemon("immutable");
  ASSERT_EQ(sizeOf(mnt_ + "/f"), 4);
  daemon_->stop();
  daemon_.reset();
  {
    // Both LMDB meta pages overwritten: not an LMDB file any more.
    int fd = ::open((cache_ + "/namespace.mdb").c_str(), O_WRONLY);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    std::string junk(8192, 'x');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 0), 8192);
    ::close(fd);
  }
  writeFile(source_ + "/f", "12345678");
  startDaemon("immutable");
  EXPECT_NE(daemon_->log().find("dropped, not served"), std::string::npos) << daemon_->log();
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 8);

  restartDaemon("ttl=1h");
  EXPECT_NE(daemon_->log().find("belongs to another remote or mode"), std::string::npos)
      << daemon_->log();
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 8);
}

TEST_F(IntegrationNamespace, StrictModeNeverReadsIt) {
  writeFile(source_ + "/f", "1234");
  mountRemote();
  startDaemon("immutable");
  ASSERT_EQ(sizeOf(mnt_ + "/f"), 4);
  restartDaemon("strict");
  EXPECT_FALSE(fs::exists(cache_ + "/namespace.mdb")) << "strict deletes it";
  writeFile(source_ + "/f", "12345678");
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 8);
  // A write through the strict mount: a later immutable start must not see the old size.
  writeFile(mnt_ + "/f", "12");
  restartDaemon("immutable");
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 2);
}

}  // namespace
}  // namespace hotshard::testing
