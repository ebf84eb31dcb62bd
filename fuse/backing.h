// fuse/backing: which file an open of a regular file passes through to: the
// cache's valid copy, the remote file, or neither ("retire this inode and
// answer ESTALE"). A pure decision over plain facts, so every rule can be
// tested without a mount; FileSystem::acquireBacking gathers the facts, asks
// chooseBacking(), and carries the answer out.
//
// The kernel rules it follows (fs/fuse/iomode.c, 6.9-6.18):
//  * one backing file per FUSE inode, shared by all its opens: the kernel
//    refuses a different one for an inode that has one open with EBUSY
//    (fuse_inode_uncached_io_start), and an open without FOPEN_PASSTHROUGH of
//    an inode that has a backing file (fuse_file_io_open); so a writer can get
//    neither a backing file of its own nor user-space I/O beside readers that
//    pass through to the cache copy;
//  * hence "one file, one truth" (docs/cache.md): a writer that arrives while
//    the cache copy is the inode's backing passes through to that copy too, and
//    the copy becomes the inode's write-back buffer (adopted: marked dirty on the
//    cache disk first, written back to the remote at flush, fsync, truncate and
//    the last release). One remote file stays one kernel inode, so every open
//    sees every write as soon as write() returns, and locks (kept on the kernel
//    inode) exclude across all opens;
//  * an open that must see a remote that another host changed under the open
//    copy (close-to-open, as NFS) retires the inode and answers ESTALE: the VFS
//    retries the open once with a fresh lookup (fs/namei.c, LOOKUP_REVAL),
//    which gets a new inode and a backing of its own; the old inode's opens
//    keep their open-time copy. An adopted copy is never retired: it holds
//    bytes the remote does not have yet;
//  * O_TRUNC writes too, and the kernel drops it from f_flags after the open
//    (fs/open.c, do_dentry_open), so FUSE_RELEASE does not carry it: whether an
//    open wrote is remembered in its fh.
#pragma once

#include <sys/stat.h>
#include <time.h>

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
  // backing_is_cache: a writer joined the copy, which is now the inode's
  // write-back buffer (holds bytes the remote may not have yet).
  bool copy_adopted = false;
  // Cache hooks are installed and the inode's path under the remote is known.
  bool cache_hooks = false;
  // Remote attributes to validate a copy against were had, as the consistency
  // mode allows (strict: a fresh fstat; ttl: remembered ones younger than the
  // ttl, else a fresh fstat; immutable: remembered ones). Looked up for every
  // open that the cache may concern.
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
  kAdoptCopy,    // a writer joins the open cache copy: it becomes the write-back buffer
  kRefuseWrite,  // the open backing is read-only: answer its read-write errno (else EACCES)
  kOpenCache,    // open the valid cache copy as the backing file
  kOpenRemote,   // open the remote file: read-write, or read-only if refused and !for_write
};

const char* backingChoiceName(BackingChoice choice);

// Pure: no syscalls, no clocks, no locks.
BackingChoice chooseBacking(const BackingFacts& facts);

// Write-back of an adopted copy is skipped when the copy did not change since
// the last one. Passthrough writes never reach the daemon, so the copy's own
// size and mtime tell (every data change sets mtime: write, truncate,
// fallocate, a shared mapping's page fault via file_update_time; ctime is no
// use, the dirty mark's xattr changes it): `stamp` is its fstat taken just
// before a write-back, `coarse_before` CLOCK_REALTIME_COARSE read just before
// that fstat. File systems stamp a change with the coarse clock (or finer,
// with multigrain timestamps, 6.13+), and skip the update when the time is the
// same as the one stored (inode_needs_update_time, fs/inode.c), so a later
// write is visible only if the stamp's mtime is older than the clock was at
// the fstat. Pure.
bool stampSeesLaterWrites(const struct stat& stamp, const struct timespec& coarse_before);
// The copy as fstat says now (size, mtime, inode) is the copy the stamp describes.
bool copyUnchanged(const struct stat& stamp, const struct stat& now);

// Whether valid_copy can change the choice, i.e. whether it is worth asking
// the store (CacheHooks::openCached counts a copy it hands out as open, so it is
// asked only then). Pure.
bool backingWantsCopy(const BackingFacts& facts);

}  // namespace hotshard::fuse
