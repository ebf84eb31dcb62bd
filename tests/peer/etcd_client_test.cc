#include "peer/etcd_client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "tests/peer/etcd_fixture.h"

namespace hotshard::peer {
namespace {

using std::chrono::milliseconds;
using std::chrono::steady_clock;

TEST(EtcdBase64, RoundTripsEveryLengthAndByte) {
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  for (size_t n = 0; n <= all.size(); n += (n < 8 ? 1 : 37)) {
    const std::string in = all.substr(all.size() - n);
    const std::string enc = base64Encode(in);
    EXPECT_EQ(enc.size(), 4 * ((n + 2) / 3)) << n;
    auto dec = base64Decode(enc);
    ASSERT_TRUE(dec.ok()) << dec.error().message;
    EXPECT_EQ(*dec, in) << n;
  }
  EXPECT_EQ(base64Encode("/a/b"), "L2EvYg==");  // RFC 4648 alphabet, padded (as the gateway sends)
  EXPECT_FALSE(base64Decode("abc").ok());
  EXPECT_FALSE(base64Decode("ab!d").ok());
}

TEST(EtcdBase64, PrefixRangeEndIsTheNextPrefix) {
  EXPECT_EQ(prefixRangeEnd("/hotshard/c/members/"), "/hotshard/c/members0");
  EXPECT_EQ(prefixRangeEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(prefixRangeEnd(std::string("\xff\xff", 2)), std::string(1, '\0'));
}

class EtcdClientTest : public hotshard::testing::EtcdTest {
 protected:
  EtcdClient client(milliseconds timeout = milliseconds(2000)) {
    return EtcdClient(EtcdClientOptions{.endpoints = {etcd_.endpoint()}, .call_timeout = timeout});
  }
};

TEST_F(EtcdClientTest, PutsRangesAndDeletesUnderAPrefix) {
  EtcdClient c = client();
  ASSERT_TRUE(c.put("/t/members/b", std::string("v\0b", 3)).ok());
  ASSERT_TRUE(c.put("/t/members/a", "va").ok());
  ASSERT_TRUE(c.put("/t/membersX", "outside").ok());
  ASSERT_TRUE(c.put("/u/members/c", "outside").ok());
  auto kvs = c.rangePrefix("/t/members/");
  ASSERT_TRUE(kvs.ok()) << kvs.error().message;
  ASSERT_EQ(kvs->size(), 2u);
  EXPECT_EQ((*kvs)[0].key, "/t/members/a");
  EXPECT_EQ((*kvs)[0].value, "va");
  EXPECT_EQ((*kvs)[1].key, "/t/members/b");
  EXPECT_EQ((*kvs)[1].value, std::string("v\0b", 3));
  EXPECT_LT((*kvs)[1].mod_revision, (*kvs)[0].mod_revision);  // b was put before a
  auto deleted = c.deleteKey("/t/members/a");
  ASSERT_TRUE(deleted.ok()) << deleted.error().message;
  EXPECT_EQ(*deleted, 1);
  EXPECT_EQ(*c.deleteKey("/t/members/a"), 0);
  kvs = c.rangePrefix("/t/members/");
  ASSERT_TRUE(kvs.ok());
  ASSERT_EQ(kvs->size(), 1u);
  EXPECT_EQ((*kvs)[0].key, "/t/members/b");
}

TEST_F(EtcdClientTest, LeasedKeysGoWithTheirLease) {
  EtcdClient c = client();
  auto lease = c.leaseGrant(std::chrono::seconds(5));
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ASSERT_TRUE(c.put("/t/members/self", "x", *lease).ok());
  auto kvs = c.rangePrefix("/t/members/");
  ASSERT_TRUE(kvs.ok());
  ASSERT_EQ(kvs->size(), 1u);
  EXPECT_EQ((*kvs)[0].lease, *lease);
  auto ttl = c.leaseKeepAlive(*lease);
  ASSERT_TRUE(ttl.ok()) << ttl.error().message;
  EXPECT_GT(*ttl, 0);
  EXPECT_LE(*ttl, 5);
  ASSERT_TRUE(c.leaseRevoke(*lease).ok());
  EXPECT_TRUE(c.rangePrefix("/t/members/")->empty());
  auto again = c.leaseKeepAlive(*lease);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code, Errc::kNotFound) << again.error().message;
  Status put = c.put("/t/members/self", "x", *lease);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code, Errc::kNotFound) << put.error().message;
  Status revoke = c.leaseRevoke(*lease);
  ASSERT_FALSE(revoke.ok());
  EXPECT_EQ(revoke.error().code, Errc::kNotFound) << revoke.error().message;
  EXPECT_NE(revoke.error().message.find(etcd_.endpoint()), std::string::npos) << revoke.error().message;
}

TEST_F(EtcdClientTest, AnUnreachableEndpointIsSkippedAndNamed) {
  const int dead_port = hotshard::testing::freePort();  // nothing listens there: connection refused
  ASSERT_NE(dead_port, 0);
  const std::string dead = "http://127.0.0.1:" + std::to_string(dead_port);
  EtcdClient both(EtcdClientOptions{.endpoints = {dead, etcd_.endpoint()}, .call_timeout = milliseconds(2000)});
  ASSERT_TRUE(both.put("/t/k", "v").ok());
  EtcdClient only_dead(EtcdClientOptions{.endpoints = {dead}, .call_timeout = milliseconds(2000)});
  Status s = only_dead.put("/t/k", "v");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kIo);
  EXPECT_NE(s.error().message.find(dead), std::string::npos) << s.error().message;
  EXPECT_NE(s.error().message.find("etcd put"), std::string::npos) << s.error().message;
}

// An endpoint that accepts connections (the kernel completes the handshake on a
// listening socket) and never answers: each call is still bounded, and the time
// it takes leaves room for the next endpoint.
TEST_F(EtcdClientTest, ASilentEndpointCostsAShareOfTheCallTimeout) {
  hotshard::testing::SilentEndpoint endpoint;
  const std::string silent = endpoint.url();
  ASSERT_FALSE(silent.empty());

  EtcdClient only_silent(EtcdClientOptions{.endpoints = {silent}, .call_timeout = milliseconds(600)});
  auto t0 = steady_clock::now();
  Status s = only_silent.put("/t/k", "v");
  auto took = steady_clock::now() - t0;
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kIo) << s.error().message;
  EXPECT_NE(s.error().message.find(silent), std::string::npos) << s.error().message;
  EXPECT_GE(took, milliseconds(550));
  EXPECT_LT(took, milliseconds(1500));

  EtcdClient both(EtcdClientOptions{.endpoints = {silent, etcd_.endpoint()}, .call_timeout = milliseconds(2000)});
  t0 = steady_clock::now();
  Status put = both.put("/t/k", "v");
  EXPECT_TRUE(put.ok()) << put.error().message;
  EXPECT_LT(steady_clock::now() - t0, milliseconds(2000));
}

TEST_F(EtcdClientTest, AStoppedEtcdIsAnIoErrorAndARestartedOneAnswers) {
  EtcdClient c = client(milliseconds(500));
  ASSERT_TRUE(c.put("/t/k", "before").ok());
  etcd_.stop();
  Status s = c.put("/t/k", "during");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code, Errc::kIo) << s.error().message;
  ASSERT_TRUE(etcd_.restart());
  auto kvs = c.rangePrefix("/t/");
  ASSERT_TRUE(kvs.ok()) << kvs.error().message;
  ASSERT_EQ(kvs->size(), 1u);
  EXPECT_EQ((*kvs)[0].value, "before");  // the data dir survived the restart
}

TEST(EtcdClient, RejectsBadArgumentsBeforeCallingEtcd) {
  EtcdClient c(EtcdClientOptions{.endpoints = {"http://127.0.0.1:1"}});
  EXPECT_EQ(c.put("", "v").error().code, Errc::kInvalidArgument);
  EXPECT_EQ(c.rangePrefix("").error().code, Errc::kInvalidArgument);
  EXPECT_EQ(c.leaseGrant(std::chrono::seconds(0)).error().code, Errc::kInvalidArgument);
  EtcdClient none(EtcdClientOptions{});
  EXPECT_EQ(none.put("/k", "v").error().code, Errc::kInvalidArgument);
}

}  // namespace
}  // namespace hotshard::peer
