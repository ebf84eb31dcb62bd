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
    case BackingChoice::kAdoptCopy: return "adopt-copy";
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

bool olderThan(const struct timespec& a, const struct timespec& b) {
  return a.tv_sec < b.tv_sec || (a.tv_sec == b.tv_sec && a.tv_nsec < b.tv_nsec);
}
}  // namespace

BackingChoice chooseBacking(const BackingFacts& f) {
  if (f.backing_open && f.backing_is_cache && !f.copy_adopted) {
    // Another host changed the remote under the open copy: an open must see
    // that (close-to-open), and the copy cannot show it; a new inode it is.
    bool moved_on = f.cache_hooks && f.remote_attrs_known && !f.open_copy_current;
    if (moved_on) return BackingChoice::kRetire;
    // A writer joins the copy (one backing per inode): it becomes the inode's
    // write-back buffer, also when the path is gone (the copy still names it).
    if (f.for_write) return BackingChoice::kAdoptCopy;
  }
  if (f.backing_open) {
    if (f.for_write && !f.backing_writable) return BackingChoice::kRefuseWrite;
    return BackingChoice::kShareOpen;
  }
  if (copyCandidate(f) && f.valid_copy) return BackingChoice::kOpenCache;
  return BackingChoice::kOpenRemote;
}

bool backingWantsCopy(const BackingFacts& f) { return !f.backing_open && copyCandidate(f); }

bool stampSeesLaterWrites(const struct stat& stamp, const struct timespec& coarse_before) {
  return olderThan(stamp.st_mtim, coarse_before);
}

bool copyUnchanged(const struct stat& a, const struct stat& b) {
  return a.st_size == b.st_size && a.st_ino == b.st_ino && a.st_dev == b.st_dev &&
         !olderThan(a.st_mtim, b.st_mtim) && !olderThan(b.st_mtim, a.st_mtim);
}

}  // namespace hotshard::fuse
