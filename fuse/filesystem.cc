#include "fuse/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/clock.h"
#include "base/fd.h"
#include "base/file_copy.h"
#include "fuse/backing.h"
#include "fuse/reply.h"
#include "fuse/takeover_state.h"

namespace hotshard::fuse {

namespace {

// The FUSE caller's ids, taken on the FUSE thread: a remote call's worker may
// still run after the request was answered (and libfuse freed it).
struct CallerIds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

CallerIds callerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  CallerIds ids{.uid = ctx->uid, .gid = ctx->gid};
  if (ids.uid == 0 && ids.gid == 0) return ids;
  gid_t groups[64];
  int n = fuse_req_getgroups(req, 64, groups);
  if (n < 0 || n > 64) n = 0;  // the process is gone or has too many: primary group only
  ids.groups.assign(groups, groups + n);
  return ids;
}

// Runs the enclosed syscalls with the FUSE caller's fsuid, fsgid and groups, so
// what it creates on the remote belongs to the caller, as if created there
// directly. Linux credentials are per thread and the raw syscalls (unlike glibc's
// setgroups wrapper) change only this thread: a remote call takes them on its
// worker (callRemote).
class CallerCredentials {
 public:
  explicit CallerCredentials(const CallerIds& ids) {
    if (ids.uid == 0 && ids.gid == 0) return;
    ::syscall(SYS_setgroups, ids.groups.size(), ids.groups.data());
    ::syscall(SYS_setfsgid, ids.gid);
    ::syscall(SYS_setfsuid, ids.uid);
    switched_ = true;
  }
  ~CallerCredentials() {
    if (!switched_) return;
    ::syscall(SYS_setfsuid, 0);
    ::syscall(SYS_setfsgid, 0);
    ::syscall(SYS_setgroups, 0, nullptr);
  }
  CallerCredentials(const CallerCredentials&) = delete;
  CallerCredentials& operator=(const CallerCredentials&) = delete;

 private:
  bool switched_ = false;
};

// Duplicates of the fds a remote call works on, owned by the call: the inodes
// they came from may be forgotten once its caller gave up on it. Closed through
// RemoteCalls::closeLater by whichever of the caller and the worker lets go
// last: closing a duplicate of a written remote file can wait on the remote (a
// FUSE remote's FLUSH, which sshfs answers once its pending writes are
// acknowledged; NFS write-back), and the caller may be a FUSE thread.
struct CallFds {
  std::function<void(int)> close_later;  // RemoteCalls::closer(): outlives the pool's owner
  std::vector<UniqueFd> fds;
  int operator[](size_t i) const { return fds[i].get(); }
  CallFds() = default;
  CallFds(const CallFds&) = delete;
  CallFds& operator=(const CallFds&) = delete;
  ~CallFds() {
    for (auto& fd : fds) {
      if (fd) close_later(fd.release());
    }
  }
};

// Runs body(fds) on a remote-call worker under the deadline (remote_calls.h),
// as `caller` when given, else as the daemon. body owns what it captures.
template <class T, class Body>
Result<T> callRemote(RemoteCalls& remote, const std::string& what, std::initializer_list<int> fds,
                     std::optional<CallerIds> caller, Body body,
                     std::function<void(Result<T>&)> abandon = nullptr) {
  auto own = std::make_shared<CallFds>();
  own->close_later = remote.closer();
  for (int fd : fds) {
    own->fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!own->fds.back()) return lastSysError(what);
  }
  return remote.run<T>(
      what,
      [own, caller = std::move(caller), body = std::move(body)]() -> Result<T> {
        std::optional<CallerCredentials> creds;
        if (caller) creds.emplace(*caller);
        return body(*own);
      },
      std::move(abandon));
}

// A remote file's fd opened for writing, closed on a remote-call worker unless
// released (its close sends a FUSE remote a FLUSH, which a hung remote never answers).
class WritableRemoteFd {
 public:
  WritableRemoteFd(RemoteCalls& remote, int fd) : remote_(remote), fd_(fd) {}
  ~WritableRemoteFd() { remote_.closeLater(fd_); }
  WritableRemoteFd(const WritableRemoteFd&) = delete;
  WritableRemoteFd& operator=(const WritableRemoteFd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  RemoteCalls& remote_;
  int fd_;
};

// callRemote() in a write lane (RemoteCalls::runInLane), as the daemon.
template <class T, class Body>
Result<T> callRemoteInLane(RemoteCalls& remote, RemoteCalls::Lane lane, const std::string& what,
                           std::initializer_list<int> fds, Body body) {
  auto own = std::make_shared<CallFds>();
  own->close_later = remote.closer();
  for (int fd : fds) {
    own->fds.emplace_back(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
    if (!own->fds.back()) return lastSysError(what);
  }
  return remote.runInLane<T>(lane, what,
                             [own, body = std::move(body)]() -> Result<T> { return body(*own); });
}

}  // namespace

// An open directory (fi->fh: a number, FileSystem::dirOf); declared in filesystem.h.
struct DirHandle {
  std::shared_ptr<DIR> dp;  // closed by its last user: a worker may outlive the handle
  off_t offset = 0;         // -1: unknown, the next readdir seeks
  std::deque<DirEntry> pending;  // read from the stream, not yet given to the kernel
  bool lost = false;  // a read passed its deadline: the worker may still move the stream
  fuse_ino_t ino = 0;  // the directory's node id (READDIR carries it too)
  // Served from the namespace (no dp): its listing, "." and ".." first; an
  // entry's offset is its index + 1.
  std::optional<std::vector<NamespaceChild>> named;
  // Read from the remote: what the stream gave from its start, recorded into the
  // namespace as the directory's listing when read to its end (record: still
  // whole; rel, dir_attr and epoch: as at the opendir).
  bool record = false;
  std::string rel;
  struct stat dir_attr {};
  uint64_t epoch = 0;
  std::vector<NamespaceChild> seen;
};

namespace {

bool sameTime(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec;
}

bool isDotOrDotdot(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

// The fh of an open that may write: releaseBacking lowers its write fence.
constexpr uint64_t kFhWriter = 1;

}  // namespace

// ---- table, paths, attributes ----------------------------------------------

FileSystem::FileSystem(const FileSystemOptions& opts, PassthroughShim* shim)
    : opts_(opts),
      remote_({.timeout_seconds = opts.remote_timeout_seconds}),
      shim_(shim),
      userdata_{shim, this},
      table_(opts.remote_root_fd, shim, opts.inode_fds) {
  uint32_t base = 0;
  if (::getrandom(&base, sizeof(base), 0) != sizeof(base)) base = static_cast<uint32_t>(::getpid());
  // Even: addDirHandle sets the low bit of the namespace's listings.
  next_dir_handle_ = (static_cast<uint64_t>(base | 1u) << 32) + 2;
  table_.setRemoteFdCloser(remote_.closer());
}

FileSystem::~FileSystem() = default;

size_t FileSystem::inodeCount() const { return table_.size(); }

void FileSystem::remoteRootReplaced(int new_root_fd) {
  if (::dup3(new_root_fd, table_.rootFd(), O_CLOEXEC) < 0) {
    spdlog::error("remote mounted again: dup3 onto the root's fd: {}", std::strerror(errno));
    return;
  }
  remote_.forgetBlocked();  // calls stuck in the old mount no longer fill the pool
  table_.dropUnpinnedFds();  // walked again from the new root, checked to be the same objects
  for (Status st : {shim_->invalidateInode(FUSE_ROOT_ID), shim_->invalidateAllEntries()}) {
    if (!st.ok()) spdlog::warn("remote mounted again: {}", st.error().message);
  }
}

UniqueFd FileSystem::shareRemoteBacking(dev_t dev, ino_t ino) {
  UniqueFd fd;
  table_.visit(dev, ino, [&](Inode& inode) {
    std::lock_guard lock(inode.mu);
    if (inode.backing_fd >= 0 && !inode.backing_is_cache && inode.writer_rels.empty())
      fd.reset(::fcntl(inode.backing_fd, F_DUPFD_CLOEXEC, 0));
  });
  return fd;
}

Result<PathFd> FileSystem::pathFd(Inode& inode) {
  if (PathFd fd = table_.cachedPathFd(inode)) return fd;  // the usual case: no table lock
  // A rename or unlink through the mount between planning and walking may have
  // moved a name on the way: planned again (a few times), not reported stale.
  for (int attempt = 0;; attempt++) {
    PathWalk walk;
    ASSIGN_OR_RETURN(PathFd cached, table_.planWalk(inode, &walk));
    if (cached) return cached;
    path_walks_.fetch_add(1, std::memory_order_relaxed);
    auto fds = remote_.run<std::vector<UniqueFd>>(
        "resolve inode", [walk]() -> Result<std::vector<UniqueFd>> { return walkPath(walk); });
    if (fds.ok()) {
      if (PathFd fd = table_.installWalk(inode, walk, std::move(*fds))) return fd;
      return sysError(ESTALE, "resolve inode: nothing opened");
    }
    if (attempt >= 2 || table_.namesEpoch() == walk.names_epoch) {
      forgetStaleNames(inode, fds.error());
      return fds.takeError();
    }
  }
}

std::string FileSystem::childRelPath(fuse_ino_t parent, const char* name) {
  if (parent == FUSE_ROOT_ID) return name;
  std::string dir = relPathOf(inodeOf(parent));
  return dir.empty() ? "" : dir + "/" + name;
}

void FileSystem::invalidate(const std::string& rel, const Change& change) {
  if (opts_.cache != nullptr && !rel.empty()) opts_.cache->invalidate(rel, change);
}

void FileSystem::invalidateTree(const std::string& rel) {
  if (opts_.cache != nullptr && !rel.empty()) opts_.cache->invalidateTree(rel);
}

void FileSystem::overlayAdoptedCopy(Inode& inode, struct stat& st) {
  std::lock_guard lock(inode.mu);
  struct stat copy;
  if (!inode.copy_adopted || ::fstat(inode.backing_fd, &copy) != 0) return;
  // Size and data from the same file, so stat and read agree between write-backs.
  st.st_size = copy.st_size;
  st.st_blocks = copy.st_blocks;
  st.st_mtim = copy.st_mtim;
}

void FileSystem::rememberStat(Inode& inode, const struct stat& st) {
  std::lock_guard lock(inode.mu);
  inode.last_stat = st;
  inode.last_stat_time = monotonicSeconds();
  table_.noteAttrs(inode, st);  // what the kernel is told, for a successor's opens
}

Result<struct stat> FileSystem::remoteAttrsForOpen(Inode& inode) {
  if (opts_.consistency.mode != Consistency::Mode::kStrict) {
    std::lock_guard lock(inode.mu);
    if (opts_.consistency.trustsRememberedAttrs(inode.last_stat_time, monotonicSeconds())) {
      return inode.last_stat;
    }
  }
  ASSIGN_OR_RETURN(PathFd fd, pathFd(inode));
  bool strict = opts_.consistency.mode == Consistency::Mode::kStrict;
  ASSIGN_OR_RETURN(struct stat st, statRemote(std::move(fd), "stat remote", strict));
  rememberStat(inode, st);
  return st;
}

// ---- remote calls under the deadline ----------------------------------------

namespace {
// A duplicate of fd for a remote call's worker, closed with the call (run or not).
Result<std::shared_ptr<UniqueFd>> dupForCall(int fd, const char* what) {
  auto dup = std::make_shared<UniqueFd>(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
  if (!*dup) return lastSysError(what);
  return dup;
}
}  // namespace

namespace {
// fstatat(dir_fd, path, flags) through statx(2), which takes the sync mode
// (AT_STATX_SYNC_AS_STAT or AT_STATX_FORCE_SYNC) in flags; -1 and errno on failure.
int statAt(int dir_fd, const char* path, int flags, struct stat* st) {
  struct statx stx {};
  if (::statx(dir_fd, path, flags, STATX_BASIC_STATS, &stx) < 0) return -1;
  *st = {};
  st->st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  st->st_ino = stx.stx_ino;
  st->st_mode = stx.stx_mode;
  st->st_nlink = stx.stx_nlink;
  st->st_uid = stx.stx_uid;
  st->st_gid = stx.stx_gid;
  st->st_rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
  st->st_size = static_cast<off_t>(stx.stx_size);
  st->st_blksize = static_cast<blksize_t>(stx.stx_blksize);
  st->st_blocks = static_cast<blkcnt_t>(stx.stx_blocks);
  st->st_atim = {stx.stx_atime.tv_sec, stx.stx_atime.tv_nsec};
  st->st_mtim = {stx.stx_mtime.tv_sec, stx.stx_mtime.tv_nsec};
  st->st_ctim = {stx.stx_ctime.tv_sec, stx.stx_ctime.tv_nsec};
  return 0;
}

int syncFlag(bool force_sync) { return force_sync ? AT_STATX_FORCE_SYNC : AT_STATX_SYNC_AS_STAT; }
}  // namespace

Result<struct stat> FileSystem::statRemote(int fd, const char* what, bool force_sync) {
  ASSIGN_OR_RETURN(auto own, dupForCall(fd, what));
  return statRemote(PathFd(std::move(own)), what, force_sync);
}

Result<struct stat> FileSystem::statRemote(PathFd fd, const char* what, bool force_sync) {
  int flags = AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | syncFlag(force_sync);
  return remote_.run<struct stat>(what, [fd, what, flags]() -> Result<struct stat> {
    struct stat st;
    if (statAt(fd->get(), "", flags, &st) < 0) return lastSysError(what);
    return st;
  });
}

Result<struct stat> FileSystem::statRemoteAt(int dir_fd, const char* name, const char* what,
                                             bool force_sync) {
  ASSIGN_OR_RETURN(auto dir, dupForCall(dir_fd, what));
  return statRemoteAt(PathFd(std::move(dir)), name, what, force_sync);
}

Result<struct stat> FileSystem::statRemoteAt(PathFd dir, const char* name, const char* what,
                                             bool force_sync) {
  int flags = AT_SYMLINK_NOFOLLOW | syncFlag(force_sync);
  return remote_.run<struct stat>(
      what, [dir, name = std::string(name), what, flags]() -> Result<struct stat> {
        struct stat st;
        if (statAt(dir->get(), name.c_str(), flags, &st) < 0) return lastSysError(what);
        return st;
      });
}

Result<FileSystem::Found> FileSystem::lookupRemote(int parent_fd, const char* name) {
  ASSIGN_OR_RETURN(auto dir, dupForCall(parent_fd, "lookup"));
  return remote_.run<Found>(
      std::string("lookup ") + name,
      [dir, name = std::string(name)]() -> Result<Found> {
        Found f;
        f.fd = ::openat(dir->get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (f.fd < 0) return lastSysError("openat");
        if (::fstatat(f.fd, "", &f.st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
          Error err = lastSysError("fstatat");
          ::close(f.fd);
          return err;
        }
        return f;
      },
      [](Result<Found>& late) {
        if (late.ok()) ::close(late->fd);
      });
}

// Opens what fd (an O_PATH fd) names, through /proc/self/fd of its duplicate.
Result<int> FileSystem::openRemote(int fd, int flags, const char* what) {
  ASSIGN_OR_RETURN(auto own, dupForCall(fd, what));
  return remote_.run<int>(
      what,
      [own, flags, what]() -> Result<int> {
        int opened = ::open(procPath(own->get()).c_str(), flags);
        if (opened < 0) return lastSysError(what);
        return opened;
      },
      [](Result<int>& late) {
        if (late.ok()) ::close(*late);
      });
}

// fdopendir() fstats the directory: a remote call too, so both run on the worker.
Result<DIR*> FileSystem::openRemoteDir(int fd) {
  ASSIGN_OR_RETURN(auto own, dupForCall(fd, "opendir"));
  return remote_.run<DIR*>(
      "opendir",
      [own]() -> Result<DIR*> {
        UniqueFd dir(::open(procPath(own->get()).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (!dir) return lastSysError("opendir");
        DIR* dp = ::fdopendir(dir.get());
        if (dp == nullptr) return lastSysError("fdopendir");
        (void)dir.release();  // the DIR owns it now
        return dp;
      },
      [](Result<DIR*>& late) {
        if (late.ok()) ::closedir(*late);
      });
}

Status FileSystem::doLookup(fuse_ino_t parent, const char* name, fuse_entry_param* e) {
  std::memset(e, 0, sizeof(*e));
  if (lookupFromNames(parent, name, e)) return Ok{};
  const uint64_t names_epoch = namesEpoch();  // before the remote answers
  Inode& dir = inodeOf(parent);
  ASSIGN_OR_RETURN(PathFd dir_fd, pathFd(dir));
  int parent_fd = dir_fd->get();
  // An object the kernel knows already needs no new O_PATH fd: one fstatat, not
  // openat + fstat + close (strict mode looks up every component of every open).
  auto seen = statRemoteAt(parent_fd, name, "lookup");
  if (seen.ok()) {
    e->attr = *seen;
    if (Inode* known = table_.addLookupIfKnown(e->attr, &dir, name)) {
      e->ino = table_.idOf(*known);
      e->generation = known->generation;
      rememberStat(*known, e->attr);
      learn(*known, e->attr, names_epoch);
      overlayAdoptedCopy(*known, e->attr);  // its size and data agree (one truth)
      setEntryTimeouts(name, *known, e);
      return Ok{};
    }
  } else if (int err = seen.error().sys_errno; err == ENOENT || err == ETIMEDOUT || err == EIO) {
    return seen.takeError();  // a negative lookup, or the remote past its deadline: no second try
  }
  ASSIGN_OR_RETURN(Found found, lookupRemote(parent_fd, name));
  int newfd = found.fd;
  e->attr = found.st;
  Inode& inode = table_.addLookup(newfd, e->attr, &dir, name);
  e->ino = table_.idOf(inode);
  e->generation = inode.generation;
  rememberStat(inode, e->attr);  // our lookup reference keeps it alive
  learn(inode, e->attr, names_epoch);
  overlayAdoptedCopy(inode, e->attr);
  setEntryTimeouts(name, inode, e);
  return Ok{};
}

namespace {
// What a strict open can check with one fstatat from the root: a path of
// names up to the root (relPathOf: "" when one on the way is gone) within PATH_MAX.
bool checkablePath(const std::string& rel) { return !rel.empty() && rel.size() < PATH_MAX; }
}  // namespace

void FileSystem::setEntryTimeouts(const char* name, Inode& inode, fuse_entry_param* e) {
  e->attr_timeout = opts_.consistency.attrTimeout(e->attr);
  e->entry_timeout = opts_.consistency.entryTimeout(e->attr);
  if (!opts_.consistency.opensCheckPath() || isDotOrDotdot(name)) return;
  // A path an open cannot check (a name on the way is gone, or past PATH_MAX,
  // which one fstatat refuses): the kernel looks the name up at each use.
  if (!checkablePath(table_.relPathOf(inode))) e->entry_timeout = 0;
}

Status FileSystem::checkOpenPath(fuse_ino_t ino, Inode& inode, std::optional<struct stat>* fresh) {
  if (!opts_.consistency.opensCheckPath() || table_.isRoot(inode)) return Ok{};
  // The table's names follow lookups and renames through the mount of the
  // inode and of every directory above it.
  std::string rel = table_.relPathOf(inode);  // takes the table's lock: not under inode.mu
  if (!checkablePath(rel)) return Ok{};
  struct stat seen;
  bool seen_here;  // or else only what the predecessor told the kernel (takeover)
  uint16_t told_mode;
  uint32_t told_owner_hash;
  {
    std::lock_guard lock(inode.mu);
    seen = inode.last_stat;
    seen_here = inode.last_stat_time != 0;
    told_mode = inode.told_mode;
    told_owner_hash = inode.told_owner_hash;
  }
  ASSIGN_OR_RETURN(PathFd root_fd, pathFd(table_.root()));
  auto now = statRemoteAt(std::move(root_fd), rel.c_str(), "open: check the path", true);
  if (!now.ok() && now.error().sys_errno != ENOENT && now.error().sys_errno != ENOTDIR) {
    return now.takeError();
  }
  if (!now.ok() || now->st_dev != inode.src_dev || now->st_ino != inode.src_ino) {
    // The kernel walks the path again, each name looked up (LOOKUP_REVAL), and
    // opens what it leads to now, or answers ENOENT.
    return sysError(ESTALE, "open " + rel + ": the path leads elsewhere on the remote now");
  }
  bool access_unchanged =
      seen_here ? now->st_mode == seen.st_mode && now->st_uid == seen.st_uid &&
                      now->st_gid == seen.st_gid
                : told_mode != 0 && told_mode == static_cast<uint16_t>(now->st_mode) &&
                      told_owner_hash == ownerHash(now->st_uid, now->st_gid);
  if (!access_unchanged) {
    // The kernel checked this open's permission against the mode and owner it
    // kept (default_permissions): again, after a lookup brings the new ones.
    rememberStat(inode, *now);
    (void)shim_->invalidateAttrs(ino);  // the retry's lookup refreshes them too
    return sysError(ESTALE, "open " + rel + ": its mode or owner changed on the remote");
  }
  if (now->st_size != seen.st_size || !sameTime(now->st_mtim, seen.st_mtim) ||
      !sameTime(now->st_ctim, seen.st_ctim)) {
    // Changed since the kernel last heard: its next stat asks again, and a read
    // past the old size is not cut short.
    Status st = shim_->invalidateAttrs(ino);
    if (!st.ok()) spdlog::warn("open {}: {}", rel, st.error().message);
  }
  rememberStat(inode, *now);
  *fresh = *now;  // the same object's attributes, as fresh as an fstat of it: the open's own
  return Ok{};
}

Status FileSystem::replyEntry(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  RETURN_IF_ERROR(doLookup(parent, name, &e));
  fuse_reply_entry(req, &e);
  return Ok{};
}

// ---- names and attributes --------------------------------------------------

void FileSystem::init(fuse_conn_info* conn) {
  // Passthrough and the writeback cache exclude each other (the kernel refuses
  // passthrough with FUSE_WRITEBACK_CACHE); writes go to the remote as they come.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
  // lsattr -d: file attribute ioctls on directories (libfuse refuses them otherwise).
  if (conn->capable & FUSE_CAP_IOCTL_DIR) conn->want |= FUSE_CAP_IOCTL_DIR;
}

Status FileSystem::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  Status st = doLookup(parent, name, &e);
  if (st.ok()) {
    fuse_reply_entry(req, &e);
    return Ok{};
  }
  if (replyErrno(st.error()) == ENOENT && opts_.consistency.negativeTimeout() > 0) {
    std::memset(&e, 0, sizeof(e));
    e.entry_timeout = opts_.consistency.negativeTimeout();
    fuse_reply_entry(req, &e);  // ino 0: a cached negative entry
    return Ok{};
  }
  return st;
}

void FileSystem::forget(fuse_ino_t ino, uint64_t nlookup) { table_.forget(inodeOf(ino), nlookup); }

Status FileSystem::getattr(fuse_req_t req, fuse_ino_t ino) {
  Inode& inode = inodeOf(ino);
  if (getattrFromNames(req, inode)) return Ok{};
  const uint64_t names_epoch = namesEpoch();
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  ASSIGN_OR_RETURN(struct stat st, statRemote(path->get(), "getattr"));
  if (S_ISREG(st.st_mode)) rememberStat(inode, st);
  learn(inode, st, names_epoch);
  overlayAdoptedCopy(inode, st);
  fuse_reply_attr(req, &st, opts_.consistency.attrTimeout(st));
  return Ok{};
}

namespace {

Status chownRemote(int fd, const struct stat& attr, int valid) {
  uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr.st_uid : static_cast<uid_t>(-1);
  gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr.st_gid : static_cast<gid_t>(-1);
  if (::fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
    return lastSysError("chown");
  }
  return Ok{};
}

// utimensat's pair from a SETATTR: each time as given, now, or left alone.
void setattrTimes(const struct stat& attr, int valid, struct timespec tv[2]) {
  tv[0] = {0, UTIME_OMIT};
  tv[1] = {0, UTIME_OMIT};
  if (valid & FUSE_SET_ATTR_ATIME_NOW) {
    tv[0].tv_nsec = UTIME_NOW;
  } else if (valid & FUSE_SET_ATTR_ATIME) {
    tv[0] = attr.st_atim;
  }
  if (valid & FUSE_SET_ATTR_MTIME_NOW) {
    tv[1].tv_nsec = UTIME_NOW;
  } else if (valid & FUSE_SET_ATTR_MTIME) {
    tv[1] = attr.st_mtim;
  }
}

Status utimesRemote(int fd, mode_t type, const struct stat& attr, int valid) {
  struct timespec tv[2];
  setattrTimes(attr, valid, tv);
  int res = type == S_IFLNK ? ::utimensat(fd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)
                            : ::utimensat(AT_FDCWD, procPath(fd).c_str(), tv, 0);
  if (res < 0) return lastSysError("utimensat");
  return Ok{};
}

}  // namespace

Result<UniqueFd> FileSystem::remoteFileFd(Inode& inode, bool for_write) {
  {
    std::lock_guard lock(inode.mu);
    bool usable = inode.backing_fd >= 0 && !inode.backing_is_cache &&
                  (inode.backing_writable || !for_write);
    if (usable) {
      UniqueFd fd(::dup(inode.backing_fd));
      if (!fd) return lastSysError("dup backing file");
      return fd;
    }
  }
  int flags = (for_write ? O_WRONLY : O_RDONLY) | O_CLOEXEC | O_LARGEFILE | O_NONBLOCK | O_NOCTTY;
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  ASSIGN_OR_RETURN(int fd, openRemote(path->get(), flags,
                                      for_write ? "open remote file for writing" : "open remote file"));
  return UniqueFd(fd);
}

Status FileSystem::truncateRemote(Inode& inode, off_t size) {
  {
    DeferDrops defer_drops;  // adopting calls the store under inode.mu
    std::lock_guard lock(inode.mu);
    // truncate(2) with no open file is a writer that finds the inode idle: as
    // at a writer's open, an idle backing is closed, never adopted nor written
    // through (the invalidation below drops the copy; the remote is opened afresh).
    if (hasIdleBacking(inode)) closeIdleBacking(inode, *shim_, table_.remoteFdCloser());
    if (inode.backing_is_cache) {
      Status st = truncateCopyLocked(inode, size);
      if (st.ok() || st.error().code != Errc::kStale) return st;
    }
  }
  invalidate(relPathOf(inode),
             {.kind = Change::Kind::kTruncate, .new_size = static_cast<uint64_t>(size)});
  ASSIGN_OR_RETURN(UniqueFd fd, remoteFileFd(inode, true));
  // In the file's write lane: never beside a write-back still in flight.
  RETURN_IF_ERROR(callRemoteInLane<void>(remote_, writeLaneOf(inode), "truncate", {fd.get()},
                                         [size](const CallFds& f) -> Status {
                                           if (::ftruncate(f[0], size) < 0) {
                                             return lastSysError("truncate");
                                           }
                                           return Ok{};
                                         }));
  dropIdleWriteLane(inode);
  return Ok{};
}

Status FileSystem::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                           fuse_file_info* /*fi*/) {
  Inode& inode = inodeOf(ino);
  const struct stat want = *attr;
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(inode)}));
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  if (valid & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    RETURN_IF_ERROR(callRemote<void>(
        remote_, "chmod/chown", {path->get()}, std::nullopt, [want, valid](const CallFds& f) -> Status {
          if ((valid & FUSE_SET_ATTR_MODE) &&
              ::fchmodat(AT_FDCWD, procPath(f[0]).c_str(), want.st_mode, 0) < 0) {
            return lastSysError("chmod");
          }
          if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) return chownRemote(f[0], want, valid);
          return Ok{};
        }));
  }
  if (valid & FUSE_SET_ATTR_SIZE) RETURN_IF_ERROR(truncateRemote(inode, attr->st_size));
  if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    RETURN_IF_ERROR(callRemote<void>(remote_, "utimensat", {path->get()}, std::nullopt,
                                     [want, valid, type = inode.type](const CallFds& f) {
                                       return utimesRemote(f[0], type, want, valid);
                                     }));
  }
  return getattr(req, ino);
}

Status FileSystem::readlink(fuse_req_t req, fuse_ino_t ino) {
  ASSIGN_OR_RETURN(PathFd path, pathFd(inodeOf(ino)));
  ASSIGN_OR_RETURN(
      std::string target,
      callRemote<std::string>(remote_, "readlink", {path->get()}, std::nullopt,
                              [](const CallFds& f) -> Result<std::string> {
                                char buf[PATH_MAX + 1];
                                ssize_t n = ::readlinkat(f[0], "", buf, sizeof(buf));
                                if (n < 0) return lastSysError("readlink");
                                if (n == sizeof(buf)) return sysError(ENAMETOOLONG, "readlink");
                                return std::string(buf, static_cast<size_t>(n));
                              }));
  fuse_reply_readlink(req, target.c_str());
  return Ok{};
}

Status FileSystem::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                         dev_t rdev) {
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name)}));
  ASSIGN_OR_RETURN(PathFd dir, pathFd(inodeOf(parent)));
  RETURN_IF_ERROR(callRemote<void>(remote_, "mknod", {dir->get()}, callerOf(req),
                                   [name = std::string(name), mode, rdev](const CallFds& f) -> Status {
                                     if (::mknodat(f[0], name.c_str(), mode, rdev) < 0) {
                                       return lastSysError("mknod");
                                     }
                                     return Ok{};
                                   }));
  return replyEntry(req, parent, name);
}

Status FileSystem::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name)}));
  ASSIGN_OR_RETURN(PathFd dir, pathFd(inodeOf(parent)));
  RETURN_IF_ERROR(callRemote<void>(remote_, "mkdir", {dir->get()}, callerOf(req),
                                   [name = std::string(name), mode](const CallFds& f) -> Status {
                                     if (::mkdirat(f[0], name.c_str(), mode) < 0) {
                                       return lastSysError("mkdir");
                                     }
                                     return Ok{};
                                   }));
  return replyEntry(req, parent, name);
}

Status FileSystem::symlink(fuse_req_t req, const char* target, fuse_ino_t parent,
                           const char* name) {
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name)}));
  ASSIGN_OR_RETURN(PathFd dir, pathFd(inodeOf(parent)));
  RETURN_IF_ERROR(callRemote<void>(
      remote_, "symlink", {dir->get()}, callerOf(req),
      [target = std::string(target), name = std::string(name)](const CallFds& f) -> Status {
        if (::symlinkat(target.c_str(), f[0], name.c_str()) < 0) return lastSysError("symlink");
        return Ok{};
      }));
  return replyEntry(req, parent, name);
}

Status FileSystem::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  // The linked file's nlink and ctime change too.
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name), namesRel(inodeOf(ino))}));
  ASSIGN_OR_RETURN(PathFd path, pathFd(inodeOf(ino)));
  ASSIGN_OR_RETURN(PathFd dir, pathFd(inodeOf(parent)));
  RETURN_IF_ERROR(callRemote<void>(
      remote_, "link", {path->get(), dir->get()}, std::nullopt,
      [name = std::string(name)](const CallFds& f) -> Status {
        if (::linkat(AT_FDCWD, procPath(f[0]).c_str(), f[1], name.c_str(), AT_SYMLINK_FOLLOW) < 0) {
          return lastSysError("link");
        }
        return Ok{};
      }));
  return replyEntry(req, parent, name);
}

Status FileSystem::unlinkRemote(int dir_fd, const char* name, int flags) {
  const char* what = flags & AT_REMOVEDIR ? "rmdir" : "unlink";
  return callRemote<void>(remote_, what, {dir_fd}, std::nullopt,
                          [name = std::string(name), flags, what](const CallFds& f) -> Status {
                            if (::unlinkat(f[0], name.c_str(), flags) < 0) return lastSysError(what);
                            return Ok{};
                          });
}

PathFd FileSystem::childPathFd(Inode& parent, const char* name) {
  Inode* child = table_.holdChild(parent, name);
  if (child == nullptr) return {};
  auto fd = pathFd(*child);
  table_.forget(*child, 1);
  return fd.ok() ? *fd : PathFd();
}

Status FileSystem::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  invalidate(childRelPath(parent, name), {.kind = Change::Kind::kUnlink});
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name)}));
  Inode& dir = inodeOf(parent);
  ASSIGN_OR_RETURN(PathFd dir_fd, pathFd(dir));
  PathFd held = childPathFd(dir, name);  // its only way back once the name is gone
  RETURN_IF_ERROR(unlinkRemote(dir_fd->get(), name, 0));
  table_.unlinked(dir, name, held);
  return replyDone(req);
}

Status FileSystem::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name)}));
  Inode& dir = inodeOf(parent);
  ASSIGN_OR_RETURN(PathFd dir_fd, pathFd(dir));
  PathFd held = childPathFd(dir, name);
  RETURN_IF_ERROR(unlinkRemote(dir_fd->get(), name, AT_REMOVEDIR));
  table_.unlinked(dir, name, held);
  return replyDone(req);
}

Status FileSystem::rename(fuse_req_t req, fuse_ino_t parent, const char* name,
                          fuse_ino_t newparent, const char* newname, unsigned int flags) {
  // Whatever sits at either name may be a directory: drop everything below both.
  std::string from = childRelPath(parent, name), to = childRelPath(newparent, newname);
  invalidate(from, {.kind = Change::Kind::kRename});
  invalidate(to, {.kind = Change::Kind::kUnlink});  // a file there is replaced
  invalidateTree(from);
  invalidateTree(to);
  NamesChange names_change;
  RETURN_IF_ERROR(
      beginNamesChange(names_change, {namesRel(parent, name), namesRel(newparent, newname)}));
  Inode& dir = inodeOf(parent);
  Inode& newdir = inodeOf(newparent);
  ASSIGN_OR_RETURN(PathFd dir_fd, pathFd(dir));
  ASSIGN_OR_RETURN(PathFd newdir_fd, pathFd(newdir));
  // A replaced target keeps only its fd; under RENAME_EXCHANGE it takes the old name.
  PathFd held = (flags & RENAME_EXCHANGE) ? PathFd() : childPathFd(newdir, newname);
  RETURN_IF_ERROR(callRemote<void>(
      remote_, "rename", {dir_fd->get(), newdir_fd->get()}, std::nullopt,
      [name = std::string(name), newname = std::string(newname), flags](const CallFds& f) -> Status {
        if (::syscall(SYS_renameat2, f[0], name.c_str(), f[1], newname.c_str(), flags) < 0) {
          return lastSysError("rename");
        }
        return Ok{};
      }));
  table_.renamed(dir, name, newdir, newname, flags, held);
  return replyDone(req);
}

// ---- backing files ----------------------------------------------------------

struct FileSystem::OpenIntent {
  bool for_write = false;
  PathFd path;  // the inode's O_PATH fd, pinned for as long as the open
  std::string rel;  // "" without cache hooks, or when the inode is not under the remote
  bool remote_known = false;
  struct stat remote {};
  // A writer fences the cache for the whole open, raised once its backing is
  // chosen (under inode.mu: the store's lock is a leaf); if the open fails
  // after that, the fence comes down again on the way out. Cleared once
  // releaseBacking owns lowering it.
  CacheHooks* fence = nullptr;

  OpenIntent() = default;
  OpenIntent(const OpenIntent&) = delete;
  OpenIntent& operator=(const OpenIntent&) = delete;
  ~OpenIntent() {
    if (fence != nullptr) fence->endWrite(rel);
  }
};

void FileSystem::prepareOpen(Inode& inode, OpenIntent& intent,
                             const std::optional<struct stat>& fresh) {
  if (fresh) {
    intent.remote = *fresh;
    intent.remote_known = true;
  }
  CacheHooks* cache = opts_.cache;
  if (cache == nullptr) return;
  intent.rel = relPathOf(inode);
  if (intent.rel.empty() || intent.remote_known) return;
  // Writers too: one arriving at an open copy that the remote moved past must
  // not make that copy the truth (backing.h).
  auto attrs = remoteAttrsForOpen(inode);
  if (attrs.ok()) {
    intent.remote = *attrs;
    intent.remote_known = true;
  }
}

namespace {

BackingFacts factsOf(const Inode& inode, bool for_write, bool cache_hooks, bool remote_known,
                     const struct stat& remote) {
  return BackingFacts{
      .for_write = for_write,
      .backing_open = inode.backing_fd >= 0,
      .backing_is_cache = inode.backing_is_cache,
      .backing_writable = inode.backing_writable,
      .copy_adopted = inode.copy_adopted,
      .cache_hooks = cache_hooks,
      .remote_attrs_known = remote_known,
      .open_copy_current = inode.backing_is_cache && sameRemoteObject(remote, inode.cached_against),
      .valid_copy = false,
  };
}

// Read-write whenever the remote lets us, so a later writer can share the
// backing file that readers already passed through to. open(flags) is the
// remote call under the deadline; a remote that did not answer is not asked twice.
template <class Open>
Status openRemoteBacking(Inode& inode, bool for_write, Open&& open) {
  Result<int> fd = open(O_RDWR | O_CLOEXEC | O_LARGEFILE);
  int rw_errno = fd.ok() ? 0 : fd.error().sys_errno;
  if (!fd.ok() && !for_write && rw_errno != ETIMEDOUT && rw_errno != EIO) {
    fd = open(O_RDONLY | O_CLOEXEC | O_LARGEFILE);
  }
  if (!fd.ok()) return fd.takeError();
  inode.backing_fd = *fd;
  inode.backing_writable = rw_errno == 0;
  inode.backing_rw_errno = rw_errno;
  return Ok{};
}

}  // namespace

Status FileSystem::installBacking(Inode& inode, bool to_cache, int cache_fd,
                                  const OpenIntent& intent) {
  if (to_cache) {
    inode.backing_fd = cache_fd;  // O_RDWR: a writer may join it (adoptCopyLocked)
    inode.backing_writable = true;
    inode.backing_rw_errno = 0;
    inode.backing_is_cache = true;
    inode.cached_rel = intent.rel;
    inode.cached_against = intent.remote;
    inode.backing_against_known = false;
  } else {
    // pathForOpen went on without the remote for a copy that went meanwhile:
    // the kernel opens again (ESTALE), and that open walks to the remote file.
    if (!intent.path) return sysError(ESTALE, "open: the cached copy went meanwhile");
    RETURN_IF_ERROR(openRemoteBacking(inode, intent.for_write, [&](int flags) {
      return openRemote(intent.path->get(), flags, "open backing file");
    }));
    // Fetched before the open: a change in between makes the next strict open
    // find them different and open afresh (never the other way round).
    inode.backing_against_known = intent.remote_known;
    inode.backing_against = intent.remote;
  }
  registerBacking(inode);
  return Ok{};
}

void FileSystem::registerBacking(Inode& inode) {
  if (!shim_->active()) return;
  auto id = shim_->openBacking(inode.backing_fd);
  if (id.ok()) {
    inode.backing_id = *id;
  } else if (id.error().sys_errno == EPERM) {
    shim_->disable(id.error().message);
  } else {
    spdlog::warn("passthrough refused for inode {}: {}; serving it in user space", inode.src_ino,
                 id.error().message);
  }
}

// ---- backings a predecessor left (takeover) ------------------------------------

namespace {
// After a takeover: opens the predecessor counted, or a backing id it
// registered, but no fd of ours yet. Under inode.mu.
bool inheritedWithoutFd(const Inode& inode) {
  return inode.backing_fd < 0 && (inode.backing_id >= 0 || inode.nopen > 0);
}
}  // namespace

// The kernel keeps the predecessor's backing file for the inode's open files,
// and refuses another one while they are open (EBUSY): this process opens the
// same file again (the remote file, or the store's copy if it is still the
// valid one) as the inode's backing fd, and the inherited id goes on serving
// new opens. kStale when that file cannot be had: the caller retires the inode.
// Under inode.mu.
Status FileSystem::reopenInheritedLocked(Inode& inode, const OpenIntent& intent) {
  if (inode.copy_adopted || !inheritedWithoutFd(inode)) return Ok{};
  if (inode.inherited_adopted) {
    inode.inherited_adopted = false;
    Status carried = reclaimAdoptedLocked(inode, intent);
    if (carried.ok()) return Ok{};
    spdlog::error("takeover: {}: the copy a writer had adopted is not carried on: {}; it is "
                  "recovered at the next start (docs/cache.md, \"What a crash does\")",
                  intent.rel, carried.error().message);
  }
  int fd = -1;
  if (inode.backing_is_cache) {
    if (opts_.cache != nullptr && intent.remote_known && !intent.rel.empty()) {
      fd = opts_.cache->openCached(intent.rel, intent.remote);
    }
    if (fd < 0) return makeError(Errc::kStale, "the inherited cache copy is not valid now");
    inode.cached_rel = intent.rel;
    inode.cached_against = intent.remote;
  } else {
    // pathForOpen may go on without the remote (a valid copy, attributes from
    // the namespace): the remote file was the backing, so the inode is retired.
    if (!intent.path) return makeError(Errc::kStale, "no path to the inherited remote file");
    int flags = (inode.backing_writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_LARGEFILE;
    auto remote = openRemote(intent.path->get(), flags, "reopen inherited backing file");
    if (!remote.ok()) return makeError(Errc::kStale, remote.error().message);
    fd = *remote;
  }
  inode.backing_fd = fd;
  inode.backing_rw_errno = inode.backing_writable ? 0 : EACCES;
  // Opened by the predecessor in user space (no passthrough): our id for it.
  if (inode.backing_id < 0) registerBacking(inode);
  return Ok{};
}

// The copy a predecessor's writer had adopted, kept by the store at our start
// (adoptedCopyPaths): the inode's backing fd and write-back buffer again, as
// after adoptCopyLocked. Its backing id is the inherited one (the kernel has the
// same file). The first write-back copies it whole (no stamp). Under inode.mu.
Status FileSystem::reclaimAdoptedLocked(Inode& inode, const OpenIntent& intent) {
  if (opts_.cache == nullptr || intent.rel.empty() || !intent.path) {
    return makeError(Errc::kStale, "no cache or no path for the inode");
  }
  ASSIGN_OR_RETURN(int opened, openRemote(intent.path->get(), O_WRONLY | O_CLOEXEC | O_LARGEFILE,
                                          "open remote file for writing"));
  WritableRemoteFd remote(remote_, opened);
  ASSIGN_OR_RETURN(struct stat base, statRemote(remote.get(), "stat remote file"));
  UniqueFd copy(opts_.cache->openAdoptedCopy(intent.rel));
  if (!copy) return makeError(Errc::kNotFound, "the store did not keep the copy");
  inode.backing_fd = copy.release();
  inode.backing_writable = true;
  inode.backing_rw_errno = 0;
  inode.backing_is_cache = true;
  inode.cached_rel = intent.rel;
  inode.cached_against = base;
  inode.copy_adopted = true;
  inode.remote_wb_fd = remote.release();
  inode.stamp_usable = false;
  if (inode.backing_id < 0) registerBacking(inode);
  return Ok{};
}

// read, write, flush, fsync of a file the predecessor opened.
Status FileSystem::adoptBackingFd(Inode& inode) {
  {
    std::lock_guard lock(inode.mu);
    if (!inheritedWithoutFd(inode)) return Ok{};
  }
  OpenIntent intent;
  ASSIGN_OR_RETURN(intent.path, pathFd(inode));
  prepareOpen(inode, intent, std::nullopt);
  DeferDrops defer_drops;
  std::lock_guard lock(inode.mu);
  RETURN_IF_ERROR(reopenInheritedLocked(inode, intent));
  table_.noteBacking(inode);
  return Ok{};
}

// ---- idle backings ------------------------------------------------------------

namespace {
// Copies the store dropped while this thread held an Inode::mu (inside an
// open, through CacheHooks): closing their idle backings takes InodeTable's
// lock, which must not be taken under an Inode::mu, so the open does it at its end.
thread_local int t_inode_lock_depth = 0;
thread_local std::vector<std::pair<FileSystem*, std::string>> t_deferred_drops;
}  // namespace

FileSystem::DeferDrops::DeferDrops() { ++t_inode_lock_depth; }

FileSystem::DeferDrops::~DeferDrops() {
  if (--t_inode_lock_depth > 0 || t_deferred_drops.empty()) return;
  std::vector<std::pair<FileSystem*, std::string>> drops;
  drops.swap(t_deferred_drops);
  for (auto& [fs, rel] : drops) fs->copiesDropped({rel});
}

void FileSystem::copiesDropped(const std::vector<std::string>& rel_paths) {
  if (t_inode_lock_depth > 0) {
    for (const auto& rel : rel_paths) t_deferred_drops.emplace_back(this, rel);
    return;
  }
  table_.closeIdleCopies(rel_paths);
}

bool FileSystem::idleBackingServes(Inode& inode, const OpenIntent& intent,
                                   std::optional<struct stat>* backing_st) {
  if (inode.backing_is_cache) {
    // The copy, if the store still has it as the copy valid now: the check a
    // fresh open makes (openCached), against the file the kept fd refers to.
    if (intent.for_write || !intent.remote_known || intent.rel != inode.cached_rel) return false;
    if (!sameRemoteObject(intent.remote, inode.cached_against)) return false;
    struct stat copy;
    if (::fstat(inode.backing_fd, &copy) < 0) return false;
    if (!opts_.cache->reopenCached(intent.rel, intent.remote, copy)) return false;
    *backing_st = copy;
    return true;
  }
  // The remote file: never for a writer (the remote's open-time checks, an
  // immutable flag or a read-only remount, must answer it); in strict mode
  // only while unchanged since it was opened, as this open's forced stat
  // (checkOpenPath, remoteAttrsForOpen) sees it: that stat is the remote
  // client's revalidation a fresh open would make (an NFS client's GETATTR at
  // open, which drops its cached data on a change); for a reader, unless a
  // fresh open would pass it through to a copy.
  if (intent.for_write) return false;
  if (opts_.consistency.mode == Consistency::Mode::kStrict &&
      !(intent.remote_known && inode.backing_against_known &&
        sameRemoteObject(intent.remote, inode.backing_against))) {
    return false;
  }
  bool copy_candidate = intent.remote_known && !intent.rel.empty();
  return !(copy_candidate && opts_.cache->hasValidCopy(intent.rel, intent.remote));
}

// A remote backing can hang its ftruncate (and its close, which sends a FUSE
// remote a FLUSH): both go to the remote-call workers.
Status FileSystem::truncateOnOpenLocked(Inode& inode) {
  Status truncated = Ok{};
  if (inode.backing_is_cache) {
    if (::ftruncate(inode.backing_fd, 0) != 0) truncated = lastSysError("truncate on open");
  } else {
    truncated = callRemoteInLane<void>(remote_, writeLaneOf(inode), "truncate on open",
                                       {inode.backing_fd}, [](const CallFds& f) -> Status {
                                         if (::ftruncate(f[0], 0) != 0) {
                                           return lastSysError("truncate on open");
                                         }
                                         return Ok{};
                                       });
    if (truncated.ok()) dropIdleWriteLane(inode);
  }
  if (truncated.ok()) return Ok{};
  Error err = truncated.error();
  if (inode.nopen == 0) {
    if (inode.backing_id >= 0) shim_->closeBacking(inode.backing_id);
    if (inode.backing_is_cache) {
      ::close(inode.backing_fd);  // a copy on the cache disk: nothing to wait for
    } else {
      remote_.closeLater(inode.backing_fd);
    }
    inode.backing_fd = -1;
    inode.backing_id = -1;
    inode.backing_is_cache = false;
    inode.backing_against_known = false;
  }
  return err;
}

namespace {
// An open that gives a writer (or O_TRUNC) the remote file itself, not a copy
// open as the backing: it waits for the daemon's changes to the file still in
// flight (FileSystem::waitForWriteLane). Under inode.mu.
bool writesRemote(const Inode& inode, bool for_write, int flags) {
  return (for_write || (flags & O_TRUNC)) && (inode.backing_fd < 0 || !inode.backing_is_cache);
}

// Pins an inode's fd in the table's cache until it goes, unless kept.
class PathFdPin {
 public:
  PathFdPin(InodeTable& table, Inode& inode, const PathFd& fd) : table_(table), inode_(inode) {
    table_.pinPathFd(inode_, fd);
  }
  ~PathFdPin() {
    if (!kept_) table_.unpinPathFd(inode_);
  }
  PathFdPin(const PathFdPin&) = delete;
  PathFdPin& operator=(const PathFdPin&) = delete;
  void keep() { kept_ = true; }

 private:
  InodeTable& table_;
  Inode& inode_;
  bool kept_ = false;
};
}  // namespace

// Cluster mode: a read-only open of a file with no valid copy may get one
// (CacheHooks::fetchCopy), but only for a caller the local kernel let through
// (default_permissions, before the open reached us) and whose file the remote
// opens for reading now: a peer is never asked for a file either denied. If
// the remote refuses, the open goes on and fails there as it would have.
// Before Inode::mu: a fetch can take up to --peer-timeout, and a second open of
// the same file waits on the first one's fetch in the cache, not on the inode.
void FileSystem::fetchCopyIfMissing(const OpenIntent& intent) {
  CacheHooks* cache = opts_.cache;
  if (cache == nullptr || !intent.path || intent.for_write || !intent.remote_known || intent.rel.empty() ||
      !cache->fetchesCopies() || !S_ISREG(intent.remote.st_mode) ||
      cache->hasValidCopy(intent.rel, intent.remote)) {
    return;
  }
  auto remote =
      openRemote(intent.path->get(), O_RDONLY | O_CLOEXEC | O_LARGEFILE, "open remote file");
  if (!remote.ok()) return;
  ::close(*remote);  // read-only: no FLUSH waits on writes, no NFS write-back
  (void)cache->fetchCopy(intent.rel, intent.remote);
}

std::optional<struct stat> FileSystem::openedBackingStat(Inode& inode, const OpenIntent& intent) {
  struct stat st {};
  if (inode.backing_is_cache) {
    if (::fstat(inode.backing_fd, &st) != 0) return std::nullopt;
    return st;
  }
  // The remote file: the attributes this open validated are its own (the
  // backing was opened from the same O_PATH fd), as current as the mode wants
  // them. Writers move its size: asked then, under the deadline (a hung remote
  // costs the report, never the open).
  if (intent.remote_known && !intent.for_write && inode.writer_rels.empty()) {
    return intent.remote;
  }
  auto fresh = statRemote(inode.backing_fd, "stat backing file");
  if (fresh.ok()) return *fresh;
  spdlog::debug("open of {}: {}", intent.rel, fresh.error().message);
  if (intent.remote_known) return intent.remote;
  return std::nullopt;
}

Result<int> FileSystem::acquireBacking(Inode& inode, int flags,
                                       const std::optional<struct stat>& fresh) {
  OpenIntent intent;
  intent.for_write = opensForWrite(flags);
  ASSIGN_OR_RETURN(intent.path, pathForOpen(inode, flags));
  prepareOpen(inode, intent, fresh);
  fetchCopyIfMissing(intent);

  DeferDrops defer_drops;  // declared before the lock: runs after its release
  std::unique_lock lock(inode.mu);
  // The handlers under inode.mu use the inode's fd from the cache (cachedPathFd):
  // pinned from here, and for as long as the open if it succeeds.
  PathFdPin pin(table_, inode, intent.path);
  auto retire = [&] {
    lock.unlock();
    cache_conflicts_.fetch_add(1, std::memory_order_relaxed);
    table_.retire(inode);
    return sysError(ESTALE, "open: the cached copy in use cannot serve this open");
  };
  if (!reopenInheritedLocked(inode, intent).ok()) return retire();
  std::optional<struct stat> backing_st;  // for CacheHooks::opened, when at hand
  if (hasIdleBacking(inode)) {
    if (idleBackingServes(inode, intent, &backing_st)) {
      idle_reuses_.fetch_add(1, std::memory_order_relaxed);  // shared below, as if open
    } else {
      closeIdleBacking(inode, *shim_, table_.remoteFdCloser());
    }
  }
  if (writesRemote(inode, intent.for_write, flags)) RETURN_IF_ERROR(waitForWriteLane(inode, "open"));
  BackingFacts facts = factsOf(inode, intent.for_write, !intent.rel.empty(), intent.remote_known,
                               intent.remote);
  // Asked only when the answer decides (a copy handed out counts as open).
  int cache_fd = backingWantsCopy(facts) ? opts_.cache->openCached(intent.rel, intent.remote) : -1;
  facts.valid_copy = cache_fd >= 0;
  BackingChoice choice = chooseBacking(facts);
  switch (choice) {
    case BackingChoice::kRetire:
      return retire();
    case BackingChoice::kAdoptCopy: {
      Status adopted = adoptCopyLocked(inode);
      if (!adopted.ok() && adopted.error().code == Errc::kStale) return retire();
      RETURN_IF_ERROR(adopted);
      break;
    }
    case BackingChoice::kRefuseWrite:
      return sysError(inode.backing_rw_errno ? inode.backing_rw_errno : EACCES,
                      "open backing file for writing");
    case BackingChoice::kOpenCache:
    case BackingChoice::kOpenRemote:
      RETURN_IF_ERROR(installBacking(inode, choice == BackingChoice::kOpenCache, cache_fd, intent));
      break;
    case BackingChoice::kShareOpen:
      break;
  }
  if (intent.for_write && !intent.rel.empty()) {
    // No copy of the path is served or made while it is open for writing
    // (an adopted copy is out of the store's index: untouched).
    opts_.cache->beginWrite(intent.rel);
    intent.fence = opts_.cache;
  }
  if (flags & O_TRUNC) RETURN_IF_ERROR(truncateOnOpenLocked(inode));
  inode.nopen++;
  pin.keep();  // releaseBacking unpins
  if (intent.fence != nullptr) {
    inode.writer_rels.push_back(intent.rel);  // releaseBacking lowers the fence
    intent.fence = nullptr;
  }
  table_.noteBacking(inode);  // before the reply: a successor must know the id is in use
  bool from_cache = inode.backing_is_cache;
  int id = inode.backing_id;
  bool report = opts_.cache != nullptr && !intent.rel.empty();
  if (report && !backing_st) backing_st = openedBackingStat(inode, intent);
  lock.unlock();
  (from_cache ? cache_opens_ : remote_opens_).fetch_add(1, std::memory_order_relaxed);
  if (report && backing_st) {
    opts_.cache->opened(intent.rel, *backing_st, from_cache, intent.for_write);
  }
  return id;
}

void FileSystem::releaseBacking(Inode& inode, bool was_writer) {
  std::string release_cached, end_write;
  bool adopted = false, written_back = false, went_idle = false;
  // A predecessor's adopted copy that no request reclaimed yet: its last
  // release writes it back as any adopted copy's does.
  bool reclaim;
  {
    std::lock_guard lock(inode.mu);
    reclaim = inode.inherited_adopted && inode.nopen == 1;
  }
  if (Status s = reclaim ? adoptBackingFd(inode) : Status(Ok{}); !s.ok()) {
    spdlog::error("last release of inode {}: {}", inode.src_ino, s.error().message);
  }
  {
    std::lock_guard lock(inode.mu);
    if (was_writer && !inode.writer_rels.empty()) {
      end_write = std::move(inode.writer_rels.back());
      inode.writer_rels.pop_back();
    }
    if (inode.nopen <= 0) {
      // A release the predecessor counted already (or a lost count): the
      // backing stays registered until the inode's forget.
      spdlog::warn("release of inode {} that has no open counted", inode.src_ino);
      return;
    }
    if (--inode.nopen == 0 && inode.backing_fd < 0 && inode.backing_id >= 0) {
      shim_->closeBacking(inode.backing_id);  // inherited, never reopened here
      inode.backing_id = -1;
    } else if (inode.nopen == 0) {
      if (inode.backing_is_cache) release_cached = inode.cached_rel;
      // The last open of an adopted copy: whatever a writer or a shared
      // mapping left in it since the last flush reaches the remote now, and
      // the copy goes (the store drops it, or keeps it aside): a dirty copy is
      // never kept as an idle backing. Any other backing is kept for the next
      // open; noteIdle closes what it must.
      if ((adopted = inode.copy_adopted)) {
        Status wb = writeBackLocked(inode);
        if (!wb.ok()) spdlog::error("last close: {}", wb.error().message);
        written_back = wb.ok();
        remote_.closeLater(inode.remote_wb_fd);
        inode.remote_wb_fd = -1;
        inode.copy_adopted = false;
        closeIdleBacking(inode, *shim_, table_.remoteFdCloser());
      } else {
        went_idle = inode.backing_fd >= 0;
      }
    }
    table_.noteBacking(inode);
    table_.unpinPathFd(inode);  // pinned by its open (acquireBacking)
  }
  if (went_idle) table_.noteIdle(inode, opts_.idle_backings);
  if (opts_.cache == nullptr) return;
  if (!release_cached.empty()) opts_.cache->releaseCached(release_cached);
  if (adopted) opts_.cache->releaseAdopted(release_cached, written_back);
  if (!end_write.empty()) opts_.cache->endWrite(end_write);
}

// kAdoptCopy (backing.h): the inode's open cache copy becomes its write-back
// buffer. The remote is opened for writing first (its errno refuses the open,
// as for a remote backing file), then checked to be the object the copy was
// made from, and the store marks the copy dirty on disk before any writer is
// answered. kStale: the copy cannot become the truth (the remote moved on, or
// the store dropped it meanwhile); the caller falls back to what it did before
// adoption existed. Under inode.mu.
Status FileSystem::adoptCopyLocked(Inode& inode) {
  PathFd path = table_.cachedPathFd(inode);  // pinned by the open
  if (!path) return sysError(ESTALE, "open remote file for writing: no fd for the inode");
  ASSIGN_OR_RETURN(int opened, openRemote(path->get(), O_WRONLY | O_CLOEXEC | O_LARGEFILE,
                                          "open remote file for writing"));
  WritableRemoteFd remote(remote_, opened);
  ASSIGN_OR_RETURN(struct stat base, statRemote(remote.get(), "stat remote file"));
  if (!sameRemoteObject(base, inode.cached_against) || !inode.backing_writable) {
    return makeError(Errc::kStale, "the remote changed since the open copy was made");
  }
  struct stat copy;
  if (::fstat(inode.backing_fd, &copy) != 0) return lastSysError("stat cache copy");
  if (!opts_.cache->adoptCopy(inode.cached_rel, copy, base)) {
    return makeError(Errc::kStale, "the cache no longer holds the open copy");
  }
  inode.copy_adopted = true;
  inode.remote_wb_fd = remote.release();
  // The copy equals the remote now: the stamp of "last written back" (taken
  // after the dirty mark, which changed its ctime).
  struct timespec coarse;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &coarse);
  inode.stamp_usable = ::fstat(inode.backing_fd, &inode.written_back) == 0 &&
                       stampSeesLaterWrites(inode.written_back, coarse);
  return Ok{};
}

// Copies an adopted copy to the remote in place (base/file_copy.h), unless its
// stamp says nothing changed since the last write-back; then the remote's new
// attributes become what the copy is validated against, here and in the
// store's dirty mark. Errors name the path and keep the errno, for the flush or
// fsync caller. Under inode.mu. The copying runs on a remote-call worker in the
// file's write lane, under the deadline: past it the caller gets ETIMEDOUT and
// nothing here changes (the copy stays dirty, its mark and stamp as they were,
// so the next write-back copies it all again, once this one has ended: the lane
// never lets two run side by side, nor an older one land after a newer one).
Status FileSystem::writeBackLocked(Inode& inode) {
  if (!inode.copy_adopted) return Ok{};
  const std::string what = "write back " + inode.cached_rel;
  struct timespec coarse;
  ::clock_gettime(CLOCK_REALTIME_COARSE, &coarse);  // before the stamp: see backing.h
  struct stat stamp;
  if (::fstat(inode.backing_fd, &stamp) != 0) return lastSysError(what + ": stat cache copy");
  if (inode.stamp_usable && copyUnchanged(inode.written_back, stamp)) return Ok{};
  ASSIGN_OR_RETURN(struct stat remote,
                   callRemoteInLane<struct stat>(
                       remote_, writeLaneOf(inode), what, {inode.backing_fd, inode.remote_wb_fd},
                       [what](const CallFds& f) -> Result<struct stat> {
                         Status copied = copyFileInPlace(f[0], f[1]);
                         if (!copied.ok()) {
                           const Error& e = copied.error();
                           return Error{e.code, e.sys_errno, what + ": " + e.message};
                         }
                         struct stat st;
                         if (::fstat(f[1], &st) != 0) return lastSysError(what + ": stat remote");
                         return st;
                       }));
  dropIdleWriteLane(inode);
  inode.cached_against = remote;
  inode.last_stat = remote;
  inode.last_stat_time = monotonicSeconds();
  inode.written_back = stamp;
  inode.stamp_usable = stampSeesLaterWrites(stamp, coarse);
  opts_.cache->copyWrittenBack(inode.cached_rel, remote);
  return Ok{};
}

// A truncate through the mount of an inode whose backing is the cache copy
// goes to the copy, adopted for it, and is written back at once, so stat, the
// data and the remote agree. kStale: the copy cannot be adopted; the caller
// truncates the remote as for any other file. Under inode.mu.
Status FileSystem::truncateCopyLocked(Inode& inode, off_t size) {
  if (!inode.copy_adopted) RETURN_IF_ERROR(adoptCopyLocked(inode));
  if (::ftruncate(inode.backing_fd, size) != 0) return lastSysError("truncate cache copy");
  return writeBackLocked(inode);
}

// fallocate of an inode whose backing is the cache copy: done on the remote
// (so it answers as the remote does, and the remote allocates as asked), after
// the copy's pending bytes reached it; then the copy is made the remote's bytes
// again (fallocate may zero a range or grow the file). kStale: as
// truncateCopyLocked. Under inode.mu. The remote's part runs on a worker in the
// file's write lane under the deadline; the remote's bytes are read into an
// unnamed file beside the copy (O_TMPFILE) and reach the copy here, only if the
// call ended in time: a refresh that lands late never overwrites what writers
// put in the copy since.
Status FileSystem::fallocateCopyLocked(Inode& inode, int mode, off_t offset, off_t length) {
  if (!inode.copy_adopted) RETURN_IF_ERROR(adoptCopyLocked(inode));
  RETURN_IF_ERROR(writeBackLocked(inode));
  PathFd path = table_.cachedPathFd(inode);  // pinned by the open
  if (!path) return sysError(ESTALE, "fallocate: no fd for the inode");
  std::error_code ec;
  std::string copy_dir =
      std::filesystem::read_symlink(procPath(inode.backing_fd), ec).parent_path();
  if (ec) return sysError(ec.value(), "fallocate: where the cache copy is: " + ec.message());
  UniqueFd fresh(::open(copy_dir.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (!fresh) return lastSysError("fallocate: O_TMPFILE beside the cache copy");
  struct Refreshed {
    struct stat remote;
  };
  ASSIGN_OR_RETURN(
      Refreshed done,
      callRemoteInLane<Refreshed>(
          remote_, writeLaneOf(inode), "fallocate", {inode.remote_wb_fd, path->get(), fresh.get()},
          [mode, offset, length](const CallFds& f) -> Result<Refreshed> {
            if (::fallocate(f[0], mode, offset, length) < 0) return lastSysError("fallocate");
            UniqueFd remote(::open(procPath(f[1]).c_str(), O_RDONLY | O_CLOEXEC | O_LARGEFILE));
            if (!remote) return lastSysError("fallocate: open remote file to refresh the copy");
            Status copied = copyFileInPlace(remote.get(), f[2]);
            if (!copied.ok()) return copied.takeError();
            Refreshed r;
            if (::fstat(f[0], &r.remote) != 0) return lastSysError("fallocate: stat remote");
            return r;
          }));
  dropIdleWriteLane(inode);
  Status copied = copyFileInPlace(fresh.get(), inode.backing_fd);
  if (!copied.ok()) return Error{copied.error().code, copied.error().sys_errno,
                                 "fallocate: refresh the cache copy: " + copied.error().message};
  inode.cached_against = done.remote;
  opts_.cache->copyWrittenBack(inode.cached_rel, done.remote);
  inode.stamp_usable = false;  // the next write-back copies: equal, and cheap to be sure
  return Ok{};
}

// ---- the write lane ----------------------------------------------------------

RemoteCalls::Lane FileSystem::writeLaneOf(const Inode& inode) {
  std::lock_guard lock(write_lanes_mu_);
  if (write_lanes_.size() >= 1024) {
    // Lanes whose last call's worker had not let go yet when it was dropped.
    std::erase_if(write_lanes_, [](const auto& entry) { return entry.second.unused(); });
  }
  return write_lanes_[{inode.src_dev, inode.src_ino}];  // a copy shares the lane
}

Status FileSystem::waitForWriteLane(const Inode& inode, const char* what) {
  std::optional<RemoteCalls::Lane> lane;
  {
    std::lock_guard lock(write_lanes_mu_);
    auto it = write_lanes_.find({inode.src_dev, inode.src_ino});
    if (it == write_lanes_.end()) return Ok{};
    lane = it->second;
  }
  Status waited = remote_.waitForLane(*lane, what);
  lane.reset();
  if (waited.ok()) dropIdleWriteLane(inode);
  return waited;
}

void FileSystem::holdWriteLane(dev_t dev, ino_t ino, RemoteCalls::Lane lane) {
  std::lock_guard lock(write_lanes_mu_);
  write_lanes_[{dev, ino}] = std::move(lane);
}

void FileSystem::dropIdleWriteLane(const Inode& inode) {
  std::lock_guard lock(write_lanes_mu_);
  auto it = write_lanes_.find({inode.src_dev, inode.src_ino});
  if (it != write_lanes_.end() && it->second.unused()) write_lanes_.erase(it);
}

// ---- files -------------------------------------------------------------------

Status FileSystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Inode& inode = inodeOf(ino);
  std::optional<struct stat> fresh;
  RETURN_IF_ERROR(checkOpenPath(ino, inode, &fresh));  // close-to-open (consistency.h)
  if (opensForWrite(fi->flags) || (fi->flags & O_TRUNC)) {
    // Its writes bypass the daemon (passthrough): no record of it until the
    // last writer's release drops it again.
    NamesChange names_change;
    RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(inode)}));
  }
  ASSIGN_OR_RETURN(int id, acquireBacking(inode, fi->flags, fresh));
  fi->fh = opensForWrite(fi->flags) ? kFhWriter : 0;
  fi->keep_cache = opts_.consistency.keepCache();
  // FLUSH reports deferred write errors at close(); a read-only open has none, and
  // skipping it saves a round trip per file (many small files read whole).
  fi->noflush = fi->fh != kFhWriter;
  (id >= 0 ? passthrough_opens_ : userspace_opens_).fetch_add(1, std::memory_order_relaxed);
  if (shim_->replyOpen(req, *fi, id) != 0) {
    afterReply("open", [&] { releaseBacking(inode, fi->fh == kFhWriter); });  // the opener is gone
  }
  return Ok{};
}

namespace {
// Creates (or opens, without O_EXCL) name under dir; the fd is only a test of
// the flags: the backing file is opened later, shared per inode. Runs as the
// caller (callRemote).
Status createAsCaller(int dir_fd, const std::string& name, mode_t mode, int open_flags) {
  int flags = (open_flags | O_CREAT | O_CLOEXEC) & ~(O_NOFOLLOW | O_ACCMODE);
  // A new file can always be opened read-write by its creator; an existing one
  // (no O_EXCL) only as its mode allows.
  UniqueFd fd(::openat(dir_fd, name.c_str(), flags | O_RDWR, mode));
  if (!fd && errno == EACCES) {
    fd.reset(::openat(dir_fd, name.c_str(), flags | (open_flags & O_ACCMODE), mode));
  }
  if (!fd) return lastSysError("create");
  return Ok{};
}
}  // namespace

Status FileSystem::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                          fuse_file_info* fi) {
  if (isTmpfileCreate(name)) return tmpfile(req, parent, mode, fi);
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(parent, name)}));
  ASSIGN_OR_RETURN(PathFd dir, pathFd(inodeOf(parent)));
  RETURN_IF_ERROR(callRemote<void>(remote_, "create", {dir->get()}, callerOf(req),
                                   [name = std::string(name), mode, flags = fi->flags](
                                       const CallFds& f) {
                                     return createAsCaller(f[0], name, mode, flags);
                                   }));
  fuse_entry_param e;
  RETURN_IF_ERROR(doLookup(parent, name, &e));
  return replyCreated(req, e, fi, fi->flags & ~O_TRUNC, "create");
}

Status FileSystem::replyCreated(fuse_req_t req, const fuse_entry_param& e, fuse_file_info* fi,
                                int flags, const char* op) {
  Inode& inode = inodeOf(e.ino);
  auto backing = acquireBacking(inode, flags);
  if (!backing.ok()) {
    table_.forget(inode, 1);
    return backing.takeError();
  }
  fi->fh = opensForWrite(flags) ? kFhWriter : 0;
  fi->keep_cache = opts_.consistency.keepCache();
  int id = *backing;
  (id >= 0 ? passthrough_opens_ : userspace_opens_).fetch_add(1, std::memory_order_relaxed);
  if (shim_->replyCreate(req, e, *fi, id) != 0) {
    afterReply(op, [&] {
      releaseBacking(inode, fi->fh == kFhWriter);
      table_.forget(inode, 1);
    });
  }
  return Ok{};
}

namespace {
// The unnamed file, made as the caller (so it belongs to them; callRemote), and
// an O_PATH fd of it for the inode table, with its stat. Only the access mode
// and O_EXCL (never linkable) travel; the backing file is opened later, shared
// per inode, as for create.
struct MadeTmpfile {
  int path_fd;  // the caller's to keep or close
  struct stat st;
};
Result<MadeTmpfile> tmpfileAsCaller(int dir_fd, mode_t mode, int open_flags) {
  int flags = O_TMPFILE | O_CLOEXEC | (open_flags & (O_ACCMODE | O_EXCL));
  UniqueFd fd(::openat(dir_fd, ".", flags, mode & ~S_IFMT));
  // ENOSYS would make the kernel refuse O_TMPFILE on the whole mount for good.
  if (!fd) return sysError(errno == ENOSYS ? EOPNOTSUPP : errno, "O_TMPFILE");
  UniqueFd path_fd(::open(procPath(fd.get()).c_str(), O_PATH | O_CLOEXEC));
  if (!path_fd) return lastSysError("O_PATH of the O_TMPFILE file");
  MadeTmpfile made{.path_fd = -1, .st = {}};
  if (::fstat(path_fd.get(), &made.st) < 0) return lastSysError("fstat O_TMPFILE file");
  made.path_fd = path_fd.release();
  return made;
}
}  // namespace

Status FileSystem::tmpfile(fuse_req_t req, fuse_ino_t parent, mode_t mode, fuse_file_info* fi) {
  ASSIGN_OR_RETURN(PathFd dir, pathFd(inodeOf(parent)));
  ASSIGN_OR_RETURN(MadeTmpfile made,
                   callRemote<MadeTmpfile>(
                       remote_, "O_TMPFILE", {dir->get()}, callerOf(req),
                       [mode, flags = fi->flags](const CallFds& f) {
                         return tmpfileAsCaller(f[0], mode, flags);
                       },
                       [](Result<MadeTmpfile>& late) {
                         if (late.ok()) ::close(late->path_fd);
                       }));
  fuse_entry_param e;
  std::memset(&e, 0, sizeof(e));
  e.attr = made.st;
  e.attr_timeout = opts_.consistency.attrTimeout(e.attr);
  e.entry_timeout = opts_.consistency.entryTimeout(e.attr);
  Inode& inode = table_.addLookup(made.path_fd, e.attr);
  e.ino = table_.idOf(inode);
  e.generation = inode.generation;
  // The kernel's d_tmpfile() drops one link from what the reply says (fs/dcache.c),
  // as local file systems make the inode with one link and drop it there.
  e.attr.st_nlink += 1;
  // O_TMPFILE's flags carry O_DIRECTORY: only the access mode and O_APPEND open it.
  return replyCreated(req, e, fi, fi->flags & (O_ACCMODE | O_APPEND), "tmpfile");
}

Status FileSystem::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  Inode& inode = inodeOf(ino);
  RETURN_IF_ERROR(adoptBackingFd(inode));
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  bool remote;
  {
    std::lock_guard lock(inode.mu);
    buf.buf[0].fd = inode.backing_fd;
    remote = !inode.backing_is_cache;
  }
  if (buf.buf[0].fd < 0) return sysError(EBADF, "read: no backing file");
  if (remote && remote_.timeoutSeconds() > 0) {
    // Read on a worker, under the deadline; the splice below would block here.
    ASSIGN_OR_RETURN(std::vector<char> data,
                     callRemote<std::vector<char>>(
                         remote_, "read", {buf.buf[0].fd}, std::nullopt,
                         [size, off](const CallFds& f) -> Result<std::vector<char>> {
                           std::vector<char> data(size);
                           ssize_t n = ::pread(f[0], data.data(), size, off);
                           if (n < 0) return lastSysError("read");
                           data.resize(static_cast<size_t>(n));
                           return data;
                         }));
    userspace_read_bytes_.fetch_add(data.size(), std::memory_order_relaxed);
    fuse_reply_buf(req, data.data(), data.size());
    return Ok{};
  }
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].pos = off;
  userspace_read_bytes_.fetch_add(size, std::memory_order_relaxed);
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
  return Ok{};
}

Status FileSystem::write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size,
                         off_t off) {
  Inode& inode = inodeOf(ino);
  RETURN_IF_ERROR(adoptBackingFd(inode));
  int fd;
  bool remote;
  {
    std::lock_guard lock(inode.mu);
    fd = inode.backing_fd;
    remote = !inode.backing_is_cache;
  }
  if (fd < 0) return sysError(EBADF, "write: no backing file");
  if (!remote || remote_.timeoutSeconds() <= 0) {
    ssize_t n = ::pwrite(fd, data, size, off);
    if (n < 0) return lastSysError("write");
    fuse_reply_write(req, static_cast<size_t>(n));
    return Ok{};
  }
  // A write that passes the deadline may still reach the remote later.
  ASSIGN_OR_RETURN(size_t n, callRemote<size_t>(remote_, "write", {fd}, std::nullopt,
                                                [bytes = std::string(data, size),
                                                 off](const CallFds& f) -> Result<size_t> {
                                                  ssize_t n = ::pwrite(f[0], bytes.data(),
                                                                       bytes.size(), off);
                                                  if (n < 0) return lastSysError("write");
                                                  return static_cast<size_t>(n);
                                                }));
  fuse_reply_write(req, n);
  return Ok{};
}

namespace {
// A duplicate of the inode's backing fd, or none.
UniqueFd dupBacking(Inode& inode) {
  std::lock_guard lock(inode.mu);
  return UniqueFd(inode.backing_fd >= 0 ? ::dup(inode.backing_fd) : -1);
}
}  // namespace

Status FileSystem::flush(fuse_req_t req, fuse_ino_t ino) {
  Inode& inode = inodeOf(ino);
  RETURN_IF_ERROR(adoptBackingFd(inode));
  {
    // A writer's close returns once the remote has its bytes (close-to-open
    // for other hosts), or with the error that kept them from it.
    std::lock_guard lock(inode.mu);
    RETURN_IF_ERROR(writeBackLocked(inode));
  }
  // Closing a duplicate reports the remote's deferred write errors (NFS
  // close-to-open) to the closing process, as close() on the remote would.
  auto fd = std::make_shared<CallFds>();
  fd->close_later = remote_.closer();
  fd->fds.push_back(dupBacking(inode));
  if (fd->fds[0]) {
    RETURN_IF_ERROR(remote_.run<void>("flush", [fd]() -> Status {
      if (::close(fd->fds[0].release()) < 0) return lastSysError("flush");
      return Ok{};
    }));
  }
  return replyDone(req);
}

Status FileSystem::release(fuse_req_t req, fuse_ino_t ino, uint64_t fh) {
  releaseBacking(inodeOf(ino), fh == kFhWriter);
  if (fh == kFhWriter && names() != nullptr) {
    // What was learnt while it was open for writing may predate its writes.
    if (auto rel = namesRel(inodeOf(ino)); rel && !dropNames({*rel}).ok()) {
      spdlog::error("namespace: release of {}: its record could not be dropped", *rel);
    }
  }
  return replyDone(req);
}

Status FileSystem::syncRemote(int fd, int datasync, const char* what) {
  return callRemote<void>(remote_, what, {fd}, std::nullopt,
                          [datasync, what](const CallFds& f) -> Status {
                            if ((datasync ? ::fdatasync(f[0]) : ::fsync(f[0])) < 0) {
                              return lastSysError(what);
                            }
                            return Ok{};
                          });
}

Status FileSystem::fsync(fuse_req_t req, fuse_ino_t ino, int datasync) {
  Inode& inode = inodeOf(ino);
  RETURN_IF_ERROR(adoptBackingFd(inode));
  {
    // Durable means on the remote: an adopted copy is written back (and the
    // remote fsync'd) rather than the copy synced.
    std::lock_guard lock(inode.mu);
    if (inode.copy_adopted) {
      RETURN_IF_ERROR(writeBackLocked(inode));
      return replyDone(req);
    }
  }
  UniqueFd fd = dupBacking(inode);
  if (!fd) return sysError(EBADF, "fsync: no backing file");
  RETURN_IF_ERROR(syncRemote(fd.get(), datasync, "fsync"));
  return replyDone(req);
}

// ---- fallocate, SEEK_DATA/SEEK_HOLE, file attribute ioctls --------------------

Status FileSystem::fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset,
                             off_t length) {
  // Every mode may change the content or the size: the copy goes first, as for
  // truncate (a writer's fence already keeps new copies away).
  Inode& inode = inodeOf(ino);
  {
    DeferDrops defer_drops;  // adopting calls the store under inode.mu
    std::lock_guard lock(inode.mu);
    if (inode.backing_is_cache && inode.nopen > 0) {
      Status st = fallocateCopyLocked(inode, mode, offset, length);
      if (st.ok()) return replyDone(req);
      if (st.error().code != Errc::kStale) return st;
    }
  }
  invalidate(relPathOf(inode), {.kind = Change::Kind::kWrite});
  ASSIGN_OR_RETURN(UniqueFd fd, remoteFileFd(inode, true));
  RETURN_IF_ERROR(callRemoteInLane<void>(remote_, writeLaneOf(inode), "fallocate", {fd.get()},
                                         [mode, offset, length](const CallFds& f) -> Status {
                                           if (::fallocate(f[0], mode, offset, length) < 0) {
                                             return lastSysError("fallocate");
                                           }
                                           return Ok{};
                                         }));
  dropIdleWriteLane(inode);
  return replyDone(req);
}

Status FileSystem::lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence) {
  // The kernel asks only for SEEK_DATA and SEEK_HOLE (fuse_file_llseek). The
  // remote file, not a cache copy: copies are written dense, without holes;
  // but an adopted copy holds data the remote may not have yet.
  Inode& inode = inodeOf(ino);
  UniqueFd fd;
  {
    std::lock_guard lock(inode.mu);
    if (inode.copy_adopted) fd.reset(::dup(inode.backing_fd));
  }
  if (!fd) {
    ASSIGN_OR_RETURN(fd, remoteFileFd(inode, false));
  }
  ASSIGN_OR_RETURN(off_t res, callRemote<off_t>(remote_, "lseek", {fd.get()}, std::nullopt,
                                                 [off, whence](const CallFds& f) -> Result<off_t> {
                                                   off_t res = ::lseek(f[0], off, whence);
                                                   if (res < 0) return lastSysError("lseek");
                                                   return res;
                                                 }));
  fuse_reply_lseek(req, res);
  return Ok{};
}

namespace {

// The ioctls forwarded: the kernel sends them only from vfs_fileattr_get/set
// (fuse_priv_ioctl, restricted, fixed sizes): flags as an int, or a struct fsxattr.
size_t fileattrArgSize(unsigned int cmd) {
  switch (cmd) {
    case FS_IOC_GETFLAGS:
    case FS_IOC_SETFLAGS:
    case FS_IOC32_GETFLAGS:
    case FS_IOC32_SETFLAGS:
      return sizeof(int);
    case FS_IOC_FSGETXATTR:
    case FS_IOC_FSSETXATTR:
      return sizeof(struct fsxattr);
    default:
      return 0;
  }
}

}  // namespace

Status FileSystem::ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, unsigned flags,
                         const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  size_t size = fileattrArgSize(cmd);
  if (size == 0 || (flags & FUSE_IOCTL_UNRESTRICTED)) return sysError(ENOTTY, "ioctl");
  bool in = _IOC_DIR(cmd) & _IOC_WRITE, out = _IOC_DIR(cmd) & _IOC_READ;
  if ((in && in_bufsz < size) || (out && out_bufsz < size)) return sysError(EINVAL, "ioctl size");
  // Directories too (lsattr -d): a plain O_RDONLY open works for both.
  ASSIGN_OR_RETURN(UniqueFd fd, remoteFileFd(inodeOf(ino), false));
  struct Arg {
    alignas(struct fsxattr) char bytes[sizeof(struct fsxattr)] = {};
  } arg;
  if (in) std::memcpy(arg.bytes, in_buf, size);
  // As the caller: the remote checks ownership against them.
  ASSIGN_OR_RETURN(arg, callRemote<Arg>(remote_, "ioctl", {fd.get()}, callerOf(req),
                                        [in_arg = arg, cmd](const CallFds& f) -> Result<Arg> {
                                          Arg arg = in_arg;
                                          if (::ioctl(f[0], cmd, arg.bytes) < 0) {
                                            return lastSysError("ioctl");
                                          }
                                          return arg;
                                        }));
  fuse_reply_ioctl(req, 0, out ? arg.bytes : nullptr, out ? size : 0);
  return Ok{};
}

// ---- directories ---------------------------------------------------------------

bool FileSystem::revalidateListing(fuse_ino_t dir, const struct stat& now) {
  bool keep;
  {
    std::lock_guard lock(listings_mu_);
    auto key = std::make_pair(now.st_dev, now.st_ino);
    if (listings_.size() >= kMaxListings && !listings_.contains(key)) listings_.clear();
    Listing& listing = listings_[key];
    keep = opts_.consistency.keepsListing(listing.dir, listing.at, now);
    if (!keep) listing = {.dir = now, .at = static_cast<double>(wallNs()) * 1e-9};
  }
  spdlog::debug("opendir of {}: {}", now.st_ino, keep ? "listing kept" : "listing read afresh");
  if (keep) return true;
  // The open's reply without FOPEN_KEEP_CACHE drops the cached listing where the
  // kernel honours that flag for directories (6.18 does); this drops it on any
  // kernel, and the directory's cached attributes too: its mtime, which
  // fuse_readdir_cached() checks its cache against, and what `ls -ld` shows,
  // otherwise trusted for the whole attribute timeout. Before the reply.
  Status st = shim_->invalidateInode(dir);
  if (!st.ok()) spdlog::warn("opendir: {}", st.error().message);
  // A listing read afresh may lack names the kernel still holds entries for
  // (removed or renamed on the remote): it looks each up again on next use.
  if (opts_.consistency.mode == Consistency::Mode::kImmutable) {
    st = shim_->invalidateAllEntries();
    if (!st.ok() && !warned_no_epoch_.exchange(true)) {
      spdlog::warn(
          "{}: names removed on the remote may answer stat until the kernel drops them "
          "(needs Linux >= 6.16)",
          st.error().message);
    }
  }
  return false;
}

// ---- directory handles ---------------------------------------------------------

// Handles are numbers, not pointers: after a takeover the kernel still holds
// the predecessor's. Each process numbers its own from a random 32-bit base,
// and a handle is used only for the node id it was opened on. Odd numbers are
// listings served from the namespace (offsets: index + 1), even ones remote
// streams (offsets: the remote's telldir cookies), so that a successor resumes
// each kind as what it was.
Result<std::shared_ptr<DirHandle>> FileSystem::openDirHandle(fuse_ino_t ino) {
  auto d = std::make_shared<DirHandle>();
  ASSIGN_OR_RETURN(PathFd path, pathFd(inodeOf(ino)));
  ASSIGN_OR_RETURN(DIR * dp, openRemoteDir(path->get()));
  d->dp = std::shared_ptr<DIR>(dp, ::closedir);
  d->ino = ino;
  return d;
}

// The handle the kernel names; one it does not know here (a predecessor's,
// after a takeover) is the directory opened again, at offset -1: the next
// readdir seeks to the kernel's offset (a telldir cookie of the remote's).
Result<std::shared_ptr<DirHandle>> FileSystem::dirOf(fuse_ino_t ino, const fuse_file_info* fi) {
  {
    std::lock_guard lock(dirs_mu_);
    auto it = dirs_.find(fi->fh);
    if (it != dirs_.end() && it->second->ino == ino) return it->second;
  }
  std::shared_ptr<DirHandle> d;
  if ((fi->fh & 1) != 0) {
    d = namedDirHandle(ino);  // the predecessor's listing, as the namespace has it
    if (!d) return sysError(EIO, "readdir: a listing of the predecessor's is no longer in the namespace");
  } else {
    ASSIGN_OR_RETURN(d, openDirHandle(ino));
    d->offset = -1;
  }
  std::lock_guard lock(dirs_mu_);
  auto [it, added] = dirs_.insert_or_assign(fi->fh, d);
  return it->second;
}

uint64_t FileSystem::addDirHandle(std::shared_ptr<DirHandle> d) {
  std::lock_guard lock(dirs_mu_);
  uint64_t fh = next_dir_handle_;
  next_dir_handle_ += 2;
  if (d->named) fh |= 1;
  dirs_[fh] = std::move(d);
  return fh;
}

Status FileSystem::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (opendirFromNames(req, ino, fi)) return Ok{};
  ASSIGN_OR_RETURN(auto d, openDirHandle(ino));
  d->epoch = namesEpoch();
  DIR* dp = d->dp.get();
  struct stat now {};
  if (opts_.consistency.keepCache()) {
    ASSIGN_OR_RETURN(now, statRemote(::dirfd(dp), "opendir: fstat"));
  }
  if (auto rel = names() ? namesRel(inodeOf(ino)) : std::nullopt) {
    d->record = true;
    d->rel = *rel;
    d->dir_attr = now;
  }
  fi->fh = addDirHandle(std::move(d));
  if (opts_.consistency.keepCache()) {
    // The kernel caches the listing (FOPEN_CACHE_DIR); revalidateListing drops
    // it where the directory changed. FOPEN_KEEP_CACHE says the same to kernels
    // whose directory open drops the cache without it.
    fi->keep_cache = revalidateListing(ino, now);
    fi->cache_readdir = 1;
  }
  fuse_reply_open(req, fi);
  return Ok{};
}

Result<size_t> FileSystem::addDirEntry(fuse_req_t req, fuse_ino_t dir, const DirEntry& ent,
                                       char* buf, size_t room, bool plus) {
  const char* name = ent.name.c_str();
  if (!plus) {
    struct stat st {};
    st.st_ino = ent.ino;
    st.st_mode = static_cast<mode_t>(ent.type) << 12;
    size_t size = fuse_add_direntry(req, buf, room, name, &st, ent.off);
    return size > room ? 0 : size;
  }
  fuse_entry_param e;
  bool looked_up = !isDotOrDotdot(name);
  if (looked_up) {
    RETURN_IF_ERROR(doLookup(dir, name, &e));
  } else {
    std::memset(&e, 0, sizeof(e));
    e.attr.st_ino = ent.ino;
    e.attr.st_mode = static_cast<mode_t>(ent.type) << 12;
  }
  size_t size = fuse_add_direntry_plus(req, buf, room, name, &e, ent.off);
  if (size <= room) return size;
  if (looked_up) table_.forget(inodeOf(e.ino), 1);  // not handed out after all
  return 0;
}

namespace {
// Up to n entries of the stream, after seekdir(seek) when given: on a worker,
// since the getdents under readdir(3) waits on the remote.
Result<std::deque<DirEntry>> readRemoteDir(RemoteCalls& remote, std::shared_ptr<DIR> dp,
                                           std::optional<off_t> seek, size_t n) {
  return remote.run<std::deque<DirEntry>>(
      "readdir", [dp = std::move(dp), seek, n]() -> Result<std::deque<DirEntry>> {
        if (seek) ::seekdir(dp.get(), *seek);
        std::deque<DirEntry> out;
        while (out.size() < n) {
          errno = 0;
          const dirent* ent = ::readdir(dp.get());
          if (ent == nullptr) {
            // An error after some entries is reported on the next call, as getdents does.
            if (errno != 0 && out.empty()) return lastSysError("readdir");
            break;
          }
          out.push_back({.name = ent->d_name, .ino = ent->d_ino, .type = ent->d_type,
                         .off = ent->d_off});
        }
        return out;
      });
}
}  // namespace

Status FileSystem::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                           fuse_file_info* fi, bool plus) {
  ASSIGN_OR_RETURN(std::shared_ptr<DirHandle> d, dirOf(ino, fi));
  if (d->named) return readdirFromNames(req, ino, size, off, *d, plus);
  if (d->lost) return sysError(EIO, "readdir: an earlier read of this directory timed out");
  std::optional<off_t> seek;
  if (off != d->offset) {
    seek = off;
    d->pending.clear();
    if (off == 0) {
      d->seen.clear();  // rewinddir: the listing starts again
    } else {
      d->record = false;
    }
  }
  std::vector<char> buf(size);
  size_t used = 0;
  int err = 0;
  while (true) {
    if (d->pending.empty()) {
      // Enough entries to fill buf; the rest wait in pending.
      auto more = readRemoteDir(remote_, d->dp, seek, size / (plus ? 152 : 24) + 1);
      if (!more.ok()) {
        d->lost = more.error().sys_errno == ETIMEDOUT;
        err = replyErrno(more.error());
        break;
      }
      if (seek) d->offset = *std::exchange(seek, std::nullopt);
      if (more->empty()) {  // the end of the directory
        recordListing(*d);
        break;
      }
      if (d->record) noteListed(*d, *more);
      d->pending = std::move(*more);
    }
    auto added = addDirEntry(req, ino, d->pending.front(), buf.data() + used, size - used, plus);
    // A name that vanished between readdir and lookup is skipped, as a listing
    // taken a moment later would.
    if (!added.ok() && added.error().sys_errno != ENOENT) {
      err = replyErrno(added.error());
      break;
    }
    if (added.ok() && *added == 0) break;  // full: offered again on the next call
    if (added.ok()) used += *added;
    d->offset = d->pending.front().off;
    d->pending.pop_front();
  }
  if (err != 0 && used == 0) return sysError(err, "readdir");
  fuse_reply_buf(req, buf.data(), used);
  return Ok{};
}

// ---- directories from the namespace -------------------------------------------

void FileSystem::noteListed(DirHandle& d, const std::deque<DirEntry>& entries) {
  for (const DirEntry& ent : entries) {
    if (isDotOrDotdot(ent.name.c_str())) continue;
    if (ent.type == DT_UNKNOWN) {  // no type to record: the listing is not kept
      d.record = false;
      return;
    }
    NamespaceEntry entry{.attrs_known = false};
    entry.attr.st_mode = DTTOIF(ent.type);
    entry.attr.st_ino = ent.ino;
    d.seen.push_back({.name = ent.name, .entry = entry});
  }
}

void FileSystem::recordListing(DirHandle& d) {
  if (!d.record) return;
  d.record = false;
  if (!names()->putListing(d.rel, d.dir_attr, d.seen, d.epoch)) {
    spdlog::debug("namespace: listing of '{}' not recorded (changed meanwhile)", d.rel);
  } else {
    spdlog::debug("namespace: listing of '{}' recorded, {} names", d.rel, d.seen.size());
  }
  d.seen.clear();
}

bool FileSystem::opendirFromNames(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (names() == nullptr) return false;
  auto rel = namesRel(inodeOf(ino));
  if (!rel) return false;
  bool first_in_run;
  {
    std::lock_guard lock(listings_mu_);
    if (opened_dirs_.size() >= kMaxListings) opened_dirs_.clear();
    first_in_run = opened_dirs_.insert(*rel).second;
  }
  const uint64_t epoch = names()->epoch();
  auto self = names()->get(*rel);
  if (!self || !self->listed) return false;
  struct stat listed = attrOf(*self);  // the directory as it was when listed
  listed.st_mtim = self->listed_mtime;
  listed.st_ctim = self->listed_ctime;
  // No remote call for the first opendir of a directory in an immutable run
  // (after a restart), nor in ttl mode while the record is fresh. Otherwise one
  // stat of the directory: the listing holds while the directory is unchanged
  // and was quiet when listed (Consistency::keepsListing), as the kernel's own
  // cached listing does (revalidateListing); else it is read from the remote
  // again and recorded afresh.
  const bool immutable = opts_.consistency.mode == Consistency::Mode::kImmutable;
  bool checked = false;
  if (immutable ? !first_in_run : !fresh(*self)) {
    auto root = pathFd(table_.root());
    if (!root.ok()) return false;
    auto now = statRemoteAt((*root)->get(), rel->empty() ? "." : rel->c_str(), "opendir: revalidate");
    if (!now.ok()) return false;
    // The namespace knows the directory by its path: the remote's inode number
    // is not compared (sshfs gives a new one once its kernel forgets the inode).
    struct stat same_path = listed;
    same_path.st_dev = now->st_dev;
    same_path.st_ino = now->st_ino;
    if (!opts_.consistency.keepsListing(same_path, self->listed_at, *now)) return false;
    if (!immutable) {
      NamespaceEntry renewed{.attr = *now, .learnt_at = static_cast<double>(wallNs()) * 1e-9};
      renewed.attr.st_dev = 0;
      if (!names()->put(*rel, renewed, epoch)) return false;
    }
    checked = true;
  }
  auto listing = names()->listing(*rel);
  if (!listing) return false;
  if (first_in_run) {
    // The listing the kernel caches now is the namespace's: an opendir that
    // finds the directory changed revalidates against it (revalidateListing).
    std::lock_guard lock(listings_mu_);
    listings_[std::make_pair(listed.st_dev, listed.st_ino)] = {.dir = listed, .at = self->listed_at};
  }
  fi->fh = addDirHandle(namedHandleOf(ino, *rel, *self, std::move(*listing)));
  fi->cache_readdir = 1;
  // Checked unchanged: the kernel may keep the listing it cached; else it
  // reads it from here again (no remote call either way).
  fi->keep_cache = checked;
  fuse_reply_open(req, fi);
  return true;
}

std::shared_ptr<DirHandle> FileSystem::namedHandleOf(fuse_ino_t ino, const std::string& rel,
                                                    const NamespaceEntry& self,
                                                    std::vector<NamespaceChild> listing) {
  auto d = std::make_shared<DirHandle>();
  d->ino = ino;
  NamespaceEntry dot{.attrs_known = false};
  dot.attr.st_mode = S_IFDIR;
  dot.attr.st_ino = self.attr.st_ino;
  d->named.emplace();
  d->named->reserve(listing.size() + 2);
  d->named->push_back({.name = ".", .entry = dot});
  // readdir(3) skips entries of inode 0: ".." gets its directory's number, as
  // far as the namespace knows it.
  if (!rel.empty()) {
    auto slash = rel.rfind('/');
    auto up = names()->get(slash == std::string::npos ? "" : rel.substr(0, slash));
    if (up) dot.attr.st_ino = up->attr.st_ino;
  }
  d->named->push_back({.name = "..", .entry = dot});
  for (auto& child : listing) d->named->push_back(std::move(child));
  return d;
}

std::shared_ptr<DirHandle> FileSystem::namedDirHandle(fuse_ino_t ino) {
  if (names() == nullptr) return nullptr;
  auto rel = namesRel(inodeOf(ino));
  if (!rel) return nullptr;
  auto self = names()->get(*rel);
  if (!self || !self->listed) return nullptr;
  auto listing = names()->listing(*rel);
  if (!listing) return nullptr;
  return namedHandleOf(ino, *rel, *self, std::move(*listing));
}

Result<size_t> FileSystem::addNamedDirEntry(fuse_req_t req, fuse_ino_t dir,
                                            const NamespaceChild& child, off_t next_off, char* buf,
                                            size_t room, bool plus) {
  DirEntry ent{.name = child.name, .ino = child.entry.attr.st_ino,
               .type = static_cast<unsigned char>(IFTODT(child.entry.attr.st_mode)),
               .off = next_off};
  // readdirplus: the entry and its attributes in one trip, from the namespace
  // too when they are fresh there (doLookup asks it first), else from the remote.
  return addDirEntry(req, dir, ent, buf, room, plus);
}

Status FileSystem::readdirFromNames(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                                    const DirHandle& d, bool plus) {
  const std::vector<NamespaceChild>& named = *d.named;
  std::vector<char> buf(size);
  size_t used = 0;
  int err = 0;
  for (size_t i = off < 0 ? named.size() : static_cast<size_t>(off); i < named.size(); i++) {
    auto added = addNamedDirEntry(req, ino, named[i], static_cast<off_t>(i + 1),
                                  buf.data() + used, size - used, plus);
    if (!added.ok() && added.error().sys_errno != ENOENT) {
      err = replyErrno(added.error());
      break;
    }
    if (added.ok() && *added == 0) break;  // full: offered again on the next call
    if (added.ok()) used += *added;
  }
  if (err != 0 && used == 0) return sysError(err, "readdir");
  fuse_reply_buf(req, buf.data(), used);
  return Ok{};
}

Status FileSystem::releasedir(fuse_req_t req, fuse_file_info* fi) {
  // The stream closes with its last user, after the lock. closedir(3) waits on
  // no remote: a FUSE directory has no FLUSH and its RELEASEDIR is sent in the
  // background (fs/fuse/dir.c), NFS sends nothing.
  std::shared_ptr<DirHandle> d;
  {
    std::lock_guard lock(dirs_mu_);
    if (auto it = dirs_.find(fi->fh); it != dirs_.end()) {
      d = std::move(it->second);
      dirs_.erase(it);
    }
  }
  return replyDone(req);
}

Status FileSystem::fsyncdir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int datasync) {
  ASSIGN_OR_RETURN(std::shared_ptr<DirHandle> d, dirOf(ino, fi));
  if (!d->dp) return replyDone(req);  // served from the namespace: nothing changed here
  RETURN_IF_ERROR(syncRemote(::dirfd(d->dp.get()), datasync, "fsyncdir"));
  return replyDone(req);
}

Status FileSystem::statfs(fuse_req_t req) {
  ASSIGN_OR_RETURN(auto root, dupForCall(table_.rootFd(), "statfs"));
  ASSIGN_OR_RETURN(struct statvfs sv,
                   remote_.run<struct statvfs>("statfs", [root]() -> Result<struct statvfs> {
                     struct statvfs out;
                     if (::fstatvfs(root->get(), &out) < 0) return lastSysError("statfs");
                     return out;
                   }));
  fuse_reply_statfs(req, &sv);
  return Ok{};
}

Status FileSystem::access(fuse_req_t req, fuse_ino_t ino, int mask) {
  ASSIGN_OR_RETURN(PathFd path, pathFd(inodeOf(ino)));
  RETURN_IF_ERROR(callRemote<void>(remote_, "access", {path->get()}, callerOf(req),
                                   [mask](const CallFds& f) -> Status {
                                     if (::faccessat(AT_FDCWD, procPath(f[0]).c_str(), mask,
                                                     AT_EACCESS) < 0) {
                                       return lastSysError("access");
                                     }
                                     return Ok{};
                                   }));
  return replyDone(req);
}

// ---- extended attributes -----------------------------------------------------

namespace {
// getxattr and listxattr: size 0 asks for the size needed, else for the bytes;
// query(path, buf, size) runs on a worker (callRemote) with the inode's path.
template <typename Query>
Status replyXattrQuery(fuse_req_t req, RemoteCalls& remote, int fd, size_t size, const char* what,
                       Query query) {
  using Answer = std::pair<size_t, std::vector<char>>;  // the size, and the bytes when asked
  ASSIGN_OR_RETURN(Answer answer,
                   callRemote<Answer>(remote, what, {fd}, std::nullopt,
                                      [size, what, query](const CallFds& f) -> Result<Answer> {
                                        std::vector<char> buf(size);
                                        ssize_t n = query(procPath(f[0]),
                                                          size == 0 ? nullptr : buf.data(), size);
                                        if (n < 0) return lastSysError(what);
                                        buf.resize(size == 0 ? 0 : static_cast<size_t>(n));
                                        return Answer(static_cast<size_t>(n), std::move(buf));
                                      }));
  if (size == 0) {
    fuse_reply_xattr(req, answer.first);
  } else {
    fuse_reply_buf(req, answer.second.data(), answer.second.size());
  }
  return Ok{};
}
}  // namespace

Status FileSystem::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) return sysError(ENODATA, "getxattr on a symlink");
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  return replyXattrQuery(req, remote_, path->get(), size, "getxattr",
                         [name = std::string(name)](const std::string& path, char* buf, size_t n) {
                           return ::getxattr(path.c_str(), name.c_str(), buf, n);
                         });
}

Status FileSystem::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) {
    size == 0 ? fuse_reply_xattr(req, 0) : fuse_reply_buf(req, nullptr, 0);
    return Ok{};
  }
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  return replyXattrQuery(req, remote_, path->get(), size, "listxattr",
                         [](const std::string& path, char* buf, size_t n) {
                           return ::listxattr(path.c_str(), buf, n);
                         });
}

Status FileSystem::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                            size_t size, int flags) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) return sysError(EPERM, "setxattr on a symlink");
  NamesChange names_change;  // its ctime changes
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(inode)}));
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  RETURN_IF_ERROR(callRemote<void>(
      remote_, "setxattr", {path->get()}, std::nullopt,
      [name = std::string(name), value = std::string(value, size), flags](const CallFds& f) -> Status {
        if (::setxattr(procPath(f[0]).c_str(), name.c_str(), value.data(), value.size(), flags) < 0) {
          return lastSysError("setxattr");
        }
        return Ok{};
      }));
  return replyDone(req);
}

Status FileSystem::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) return sysError(EPERM, "removexattr on a symlink");
  NamesChange names_change;
  RETURN_IF_ERROR(beginNamesChange(names_change, {namesRel(inode)}));
  ASSIGN_OR_RETURN(PathFd path, pathFd(inode));
  RETURN_IF_ERROR(callRemote<void>(remote_, "removexattr", {path->get()}, std::nullopt,
                                   [name = std::string(name)](const CallFds& f) -> Status {
                                     if (::removexattr(procPath(f[0]).c_str(), name.c_str()) < 0) {
                                       return lastSysError("removexattr");
                                     }
                                     return Ok{};
                                   }));
  return replyDone(req);
}

}  // namespace hotshard::fuse
