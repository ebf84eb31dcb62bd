// The control socket: a unix stream socket (0600) on which the `hotshard` CLI
// talks to the daemon. Each message is a frame: a 4-byte big-endian length, then
// that many bytes of JSON (at most kMaxFrame). A request is {"cmd": NAME, ...};
// every reply has "ok": true, or "ok": false with "error": MESSAGE. A handler may
// send progress frames ({"progress": ...}) before its final reply.
// Malformed, oversized or unknown requests get an error reply; peers that are
// neither root nor the daemon's user are refused. A client that sends no request
// for 5 s, or reads nothing of a reply for 5 s, is dropped.
//
// Strings are byte strings: a file name on Linux is any bytes but '/' and NUL,
// while JSON text is UTF-8 (RFC 8259 §8.1). A string value that is not valid
// UTF-8 travels as the object {"base64": BYTES} (base64 of RFC 4648 §4), and
// readFrame turns it back into the string, so paths pass through warm, stat,
// pin, evict, top and status unchanged. Object keys are not names and must be
// UTF-8 (invalid bytes in a key become U+FFFD).
#pragma once

#include <nlohmann/json.hpp>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "base/result.h"

namespace hotshard {

using json = nlohmann::json;

inline constexpr uint32_t kMaxFrame = 1u << 20;

inline constexpr char kBase64[] = "base64";  // the key of a string that is not UTF-8
// message with every string value that is not valid UTF-8 as {"base64": ...}:
// what writeFrame sends, and what `--json` output prints.
json toWire(const json& message);
// The reverse: each {"base64": ...} object, and nothing else, back to its bytes.
// A "base64" value that does not decode is left as it came.
json fromWire(json message);

// timeout_ms < 0: wait forever; otherwise the whole frame's deadline.
Status writeFrame(int fd, const json& message, int timeout_ms = -1);
Result<json> readFrame(int fd, int timeout_ms);

class ControlServer {
 public:
  // Sends a progress frame to the client of the request being handled.
  using Progress = std::function<void(const json&)>;
  // Returns the reply's fields ("ok" is added), or an error.
  using Handler = std::function<Result<json>(const json& request, const Progress& progress)>;

  // Binds `path` (creating its directory), refusing to replace a live socket.
  static Result<std::unique_ptr<ControlServer>> start(const std::string& path,
                                                      std::map<std::string, Handler> handlers);
  ~ControlServer();  // stops and removes the socket
  void stop();
  const std::string& path() const { return path_; }

 private:
  ControlServer() = default;
  void acceptLoop();
  void serve(int fd);
  void shutdownConnections(int how);        // shutdown(2) on each connection being served
  bool waitForConnections(int timeout_ms);  // false: some still served after timeout_ms

  std::string path_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;  // eventfd that ends acceptLoop
  std::map<std::string, Handler> handlers_;
  std::thread acceptor_;
  std::mutex mu_;
  std::set<int> connections_;  // fds of the connections being served, guarded by mu_
  std::atomic<bool> stopping_{false};
};

class ControlClient {
 public:
  static Result<ControlClient> connect(const std::string& path);
  ControlClient(ControlClient&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  ~ControlClient();
  // Sends request and returns the final reply; progress frames go to on_progress.
  // timeout_ms bounds the request's write and each frame read.
  // A reply with "ok": false becomes an error carrying its message.
  Result<json> call(const json& request,
                    const std::function<void(const json&)>& on_progress = nullptr,
                    int timeout_ms = 30000);

 private:
  explicit ControlClient(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace hotshard
