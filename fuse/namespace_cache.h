// fuse/namespace_cache: the remote's names and attributes, kept on the cache
// disk across restarts (metadata shielding, as CernVM-FS's catalogs and
// JuiceFS's metadata cache do), for the immutable and ttl consistency modes
// only: strict never reads it (the daemon deletes it at a strict start, since
// writes through a strict mount do not update it).
//
// What it holds: one record per remote path learnt from the remote (lookup,
// getattr, a complete listing), keyed by (parent path, NUL, name) as bytes, the
// root as "\0"; a record is a stat subset (mode, nlink, uid, gid, rdev, size,
// blocks, atime/mtime/ctime with ns, st_ino) and the CLOCK_REALTIME second it
// was learnt; a directory's record also says whether its listing is complete
// (every child has a record) and its mtime/ctime when it was listed (the
// validator, as the NFS client's change attribute: fs/nfs/dir.c,
// nfs_check_verifier). A record from a listing alone (plain readdir) knows the
// name, type and inode number only (attrs_known false): a lookup of it still
// asks the remote. Bytes per entry: docs/cache.md ("The namespace").
//
// Store: LMDB (liblmdb, a copy-on-write B+tree in one mmap'd file; readers never
// block and never see a partial transaction), <cache>/namespace.mdb and its
// -lock file, mode 0600. Commits skip fsync (MDB_NOSYNC), so that no reply
// waits for the disk: a process crash loses nothing (committed pages are in the
// page cache), and against a system crash a marker (namespace.mdb-dirty, the
// boot id) is written, fsync'd, before the first unsynced commit and removed
// by the background mdb_env_sync once a whole period passed without commits
// (so a burst of commits pays that fsync once), or at close; a start that finds a marker of another boot
// drops the whole database ("may be torn"). A database of another remote, mode
// or format, or one LMDB cannot open or read, is dropped with a log line too,
// never served. Bounded: kMapBytes; a full map drops every record.
//
// Freshness (the caller's): immutable never expires a record; ttl revalidates
// one older than the ttl. Changes through the mount call drop() before the
// remote call and after it: the record, its subtree and the parent's listing
// are gone (committed) before the reply. put() and putListing() take the epoch()
// read before the remote call whose answer they record, and record nothing if
// a drop() came in between (its answer may predate that change).
//
// Threads: every method is thread-safe; writes are serialized (one LMDB write
// transaction at a time), reads take a read-only transaction each.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"

struct MDB_env;

namespace hotshard::fuse {

struct NamespaceEntry {
  // st_dev is not kept (0 here): a FUSE or NFS remote gets a new one at each
  // mount. st_ino is the remote's as learnt, shown to stat(2) as is.
  struct stat attr {};
  bool attrs_known = true;  // false: name, type and st_ino from a listing only
  double learnt_at = 0;     // CLOCK_REALTIME seconds
  // Directories: every child has a record, as of a listing taken when the
  // directory's mtime and ctime were listed_mtime and listed_ctime.
  bool listed = false;
  struct timespec listed_mtime {};
  struct timespec listed_ctime {};
  double listed_at = 0;  // CLOCK_REALTIME seconds (whole) when that listing was taken
};

struct NamespaceChild {
  std::string name;
  NamespaceEntry entry;
};

struct NamespaceCacheOptions {
  std::string path;       // the database file (<cache>/namespace.mdb)
  std::string remote_id;  // the remote root's canonical path: a record belongs to it
  std::string mode;       // "immutable" or "ttl": a database of the other is dropped
  // Seconds between background syncs (sync()); 0: none (tests call sync()).
  double sync_seconds = 1.0;
};

class NamespaceCache {
 public:
  static constexpr uint64_t kMapBytes = uint64_t{4} << 30;  // LMDB map: the file's bound

  // Opens (or creates) the database; drops one that does not belong to
  // opts (remote_id, mode, format), may be torn, or cannot be read, with a log
  // line (warn), and starts afresh. Errors: the cache directory refuses the
  // file (errno of open/mdb_env_open).
  static Result<std::unique_ptr<NamespaceCache>> open(const NamespaceCacheOptions& opts);
  // Deletes the database files at path (a strict start, `--namespace-reset`):
  // true when there was one.
  static bool remove(const std::string& path);
  ~NamespaceCache();  // syncs and closes
  NamespaceCache(const NamespaceCache&) = delete;
  NamespaceCache& operator=(const NamespaceCache&) = delete;

  // rel: the path relative to the remote root, "" for the root.
  std::optional<NamespaceEntry> get(const std::string& rel) const;
  // The children of a directory whose listing is complete (in key order, i.e.
  // by name as bytes); nullopt when its listing is not.
  std::optional<std::vector<NamespaceChild>> listing(const std::string& dir) const;

  // Changes through the mount: epoch() moves on, then the records of rel and
  // below it, and the listing flag of its parent, are deleted and committed.
  // Errors: LMDB's (the caller logs; the record may then be served stale,
  // so it must not proceed with the change: see FileSystem).
  uint64_t epoch() const { return epoch_.load(); }
  Status drop(const std::string& rel);
  // Records what the remote said of rel when epoch() was `epoch` (false, and
  // nothing recorded, when a drop() came since). A directory keeps its
  // listing flag while its validator (mtime, ctime) is unchanged; a name new
  // to a directory with a complete listing clears that listing's flag.
  bool put(const std::string& rel, const NamespaceEntry& entry, uint64_t epoch);
  // A complete listing of dir (`dir_attr`: its fstat when the listing began):
  // the dir's record is written with listed set; children without a record (or
  // one of another type) get a listing-only record; records of names no longer
  // listed are deleted with their subtrees.
  bool putListing(const std::string& dir, const struct stat& dir_attr,
                  const std::vector<NamespaceChild>& children, uint64_t epoch);

  // Records now; what was dropped at open and why ("" when nothing).
  size_t size() const;
  const std::string& droppedReason() const { return dropped_reason_; }
  // The background thread's work, every sync_seconds: the unsynced commits go
  // to disk, and the dirty marker once a whole period passed without a commit.
  void sync();
  // Both at once (at close, and for tests).
  void syncNow();

 private:
  struct Dbs;
  NamespaceCache() = default;
  Status openEnv(const NamespaceCacheOptions& opts);
  Status checkMeta(const NamespaceCacheOptions& opts);
  Status markDirty();  // under write_mu_
  void clearFullLocked();  // a full map: every record goes; under write_mu_
  void syncLoop(double period_seconds);
  void startSyncer(double period_seconds);

  std::string path_;
  MDB_env* env_ = nullptr;
  unsigned attrs_dbi_ = 0;
  unsigned meta_dbi_ = 0;
  std::string dropped_reason_;
  std::atomic<uint64_t> epoch_{0};
  std::mutex write_mu_;  // one write transaction at a time; before sync_mu_
  bool dirty_ = false;   // a commit since the last sync; guarded by write_mu_
  uint64_t commits_ = 0;  // guarded by write_mu_
  uint64_t synced_commits_ = 0;  // commits_ at the previous sync(); guarded by write_mu_
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;
  bool stopping_ = false;  // guarded by sync_mu_
  std::thread syncer_;
};

// The key of rel: parent path, NUL, name ("\0" for the root). Exposed for tests.
std::string namespaceKey(const std::string& rel);

}  // namespace hotshard::fuse
