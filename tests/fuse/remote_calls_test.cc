// fuse/remote_calls.h: a call into the remote that does not return is answered
// within the deadline, a pool full of such calls refuses at once, and what a
// late call opened is handed back for closing.
#include "fuse/remote_calls.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <thread>
#include <vector>
#include <mutex>
#include <string>

namespace hotshard::fuse {
namespace {

using Clock = std::chrono::steady_clock;

double secondsSince(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// A stand-in for a remote that hangs until released.
struct Gate {
  std::promise<void> open;
  std::shared_future<void> opened = open.get_future().share();
  void release() { open.set_value(); }
};

TEST(RemoteCalls, AnAnsweredCallGivesItsResult) {
  RemoteCalls calls({.timeout_seconds = 5, .max_workers = 2});
  auto r = calls.run<int>("stat f", [] { return Result<int>(42); });
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(*r, 42);
  auto e = calls.run<int>("stat g", [] { return Result<int>(sysError(ENOENT, "stat g")); });
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().sys_errno, ENOENT);  // the remote's errno, unchanged
  EXPECT_EQ(calls.stats().timeouts, 0u);
}

TEST(RemoteCalls, AHungCallIsAnsweredAtTheDeadlineAndItsResultClosedLater) {
  RemoteCalls calls({.timeout_seconds = 0.3, .max_workers = 4});
  Gate gate;
  auto abandoned = std::make_shared<std::promise<int>>();
  auto t0 = Clock::now();
  auto r = calls.run<int>(
      "lookup f", [f = gate.opened] { f.wait(); return Result<int>(7); },
      [abandoned](Result<int>& late) { abandoned->set_value(late.ok() ? *late : -1); });
  double took = secondsSince(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sys_errno, ETIMEDOUT);
  EXPECT_NE(r.error().message.find("lookup f"), std::string::npos) << r.error().message;
  EXPECT_GE(took, 0.3);
  EXPECT_LT(took, 3.0);
  EXPECT_EQ(calls.stats().timeouts, 1u);
  EXPECT_EQ(calls.stats().blocked, 1u);

  // Another call is not held up by the hung one.
  auto other = calls.run<int>("stat g", [] { return Result<int>(1); });
  EXPECT_TRUE(other.ok());

  gate.release();
  auto late = abandoned->get_future();
  ASSERT_EQ(late.wait_for(std::chrono::seconds(5)), std::future_status::ready);
  EXPECT_EQ(late.get(), 7);  // what it opened reaches abandon(), to be closed
  for (int i = 0; i < 200 && calls.stats().blocked != 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(calls.stats().blocked, 0u);
}

TEST(RemoteCalls, WhenEveryWorkerIsBlockedCallsFailAtOnceWithEio) {
  RemoteCalls calls({.timeout_seconds = 0.2, .max_workers = 2});
  Gate gate;
  for (int i = 0; i < 2; i++) {
    auto r = calls.run<int>("read dir", [f = gate.opened] { f.wait(); return Result<int>(0); });
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().sys_errno, ETIMEDOUT);
  }
  std::atomic<bool> ran{false};
  auto t0 = Clock::now();
  auto r = calls.run<int>("stat f", [&] {
    ran = true;
    return Result<int>(1);
  });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sys_errno, EIO);
  EXPECT_LT(secondsSince(t0), 0.1) << "it waited instead of failing fast";
  EXPECT_FALSE(ran);
  EXPECT_EQ(calls.stats().refused, 1u);

  gate.release();  // the remote answers again: so does the pool
  bool answered = false;
  for (int i = 0; i < 200 && !answered; i++) {
    answered = calls.run<int>("stat f", [] { return Result<int>(1); }).ok();
    if (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(answered);
}

// A remote mounted again over one that hangs for good: the calls blocked on the
// old one are written off, the new one gets a full pool, and the written-off
// calls, when they do return, leave the new count alone.
TEST(RemoteCalls, BlockedCallsWrittenOffLeaveAFullPool) {
  RemoteCalls calls({.timeout_seconds = 0.2, .max_workers = 2});
  Gate old_remote;
  for (int i = 0; i < 2; i++) {
    auto r = calls.run<int>("lookup", [f = old_remote.opened] { f.wait(); return Result<int>(0); });
    ASSERT_EQ(r.error().sys_errno, ETIMEDOUT);
  }
  ASSERT_EQ(calls.run<int>("stat f", [] { return Result<int>(1); }).error().sys_errno, EIO);

  calls.forgetBlocked();
  EXPECT_EQ(calls.stats().blocked, 2u);  // still counted as stuck threads
  auto r = calls.run<int>("stat f", [] { return Result<int>(1); });
  ASSERT_TRUE(r.ok()) << r.error().message;
  // The new remote hangs too: its own two calls fill the pool again.
  Gate new_remote;
  for (int i = 0; i < 2; i++) {
    auto h = calls.run<int>("lookup", [f = new_remote.opened] { f.wait(); return Result<int>(0); });
    ASSERT_EQ(h.error().sys_errno, ETIMEDOUT);
  }
  EXPECT_EQ(calls.run<int>("stat f", [] { return Result<int>(1); }).error().sys_errno, EIO);
  // The old calls return: the pool stays full of the new remote's.
  old_remote.release();
  for (int i = 0; i < 200 && calls.stats().blocked != 2; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(calls.stats().blocked, 2u);
  EXPECT_EQ(calls.run<int>("stat f", [] { return Result<int>(1); }).error().sys_errno, EIO);
  new_remote.release();
  bool answered = false;
  for (int i = 0; i < 200 && !answered; i++) {
    answered = calls.run<int>("stat f", [] { return Result<int>(1); }).ok();
    if (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(answered);
  // A call is answered once one worker is free; the other may still be on its
  // way out of its returned call.
  for (int i = 0; i < 200 && calls.stats().blocked != 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(calls.stats().blocked, 0u);
}

// Issue 11 item 2: close(2) of a remote file can wait on the remote (a FUSE
// FLUSH, NFS write-back), and its callers hold the inode table's locks: it is
// handed to a worker and never waited for, even when every worker is blocked.
TEST(RemoteCalls, CloseLaterNeverWaitsAndTheFdClosesOnAWorker) {
  RemoteCalls calls({.timeout_seconds = 0.2, .max_workers = 1});
  Gate gate;
  auto r = calls.run<int>("read", [f = gate.opened] { f.wait(); return Result<int>(0); });
  ASSERT_EQ(r.error().sys_errno, ETIMEDOUT);  // the only worker is blocked now
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  auto t0 = Clock::now();
  calls.closeLater(fds[1]);
  EXPECT_LT(secondsSince(t0), 0.1) << "closeLater waited";
  auto eof = [&](int timeout_ms) {
    pollfd pfd{.fd = fds[0], .events = POLLIN, .revents = 0};
    return ::poll(&pfd, 1, timeout_ms) == 1 && (pfd.revents & POLLHUP);
  };
  EXPECT_FALSE(eof(300)) << "closed before a worker was free";
  gate.release();
  EXPECT_TRUE(eof(5000)) << "the write end was never closed";
  ::close(fds[0]);

  RemoteCalls now({.timeout_seconds = 0});  // no deadline: closed here
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  now.closeLater(fds[1]);
  EXPECT_TRUE(eof(0));
  ::close(fds[0]);
}

// What a call owns (fuse/filesystem.cc's CallFds) is closed through
// closeLater() when the last of the caller and the worker lets go of it: from
// the worker too, which must not hold the pool's lock then.
TEST(RemoteCalls, ACallsCapturesMayCloseLaterWhenTheWorkerDropsThem) {
  // Leaked if it deadlocks: its destructor would wait on the held lock.
  auto* calls = new RemoteCalls({.timeout_seconds = 2, .max_workers = 1});
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  struct Owned {
    RemoteCalls* calls;
    int fd;
    ~Owned() { calls->closeLater(fd); }
  };
  // The call alone owns it: the worker lets go of it last.
  auto r = calls->run<int>("read", [owned = std::shared_ptr<Owned>(new Owned{calls, fds[1]})] {
    return Result<int>(owned->fd);
  });
  ASSERT_TRUE(r.ok());
  auto answered = std::make_shared<std::promise<bool>>();
  auto next = answered->get_future();
  std::thread([calls, answered] {
    answered->set_value(calls->run<int>("stat", [] { return Result<int>(1); }).ok());
  }).detach();
  ASSERT_EQ(next.wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "the pool deadlocked";
  EXPECT_TRUE(next.get());
  delete calls;
  pollfd pfd{.fd = fds[0], .events = POLLIN, .revents = 0};
  EXPECT_EQ(::poll(&pfd, 1, 5000), 1);
  EXPECT_TRUE(pfd.revents & POLLHUP) << "the write end was never closed";
  ::close(fds[0]);
}

TEST(RemoteCalls, NoDeadlineRunsOnTheCallersThread) {
  RemoteCalls calls({.timeout_seconds = 0, .max_workers = 1});
  auto me = std::this_thread::get_id();
  auto r = calls.run<bool>("stat f", [&] { return Result<bool>(std::this_thread::get_id() == me); });
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
}

// A lane (an adopted copy's write-backs): a call abandoned at its deadline
// keeps the lane until it returns; a later call of the lane fails within its
// own deadline without ever starting, never beside the first.
TEST(RemoteCallsLane, AnAbandonedCallHoldsItsLaneAndALaterOneNeverRunsBesideIt) {
  RemoteCalls calls({.timeout_seconds = 0.3, .max_workers = 4});
  RemoteCalls::Lane lane;
  Gate gate;
  auto first = calls.runInLane<int>(lane, "write back f", [f = gate.opened] {
    f.wait();
    return Result<int>(1);
  });
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().sys_errno, ETIMEDOUT);
  EXPECT_TRUE(lane.busy());

  std::atomic<bool> second_ran{false};
  auto t0 = Clock::now();
  auto second = calls.runInLane<int>(lane, "write back f", [&] {
    second_ran = true;
    return Result<int>(2);
  });
  double took = secondsSince(t0);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().sys_errno, ETIMEDOUT);
  EXPECT_NE(second.error().message.find("still blocked"), std::string::npos)
      << second.error().message;
  EXPECT_GE(took, 0.3);
  EXPECT_LT(took, 3.0);
  EXPECT_FALSE(second_ran) << "ran beside the call still in flight";
  Status wait = calls.waitForLane(lane, "open f for writing");
  ASSERT_FALSE(wait.ok());
  EXPECT_EQ(wait.error().sys_errno, ETIMEDOUT);

  // Another lane, and plain calls, are not held up.
  RemoteCalls::Lane other;
  EXPECT_TRUE(calls.runInLane<int>(other, "write back g", [] { return Result<int>(3); }).ok());
  EXPECT_TRUE(calls.run<int>("stat g", [] { return Result<int>(4); }).ok());

  gate.release();
  for (int i = 0; i < 300 && lane.busy(); i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(lane.busy()) << "the first call's return did not free its lane";
  EXPECT_TRUE(calls.waitForLane(lane, "open f for writing").ok());
  auto third = calls.runInLane<int>(lane, "write back f", [] { return Result<int>(5); });
  ASSERT_TRUE(third.ok()) << third.error().message;
  EXPECT_EQ(*third, 5);
}

// A later call waits for the one in flight within its deadline and runs after
// it, in order.
TEST(RemoteCallsLane, ALaterCallRunsOnceTheEarlierOneReturnsWithinItsDeadline) {
  RemoteCalls calls({.timeout_seconds = 0.6, .max_workers = 4});
  RemoteCalls::Lane lane;
  std::mutex mu;
  std::vector<std::string> events;
  auto note = [&](const std::string& e) {
    std::lock_guard lock(mu);
    events.push_back(e);
  };
  auto first = calls.runInLane<int>(lane, "write back f", [&] {
    note("first begins");
    std::this_thread::sleep_for(std::chrono::milliseconds(900));  // past 0.6 s
    note("first ends");
    return Result<int>(1);
  });
  ASSERT_FALSE(first.ok());
  auto second = calls.runInLane<int>(lane, "write back f", [&] {
    note("second begins");
    return Result<int>(2);
  });
  ASSERT_TRUE(second.ok()) << second.error().message;
  std::lock_guard lock(mu);
  EXPECT_EQ(events, (std::vector<std::string>{"first begins", "first ends", "second begins"}));
}

TEST(RemoteCallsLane, AFullPoolFreesTheLaneItRefused) {
  RemoteCalls calls({.timeout_seconds = 0.2, .max_workers = 1});
  Gate gate;
  ASSERT_FALSE(calls.run<int>("read dir", [f = gate.opened] {
    f.wait();
    return Result<int>(0);
  }).ok());
  RemoteCalls::Lane lane;
  auto r = calls.runInLane<int>(lane, "write back f", [] { return Result<int>(1); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().sys_errno, EIO);
  EXPECT_FALSE(lane.busy()) << "a call never sent must not hold its lane";
  gate.release();
}

}  // namespace
}  // namespace hotshard::fuse
