// PeerService: the peer tier as one daemon holds it (docs/cluster.md). It
// composes, in dependency order, the cluster token, the cache store as peers
// see it (PeerObjects), the peer listener (peer::PeerServer), the etcd
// membership (peer::Membership, registered once the listener is bound) and the
// client that fetches from peers (peer::PeerClient). Teardown runs in reverse:
// the membership leaves etcd first (peers stop asking), then the listener
// closes, then the background copies are joined (PeerObjects::stop; the
// Daemon's Quiesce shut the promoter down first, so they end at their next
// chunk), all before the cache store goes (the Daemon declares this after its
// CacheService).
//
// The open path (fetchCopy, called by CacheService::fetchCopy for a read-only
// open of a file with no valid copy): the object key (namespace + relative
// path) is placed by rendezvous hashing over the live members (Thaler &
// Ravishankar 1996, peer/rendezvous.h). Another host owns it: fetch it from
// that host into the store's tmp/, bounded by --peer-timeout, verified (xxh3
// as it arrives, then the validator) and published as a promotion. This host
// owns it: promote from the remote now, on a background copy thread, waiting
// for it at most --peer-timeout (past it the copy goes on and is published;
// PeerObjects::promoteOnce). Either way single-flight per path, shared with
// peers asking this host. Any failure leaves the open reading the remote, as
// without a cluster, and is counted by reason.
//
// etcd down never blocks: Membership goes on alone (live = {self}, so this
// host owns every key and promotes from its remote) and rejoins by itself.
#pragma once

#include <sys/stat.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "base/result.h"
#include "daemon/cache_store.h"
#include "daemon/config.h"
#include "daemon/peer_objects.h"
#include "daemon/promoter.h"
#include "daemon/status.h"
#include "peer/membership.h"
#include "peer/peer_client.h"
#include "peer/peer_server.h"

namespace hotshard {

struct PeerServiceDeps {
  CacheStore* store = nullptr;   // borrowed; outlives the service
  Promoter* promoter = nullptr;  // borrowed; outlives the service
  int remote_root_fd = -1;       // borrowed
};

class PeerService {
 public:
  // cfg.cluster must be set (finalizeRunConfig checked the rest). Stages, each
  // error naming its own: "token FILE: ...", "peer listener HOST:PORT: ...".
  // etcd unreachable is no error.
  static Result<std::unique_ptr<PeerService>> start(const RunConfig& cfg, PeerServiceDeps deps);
  ~PeerService();

  // See the header comment. true: the store holds a copy valid for `remote`.
  bool fetchCopy(const std::string& rel_path, const struct stat& remote);
  // The id of the live member owning rel_path now ("" when none is known).
  std::string ownerOf(const std::string& rel_path) const;
  void fillStatus(ClusterStatus& status) const;
  // The remote root was replaced by a new mount: see PeerObjects::remoteRootReplaced.
  void remoteRootReplaced() { objects_->remoteRootReplaced(); }
  // Told of each successful fetch from a peer (seconds): the metrics' histogram.
  void setFetchObserver(std::function<void(double seconds)> observer);

  // The transports this host offers: `wanted` (best first) less rdma when the
  // host has no RDMA device (/sys/class/infiniband empty or absent).
  static std::vector<std::string> availableTransports(const std::vector<std::string>& wanted);

 private:
  explicit PeerService(const RunConfig& cfg) : cfg_(cfg) {}
  Status startServer(const PeerServiceDeps& deps);
  Status startMembership(uint64_t capacity_bytes);
  // One fetch of rel_path from `owner`, inside the path's flight.
  Status fetchFrom(const peer::Member& owner, const std::string& rel_path,
                   const struct stat& remote);
  void countFailure(const Error& e);

  const RunConfig cfg_;
  std::string token_;
  std::vector<std::string> transports_;
  CacheStore* store_ = nullptr;
  // Declared in dependency order: destroyed bottom to top.
  std::unique_ptr<PeerObjects> objects_;
  std::unique_ptr<peer::PeerServer> server_;
  std::unique_ptr<peer::PeerClient> client_;
  std::unique_ptr<peer::Membership> membership_;
  // membership_ once started, for the listener's threads (they start first).
  std::atomic<peer::Membership*> live_{nullptr};

  struct Traffic {
    uint64_t bytes = 0, fetches = 0;
  };
  mutable std::mutex mu_;  // leaf; guards what follows
  std::map<std::pair<std::string, std::string>, Traffic> traffic_;  // (peer, transport)
  std::map<std::string, uint64_t> failures_;                        // by reason
  uint64_t owner_promotions_ = 0;
  std::function<void(double)> fetch_observer_;
};

}  // namespace hotshard
