// The peer tier's shared vocabulary: members, object requests and the two
// interfaces the daemon meets (what it serves to peers, how it fetches from
// them). Membership (etcd), ownership (rendezvous hashing) and the transports
// (TCP, RDMA) live beside this header in peer/ and depend on base/ only; the
// daemon composes them (docs/cluster.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace hotshard::peer {

// One host of a cluster as registered in etcd under its lease.
struct Member {
  std::string id;                       // stable per host (hostname, or --peer-id)
  std::string address;                  // "HOST:PORT" of its peer listener
  std::vector<std::string> transports;  // offered, best first: "rdma", "tcp"
  uint64_t capacity_bytes = 0;          // its cache's capacity
  std::string ns;                       // the namespace (data set) it serves
};

// An object is named across hosts by (namespace, relative path): local mount
// paths and the remote client's inode numbers may differ between hosts.
// The validator is the remote file's size and mtime in ns; the asker sends
// what its own remote says, and a peer serves only a copy whose validator is
// equal and which it would serve locally.
struct ObjectRequest {
  std::string ns;
  std::string relpath;  // relative to the remote root, no leading '/', bytes
  uint64_t size = 0;
  int64_t mtime_ns = 0;
};

// What a peer says of the object it is about to send: the validator it holds
// and the xxh3-64 checksum of the whole content, which the receiver verifies.
struct ObjectMeta {
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  uint64_t xxh3 = 0;
};

// The object key that rendezvous hashing places: ns + '\0' + relpath.
std::string objectKey(const ObjectRequest& request);

// A read-only fd of content this host serves to a peer, positioned nowhere
// (served with pread/sendfile from offset 0 to meta.size).
struct ServedObject {
  UniqueFd fd;
  ObjectMeta meta;
};

// The serving side, implemented by the daemon. openForPeer returns a copy
// this host would serve locally with an equal validator; when this host owns
// the key and holds no copy it may fetch from its remote once (concurrent
// askers wait on that one fetch). Errors: kNotFound (no such object or no
// copy and not the owner), kStale (validator differs), kBusy (try the
// remote), kIo.
class ObjectSource {
 public:
  virtual ~ObjectSource() = default;
  virtual Result<ServedObject> openForPeer(const ObjectRequest& request) = 0;
};

// Per-fetch accounting that the daemon turns into hotshard_peer_* metrics.
struct FetchStats {
  std::string transport;  // "tcp" or "rdma": what was used with this peer
  uint64_t bytes = 0;     // payload bytes received
  std::chrono::nanoseconds elapsed{0};
};

}  // namespace hotshard::peer
