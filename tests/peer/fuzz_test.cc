// Hostile input on the peer port: the parser takes a million random and
// mutated inputs directly, and a live PeerServer takes over 100,000 through
// its listener (random bytes and mutated frames, before and after
// authentication) and goes on serving a good client, in well under a minute.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <random>
#include <thread>

#include "peer/auth.h"
#include "peer/peer_client.h"
#include "peer/peer_server.h"
#include "peer/protocol.h"
#include "peer/tcp_transport.h"
#include "tests/peer/peer_test_util.h"

namespace hotshard::peer {
namespace {

using namespace std::chrono_literals;

// Flips, overwrites, cuts or extends `s` a few times.
std::string mutate(std::string s, std::mt19937_64& rng) {
  int edits = 1 + static_cast<int>(rng() % 3);
  for (int i = 0; i < edits; ++i) {
    switch (rng() % 5) {
      case 0:
        if (!s.empty()) s[rng() % s.size()] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:
        if (!s.empty()) s[rng() % s.size()] = static_cast<char>(rng());
        break;
      case 2:
        s.resize(s.empty() ? 0 : rng() % s.size());
        break;
      case 3:
        for (int n = static_cast<int>(rng() % 16); n > 0; --n)
          s.push_back(static_cast<char>(rng()));
        break;
      default:
        if (s.size() >= 4) {  // a length field set to something extreme
          size_t at = rng() % (s.size() - 3);
          uint32_t v = (rng() % 2) ? 0xffffffffu : static_cast<uint32_t>(rng() % 70000);
          for (int b = 0; b < 4; ++b) s[at + b] = static_cast<char>(v >> (24 - 8 * b));
        }
    }
  }
  return s;
}

std::string randomString(std::mt19937_64& rng, size_t max_len) {
  std::string s(rng() % (max_len + 1), '\0');
  for (char& c : s) c = static_cast<char>(rng());
  return s;
}

ObjectRequest randomRequest(std::mt19937_64& rng) {
  static const char* paths[] = {"good", "a/b", "../x", "/abs", "a//b", "", "x\0y", "ok/./z"};
  return ObjectRequest{(rng() % 4) ? "ds" : randomString(rng, 8), paths[rng() % 8], rng() % 100,
                       int64_t(rng() % 3)};
}

TEST(PeerFuzz, TheParserTakesAMillionHostileInputs) {
  std::mt19937_64 rng(20261129);
  const std::string seeds[] = {
      encodeFrame(FrameType::kHello, std::string(32, 'n')),
      encodeFrame(FrameType::kFetch, encodeFetch(ObjectRequest{"ds", "a/b/c", 5, 6})),
      encodeFrame(FrameType::kOk, encodeOk(ObjectMeta{1, 2, 3})),
      encodeFrame(FrameType::kErr, encodeErr(makeError(Errc::kBusy, "busy"))),
  };
  uint64_t accepted = 0;
  for (int i = 0; i < 1'000'000; ++i) {
    std::string in = (i % 4 == 0) ? randomString(rng, 64) : mutate(seeds[rng() % 4], rng);
    in.resize(std::max(in.size(), kFrameHeaderBytes));
    uint8_t raw[kFrameHeaderBytes];
    std::memcpy(raw, in.data(), kFrameHeaderBytes);
    auto header = decodeFrameHeader(raw);
    if (header.ok()) {
      ASSERT_LE(header->length, kMaxFramePayload);
      accepted++;
    } else {
      ASSERT_EQ(header.error().code, Errc::kProtocol);
    }
    std::string_view payload(in);
    payload.remove_prefix(kFrameHeaderBytes);
    auto fetch = decodeFetch(payload);
    if (fetch.ok()) {
      ASSERT_TRUE(validateRequest(*fetch).ok());
      ASSERT_EQ(encodeFetch(*fetch), payload) << "what decodes encodes back to the same bytes";
    } else {
      ASSERT_EQ(fetch.error().code, Errc::kProtocol);
    }
    auto ok = decodeOk(payload);
    if (ok.ok()) ASSERT_EQ(encodeOk(*ok), payload);
    (void)decodeErr(payload);
  }
  EXPECT_GT(accepted, 1000u)
      << "the mutations keep some frames valid, so deeper fields are reached";
}

class LiveFuzz {
 public:
  explicit LiveFuzz(PeerServer& server) : address_(server.boundAddress()) {}
  std::atomic<uint64_t> inputs{0}, replies{0}, hangs{0};

  // One connection: hostile bytes before authentication, then EOF; the server
  // must close it (it never answers them with anything but a CHALLENGE).
  void preAuth(std::mt19937_64& rng) {
    std::string in;
    switch (rng() % 3) {
      case 0:
        in = randomString(rng, 80);
        break;
      case 1:
        in = mutate(encodeFrame(FrameType::kHello, std::string(32, 'n')), rng);
        break;
      default:
        in = encodeFrame(FrameType::kHello, std::string(32, 'n')) +
             mutate(encodeFrame(FrameType::kAuth, std::string(32, 'p')), rng);
    }
    int fd = -1;
    auto ch = connect(&fd);
    ASSERT_TRUE(ch != nullptr);
    (void)ch->sendAll(in.data(), in.size(), deadlineIn(5s));  // the server may close early
    inputs++;
    drainUntilClosed(*ch, fd);
  }

  // One authenticated connection carrying `batch` FETCH frames with hostile
  // payloads, each answered (ERR, or OK + body), then a hostile frame.
  void postAuth(std::mt19937_64& rng, int batch) {
    int fd = -1;
    auto ch = connect(&fd);
    ASSERT_TRUE(ch != nullptr);
    ASSERT_TRUE(authenticateAsClient(*ch, testing::kToken, deadlineIn(5s)).ok());
    std::string out;
    for (int i = 0; i < batch; ++i) {
      std::string payload =
          (rng() % 4) ? mutate(encodeFetch(randomRequest(rng)), rng) : randomString(rng, 60);
      out += encodeFrame(FrameType::kFetch, payload);
    }
    ASSERT_TRUE(ch->sendAll(out.data(), out.size(), deadlineIn(5s)).ok());
    for (int i = 0; i < batch; ++i) {
      auto reply = recvFrame(*ch, deadlineIn(5s));
      ASSERT_TRUE(reply.ok()) << "reply " << i << ": " << reply.error().message;
      if (reply->type == FrameType::kOk) {
        auto meta = decodeOk(reply->payload);
        ASSERT_TRUE(meta.ok());
        std::string body(meta->size, '\0');
        ASSERT_TRUE(recvAll(*ch, body.data(), body.size(), deadlineIn(5s)).ok());
      } else {
        ASSERT_EQ(reply->type, FrameType::kErr);
      }
      replies++;
    }
    inputs += batch;
    std::string last = mutate(encodeFrame(FrameType::kFetch, encodeFetch(randomRequest(rng))), rng);
    (void)ch->sendAll(last.data(), last.size(), deadlineIn(5s));
    inputs++;
    drainUntilClosed(*ch, fd);
  }

 private:
  // A loopback connection whose fd we keep, to half-close it; closed with a
  // reset (SO_LINGER 0) so that 100k connections leave no TIME_WAIT behind.
  std::unique_ptr<Channel> connect(int* fd_out) {
    auto hp = splitHostPort(address_);
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(hp->port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) return nullptr;
    linger reset{1, 0};
    ::setsockopt(fd.get(), SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    *fd_out = fd.get();
    return adoptTcpSocket(std::move(fd), address_);
  }

  // Half-closes our side (the server sees EOF after our input) and reads
  // until the server closes; a server that keeps it past 5 s is a hang.
  void drainUntilClosed(Channel& ch, int fd) {
    ::shutdown(fd, SHUT_WR);
    char buf[4096];
    auto until = deadlineIn(5s);
    for (;;) {
      auto n = ch.recvSome(buf, sizeof buf, until);
      if (!n.ok()) {
        if (n.error().message.find("timed out") != std::string::npos) hangs++;
        return;
      }
    }
  }
  std::string address_;
};

TEST(PeerFuzz, GarbageOnThePeerPortLeavesTheServerServing) {
  testing::TempDir dir;
  testing::FileSource source(dir.path());
  auto good = source.add("good", "the good bytes");
  PeerServer server(
      ServerOptions{.listen = "127.0.0.1:0", .token = testing::kToken, .io_timeout = 2s}, source);
  ASSERT_TRUE(server.start().ok());
  LiveFuzz fuzz(server);
  auto start = std::chrono::steady_clock::now();
  constexpr int kThreads = 4, kPreAuthPerThread = 5000, kSessionsPerThread = 50, kBatch = 500;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      for (int i = 0; i < kPreAuthPerThread; ++i) fuzz.preAuth(rng);
      for (int i = 0; i < kSessionsPerThread; ++i) fuzz.postAuth(rng, kBatch);
    });
  }
  for (auto& t : threads) t.join();
  auto took = std::chrono::steady_clock::now() - start;
  std::printf("peer fuzz: %llu inputs through the listener in %.1f s\n",
              (unsigned long long)fuzz.inputs.load(), std::chrono::duration<double>(took).count());
  EXPECT_GE(fuzz.inputs.load(), 100'000u);
  EXPECT_EQ(fuzz.replies.load(), uint64_t{kThreads} * kSessionsPerThread * kBatch)
      << "every FETCH answered";
  EXPECT_EQ(fuzz.hangs.load(), 0u);
  EXPECT_LT(took, 60s);
  ServerStats s = server.stats();
  EXPECT_GE(s.refused_auth, uint64_t{kThreads} * kPreAuthPerThread);
  EXPECT_GT(s.protocol_errors, 0u);
  UniqueFd dest = testing::tempDest();
  auto meta =
      PeerClient(ClientOptions{.token = testing::kToken})
          .fetch(Member{"a", server.boundAddress(), {"tcp"}, 0, "ds"}, good, dest.get(), nullptr);
  ASSERT_TRUE(meta.ok()) << meta.error().message;
  EXPECT_EQ(testing::readFd(dest.get()), "the good bytes");
}

}  // namespace
}  // namespace hotshard::peer
