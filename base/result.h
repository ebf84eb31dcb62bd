// base/: Result<T>, the value or the error of an operation that can fail, in
// every room.
// Errors keep their errno and say what was attempted on what:
//   "open backing file data/shard-0042.tar: Permission denied"
#pragma once

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>
#include <variant>

namespace hotshard {

// The one list of error codes.
enum class Errc {
  kInvalidArgument,  // bad input from a user, a config file or a peer
  kNotFound,
  kExists,
  kPermission,
  kBusy,
  kNoSpace,
  kIo,           // a syscall failed; sys_errno says which way
  kStale,        // the remote changed under us
  kCorrupt,      // checksum or format mismatch
  kUnsupported,  // kernel or host lacks a feature
  kProtocol,     // malformed message on the control socket
  kInternal,
};

const char* errcName(Errc code);

struct Error {
  Errc code = Errc::kInternal;
  int sys_errno = 0;  // 0 when the error did not come from the kernel or libc
  std::string message;

  // The errno to hand back to a FUSE request or a CLI exit path.
  int toErrno() const;
};

// "what: strerror(err)", keeping err.
Error sysError(int err, std::string what);
inline Error lastSysError(std::string what) { return sysError(errno, std::move(what)); }
inline Error makeError(Errc code, std::string message) { return Error{code, 0, std::move(message)}; }

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  const Error& error() const { return std::get<1>(v_); }
  Error&& takeError() { return std::get<1>(std::move(v_)); }

 private:
  std::variant<T, Error> v_;
};

struct Ok {};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Ok) {}
  Result(Error error) : error_(std::move(error)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  Error&& takeError() { return std::move(error_); }

 private:
  Error error_;
  bool ok_ = true;
};

using Status = Result<void>;

}  // namespace hotshard

#define HS_CONCAT_INNER(a, b) a##b
#define HS_CONCAT(a, b) HS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)                                       \
  do {                                                              \
    auto hs_status_ = (expr);                                       \
    if (!hs_status_.ok()) return hs_status_.takeError();            \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.takeError();      \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL(HS_CONCAT(hs_result_, __LINE__), lhs, expr)
