#include "daemon/cache_service.h"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>

#include "base/units.h"
#include "base/paths.h"
#include "daemon/control_protocol.h"

namespace hotshard {
namespace {

const char* stateName(CacheStore::State s) {
  switch (s) {
    case CacheStore::State::kCached: return "cached";
    case CacheStore::State::kPromoting: return "promoting";
    case CacheStore::State::kRemote: return "remote";
  }
  return "remote";
}

// 80% of what the cache file system can hold for us: its free space plus what
// the cache already uses.
Result<uint64_t> defaultCapacity(const std::string& dir, uint64_t used) {
  struct statvfs sv;
  if (::statvfs(dir.c_str(), &sv) < 0) return lastSysError("statvfs " + dir);
  uint64_t avail = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  return (avail + used) / 10 * 8;
}

}  // namespace

Result<std::unique_ptr<CacheService>> CacheService::start(
    const RunConfig& cfg, int remote_root_fd, const std::vector<std::string>& adopted_paths) {
  auto svc = std::unique_ptr<CacheService>(new CacheService());
  svc->cfg_ = cfg;
  svc->remote_fd_ = remote_root_fd;
  ASSIGN_OR_RETURN(std::string remote_id,
                   remoteIdOf(remote_root_fd,
                              cfg.remote_canonical.empty() ? cfg.remote : cfg.remote_canonical));
  // Open with no limit first: the default capacity depends on what is cached.
  ASSIGN_OR_RETURN(svc->store_, CacheStore::open(CacheStoreOptions{
                                    .dir = cfg.cache,
                                    .remote_id = remote_id,
                                    .capacity_bytes = cfg.cache_size ? cfg.cache_size : UINT64_MAX / 4,
                                }));
  // Before the mount serves: writes a crash left in dirty copies reach the remote.
  // Each under the remote deadline: a hung remote holds the start up once, for
  // one deadline (docs/restart.md, "A takeover while the remote hangs").
  CacheStore::DirtyRecovery dirty = svc->store_->recoverDirty(remote_root_fd, adopted_paths,
                                                              toSeconds(cfg.remote_timeout));
  if (dirty.written_back + dirty.kept_aside > 0) {
    spdlog::warn("cache {}: {} dirty copies written back after a crash, {} kept aside in "
                 "{}/lost+found ({} of them as the remote did not answer in time)",
                 cfg.cache, dirty.written_back, dirty.kept_aside, cfg.cache, dirty.timed_out);
  }
  svc->start_write_backs_ = std::move(dirty.writing);
  if (cfg.cache_size == 0) {
    ASSIGN_OR_RETURN(uint64_t cap, defaultCapacity(cfg.cache, svc->store_->stats().used_bytes));
    svc->store_->setCapacity(cap);
  }
  svc->store_->enforceWatermarks();
  ASSIGN_OR_RETURN(IoEngineKind engine, parseIoEngineKind(cfg.io_engine));
  ASSIGN_OR_RETURN(svc->promoter_,
                   Promoter::create(svc->store_.get(),
                                    PromoterOptions{
                                        .remote_root_fd = remote_root_fd,
                                        .io_engine = engine,
                                        .chunk_bytes = cfg.promote_chunk,
                                        .queue_depth = cfg.promote_depth,
                                        .max_concurrent = cfg.promote_concurrency,
                                        .buffer_bytes = cfg.promote_buffers,
                                        .bytes_per_sec = cfg.promote_rate,
                                        .on_finished =
                                            [raw = svc.get()](const std::string&, const Status& s,
                                                              double seconds, uint64_t bytes) {
                                              if (!s.ok() || bytes == 0) return;
                                              std::lock_guard lock(raw->observer_mu_);
                                              if (raw->promotion_observer_) {
                                                raw->promotion_observer_(seconds, bytes);
                                              }
                                            },
                                        .shared_source =
                                            [raw = svc.get()](const std::string& rel) {
                                              return raw->takeShared(rel);
                                            },
                                    }));
  if (cfg.scrub_rate > 0) {
    svc->scrubber_ = std::make_unique<Scrubber>(
        svc->store_.get(), ScrubberOptions{.bytes_per_sec = cfg.scrub_rate});
    svc->scrubber_->start();
  }
  svc->health_thread_ = std::thread([raw = svc.get()] { raw->probeHealthLoop(); });
  auto st = svc->store_->stats();
  spdlog::info("cache {}: {} objects, {} of {} used", cfg.cache, st.objects,
               formatBytes(st.used_bytes), formatBytes(st.capacity_bytes));
  return svc;
}

CacheService::~CacheService() {
  {
    std::lock_guard lock(health_mu_);
    stopping_ = true;
  }
  health_cv_.notify_all();
  if (health_thread_.joinable()) health_thread_.join();
  if (scrubber_) scrubber_->stop();
  if (promoter_) promoter_->shutdown();
}

void CacheService::probeHealthLoop() {
  // Wakes every kProbeFailed, so that a disk that failed between two probes of
  // a healthy one is probed again within kProbeFailed.
  auto last = std::chrono::steady_clock::now();
  std::unique_lock lock(health_mu_);
  while (!stopping_) {
    if (health_cv_.wait_for(lock, kProbeFailed, [this] { return stopping_; })) return;
    auto now = std::chrono::steady_clock::now();
    if (store_->healthy() && now - last < kProbeHealthy) continue;
    last = now;
    lock.unlock();
    (void)store_->probeHealth();  // logs its transitions itself
    lock.lock();
  }
}

void CacheService::setPromotionObserver(PromotionObserver observer) {
  std::lock_guard lock(observer_mu_);
  promotion_observer_ = std::move(observer);
}

// ---- fuse::CacheHooks ------------------------------------------------------

int CacheService::openCached(const std::string& rel_path, const struct stat& remote) {
  if (!store_->healthy()) return -1;  // logged once, when it failed
  auto fd = store_->openIfValid(rel_path, validatorOf(remote));
  if (!fd.ok() && fd.error().code == Errc::kNotFound && linkSibling(rel_path, remote)) {
    fd = store_->openIfValid(rel_path, validatorOf(remote));
  }
  if (fd.ok()) return *fd;
  if (!store_->healthy()) return -1;  // this open found the disk failing
  if (fd.error().code == Errc::kStale) {
    spdlog::info("{}: the remote changed since it was cached; copy dropped", rel_path);
  } else if (fd.error().code != Errc::kNotFound) {
    spdlog::warn("{}: cached copy unusable: {}", rel_path, fd.error().message);
  }
  return -1;
}

bool CacheService::linkSibling(const std::string& rel_path, const struct stat& remote) {
  if (!S_ISREG(remote.st_mode) || remote.st_nlink < 2) return false;
  Status linked = store_->linkCopy(rel_path, validatorOf(remote));
  if (!linked.ok()) {
    if (linked.error().code != Errc::kNotFound) {
      spdlog::debug("{}: not linked to its hard link's copy: {}", rel_path, linked.error().message);
    }
    return false;
  }
  spdlog::debug("{}: shares the copy of a hard link cached under another name", rel_path);
  return true;
}

void CacheService::releaseCached(const std::string& rel_path) { store_->release(rel_path); }

bool CacheService::reopenCached(const std::string& rel_path, const struct stat& remote,
                                const struct stat& copy) {
  return store_->reopenIfValid(rel_path, validatorOf(remote), copy);
}

bool CacheService::hasValidCopy(const std::string& rel_path, const struct stat& remote) {
  return store_->isCached(rel_path, validatorOf(remote));
}

void CacheService::invalidate(const std::string& rel_path, const fuse::Change& change) {
  dropShared(rel_path);
  Status st = store_->invalidate(rel_path);
  if (!st.ok()) spdlog::warn("invalidate {}: {}", rel_path, st.error().message);
  if (change_listener_) change_listener_(rel_path, change);
}

void CacheService::invalidateTree(const std::string& rel_dir) {
  Status st = store_->invalidateTree(rel_dir);
  if (!st.ok()) spdlog::warn("invalidate {}/: {}", rel_dir, st.error().message);
}

void CacheService::beginWrite(const std::string& rel_path) {
  dropShared(rel_path);
  Status st = store_->beginWrite(rel_path);
  if (!st.ok()) spdlog::warn("begin write {}: {}", rel_path, st.error().message);
}

void CacheService::endWrite(const std::string& rel_path) { store_->endWrite(rel_path); }

void CacheService::opened(const std::string& rel_path, const struct stat& backing,
                          bool from_cache, bool for_write) {
  spdlog::debug("open {} from {}{}", rel_path, from_cache ? "cache" : "remote",
                for_write ? " for writing" : "");
  if (!from_cache && !for_write && sharer_) holdShared(rel_path, backing);
  if (open_listener_) open_listener_(rel_path, backing, from_cache, for_write);
}

bool CacheService::adoptCopy(const std::string& rel_path, const struct stat& copy,
                             const struct stat& base) {
  Status st = store_->adopt(rel_path, copy.st_dev, copy.st_ino, validatorOf(base));
  if (!st.ok()) {
    spdlog::warn("{}: the open cached copy cannot take writes: {}", rel_path, st.error().message);
    return false;
  }
  spdlog::debug("{}: writers joined the open cached copy; it is written back to the remote",
                rel_path);
  return true;
}

void CacheService::copyWrittenBack(const std::string& rel_path, const struct stat& base) {
  // A mark left behind only makes crash recovery keep the copy aside: safe.
  Status st = store_->markWrittenBack(rel_path, validatorOf(base));
  if (!st.ok()) spdlog::warn("{}: {}", rel_path, st.error().message);
}

void CacheService::releaseAdopted(const std::string& rel_path, bool written_back) {
  store_->releaseAdopted(rel_path, written_back);
}

int CacheService::openAdoptedCopy(const std::string& rel_path) {
  auto fd = store_->openAdopted(rel_path);
  if (!fd.ok()) {
    spdlog::error("{}: the copy a predecessor's writer had adopted: {}", rel_path,
                  fd.error().message);
    return -1;
  }
  return *fd;
}

// ---- the jobs' open remote files, for the promoter ----------------------------

void CacheService::holdShared(const std::string& rel_path, const struct stat& backing) {
  auto now = std::chrono::steady_clock::now();
  {
    // A reopen of the file held already: held longer, without a new duplicate.
    std::lock_guard lock(held_mu_);
    auto it = held_.find(rel_path);
    if (it != held_.end() && it->second.dev == backing.st_dev && it->second.ino == backing.st_ino) {
      it->second.at = now;
      return;
    }
  }
  UniqueFd fd = sharer_(backing.st_dev, backing.st_ino);
  if (!fd) return;
  std::lock_guard lock(held_mu_);
  if (held_.size() >= kMaxShared && held_.find(rel_path) == held_.end()) {
    std::erase_if(held_, [&](const auto& kv) { return now - kv.second.at >= kHoldShared; });
    if (held_.size() >= kMaxShared) {
      auto oldest = std::min_element(held_.begin(), held_.end(), [](const auto& a, const auto& b) {
        return a.second.at < b.second.at;
      });
      held_.erase(oldest);
    }
  }
  held_[rel_path] =
      Shared{.fd = std::move(fd), .dev = backing.st_dev, .ino = backing.st_ino, .at = now};
}

UniqueFd CacheService::takeShared(const std::string& rel_path) {
  std::lock_guard lock(held_mu_);
  auto it = held_.find(rel_path);
  if (it == held_.end()) return UniqueFd();
  Shared held = std::move(it->second);
  held_.erase(it);
  if (std::chrono::steady_clock::now() - held.at >= kHoldShared) return UniqueFd();
  return std::move(held.fd);
}

void CacheService::dropShared(const std::string& rel_path) {
  std::lock_guard lock(held_mu_);
  held_.erase(rel_path);
}

// ---- paths -------------------------------------------------------------------

Result<std::string> CacheService::relPathFor(const std::string& user_path) const {
  std::string p = normalPath(user_path);
  for (const std::string& root : {cfg_.mount, cfg_.remote}) {
    if (p == root) return std::string();
    if (p.compare(0, root.size() + 1, root + "/") == 0) return p.substr(root.size() + 1);
  }
  return makeError(Errc::kInvalidArgument,
                   p + " is not under the mount " + cfg_.mount +
                       (cfg_.mount != cfg_.remote ? " or the remote " + cfg_.remote : ""));
}

Result<std::vector<std::string>> CacheService::regularFilesUnder(const std::string& rel) const {
  std::vector<std::string> files;
  struct stat st;
  const char* at = rel.empty() ? "." : rel.c_str();
  if (::fstatat(remote_fd_, at, &st, AT_SYMLINK_NOFOLLOW) < 0) {
    return lastSysError("stat " + (rel.empty() ? cfg_.remote : rel));
  }
  if (S_ISREG(st.st_mode)) {
    files.push_back(rel);
    return files;
  }
  if (!S_ISDIR(st.st_mode)) {
    return makeError(Errc::kInvalidArgument, rel + " is neither a regular file nor a directory");
  }
  std::vector<std::string> dirs = {rel};
  while (!dirs.empty()) {
    std::string dir = dirs.back();
    dirs.pop_back();
    int fd = ::openat(remote_fd_, dir.empty() ? "." : dir.c_str(),
                      O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return lastSysError("open directory " + dir);
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return lastSysError("fdopendir " + dir);
    }
    std::vector<std::string> names;
    while (dirent* e = ::readdir(d)) {
      std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      std::string child = dir.empty() ? name : dir + "/" + name;
      unsigned char type = e->d_type;
      if (type == DT_UNKNOWN) {
        struct stat cst;
        if (::fstatat(remote_fd_, child.c_str(), &cst, AT_SYMLINK_NOFOLLOW) == 0) {
          type = S_ISREG(cst.st_mode) ? DT_REG : S_ISDIR(cst.st_mode) ? DT_DIR : DT_UNKNOWN;
        }
      }
      if (type == DT_REG) files.push_back(child);
      if (type == DT_DIR) dirs.push_back(child);
    }
    ::closedir(d);
  }
  std::sort(files.begin(), files.end());
  return files;
}

// ---- control commands ---------------------------------------------------------

namespace {

Result<std::vector<std::string>> pathsOf(const json& req) {
  if (!req.contains(control::kPaths) || !req[control::kPaths].is_array() ||
      req[control::kPaths].empty()) {
    return makeError(Errc::kInvalidArgument, "\"paths\" must be a non-empty array of strings");
  }
  std::vector<std::string> out;
  for (const auto& p : req[control::kPaths]) {
    if (!p.is_string()) return makeError(Errc::kInvalidArgument, "\"paths\" must hold strings");
    out.push_back(p.get<std::string>());
  }
  return out;
}

}  // namespace

// One warm request's bookkeeping. The promoter's workers record bytes copied
// and finished files; only the handler's thread sends frames.
struct CacheService::WarmRun {
  using Clock = std::chrono::steady_clock;
  static constexpr auto kEvery = std::chrono::milliseconds(250);  // in-file progress frames
  struct Event {
    std::string rel;
    bool finished;
    Status status;
  };
  struct File {
    uint64_t size = 0;         // the remote's, when the warm began
    uint64_t copied = 0;       // by this warm's promotion
    bool was_cached = false;   // cached before the warm began
    Clock::time_point last_sent{};
  };
  std::mutex mu;  // guards everything below
  std::condition_variable cv;
  std::deque<Event> events;
  std::map<std::string, File> files;
  uint64_t bytes_done = 0, bytes_total = 0;

  void push(Event e) {
    std::lock_guard lock(mu);
    events.push_back(std::move(e));
    cv.notify_all();
  }
  // On a worker thread: a chunk of rel is copied; a frame at most every kEvery.
  void copied(const std::string& rel, uint64_t done) {
    std::lock_guard lock(mu);
    File& f = files[rel];
    bytes_done += done - std::min(done, f.copied);
    f.copied = done;
    auto now = Clock::now();
    if (now - f.last_sent < kEvery) return;
    f.last_sent = now;
    events.push_back({rel, false, Status(Ok{})});
    cv.notify_all();
  }
};

Result<json> CacheService::warm(const json& req, const ControlServer::Progress& progress) {
  ASSIGN_OR_RETURN(auto paths, pathsOf(req));
  std::vector<std::string> files;
  for (const auto& p : paths) {
    ASSIGN_OR_RETURN(std::string rel, relPathFor(p));
    ASSIGN_OR_RETURN(auto under, regularFilesUnder(rel));
    files.insert(files.end(), under.begin(), under.end());
  }
  WarmRun run;
  for (const auto& rel : files) {
    struct stat st;
    WarmRun::File& f = run.files[rel];
    if (::fstatat(remote_fd_, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) f.size = st.st_size;
    f.was_cached = store_->info(rel).state == CacheStore::State::kCached;
    run.bytes_total += f.size;
  }
  for (const auto& rel : files) {
    Status st = promoter_->enqueue(
        rel, [&run, rel](uint64_t done, uint64_t) { run.copied(rel, done); },
        [&run, rel](const Status& s) { run.push({rel, true, s}); });
    if (!st.ok()) {  // already queued by someone else, or shutting down
      run.push({rel, true, st.error().code == Errc::kExists ? Status(Ok{}) : st});
    }
  }
  return warmReplies(run, files.size(), progress);
}

// Sends run's frames until every file is finished; returns the reply.
Result<json> CacheService::warmReplies(WarmRun& run, size_t total,
                                       const ControlServer::Progress& progress) {
  uint64_t warmed = 0, cached = 0, bytes = 0, n = 0;
  json failed = json::array();
  std::unique_lock lock(run.mu);
  while (n < total) {
    run.cv.wait(lock, [&] { return !run.events.empty(); });
    WarmRun::Event e = std::move(run.events.front());
    run.events.pop_front();
    WarmRun::File& f = run.files[e.rel];
    json event = {{control::kPath, e.rel}, {control::kDone, n + (e.finished ? 1 : 0)},
                  {control::kTotal, total}};
    if (!e.finished) {
      event[control::kCopied] = f.copied;
      event[control::kSize] = f.size;
    } else {
      n++;
      run.bytes_done += f.size - std::min(f.size, f.copied);
      lock.unlock();
      CacheStore::ObjectInfo info = store_->info(e.rel);
      lock.lock();
      event[control::kOk] = e.status.ok();
      if (e.status.ok()) {
        bool was = f.was_cached && f.copied == 0;
        (was ? cached : warmed)++;
        bytes += info.size;
        event[control::kSize] = info.size;
        event[control::kCached] = was;
      } else {
        event[control::kError] = e.status.error().message;
        failed.push_back({{control::kPath, e.rel}, {control::kError, e.status.error().message}});
      }
    }
    event[control::kBytesDone] = run.bytes_done;
    event[control::kBytesTotal] = run.bytes_total;
    lock.unlock();
    progress(event);
    lock.lock();
  }
  return json{{control::kFiles, total},    {control::kWarmed, warmed}, {control::kCached, cached},
              {control::kBytes, bytes},    {control::kFailed, failed}};
}

Result<json> CacheService::forEachPath(const json& req,
                                       const std::function<json(const std::string&)>& fn) {
  ASSIGN_OR_RETURN(auto paths, pathsOf(req));
  json results = json::array();
  for (const auto& p : paths) {
    ASSIGN_OR_RETURN(std::string rel, relPathFor(p));
    ASSIGN_OR_RETURN(auto files, regularFilesUnder(rel));
    for (const auto& f : files) results.push_back(fn(f));
  }
  return json{{"results", results}};
}

void CacheService::addHandlers(std::map<std::string, ControlServer::Handler>& h) {
  h[control::kWarm] = [this](const json& req, const ControlServer::Progress& progress) {
    return warm(req, progress);
  };
  h[control::kEvict] = [this](const json& req, const ControlServer::Progress&) {
    return forEachPath(req, [&](const std::string& rel) {
      Status st = store_->evict(rel);
      json r = {{control::kPath, rel}, {control::kEvicted, st.ok()}};
      // Nothing to drop is no failure: the path is as asked, not cached.
      if (!st.ok() && st.error().code == Errc::kNotFound) {
        r[control::kState] = "remote";
      } else if (!st.ok()) {
        r[control::kError] = st.error().message;
      }
      return r;
    });
  };
  for (bool pin : {true, false}) {
    h[pin ? control::kPin : control::kUnpin] = [this, pin](const json& req,
                                                           const ControlServer::Progress&) {
      return forEachPath(req, [&](const std::string& rel) {
        Status st = store_->pin(rel, pin);
        json r = {{control::kPath, rel}, {control::kPinned, pin && st.ok()}};
        if (!st.ok()) r[control::kError] = st.error().message;
        return r;
      });
    };
  }
  h[control::kStat] = [this](const json& req, const ControlServer::Progress&) {
    return statPaths(req);
  };
  h[control::kVerify] = [this](const json& req, const ControlServer::Progress&) {
    return verifyPaths(req);
  };
}

json CacheService::statOne(const std::string& path, const std::string& rel) const {
  CacheStore::ObjectInfo info = store_->info(rel);
  uint64_t size = info.size;
  struct stat st;
  if (::fstatat(remote_fd_, rel.empty() ? "." : rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    size = static_cast<uint64_t>(st.st_size);
  }
  json r = {{control::kPath, path},
            {control::kRel, rel},
            {control::kState, stateName(info.state)},
            {control::kPinned, info.pinned},
            {control::kSize, size}};
  if (info.state == CacheStore::State::kCached) {
    r[control::kObject] = store_->dir() + "/" + store_->objectPathFor(rel);
    if (info.links > 1) r[control::kLinks] = info.links;
    if (CacheStore::Health h = store_->health(); !h.healthy) {
      r[control::kUnusable] = "cache disk failed: " + h.reason;
    }
  } else if (info.state == CacheStore::State::kPromoting) {
    r[control::kCopied] = promoter_->copiedSoFar(rel);
  }
  return r;
}

// A directory: every regular file below it, as warm walks them; anything else
// (a file, or a path the remote no longer has) itself.
Result<json> CacheService::statPaths(const json& req) const {
  ASSIGN_OR_RETURN(auto paths, pathsOf(req));
  json results = json::array();
  for (const auto& p : paths) {
    ASSIGN_OR_RETURN(std::string rel, relPathFor(p));
    std::string path = normalPath(p);
    struct stat st;
    if (::fstatat(remote_fd_, rel.empty() ? "." : rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        !S_ISDIR(st.st_mode)) {
      results.push_back(statOne(path, rel));
      continue;
    }
    ASSIGN_OR_RETURN(auto files, regularFilesUnder(rel));
    for (const auto& f : files) {
      // f is rel + "/..." (or, at the root, "..."): the same tail under path.
      std::string tail = rel.empty() ? "/" + f : f.substr(rel.size());
      results.push_back(statOne(path == "/" ? tail : path + tail, f));
    }
  }
  return json{{control::kResults, results}};
}

Result<json> CacheService::verifyPaths(const json& req) {
  if (!req.contains(control::kPaths) || req[control::kPaths].empty()) {
    CacheStore::VerifyReport r = store_->verifyAll();
    return json{{control::kChecked, r.checked},
                {control::kDropped, r.dropped},
                {control::kBytes, r.bytes}};
  }
  uint64_t checked = 0, dropped = 0;
  ASSIGN_OR_RETURN(json per, forEachPath(req, [&](const std::string& rel) {
                     Status st = store_->verify(rel);
                     json r = {{control::kPath, rel}};
                     if (st.ok()) {
                       checked++;
                     } else if (st.error().code == Errc::kCorrupt) {
                       checked++;
                       dropped++;
                       r[control::kError] = st.error().message;
                     } else if (st.error().code != Errc::kNotFound) {
                       r[control::kError] = st.error().message;
                     }
                     return r;
                   }));
  return json{{control::kChecked, checked},
              {control::kDropped, dropped},
              {control::kResults, per[control::kResults]}};
}

void CacheService::fillStatus(CacheStatus& c) const {
  CacheStore::Stats s = store_->stats();
  Promoter::Stats p = promoter_->stats();
  c = CacheStatus{.used_bytes = s.used_bytes,
                  .capacity_bytes = s.capacity_bytes,
                  .objects = s.objects,
                  .promotions_in_flight = s.promotions_in_flight,
                  .pinned_objects = s.pinned_objects,
                  .evictions = s.evictions,
                  .stale_drops = s.stale_drops,
                  .invalidations = s.invalidations,
                  .corrupt_drops = s.corrupt_drops};
  c.promoter = PromoterStatus{.started = p.started,
                              .published = p.published,
                              .already_cached = p.already_cached,
                              .linked = p.linked,
                              .vanished = p.vanished,
                              .failed_stale = p.failed_stale,
                              .failed_no_space = p.failed_no_space,
                              .failed_remote_io = p.failed_remote_io,
                              .failed_cache_io = p.failed_cache_io,
                              .queued = p.queued,
                              .bytes_copied = p.bytes_copied,
                              .read_page_cache_bytes = p.read_page_cache_bytes,
                              .read_remote_bytes = p.read_remote_bytes,
                              .yields = p.yields};
  CacheStore::Health h = store_->health();
  c.disk_healthy = h.healthy;
  if (!h.healthy) c.disk_error = h.reason;
  if (h.since_ns > 0) c.disk_since = static_cast<uint64_t>(h.since_ns / 1000000000);
  if (scrubber_) {
    Scrubber::Stats sc = scrubber_->stats();
    c.scrub = ScrubStatus{.passes = sc.passes,
                          .objects_checked = sc.objects_checked,
                          .objects_dropped = sc.objects_dropped};
  }
}

}  // namespace hotshard
