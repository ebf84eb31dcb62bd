// fuse/consistency: how long the kernel may trust what the file system told it
// (entry, attribute and negative-entry timeouts, FOPEN_KEEP_CACHE), and how old
// the remote attributes may be that an open validates a cached copy against.
//
// Units: seconds (double), as fuse_entry_param and fuse_reply_attr take them.
// Errors: parse() returns Errc::kInvalidArgument naming the text it refused.
#pragma once

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
};

}  // namespace hotshard::fuse
