// daemon/: the composition room. A Daemon holds every component of one mount:
// the cache service (store, promoter, scrub), placement (heat, policy), the FUSE
// file system and its passthrough shim, the session loop, the metrics exporter
// and the control socket. It starts them in stages, each failing with an error
// that names the stage, and its members are declared in dependency order, so
// teardown (on a failed start as after a clean stop) runs in exactly the reverse
// order with no hand-written sequence.
#pragma once

#include <nlohmann/json.hpp>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/config.h"
#include "daemon/status.h"

struct fuse_session;

namespace hotshard {

class CacheService;
class ControlServer;
class MetricsExporter;
class PeerService;
class Placement;
namespace fuse {
class FileSystem;
class PassthroughShim;
class TakeoverState;
}  // namespace fuse

class Daemon {
 public:
  // Starts every stage in order: cache, placement, peer tier (with --cluster),
  // file system, mount, session loop (until the kernel's FUSE_INIT is
  // answered, at most 10 s), metrics, control socket; a worker (--fuse-fd)
  // starts placement and the peer tier after the session loop. cfg must be finalized
  // (finalizeRunConfig); remote_root is the remote directory opened O_PATH
  // before anything is mounted over it.
  // Errors: "STAGE: what failed", e.g. "mount /mnt/x: Permission denied".
  static Result<std::unique_ptr<Daemon>> start(const RunConfig& cfg, UniqueFd remote_root);
  ~Daemon();

  // Unmounts; when files are still open the mount is detached lazily and the
  // FUSE connection aborted, so nothing waits on a daemon that is going. The
  // session loop then ends. Thread-safe; only the first call acts.
  void stop(const std::string& why);
  // Blocks until the session loop ends: after stop(), or when someone else
  // unmounts. True when the loop ended cleanly.
  bool wait();
  bool stopping() const;
  // SIGUSR2 (docs/restart.md): stops reading /dev/fuse, lets the requests in
  // flight finish, and ends the session loop without unmounting; wait() then
  // returns and finishHandOver() leaves the state and backing ids to a successor.
  // Only a worker (--fuse-fd) hands over; false otherwise.
  bool handOver();
  bool handingOver() const { return handing_over_.load(); }
  // After wait(): the state on its file, backing ids left registered.
  Status finishHandOver();

  // One snapshot of everything: `hotshard status` and every metrics scrape.
  StatusSnapshot status() const;

  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

 private:
  struct SessionDeleter {
    void operator()(fuse_session* se) const;
  };
  // Joins the session loop's thread when it goes (the loop has ended by then:
  // the mount, declared after it, went first).
  struct LoopThread {
    std::thread thread;
    int rc = 0;
    ~LoopThread();
  };
  // The mount; unmounted when it goes, unless stop() did already.
  struct Mount {
    Daemon* daemon = nullptr;
    ~Mount();
  };
  // Cancels what a control request may be waiting on (promotions, a trace
  // being recorded), so that the control server, which goes next, is not
  // held by them.
  struct Quiesce {
    Daemon* daemon = nullptr;
    ~Quiesce();
  };
  // Points the shim's latency observer and the cache's promotion observer at
  // the exporter; unhooks both when it goes, just before the exporter does.
  struct MetricsHooks {
    Daemon* daemon = nullptr;
    ~MetricsHooks();
  };
  // Tells the file system of the copies the store drops (so idle backings on
  // them close); unhooks when it goes, just before the file system does.
  struct CopyDropHook {
    Daemon* daemon = nullptr;
    ~CopyDropHook();
  };
  // With --control-socket outside /run/hotshard, a symlink at the mount's
  // default socket path (controlSocketFor) to the real one, so the CLI finds
  // the daemon from the mount alone; removed when it goes, if still ours.
  struct ControlLink {
    std::string link, target;
    ~ControlLink();
  };

  explicit Daemon(const RunConfig& cfg);
  // The stages of start(), in order; each error names its stage.
  Status startCache();
  Status startPlacement();
  Status startPeer();
  Status startFileSystem();
  Status openNamespace();  // part of startFileSystem
  Status startMount();
  // Worker mode: the takeover state, created for a fresh connection or adopted
  // from a predecessor (--takeover).
  Status startTakeoverState();
  Status adoptTakeoverState();
  Status startLoop();
  Status startMetrics();
  Status startControl();
  Status startRemoteWatch();
  void watchRemote();
  // One look at the remote root: true when it is dead (ENOTCONN, EIO, ESTALE,
  // ENODEV from fstatfs), or when it hangs (past the deadline, or refused) and
  // the remote path names another mount now (remotePathMoved): an operator
  // detached the hung mount (`umount -l`), its calls stay blocked for good.
  // root_calls: one worker, so a root that hangs holds one thread and later
  // looks are refused at once; path_calls: the remote path's, apart.
  bool remoteRootDead(fuse::RemoteCalls& root_calls, fuse::RemoteCalls& path_calls);
  bool remotePathMoved(fuse::RemoteCalls& path_calls);
  // When the remote path holds a live file system like the one started over:
  // it becomes the root (dup3 onto remote_fd_, which the cache borrows).
  bool reopenRemote(fuse::RemoteCalls& calls);

  // Members in dependency order: each may use those above it, and they are
  // destroyed bottom to top.
  const RunConfig cfg_;
  UniqueFd remote_fd_;
  std::atomic<MetricsExporter*> metrics_sink_{nullptr};  // read by the shim's observer
  // Read by the cache's open/change listeners and copy fetcher (set at
  // startCache): placement_ and peer_ once they are up.
  std::atomic<Placement*> placement_sink_{nullptr};
  std::atomic<PeerService*> peer_sink_{nullptr};
  std::unique_ptr<CacheService> cache_;
  std::unique_ptr<Placement> placement_;
  // With --cluster: the peer tier. It uses the cache store and promoter, and
  // the file system calls into it (through CacheService) while the session
  // loop runs: it goes after both the loop and the mount, before the cache.
  std::unique_ptr<PeerService> peer_;
  std::unique_ptr<fuse::PassthroughShim> shim_;
  // Worker mode: what a successor adopts; the file system writes to it.
  std::unique_ptr<fuse::TakeoverState> takeover_state_;
  // immutable and ttl modes: the remote's names and attributes kept on the
  // cache disk (fuse/namespace_cache.h); nullptr in strict mode.
  std::unique_ptr<fuse::NamespaceCache> names_;
  std::unique_ptr<fuse::FileSystem> fs_;
  CopyDropHook copy_drop_hook_;
  // With --mount elsewhere: notices a dead remote root and carries on over the
  // file system mounted at the remote path again (watchRemote); stopped before
  // anything above goes.
  struct RemoteWatch {
    std::thread thread;
    std::mutex mu;
    std::condition_variable cv;
    bool stop = false;  // guarded by mu
    // The remote's statfs f_type, from the watch's first statfs that answered
    // (none at start: the remote may hang); 0: not known yet. The watch's thread only.
    int64_t fs_type = 0;
    bool mount_root = false;  // the remote path was a mount's root at start
    uint64_t mnt_id = 0;      // statx STATX_MNT_ID of the root in use; 0: unknown
    ~RemoteWatch();
  };
  RemoteWatch remote_watch_;
  // The exporter reads everything above; the FUSE threads report latency to it
  // (through metrics_sink_), so it goes only after the session loop has ended.
  std::unique_ptr<MetricsExporter> metrics_;
  MetricsHooks metrics_hooks_;
  std::unique_ptr<fuse_session, SessionDeleter> session_;
  LoopThread loop_;
  std::string mount_path_;  // cfg_.mount with symlinks resolved, as the mount table has it
  dev_t conn_dev_ = 0;  // the FUSE connection's device, for an abort through fusectl
  std::mutex stop_mu_;
  bool mounted_ = false;   // guarded by stop_mu_
  std::atomic<bool> stopping_{false};
  std::atomic<bool> handing_over_{false};
  std::atomic<bool> loop_ended_{false};
  Mount mount_;
  std::unique_ptr<ControlServer> control_;
  ControlLink control_link_;
  Quiesce quiesce_;
};

// `hotshard run`: finalizes cfg, checks the paths, opens the remote, detaches
// into the background unless cfg.foreground (the parent returns once the mount
// is ready or has failed), sets up logging and signals, and runs a Daemon until
// SIGINT/SIGTERM or until the mount goes away. Returns the process exit code:
// 0 clean, 1 failed, 2 bad configuration; a worker (--fuse-fd): 3 when
// --takeover finds no state of its connection to adopt, 75 after a hand-over
// (SIGUSR2).
int runDaemon(RunConfig cfg);

}  // namespace hotshard
