// TokenBucket: a bytes/second budget shared by threads (promotion bandwidth,
// background scrub). Debt-based: acquire(n) always takes n tokens and sleeps
// off any deficit, so requests larger than the burst still pass, at the rate.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>

namespace hotshard {

class TokenBucket {
 public:
  // rate 0 = unlimited. burst: tokens that may accumulate while idle.
  explicit TokenBucket(uint64_t bytes_per_sec = 0, uint64_t burst_bytes = 1 << 20) {
    setRate(bytes_per_sec, burst_bytes);
  }

  void setRate(uint64_t bytes_per_sec, uint64_t burst_bytes) {
    std::lock_guard lock(mu_);
    rate_ = bytes_per_sec;
    burst_ = static_cast<double>(burst_bytes);
    tokens_ = burst_;
    last_ = Clock::now();
  }

  uint64_t rate() const {
    std::lock_guard lock(mu_);
    return rate_;
  }

  // Takes n tokens, sleeping off any deficit. Returns false (early) when
  // `cancelled()` turns true while waiting; wake() makes it look again.
  template <typename Pred>
  bool acquire(uint64_t n, Pred cancelled) {
    std::unique_lock lock(mu_);
    if (rate_ == 0) return !cancelled();
    refill();
    tokens_ -= static_cast<double>(n);
    if (tokens_ >= 0) return !cancelled();
    auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                    std::chrono::duration<double>(-tokens_ / rate_));
    while (!cancelled()) {
      if (cv_.wait_until(lock, until) == std::cv_status::timeout) return !cancelled();
    }
    return false;
  }

  // Call after making `cancelled()` true: taking the lock first means a
  // waiter has either seen the change or is already waiting to be notified.
  void wake() {
    std::lock_guard lock(mu_);
    cv_.notify_all();
  }

 private:
  using Clock = std::chrono::steady_clock;
  void refill() {
    auto now = Clock::now();
    double add = std::chrono::duration<double>(now - last_).count() * static_cast<double>(rate_);
    last_ = now;
    tokens_ = std::min(burst_, tokens_ + add);
  }

  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t rate_ = 0;
  double burst_ = 0;
  double tokens_ = 0;
  Clock::time_point last_;
};

}  // namespace hotshard
