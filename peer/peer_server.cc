#include "peer/peer_server.h"

#include <algorithm>
#include <system_error>

#include "peer/auth.h"
#include "peer/rdma_transport.h"
#include "peer/tcp_transport.h"

namespace hotshard::peer {

PeerServer::PeerServer(ServerOptions options, ObjectSource& source)
    : options_(std::move(options)), source_(source) {}

PeerServer::~PeerServer() { stop(); }

Status PeerServer::start() {
  if (options_.token.empty())
    return makeError(Errc::kInvalidArgument, "peer server: empty cluster token");
  if (options_.max_connections < 1)
    return makeError(Errc::kInvalidArgument, "peer server: max_connections < 1");
  ASSIGN_OR_RETURN(std::unique_ptr<Listener> tcp, listenTcp(options_.listen));
  bound_ = tcp->boundAddress();
  listeners_.push_back(std::move(tcp));
  live_transports_.push_back("tcp");
  bool want_rdma = std::find(options_.transports.begin(), options_.transports.end(), "rdma") !=
                   options_.transports.end();
  Verbs& verbs = options_.rdma_verbs != nullptr ? *options_.rdma_verbs : systemVerbs();
  if (want_rdma && verbs.probe().ok()) {
    // RDMA CM listens on the same host and port number, in its own port space.
    auto rdma = listenRdma(verbs, bound_, RdmaOptions{.setup_timeout = options_.io_timeout});
    if (rdma.ok()) {
      listeners_.push_back(std::move(*rdma));
      live_transports_.insert(live_transports_.begin(), "rdma");
    }
  }
  for (auto& listener : listeners_)
    acceptors_.emplace_back([this, l = listener.get()] { acceptLoop(l); });
  return Ok{};
}

void PeerServer::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& c : connections_) c->channel->close();
  }
  for (auto& l : listeners_) l->close();
  for (auto& t : acceptors_) t.join();
  // No acceptor runs now, so connections_ no longer grows.
  for (auto& c : connections_) c->thread.join();
  connections_.clear();
  listeners_.clear();
}

std::string PeerServer::boundAddress() const { return bound_; }

std::vector<std::string> PeerServer::transports() const { return live_transports_; }

ServerStats PeerServer::stats() const {
  return ServerStats{served_bytes_.load(),    served_objects_.load(), refused_auth_.load(),
                     protocol_errors_.load(), not_served_.load(),     refused_connections_.load()};
}

void PeerServer::acceptLoop(Listener* listener) {
  for (;;) {
    auto channel = listener->accept();
    if (!channel.ok()) {
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      // One client's failed set-up is not the listener's end; a failing
      // accept (EMFILE) is retried without spinning.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      continue;
    }
    admit(std::move(*channel));
  }
}

void PeerServer::admit(std::unique_ptr<Channel> channel) {
  std::lock_guard lock(mu_);
  reapLocked();
  if (stopping_ || connections_.size() >= static_cast<size_t>(options_.max_connections)) {
    if (!stopping_) refused_connections_++;
    channel->close();
    return;
  }
  auto conn = std::make_unique<Connection>();
  conn->channel = std::move(channel);
  Connection* c = conn.get();
  try {
    c->thread = std::thread([this, c] { serveConnection(c); });
  } catch (const std::system_error&) {  // no thread to be had: refuse, as when full
    refused_connections_++;
    c->channel->close();
    return;
  }
  connections_.push_back(std::move(conn));
}

void PeerServer::reapLocked() {
  for (auto it = connections_.begin(); it != connections_.end();) {
    if ((*it)->done) {
      (*it)->thread.join();
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void PeerServer::serveConnection(Connection* connection) {
  Channel& channel = *connection->channel;
  Status auth = authenticateAsServer(channel, options_.token, deadlineIn(options_.io_timeout));
  bool protocol_error = !auth.ok() && auth.error().code == Errc::kProtocol;
  if (auth.ok()) protocol_error = !serveRequests(channel);
  channel.close();
  // Done before counted: whoever sees the counter may count on the slot being free.
  connection->done = true;
  if (!auth.ok()) refused_auth_++;
  if (protocol_error) protocol_errors_++;
}

bool PeerServer::serveRequests(Channel& channel) {
  for (;;) {
    auto frame = recvFrame(channel, deadlineIn(options_.io_timeout));
    if (!frame.ok()) return frame.error().code != Errc::kProtocol;
    if (frame->type != FrameType::kFetch) return false;
    if (!serveFetch(channel, *frame)) return true;
  }
}

void PeerServer::refuse(Channel& channel, const Error& error, bool count_protocol) {
  (count_protocol ? protocol_errors_ : not_served_)++;
  // A failed ERR send ends the connection at the next receive.
  (void)sendFrame(channel, FrameType::kErr, encodeErr(error), deadlineIn(options_.io_timeout));
}

bool PeerServer::serveFetch(Channel& channel, const Frame& frame) {
  auto request = decodeFetch(frame.payload);
  if (!request.ok()) {
    refuse(channel, request.error(), true);
    return true;
  }
  auto object = source_.openForPeer(*request);
  if (!object.ok()) {
    refuse(channel, object.error(), false);
    return true;
  }
  if (object->meta.size != request->size || object->meta.mtime_ns != request->mtime_ns) {
    refuse(channel,
           makeError(Errc::kStale, "copy of " + request->relpath + " has another validator"),
           false);
    return true;
  }
  return sendObject(channel, *object).ok();
}

Status PeerServer::sendObject(Channel& channel, ServedObject& object) {
  RETURN_IF_ERROR(
      sendFrame(channel, FrameType::kOk, encodeOk(object.meta), deadlineIn(options_.io_timeout)));
  // The deadline bounds each wait for the socket, not the whole body: a
  // receiver that keeps reading keeps the transfer alive.
  uint64_t sent = 0;
  constexpr uint64_t kStep = 1 << 20;
  while (sent < object.meta.size) {
    uint64_t step = std::min(kStep, object.meta.size - sent);
    // A short file ends the connection: the client sees a short body, never a
    // body padded or cut to look whole.
    RETURN_IF_ERROR(channel.sendFile(object.fd.get(), sent, step, deadlineIn(options_.io_timeout)));
    sent += step;
  }
  served_objects_++;
  served_bytes_ += object.meta.size;
  return Ok{};
}

}  // namespace hotshard::peer
