#include "peer/transport.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <charconv>

namespace hotshard::peer {

int pollTimeoutMs(Deadline deadline) {
  auto left = deadline - std::chrono::steady_clock::now();
  if (left <= std::chrono::steady_clock::duration::zero()) return 0;
  auto ms = std::chrono::ceil<std::chrono::milliseconds>(left).count();
  return ms > 1'000'000 ? 1'000'000 : static_cast<int>(ms);
}

Status recvAll(Channel& channel, void* buf, size_t len, Deadline deadline) {
  auto* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < len) {
    auto n = channel.recvSome(p + got, len - got, deadline);
    if (!n.ok()) {
      Error e = n.takeError();
      if (got > 0)
        e.message += " after " + std::to_string(got) + " of " + std::to_string(len) + " bytes";
      return e;
    }
    got += *n;
  }
  return Ok{};
}

Result<HostPort> splitHostPort(const std::string& address) {
  auto bad = [&](const char* why) {
    return makeError(Errc::kInvalidArgument,
                     "peer address '" + address + "': " + why + " (want HOST:PORT)");
  };
  size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no host");
  std::string host = address.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad("unbalanced brackets");
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return bad("an IPv6 host needs brackets");
  }
  const char* first = address.data() + colon + 1;
  const char* last = address.data() + address.size();
  unsigned port = 0;
  auto [end, ec] = std::from_chars(first, last, port);
  if (first == last || ec != std::errc() || end != last || port > 65535) return bad("bad port");
  return HostPort{std::move(host), static_cast<uint16_t>(port)};
}

void AddrInfoDeleter::operator()(addrinfo* ai) const { ::freeaddrinfo(ai); }

Result<AddrInfoPtr> resolveHostPort(const std::string& address, bool passive) {
  ASSIGN_OR_RETURN(HostPort hp, splitHostPort(address));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  std::string port = std::to_string(hp.port);
  int rc = ::getaddrinfo(hp.host.empty() ? nullptr : hp.host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0)
    return makeError(Errc::kInvalidArgument,
                     "resolve peer address " + address + ": " + ::gai_strerror(rc));
  return AddrInfoPtr(res);
}

std::string formatSockaddr(const sockaddr* address) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (address != nullptr && address->sa_family == AF_INET) {
    auto* in = reinterpret_cast<const sockaddr_in*>(address);
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (address != nullptr && address->sa_family == AF_INET6) {
    auto* in6 = reinterpret_cast<const sockaddr_in6*>(address);
    ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(in6->sin6_port));
  }
  return "?";
}

}  // namespace hotshard::peer
