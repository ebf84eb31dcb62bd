#include "daemon/control.h"

#include <openssl/evp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <optional>

#include "base/paths.h"
#include "daemon/control_protocol.h"

namespace hotshard {
namespace {

constexpr size_t kMaxConnections = 32;
constexpr int kRequestTimeoutMs = 5000;
// A client that reads nothing of a reply for this long is dropped: its server
// thread would otherwise wait in send() for as long as the client lives.
constexpr int kSendTimeoutMs = 5000;
// Refusals are written by the accepting thread, which must not wait on anyone.
constexpr int kRefusalTimeoutMs = 100;
// On stop, how long requests being handled have to finish their replies.
constexpr int kStopGraceMs = 1000;

// Waits for room to write; false when timeout_ms (< 0: none) has passed since start.
Result<bool> waitWritable(int fd, int timeout_ms, std::chrono::steady_clock::time_point start) {
  int wait_ms = -1;
  if (timeout_ms >= 0) {
    auto waited = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    if (waited.count() >= timeout_ms) return false;
    wait_ms = timeout_ms - static_cast<int>(waited.count());
  }
  pollfd pfd{.fd = fd, .events = POLLOUT, .revents = 0};
  if (::poll(&pfd, 1, wait_ms) < 0 && errno != EINTR) return lastSysError("poll control socket");
  return true;
}

// Writes all n bytes within timeout_ms (< 0: however long it takes).
Status writeAll(int fd, const char* p, size_t n, int timeout_ms) {
  const auto start = std::chrono::steady_clock::now();
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) return lastSysError("write control frame");
      ASSIGN_OR_RETURN(bool room, waitWritable(fd, timeout_ms, start));
      if (!room) {
        return makeError(Errc::kProtocol,
                         "timed out writing a control frame: the peer reads nothing");
      }
      continue;
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Ok{};
}

Status readAll(int fd, char* p, size_t n, int timeout_ms) {
  while (n > 0) {
    pollfd pfd{.fd = fd, .events = POLLIN, .revents = 0};
    int r = ::poll(&pfd, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return lastSysError("poll control socket");
    if (r == 0) return makeError(Errc::kProtocol, "timed out waiting for a control frame");
    ssize_t got = ::recv(fd, p, n, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      return lastSysError("read control frame");
    }
    if (got == 0) return makeError(Errc::kProtocol, "connection closed mid-frame");
    p += got;
    n -= static_cast<size_t>(got);
  }
  return Ok{};
}

// Valid UTF-8 exactly when the JSON serializer takes it as it is (it throws
// type_error 316 otherwise), so what passes here is what dump() writes.
bool isUtf8(const std::string& s) {
  try {
    (void)json(s).dump();
    return true;
  } catch (const json::type_error&) {
    return false;
  }
}

std::string base64Encode(const std::string& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(bytes.data()),
                          static_cast<int>(bytes.size()));
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

// nullopt when text is not base64 (RFC 4648 §4, padded).
std::optional<std::string> base64Decode(const std::string& text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out(3 * (text.size() / 4) + 1, '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                          reinterpret_cast<const unsigned char*>(text.data()),
                          static_cast<int>(text.size()));
  if (n < 0) return std::nullopt;
  // EVP_DecodeBlock counts the padding as zero bytes.
  size_t pad = 0;
  while (pad < 2 && pad < text.size() && text[text.size() - 1 - pad] == '=') pad++;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

bool isWireBytes(const json& j) {
  return j.is_object() && j.size() == 1 && j.contains(kBase64) && j[kBase64].is_string();
}

}  // namespace

json toWire(const json& message) {
  if (message.is_string()) {
    const auto& s = message.get_ref<const std::string&>();
    return isUtf8(s) ? message : json{{kBase64, base64Encode(s)}};
  }
  if (!message.is_structured()) return message;
  json out = message.is_array() ? json::array() : json::object();
  for (auto it = message.begin(); it != message.end(); ++it) {
    if (message.is_array()) {
      out.push_back(toWire(*it));
    } else {
      out[it.key()] = toWire(it.value());
    }
  }
  return out;
}

json fromWire(json message) {
  if (isWireBytes(message)) {
    auto bytes = base64Decode(message[kBase64].get<std::string>());
    return bytes ? json(*bytes) : message;
  }
  if (message.is_structured()) {
    for (auto& v : message) v = fromWire(std::move(v));
  }
  return message;
}

Status writeFrame(int fd, const json& message, int timeout_ms) {
  // Keys are not names: a key that is not UTF-8 is replaced rather than refused.
  std::string body = toWire(message).dump(-1, ' ', false, json::error_handler_t::replace);
  if (body.size() > kMaxFrame) return makeError(Errc::kProtocol, "control frame too large");
  uint32_t n = static_cast<uint32_t>(body.size());
  // The length and the body in one write, under one deadline.
  std::string frame = {static_cast<char>(n >> 24), static_cast<char>(n >> 16),
                       static_cast<char>(n >> 8), static_cast<char>(n)};
  frame += body;
  return writeAll(fd, frame.data(), frame.size(), timeout_ms);
}

Result<json> readFrame(int fd, int timeout_ms) {
  unsigned char hdr[4];
  RETURN_IF_ERROR(readAll(fd, reinterpret_cast<char*>(hdr), 4, timeout_ms));
  uint32_t n = (uint32_t{hdr[0]} << 24) | (uint32_t{hdr[1]} << 16) | (uint32_t{hdr[2]} << 8) |
               uint32_t{hdr[3]};
  if (n > kMaxFrame) {
    return makeError(Errc::kProtocol, "control frame of " + std::to_string(n) +
                                          " bytes exceeds the limit of " +
                                          std::to_string(kMaxFrame));
  }
  std::string body(n, '\0');
  RETURN_IF_ERROR(readAll(fd, body.data(), n, timeout_ms));
  json message = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (message.is_discarded()) return makeError(Errc::kProtocol, "control frame is not valid JSON");
  return fromWire(std::move(message));
}

// ---- server ------------------------------------------------------------------

Result<std::unique_ptr<ControlServer>> ControlServer::start(
    const std::string& path, std::map<std::string, Handler> handlers) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return makeError(Errc::kInvalidArgument, "control socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);

  // 0755: the socket itself is 0600; explicit, as the daemon runs with umask 0.
  RETURN_IF_ERROR(makeDirectories(std::filesystem::path(path).parent_path().string(), 0755));

  // A socket that still answers belongs to a live daemon; one that refuses is
  // left over from a crash and can go.
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    ::close(probe);
    return makeError(Errc::kBusy, "control socket " + path +
                                      " is in use: another hotshard daemon serves this mount");
  }
  ::close(probe);
  ::unlink(path.c_str());

  auto server = std::unique_ptr<ControlServer>(new ControlServer());
  server->path_ = path;
  server->handlers_ = std::move(handlers);
  server->listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server->listen_fd_ < 0) return lastSysError("socket");
  mode_t old = ::umask(0177);  // born 0600: no window in which others may connect
  int rc = ::bind(server->listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old);
  if (rc < 0) return lastSysError("bind control socket " + path);
  if (::chmod(path.c_str(), 0600) < 0) return lastSysError("chmod " + path);
  if (::listen(server->listen_fd_, 64) < 0) return lastSysError("listen " + path);
  server->wake_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (server->wake_fd_ < 0) return lastSysError("eventfd");
  server->acceptor_ = std::thread([s = server.get()] { s->acceptLoop(); });
  return server;
}

ControlServer::~ControlServer() { stop(); }

void ControlServer::stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  if (wake_fd_ >= 0) (void)!::write(wake_fd_, &one, sizeof(one));
  if (acceptor_.joinable()) acceptor_.join();
  // Idle connections end at once; requests being handled get a grace period for
  // their replies; then every connection is shut, which also wakes a send()
  // blocked on a client that reads nothing.
  shutdownConnections(SHUT_RD);
  if (!waitForConnections(kStopGraceMs)) {
    shutdownConnections(SHUT_RDWR);
    // Their threads use this object: wait for every one (handlers are bounded,
    // and the daemon has cancelled promotions and trace recording by now).
    while (!waitForConnections(kRequestTimeoutMs)) {
      spdlog::warn("control socket: connections still busy at stop; waiting for them");
    }
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (wake_fd_ >= 0) ::close(wake_fd_);
  ::unlink(path_.c_str());
}

void ControlServer::shutdownConnections(int how) {
  std::lock_guard lock(mu_);
  for (int fd : connections_) ::shutdown(fd, how);
}

bool ControlServer::waitForConnections(int timeout_ms) {
  for (int waited = 0;; waited += 10) {
    {
      std::lock_guard lock(mu_);
      if (connections_.empty()) return true;
    }
    if (waited >= timeout_ms) return false;
    ::usleep(10000);
  }
}

void ControlServer::acceptLoop() {
  while (!stopping_.load()) {
    pollfd pfds[2] = {{.fd = listen_fd_, .events = POLLIN, .revents = 0},
                      {.fd = wake_fd_, .events = POLLIN, .revents = 0}};
    if (::poll(pfds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      spdlog::error("control socket: poll: {}", std::strerror(errno));
      return;
    }
    if (pfds[1].revents) return;
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;

    ucred cred{};
    socklen_t len = sizeof(cred);
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
        (cred.uid != 0 && cred.uid != ::geteuid())) {
      spdlog::warn("control socket: refused peer pid {} uid {}", cred.pid, cred.uid);
      (void)writeFrame(fd, json{{control::kOk, false}, {control::kError, "permission denied"}},
                       kRefusalTimeoutMs);
      ::close(fd);
      continue;
    }
    {
      std::lock_guard lock(mu_);
      if (connections_.size() >= kMaxConnections) {
        (void)writeFrame(
            fd, json{{control::kOk, false}, {control::kError, "daemon busy: too many clients"}},
            kRefusalTimeoutMs);
        ::close(fd);
        continue;
      }
      connections_.insert(fd);
    }
    std::thread([this, fd] {
      serve(fd);
      {
        std::lock_guard lock(mu_);
        connections_.erase(fd);  // before close: stop() never shuts a reused fd
      }
      ::close(fd);
    }).detach();
  }
}

void ControlServer::serve(int fd) {
  // One connection may carry several requests, one after another.
  while (!stopping_.load()) {
    auto request = readFrame(fd, kRequestTimeoutMs);
    if (!request.ok()) {
      // Garbage, an oversized frame, a stall or a hang-up: say why (best effort)
      // and drop the connection, since the stream can no longer be trusted.
      (void)writeFrame(fd, json{{control::kOk, false}, {control::kError, request.error().message}},
                       kSendTimeoutMs);
      return;
    }
    json reply;
    const json& req = *request;
    if (!req.is_object() || !req.contains(control::kCmd) || !req[control::kCmd].is_string()) {
      reply = json{{control::kOk, false},
                   {control::kError, "request must be a JSON object with a string \"cmd\""}};
    } else if (auto it = handlers_.find(req[control::kCmd].get<std::string>());
               it == handlers_.end()) {
      std::string known;
      for (const auto& [name, h] : handlers_) known += (known.empty() ? "" : ", ") + name;
      reply = json{{control::kOk, false},
                   {control::kError, "unknown command '" + req[control::kCmd].get<std::string>() +
                                         "' (known: " + known + ")"}};
    } else {
      Result<json> result = makeError(Errc::kInternal, "handler threw");
      bool broken = false;  // a progress frame failed: the stream is cut, write no more
      try {
        result = it->second(req, [fd, &broken](const json& p) {
          if (!broken) broken = !writeFrame(fd, json{{control::kProgress, p}}, kSendTimeoutMs).ok();
        });
      } catch (const std::exception& e) {
        result = makeError(Errc::kInternal, std::string("internal error: ") + e.what());
      }
      if (broken) return;
      if (result.ok()) {
        reply = result->is_object() ? *result : json::object();
        reply[control::kOk] = true;
      } else {
        reply = json{{control::kOk, false}, {control::kError, result.error().message}};
      }
    }
    if (!writeFrame(fd, reply, kSendTimeoutMs).ok()) return;
  }
}

// ---- client --------------------------------------------------------------------

Result<ControlClient> ControlClient::connect(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return makeError(Errc::kInvalidArgument, "control socket path too long: " + path);
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return lastSysError("socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    Error err = lastSysError("connect " + path);
    ::close(fd);
    return err;
  }
  return ControlClient(fd);
}

ControlClient::~ControlClient() {
  if (fd_ >= 0) ::close(fd_);
}

Result<json> ControlClient::call(const json& request,
                                 const std::function<void(const json&)>& on_progress,
                                 int timeout_ms) {
  Status sent = writeFrame(fd_, request, timeout_ms);
  if (!sent.ok()) {
    // A daemon that refused us has written why before closing; prefer its word.
    auto reply = readFrame(fd_, 1000);
    if (reply.ok() && reply->is_object() && reply->contains(control::kError)) {
      return makeError(Errc::kProtocol, reply->value(control::kError, "refused"));
    }
    return sent.takeError();
  }
  while (true) {
    ASSIGN_OR_RETURN(json reply, readFrame(fd_, timeout_ms));
    if (reply.is_object() && reply.contains(control::kProgress) && !reply.contains(control::kOk)) {
      if (on_progress) on_progress(reply[control::kProgress]);
      continue;
    }
    if (!reply.is_object() || !reply.value(control::kOk, false)) {
      std::string msg =
          reply.is_object() ? reply.value(control::kError, "malformed reply") : "malformed reply";
      return makeError(Errc::kProtocol, msg);
    }
    return reply;
  }
}

}  // namespace hotshard
