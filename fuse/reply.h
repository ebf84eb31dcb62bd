// fuse/reply: the one way from a FUSE handler's outcome to the kernel's reply
// (as 3FS's handle_error in FuseOps.cc).
//
// Every libfuse callback runs its handler through guardRequest():
//  * a handler that succeeds replies itself (fuse_reply_entry, _attr, _buf,
//    the shim's passthrough open reply, ...) as its last step and returns Ok;
//  * a handler that fails returns the Error without replying; replyError()
//    turns it into fuse_reply_err(req, errno) (base/result.h, Error::toErrno);
//  * an exception never crosses libfuse's C frames (nothing unwinds through
//    them; it would terminate the daemon and leave the mount dead): one thrown
//    by a handler before it replied (std::bad_alloc from a std::string, ...)
//    is caught and answered ENOMEM (bad_alloc) or EIO (anything else);
//  * work after a reply (cleanup when the opener has gone) runs through
//    afterReply(), which catches and logs and never replies.
// So each request gets exactly one reply. FORGET and BATCH_FORGET get none
// (fuse_reply_none), and init has no request: guardNoReply() only catches.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <exception>
#include <utility>

#include "base/result.h"

namespace hotshard::fuse {

// How an error reaches the kernel: fuse_reply_err outside tests.
using ErrorReplier = int (*)(fuse_req_t req, int err);

// The errno a failed request is answered with: err.toErrno(), and EIO where
// that is not a positive errno (0 would read as success to the kernel).
int replyErrno(const Error& err);

// The errno for an exception that escaped a handler (the current one, inside a
// catch block): ENOMEM for std::bad_alloc, EIO for anything else. Logs it
// (without saying the errno: guardNoReply uses it too, and replies nothing).
int errnoForCurrentException(const char* op) noexcept;

// The one place an Error becomes a reply.
void replyError(fuse_req_t req, const Error& err, ErrorReplier reply = &fuse_reply_err) noexcept;

// Success for requests whose reply carries no data (unlink, release, ...).
inline Status replyDone(fuse_req_t req) {
  fuse_reply_err(req, 0);
  return Ok{};
}

// Runs handler() (returning Status, see above) so that the request gets
// exactly one reply and no exception leaves.
template <typename Handler>
void guardRequest(fuse_req_t req, const char* op, Handler&& handler,
                  ErrorReplier reply = &fuse_reply_err) noexcept {
  int err;
  try {
    Status status = std::forward<Handler>(handler)();
    if (status.ok()) return;
    return replyError(req, status.error(), reply);
  } catch (...) {
    err = errnoForCurrentException(op);
  }
  reply(req, err);
}

// For callbacks without a reply to send: runs fn, catching and logging.
template <typename Fn>
void guardNoReply(const char* op, Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
  } catch (...) {
    (void)errnoForCurrentException(op);
  }
}

// Work after a reply was sent: the same guard as guardNoReply; named for what
// it protects (a second reply to a request already answered).
template <typename Fn>
void afterReply(const char* op, Fn&& fn) noexcept {
  guardNoReply(op, std::forward<Fn>(fn));
}

}  // namespace hotshard::fuse
