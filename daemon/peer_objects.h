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
// host owns and fetches from peers all run through one flight per rel_path: a
// second caller for the same path waits for the first one's result (at most
// its bound, then kBusy), so a cold file leaves the remote once however many ask.
//
// Every wait is bounded (docs/cluster.md, "Bounds"). The owner's promotion
// runs on a background copy thread, never on the caller's (a FUSE worker or a
// peer-server thread): the caller waits for it at most its own bound (the open:
// --peer-timeout; a peer asker: serve_wait) and then goes on without it (the
// open reads the remote, the asker is answered kBusy and reads its own), while
// the copy finishes and is published for later opens and askers. At most
// max_background copies run at once; past that a caller gets kBusy at once.
// Each stat of the remote file runs under fuse::RemoteCalls with
// --remote-timeout: a hung remote answers kIo (ETIMEDOUT) within the deadline.
//
// Teardown: stop() (or the destructor) refuses new copies and joins the
// running ones; the Promoter must have been shut down first (Daemon's Quiesce
// does) so that they end at their next chunk, and it and the store outlive this.
//
// Thread safety: every method may be called from any thread (the peer
// server's connection threads, FUSE open threads). mu_ is a leaf lock.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "base/result.h"
#include "daemon/cache_store.h"
#include "daemon/promoter.h"
#include "fuse/remote_calls.h"
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
  // How long a second caller waits on a flight in progress before kBusy (once()).
  std::chrono::milliseconds wait{30000};
  // How long a peer asker (openForPeer) waits for the owner's copy before
  // kBusy; below the asker's own fetch timeout, so that the answer reaches it.
  std::chrono::milliseconds serve_wait{15000};
  // Deadline of each stat of the remote file (--remote-timeout), in seconds;
  // 0: on the caller's thread, unbounded (tests only).
  double remote_timeout_seconds = 30;
  // Promotions that may run on background copy threads at once.
  unsigned max_background = 4;
  // Tests: called on the remote-call worker before each stat of the remote.
  std::function<void(const std::string& rel_path)> stat_hook;
};

class PeerObjects : public peer::ObjectSource {
 public:
  explicit PeerObjects(PeerObjectsOptions options);
  ~PeerObjects();  // stop()
  PeerObjects(const PeerObjects&) = delete;
  PeerObjects& operator=(const PeerObjects&) = delete;

  // peer::ObjectSource. Errors: kNotFound (other namespace, no such regular
  // file, or no copy and not the owner), kStale (the request's validator is
  // not the remote's here, or the copy here is stale and this host does not
  // own the key), kBusy (the owner's promotion failed or is still running
  // past `wait`: the asker reads its remote), kInvalidArgument (a path the
  // store refuses: absolute, "..", empty components), kIo.
  Result<peer::ServedObject> openForPeer(const peer::ObjectRequest& request) override;

  // Makes sure a copy valid for `now` is cached: promotes from the remote
  // (Promoter::promote, on a background copy thread) unless it is, single-
  // flight, and waits for the result at most `wait` (ms). kBusy past `wait`
  // (the copy goes on and is published when done), or at once when
  // max_background copies run or stop() was called. A promotion already
  // running for rel_path elsewhere (placement) is waited for by the copy
  // thread. kStale if the remote moved past `now` meanwhile.
  Status promoteOnce(const std::string& rel_path, const Validator& now,
                     std::chrono::milliseconds wait);

  // Refuses new background copies and joins those running. Idempotent.
  void stop();
  // The remote root was replaced by a new mount (Daemon::reopenRemote): stats
  // blocked in the old one are written off (RemoteCalls::forgetBlocked), so
  // the new one gets a full pool of workers.
  void remoteRootReplaced() { remote_calls_.forgetBlocked(); }

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

  // The remote file's validator here, fstat'ed beneath the remote root now,
  // under remote_timeout_seconds. kNotFound if it is missing or not a regular
  // file; kIo (ETIMEDOUT, or EIO when every remote-call worker is blocked) for
  // a remote that does not answer.
  Result<Validator> remoteValidator(const std::string& rel_path) const;

  // What the store serves for rel_path, read-only, with its recorded checksum
  // (the store counts it open only while this runs). Errors as openIfValid.
  Result<peer::ServedObject> openServed(const std::string& rel_path, const Validator& now);

 private:
  struct Flight {
    bool done = false;
    Status result;
  };
  struct Copy {  // a background copy thread
    std::thread thread;
    bool finished = false;  // its flight is done; join it
  };
  // Waits up to opts_.wait for a promotion of rel_path in flight (not ours).
  void waitForPromotion(const std::string& rel_path);
  // The promotion itself (on a copy thread).
  Status promoteNow(const std::string& rel_path, const Validator& now);
  // Waits on `flight` at most `wait` with lock held on mu_; kBusy past it.
  Status awaitFlight(std::unique_lock<std::mutex>& lock, const std::string& rel_path,
                     const std::shared_ptr<Flight>& flight, std::chrono::milliseconds wait);
  // Records a flight's result, forgets it and wakes its waiters (mu_ held).
  void landFlight(const std::string& rel_path, const std::shared_ptr<Flight>& flight,
                  Status result);
  // Joins the copy threads that have finished (mu_ held; they no longer need it).
  void reapCopies();

  PeerObjectsOptions opts_;
  mutable fuse::RemoteCalls remote_calls_;  // the remote's stats, under --remote-timeout
  std::mutex mu_;  // leaf; guards what follows
  std::condition_variable cv_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
  std::list<Copy> copies_;
  unsigned running_ = 0;  // copies whose flight is not done
  bool stopping_ = false;
};

// The metric reason for a failed fetch or serve: "not_found", "stale", "busy",
// "corrupt", "refused" (authentication), "protocol", "no_space", "io", "other".
const char* peerFailureReason(const Error& e);

}  // namespace hotshard
