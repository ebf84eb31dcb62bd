// The worker side of restart without unmount (docs/restart.md): the test plays
// the supervisor. It mounts /dev/fuse itself (fuse::mountFuse), keeps the fd,
// and starts `hotshard run --fuse-fd=N --ready-fd=M` workers on it: a fresh
// one, then successors with --takeover after a SIGKILL or a SIGUSR2 hand-over.
// The mount is lazily unmounted and its connection aborted in every path.
#include <dirent.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "fuse/mount.h"
#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationTakeoverWorker : public MountFixture {
 protected:
  void SetUp() override {
    MountFixture::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    state_dir_ = tmp_ / "state";
  }

  void TearDown() override {
    workers_.clear();  // SIGTERM: a live worker unmounts
    if (conn_dev_ != 0 && mountDevice(mnt_) == conn_dev_) {
      fuse::abortConnection(conn_dev_);
      ::umount2(mnt_.c_str(), MNT_DETACH);
    }
    if (fuse_fd_ >= 0) ::close(fuse_fd_);
  }

  // What a supervisor does first: mount, and keep the /dev/fuse fd.
  void mountConnection() {
    auto fd = fuse::mountFuse(mnt_, "hotshard:" + remote_);
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    fuse_fd_ = *fd;
    conn_dev_ = mountDevice(mnt_);
    ASSERT_NE(conn_dev_, 0u);
  }

  // Starts a worker on the connection; waits for its "ready" line (at most 15 s)
  // and for its control socket. Returns the ms from start to "ready".
  double startWorker(bool takeover, std::vector<std::string> extra = {}) {
    int ready[2];
    EXPECT_EQ(::pipe2(ready, O_CLOEXEC), 0);
    std::vector<std::string> args = {"--fuse-fd",   std::to_string(fuse_fd_),
                                     "--ready-fd",  std::to_string(ready[1]),
                                     "--state-dir", state_dir_};
    if (takeover) args.push_back("--takeover");
    args.insert(args.end(), extra.begin(), extra.end());
    auto start = std::chrono::steady_clock::now();
    workers_.push_back(
        std::make_unique<DaemonProcess>(DaemonProcess::Options{.remote = remote_,
                                                               .mount = mnt_,
                                                               .cache = cache_,
                                                               .consistency = consistency_,
                                                               .extra_args = args,
                                                               .inherit_fds = {fuse_fd_, ready[1]}},
                                        tmp_.path()));
    bool started = workers_.back()->start();
    ::close(ready[1]);
    std::string line;
    pollfd p{.fd = ready[0], .events = POLLIN, .revents = 0};
    char buf[64];
    while (started && ::poll(&p, 1, 15000) == 1) {
      ssize_t n = ::read(ready[0], buf, sizeof(buf));
      if (n <= 0) break;
      line.append(buf, n);
    }
    double ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ::close(ready[0]);
    EXPECT_TRUE(started) << workers_.back()->log();
    EXPECT_EQ(line, "ready\n") << workers_.back()->log();
    return ms;
  }

  DaemonProcess& worker() { return *workers_.back(); }

  // A writer that joined the open cache copy (docs/cache.md, "one file, one
  // truth") across a takeover by `sig`: the successor's store keeps the copy as
  // adopted, the inode takes it back (the kernel's backing id is that file), and
  // every byte reaches the remote: those written before the takeover and those
  // written through the same fd after it.
  void adoptedCopyAcrossATakeover(int sig) {
    const std::vector<std::string> extra = {"--scrub-rate", "0",
                                            "--placement", "manual"};
    std::string content(64 << 10, 'r');
    writeFile(remote_ + "/f", content);
    ASSERT_NO_FATAL_FAILURE(mountConnection());
    startWorker(/*takeover=*/false, extra);
    ASSERT_FALSE(HasFailure());
    CommandResult warm =
        runCommand({hotshardBinary(), "warm", mnt_ + "/f", "--socket", worker().socket()});
    ASSERT_EQ(warm.exit_code, 0) << warm.out;
    int reader = ::open((mnt_ + "/f").c_str(), O_RDONLY);  // passes through to the copy
    ASSERT_GE(reader, 0);
    int writer = ::open((mnt_ + "/f").c_str(), O_WRONLY);  // joins it: adopted
    ASSERT_GE(writer, 0);
    ASSERT_EQ(worker().status()["fuse"]["opens_cache"].get<uint64_t>(), 2u)
        << worker().status().dump();
    const std::string before(4096, 'B'), after(4096, 'A');
    ASSERT_EQ(::pwrite(writer, before.data(), before.size(), 8192), 4096);
    content.replace(8192, 4096, before);

    ASSERT_EQ(::kill(worker().pid(), sig), 0);
    ASSERT_EQ(worker().waitExit(20), sig == SIGKILL ? 128 + SIGKILL : 75) << worker().log();
    startWorker(/*takeover=*/true, extra);
    ASSERT_FALSE(HasFailure());

    // Through the same fd after the takeover, and past the end.
    ASSERT_EQ(::pwrite(writer, after.data(), after.size(), 32768), 4096);
    content.replace(32768, 4096, after);
    ASSERT_EQ(::pwrite(writer, after.data(), after.size(), 65536), 4096);
    content += after;
    EXPECT_TRUE(preadAll(reader, content.size() + 1) == content);  // one truth across it
    EXPECT_EQ(::close(writer), 0) << std::strerror(errno);  // its flush writes back
    EXPECT_TRUE(readFile(remote_ + "/f") == content) << readFile(remote_ + "/f").size() << " bytes";
    EXPECT_EQ(::close(reader), 0);
    EXPECT_TRUE(readFile(remote_ + "/f") == content) << readFile(remote_ + "/f").size() << " bytes";
    EXPECT_TRUE(readFile(mnt_ + "/f") == content) << readFile(mnt_ + "/f").size() << " bytes";
    EXPECT_FALSE(fs::exists(cache_ + "/lost+found") && !fs::is_empty(cache_ + "/lost+found"))
        << worker().log();
    std::string log = worker().log();
    EXPECT_NE(log.find("stays the write-back buffer"), std::string::npos) << log;
    EXPECT_EQ(log.find("is not carried on"), std::string::npos) << log;
    EXPECT_EQ(worker().stop(), 0) << worker().log();
  }

  static std::string preadAll(int fd, size_t max) {
    std::string out(max, '\0');
    ssize_t n = ::pread(fd, out.data(), max, 0);
    out.resize(n < 0 ? 0 : static_cast<size_t>(n));
    return out;
  }

  // The end of the connection a worker unmounted (SIGTERM): the next
  // mountConnection makes a new one.
  void connectionEnded() {
    if (fuse_fd_ >= 0) ::close(fuse_fd_);
    fuse_fd_ = -1;
    conn_dev_ = 0;
  }

  std::string state_dir_;
  std::string consistency_ = "strict";
  int fuse_fd_ = -1;
  dev_t conn_dev_ = 0;
  std::vector<std::unique_ptr<DaemonProcess>> workers_;
};

TEST_F(IntegrationTakeoverWorker, ServesAFreshConnectionItDidNotMount) {
  writeRandomFile(remote_ + "/a", (1 << 20) + 3, 7);
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(sha256File(mnt_ + "/a"), sha256File(remote_ + "/a"));
  json st = worker().status();
  EXPECT_TRUE(st["passthrough"].get<bool>()) << st.dump();
  // SIGTERM keeps its meaning: the worker unmounts and exits 0.
  EXPECT_EQ(worker().stop(), 0) << worker().log();
  EXPECT_NE(mountDevice(mnt_), conn_dev_);
}

// Reads fd from offset `from` to the end; returns the bytes.
std::string readFrom(int fd, off_t from) {
  std::string out;
  char buf[1 << 16];
  for (off_t off = from;;) {
    ssize_t n = ::pread(fd, buf, sizeof(buf), off);
    if (n <= 0) {
      EXPECT_EQ(n, 0) << std::strerror(errno);
      break;
    }
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

std::string sha256Of(const std::string& bytes) {
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), md);
  char hex[2 * SHA256_DIGEST_LENGTH + 1];
  for (int i = 0; i < SHA256_DIGEST_LENGTH; i++) std::snprintf(hex + 2 * i, 3, "%02x", md[i]);
  return hex;
}

std::set<std::string> namesIn(DIR* dir) {
  std::set<std::string> names;
  while (const dirent* e = ::readdir(dir)) names.insert(e->d_name);
  return names;
}

TEST_F(IntegrationTakeoverWorker, SigkillThenTakeoverKeepsOpenFilesNamesAndDirectories) {
  writeRandomFile(remote_ + "/a", 8 << 20, 11);
  writeRandomFile(remote_ + "/b", 4096, 12);
  writeRandomFile(remote_ + "/dir/c", 100000, 13);
  writeRandomFile(remote_ + "/dir/d", 10, 14);
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false);
  ASSERT_FALSE(HasFailure());

  int a = ::open((mnt_ + "/a").c_str(), O_RDONLY);
  ASSERT_GE(a, 0);
  std::string head(1 << 20, '\0');
  ASSERT_EQ(::pread(a, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  struct stat b_before;
  ASSERT_EQ(::stat((mnt_ + "/b").c_str(), &b_before), 0);
  ASSERT_EQ(sha256File(mnt_ + "/dir/c"), sha256File(remote_ + "/dir/c"));
  DIR* dir = ::opendir((mnt_ + "/dir").c_str());  // read only after the takeover
  ASSERT_NE(dir, nullptr);

  ASSERT_EQ(::kill(worker().pid(), SIGKILL), 0);
  ASSERT_EQ(worker().waitExit(10), 128 + SIGKILL);
  auto killed = std::chrono::steady_clock::now();
  // A lookup the kernel cannot answer from its caches waits for the successor:
  // kill -9 to its answer.
  writeRandomFile(remote_ + "/late", 10, 15);
  auto first = std::async(std::launch::async, [&] {
    struct stat st;
    int rc = ::stat((mnt_ + "/late").c_str(), &st);
    return std::make_pair(rc, std::chrono::steady_clock::now());
  });
  startWorker(/*takeover=*/true);
  ASSERT_FALSE(HasFailure());
  auto [rc, answered] = first.get();
  EXPECT_EQ(rc, 0);
  if (std::getenv("HS_SHOW_LOG")) std::printf("%s\n", worker().log().c_str());
  std::printf("kill -9 -> first request answered by the successor: %.0f ms\n",
              std::chrono::duration<double, std::milli>(answered - killed).count());

  // The open file reads on, byte for byte.
  EXPECT_EQ(sha256Of(head + readFrom(a, head.size())), sha256File(remote_ + "/a"));
  // A new open of the file open across the kill reuses its backing.
  EXPECT_EQ(sha256File(mnt_ + "/a"), sha256File(remote_ + "/a"));
  ::close(a);
  EXPECT_EQ(sha256File(mnt_ + "/a"), sha256File(remote_ + "/a"));
  // Names looked up before the kill, and new ones.
  struct stat b_after;
  ASSERT_EQ(::stat((mnt_ + "/b").c_str(), &b_after), 0);
  EXPECT_EQ(b_after.st_ino, b_before.st_ino);
  EXPECT_EQ(sha256File(mnt_ + "/dir/c"), sha256File(remote_ + "/dir/c"));
  EXPECT_EQ(sha256File(mnt_ + "/dir/d"), sha256File(remote_ + "/dir/d"));
  std::set<std::string> top;
  for (const auto& e : fs::directory_iterator(mnt_)) top.insert(e.path().filename());
  EXPECT_EQ(top, (std::set<std::string>{"a", "b", "dir", "late"}));
  // The directory handle of the predecessor: read on, no crash.
  EXPECT_EQ(namesIn(dir), (std::set<std::string>{".", "..", "c", "d"}));
  ::closedir(dir);
  EXPECT_TRUE(worker().running());
  json st = worker().status();
  ASSERT_FALSE(st.contains("error")) << st.dump();
  // Every node id resolved, and the open across the kill shared its backing
  // (no retired inode: a second backing would have been refused, EBUSY).
  EXPECT_EQ(st["fuse"]["cache_conflicts"].get<uint64_t>(), 0u) << st.dump();
  EXPECT_GE(st["fuse"]["opens_passthrough"].get<uint64_t>(), 2u) << st.dump();
  std::string log = worker().log();
  EXPECT_NE(log.find("node ids adopted"), std::string::npos) << log;
  EXPECT_EQ(log.find("not in the inode table"), std::string::npos) << log;
  EXPECT_EQ(worker().stop(), 0) << worker().log();
}

// Names of one getdents64(2) call of at most `bytes` on fd (linux_dirent64
// records); empty at the end of the directory.
std::vector<std::string> getdentsOnce(int fd, size_t bytes) {
  std::vector<char> buf(bytes);
  long n = ::syscall(SYS_getdents64, fd, buf.data(), buf.size());
  EXPECT_GE(n, 0) << std::strerror(errno);
  std::vector<std::string> names;
  for (long at = 0; at < n;) {
    const auto* d = reinterpret_cast<const struct dirent64*>(buf.data() + at);
    names.emplace_back(d->d_name);
    at += d->d_reclen;
  }
  return names;
}

// In immutable mode the names, attributes and listings a fresh worker serves
// come from the persistent namespace (fuse/namespace_cache.h): its inodes are
// known by name alone (kNamedDev), its directory handles are odd numbers whose
// offsets index the namespace's listing. A SIGKILL in the middle of such a
// listing, with a file learnt from the namespace open: the successor goes on
// with the listing where the kernel left it (no name twice, none missing), the
// namespace's inodes stat and open, and the open file reads on byte for byte.
TEST_F(IntegrationTakeoverWorker, NamespaceListingsAndInodesCarryAcrossASigkill) {
  consistency_ = "immutable";
  const std::vector<std::string> extra = {"--scrub-rate", "0", "--placement", "manual"};
  constexpr int kNames = 600;  // several READDIR replies of a page each
  std::multiset<std::string> want = {".", "..", "model.bin", "sub"};  // d's
  for (int i = 0; i < kNames; i++) {
    char name[32];
    std::snprintf(name, sizeof(name), "entry-%04d", i);
    writeFile(remote_ + "/d/" + name, std::string(static_cast<size_t>(i % 17 + 1), 'e'));
    want.insert(name);
  }
  writeRandomFile(remote_ + "/d/model.bin", 4 << 20, 51);
  writeRandomFile(remote_ + "/d/sub/cached.bin", 2 << 20, 52);
  writeFile(remote_ + "/d/sub/deep", "deep");
  const std::string model = sha256File(remote_ + "/d/model.bin");
  const std::string cached = sha256File(remote_ + "/d/sub/cached.bin");

  // A first mount learns the tree into the namespace (in the cache directory).
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false, extra);
  ASSERT_FALSE(HasFailure());
  for (const auto& e : fs::recursive_directory_iterator(mnt_)) (void)e.symlink_status();
  ASSERT_EQ(sha256File(mnt_ + "/d/model.bin"), model);
  CommandResult warm = runCommand(
      {hotshardBinary(), "warm", mnt_ + "/d/sub/cached.bin", "--socket", worker().socket()});
  ASSERT_EQ(warm.exit_code, 0) << warm.out;
  ASSERT_EQ(worker().stop(), 0) << worker().log();  // unmounts: the kernel forgets it all
  connectionEnded();
  // Immutable: a name added behind the mount is not in the namespace's listing,
  // which tells a listing served from it from one read from the remote.
  writeFile(remote_ + "/d/zz-late", "late");

  // A fresh mount: its names come from the namespace.
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false, extra);
  ASSERT_FALSE(HasFailure());
  struct stat entry_before;
  ASSERT_EQ(::stat((mnt_ + "/d/entry-0007").c_str(), &entry_before), 0);
  int dir = ::open((mnt_ + "/d").c_str(), O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 0) << std::strerror(errno);
  std::multiset<std::string> got;
  for (int i = 0; i < 2; i++) {
    for (auto& n : getdentsOnce(dir, 1024)) got.insert(std::move(n));
  }
  ASSERT_GT(got.size(), 2u);
  ASSERT_LT(got.size(), want.size() / 2) << "the listing must still be under way at the kill";
  int open_model = ::open((mnt_ + "/d/model.bin").c_str(), O_RDONLY);
  ASSERT_GE(open_model, 0) << std::strerror(errno);
  std::string head(1 << 20, '\0');
  ASSERT_EQ(::pread(open_model, head.data(), head.size(), 0), static_cast<ssize_t>(head.size()));
  int open_cached = ::open((mnt_ + "/d/sub/cached.bin").c_str(), O_RDONLY);  // the store's copy
  ASSERT_GE(open_cached, 0) << std::strerror(errno);
  std::string cached_head(4096, '\0');
  ASSERT_EQ(::pread(open_cached, cached_head.data(), cached_head.size(), 0), 4096);
  ASSERT_EQ(worker().status()["fuse"]["opens_cache"].get<uint64_t>(), 1u) << worker().status();

  ASSERT_EQ(::kill(worker().pid(), SIGKILL), 0);
  ASSERT_EQ(worker().waitExit(10), 128 + SIGKILL);
  startWorker(/*takeover=*/true, extra);
  ASSERT_FALSE(HasFailure());

  // The listing goes on where the kernel left it: every name once, and only
  // the namespace's (no zz-late).
  for (std::vector<std::string> more; !(more = getdentsOnce(dir, 1024)).empty();) {
    for (auto& n : more) got.insert(std::move(n));
  }
  ::close(dir);
  EXPECT_EQ(got, want);
  // The open file reads on; the namespace's inodes stat and open.
  EXPECT_EQ(sha256Of(head + readFrom(open_model, head.size())), model);
  EXPECT_EQ(sha256File(mnt_ + "/d/model.bin"), model);
  ::close(open_model);
  EXPECT_EQ(sha256Of(cached_head + readFrom(open_cached, cached_head.size())), cached);
  EXPECT_EQ(sha256File(mnt_ + "/d/sub/cached.bin"), cached);
  ::close(open_cached);
  struct stat entry_after;
  ASSERT_EQ(::stat((mnt_ + "/d/entry-0007").c_str(), &entry_after), 0) << std::strerror(errno);
  EXPECT_EQ(entry_after.st_ino, entry_before.st_ino);
  EXPECT_EQ(entry_after.st_size, 8);
  EXPECT_EQ(readFile(mnt_ + "/d/entry-0007"), std::string(8, 'e'));
  EXPECT_EQ(readFile(mnt_ + "/d/entry-0598"), std::string(598 % 17 + 1, 'e'));
  EXPECT_EQ(readFile(mnt_ + "/d/sub/deep"), "deep");
  json st = worker().status();
  ASSERT_FALSE(st.contains("error")) << st.dump();
  std::string log = worker().log();
  EXPECT_NE(log.find("node ids adopted"), std::string::npos) << log;
  EXPECT_EQ(log.find("not in the inode table"), std::string::npos) << log;
  EXPECT_EQ(log.find("no longer in the namespace"), std::string::npos) << log;
  EXPECT_EQ(worker().stop(), 0) << worker().log();
}

// A file open from the remote across a takeover that was cached meanwhile: the
// successor knows its attributes from the namespace and finds a valid copy, so
// a new open needs no walk to the remote, but the inherited backing is the
// remote file, which only a walk reopens. The inode is retired (ESTALE): the
// kernel looks the name up again and the new inode opens the copy.
TEST_F(IntegrationTakeoverWorker, ARemoteBackingCachedMeanwhileIsRetiredNotReopenedBlind) {
  consistency_ = "immutable";
  const std::vector<std::string> extra = {"--scrub-rate", "0", "--placement", "manual"};
  writeRandomFile(remote_ + "/f", 1 << 20, 61);
  const std::string want = sha256File(remote_ + "/f");
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false, extra);
  ASSERT_FALSE(HasFailure());
  int held = ::open((mnt_ + "/f").c_str(), O_RDONLY);  // the remote file is its backing
  ASSERT_GE(held, 0) << std::strerror(errno);
  CommandResult warm =
      runCommand({hotshardBinary(), "warm", mnt_ + "/f", "--socket", worker().socket()});
  ASSERT_EQ(warm.exit_code, 0) << warm.out;

  ASSERT_EQ(::kill(worker().pid(), SIGKILL), 0);
  ASSERT_EQ(worker().waitExit(10), 128 + SIGKILL);
  startWorker(/*takeover=*/true, extra);
  ASSERT_FALSE(HasFailure());
  // A successor that died in the open would leave it waiting without end (the
  // request was read; nothing here starts another worker): past 20 s the
  // connection is aborted.
  std::atomic<bool> answered{false};
  std::thread watchdog([&] {
    for (int i = 0; i < 2000 && !answered; i++) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (!answered) fuse::abortConnection(conn_dev_);
  });
  CommandResult sum = runCommand({"sha256sum", mnt_ + "/f"}, 30);
  answered = true;
  watchdog.join();
  EXPECT_EQ(sum.out.substr(0, 64), want) << sum.out;
  ASSERT_TRUE(worker().running()) << worker().log();
  EXPECT_EQ(sha256Of(readFrom(held, 0)), want);
  ::close(held);
  json st = worker().status();
  ASSERT_FALSE(st.contains("error")) << st.dump();
  EXPECT_EQ(st["fuse"]["opens_cache"].get<uint64_t>(), 1u) << st.dump();
  EXPECT_EQ(worker().stop(), 0) << worker().log();
}

TEST_F(IntegrationTakeoverWorker, Sigusr2HandsOverWithoutUnmounting) {
  writeRandomFile(remote_ + "/a", 4 << 20, 21);
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false);
  ASSERT_FALSE(HasFailure());
  int a = ::open((mnt_ + "/a").c_str(), O_RDONLY);
  ASSERT_GE(a, 0);
  std::string head(4096, '\0');
  ASSERT_EQ(::pread(a, head.data(), head.size(), 0), 4096);

  ASSERT_EQ(::kill(worker().pid(), SIGUSR2), 0);
  EXPECT_EQ(worker().waitExit(20), 75) << worker().log();
  EXPECT_EQ(mountDevice(mnt_), conn_dev_);  // still mounted, same connection

  double ms = startWorker(/*takeover=*/true);
  ASSERT_FALSE(HasFailure());
  std::printf("successor after SIGUSR2: ready in %.0f ms\n", ms);
  EXPECT_EQ(sha256Of(head + readFrom(a, head.size())), sha256File(remote_ + "/a"));
  EXPECT_EQ(sha256File(mnt_ + "/a"), sha256File(remote_ + "/a"));
  ::close(a);
  EXPECT_EQ(worker().stop(), 0) << worker().log();
}

// The crash test in small (the supervisor's suite runs it 50 times): a reader
// streams a file and opens a new one every 100 ms while the worker is killed
// (or, every third time, hands over on SIGUSR2) and is taken over, 10 times.
// No error, no wrong byte, no open waits over 5 s.
TEST_F(IntegrationTakeoverWorker, TenTakeoversUnderAStreamingReader) {
  writeRandomFile(remote_ + "/stream", 32 << 20, 31);
  for (int i = 0; i < 40; i++) writeRandomFile(remote_ + "/f" + std::to_string(i), 8192, 100 + i);
  const std::string want = sha256File(remote_ + "/stream");
  std::vector<std::string> want_f;
  for (int i = 0; i < 40; i++) want_f.push_back(sha256File(remote_ + "/f" + std::to_string(i)));
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  startWorker(/*takeover=*/false);
  ASSERT_FALSE(HasFailure());

  std::atomic<bool> done{false};
  std::atomic<int> errors{0}, passes{0}, opens{0};
  std::atomic<double> slowest_open_ms{0};
  std::string first_error;
  std::mutex error_mu;
  auto fail = [&](const std::string& what) {
    errors++;
    std::lock_guard lock(error_mu);
    if (first_error.empty()) first_error = what;
  };
  std::thread streamer([&] {
    while (!done) {
      int fd = ::open((mnt_ + "/stream").c_str(), O_RDONLY);
      if (fd < 0) {
        fail(std::string("open stream: ") + std::strerror(errno));
        continue;
      }
      if (sha256Of(readFrom(fd, 0)) != want) fail("stream: wrong bytes");
      ::close(fd);
      passes++;
    }
  });
  std::thread opener([&] {
    for (int i = 0; !done; i = (i + 1) % 40) {
      auto t0 = std::chrono::steady_clock::now();
      std::string got = sha256File(mnt_ + "/f" + std::to_string(i));
      double ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      if (ms > slowest_open_ms.load()) slowest_open_ms = ms;
      if (got != want_f[i]) fail("f" + std::to_string(i) + ": " + got);
      opens++;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  for (int round = 0; round < 10 && !HasFailure(); round++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    // Every third round a hand-over (SIGUSR2, exit 75) instead of a crash.
    bool hand_over = round % 3 == 2;
    ASSERT_EQ(::kill(worker().pid(), hand_over ? SIGUSR2 : SIGKILL), 0);
    ASSERT_EQ(worker().waitExit(20), hand_over ? 75 : 128 + SIGKILL) << worker().log();
    workers_.erase(workers_.begin(), workers_.end() - 1);
    startWorker(/*takeover=*/true);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  done = true;
  streamer.join();
  opener.join();
  std::printf("10 takeovers: %d stream passes, %d opens, slowest open %.0f ms\n", passes.load(),
              opens.load(), slowest_open_ms.load());
  EXPECT_EQ(errors.load(), 0) << first_error << "\n" << worker().log();
  EXPECT_LE(slowest_open_ms.load(), 5000.0);
  EXPECT_GT(passes.load(), 0);
  EXPECT_EQ(worker().stop(), 0) << worker().log();
}

// A writer that joined the open cache copy (docs/cache.md, "one file, one
// truth") across a takeover: the successor's store keeps the copy as adopted,
// the inode takes it back (the kernel's backing id is the same file), and the
// last release writes every byte to the remote: those written before the
// takeover and those written through the same fd after it.
TEST_F(IntegrationTakeoverWorker, SigkillKeepsEveryWriteOfAnAdoptedCopy) {
  adoptedCopyAcrossATakeover(SIGKILL);
}

TEST_F(IntegrationTakeoverWorker, Sigusr2KeepsEveryWriteOfAnAdoptedCopy) {
  adoptedCopyAcrossATakeover(SIGUSR2);
}

// Over the remote's own path the worker cannot open the remote: the supervisor
// passes the fd it opened before mounting (--remote-fd).
TEST_F(IntegrationTakeoverWorker, OverTheRemoteServesTheRemoteFdItInherits) {
  writeRandomFile(remote_ + "/a", 100000, 41);
  const std::string want = sha256File(remote_ + "/a");
  int remote_fd = ::open(remote_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(remote_fd, 0);
  auto fd = fuse::mountFuse(remote_, "hotshard:" + remote_);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  fuse_fd_ = *fd;
  conn_dev_ = mountDevice(remote_);
  mnt_ = remote_;  // TearDown unmounts it there
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  workers_.push_back(std::make_unique<DaemonProcess>(
      DaemonProcess::Options{.remote = remote_,
                             .cache = cache_,
                             .extra_args = {"--fuse-fd", std::to_string(fuse_fd_), "--remote-fd",
                                            std::to_string(remote_fd), "--ready-fd",
                                            std::to_string(ready[1]), "--state-dir", state_dir_},
                             .inherit_fds = {fuse_fd_, remote_fd, ready[1]}},
      tmp_.path()));
  bool started = workers_.back()->start();
  ::close(ready[1]);
  ::close(ready[0]);
  ::close(remote_fd);
  ASSERT_TRUE(started) << worker().log();
  EXPECT_EQ(sha256File(remote_ + "/a"), want);  // through the mount, from the covered remote
  EXPECT_EQ(worker().stop(), 0) << worker().log();
}

TEST_F(IntegrationTakeoverWorker, TakeoverWithoutStateExitsThree) {
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  ASSERT_EQ(::fcntl(fuse_fd_, F_SETFD, 0), 0);  // inherited by the command below
  CommandResult r =
      runCommand({hotshardBinary(), "run", "--foreground", "--remote", remote_, "--mount", mnt_,
                  "--cache", cache_, "--metrics", "off", "--control-socket", tmp_ / "control.sock",
                  "--fuse-fd", std::to_string(fuse_fd_), "--takeover", "--state-dir", state_dir_});
  ::fcntl(fuse_fd_, F_SETFD, FD_CLOEXEC);
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("no takeover state"), std::string::npos) << r.out;
}

TEST_F(IntegrationTakeoverWorker, RefusesAnFdThatIsNotDevFuse) {
  ASSERT_NO_FATAL_FAILURE(mountConnection());
  int null = ::open("/dev/null", O_RDWR);  // inherited by the child below
  CommandResult r =
      runCommand({hotshardBinary(), "run", "--foreground", "--remote", remote_, "--mount", mnt_,
                  "--cache", cache_, "--metrics", "off", "--fuse-fd", std::to_string(null)});
  ::close(null);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("is not /dev/fuse"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hotshard::testing
