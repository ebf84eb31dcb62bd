#include "fuse/backing.h"

#include <fcntl.h>

namespace hotshard::fuse {

bool opensForWrite(int open_flags) {
  return (open_flags & O_ACCMODE) != O_RDONLY || (open_flags & O_TRUNC);
}

bool sameRemoteObject(const struct stat& a, const struct stat& b) {
  return a.st_size == b.st_size && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec && a.st_ctim.tv_sec == b.st_ctim.tv_sec &&
         a.st_ctim.tv_nsec == b.st_ctim.tv_nsec && a.st_ino == b.st_ino && a.st_dev == b.st_dev;
}

const char* backingChoiceName(BackingChoice choice) {
  switch (choice) {
    case BackingChoice::kShareOpen: return "share-open";
    case BackingChoice::kRetire: return "retire";
    case BackingChoice::kRefuseWrite: return "refuse-write";
    case BackingChoice::kOpenCache: return "open-cache";
    case BackingChoice::kOpenRemote: return "open-remote";
  }
  return "unknown";
}

namespace {
// A read-only open with a path and attributes to validate a copy against.
bool copyCandidate(const BackingFacts& f) {
  return f.cache_hooks && !f.for_write && f.remote_attrs_known;
}
}  // namespace

BackingChoice chooseBacking(const BackingFacts& f) {
  if (f.backing_open && f.backing_is_cache) {
    // The open copy cannot serve a writer, nor a reader that must see the
    // remote as it is now: one backing per inode, so a new inode it is.
    if (f.for_write) return BackingChoice::kRetire;
    if (copyCandidate(f) && !f.open_copy_current) return BackingChoice::kRetire;
  }
  if (f.backing_open) {
    if (f.for_write && !f.backing_writable) return BackingChoice::kRefuseWrite;
    return BackingChoice::kShareOpen;
  }
  if (copyCandidate(f) && f.valid_copy) return BackingChoice::kOpenCache;
  return BackingChoice::kOpenRemote;
}

bool backingWantsCopy(const BackingFacts& f) { return !f.backing_open && copyCandidate(f); }

}  // namespace hotshard::fuse
