// Trace-driven simulation of a policy, and Belady's OPT beside it.
//
// Each request: recordAccess(); a hit if the object is resident, else admit() (a
// promotion: its size counts as bytes written to NVMe). Requests flagged kFlagWrite
// are not reads: they invalidate the cached copy (remove()).
//
// OPT here is size-aware Belady with bypass: on a miss the object is admitted only if
// it is used again, and only by evicting residents whose next use is further away than
// its own (furthest first); otherwise it bypasses the cache. With unit sizes this is
// exactly Belady's optimal policy; with variable sizes optimal caching is NP-hard and
// this is a heuristic reference point (it can be beaten, e.g. by keeping many small
// objects instead of one large one), not a strict upper bound.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "policy/trace.h"

namespace hotshard::policy {

struct SimResult {
  std::string policy;  // name;k=v... as built
  std::uint64_t capacity = 0;
  std::uint64_t requests = 0;
  std::uint64_t hits = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_hit = 0;
  std::uint64_t promotions = 0;
  std::uint64_t promoted_bytes = 0;  // NVMe writes
  std::uint64_t evictions = 0;

  double hitRatio() const noexcept { return requests ? double(hits) / double(requests) : 0.0; }
  double byteHitRatio() const noexcept {
    return bytes_read ? double(bytes_hit) / double(bytes_read) : 0.0;
  }
};

// Runs `reader` from where it stands to its end through `policy`. Errors are the
// reader's (Errc::kCorrupt for a malformed trace, kIo for a failing stream).
Result<SimResult> simulate(TraceReader& reader, Policy& policy);

// Two passes (rewinds `reader` in between): next uses, then the simulation. Also
// Errc::kUnsupported for traces of 4G requests or more (next uses are 32-bit).
Result<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity);

}  // namespace hotshard::policy
