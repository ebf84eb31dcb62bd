// fuse/inode_table: the kernel's FUSE inodes and the remote objects behind them.
//
// One Inode per remote object (st_dev, st_ino) the kernel holds a lookup
// reference to, reached through an O_PATH fd opened relative to the remote
// root's fd. The FUSE node id is the Inode's address (FUSE_ROOT_ID for the
// root), as in libfuse's example/passthrough_hp.cc.
//
// Lifetime, from the kernel's FUSE protocol (fs/fuse/inode.c, dir.c, readdir.c):
//  * every reply that hands out a node id (LOOKUP, CREATE, MKNOD, MKDIR,
//    SYMLINK, LINK, READDIRPLUS) adds one lookup; FORGET/BATCH_FORGET take them
//    back; the Inode is freed when its lookup count drops to zero. The kernel
//    sends the last FORGET only after the last RELEASE, so no open state is
//    left by then.
//  * retire() takes an Inode out of the table while it is still open: the next
//    lookup of the same object makes a new Inode (new node id), free to have a
//    backing file of its own. The retired one lives until its last forget.
//  * an Inode whose last open was released may keep its backing file and
//    backing id registered ("idle"), so that the next open reuses them without
//    FUSE_DEV_IOC_BACKING_OPEN, open() and their undoing at release. The table
//    keeps at most `cap` idle ones (noteIdle, least recently idled closed
//    first); forget, retire and closeIdleCopies close them too.
//
// Lock order: InodeTable::mu_ before Inode::mu; never take InodeTable::mu_
// while holding an Inode::mu. CacheHooks calls made under Inode::mu take only
// the store's leaf lock.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace hotshard::fuse {

class PassthroughShim;

// "/proc/self/fd/N": a path naming what an fd (O_PATH ones included) refers to.
std::string procPath(int fd);

// One remote object the kernel knows.
struct Inode {
  int fd = -1;  // O_PATH, owned
  dev_t src_dev = 0;
  ino_t src_ino = 0;
  mode_t type = 0;  // S_IFMT bits
  uint64_t generation = 0;
  uint64_t nlookup = 0;  // guarded by InodeTable::mu_
  // Out of the table: lookups now make a new inode for the same remote object
  // (see InodeTable::retire). Guarded by InodeTable::mu_.
  bool retired = false;

  // Open state, guarded by mu. The kernel lets one FUSE inode have one backing
  // file at a time (fs/fuse/passthrough.c: a second backing for an inode that
  // has one is refused), so all opens share it: opened on first open,
  // read-write when the remote allows, closed on last release.
  std::mutex mu;
  int nopen = 0;
  int backing_fd = -1;
  int backing_id = -1;  // >= 0 when registered with the kernel (FUSE_DEV_IOC_BACKING_OPEN)
  bool backing_writable = false;
  int backing_rw_errno = 0;  // why a read-write open was refused
  // The backing file is the cache's copy of cached_rel, not the remote, made
  // from the remote as it was in cached_against (updated by each write-back).
  bool backing_is_cache = false;
  std::string cached_rel;
  struct stat cached_against {};
  // A writer joined the copy (backing.h, kAdoptCopy): it is the inode's
  // write-back buffer until the last release; every open passes through to it,
  // and FileSystem::writeBack copies it to the remote through remote_wb_fd
  // (O_WRONLY, owned) at flush, fsync, truncate and the last release.
  // written_back: the copy's fstat just before the last write-back;
  // stamp_usable: that stamp can tell a later write (stampSeesLaterWrites).
  bool copy_adopted = false;
  int remote_wb_fd = -1;
  struct stat written_back {};
  bool stamp_usable = false;
  // One entry per open for writing: the path it began writing at (endWrite must
  // name the same one, even if the file was renamed since).
  std::vector<std::string> writer_rels;
  // The remote's attributes as last seen (lookup, getattr, open); what the
  // ttl and immutable modes validate the cached copy against.
  struct stat last_stat {};
  double last_stat_time = 0;  // CLOCK_MONOTONIC seconds; 0 = never
  // The path (from the remote root) the kernel reached this object by at its
  // last lookup: the parent's kernel_rel, "/", the name. What a strict open
  // checks against the remote (Consistency::opensCheckPath); unknown for an
  // object never looked up by name (O_TMPFILE). Guarded by mu.
  std::string kernel_rel;
  bool kernel_rel_known = false;

  // In InodeTable's list of idle backings; guarded by InodeTable::mu_.
  bool idle_listed = false;
  std::list<Inode*>::iterator idle_pos;
};

// Idle: no open, but a backing file kept (see InodeTable); never an adopted
// copy (the last release writes it back and closes it). Under inode.mu.
inline bool hasIdleBacking(const Inode& inode) {
  return inode.nopen == 0 && inode.backing_fd >= 0 && !inode.copy_adopted;
}

// Closes an idle backing: its backing id (FUSE_DEV_IOC_BACKING_CLOSE) and fd.
// Does nothing to an inode that is open or has none. Under inode.mu.
void closeIdleBacking(Inode& inode, PassthroughShim& shim);

class InodeTable {
 public:
  // remote_root_fd: O_PATH|O_DIRECTORY, borrowed; the table opens its own.
  // shim: closes the backing ids of inodes still open at teardown or forget.
  InodeTable(int remote_root_fd, PassthroughShim* shim);
  ~InodeTable();  // closes every inode's fds and backing ids
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  Inode& root() { return *root_; }
  bool isRoot(const Inode& inode) const { return &inode == root_.get(); }
  Inode& inodeOf(fuse_ino_t ino);
  fuse_ino_t idOf(const Inode& inode) const;
  // Inodes in the table, retired ones and the root included.
  size_t size() const;
  // Runs fn on the (not retired) inode of the remote object (dev, ino) under
  // mu_, so it cannot be freed meanwhile; fn may take Inode::mu. False if none.
  bool visit(dev_t dev, ino_t ino, const std::function<void(Inode&)>& fn);

  // Adds one lookup reference to the object `attr` describes, found at `newfd`
  // (O_PATH, taken over: kept by a new Inode, closed when the object is known
  // already, e.g. a hard link under another name or the root's "..").
  Inode& addLookup(int newfd, const struct stat& attr);
  // addLookup() without an fd, for an object the table knows already (the
  // root included); nullptr when it does not, and nothing is counted.
  Inode* addLookupIfKnown(const struct stat& attr);
  // Drops n lookup references; frees the inode at zero. Never the root.
  void forget(Inode& inode, uint64_t n);
  // Takes the inode out of the table so that the next lookup of its name makes
  // a new kernel inode, free to have another backing file. Its open files keep
  // theirs; it is freed on its last forget.
  void retire(Inode& inode);

  // rel_path of an inode, from the kernel's name for its O_PATH fd ("" if it
  // is not (or no longer) under the remote root, e.g. deleted).
  std::string relPathOf(const Inode& inode) const;

  // The inode's last open was released and it kept its backing: lists it as the
  // most recently idled, then closes the least recently idled ones beyond cap
  // (cap 0: keeps none). A retired inode's backing is closed at once (no new
  // open reaches it). Called without inode.mu (takes mu_, then inode.mu).
  void noteIdle(Inode& inode, size_t cap);
  // Closes the idle backings that are cache copies of any of rel_paths (the
  // store dropped them: an fd kept open would keep their blocks allocated).
  // Called without any Inode::mu.
  void closeIdleCopies(const std::vector<std::string>& rel_paths);
  // Idle backings kept now (listed inodes that are idle).
  size_t idleCount() const;

 private:
  void closeAll(Inode& inode);
  void unlistIdleLocked(Inode& inode);  // requires mu_

  PassthroughShim* shim_;
  // /proc/self/fd (O_PATH; the process's, whichever thread asks), for
  // relPathOf; opened after any fork (the daemon forks before it starts).
  int proc_fd_dir_ = -1;
  std::unique_ptr<Inode> root_;
  std::string remote_prefix_;  // the kernel's name of the remote root, for relPathOf
  // Lock order: mu_ before any Inode::mu.
  mutable std::mutex mu_;
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<Inode>> inodes_;  // guarded by mu_
  std::map<Inode*, std::unique_ptr<Inode>> retired_;                  // guarded by mu_
  std::list<Inode*> idle_;  // least recently idled first; guarded by mu_
  std::atomic<uint64_t> next_generation_{1};
};

}  // namespace hotshard::fuse
