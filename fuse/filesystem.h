// fuse/: the namespace hotshard mounts over a remote directory. Every object is
// reached through an O_PATH fd opened relative to the remote root's fd (taken
// before the mount, so mounting over the remote's own path works), kept in a
// bounded cache or opened again by its names (inode_table.h); every regular
// file open is answered with kernel passthrough to a backing file.
//
// The room's units:
//   consistency.h   how long the kernel may trust what it learnt (timeouts)
//   inode_table.h   Inode (lookup count, open count, backing_id) and the table
//   namespace_cache.h  names, attributes and listings kept on the cache disk
//                   (immutable and ttl modes; filesystem_names.cc uses it)
//   backing.h       the pure choice of an open's backing file
//   reply.h         the guard every op runs in; Error -> fuse_reply_err
//   remote_calls.h  the deadline on calls into the remote (--remote-timeout)
//   filesystem.h    FileSystem: the handlers (this file); ops.cc: the libfuse table
//   passthrough_shim.h, fuse_compat.h   the kernel passthrough ABI on libfuse 3.14
//   mount.h         mounting /dev/fuse ourselves; cache_hooks.h: what fuse/ asks of the cache
//
// Lock order: InodeTable's lock before Inode::mu (inode_table.h); CacheHooks
// calls made under Inode::mu take only the store's leaf lock. The store's
// report of dropped copies (copiesDropped, which takes InodeTable's lock) comes
// after the store's lock is released; on a thread inside an open (or a
// truncate or fallocate that may adopt a copy) it waits for their end
// (DeferDrops).
// Errors: handlers return Status; the guard in reply.h answers the request with
// its errno (kernel and libc errnos are kept as they came).
#pragma once

#define FUSE_USE_VERSION 314
#include <dirent.h>
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <unordered_map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "fuse/cache_hooks.h"
#include "fuse/consistency.h"
#include "fuse/inode_table.h"
#include "fuse/namespace_cache.h"
#include "fuse/passthrough_shim.h"
#include "fuse/remote_calls.h"

namespace hotshard::fuse {

struct DirHandle;  // an open directory (filesystem.cc)

// One name of a remote directory as readdir(3) gave it, copied off the DIR
// stream (which a remote call's worker reads).
struct DirEntry {
  std::string name;
  ino_t ino = 0;
  unsigned char type = 0;  // DT_*
  off_t off = 0;           // telldir() position after it
};

struct DirHandle;  // an open directory (filesystem.cc)

struct FileSystemOptions {
  int remote_root_fd = -1;  // O_PATH|O_DIRECTORY, borrowed
  Consistency consistency;
  CacheHooks* cache = nullptr;  // borrowed; nullptr: every open goes to the remote
  // Deadline of each remote call on the request path (remote_calls.h), in
  // seconds; 0: none.
  double remote_timeout_seconds = 0;
  // Inodes that may keep their backing file registered after their last
  // release, for the next open to reuse (inode_table.h); 0: none.
  size_t idle_backings = 1024;
  // O_PATH fds kept for inodes that are neither open nor without a name
  // (inode_table.h); the rest are opened again when used.
  size_t inode_fds = 1024;
  // The persistent namespace (namespace_cache.h), borrowed; immutable and ttl
  // modes only (nullptr: every lookup, getattr and listing asks the remote).
  NamespaceCache* names = nullptr;
};

class FileSystem {
 public:
  FileSystem(const FileSystemOptions& opts, PassthroughShim* shim);
  ~FileSystem();
  FileSystem(const FileSystem&) = delete;
  FileSystem& operator=(const FileSystem&) = delete;

  // The libfuse operation table (ops.cc): each op runs its handler in
  // guardRequest(). fuse_session_new gets userdata() as its userdata.
  static const fuse_lowlevel_ops& ops();
  SessionUserdata* userdata() { return &userdata_; }

  PassthroughShim& shim() { return *shim_; }
  const Consistency& consistency() const { return opts_.consistency; }
  size_t inodeCount() const;
  uint64_t userspaceReadBytes() const { return userspace_read_bytes_.load(); }
  uint64_t passthroughOpens() const { return passthrough_opens_.load(); }
  uint64_t userspaceOpens() const { return userspace_opens_.load(); }
  uint64_t cacheOpens() const { return cache_opens_.load(); }
  uint64_t remoteOpens() const { return remote_opens_.load(); }
  uint64_t cacheConflicts() const { return cache_conflicts_.load(); }
  // A duplicate (O_CLOEXEC) of the remote file (dev, ino) open now as an
  // inode's backing file (or kept idle since its last release: the same file a
  // reader's re-open reuses), or an invalid fd when it is not open, is open on
  // the cache copy, or has a writer. Reading through it leaves the remote inode's
  // page cache as the jobs' reads filled it, where a new open of a FUSE remote
  // (sshfs without kernel_cache) drops it (fs/fuse/file.c, fuse_finish_open).
  // The caller owns it.
  UniqueFd shareRemoteBacking(dev_t dev, ino_t ino);
  RemoteCalls::Stats remoteCallStats() const { return remote_.stats(); }
  // Opens that reused an idle backing (no new backing file or id), and idle
  // backings kept now.
  uint64_t idleReuses() const { return idle_reuses_.load(); }

  // Restart without unmount (docs/restart.md): record the inodes in `state`
  // (before the session serves); a successor adopts the predecessor's inodes
  // first (InodeTable::adoptInodes). handOver(): the process is going without
  // unmounting: the backing ids stay registered for the successor.
  void setTakeoverState(TakeoverState* state) { table_.setTakeoverState(state); }
  // Adopted inodes remember their remote attributes from the namespace where it
  // has fresh ones (filesystem_names.cc), as a lookup from it would.
  void adoptInodes(const std::vector<TakeoverSlot>& slots);
  void handOver() { table_.keepBackingsForSuccessor(); }
  size_t idleBackings() const { return table_.idleCount(); }
  // Inodes' O_PATH fds open now (the root's included; inode_table.h), and walks
  // that opened one again since the start.
  size_t inodeFds() const { return table_.pathFdCount(); }
  uint64_t pathWalks() const { return path_walks_.load(); }

  // The cache store dropped its copies of rel_paths (evicted, invalidated,
  // stale, replaced): idle backings on them are closed, so their blocks are
  // freed. Any thread; a FUSE thread inside an open defers it to the end of
  // that open (it holds an Inode::mu, which the closing takes).
  void copiesDropped(const std::vector<std::string>& rel_paths);

  // The remote was mounted again (daemon.cc, the remote watch): new_root_fd (an
  // O_PATH directory, borrowed) replaces the root's fd in place (dup3), and the
  // kernel is told to look every name up again (FUSE_NOTIFY_INC_EPOCH, Linux >=
  // 6.16; the root's attributes too), so names resolve under the new mount.
  // Inodes looked up under the old one keep its dead fds and answer its errors
  // (ENOTCONN) until the kernel forgets them. Remote calls still blocked in
  // the old mount (one that hangs for good) are written off
  // (RemoteCalls::forgetBlocked), so the new one gets a full pool.
  void remoteRootReplaced(int new_root_fd);

  // A change to the remote file (dev, ino) begun outside the file system still
  // runs in `lane` (a dirty copy's write-back at start given up past its
  // deadline: CacheStore::recoverDirty): it becomes that file's write lane
  // (writeLaneOf), so a writer's open and every later write-back wait for it.
  // Before the session serves.
  void holdWriteLane(dev_t dev, ino_t ino, RemoteCalls::Lane lane);

  // The handlers, public for the op table. Each either replies with success as
  // its last step and returns Ok, or returns the error without replying (the
  // guard in reply.h replies); see reply.h.
  void init(fuse_conn_info* conn);
  Status lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, uint64_t nlookup);
  Status getattr(fuse_req_t req, fuse_ino_t ino);
  Status setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi);
  Status readlink(fuse_req_t req, fuse_ino_t ino);
  Status mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  Status mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  Status symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  Status link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
  Status unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  Status rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  Status rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
                const char* newname, unsigned int flags);
  Status open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  Status create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
                fuse_file_info* fi);
  // open(dir, O_TMPFILE): an unnamed file in the remote directory, made as the
  // caller, linkable later (FUSE_LINK of its node id) unless O_EXCL; the
  // remote's errno where it refuses (EOPNOTSUPP on a remote without O_TMPFILE,
  // as the native call there). Reached through create() (isTmpfileCreate).
  Status tmpfile(fuse_req_t req, fuse_ino_t parent, mode_t mode, fuse_file_info* fi);
  Status read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  Status write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off);
  Status flush(fuse_req_t req, fuse_ino_t ino);
  Status release(fuse_req_t req, fuse_ino_t ino, uint64_t fh);
  Status fsync(fuse_req_t req, fuse_ino_t ino, int datasync);
  // fallocate, SEEK_DATA/SEEK_HOLE and the file attribute ioctls go to the
  // remote file (never a cache copy), so they answer as the remote would.
  Status fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length);
  Status lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence);
  Status ioctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, unsigned flags,
               const void* in_buf, size_t in_bufsz, size_t out_bufsz);
  Status opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  Status readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
                 bool plus);
  Status releasedir(fuse_req_t req, fuse_file_info* fi);
  Status fsyncdir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi, int datasync);
  Status statfs(fuse_req_t req);
  Status access(fuse_req_t req, fuse_ino_t ino, int mask);
  Status getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  Status listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  Status setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value,
                  size_t size, int flags);
  Status removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

 private:
  struct OpenIntent;  // what an open knows before it takes Inode::mu (filesystem.cc)
  // While one lives on this thread, copiesDropped() defers to its end (declared
  // before taking an Inode::mu that CacheHooks calls are made under).
  struct DeferDrops {
    DeferDrops();
    ~DeferDrops();
    DeferDrops(const DeferDrops&) = delete;
    DeferDrops& operator=(const DeferDrops&) = delete;
  };

  Inode& inodeOf(fuse_ino_t ino) { return table_.inodeOf(ino); }
  Result<std::shared_ptr<DirHandle>> openDirHandle(fuse_ino_t ino);
  Result<std::shared_ptr<DirHandle>> dirOf(fuse_ino_t ino, const fuse_file_info* fi);
  // Takeover: a backing the predecessor registered (or opens it counted) gets
  // an fd of ours again (filesystem.cc).
  Status reopenInheritedLocked(Inode& inode, const OpenIntent& intent);
  Status adoptBackingFd(Inode& inode);
  Status reclaimAdoptedLocked(Inode& inode, const OpenIntent& intent);
  // Looks up name under parent, adds one kernel reference and fills e.
  Status doLookup(fuse_ino_t parent, const char* name, fuse_entry_param* e);
  // The entry's timeouts per the mode; an entry whose path an open cannot
  // check (see checkOpenPath) is not kept (entry timeout 0).
  void setEntryTimeouts(const char* name, Inode& inode, fuse_entry_param* e);
  // Close-to-open where the kernel keeps names (Consistency::opensCheckPath):
  // the inode's path as the table's names give it (they follow lookups, and
  // unlinks and renames through the mount, of it and of every directory above
  // it) must still lead to it on the remote (one fstatat from the root), else
  // ESTALE, which makes the kernel walk the path again and open what it leads
  // to now (or fail with ENOENT). An inode without a name (unlinked through the
  // mount, O_TMPFILE) is not checked. Attributes changed since the kernel last
  // heard are dropped from its cache (invalidateAttrs). The stat is forced
  // through the remote's own attribute cache (AT_STATX_FORCE_SYNC: an NFS
  // client's GETATTR, as its own close-to-open at open). *fresh: the file's
  // attributes it found, when it checked (the open validates against them).
  Status checkOpenPath(fuse_ino_t ino, Inode& inode, std::optional<struct stat>* fresh);
  // After mknod, mkdir, symlink, link: the entry for the new name.
  Status replyEntry(fuse_req_t req, fuse_ino_t parent, const char* name);
  // After create and tmpfile (e holds one lookup reference): opens the backing
  // file for `flags` and replies entry + open; on failure the reference is dropped.
  Status replyCreated(fuse_req_t req, const fuse_entry_param& e, fuse_file_info* fi, int flags,
                      const char* op);
  Status truncateRemote(Inode& inode, off_t size);
  // An fd of the remote file: a duplicate of the backing fd when that is the
  // remote file open as needed, else a fresh open (O_RDONLY or O_WRONLY).
  Result<UniqueFd> remoteFileFd(Inode& inode, bool for_write);
  // Readdir: appends one entry to buf[0, room); the bytes it took, or 0 when
  // it does not fit (the entry is offered again on the next call).
  Result<size_t> addDirEntry(fuse_req_t req, fuse_ino_t dir, const DirEntry& ent, char* buf,
                             size_t room, bool plus);

  // Opens (or reuses) the inode's backing file as chooseBacking() (backing.h)
  // says: the cache's valid copy for a read-only first open when there is one,
  // else the remote file. On success nopen is incremented; the result is the
  // backing id (-1: no passthrough). fresh: the remote's attributes of the
  // file fetched by this open (checkOpenPath), if it has them.
  Result<int> acquireBacking(Inode& inode, int flags,
                             const std::optional<struct stat>& fresh = std::nullopt);
  void prepareOpen(Inode& inode, OpenIntent& intent, const std::optional<struct stat>& fresh);
  void fetchCopyIfMissing(const OpenIntent& intent);
  // Carries out a choice to open a new backing file; under inode.mu.
  Status installBacking(Inode& inode, bool to_cache, int cache_fd, const OpenIntent& intent);
  void registerBacking(Inode& inode);
  void releaseBacking(Inode& inode, bool was_writer);
  // The cache copy as the inode's write-back buffer (docs/cache.md "One file,
  // one truth"); each under inode.mu, see filesystem.cc.
  Status adoptCopyLocked(Inode& inode);
  Status writeBackLocked(Inode& inode);
  Status truncateCopyLocked(Inode& inode, off_t size);
  Status fallocateCopyLocked(Inode& inode, int mode, off_t offset, off_t length);
  // stat of an inode with an adopted copy: size, blocks and mtime are the copy's.
  void overlayAdoptedCopy(Inode& inode, struct stat& st);
  // Whether the inode's idle backing can serve this open as the one a fresh
  // open would choose; under inode.mu, and the caller closes it if not. A
  // cache copy serves a reader while the store still has it as the copy valid
  // for the remote's attributes (checked as for a fresh open, every mode); the
  // remote file serves a reader when no valid copy exists, in strict mode only
  // while the attributes this open fetched equal those it was opened against
  // (Inode::backing_against: close-to-open, as an NFS client keeps its cached
  // data when its GETATTR at open finds the file unchanged); a writer is never
  // served (the remote's open-time checks answer it).
  // *backing_st: the copy's fstat when a copy serves.
  bool idleBackingServes(Inode& inode, const OpenIntent& intent,
                         std::optional<struct stat>* backing_st);
  // What CacheHooks::opened is told of the backing file (its device, inode and
  // size): a cache copy's fstat; for the remote file, the attributes this open
  // fetched (under the deadline), else its fstat under the deadline; nullopt
  // when the remote did not answer (nothing is reported). Under inode.mu.
  std::optional<struct stat> openedBackingStat(Inode& inode, const OpenIntent& intent);
  // O_TRUNC on open, on the shared backing file: a remote one is truncated in
  // the file's write lane, under the deadline; a failed first open leaves no
  // backing behind. Under inode.mu.
  Status truncateOnOpenLocked(Inode& inode);

  // ---- the write lane of a remote file (RemoteCalls::Lane) --------------------
  // The daemon's own changes to a remote file's bytes (an adopted copy's
  // write-backs, O_TRUNC's truncate, truncate(2), fallocate) run in its lane,
  // one at a time and in order even past their deadlines; before the kernel is
  // given the remote file for writing (a writer's open), an earlier change still
  // in flight must have ended (waitForWriteLane). By (src_dev, src_ino), so an
  // inode the kernel forgot and looked up again finds the lane of the one before.
  RemoteCalls::Lane writeLaneOf(const Inode& inode);
  // Ok at once when no change to inode's file is in flight, else once it ended
  // within the deadline; ETIMEDOUT naming `what` when it did not.
  Status waitForWriteLane(const Inode& inode, const char* what);
  // Forgets inode's lane when nothing runs in it and nobody holds it.
  void dropIdleWriteLane(const Inode& inode);

  // ---- the persistent namespace (filesystem_names.cc) -------------------------
  // Lookups, getattrs and listings answered from it without the remote while
  // an entry is fresh (immutable: always; ttl: learnt within the ttl); what
  // the remote answers is recorded (learn). Changes through the mount drop
  // what they touch before the remote call and after it (NamesChange).
  NamespaceCache* names() const { return opts_.names; }
  uint64_t namesEpoch() const { return names() ? names()->epoch() : 0; }
  // The inode's path for the namespace ("" for the root); nullopt without one.
  std::optional<std::string> namesRel(const Inode& inode) const;
  std::optional<std::string> namesRel(fuse_ino_t parent, const char* name);
  std::optional<NamespaceEntry> freshEntry(const std::string& rel) const;
  bool fresh(const NamespaceEntry& entry) const;
  struct stat attrOf(const NamespaceEntry& entry);
  // An entry for `name` in `parent` from the namespace (one lookup reference
  // added), or false: then the remote is asked.
  bool lookupFromNames(fuse_ino_t parent, const char* name, fuse_entry_param* e);
  // The entry's attributes as the inode's last known remote ones (unless it has
  // some), dated when the namespace learnt them.
  void rememberFromNames(Inode& inode, const NamespaceEntry& entry);
  bool getattrFromNames(fuse_req_t req, Inode& inode);
  // Records what the remote said of inode (asked when namesEpoch() was epoch);
  // not while writers have it open (their writes bypass the daemon).
  void learn(Inode& inode, const struct stat& st, uint64_t epoch);
  // Dropped from the namespace when begun and again when it goes out of scope.
  struct NamesChange {
    FileSystem* fs = nullptr;
    std::vector<std::string> rels;
    NamesChange() = default;
    NamesChange(const NamesChange&) = delete;
    NamesChange& operator=(const NamesChange&) = delete;
    ~NamesChange();
  };
  Status beginNamesChange(NamesChange& change, std::vector<std::optional<std::string>> rels);
  Status dropNames(const std::vector<std::string>& rels);
  // A walk to an inode answered ESTALE: its name no longer leads to it on the
  // remote, so the namespace's record of it (and below) goes, and the kernel's
  // retry (LOOKUP_REVAL) asks the remote.
  void forgetStaleNames(Inode& inode, const Error& walk_error);
  // The inode's fd for an open; in immutable and ttl modes a read-only open of
  // a file whose trusted attributes have a valid cached copy goes on without
  // one (null) unless one is at hand: served from the store alone, without
  // walking to the remote (which may be gone).
  Result<PathFd> pathForOpen(Inode& inode, int flags);
  // opendir from a complete, fresh listing in the namespace (replies), or false.
  bool opendirFromNames(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  Result<size_t> addNamedDirEntry(fuse_req_t req, fuse_ino_t dir, const NamespaceChild& child,
                                  off_t next_off, char* buf, size_t room, bool plus);
  Status readdirFromNames(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                          const DirHandle& d, bool plus);
  // A namespace listing as an open directory: "." and ".." first, then the
  // children; namedDirHandle: the one the namespace has now for ino, or null.
  std::shared_ptr<DirHandle> namedHandleOf(fuse_ino_t ino, const std::string& rel,
                                           const NamespaceEntry& self,
                                           std::vector<NamespaceChild> listing);
  std::shared_ptr<DirHandle> namedDirHandle(fuse_ino_t ino);
  // Files an open directory in dirs_ under a new number (odd when named).
  uint64_t addDirHandle(std::shared_ptr<DirHandle> d);
  // A listing read from the remote (DirHandle, filesystem.cc): entries noted as
  // the stream gives them, the whole recorded at its end.
  void noteListed(DirHandle& d, const std::deque<DirEntry>& entries);
  void recordListing(DirHandle& d);

  std::string relPathOf(const Inode& inode) const { return table_.relPathOf(inode); }
  // The inode's O_PATH fd: from the table's cache, or opened again by walking
  // its names from the nearest ancestor that has one (inode_table.h). ESTALE
  // when its names no longer lead to it; the walk runs under the deadline.
  Result<PathFd> pathFd(Inode& inode);
  // The fd of the inode known as `name` in `parent` (null if none or
  // unreachable): what keeps it reachable once an unlink or rename takes the name.
  PathFd childPathFd(Inode& parent, const char* name);
  std::string childRelPath(fuse_ino_t parent, const char* name);
  void invalidate(const std::string& rel, const Change& change);
  void invalidateTree(const std::string& rel);
  // Attributes to validate a cached copy against, per the consistency mode
  // (strict: a fresh stat, forced past the remote's attribute cache).
  Result<struct stat> remoteAttrsForOpen(Inode& inode);
  // At an opendir of `dir` (fstat `now`), outside strict mode: may the kernel keep
  // its cached listing? When not, the listing starts afresh from here, and in
  // immutable mode the kernel is told to look up again every name it holds
  // (a name may have gone; see consistency.h).
  bool revalidateListing(fuse_ino_t dir, const struct stat& now);
  void rememberStat(Inode& inode, const struct stat& st);
  // The remote calls of the request path, each under the deadline (fds are
  // duplicated for the worker, which may outlive the request).
  // force_sync: past the remote's own attribute cache (AT_STATX_FORCE_SYNC).
  // The PathFd forms hand the worker the inode's fd itself, kept open by the
  // reference (no duplicate to make and close).
  Result<struct stat> statRemote(int fd, const char* what, bool force_sync = false);
  Result<struct stat> statRemote(PathFd fd, const char* what, bool force_sync);
  // fstatat(dir_fd, name, AT_SYMLINK_NOFOLLOW) under the deadline.
  Result<struct stat> statRemoteAt(int dir_fd, const char* name, const char* what,
                                   bool force_sync = false);
  Result<struct stat> statRemoteAt(PathFd dir, const char* name, const char* what,
                                   bool force_sync);
  struct Found {
    int fd;  // O_PATH, the caller's to keep or close
    struct stat st;
  };
  Result<Found> lookupRemote(int parent_fd, const char* name);
  // Opens what fd (O_PATH) names with flags.
  Result<int> openRemote(int fd, int flags, const char* what);
  Result<DIR*> openRemoteDir(int fd);
  // unlinkat(dir_fd, name, flags): unlink, or rmdir with AT_REMOVEDIR.
  Status unlinkRemote(int dir_fd, const char* name, int flags);
  // fsync(fd), or fdatasync when datasync; what names it in errors.
  Status syncRemote(int fd, int datasync, const char* what);

  FileSystemOptions opts_;
  RemoteCalls remote_;
  PassthroughShim* shim_;
  SessionUserdata userdata_;
  InodeTable table_;
  std::atomic<uint64_t> userspace_read_bytes_{0};
  std::atomic<uint64_t> passthrough_opens_{0};
  std::atomic<uint64_t> userspace_opens_{0};
  std::atomic<uint64_t> cache_opens_{0};
  std::atomic<uint64_t> remote_opens_{0};
  std::atomic<uint64_t> cache_conflicts_{0};
  std::atomic<bool> warned_no_epoch_{false};
  // Each directory as of the opendir that began the kernel's cached listing of
  // it (Consistency::keepsListing), by remote (st_dev, st_ino): kept apart from
  // Inode, which the kernel may forget and look up again meanwhile. At
  // kMaxListings it starts over (every directory is then read afresh once).
  struct Listing {
    struct stat dir {};
    double at = 0;  // CLOCK_REALTIME seconds; 0 = never
  };
  static constexpr size_t kMaxListings = 1 << 16;
  std::mutex listings_mu_;                               // a leaf
  std::map<std::pair<dev_t, ino_t>, Listing> listings_;  // guarded by listings_mu_
  // Directories (namespace paths) opened in this run: opendirFromNames.
  std::set<std::string> opened_dirs_;  // guarded by listings_mu_
  std::atomic<uint64_t> idle_reuses_{0};
  std::atomic<uint64_t> path_walks_{0};
  std::mutex write_lanes_mu_;  // a leaf (a Lane's own lock is taken under it)
  std::map<std::pair<dev_t, ino_t>, RemoteCalls::Lane> write_lanes_;  // guarded by write_lanes_mu_
  // Open directories by handle (FileSystem::dirOf).
  std::mutex dirs_mu_;  // a leaf
  std::unordered_map<uint64_t, std::shared_ptr<DirHandle>> dirs_;  // guarded by dirs_mu_
  uint64_t next_dir_handle_;                                       // guarded by dirs_mu_
};

}  // namespace hotshard::fuse
