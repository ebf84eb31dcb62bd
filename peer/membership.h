// peer/: cluster membership in etcd. Each host registers itself under a lease
// and keeps it alive; every host reads the others' registrations and so knows
// the live members of its cluster and namespace, over which rendezvous hashing
// (peer/rendezvous.h) names each object's owner.
//
// Layout in etcd (keys and values are bytes; values JSON, one per member):
//   /hotshard/<cluster>/members/<id> = {"id": "host-a", "address": "10.0.0.1:7070",
//       "transports": ["rdma", "tcp"], "capacity_bytes": 1099511627776, "ns": "train"}
// attached to the member's lease (etcd "lease", v3 API: the key is deleted when
// the lease expires or is revoked). Member ids must be unique in a cluster.
//
// Timing (with lease_ttl T, poll_interval P, call_timeout C):
// - the lease is renewed every T/3, so a host that stops answering (crash,
//   SIGSTOP, partition) leaves the others' live sets within T + P;
// - the live set is read with a range over the members' prefix every P (a
//   range, not a watch: it needs no long-lived stream and loses nothing on
//   reconnect);
// - any failed etcd call makes this host go on alone: connected=false,
//   live={self}, last_error says what failed; it retries with a backoff that
//   starts at min(P, 200 ms) and doubles up to max(P, T/3). When etcd answers
//   again it renews its lease (or, if the lease expired meanwhile, grants a new
//   one and registers again) and is connected again.
// - C should be well under T/3, or a renewal that waits on a slow endpoint can
//   come too late (defaults: T = 10 s, C = 2 s, P = 1 s);
// - stop() returns within about 2 C: the thread finishes its current call (each
//   bounded by C) and the lease is revoked (bounded by C), so the others drop
//   this host at their next refresh instead of after T.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "base/result.h"
#include "peer/etcd_client.h"
#include "peer/peer.h"

namespace hotshard::peer {

struct MembershipOptions {
  std::string cluster;                            // keys live under /hotshard/<cluster>/members/<id>
  std::vector<std::string> endpoints;             // "http://HOST:PORT", tried in turn
  Member self;                                    // registered under a lease as JSON
  std::chrono::seconds lease_ttl{10};             // keepalive every ttl/3
  std::chrono::milliseconds call_timeout{2000};   // each etcd call, bounded
  std::chrono::milliseconds poll_interval{1000};  // how often the live set is refreshed (or a watch)
};

struct MembershipState {
  bool connected = false;     // etcd answered and our lease is alive
  std::vector<Member> live;   // live members of this cluster AND namespace, self always included; by id
  uint64_t generation = 0;    // bumps whenever `live` or `connected` changes
  std::string last_error;     // why not connected ("" when connected)
};

class Membership {
 public:
  explicit Membership(MembershipOptions options);
  ~Membership();  // stop()
  Membership(const Membership&) = delete;
  Membership& operator=(const Membership&) = delete;

  // Checks the options (kInvalidArgument: empty cluster or id, a '/' in
  // either, no endpoints, ttl < 1 s, a zero timeout or interval; kBusy: started
  // twice, or after stop()) and starts the thread. Never fails because etcd
  // is down: the host then goes on alone and retries.
  Status start();
  // Revokes the lease (bounded by call_timeout), joins the thread. Idempotent.
  void stop();
  // Joins the thread without revoking the lease, as a crashed host leaves it:
  // the others drop this host only when the lease expires. For tests, and for
  // an exit that must not wait on etcd.
  void abandon();
  // Thread-safe snapshot; when not connected, live == {self}.
  MembershipState state() const;

 private:
  void run();
  // One round: keep the lease (or register), then read the live set.
  Status round(std::chrono::steady_clock::time_point& next_keepalive);
  Status registerSelf();
  Status refresh();
  void publish(bool connected, std::vector<Member> live, std::string error);
  void halt(bool revoke);
  bool stopping() const;

  const MembershipOptions options_;
  const std::string prefix_;  // /hotshard/<cluster>/members/
  const std::string key_;     // prefix_ + self.id
  const std::string value_;   // memberToJson(self)
  EtcdClient client_;
  mutable std::mutex mu_;
  std::condition_variable wake_;  // stop() wakes the thread
  bool stopping_ = false;         // guarded by mu_
  MembershipState state_;         // guarded by mu_
  int64_t lease_ = 0;             // the thread's, then stop()'s after the join; 0: none
  std::thread thread_;
};

// "/hotshard/<cluster>/members/": where the members of a cluster live.
std::string membersPrefix(std::string_view cluster);
// The JSON a member is registered as (see the layout above).
std::string memberToJson(const Member& member);
// kProtocol when `text` is not such a JSON object (id, address and ns strings,
// transports an array of strings, capacity_bytes an unsigned integer).
Result<Member> memberFromJson(std::string_view text);

}  // namespace hotshard::peer
