#include "daemon/promoter.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "base/clock.h"
#include "base/fd.h"
#include "daemon/copy_pipeline.h"

namespace hotshard {
namespace {

constexpr uint32_t kAlign = 4096;
// A file changed within this window before our first fstat may change again
// within the same timestamp tick without its mtime/ctime moving ("racy
// clean", as git calls it): wait it out before trusting the validator.
constexpr int64_t kRacyWindowNs = 50'000'000;

// Lowers queue_depth so that every promotion's buffers fit in buffer_bytes.
Status capDepth(PromoterOptions& o) {
  if (o.buffer_bytes == 0) return Ok{};
  const uint64_t per_chunk_set = o.chunk_bytes * o.max_concurrent;
  if (o.buffer_bytes < per_chunk_set) {
    return makeError(Errc::kInvalidArgument,
                     fmt::format("promoter: buffers capped at {} bytes, below one {}-byte chunk "
                                 "for each of {} promotions",
                                 o.buffer_bytes, o.chunk_bytes, o.max_concurrent));
  }
  const uint64_t fits = o.buffer_bytes / per_chunk_set;
  if (fits < o.queue_depth) {
    spdlog::info("promoter: {} chunk(s) in flight per promotion, not {}: buffers capped at {} bytes",
                 fits, o.queue_depth, o.buffer_bytes);
    o.queue_depth = static_cast<unsigned>(fits);
  }
  return Ok{};
}

// Which bytes of a file are in its page cache: mincore(2) over a read-only
// private mapping answers for the file's own pages where nothing is mapped
// (mm/mincore.c, mincore_page); the mapping is never touched, so a file that
// shrinks meanwhile raises no SIGBUS. The kernel answers truthfully only to
// whoever owns the file, may write it or holds CAP_FOWNER (can_do_mincore;
// to others it says every page is resident): for them residency is unknown,
// and every byte counts as read from the remote.
//
// Once the copy starts reading the remote, its own readahead brings in pages
// beyond what it asked for; freeze() takes a snapshot then, and from there on
// only pages resident in it as well count (a page a job brings in later counts
// as remote: the split errs towards the remote).
class Residency {
 public:
  Residency(int fd, const struct stat& st) : size_(static_cast<uint64_t>(st.st_size)) {
    if (size_ == 0 || !mayAsk(fd, st)) return;
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      spdlog::debug("mmap of a remote file for mincore: {}; residency unknown",
                    std::strerror(errno));
      return;
    }
    map_ = static_cast<char*>(p);
  }
  ~Residency() {
    if (map_ != nullptr) ::munmap(map_, size_);
  }
  Residency(const Residency&) = delete;
  Residency& operator=(const Residency&) = delete;

  // Resident bytes of [off, off + len) within the file as it was mapped; 0 when unknown.
  uint64_t residentBytes(uint64_t off, uint64_t len) {
    if (map_ == nullptr || len == 0 || off >= size_) return 0;
    len = std::min(len, size_ - off);
    const uint64_t page = pageSize();
    const uint64_t first = off / page, last = (off + len - 1) / page;
    if (!ask(first, last)) return 0;
    uint64_t n = 0;
    for (uint64_t i = first; i <= last; ++i) {
      if ((vec_[i - first] & 1) == 0 || (frozen_ && !snapshot_[i])) continue;
      n += std::min(off + len, (i + 1) * page) - std::max(off, i * page);
    }
    return n;
  }
  void freeze() {
    if (map_ == nullptr || frozen_) return;
    const uint64_t page = pageSize(), pages = (size_ + page - 1) / page;
    constexpr uint64_t kStep = 16384;  // pages per mincore call: 64 MiB of 4 KiB pages
    snapshot_.assign(pages, false);
    for (uint64_t first = 0; first < pages; first += kStep) {
      uint64_t last = std::min(pages, first + kStep) - 1;
      if (!ask(first, last)) continue;  // unknown: not resident
      for (uint64_t i = first; i <= last; ++i) snapshot_[i] = (vec_[i - first] & 1) != 0;
    }
    frozen_ = true;
  }

 private:
  static uint64_t pageSize() {
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    return page;
  }
  static bool mayAsk(int fd, const struct stat& st) {
    if (::geteuid() == 0 || st.st_uid == ::geteuid()) return true;
    int fl = ::fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
  }
  // mincore of pages [first, last] into vec_.
  bool ask(uint64_t first, uint64_t last) {
    const uint64_t page = pageSize();
    vec_.resize(last - first + 1);
    return ::mincore(map_ + first * page, (last - first + 1) * page, vec_.data()) == 0;
  }
  uint64_t size_;
  char* map_ = nullptr;
  std::vector<unsigned char> vec_;
  bool frozen_ = false;
  std::vector<bool> snapshot_;  // page i was resident at freeze()
};

}  // namespace

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

Promoter::Promoter(CacheStore* store, PromoterOptions options)
    : store_(store), opts_(std::move(options)) {
  bucket_.setRate(opts_.bytes_per_sec, opts_.chunk_bytes);
}

Result<std::unique_ptr<Promoter>> Promoter::create(CacheStore* store, PromoterOptions options) {
  if (store == nullptr) return makeError(Errc::kInvalidArgument, "promoter: no cache store");
  if (options.remote_root_fd < 0)
    return makeError(Errc::kInvalidArgument, "promoter: no remote root fd");
  if (options.chunk_bytes == 0 || options.chunk_bytes % kAlign != 0 ||
      options.chunk_bytes > kMaxPromoteChunk) {
    return makeError(Errc::kInvalidArgument,
                     fmt::format("promoter: chunk size {} must be a multiple of {} up to 1 GiB",
                                 options.chunk_bytes, kAlign));
  }
  if (options.queue_depth == 0 || options.queue_depth > 1024)
    return makeError(Errc::kInvalidArgument, "promoter: queue depth must be 1..1024");
  if (options.max_concurrent == 0 || options.max_concurrent > 256)
    return makeError(Errc::kInvalidArgument, "promoter: max concurrent must be 1..256");
  RETURN_IF_ERROR(capDepth(options));
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
  turn_cv_.notify_all();
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
  }
  // Taken now, while the jobs' reads are fresh in the page cache; no lock held.
  UniqueFd shared = sharedSourceOf(rel_path);
  {
    std::lock_guard lock(mu_);
    if (stopping_) {
      pending_.erase(rel_path);
      return makeError(Errc::kBusy, "promote " + rel_path + ": shutting down");
    }
    queue_.push_back(Job{rel_path, std::move(progress), std::move(done), std::move(shared)});
    ++stats_.queued;
  }
  cv_.notify_one();
  return Ok{};
}

void Promoter::workerLoop() {
  std::unique_ptr<CopyKit> kit;  // kept while files are queued
  for (;;) {
    Job job;
    {
      std::unique_lock lock(mu_);
      if (queue_.empty() && kit) {
        lock.unlock();
        kit.reset();  // idle: the buffers go back to the kernel
        lock.lock();
      }
      cv_.wait(lock,
               [&] { return stopping_ || (!queue_.empty() && active_ < opts_.max_concurrent); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      --stats_.queued;
      ++active_;
    }
    Status s = run(job.rel_path, job.progress, std::move(job.shared), &kit);
    releaseSlot();
    {
      std::lock_guard lock(mu_);
      pending_.erase(job.rel_path);
    }
    if (job.done) job.done(s);
  }
}

Result<CopyKit*> Promoter::kitFor(std::unique_ptr<CopyKit>* holder) {
  if (*holder && !(*holder)->usable()) holder->reset();
  if (!*holder) {
    ASSIGN_OR_RETURN(*holder,
                     CopyKit::create(makeIoEngine(opts_.io_engine, opts_.queue_depth),
                                     static_cast<uint32_t>(opts_.chunk_bytes),  // <= 1 GiB
                                     opts_.register_buffers));
  }
  return holder->get();
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
  std::unique_ptr<CopyKit> kit;  // this copy's only
  Status s = run(rel_path, progress, sharedSourceOf(rel_path), &kit);
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
    case Fail::kVanished:
      ++stats_.vanished;
      break;
    case Fail::kCancelled:
      ++stats_.failed_cancelled;
      break;
    case Fail::kOther:
      ++stats_.failed_other;
      break;
  }
}

uint64_t Promoter::copiedSoFar(const std::string& rel_path) const {
  std::lock_guard lock(mu_);
  auto it = copied_.find(rel_path);
  return it == copied_.end() ? 0 : it->second;
}

Status Promoter::run(const std::string& rel_path, const ProgressFn& progress, UniqueFd shared,
                     std::unique_ptr<CopyKit>* kit) {
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
    {
      std::lock_guard lock(mu_);
      copied_[rel_path] = done;
    }
    if (progress) progress(done, total);
  }, std::move(shared), kit, &why);
  {
    std::lock_guard lock(mu_);
    copied_.erase(rel_path);
  }
  if (!s.ok()) {
    if (why == Fail::kNone) why = Fail::kOther;
    if (s.error().code == Errc::kNoSpace) why = Fail::kNoSpace;
    if (why == Fail::kVanished) {
      spdlog::info("promote {}: the remote file vanished (removed or renamed); nothing to cache",
                   rel_path);
    } else {
      spdlog::debug("{}", s.error().message);
    }
  }
  count(s.ok() ? Fail::kNone : why, 0);
  if (opts_.on_finished) {
    opts_.on_finished(rel_path, s,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
                      copied);
  }
  return s;
}

struct Promoter::Source {
  UniqueFd fd;
  bool shared = false;  // the jobs' open file (shared_source), not our own open
  struct stat st {};
  Validator before;  // what the copy is made from, once the file is quiet
};

// Names of one remote file are promoted one at a time (a warm of a directory
// copies several files at once): the later ones then find the first's copy.
class Promoter::SameFileTurn {
 public:
  explicit SameFileTurn(Promoter& p) : p_(p) {}
  SameFileTurn(const SameFileTurn&) = delete;
  SameFileTurn& operator=(const SameFileTurn&) = delete;
  ~SameFileTurn() {
    if (!held_) return;
    {
      std::lock_guard lock(p_.mu_);
      p_.same_file_busy_.erase(key_);
    }
    p_.turn_cv_.notify_all();
  }
  // Waits while another promotion copies (dev, ino); false at shutdown.
  bool take(const Validator& v) {
    key_ = {v.dev, v.ino};
    std::unique_lock lock(p_.mu_);
    p_.turn_cv_.wait(lock, [&] { return p_.stopping_ || p_.same_file_busy_.count(key_) == 0; });
    if (p_.stopping_) return false;
    held_ = p_.same_file_busy_.insert(key_).second;
    return true;
  }

 private:
  Promoter& p_;
  std::pair<uint64_t, uint64_t> key_;
  bool held_ = false;
};

Status Promoter::copy(const std::string& rel, const ProgressFn& progress, UniqueFd shared,
                      std::unique_ptr<CopyKit>* kit, Fail* why) {
  Source src;
  RETURN_IF_ERROR(openSource(rel, std::move(shared), &src, why));
  RETURN_IF_ERROR(waitForQuiet(rel, &src, why));
  SameFileTurn turn(*this);
  if (src.st.st_nlink > 1 && !turn.take(src.before)) {
    return failed(why, Fail::kCancelled,
                  makeError(Errc::kBusy, "promote " + rel + ": cancelled (shutdown)"));
  }
  if (store_->isCached(rel, src.before)) {
    std::lock_guard lock(mu_);
    ++stats_.already_cached;
    *why = Fail::kNone;
    return Ok{};
  }
  // A hard link of a file cached from this very state shares its copy; if
  // none is (or it cannot be shared), the file is copied as any other.
  if (src.st.st_nlink > 1) {
    Status linked = store_->linkCopy(rel, src.before);
    if (linked.ok()) {
      std::lock_guard lock(mu_);
      ++stats_.linked;
      *why = Fail::kNone;
      return Ok{};
    }
    if (linked.error().code != Errc::kNotFound) spdlog::debug("{}", linked.error().message);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<CacheStore::Pending> pending,
                   reserve(rel, src.before.size, why));
  ASSIGN_OR_RETURN(uint64_t checksum, copyData(rel, src, *pending, progress, kit, why));
  RETURN_IF_ERROR(revalidate(rel, &src, why));
  RETURN_IF_ERROR(publish(std::move(pending), src.before, checksum, why));
  *why = Fail::kNone;
  return Ok{};
}

// The jobs' file when rel still names it (a regular file, by construction of
// the passthrough backing); otherwise a new open of rel.
Status Promoter::openSource(const std::string& rel, UniqueFd shared, Source* src, Fail* why) {
  if (shared) {
    UniqueFd at(openBeneath(opts_.remote_root_fd, rel, O_PATH));
    struct stat path_st {};
    if (at && ::fstat(at.get(), &path_st) == 0 && ::fstat(shared.get(), &src->st) == 0 &&
        S_ISREG(src->st.st_mode) && path_st.st_dev == src->st.st_dev &&
        path_st.st_ino == src->st.st_ino) {
      src->fd = std::move(shared);
      src->shared = true;
      std::lock_guard lock(mu_);
      ++stats_.shared_sources;
      return Ok{};
    }
  }
  // O_NONBLOCK: opening a FIFO must not hang us. It is cleared again below,
  // since io_uring answers EAGAIN on O_NONBLOCK files instead of waiting.
  src->fd.reset(openBeneath(opts_.remote_root_fd, rel, O_RDONLY | O_NONBLOCK));
  if (!src->fd) {
    int err = errno;
    return failed(why, err == ENOENT ? Fail::kVanished : Fail::kRemoteIo,
                  sysError(err, fmt::format("promote {}: open remote file", rel)));
  }
  if (::fstat(src->fd.get(), &src->st) != 0) {
    return failed(why, Fail::kRemoteIo,
                  lastSysError(fmt::format("promote {}: stat remote file", rel)));
  }
  if (!S_ISREG(src->st.st_mode)) {
    return failed(
        why, Fail::kOther,
        makeError(Errc::kInvalidArgument, fmt::format("promote {}: not a regular file", rel)));
  }
  if (int fl = ::fcntl(src->fd.get(), F_GETFL);
      fl < 0 || ::fcntl(src->fd.get(), F_SETFL, fl & ~O_NONBLOCK) != 0) {
    return failed(why, Fail::kRemoteIo,
                  lastSysError(fmt::format("promote {}: fcntl remote file", rel)));
  }
  return Ok{};
}

// A file changed within kRacyWindowNs before our fstat may change again
// without its timestamps moving: wait until it has been quiet that long.
Status Promoter::waitForQuiet(const std::string& rel, Source* src, Fail* why) {
  for (int i = 0; i < 20; ++i) {
    int64_t age = wallNs() - validatorOf(src->st).ctime_ns;
    if (age < 0 || age >= kRacyWindowNs) break;
    std::this_thread::sleep_for(std::chrono::nanoseconds(kRacyWindowNs - age));
    if (::fstat(src->fd.get(), &src->st) != 0) {
      return failed(why, Fail::kRemoteIo,
                    lastSysError(fmt::format("promote {}: stat remote file", rel)));
    }
  }
  src->before = validatorOf(src->st);
  return Ok{};
}

// Room in the store and a tmp file, preallocated so that a full cache shows
// before copying rather than halfway.
Result<std::unique_ptr<CacheStore::Pending>> Promoter::reserve(const std::string& rel,
                                                               uint64_t size, Fail* why) {
  auto begun = store_->beginPromotion(rel, size, opts_.direct_io);
  if (!begun.ok()) {
    Error e = begun.takeError();
    // kInvalidArgument: a path the cache cannot label (CacheStore::beginPromotion).
    bool other = e.code == Errc::kBusy || e.code == Errc::kInvalidArgument;
    return failed(why, other ? Fail::kOther : cacheFail(e), std::move(e));
  }
  std::unique_ptr<CacheStore::Pending> pending = std::move(begun).value();
  if (size > 0 && opts_.preallocate &&
      ::fallocate(pending->fd(), 0, 0, static_cast<off_t>(size)) != 0 && errno != EOPNOTSUPP &&
      errno != ENOSYS) {
    Error e = writeSideError(
        errno, fmt::format("promote {}: fallocate {} bytes for {}", rel, size, pending->tmpPath()));
    store_->noteIoError(e);  // EIO, EROFS: the disk is failing, not this file
    return failed(why, cacheFail(e), std::move(e));
  }
  return pending;
}

struct Promoter::ChunkSplit {
  ChunkSplit(int fd, const struct stat& st, bool follow) : residency(fd, st), following(follow) {}
  Residency residency;
  bool following;  // still waiting for a job that reads the file ahead of the copy
  uint64_t page_cache = 0, remote = 0, yields = 0;
};

Status Promoter::beforeChunk(const std::string& rel, ChunkSplit& split, uint64_t offset,
                             uint32_t len) {
  using std::chrono::milliseconds;
  auto cancelled = [&] {
    return makeError(Errc::kBusy, "promote " + rel + ": cancelled (shutdown)");
  };
  if (opts_.chunk_hook) opts_.chunk_hook(rel, offset);
  uint64_t resident = split.residency.residentBytes(offset, len);
  // Behind a job's readahead: wait while the chunk's pages keep arriving (a
  // minute at most, should pages come and go).
  if (resident < len && split.following) {
    ++split.yields;
    auto idle_since = std::chrono::steady_clock::now();
    const auto give_up = idle_since + std::chrono::minutes(1);
    while (resident < len && !stopping_ && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(milliseconds(10));
      uint64_t now_resident = split.residency.residentBytes(offset, len);
      if (now_resident > resident) idle_since = std::chrono::steady_clock::now();
      resident = now_resident;
      if (std::chrono::steady_clock::now() - idle_since >= opts_.follow_idle) {
        split.following = false;  // no job is bringing it in: read it ourselves
        break;
      }
    }
  }
  // The rest comes from the remote: let the jobs' reads of it go first.
  if (resident < len && opts_.yield_above > 0 && foreground_rate_ > opts_.yield_above) {
    ++split.yields;
    auto until = std::chrono::steady_clock::now() + opts_.yield_max;
    while (!stopping_ && foreground_rate_ > opts_.yield_above &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(milliseconds(20));
    }
  }
  if (resident < len) {  // the copy reads the remote from here on
    split.residency.freeze();
    resident = split.residency.residentBytes(offset, len);
  }
  if (stopping_ || !bucket_.acquire(len, [&] { return stopping_.load(); })) return cancelled();
  split.page_cache += resident;
  split.remote += len - resident;
  return Ok{};
}

// The bytes, through the copy pipeline, paced by the rate limit; the checksum.
Result<uint64_t> Promoter::copyData(const std::string& rel, const Source& src,
                                    const CacheStore::Pending& pending, const ProgressFn& progress,
                                    std::unique_ptr<CopyKit>* kit, Fail* why) {
  auto have = kitFor(kit);
  if (!have.ok()) return failed(why, Fail::kOther, have.takeError());
  // Not on the jobs' file: its readahead state is theirs.
  if (!src.shared) ::posix_fadvise(src.fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  ChunkSplit split(src.fd.get(), src.st, src.shared && opts_.follow_idle.count() > 0);
  CopyRequest req{
      .src_fd = src.fd.get(),
      .dst_fd = pending.fd(),
      .size = src.before.size,
      .dst_direct = pending.direct(),
      .chunk_bytes = static_cast<uint32_t>(opts_.chunk_bytes),  // <= 1 GiB (create)
      .register_buffers = opts_.register_buffers,
      .label = "promote " + rel,
      .src_name = "remote file",
      .dst_name = pending.tmpPath(),
      .before_read = [&](uint64_t offset, uint32_t len) -> Status {
        return beforeChunk(rel, split, offset, len);
      },
      .progress = progress,
  };
  CopyFault fault = CopyFault::kNone;
  auto copied = runCopyPipeline(**have, req, &fault);
  {
    std::lock_guard lock(mu_);
    stats_.read_page_cache_bytes += split.page_cache;
    stats_.read_remote_bytes += split.remote;
    stats_.yields += split.yields;
  }
  if (copied.ok()) return copied->checksum;
  Error e = copied.takeError();
  switch (fault) {
    case CopyFault::kSource:
      return failed(why, Fail::kRemoteIo, std::move(e));
    case CopyFault::kSourceShrank:
      e.message += "; not published";
      return failed(why, Fail::kStale, std::move(e));
    case CopyFault::kDestination:
      store_->noteIoError(e);
      return failed(why, cacheFail(e), std::move(e));
    case CopyFault::kCancelled:
      return failed(why, Fail::kCancelled, std::move(e));
    case CopyFault::kNone:
    case CopyFault::kInternal:
      break;
  }
  return failed(why, Fail::kOther, std::move(e));
}

// Did the remote change, vanish or move while we copied?
Status Promoter::revalidate(const std::string& rel, Source* src, Fail* why) {
  auto stale = [&](const std::string& what) {
    return failed(why, Fail::kStale,
                  makeError(Errc::kStale, fmt::format("promote {}: {}; not published", rel, what)));
  };
  if (::fstat(src->fd.get(), &src->st) != 0) {
    return failed(why, Fail::kRemoteIo,
                  lastSysError(fmt::format("promote {}: stat remote file", rel)));
  }
  // Gone from its path (removed, or renamed away as rsync does with its temp
  // files): vanished, whatever it holds now; replaced by another file: stale.
  UniqueFd again(openBeneath(opts_.remote_root_fd, rel, O_PATH));
  struct stat st2 {};
  if (!again || ::fstat(again.get(), &st2) != 0) {
    int err = errno;
    Error e = sysError(
        err, fmt::format("promote {}: re-resolve remote path after the copy; not published", rel));
    if (err == ENOENT) e.code = Errc::kStale;  // removed (or its file system went) meanwhile
    return failed(why, err == ENOENT ? Fail::kVanished : Fail::kRemoteIo, std::move(e));
  }
  if (validatorOf(st2).ino != src->before.ino || validatorOf(st2).dev != src->before.dev)
    return stale("remote path names another file now (replaced during the copy)");
  if (src->st.st_nlink == 0) {
    return failed(why, Fail::kVanished,
                  makeError(Errc::kStale, fmt::format("promote {}: remote file was removed during "
                                                      "the copy; not published",
                                                      rel)));
  }
  const Validator after = validatorOf(src->st);
  if (!(after == src->before)) {
    return stale(fmt::format("remote file changed during the copy (before: {}; after: {})",
                             toString(src->before), toString(after)));
  }
  return Ok{};
}

Status Promoter::publish(std::unique_ptr<CacheStore::Pending> pending, const Validator& before,
                         uint64_t checksum, Fail* why) {
  Status pub = store_->publish(std::move(pending), before, checksum);
  if (!pub.ok()) {
    Error e = pub.takeError();
    return failed(why, e.code == Errc::kStale ? Fail::kStale : cacheFail(e), std::move(e));
  }
  std::lock_guard lock(mu_);
  ++stats_.published;
  stats_.bytes_copied += before.size;
  return Ok{};
}

}  // namespace hotshard
