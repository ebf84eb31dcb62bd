// The cluster token: the shared secret with which peers authenticate each
// other (peer/auth.h). It lives in a file only its owner may read
// (--cluster-token-file), like an ssh private key.
#pragma once

#include <string>

#include "base/result.h"

namespace hotshard::peer {

// The longest token accepted, in bytes.
inline constexpr size_t kMaxTokenBytes = 4096;

// Reads the cluster token from `path`: the file's bytes with one trailing
// newline ("\n" or "\r\n") trimmed. Errors: kPermission (not a regular file,
// readable or writable by group or others, or not owned by the caller's
// effective uid), kInvalidArgument (empty, or over kMaxTokenBytes), kNotFound,
// kIo (open/read, with errno).
Result<std::string> readClusterToken(const std::string& path);

}  // namespace hotshard::peer
