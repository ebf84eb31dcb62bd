#include "daemon/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "daemon/cache_service.h"
#include "daemon/control.h"
#include "daemon/control_protocol.h"
#include "daemon/metrics.h"
#include "daemon/placement.h"
#include "daemon/status_sources.h"
#include "fuse/filesystem.h"
#include "fuse/mount.h"
#include "fuse/passthrough_shim.h"

namespace hotshard {
namespace {

constexpr const char* kVersion = "0.1.0";

// Refuses a mount point that hotshard (live or dead) already covers, and a remote
// that is itself a hotshard mount.
Status checkPaths(const RunConfig& cfg) {
  struct stat st;
  if (::stat(cfg.remote.c_str(), &st) < 0) {
    if (errno == ENOTCONN) {
      return makeError(Errc::kBusy, cfg.remote +
                                        " is a FUSE mount whose daemon is gone (a crashed "
                                        "hotshard?): run 'umount -l " + cfg.remote +
                                        "' and start again");
    }
    return lastSysError("remote " + cfg.remote);
  }
  if (!S_ISDIR(st.st_mode)) {
    return makeError(Errc::kInvalidArgument, "remote " + cfg.remote + " is not a directory");
  }
  if (cfg.mount != cfg.remote && ::stat(cfg.mount.c_str(), &st) < 0) {
    if (errno == ENOTCONN) {
      return makeError(Errc::kBusy, cfg.mount +
                                        " is a FUSE mount whose daemon is gone (a crashed "
                                        "hotshard?): run 'umount -l " + cfg.mount +
                                        "' and start again");
    }
    return lastSysError("mount point " + cfg.mount);
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

void setupLogging(const RunConfig& cfg) {
  std::shared_ptr<spdlog::logger> logger;
  if (cfg.foreground) {
    logger = spdlog::stderr_color_mt("hotshard");
  } else {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(cfg.log_file).parent_path(), ec);
    logger = spdlog::basic_logger_mt("hotshard", cfg.log_file);
    logger->flush_on(spdlog::level::info);
  }
  logger->set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::set_default_logger(logger);
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

int runDaemon(RunConfig cfg) {
  Status finalized = finalizeRunConfig(cfg);
  if (!finalized.ok()) {
    std::fprintf(stderr, "hotshard run: %s\n", finalized.error().message.c_str());
    return 2;
  }
  auto consistency = fuse::Consistency::parse(cfg.consistency);
  if (!consistency.ok()) {
    std::fprintf(stderr, "hotshard run: %s\n", consistency.error().message.c_str());
    return 2;
  }
  if (Status st = checkPaths(cfg); !st.ok()) {
    std::fprintf(stderr, "hotshard run: %s\n", st.error().message.c_str());
    return 1;
  }
  std::error_code ec;
  std::filesystem::create_directories(cfg.cache, ec);
  if (ec) {
    std::fprintf(stderr, "hotshard run: create cache directory %s: %s\n", cfg.cache.c_str(),
                 ec.message().c_str());
    return 1;
  }

  // The cache's keys name the remote by its canonical path (as `hotshard cache`
  // does offline); resolve it while nothing covers it.
  if (char* real = ::realpath(cfg.remote.c_str(), nullptr)) {
    cfg.remote_canonical = real;
    std::free(real);
  } else {
    cfg.remote_canonical = cfg.remote;
  }

  // The remote is opened before anything is mounted over it: from here on all
  // remote access goes through this fd, so mounting on the remote's own path works.
  int remote_fd = ::open(cfg.remote.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (remote_fd < 0) {
    std::fprintf(stderr, "hotshard run: open remote %s: %s\n", cfg.remote.c_str(),
                 std::strerror(errno));
    return 1;
  }

  ReadyPipe ready;
  if (!cfg.foreground) {
    int rc = daemonize(&ready);
    if (rc >= 0) return rc;
  }
  ::umask(0);  // the kernel has applied the caller's umask to every mode we get
  setupLogging(cfg);
  auto fail = [&](const std::string& msg) {
    spdlog::error("{}", msg);
    ready.report(msg);
    return 1;
  };

  // Signals are taken by one thread with sigwait; every other thread blocks them.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  // After daemonize(): the service starts threads, which a fork would not carry.
  auto cache = CacheService::start(cfg, remote_fd);
  if (!cache.ok()) return fail("cache " + cfg.cache + ": " + cache.error().message);
  // The probes watch the file systems that back our files: the remote's and the cache's.
  std::vector<dev_t> devices;
  for (int fd : {remote_fd, -1}) {
    struct stat dst {};
    if (fd >= 0 ? ::fstat(fd, &dst) == 0 : ::stat(cfg.cache.c_str(), &dst) == 0) {
      if (std::find(devices.begin(), devices.end(), dst.st_dev) == devices.end()) {
        devices.push_back(dst.st_dev);
      }
    }
  }
  auto placement = Placement::start(
      PlacementOptions{.tick_seconds = cfg.tick_seconds,
                       .policy = cfg.policy,
                       .probes = cfg.probes,
                       .automatic = cfg.automatic_placement,
                       .promote_budget_per_tick =
                           static_cast<uint64_t>(static_cast<double>(cfg.promote_rate) *
                                                 cfg.tick_seconds),
                       .sample_rate = cfg.probe_sample_rate},
      cache->get(), devices);
  if (!placement.ok()) return fail(placement.error().message);
  (*cache)->setOpenListener([p = placement->get()](const std::string& rel, const struct stat& st,
                                                   bool from_cache, bool for_write) {
    p->noteOpen(rel, st, from_cache, for_write);
  });

  fuse::PassthroughShim shim(cfg.passthrough);
  // FUSE latency goes to the metrics exporter, which starts after the mount.
  std::atomic<MetricsExporter*> latency_sink{nullptr};
  if (cfg.metrics != "off") {
    shim.setLatencyObserver([&latency_sink](std::string_view op, double seconds) {
      if (MetricsExporter* m = latency_sink.load(std::memory_order_acquire)) {
        m->observeFuseOp(op, seconds);
      }
    });
  }
  fuse::FileSystem fs(fuse::FileSystemOptions{.remote_root_fd = remote_fd,
                                              .consistency = *consistency,
                                              .cache = cache->get()},
                      &shim);

  char arg0[] = "hotshard";
  char* argv[] = {arg0, nullptr};
  fuse_args args = FUSE_ARGS_INIT(1, argv);
  fuse_session* se =
      fuse_session_new(&args, &fuse::FileSystem::ops(), sizeof(fuse_lowlevel_ops), fs.userdata());
  if (se == nullptr) return fail("fuse_session_new failed");

  auto devfd = fuse::mountFuse(cfg.mount, "hotshard:" + cfg.remote);
  if (!devfd.ok()) {
    fuse_session_destroy(se);
    return fail(devfd.error().message);
  }
  // The kernel names the connection after the mount's device number. Read it from
  // the mount table: a stat of the mount point would wait on ourselves.
  dev_t conn_dev = 0;
  if (auto table = fuse::readMountTable(); table.ok()) {
    if (auto top = fuse::topMountAt(*table, cfg.mount)) conn_dev = top->dev;
  }
  if (Status st = shim.attach(se, *devfd); !st.ok()) {
    (void)fuse::unmountFuse(cfg.mount);
    fuse_session_destroy(se);
    return fail(st.error().message);
  }

  std::atomic<bool> stopping{false};
  std::thread signals([&] {
    int sig = 0;
    while (sigwait(&sigs, &sig) == 0) {
      if (sig == SIGHUP) continue;  // reserved for config reload
      break;
    }
    if (sig == 0) return;  // sigwait failed: nothing to do
    stopping = true;
    spdlog::info("received {}, unmounting {}", strsignal(sig), cfg.mount);
    auto how = fuse::unmountFuse(cfg.mount);
    if (!how.ok()) {
      spdlog::error("{}", how.error().message);
    } else if (*how != "unmounted") {
      spdlog::warn("{}: {}; they will see ENOTCONN", cfg.mount, *how);
      fuse_session_exit(se);
      fuse::abortConnection(conn_dev);
    }
  });

  // The session loop runs on its own thread so that start-up can wait for the
  // kernel's FUSE_INIT (sent on mount) before telling anyone the mount is ready.
  int rc = 0;
  std::thread loop_thread([&] {
    fuse_loop_config* loop = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(loop, cfg.fuse_threads);
    fuse_loop_cfg_set_idle_threads(loop, std::min(cfg.fuse_threads, 4u));
    fuse_loop_cfg_set_clone_fd(loop, 0);
    rc = fuse_session_loop_mt(se, loop);
    fuse_loop_cfg_destroy(loop);
  });
  std::unique_ptr<ControlServer> control_server;
  std::unique_ptr<MetricsExporter> metrics;
  bool start_failed = false;
  if (!shim.waitForInit(10000)) {
    start_failed = true;
    fail("the kernel did not initialize the FUSE connection within 10 s");
    pthread_kill(signals.native_handle(), SIGTERM);
  } else {
    std::map<std::string, ControlServer::Handler> handlers;
    // One snapshot of everything: the status command and every metrics scrape.
    auto status = [sources = StatusSources{.version = kVersion,
                                           .cfg = &cfg,
                                           .consistency = consistency->toString(),
                                           .shim = &shim,
                                           .fs = &fs,
                                           .cache = cache->get(),
                                           .placement = placement->get()}] {
      return collectStatus(sources);
    };
    handlers[control::kStatus] = [status](const json&,
                                          const ControlServer::Progress&) -> Result<json> {
      return json(status());
    };
    (*cache)->addHandlers(handlers);
    (*placement)->addHandlers(handlers);
    auto exporter = MetricsExporter::start(cfg.metrics, status);
    if (!exporter.ok()) {
      start_failed = true;
      fail(exporter.error().message);
      pthread_kill(signals.native_handle(), SIGTERM);
    } else if (auto control = ControlServer::start(cfg.control_socket, std::move(handlers));
               !control.ok()) {
      start_failed = true;
      fail(control.error().message);
      pthread_kill(signals.native_handle(), SIGTERM);
    } else {
      control_server = std::move(*control);
      metrics = std::move(*exporter);
      if (metrics->enabled()) {
        MetricsExporter* m = metrics.get();
        latency_sink.store(m, std::memory_order_release);
        (*cache)->setPromotionObserver(
            [m](double seconds, uint64_t bytes) { m->observePromotion(seconds, bytes); });
      }
      spdlog::info("hotshard {} serving {} on {} ({}, consistency {}), passthrough: {}, control "
                   "socket {}, metrics {}",
                   kVersion, cfg.remote, cfg.mount,
                   cfg.mount == cfg.remote ? "over the remote" : "separate",
                   consistency->toString(), shim.reason(), cfg.control_socket,
                   metrics->enabled() ? metrics->url() : "off");
      ready.report("ok");
      if (!cfg.foreground) detachStdio();
    }
  }
  loop_thread.join();

  // The loop ends when the kernel drops the connection: our unmount, or someone
  // else's (umount, fusermount -u).
  if (!stopping) {
    spdlog::info("the mount went away; shutting down");
    pthread_kill(signals.native_handle(), SIGTERM);
  }
  signals.join();
  if (control_server) control_server->stop();
  latency_sink.store(nullptr);
  (*cache)->setPromotionObserver(nullptr);
  metrics.reset();     // its snapshot reads the shim, the file system, the cache, placement
  placement->reset();  // stops the ticks, which use the cache
  cache->reset();      // stops promotions and the scrub before the remote fd goes
  fuse_session_destroy(se);
  ::close(remote_fd);
  spdlog::info("stopped; {} is as before", cfg.mount);
  spdlog::shutdown();
  return start_failed || rc < 0 ? 1 : 0;
}

}  // namespace hotshard
