// "One file, one truth" (docs/cache.md) through the real mount: with a warmed
// file whose cache copy is the open backing, every open sees every write made
// through the mount as soon as write() returns, locks exclude across all
// opens, an open file can be reopened through /proc/self/fd, and a crash with
// writes only in the copy loses none of them. Each scenario runs on a plain
// directory first; the mount must answer what the native file system does.
#include <fcntl.h>
#include <linux/falloc.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationOneTruth : public MountFixture {
 protected:
  void startDaemon() {
    startDaemonWith({.mount = mnt_,
                     .consistency = "strict",
                     .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }
  // rel on the remote with `content`, warmed: the next first open passes
  // through to the cache copy.
  void warmed(const std::string& rel, const std::string& content) {
    writeFile(remote_ + "/" + rel, content);
    ASSERT_EQ(hs({"warm", mnt_ + "/" + rel}).exit_code, 0);
    ASSERT_EQ(statOf(mnt_ + "/" + rel)["state"], "cached");
  }
  // A reader of rel's copy, then a writer that joins it: {reader, writer}.
  std::pair<int, int> readerThenWriter(const std::string& rel) {
    int reader = ::open((mnt_ + "/" + rel).c_str(), O_RDONLY);
    int writer = ::open((mnt_ + "/" + rel).c_str(), O_WRONLY);
    return {reader, writer};
  }
  uint64_t cacheOpens() { return daemon_->status()["fuse"]["opens_cache"].get<uint64_t>(); }
  uint64_t conflicts() { return daemon_->status()["fuse"]["cache_conflicts"].get<uint64_t>(); }
  // A native twin of a file, in a plain directory beside the remote.
  std::string native(const std::string& name, const std::string& content) {
    fs::create_directories(tmp_ / "native");
    std::string path = tmp_ / ("native/" + name);
    writeFile(path, content);
    return path;
  }
};

std::string preadAll(int fd) {
  char buf[256];
  ssize_t n = ::pread(fd, buf, sizeof(buf), 0);
  return n < 0 ? "error " + std::to_string(errno) : std::string(buf, static_cast<size_t>(n));
}

// Writes `data` at offset 0 of path through a descriptor of its own, opened
// with `flags`; the close is checked (it reports a failed write-back).
int writeThrough(const std::string& path, int flags, const std::string& data) {
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return errno;
  int err = ::pwrite(fd, data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()) ? 0 : errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

// What a reader holding `path` open sees of writes made through other descriptors.
struct Seen {
  std::string after_notrunc;  // pread of the reader after "NEW" at 0, no O_TRUNC
  std::string mapped;         // its MAP_SHARED mapping, made before the write
  off_t size_after_trunc = -1;
  std::string after_trunc;    // after O_TRUNC and "x"
  bool operator==(const Seen&) const = default;
};

// after_writer(stage) runs once each writer has closed (stage 1: notrunc, 2: trunc).
Seen readerSeesWrites(const std::string& path, const std::function<void(int)>& after_writer) {
  Seen seen;
  int fd3 = ::open(path.c_str(), O_RDONLY);
  if (fd3 < 0) return seen;
  void* map = ::mmap(nullptr, 11, PROT_READ, MAP_SHARED, fd3, 0);
  EXPECT_NE(map, MAP_FAILED) << std::strerror(errno);
  EXPECT_EQ(writeThrough(path, O_WRONLY, "NEW"), 0);
  after_writer(1);
  seen.after_notrunc = preadAll(fd3);
  if (map != MAP_FAILED) {
    seen.mapped.assign(static_cast<const char*>(map), 11);
    ::munmap(map, 11);
  }
  EXPECT_EQ(writeThrough(path, O_WRONLY | O_TRUNC, "x"), 0);
  after_writer(2);
  struct stat st {};
  if (::fstat(fd3, &st) == 0) seen.size_after_trunc = st.st_size;
  seen.after_trunc = preadAll(fd3);
  ::close(fd3);
  return seen;
}

TEST_F(IntegrationOneTruth, AReaderOfTheCopySeesEveryWriteMadeThroughTheMount) {
  Seen want = readerSeesWrites(native("t", "old-old-old"), [](int) {});
  ASSERT_EQ(want, (Seen{"NEW-old-old", "NEW-old-old", 1, "x"}));

  startDaemon();
  warmed("t", "old-old-old");
  uint64_t cache_opens = cacheOpens();
  Seen got = readerSeesWrites(mnt_ + "/t", [&](int stage) {
    // After the writer's close the remote itself has the bytes (close-to-open
    // for other hosts), read directly, not through the mount.
    EXPECT_EQ(readFile(remote_ + "/t"), stage == 1 ? "NEW-old-old" : "x") << "stage " << stage;
  });
  EXPECT_EQ(got.after_notrunc, want.after_notrunc);
  EXPECT_EQ(got.mapped, want.mapped);
  EXPECT_EQ(got.size_after_trunc, want.size_after_trunc);
  EXPECT_EQ(got.after_trunc, want.after_trunc);
  EXPECT_GT(cacheOpens(), cache_opens) << "the reader did not pass through to the copy";
  EXPECT_EQ(conflicts(), 0u) << "an open was retired: two kernel inodes for one file";
  EXPECT_EQ(readFile(remote_ + "/t"), "x");
  EXPECT_EQ(readFile(mnt_ + "/t"), "x");
}

// A lock on the whole file without waiting: flock, or a POSIX record lock.
int lockNow(int fd, bool posix, bool exclusive) {
  if (!posix) return ::flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB);
  struct flock l {};
  l.l_type = exclusive ? F_WRLCK : F_RDLCK;
  l.l_whence = SEEK_SET;
  return ::fcntl(fd, F_SETLK, &l);
}

// Asks for an exclusive lock through a read-write open of path, in a child
// process (POSIX record locks belong to the process); the child's errno, 0 if
// it got the lock.
int exclusiveLockInChild(const std::string& path, bool posix) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(path.c_str(), O_RDWR);
    if (fd < 0) ::_exit(200);
    ::_exit(lockNow(fd, posix, true) == 0 ? 0 : errno);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// A shared lock on a read-only open of path (flock, or a POSIX F_RDLCK), then
// what a read-write open elsewhere gets when it asks for an exclusive one.
int contendedLock(const std::string& path, bool posix) {
  int a = ::open(path.c_str(), O_RDONLY);
  if (a < 0) return -2;
  int got = lockNow(a, posix, false) == 0 ? exclusiveLockInChild(path, posix) : -3;
  ::close(a);
  return got;
}

TEST_F(IntegrationOneTruth, LocksExcludeAcrossReadersOfTheCopyAndWriters) {
  std::string twin = native("f", "locked content");
  int want_flock = contendedLock(twin, false);
  int want_posix = contendedLock(twin, true);
  ASSERT_EQ(want_flock, EWOULDBLOCK);
  ASSERT_TRUE(want_posix == EAGAIN || want_posix == EACCES) << want_posix;

  startDaemon();
  warmed("f", "locked content");
  EXPECT_EQ(contendedLock(mnt_ + "/f", false), want_flock);
  warmed("g", "locked content");  // the first lock's inode is gone: a fresh copy
  EXPECT_EQ(contendedLock(mnt_ + "/g", true), want_posix);
  EXPECT_EQ(conflicts(), 0u);
}

// Reopens a read-only descriptor of path through /proc/self/fd, read-write and
// for appending; appends "+more". Returns the errnos of the two reopens.
std::pair<int, int> reopenThroughProc(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) return {-1, -1};
  std::string proc = "/proc/self/fd/" + std::to_string(fd);
  int rw = ::open(proc.c_str(), O_RDWR);
  int rw_err = rw < 0 ? errno : 0;
  int ap = ::open(proc.c_str(), O_WRONLY | O_APPEND);
  int ap_err = ap < 0 ? errno : 0;
  if (ap >= 0) {
    EXPECT_EQ(::write(ap, "+more", 5), 5);
    EXPECT_EQ(::close(ap), 0);
  }
  if (rw >= 0) ::close(rw);
  EXPECT_EQ(preadAll(fd), "r-content+more");
  ::close(fd);
  return {rw_err, ap_err};
}

TEST_F(IntegrationOneTruth, AnOpenFileCanBeReopenedThroughProcForWriting) {
  auto want = reopenThroughProc(native("r.txt", "r-content"));
  ASSERT_EQ(want, std::make_pair(0, 0));

  startDaemon();
  warmed("r.txt", "r-content");
  EXPECT_EQ(reopenThroughProc(mnt_ + "/r.txt"), want);
  EXPECT_EQ(readFile(remote_ + "/r.txt"), "r-content+more");
}

// setattr(size), fallocate and getattr of an inode whose open backing is the
// copy: stat and data agree for every open, and the remote follows.
TEST_F(IntegrationOneTruth, TruncateAndFallocateOfAnOpenCopyReachEveryOpenAndTheRemote) {
  startDaemon();
  warmed("s", "0123456789");
  int reader = ::open((mnt_ + "/s").c_str(), O_RDONLY);
  ASSERT_GE(reader, 0);
  ASSERT_EQ(::truncate((mnt_ + "/s").c_str(), 4), 0);
  struct stat st {};
  ASSERT_EQ(::fstat(reader, &st), 0);
  EXPECT_EQ(st.st_size, 4);
  EXPECT_EQ(preadAll(reader), "0123");
  EXPECT_EQ(readFile(remote_ + "/s"), "0123");
  int w = ::open((mnt_ + "/s").c_str(), O_WRONLY | O_APPEND);
  ASSERT_GE(w, 0);
  ASSERT_EQ(::write(w, "++", 2), 2);  // not yet closed: only the copy has it
  ASSERT_EQ(::stat((mnt_ + "/s").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 6);
  EXPECT_EQ(preadAll(reader), "0123++");
  ASSERT_EQ(::fsync(w), 0);  // durable means on the remote
  EXPECT_EQ(readFile(remote_ + "/s"), "0123++");
  // fallocate through the mount answers as the remote does, and every open
  // sees its bytes: a punched hole reads as zeros.
  int rw = ::open((mnt_ + "/s").c_str(), O_RDWR);
  ASSERT_GE(rw, 0);
  ASSERT_EQ(::fallocate(rw, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 1, 2), 0)
      << std::strerror(errno);
  EXPECT_EQ(preadAll(reader), std::string("0\0\0" "3++", 6));
  EXPECT_EQ(readFile(remote_ + "/s"), std::string("0\0\0" "3++", 6));
  ::close(rw);
  ::close(w);
  ::close(reader);
  EXPECT_EQ(readFile(mnt_ + "/s"), std::string("0\0\0" "3++", 6));
}

// An sqlite3 shell kept running on a database, fed one statement at a time.
class SqliteShell {
 public:
  SqliteShell(const std::string& uri) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      ::execl("/usr/bin/sqlite3", "sqlite3", "-batch", uri.c_str(), nullptr);
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    to_ = ::fdopen(in[1], "w");
    from_ = ::fdopen(out[0], "r");
  }
  ~SqliteShell() {
    if (to_ != nullptr) ::fclose(to_);  // EOF: the shell exits
    if (from_ != nullptr) ::fclose(from_);
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);
  }
  // The first line the statement prints (a marker line ends each answer).
  std::string query(const std::string& sql) {
    if (to_ == nullptr || from_ == nullptr) return "<no shell>";
    std::fprintf(to_, "%s\n.print --end--\n", sql.c_str());
    std::fflush(to_);
    std::string first;
    char line[512];
    while (std::fgets(line, sizeof(line), from_) != nullptr) {
      std::string l(line);
      if (!l.empty() && l.back() == '\n') l.pop_back();
      if (l == "--end--") return first;
      if (first.empty()) first = l;
    }
    return first.empty() ? "<shell gone>" : first;
  }

 private:
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

// A read-only connection, open across another connection's commit, sees the new
// row on its next query: sqlite's change counter and locks both live in the
// file that both connections have open.
std::pair<std::string, std::string> sqliteReaderSeesACommit(const std::string& db) {
  SqliteShell reader("file:" + db + "?mode=ro");
  std::string before = reader.query("SELECT count(*) FROM t;");
  CommandResult w = runCommand({"/usr/bin/sqlite3", db, "INSERT INTO t VALUES (4);"});
  EXPECT_EQ(w.exit_code, 0) << w.out;
  return {before, reader.query("SELECT count(*) FROM t;")};
}

TEST_F(IntegrationOneTruth, AnSqliteReaderSeesAnotherConnectionsCommit) {
  HS_REQUIRE(::access("/usr/bin/sqlite3", X_OK) == 0, "needs sqlite3 (make deps)");
  fs::create_directories(tmp_ / "native");
  std::string twin = tmp_ / "native/db";
  CommandResult made = runCommand(
      {"/usr/bin/sqlite3", twin, "CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);"});
  ASSERT_EQ(made.exit_code, 0) << made.out;
  fs::copy_file(twin, remote_ + "/db");
  auto want = sqliteReaderSeesACommit(twin);
  ASSERT_EQ(want, std::make_pair(std::string("3"), std::string("4")));

  startDaemon();
  ASSERT_EQ(hs({"warm", mnt_ + "/db"}).exit_code, 0);
  ASSERT_EQ(statOf(mnt_ + "/db")["state"], "cached");
  EXPECT_EQ(sqliteReaderSeesACommit(mnt_ + "/db"), want);
  EXPECT_EQ(conflicts(), 0u);
  CommandResult check = runCommand({"/usr/bin/sqlite3", remote_ + "/db", "SELECT count(*) FROM t;"});
  EXPECT_EQ(check.out, "4\n") << "the remote itself, after the writer closed";
}

// A write-back that fails is the caller's error at close() and fsync(), never
// swallowed; and the last close keeps the copy aside rather than drop it.
TEST_F(IntegrationOneTruth, AFailedWriteBackIsTheClosersErrorAndTheCopyIsKept) {
  HS_REQUIRE_ROOT();
  // The remote on a tmpfs too small for what will be written (the cache is not).
  ASSERT_EQ(::mount("tmpfs", remote_.c_str(), "tmpfs", 0, "size=256k"), 0) << std::strerror(errno);
  startDaemon();
  warmed("e", "small");
  auto [reader, w] = readerThenWriter("e");
  ASSERT_GE(reader, 0);
  ASSERT_GE(w, 0);
  std::string big(1 << 20, 'B');
  ASSERT_EQ(::pwrite(w, big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  EXPECT_EQ(::fsync(w), -1);
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_EQ(::close(w), -1);
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_EQ(preadAll(reader).substr(0, 4), "BBBB") << "the reader sees the write all the same";
  ::close(reader);  // the last close: one more try, then the copy goes aside
  bool kept = false;
  for (int i = 0; i < 50 && !kept; i++) {  // RELEASE is asynchronous to close()
    kept = fs::exists(cache_ + "/lost+found") && !fs::is_empty(cache_ + "/lost+found");
    if (!kept) ::usleep(100 * 1000);
  }
  ASSERT_TRUE(kept) << daemon_->log();
  for (const auto& e : fs::directory_iterator(cache_ + "/lost+found")) {
    EXPECT_EQ(readFile(e.path()), big);
  }
  daemon_->stop();
  ASSERT_EQ(::umount2(remote_.c_str(), MNT_DETACH), 0);
}

class IntegrationOneTruthCrash : public IntegrationOneTruth {
 protected:
  // Writes "NEW" at 0 of the warmed file c ("old-old-old") through a writer that
  // joined a reader of the copy, then kills the daemon before any close; the
  // remote must not have the bytes yet.
  // Returns the reader and writer fds, still open on the dead mount.
  std::pair<int, int> dirtyAndKill() {
    startDaemon();
    warmed("c", "old-old-old");
    auto [reader, writer] = readerThenWriter("c");
    if (reader < 0 || writer < 0) {
      ADD_FAILURE() << "reader " << reader << ", writer " << writer;
      return {reader, writer};
    }
    EXPECT_EQ(::pwrite(writer, "NEW", 3, 0), 3);
    EXPECT_EQ(preadAll(reader), "NEW-old-old");
    EXPECT_EQ(readFile(remote_ + "/c"), "old-old-old") << "written back before any close";
    ::kill(daemon_->pid(), SIGKILL);  // `hotshard run`: its worker goes with it
    daemon_->stop();  // reaps and lazily unmounts the dead mount; the fds stay open
    return {reader, writer};
  }
  void dirtyThenKill() {
    auto [reader, writer] = dirtyAndKill();
    ::close(writer);  // on the dead mount: nothing reaches anyone
    ::close(reader);
  }
  std::vector<std::string> lostAndFound() {
    std::vector<std::string> out;
    if (!fs::exists(cache_ + "/lost+found")) return out;
    for (const auto& e : fs::directory_iterator(cache_ + "/lost+found")) out.push_back(e.path());
    return out;
  }
};

TEST_F(IntegrationOneTruthCrash, WritesLeftInTheCopyByACrashReachTheRemoteAtRestart) {
  dirtyThenKill();
  if (HasFailure()) return;
  startDaemon();  // recovery, before the mount serves
  EXPECT_EQ(readFile(remote_ + "/c"), "NEW-old-old");
  EXPECT_EQ(readFile(mnt_ + "/c"), "NEW-old-old");
  EXPECT_TRUE(lostAndFound().empty());
}

// Passthrough writes need no daemon: a writer from before the crash keeps
// writing into the copy after recovery. What it writes then must not land in an
// unlinked file: the copy is written back and kept aside, still growing.
TEST_F(IntegrationOneTruthCrash, AWriterThatOutlivesTheCrashKeepsItsLaterWritesOnDisk) {
  auto [reader, writer] = dirtyAndKill();
  ASSERT_FALSE(HasFailure());
  startDaemon();    // recovery, with the writer still holding the copy
  EXPECT_EQ(readFile(remote_ + "/c"), "NEW-old-old") << "what was written before recovery";
  ASSERT_EQ(::pwrite(writer, "LATE", 4, 0), 4) << "a passthrough write after the crash";
  ::close(writer);
  ::close(reader);
  auto kept = lostAndFound();
  ASSERT_EQ(kept.size(), 1u) << daemon_->log();
  EXPECT_EQ(readFile(kept[0]), "LATEold-old") << "the late write is on disk, not in an unlinked file";
  EXPECT_NE(daemon_->log().find("still open"), std::string::npos) << daemon_->log();
}

TEST_F(IntegrationOneTruthCrash, ARemoteChangedUnderADirtyCopyIsKeptAndTheCopySetAside) {
  dirtyThenKill();
  if (HasFailure()) return;
  writeFile(remote_ + "/c", "another host wrote this");
  startDaemon();
  EXPECT_EQ(readFile(remote_ + "/c"), "another host wrote this");
  EXPECT_EQ(readFile(mnt_ + "/c"), "another host wrote this");
  auto kept = lostAndFound();
  ASSERT_EQ(kept.size(), 1u);
  EXPECT_EQ(readFile(kept[0]), "NEW-old-old");
  struct stat st {};
  ASSERT_EQ(::stat((cache_ + "/lost+found").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_NE(daemon_->log().find("kept"), std::string::npos) << daemon_->log();
}

}  // namespace
}  // namespace hotshard::testing
