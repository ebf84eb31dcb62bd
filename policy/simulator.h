// Trace-driven simulation of a policy, and Belady's OPT beside it.
//
// Each read: recordAccess(); a hit if the object is resident (and, when charged, its
// copy has finished), else admit() (a promotion: its size counts as bytes written to
// NVMe). Records that are not reads (trace.h isRead()): writes, truncates, unlinks and
// renames invalidate the cached copy (remove(), and a copy in flight is cancelled);
// repeated miss samples only add remote bytes.
//
// Two cost models:
//   charged (the default, SimOptions{}): what the daemon's promoter does
//     (daemon/promoter.h). A promotion is a copy of the whole object from the remote:
//     it starts when one of `promote_concurrency` copy slots is free (queued in order)
//     and takes size / (promote_rate / promote_concurrency) seconds of trace time. Reads
//     of the object before the copy ends are misses (served by the remote), and the copy's
//     own read is charged to remote_bytes. A copy that cannot start within max_backlog_s
//     fails (not charged; the policy's remove() is called). A copy cancelled by an
//     eviction or an invalidation is still charged whole (remote and NVMe bytes): the
//     conservative side.
//   instant (SimOptions{.instant = true}, the simulator before charging): a promotion is
//     done the moment it is decided and its copy costs nothing on the remote.
//
// OPT here is size-aware Belady with bypass: on a miss the object is admitted only if
// it is used again, and only by evicting residents whose next use is further away than
// its own (furthest first); otherwise it bypasses the cache. With unit sizes this is
// exactly Belady's optimal policy; with variable sizes optimal caching is NP-hard and
// this is a heuristic reference point (it can be beaten, e.g. by keeping many small
// objects instead of one large one), not a strict upper bound. Charged, OPT's copies
// take time like everyone's.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "policy/policy.h"
#include "policy/trace.h"

namespace hotshard::policy {

struct SimOptions {
  bool instant = false;                // promotions are instant and free (the old model)
  double promote_rate = 1073741824.0;  // bytes/s of trace time, all copies together, > 0
  unsigned promote_concurrency = 2;    // copies at once (daemon's promote_concurrency), > 0
  // A copy that could not start within this many seconds of trace time after it was
  // decided fails (the policy is told with remove(), as the daemon does when a promotion
  // fails): the queue stays bounded when a policy copies faster than the link. >= 0.
  double max_backlog_s = 30;
  // Reads per window of SimResult::windows; 0: no windows.
  std::uint64_t window_requests = 0;
};

// Figures of one window of consecutive reads.
struct SimWindow {
  std::uint64_t requests = 0;
  std::uint64_t hits = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_hit = 0;
  double byteHitRatio() const noexcept {
    return bytes_read ? double(bytes_hit) / double(bytes_read) : 0.0;
  }
};

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
  // Bytes fetched from the remote: the missed bytes (Request::bytes_missed) of reads that
  // were not hits, plus every promotion's copy when charged.
  std::uint64_t remote_bytes = 0;
  std::uint64_t misses_during_copy = 0;  // charged: reads of an object still being copied
  std::uint64_t cancelled_copies = 0;    // charged: copies ended early by eviction/invalidation
  std::uint64_t dropped_copies = 0;      // charged: promotions failed, queue past max_backlog_s
  std::vector<SimWindow> windows;        // SimOptions::window_requests reads each

  double hitRatio() const noexcept { return requests ? double(hits) / double(requests) : 0.0; }
  double byteHitRatio() const noexcept {
    return bytes_read ? double(bytes_hit) / double(bytes_read) : 0.0;
  }
};

// Runs `reader` from where it stands to its end through `policy`. Errors are the
// reader's (Errc::kCorrupt for a malformed trace, kIo for a failing stream).
// Errc::kInvalidArgument for options out of range.
Result<SimResult> simulate(TraceReader& reader, Policy& policy, const SimOptions& options);
// Instant model (SimOptions{.instant = true}): what the unit tests of policies use.
Result<SimResult> simulate(TraceReader& reader, Policy& policy);

// Two passes (rewinds `reader` in between): next uses, then the simulation. Also
// Errc::kUnsupported for traces of 4G requests or more (next uses are 32-bit).
Result<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity,
                              const SimOptions& options);
Result<SimResult> simulateOpt(TraceReader& reader, std::uint64_t capacity);  // instant

}  // namespace hotshard::policy
