// `hotshard cache ...`: offline maintenance of a cache directory while no
// daemon uses it (the store's LOCK refuses a second user): list objects,
// verify checksums, promote files by hand (and time it: docs/cache.md).
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>

#include "daemon/cache_store.h"
#include "daemon/promoter.h"
#include "tools/commands.h"
#include "tools/options.h"

namespace hotshard::cli {
namespace {

struct CacheArgs {
  std::string cache_dir, remote_dir;
  uint64_t capacity = 0;  // 0: the cache file system's size
  std::string io_engine = "uring";
  uint64_t chunk = 1 << 20;  // the promoter checks the range
  unsigned depth = 8;
  bool no_direct = false;
  bool no_preallocate = false;
  uint64_t rate = 0;
  std::vector<std::string> paths;
};

[[noreturn]] void die(const std::string& msg, int code = cli::kExitFailure) {
  std::fprintf(stderr, "hotshard cache: %s\n", msg.c_str());
  throw CLI::RuntimeError(code);
}

struct Opened {
  int remote_fd = -1;
  std::unique_ptr<CacheStore> store;
  ~Opened() {
    store.reset();
    if (remote_fd >= 0) ::close(remote_fd);
  }
};

// Opens the remote root and the store the way the daemon does: the remote
// identity is its canonical path.
void openBoth(const CacheArgs& a, bool for_promotion, Opened* out) {
  char real[PATH_MAX];
  if (::realpath(a.remote_dir.c_str(), real) == nullptr)
    die(fmt::format("remote {}: {}", a.remote_dir, std::strerror(errno)));
  out->remote_fd = ::open(real, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (out->remote_fd < 0) die(fmt::format("open remote {}: {}", real, std::strerror(errno)));
  auto id = remoteIdOf(out->remote_fd, real);
  if (!id.ok()) die(id.error().message);
  uint64_t capacity = a.capacity;
  if (capacity == 0) {
    // Listing and verifying must never evict: no limit then. Promotions are
    // bounded by the file system holding the cache.
    capacity = UINT64_MAX / 4;
    struct statvfs vfs {};
    if (for_promotion && ::statvfs(a.cache_dir.c_str(), &vfs) == 0)
      capacity = static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize;
  }
  auto store = CacheStore::open(
      CacheStoreOptions{.dir = a.cache_dir, .remote_id = *id, .capacity_bytes = capacity});
  if (!store.ok()) die(store.error().message);
  out->store = std::move(store).value();
}

void addCommon(CLI::App* cmd, CacheArgs* a) {
  cmd->add_option("--cache", a->cache_dir, "Cache directory")->required();
  cmd->add_option("--remote", a->remote_dir, "Remote directory the cache belongs to")->required();
}

void ls(const CacheArgs& a) {
  Opened o;
  openBoth(a, false, &o);
  for (const auto& obj : o.store->list()) {
    std::printf("%12llu %s %s%s\n", static_cast<unsigned long long>(obj.validator.size),
                obj.object_path.c_str(), obj.rel_path.c_str(), obj.pinned ? " (pinned)" : "");
  }
  auto st = o.store->stats();
  std::printf("%llu objects, %llu bytes allocated; recovery dropped %llu, swept %llu tmp files\n",
              static_cast<unsigned long long>(st.objects),
              static_cast<unsigned long long>(st.used_bytes),
              static_cast<unsigned long long>(st.recovery_drops),
              static_cast<unsigned long long>(st.recovery_tmp_swept));
}

void verify(const CacheArgs& a) {
  Opened o;
  openBoth(a, false, &o);
  auto t0 = std::chrono::steady_clock::now();
  auto r = o.store->verifyAll();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("verified %llu objects (%llu bytes) in %.2f s; dropped %llu\n",
              static_cast<unsigned long long>(r.checked), static_cast<unsigned long long>(r.bytes),
              secs, static_cast<unsigned long long>(r.dropped));
  if (r.dropped > 0) throw CLI::RuntimeError(cli::kExitFailure);
}

void promote(const CacheArgs& a) {
  auto kind = parseIoEngineKind(a.io_engine);
  if (!kind.ok()) die(kind.error().message, cli::kExitUsage);
  Opened o;
  openBoth(a, true, &o);
  PromoterOptions po;
  po.remote_root_fd = o.remote_fd;
  po.io_engine = *kind;
  po.chunk_bytes = a.chunk;
  po.queue_depth = a.depth;
  po.direct_io = !a.no_direct;
  po.preallocate = !a.no_preallocate;
  po.bytes_per_sec = a.rate;
  po.max_concurrent = 1;
  auto promoter = Promoter::create(o.store.get(), po);
  if (!promoter.ok()) die(promoter.error().message, cli::kExitUsage);
  bool failed = false;
  uint64_t total = 0;
  double total_secs = 0;
  for (const auto& path : a.paths) {
    (void)o.store->invalidate(path);  // time a real copy, not a no-op
    auto t0 = std::chrono::steady_clock::now();
    Status s = (*promoter)->promote(path);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (!s.ok()) {
      std::fprintf(stderr, "%s\n", s.error().message.c_str());
      failed = true;
      continue;
    }
    uint64_t size = o.store->info(path).size;
    total += size;
    total_secs += secs;
    std::printf("%s: %llu bytes in %.3f s, %.1f MB/s (%s)\n", path.c_str(),
                static_cast<unsigned long long>(size), secs, secs > 0 ? size / secs / 1e6 : 0.0,
                a.io_engine.c_str());
  }
  if (a.paths.size() > 1 && total_secs > 0)
    std::printf("total: %llu bytes in %.3f s, %.1f MB/s\n", static_cast<unsigned long long>(total),
                total_secs, total / total_secs / 1e6);
  if (failed) throw CLI::RuntimeError(cli::kExitFailure);
}

}  // namespace

void addCacheCommand(CLI::App& app) {
  auto args = std::make_shared<CacheArgs>();
  auto* cache = app.add_subcommand("cache", "Offline maintenance of a cache directory");
  cache->require_subcommand(1);
  cache->footer(
      "Examples:\n"
      "  hotshard cache ls --cache /var/cache/hotshard --remote /mnt/datasets\n"
      "  hotshard cache verify --cache /var/cache/hotshard --remote /mnt/datasets\n"
      "  hotshard cache promote --cache /nvme/c --remote /mnt/datasets train/shard-0042.tar\n"
      "Run these while no `hotshard run` uses the cache directory.");

  auto* ls_cmd = cache->add_subcommand("ls", "List cached objects (also runs recovery)");
  addCommon(ls_cmd, args.get());
  ls_cmd->callback([args] { ls(*args); });

  auto* verify_cmd =
      cache->add_subcommand("verify", "Re-read every object, drop checksum mismatches");
  addCommon(verify_cmd, args.get());
  verify_cmd->callback([args] { verify(*args); });

  auto* promote_cmd = cache->add_subcommand("promote", "Copy remote files into the cache, timed");
  addCommon(promote_cmd, args.get());
  promote_cmd->add_option("paths", args->paths, "Paths relative to the remote root")->required();
  promote_cmd->add_option("--io-engine", args->io_engine, "uring or sync")->capture_default_str();
  promote_cmd->add_option("--chunk", args->chunk, "Chunk size, e.g. 1MiB")
      ->transform(sizeUnits())
      ->capture_default_str();
  promote_cmd->add_option("--depth", args->depth, "Chunks in flight")->capture_default_str();
  promote_cmd->add_option("--rate", args->rate, "Bytes per second, e.g. 200MiB; 0 = unlimited")
      ->transform(sizeUnits())
      ->capture_default_str();
  promote_cmd
      ->add_option("--capacity", args->capacity,
                    "Cache capacity, e.g. 500GiB (default: its file system's size)")
      ->transform(sizeUnits());
  promote_cmd->add_flag("--no-direct", args->no_direct, "Buffered writes instead of O_DIRECT");
  promote_cmd->add_flag("--no-preallocate", args->no_preallocate,
                        "Do not fallocate the copy before writing it");
  promote_cmd->callback([args] { promote(*args); });
}

}  // namespace hotshard::cli
