// CacheService: the cache store, its promoter and scrubber as the running daemon
// holds them. It answers fuse/'s CacheHooks (which copy an open may pass through
// to, what a write invalidates) and the control commands warm, evict, pin, unpin,
// stat and verify.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "base/fd.h"
#include "daemon/cache_store.h"
#include "daemon/config.h"
#include "daemon/control.h"
#include "daemon/promoter.h"
#include "daemon/scrubber.h"
#include "daemon/status.h"
#include "fuse/cache_hooks.h"

namespace hotshard {

class CacheService : public fuse::CacheHooks {
 public:
  // remote_root_fd: the remote's root, opened before the mount; borrowed.
  // adopted_paths: at a takeover, the copies the predecessor's writers still
  // have open (fuse::adoptedCopyPaths), kept by the store's crash recovery.
  static Result<std::unique_ptr<CacheService>> start(
      const RunConfig& cfg, int remote_root_fd, const std::vector<std::string>& adopted_paths = {});
  ~CacheService() override;  // stops the promoter and scrubber

  // fuse::CacheHooks
  // A miss for a name of a file with several names (st_nlink > 1) first tries
  // linkSibling: a hard link cached under another name is served at once.
  int openCached(const std::string& rel_path, const struct stat& remote) override;
  void releaseCached(const std::string& rel_path) override;
  bool reopenCached(const std::string& rel_path, const struct stat& remote,
                    const struct stat& copy) override;
  bool hasValidCopy(const std::string& rel_path, const struct stat& remote) override;
  void invalidate(const std::string& rel_path, const fuse::Change& change) override;
  void invalidateTree(const std::string& rel_dir) override;
  void beginWrite(const std::string& rel_path) override;
  void endWrite(const std::string& rel_path) override;
  void opened(const std::string& rel_path, const struct stat& backing, bool from_cache,
              bool for_write) override;
  bool adoptCopy(const std::string& rel_path, const struct stat& copy,
                 const struct stat& base) override;
  void copyWrittenBack(const std::string& rel_path, const struct stat& base) override;
  void releaseAdopted(const std::string& rel_path, bool written_back) override;
  int openAdoptedCopy(const std::string& rel_path) override;
  bool fetchesCopies() const override { return static_cast<bool>(fetcher_); }
  // A hard link of a file cached under another name shares that copy first
  // (linkSibling); else the fetcher's (the peer tier's) copy.
  bool fetchCopy(const std::string& rel_path, const struct stat& remote) override {
    return linkSibling(rel_path, remote) || (fetcher_ && fetcher_(rel_path, remote));
  }
  // Who makes a copy for a read-only open that found none (the peer tier,
  // daemon/peer_service.h); set before the mount serves. Without one, opens
  // read the remote as before and placement alone promotes.
  using CopyFetcher = std::function<bool(const std::string& rel_path, const struct stat& remote)>;
  void setCopyFetcher(CopyFetcher fetcher) { fetcher_ = std::move(fetcher); }
  // Who hears of opens (the placement loop); set before the mount serves.
  using OpenListener =
      std::function<void(const std::string&, const struct stat&, bool from_cache, bool for_write)>;
  void setOpenListener(OpenListener listener) { open_listener_ = std::move(listener); }
  // Who hears of truncates, unlinks and renames through the mount (the placement
  // loop, for traces); set before the mount serves. Called after the copy is dropped.
  using ChangeListener = std::function<void(const std::string&, const fuse::Change&)>;
  void setChangeListener(ChangeListener listener) { change_listener_ = std::move(listener); }
  // How CacheService gets a duplicate of the remote file (dev, ino) the mount has
  // open as a passthrough backing (fuse::FileSystem::shareRemoteBacking); set
  // before the mount serves. Each read-only open of a remote file then keeps
  // one for up to kHoldShared after its latest open (at most kMaxShared of them; a
  // reopen of the file held keeps the one it has), so that a promotion
  // reads what the jobs' reads left in the page cache instead of the remote
  // again (daemon/promoter.h).
  using BackingSharer = std::function<UniqueFd(dev_t dev, ino_t ino)>;
  void setBackingSharer(BackingSharer sharer) { sharer_ = std::move(sharer); }
  static constexpr size_t kMaxShared = 256;
  static constexpr std::chrono::seconds kHoldShared{30};
  // How often the cache disk is probed (a 4 KiB write, fsync and read in tmp/).
  static constexpr std::chrono::seconds kProbeHealthy{10}, kProbeFailed{1};
  // Told of every finished promotion that copied something (the metrics' histograms).
  using PromotionObserver = std::function<void(double seconds, uint64_t bytes)>;
  void setPromotionObserver(PromotionObserver observer);

  // Control commands, added to `handlers`.
  void addHandlers(std::map<std::string, ControlServer::Handler>& handlers);
  // The "cache" part of the status: the store's counts, the promoter's, the scrub's.
  void fillStatus(CacheStatus& status) const;

  CacheStore& store() { return *store_; }
  Promoter& promoter() { return *promoter_; }
  // The start's write-backs of dirty copies given up past the deadline while
  // already writing (CacheStore::recoverDirty); once, for the file system's
  // write lanes (FileSystem::holdWriteLane).
  std::vector<CacheStore::WriteBackInFlight> takeStartWriteBacks() {
    return std::exchange(start_write_backs_, {});
  }

  // The path relative to the remote root for a path as the user gave it (under
  // the mount, or under the remote when mounted elsewhere). "" is the root.
  Result<std::string> relPathFor(const std::string& user_path) const;

 private:
  // rel_path is a name of a regular file with several names (hard links), and
  // another of them is cached from this very remote state (all five validator
  // fields, CacheStore::linkCopy): rel_path now shares that copy, nothing is
  // copied; true. false: no such name, or the store refused (logged at
  // debug); the caller goes on as for any miss.
  bool linkSibling(const std::string& rel_path, const struct stat& remote);
  CacheService() = default;
  // Regular files at or below rel (a file or a directory), walked through the
  // remote root fd.
  Result<std::vector<std::string>> regularFilesUnder(const std::string& rel) const;
  Result<json> warm(const json& req, const ControlServer::Progress& progress);
  struct WarmRun;  // one warm request's files and frames
  Result<json> warmReplies(WarmRun& run, size_t total, const ControlServer::Progress& progress);
  Result<json> statPaths(const json& req) const;  // control::kStat
  json statOne(const std::string& path, const std::string& rel) const;
  Result<json> verifyPaths(const json& req);      // control::kVerify
  Result<json> forEachPath(const json& req, const std::function<json(const std::string& rel)>& fn);

  // Probes the cache disk (CacheStore::probeHealth) every kProbeHealthy, or
  // every kProbeFailed while it is failed, until the destructor stops it.
  void probeHealthLoop();

  void holdShared(const std::string& rel_path, const struct stat& backing);
  UniqueFd takeShared(const std::string& rel_path);  // the promoter's shared_source
  void dropShared(const std::string& rel_path);

  RunConfig cfg_;
  int remote_fd_ = -1;
  std::unique_ptr<CacheStore> store_;
  std::vector<CacheStore::WriteBackInFlight> start_write_backs_;
  std::unique_ptr<Promoter> promoter_;
  std::unique_ptr<Scrubber> scrubber_;
  OpenListener open_listener_;
  ChangeListener change_listener_;
  CopyFetcher fetcher_;
  std::mutex observer_mu_;
  PromotionObserver promotion_observer_;  // guarded by observer_mu_
  BackingSharer sharer_;
  struct Shared {
    UniqueFd fd;
    dev_t dev = 0;  // the remote file's, as the open saw it
    ino_t ino = 0;
    std::chrono::steady_clock::time_point at;  // when the jobs last opened it
  };
  std::mutex held_mu_;  // a leaf: nothing is called under it
  std::unordered_map<std::string, Shared> held_;  // guarded by held_mu_
  std::mutex health_mu_;  // a leaf; guards stopping_
  std::condition_variable health_cv_;
  bool stopping_ = false;
  std::thread health_thread_;  // probeHealthLoop(); joined first by the destructor
};

}  // namespace hotshard
