// fuse/remote_calls: a deadline on the remote. A FUSE handler that asks the
// remote (lookup, getattr, the stat and open of an open, opendir, statfs) runs
// the syscall on a small pool of worker threads and waits for it at most
// `timeout_seconds`. When the deadline passes the request is answered with
// ETIMEDOUT while the syscall stays blocked on its worker: a thread in an
// uninterruptible wait on a hung NFS or sshfs server cannot be taken back, but
// it no longer holds a FUSE thread, so other requests (cached files, `status`)
// keep being answered. When every worker is blocked past its deadline, new
// calls fail at once with EIO instead of queueing behind them. Calls that must
// stay in order on one file run in its Lane (below): one at a time, even past
// their deadlines.
//
// Units: seconds (double). Errors: sysError(ETIMEDOUT, "<what>: the remote did
// not answer within N s") and sysError(EIO, "<what>: ... remote calls blocked").
// Thread safety: run() may be called from any thread. The workers are detached
// and share the pool's state, so a worker still blocked at teardown returns
// into valid memory and exits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "base/result.h"

namespace hotshard::fuse {

class RemoteCalls {
 public:
  struct Options {
    double timeout_seconds = 30;  // 0: no deadline, calls run on the caller's thread
    unsigned max_workers = 32;    // threads that may be inside the remote at once
  };
  explicit RemoteCalls(Options opts);
  ~RemoteCalls();  // idle workers exit; blocked ones exit when their call returns
  RemoteCalls(const RemoteCalls&) = delete;
  RemoteCalls& operator=(const RemoteCalls&) = delete;

  // Runs call() (which owns everything it touches: duplicated fds, copied
  // names) on a worker and returns its result, or the errors above. A call
  // that finishes after its caller gave up hands its result to abandon(), on
  // the worker, to close what it opened.
  template <class T>
  Result<T> run(const std::string& what, std::function<Result<T>()> call,
                std::function<void(Result<T>&)> abandon = nullptr);

  // Calls on one remote object that must not overlap, nor land out of order:
  // the daemon's changes to one remote file's bytes, above all the write-backs
  // of an adopted cache copy (docs/cache.md, "One file, one truth"), each of
  // which rewrites the whole file. A call run in a lane holds it until it
  // returns, past its caller's deadline too, so a later call of the lane never
  // runs beside it: an older write-back that finishes after a newer one would
  // put older bytes back (a lost write). A default-constructed Lane is a new
  // lane; its copies share it.
  class Lane {
   public:
    Lane();
    // A call runs in it now (or was abandoned by its caller and still runs).
    bool busy() const;
    // Not busy, and this is the only Lane sharing its state (a registry may
    // then forget it: nobody can be about to take it but through the registry).
    bool unused() const { return state_.use_count() == 1 && !busy(); }

   private:
    friend class RemoteCalls;
    struct State;
    std::shared_ptr<State> state_;
  };
  // run() in `lane`: first waits for the lane's call in flight to return, then
  // runs call() in it; one deadline covers both. ETIMEDOUT when the lane is
  // still taken at the deadline (call() never started) or call() did not
  // return by then (it goes on, holding the lane, and its result goes to
  // abandon()); EIO when every worker is blocked. Without a deadline
  // (timeout_seconds 0) call() runs here, lanes are never left taken.
  template <class T>
  Result<T> runInLane(Lane& lane, const std::string& what, std::function<Result<T>()> call,
                      std::function<void(Result<T>&)> abandon = nullptr);
  // Waits, within the deadline, until no call runs in lane: Ok, or ETIMEDOUT
  // naming `what`. For what changes the object outside the lane (a writer's
  // open of the remote file, a truncate) after an abandoned lane call.
  Status waitForLane(const Lane& lane, const std::string& what);

  // Closes fd on a worker and returns at once; fd is the pool's from here.
  // close(2) of a remote file can wait on the remote: the kernel sends a FUSE
  // remote a FLUSH and waits for its answer (fs/fuse/file.c, fuse_flush; sshfs
  // answers once the file's pending writes are acknowledged), NFS writes back
  // the file's dirty pages (close-to-open). Its callers hold the inode table's
  // locks. Never refused: behind blocked workers it waits in the queue, the fd
  // open till then. Without a deadline (timeout_seconds 0) it closes here.
  void closeLater(int fd);
  // closeLater() as a function that stays valid when this object is gone: for
  // what a call owns, which a call still blocked at teardown may hold longer.
  std::function<void(int fd)> closer() const;

  double timeoutSeconds() const { return opts_.timeout_seconds; }
  // The calls blocked now are written off (the remote they wait on was replaced:
  // a new mount at its path, see FileSystem::remoteRootReplaced): they no longer
  // count against max_workers, so the new remote gets a full pool while they
  // stay blocked on the old one. Their threads exit when their calls return.
  void forgetBlocked();
  struct Stats {
    uint64_t timeouts = 0;  // calls answered ETIMEDOUT
    uint64_t refused = 0;   // calls answered EIO: every worker blocked
    unsigned blocked = 0;   // workers now inside a call whose caller gave up (written off too)
  };
  Stats stats() const;

 private:
  struct Pool;  // shared with the workers (remote_calls.cc)
  // Queues job on a worker; false when every worker is blocked past a deadline.
  bool submit(std::function<void()> job);
  // Requires pool->mu.
  static void enqueueLocked(const std::shared_ptr<Pool>& pool, unsigned max_workers,
                            std::function<void()> job);
  using Deadline = std::chrono::steady_clock::time_point;
  Deadline deadlineFromNow() const;
  // run() against a deadline given; done() (may be null) runs on the worker
  // right after call() returns, before its result is handed over.
  template <class T>
  Result<T> runUntil(Deadline deadline, const std::string& what, std::function<Result<T>()> call,
                     std::function<void(Result<T>&)> abandon, std::function<void()> done);
  // Takes lane, waiting until deadline; false: still taken then.
  static bool takeLane(const Lane& lane, Deadline deadline);
  static void leaveLane(const std::shared_ptr<Lane::State>& state);
  Error timedOut(const std::string& what);
  Error laneTaken(const std::string& what);
  Error refused(const std::string& what);
  // A caller gave up on its call (the pool's generation then, which
  // forgetBlocked() advances); the call, once it returns, says so.
  static uint64_t noteAbandoned(Pool& pool);
  static void noteBlockedDone(Pool& pool, uint64_t generation);

  Options opts_;
  std::shared_ptr<Pool> pool_;
};

template <class T>
Result<T> RemoteCalls::run(const std::string& what, std::function<Result<T>()> call,
                           std::function<void(Result<T>&)> abandon) {
  if (opts_.timeout_seconds <= 0) return call();
  return runUntil<T>(deadlineFromNow(), what, std::move(call), std::move(abandon), nullptr);
}

template <class T>
Result<T> RemoteCalls::runInLane(Lane& lane, const std::string& what,
                                 std::function<Result<T>()> call,
                                 std::function<void(Result<T>&)> abandon) {
  if (opts_.timeout_seconds <= 0) return call();
  Deadline deadline = deadlineFromNow();
  if (!takeLane(lane, deadline)) {
    return laneTaken(what);
  }
  return runUntil<T>(deadline, what, std::move(call), std::move(abandon),
                     [state = lane.state_] { leaveLane(state); });
}

template <class T>
Result<T> RemoteCalls::runUntil(Deadline deadline, const std::string& what,
                                std::function<Result<T>()> call,
                                std::function<void(Result<T>&)> abandon,
                                std::function<void()> done) {
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    std::optional<Result<T>> result;
    bool abandoned = false;
    uint64_t generation = 0;  // the pool's when abandoned
  };
  auto shared = std::make_shared<Shared>();
  auto job = [pool = pool_, shared, call = std::move(call), abandon = std::move(abandon), done] {
    Result<T> r = call();
    if (done) done();
    std::unique_lock lock(shared->mu);
    if (!shared->abandoned) {
      shared->result.emplace(std::move(r));
      shared->cv.notify_all();
      return;
    }
    uint64_t generation = shared->generation;
    lock.unlock();
    if (abandon) abandon(r);
    noteBlockedDone(*pool, generation);
  };
  if (!submit(std::move(job))) {
    if (done) done();
    return refused(what);
  }
  std::unique_lock lock(shared->mu);
  if (shared->cv.wait_until(lock, deadline, [&] { return shared->result.has_value(); })) {
    return std::move(*shared->result);
  }
  shared->abandoned = true;
  shared->generation = noteAbandoned(*pool_);
  return timedOut(what);
}

}  // namespace hotshard::fuse
