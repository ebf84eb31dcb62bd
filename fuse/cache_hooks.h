// What fuse/ asks of the cache: a valid local copy to pass reads through to, an
// invalidation before anything through the mount changes a file, and the life
// of a copy that writers joined (docs/cache.md "One file, one truth"). daemon/
// implements it over the CacheStore; fuse/ knows nothing else of the cache.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <string>

namespace hotshard::fuse {

// What an operation through the mount did to a file, told to invalidate(): the
// daemon records it into traces (policy/trace.h flags) so that the simulator
// invalidates its copy at the same point.
struct Change {
  enum class Kind {
    kTruncate,  // truncate/ftruncate; new_size is the size it is cut or grown to
    kUnlink,    // unlinked, or replaced by a rename onto its name
    kRename,    // renamed away from this name
    kWrite,     // content changed in place (fallocate)
  };
  Kind kind;
  std::uint64_t new_size = 0;  // bytes; kTruncate only
};

class CacheHooks {
 public:
  virtual ~CacheHooks() = default;
  // An O_RDWR fd of a copy of rel_path whose validator equals `remote`, or -1
  // (read-write so that a writer joining it can share it: see adoptCopy).
  // A copy handed out counts as open until releaseCached(rel_path).
  virtual int openCached(const std::string& rel_path, const struct stat& remote) = 0;
  virtual void releaseCached(const std::string& rel_path) = 0;
  // An fd of a copy that openCached handed out was kept after releaseCached:
  // is the file it refers to (`copy`: its fstat) still the store's copy of
  // rel_path, valid for `remote`? If so it counts as open again, as from
  // openCached, until releaseCached(rel_path).
  virtual bool reopenCached(const std::string& rel_path, const struct stat& remote,
                            const struct stat& copy) = 0;
  // Whether openCached(rel_path, remote) would hand out a copy; counts nothing.
  virtual bool hasValidCopy(const std::string& rel_path, const struct stat& remote) = 0;
  // Whether fetchCopy may make a copy (the daemon is in a cluster): only then
  // does a read-only open of a file with no valid copy call it.
  virtual bool fetchesCopies() const { return false; }
  // A read-only open of rel_path found no valid copy, after the caller passed
  // the kernel's permission check (default_permissions) and the remote file
  // opened for reading. The cache may make one now (from a peer, or from the
  // remote when this host is the file's owner; docs/cluster.md), bounded in
  // time; true when a copy valid for `remote` is in the store afterwards.
  // Never fails the open: without a copy it reads the remote as before.
  virtual bool fetchCopy(const std::string& rel_path, const struct stat& remote) {
    (void)rel_path;
    (void)remote;
    return false;
  }
  // Before a truncate, unlink or rename of rel_path through the mount (`change`
  // says which). Must not fail the operation.
  virtual void invalidate(const std::string& rel_path, const Change& change) = 0;
  // Around every handle open for writing (passthrough writes never reach the
  // daemon): no copy of rel_path is served or made in between.
  virtual void beginWrite(const std::string& rel_path) = 0;
  virtual void endWrite(const std::string& rel_path) = 0;
  virtual void invalidateTree(const std::string& rel_dir) = 0;
  // A regular file was opened on `backing` (the remote file or the cache copy):
  // what lets the probes' (dev, ino) counts be attributed to rel_path, and heat
  // when the probes are unavailable.
  virtual void opened(const std::string& rel_path, const struct stat& backing, bool from_cache,
                      bool for_write) = 0;

  // A writer joins the open copy of rel_path (`copy`: its fstat, to tell it from
  // a copy published since): from now on it is the inode's write-back buffer.
  // Before this returns true the copy is marked dirty on the cache disk against
  // `base` (the remote's attributes, which the copy's bytes equal; what crash
  // recovery checks before writing it back) and it is out of the store's normal
  // life: never evicted, scrubbed, handed to another open or replaced. false:
  // the store no longer holds that file (dropped meanwhile) or the mark failed.
  virtual bool adoptCopy(const std::string& rel_path, const struct stat& copy,
                         const struct stat& base) = 0;
  // The remote holds the adopted copy's bytes now, with attributes `base`.
  virtual void copyWrittenBack(const std::string& rel_path, const struct stat& base) = 0;
  // The inode's last open closed (releaseCached comes first). written_back: the
  // remote has the copy's bytes and the copy leaves the store; false: the last
  // write-back failed, and the copy is kept aside (lost+found/) with an error.
  virtual void releaseAdopted(const std::string& rel_path, bool written_back) = 0;
  // After a takeover (docs/restart.md): an O_RDWR fd of rel_path's copy that a
  // predecessor's writer had adopted and the store kept as adopted at its start,
  // or -1 (none: the store recovered it as after a crash). The inode takes it as
  // its write-back buffer again, as after adoptCopy.
  virtual int openAdoptedCopy(const std::string& rel_path) {
    (void)rel_path;
    return -1;
  }
};

}  // namespace hotshard::fuse
