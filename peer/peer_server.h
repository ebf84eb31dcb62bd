// The serving side of the peer tier: a listener per transport (TCP always,
// RDMA where offered and a device exists), one thread per connection up to
// max_connections (more are closed at once and counted), authentication first
// (peer/auth.h), then any number of FETCH requests answered from the daemon's
// ObjectSource (peer/peer.h): OK + the copy's bytes by sendfile, or ERR.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "base/result.h"
#include "peer/peer.h"
#include "peer/protocol.h"
#include "peer/transport.h"

namespace hotshard::peer {

class Verbs;

struct ServerOptions {
  std::string listen;  // "HOST:PORT" (PORT 0 = any; see boundAddress)
  std::string token;   // the cluster token; never sent on the wire
  std::vector<std::string> transports{"tcp"};
  int max_connections = 64;
  std::chrono::milliseconds io_timeout{
      10000};                   // any single send/recv; also the idle time between requests
  Verbs* rdma_verbs = nullptr;  // tests: the verbs behind "rdma"; nullptr: the host's rdma-core
};

// Counters since start(), for hotshard_peer_* metrics.
struct ServerStats {
  uint64_t served_bytes;         // body bytes sent for objects served whole
  uint64_t served_objects;       // OK replies whose body was sent whole
  uint64_t refused_auth;         // connections that did not authenticate (closed)
  uint64_t protocol_errors;      // malformed frames or requests (before or after auth)
  uint64_t not_served;           // ERR replies: not found, stale, busy, io from the source
  uint64_t refused_connections;  // closed at once: max_connections were busy
};

class PeerServer {
 public:
  PeerServer(ServerOptions options, ObjectSource& source);
  ~PeerServer();  // stop()
  PeerServer(const PeerServer&) = delete;
  PeerServer& operator=(const PeerServer&) = delete;
  // Binds, listens, starts accepting. "rdma" in transports without a usable
  // device is left out (see transports()), never an error. Errors:
  // kInvalidArgument (options), kIo (bind/listen).
  Status start();
  void stop();                                  // closes the listener and every connection; joins
  std::string boundAddress() const;             // "HOST:PORT" actually bound
  std::vector<std::string> transports() const;  // those actually listening
  ServerStats stats() const;

 private:
  struct Connection {
    std::unique_ptr<Channel> channel;
    std::thread thread;
    std::atomic<bool> done{false};
  };
  void acceptLoop(Listener* listener);
  void admit(std::unique_ptr<Channel> channel);
  void reapLocked();
  void serveConnection(Connection* connection);
  // FETCH after FETCH until the connection ends; false when it ended on a
  // malformed frame.
  bool serveRequests(Channel& channel);
  // Answers one FETCH; false when the connection must end.
  bool serveFetch(Channel& channel, const Frame& frame);
  Status sendObject(Channel& channel, ServedObject& object);
  void refuse(Channel& channel, const Error& error, bool count_protocol);

  ServerOptions options_;
  ObjectSource& source_;
  std::string bound_;
  std::vector<std::string> live_transports_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  std::vector<std::thread> acceptors_;
  std::mutex mu_;  // guards connections_, stopping_
  std::list<std::unique_ptr<Connection>> connections_;
  bool stopping_ = false;
  std::atomic<uint64_t> served_bytes_{0}, served_objects_{0}, refused_auth_{0}, protocol_errors_{0},
      not_served_{0}, refused_connections_{0};
};

}  // namespace hotshard::peer
