// Trace formats read and written by the simulator. Readers work on std::istream, so
// policy/ stays free of file handling; the CLI opens the files.
//
// native (hotshard's own, little-endian):
//   header, 32 bytes: char magic[8] = "HSTRACE1"; u32 version = 1; u32 record_size = 56;
//                     u64 record_count (UINT64_MAX when the writer could not seek back);
//                     u64 reserved = 0
//   record, 56 bytes: u64 time_ns; u64 object_id; u64 object_size; u64 offset;
//                     u64 bytes_read; u64 bytes_missed; u32 flags; u32 dataset
//   dataset (Request::dataset) was a reserved zero before it was added, so older
//   recordings read as data set 0, unknown; the format version stays 1.
// csv (text, one request per line; '#' comments and blank lines skipped; an optional
//   header line starting with "time"):
//     time_ns,object_id,object_size[,offset[,bytes_read[,bytes_missed[,flags[,dataset]]]]]
//   defaults: offset 0, bytes_read = object_size, bytes_missed = bytes_read, flags 0,
//   dataset 0.
// oracleGeneral (libCacheSim's binary format, 24-byte packed little-endian records):
//     u32 timestamp (s); u64 obj_id; u32 obj_size; i64 next_access_vtime
//   next_access_vtime is the index of the next request to the same object, -1 (or
//   INT64_MAX) when there is none. Every request reads its object whole, from the
//   remote. The writer needs the whole trace to fill next_access_vtime, so it buffers.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"

namespace hotshard::policy {

// Flags of a record. Any of write, truncate, unlink and rename means the file changed
// through the mount (fuse/cache_hooks.h invalidate/beginWrite): it is not a read, and
// the cached copy of `id` is invalidated (a promotion in flight is cancelled).
// The object was written through the mount.
inline constexpr std::uint32_t kFlagWrite = 1u << 0;
inline constexpr std::uint32_t kFlagTruncate = 1u << 1;  // truncated (size: the new size)
inline constexpr std::uint32_t kFlagUnlink = 1u << 2;    // unlinked
inline constexpr std::uint32_t kFlagRename = 1u << 3;    // renamed away (id: the old path's)
inline constexpr std::uint32_t kInvalidatingFlags =
    kFlagWrite | kFlagTruncate | kFlagUnlink | kFlagRename;
// A sampled page-cache miss of bytes already recorded as read by another record (a
// sample-mode `trace record`): not a read of its own; it only says those bytes came
// from the remote. Older recordings without it count such misses twice.
inline constexpr std::uint32_t kFlagMissSample = 1u << 4;

// True when `flags` make a record a read of its object (neither an invalidation nor a
// repeated miss sample).
inline bool isRead(std::uint32_t flags) noexcept {
  return (flags & (kInvalidatingFlags | kFlagMissSample)) == 0;
}

struct Request {
  TimeNs time_ns = 0;
  ObjectId id = 0;
  std::uint64_t size = 0;
  std::uint64_t offset = 0;
  std::uint64_t bytes_read = 0;
  std::uint64_t bytes_missed = 0;
  std::uint32_t flags = 0;
  std::uint32_t dataset = 0;  // Access::dataset; 0: unknown

  Access access() const noexcept {
    return {id, size, bytes_read, bytes_missed, time_ns, dataset};
  }
  bool operator==(const Request&) const = default;
};

enum class TraceFormat { kNative, kCsv, kOracleGeneral };

// The data set of a file at `path` relative to the mount root: a 32-bit hash (FNV-1a) of
// its first path component, never 0; 0 for a file at the top level (no directory). So
// "imagenet/train/00001.tar" and "imagenet/val/x.tar" share one id.
std::uint32_t datasetOf(std::string_view path) noexcept;

Result<TraceFormat> parseTraceFormat(std::string_view name);  // native|csv|oracleGeneral
std::string_view traceFormatName(TraceFormat format);

inline constexpr char kNativeMagic[8] = {'H', 'S', 'T', 'R', 'A', 'C', 'E', '1'};
inline constexpr std::uint32_t kNativeVersion = 1;
inline constexpr std::size_t kNativeHeaderSize = 32;
inline constexpr std::size_t kNativeRecordSize = 56;
inline constexpr std::size_t kOracleRecordSize = 24;

class TraceReader {
 public:
  virtual ~TraceReader() = default;
  // The next request; false at the end or on error (then status() says what:
  // Errc::kCorrupt with "source:line: ..." for malformed input, kIo for the stream).
  virtual bool next(Request& out) = 0;
  // Back to the first request.
  virtual Status rewind() = 0;
  const Status& status() const { return error_; }

 protected:
  Status error_;
};

class TraceWriter {
 public:
  virtual ~TraceWriter() = default;
  // Errc::kIo when the stream fails; kUnsupported for what the format cannot hold.
  virtual Status write(const Request& request) = 0;
  // Flushes; the native writer fills in the record count when the stream can seek.
  virtual Status finish() = 0;
};

// `source` names the input in error messages ("trace.csv:12: ...").
std::unique_ptr<TraceReader> makeTraceReader(TraceFormat format, std::istream& in,
                                             std::string source);
std::unique_ptr<TraceWriter> makeTraceWriter(TraceFormat format, std::ostream& out);

// A reader over requests held in memory (generated traces, tests).
std::unique_ptr<TraceReader> makeMemoryReader(std::vector<Request> requests);

Result<std::vector<Request>> readAll(TraceReader& reader);

// One pass over a trace: what capacity percentages and bounds are computed from.
// Only reads (isRead()) count: objects only ever written, truncated or unlinked are not
// in the working set, so `--capacity 10%` is a share of the bytes the jobs read.
struct TraceStats {
  std::uint64_t requests = 0;           // reads
  std::uint64_t other_records = 0;      // invalidations and repeated miss samples
  std::uint64_t unique_objects = 0;     // objects read at least once
  std::uint64_t working_set_bytes = 0;  // sum over objects read of their (largest) size
  std::uint64_t bytes_read = 0;
  std::uint64_t first_read_bytes = 0;  // bytes read by each object's first read
};
Result<TraceStats> scanTrace(TraceReader& reader);

}  // namespace hotshard::policy
