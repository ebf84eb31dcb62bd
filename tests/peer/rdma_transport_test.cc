// The RDMA transport's set-up, registration, chunking, credits, completion
// handling and errors, driven through an in-process fake fabric
// (tests/peer/rdma_fake.h); and that rdma-core itself reports a host without
// a device cleanly.
#include "peer/rdma_transport.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <future>
#include <thread>

#include "peer/peer_client.h"
#include "peer/peer_server.h"
#include "tests/peer/peer_test_util.h"
#include "tests/peer/rdma_fake.h"

namespace hotshard::peer {
namespace {

using namespace std::chrono_literals;
using testing::FakeVerbs;

// A connected pair of RDMA channels over the fake fabric.
struct Pair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Channel> server, client;
};

Pair connectPair(FakeVerbs& fabric) {
  Pair p;
  auto listener = listenRdma(fabric, "10.0.0.1:7070", RdmaOptions{.setup_timeout = 2s});
  EXPECT_TRUE(listener.ok()) << listener.error().message;
  p.listener = std::move(*listener);
  auto accepted = std::async(std::launch::async, [&] { return p.listener->accept(); });
  auto client = makeRdmaConnector(fabric, RdmaOptions{.setup_timeout = 2s})
                    ->connect("10.0.0.1:7070", deadlineIn(2s));
  EXPECT_TRUE(client.ok()) << client.error().message;
  auto server = accepted.get();
  EXPECT_TRUE(server.ok()) << server.error().message;
  if (client.ok()) p.client = std::move(*client);
  if (server.ok()) p.server = std::move(*server);
  return p;
}

TEST(RdmaTransport, RdmaCoreReportsAHostWithoutDevicesAsUnsupported) {
  namespace fs = std::filesystem;
  bool has_device = fs::exists("/sys/class/infiniband") && !fs::is_empty("/sys/class/infiniband");
  Status probe = systemVerbs().probe();
  if (has_device) {
    EXPECT_TRUE(probe.ok()) << probe.error().message;
  } else {
    ASSERT_FALSE(probe.ok());
    EXPECT_EQ(probe.error().code, Errc::kUnsupported) << probe.error().message;
    auto listener = listenRdma(systemVerbs(), "127.0.0.1:0", RdmaOptions{});
    EXPECT_EQ(listener.error().code, Errc::kUnsupported);
    auto channel =
        makeRdmaConnector(systemVerbs(), RdmaOptions{})->connect("127.0.0.1:1", deadlineIn(1s));
    EXPECT_EQ(channel.error().code, Errc::kUnsupported);
  }
}

TEST(RdmaTransport, SetUpRegistersBuffersAndPostsReceivesBeforeConnecting) {
  FakeVerbs fabric;
  {
    Pair p = connectPair(fabric);
    ASSERT_TRUE(p.client && p.server);
    FakeVerbs::Counters c = fabric.counters();
    EXPECT_EQ(c.connections, 1u);
    EXPECT_EQ(c.registrations, 4u);  // a send and a receive region per side
    EXPECT_EQ(c.live_regions, 4u);
    EXPECT_EQ(c.recvs_posted, 2 * kRdmaDepth);
    EXPECT_EQ(std::string(p.client->transport()), "rdma");
    // A small exchange both ways.
    ASSERT_TRUE(p.client->sendAll("ping", 4, deadlineIn(1s)).ok());
    char buf[4];
    ASSERT_TRUE(recvAll(*p.server, buf, 4, deadlineIn(1s)).ok());
    EXPECT_EQ(std::string(buf, 4), "ping");
    ASSERT_TRUE(p.server->sendAll("pong", 4, deadlineIn(1s)).ok());
    ASSERT_TRUE(recvAll(*p.client, buf, 4, deadlineIn(1s)).ok());
    EXPECT_EQ(std::string(buf, 4), "pong");
  }
  FakeVerbs::Counters c = fabric.counters();
  EXPECT_EQ(c.live_regions, 0u) << "every region deregistered";
  EXPECT_EQ(c.deregistrations, 4u);
  EXPECT_EQ(c.protection_errors, 0u);
}

TEST(RdmaTransport, SetUpErrorsAreReported) {
  FakeVerbs fabric;
  auto nobody = makeRdmaConnector(fabric, RdmaOptions{})->connect("10.9.9.9:1", deadlineIn(1s));
  EXPECT_EQ(nobody.error().code, Errc::kIo);
  fabric.fail_registration = true;
  auto listener = listenRdma(fabric, "10.0.0.1:7070", RdmaOptions{.setup_timeout = 1s});
  ASSERT_TRUE(listener.ok());
  auto client = makeRdmaConnector(fabric, RdmaOptions{})->connect("10.0.0.1:7070", deadlineIn(1s));
  ASSERT_FALSE(client.ok());
  EXPECT_NE(client.error().message.find("ibv_reg_mr"), std::string::npos) << client.error().message;
  fabric.fail_registration = false;
  // Nobody accepts: the connect ends at its deadline.
  auto start = std::chrono::steady_clock::now();
  auto unanswered =
      makeRdmaConnector(fabric, RdmaOptions{})->connect("10.0.0.1:7070", deadlineIn(200ms));
  EXPECT_EQ(unanswered.error().code, Errc::kIo);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  fabric.has_device = false;
  EXPECT_EQ(listenRdma(fabric, "10.0.0.2:7070", RdmaOptions{}).error().code, Errc::kUnsupported);
}

TEST(RdmaTransport, AMultiChunkTransferRunsOnCredits) {
  FakeVerbs fabric;
  Pair p = connectPair(fabric);
  ASSERT_TRUE(p.client && p.server);
  std::string data =
      testing::randomBytes(5 * kRdmaChunkBytes * kRdmaDepth + 123, 11);  // 80 windows' worth / 16
  testing::TempDir dir;
  std::string path = dir.path() + "/obj";
  ::hotshard::testing::writeFile(path, data);
  UniqueFd fd(::open(path.c_str(), O_RDONLY));
  // The server sends the bytes twice (memcpy path, then sendFile), the client
  // reads in odd-sized pieces.
  auto sender = std::async(std::launch::async, [&] {
    Status a = p.server->sendAll(data.data(), data.size(), deadlineIn(10s));
    if (!a.ok()) return a;
    return p.server->sendFile(fd.get(), 0, data.size(), deadlineIn(10s));
  });
  std::string got(2 * data.size(), '\0');
  size_t have = 0;
  while (have < got.size()) {
    auto n = p.client->recvSome(got.data() + have, std::min<size_t>(got.size() - have, 40000),
                                deadlineIn(5s));
    ASSERT_TRUE(n.ok()) << n.error().message;
    have += *n;
  }
  Status sent = sender.get();
  ASSERT_TRUE(sent.ok()) << sent.error().message;
  EXPECT_TRUE(got.substr(0, data.size()) == data);
  EXPECT_TRUE(got.substr(data.size()) == data);
  FakeVerbs::Counters c = fabric.counters();
  uint64_t chunks = 2 * ((data.size() + kRdmaChunkBytes - 1) / kRdmaChunkBytes);
  EXPECT_GE(c.sends, chunks);
  EXPECT_EQ(c.rnr_errors, 0u) << "no SEND ever found no receive posted";
  EXPECT_GT(c.credit_only, chunks / kRdmaDepth) << "the receiver returned credits";
  EXPECT_EQ(c.delivered_bytes - c.credit_only * kRdmaHeaderBytes,
            2 * data.size() + chunks * kRdmaHeaderBytes);
  // A short file is an error, never a short success.
  EXPECT_EQ(p.server->sendFile(fd.get(), 0, data.size() + 1, deadlineIn(1s)).error().code,
            Errc::kIo);
}

TEST(RdmaTransport, ACompletionErrorEndsTheChannel) {
  FakeVerbs fabric;
  Pair p = connectPair(fabric);
  ASSERT_TRUE(p.client && p.server);
  fabric.fail_send_number = fabric.counters().sends + 3;
  std::string data = testing::randomBytes(10 * kRdmaChunkBytes, 12);
  auto sender = std::async(std::launch::async, [&] {
    return p.server->sendAll(data.data(), data.size(), deadlineIn(2s));
  });
  std::string got(data.size(), '\0');
  Status recv = recvAll(*p.client, got.data(), got.size(), deadlineIn(500ms));
  Status sent = sender.get();
  // The sender learns of the failed SEND from its completion: at the send
  // that posted it, or at its next call (hardware completes asynchronously).
  if (sent.ok()) {
    char c;
    auto next = p.server->recvSome(&c, 1, deadlineIn(500ms));
    ASSERT_FALSE(next.ok());
    sent = next.takeError();
  }
  EXPECT_EQ(sent.error().code, Errc::kIo);
  EXPECT_NE(sent.error().message.find("retry counter exceeded"), std::string::npos)
      << sent.error().message;
  EXPECT_FALSE(recv.ok());
  p.server.reset();
  char c;
  auto after = p.client->recvSome(&c, 1, deadlineIn(1s));
  ASSERT_FALSE(after.ok());
  EXPECT_EQ(after.error().code, Errc::kIo);
}

TEST(RdmaTransport, AStalledPeerEndsSendAndReceiveAtTheirDeadlines) {
  FakeVerbs fabric;
  Pair p = connectPair(fabric);
  ASSERT_TRUE(p.client && p.server);
  fabric.stall_from_send_number = fabric.counters().sends + 1;
  std::string data = testing::randomBytes(4 * kRdmaDepth * kRdmaChunkBytes, 13);
  auto start = std::chrono::steady_clock::now();
  Status sent = p.server->sendAll(data.data(), data.size(), deadlineIn(300ms));
  EXPECT_EQ(sent.error().code, Errc::kIo) << "no credits come back";
  EXPECT_NE(sent.error().message.find("timed out"), std::string::npos);
  char buf[16];
  auto got = p.client->recvSome(buf, sizeof buf, deadlineIn(300ms));
  EXPECT_EQ(got.error().code, Errc::kIo);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  // close() wakes a receive blocked without a deadline in sight.
  auto blocked = std::async(std::launch::async,
                            [&] { return p.client->recvSome(buf, sizeof buf, deadlineIn(30s)); });
  std::this_thread::sleep_for(50ms);
  p.client->close();
  ASSERT_EQ(blocked.wait_for(2s), std::future_status::ready);
  EXPECT_FALSE(blocked.get().ok());
}

TEST(RdmaTransport, PeerServerAndClientUseRdmaWhenBothOfferIt) {
  FakeVerbs fabric;
  testing::TempDir dir;
  testing::FileSource source(dir.path());
  std::string content = testing::randomBytes((5 << 20) + 7, 14);
  auto req = source.add("big", content);
  PeerServer server(ServerOptions{.listen = "127.0.0.1:0",
                                  .token = testing::kToken,
                                  .transports = {"rdma", "tcp"},
                                  .rdma_verbs = &fabric},
                    source);
  ASSERT_TRUE(server.start().ok());
  EXPECT_EQ(server.transports(), (std::vector<std::string>{"rdma", "tcp"}));
  Member peer{"b", server.boundAddress(), {"rdma", "tcp"}, 0, "ds"};
  PeerClient client(ClientOptions{
      .token = testing::kToken, .transports = {"rdma", "tcp"}, .rdma_verbs = &fabric});
  EXPECT_EQ(client.transportFor(peer), "rdma");
  UniqueFd dest = testing::tempDest();
  FetchStats stats;
  auto meta = client.fetch(peer, req, dest.get(), &stats);
  ASSERT_TRUE(meta.ok()) << meta.error().message;
  EXPECT_EQ(stats.transport, "rdma");
  EXPECT_EQ(stats.bytes, content.size());
  EXPECT_TRUE(testing::readFd(dest.get()) == content);
  EXPECT_EQ(fabric.counters().rnr_errors, 0u);
  EXPECT_GE(fabric.counters().delivered_bytes, content.size());
  // A peer that offers only TCP, or a host without a device: TCP.
  Member tcp_only{"c", server.boundAddress(), {"tcp"}, 0, "ds"};
  EXPECT_EQ(client.transportFor(tcp_only), "tcp");
  fabric.has_device = false;
  EXPECT_EQ(client.transportFor(peer), "tcp");
  UniqueFd dest2 = testing::tempDest();
  ASSERT_TRUE(client.fetch(peer, req, dest2.get(), &stats).ok());
  EXPECT_EQ(stats.transport, "tcp");
  EXPECT_EQ(server.stats().served_objects, 2u);
}

TEST(RdmaTransport, AClientFallsBackToTcpWhenThePeersRdmaListenerIsAbsent) {
  FakeVerbs fabric;
  testing::TempDir dir;
  testing::FileSource source(dir.path());
  auto req = source.add("x", "over tcp after all");
  PeerServer server(ServerOptions{.listen = "127.0.0.1:0", .token = testing::kToken},
                    source);  // tcp only
  ASSERT_TRUE(server.start().ok());
  Member peer{"b", server.boundAddress(), {"rdma", "tcp"}, 0, "ds"};  // but says rdma
  PeerClient client(ClientOptions{
      .token = testing::kToken, .transports = {"rdma", "tcp"}, .rdma_verbs = &fabric});
  UniqueFd dest = testing::tempDest();
  FetchStats stats;
  auto meta = client.fetch(peer, req, dest.get(), &stats);
  ASSERT_TRUE(meta.ok()) << meta.error().message;
  EXPECT_EQ(stats.transport, "tcp");
  EXPECT_EQ(testing::readFd(dest.get()), "over tcp after all");
}

}  // namespace
}  // namespace hotshard::peer
