#include "daemon/control.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard {
namespace {

using testing::TempDir;

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = tmp_ / "ctl.sock";
    std::map<std::string, ControlServer::Handler> handlers;
    handlers["echo"] = [](const json& req, const ControlServer::Progress& progress) -> Result<json> {
      progress(json{{"step", 1}});
      return json{{"echo", req.value("text", "")}};
    };
    handlers["fail"] = [](const json&, const ControlServer::Progress&) -> Result<json> {
      return makeError(Errc::kNotFound, "no such shard");
    };
    handlers["throw"] = [](const json&, const ControlServer::Progress&) -> Result<json> {
      throw std::runtime_error("boom");
    };
    auto server = ControlServer::start(path_, std::move(handlers));
    ASSERT_TRUE(server.ok()) << server.error().message;
    server_ = std::move(*server);
  }

  int rawConnect() {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strcpy(addr.sun_path, path_.c_str());
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    return fd;
  }

  TempDir tmp_;
  std::string path_;
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlTest, RoundTripWithProgress) {
  auto client = ControlClient::connect(path_);
  ASSERT_TRUE(client.ok());
  int progress = 0;
  auto reply = client->call(json{{"cmd", "echo"}, {"text", "hi"}}, [&](const json& p) {
    EXPECT_EQ(p["step"], 1);
    progress++;
  });
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ((*reply)["echo"], "hi");
  EXPECT_EQ(progress, 1);
  // Several requests on one connection.
  EXPECT_TRUE(client->call(json{{"cmd", "echo"}}).ok());
}

// Names are bytes: a string that is not UTF-8 (0xff, here with a newline and a
// NUL-free mix) reaches the handler and comes back unchanged, in both
// directions and inside progress frames.
TEST_F(ControlTest, StringsThatAreNotUtf8TravelAsTheirBytes) {
  const std::string name = std::string("shard-\xff\n") + "\xc3(" + " caf\xc3\xa9.tar";
  auto client = ControlClient::connect(path_);
  ASSERT_TRUE(client.ok());
  auto reply = client->call(json{{"cmd", "echo"}, {"text", name}});
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_EQ((*reply)["echo"].get<std::string>(), name);
}

TEST(ControlWire, OnlyStringsThatAreNotUtf8AreEncodedAndOnlyTheirFormIsDecoded) {
  const std::string bad = "a\xff\nb";
  json wire = toWire(json{{"paths", {"caf\xc3\xa9", bad}}, {"n", 3}});
  EXPECT_EQ(wire["paths"][0], "caf\xc3\xa9");                   // valid UTF-8: a plain JSON string
  EXPECT_EQ(wire["paths"][1], (json{{"base64", "Yf8KYg=="}}));  // RFC 4648 §4
  EXPECT_EQ(wire["n"], 3);
  EXPECT_NO_THROW((void)wire.dump());  // what writeFrame and --json print
  json back = fromWire(wire);
  EXPECT_EQ(back["paths"][1].get<std::string>(), bad);
  EXPECT_EQ(back["paths"][0], "caf\xc3\xa9");
  // Objects that merely have a "base64" key among others, or a value that is not
  // base64, stay as they are.
  json other = {{"base64", "YQ=="}, {"size", 1}};
  EXPECT_EQ(fromWire(json{{"x", other}})["x"], other);
  EXPECT_EQ(fromWire(json{{"base64", "%%%"}}), (json{{"base64", "%%%"}}));
  // Every byte but NUL, and lengths of each padding, round-trip.
  for (size_t len : {1u, 2u, 3u, 255u}) {
    std::string all;
    for (size_t i = 0; i < len; i++) all += static_cast<char>(1 + (i * 37 + 0x80) % 255);
    EXPECT_EQ(fromWire(toWire(json(all))).get<std::string>(), all) << len;
  }
}

TEST_F(ControlTest, SocketIsPrivate) {
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ControlTest, ErrorsAndBadRequestsGetErrorReplies) {
  auto client = ControlClient::connect(path_);
  auto r = client->call(json{{"cmd", "fail"}});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message, "no such shard");
  r = client->call(json{{"cmd", "nope"}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("unknown command 'nope' (known: echo, fail, throw)"),
            std::string::npos);
  r = client->call(json{{"nocmd", 1}});
  ASSERT_FALSE(r.ok());
  r = client->call(json::array({1, 2}));
  ASSERT_FALSE(r.ok());
  r = client->call(json{{"cmd", "throw"}});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("boom"), std::string::npos);
  EXPECT_TRUE(client->call(json{{"cmd", "echo"}}).ok());  // the connection survived
}

TEST_F(ControlTest, GarbageAndOversizedFramesNeverHarmTheServer) {
  {  // not JSON
    int fd = rawConnect();
    const char frame[] = "\x00\x00\x00\x05hello";
    ASSERT_EQ(::write(fd, frame, 9), 9);
    auto reply = readFrame(fd, 2000);
    ASSERT_TRUE(reply.ok());
    EXPECT_FALSE((*reply)["ok"].get<bool>());
    EXPECT_NE((*reply)["error"].get<std::string>().find("not valid JSON"), std::string::npos);
    ::close(fd);
  }
  {  // a length far over the limit
    int fd = rawConnect();
    const char frame[] = "\x7f\xff\xff\xff";
    ASSERT_EQ(::write(fd, frame, 4), 4);
    auto reply = readFrame(fd, 2000);
    ASSERT_TRUE(reply.ok());
    EXPECT_NE((*reply)["error"].get<std::string>().find("exceeds the limit"), std::string::npos);
    ::close(fd);
  }
  {  // a truncated frame, then hang up
    int fd = rawConnect();
    ASSERT_EQ(::write(fd, "\x00\x00", 2), 2);
    ::close(fd);
  }
  {  // random bytes
    int fd = rawConnect();
    std::string junk(4096, '\0');
    for (size_t i = 0; i < junk.size(); i++) junk[i] = static_cast<char>(i * 131 + 7);
    (void)!::write(fd, junk.data(), junk.size());
    ::close(fd);
  }
  auto client = ControlClient::connect(path_);
  ASSERT_TRUE(client.ok());
  EXPECT_TRUE(client->call(json{{"cmd", "echo"}}).ok());
}

// A connection that asks for a reply far larger than the socket buffer and then
// reads nothing: the server's send() has nowhere to put it.
int connectAndNeverRead(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strcpy(addr.sun_path, path.c_str());
  EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  EXPECT_TRUE(writeFrame(fd, json{{"cmd", "echo"}, {"text", std::string(900000, 'x')}}).ok());
  return fd;
}

double secondsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// Clients that send but never read used to pin their server threads in send()
// for as long as they lived; with every slot taken, nobody else was served.
TEST_F(ControlTest, ClientsThatNeverReadAreDroppedSoOthersAreServed) {
  std::vector<int> stuck;
  for (int i = 0; i < 32; i++) stuck.push_back(connectAndNeverRead(path_));
  auto t0 = std::chrono::steady_clock::now();
  auto busy = ControlClient::connect(path_)->call(json{{"cmd", "echo"}});
  ASSERT_FALSE(busy.ok());  // every slot is pinned for now
  EXPECT_NE(busy.error().message.find("busy"), std::string::npos) << busy.error().message;
  bool served = false;
  while (!served && secondsSince(t0) < 20) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto client = ControlClient::connect(path_);
    served = client.ok() && client->call(json{{"cmd", "echo"}}).ok();
  }
  EXPECT_TRUE(served);
  EXPECT_LT(secondsSince(t0), 8) << "the stuck clients were dropped too late";
  for (int fd : stuck) ::close(fd);
}

TEST_F(ControlTest, StopIsNotHeldByAClientThatNeverReads) {
  int fd = connectAndNeverRead(path_);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the reply is under way
  auto t0 = std::chrono::steady_clock::now();
  server_->stop();
  EXPECT_LT(secondsSince(t0), 3);
  server_.reset();
  ::close(fd);
}

TEST_F(ControlTest, PeersThatAreNeitherRootNorTheDaemonUserAreRefused) {
  HS_REQUIRE_ROOT();
  ::chmod(path_.c_str(), 0666);  // let the other user reach the credential check itself
  std::string path = path_;
  int rc = testing::runAs(54321, 54321, [&] {
    auto client = ControlClient::connect(path);
    if (!client.ok()) return 10;
    auto r = client->call(json{{"cmd", "echo"}});
    if (r.ok()) return 11;
    return r.error().message == "permission denied" ? 0 : 12;
  });
  EXPECT_EQ(rc, 0);
}

TEST_F(ControlTest, ASecondServerOnALiveSocketIsRefused) {
  auto second = ControlServer::start(path_, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, Errc::kBusy);
}

}  // namespace
}  // namespace hotshard
