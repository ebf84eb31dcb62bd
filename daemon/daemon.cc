#include "daemon/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <thread>

#include "base/paths.h"
#include "daemon/cache_service.h"
#include "daemon/control.h"
#include "daemon/control_protocol.h"
#include "daemon/metrics.h"
#include "daemon/peer_service.h"
#include "daemon/placement.h"
#include "daemon/status_sources.h"
#include "daemon/supervisor.h"
#include "fuse/filesystem.h"
#include "fuse/mount.h"
#include "fuse/passthrough_shim.h"
#include "fuse/takeover_state.h"

namespace hotshard {
namespace {

constexpr const char* kVersion = "0.1.0";

// A FUSE mount whose daemon died answers ENOTCONN to everything.
Error deadMountError(const std::string& path) {
  return makeError(Errc::kBusy, path +
                                    " is a FUSE mount whose daemon is gone (a crashed "
                                    "hotshard?): run 'umount -l " + path + "' and start again");
}

// Refuses a mount point that hotshard (live or dead) already covers, and a remote
// that is itself a hotshard mount.
Status checkPaths(const RunConfig& cfg) {
  struct stat st;
  // The remote's type as the kernel has it (AT_STATX_DONT_SYNC): a remote that
  // hangs (a network file system whose server is gone) answers without asking
  // it, as a takeover's checks do; its first call under the deadline says more.
  struct statx stx {};
  if (::statx(AT_FDCWD, cfg.remote.c_str(), AT_STATX_DONT_SYNC, STATX_TYPE, &stx) < 0) {
    return errno == ENOTCONN ? deadMountError(cfg.remote) : lastSysError("remote " + cfg.remote);
  }
  st.st_mode = stx.stx_mode;
  if (!S_ISDIR(st.st_mode)) {
    return makeError(Errc::kInvalidArgument, "remote " + cfg.remote + " is not a directory");
  }
  if (cfg.mount != cfg.remote && ::stat(cfg.mount.c_str(), &st) < 0) {
    return errno == ENOTCONN ? deadMountError(cfg.mount)
                             : lastSysError("mount point " + cfg.mount);
  }
  ASSIGN_OR_RETURN(auto table, fuse::readMountTable());
  if (auto top = fuse::topMountAt(table, cfg.mount); top && top->fstype == fuse::kFsType) {
    return makeError(Errc::kBusy, cfg.mount + " is already covered by a hotshard mount (" +
                                      top->source + "); stop that daemon first, or see "
                                      "'hotshard status --mount " + cfg.mount + "'");
  }
  if (cfg.mount != cfg.remote) {
    if (auto top = fuse::topMountAt(table, cfg.remote); top && top->fstype == fuse::kFsType) {
      return makeError(Errc::kInvalidArgument,
                       "remote " + cfg.remote + " is itself a hotshard mount (" + top->source +
                           "); point --remote at the real remote directory");
    }
  }
  return Ok{};
}

// The mount path as the mount table names it (symlinks resolved). A worker
// resolves only the parent: the mount point itself is the FUSE root, which
// answers nothing until this very process serves it.
std::string mountPathOf(const RunConfig& cfg) {
  std::error_code ec;
  if (cfg.worker.fuse_fd < 0) {
    auto resolved = std::filesystem::canonical(cfg.mount, ec);
    return ec ? cfg.mount : resolved.string();
  }
  std::filesystem::path mount(cfg.mount);
  if (!mount.has_parent_path() || mount.parent_path() == mount) return cfg.mount;  // "/"
  auto parent = std::filesystem::canonical(mount.parent_path(), ec);
  return ec ? cfg.mount : (parent / mount.filename()).string();
}

// A worker (--fuse-fd) starts on a mount that is already there: the fd must be
// /dev/fuse and the mount at --mount a hotshard one; the remote is --remote-fd
// (or the path, when the mount does not cover it). Nothing here touches the mount.
Status checkWorkerPaths(const RunConfig& cfg) {
  struct stat st;
  if (::fstat(cfg.worker.fuse_fd, &st) < 0) {
    return lastSysError("--fuse-fd " + std::to_string(cfg.worker.fuse_fd));
  }
  if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 || minor(st.st_rdev) != 229) {
    return makeError(Errc::kInvalidArgument,
                     "--fuse-fd " + std::to_string(cfg.worker.fuse_fd) + " is not /dev/fuse");
  }
  ASSIGN_OR_RETURN(auto table, fuse::readMountTable());
  auto top = fuse::topMountAt(table, mountPathOf(cfg));
  if (!top || top->fstype != fuse::kFsType) {
    return makeError(Errc::kInvalidArgument,
                     "--fuse-fd: no hotshard mount on " + cfg.mount + " to serve");
  }
  if (cfg.worker.remote_fd >= 0) {
    // What the kernel has (AT_STATX_DONT_SYNC): a successor may start while the
    // remote hangs (docs/restart.md), and the type of an open fd does not change.
    struct statx stx {};
    if (::statx(cfg.worker.remote_fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx) < 0) {
      return lastSysError("--remote-fd " + std::to_string(cfg.worker.remote_fd));
    }
    st.st_mode = stx.stx_mode;
  } else if (cfg.mount == cfg.remote) {
    return makeError(Errc::kInvalidArgument, "--fuse-fd over the remote " + cfg.remote +
                                                 " needs --remote-fd: the path is covered");
  } else if (::stat(cfg.remote.c_str(), &st) < 0) {
    return lastSysError("remote " + cfg.remote);
  }
  if (!S_ISDIR(st.st_mode)) {
    return makeError(Errc::kInvalidArgument, "remote " + cfg.remote + " is not a directory");
  }
  return Ok{};
}

// In the background the log file sits behind a dist_sink, so reopenLog() can
// swap it under the sink's own lock while other threads log.
std::shared_ptr<spdlog::sinks::dist_sink_mt> log_file_sink;

void setupLogging(const RunConfig& cfg) {
  std::shared_ptr<spdlog::logger> logger;
  if (cfg.foreground) {
    logger = spdlog::stderr_color_mt("hotshard");
  } else {
    // Explicit modes, as the daemon runs with umask 0; spdlog names what fails.
    std::string dir = std::filesystem::path(cfg.log_file).parent_path().string();
    if (makeDirectories(dir, 0750).ok()) (void)createFileNoWiderThan(cfg.log_file, 0640);
    log_file_sink = std::make_shared<spdlog::sinks::dist_sink_mt>();
    log_file_sink->add_sink(std::make_shared<spdlog::sinks::basic_file_sink_mt>(cfg.log_file));
    logger = std::make_shared<spdlog::logger>("hotshard", log_file_sink);
    logger->flush_on(spdlog::level::info);
  }
  logger->set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::set_default_logger(logger);
}

// SIGHUP: logrotate has moved the file away; go on in a new one at the path.
void reopenLog(const RunConfig& cfg) {
  if (!log_file_sink) return;  // --foreground: stderr
  try {
    (void)createFileNoWiderThan(cfg.log_file, 0640);  // the same mode as the first one
    auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(cfg.log_file);
    log_file_sink->set_sinks({file});
    spdlog::info("SIGHUP: reopened the log file {}", cfg.log_file);
  } catch (const spdlog::spdlog_ex& e) {
    spdlog::warn("SIGHUP: reopen the log file {}: {}; logging on to the old one", cfg.log_file,
                 e.what());
  }
}

// The parent of a background daemon waits on this pipe for one line: "ok" or
// the reason the start failed.
struct ReadyPipe {
  int fd = -1;
  void report(const std::string& line) {
    if (fd < 0) return;
    std::string msg = line + "\n";
    (void)!::write(fd, msg.data(), msg.size());
    ::close(fd);
    fd = -1;
  }
};

int daemonize(ReadyPipe* ready) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) {
    std::perror("hotshard: pipe");
    return 1;
  }
  pid_t pid = ::fork();
  if (pid < 0) {
    std::perror("hotshard: fork");
    return 1;
  }
  if (pid > 0) {
    ::close(fds[1]);
    std::string line;
    char c;
    while (::read(fds[0], &c, 1) == 1 && c != '\n') line.push_back(c);
    if (line == "ok") return 0;
    std::fprintf(stderr, "hotshard: %s\n",
                 line.empty() ? "the daemon exited during start-up" : line.c_str());
    return 1;
  }
  ::close(fds[0]);
  ready->fd = fds[1];
  ::setsid();
  return -1;  // the child goes on
}

void detachStdio() {
  int null = ::open("/dev/null", O_RDWR);
  if (null < 0) return;
  ::dup2(null, STDIN_FILENO);
  ::dup2(null, STDOUT_FILENO);
  ::dup2(null, STDERR_FILENO);
  if (null > STDERR_FILENO) ::close(null);
}

}  // namespace

// ---- Daemon: stages ----------------------------------------------------------

namespace {

// Stage errors say which stage failed: "STAGE: what".
Status inStage(const std::string& stage, Status st) {
  if (st.ok()) return st;
  Error e = st.takeError();
  e.message = stage + ": " + e.message;
  return e;
}

}  // namespace

void Daemon::SessionDeleter::operator()(fuse_session* se) const { fuse_session_destroy(se); }

Daemon::LoopThread::~LoopThread() {
  if (thread.joinable()) thread.join();
}

Daemon::Mount::~Mount() {
  if (daemon != nullptr) daemon->stop("the daemon is going");
}

Daemon::ControlLink::~ControlLink() {
  std::error_code ec;
  if (!link.empty() && std::filesystem::read_symlink(link, ec) == target) ::unlink(link.c_str());
}

Daemon::Quiesce::~Quiesce() {
  if (daemon == nullptr) return;
  if (daemon->placement_) daemon->placement_->stop();
  if (daemon->cache_) daemon->cache_->promoter().shutdown();
}

Daemon::MetricsHooks::~MetricsHooks() {
  if (daemon == nullptr) return;
  daemon->metrics_sink_.store(nullptr, std::memory_order_release);
  daemon->cache_->setPromotionObserver(nullptr);
  if (daemon->peer_) daemon->peer_->setFetchObserver(nullptr);
}

Daemon::CopyDropHook::~CopyDropHook() {
  if (daemon != nullptr) daemon->cache_->store().setDropListener(nullptr);  // waits for a call
}

namespace {
// Idle backings each hold an fd: at most 1024, and at most an eighth of the
// descriptor limit (the inodes' O_PATH fds need the rest).
size_t idleBackingCap() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur == RLIM_INFINITY) return 1024;
  return std::min<size_t>(1024, static_cast<size_t>(rl.rlim_cur / 8));
}

// The inodes' cached O_PATH fds (fuse/inode_table.h): a quarter of the
// descriptor limit, at least 256 and at most 262144; the others are opened
// again from their names when used.
size_t inodeFdCap() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 256;
  size_t limit = rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<size_t>(rl.rlim_cur);
  return std::clamp<size_t>(limit / 4, 256, 262144);
}
}  // namespace

Result<std::unique_ptr<Daemon>> Daemon::start(const RunConfig& cfg, UniqueFd remote_root) {
  std::unique_ptr<Daemon> d(new Daemon(cfg));
  d->remote_fd_ = std::move(remote_root);
  d->quiesce_.daemon = d.get();
  using Stage = Status (Daemon::*)();
  // A worker serves FUSE first: requests wait in the kernel while no process
  // reads them (a takeover's every ms is added to an open's wait), and loading
  // the heat probes takes about a second. Placement and the peer tier hear of
  // opens through sinks set when they are up.
  const std::initializer_list<Stage> worker_stages = {
      &Daemon::startCache,       &Daemon::startFileSystem, &Daemon::startMount,
      &Daemon::startLoop,        &Daemon::startPlacement,  &Daemon::startPeer,
      &Daemon::startRemoteWatch, &Daemon::startMetrics,    &Daemon::startControl};
  const std::initializer_list<Stage> stages = {
      &Daemon::startCache,       &Daemon::startPlacement, &Daemon::startPeer,
      &Daemon::startFileSystem,  &Daemon::startMount,     &Daemon::startLoop,
      &Daemon::startRemoteWatch, &Daemon::startMetrics,   &Daemon::startControl};
  for (Stage stage : cfg.worker.fuse_fd >= 0 ? worker_stages : stages) {
    Status st = (d.get()->*stage)();
    if (st.ok()) continue;
    // A worker that fails leaves the connection to its supervisor as a
    // hand-over would: mounted, backing ids registered.
    if (d->handOver()) (void)d->finishHandOver();
    return st.takeError();
  }
  spdlog::info("hotshard {} serving {} on {} ({}, consistency {}), passthrough: {}, control "
               "socket {}, metrics {}",
               kVersion, cfg.remote, cfg.mount,
               cfg.mount == cfg.remote ? "over the remote" : "separate",
               cfg.consistency.toString(), d->shim_->reason(), cfg.control_socket,
               d->metrics_->enabled() ? d->metrics_->url() : "off");
  return d;
}

Daemon::Daemon(const RunConfig& cfg) : cfg_(cfg) {}
Daemon::~Daemon() = default;

Status Daemon::startCache() {
  // A successor reads the state before its store recovers the copies that the
  // predecessor's writers still have open (docs/restart.md).
  std::vector<std::string> adopted_paths;
  if (cfg_.worker.takeover) {
    RETURN_IF_ERROR(adoptTakeoverState());
    adopted_paths = fuse::adoptedCopyPaths(takeover_state_->slots());
  }
  auto cache = CacheService::start(cfg_, remote_fd_.get(), adopted_paths);
  if (!cache.ok()) return inStage("cache " + cfg_.cache, cache.takeError());
  cache_ = std::move(*cache);
  cache_->setOpenListener(
      [this](const std::string& rel, const struct stat& st, bool from_cache, bool for_write) {
        if (Placement* p = placement_sink_.load(std::memory_order_acquire)) {
          p->noteOpen(rel, st, from_cache, for_write);
        }
      });
  cache_->setChangeListener([this](const std::string& rel, const fuse::Change& change) {
    if (Placement* p = placement_sink_.load(std::memory_order_acquire)) p->noteChange(rel, change);
  });
  if (!cfg_.cluster.empty()) {
    cache_->setCopyFetcher([this](const std::string& rel, const struct stat& remote) {
      PeerService* p = peer_sink_.load(std::memory_order_acquire);
      return p != nullptr && p->fetchCopy(rel, remote);
    });
  }
  return Ok{};
}

Status Daemon::startPlacement() {
  // The probes watch the file systems that back our files: the remote's and the cache's.
  std::vector<dev_t> devices;
  struct stat cache_st {};
  struct statx remote_stx {};
  // The device is the VFS's (AT_STATX_DONT_SYNC): a hung remote is not asked.
  if (::statx(remote_fd_.get(), "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &remote_stx) == 0) {
    devices.push_back(makedev(remote_stx.stx_dev_major, remote_stx.stx_dev_minor));
  }
  if (::stat(cfg_.cache.c_str(), &cache_st) == 0 &&
      std::find(devices.begin(), devices.end(), cache_st.st_dev) == devices.end()) {
    devices.push_back(cache_st.st_dev);
  }
  const double tick_seconds = toSeconds(cfg_.tick);
  auto placement = Placement::start(
      PlacementOptions{.tick_seconds = tick_seconds,
                       .policy = cfg_.policy,
                       .automatic = cfg_.automatic_placement,
                       .promote_budget_per_tick = static_cast<uint64_t>(
                           static_cast<double>(cfg_.promote_rate) * tick_seconds)},
      PlacementDeps{.store = &cache_->store(),
                    .promoter = &cache_->promoter(),
                    .heat = makeHeatSource(HeatSourceOptions{.probes = cfg_.probes,
                                                             .sample_rate = cfg_.probe_sample_rate,
                                                             .watch_devices = devices})});
  if (!placement.ok()) return inStage("placement", placement.takeError());
  placement_ = std::move(*placement);
  placement_sink_.store(placement_.get(), std::memory_order_release);
  return Ok{};
}

Status Daemon::startPeer() {
  if (cfg_.cluster.empty()) return Ok{};
  auto peer = PeerService::start(cfg_, PeerServiceDeps{.store = &cache_->store(),
                                                       .promoter = &cache_->promoter(),
                                                       .remote_root_fd = remote_fd_.get()});
  if (!peer.ok()) return inStage("cluster " + cfg_.cluster, peer.takeError());
  peer_ = std::move(*peer);
  peer_sink_.store(peer_.get(), std::memory_order_release);
  placement_->setOwnerOf([p = peer_.get()](const std::string& rel) { return p->ownerOf(rel); });
  return Ok{};
}

Status Daemon::openNamespace() {
  const std::string path = cfg_.cache + "/namespace.mdb";
  if (cfg_.consistency.mode == fuse::Consistency::Mode::kStrict) {
    // Writes through a strict mount do not update it: a later immutable or ttl
    // start must not find records from before them.
    if (fuse::NamespaceCache::remove(path)) spdlog::info("namespace {}: deleted (strict mode)", path);
    return Ok{};
  }
  auto names = fuse::NamespaceCache::open(
      {.path = path,
       .remote_id = cfg_.remote_canonical.empty() ? cfg_.remote : cfg_.remote_canonical,
       .mode = cfg_.consistency.mode == fuse::Consistency::Mode::kImmutable ? "immutable" : "ttl"});
  if (!names.ok()) return inStage("namespace " + path, names.takeError());
  names_ = std::move(*names);
  spdlog::info("namespace {}: {} records", path, names_->size());
  return Ok{};
}

Status Daemon::startFileSystem() {
  RETURN_IF_ERROR(openNamespace());
  shim_ = std::make_unique<fuse::PassthroughShim>(cfg_.passthrough);
  if (cfg_.metrics != "off") {
    // FUSE latency goes to the exporter, which starts after the mount.
    shim_->setLatencyObserver([this](std::string_view op, double seconds) {
      if (MetricsExporter* m = metrics_sink_.load(std::memory_order_acquire)) {
        m->observeFuseOp(op, seconds);
      }
    });
  }
  fs_ = std::make_unique<fuse::FileSystem>(
      fuse::FileSystemOptions{.remote_root_fd = remote_fd_.get(),
                              .consistency = cfg_.consistency,
                              .cache = cache_.get(),
                              .remote_timeout_seconds = toSeconds(cfg_.remote_timeout),
                              .idle_backings = idleBackingCap(),
                              .inode_fds = inodeFdCap(),
                              .names = names_.get()},
      shim_.get());
  for (CacheStore::WriteBackInFlight& w : cache_->takeStartWriteBacks()) {
    fs_->holdWriteLane(w.dev, w.ino, std::move(w.lane));
  }
  // Promotions read through the jobs' open remote files (daemon/promoter.h).
  cache_->setBackingSharer([fs = fs_.get()](dev_t dev, ino_t ino) {
    return fs->shareRemoteBacking(dev, ino);
  });
  cache_->store().setDropListener(
      [fs = fs_.get()](const std::vector<std::string>& rels) { fs->copiesDropped(rels); });
  copy_drop_hook_.daemon = this;
  char arg0[] = "hotshard";
  char* argv[] = {arg0, nullptr};
  fuse_args args = FUSE_ARGS_INIT(1, argv);
  session_.reset(fuse_session_new(&args, &fuse::FileSystem::ops(), sizeof(fuse_lowlevel_ops),
                                  fs_->userdata()));
  if (!session_) return makeError(Errc::kInternal, "file system: fuse_session_new failed");
  return Ok{};
}

Status Daemon::startMount() {
  // The mount table names the mount point with its symlinks resolved.
  mount_path_ = mountPathOf(cfg_);
  // A worker serves the supervisor's mount (--fuse-fd): no mount(2) of its own,
  // but the same unmount on SIGTERM.
  auto devfd = cfg_.worker.fuse_fd >= 0 ? Result<int>(cfg_.worker.fuse_fd)
                                        : fuse::mountFuse(cfg_.mount, "hotshard:" + cfg_.remote);
  if (!devfd.ok()) return devfd.takeError();  // names the mount point
  {
    std::lock_guard lock(stop_mu_);
    mounted_ = true;
  }
  mount_.daemon = this;
  // The kernel names the connection after the mount's device number. Read it from
  // the mount table: a stat of the mount point would wait on ourselves.
  if (auto table = fuse::readMountTable(); table.ok()) {
    if (auto top = fuse::topMountAt(*table, mount_path_)) conn_dev_ = top->dev;
  }
  RETURN_IF_ERROR(inStage("mount " + cfg_.mount, shim_->attach(session_.get(), *devfd)));
  return cfg_.worker.fuse_fd >= 0 ? startTakeoverState() : Ok{};
}

Status Daemon::startTakeoverState() {
  const fuse::ConnectionId conn{.dev = conn_dev_, .mount_path = mount_path_};
  if (!cfg_.worker.takeover) {
    auto state = fuse::TakeoverState::create(cfg_.worker.state_dir, conn);
    if (!state.ok()) return inStage("takeover state", state.takeError());
    takeover_state_ = std::move(*state);
    fuse::TakeoverState* st = takeover_state_.get();
    shim_->setInitObserver([st](const void* request, size_t size, bool passthrough) {
      st->saveInit(request, size, passthrough);
    });
    fs_->setTakeoverState(st);
    return Ok{};
  }
  RETURN_IF_ERROR(adoptTakeoverState());
  auto slots = takeover_state_->slots();
  fs_->adoptInodes(slots);
  shim_->adopt(takeover_state_->initRequest(), takeover_state_->passthrough());
  fs_->setTakeoverState(takeover_state_.get());
  spdlog::info("takeover of {}: {} node ids adopted from {}", mount_path_, slots.size(),
               takeover_state_->path());
  return Ok{};
}

// The predecessor's state for this very connection (once: startCache reads it
// first). The mount table names the connection; a stat of the mount point would
// wait on ourselves.
Status Daemon::adoptTakeoverState() {
  if (takeover_state_) return Ok{};
  mount_path_ = mountPathOf(cfg_);
  if (auto table = fuse::readMountTable(); table.ok()) {
    if (auto top = fuse::topMountAt(*table, mount_path_)) conn_dev_ = top->dev;
  }
  const fuse::ConnectionId conn{.dev = conn_dev_, .mount_path = mount_path_};
  auto state = fuse::TakeoverState::adopt(cfg_.worker.state_dir, conn);
  if (!state.ok()) return inStage("takeover state", state.takeError());
  takeover_state_ = std::move(*state);
  return Ok{};
}

Status Daemon::startLoop() {
  // The session loop runs on its own thread so that start-up can wait for the
  // kernel's FUSE_INIT (sent on mount) before telling anyone the mount is ready.
  loop_.thread = std::thread([this] {
    fuse_loop_config* loop = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(loop, cfg_.fuse_threads);
    fuse_loop_cfg_set_idle_threads(loop, std::min(cfg_.fuse_threads, 4u));
    fuse_loop_cfg_set_clone_fd(loop, 0);
    loop_.rc = fuse_session_loop_mt(session_.get(), loop);
    fuse_loop_cfg_destroy(loop);
    loop_ended_.store(true);
  });
  if (!shim_->waitForInit(10000)) {
    return makeError(Errc::kIo, "FUSE_INIT: the kernel did not initialize the FUSE connection "
                                "within 10 s");
  }
  if (cfg_.worker.takeover) {
    // What the predecessor read and never answered is queued again for us.
    Status resent = shim_->resendUnanswered();
    if (!resent.ok()) {
      spdlog::warn(
          "{} (needs Linux >= 6.9): requests the predecessor read but did not answer "
          "wait until their callers are interrupted or the connection is aborted",
          resent.error().message);
    }
  }
  return Ok{};
}

// ---- the remote watch: a remote that dies and is mounted again ----------------

namespace {
// AT_STATX_DONT_SYNC: the mount-root attribute is the VFS's, no need to ask a
// network file system (which may hang) for the rest.
bool isMountRoot(int fd) {
  struct statx stx {};
  return ::statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_BASIC_STATS, &stx) == 0 &&
         (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) != 0 &&
         (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) != 0;
}
// The id of the mount that dir_fd/path is on (statx(2) STATX_MNT_ID, Linux >=
// 5.8), or 0. AT_STATX_DONT_SYNC: no need to ask a network file system for it.
uint64_t mountIdOf(int dir_fd, const char* path, int flags) {
  struct statx stx {};
  if (::statx(dir_fd, path, flags | AT_STATX_DONT_SYNC, STATX_MNT_ID, &stx) != 0) return 0;
  return (stx.stx_mask & STATX_MNT_ID) != 0 ? stx.stx_mnt_id : 0;
}
}  // namespace

Status Daemon::startRemoteWatch() {
  // Over the remote, a new mount at its path would land on top of ours: nothing
  // to watch (docs/user-guide.md, "A remote that hangs").
  if (cfg_.mount == cfg_.remote) return Ok{};
  // Nothing here waits on the remote: a successor may start while it hangs
  // (docs/restart.md, "A takeover while the remote hangs"). The file system's
  // type comes from the watch's first statfs, under the deadline.
  remote_watch_.mount_root = isMountRoot(remote_fd_.get());
  remote_watch_.mnt_id = mountIdOf(remote_fd_.get(), "", AT_EMPTY_PATH);
  remote_watch_.thread = std::thread([this] { watchRemote(); });
  return Ok{};
}

Daemon::RemoteWatch::~RemoteWatch() {
  {
    std::lock_guard lock(mu);
    stop = true;
  }
  cv.notify_all();
  if (thread.joinable()) thread.join();
}

void Daemon::watchRemote() {
  const double timeout = toSeconds(cfg_.remote_timeout);
  auto rootCalls = [timeout] {
    return std::make_unique<fuse::RemoteCalls>(
        fuse::RemoteCalls::Options{.timeout_seconds = timeout, .max_workers = 1});
  };
  // A fresh pool for each new root: the old one's worker may stay blocked in it.
  std::unique_ptr<fuse::RemoteCalls> root_calls = rootCalls();
  fuse::RemoteCalls path_calls({.timeout_seconds = timeout, .max_workers = 2});
  bool dead = false;
  std::unique_lock lock(remote_watch_.mu);
  while (!remote_watch_.cv.wait_for(lock, std::chrono::seconds(1),
                                    [&] { return remote_watch_.stop; })) {
    lock.unlock();
    if (!dead) dead = remoteRootDead(*root_calls, path_calls);
    if (dead && reopenRemote(path_calls)) {
      dead = false;
      root_calls = rootCalls();
    }
    lock.lock();
  }
}

bool Daemon::remoteRootDead(fuse::RemoteCalls& root_calls, fuse::RemoteCalls& path_calls) {
  auto own = std::make_shared<UniqueFd>(::fcntl(remote_fd_.get(), F_DUPFD_CLOEXEC, 0));
  if (!*own) return false;
  // The file system's type (f_type, >= 0), or -errno.
  auto r = root_calls.run<int64_t>("remote watch: statfs", [own]() -> Result<int64_t> {
    struct statfs sf {};
    return ::fstatfs(own->get(), &sf) == 0 ? static_cast<int64_t>(sf.f_type) : -int64_t{errno};
  });
  // Hung (or still hung: refused): the deadline answers for its calls, unless
  // it was detached and the path is another mount now.
  if (!r.ok()) return remotePathMoved(path_calls);
  if (*r >= 0) {
    if (remote_watch_.fs_type == 0) remote_watch_.fs_type = *r;
    return false;
  }
  const int err = static_cast<int>(-*r);
  if (err != ENOTCONN && err != EIO && err != ESTALE && err != ENODEV) return false;
  spdlog::warn("remote {}: its root answers {}; waiting for it to be mounted again there",
               cfg_.remote, std::strerror(err));
  return true;
}

bool Daemon::remotePathMoved(fuse::RemoteCalls& path_calls) {
  if (remote_watch_.mnt_id == 0) return false;
  auto r = path_calls.run<uint64_t>("remote watch: statx " + cfg_.remote,
                               [path = cfg_.remote]() -> Result<uint64_t> {
                                 return mountIdOf(AT_FDCWD, path.c_str(), 0);
                               });
  if (!r.ok() || *r == 0 || *r == remote_watch_.mnt_id) return false;
  spdlog::warn("remote {}: its root does not answer and the path is another mount now (the "
               "old one detached); waiting for the remote to be mounted there",
               cfg_.remote);
  return true;
}

bool Daemon::reopenRemote(fuse::RemoteCalls& calls) {
  auto r = calls.run<int>(
      "remote watch: open " + cfg_.remote,
      [path = cfg_.remote, type = remote_watch_.fs_type,
       root = remote_watch_.mount_root]() -> Result<int> {
        UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!fd) return lastSysError("open " + path);
        struct statfs sf {};
        if (::fstatfs(fd.get(), &sf) != 0) return lastSysError("statfs " + path);
        // The directory under a mount that went is no remote: wait for the mount.
        // (type 0: the root hung before its first statfs answered.)
        if ((type != 0 && static_cast<int64_t>(sf.f_type) != type) ||
            (root && !isMountRoot(fd.get()))) {
          return makeError(Errc::kNotFound, path + ": not mounted again yet");
        }
        return fd.release();
      },
      [](Result<int>& late) {
        if (late.ok()) ::close(*late);
      });
  if (!r.ok()) return false;
  UniqueFd fresh(*r);
  // The cache and the promoter borrow this fd: they see the new root at once.
  if (::dup3(fresh.get(), remote_fd_.get(), O_CLOEXEC) < 0) {
    spdlog::error("remote {}: dup3 of the new root: {}", cfg_.remote, std::strerror(errno));
    return false;
  }
  remote_watch_.mnt_id = mountIdOf(remote_fd_.get(), "", AT_EMPTY_PATH);
  fs_->remoteRootReplaced(remote_fd_.get());
  if (peer_) peer_->remoteRootReplaced();
  spdlog::info("remote {} is mounted again: serving it without a restart", cfg_.remote);
  return true;
}

Status Daemon::startMetrics() {
  auto exporter = MetricsExporter::start(cfg_.metrics, [this] { return status(); });
  if (!exporter.ok()) return exporter.takeError();  // names the address
  metrics_ = std::move(*exporter);
  if (metrics_->enabled()) {
    MetricsExporter* m = metrics_.get();
    metrics_sink_.store(m, std::memory_order_release);
    cache_->setPromotionObserver(
        [m](double seconds, uint64_t bytes) { m->observePromotion(seconds, bytes); });
    if (peer_) peer_->setFetchObserver([m](double seconds) { m->observePeerFetch(seconds); });
  }
  metrics_hooks_.daemon = this;
  return Ok{};
}

Status Daemon::startControl() {
  std::map<std::string, ControlServer::Handler> handlers;
  handlers[control::kStatus] = [this](const json&, const ControlServer::Progress&) -> Result<json> {
    return json(status());
  };
  handlers[control::kStop] = [](const json&, const ControlServer::Progress&) -> Result<json> {
    ::kill(::getpid(), SIGTERM);  // the signal thread stops us, as for `kill`
    return json{{control::kPid, ::getpid()}};
  };
  cache_->addHandlers(handlers);
  placement_->addHandlers(handlers);
  auto control = ControlServer::start(cfg_.control_socket, std::move(handlers));
  if (!control.ok()) return control.takeError();  // names the socket
  control_ = std::move(*control);
  // Discovery only: a daemon that cannot leave the link still serves.
  std::string link = controlSocketFor(cfg_.mount);
  if (link == cfg_.control_socket) return Ok{};
  std::error_code ec;
  std::filesystem::create_directories(kRunDir, ec);
  ::unlink(link.c_str());  // a link or socket left by a daemon that was killed on this mount
  if (::symlink(cfg_.control_socket.c_str(), link.c_str()) != 0) {
    spdlog::warn("control socket {}: symlink {}: {}; 'hotshard --mount {}' will not find it",
                 cfg_.control_socket, link, std::strerror(errno), cfg_.mount);
    return Ok{};
  }
  control_link_.link = link;  // set in place: a temporary's destructor would remove it
  control_link_.target = cfg_.control_socket;
  return Ok{};
}

// ---- Daemon: running and stopping ----------------------------------------------

void Daemon::stop(const std::string& why) {
  std::lock_guard lock(stop_mu_);
  stopping_ = true;
  if (!mounted_) return;
  mounted_ = false;
  // Someone else's umount may have come first (its loop is just ending): then
  // the top mount there is not ours, and may be the remote's own.
  auto table = fuse::readMountTable();
  auto top = table.ok() ? fuse::topMountAt(*table, mount_path_) : std::nullopt;
  if (table.ok() && conn_dev_ != 0 && (!top || top->dev != conn_dev_)) {
    spdlog::info("{}: {} was unmounted already", why, cfg_.mount);
    if (session_) fuse_session_exit(session_.get());
    fuse::abortConnection(conn_dev_);  // a lazy umount may leave files open: end them
    return;
  }
  spdlog::info("{}: unmounting {}", why, cfg_.mount);
  auto how = fuse::unmountFuse(mount_path_);
  if (!how.ok()) {
    spdlog::error("{}", how.error().message);
  } else if (*how != "unmounted") {
    spdlog::warn("{}: {}; they will see ENOTCONN", cfg_.mount, *how);
  } else {
    return;
  }
  // Busy or failed: end the loop and abort the connection, so nothing hangs.
  if (session_) fuse_session_exit(session_.get());
  fuse::abortConnection(conn_dev_);
}

bool Daemon::wait() {
  if (loop_.thread.joinable()) loop_.thread.join();
  // The loop ends when the kernel drops the connection: our unmount, or someone
  // else's (umount, fusermount -u).
  if (!stopping()) {
    spdlog::info("the mount went away; shutting down");
    std::lock_guard lock(stop_mu_);
    stopping_ = true;
    mounted_ = false;
  }
  return loop_.rc >= 0;
}

bool Daemon::stopping() const { return stopping_.load(); }

bool Daemon::handOver() {
  if (cfg_.worker.fuse_fd < 0 || !session_) return false;
  {
    std::lock_guard lock(stop_mu_);
    if (stopping_) return false;
    stopping_ = true;
    handing_over_ = true;
    mounted_ = false;  // the mount stays: the successor serves it
  }
  spdlog::info("SIGUSR2: handing {} over to a successor", cfg_.mount);
  shim_->stopReading();
  fuse_session_exit(session_.get());
  // libfuse's loop waits on a semaphore until a worker ends: a signal wakes it
  // (sem_wait is never restarted), it sees the session exited and cancels the
  // workers blocked in read(2) (a read that returned a request is processed
  // with cancellation off, fuse_loop_mt.c), then joins them.
  while (loop_.thread.joinable() && !loop_ended_.load()) {
    pthread_kill(loop_.thread.native_handle(), SIGUSR1);
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

Status Daemon::finishHandOver() {
  fs_->handOver();  // backing ids stay registered: open files use them
  if (takeover_state_) RETURN_IF_ERROR(takeover_state_->sync());
  return Ok{};
}

StatusSnapshot Daemon::status() const {
  return collectStatus(StatusSources{.version = kVersion,
                                     .cfg = &cfg_,
                                     .shim = shim_.get(),
                                     .fs = fs_.get(),
                                     .cache = cache_.get(),
                                     .placement = placement_.get(),
                                     .peer = peer_.get()});
}

// ---- runDaemon: the process around a Daemon -------------------------------------

namespace {

// Validated config and the remote opened before anything covers it. Errors carry
// the exit code: 2 for a bad configuration, 1 for anything else.
struct Prepared {
  RunConfig cfg;
  UniqueFd remote;
};

Result<Prepared> prepareRun(RunConfig cfg, int* exit_code) {
  *exit_code = 2;
  RETURN_IF_ERROR(finalizeRunConfig(cfg));
  *exit_code = 1;
  const bool worker = cfg.worker.fuse_fd >= 0;
  RETURN_IF_ERROR(worker ? checkWorkerPaths(cfg) : checkPaths(cfg));
  RETURN_IF_ERROR(makeDirectories(cfg.cache, 0755));  // inside, the store makes 0700 and 0600
  // Inherited fds are ours now: no child of ours gets them.
  for (int fd : {cfg.worker.fuse_fd, cfg.worker.remote_fd, cfg.worker.ready_fd}) {
    if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  // From here on all remote access goes through this fd, so mounting on the
  // remote's own path works.
  UniqueFd remote(cfg.worker.remote_fd >= 0
                      ? cfg.worker.remote_fd
                      : ::open(cfg.remote.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!remote) return lastSysError("open remote " + cfg.remote);
  // The cache's keys name the remote by its canonical path (as `hotshard cache`
  // does offline); resolve it while nothing covers it, or from the inherited fd.
  std::error_code canon_ec;
  auto canonical =
      cfg.worker.remote_fd >= 0
          ? std::filesystem::read_symlink("/proc/self/fd/" + std::to_string(remote.get()), canon_ec)
          : std::filesystem::canonical(cfg.remote, canon_ec);
  cfg.remote_canonical = canon_ec ? cfg.remote : canonical.string();
  return Prepared{std::move(cfg), std::move(remote)};
}

// Signals are taken by one thread with sigwait; every other thread blocks them
// (the mask is set before any thread starts). SIGHUP reopens the log file
// (logrotate's postrotate), SIGINT and SIGTERM stop.
class SignalWaiter {
 public:
  static sigset_t blockStopSignals() {
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    sigaddset(&sigs, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
    ::signal(SIGPIPE, SIG_IGN);
    // SIGUSR1 only wakes the session loop for a hand-over (Daemon::handOver):
    // a handler that does nothing, without SA_RESTART.
    struct sigaction wake {};
    wake.sa_handler = [](int) {};
    sigemptyset(&wake.sa_mask);
    ::sigaction(SIGUSR1, &wake, nullptr);
    return sigs;
  }
  // Calls on_hangup() on each SIGHUP, on_hand_over() on SIGUSR2 (it returns
  // false when the process cannot hand over: the signal is ignored), and
  // on_signal(name) on SIGINT/SIGTERM, unless woken by the destructor.
  SignalWaiter(sigset_t sigs, std::function<void()> on_hangup, std::function<bool()> on_hand_over,
               std::function<void(const char*)> on_signal)
      : thread_([this, sigs, on_hangup = std::move(on_hangup),
                 on_hand_over = std::move(on_hand_over), on_signal = std::move(on_signal)] {
          int sig = 0;
          while (sigwait(&sigs, &sig) == 0) {
            if (sig == SIGHUP) {
              on_hangup();
            } else if (sig == SIGUSR2) {
              if (!quitting_.load() && on_hand_over()) return;
            } else {
              break;
            }
          }
          if (sig != 0 && !quitting_.load()) on_signal(strsignal(sig));
        }) {}
  ~SignalWaiter() {
    quitting_ = true;
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

 private:
  std::atomic<bool> quitting_{false};
  std::thread thread_;
};

// kExitHandedOver, kExitNoTakeoverState: daemon/supervisor.h, which reads them.

// Open files, idle backings and the inodes' cached O_PATH fds are sized by the
// descriptor limit (a quarter of it for the last): raise the soft one to the hard one.
void raiseFdLimit() {
  struct rlimit rl;
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      spdlog::warn("descriptor limit {}: raising it to {}: {}", was, rl.rlim_max,
                   std::strerror(errno));
      return;
    }
  }
  spdlog::info(
      "descriptor limit {}",
      rl.rlim_cur == RLIM_INFINITY ? std::string("unlimited") : std::to_string(rl.rlim_cur));
}

// After a hand-over: the components stop (promotions, placement, control)
// without unmounting; the state is on its file. Exit status 75.
int finishHandOver(std::unique_ptr<Daemon> daemon, const RunConfig& cfg) {
  Status st = daemon->finishHandOver();
  daemon.reset();
  if (!st.ok()) spdlog::error("hand-over: {}", st.error().message);
  spdlog::info("handed {} over: exiting without unmounting", cfg.mount);
  spdlog::shutdown();
  return st.ok() ? kExitHandedOver : 1;
}

// `hotshard run` without --no-supervisor: this process mounts and supervises
// workers (daemon/supervisor.h). Signals are blocked already (SignalWaiter).
int superviseRun(const RunConfig& cfg, int remote_fd, ReadyPipe& ready) {
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  pthread_sigmask(SIG_BLOCK, &chld, nullptr);
  // The workers inherit our stdio: in the background, nothing that holds the
  // caller's terminal or pipe (they log to the log file).
  if (!cfg.foreground) detachStdio();
  int rc = runSupervisor(cfg, remote_fd,
                         SupervisorHooks{.report_start = [&ready](const std::string& line) {
                                           ready.report(line);
                                         },
                                         .reopen_log = [&cfg] { reopenLog(cfg); }});
  spdlog::info("supervisor: exiting {}", rc);
  spdlog::shutdown();
  return rc;
}

}  // namespace

int runDaemon(RunConfig cfg) {
  int exit_code = 0;
  auto prepared = prepareRun(std::move(cfg), &exit_code);
  if (!prepared.ok()) {
    std::fprintf(stderr, "hotshard run: %s\n", prepared.error().message.c_str());
    return exit_code;
  }
  const RunConfig& run_cfg = prepared->cfg;
  ReadyPipe ready;
  // A supervisor's worker stays its child (the supervisor detached already).
  if (!run_cfg.foreground && run_cfg.worker.fuse_fd < 0) {
    int rc = daemonize(&ready);
    if (rc >= 0) return rc;
  }
  ::umask(0);  // the kernel has applied the caller's umask to every mode we get
  setupLogging(run_cfg);
  raiseFdLimit();
  sigset_t sigs = SignalWaiter::blockStopSignals();
  if (!run_cfg.no_supervisor && run_cfg.worker.fuse_fd < 0) {
    return superviseRun(run_cfg, prepared->remote.get(), ready);
  }
  // After daemonize(): the components start threads, which a fork would not carry.
  auto daemon = Daemon::start(run_cfg, std::move(prepared->remote));
  if (!daemon.ok()) {
    spdlog::error("{}", daemon.error().message);
    ready.report(daemon.error().message);
    // The supervisor gives up on the connection (aborts and unmounts) then.
    bool no_state = run_cfg.worker.takeover &&
                    daemon.error().message.rfind("takeover state: ", 0) == 0;
    // The supervisor says why to the caller of a background start.
    if (run_cfg.worker.ready_fd >= 0) ReadyPipe{run_cfg.worker.ready_fd}.report(daemon.error().message);
    return no_state ? kExitNoTakeoverState : 1;
  }
  ready.report("ok");
  // Under systemd (Type=notify, --foreground): the mount has answered FUSE_INIT and
  // the control socket listens. Without NOTIFY_SOCKET sd_notify does nothing. A
  // supervisor's worker tells its supervisor instead (--ready-fd).
  if (run_cfg.worker.ready_fd >= 0) {
    ReadyPipe{run_cfg.worker.ready_fd}.report("ready");
  } else if (run_cfg.foreground) {
    (void)sd_notify(0, "READY=1");
  }
  if (!run_cfg.foreground) detachStdio();
  bool clean;
  {
    Daemon* d = daemon->get();
    SignalWaiter signals(
        sigs, [&run_cfg] { reopenLog(run_cfg); }, [d] { return d->handOver(); },
        [d, &run_cfg](const char* sig) {
          if (run_cfg.foreground) (void)sd_notify(0, "STOPPING=1");
          d->stop(std::string("received ") + sig);
        });
    clean = d->wait();
  }
  if ((*daemon)->handingOver()) return finishHandOver(std::move(*daemon), run_cfg);
  daemon->reset();
  spdlog::info("stopped; {} is as before", run_cfg.mount);
  spdlog::shutdown();
  return clean ? 0 : 1;
}

}  // namespace hotshard
