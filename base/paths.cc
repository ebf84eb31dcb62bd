#include "base/paths.h"

#include <limits.h>
#include <stdlib.h>

#include <filesystem>

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

}  // namespace hotshard
