// fuse/backing: which file an open of a regular file passes through to: the
// cache's valid copy, the remote file, or neither ("retire this inode and
// answer ESTALE"). A pure decision over plain facts, so every rule can be
// tested without a mount; FileSystem::acquireBacking gathers the facts, asks
// chooseBacking(), and carries the answer out.
//
// The kernel rules it follows:
//  * one backing file per FUSE inode, shared by all its opens: the kernel
//    refuses a different one for an inode that has one open with EBUSY
//    (fs/fuse/iomode.c, fuse_inode_uncached_io_start, used by passthrough.c);
//  * so an open that the open backing cannot serve (a writer while the backing
//    is the read-only cache copy, or a reader that must not see a copy the
//    remote has moved past) retires the inode and answers ESTALE: the VFS
//    retries the open once with a fresh lookup (fs/namei.c, LOOKUP_REVAL),
//    which gets a new inode and a backing of its own; the old inode's readers
//    keep their open-time copy;
//  * O_TRUNC writes too, and the kernel drops it from f_flags after the open
//    (fs/open.c, do_dentry_open), so FUSE_RELEASE does not carry it: whether an
//    open wrote is remembered in its fh.
#pragma once

#include <sys/stat.h>

namespace hotshard::fuse {

// O_WRONLY, O_RDWR, or O_TRUNC in any mode.
bool opensForWrite(int open_flags);

// The cache copy was made from the remote as `now` describes it: the same
// size, mtime and ctime (ns), inode and device.
bool sameRemoteObject(const struct stat& copy_made_from, const struct stat& now);

// What the decision looks at. All of it is read by the caller before the
// decision, the inode's open state under Inode::mu.
struct BackingFacts {
  bool for_write = false;  // opensForWrite(flags)
  // The inode's open state: a backing file is open (shared by every open of
  // the inode), whether it is the cache's copy, and whether it was opened
  // read-write.
  bool backing_open = false;
  bool backing_is_cache = false;
  bool backing_writable = false;
  // Cache hooks are installed and the inode's path under the remote is known.
  bool cache_hooks = false;
  // Remote attributes to validate a copy against were had, as the consistency
  // mode allows (strict: a fresh fstat; ttl: remembered ones younger than the
  // ttl, else a fresh fstat; immutable: remembered ones). Looked up for
  // read-only opens only.
  bool remote_attrs_known = false;
  // backing_is_cache: the open copy was made from the remote as those
  // attributes describe it now (sameRemoteObject).
  bool open_copy_current = false;
  // The store holds a copy valid for those attributes and no writer fence is up
  // on the path (CacheHooks::openCached gives -1 between beginWrite and
  // endWrite of any writer of the path, so open writers mean false).
  bool valid_copy = false;
};

enum class BackingChoice {
  kShareOpen,    // reuse the inode's open backing file
  kRetire,       // retire the inode, count a cache conflict, answer ESTALE
  kRefuseWrite,  // the open backing is read-only: answer its read-write errno (else EACCES)
  kOpenCache,    // open the valid cache copy as the backing file
  kOpenRemote,   // open the remote file: read-write, or read-only if refused and !for_write
};

const char* backingChoiceName(BackingChoice choice);

// Pure: no syscalls, no clocks, no locks.
BackingChoice chooseBacking(const BackingFacts& facts);

// Whether valid_copy can change the choice, i.e. whether it is worth asking
// the store (CacheHooks::openCached counts a copy it hands out as open, so it is
// asked only then). Pure.
bool backingWantsCopy(const BackingFacts& facts);

}  // namespace hotshard::fuse
