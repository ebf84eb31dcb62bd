#include "peer/rendezvous.h"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

namespace hotshard::peer {
namespace {

constexpr int kKeys = 10000;

Member member(std::string id) {
  Member m;
  m.id = std::move(id);
  m.address = "127.0.0.1:7000";
  m.transports = {"tcp"};
  m.ns = "train";
  return m;
}

std::vector<std::string> keys() {
  std::vector<std::string> out;
  out.reserve(kKeys);
  for (int i = 0; i < kKeys; ++i) {
    out.push_back(objectKey(ObjectRequest{.ns = "train", .relpath = "shards/shard-" + std::to_string(i) + ".tar"}));
  }
  return out;
}

// key -> owner id, for every key.
std::map<std::string, std::string> owners(const std::vector<Member>& live) {
  std::map<std::string, std::string> out;
  for (const std::string& key : keys()) {
    const Member* owner = ownerOf(key, live);
    EXPECT_NE(owner, nullptr);
    if (owner != nullptr) out[key] = owner->id;
  }
  return out;
}

TEST(Rendezvous, ScoreIsTheDocumentedRule) {
  // Every host of a cluster must compute the same score; the header names the rule.
  const std::string id = "host-a";
  const std::string key = objectKey(ObjectRequest{.ns = "train", .relpath = "a/b.bin"});
  const uint64_t seed = XXH3_64bits(id.data(), id.size());
  EXPECT_EQ(rendezvousScore(id, key), XXH3_64bits_withSeed(key.data(), key.size(), seed));
  EXPECT_NE(rendezvousScore("host-a", key), rendezvousScore("host-b", key));
}

TEST(Rendezvous, EmptyLiveSetHasNoOwner) {
  EXPECT_EQ(ownerOf("k", {}), nullptr);
  EXPECT_TRUE(rankedOwners("k", {}).empty());
}

TEST(Rendezvous, OwnerIsIndependentOfTheOrderOfLive) {
  std::vector<Member> live = {member("host-a"), member("host-b"), member("host-c"), member("host-d")};
  const auto before = owners(live);
  std::mt19937 rng(42);
  for (int round = 0; round < 5; ++round) {
    std::shuffle(live.begin(), live.end(), rng);
    EXPECT_EQ(owners(live), before) << "round " << round;
  }
}

TEST(Rendezvous, RankedOwnersStartWithTheOwnerAndListEveryMemberOnce) {
  const std::vector<Member> live = {member("host-a"), member("host-b"), member("host-c")};
  for (const std::string& key : keys()) {
    const auto ranked = rankedOwners(key, live);
    ASSERT_EQ(ranked.size(), live.size());
    EXPECT_EQ(ranked.front(), ownerOf(key, live));
    std::vector<std::string> ids;
    for (const Member* m : ranked) ids.push_back(m->id);
    std::sort(ids.begin(), ids.end());
    EXPECT_EQ(ids, (std::vector<std::string>{"host-a", "host-b", "host-c"}));
    for (size_t i = 1; i < ranked.size(); ++i) {
      EXPECT_GE(rendezvousScore(ranked[i - 1]->id, key), rendezvousScore(ranked[i]->id, key));
    }
  }
}

TEST(Rendezvous, KeysAreBalancedAcrossMembers) {
  const std::vector<Member> live = {member("host-a"), member("host-b"), member("host-c")};
  std::map<std::string, int> count;
  for (const auto& [key, owner] : owners(live)) ++count[owner];
  ASSERT_EQ(count.size(), 3u);
  const double fair = static_cast<double>(kKeys) / 3;
  for (const auto& [id, n] : count) {
    EXPECT_GE(n, fair * 0.85) << id;
    EXPECT_LE(n, fair * 1.15) << id;
  }
}

TEST(Rendezvous, AJoinMovesAboutAQuarterOfTheKeysAndOnlyToTheNewMember) {
  std::vector<Member> live = {member("host-a"), member("host-b"), member("host-c")};
  const auto before = owners(live);
  live.push_back(member("host-d"));
  const auto after = owners(live);
  int moved = 0;
  for (const auto& [key, owner] : before) {
    if (after.at(key) == owner) continue;
    ++moved;
    EXPECT_EQ(after.at(key), "host-d") << "a key moved between old members";
  }
  EXPECT_GE(moved, kKeys / 4 * 0.85);
  EXPECT_LE(moved, kKeys / 4 * 1.15);
}

TEST(Rendezvous, ALeaveMovesOnlyTheLeaversKeys) {
  std::vector<Member> live = {member("host-a"), member("host-b"), member("host-c"), member("host-d")};
  const auto before = owners(live);
  live.erase(live.begin() + 1);  // host-b leaves
  const auto after = owners(live);
  int moved = 0;
  for (const auto& [key, owner] : before) {
    if (owner == "host-b") {
      ++moved;
      EXPECT_NE(after.at(key), "host-b");
      // It goes to its next home in the old ranking.
      std::vector<Member> old = {member("host-a"), member("host-b"), member("host-c"), member("host-d")};
      EXPECT_EQ(after.at(key), rankedOwners(key, old)[1]->id);
    } else {
      EXPECT_EQ(after.at(key), owner) << "a key of a staying member moved";
    }
  }
  EXPECT_GT(moved, 0);
}

}  // namespace
}  // namespace hotshard::peer
