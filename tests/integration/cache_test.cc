// The cache through the real mount: warm, serve from the copy, never stale,
// never corrupt, survive kill -9, full disks and a remote that goes away.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <filesystem>
#include <random>
#include <thread>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;


class IntegrationCache : public MountFixture {
 protected:
  // Manual placement: these tests drive warm/evict/pin themselves.
  void startDaemon(const std::string& consistency = "strict",
                   std::vector<std::string> extra = {}) {
    extra.insert(extra.end(), {"--scrub-rate", "0", "--placement", "manual"});
    startDaemonWith({.mount = mnt_, .consistency = consistency, .extra_args = extra});
  }
};

TEST_F(IntegrationCache, WarmedFilesAreReadFromTheCacheCopy) {
  writeRandomFile(remote_ + "/data/shard-0.tar", 8 << 20, 1);
  writeRandomFile(remote_ + "/data/shard-1.tar", (1 << 20) + 1, 2);
  writeFile(remote_ + "/data/one", "x");
  startDaemon();
  EXPECT_EQ(statOf(mnt_ + "/data/shard-0.tar")["state"], "remote");

  CommandResult warm = hs({"warm", mnt_ + "/data"});
  ASSERT_EQ(warm.exit_code, 0) << warm.out;
  EXPECT_NE(warm.out.find("warmed 3 of 3 files"), std::string::npos) << warm.out;
  json st = statOf(mnt_ + "/data/shard-0.tar");
  ASSERT_EQ(st["state"], "cached") << st.dump();
  EXPECT_EQ(st["size"], 8 << 20);
  EXPECT_FALSE(st["pinned"].get<bool>());
  std::string object = st["object"];
  EXPECT_EQ(sha256File(object), sha256File(remote_ + "/data/shard-0.tar"));

  // Which file does the kernel read when a job reads through the mount?
  std::string remote_file = remote_ + "/data/shard-0.tar";
  dropPageCache(remote_file);
  dropPageCache(object);
  TraceCounter from_cache("filemap/mm_filemap_get_pages", fileFilter(object));
  TraceCounter from_remote("filemap/mm_filemap_get_pages", fileFilter(remote_file));
  ASSERT_TRUE(from_cache.ok());
  ASSERT_TRUE(from_remote.ok());
  std::string through_mount = sha256File(mnt_ + "/data/shard-0.tar");
  EXPECT_GT(from_cache.stopAndCount(), 0u) << "the cached copy was not read";
  EXPECT_EQ(from_remote.stopAndCount(), 0u) << "a cached file was read from the remote";
  EXPECT_EQ(through_mount, sha256File(remote_file));

  for (const char* f : {"shard-1.tar", "one"}) {
    EXPECT_EQ(readFile(mnt_ + "/data/" + f), readFile(remote_ + "/data/" + f)) << f;
  }
  json status = daemon_->status();
  EXPECT_GE(status["fuse"]["opens_cache"].get<uint64_t>(), 3u) << status.dump();
  EXPECT_EQ(status["cache"]["objects"], 3);
  EXPECT_GE(status["cache"]["used_bytes"].get<uint64_t>(), (9u << 20));
}

TEST_F(IntegrationCache, StrictModeNeverServesAStaleCopy) {
  writeFile(remote_ + "/f", "version one");
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "version one");

  writeFile(remote_ + "/f", "version TWO");  // same size, in place
  EXPECT_EQ(readFile(mnt_ + "/f"), "version TWO");
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");

  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  writeFile(remote_ + "/g", "replaced by rename");
  fs::rename(remote_ + "/g", remote_ + "/f");
  EXPECT_EQ(readFile(mnt_ + "/f"), "replaced by rename");
}

// Automatic placement, slowed so that a promotion stays in flight for seconds.
class IntegrationCachePlacement : public MountFixture {};

TEST_F(IntegrationCachePlacement, SigtermWithAPromotionInFlightExitsCleanly) {
  writeRandomFile(remote_ + "/big", 256ull << 20, 11);
  for (int round = 0; round < 3; round++) {
    SCOPED_TRACE("round " + std::to_string(round));
    startDaemonWith({.mount = mnt_,
                     .extra_args = {"--scrub-rate", "0", "--placement", "auto", "--tick", "100ms",
                                    "--promote-rate", "16MiB"}});
    bool promoting = false;
    for (int i = 0; i < 200 && !promoting; i++) {  // 20 s: read it, let a tick see the heat
      if (i % 20 == 0) (void)readFile(mnt_ + "/big");
      promoting = statOf(mnt_ + "/big")["state"] == "promoting";
      if (!promoting) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(promoting) << statOf(mnt_ + "/big").dump() << "\n" << daemon_->log();
    EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
  }
}

// `stat` of a file being copied says how far the copy is.
TEST_F(IntegrationCachePlacement, StatShowsHowFarACopyInFlightIs) {
  writeRandomFile(remote_ + "/big", 64ull << 20, 13);
  startDaemonWith({.mount = mnt_,
                   .extra_args = {"--scrub-rate", "0", "--placement", "manual", "--promote-rate",
                                  "8MiB"}});
  std::thread client([&] { (void)hs({"warm", mnt_ + "/big"}); });
  json st;
  for (int i = 0; i < 100; i++) {
    st = statOf(mnt_ + "/big");
    if (st.value("state", "") == "promoting" && st.value("copied", 0ull) > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(st.value("state", ""), "promoting") << st.dump();
  EXPECT_GT(st.value("copied", 0ull), 0u) << st.dump();
  EXPECT_LT(st.value("copied", 0ull), 64ull << 20) << st.dump();
  CommandResult r = hs({"stat", mnt_ + "/big"});
  EXPECT_NE(r.out.find("promoting "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("%"), std::string::npos) << r.out;
  client.join();
  EXPECT_EQ(statOf(mnt_ + "/big").value("state", ""), "cached");
  EXPECT_FALSE(statOf(mnt_ + "/big").contains("copied"));
}

// A control request waiting on promotions (warm at a low rate) does not hold up
// a stop: the daemon cancels the promotions before it closes the control socket,
// and the client gets its answer.
TEST_F(IntegrationCachePlacement, SigtermDuringAWarmStopsPromptly) {
  writeRandomFile(remote_ + "/big", 64ull << 20, 12);
  startDaemonWith({.mount = mnt_,
                   .extra_args = {"--scrub-rate", "0", "--placement", "manual", "--promote-rate",
                                  "4MiB"}});
  CommandResult warm;
  std::thread client([&] { warm = hs({"warm", mnt_ + "/big"}); });
  bool promoting = false;
  for (int i = 0; i < 100 && !promoting; i++) {
    promoting = statOf(mnt_ + "/big")["state"] == "promoting";
    if (!promoting) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(promoting) << statOf(mnt_ + "/big").dump();
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(daemon_->stop(), 0) << daemon_->log();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  client.join();
  EXPECT_LT(seconds, 3.0) << daemon_->log();
  EXPECT_NE(warm.exit_code, 0) << warm.out;  // the copy was cancelled, and it says so
}

// A second warm copies nothing and says so: "cached", not "warmed", per file,
// in the summary and in --json.
TEST_F(IntegrationCache, WarmReportsFilesAlreadyCachedAsCached) {
  writeRandomFile(remote_ + "/d/a", 1 << 20, 1);
  writeRandomFile(remote_ + "/d/b", 1 << 20, 2);
  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_ + "/d/a"}).exit_code, 0);
  CommandResult again = hs({"warm", mnt_ + "/d"});
  ASSERT_EQ(again.exit_code, 0) << again.out;
  EXPECT_NE(again.out.find("] cached d/a"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("] warmed d/b"), std::string::npos) << again.out;
  EXPECT_NE(again.out.find("warmed 1 of 2 files (2.0 MiB), 1 already cached"), std::string::npos)
      << again.out;
  CommandResult j = hs({"warm", mnt_ + "/d", "--json"});
  ASSERT_EQ(j.exit_code, 0) << j.out;
  json reply = json::parse(j.out, nullptr, false);
  ASSERT_FALSE(reply.is_discarded()) << j.out;
  EXPECT_EQ(reply["files"], 2) << j.out;
  EXPECT_EQ(reply["warmed"], 0) << j.out;
  EXPECT_EQ(reply["cached"], 2) << j.out;
}

// While a file is copied the daemon sends progress frames with the bytes copied
// so far and the total; the CLI draws them as one updating line on a terminal
// and prints only the per-file lines otherwise.
TEST_F(IntegrationCache, WarmSendsProgressFramesWhileAFileIsCopied) {
  writeRandomFile(remote_ + "/big", 64ull << 20, 3);
  startDaemon("strict", {"--promote-rate", "16MiB"});
  auto client = ControlClient::connect(daemon_->socket());
  ASSERT_TRUE(client.ok()) << client.error().message;
  std::vector<json> during, finished;
  json req = {{"cmd", "warm"}, {"paths", {mnt_ + "/big"}}};
  auto reply = client->call(req, [&](const json& p) {
    (p.contains("ok") ? finished : during).push_back(p);
  });
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  ASSERT_GE(during.size(), 3u);
  uint64_t last = 0;
  for (const json& p : during) {
    EXPECT_EQ(p["path"], "big") << p.dump();
    EXPECT_EQ(p["size"], 64ull << 20) << p.dump();
    EXPECT_EQ(p["bytes_total"], 64ull << 20) << p.dump();
    EXPECT_GT(p["copied"].get<uint64_t>(), last) << p.dump();
    last = p["copied"].get<uint64_t>();
  }
  EXPECT_LT(last, 64ull << 20);
  ASSERT_EQ(finished.size(), 1u);
  EXPECT_EQ(finished[0]["cached"], false) << finished[0].dump();
  EXPECT_EQ(finished[0]["bytes_done"], 64ull << 20) << finished[0].dump();
  EXPECT_EQ((*reply)["warmed"], 1) << reply->dump();

  // Not a terminal: no carriage-return progress lines.
  writeRandomFile(remote_ + "/big2", 32ull << 20, 4);
  CommandResult piped = hs({"warm", mnt_ + "/big2"});
  ASSERT_EQ(piped.exit_code, 0) << piped.out;
  EXPECT_EQ(piped.out.find('\r'), std::string::npos) << piped.out;
  EXPECT_NE(piped.out.find("[1/1] warmed big2  32.0 MiB\n"), std::string::npos) << piped.out;

  // A terminal (script(1)'s pseudo-terminal): the updating line, with rate and ETA.
  writeRandomFile(remote_ + "/big3", 32ull << 20, 5);
  CommandResult tty = runCommand({"script", "-qec",
                                  hotshardBinary() + " warm " + mnt_ + "/big3 --socket " +
                                      daemon_->socket(),
                                  "/dev/null"});
  ASSERT_EQ(tty.exit_code, 0) << tty.out;
  EXPECT_NE(tty.out.find("\r\033[K[0/1] big3  "), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("/s  ETA "), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("| total "), std::string::npos) << tty.out;
  EXPECT_NE(tty.out.find("[1/1] warmed big3"), std::string::npos) << tty.out;
}

TEST_F(IntegrationCache, WritesThroughTheMountInvalidateTheCopy) {
  writeFile(remote_ + "/f", "cached content");
  writeFile(remote_ + "/r", "to be renamed");
  writeFile(remote_ + "/u", "to be unlinked");
  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_}).exit_code, 0);
  ASSERT_EQ(statOf(mnt_ + "/f")["state"], "cached");

  // A reader holds the cached copy open while a writer comes: the writer joins
  // the copy (one file, one inode: docs/cache.md), the reader sees the write as
  // a local file's reader would, the remote has it once the writer closed, and
  // the copy leaves the cache when the last open closes.
  int reader = ::open((mnt_ + "/f").c_str(), O_RDONLY);
  ASSERT_GE(reader, 0);
  writeFile(mnt_ + "/f", "new content!!!");
  EXPECT_EQ(readFile(remote_ + "/f"), "new content!!!");
  EXPECT_EQ(readFile(mnt_ + "/f"), "new content!!!");
  char buf[64] = {};
  ASSERT_EQ(::pread(reader, buf, sizeof(buf), 0), 14);
  EXPECT_EQ(std::string(buf, 14), "new content!!!");
  ::close(reader);
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");
  EXPECT_EQ(daemon_->status()["fuse"]["cache_conflicts"].get<uint64_t>(), 0u);

  ASSERT_EQ(::truncate((mnt_ + "/f").c_str(), 3), 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "new");
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");

  // While a writer holds the file open, its writes bypass the daemon: no copy
  // may be made then.
  int writer = ::open((mnt_ + "/f").c_str(), O_WRONLY);
  ASSERT_GE(writer, 0);
  ASSERT_EQ(::pwrite(writer, "NEW", 3, 0), 3);
  EXPECT_NE(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "remote");
  ::close(writer);
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "NEW");

  ASSERT_EQ(::rename((mnt_ + "/r").c_str(), (mnt_ + "/r2").c_str()), 0);
  EXPECT_EQ(statOf(mnt_ + "/r2")["state"], "remote");
  EXPECT_EQ(readFile(mnt_ + "/r2"), "to be renamed");
  ASSERT_EQ(::unlink((mnt_ + "/u").c_str()), 0);
  EXPECT_EQ(daemon_->status()["cache"]["objects"], 1) << daemon_->status().dump();  // f alone
}

TEST_F(IntegrationCache, AFlippedByteIsCaughtByVerifyAndNeverServed) {
  writeRandomFile(remote_ + "/w.bin", 3 << 20, 9);
  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_ + "/w.bin"}).exit_code, 0);
  std::string object = statOf(mnt_ + "/w.bin")["object"];
  {
    int fd = ::open(object.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    char c;
    ASSERT_EQ(::pread(fd, &c, 1, 1 << 20), 1);
    c ^= 0x20;
    ASSERT_EQ(::pwrite(fd, &c, 1, 1 << 20), 1);
    ::close(fd);
  }
  CommandResult v = hs({"verify", "--json"});
  ASSERT_EQ(v.exit_code, 0) << v.out;
  json report = json::parse(v.out);
  EXPECT_EQ(report["dropped"], 1);
  EXPECT_EQ(statOf(mnt_ + "/w.bin")["state"], "remote");
  EXPECT_FALSE(fs::exists(object));
  EXPECT_EQ(sha256File(mnt_ + "/w.bin"), sha256File(remote_ + "/w.bin"));
}

TEST_F(IntegrationCache, AFullCacheDiskFailsPromotionNotReads) {
  fs::create_directories(cache_);
  ASSERT_EQ(::mount("tmpfs", cache_.c_str(), "tmpfs", 0, "size=4m"), 0) << std::strerror(errno);
  writeRandomFile(remote_ + "/big", 16 << 20, 3);
  writeFile(remote_ + "/small", "fits");
  // Capacity above the disk's size: the disk itself runs out.
  startDaemon("strict", {"--cache-size", "64MiB", "--io-engine", "sync"});
  CommandResult warm = hs({"warm", mnt_ + "/big"});
  EXPECT_NE(warm.exit_code, 0);
  EXPECT_NE(warm.out.find("No space left on device"), std::string::npos) << warm.out;
  EXPECT_EQ(statOf(mnt_ + "/big")["state"], "remote");
  EXPECT_EQ(sha256File(mnt_ + "/big"), sha256File(remote_ + "/big"));
  EXPECT_GE(daemon_->status()["cache"]["promoter"]["failed_no_space"].get<uint64_t>(), 1u);
  EXPECT_TRUE(fs::is_empty(cache_ + "/tmp"));
  // The cache still works for what fits.
  EXPECT_EQ(hs({"warm", mnt_ + "/small"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/small"), "fits");
}

TEST_F(IntegrationCache, PinnedFilesStayAndStatusReportsTheCache) {
  writeFile(remote_ + "/p", "pinned");
  startDaemon();
  ASSERT_EQ(hs({"pin", mnt_ + "/p"}).exit_code, 0);
  EXPECT_TRUE(statOf(mnt_ + "/p")["pinned"].get<bool>());
  ASSERT_EQ(hs({"warm", mnt_ + "/p"}).exit_code, 0);
  CommandResult ev = hs({"evict", mnt_ + "/p"});
  EXPECT_NE(ev.exit_code, 0);  // pinned: refused
  EXPECT_EQ(statOf(mnt_ + "/p")["state"], "cached");
  ASSERT_EQ(hs({"unpin", mnt_ + "/p"}).exit_code, 0);
  ASSERT_EQ(hs({"evict", mnt_ + "/p"}).exit_code, 0);
  EXPECT_EQ(statOf(mnt_ + "/p")["state"], "remote");
  json c = daemon_->status()["cache"];
  for (const char* k : {"used_bytes", "capacity_bytes", "objects", "promotions_in_flight"}) {
    EXPECT_TRUE(c.contains(k)) << k;
  }
  CommandResult bad = hs({"warm", "/definitely/not/under/the/mount"});
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.out.find("is not under the mount"), std::string::npos) << bad.out;
}

TEST_F(IntegrationCache, KillNineDuringWarmNeverLeavesABadCopy) {
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 30; i++) {
    writeRandomFile(remote_ + "/many/f" + std::to_string(i), (256 << 10) + rng() % (2 << 20), i);
  }
  std::map<std::string, std::string> want;
  for (int i = 0; i < 30; i++) {
    std::string f = "many/f" + std::to_string(i);
    want[f] = sha256File(remote_ + "/" + f);
  }
  const std::vector<std::string> slow = {"--promote-rate", "48MiB", "--promote-concurrency", "2"};
  for (int iter = 0; iter < 20; iter++) {
    SCOPED_TRACE("iteration " + std::to_string(iter));
    startDaemon("strict", slow);
    if (iter % 2 == 1) hs({"evict", mnt_ + "/many"});  // fresh copies to interrupt
    pid_t pid = daemon_->status()["pid"].get<pid_t>();
    pid_t warm = ::fork();
    if (warm == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::execl(hotshardBinary().c_str(), "hotshard", "warm", (mnt_ + "/many").c_str(), "--socket",
              daemon_->socket().c_str(), nullptr);
      ::_exit(127);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 400));
    ::kill(pid, SIGKILL);
    ::waitpid(warm, nullptr, 0);
    daemon_->stop();  // reaps and lazily unmounts the dead mount

    startDaemon("strict", slow);  // recovery
    EXPECT_TRUE(fs::is_empty(cache_ + "/tmp")) << "tmp/ not swept";
    int cached = 0;
    for (const auto& [f, sha] : want) {
      json st = statOf(mnt_ + "/" + f);
      if (st["state"] == "cached") {
        cached++;
        EXPECT_EQ(sha256File(st["object"]), sha) << f;
      }
      EXPECT_EQ(sha256File(mnt_ + "/" + f), sha) << f;
    }
    RecordProperty("cached_after_iteration_" + std::to_string(iter), cached);
    daemon_->stop();
  }
}

// A remote that can go away: sshfs over a stand-in for ssh that runs sftp-server
// directly; killing sftp-server takes the remote down as a dead server would.
class IntegrationCacheRemoteGone : public IntegrationCache {
 protected:
  void SetUp() override {
    IntegrationCache::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    HS_REQUIRE(::access("/usr/bin/sshfs", X_OK) == 0, "needs sshfs (make deps)");
    HS_REQUIRE(::access("/usr/lib/openssh/sftp-server", X_OK) == 0,
               "needs openssh-sftp-server (make deps)");
    source_ = tmp_ / "source";
    fs::create_directories(source_);
    // The server runs under a name of its own, so killing it touches no other
    // sftp-server on the machine.
    server_name_ = "hotshard-test-sftp-" + std::to_string(::getpid());
    writeFile(tmp_ / "fake-ssh",
              "#!/bin/bash\nexec -a " + server_name_ + " /usr/lib/openssh/sftp-server\n");
    ::chmod((tmp_ / "fake-ssh").c_str(), 0755);
  }
  // By default no caching in the remote's own client: every question reaches the server.
  void mountRemote(const std::string& options = "dcache_timeout=0,entry_timeout=0,"
                                                "attr_timeout=0,negative_timeout=0") {
    CommandResult r = runCommand({"sshfs", "-o", "ssh_command=" + (tmp_ / "fake-ssh"), "-o",
                                  options, "localhost:" + source_, remote_});
    ASSERT_EQ(r.exit_code, 0) << r.out;
  }
  // SIGSTOP: the server stops answering and sshfs waits for it without end, as
  // for a server behind a link that went down; SIGCONT: it answers again.
  void signalRemote(const std::string& sig) {
    runCommand({"pkill", "-" + sig, "-f", "^" + server_name_ + "$"});
  }
  void killRemote() {
    runCommand({"pkill", "-KILL", "-f", "^" + server_name_ + "$"});
    for (int i = 0; i < 100 && isMounted(remote_); i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  static bool isMounted(const std::string& path) { return mountDevice(path) != 0; }
  void TearDown() override {
    if (!server_name_.empty()) signalRemote("CONT");  // a test that failed while it was stopped
    if (daemon_) daemon_->stop();
    // Every sshfs stacked on the remote, top first.
    for (int i = 0; i < 4 && !source_.empty() && isMounted(remote_); i++) {
      ::umount2(remote_.c_str(), MNT_DETACH);
    }
  }
  std::string source_;
  std::string server_name_;
};

off_t sizeOf(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? st.st_size : -1;
}

// What docs/user-guide.md says of strict mode: it sees a change on the server
// as soon as the remote's own client does. sshfs with its defaults (a 20 s
// directory cache, 1 s kernel attr_timeout) still shows the old size after a
// change on the server, through hotshard (with no cache of its own: ac=0) as
// through the remote mount itself; with the client's caches off (the guide's
// options) strict's next open sees it at once, and stat after that open.
TEST_F(IntegrationCacheRemoteGone, StrictSeesAServerChangeOnlyAsTheRemotesClientDoes) {
  writeFile(source_ + "/f", "1234");
  mountRemote("dcache_timeout=20,attr_timeout=1,entry_timeout=1");
  startDaemon("strict;ac=0");
  ASSERT_EQ(sizeOf(mnt_ + "/f"), 4);
  writeFile(source_ + "/f", "12345678");
  EXPECT_EQ(sizeOf(remote_ + "/f"), 4) << "sshfs's own cache did not hold the old size";
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 4) << "strict saw past the remote's client";
  daemon_->stop();
  daemon_.reset();
  ASSERT_EQ(::umount2(remote_.c_str(), 0), 0) << std::strerror(errno);

  mountRemote("dir_cache=no,attr_timeout=0,entry_timeout=0");
  startDaemon("strict");
  ASSERT_EQ(sizeOf(mnt_ + "/f"), 8);
  writeFile(source_ + "/f", "123");
  EXPECT_EQ(readFile(mnt_ + "/f"), "123");
  EXPECT_EQ(sizeOf(mnt_ + "/f"), 3);
}

TEST_F(IntegrationCacheRemoteGone, ImmutableModeServesCachedFilesWithoutTheRemote) {
  writeRandomFile(source_ + "/model/weights.bin", 4 << 20, 5);
  writeFile(source_ + "/model/uncached.txt", "only on the remote");
  mountRemote();
  startDaemon("immutable");
  std::string want = sha256File(source_ + "/model/weights.bin");
  ASSERT_EQ(hs({"warm", mnt_ + "/model/weights.bin"}).exit_code, 0);
  EXPECT_EQ(sha256File(mnt_ + "/model/weights.bin"), want);
  EXPECT_EQ(readFile(mnt_ + "/model/uncached.txt"), "only on the remote");

  killRemote();
  ASSERT_FALSE(isMounted(remote_)) << "sshfs did not go away";
  // Cached: still served, byte for byte.
  EXPECT_EQ(sha256File(mnt_ + "/model/weights.bin"), want);
  // Uncached: fails as the remote itself would (no stale or empty data).
  int fd = ::open((mnt_ + "/model/uncached.txt").c_str(), O_RDONLY);
  if (fd >= 0) {
    char buf[64];
    EXPECT_LT(::read(fd, buf, sizeof(buf)), 0);
    ::close(fd);
  }
  // And nothing was dropped for the remote's silence.
  EXPECT_EQ(daemon_->status()["cache"]["objects"], 1);
  EXPECT_EQ(daemon_->status()["cache"]["stale_drops"], 0);
}

TEST_F(IntegrationCacheRemoteGone, StrictModeKeepsCopiesWhileTheRemoteIsDown) {
  writeFile(source_ + "/f", "precious");
  mountRemote();
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  EXPECT_EQ(readFile(mnt_ + "/f"), "precious");
  killRemote();
  // strict revalidates against the remote, which does not answer: the open
  // fails, like the remote's own would, and nothing is served unvalidated...
  int fd = ::open((mnt_ + "/f").c_str(), O_RDONLY);
  EXPECT_LT(fd, 0);
  if (fd >= 0) ::close(fd);
  // ...but the copy is kept.
  json st = daemon_->status();
  EXPECT_EQ(st["cache"]["objects"], 1) << st.dump();
  EXPECT_EQ(st["cache"]["stale_drops"], 0);
  EXPECT_EQ(statOf(mnt_ + "/f")["state"], "cached");
}
// sshfs whose sftp-server logs every read it serves (path, offset, length): the
// bytes the remote sent, counted on the remote's side, apart from the daemon.
class IntegrationCacheRemoteReads : public IntegrationCacheRemoteGone {
 protected:
  void SetUp() override {
    IntegrationCacheRemoteGone::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    sftp_log_ = tmp_ / "sftp.log";
    writeFile(tmp_ / "fake-ssh", "#!/bin/bash\nexec -a " + server_name_ +
                                     " /usr/lib/openssh/sftp-server -e -l DEBUG1 2>>" +
                                     sftp_log_ + "\n");
  }
  // Bytes of source_/rel the server has read out so far, each read clipped to
  // the file's size. Its log lines: `read "PATH" (handle N) off OFF len LEN`.
  uint64_t servedBytes(const std::string& rel, uint64_t size) {
    std::string log = readFile(sftp_log_);
    std::string key = "read \"" + source_ + "/" + rel + "\" (handle ";
    uint64_t total = 0;
    for (size_t at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
      unsigned long long off = 0, len = 0;
      size_t o = log.find(" off ", at);
      if (o == std::string::npos ||
          std::sscanf(log.c_str() + o, " off %llu len %llu", &off, &len) != 2) {
        ADD_FAILURE() << "unreadable sftp-server log line at " << at;
        continue;
      }
      if (off < size) total += std::min<uint64_t>(len, size - off);
    }
    return total;
  }
  std::string sftp_log_;
};

// One remote read per byte: a file a job has just read is copied from the page
// cache its read filled (through the job's open file), not read again.
TEST_F(IntegrationCacheRemoteReads, APromotionAfterAReadCopiesThePageCache) {
  constexpr uint64_t kSize = 8 << 20;
  writeRandomFile(source_ + "/data/shard.bin", kSize, 21);
  mountRemote();
  startDaemon();
  const std::string want = sha256File(source_ + "/data/shard.bin");
  ASSERT_EQ(sha256File(mnt_ + "/data/shard.bin"), want);  // the job's read
  EXPECT_EQ(servedBytes("data/shard.bin", kSize), kSize)
      << "the job's read should come from the remote once";
  // The job opens it again: the file held for the promotion stays held (sshfs
  // may read it again: its page cache is its own affair).
  ASSERT_EQ(sha256File(mnt_ + "/data/shard.bin"), want);
  const uint64_t by_the_job = servedBytes("data/shard.bin", kSize);

  CommandResult r = hs({"warm", mnt_ + "/data/shard.bin"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(statOf(mnt_ + "/data/shard.bin")["state"], "cached");
  EXPECT_EQ(servedBytes("data/shard.bin", kSize) - by_the_job, 0u)
      << "the promotion read the remote again";
  json p = daemon_->status()["cache"]["promoter"];
  EXPECT_EQ(p.value("read_page_cache_bytes", 0ull), kSize) << p.dump();
  EXPECT_EQ(p.value("read_remote_bytes", 1ull), 0u) << p.dump();
  EXPECT_EQ(sha256File(mnt_ + "/data/shard.bin"), want);  // now from the copy
  CommandResult status = hs({"status"});
  EXPECT_NE(status.out.find("read 8.0 MiB from the page cache, 0 B from the remote"),
            std::string::npos)
      << status.out;
}

// The pages went (memory pressure, here a new open of the sshfs file and
// POSIX_FADV_DONTNEED): the promotion reads the remote, each byte exactly once.
TEST_F(IntegrationCacheRemoteReads, APromotionAfterThePagesWentReadsTheRemoteOnce) {
  constexpr uint64_t kSize = (6 << 20) + 4321;
  writeRandomFile(source_ + "/data/shard.bin", kSize, 22);
  mountRemote();
  startDaemon();
  const std::string want = sha256File(source_ + "/data/shard.bin");
  ASSERT_EQ(sha256File(mnt_ + "/data/shard.bin"), want);
  dropPageCache(remote_ + "/data/shard.bin");
  const uint64_t before = servedBytes("data/shard.bin", kSize);

  CommandResult r = hs({"warm", mnt_ + "/data/shard.bin"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(statOf(mnt_ + "/data/shard.bin")["state"], "cached");
  EXPECT_EQ(servedBytes("data/shard.bin", kSize) - before, kSize);
  json p = daemon_->status()["cache"]["promoter"];
  EXPECT_EQ(p.value("read_page_cache_bytes", 1ull), 0u) << p.dump();
  EXPECT_EQ(p.value("read_remote_bytes", 0ull), kSize) << p.dump();
  EXPECT_EQ(sha256File(mnt_ + "/data/shard.bin"), want);
}

// The same through automatic placement, as a training job meets it: the job
// reads the file and closes it; a tick later placement promotes it, and the
// copy still comes from the page cache (the daemon kept the job's file open).
TEST_F(IntegrationCacheRemoteReads, PlacementPromotesAFileJustReadWithoutReadingItAgain) {
  constexpr uint64_t kSize = 4 << 20;
  writeRandomFile(source_ + "/data/shard.bin", kSize, 23);
  mountRemote();
  startDaemonWith({.mount = mnt_,
                   .extra_args = {"--scrub-rate", "0", "--placement", "auto", "--tick", "200ms"}});
  const std::string want = sha256File(source_ + "/data/shard.bin");
  ASSERT_EQ(sha256File(mnt_ + "/data/shard.bin"), want);  // opened, read whole, closed
  const uint64_t by_the_job = servedBytes("data/shard.bin", kSize);
  EXPECT_EQ(by_the_job, kSize);
  json st;
  for (int i = 0; i < 100; i++) {  // 10 s
    st = statOf(mnt_ + "/data/shard.bin");
    if (st.value("state", "") == "cached") break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_EQ(st.value("state", ""), "cached") << st.dump() << "\n" << daemon_->log();
  EXPECT_EQ(servedBytes("data/shard.bin", kSize), by_the_job);
  json p = daemon_->status()["cache"]["promoter"];
  EXPECT_EQ(p.value("read_page_cache_bytes", 0ull), kSize) << p.dump();
  EXPECT_EQ(p.value("read_remote_bytes", 1ull), 0u) << p.dump();
}


// A remote mounted again (sshfs restarted, NFS after a reboot) has a new st_dev
// and numbers its inodes afresh: a restart over it keeps every copy, and serves
// it, since keys name the remote by its path and copies are validated by size,
// mtime and ctime.
TEST_F(IntegrationCacheRemoteGone, ARestartAfterTheRemoteWasMountedAgainKeepsTheCache) {
  writeRandomFile(source_ + "/model/weights.bin", 2 << 20, 7);
  std::string want = sha256File(source_ + "/model/weights.bin");
  mountRemote();
  dev_t first = mountDevice(remote_);
  startDaemon("strict");
  ASSERT_EQ(hs({"warm", mnt_ + "/model/weights.bin"}).exit_code, 0);
  ASSERT_EQ(statOf(mnt_ + "/model/weights.bin")["state"], "cached");
  daemon_->stop();
  daemon_.reset();

  mountRemote();  // a second sshfs over the first: the same files under a new device
  ASSERT_NE(mountDevice(remote_), first);
  startDaemon("strict");
  json st = daemon_->status();
  EXPECT_EQ(st["cache"]["objects"], 1) << st.dump();
  EXPECT_EQ(statOf(mnt_ + "/model/weights.bin")["state"], "cached");
  EXPECT_EQ(sha256File(mnt_ + "/model/weights.bin"), want);
  st = daemon_->status();
  EXPECT_EQ(st["fuse"]["opens_cache"], 1) << st.dump();
  EXPECT_EQ(st["cache"]["stale_drops"], 0);
  EXPECT_EQ(daemon_->log().find("dropping object"), std::string::npos) << daemon_->log();
}

// A server that stops answering (sshfs then waits for it without end): what
// needs the remote fails within --remote-timeout instead of hanging, cached
// files keep being read in immutable mode, status answers; once the server
// answers again, so does the mount, with no copy dropped and no restart.
TEST_F(IntegrationCacheRemoteGone, AHungRemoteIsAnsweredWithinTheDeadline) {
  writeRandomFile(source_ + "/cached.bin", 1 << 20, 3);
  writeFile(source_ + "/uncached.txt", "remote only");
  std::string want = sha256File(source_ + "/cached.bin");
  mountRemote();
  startDaemon("immutable", {"--remote-timeout", "2s"});
  ASSERT_EQ(hs({"warm", mnt_ + "/cached.bin"}).exit_code, 0);
  ASSERT_EQ(sha256File(mnt_ + "/cached.bin"), want);  // the kernel knows its name now

  signalRemote("STOP");
  for (const auto& argv : {std::vector<std::string>{"stat", mnt_ + "/uncached.txt"},
                           std::vector<std::string>{"ls", mnt_}}) {
    auto t0 = std::chrono::steady_clock::now();
    CommandResult r = runCommand(argv, 30);
    double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(r.exit_code, 0) << argv[0] << ": " << r.out;
    EXPECT_NE(r.out.find("timed out"), std::string::npos) << argv[0] << ": " << r.out;
    EXPECT_LT(took, 10.0) << argv[0] << " waited past the 2 s deadline";
  }
  EXPECT_EQ(sha256File(mnt_ + "/cached.bin"), want);
  json st = daemon_->status();  // answers while calls are stuck in the remote
  EXPECT_GE(st["fuse"]["remote_timeouts"].get<uint64_t>(), 2u) << st.dump();
  EXPECT_GE(st["fuse"]["remote_calls_blocked"].get<uint64_t>(), 1u) << st.dump();

  signalRemote("CONT");
  EXPECT_EQ(readFile(mnt_ + "/uncached.txt"), "remote only");
  st = daemon_->status();
  EXPECT_EQ(st["cache"]["objects"], 1) << st.dump();
  EXPECT_EQ(st["cache"]["stale_drops"], 0);
}

// One syscall through the mount in a child process, so a hang cannot hang the
// test: its errno (0: it succeeded) and how long it took; a child still
// waiting after limit_s is killed (FUSE waits are killable) and reads -1.
struct TimedCall {
  int err = -1;
  double seconds = 0;
};
TimedCall callInChild(const std::function<int()>& op, double limit_s = 20) {
  auto t0 = std::chrono::steady_clock::now();
  auto since = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  pid_t pid = ::fork();
  if (pid == 0) ::_exit(op() < 0 ? errno : 0);
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (since() > limit_s) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return {.err = -1, .seconds = since()};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return {.err = WIFEXITED(status) ? WEXITSTATUS(status) : -1, .seconds = since()};
}

// Calls whose names the kernel already knows (a long ttl: no lookup goes out)
// reach their own handlers: unlink, rename, create, mkdir, chmod and readdir of
// a directory opened before the server stopped each fail with ETIMEDOUT within
// the deadline instead of hanging; the mount answers again once the server does.
// (Not getxattr: sshfs answers xattr calls itself, without the server.)
TEST_F(IntegrationCacheRemoteGone, HungRemoteNamespaceCallsFailWithinTheDeadline) {
  for (const char* f : {"a", "b", "x", "after"}) writeFile(source_ + "/" + f, f);
  fs::create_directories(source_ + "/d");
  writeFile(source_ + "/d/inside", "in");
  mountRemote();
  startDaemon("ttl=10m", {"--remote-timeout", "2s"});
  for (const char* f : {"a", "b", "x", "after", "d"}) ASSERT_GE(sizeOf(mnt_ + "/" + f), 0) << f;
  for (const char* f : {"c", "new", "nd"}) ASSERT_EQ(sizeOf(mnt_ + "/" + f), -1) << f;  // negative entries
  DIR* dir = ::opendir((mnt_ + "/d").c_str());
  ASSERT_NE(dir, nullptr) << std::strerror(errno);
  json before = daemon_->status();

  signalRemote("STOP");
  const std::string a = mnt_ + "/a", b = mnt_ + "/b", c = mnt_ + "/c", x = mnt_ + "/x",
                    created = mnt_ + "/new", made = mnt_ + "/nd";
  std::vector<std::pair<std::string, std::function<int()>>> calls = {
      {"unlink", [&] { return ::unlink(a.c_str()); }},
      {"rename", [&] { return ::rename(b.c_str(), c.c_str()); }},
      {"create", [&] { return ::open(created.c_str(), O_CREAT | O_WRONLY | O_EXCL, 0644); }},
      {"mkdir", [&] { return ::mkdir(made.c_str(), 0755); }},
      {"chmod", [&] { return ::chmod(x.c_str(), 0600); }},
      {"readdir",
       [&] {
         errno = 0;
         return ::readdir(dir) == nullptr && errno != 0 ? -1 : 0;
       }},
  };
  for (const auto& [name, op] : calls) {
    TimedCall r = callInChild(op);
    EXPECT_EQ(r.err, ETIMEDOUT) << name << ": " << (r.err > 0 ? std::strerror(r.err) : "hung");
    EXPECT_LT(r.seconds, 10.0) << name << " waited past the 2 s deadline";
  }
  json st = daemon_->status();  // one timeout per call: none went through a lookup
  EXPECT_EQ(st["fuse"]["remote_timeouts"].get<uint64_t>(),
            before["fuse"]["remote_timeouts"].get<uint64_t>() + calls.size())
      << st.dump();

  signalRemote("CONT");
  ::closedir(dir);
  EXPECT_EQ(readFile(mnt_ + "/after"), "after");
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(mnt_ + "/d")) names.push_back(e.path().filename());
  EXPECT_EQ(names, std::vector<std::string>{"inside"});
}

// With --mount elsewhere, a remote that died (its server killed: sshfs then
// unmounts itself) and is mounted again at its path is picked up by the running
// daemon: names resolve under the new mount, the cached file is served from its
// copy again, no copy is dropped, no restart.
TEST_F(IntegrationCacheRemoteGone, ARemoteMountedAgainIsServedWithoutARestart) {
  writeRandomFile(source_ + "/cached.bin", 1 << 20, 8);
  writeFile(source_ + "/plain.txt", "plain");
  std::string want = sha256File(source_ + "/cached.bin");
  mountRemote();
  startDaemon("strict", {"--remote-timeout", "2s"});
  ASSERT_EQ(hs({"warm", mnt_ + "/cached.bin"}).exit_code, 0);
  ASSERT_EQ(sha256File(mnt_ + "/cached.bin"), want);
  ASSERT_EQ(readFile(mnt_ + "/plain.txt"), "plain");

  killRemote();
  ASSERT_FALSE(isMounted(remote_));
  EXPECT_EQ(readFile(mnt_ + "/plain.txt"), "");  // the old root is dead
  mountRemote();
  bool back = false;
  for (int i = 0; i < 100 && !back; i++) {
    back = readFile(mnt_ + "/plain.txt") == "plain";
    if (!back) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(back) << daemon_->log();
  EXPECT_EQ(sha256File(mnt_ + "/cached.bin"), want);
  EXPECT_EQ(statOf(mnt_ + "/cached.bin")["state"], "cached");
  json st = daemon_->status();
  EXPECT_EQ(st["cache"]["objects"], 1) << st.dump();
  EXPECT_EQ(st["cache"]["stale_drops"], 0) << st.dump();
  EXPECT_GE(st["fuse"]["opens_cache"].get<uint64_t>(), 2u) << st.dump();
  EXPECT_NE(daemon_->log().find("is mounted again"), std::string::npos) << daemon_->log();
}
}  // namespace
}  // namespace hotshard::testing
