// The asking side of the peer tier: fetches one object from a peer into a
// file the caller owns, verifying size, validator and xxh3 checksum as the
// bytes arrive. One connection per fetch (authenticated, peer/auth.h), over
// RDMA when both hosts offer it and this host has a device, else TCP.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "base/result.h"
#include "peer/peer.h"
#include "peer/transport.h"

namespace hotshard::peer {

class Verbs;

struct ClientOptions {
  std::string token;
  std::vector<std::string> transports{"tcp"};  // what this host offers
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds io_timeout{10000};      // any single send/recv
  std::chrono::milliseconds fetch_timeout{600000};  // a whole fetch, connect to last byte
  Verbs* rdma_verbs = nullptr;  // tests: the verbs behind "rdma"; nullptr: the host's rdma-core
};

class PeerClient {
 public:
  explicit PeerClient(ClientOptions options);
  // Fetches `request` from `peer` into `dest_fd` (written from offset 0 with
  // pwrite; the caller owns it, e.g. an O_TMPFILE or a file in the store's tmp/),
  // verifying the xxh3 checksum as bytes arrive. On success the returned meta's
  // validator equals the request's and dest holds exactly meta.size bytes.
  // Errors: kNotFound/kStale/kBusy (the peer said so), kCorrupt (checksum or
  // size mismatch), kPermission (authentication refused), kProtocol, kIo
  // (connect/timeout/peer died), kInvalidArgument (a request the protocol
  // cannot carry). On any error the caller discards dest.
  Result<ObjectMeta> fetch(const Member& peer, const ObjectRequest& request, int dest_fd,
                           FetchStats* stats);

  // The transport this client would use with `peer`: "rdma" when both offer
  // it and an RDMA device is usable here, else "tcp".
  std::string transportFor(const Member& peer) const;

 private:
  Result<std::unique_ptr<Channel>> connect(const Member& peer, Deadline deadline,
                                           std::string* transport);
  ClientOptions options_;
};

// One FETCH on an authenticated channel (the connection can carry more):
// sends the request, reads OK + body into dest_fd (pwrite from offset 0) or
// ERR. Each send/recv waits at most io_timeout, and never past `deadline`.
// `received` counts body bytes. Errors as PeerClient::fetch.
Result<ObjectMeta> fetchOnChannel(Channel& channel, const ObjectRequest& request, int dest_fd,
                                  std::chrono::milliseconds io_timeout, Deadline deadline,
                                  uint64_t* received);

}  // namespace hotshard::peer
