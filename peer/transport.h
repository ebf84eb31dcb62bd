// The peer tier's transports behind one face: a connected, reliable, ordered
// byte channel between two hosts (TCP: peer/tcp_transport.h; RDMA RC queue
// pairs: peer/rdma_transport.h), and per transport a connector (client side)
// and a listener (server side). The peer protocol (peer/protocol.h) and the
// authentication (peer/auth.h) run unchanged over any of them.
//
// Every blocking call takes a deadline (CLOCK_MONOTONIC via steady_clock) and
// returns kIo when it passes: no call waits unboundedly.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "base/result.h"

struct addrinfo;
struct sockaddr;

namespace hotshard::peer {

using Deadline = std::chrono::steady_clock::time_point;

inline Deadline deadlineIn(std::chrono::milliseconds timeout) {
  return std::chrono::steady_clock::now() + timeout;
}

// Milliseconds left until `deadline` for poll(2): 0 once it has passed,
// rounded up so that a wait never ends before the deadline.
int pollTimeoutMs(Deadline deadline);

// One connected byte channel, used by one thread at a time (the peer protocol
// is half-duplex: a request, then its reply); close() may be called from any
// thread at any time.
class Channel {
 public:
  virtual ~Channel() = default;
  // Sends all `len` bytes. Errors: kIo (peer gone, reset, deadline passed).
  virtual Status sendAll(const void* data, size_t len, Deadline deadline) = 0;
  // Receives between 1 and `len` bytes (len > 0) into `buf`; returns how many.
  // Errors: kIo (the peer closed: "closed by peer", reset, deadline passed).
  virtual Result<size_t> recvSome(void* buf, size_t len, Deadline deadline) = 0;
  // Sends bytes [offset, offset + len) of the regular file `fd` without
  // copying them through user space where the transport can (TCP: sendfile(2)).
  // Errors: kIo, also when the file yields fewer than `len` bytes ("short").
  virtual Status sendFile(int fd, uint64_t offset, uint64_t len, Deadline deadline) = 0;
  // Aborts the channel: wakes a blocked call, every later call fails with kIo.
  // Idempotent and thread-safe; the resources go with the destructor.
  virtual void close() = 0;
  // "tcp" or "rdma".
  virtual const char* transport() const = 0;
  // "HOST:PORT" of the other end, for messages.
  virtual std::string peerAddress() const = 0;
};

// Receives exactly `len` bytes. Errors: kIo (as recvSome; a peer that closes
// before `len` bytes arrived: "closed by peer after N of LEN bytes").
Status recvAll(Channel& channel, void* buf, size_t len, Deadline deadline);

// The server side of one transport: accepts channels until closed.
class Listener {
 public:
  virtual ~Listener() = default;
  // Waits for the next connection. Errors: kIo (listener closed: "closed",
  // or the accept failed; a failed accept of one client does not close it).
  virtual Result<std::unique_ptr<Channel>> accept() = 0;
  // "HOST:PORT" actually bound (the port chosen by the kernel for port 0).
  virtual std::string boundAddress() const = 0;
  // Wakes accept(), which then returns kIo; thread-safe, idempotent.
  virtual void close() = 0;
};

// The client side of one transport.
class Connector {
 public:
  virtual ~Connector() = default;
  // Connects to "HOST:PORT". Errors: kInvalidArgument (bad address), kIo
  // (refused, unreachable, deadline passed), kUnsupported (no such device).
  virtual Result<std::unique_ptr<Channel>> connect(const std::string& address,
                                                   Deadline deadline) = 0;
};

// Splits "HOST:PORT" or "[V6]:PORT" into its host and port (0..65535).
// Errors: kInvalidArgument.
struct HostPort {
  std::string host;
  uint16_t port = 0;
};
Result<HostPort> splitHostPort(const std::string& address);

// getaddrinfo(3) of "HOST:PORT" for a stream socket (passive: for bind, an
// empty host is any address). Errors: kInvalidArgument.
struct AddrInfoDeleter {
  void operator()(addrinfo* ai) const;
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;
Result<AddrInfoPtr> resolveHostPort(const std::string& address, bool passive);

// "A.B.C.D:PORT" or "[V6]:PORT" of an AF_INET/AF_INET6 address; "?" otherwise.
std::string formatSockaddr(const sockaddr* address);

}  // namespace hotshard::peer
