#include "peer/tcp_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/socket.h>

#include <atomic>

#include "base/fd.h"

namespace hotshard::peer {
namespace {

// Waits until `fd` is ready for `events`. Errors: kIo when the deadline passes.
Status waitFor(int fd, short events, Deadline deadline, const char* what, const std::string& peer) {
  for (;;) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, pollTimeoutMs(deadline));
    if (r > 0) return Ok{};
    if (r == 0) return makeError(Errc::kIo, std::string(what) + " " + peer + ": timed out");
    if (errno != EINTR) return lastSysError(std::string("poll ") + what + " " + peer);
  }
}

class TcpChannel final : public Channel {
 public:
  TcpChannel(UniqueFd fd, std::string peer) : fd_(std::move(fd)), peer_(std::move(peer)) {
    int one = 1;
    ::setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }

  Status sendAll(const void* data, size_t len, Deadline deadline) override {
    auto* p = static_cast<const char*>(data);
    while (len > 0) {
      if (closed_) return closedError("send to");
      ssize_t n = ::send(fd_.get(), p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        p += n, len -= static_cast<size_t>(n);
      } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
        RETURN_IF_ERROR(waitFor(fd_.get(), POLLOUT, deadline, "send to", peer_));
      } else {
        return lastSysError("send to peer " + peer_);
      }
    }
    return Ok{};
  }

  Result<size_t> recvSome(void* buf, size_t len, Deadline deadline) override {
    for (;;) {
      if (closed_) return closedError("receive from");
      ssize_t n = ::recv(fd_.get(), buf, len, MSG_DONTWAIT);
      if (n > 0) return static_cast<size_t>(n);
      if (n == 0) return makeError(Errc::kIo, "receive from peer " + peer_ + ": closed by peer");
      if (errno != EAGAIN && errno != EINTR) return lastSysError("receive from peer " + peer_);
      RETURN_IF_ERROR(waitFor(fd_.get(), POLLIN, deadline, "receive from", peer_));
    }
  }

  Status sendFile(int fd, uint64_t offset, uint64_t len, Deadline deadline) override {
    off_t off = static_cast<off_t>(offset);
    uint64_t left = len;
    while (left > 0) {
      if (closed_) return closedError("sendfile to");
      size_t step = left > (size_t{1} << 30) ? (size_t{1} << 30) : static_cast<size_t>(left);
      ssize_t n = ::sendfile(fd_.get(), fd, &off, step);
      if (n > 0) {
        left -= static_cast<uint64_t>(n);
      } else if (n == 0) {
        return makeError(Errc::kIo, "sendfile to peer " + peer_ + ": short: the file ended " +
                                        std::to_string(left) + " bytes early");
      } else if (errno == EAGAIN || errno == EINTR) {
        RETURN_IF_ERROR(waitFor(fd_.get(), POLLOUT, deadline, "sendfile to", peer_));
      } else {
        return lastSysError("sendfile to peer " + peer_);
      }
    }
    return Ok{};
  }

  void close() override {
    if (!closed_.exchange(true)) ::shutdown(fd_.get(), SHUT_RDWR);
  }
  const char* transport() const override { return "tcp"; }
  std::string peerAddress() const override { return peer_; }

 private:
  Error closedError(const char* what) const {
    return makeError(Errc::kIo, std::string(what) + " peer " + peer_ + ": channel closed");
  }

  UniqueFd fd_;
  std::string peer_;
  std::atomic<bool> closed_{false};
};

class TcpListener final : public Listener {
 public:
  TcpListener(UniqueFd fd, UniqueFd wake) : fd_(std::move(fd)), wake_(std::move(wake)) {}

  Result<std::unique_ptr<Channel>> accept() override {
    for (;;) {
      pollfd p[2] = {{fd_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      if (closed_) return makeError(Errc::kIo, "peer listener closed");
      int r = ::poll(p, 2, -1);
      if (r < 0 && errno != EINTR) return lastSysError("poll peer listener");
      if (closed_ || (p[1].revents & POLLIN)) return makeError(Errc::kIo, "peer listener closed");
      if (r <= 0 || !(p[0].revents & POLLIN)) continue;
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      int c = ::accept4(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len,
                        SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c >= 0)
        return std::unique_ptr<Channel>(std::make_unique<TcpChannel>(
            UniqueFd(c), formatSockaddr(reinterpret_cast<sockaddr*>(&ss))));
      // A client that reset before we accepted it is its problem, not the listener's.
      if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      return lastSysError("accept on peer listener");
    }
  }

  std::string boundAddress() const override {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "?";
    return formatSockaddr(reinterpret_cast<sockaddr*>(&ss));
  }

  void close() override {
    if (closed_.exchange(true)) return;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  }

 private:
  UniqueFd fd_;
  UniqueFd wake_;
  std::atomic<bool> closed_{false};
};

Result<UniqueFd> connectOne(const addrinfo* ai, const std::string& address, Deadline deadline) {
  UniqueFd fd(
      ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
  if (!fd) return lastSysError("socket for peer " + address);
  if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) return lastSysError("connect to peer " + address);
    RETURN_IF_ERROR(waitFor(fd.get(), POLLOUT, deadline, "connect to", address));
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return sysError(err, "connect to peer " + address);
  }
  return fd;
}

class TcpConnector final : public Connector {
 public:
  Result<std::unique_ptr<Channel>> connect(const std::string& address, Deadline deadline) override {
    ASSIGN_OR_RETURN(AddrInfoPtr addrs, resolveHostPort(address, false));
    Error last = makeError(Errc::kIo, "connect to peer " + address + ": no address");
    for (const addrinfo* ai = addrs.get(); ai != nullptr; ai = ai->ai_next) {
      auto fd = connectOne(ai, address, deadline);
      if (fd.ok())
        return std::unique_ptr<Channel>(std::make_unique<TcpChannel>(std::move(*fd), address));
      last = fd.takeError();
      if (last.code != Errc::kIo && last.code != Errc::kPermission) break;
      last.code = Errc::kIo;  // refused/unreachable: the peer is not there
    }
    return last;
  }
};

}  // namespace

Result<std::unique_ptr<Listener>> listenTcp(const std::string& address) {
  ASSIGN_OR_RETURN(AddrInfoPtr addrs, resolveHostPort(address, true));
  const addrinfo* ai = addrs.get();
  UniqueFd fd(
      ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol));
  if (!fd) return lastSysError("socket for peer listener " + address);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0)
    return lastSysError("bind peer listener " + address);
  if (::listen(fd.get(), 128) != 0) return lastSysError("listen on peer listener " + address);
  UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake) return lastSysError("eventfd for peer listener");
  return std::unique_ptr<Listener>(std::make_unique<TcpListener>(std::move(fd), std::move(wake)));
}

std::unique_ptr<Channel> adoptTcpSocket(UniqueFd fd, std::string peer_address) {
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
  return std::make_unique<TcpChannel>(std::move(fd), std::move(peer_address));
}

std::unique_ptr<Connector> makeTcpConnector() { return std::make_unique<TcpConnector>(); }

}  // namespace hotshard::peer
