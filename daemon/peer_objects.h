// PeerObjects: the cache store as the peer tier meets it (docs/cluster.md).
//
// Serving (peer::ObjectSource::openForPeer): a peer asks for (namespace,
// relative path) with the validator its own remote gave it. This host serves
// only what it would serve to a local open: the remote file's attributes here
// (fstat beneath the remote root, fresh) must equal the request's size and
// mtime (else kStale), and the store's copy must be valid for them
// (CacheStore::openIfValid, servesFor). With no copy, it promotes from its
// remote only when it owns the key (rendezvous hashing, `owns`), once however
// many ask; otherwise kNotFound, so that the asker reads its remote.
//
// Receiving (fetchAndPublish): bytes from a peer go to a promotion's tmp file
// (CacheStore::beginPromotion, room made by the watermarks as for any
// promotion); the peer client has verified the xxh3-64 as they arrived; the
// remote is stat'ed again and must not have changed (as Promoter::revalidate);
// then CacheStore::publish records validator and checksum and renames the copy
// into objects/ crash-safely, the same path every promotion takes.
//
// Single flight: promotions for peers, promotions for local opens of keys this
// host owns and fetches from peers all run through once(rel_path): a second
// caller for the same path waits for the first one's result (at most `wait`,
// then kBusy), so a cold file leaves the remote once however many ask.
//
// Thread safety: every method may be called from any thread (the peer
// server's connection threads, FUSE open threads). mu_ is a leaf lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "base/result.h"
#include "daemon/cache_store.h"
#include "daemon/promoter.h"
#include "peer/peer.h"

namespace hotshard {

struct PeerObjectsOptions {
  std::string ns;           // the namespace this host serves (--namespace)
  int remote_root_fd = -1;  // the remote's root, opened before the mount; borrowed
  CacheStore* store = nullptr;    // borrowed; outlives this
  Promoter* promoter = nullptr;   // borrowed; outlives this
  // Whether this host owns the object key (peer::objectKey) now: rendezvous
  // over the live members of the namespace. Called without locks held.
  std::function<bool(const std::string& key)> owns;
  // How long a second caller waits on a flight in progress before kBusy.
  std::chrono::milliseconds wait{30000};
};

class PeerObjects : public peer::ObjectSource {
 public:
  explicit PeerObjects(PeerObjectsOptions options);

  // peer::ObjectSource. Errors: kNotFound (other namespace, no such regular
  // file, or no copy and not the owner), kStale (the request's validator is
  // not the remote's here, or the copy here is stale and this host does not
  // own the key), kBusy (the owner's promotion failed or is still running
  // past `wait`: the asker reads its remote), kInvalidArgument (a path the
  // store refuses: absolute, "..", empty components), kIo.
  Result<peer::ServedObject> openForPeer(const peer::ObjectRequest& request) override;

  // Makes sure a copy valid for `now` is cached: promotes from the remote
  // (Promoter::promote, on this thread) unless it is, single-flight. A
  // promotion already running for rel_path elsewhere (placement) is waited
  // for, up to `wait`. kStale if the remote moved past `now` meanwhile.
  Status promoteOnce(const std::string& rel_path, const Validator& now);

  // Fills the promotion's tmp file (dest_fd, empty, written from offset 0)
  // with the object and returns what the peer said of it; see PeerClient::fetch.
  using Fetch = std::function<Result<peer::ObjectMeta>(int dest_fd)>;
  // One fetch from a peer, published as a promotion made from `before` (the
  // remote's attributes here when the fetch began). Not single-flight itself:
  // callers wrap it in once(). Errors: the fetch's own, kCorrupt (the peer's
  // validator is not `before`'s), kStale (the remote changed during the
  // fetch, or rel_path was invalidated), kNoSpace, kBusy (a promotion of
  // rel_path is in flight), kIo.
  Status fetchAndPublish(const std::string& rel_path, const Validator& before, const Fetch& fetch);

  // Runs fn for rel_path unless a flight for it is running, in which case it
  // waits for that one's result (at most `wait`, then kBusy).
  Status once(const std::string& rel_path, const std::function<Status()>& fn);

  // The remote file's validator here, fstat'ed beneath the remote root now.
  // kNotFound if it is missing or not a regular file.
  Result<Validator> remoteValidator(const std::string& rel_path) const;

  // What the store serves for rel_path, read-only, with its recorded checksum
  // (the store counts it open only while this runs). Errors as openIfValid.
  Result<peer::ServedObject> openServed(const std::string& rel_path, const Validator& now);

 private:
  struct Flight {
    bool done = false;
    Status result;
  };
  // Waits up to opts_.wait for a promotion of rel_path in flight (not ours).
  void waitForPromotion(const std::string& rel_path);

  PeerObjectsOptions opts_;
  std::mutex mu_;  // leaf; guards flights_
  std::condition_variable cv_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
};

// The metric reason for a failed fetch or serve: "not_found", "stale", "busy",
// "corrupt", "refused" (authentication), "protocol", "no_space", "io", "other".
const char* peerFailureReason(const Error& e);

}  // namespace hotshard
