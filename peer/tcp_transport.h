// The TCP transport: plain non-blocking sockets with TCP_NODELAY, a poll(2)
// deadline on every wait, and sendfile(2) from the served copy, so that object
// bytes go from the page cache to the socket without a user-space copy. Runs
// on every host (the RDMA transport needs a device: peer/rdma_transport.h).
#pragma once

#include <memory>
#include <string>

#include "base/fd.h"
#include "peer/transport.h"

namespace hotshard::peer {

// Binds and listens on "HOST:PORT" (port 0: the kernel picks; see
// Listener::boundAddress). Errors: kInvalidArgument (address), kIo (socket,
// bind, listen; e.g. EADDRINUSE).
Result<std::unique_ptr<Listener>> listenTcp(const std::string& address);

// A channel over a connected TCP socket that the caller made (tests, socket
// activation); it takes ownership and makes it non-blocking.
std::unique_ptr<Channel> adoptTcpSocket(UniqueFd fd, std::string peer_address);

// Connects over TCP (getaddrinfo, then each address in turn until the deadline).
std::unique_ptr<Connector> makeTcpConnector();

}  // namespace hotshard::peer
