// Clocks, read in one place. Wall time (CLOCK_REALTIME) compares with file
// timestamps (mtime, ctime); monotonic time (CLOCK_MONOTONIC) measures intervals
// and never jumps. policy/ takes time as an argument and never reads a clock.
#pragma once

#include <time.h>

#include <cstdint>

namespace hotshard {

inline int64_t timespecNs(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// Nanoseconds since the epoch (clock_gettime(CLOCK_REALTIME)).
inline int64_t wallNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return timespecNs(ts);
}

// Nanoseconds since boot (clock_gettime(CLOCK_MONOTONIC)).
inline int64_t monotonicNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return timespecNs(ts);
}

inline double monotonicSeconds() { return static_cast<double>(monotonicNs()) * 1e-9; }

}  // namespace hotshard
