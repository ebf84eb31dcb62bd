#include "daemon/promoter.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <cstdlib>
#include <cstring>

#include "base/clock.h"
#include "base/fd.h"

namespace hotshard {
namespace {

constexpr uint32_t kAlign = 4096;
// A file changed within this window before our first fstat may change again
// within the same timestamp tick without its mtime/ctime moving ("racy
// clean", as git calls it): wait it out before trusting the validator.
constexpr int64_t kRacyWindowNs = 50'000'000;

// Opens rel_path beneath root_fd without ever leaving it: absolute symlinks
// and ".." escapes are refused (they could lead into our own mount).
int openBeneath(int root_fd, const std::string& rel_path, uint64_t flags) {
  open_how how{};
  how.flags = flags | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  int fd;
  do {
    fd = static_cast<int>(::syscall(SYS_openat2, root_fd, rel_path.c_str(), &how, sizeof how));
  } while (fd < 0 && errno == EINTR);
  if (fd < 0 && errno == ENOSYS) {  // kernel < 5.6
    fd = ::openat(root_fd, rel_path.c_str(), static_cast<int>(flags) | O_CLOEXEC | O_NOFOLLOW);
  }
  return fd;
}

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

struct Slot {
  std::unique_ptr<char, FreeDeleter> buf;
  bool busy = false;
  uint64_t off = 0;
  uint32_t len = 0;     // data bytes of this chunk
  uint32_t wlen = 0;    // bytes to write (len rounded up for O_DIRECT)
  uint32_t filled = 0;  // bytes read so far
  uint32_t written = 0;
  bool read_done = false, hashed = false, write_done = false;
  bool write_direct = false;  // O_DIRECT was on when the write was submitted
};

}  // namespace

Promoter::Promoter(CacheStore* store, PromoterOptions options)
    : store_(store), opts_(std::move(options)) {
  bucket_.setRate(opts_.bytes_per_sec, opts_.chunk_bytes);
}

Result<std::unique_ptr<Promoter>> Promoter::create(CacheStore* store, PromoterOptions options) {
  if (store == nullptr) return makeError(Errc::kInvalidArgument, "promoter: no cache store");
  if (options.remote_root_fd < 0)
    return makeError(Errc::kInvalidArgument, "promoter: no remote root fd");
  if (options.chunk_bytes == 0 || options.chunk_bytes % kAlign != 0 ||
      options.chunk_bytes > (1u << 30)) {
    return makeError(Errc::kInvalidArgument,
                     fmt::format("promoter: chunk size {} must be a multiple of {} up to 1 GiB",
                                 options.chunk_bytes, kAlign));
  }
  if (options.queue_depth == 0 || options.queue_depth > 1024)
    return makeError(Errc::kInvalidArgument, "promoter: queue depth must be 1..1024");
  if (options.max_concurrent == 0 || options.max_concurrent > 256)
    return makeError(Errc::kInvalidArgument, "promoter: max concurrent must be 1..256");
  std::unique_ptr<Promoter> p(new Promoter(store, std::move(options)));
  for (unsigned i = 0; i < p->opts_.max_concurrent; ++i) {
    p->workers_.emplace_back([raw = p.get()] { raw->workerLoop(); });
  }
  return p;
}

Promoter::~Promoter() { shutdown(); }

void Promoter::shutdown() {
  {
    // Under mu_, so a worker between its predicate check and its wait
    // cannot miss the notification.
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  bucket_.wake();
  cv_.notify_all();
  std::vector<std::thread> workers;
  {
    std::lock_guard lock(mu_);
    workers.swap(workers_);
  }
  for (auto& t : workers) t.join();
  std::deque<Job> left;
  {
    std::lock_guard lock(mu_);
    left.swap(queue_);
    stats_.queued = 0;
    stats_.failed_cancelled += left.size();
    for (const auto& j : left) pending_.erase(j.rel_path);
  }
  for (auto& j : left) {
    if (j.done) j.done(makeError(Errc::kBusy, "promote " + j.rel_path + ": cancelled (shutdown)"));
  }
}

void Promoter::setRate(uint64_t bytes_per_sec) {
  bucket_.setRate(bytes_per_sec, opts_.chunk_bytes);
}

Status Promoter::enqueue(const std::string& rel_path, ProgressFn progress, DoneFn done) {
  RETURN_IF_ERROR(checkRelPath(rel_path));
  {
    std::lock_guard lock(mu_);
    if (stopping_) return makeError(Errc::kBusy, "promote " + rel_path + ": shutting down");
    if (!pending_.insert(rel_path).second)
      return makeError(Errc::kExists, "promote " + rel_path + ": already queued");
    queue_.push_back(Job{rel_path, std::move(progress), std::move(done)});
    ++stats_.queued;
  }
  cv_.notify_one();
  return Ok{};
}

void Promoter::workerLoop() {
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock,
               [&] { return stopping_ || (!queue_.empty() && active_ < opts_.max_concurrent); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      --stats_.queued;
      ++active_;
    }
    Status s = run(job.rel_path, job.progress);
    releaseSlot();
    {
      std::lock_guard lock(mu_);
      pending_.erase(job.rel_path);
    }
    if (job.done) job.done(s);
  }
}

bool Promoter::acquireSlot() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [&] { return stopping_ || active_ < opts_.max_concurrent; });
  if (stopping_) return false;
  ++active_;
  return true;
}

void Promoter::releaseSlot() {
  {
    std::lock_guard lock(mu_);
    --active_;
  }
  cv_.notify_all();
}

Status Promoter::promote(const std::string& rel_path, const ProgressFn& progress) {
  RETURN_IF_ERROR(checkRelPath(rel_path));
  if (!acquireSlot()) {
    std::lock_guard lock(mu_);
    ++stats_.failed_cancelled;
    return makeError(Errc::kBusy, "promote " + rel_path + ": cancelled (shutdown)");
  }
  Status s = run(rel_path, progress);
  releaseSlot();
  return s;
}

Promoter::Stats Promoter::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Promoter::count(Fail why, uint64_t bytes) {
  std::lock_guard lock(mu_);
  --stats_.in_flight;
  stats_.bytes_copied += bytes;
  switch (why) {
    case Fail::kNone:
      break;
    case Fail::kStale:
      ++stats_.failed_stale;
      break;
    case Fail::kNoSpace:
      ++stats_.failed_no_space;
      break;
    case Fail::kRemoteIo:
      ++stats_.failed_remote_io;
      break;
    case Fail::kCacheIo:
      ++stats_.failed_cache_io;
      break;
    case Fail::kNotFound:
      ++stats_.failed_not_found;
      break;
    case Fail::kCancelled:
      ++stats_.failed_cancelled;
      break;
    case Fail::kOther:
      ++stats_.failed_other;
      break;
  }
}

Status Promoter::run(const std::string& rel_path, const ProgressFn& progress) {
  {
    std::lock_guard lock(mu_);
    ++stats_.started;
    ++stats_.in_flight;
  }
  Fail why = Fail::kOther;
  auto t0 = std::chrono::steady_clock::now();
  uint64_t copied = 0;
  Status s = copy(rel_path, [&](uint64_t done, uint64_t total) {
    copied = done;
    if (progress) progress(done, total);
  }, &why);
  if (!s.ok()) {
    if (why == Fail::kNone) why = Fail::kOther;
    if (s.error().code == Errc::kNoSpace) why = Fail::kNoSpace;
    spdlog::debug("{}", s.error().message);
  }
  count(s.ok() ? Fail::kNone : why, 0);
  if (opts_.on_finished) {
    opts_.on_finished(rel_path, s,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                      copied);
  }
  return s;
}

Status Promoter::copy(const std::string& rel, const ProgressFn& progress, Fail* why) {
  auto fail = [&](Fail f, Error e) -> Status {
    *why = f;
    return e;
  };
  // O_NONBLOCK: opening a FIFO must not hang us. It is cleared again below,
  // since io_uring answers EAGAIN on O_NONBLOCK files instead of waiting.
  UniqueFd src(openBeneath(opts_.remote_root_fd, rel, O_RDONLY | O_NONBLOCK));
  if (src.get() < 0) {
    int err = errno;
    return fail(err == ENOENT ? Fail::kNotFound : Fail::kRemoteIo,
                sysError(err, fmt::format("promote {}: open remote file", rel)));
  }
  struct stat st {};
  if (::fstat(src.get(), &st) != 0)
    return fail(Fail::kRemoteIo, lastSysError(fmt::format("promote {}: stat remote file", rel)));
  if (!S_ISREG(st.st_mode)) {
    return fail(Fail::kOther, makeError(Errc::kInvalidArgument,
                                        fmt::format("promote {}: not a regular file", rel)));
  }
  if (int fl = ::fcntl(src.get(), F_GETFL);
      fl < 0 || ::fcntl(src.get(), F_SETFL, fl & ~O_NONBLOCK) != 0)
    return fail(Fail::kRemoteIo, lastSysError(fmt::format("promote {}: fcntl remote file", rel)));
  for (int i = 0; i < 20; ++i) {
    int64_t age = wallNs() - validatorOf(st).ctime_ns;
    if (age < 0 || age >= kRacyWindowNs) break;
    std::this_thread::sleep_for(std::chrono::nanoseconds(kRacyWindowNs - age));
    if (::fstat(src.get(), &st) != 0)
      return fail(Fail::kRemoteIo, lastSysError(fmt::format("promote {}: stat remote file", rel)));
  }
  const Validator before = validatorOf(st);
  if (store_->isCached(rel, before)) {
    std::lock_guard lock(mu_);
    ++stats_.already_cached;
    *why = Fail::kNone;
    return Ok{};
  }
  const uint64_t size = before.size;

  auto begun = store_->beginPromotion(rel, size, opts_.direct_io);
  if (!begun.ok()) {
    Error e = begun.takeError();
    return fail(e.code == Errc::kNoSpace ? Fail::kNoSpace
                : e.code == Errc::kBusy  ? Fail::kOther
                                         : Fail::kCacheIo,
                std::move(e));
  }
  std::unique_ptr<CacheStore::Pending> pending = std::move(begun).value();
  const int dst = pending->fd();
  const std::string& tmp = pending->tmpPath();
  bool direct = pending->direct();

  auto cacheError = [&](int err, const std::string& what) {
    return fail(
        err == ENOSPC || err == EDQUOT ? Fail::kNoSpace : Fail::kCacheIo,
        sysError(err == EDQUOT ? ENOSPC : err, fmt::format("promote {}: {} {}", rel, what, tmp)));
  };
  if (size > 0 && opts_.preallocate && ::fallocate(dst, 0, 0, static_cast<off_t>(size)) != 0 &&
      errno != EOPNOTSUPP && errno != ENOSYS) {
    return cacheError(errno, fmt::format("fallocate {} bytes for", size));
  }
  ::posix_fadvise(src.get(), 0, 0, POSIX_FADV_SEQUENTIAL);

  // Buffers are declared before the engine so that the engine (which waits
  // for in-flight requests when destroyed) goes first on every return path.
  const unsigned depth = opts_.queue_depth;
  std::vector<Slot> slots(depth);
  for (auto& s : slots) {
    void* mem = nullptr;
    if (posix_memalign(&mem, kAlign, opts_.chunk_bytes) != 0)
      return fail(Fail::kOther, makeError(Errc::kInternal, "promote " + rel + ": out of memory"));
    s.buf.reset(static_cast<char*>(mem));
  }
  struct HashState {
    XXH3_state_t* s = XXH3_createState();
    ~HashState() { XXH3_freeState(s); }
  } hash;
  XXH3_64bits_reset(hash.s);
  std::unique_ptr<IoEngine> engine = makeIoEngine(opts_.io_engine, depth);
  bool fixed = false;
  if (opts_.register_buffers && std::string_view(engine->name()) == "uring") {
    std::vector<iovec> iov;
    for (auto& s : slots) iov.push_back(iovec{s.buf.get(), opts_.chunk_bytes});
    Status reg = engine->registerBuffers(iov);
    fixed = reg.ok();
    if (!reg.ok()) spdlog::debug("promote {}: {}; plain buffers", rel, reg.error().message);
  }

  uint64_t next_off = 0, hash_off = 0, done_bytes = 0;
  bool failed = false;
  Status result = Ok{};
  auto setFailed = [&](Status s) {
    if (!failed) result = std::move(s);
    failed = true;
  };
  auto submitRead = [&](unsigned i) {
    Slot& s = slots[i];
    return engine->submit(IoRequest{IoOp::kRead, src.get(), s.buf.get() + s.filled,
                                    s.len - s.filled, s.off + s.filled, uint64_t{i} << 1,
                                    fixed ? static_cast<int>(i) : -1});
  };
  auto submitWrite = [&](unsigned i) {
    Slot& s = slots[i];
    s.write_direct = direct;
    return engine->submit(IoRequest{IoOp::kWrite, dst, s.buf.get() + s.written, s.wlen - s.written,
                                    s.off + s.written, uint64_t{i} << 1 | 1,
                                    fixed ? static_cast<int>(i) : -1});
  };
  auto hashInOrder = [&] {
    for (bool progressed = true; progressed;) {
      progressed = false;
      for (auto& s : slots) {
        if (s.busy && s.read_done && !s.hashed && s.off == hash_off) {
          XXH3_64bits_update(hash.s, s.buf.get(), s.len);
          hash_off += s.len;
          s.hashed = true;
          if (s.write_done) s.busy = false;
          progressed = true;
        }
      }
    }
  };

  std::vector<IoCompletion> completions;
  for (;;) {
    while (!failed && next_off < size) {
      unsigned i = 0;
      while (i < depth && slots[i].busy) ++i;
      if (i == depth) break;
      if (opts_.chunk_hook) opts_.chunk_hook(rel, next_off);
      uint32_t len = static_cast<uint32_t>(std::min<uint64_t>(opts_.chunk_bytes, size - next_off));
      if (stopping_ || !bucket_.acquire(len, [&] { return stopping_.load(); })) {
        setFailed(fail(Fail::kCancelled,
                       makeError(Errc::kBusy, "promote " + rel + ": cancelled (shutdown)")));
        break;
      }
      Slot& s = slots[i];
      s.busy = true;
      s.off = next_off;
      s.len = len;
      s.filled = s.written = 0;
      s.read_done = s.hashed = s.write_done = false;
      Status sub = submitRead(i);
      if (!sub.ok()) {
        setFailed(fail(Fail::kOther, sub.takeError()));
        break;
      }
      next_off += len;
    }
    if (engine->inFlight() == 0) break;
    completions.clear();
    auto reaped = engine->reap(&completions, 1);
    if (!reaped.ok()) {
      // The engine's destructor still waits for what is in flight.
      setFailed(fail(Fail::kOther, reaped.takeError()));
      break;
    }
    for (const auto& c : completions) {
      unsigned i = static_cast<unsigned>(c.user_data >> 1);
      bool is_write = (c.user_data & 1) != 0;
      Slot& s = slots[i];
      if (failed) {
        s.busy = false;
        continue;
      }
      Status sub = Ok{};
      if (!is_write) {
        if (c.result == -EINTR || c.result == -EAGAIN) {
          sub = submitRead(i);
        } else if (c.result < 0) {
          setFailed(fail(Fail::kRemoteIo,
                         sysError(static_cast<int>(-c.result),
                                  fmt::format("promote {}: read remote file at offset {}", rel,
                                              s.off + s.filled))));
          continue;
        } else if (c.result == 0) {
          setFailed(fail(
              Fail::kStale,
              makeError(Errc::kStale, fmt::format("promote {}: remote file shrank during the copy "
                                                  "(end of file at {}, expected {} bytes); not "
                                                  "published",
                                                  rel, s.off + s.filled, size))));
          continue;
        } else if ((s.filled += static_cast<uint32_t>(c.result)) < s.len) {
          sub = submitRead(i);
        } else {
          s.read_done = true;
          s.wlen = s.len;
          if (direct && s.len % kAlign != 0) {
            // Unaligned tail: pad with zeros; the file is truncated to size at the end.
            s.wlen = (s.len + kAlign - 1) / kAlign * kAlign;
            std::memset(s.buf.get() + s.len, 0, s.wlen - s.len);
          }
          hashInOrder();
          sub = submitWrite(i);
        }
      } else {
        if (c.result == -EINVAL && s.write_direct) {
          // The cache file system refused O_DIRECT for this request: go buffered.
          if (direct) {
            int fl = ::fcntl(dst, F_GETFL);
            if (fl < 0 || ::fcntl(dst, F_SETFL, fl & ~O_DIRECT) != 0) {
              setFailed(cacheError(errno, "clear O_DIRECT on"));
              continue;
            }
            direct = false;
            spdlog::info("promote {}: O_DIRECT write refused on {}; using buffered writes", rel,
                         tmp);
          }
          sub = submitWrite(i);
        } else if (c.result == -EINTR || c.result == -EAGAIN) {
          sub = submitWrite(i);
        } else if (c.result < 0) {
          setFailed(cacheError(static_cast<int>(-c.result), "pwrite"));
          continue;
        } else if ((s.written += static_cast<uint32_t>(c.result)) < s.wlen) {
          if (direct && s.written % kAlign != 0) {  // cannot go on aligned
            int fl = ::fcntl(dst, F_GETFL);
            if (fl >= 0) ::fcntl(dst, F_SETFL, fl & ~O_DIRECT);
            direct = false;
          }
          sub = submitWrite(i);
        } else {
          s.write_done = true;
          done_bytes += s.len;
          if (s.hashed) s.busy = false;
          if (progress) progress(done_bytes, size);
        }
      }
      if (!sub.ok()) setFailed(fail(Fail::kOther, sub.takeError()));
    }
  }
  engine.reset();  // all requests are done with the buffers
  if (failed) return result;
  if (hash_off != size) {
    return fail(Fail::kOther,
                makeError(Errc::kInternal,
                          fmt::format("promote {}: hashed {} of {} bytes", rel, hash_off, size)));
  }
  struct stat dst_st {};
  if (::fstat(dst, &dst_st) != 0) return cacheError(errno, "stat");
  if (static_cast<uint64_t>(dst_st.st_size) != size &&
      ::ftruncate(dst, static_cast<off_t>(size)) != 0) {
    return cacheError(errno, "ftruncate");
  }

  // Did the remote change or move while we copied?
  if (::fstat(src.get(), &st) != 0)
    return fail(Fail::kRemoteIo, lastSysError(fmt::format("promote {}: stat remote file", rel)));
  const Validator after = validatorOf(st);
  if (!(after == before)) {
    return fail(Fail::kStale,
                makeError(Errc::kStale,
                          fmt::format("promote {}: remote file changed during the copy (before: "
                                      "{}; after: {}); not published",
                                      rel, toString(before), toString(after))));
  }
  if (st.st_nlink == 0) {
    return fail(Fail::kStale,
                makeError(Errc::kStale, fmt::format("promote {}: remote file was removed during "
                                                    "the copy; not published",
                                                    rel)));
  }
  {
    UniqueFd again(openBeneath(opts_.remote_root_fd, rel, O_PATH));
    struct stat st2 {};
    if (again.get() < 0 || ::fstat(again.get(), &st2) != 0) {
      int err = errno;
      Error e = sysError(err, fmt::format("promote {}: re-resolve remote path after the copy; "
                                          "not published",
                                          rel));
      if (err == ENOENT) e.code = Errc::kStale;  // removed (or its file system went) meanwhile
      return fail(err == ENOENT ? Fail::kStale : Fail::kRemoteIo, std::move(e));
    }
    if (validatorOf(st2).ino != before.ino || validatorOf(st2).dev != before.dev) {
      return fail(Fail::kStale,
                  makeError(Errc::kStale, fmt::format("promote {}: remote path names another file "
                                                      "now (replaced during the copy); not "
                                                      "published",
                                                      rel)));
    }
  }

  Status pub = store_->publish(std::move(pending), before, XXH3_64bits_digest(hash.s));
  if (!pub.ok()) {
    Error e = pub.takeError();
    Fail f = e.code == Errc::kStale     ? Fail::kStale
             : e.code == Errc::kNoSpace ? Fail::kNoSpace
                                        : Fail::kCacheIo;
    return fail(f, std::move(e));
  }
  {
    std::lock_guard lock(mu_);
    ++stats_.published;
    stats_.bytes_copied += size;
  }
  *why = Fail::kNone;
  return Ok{};
}

}  // namespace hotshard
