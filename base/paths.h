// Path text; only resolvedPath looks at the file system.
#pragma once

#include <string>

namespace hotshard {

// Absolute, lexically normal form of `path` ("a/../b/" -> "$PWD/b"), without
// a trailing slash, and without any stat: a dead FUSE mount answers ENOTCONN.
std::string normalPath(const std::string& path);

// True when `path` is `dir` or lies below it (both normal, see normalPath).
bool pathIsWithin(const std::string& path, const std::string& dir);

// Where `path` really leads: the realpath of its longest prefix that resolves,
// then the rest as written, so a directory not created yet still resolves
// through the symlinks above it. Never fails: with nothing resolvable (a dead
// FUSE mount answers ENOTCONN) it is normalPath(path).
std::string resolvedPath(const std::string& path);

}  // namespace hotshard
