#include "base/paths.h"

#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>

#include "base/fd.h"

namespace hotshard {

std::string normalPath(const std::string& path) {
  std::string s = std::filesystem::absolute(path).lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool pathIsWithin(const std::string& path, const std::string& dir) {
  if (dir == "/") return !path.empty() && path[0] == '/';
  return path == dir || path.rfind(dir + "/", 0) == 0;
}

std::string resolvedPath(const std::string& path) {
  std::filesystem::path prefix = normalPath(path);
  std::filesystem::path rest;
  while (true) {
    char real[PATH_MAX];
    if (::realpath(prefix.c_str(), real) != nullptr) {
      std::filesystem::path resolved(real);
      return normalPath((rest.empty() ? resolved : resolved / rest).string());
    }
    if (!prefix.has_relative_path()) return normalPath(path);
    rest = rest.empty() ? prefix.filename() : prefix.filename() / rest;
    prefix = prefix.parent_path();
  }
}

Status makeDirectories(const std::string& dir, mode_t mode) {
  const std::string target = normalPath(dir);
  std::string prefix;
  for (const auto& part : std::filesystem::path(target).relative_path()) {
    prefix += "/" + part.string();
    if (::mkdir(prefix.c_str(), prefix == target ? mode : 0755) != 0 && errno != EEXIST) {
      return lastSysError("create directory " + prefix);
    }
  }
  return Ok{};
}

Status createFileNoWiderThan(const std::string& path, mode_t mode) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY, mode));
  if (!fd) return lastSysError("create " + path);
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return lastSysError("stat " + path);
  if (S_ISREG(st.st_mode) && (st.st_mode & 022) != 0 &&
      ::fchmod(fd.get(), st.st_mode & 07755) < 0) {
    return lastSysError("chmod " + path);
  }
  return Ok{};
}

}  // namespace hotshard
