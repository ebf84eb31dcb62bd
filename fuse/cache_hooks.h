// What fuse/ asks of the cache: a valid local copy to pass reads through to, and
// an invalidation before anything through the mount changes a file. daemon/
// implements it over the CacheStore; fuse/ knows nothing else of the cache.
#pragma once

#include <sys/stat.h>

#include <string>

namespace hotshard::fuse {

class CacheHooks {
 public:
  virtual ~CacheHooks() = default;
  // An O_RDONLY fd of a copy of rel_path whose validator equals `remote`, or -1.
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
  // Before a truncate, unlink or rename of rel_path through the mount. Must not
  // fail the operation.
  virtual void invalidate(const std::string& rel_path) = 0;
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
};

}  // namespace hotshard::fuse
