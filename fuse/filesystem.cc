#include "fuse/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <string>

#include "base/clock.h"
#include "base/units.h"

namespace hotshard::fuse {

// ---- consistency ---------------------------------------------------------

Result<Consistency> Consistency::parse(const std::string& text) {
  Consistency c;
  if (text == "strict") return c;
  if (text == "immutable") {
    c.mode = Mode::kImmutable;
    return c;
  }
  if (text.rfind("ttl=", 0) == 0) {
    auto ttl = parseDurationSeconds(std::string_view(text).substr(4));
    if (ttl.ok() && *ttl > 0) {
      c.mode = Mode::kTtl;
      c.ttl_seconds = *ttl;
      return c;
    }
  }
  return makeError(Errc::kInvalidArgument, "consistency '" + text +
                                               "': expected strict, ttl=SECONDS (> 0) or immutable; ttl takes units too, e.g. ttl=250ms or ttl=5m");
}

std::string Consistency::toString() const {
  switch (mode) {
    case Mode::kStrict: return "strict";
    case Mode::kImmutable: return "immutable";
    case Mode::kTtl: {
      std::string s = std::to_string(ttl_seconds);
      s.erase(s.find_last_not_of('0') + 1);
      if (!s.empty() && s.back() == '.') s.pop_back();
      return "ttl=" + s;
    }
  }
  return "strict";
}

// Immutable datasets never change in place: the kernel may keep what it knows
// for as long as it likes. New names can still appear, so negative entries are
// not cached.
static constexpr double kImmutableTimeout = 86400.0 * 365;

double Consistency::entryTimeout() const {
  return mode == Mode::kStrict ? 0 : mode == Mode::kTtl ? ttl_seconds : kImmutableTimeout;
}
double Consistency::attrTimeout() const { return entryTimeout(); }
double Consistency::negativeTimeout() const { return mode == Mode::kTtl ? ttl_seconds : 0; }

// ---- helpers ---------------------------------------------------------------

namespace {

FileSystem& fsOf(fuse_req_t req) {
  return *static_cast<FileSystem*>(static_cast<SessionUserdata*>(fuse_req_userdata(req))->fs);
}

std::string procPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// Runs the enclosed syscalls with the FUSE caller's fsuid, fsgid and groups, so
// what it creates on the remote belongs to the caller, as if created there
// directly. Linux credentials are per thread and the raw syscalls (unlike glibc's
// setgroups wrapper) change only this thread.
class CallerCredentials {
 public:
  explicit CallerCredentials(fuse_req_t req) {
    const fuse_ctx* ctx = fuse_req_ctx(req);
    if (ctx->uid == 0 && ctx->gid == 0) return;
    gid_t groups[64];
    int n = fuse_req_getgroups(req, 64, groups);
    if (n < 0 || n > 64) n = 0;  // the process is gone or has too many: primary group only
    ::syscall(SYS_setgroups, n, groups);
    ::syscall(SYS_setfsgid, ctx->gid);
    ::syscall(SYS_setfsuid, ctx->uid);
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

struct DirHandle {
  DIR* dp = nullptr;
  off_t offset = 0;
  dirent* entry = nullptr;
};

DirHandle* dirOf(fuse_file_info* fi) { return reinterpret_cast<DirHandle*>(fi->fh); }

bool isDotOrDotdot(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}

}  // namespace

// ---- table -----------------------------------------------------------------

FileSystem::FileSystem(const FileSystemOptions& opts, PassthroughShim* shim)
    : opts_(opts), shim_(shim), userdata_{shim, this} {
  root_ = std::make_unique<Inode>();
  root_->fd = ::openat(opts_.remote_root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  struct stat st {};
  if (root_->fd >= 0) ::fstat(root_->fd, &st);
  root_->src_dev = st.st_dev;
  root_->src_ino = st.st_ino;
  root_->type = S_IFDIR;
  root_->nlookup = 2;  // never forgotten
  char buf[PATH_MAX];
  ssize_t n = ::readlink(procPath(opts_.remote_root_fd).c_str(), buf, sizeof(buf) - 1);
  if (n > 0) remote_prefix_.assign(buf, static_cast<size_t>(n));
}

FileSystem::~FileSystem() {
  std::lock_guard lock(table_mu_);
  auto close_all = [&](Inode& inode) {
    if (inode.backing_id >= 0) shim_->closeBacking(inode.backing_id);
    if (inode.backing_fd >= 0) ::close(inode.backing_fd);
    ::close(inode.fd);
  };
  for (auto& [key, inode] : inodes_) close_all(*inode);
  for (auto& [ptr, inode] : retired_) close_all(*inode);
  if (root_->fd >= 0) ::close(root_->fd);
}

size_t FileSystem::inodeCount() const {
  std::lock_guard lock(table_mu_);
  return inodes_.size() + retired_.size() + 1;
}

void FileSystem::retire(Inode& inode) {
  std::lock_guard lock(table_mu_);
  if (inode.retired || &inode == root_.get()) return;
  auto it = inodes_.find(std::make_pair(inode.src_dev, inode.src_ino));
  if (it == inodes_.end() || it->second.get() != &inode) return;
  inode.retired = true;
  retired_.emplace(&inode, std::move(it->second));
  inodes_.erase(it);
}

std::string FileSystem::relPathOf(const Inode& inode) const {
  if (&inode == root_.get()) return "";
  auto readName = [](int fd) {
    char buf[PATH_MAX];
    ssize_t n = ::readlink(procPath(fd).c_str(), buf, sizeof(buf) - 1);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
  };
  std::string path = readName(inode.fd);
  static const std::string kDeleted = " (deleted)";
  if (path.empty() || (path.size() > kDeleted.size() &&
                       path.compare(path.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0)) {
    return "";
  }
  auto under = [&](const std::string& root) -> std::string {
    std::string prefix = root == "/" ? "/" : root + "/";
    return path.compare(0, prefix.size(), prefix) == 0 ? path.substr(prefix.size()) : "";
  };
  std::string rel = under(remote_prefix_);
  // The kernel's name of the remote root changes when the remote's mount is
  // detached (a FUSE remote whose server died unmounts itself): ask again.
  if (rel.empty()) rel = under(readName(root_->fd));
  return rel;
}

std::string FileSystem::childRelPath(fuse_ino_t parent, const char* name) {
  if (parent == FUSE_ROOT_ID) return name;
  std::string dir = relPathOf(inodeOf(parent));
  return dir.empty() ? "" : dir + "/" + name;
}

void FileSystem::invalidate(const std::string& rel) {
  if (opts_.cache != nullptr && !rel.empty()) opts_.cache->invalidate(rel);
}

void FileSystem::invalidateTree(const std::string& rel) {
  if (opts_.cache != nullptr && !rel.empty()) opts_.cache->invalidateTree(rel);
}

namespace {
bool sameObject(const struct stat& a, const struct stat& b) {
  return a.st_size == b.st_size && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec && a.st_ctim.tv_sec == b.st_ctim.tv_sec &&
         a.st_ctim.tv_nsec == b.st_ctim.tv_nsec && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}
}  // namespace

void FileSystem::rememberStat(Inode& inode, const struct stat& st) {
  std::lock_guard lock(inode.mu);
  inode.last_stat = st;
  inode.last_stat_time = monotonicSeconds();
}

Result<struct stat> FileSystem::remoteAttrsForOpen(Inode& inode) {
  const Consistency& c = opts_.consistency;
  if (c.mode != Consistency::Mode::kStrict) {
    std::lock_guard lock(inode.mu);
    double age = monotonicSeconds() - inode.last_stat_time;
    if (inode.last_stat_time > 0 &&
        (c.mode == Consistency::Mode::kImmutable || age < c.ttl_seconds)) {
      return inode.last_stat;
    }
  }
  struct stat st;
  if (::fstatat(inode.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
    return lastSysError("stat remote");
  }
  rememberStat(inode, st);
  return st;
}

Inode& FileSystem::inodeOf(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return *root_;
  return *reinterpret_cast<Inode*>(ino);
}

Status FileSystem::doLookup(fuse_ino_t parent, const char* name, fuse_entry_param* e) {
  std::memset(e, 0, sizeof(*e));
  e->attr_timeout = opts_.consistency.attrTimeout();
  e->entry_timeout = opts_.consistency.entryTimeout();

  int newfd = ::openat(inodeOf(parent).fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (newfd < 0) return lastSysError("openat");
  if (::fstatat(newfd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
    Error err = lastSysError("fstatat");
    ::close(newfd);
    return err;
  }

  std::unique_lock lock(table_mu_);
  auto key = std::make_pair(e->attr.st_dev, e->attr.st_ino);
  Inode* inode;
  if (key.first == root_->src_dev && key.second == root_->src_ino) {
    inode = root_.get();  // ".." at the top, or a bind of the root
    ::close(newfd);
  } else if (auto it = inodes_.find(key); it != inodes_.end()) {
    inode = it->second.get();
    ::close(newfd);  // same object under another name (a hard link): keep the first fd
  } else {
    auto fresh = std::make_unique<Inode>();
    fresh->fd = newfd;
    fresh->src_dev = key.first;
    fresh->src_ino = key.second;
    fresh->type = e->attr.st_mode & S_IFMT;
    fresh->generation = next_generation_.fetch_add(1);
    inode = fresh.get();
    inodes_.emplace(key, std::move(fresh));
  }
  if (inode != root_.get()) inode->nlookup++;
  e->ino = inode == root_.get() ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(inode);
  e->generation = inode->generation;
  lock.unlock();
  rememberStat(*inode, e->attr);  // our lookup reference keeps it alive
  return Ok{};
}

void FileSystem::forgetOne(Inode& inode, uint64_t n) {
  if (&inode == root_.get()) return;
  std::lock_guard lock(table_mu_);
  if (n > inode.nlookup) {
    spdlog::error("forget of {} references on inode {} that has {}", n, inode.src_ino,
                  inode.nlookup);
    n = inode.nlookup;
  }
  inode.nlookup -= n;
  if (inode.nlookup > 0) return;
  // The kernel forgets an inode only after its last release, so no open state
  // is left; close it all the same rather than leak.
  if (inode.backing_id >= 0) shim_->closeBacking(inode.backing_id);
  if (inode.backing_fd >= 0) ::close(inode.backing_fd);
  ::close(inode.fd);
  if (inode.retired) {
    retired_.erase(&inode);
  } else {
    inodes_.erase(std::make_pair(inode.src_dev, inode.src_ino));
  }
}

void FileSystem::replyEntryOrErr(fuse_req_t req, fuse_ino_t parent, const char* name, int err) {
  if (err != 0) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_entry_param e;
  Status st = doLookup(parent, name, &e);
  if (!st.ok()) {
    fuse_reply_err(req, st.error().toErrno());
    return;
  }
  fuse_reply_entry(req, &e);
}

// ---- handlers --------------------------------------------------------------

void FileSystem::init(fuse_conn_info* conn) {
  // Passthrough and the writeback cache exclude each other; writes go to the
  // remote as they come.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
}

void FileSystem::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_entry_param e;
  Status st = doLookup(parent, name, &e);
  if (st.ok()) {
    fuse_reply_entry(req, &e);
    return;
  }
  int err = st.error().toErrno();
  if (err == ENOENT && opts_.consistency.negativeTimeout() > 0) {
    std::memset(&e, 0, sizeof(e));
    e.entry_timeout = opts_.consistency.negativeTimeout();
    fuse_reply_entry(req, &e);  // ino 0: a cached negative entry
    return;
  }
  fuse_reply_err(req, err);
}

void FileSystem::forget(fuse_ino_t ino, uint64_t nlookup) { forgetOne(inodeOf(ino), nlookup); }

void FileSystem::getattr(fuse_req_t req, fuse_ino_t ino) {
  Inode& inode = inodeOf(ino);
  struct stat st;
  if (::fstatat(inode.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
    fuse_reply_err(req, errno);
    return;
  }
  if (S_ISREG(st.st_mode)) rememberStat(inode, st);
  fuse_reply_attr(req, &st, opts_.consistency.attrTimeout());
}

void FileSystem::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid,
                         fuse_file_info* fi) {
  Inode& inode = inodeOf(ino);
  std::string path = procPath(inode.fd);
  int res = 0;
  if (valid & FUSE_SET_ATTR_MODE) {
    res = ::fchmodat(AT_FDCWD, path.c_str(), attr->st_mode, 0);
    if (res < 0) return (void)fuse_reply_err(req, errno);
  }
  if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    res = ::fchownat(inode.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    if (res < 0) return (void)fuse_reply_err(req, errno);
  }
  if (valid & FUSE_SET_ATTR_SIZE) {
    invalidate(relPathOf(inode));
    int backing = -1;
    {
      std::lock_guard lock(inode.mu);
      if (inode.backing_fd >= 0 && inode.backing_writable) backing = ::dup(inode.backing_fd);
    }
    (void)fi;
    if (backing >= 0) {
      res = ::ftruncate(backing, attr->st_size);
      int saved = errno;
      ::close(backing);
      errno = saved;
    } else {
      res = ::truncate(path.c_str(), attr->st_size);
    }
    if (res < 0) return (void)fuse_reply_err(req, errno);
  }
  if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
    struct timespec tv[2];
    tv[0].tv_sec = 0;
    tv[1].tv_sec = 0;
    tv[0].tv_nsec = UTIME_OMIT;
    tv[1].tv_nsec = UTIME_OMIT;
    if (valid & FUSE_SET_ATTR_ATIME_NOW) {
      tv[0].tv_nsec = UTIME_NOW;
    } else if (valid & FUSE_SET_ATTR_ATIME) {
      tv[0] = attr->st_atim;
    }
    if (valid & FUSE_SET_ATTR_MTIME_NOW) {
      tv[1].tv_nsec = UTIME_NOW;
    } else if (valid & FUSE_SET_ATTR_MTIME) {
      tv[1] = attr->st_mtim;
    }
    if (inode.type == S_IFLNK) {
      res = ::utimensat(inode.fd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    } else {
      res = ::utimensat(AT_FDCWD, path.c_str(), tv, 0);
    }
    if (res < 0) return (void)fuse_reply_err(req, errno);
  }
  getattr(req, ino);
}

void FileSystem::readlink(fuse_req_t req, fuse_ino_t ino) {
  char buf[PATH_MAX + 1];
  ssize_t n = ::readlinkat(inodeOf(ino).fd, "", buf, sizeof(buf));
  if (n < 0) return (void)fuse_reply_err(req, errno);
  if (n == sizeof(buf)) return (void)fuse_reply_err(req, ENAMETOOLONG);
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

void FileSystem::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                       dev_t rdev) {
  int err = 0;
  {
    CallerCredentials creds(req);
    if (::mknodat(inodeOf(parent).fd, name, mode, rdev) < 0) err = errno;
  }
  replyEntryOrErr(req, parent, name, err);
}

void FileSystem::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  int err = 0;
  {
    CallerCredentials creds(req);
    if (::mkdirat(inodeOf(parent).fd, name, mode) < 0) err = errno;
  }
  replyEntryOrErr(req, parent, name, err);
}

void FileSystem::symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  int err = 0;
  {
    CallerCredentials creds(req);
    if (::symlinkat(target, inodeOf(parent).fd, name) < 0) err = errno;
  }
  replyEntryOrErr(req, parent, name, err);
}

void FileSystem::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  std::string path = procPath(inodeOf(ino).fd);
  int err = 0;
  if (::linkat(AT_FDCWD, path.c_str(), inodeOf(parent).fd, name, AT_SYMLINK_FOLLOW) < 0) {
    err = errno;
  }
  replyEntryOrErr(req, parent, name, err);
}

void FileSystem::unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  invalidate(childRelPath(parent, name));
  fuse_reply_err(req, ::unlinkat(inodeOf(parent).fd, name, 0) < 0 ? errno : 0);
}

void FileSystem::rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fuse_reply_err(req, ::unlinkat(inodeOf(parent).fd, name, AT_REMOVEDIR) < 0 ? errno : 0);
}

void FileSystem::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                        const char* newname, unsigned int flags) {
  // Whatever sits at either name may be a directory: drop everything below both.
  std::string from = childRelPath(parent, name), to = childRelPath(newparent, newname);
  invalidate(from);
  invalidate(to);
  invalidateTree(from);
  invalidateTree(to);
  int res = static_cast<int>(::syscall(SYS_renameat2, inodeOf(parent).fd, name,
                                       inodeOf(newparent).fd, newname, flags));
  fuse_reply_err(req, res < 0 ? errno : 0);
}

namespace {
// O_TRUNC writes too, and the kernel drops it from the flags FUSE_RELEASE carries:
// whether an open wrote is remembered in its fh instead.
bool opensForWrite(int flags) { return (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC); }
constexpr uint64_t kFhWriter = 1;
}  // namespace

Result<int> FileSystem::acquireBacking(Inode& inode, int flags) {
  bool want_write = opensForWrite(flags);
  CacheHooks* cache = opts_.cache;
  std::string rel;
  struct stat remote {};
  bool cache_candidate = false;
  // A writer fences the cache for the whole open; if the open fails, the fence
  // comes down again on the way out (the store's lock is a leaf: no order issue
  // with inode.mu).
  struct WriteFence {
    CacheHooks* cache = nullptr;
    const std::string* rel = nullptr;
    ~WriteFence() {
      if (cache != nullptr) cache->endWrite(*rel);
    }
  } fence;
  if (cache != nullptr) {
    rel = relPathOf(inode);
    if (want_write) {
      if (!rel.empty()) {
        cache->beginWrite(rel);  // before the write can happen
        fence = {cache, &rel};
      }
    } else if (!rel.empty()) {
      auto attrs = remoteAttrsForOpen(inode);
      if (attrs.ok()) {
        remote = *attrs;
        cache_candidate = true;
      }
    }
  }

  std::unique_lock lock(inode.mu);
  if (inode.backing_fd >= 0 && inode.backing_is_cache) {
    // The kernel allows one backing file per inode. A writer, or a reader that
    // must not see a copy the remote has moved past, needs another one: retire
    // this inode (its readers keep their open-time copy) and answer ESTALE; the
    // VFS then retries the open once with a fresh lookup, which gets a new inode.
    if (want_write || (cache_candidate && !sameObject(remote, inode.cached_against))) {
      lock.unlock();
      cache_conflicts_.fetch_add(1, std::memory_order_relaxed);
      retire(inode);
      return sysError(ESTALE, "open: the cached copy in use cannot serve this open");
    }
  }
  if (inode.backing_fd < 0) {
    int cache_fd = cache_candidate ? cache->openCached(rel, remote) : -1;
    if (cache_fd >= 0) {
      inode.backing_fd = cache_fd;
      inode.backing_writable = false;
      inode.backing_rw_errno = EROFS;
      inode.backing_is_cache = true;
      inode.cached_rel = rel;
      inode.cached_against = remote;
    } else {
      // Read-write whenever the remote lets us, so a later writer can share the
      // backing file that readers already passed through to.
      std::string path = procPath(inode.fd);
      int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC | O_LARGEFILE);
      int rw_errno = fd < 0 ? errno : 0;
      if (fd < 0 && !want_write) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_LARGEFILE);
      if (fd < 0) return sysError(errno, "open backing file");
      inode.backing_fd = fd;
      inode.backing_writable = rw_errno == 0;
      inode.backing_rw_errno = rw_errno;
    }
    if (shim_->active()) {
      auto id = shim_->openBacking(inode.backing_fd);
      if (id.ok()) {
        inode.backing_id = *id;
      } else if (id.error().sys_errno == EPERM) {
        shim_->disable(id.error().message);
      } else {
        spdlog::warn("passthrough refused for inode {}: {}; serving it in user space",
                     inode.src_ino, id.error().message);
      }
    }
  } else if (want_write && !inode.backing_writable) {
    return sysError(inode.backing_rw_errno ? inode.backing_rw_errno : EACCES,
                    "open backing file for writing");
  }
  if (flags & O_TRUNC) {
    if (::ftruncate(inode.backing_fd, 0) < 0) {
      Error err = lastSysError("truncate on open");
      if (inode.nopen == 0) {
        if (inode.backing_id >= 0) shim_->closeBacking(inode.backing_id);
        ::close(inode.backing_fd);
        inode.backing_fd = -1;
        inode.backing_id = -1;
        inode.backing_is_cache = false;
      }
      return err;
    }
  }
  inode.nopen++;
  if (fence.cache != nullptr) {
    inode.writer_rels.push_back(rel);  // releaseBacking lowers the fence
    fence.cache = nullptr;
  }
  bool from_cache = inode.backing_is_cache;
  int id = inode.backing_id;
  struct stat backing_st {};
  if (cache != nullptr) ::fstat(inode.backing_fd, &backing_st);
  lock.unlock();
  (from_cache ? cache_opens_ : remote_opens_).fetch_add(1, std::memory_order_relaxed);
  if (cache != nullptr && !rel.empty()) cache->opened(rel, backing_st, from_cache, want_write);
  return id;
}

void FileSystem::releaseBacking(Inode& inode, bool was_writer) {
  std::string release_cached, end_write;
  {
    std::lock_guard lock(inode.mu);
    if (was_writer && !inode.writer_rels.empty()) {
      end_write = std::move(inode.writer_rels.back());
      inode.writer_rels.pop_back();
    }
    if (--inode.nopen == 0) {
      if (inode.backing_id >= 0) shim_->closeBacking(inode.backing_id);
      if (inode.backing_fd >= 0) ::close(inode.backing_fd);
      if (inode.backing_is_cache) release_cached = inode.cached_rel;
      inode.backing_id = -1;
      inode.backing_fd = -1;
      inode.backing_writable = false;
      inode.backing_is_cache = false;
      inode.cached_rel.clear();
    }
  }
  if (opts_.cache == nullptr) return;
  if (!release_cached.empty()) opts_.cache->releaseCached(release_cached);
  if (!end_write.empty()) opts_.cache->endWrite(end_write);
}

void FileSystem::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Inode& inode = inodeOf(ino);
  auto backing = acquireBacking(inode, fi->flags);
  if (!backing.ok()) return (void)fuse_reply_err(req, backing.error().toErrno());
  fi->fh = opensForWrite(fi->flags) ? kFhWriter : 0;
  fi->keep_cache = opts_.consistency.keepCache();
  // FLUSH reports deferred write errors at close(); a read-only open has none, and
  // skipping it saves a round trip per file (many small files read whole).
  fi->noflush = fi->fh != kFhWriter;
  int id = *backing;
  (id >= 0 ? passthrough_opens_ : userspace_opens_).fetch_add(1, std::memory_order_relaxed);
  if (shim_->replyOpen(req, *fi, id) != 0) {
    releaseBacking(inode, fi->fh == kFhWriter);  // the opener is gone
  }
}

void FileSystem::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                        fuse_file_info* fi) {
  int fd;
  {
    CallerCredentials creds(req);
    int flags = (fi->flags | O_CREAT | O_CLOEXEC) & ~(O_NOFOLLOW | O_ACCMODE);
    // A new file can always be opened read-write by its creator; an existing one
    // (no O_EXCL) only as its mode allows.
    fd = ::openat(inodeOf(parent).fd, name, flags | O_RDWR, mode);
    if (fd < 0 && errno == EACCES) {
      fd = ::openat(inodeOf(parent).fd, name, flags | (fi->flags & O_ACCMODE), mode);
    }
  }
  if (fd < 0) return (void)fuse_reply_err(req, errno);
  ::close(fd);  // the backing file is opened below, shared per inode

  fuse_entry_param e;
  Status st = doLookup(parent, name, &e);
  if (!st.ok()) return (void)fuse_reply_err(req, st.error().toErrno());
  Inode& inode = inodeOf(e.ino);
  auto backing = acquireBacking(inode, fi->flags & ~O_TRUNC);
  if (!backing.ok()) {
    forgetOne(inode, 1);
    return (void)fuse_reply_err(req, backing.error().toErrno());
  }
  fi->fh = opensForWrite(fi->flags & ~O_TRUNC) ? kFhWriter : 0;
  fi->keep_cache = opts_.consistency.keepCache();
  int id = *backing;
  (id >= 0 ? passthrough_opens_ : userspace_opens_).fetch_add(1, std::memory_order_relaxed);
  if (shim_->replyCreate(req, e, *fi, id) != 0) {
    releaseBacking(inode, fi->fh == kFhWriter);
    forgetOne(inode, 1);
  }
}

void FileSystem::read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off) {
  Inode& inode = inodeOf(ino);
  fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
  {
    std::lock_guard lock(inode.mu);
    buf.buf[0].fd = inode.backing_fd;
  }
  if (buf.buf[0].fd < 0) return (void)fuse_reply_err(req, EBADF);
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].pos = off;
  userspace_read_bytes_.fetch_add(size, std::memory_order_relaxed);
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void FileSystem::write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off) {
  Inode& inode = inodeOf(ino);
  int fd;
  {
    std::lock_guard lock(inode.mu);
    fd = inode.backing_fd;
  }
  if (fd < 0) return (void)fuse_reply_err(req, EBADF);
  ssize_t n = ::pwrite(fd, data, size, off);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_write(req, static_cast<size_t>(n));
}

void FileSystem::flush(fuse_req_t req, fuse_ino_t ino) {
  Inode& inode = inodeOf(ino);
  int fd = -1;
  {
    std::lock_guard lock(inode.mu);
    if (inode.backing_fd >= 0) fd = ::dup(inode.backing_fd);
  }
  // Closing a duplicate reports the remote's deferred write errors (NFS
  // close-to-open) to the closing process, as close() on the remote would.
  int err = 0;
  if (fd >= 0 && ::close(fd) < 0) err = errno;
  fuse_reply_err(req, err);
}

void FileSystem::release(fuse_req_t req, fuse_ino_t ino, uint64_t fh) {
  releaseBacking(inodeOf(ino), fh == kFhWriter);
  fuse_reply_err(req, 0);
}

void FileSystem::fsync(fuse_req_t req, fuse_ino_t ino, int datasync) {
  Inode& inode = inodeOf(ino);
  int fd = -1;
  {
    std::lock_guard lock(inode.mu);
    if (inode.backing_fd >= 0) fd = ::dup(inode.backing_fd);
  }
  if (fd < 0) return (void)fuse_reply_err(req, EBADF);
  int res = datasync ? ::fdatasync(fd) : ::fsync(fd);
  int err = res < 0 ? errno : 0;
  ::close(fd);
  fuse_reply_err(req, err);
}

void FileSystem::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  auto* d = new (std::nothrow) DirHandle;
  if (d == nullptr) return (void)fuse_reply_err(req, ENOMEM);
  int fd = ::openat(inodeOf(ino).fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || (d->dp = ::fdopendir(fd)) == nullptr) {
    int err = errno;
    if (fd >= 0) ::close(fd);
    delete d;
    return (void)fuse_reply_err(req, err);
  }
  fi->fh = reinterpret_cast<uint64_t>(d);
  if (opts_.consistency.keepCache()) {
    fi->keep_cache = 1;
    fi->cache_readdir = 1;
  }
  fuse_reply_open(req, fi);
}

void FileSystem::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                         fuse_file_info* fi, bool plus) {
  DirHandle* d = dirOf(fi);
  std::vector<char> buf(size);
  size_t used = 0;
  int err = 0;
  if (off != d->offset) {
    ::seekdir(d->dp, off);
    d->entry = nullptr;
    d->offset = off;
  }
  while (true) {
    if (d->entry == nullptr) {
      errno = 0;
      d->entry = ::readdir(d->dp);
      if (d->entry == nullptr) {
        err = errno;  // 0 at the end of the directory
        break;
      }
    }
    const char* name = d->entry->d_name;
    off_t next = d->entry->d_off;
    size_t entsize;
    if (plus) {
      fuse_entry_param e;
      bool looked_up = false;
      if (isDotOrDotdot(name)) {
        std::memset(&e, 0, sizeof(e));
        e.attr.st_ino = d->entry->d_ino;
        e.attr.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      } else {
        Status st = doLookup(ino, name, &e);
        if (!st.ok()) {
          // Vanished between readdir and lookup: skip it, as a listing taken a
          // moment later would.
          if (st.error().sys_errno == ENOENT) {
            d->entry = nullptr;
            d->offset = next;
            continue;
          }
          err = st.error().toErrno();
          break;
        }
        looked_up = true;
      }
      entsize = fuse_add_direntry_plus(req, buf.data() + used, size - used, name, &e, next);
      if (entsize > size - used) {
        if (looked_up) forgetOne(inodeOf(e.ino), 1);
        break;
      }
    } else {
      struct stat st {};
      st.st_ino = d->entry->d_ino;
      st.st_mode = static_cast<mode_t>(d->entry->d_type) << 12;
      entsize = fuse_add_direntry(req, buf.data() + used, size - used, name, &st, next);
      if (entsize > size - used) break;
    }
    used += entsize;
    d->entry = nullptr;
    d->offset = next;
  }
  // An error after some entries is reported on the next call, as getdents does.
  if (err != 0 && used == 0) return (void)fuse_reply_err(req, err);
  fuse_reply_buf(req, buf.data(), used);
}

void FileSystem::releasedir(fuse_req_t req, fuse_file_info* fi) {
  DirHandle* d = dirOf(fi);
  ::closedir(d->dp);
  delete d;
  fuse_reply_err(req, 0);
}

void FileSystem::fsyncdir(fuse_req_t req, fuse_file_info* fi, int datasync) {
  int fd = ::dirfd(dirOf(fi)->dp);
  int res = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, res < 0 ? errno : 0);
}

void FileSystem::statfs(fuse_req_t req) {
  struct statvfs sv;
  if (::fstatvfs(root_->fd, &sv) < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

void FileSystem::access(fuse_req_t req, fuse_ino_t ino, int mask) {
  std::string path = procPath(inodeOf(ino).fd);
  int err = 0;
  {
    CallerCredentials creds(req);
    if (::faccessat(AT_FDCWD, path.c_str(), mask, AT_EACCESS) < 0) err = errno;
  }
  fuse_reply_err(req, err);
}

void FileSystem::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) return (void)fuse_reply_err(req, ENODATA);
  std::string path = procPath(inode.fd);
  if (size == 0) {
    ssize_t n = ::getxattr(path.c_str(), name, nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
  }
  std::vector<char> buf(size);
  ssize_t n = ::getxattr(path.c_str(), name, buf.data(), size);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

void FileSystem::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) {
    return (void)(size == 0 ? fuse_reply_xattr(req, 0) : fuse_reply_buf(req, nullptr, 0));
  }
  std::string path = procPath(inode.fd);
  if (size == 0) {
    ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
  }
  std::vector<char> buf(size);
  ssize_t n = ::listxattr(path.c_str(), buf.data(), size);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_buf(req, buf.data(), static_cast<size_t>(n));
}

void FileSystem::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                          size_t size, int flags) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) return (void)fuse_reply_err(req, EPERM);
  std::string path = procPath(inode.fd);
  fuse_reply_err(req, ::setxattr(path.c_str(), name, value, size, flags) < 0 ? errno : 0);
}

void FileSystem::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Inode& inode = inodeOf(ino);
  if (inode.type == S_IFLNK) return (void)fuse_reply_err(req, EPERM);
  std::string path = procPath(inode.fd);
  fuse_reply_err(req, ::removexattr(path.c_str(), name) < 0 ? errno : 0);
}

// ---- the libfuse operation table ------------------------------------------

namespace {

void opInit(void* userdata, fuse_conn_info* conn) {
  static_cast<FileSystem*>(static_cast<SessionUserdata*>(userdata)->fs)->init(conn);
}
void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fsOf(req).lookup(req, parent, name);
}
void opForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  fsOf(req).forget(ino, nlookup);
  fuse_reply_none(req);
}
void opForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  for (size_t i = 0; i < count; i++) fsOf(req).forget(forgets[i].ino, forgets[i].nlookup);
  fuse_reply_none(req);
}
void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) { fsOf(req).getattr(req, ino); }
void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  fsOf(req).setattr(req, ino, attr, valid, fi);
}
void opReadlink(fuse_req_t req, fuse_ino_t ino) { fsOf(req).readlink(req, ino); }
void opMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  fsOf(req).mknod(req, parent, name, mode, rdev);
}
void opMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  fsOf(req).mkdir(req, parent, name, mode);
}
void opSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  fsOf(req).symlink(req, link, parent, name);
}
void opLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  fsOf(req).link(req, ino, parent, name);
}
void opUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fsOf(req).unlink(req, parent, name);
}
void opRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  fsOf(req).rmdir(req, parent, name);
}
void opRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  fsOf(req).rename(req, parent, name, newparent, newname, flags);
}
void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { fsOf(req).open(req, ino, fi); }
void opCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  fsOf(req).create(req, parent, name, mode, fi);
}
void opRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  fsOf(req).read(req, ino, size, off);
}
void opWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info*) {
  fsOf(req).write(req, ino, buf, size, off);
}
void opFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) { fsOf(req).flush(req, ino); }
void opRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  fsOf(req).release(req, ino, fi->fh);
}
void opFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  fsOf(req).fsync(req, ino, datasync);
}
void opOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  fsOf(req).opendir(req, ino, fi);
}
void opReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  fsOf(req).readdir(req, ino, size, off, fi, false);
}
void opReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  fsOf(req).readdir(req, ino, size, off, fi, true);
}
void opReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  fsOf(req).releasedir(req, fi);
}
void opFsyncdir(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  fsOf(req).fsyncdir(req, fi, datasync);
}
void opStatfs(fuse_req_t req, fuse_ino_t) { fsOf(req).statfs(req); }
void opAccess(fuse_req_t req, fuse_ino_t ino, int mask) { fsOf(req).access(req, ino, mask); }
void opGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  fsOf(req).getxattr(req, ino, name, size);
}
void opListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  fsOf(req).listxattr(req, ino, size);
}
void opSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  fsOf(req).setxattr(req, ino, name, value, size, flags);
}
void opRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  fsOf(req).removexattr(req, ino, name);
}

fuse_lowlevel_ops makeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = opInit;
  ops.lookup = opLookup;
  ops.forget = opForget;
  ops.forget_multi = opForgetMulti;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.readlink = opReadlink;
  ops.mknod = opMknod;
  ops.mkdir = opMkdir;
  ops.symlink = opSymlink;
  ops.link = opLink;
  ops.unlink = opUnlink;
  ops.rmdir = opRmdir;
  ops.rename = opRename;
  ops.open = opOpen;
  ops.create = opCreate;
  ops.read = opRead;
  ops.write = opWrite;
  ops.flush = opFlush;
  ops.release = opRelease;
  ops.fsync = opFsync;
  ops.opendir = opOpendir;
  ops.readdir = opReaddir;
  ops.readdirplus = opReaddirplus;
  ops.releasedir = opReleasedir;
  ops.fsyncdir = opFsyncdir;
  ops.statfs = opStatfs;
  ops.access = opAccess;
  ops.getxattr = opGetxattr;
  ops.listxattr = opListxattr;
  ops.setxattr = opSetxattr;
  ops.removexattr = opRemovexattr;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& FileSystem::ops() {
  static const fuse_lowlevel_ops table = makeOps();
  return table;
}

}  // namespace hotshard::fuse
