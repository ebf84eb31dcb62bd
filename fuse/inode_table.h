// fuse/inode_table: the kernel's FUSE inodes and the remote objects behind them.
//
// One Inode per remote object (st_dev, st_ino) the kernel holds a lookup
// reference to. The FUSE node id is a small number (FUSE_ROOT_ID for the root;
// ids of forgotten inodes are reused, with a new generation), resolved through
// a two-level array without a lock (inodeOf), so that a successor process can
// resolve the ids the kernel holds from the takeover state (takeover_state.h):
// with setTakeoverState(), every change to an inode's id, name, lookups and
// backing is stored there before the reply that hands it to the kernel.
//
// Reaching the object again: an Inode keeps its identity (st_dev, st_ino, type)
// and where it was last seen: its parent Inode and its name there, updated by
// every lookup that finds it and by unlink, rmdir and rename through the mount.
// It does not hold a descriptor for as long as the kernel remembers it (a walk
// of a million files would need a million): a bounded set of O_PATH fds is kept
// (least recently used closed first, `fd_cap`), and an inode whose fd was closed
// is opened again by walking from its nearest ancestor that has one, one
// openat(O_PATH|O_NOFOLLOW) per name, each checked to be the same object
// (st_dev, st_ino, type). A name that no longer leads to the object (renamed or
// replaced on the remote behind the mount) answers ESTALE, on which the kernel's
// path walk looks the name up again (fs/namei.c, retry_estale; fuse's
// d_revalidate looks up under LOOKUP_REVAL): the table never operates on
// another object than the one an inode stands for. The fds of open inodes
// (pinned by the open, released with it) and of inodes without a name (unlinked
// through the mount, O_TMPFILE files) are never closed before the inode is.
// File handles (open_by_handle_at) are not used: the usual remotes (sshfs, most
// FUSE servers) have none.
//
// Inodes made from the persistent namespace (namespace_cache.h, addNamedLookup)
// have no remote identity yet: they are known by their name alone, under
// kNamedDev and a counter, never by the remote's (st_dev, st_ino) (neither
// survives a remount of sshfs or NFS). Their walk checks the object's type
// only; the namespace's contract (immutable, or revalidated after the ttl)
// vouches for the rest, and a cached copy is still checked against its
// validator (size, mtime, ctime) at open.
//
// Lifetime, from the kernel's FUSE protocol (fs/fuse/inode.c, dir.c, readdir.c):
//  * every reply that hands out a node id (LOOKUP, CREATE, MKNOD, MKDIR,
//    SYMLINK, LINK, READDIRPLUS) adds one lookup; FORGET/BATCH_FORGET take them
//    back; the Inode is freed when its lookup count drops to zero and no other
//    Inode names it as parent. The kernel sends the last FORGET only after the
//    last RELEASE, so no open state is left by then.
//  * retire() takes an Inode out of the table while it is still open: the next
//    lookup of the same object makes a new Inode (new node id), free to have a
//    backing file of its own. The retired one lives until its last forget.
//  * an Inode whose last open was released may keep its backing file and
//    backing id registered ("idle"), so that the next open reuses them without
//    FUSE_DEV_IOC_BACKING_OPEN, open() and their undoing at release. The table
//    keeps at most `cap` idle ones (noteIdle, least recently idled closed
//    first); forget, retire and closeIdleCopies close them too.
//
// Lock order: InodeTable::mu_ before Inode::mu before InodeTable::fds_mu_ (a
// leaf: the O_PATH fd cache, taken under either, takes nothing); never take
// InodeTable::mu_ while holding an Inode::mu. CacheHooks calls made under
// Inode::mu take only the store's leaf lock.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <set>
#include <string_view>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace hotshard::fuse {

class PassthroughShim;
class TakeoverState;
struct TakeoverSlot;

// An O_PATH fd of an inode's object, shared by the table's cache and the
// operations using it: closed when the last of them lets go.
using PathFd = std::shared_ptr<const UniqueFd>;

// "/proc/self/fd/N": a path naming what an fd (O_PATH ones included) refers to.
std::string procPath(int fd);

// How to open an inode's object again (InodeTable::planWalk): from `from`, the
// fd of its nearest ancestor that has one, one name after another, each
// expected to be the object given (the inode's own last).
// The st_dev of inodes known by name only (addNamedLookup): no file system's.
inline constexpr dev_t kNamedDev = ~dev_t{0};

struct PathWalk {
  struct Step {
    std::string name;
    dev_t dev = 0;
    ino_t ino = 0;
    mode_t type = 0;  // S_IFMT bits
  };
  PathFd from;
  std::vector<Step> steps;
  uint64_t names_epoch = 0;  // InodeTable::namesEpoch() when planned
};

// Carries out a walk (syscalls only, no lock: runs on a remote-call worker):
// an O_PATH fd per step. ESTALE when a name leads nowhere (ENOENT, ENOTDIR,
// ELOOP) or to another object than the step's (st_dev, st_ino, type); other
// errnos as openat/fstat gave them (EACCES, ENOTCONN, EIO...).
Result<std::vector<UniqueFd>> walkPath(const PathWalk& walk);

// One remote object the kernel knows.
struct Inode {
  uint64_t id = 0;  // the FUSE node id; fixed for the inode's life
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
  // The backing file is the remote file, opened after the remote's attributes
  // were fetched as backing_against (when backing_against_known): what a
  // strict open validates an idle one against (FileSystem::idleBackingServes).
  bool backing_against_known = false;
  struct stat backing_against {};
  // A writer joined the copy (backing.h, kAdoptCopy): it is the inode's
  // write-back buffer until the last release; every open passes through to it,
  // and FileSystem::writeBack copies it to the remote through remote_wb_fd
  // (O_WRONLY, owned) at flush, fsync, truncate and the last release.
  // written_back: the copy's fstat just before the last write-back;
  // stamp_usable: that stamp can tell a later write (stampSeesLaterWrites).
  bool copy_adopted = false;
  // After a takeover: the predecessor's writer had adopted the copy and its
  // opens are not all released; the first request that needs the backing fd
  // takes the copy the store kept back as the write-back buffer
  // (FileSystem::reopenInheritedLocked). Guarded by mu.
  bool inherited_adopted = false;
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
  // After a takeover, until last_stat is set here: the mode and ownerHash()
  // the predecessor last told the kernel (TakeoverSlot), what a strict open
  // checks the remote's against (FileSystem::checkOpenPath); mode 0: unknown.
  uint16_t told_mode = 0;
  uint32_t told_owner_hash = 0;

  // In InodeTable's list of idle backings; guarded by InodeTable::mu_.
  bool idle_listed = false;
  std::list<Inode*>::iterator idle_pos;

  // Where the object was last seen, guarded by InodeTable::mu_: `name` in the
  // directory `parent` (which counts it in nchildren, so outlives it). nullptr
  // for the root and for an inode without a name (see hasName).
  Inode* parent = nullptr;
  std::string name;
  uint64_t nchildren = 0;

  // The O_PATH fd cache's entry, guarded by InodeTable::fds_mu_: the fd (null
  // when closed), pins (opens, and one while the inode has no name) that keep
  // it from being closed, and its place in the least-recently-used list.
  PathFd path_fd;
  int fd_pins = 0;
  bool nameless_pin = false;
  bool fd_listed = false;
  std::list<Inode*>::iterator fd_pos;
};

// Idle: no open, but a backing file kept (see InodeTable); never an adopted
// copy (the last release writes it back and closes it). Under inode.mu.
inline bool hasIdleBacking(const Inode& inode) {
  return inode.nopen == 0 && inode.backing_fd >= 0 && !inode.copy_adopted;
}

// Closes an fd of a remote file without waiting on the remote
// (RemoteCalls::closeLater); empty: close(2) here.
using RemoteFdCloser = std::function<void(int fd)>;

// Closes an idle backing: its backing id (FUSE_DEV_IOC_BACKING_CLOSE) and fd,
// a remote file's through close_remote. Does nothing to an inode that is open
// or has none. Under inode.mu.
void closeIdleBacking(Inode& inode, PassthroughShim& shim,
                      const RemoteFdCloser& close_remote = nullptr);

class InodeTable {
 public:
  // remote_root_fd: O_PATH|O_DIRECTORY, borrowed; the table opens its own.
  // shim: closes the backing ids of inodes still open at teardown or forget.
  // fd_cap: O_PATH fds kept open for inodes that are neither open nor nameless
  // (at least 1; those beyond it are closed, least recently used first).
  InodeTable(int remote_root_fd, PassthroughShim* shim, size_t fd_cap = 1024);
  ~InodeTable();  // closes every inode's fds and backing ids
  // How the fds of remote files are closed (backings, write-back fds): set
  // before serving; by default close(2) on the calling thread.
  void setRemoteFdCloser(RemoteFdCloser close_remote) { close_remote_ = std::move(close_remote); }
  const RemoteFdCloser& remoteFdCloser() const { return close_remote_; }
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  // Records every inode (and from now on every change) in `state`, which must
  // outlive the table; nullptr stops it. Call before the session serves.
  void setTakeoverState(TakeoverState* state);
  // A successor's start: the inodes a predecessor left (no fds: each is opened
  // again by a walk from the root when used). Their inherited backing ids stay
  // registered (the kernel's open files use them) with the opens counted.
  // Call on an empty table, before the session serves.
  void adoptInodes(const std::vector<TakeoverSlot>& slots);
  // The process hands the connection over: the destructor leaves backing ids
  // registered (their files stay open in the kernel) for the successor.
  void keepBackingsForSuccessor() { keep_backings_ = true; }
  // The inode's backing id and opens changed: stored in the takeover state.
  // Under inode.mu.
  void noteBacking(const Inode& inode);
  // The kernel is told `st` for the inode (a lookup, getattr or open reply):
  // its mode and owner are stored in the takeover state.
  void noteAttrs(const Inode& inode, const struct stat& st);

  Inode& root() { return *root_; }
  bool isRoot(const Inode& inode) const { return &inode == root_.get(); }
  // The inode of a node id; an id the table does not know (never, unless a
  // takeover state lost it) gives an inode without name or fd: ESTALE.
  Inode& inodeOf(fuse_ino_t ino);
  fuse_ino_t idOf(const Inode& inode) const;
  // Inodes in the table, retired ones and the root included.
  size_t size() const;
  // Runs fn on the (not retired) inode of the remote object (dev, ino) under
  // mu_, so it cannot be freed meanwhile; fn may take Inode::mu. False if none.
  bool visit(dev_t dev, ino_t ino, const std::function<void(Inode&)>& fn);

  // Adds one lookup reference to the object `attr` describes, found as `name`
  // in `parent` (nullptr, or a name of "." or "..": an inode without a name,
  // e.g. an O_TMPFILE file) at `newfd` (O_PATH, taken over: cached for a new
  // Inode, closed when the object is known already, e.g. a hard link under
  // another name or the root's ".."). The inode's name becomes this one.
  Inode& addLookup(int newfd, const struct stat& attr, Inode* parent = nullptr,
                   std::string_view name = {});
  // addLookup() without an fd, for an object the table knows already (the
  // root included); nullptr when it does not, and nothing is counted.
  Inode* addLookupIfKnown(const struct stat& attr, Inode* parent = nullptr,
                          std::string_view name = {});
  // Adds one lookup reference to the inode known as `name` in `parent` if it
  // has the type of `attr` (and is not retired), else to a new one under that
  // name, with no fd (opened by a walk when first needed) and no remote
  // identity (kNamedDev): an object learnt from the persistent namespace.
  Inode& addNamedLookup(Inode& parent, std::string_view name, const struct stat& attr);
  // Drops n lookup references; frees the inode at zero. Never the root.
  void forget(Inode& inode, uint64_t n);
  // Takes the inode out of the table so that the next lookup of its name makes
  // a new kernel inode, free to have another backing file. Its open files keep
  // theirs; it is freed on its last forget.
  void retire(Inode& inode);

  // rel_path of an inode, from its names up to the root ("" for the root and
  // for an inode without a name: unlinked through the mount, O_TMPFILE).
  std::string relPathOf(const Inode& inode) const;

  // The O_PATH fd cache. cachedPathFd: the inode's fd if the cache has it
  // (marked most recently used), else null; any lock may be held. planWalk:
  // the same, or null and *walk filled to open it again (walkPath), or an
  // ESTALE error for an inode without a name or fd. installWalk: caches what
  // walkPath opened (every step whose object the table knows) and returns the
  // inode's fd. The root's fd is always there.
  PathFd cachedPathFd(Inode& inode);
  Result<PathFd> planWalk(Inode& inode, PathWalk* walk);
  PathFd installWalk(Inode& inode, const PathWalk& walk, std::vector<UniqueFd> fds);
  // Renames and unlinks through the mount since the start; a walk planned
  // before one may have taken a name that moved (worth planning again).
  uint64_t namesEpoch() const { return names_epoch_.load(); }
  // Pins keep an inode's fd open (an open file: pinned by each successful
  // open, `fd` installed when the cache has none; unpinned by each release).
  void pinPathFd(Inode& inode, const PathFd& fd);
  void unpinPathFd(Inode& inode);
  // Fds cached now (the root's included), and how many the cache may keep
  // unpinned.
  size_t pathFdCount() const;
  size_t pathFdCap() const { return fd_cap_; }
  // The remote root's fd (O_PATH|O_DIRECTORY), owned by the table.
  int rootFd() const { return root_->path_fd->get(); }
  // The remote root's mount was replaced: closes every unpinned fd, so that
  // the next use walks from the new root (and answers ESTALE where the
  // objects differ).
  void dropUnpinnedFds();

  // Renames and unlinks through the mount, told before and after the remote
  // call. holdChild: the inode known as `name` in `parent`, with one lookup
  // reference added so it cannot go meanwhile (forget it after), or nullptr.
  // unlinked: `name` in `parent` was removed; the inode known by it keeps
  // `held` (its fd from before the unlink; may be null) and has no name now.
  // renamed: the inode known as `name` moves to `newname` in `newparent`; an
  // inode known there is unlinked (keeping `held_target`), or with
  // RENAME_EXCHANGE takes the old name.
  Inode* holdChild(Inode& parent, std::string_view name);
  void unlinked(Inode& parent, std::string_view name, const PathFd& held);
  void renamed(Inode& parent, std::string_view name, Inode& newparent, std::string_view newname,
               unsigned int flags, const PathFd& held_target);

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
  // Orders names_ by (parent, name); finds by a (parent, name) pair too.
  struct ByName {
    using is_transparent = void;
    using Key = std::pair<const Inode*, std::string_view>;
    static Key key(const Inode* i) { return {i->parent, i->name}; }
    bool operator()(const Inode* a, const Inode* b) const { return key(a) < key(b); }
    bool operator()(const Inode* a, const Key& b) const { return key(a) < b; }
    bool operator()(const Key& a, const Inode* b) const { return a < key(b); }
  };

  void closeBackings(Inode& inode);
  // Node ids: allocated and freed under mu_; read by inodeOf without a lock.
  static constexpr unsigned kIdChunkBits = 16;
  static constexpr uint64_t kMaxIds = 1ull << (2 * kIdChunkBits);
  void assignIdLocked(Inode& inode);
  void setIdLocked(uint64_t id, Inode* inode);
  void freeIdLocked(Inode& inode);
  // Stores the inode's identity, name and lookups in the takeover state. Requires mu_.
  void recordLocked(const Inode& inode);
  void unlistIdleLocked(Inode& inode);  // requires mu_
  Inode* childLocked(Inode& parent, std::string_view name);  // requires mu_
  // Gives the inode `name` in `parent` (nullptr: no name), taking the name from
  // an inode that had it; unless parent is inode itself or below it. Requires mu_.
  void setNameLocked(Inode& inode, Inode* parent, std::string_view name);
  // Frees inode if unreferenced (no lookups, no children), then its parent
  // likewise. Requires mu_.
  void freeIfUnusedLocked(Inode* inode);
  // Requires fds_mu_: the fd cache's list and pins.
  void touchFdLocked(Inode& inode);
  void pinLocked(Inode& inode);
  void unpinLocked(Inode& inode);
  void evictFdsLocked(std::vector<PathFd>& closed);
  void dropFdLocked(Inode& inode, std::vector<PathFd>& closed);
  void setPathFdLocked(Inode& inode, PathFd fd);

  PassthroughShim* shim_;
  RemoteFdCloser close_remote_;
  std::unique_ptr<Inode> root_;
  std::unique_ptr<Inode> stale_;  // what inodeOf gives for an unknown id
  std::array<std::atomic<std::atomic<Inode*>*>, (1u << kIdChunkBits)> id_chunks_{};
  std::vector<std::unique_ptr<std::atomic<Inode*>[]>> id_chunk_owners_;  // guarded by mu_
  uint64_t next_id_ = FUSE_ROOT_ID + 1;  // guarded by mu_
  std::vector<uint64_t> free_ids_;       // forgotten, reusable; guarded by mu_
  std::atomic<TakeoverState*> state_{nullptr};
  std::atomic<bool> keep_backings_{false};
  const size_t fd_cap_;
  std::atomic<uint64_t> names_epoch_{0};
  // Lock order: mu_ before any Inode::mu, before fds_mu_.
  mutable std::mutex mu_;
  std::set<Inode*, ByName> names_;  // inodes with a name; guarded by mu_
  mutable std::mutex fds_mu_;        // a leaf
  std::list<Inode*> fds_;  // unpinned inodes with an fd, least recently used first; fds_mu_
  size_t fd_count_ = 1;    // inodes with an fd, the root included; guarded by fds_mu_
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<Inode>> inodes_;  // guarded by mu_
  std::map<Inode*, std::unique_ptr<Inode>> retired_;                  // guarded by mu_
  std::list<Inode*> idle_;  // least recently idled first; guarded by mu_
  std::atomic<uint64_t> next_generation_{1};
  ino_t next_named_ = 1;  // addNamedLookup's st_ino under kNamedDev; guarded by mu_
};

}  // namespace hotshard::fuse
