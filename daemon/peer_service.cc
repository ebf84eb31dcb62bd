#include "daemon/peer_service.h"

#include <dirent.h>
#include <spdlog/spdlog.h>

#include <chrono>

#include "base/units.h"
#include "peer/rendezvous.h"
#include "peer/token.h"

namespace hotshard {
namespace {

Error inStage(const std::string& stage, Error e) {
  e.message = stage + ": " + e.message;
  return e;
}

// Whether the host has an RDMA device: an entry in /sys/class/infiniband
// (drivers/infiniband/core/device.c registers every ib_device there).
bool hasRdmaDevice() {
  DIR* d = ::opendir("/sys/class/infiniband");
  if (d == nullptr) return false;
  bool any = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') {
      any = true;
      break;
    }
  }
  ::closedir(d);
  return any;
}

std::chrono::milliseconds millis(Duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d);
}

}  // namespace

std::vector<std::string> PeerService::availableTransports(const std::vector<std::string>& wanted) {
  std::vector<std::string> out;
  for (const auto& t : wanted) {
    if (t == "rdma" && !hasRdmaDevice()) continue;
    out.push_back(t);
  }
  return out;
}

Result<std::unique_ptr<PeerService>> PeerService::start(const RunConfig& cfg,
                                                        PeerServiceDeps deps) {
  std::unique_ptr<PeerService> svc(new PeerService(cfg));
  svc->store_ = deps.store;
  auto token = peer::readClusterToken(cfg.cluster_token_file);
  if (!token.ok()) return inStage("cluster token " + cfg.cluster_token_file, token.takeError());
  svc->token_ = std::move(*token);
  svc->transports_ = availableTransports(splitList(cfg.peer_transports));
  if (svc->transports_.empty()) {
    return makeError(Errc::kUnsupported, "peer-transports " + cfg.peer_transports +
                                             ": no RDMA device here; add tcp");
  }
  RETURN_IF_ERROR(svc->startServer(deps));
  svc->client_ = std::make_unique<peer::PeerClient>(peer::ClientOptions{
      .token = svc->token_,
      .transports = svc->transports_,
      .io_timeout = millis(cfg.peer_timeout),
      .fetch_timeout = millis(cfg.peer_timeout),
  });
  RETURN_IF_ERROR(svc->startMembership(deps.store->stats().capacity_bytes));
  spdlog::info("cluster {}: namespace {}, member {} at {}, transports {}", cfg.cluster, cfg.ns,
               cfg.peer_id, svc->server_->boundAddress(), cfg.peer_transports);
  return svc;
}

Status PeerService::startServer(const PeerServiceDeps& deps) {
  objects_ = std::make_unique<PeerObjects>(PeerObjectsOptions{
      .ns = cfg_.ns,
      .remote_root_fd = deps.remote_root_fd,
      .store = deps.store,
      .promoter = deps.promoter,
      .owns = [this](const std::string& key) {
        // Before the membership runs this host owns nothing; after, the live set decides.
        peer::Membership* m = live_.load(std::memory_order_acquire);
        if (m == nullptr) return false;
        peer::MembershipState ms = m->state();
        const peer::Member* owner = peer::ownerOf(key, ms.live);
        return owner != nullptr && owner->id == cfg_.peer_id;
      },
      .wait = millis(cfg_.peer_timeout),
      // Half the asker's fetch timeout (the same option on every host): a
      // kBusy reaches it in time, and a copy done by then has the rest to travel.
      .serve_wait = millis(cfg_.peer_timeout) / 2,
      .remote_timeout_seconds = toSeconds(cfg_.remote_timeout),
  });
  server_ = std::make_unique<peer::PeerServer>(
      peer::ServerOptions{.listen = cfg_.peer_listen,
                          .token = token_,
                          .transports = transports_,
                          .io_timeout = millis(cfg_.peer_timeout)},
      *objects_);
  Status st = server_->start();
  if (!st.ok()) return inStage("peer listener " + cfg_.peer_listen, st.takeError());
  transports_ = server_->transports();  // those actually listening
  return Ok{};
}

Status PeerService::startMembership(uint64_t capacity_bytes) {
  std::string address = cfg_.peer_advertise;
  if (address.empty()) address = server_->boundAddress();
  membership_ = std::make_unique<peer::Membership>(peer::MembershipOptions{
      .cluster = cfg_.cluster,
      .endpoints = splitList(cfg_.etcd),
      .self = peer::Member{.id = cfg_.peer_id,
                           .address = address,
                           .transports = transports_,
                           .capacity_bytes = capacity_bytes,
                           .ns = cfg_.ns},
  });
  Status st = membership_->start();
  if (!st.ok()) return inStage("cluster membership (etcd " + cfg_.etcd + ")", st.takeError());
  live_.store(membership_.get(), std::memory_order_release);
  return Ok{};
}

PeerService::~PeerService() {
  // Leave etcd first, so that peers stop asking; then the listener closes;
  // then the background copies end (the promoter was shut down before this:
  // Daemon's Quiesce), all before the store goes.
  if (membership_) membership_->stop();
  if (server_) server_->stop();
  if (objects_) objects_->stop();
}

std::string PeerService::ownerOf(const std::string& rel_path) const {
  peer::MembershipState ms = membership_->state();
  const peer::Member* owner =
      peer::ownerOf(peer::objectKey(peer::ObjectRequest{.ns = cfg_.ns, .relpath = rel_path}),
                    ms.live);
  return owner != nullptr ? owner->id : std::string();
}

bool PeerService::fetchCopy(const std::string& rel_path, const struct stat& remote) {
  const Validator wanted = validatorOf(remote);
  CacheStore::Stats cs = store_->stats();
  if (wanted.size > static_cast<uint64_t>(static_cast<double>(cs.capacity_bytes) *
                                          cs.high_watermark)) {
    return false;  // larger than the cache can hold: the remote, as without a cluster
  }
  peer::MembershipState ms = membership_->state();
  peer::ObjectRequest key_of{.ns = cfg_.ns, .relpath = rel_path};
  const peer::Member* owner = peer::ownerOf(peer::objectKey(key_of), ms.live);
  if (owner == nullptr) return false;
  Status s = Ok{};
  if (owner->id == cfg_.peer_id) {
    // At most --peer-timeout, as a fetch from a peer: past it the open reads
    // the remote while the copy goes on in the background.
    s = objects_->promoteOnce(rel_path, wanted, millis(cfg_.peer_timeout));
    if (s.ok()) {
      std::lock_guard lock(mu_);
      ++owner_promotions_;
    } else {
      spdlog::debug("{}: promotion as its owner failed: {}", rel_path, s.error().message);
      if (s.error().code == Errc::kBusy) countFailure(s.error());  // outlasted the wait
    }
  } else {
    const peer::Member from = *owner;
    s = objects_->once(rel_path, [&] { return fetchFrom(from, rel_path, remote); });
  }
  return s.ok() && store_->isCached(rel_path, wanted);
}

Status PeerService::fetchFrom(const peer::Member& owner, const std::string& rel_path,
                              const struct stat& remote) {
  auto t0 = std::chrono::steady_clock::now();
  peer::FetchStats fs;
  Status s = [&]() -> Status {
    ASSIGN_OR_RETURN(Validator before, objects_->remoteValidator(rel_path));
    if (!servesFor(before, validatorOf(remote))) {
      return makeError(Errc::kStale, "the remote changed since the open looked");
    }
    peer::ObjectRequest req{.ns = cfg_.ns,
                            .relpath = rel_path,
                            .size = before.size,
                            .mtime_ns = before.mtime_ns};
    return objects_->fetchAndPublish(rel_path, before, [&](int fd) {
      return client_->fetch(owner, req, fd, &fs);
    });
  }();
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!s.ok()) {
    spdlog::info("{}: fetch from {} ({}) failed, reading the remote: {}", rel_path, owner.id,
                 owner.address, s.error().message);
    countFailure(s.error());
    return s;
  }
  std::function<void(double)> observer;
  {
    std::lock_guard lock(mu_);
    Traffic& t = traffic_[{owner.id, fs.transport.empty() ? "tcp" : fs.transport}];
    t.bytes += fs.bytes;
    t.fetches++;
    observer = fetch_observer_;
  }
  if (observer) observer(seconds);
  spdlog::debug("{}: {} from {} over {} in {:.3f} s", rel_path, formatBytes(fs.bytes), owner.id,
                fs.transport, seconds);
  return Ok{};
}

void PeerService::countFailure(const Error& e) {
  std::lock_guard lock(mu_);
  ++failures_[peerFailureReason(e)];
}

void PeerService::setFetchObserver(std::function<void(double seconds)> observer) {
  std::lock_guard lock(mu_);
  fetch_observer_ = std::move(observer);
}

void PeerService::fillStatus(ClusterStatus& c) const {
  peer::MembershipState ms = membership_->state();
  c.name = cfg_.cluster;
  c.ns = cfg_.ns;
  c.id = cfg_.peer_id;
  c.address = cfg_.peer_advertise.empty() ? server_->boundAddress() : cfg_.peer_advertise;
  c.connected = ms.connected;
  if (!ms.connected) c.alone_reason = ms.last_error.empty() ? "not connected to etcd" : ms.last_error;
  std::vector<MemberStatus> members;
  for (const auto& m : ms.live) {
    members.push_back(MemberStatus{.id = m.id,
                                   .address = m.address,
                                   .transports = m.transports,
                                   .capacity_bytes = m.capacity_bytes,
                                   .self = m.id == cfg_.peer_id});
  }
  c.members = std::move(members);
  peer::ServerStats ss = server_->stats();
  c.served_bytes = ss.served_bytes;
  c.served_objects = ss.served_objects;
  c.refused = ss.refused_auth;
  c.protocol_errors = ss.protocol_errors;
  c.not_served = ss.not_served;
  std::lock_guard lock(mu_);
  std::vector<PeerTrafficStatus> fetched;
  uint64_t total = 0;
  for (const auto& [key, t] : traffic_) {
    fetched.push_back(PeerTrafficStatus{
        .peer = key.first, .transport = key.second, .bytes = t.bytes, .fetches = t.fetches});
    total += t.bytes;
  }
  c.fetched = std::move(fetched);
  c.fetched_bytes = total;
  c.fetch_failures = failures_;
  c.owner_promotions = owner_promotions_;
}

}  // namespace hotshard
