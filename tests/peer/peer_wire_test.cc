// PeerServer and PeerClient over loopback TCP: whole objects, lies, errors,
// authentication, hostile and dying peers.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

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
using testing::FileSource;
using testing::kToken;
using testing::TempDir;

class PeerWire : public ::testing::Test {
 protected:
  void startServer(ServerOptions options = {}) {
    options.listen = "127.0.0.1:0";
    if (options.token.empty()) options.token = kToken;
    server_ = std::make_unique<PeerServer>(options, source_);
    Status st = server_->start();
    ASSERT_TRUE(st.ok()) << st.error().message;
    peer_ = Member{"peer-a", server_->boundAddress(), {"tcp"}, 0, "ds"};
  }
  Result<ObjectMeta> fetch(const ObjectRequest& request, int dest, ClientOptions options = {},
                           FetchStats* stats = nullptr) {
    if (options.token.empty()) options.token = kToken;
    return PeerClient(options).fetch(peer_, request, dest, stats);
  }
  void expectFetches(const ObjectRequest& request, const std::string& content) {
    UniqueFd dest = testing::tempDest();
    FetchStats stats;
    auto meta = fetch(request, dest.get(), {}, &stats);
    ASSERT_TRUE(meta.ok()) << errcName(meta.error().code) << ": " << meta.error().message;
    EXPECT_EQ(meta->size, content.size());
    EXPECT_EQ(meta->mtime_ns, request.mtime_ns);
    EXPECT_EQ(meta->xxh3, XXH3_64bits(content.data(), content.size()));
    EXPECT_EQ(testing::fileSize(dest.get()), content.size());
    EXPECT_TRUE(testing::readFd(dest.get()) == content) << "content differs";
    EXPECT_EQ(stats.transport, "tcp");
    EXPECT_EQ(stats.bytes, content.size());
    EXPECT_GT(stats.elapsed.count(), 0);
  }
  // A raw TCP connection to the server, for hostile clients.
  UniqueFd rawConnect() {
    auto hp = splitHostPort(server_->boundAddress());
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_port = htons(hp->port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin), 0);
    return fd;
  }
  // Reads until the server closes; returns how long that took (or 10 s).
  static std::chrono::milliseconds timeToClose(int fd) {
    auto start = std::chrono::steady_clock::now();
    char buf[4096];
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) return 10s;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
    }
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                 start);
  }

  TempDir dir_;
  FileSource source_{dir_.path()};
  std::unique_ptr<PeerServer> server_;
  Member peer_;
};

TEST_F(PeerWire, FetchesEmptyOneByteAndFiveMiBObjects) {
  std::string empty, one = "x", big = testing::randomBytes(5 << 20, 7);
  auto r0 = source_.add("a/empty", empty);
  auto r1 = source_.add("a/one", one);
  auto r5 = source_.add("b/big.tar", big);
  startServer();
  expectFetches(r0, empty);
  expectFetches(r1, one);
  expectFetches(r5, big);
  ServerStats s = server_->stats();
  EXPECT_EQ(s.served_objects, 3u);
  EXPECT_EQ(s.served_bytes, big.size() + 1);
  EXPECT_EQ(s.refused_auth, 0u);
  EXPECT_EQ(s.protocol_errors, 0u);
}

// The figure the issue asks for: a 256 MiB object over loopback TCP
// (sendfile from the page cache, pwrite + XXH3 on the receiver).
TEST_F(PeerWire, Fetches256MiBOverLoopbackAndReportsTheRate) {
  constexpr size_t kSize = 256u << 20;
  std::string content = testing::randomBytes(kSize, 256);
  uint64_t want = XXH3_64bits(content.data(), content.size());
  auto req = source_.add("model.safetensors", content);
  content = std::string();
  startServer();
  UniqueFd dest = testing::tempDest();
  FetchStats stats;
  auto meta = fetch(req, dest.get(), {}, &stats);
  ASSERT_TRUE(meta.ok()) << meta.error().message;
  EXPECT_EQ(meta->xxh3, want);
  EXPECT_EQ(testing::fileSize(dest.get()), kSize);
  EXPECT_EQ(XXH3_64bits(testing::readFd(dest.get()).data(), kSize), want) << "what landed in dest";
  double seconds = std::chrono::duration<double>(stats.elapsed).count();
  std::printf("peer fetch: 256 MiB over loopback tcp in %.3f s = %.0f MiB/s\n", seconds,
              256 / seconds);
}

TEST_F(PeerWire, OneConnectionCarriesManyFetches) {
  std::string a = testing::randomBytes(100000, 1), b = testing::randomBytes(3, 2);
  auto ra = source_.add("a", a);
  auto rb = source_.add("b", b);
  startServer();
  auto channel = makeTcpConnector()->connect(server_->boundAddress(), deadlineIn(2s));
  ASSERT_TRUE(channel.ok()) << channel.error().message;
  ASSERT_TRUE(authenticateAsClient(**channel, kToken, deadlineIn(2s)).ok());
  for (auto [req, content] : {std::pair{ra, a}, std::pair{rb, b}, std::pair{ra, a}}) {
    UniqueFd dest = testing::tempDest();
    uint64_t received = 0;
    auto meta = fetchOnChannel(**channel, req, dest.get(), 2s, deadlineIn(10s), &received);
    ASSERT_TRUE(meta.ok()) << meta.error().message;
    EXPECT_EQ(received, content.size());
    EXPECT_TRUE(testing::readFd(dest.get()) == content);
  }
  UniqueFd longer = testing::tempDest();
  ASSERT_EQ(::pwrite(longer.get(), std::string(200000, 'z').data(), 200000, 0), 200000);
  ASSERT_TRUE(fetchOnChannel(**channel, rb, longer.get(), 2s, deadlineIn(10s), nullptr).ok());
  EXPECT_EQ(testing::readFd(longer.get()), b) << "a longer dest is cut to the object";
  auto missing = fetchOnChannel(**channel, ObjectRequest{"ds", "none", 1, 1}, -1, 2s,
                                deadlineIn(10s), nullptr);
  EXPECT_EQ(missing.error().code, Errc::kNotFound);
  UniqueFd dest = testing::tempDest();
  EXPECT_TRUE(fetchOnChannel(**channel, rb, dest.get(), 2s, deadlineIn(10s), nullptr).ok())
      << "goes on after ERR";
  EXPECT_EQ(server_->stats().served_objects, 5u);
}

TEST_F(PeerWire, ALyingChecksumIsCorrupt) {
  std::string content = testing::randomBytes(200000, 3);
  auto req = source_.add("liar", content);
  ObjectMeta lie{content.size(), req.mtime_ns, XXH3_64bits(content.data(), content.size()) ^ 1};
  source_.setMeta("liar", lie);
  startServer();
  UniqueFd dest = testing::tempDest();
  auto meta = fetch(req, dest.get());
  ASSERT_FALSE(meta.ok());
  EXPECT_EQ(meta.error().code, Errc::kCorrupt) << meta.error().message;
}

TEST_F(PeerWire, ErrRepliesMapToTheirCodes) {
  auto stale = source_.add("stale", "s");
  auto busy = source_.add("busy", "b");
  auto moved = source_.add("moved", "m");
  source_.setError("stale", makeError(Errc::kStale, "remote changed"));
  source_.setError("busy", makeError(Errc::kBusy, "promoting"));
  startServer();
  UniqueFd dest = testing::tempDest();
  EXPECT_EQ(fetch(ObjectRequest{"ds", "nothing/here", 1, 1}, dest.get()).error().code,
            Errc::kNotFound);
  EXPECT_EQ(fetch(ObjectRequest{"other-ns", "stale", 1, stale.mtime_ns}, dest.get()).error().code,
            Errc::kNotFound);
  EXPECT_EQ(fetch(stale, dest.get()).error().code, Errc::kStale);
  EXPECT_EQ(fetch(busy, dest.get()).error().code, Errc::kBusy);
  // The asker's validator differs from the copy's: the server says stale
  // even when its source forgot to check.
  moved.mtime_ns += 1;
  auto r = fetch(moved, dest.get());
  EXPECT_EQ(r.error().code, Errc::kStale) << r.error().message;
  EXPECT_EQ(server_->stats().not_served, 5u);
  EXPECT_EQ(server_->stats().served_objects, 0u);
  EXPECT_EQ(testing::fileSize(dest.get()), 0u);
}

TEST_F(PeerWire, ARequestTheProtocolCannotCarryIsRefusedBeforeConnecting) {
  startServer();
  UniqueFd dest = testing::tempDest();
  auto r = fetch(ObjectRequest{"ds", "../etc/passwd", 1, 1}, dest.get());
  EXPECT_EQ(r.error().code, Errc::kInvalidArgument);
  EXPECT_EQ(source_.opens(), 0);
}

TEST_F(PeerWire, AShortCopyAbortsTheTransfer) {
  std::string content = testing::randomBytes(300000, 4);
  auto req = source_.add("short", content);
  // The source claims more bytes than its fd yields.
  ObjectMeta claim{content.size() + 4096, req.mtime_ns, 1};
  source_.setMeta("short", claim);
  req.size = claim.size;
  startServer();
  UniqueFd dest = testing::tempDest();
  auto r = fetch(req, dest.get());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kIo) << r.error().message;
  EXPECT_EQ(server_->stats().served_objects, 0u);
  auto good = source_.add("good", "fine");
  expectFetches(good, "fine");
}

TEST_F(PeerWire, AWrongTokenIsRefusedByBothSides) {
  auto req = source_.add("secret", "bytes");
  startServer();
  // The client checks the server's proof first: a server without our token is refused.
  UniqueFd dest = testing::tempDest();
  ClientOptions wrong;
  wrong.token = "not the token";
  auto r = fetch(req, dest.get(), wrong);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, Errc::kPermission) << r.error().message;
  EXPECT_TRUE(testing::eventually([&] { return server_->stats().refused_auth == 1; }));
  // A client that answers the challenge with a wrong proof is refused by the server.
  auto channel = makeTcpConnector()->connect(server_->boundAddress(), deadlineIn(2s));
  ASSERT_TRUE(channel.ok());
  Nonce nonce{};
  ASSERT_TRUE(sendFrame(**channel, FrameType::kHello, std::string(32, 'n'), deadlineIn(2s)).ok());
  auto challenge = recvFrame(**channel, deadlineIn(2s));
  ASSERT_TRUE(challenge.ok());
  EXPECT_EQ(challenge->type, FrameType::kChallenge);
  Proof forged = authProof("not the token", AuthRole::kClient, nonce, nonce);
  ASSERT_TRUE(sendFrame(**channel, FrameType::kAuth, std::string(forged.begin(), forged.end()),
                        deadlineIn(2s))
                  .ok());
  auto reply = recvFrame(**channel, deadlineIn(2s));
  ASSERT_FALSE(reply.ok());
  EXPECT_EQ(reply.error().code, Errc::kIo) << "closed without AUTH_OK: " << reply.error().message;
  EXPECT_TRUE(testing::eventually([&] { return server_->stats().refused_auth == 2; }));
  EXPECT_EQ(source_.opens(), 0);
  expectFetches(req, "bytes");
}

TEST_F(PeerWire, GarbageSilenceAndHugeLengthsAreClosedWithinTheTimeout) {
  auto req = source_.add("ok", "still serving");
  ServerOptions options;
  options.io_timeout = 1500ms;  // far from "at once", even on a loaded host
  startServer(options);
  {
    UniqueFd fd = rawConnect();
    ASSERT_GT(::send(fd.get(), "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL), 0);
    EXPECT_LT(timeToClose(fd.get()), 1000ms) << "garbage: closed at once";
  }
  {
    UniqueFd fd = rawConnect();
    auto waited = timeToClose(fd.get());
    EXPECT_GE(waited, 1400ms) << "silence: closed at the io timeout";
    EXPECT_LT(waited, 4s);
  }
  {
    UniqueFd fd = rawConnect();
    std::string huge = encodeFrame(FrameType::kHello, "");
    huge[8] = huge[9] = huge[10] = huge[11] = '\xff';
    ASSERT_GT(::send(fd.get(), huge.data(), huge.size(), MSG_NOSIGNAL), 0);
    EXPECT_LT(timeToClose(fd.get()), 1000ms) << "a 4 GiB frame length: closed at once";
  }
  {
    UniqueFd fd = rawConnect();
    std::string partial = encodeFrame(FrameType::kHello, std::string(32, 'n')).substr(0, 20);
    ASSERT_GT(::send(fd.get(), partial.data(), partial.size(), MSG_NOSIGNAL), 0);
    EXPECT_LT(timeToClose(fd.get()), 4s) << "half a frame: closed at the io timeout";
  }
  EXPECT_TRUE(testing::eventually([&] { return server_->stats().refused_auth == 4; }));
  EXPECT_EQ(server_->stats().protocol_errors, 2u);
  expectFetches(req, "still serving");
}

TEST_F(PeerWire, MalformedFramesAfterAuthenticationAreCountedAndClosed) {
  auto req = source_.add("ok", "data");
  startServer();
  auto channel = makeTcpConnector()->connect(server_->boundAddress(), deadlineIn(2s));
  ASSERT_TRUE(authenticateAsClient(**channel, kToken, deadlineIn(2s)).ok());
  // A FETCH whose names are bad is answered ERR protocol; the connection goes on.
  std::string bad = encodeFetch(ObjectRequest{"ds", "ok", 4, req.mtime_ns});
  bad[19] = 9;  // path_len 9 over a 2-byte name
  ASSERT_TRUE(sendFrame(**channel, FrameType::kFetch, bad, deadlineIn(2s)).ok());
  auto reply = recvFrame(**channel, deadlineIn(2s));
  ASSERT_TRUE(reply.ok());
  ASSERT_EQ(reply->type, FrameType::kErr);
  EXPECT_EQ(decodeErr(reply->payload).code, Errc::kProtocol);
  // A frame of a type the server never takes ends the connection.
  ASSERT_TRUE(sendFrame(**channel, FrameType::kOk, encodeOk(ObjectMeta{}), deadlineIn(2s)).ok());
  EXPECT_FALSE(recvFrame(**channel, deadlineIn(2s)).ok());
  EXPECT_TRUE(testing::eventually([&] { return server_->stats().protocol_errors == 2; }));
  expectFetches(req, "data");
}

TEST_F(PeerWire, BeyondMaxConnectionsAClientIsClosedAtOnce) {
  auto req = source_.add("ok", "data");
  ServerOptions options;
  options.max_connections = 1;
  options.io_timeout = 2s;
  startServer(options);
  UniqueFd idle = rawConnect();  // holds the one connection slot, silent; accepted first
  UniqueFd second = rawConnect();
  EXPECT_LT(timeToClose(second.get()), 1s);
  EXPECT_EQ(server_->stats().refused_connections, 1u);
  EXPECT_LT(timeToClose(idle.get()), 4s);  // the idle one ends at io_timeout
  ASSERT_TRUE(testing::eventually([&] { return server_->stats().refused_auth == 1; }));
  expectFetches(req, "data");
}

TEST_F(PeerWire, AStalledSourceEndsTheFetchAtTheClientsIoTimeout) {
  auto req = source_.add("slow", "late");
  std::mutex mu;
  std::condition_variable cv;
  bool release = false;
  source_.onOpen([&] {
    std::unique_lock lock(mu);
    cv.wait_for(lock, 5s, [&] { return release; });
  });
  startServer();
  UniqueFd dest = testing::tempDest();
  ClientOptions options;
  options.io_timeout = 300ms;
  auto start = std::chrono::steady_clock::now();
  auto r = fetch(req, dest.get(), options);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(r.error().code, Errc::kIo) << r.error().message;
  EXPECT_LT(took, 2s);
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  server_->stop();  // joins the connection that waited on the source
}

TEST_F(PeerWire, StopClosesLiveConnectionsPromptly) {
  auto req = source_.add("ok", "data");
  startServer();  // io_timeout 10 s: stop() must not wait for it
  auto channel = makeTcpConnector()->connect(server_->boundAddress(), deadlineIn(2s));
  ASSERT_TRUE(channel.ok());
  ASSERT_TRUE(authenticateAsClient(**channel, kToken, deadlineIn(2s)).ok());
  UniqueFd silent = rawConnect();  // and one still before authentication
  auto start = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  UniqueFd dest = testing::tempDest();
  auto r = fetchOnChannel(**channel, req, dest.get(), 2s, deadlineIn(5s), nullptr);
  EXPECT_EQ(r.error().code, Errc::kIo) << r.error().message;
  EXPECT_LT(timeToClose(silent.get()), 1s);
}

TEST_F(PeerWire, ConnectingToNobodyFailsWithinTheConnectTimeout) {
  startServer();
  std::string address = server_->boundAddress();
  server_->stop();
  peer_.address = address;
  UniqueFd dest = testing::tempDest();
  auto r = fetch(ObjectRequest{"ds", "x", 1, 1}, dest.get());
  EXPECT_EQ(r.error().code, Errc::kIo) << r.error().message;
  peer_.address = "no-such-host.invalid:1";
  EXPECT_FALSE(fetch(ObjectRequest{"ds", "x", 1, 1}, dest.get()).ok());
  peer_.address = "127.0.0.1";
  EXPECT_EQ(fetch(ObjectRequest{"ds", "x", 1, 1}, dest.get()).error().code, Errc::kInvalidArgument);
}

// A peer played by the test: authenticates properly, then misbehaves.
class DyingPeer {
 public:
  enum class Then { kCloseMidBody, kStallMidBody, kGarbageReply, kOtherValidator };
  explicit DyingPeer(Then then) : then_(then) {
    auto l = listenTcp("127.0.0.1:0");
    EXPECT_TRUE(l.ok());
    listener_ = std::move(*l);
    thread_ = std::thread([this] { run(); });
  }
  ~DyingPeer() {
    listener_->close();
    done_ = true;
    thread_.join();
  }
  std::string address() const { return listener_->boundAddress(); }
  static constexpr uint64_t kSize = 1 << 20;

 private:
  void run() {
    auto channel = listener_->accept();
    if (!channel.ok()) return;
    Channel& ch = **channel;
    if (!authenticateAsServer(ch, kToken, deadlineIn(2s)).ok()) return;
    auto fetch = recvFrame(ch, deadlineIn(2s));
    if (!fetch.ok()) return;
    if (then_ == Then::kOtherValidator) {
      (void)sendFrame(ch, FrameType::kOk, encodeOk(ObjectMeta{kSize, 2, 42}), deadlineIn(2s));
    } else if (then_ == Then::kGarbageReply) {
      (void)ch.sendAll(
          "\x48\x53\x50\x57\x00\x01\x06\x00\x00\x00\x00\x03"
          "abc",
          15, deadlineIn(2s));
    } else {
      (void)sendFrame(ch, FrameType::kOk, encodeOk(ObjectMeta{kSize, 1, 42}), deadlineIn(2s));
      std::string part(100000, 'p');
      (void)ch.sendAll(part.data(), part.size(), deadlineIn(2s));
    }
    if (then_ == Then::kStallMidBody) {
      while (!done_) std::this_thread::sleep_for(10ms);
    }
    ch.close();
  }
  Then then_;
  std::unique_ptr<Listener> listener_;
  std::thread thread_;
  std::atomic<bool> done_{false};
};

TEST_F(PeerWire, APeerDyingMidTransferIsAnIoErrorNotAHang) {
  for (auto then : {DyingPeer::Then::kCloseMidBody, DyingPeer::Then::kStallMidBody}) {
    DyingPeer dying(then);
    peer_ = Member{"dying", dying.address(), {"tcp"}, 0, "ds"};
    UniqueFd dest = testing::tempDest();
    ClientOptions options;
    options.io_timeout = 400ms;
    auto start = std::chrono::steady_clock::now();
    FetchStats stats;
    auto r = fetch(ObjectRequest{"ds", "x", DyingPeer::kSize, 1}, dest.get(), options, &stats);
    auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, Errc::kIo) << r.error().message;
    EXPECT_LT(took, 3s);
    EXPECT_EQ(stats.bytes, 100000u);
  }
}

TEST_F(PeerWire, AMalformedReplyIsAProtocolError) {
  DyingPeer dying(DyingPeer::Then::kGarbageReply);
  peer_ = Member{"dying", dying.address(), {"tcp"}, 0, "ds"};
  UniqueFd dest = testing::tempDest();
  auto r = fetch(ObjectRequest{"ds", "x", DyingPeer::kSize, 1}, dest.get());
  EXPECT_EQ(r.error().code, Errc::kProtocol) << r.error().message;
}

TEST_F(PeerWire, AnOkForAnotherVersionIsRefusedBeforeItsBody) {
  DyingPeer dying(DyingPeer::Then::kOtherValidator);
  peer_ = Member{"dying", dying.address(), {"tcp"}, 0, "ds"};
  UniqueFd dest = testing::tempDest();
  auto r = fetch(ObjectRequest{"ds", "x", DyingPeer::kSize, 1}, dest.get());
  EXPECT_EQ(r.error().code, Errc::kCorrupt) << r.error().message;
  EXPECT_EQ(testing::fileSize(dest.get()), 0u);
}

TEST_F(PeerWire, AWholeFetchIsBoundedByFetchTimeout) {
  DyingPeer dying(DyingPeer::Then::kStallMidBody);
  peer_ = Member{"dying", dying.address(), {"tcp"}, 0, "ds"};
  UniqueFd dest = testing::tempDest();
  ClientOptions options;
  options.fetch_timeout = 300ms;  // io_timeout stays 10 s
  auto start = std::chrono::steady_clock::now();
  auto r = fetch(ObjectRequest{"ds", "x", DyingPeer::kSize, 1}, dest.get(), options);
  EXPECT_EQ(r.error().code, Errc::kIo);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
}

}  // namespace
}  // namespace hotshard::peer
