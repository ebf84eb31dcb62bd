// CacheStore: the local NVMe copies of remote files, on disk and in memory.
//
// Layout under the cache directory (docs/cache.md has the user's view):
//   FORMAT                 "hotshard-cache 1": unknown versions are refused
//   LOCK                   flock'ed by the one process using the directory
//   pins                   pinned relative paths, NUL-separated (atomic rewrite)
//   tmp/                   in-flight promotions, dropped objects about to be
//                          unlinked; swept at open
//   objects/ab/cdef...     one file per object, named by the hex xxh3-128 of
//                          (remote identity, '\0', relative path), fanned out
//                          by its first byte. xattrs user.hotshard.{path,
//                          validator,checksum} say what it is a copy of.
//                          Hard links of one remote file share one object
//                          file (linkCopy()): each name of it in objects/ is
//                          a link(2) of the same inode under that name's
//                          key, and user.hotshard.path lists every name,
//                          NUL-separated (one name: exactly the one path).
//                          The remote identity is the remote root's canonical
//                          path alone: nothing that a remount or a reboot
//                          changes (st_dev is not part of it; objects named
//                          under the former "path@st_dev" are renamed at open).
//                          user.hotshard.dirty (a validator) says that
//                          writers joined it and the remote, as that
//                          validator describes it, may lack some of its bytes.
//   lost+found/            (0700) dirty copies that could not be written back:
//                          the remote changed underneath, or the write failed
//
// Publish is atomic: the promoter writes tmp/<key>.<n>, then publish() sets the
// xattrs, fsyncs, renames into objects/ and fsyncs the directory. A crash at
// any point leaves no object or a complete one. open() sweeps tmp/ and rebuilds
// the index from objects/, unlinking anything truncated or unverifiable; dirty
// objects are kept for recoverDirty() (docs/cache.md "One file, one truth").
//
// Shared objects (linkCopy): the names whose index entries are links of one
// object file form a group. The group's bytes are counted once; a drop of any
// name (evict, invalidate, stale, corrupt, the watermarks) drops every name,
// since a change through one name of a remote inode changes all of them; a
// pinned or open name keeps the whole group from the watermarks and
// evictIdle.
//
// Thread safety: every public method may be called from any thread. One mutex
// (mu_) guards all in-memory state; it is a leaf lock: nothing calls out of the
// store while holding it (no callback runs under it), so callers may hold their
// own locks while calling in.
//
// Disk health: an error from the cache disk that says the disk or its file
// system is sick (isDiskFault: EIO, EROFS, ...), from any operation on the
// cache directory, marks the store failed at once (one error logged). While
// failed, openIfValid() serves no copy (opens go to the remote) and
// beginPromotion() refuses; the index is kept. probeHealth() brings it back
// when a write, fsync and read of a probe file in tmp/ succeed again. health_mu_
// is a leaf taken under mu_ or alone.
//
// Eviction authority: the placement policy decides what goes. Placement evicts
// its victims itself (evictIdle) and hands the store its order, coldest first
// (updateEvictionOrder); the store's own watermark eviction, a safety net for
// room it must make now (a promotion, a shrunk capacity), follows that order.
// Quick metadata syscalls (openat, renameat, the pins file rewrite) run under
// it; data I/O (copy, fsync of objects, verify reads) and the unlink of
// dropped objects (moved into tmp/ first) never do, except the few a failing
// disk kept in objects/ (undead_), which probeHealth() unlinks under mu_ so
// that no publish reuses their names meanwhile.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "base/result.h"
#include "fuse/remote_calls.h"

namespace hotshard {

// What a cached copy was made from (stat(2) of the remote file). All five
// fields are recorded; operator== compares all five (the promoter's "did the
// file change during the copy", within one mount); servesFor() says when a
// copy may be served.
struct Validator {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  int64_t ctime_ns = 0;
  uint64_t ino = 0;
  uint64_t dev = 0;
  bool operator==(const Validator&) const = default;
};

Validator validatorOf(const struct stat& st);
std::string toString(const Validator& v);

// May a copy made from `copy` be served for the remote file `now` describes?
// Size, mtime and ctime (ns) must be equal; inode and device are not looked at,
// since neither survives a remount on every remote: st_dev of a FUSE remote
// (sshfs) or of NFS is an anonymous device number given at each mount
// (fs/super.c, get_anon_bdev), and sshfs's st_ino is its own node id, given
// afresh when the kernel forgets and looks up a name again. ctime is the
// server's on NFS, Lustre, CephFS and GPFS, and is set to the file's mtime by
// sshfs (SFTP v3 carries no ctime), so it survives a remount; a file replaced
// by rename or written has a new ctime. On sshfs (seconds, ctime = mtime) a
// same-size rewrite that keeps the mtime to the second (cp -p, rsync -t)
// cannot be told apart, as rsync's own quick check cannot. Pure.
bool servesFor(const Validator& copy, const Validator& now);

// The remote identity part of every key: the remote root's canonical path
// (the namespace), after checking that remote_root_fd (opened before the
// mount) answers statx (AT_STATX_DONT_SYNC: a remote that hangs is not asked).
// Not its st_dev, which changes at every remount of a
// FUSE or NFS remote.
Result<std::string> remoteIdOf(int remote_root_fd, const std::string& canonical_path);

// The content checksum (xxh3-64) an object records in user.hotshard.checksum,
// read from an fd of the object file itself (so it describes that file even if
// the store has replaced the object since). kCorrupt if absent or garbled.
Result<uint64_t> objectChecksum(int object_fd);

// A relative path as the store accepts it: not empty, not absolute, no "." or
// ".." component, no empty component, no NUL.
Status checkRelPath(const std::string& rel_path);

struct CacheStoreOptions {
  std::string dir;        // the cache directory (created if missing; must be empty or a cache)
  std::string remote_id;  // see remoteIdOf()
  uint64_t capacity_bytes = 0;
  double high_watermark = 0.95, low_watermark = 0.85;
};

class CacheStore {
 public:
  static Result<std::unique_ptr<CacheStore>> open(const CacheStoreOptions& options);
  ~CacheStore();
  CacheStore(const CacheStore&) = delete;
  CacheStore& operator=(const CacheStore&) = delete;

  // ---- cache disk health (see the header comment) -------------------------
  struct Health {
    bool healthy = true;
    std::string reason;    // the first fault's message, "" while healthy
    int64_t since_ns = 0;  // wall clock (ns since the epoch) of the last transition; 0: never
    uint64_t faults = 0;   // disk faults seen since open (each noteIoError that counted)
  };
  Health health() const;
  bool healthy() const { return healthy_.load(std::memory_order_acquire); }
  // Errnos that say the cache disk or its file system is failing, not that one
  // request cannot be met: EIO, EROFS (ext4 errors=remount-ro, a read-only
  // remount), ENXIO and ENODEV (device gone), EUCLEAN (EFSCORRUPTED) and
  // EBADMSG (EFSBADCRC) from ext4/xfs, EREMOTEIO. ENOSPC, ENOENT, EEXIST,
  // EINVAL are not. Pure.
  static bool isDiskFault(int err);
  // Marks the store failed if e.sys_errno isDiskFault(); logs once per
  // transition. Callers outside the store (the promoter's writes) report here.
  void noteIoError(const Error& e);
  // Writes 4 KiB to tmp/health-probe, fsyncs it, drops its pages and reads it
  // back, then unlinks it. Ok: the store is healthy (again: logged); a disk
  // fault marks it failed. Takes no mu_.
  Status probeHealth();

  // ---- FUSE layer -------------------------------------------------------
  // O_RDWR fd of the cached copy iff present and servesFor(its validator,
  // `current`) (read-write for adopt()); kNotFound or kStale otherwise (a stale
  // copy is dropped); kIo while the disk is failed (see health()).
  // Each successful call counts the object as open (never evicted by the
  // watermarks) until a matching release(rel_path).
  Result<int> openIfValid(const std::string& rel_path, const Validator& current);
  void release(const std::string& rel_path);
  // For an fd that openIfValid handed out and its caller kept after release():
  // true, counting the object open again (as openIfValid), iff rel_path is
  // cached with validator `current` and its object is still the file `copy`
  // describes (st_dev, st_ino: the kept fd's fstat). A stale copy is dropped.
  bool reopenIfValid(const std::string& rel_path, const Validator& current,
                     const struct stat& copy);
  // Told the paths whose copies left the store (evicted, invalidated, stale,
  // replaced, corrupt), after the store's lock is released, on the thread that
  // dropped them: whoever keeps fds of copies closes them, so that their blocks
  // are freed. Set it before serving; setDropListener(nullptr) waits for calls
  // in progress, so the listener's target may go after it.
  using DropListener = std::function<void(const std::vector<std::string>& rel_paths)>;
  void setDropListener(DropListener listener);
  // Drops the cached copy and makes any promotion of rel_path now in flight
  // unpublishable. Call before forwarding a write, truncate, unlink or rename
  // through the mount, and again when a writable handle is released.
  Status invalidate(const std::string& rel_path);
  // invalidate() for rel_dir itself and every path below it: for a rename or
  // removal of a directory through the mount. Costs a scan of the index.
  Status invalidateTree(const std::string& rel_dir);
  // A writable handle on rel_path is open through the mount. With
  // passthrough, its writes reach the remote without the daemon seeing them,
  // so from beginWrite() to the matching endWrite() the path has no copy and
  // cannot be promoted (kBusy); both also invalidate().
  Status beginWrite(const std::string& rel_path);
  void endWrite(const std::string& rel_path);

  // ---- copies that writers joined (docs/cache.md "One file, one truth") ----
  // The cached copy of rel_path, open as the file (copy_dev, copy_ino), becomes
  // its inode's write-back buffer: out of the index (never evicted, verified,
  // served, replaced or promoted over; its bytes stay counted as used) and
  // marked dirty on disk against `base` (xattr user.hotshard.dirty, fsync'd)
  // before this returns. kNotFound: not cached, or the object is another file.
  Status adopt(const std::string& rel_path, dev_t copy_dev, ino_t copy_ino, const Validator& base);
  // The remote has the adopted copy's bytes now, with validator `base`.
  Status markWrittenBack(const std::string& rel_path, const Validator& base);
  // The adopted copy leaves the store: unlinked when written_back, else moved
  // to lost+found/ with an error logged that names it.
  void releaseAdopted(const std::string& rel_path, bool written_back);
  // At start, before the mount serves: each object a crash left dirty is
  // written back in place to its remote file (rel path under remote_root_fd)
  // if the remote's validator still equals its mark, then unlinked; otherwise
  // (the remote changed or is gone, or the write-back failed) it is moved to
  // lost+found/ with an error naming both. Never silently dropped, never
  // written over a remote that changed underneath.
  // keep_adopted (a takeover's start, docs/restart.md): the rel paths whose
  // copies a predecessor's writers still have open; such a dirty copy is kept
  // as adopted (as after adopt(), untouched, dirty mark and all) for the
  // successor's inode to write back at its last release (openAdopted).
  // remote_timeout_seconds (--remote-timeout; 0: none, all on this thread):
  // each copy's remote part (open, fstat and validator check, copy in place)
  // runs on a worker (fuse::RemoteCalls) and is waited for at most that long.
  // Past it the copy is kept aside (an error naming the file and the deadline)
  // and every later copy of this start is kept aside untried: a hung remote
  // holds the start up for one deadline, not one per copy. The call left
  // behind never starts writing once given up; one already copying goes on in
  // its fuse::RemoteCalls::Lane, returned in `writing` with the remote file's
  // (st_dev, st_ino) for the file system's write lane of that file (its
  // writers' opens wait for it: FileSystem::holdWriteLane), so it cannot land
  // after newer bytes (docs/cache.md "What a crash does").
  struct WriteBackInFlight {
    std::string rel_path;
    dev_t dev = 0;  // the remote file's, by the call's fstat
    ino_t ino = 0;
    fuse::RemoteCalls::Lane lane;  // busy until the call returns
  };
  struct DirtyRecovery {
    uint64_t written_back = 0, kept_aside = 0, kept_adopted = 0;
    uint64_t timed_out = 0;  // of kept_aside: past the deadline, or untried after one
    std::vector<WriteBackInFlight> writing;
  };
  DirtyRecovery recoverDirty(int remote_root_fd, const std::vector<std::string>& keep_adopted = {},
                             double remote_timeout_seconds = 0);
  // An O_RDWR fd of rel_path's adopted copy (adopt(), or kept by recoverDirty
  // at a takeover). kNotFound: none; the open's errno otherwise.
  Result<int> openAdopted(const std::string& rel_path);

  enum class State { kRemote, kPromoting, kCached };
  struct ObjectInfo {
    State state;
    bool pinned;
    uint64_t size;
    uint64_t links = 1;  // cached: names sharing its copy (hard links, linkCopy())
  };
  ObjectInfo info(const std::string& rel_path) const;
  // Pins persist across restarts (the pins file) and may name paths not cached
  // yet. A pinned object is never evicted by the watermarks.
  Status pin(const std::string& rel_path, bool pinned);

  struct Stats {
    uint64_t used_bytes, capacity_bytes, objects, promotions_in_flight;
    double high_watermark = 0, low_watermark = 0;  // the running options'
    uint64_t pinned_objects = 0;
    uint64_t reserved_bytes = 0;  // room held for promotions in flight
    uint64_t published = 0;
    uint64_t evictions = 0;           // watermark and explicit
    uint64_t stale_drops = 0;         // openIfValid found the remote changed
    uint64_t invalidations = 0;       // invalidate() that dropped or fenced something
    uint64_t corrupt_drops = 0;       // verify() mismatches
    uint64_t recovery_drops = 0;      // objects unlinked by open()
    uint64_t recovery_tmp_swept = 0;  // tmp files removed by open()
    uint64_t adopted_objects = 0;     // copies that are write-back buffers now
    uint64_t recovery_rekeyed = 0;    // objects renamed from their "path@st_dev" key by open()
    uint64_t linked = 0;              // names cached by linkCopy(), without copying
  };
  Stats stats() const;

  // ---- promoter -------------------------------------------------------
  // One promotion's tmp file. Destroying it without publish() removes the tmp
  // file and ends the promotion. Must not outlive its store.
  class Pending {
   public:
    ~Pending();
    Pending(const Pending&) = delete;
    Pending& operator=(const Pending&) = delete;
    int fd() const { return fd_; }
    const std::string& relPath() const { return rel_path_; }
    // "<cache dir>/tmp/<name>", for messages.
    const std::string& tmpPath() const { return tmp_display_; }
    bool direct() const { return direct_; }

   private:
    friend class CacheStore;
    Pending() = default;
    CacheStore* store_ = nullptr;
    std::string rel_path_, tmp_name_, tmp_display_;
    uint64_t generation_ = 0;
    uint64_t reserved_ = 0;
    int fd_ = -1;
    bool direct_ = false;
    bool done_ = false;
  };
  // Starts a promotion of rel_path: kIo while the disk is failed (health());
  // kBusy if one is in flight; kNoSpace if
  // expected_size can never fit under the high watermark, or room cannot be
  // made for it now (evicting down to the low watermark; the room stays
  // reserved until publish or abandon); kInvalidArgument if rel_path is longer
  // than the cache file system holds in an xattr (ext4: about 4 KiB), found
  // before anything is copied. The tmp file is
  // opened O_WRONLY, with O_DIRECT when asked and the file system accepts it.
  Result<std::unique_ptr<Pending>> beginPromotion(const std::string& rel_path,
                                                  uint64_t expected_size, bool direct_io);
  // Makes the tmp file the object for rel_path, copied from a remote with
  // validator `v` and content checksum `checksum` (xxh3-64). kStale if
  // rel_path was invalidated since beginPromotion; kNoSpace if room cannot be
  // made under the high watermark; kCorrupt if the file's size is not v.size.
  // The Pending is consumed either way.
  Status publish(std::unique_ptr<Pending> pending, const Validator& v, uint64_t checksum);

  // Caches rel_path without copying a byte, when another name (a hard link,
  // link(2)) of the same remote file is cached from exactly the remote state
  // `v` describes: all five fields equal, so the same inode of the same live
  // mount (st_dev changes at a remount, so names cached before one are not
  // linked to names cached after it) with the same size, mtime and ctime.
  // The sibling's object file gets rel_path in its path xattr list, is
  // link(2)ed under rel_path's key (through tmp/ and a rename, as publish())
  // and rel_path joins its group (see the header comment). Call it only with
  // a validator read from the remote as a copy's `before` would be.
  // kNotFound: no such sibling, or the path list would be longer than an
  // xattr of the cache's file system holds (copy it instead); kBusy: rel_path
  // is being promoted or written through the mount; kStale: the sibling or
  // rel_path changed meanwhile; kIo while the disk is failed; errno errors of
  // setxattr, link, rename.
  Status linkCopy(const std::string& rel_path, const Validator& v);

  // True when rel_path is cached with a copy that servesFor(copy, v).
  bool isCached(const std::string& rel_path, const Validator& v) const;

  // ---- operations and policy -------------------------------------------
  // Explicit eviction (CLI `evict`): kNotFound if not cached, kBusy if pinned.
  // An open copy stays readable by its holders until they close it.
  Status evict(const std::string& rel_path);
  // The policy's eviction of a victim: kNotFound if not cached, kBusy if pinned
  // or open (the watermarks' rule: a copy in use is never evicted to make room).
  Status evictIdle(const std::string& rel_path);

  // The order the watermarks evict in: these paths first, coldest first, then
  // whatever they do not name, least recently opened first; pinned and open
  // copies never. Returns every path whose copy left the store since the
  // previous call, whatever took it (the watermarks, evict, evictIdle, verify
  // and the scrub, invalidate, a stale open), so the policy's books follow.
  // Before the first call and after clearEvictionOrder(), the watermarks evict
  // least recently opened first, and nothing is recorded.
  std::vector<std::string> updateEvictionOrder(const std::vector<std::string>& coldest_first);
  void clearEvictionOrder();
  // Evicts down to the low watermark when above the high one (e.g. after the
  // capacity shrank). Returns the bytes freed.
  uint64_t enforceWatermarks();
  void setCapacity(uint64_t capacity_bytes);

  // Re-reads the object, recomputes its checksum and drops it on mismatch
  // (kCorrupt). kNotFound if not cached. `read_hook`, when given, is called
  // with each chunk's size before reading it (pacing); false cancels (kBusy).
  Status verify(const std::string& rel_path,
                const std::function<bool(uint64_t)>& read_hook = nullptr);
  struct VerifyReport {
    uint64_t checked = 0, dropped = 0, bytes = 0;
  };
  VerifyReport verifyAll(const std::function<bool(uint64_t)>& read_hook = nullptr);

  struct ObjectSummary {
    std::string rel_path;
    std::string object_path;  // relative to the cache dir: objects/ab/cdef...
    Validator validator;
    uint64_t checksum;
    uint64_t allocated_bytes;
    int64_t last_open_ns;
    bool pinned;
    bool open;
    uint64_t links = 1;       // names sharing this object file (hard links of one remote file)
    uint64_t object_ino = 0;  // st_ino of the object file in the cache's file system
  };
  // One summary per name; names of one shared object each report its whole
  // allocated_bytes (stats().used_bytes counts it once).
  std::vector<ObjectSummary> list() const;

  // objects/ab/cdef... relative to the cache dir, whether cached or not.
  std::string objectPathFor(const std::string& rel_path) const;
  const std::string& dir() const { return opts_.dir; }

 private:
  struct Entry {
    std::string key;  // 32 hex digits
    Validator validator;
    uint64_t checksum = 0;
    uint64_t allocated = 0;
    int64_t last_open_ns = 0;
    uint64_t serial = 0;  // tells a re-published object from the one before
    uint64_t obj_ino = 0;  // the object file's st_ino in the cache's file system
  };
  struct InFlight {
    uint64_t generation = 0;  // bumped by invalidate(); checked at publish
    uint64_t token = 0;       // which Pending owns the record
  };

  explicit CacheStore(const CacheStoreOptions& options);
  Status init();
  Status recover();
  // Steps of recover(), publish() and verify(); they require mu_.
  Status recoverFanLocked(int fan_fd, const std::string& fan);
  Status commitLocked(Pending& p, const std::string& key, const Validator& v, uint64_t checksum,
                      uint64_t allocated, uint64_t obj_ino);
  struct VerifyTarget;
  Status openForVerifyLocked(const std::string& rel_path, VerifyTarget* t);
  void abandon(Pending& p);
  // relabel: first set the path xattr to rel_path alone (an adopted shared object).
  Status writeDirtyMark(const std::string& obj, const std::string& rel_path, const Validator& base,
                        bool relabel = false);
  // Requires mu_. Moves objects/<obj> to lost+found/ and logs why.
  void keepAsideLocked(const std::string& obj, const std::string& rel_path, const std::string& why);
  std::string keyOf(const std::string& rel_path) const;
  // The key rel_path had when the remote identity was "path@st_dev" (before
  // keys left the device out), for the device the copy was made on.
  std::string legacyKeyOf(const std::string& rel_path, uint64_t dev) const;
  // Renames objects/<fan>/<name> to rel_path's key; false if it cannot.
  bool rekeyLocked(int fan_fd, const std::string& name, const std::string& key);
  // The following require mu_.
  // An object it cannot move aside or unlink (a failing disk) leaves the index
  // all the same and is kept in undead_ for probeHealth() to unlink; *left,
  // when given, says why.
  // Drops rel_path and every name sharing its object (its group).
  void dropLocked(const std::string& rel_path, const char* why, std::string* left = nullptr);
  // One name out of objects/ and the index; its bytes are left to the caller.
  void dropNameLocked(const std::string& rel_path, const char* why, std::string* left);
  // Every index_ insert and erase goes through these (by_remote_ follows).
  void indexLocked(const std::string& rel_path, Entry e);
  void unindexLocked(std::unordered_map<std::string, Entry>::iterator it);
  // The group of rel_path's object (names sharing it), or nullptr when alone.
  const std::vector<std::string>* linksOfLocked(const std::string& rel_path, const Entry& e) const;
  // Whether any name of rel_path's group is pinned (or open, with `open`).
  bool groupHeldLocked(const std::string& rel_path, const Entry& e, bool open) const;
  // recover()'s last step: names that are links of one object file form a group.
  void groupLinksLocked();
  // linkCopy()'s steps.
  struct LinkPlan;
  Status planLinkLocked(const std::string& rel_path, const Validator& v, LinkPlan* plan);
  Status linkObjectFile(const LinkPlan& plan);
  Status commitLinkLocked(const LinkPlan& plan);
  Status publishSteps(std::unique_ptr<Pending> pending, const Validator& v, uint64_t checksum);
  // Unlinks what dropLocked() moved aside. Without mu_: unlinking a large,
  // fragmented file can take a while, and lookups must not wait for it.
  void buryDead();
  struct BuryOnExit {  // declare before taking mu_, so it runs after releasing it
    CacheStore* store;
    ~BuryOnExit() { store->buryDead(); }
  };
  void invalidateLocked(const std::string& rel_path);
  Status makeRoomLocked(uint64_t incoming, std::string* why);
  uint64_t evictLocked(uint64_t target_used);
  Status savePinsLocked();
  bool isOpenLocked(const std::string& rel_path) const;

  CacheStoreOptions opts_;
  int dir_fd_ = -1, objects_fd_ = -1, tmp_fd_ = -1, lock_fd_ = -1;

  mutable std::mutex mu_;  // leaf lock; see the header comment
  std::unordered_map<std::string, Entry> index_;
  std::unordered_map<std::string, Entry> adopted_;  // see adopt(); not in index_
  // Groups: object st_ino -> the names linked to it, for objects with two
  // names or more (see the header comment).
  std::unordered_map<uint64_t, std::vector<std::string>> links_;
  // The remote file (st_dev, st_ino) each name was cached from -> the names:
  // linkCopy()'s search for a sibling.
  struct RemoteFileHash {
    size_t operator()(const std::pair<uint64_t, uint64_t>& k) const {
      return std::hash<uint64_t>{}(k.first * 0x9e3779b97f4a7c15ull ^ k.second);
    }
  };
  std::unordered_multimap<std::pair<uint64_t, uint64_t>, std::string, RemoteFileHash> by_remote_;
  // Serialises linkCopy()'s rewrite of a shared object's path list; taken
  // before mu_, never under it.
  std::mutex link_mu_;
  struct DirtyFound {
    std::string rel_path, obj;  // obj: "ab/cdef..." under objects/
    Validator base;
  };
  std::vector<DirtyFound> dirty_found_;  // by recover(), for recoverDirty()
  bool keepAdoptedLocked(const DirtyFound& d);
  std::string writeBackAtStart(fuse::RemoteCalls& remote, int remote_root_fd, int obj_fd,
                               const DirtyFound& d, DirtyRecovery& r, bool& hung);
  std::unordered_map<std::string, InFlight> in_flight_;
  std::unordered_map<std::string, int> opens_;
  std::unordered_map<std::string, int> writers_;
  std::vector<std::string> graveyard_;  // dropped objects moved into tmp/, to unlink
  std::vector<std::string> dropped_;    // their paths, for the drop listener
  std::unordered_set<std::string> undead_;  // "ab/cdef..." dropped but not unlinked (dropLocked)
  std::unordered_set<std::string> pins_;
  // From updateEvictionOrder(): path -> place in the policy's order.
  std::unordered_map<std::string, size_t> eviction_rank_;
  bool eviction_order_set_ = false;
  std::vector<std::string> removed_;  // every drop since the last updateEvictionOrder()
  uint64_t used_bytes_ = 0;
  uint64_t reserved_bytes_ = 0;  // sum of the reservations of promotions in flight
  uint64_t next_serial_ = 1;
  Stats stats_{};
  // Held shared while the listener runs (outside mu_), exclusively to change it.
  std::shared_mutex listener_mu_;
  DropListener drop_listener_;  // guarded by listener_mu_

  std::atomic<bool> healthy_{true};
  mutable std::mutex health_mu_;  // leaf; guards health_
  Health health_;
};

}  // namespace hotshard
