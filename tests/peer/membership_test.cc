#include "peer/membership.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <thread>

#include "tests/peer/etcd_fixture.h"

namespace hotshard::peer {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;

// Short timings keep the suite fast: a lease of 2 s, a refresh every 200 ms.
constexpr seconds kTtl{2};
constexpr milliseconds kPoll{200};
constexpr milliseconds kCall{500};

Member member(const std::string& id, const std::string& ns = "train") {
  return Member{.id = id,
                .address = "10.0.0." + std::to_string(id.back() - 'a' + 1) + ":7070",
                .transports = {"rdma", "tcp"},
                .capacity_bytes = 1ull << 40,
                .ns = ns};
}

std::vector<std::string> ids(const MembershipState& s) {
  std::vector<std::string> out;
  for (const Member& m : s.live) out.push_back(m.id);
  return out;
}

// Polls until pred(state) holds or timeout passes; true if it held.
bool waitFor(const Membership& m, const std::function<bool(const MembershipState&)>& pred,
             milliseconds timeout = milliseconds(5000)) {
  const auto deadline = steady_clock::now() + timeout;
  while (steady_clock::now() < deadline) {
    if (pred(m.state())) return true;
    std::this_thread::sleep_for(milliseconds(20));
  }
  return pred(m.state());
}

auto connectedWith(std::vector<std::string> want) {
  return [want](const MembershipState& s) { return s.connected && ids(s) == want; };
}

auto aloneAndDisconnected(const std::string& self) {
  return [self](const MembershipState& s) {
    return !s.connected && ids(s) == std::vector<std::string>{self} && !s.last_error.empty();
  };
}

class MembershipTest : public hotshard::testing::EtcdTest {
 protected:
  MembershipOptions options(const Member& self) {
    return MembershipOptions{.cluster = "c1",
                             .endpoints = {etcd_.endpoint()},
                             .self = self,
                             .lease_ttl = kTtl,
                             .call_timeout = kCall,
                             .poll_interval = kPoll};
  }
  std::unique_ptr<Membership> started(const Member& self) {
    auto m = std::make_unique<Membership>(options(self));
    Status s = m->start();
    EXPECT_TRUE(s.ok()) << s.error().message;
    return m;
  }
  EtcdClient client() { return EtcdClient(EtcdClientOptions{.endpoints = {etcd_.endpoint()}}); }
};

TEST(MemberJson, RoundTripsAndRejectsWhatItCannotRead) {
  const Member a = member("host-a");
  auto back = memberFromJson(memberToJson(a));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->id, a.id);
  EXPECT_EQ(back->address, a.address);
  EXPECT_EQ(back->transports, a.transports);
  EXPECT_EQ(back->capacity_bytes, a.capacity_bytes);
  EXPECT_EQ(back->ns, a.ns);
  for (const char* bad : {"", "[]", "{}", R"({"id":"a","address":"x","ns":"n","transports":"tcp","capacity_bytes":1})",
                          R"({"id":"a","address":"x","ns":"n","transports":["tcp"],"capacity_bytes":-1})",
                          R"({"id":"","address":"x","ns":"n","transports":["tcp"],"capacity_bytes":1})",
                          R"({"id":"a","address":"x","ns":"n","transports":[1],"capacity_bytes":1})"}) {
    auto r = memberFromJson(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, Errc::kProtocol);
    }
  }
  EXPECT_EQ(membersPrefix("c1"), "/hotshard/c1/members/");
}

TEST(MembershipOptionsCheck, RejectsBadOptions) {
  const MembershipOptions good{.cluster = "c1", .endpoints = {"http://127.0.0.1:1"}, .self = member("host-a")};
  std::vector<MembershipOptions> bad(7, good);
  bad[0].cluster = "";
  bad[1].cluster = "a/b";
  bad[2].self.id = "";
  bad[3].self.id = "x/y";
  bad[4].endpoints = {};
  bad[5].lease_ttl = seconds(0);
  bad[6].poll_interval = milliseconds(0);
  for (size_t i = 0; i < bad.size(); ++i) {
    Membership m(bad[i]);
    Status s = m.start();
    ASSERT_FALSE(s.ok()) << i;
    EXPECT_EQ(s.error().code, Errc::kInvalidArgument) << i;
  }
  Membership m(good);
  ASSERT_TRUE(m.start().ok());
  EXPECT_EQ(m.start().error().code, Errc::kBusy);
}

TEST_F(MembershipTest, TwoMembersSeeEachOther) {
  auto a = started(member("host-a"));
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"}))) << a->state().last_error;
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"}))) << b->state().last_error;
  const MembershipState s = a->state();
  EXPECT_EQ(s.last_error, "");
  EXPECT_GT(s.generation, 0u);
  const Member& seen = s.live[1];  // host-b as a reads it from etcd
  const Member want = member("host-b");
  EXPECT_EQ(seen.address, want.address);
  EXPECT_EQ(seen.transports, want.transports);
  EXPECT_EQ(seen.capacity_bytes, want.capacity_bytes);
  EXPECT_EQ(seen.ns, want.ns);
  // A quiet cluster does not bump the generation.
  std::this_thread::sleep_for(kPoll * 3);
  EXPECT_EQ(a->state().generation, s.generation);
}

TEST_F(MembershipTest, ADeadOrHungEndpointBeforeTheLiveOneIsPassedOver) {
  hotshard::testing::SilentEndpoint hung;
  ASSERT_FALSE(hung.url().empty());
  const std::string dead = "http://127.0.0.1:" + std::to_string(hotshard::testing::freePort());
  MembershipOptions o = options(member("host-a"));
  o.endpoints = {dead, hung.url(), etcd_.endpoint()};
  o.call_timeout = milliseconds(1500);  // the hung one may take a third of it, etcd gets the rest
  Membership a(o);
  ASSERT_TRUE(a.start().ok());
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(a, connectedWith({"host-a", "host-b"}))) << a.state().last_error;
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"}))) << b->state().last_error;
}

TEST_F(MembershipTest, OnlyMembersOfTheSameNamespaceAndClusterCount) {
  auto a = started(member("host-a", "train"));
  auto b = started(member("host-b", "train"));
  auto c = started(member("host-c", "eval"));
  MembershipOptions other = options(member("host-d", "train"));
  other.cluster = "c2";
  Membership d(other);
  ASSERT_TRUE(d.start().ok());
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"}))) << ids(a->state()).size();
  ASSERT_TRUE(waitFor(*c, connectedWith({"host-c"})));
  ASSERT_TRUE(waitFor(d, connectedWith({"host-d"})));
  // c and d are registered all the same (c in c1, d in c2).
  auto kvs = client().rangePrefix(membersPrefix("c1"));
  ASSERT_TRUE(kvs.ok());
  EXPECT_EQ(kvs->size(), 3u);
}

TEST_F(MembershipTest, AStoppedMemberLeavesTheOthersAtTheirNextRefresh) {
  auto a = started(member("host-a"));
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"})));
  const auto t0 = steady_clock::now();
  b->stop();
  EXPECT_LT(steady_clock::now() - t0, kCall * 3) << "stop() took too long";
  EXPECT_EQ(ids(b->state()), std::vector<std::string>{"host-b"});
  EXPECT_FALSE(b->state().connected);
  // The lease was revoked: gone well before the ttl would have run out.
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a"}), milliseconds(1000)));
}

TEST_F(MembershipTest, AnAbandonedMemberLeavesWhenItsLeaseExpires) {
  auto a = started(member("host-a"));
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"})));
  b->abandon();  // as a crash leaves it: no revoke
  const auto t0 = steady_clock::now();
  EXPECT_EQ(ids(a->state()), (std::vector<std::string>{"host-a", "host-b"}));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a"}), kTtl + kPoll + milliseconds(2000)));
  const auto gone_after = steady_clock::now() - t0;
  // The lease was renewed at most ttl/3 before the "crash", so it lives at least 2/3 ttl more.
  EXPECT_GE(gone_after, kTtl * 2 / 3 - milliseconds(100));
}

TEST_F(MembershipTest, AnEtcdOutageLeavesEachAloneAndTheyRejoinWhenItReturns) {
  auto a = started(member("host-a"));
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"})));
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"})));
  const uint64_t gen = a->state().generation;
  etcd_.stop();
  ASSERT_TRUE(waitFor(*a, aloneAndDisconnected("host-a"), milliseconds(3000)));
  ASSERT_TRUE(waitFor(*b, aloneAndDisconnected("host-b"), milliseconds(3000)));
  const MembershipState down = a->state();
  EXPECT_GT(down.generation, gen);
  EXPECT_NE(down.last_error.find(etcd_.endpoint()), std::string::npos) << down.last_error;
  // Still alone a while later (no flapping while etcd is away).
  std::this_thread::sleep_for(kPoll * 3);
  EXPECT_TRUE(aloneAndDisconnected("host-a")(a->state()));
  ASSERT_TRUE(etcd_.restart());
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"}), milliseconds(8000))) << a->state().last_error;
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"}), milliseconds(8000))) << b->state().last_error;
  EXPECT_GT(a->state().generation, down.generation);
  EXPECT_EQ(a->state().last_error, "");
}

TEST_F(MembershipTest, StartsAloneWhileEtcdIsDownAndJoinsWhenItComes) {
  etcd_.stop();
  auto a = started(member("host-a"));
  // Not merely "not registered yet": it tried, and says which endpoint failed.
  ASSERT_TRUE(waitFor(*a, [&](const MembershipState& s) {
    return aloneAndDisconnected("host-a")(s) && s.last_error.find(etcd_.endpoint()) != std::string::npos;
  }, milliseconds(3000))) << a->state().last_error;
  ASSERT_TRUE(etcd_.restart());
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"}), milliseconds(8000))) << a->state().last_error;
}

TEST_F(MembershipTest, ALostLeaseIsGrantedAgainAndTheMemberRegistersAgain) {
  auto a = started(member("host-a"));
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"})));
  EtcdClient c = client();
  auto kvs = c.rangePrefix(membersPrefix("c1") + "host-a");
  ASSERT_TRUE(kvs.ok());
  ASSERT_EQ(kvs->size(), 1u);
  const int64_t old_lease = (*kvs)[0].lease;
  ASSERT_TRUE(c.leaseRevoke(old_lease).ok());  // as if it had expired
  ASSERT_TRUE(waitFor(*a, [&](const MembershipState&) {
    auto now = c.rangePrefix(membersPrefix("c1") + "host-a");
    return now.ok() && now->size() == 1 && (*now)[0].lease != old_lease;
  }, milliseconds(5000)));
  ASSERT_TRUE(waitFor(*a, connectedWith({"host-a", "host-b"})));
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"})));
}

TEST_F(MembershipTest, ADeletedRegistrationIsPutBackAndGarbageIsIgnored) {
  auto a = started(member("host-a"));
  auto b = started(member("host-b"));
  ASSERT_TRUE(waitFor(*b, connectedWith({"host-a", "host-b"})));
  EtcdClient c = client();
  ASSERT_TRUE(c.put(membersPrefix("c1") + "host-x", "not json").ok());
  ASSERT_TRUE(c.deleteKey(membersPrefix("c1") + "host-a").ok());
  ASSERT_TRUE(waitFor(*a, [&](const MembershipState&) {
    auto now = c.rangePrefix(membersPrefix("c1") + "host-a");
    return now.ok() && now->size() == 1;
  }, milliseconds(3000)));
  std::this_thread::sleep_for(kPoll * 2);
  EXPECT_TRUE(connectedWith({"host-a", "host-b"})(a->state())) << ids(a->state()).size();
  EXPECT_TRUE(connectedWith({"host-a", "host-b"})(b->state())) << ids(b->state()).size();
}

// An etcd that accepts connections and never answers: stop() still returns
// within its bound (the current call, then the revoke, each within call_timeout).
TEST(MembershipStop, IsBoundedWhenEtcdHangs) {
  hotshard::testing::SilentEndpoint silent;
  ASSERT_FALSE(silent.url().empty());
  Membership m(MembershipOptions{.cluster = "c1",
                                 .endpoints = {silent.url()},
                                 .self = member("host-a"),
                                 .lease_ttl = kTtl,
                                 .call_timeout = kCall,
                                 .poll_interval = kPoll});
  ASSERT_TRUE(m.start().ok());
  std::this_thread::sleep_for(kCall / 2);  // the thread is inside its first call now
  EXPECT_FALSE(m.state().connected);
  const auto t0 = steady_clock::now();
  m.stop();
  EXPECT_LT(steady_clock::now() - t0, kCall * 2 + milliseconds(300));
}

}  // namespace
}  // namespace hotshard::peer
