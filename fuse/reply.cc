#include "fuse/reply.h"

#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace hotshard::fuse {

int replyErrno(const Error& err) {
  int e = err.toErrno();
  return e > 0 ? e : EIO;
}

int errnoForCurrentException(const char* op) noexcept {
  int err = EIO;
  const char* what = "unknown exception";
  try {
    throw;
  } catch (const std::bad_alloc& e) {
    err = ENOMEM;
    what = e.what();
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  try {
    spdlog::error("FUSE {}: exception: {}", op, what);
  } catch (...) {
  }
  return err;
}

void replyError(fuse_req_t req, const Error& err, ErrorReplier reply) noexcept {
  int e = replyErrno(err);
  try {
    spdlog::debug("request answered {}: {}", std::strerror(e), err.message);
  } catch (...) {
  }
  reply(req, e);
}

}  // namespace hotshard::fuse
