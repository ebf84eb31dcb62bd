#include "daemon/status_sources.h"

#include <unistd.h>

#include "daemon/cache_service.h"
#include "daemon/config.h"
#include "daemon/peer_service.h"
#include "daemon/placement.h"
#include "daemon/supervisor.h"
#include "fuse/filesystem.h"
#include "fuse/passthrough_shim.h"

namespace hotshard {
namespace {

FuseStatus fuseStatusOf(const fuse::PassthroughShim& shim, const fuse::FileSystem& fs) {
  std::map<std::string, uint64_t> requests;
  for (const auto& [name, n] : shim.requestCounts()) requests[name] = n;
  fuse::RemoteCalls::Stats remote = fs.remoteCallStats();
  return FuseStatus{.requests = std::move(requests),
                    .inodes = fs.inodeCount(),
                    .opens_passthrough = fs.passthroughOpens(),
                    .opens_userspace = fs.userspaceOpens(),
                    .opens_cache = fs.cacheOpens(),
                    .opens_remote = fs.remoteOpens(),
                    .cache_conflicts = fs.cacheConflicts(),
                    .userspace_read_bytes = fs.userspaceReadBytes(),
                    .remote_timeouts = remote.timeouts,
                    .remote_refused = remote.refused,
                    .remote_calls_blocked = remote.blocked,
                    .opens_reused = fs.idleReuses(),
                    .idle_backings = fs.idleBackings(),
                    .inode_fds = fs.inodeFds(),
                    .path_walks = fs.pathWalks()};
}

}  // namespace

StatusSnapshot collectStatus(const StatusSources& src) {
  StatusSnapshot s{.version = src.version,
                   .pid = ::getpid(),
                   .mount = src.cfg->mount,
                   .remote = src.cfg->remote,
                   .cache_dir = src.cfg->cache,
                   .overmount = src.cfg->mount == src.cfg->remote,
                   .passthrough = src.shim->active(),
                   .passthrough_reason = src.shim->reason(),
                   .consistency = src.cfg->consistency.toString(),
                   .fuse = fuseStatusOf(*src.shim, *src.fs)};
  s.cache.emplace();
  src.cache->fillStatus(*s.cache);
  src.placement->fillStatus(s);
  s.top = src.placement->top(src.top_shards);
  if (src.peer != nullptr) src.peer->fillStatus(s.cluster.emplace());
  if (auto sup = supervisorInfoFromEnv()) {
    s.supervisor = SupervisorStatus{
        .pid = sup->pid, .takeovers = sup->takeovers, .last_takeover = sup->last_takeover};
  }
  return s;
}

}  // namespace hotshard
