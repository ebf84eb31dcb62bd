// IoEngine: the promoter's way of moving bytes. A tiny submit/reap interface
// with two implementations chosen by config (`io_engine = "uring" | "sync"`):
//   - uring: io_uring (liburing), several reads and writes in flight at once;
//   - sync:  plain pread/pwrite, executed at submit time; hosts without
//            io_uring (or with it disabled) still work, and tests can compare
//            the two byte for byte.
// An engine is used by one thread at a time (one per promotion).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace hotshard {

enum class IoOp { kRead, kWrite };

struct IoRequest {
  IoOp op = IoOp::kRead;
  int fd = -1;
  void* buf = nullptr;
  uint32_t len = 0;
  uint64_t offset = 0;
  uint64_t user_data = 0;  // handed back untouched in the completion
  // Index of a buffer given to registerBuffers() that holds [buf, buf+len),
  // or -1. Engines without registration ignore it.
  int buf_index = -1;
};

struct IoCompletion {
  uint64_t user_data = 0;
  int64_t result = 0;  // bytes transferred (may be short), or -errno
};

class IoEngine {
 public:
  virtual ~IoEngine() = default;
  virtual const char* name() const = 0;
  // Most requests that may be in flight at once.
  virtual unsigned depth() const = 0;
  virtual unsigned inFlight() const = 0;
  // Pins buffers once for the engine's life so the kernel skips mapping them
  // on every request (io_uring fixed buffers). kUnsupported where the engine
  // has no such thing; may fail (e.g. ENOMEM under a memlock limit): requests
  // then just leave buf_index at -1.
  virtual Status registerBuffers(const std::vector<iovec>& buffers) = 0;
  // Queues one request. kBusy when depth() requests are already in flight.
  virtual Status submit(const IoRequest& req) = 0;
  // Waits until at least min(min_complete, inFlight()) completions are ready,
  // then appends every ready completion to `out`; returns how many it appended.
  virtual Result<size_t> reap(std::vector<IoCompletion>* out, unsigned min_complete = 1) = 0;
};

enum class IoEngineKind { kUring, kSync };

// "uring" or "sync"; anything else is kInvalidArgument.
Result<IoEngineKind> parseIoEngineKind(std::string_view name);
const char* ioEngineKindName(IoEngineKind kind);

// The engine of `kind` with `depth` slots. When io_uring cannot be set up
// (old kernel, io_uring_disabled, seccomp) it falls back to the sync engine and
// logs why, once per process.
std::unique_ptr<IoEngine> makeIoEngine(IoEngineKind kind, unsigned depth);

// The uring engine or why it cannot be had; no fallback (tests use this).
Result<std::unique_ptr<IoEngine>> makeUringEngine(unsigned depth);
std::unique_ptr<IoEngine> makeSyncEngine(unsigned depth);

}  // namespace hotshard
