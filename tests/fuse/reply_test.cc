// The guard every FUSE op runs in (fuse/reply.h), without a mount: exactly one
// reply per request, errors mapped to errnos in one place, and no exception
// leaving it.
#include "fuse/reply.h"

#include <gtest/gtest.h>

#include <new>
#include <stdexcept>
#include <vector>

namespace hotshard::fuse {
namespace {

std::vector<int> g_replies;  // the errnos the fake replier was called with

int fakeReplyErr(fuse_req_t, int err) {
  g_replies.push_back(err);
  return 0;
}

fuse_req_t fakeRequest() {
  static int dummy;
  return reinterpret_cast<fuse_req_t>(&dummy);  // never dereferenced by the fake
}

class ReplyGuard : public ::testing::Test {
 protected:
  void SetUp() override { g_replies.clear(); }
  template <typename Handler>
  std::vector<int> run(Handler&& handler) {
    g_replies.clear();
    guardRequest(fakeRequest(), "test", std::forward<Handler>(handler), &fakeReplyErr);
    return g_replies;
  }
};

TEST_F(ReplyGuard, ErrorsMapToTheirErrno) {
  EXPECT_EQ(replyErrno(sysError(ENOENT, "openat")), ENOENT);
  EXPECT_EQ(replyErrno(sysError(ESTALE, "open")), ESTALE);
  EXPECT_EQ(replyErrno(sysError(EACCES, "open backing file for writing")), EACCES);
  EXPECT_EQ(replyErrno(makeError(Errc::kNotFound, "x")), ENOENT);
  EXPECT_EQ(replyErrno(makeError(Errc::kStale, "x")), ESTALE);
  EXPECT_EQ(replyErrno(makeError(Errc::kInternal, "x")), EIO);
  // Never 0 (success to the kernel) nor negative for a failure.
  EXPECT_EQ(replyErrno(Error{Errc::kIo, -5, "odd"}), EIO);
}

TEST_F(ReplyGuard, SuccessIsRepliedByTheHandlerAlone) {
  EXPECT_TRUE(run([] { return Status(Ok{}); }).empty());
}

TEST_F(ReplyGuard, AnErrorIsRepliedOnceWithItsErrno) {
  EXPECT_EQ(run([] { return Status(sysError(ENOENT, "openat")); }), std::vector<int>{ENOENT});
}

TEST_F(ReplyGuard, BadAllocBecomesEnomem) {
  EXPECT_EQ(run([]() -> Status { throw std::bad_alloc(); }), std::vector<int>{ENOMEM});
}

TEST_F(ReplyGuard, AStringThatCannotBeAllocatedBecomesOneReply) {
  auto replies = run([]() -> Status {
    std::string huge;
    huge.resize(huge.max_size());  // bad_alloc or length_error, from inside std::string
    return Ok{};
  });
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_TRUE(replies[0] == ENOMEM || replies[0] == EIO) << replies[0];
}

TEST_F(ReplyGuard, OtherExceptionsBecomeEio) {
  EXPECT_EQ(run([]() -> Status { throw std::runtime_error("boom"); }), std::vector<int>{EIO});
  EXPECT_EQ(run([]() -> Status { throw 42; }), std::vector<int>{EIO});
}

TEST_F(ReplyGuard, ReplyErrorIsTheOnePlaceErrorsBecomeReplies) {
  replyError(fakeRequest(), sysError(EBADF, "read: no backing file"), &fakeReplyErr);
  EXPECT_EQ(g_replies, std::vector<int>{EBADF});
}

TEST_F(ReplyGuard, WorkAfterAReplyNeverRepliesAgain) {
  guardRequest(
      fakeRequest(), "open",
      []() -> Status {
        // The handler replied (success) and then its cleanup threw.
        afterReply("open", [] { throw std::bad_alloc(); });
        return Ok{};
      },
      &fakeReplyErr);
  EXPECT_TRUE(g_replies.empty());
  EXPECT_NO_THROW(guardNoReply("forget", [] { throw std::runtime_error("x"); }));
  EXPECT_TRUE(g_replies.empty());
}

}  // namespace
}  // namespace hotshard::fuse
