#include "peer/token.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fd.h"

namespace hotshard::peer {

Result<std::string> readClusterToken(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) return lastSysError("open cluster token file " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return lastSysError("stat cluster token file " + path);
  if (!S_ISREG(st.st_mode))
    return makeError(Errc::kPermission, "cluster token file " + path + " is not a regular file");
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
    return makeError(Errc::kPermission,
                     "cluster token file " + path + " is open to group or others (chmod 600 it)");
  if (st.st_uid != ::geteuid())
    return makeError(Errc::kPermission, "cluster token file " + path + " is owned by uid " +
                                            std::to_string(st.st_uid) + ", not by us");
  std::string token(kMaxTokenBytes + 3, '\0');
  size_t got = 0;
  while (got < token.size()) {
    ssize_t n = ::read(fd.get(), token.data() + got, token.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lastSysError("read cluster token file " + path);
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  token.resize(got);
  if (!token.empty() && token.back() == '\n') {
    token.pop_back();
    if (!token.empty() && token.back() == '\r') token.pop_back();
  }
  if (token.empty())
    return makeError(Errc::kInvalidArgument, "cluster token file " + path + " is empty");
  if (token.size() > kMaxTokenBytes)
    return makeError(Errc::kInvalidArgument,
                     "cluster token file " + path + " holds over 4096 bytes");
  return token;
}

}  // namespace hotshard::peer
