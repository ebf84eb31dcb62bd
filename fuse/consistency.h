// fuse/consistency: how long the kernel may trust what the file system told it
// (entry, attribute and negative-entry timeouts, FOPEN_KEEP_CACHE), and how old
// the remote attributes may be that an open validates a cached copy against.
//
// Units: seconds (double), as fuse_entry_param and fuse_reply_attr take them.
// Errors: parse() returns Errc::kInvalidArgument naming the text it refused.
//
// Names (docs/user-guide.md, "Consistency modes"): immutable promises that a
// file's contents never change; names may. A new name answers lookup at once
// (negative entries are never cached there) and shows in listings from the next
// opendir; a removed or renamed-away name leaves listings at the next opendir
// and, from then on, lookups too (Linux >= 6.16). Directory listings are
// revalidated at each opendir against the directory's mtime and ctime, as the
// Linux NFS client revalidates its cached directory pages and dentries against
// the directory's change attribute (fs/nfs/dir.c, nfs_check_verifier).
#pragma once

#include <sys/stat.h>

#include <string>

#include "base/result.h"

namespace hotshard::fuse {

struct Consistency {
  enum class Mode {
    kStrict,     // close-to-open: every open revalidates; names and attrs kept ac/acdir
    kTtl,        // trust metadata for ttl_seconds
    kImmutable,  // files never change in place: trust metadata (almost) forever
  };
  // NFS's defaults, acregmin and acdirmin (nfs(5)).
  static constexpr double kDefaultAcSeconds = 3;
  static constexpr double kDefaultAcdirSeconds = 30;
  Mode mode = Mode::kStrict;
  double ttl_seconds = 0;  // kTtl only
  // kStrict only, seconds >= 0: how long the kernel keeps the names and
  // attributes of non-directories (ac) and of directories (acdir).
  double ac_seconds = kDefaultAcSeconds;
  double acdir_seconds = kDefaultAcdirSeconds;

  // strict[;ac=DURATION][;acdir=DURATION] | ttl=DURATION | immutable. `ac` sets
  // both timeouts (as NFS's actimeo), `acdir` then the directories' alone, in
  // either order; "policy;k=v" is the syntax of --policy too, and has no comma,
  // which mount(8) options would split.
  static Result<Consistency> parse(const std::string& text);
  std::string toString() const;  // parse(toString()) gives the same
  // The timeouts of an entry or attribute reply about an object with `attr`
  // (its st_mode and st_nlink), in seconds. In strict mode a non-directory
  // with several names (st_nlink > 1) gets an entry timeout of 0: an open's
  // path check (opensCheckPath) knows one name per object, the last looked up,
  // so each of its names is looked up again at each use.
  double entryTimeout(const struct stat& attr) const;
  double attrTimeout(const struct stat& attr) const;
  double negativeTimeout() const;
  bool keepCache() const { return mode != Mode::kStrict; }
  // Strict with names kept (ac or acdir > 0): the kernel may open a file through
  // a name it kept, so the open checks that its path still leads to the same
  // object on the remote, and ESTALE makes the kernel walk the path again
  // (fs/namei.c, do_filp_open: a retry with LOOKUP_REVAL).
  bool opensCheckPath() const {
    return mode == Mode::kStrict && (ac_seconds > 0 || acdir_seconds > 0);
  }

  // May an open validate a cached copy against the attributes remembered at
  // `remembered_at` (CLOCK_MONOTONIC seconds, 0 = never), rather than a fresh
  // fstat of the remote? Never in strict mode; in ttl mode while younger than
  // the ttl; in immutable mode always once known. Pure: `now` is passed in.
  bool trustsRememberedAttrs(double remembered_at, double now) const;

  // At an opendir: may the kernel keep the listing it cached (FOPEN_CACHE_DIR with
  // FOPEN_KEEP_CACHE), rather than read the directory again? Only outside strict
  // mode, while the directory's validator `now` (mtime, ctime, inode, device: its
  // fstat at this opendir) equals `listed`, the validator at the opendir that
  // began the cached listing, taken at `listed_at` (CLOCK_REALTIME seconds; 0 =
  // never), and only when the directory had then been unchanged for
  // kQuietListingSeconds: a change within the same timestamp tick as the listing
  // would leave the validator as it was (git's "racy" entries; file systems with
  // coarse timestamps). Pure.
  bool keepsListing(const struct stat& listed, double listed_at, const struct stat& now) const;
  static constexpr double kQuietListingSeconds = 1.0;
};

// Same directory, unchanged: inode, device, mtime and ctime (nanoseconds) equal.
bool sameDirectoryVersion(const struct stat& a, const struct stat& b);

}  // namespace hotshard::fuse
