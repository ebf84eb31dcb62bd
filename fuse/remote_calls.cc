#include "fuse/remote_calls.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <thread>

namespace hotshard::fuse {

struct RemoteCalls::Pool {
  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  std::deque<std::function<void()>> jobs;
  unsigned workers = 0, idle = 0;
  unsigned blocked = 0;  // running (or queued) calls whose caller gave up
  // Blocked calls of earlier generations (forgetBlocked): their threads are
  // not counted against max_workers.
  unsigned written_off = 0;
  uint64_t generation = 0;
  bool stopping = false;
  uint64_t timeouts = 0, refused = 0;

  static void work(const std::shared_ptr<Pool>& pool) {
    std::unique_lock lock(pool->mu);
    while (true) {
      pool->idle++;
      pool->cv.wait(lock, [&] { return pool->stopping || !pool->jobs.empty(); });
      pool->idle--;
      if (pool->jobs.empty()) break;  // stopping
      std::function<void()> job = std::move(pool->jobs.front());
      pool->jobs.pop_front();
      lock.unlock();
      job();
      job = nullptr;  // what it captured may call closeLater(), which takes mu
      lock.lock();
    }
    pool->workers--;
  }
};

RemoteCalls::RemoteCalls(Options opts) : opts_(opts), pool_(std::make_shared<Pool>()) {
  if (opts_.max_workers == 0) opts_.max_workers = 1;
}

RemoteCalls::~RemoteCalls() {
  std::lock_guard lock(pool_->mu);
  pool_->stopping = true;
  pool_->cv.notify_all();
}

bool RemoteCalls::submit(std::function<void()> job) {
  std::lock_guard lock(pool_->mu);
  if (pool_->blocked >= opts_.max_workers) {
    pool_->refused++;
    return false;
  }
  enqueueLocked(pool_, opts_.max_workers, std::move(job));
  return true;
}

void RemoteCalls::enqueueLocked(const std::shared_ptr<Pool>& pool, unsigned max_workers,
                                std::function<void()> job) {
  pool->jobs.push_back(std::move(job));
  if (pool->idle < pool->jobs.size() && pool->workers - pool->written_off < max_workers) {
    pool->workers++;
    std::thread([pool] { Pool::work(pool); }).detach();
  }
  pool->cv.notify_one();
}

std::function<void(int)> RemoteCalls::closer() const {
  if (opts_.timeout_seconds <= 0) return [](int fd) { ::close(fd); };
  return [pool = pool_, max_workers = opts_.max_workers](int fd) {
    std::lock_guard lock(pool->mu);
    enqueueLocked(pool, max_workers, [fd] { ::close(fd); });
  };
}

void RemoteCalls::closeLater(int fd) {
  if (fd >= 0) closer()(fd);
}

uint64_t RemoteCalls::noteAbandoned(Pool& pool) {
  std::lock_guard lock(pool.mu);
  pool.blocked++;
  pool.timeouts++;
  return pool.generation;
}

void RemoteCalls::noteBlockedDone(Pool& pool, uint64_t generation) {
  std::lock_guard lock(pool.mu);
  if (generation == pool.generation) {
    pool.blocked--;
  } else {
    pool.written_off--;
  }
}

void RemoteCalls::forgetBlocked() {
  std::lock_guard lock(pool_->mu);
  pool_->written_off += pool_->blocked;
  pool_->blocked = 0;
  pool_->generation++;
}

struct RemoteCalls::Lane::State {
  std::mutex mu;  // a leaf
  std::condition_variable cv;
  bool busy = false;  // guarded by mu
};

RemoteCalls::Lane::Lane() : state_(std::make_shared<State>()) {}

bool RemoteCalls::Lane::busy() const {
  std::lock_guard lock(state_->mu);
  return state_->busy;
}

RemoteCalls::Deadline RemoteCalls::deadlineFromNow() const {
  return std::chrono::steady_clock::now() +
         std::chrono::duration_cast<std::chrono::steady_clock::duration>(
             std::chrono::duration<double>(opts_.timeout_seconds));
}

bool RemoteCalls::takeLane(const Lane& lane, Deadline deadline) {
  std::unique_lock lock(lane.state_->mu);
  if (!lane.state_->cv.wait_until(lock, deadline, [&] { return !lane.state_->busy; })) {
    return false;
  }
  lane.state_->busy = true;
  return true;
}

void RemoteCalls::leaveLane(const std::shared_ptr<Lane::State>& state) {
  std::lock_guard lock(state->mu);
  state->busy = false;
  state->cv.notify_all();
}

Status RemoteCalls::waitForLane(const Lane& lane, const std::string& what) {
  if (opts_.timeout_seconds <= 0) return Ok{};
  std::unique_lock lock(lane.state_->mu);
  if (lane.state_->cv.wait_until(lock, deadlineFromNow(), [&] { return !lane.state_->busy; })) {
    return Ok{};
  }
  return laneTaken(what);
}

Error RemoteCalls::laneTaken(const std::string& what) {
  std::lock_guard lock(pool_->mu);
  pool_->timeouts++;
  return sysError(ETIMEDOUT, fmt::format("{}: an earlier call on the same file is still blocked "
                                         "on the remote past the {} s deadline",
                                         what, opts_.timeout_seconds));
}

Error RemoteCalls::timedOut(const std::string& what) {
  return sysError(ETIMEDOUT, fmt::format("{}: the remote did not answer within {} s", what,
                                         opts_.timeout_seconds));
}

Error RemoteCalls::refused(const std::string& what) {
  return sysError(EIO, fmt::format("{}: not sent to the remote: all {} remote calls are blocked "
                                   "past the {} s deadline",
                                   what, opts_.max_workers, opts_.timeout_seconds));
}

RemoteCalls::Stats RemoteCalls::stats() const {
  std::lock_guard lock(pool_->mu);
  return Stats{.timeouts = pool_->timeouts,
               .refused = pool_->refused,
               .blocked = pool_->blocked + pool_->written_off};
}

}  // namespace hotshard::fuse
