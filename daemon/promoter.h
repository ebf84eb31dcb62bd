// Promoter: copies remote files into the cache store.
//
// A remote file is opened beneath a directory fd of the remote root opened
// before the mount (hotshard usually mounts over the remote itself, so a path
// string under the remote would lead back into our own mount), copied through
// an IoEngine into the store's tmp/ in chunks, several in flight, checksummed
// in order as it goes (xxh3-64; daemon/copy_pipeline.h), then published
// atomically, unless the remote
// changed meanwhile (validator fstat'ed before and after, path re-resolved) or
// the path was invalidated through the mount.
//
// Limits: max_concurrent promotions at once (queued ones wait), and one
// bytes/second token bucket shared by all of them (0 = unlimited).
//
// One remote read per byte: when the jobs have the file open, or had it
// moments ago, the copy reads through their open file (shared_source: the
// passthrough backing), not a new open, which on FUSE remotes such as sshfs
// would drop the page cache the jobs' reads just filled (fs/fuse/file.c,
// fuse_finish_open without FOPEN_KEEP_CACHE). Before each chunk the promoter
// asks which of its pages are resident (mincore(2) over a read-only mapping,
// mm/mincore.c) and counts the chunk's bytes as read from the page cache or
// from the remote. Reading what is not resident from the remote yields to the
// jobs: a chunk a job reading the same file is about to bring in is waited for
// (follow_idle), and while the jobs read the remote at more than
// yield_above bytes/s (setForegroundRemoteRate, from the probes) such a chunk
// waits up to yield_max. The validator rule is the same for every source.
//
// Memory: each worker keeps one CopyKit (an io_uring and queue_depth buffers
// of chunk_bytes, io_uring-registered, so resident) while files are queued and
// unmaps it when the queue runs dry; promote() on a caller's thread makes one
// for its copy. All buffers together stay within buffer_bytes: queue_depth is
// lowered to buffer_bytes / (chunk_bytes * max_concurrent) when it would not
// fit (create() refuses a cap below one chunk per promotion).
//
// Lock order: Promoter::mu_ and CacheStore's lock are never held together; the
// promoter calls the store without holding mu_. Callbacks run on the worker
// thread, without locks held.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <thread>
#include <set>
#include <unordered_set>
#include <vector>

#include "base/fd.h"
#include "daemon/cache_store.h"
#include "daemon/copy_pipeline.h"
#include "daemon/io_engine.h"
#include "daemon/rate_limiter.h"
#include "base/result.h"

namespace hotshard {

// Opens rel_path beneath root_fd without ever leaving it: absolute symlinks
// and ".." escapes are refused (they could lead into our own mount), as are
// magic links (openat2(2) RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS; O_NOFOLLOW
// on kernels before 5.6). An fd, or -1 with errno set.
int openBeneath(int root_fd, const std::string& rel_path, uint64_t flags);

// The largest promotion chunk: one chunk is one buffer and one I/O.
inline constexpr uint64_t kMaxPromoteChunk = 1ull << 30;

struct PromoterOptions {
  int remote_root_fd = -1;  // not owned; must outlive the promoter
  IoEngineKind io_engine = IoEngineKind::kUring;
  uint64_t chunk_bytes = 1 << 20;  // multiple of 4096, up to kMaxPromoteChunk
  unsigned queue_depth = 8;        // chunks in flight per promotion
  unsigned max_concurrent = 2;     // promotions at once (worker threads)
  // Most bytes of chunk buffers, all promotions together (see Memory above);
  // 0: no cap (queue_depth * chunk_bytes * max_concurrent).
  uint64_t buffer_bytes = 0;
  uint64_t bytes_per_sec = 0;      // all promotions together; 0 = unlimited
  bool direct_io = true;           // O_DIRECT writes where the cache fs allows
  bool preallocate = true;         // fallocate the whole file first: ENOSPC before copying
  bool register_buffers = true;    // io_uring fixed buffers (skipped if refused)
  // Called after each copy ends (on its worker thread, no locks held): how long the
  // copy took and how many bytes it copied. Metrics use it.
  std::function<void(const std::string& rel_path, const Status& result, double seconds,
                     uint64_t bytes)>
      on_finished;
  // Tests: called before each chunk is read, with the offset about to be read.
  std::function<void(const std::string& rel_path, uint64_t offset)> chunk_hook;
  // An fd of the remote file rel_path that the jobs have (or just had) open, whose
  // reads share the page cache their reads filled; invalid: open the remote file
  // afresh. Called on the worker thread; the promoter closes what it gets.
  std::function<UniqueFd(const std::string& rel_path)> shared_source;
  // Reading a shared source, how long a chunk not yet resident waits without the
  // page cache growing (a job reading the file ahead of the copy) before it is
  // read from the remote; after one such wait in vain the copy stops waiting.
  std::chrono::milliseconds follow_idle{300};
  // While the jobs read the remote faster than this (bytes/s), a chunk that must
  // come from the remote waits up to yield_max first. 0: never yield.
  uint64_t yield_above = 1 << 20;
  std::chrono::milliseconds yield_max{1000};
};

class Promoter {
 public:
  using ProgressFn = std::function<void(uint64_t copied, uint64_t total)>;
  using DoneFn = std::function<void(const Status&)>;

  // `store` must outlive the promoter.
  static Result<std::unique_ptr<Promoter>> create(CacheStore* store, PromoterOptions options);
  ~Promoter();  // shutdown()

  // Queues a promotion; `done` is called exactly once (also when cancelled by
  // shutdown). kExists if rel_path is already queued or in flight here,
  // kBusy after shutdown.
  Status enqueue(const std::string& rel_path, ProgressFn progress = nullptr, DoneFn done = nullptr);
  // Promotes on the calling thread (still within max_concurrent). Ok also when
  // it was already cached with the remote's current validator.
  Status promote(const std::string& rel_path, const ProgressFn& progress = nullptr);

  // Cancels queued promotions, stops those in flight (their tmp files are
  // removed) and joins the workers. Idempotent. Not from a callback (it would
  // join its own thread).
  void shutdown();

  void setRate(uint64_t bytes_per_sec);
  // How fast the jobs read the remote now (bytes/s, missed page cache; placement
  // sets it each tick from the probes). Promotions that must read the remote
  // yield while it is above yield_above.
  void setForegroundRemoteRate(uint64_t bytes_per_sec) { foreground_rate_ = bytes_per_sec; }
  uint64_t foregroundRemoteRate() const { return foreground_rate_; }

  struct Stats {
    uint64_t started = 0, published = 0, already_cached = 0;
    // Cached by linking to a hard link's copy of the same remote state
    // (CacheStore::linkCopy): no byte copied.
    uint64_t linked = 0;
    // The remote file went (removed or renamed away, like rsync's temp files)
    // before or during the copy: an outcome, not a failure.
    uint64_t vanished = 0;
    uint64_t failed_stale = 0;      // remote changed or path invalidated during the copy
    uint64_t failed_no_space = 0;   // ENOSPC or watermark
    uint64_t failed_remote_io = 0;  // open/read/stat of the remote failed
    uint64_t failed_cache_io = 0;   // write/fsync/rename in the cache failed
    uint64_t failed_cancelled = 0;
    uint64_t failed_other = 0;
    uint64_t bytes_copied = 0;
    // Bytes promotions read (published or not), by where they came from: pages
    // already in the remote file's page cache, or the remote itself.
    uint64_t read_page_cache_bytes = 0, read_remote_bytes = 0;
    uint64_t shared_sources = 0;  // copies read through the jobs' open file
    uint64_t yields = 0;          // chunks that waited for the jobs (follow or yield)
    uint64_t queued = 0, in_flight = 0;
  };
  Stats stats() const;
  // Bytes of rel_path copied so far by a promotion in flight; 0 when none is.
  uint64_t copiedSoFar(const std::string& rel_path) const;
  // Chunks in flight per promotion: queue_depth, or less under buffer_bytes.
  unsigned depth() const { return opts_.queue_depth; }

 private:
  enum class Fail { kNone, kStale, kNoSpace, kRemoteIo, kCacheIo, kVanished, kCancelled, kOther };
  struct Job {
    std::string rel_path;
    ProgressFn progress;
    DoneFn done;
    UniqueFd shared;  // shared_source's answer when it was queued
  };

  Promoter(CacheStore* store, PromoterOptions options);
  void workerLoop();
  // The kit a copy on this thread uses: the worker's own (made on first use),
  // or, for promote(), one for this copy only.
  Result<CopyKit*> kitFor(std::unique_ptr<CopyKit>* holder);
  bool acquireSlot();
  void releaseSlot();
  UniqueFd sharedSourceOf(const std::string& rel_path) const {
    return opts_.shared_source ? opts_.shared_source(rel_path) : UniqueFd();
  }
  Status run(const std::string& rel_path, const ProgressFn& progress, UniqueFd shared,
             std::unique_ptr<CopyKit>* kit);
  // One promotion, as stages; each failing stage sets *why and returns an
  // error that names what failed on what.
  Status copy(const std::string& rel_path, const ProgressFn& progress, UniqueFd shared,
              std::unique_ptr<CopyKit>* kit, Fail* why);
  struct Source;  // the remote file being copied
  // `shared` (may be invalid) is used when it is still the file at rel_path.
  Status openSource(const std::string& rel_path, UniqueFd shared, Source* src, Fail* why);
  Status waitForQuiet(const std::string& rel_path, Source* src, Fail* why);
  Result<std::unique_ptr<CacheStore::Pending>> reserve(const std::string& rel_path, uint64_t size,
                                                       Fail* why);
  Result<uint64_t> copyData(const std::string& rel_path, const Source& src,
                            const CacheStore::Pending& pending, const ProgressFn& progress,
                            std::unique_ptr<CopyKit>* kit, Fail* why);
  struct ChunkSplit;  // one copy's resident pages and its page cache / remote bytes
  // Before a chunk is read: wait for the jobs as the options say, then count
  // its bytes by source. An error cancels the copy (shutdown).
  Status beforeChunk(const std::string& rel_path, ChunkSplit& split, uint64_t offset,
                     uint32_t len);
  Status revalidate(const std::string& rel_path, Source* src, Fail* why);
  Status publish(std::unique_ptr<CacheStore::Pending> pending, const Validator& before,
                 uint64_t checksum, Fail* why);
  static Error failed(Fail* why, Fail f, Error e) {
    *why = f;
    return e;
  }
  // Which counter a failed write, fsync or rename in the cache goes to.
  static Fail cacheFail(const Error& e) {
    return e.code == Errc::kNoSpace ? Fail::kNoSpace : Fail::kCacheIo;
  }
  void count(Fail why, uint64_t bytes);

  CacheStore* store_;
  PromoterOptions opts_;
  TokenBucket bucket_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> foreground_rate_{0};

  mutable std::mutex mu_;  // guards everything below
  std::unordered_map<std::string, uint64_t> copied_;  // in flight: bytes copied so far
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::unordered_set<std::string> pending_;  // queued or in flight through enqueue()
  unsigned active_ = 0;                      // promotions copying now
  std::vector<std::thread> workers_;
  Stats stats_;
  // Remote files (st_dev, st_ino) with several names that a promotion is
  // copying now: the others of their names wait their turn (SameFileTurn)
  // and then link to its copy instead of copying it again.
  std::set<std::pair<uint64_t, uint64_t>> same_file_busy_;
  std::condition_variable turn_cv_;  // same_file_busy_ lost one, or stopping_
  class SameFileTurn;
};

}  // namespace hotshard
