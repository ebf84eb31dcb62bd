#include "base/result.h"

namespace hotshard {

const char* errcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return "invalid_argument";
    case Errc::kNotFound: return "not_found";
    case Errc::kExists: return "exists";
    case Errc::kPermission: return "permission";
    case Errc::kBusy: return "busy";
    case Errc::kNoSpace: return "no_space";
    case Errc::kIo: return "io";
    case Errc::kStale: return "stale";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kProtocol: return "protocol";
    case Errc::kInternal: return "internal";
  }
  return "unknown";
}

int Error::toErrno() const {
  if (sys_errno != 0) return sys_errno;
  switch (code) {
    case Errc::kInvalidArgument: return EINVAL;
    case Errc::kNotFound: return ENOENT;
    case Errc::kExists: return EEXIST;
    case Errc::kPermission: return EACCES;
    case Errc::kBusy: return EBUSY;
    case Errc::kNoSpace: return ENOSPC;
    case Errc::kStale: return ESTALE;
    case Errc::kUnsupported: return EOPNOTSUPP;
    case Errc::kCorrupt:
    case Errc::kIo:
    case Errc::kProtocol:
    case Errc::kInternal: return EIO;
  }
  return EIO;
}

Error sysError(int err, std::string what) {
  Error e;
  e.code = err == ENOSPC ? Errc::kNoSpace
           : err == ENOENT ? Errc::kNotFound
           : err == EEXIST ? Errc::kExists
           : (err == EACCES || err == EPERM) ? Errc::kPermission
           : err == EBUSY ? Errc::kBusy
           : Errc::kIo;
  e.sys_errno = err;
  e.message = std::move(what) + ": " + std::strerror(err);
  return e;
}

}  // namespace hotshard
