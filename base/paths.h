// Paths: their text (normalPath, pathIsWithin), where they lead (resolvedPath),
// and creating them with an explicit mode, since the daemon runs with umask 0.
#pragma once

#include <sys/types.h>

#include <string>

#include "base/result.h"

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

// Creates `dir` and its missing parents: the parents 0755, `dir` itself `mode`
// (less what the umask takes). Directories that exist are left as they are.
Status makeDirectories(const std::string& dir, mode_t mode);

// Creates the file `path` with `mode` (less the umask) if it is missing; a regular
// file that exists loses group and world write. The caller then opens it to write.
Status createFileNoWiderThan(const std::string& path, mode_t mode);

}  // namespace hotshard
