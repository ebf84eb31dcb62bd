// Scrubber: re-reads every cached object in the background at a bounded rate
// (bytes/second) and drops those whose content no longer matches the checksum
// recorded at publish (bit rot, a torn write the file system did not report,
// a hand edit). One pass over the store, then a pause, then again. Paused while
// the cache disk is failed (CacheStore::health()).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include "daemon/cache_store.h"
#include "daemon/rate_limiter.h"

namespace hotshard {

struct ScrubberOptions {
  uint64_t bytes_per_sec = 64ull << 20;  // 0 = unlimited
  std::chrono::milliseconds pause_between_passes{std::chrono::hours(24)};
};

class Scrubber {
 public:
  Scrubber(CacheStore* store, ScrubberOptions options);
  ~Scrubber();  // stop()
  void start();
  // Stops within one chunk's time; idempotent.
  void stop();

  struct Stats {
    uint64_t passes = 0, objects_checked = 0, objects_dropped = 0, bytes_read = 0;
  };
  Stats stats() const;

 private:
  void loop();
  // Waits while the store's disk is failed; false when stopping.
  bool waitForHealthyDisk();

  CacheStore* store_;
  ScrubberOptions opts_;
  TokenBucket bucket_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Stats stats_;
};

}  // namespace hotshard
