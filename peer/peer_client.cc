#include "peer/peer_client.h"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <memory>

#include "peer/auth.h"
#include "peer/protocol.h"
#include "peer/rdma_transport.h"
#include "peer/tcp_transport.h"

namespace hotshard::peer {
namespace {

constexpr size_t kReceiveBuffer = 1 << 20;

bool offers(const std::vector<std::string>& list, std::string_view transport) {
  return std::find(list.begin(), list.end(), transport) != list.end();
}

Deadline earlier(Deadline a, Deadline b) { return a < b ? a : b; }

Status pwriteAll(int fd, const char* data, size_t len, uint64_t offset) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, data, len, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lastSysError("pwrite peer object at offset " + std::to_string(offset));
    data += n, len -= static_cast<size_t>(n), offset += static_cast<uint64_t>(n);
  }
  return Ok{};
}

struct HashState {
  XXH3_state_t* state = XXH3_createState();
  HashState() { XXH3_64bits_reset(state); }
  ~HashState() { XXH3_freeState(state); }
};

// Streams `meta.size` body bytes into dest_fd, hashing them as they arrive.
Status receiveBody(Channel& channel, const ObjectMeta& meta, int dest_fd,
                   std::chrono::milliseconds io_timeout, Deadline deadline, uint64_t* received) {
  HashState hash;
  if (hash.state == nullptr) return makeError(Errc::kInternal, "XXH3_createState failed");
  auto buf = std::make_unique<char[]>(kReceiveBuffer);
  uint64_t got = 0;
  while (got < meta.size) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kReceiveBuffer, meta.size - got));
    auto n = channel.recvSome(buf.get(), want, earlier(deadlineIn(io_timeout), deadline));
    if (!n.ok()) {
      Error e = n.takeError();
      e.message +=
          " (body: " + std::to_string(got) + " of " + std::to_string(meta.size) + " bytes)";
      return e;
    }
    RETURN_IF_ERROR(pwriteAll(dest_fd, buf.get(), *n, got));
    XXH3_64bits_update(hash.state, buf.get(), *n);
    got += *n;
    if (received != nullptr) *received = got;
  }
  uint64_t digest = XXH3_64bits_digest(hash.state);
  if (digest != meta.xxh3)
    return makeError(Errc::kCorrupt,
                     "peer object from " + channel.peerAddress() + ": xxh3 mismatch");
  return Ok{};
}

}  // namespace

Result<ObjectMeta> fetchOnChannel(Channel& channel, const ObjectRequest& request, int dest_fd,
                                  std::chrono::milliseconds io_timeout, Deadline deadline,
                                  uint64_t* received) {
  if (received != nullptr) *received = 0;
  if (Status valid = validateRequest(request); !valid.ok())
    return makeError(Errc::kInvalidArgument, valid.error().message);
  RETURN_IF_ERROR(sendFrame(channel, FrameType::kFetch, encodeFetch(request),
                            earlier(deadlineIn(io_timeout), deadline)));
  ASSIGN_OR_RETURN(Frame reply, recvFrame(channel, earlier(deadlineIn(io_timeout), deadline)));
  if (reply.type == FrameType::kErr) return decodeErr(reply.payload);
  if (reply.type != FrameType::kOk)
    return makeError(Errc::kProtocol,
                     std::string("peer protocol: FETCH answered by ") + frameTypeName(reply.type));
  ASSIGN_OR_RETURN(ObjectMeta meta, decodeOk(reply.payload));
  if (meta.size != request.size || meta.mtime_ns != request.mtime_ns)
    return makeError(Errc::kCorrupt, "peer " + channel.peerAddress() + " offered " +
                                         request.relpath + " with another validator (size " +
                                         std::to_string(meta.size) + ")");
  RETURN_IF_ERROR(receiveBody(channel, meta, dest_fd, io_timeout, deadline, received));
  // dest holds exactly the object, even if the caller handed a longer file.
  struct stat st {};
  if (::fstat(dest_fd, &st) == 0 && S_ISREG(st.st_mode) &&
      static_cast<uint64_t>(st.st_size) > meta.size &&
      ::ftruncate(dest_fd, static_cast<off_t>(meta.size)) != 0)
    return lastSysError("ftruncate peer object to " + std::to_string(meta.size) + " bytes");
  return meta;
}

PeerClient::PeerClient(ClientOptions options) : options_(std::move(options)) {}

std::string PeerClient::transportFor(const Member& peer) const {
  if (!offers(options_.transports, "rdma") || !offers(peer.transports, "rdma")) return "tcp";
  Verbs& verbs = options_.rdma_verbs != nullptr ? *options_.rdma_verbs : systemVerbs();
  return verbs.probe().ok() ? "rdma" : "tcp";
}

Result<std::unique_ptr<Channel>> PeerClient::connect(const Member& peer, Deadline deadline,
                                                     std::string* transport) {
  Deadline connect_by = earlier(deadlineIn(options_.connect_timeout), deadline);
  *transport = transportFor(peer);
  if (*transport == "rdma") {
    Verbs& verbs = options_.rdma_verbs != nullptr ? *options_.rdma_verbs : systemVerbs();
    auto channel = makeRdmaConnector(verbs, RdmaOptions{.setup_timeout = options_.connect_timeout})
                       ->connect(peer.address, connect_by);
    if (channel.ok()) return channel;
    // A peer that offers RDMA but cannot be reached over it may still speak TCP.
    *transport = "tcp";
  }
  return makeTcpConnector()->connect(peer.address, connect_by);
}

Result<ObjectMeta> PeerClient::fetch(const Member& peer, const ObjectRequest& request, int dest_fd,
                                     FetchStats* stats) {
  auto start = std::chrono::steady_clock::now();
  Deadline deadline = start + options_.fetch_timeout;
  std::string transport;
  uint64_t received = 0;
  auto account = [&] {
    if (stats == nullptr) return;
    stats->transport = transport;
    stats->bytes = received;
    stats->elapsed = std::chrono::steady_clock::now() - start;
  };
  if (Status valid = validateRequest(request); !valid.ok()) {
    account();
    return makeError(Errc::kInvalidArgument, valid.error().message);
  }
  auto channel = connect(peer, deadline, &transport);
  if (!channel.ok()) {
    account();
    return channel.takeError();
  }
  Status auth = authenticateAsClient(**channel, options_.token,
                                     earlier(deadlineIn(options_.io_timeout), deadline));
  if (!auth.ok()) {
    account();
    return auth.takeError();
  }
  auto meta = fetchOnChannel(**channel, request, dest_fd, options_.io_timeout, deadline, &received);
  (*channel)->close();
  account();
  return meta;
}

}  // namespace hotshard::peer
