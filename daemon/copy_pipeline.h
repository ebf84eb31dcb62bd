// CopyPipeline: copies one file descriptor into another through an IoEngine,
// with up to engine->depth() chunks in flight, and computes the xxh3-64 of
// what it copied, in file order, as it goes. The promoter's data path; it
// knows nothing of the cache store or of remote paths.
//
// Shapes and units: `size` bytes from offset 0 of `src_fd` to offset 0 of
// `dst_fd`, in chunks of `chunk_bytes` (a multiple of 4096, as O_DIRECT needs);
// one buffer per engine slot, page-aligned, registered with the engine when it
// can (io_uring fixed buffers); engine and buffers come as a CopyKit, which a
// caller may keep for many copies. The destination ends exactly `size` bytes long.
//
// What it absorbs, as the kernel and io_uring hand it out:
//   - short reads and short writes: the rest of the chunk is resubmitted;
//   - EINTR and EAGAIN completions: the same request is resubmitted;
//   - EINVAL on a write submitted while `dst_fd` had O_DIRECT (a file system
//     that refuses it, or refuses this request's alignment): O_DIRECT is
//     cleared on `dst_fd` and the write resubmitted buffered; later writes
//     stay buffered. A short write that leaves a chunk unaligned also clears
//     O_DIRECT (the rest cannot go on aligned).
//   - a tail chunk that is not a multiple of 4096 under O_DIRECT is padded with
//     zeros and the file truncated back to `size` at the end.
//
// Errors keep their errno and name the file: "<label>: read <src_name> at
// offset N", "<label>: pwrite <dst_name>" (EDQUOT reads as ENOSPC), and say
// which side failed through CopyFault so callers can count failures by cause.
// Requests still in flight when a copy fails are reaped before run() returns:
// the kernel is done with the buffers before they are freed.
//
// Not thread-safe: one pipeline per copy, on one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "daemon/io_engine.h"

namespace hotshard {

// Where a failed copy went wrong.
enum class CopyFault {
  kNone,
  kSource,        // reading src_fd failed
  kSourceShrank,  // src_fd ended before `size` bytes (errc kStale)
  kDestination,   // writing, truncating or stat'ing dst_fd failed (kNoSpace for ENOSPC)
  kCancelled,     // before_read said stop
  kInternal,      // memory, the engine itself, or a bookkeeping bug
};

struct CopyRequest {
  int src_fd = -1;  // not owned; read with pread semantics (positioned, O_NONBLOCK off)
  int dst_fd = -1;  // not owned; written at the same offsets
  uint64_t size = 0;
  bool dst_direct = false;  // dst_fd was opened with O_DIRECT
  uint32_t chunk_bytes = 1 << 20;
  bool register_buffers = true;
  // For messages: "promote shard-0042.tar", "remote file", "<cache>/tmp/<name>".
  std::string label, src_name, dst_name;
  // Called before each chunk is read, with its offset and length; an error
  // cancels the copy (CopyFault::kCancelled) and is returned as is. The
  // promoter paces promotions here.
  std::function<Status(uint64_t offset, uint32_t len)> before_read;
  // Called after each chunk is fully written: bytes written so far, of size.
  std::function<void(uint64_t copied, uint64_t total)> progress;
};

struct CopyResult {
  uint64_t checksum = 0;  // xxh3-64 of the `size` bytes copied
  uint64_t bytes = 0;
  bool fell_back_to_buffered = false;  // O_DIRECT was cleared on dst_fd during the copy
  uint64_t resubmits = 0;              // short transfers, EINTR/EAGAIN and EINVAL retries
};

// An engine and its chunk buffers, kept across copies: a promoter worker holds
// one while it has files queued, so that a warm of 20,000 files sets up one
// io_uring and pins one set of buffers per worker, not one per file.
//
// The buffers are engine->depth() anonymous mappings of chunk_bytes each
// (page-aligned, outside malloc's arenas: freeing them returns the memory to
// the kernel at once; buffers allocated and io_uring-registered per copy left
// the heap fragmented and grew the daemon by ~10-70 KB a file). They are
// registered with the engine when `register_buffers` and the engine allows
// (io_uring fixed buffers pin every page: resident for the kit's life);
// otherwise pages are touched only as chunks use them. Destruction waits for
// the engine's requests, then unmaps.
class CopyKit {
 public:
  // kInvalidArgument for a chunk size that is 0 or not a multiple of 4096,
  // kInternal when mmap fails (with its errno in the message).
  static Result<std::unique_ptr<CopyKit>> create(std::unique_ptr<IoEngine> engine,
                                                 uint32_t chunk_bytes, bool register_buffers);
  ~CopyKit();
  CopyKit(const CopyKit&) = delete;
  CopyKit& operator=(const CopyKit&) = delete;

  IoEngine& engine() { return *engine_; }
  unsigned slots() const { return static_cast<unsigned>(buffers_.size()); }
  char* buffer(unsigned i) const { return buffers_[i]; }
  uint32_t chunkBytes() const { return chunk_bytes_; }
  bool fixed() const { return fixed_; }  // buffers registered: requests may name them
  uint64_t bufferBytes() const { return uint64_t{chunk_bytes_} * buffers_.size(); }
  // False after a copy could not reap what it had in flight: drop the kit.
  bool usable() const { return usable_; }
  void markUnusable() { usable_ = false; }

 private:
  CopyKit() = default;
  uint32_t chunk_bytes_ = 0;
  bool fixed_ = false;
  bool usable_ = true;
  std::vector<char*> buffers_;
  std::unique_ptr<IoEngine> engine_;  // declared last: destroyed (drained) first
};

// Copies req.size bytes through the kit's engine and buffers (req.chunk_bytes
// must not exceed kit.chunkBytes()). Every request it submitted is reaped
// before it returns; should reaping fail, the kit is marked unusable. On
// error, *fault (when given) says which side failed.
Result<CopyResult> runCopyPipeline(CopyKit& kit, const CopyRequest& req,
                                   CopyFault* fault = nullptr);

// The same with a kit made for this one copy (req.chunk_bytes buffers, one per
// engine slot) and torn down after it.
Result<CopyResult> runCopyPipeline(std::unique_ptr<IoEngine> engine, const CopyRequest& req,
                                   CopyFault* fault = nullptr);

// The error for a failed write-side call on `what`: errno kept, EDQUOT turned
// into ENOSPC (a full quota is a full cache).
Error writeSideError(int err, std::string what);

}  // namespace hotshard
