#include "daemon/peer_objects.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <system_error>
#include <thread>

#include "base/fd.h"

namespace hotshard {

PeerObjects::PeerObjects(PeerObjectsOptions options)
    : opts_(std::move(options)),
      remote_calls_(fuse::RemoteCalls::Options{.timeout_seconds = opts_.remote_timeout_seconds,
                                               .max_workers = 4}) {}

PeerObjects::~PeerObjects() { stop(); }

void PeerObjects::stop() {
  std::list<Copy> copies;
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    copies.swap(copies_);
  }
  for (Copy& c : copies) {
    if (c.thread.joinable()) c.thread.join();
  }
}

Result<Validator> PeerObjects::remoteValidator(const std::string& rel_path) const {
  // The call owns what it touches (RemoteCalls::run): a duplicate of the root
  // (the daemon may dup3 another remote over it), copies of the name and hook.
  UniqueFd root(::fcntl(opts_.remote_root_fd, F_DUPFD_CLOEXEC, 0));
  if (!root) return lastSysError("peer: duplicate the remote root fd");
  auto stat_remote = [root = std::make_shared<UniqueFd>(std::move(root)), rel_path,
                      hook = opts_.stat_hook]() -> Result<struct stat> {
    if (hook) hook(rel_path);
    UniqueFd at(openBeneath(root->get(), rel_path, O_PATH));
    struct stat st {};
    if (!at || ::fstat(at.get(), &st) != 0) {
      return lastSysError("peer: stat remote file " + rel_path);
    }
    return st;
  };
  Result<struct stat> r =
      remote_calls_.run<struct stat>("peer: stat remote file " + rel_path, stat_remote);
  if (!r.ok()) {
    Error e = r.takeError();
    if (e.sys_errno == ENOENT || e.sys_errno == ENOTDIR || e.sys_errno == ELOOP ||
        e.sys_errno == EXDEV) {
      e.code = Errc::kNotFound;  // missing, or a path that leaves the remote root
    }
    return e;
  }
  const struct stat& st = *r;
  if (!S_ISREG(st.st_mode)) {
    return makeError(Errc::kNotFound, "peer: " + rel_path + " is not a regular file");
  }
  return validatorOf(st);
}

Result<peer::ServedObject> PeerObjects::openServed(const std::string& rel_path,
                                                   const Validator& now) {
  ASSIGN_OR_RETURN(int rw, opts_.store->openIfValid(rel_path, now));
  UniqueFd copy(rw);
  // A read-only fd of the same file: the store's is O_RDWR (for writers that
  // join it) and counts as open; this one is only read, and the file stays
  // readable by it even if the store drops the copy meanwhile.
  UniqueFd ro(::open(("/proc/self/fd/" + std::to_string(rw)).c_str(), O_RDONLY | O_CLOEXEC));
  Error open_error = lastSysError("peer: reopen the cached copy of " + rel_path + " read-only");
  copy.reset();
  opts_.store->release(rel_path);
  if (!ro) return open_error;
  ASSIGN_OR_RETURN(uint64_t checksum, objectChecksum(ro.get()));
  struct stat st {};
  if (::fstat(ro.get(), &st) != 0) return lastSysError("peer: stat the cached copy of " + rel_path);
  if (static_cast<uint64_t>(st.st_size) != now.size) {
    return makeError(Errc::kStale, "peer: the cached copy of " + rel_path + " changed size");
  }
  return peer::ServedObject{.fd = std::move(ro),
                            .meta = {.size = now.size, .mtime_ns = now.mtime_ns, .xxh3 = checksum}};
}

Result<peer::ServedObject> PeerObjects::openForPeer(const peer::ObjectRequest& request) {
  if (request.ns != opts_.ns) {
    return makeError(Errc::kNotFound,
                     "peer: namespace '" + request.ns + "' is not served here ('" + opts_.ns + "')");
  }
  const std::string& rel = request.relpath;
  RETURN_IF_ERROR(checkRelPath(rel));
  ASSIGN_OR_RETURN(Validator now, remoteValidator(rel));
  if (now.size != request.size || now.mtime_ns != request.mtime_ns) {
    return makeError(Errc::kStale, "peer: " + rel + ": the remote here has another version (" +
                                       toString(now) + ")");
  }
  auto served = openServed(rel, now);
  if (served.ok()) return served;
  Errc code = served.error().code;
  if (code != Errc::kNotFound && code != Errc::kStale) return served;
  if (!opts_.owns || !opts_.owns(peer::objectKey(request))) {
    return served;  // kNotFound, or kStale: our copy was of another version
  }
  Status promoted = promoteOnce(rel, now, opts_.serve_wait);
  if (!promoted.ok()) {
    Error e = promoted.takeError();
    if (e.code != Errc::kStale && e.code != Errc::kNotFound) e.code = Errc::kBusy;
    return e;
  }
  return openServed(rel, now);
}

void PeerObjects::waitForPromotion(const std::string& rel_path) {
  auto until = std::chrono::steady_clock::now() + opts_.wait;
  while (opts_.store->info(rel_path).state == CacheStore::State::kPromoting &&
         std::chrono::steady_clock::now() < until) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

Status PeerObjects::promoteNow(const std::string& rel_path, const Validator& now) {
  if (opts_.store->isCached(rel_path, now)) return Ok{};
  Status s = opts_.promoter->promote(rel_path);
  if (!s.ok() && opts_.store->info(rel_path).state == CacheStore::State::kPromoting) {
    waitForPromotion(rel_path);  // placement's promotion of it was in flight
  }
  if (opts_.store->isCached(rel_path, now)) return Ok{};
  if (!s.ok()) return s;
  return makeError(Errc::kStale, "promote " + rel_path + ": the remote changed meanwhile");
}

Status PeerObjects::promoteOnce(const std::string& rel_path, const Validator& now,
                                std::chrono::milliseconds wait) {
  std::unique_lock lock(mu_);
  reapCopies();
  std::shared_ptr<Flight> flight;
  if (auto it = flights_.find(rel_path); it != flights_.end()) {
    flight = it->second;
  } else {
    if (stopping_) return makeError(Errc::kBusy, "promote " + rel_path + ": stopping");
    if (running_ >= opts_.max_background) {
      return makeError(Errc::kBusy, "promote " + rel_path + ": " +
                                        std::to_string(running_) + " copies already running");
    }
    flight = std::make_shared<Flight>();
    flights_.emplace(rel_path, flight);
    running_++;
    Copy& copy = copies_.emplace_back();
    // The thread starts under mu_, so it finds its Copy in place; it lands its
    // flight and marks itself finished under mu_, and needs nothing after.
    try {
      copy.thread = std::thread([this, rel_path, now, flight, c = &copy] {
        Status result = promoteNow(rel_path, now);
        std::lock_guard copy_lock(mu_);
        landFlight(rel_path, flight, std::move(result));
        running_--;
        c->finished = true;
      });
    } catch (const std::system_error& e) {  // no thread to be had (EAGAIN)
      copies_.pop_back();
      running_--;
      landFlight(
          rel_path, flight,
          makeError(Errc::kBusy, "promote " + rel_path + ": start a copy thread: " + e.what()));
    }
  }
  return awaitFlight(lock, rel_path, flight, wait);
}

void PeerObjects::reapCopies() {
  for (auto it = copies_.begin(); it != copies_.end();) {
    if (!it->finished) {
      ++it;
      continue;
    }
    it->thread.join();  // past its last use of mu_: returns at once
    it = copies_.erase(it);
  }
}

Status PeerObjects::awaitFlight(std::unique_lock<std::mutex>& lock, const std::string& rel_path,
                                const std::shared_ptr<Flight>& flight,
                                std::chrono::milliseconds wait) {
  if (!cv_.wait_for(lock, wait, [&] { return flight->done; })) {
    return makeError(Errc::kBusy, rel_path + ": waited " + std::to_string(wait.count()) +
                                      " ms for the copy in progress");
  }
  return flight->result;
}

void PeerObjects::landFlight(const std::string& rel_path, const std::shared_ptr<Flight>& flight,
                             Status result) {
  flight->done = true;
  flight->result = std::move(result);
  if (auto it = flights_.find(rel_path); it != flights_.end() && it->second == flight) {
    flights_.erase(it);
  }
  cv_.notify_all();
}

Status PeerObjects::fetchAndPublish(const std::string& rel_path, const Validator& before,
                                    const Fetch& fetch) {
  if (opts_.store->isCached(rel_path, before)) return Ok{};
  ASSIGN_OR_RETURN(std::unique_ptr<CacheStore::Pending> pending,
                   opts_.store->beginPromotion(rel_path, before.size, /*direct_io=*/false));
  // On any error below the Pending goes, and its tmp file with it.
  ASSIGN_OR_RETURN(peer::ObjectMeta meta, fetch(pending->fd()));
  if (meta.size != before.size || meta.mtime_ns != before.mtime_ns) {
    return makeError(Errc::kCorrupt, "peer fetch " + rel_path + ": the peer sent another version");
  }
  ASSIGN_OR_RETURN(Validator after, remoteValidator(rel_path));
  if (!(after == before)) {
    return makeError(Errc::kStale, "peer fetch " + rel_path +
                                       ": the remote changed during the fetch; not published");
  }
  return opts_.store->publish(std::move(pending), before, meta.xxh3);
}

Status PeerObjects::once(const std::string& rel_path, const std::function<Status()>& fn) {
  std::unique_lock lock(mu_);
  if (auto it = flights_.find(rel_path); it != flights_.end()) {
    return awaitFlight(lock, rel_path, it->second, opts_.wait);
  }
  auto flight = std::make_shared<Flight>();
  flights_.emplace(rel_path, flight);
  lock.unlock();
  Status result = fn();
  lock.lock();
  landFlight(rel_path, flight, result);
  return result;
}

const char* peerFailureReason(const Error& e) {
  switch (e.code) {
    case Errc::kNotFound: return "not_found";
    case Errc::kStale: return "stale";
    case Errc::kBusy: return "busy";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kPermission: return "refused";
    case Errc::kProtocol: return "protocol";
    case Errc::kNoSpace: return "no_space";
    case Errc::kIo: return "io";
    default: return "other";
  }
}

}  // namespace hotshard
