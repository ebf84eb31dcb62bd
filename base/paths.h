// Path text, without touching the file system.
#pragma once

#include <string>

namespace hotshard {

// Absolute, lexically normal form of `path` ("a/../b/" -> "$PWD/b"), without
// a trailing slash, and without any stat: a dead FUSE mount answers ENOTCONN.
std::string normalPath(const std::string& path);

// True when `path` is `dir` or lies below it (both normal, see normalPath).
bool pathIsWithin(const std::string& path, const std::string& dir);

}  // namespace hotshard
