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
    kStrict,     // revalidate on every open: no kernel caching, fresh fstat per open
    kTtl,        // trust metadata for ttl_seconds
    kImmutable,  // files never change in place: trust metadata (almost) forever
  };
  Mode mode = Mode::kStrict;
  double ttl_seconds = 0;  // kTtl only

  static Result<Consistency> parse(const std::string& text);  // strict | ttl=N | immutable
  std::string toString() const;
  double entryTimeout() const;
  double attrTimeout() const;
  double negativeTimeout() const;
  bool keepCache() const { return mode != Mode::kStrict; }

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
