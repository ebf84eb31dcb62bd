// Where the daemon's status comes from: one StatusSnapshot (daemon/status.h)
// assembled from the components that each fill their part. Called by the
// "status" control command and by every metrics scrape, on their threads.
#pragma once

#include <cstddef>
#include <string>

#include "daemon/status.h"

namespace hotshard {

struct RunConfig;
class CacheService;
class PeerService;
class Placement;
namespace fuse {
class FileSystem;
class PassthroughShim;
}  // namespace fuse

// Borrowed, and alive while collectStatus may be called.
struct StatusSources {
  const char* version = "";
  const RunConfig* cfg = nullptr;  // mount, remote, cache, consistency
  const fuse::PassthroughShim* shim = nullptr;
  const fuse::FileSystem* fs = nullptr;
  const CacheService* cache = nullptr;
  const Placement* placement = nullptr;
  const PeerService* peer = nullptr;  // with --cluster only
  size_t top_shards = 5;  // rows of "top"
};

// Every section set: identity, fuse, cache, probes, heat, jobs, policy,
// placement, top; cluster with a peer service.
StatusSnapshot collectStatus(const StatusSources& sources);

}  // namespace hotshard
