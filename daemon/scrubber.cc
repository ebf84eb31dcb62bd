#include "daemon/scrubber.h"

#include <spdlog/spdlog.h>

namespace hotshard {

Scrubber::Scrubber(CacheStore* store, ScrubberOptions options)
    : store_(store), opts_(options), bucket_(options.bytes_per_sec, 1 << 20) {}

Scrubber::~Scrubber() { stop(); }

void Scrubber::start() {
  if (thread_.joinable()) return;
  stopping_ = false;
  thread_ = std::thread([this] { loop(); });
}

void Scrubber::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  bucket_.wake();
  if (thread_.joinable()) thread_.join();
}

Scrubber::Stats Scrubber::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

// A failed cache disk (CacheStore::health()) is not scrubbed: its read errors
// say nothing of the copies, which are served again when it answers.
bool Scrubber::waitForHealthyDisk() {
  std::unique_lock lock(mu_);
  while (!stopping_ && !store_->healthy()) {
    cv_.wait_for(lock, std::chrono::seconds(1), [this] { return stopping_.load(); });
  }
  return !stopping_;
}

void Scrubber::loop() {
  auto paced = [this](uint64_t bytes) {
    if (!bucket_.acquire(bytes, [this] { return stopping_.load(); })) return false;
    std::lock_guard lock(mu_);
    stats_.bytes_read += bytes;
    return true;
  };
  while (!stopping_) {
    for (const auto& o : store_->list()) {
      if (stopping_) return;
      if (!waitForHealthyDisk()) return;
      Status s = store_->verify(o.rel_path, paced);
      if (!s.ok() && s.error().code == Errc::kBusy) return;  // stopped mid-object
      if (!s.ok() && s.error().code == Errc::kNotFound) continue;
      std::lock_guard lock(mu_);
      ++stats_.objects_checked;
      if (!s.ok()) {
        ++stats_.objects_dropped;
        spdlog::warn("scrub: {}", s.error().message);
      }
    }
    std::unique_lock lock(mu_);
    ++stats_.passes;
    cv_.wait_for(lock, opts_.pause_between_passes, [this] { return stopping_.load(); });
  }
}

}  // namespace hotshard
