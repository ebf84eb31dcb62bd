// The typed status snapshot: one JSON form, today's keys, lenient reading.
#include "daemon/status.h"

#include <gtest/gtest.h>

#include <set>

#include "daemon/control_protocol.h"
#include "tests/daemon/metrics_test_util.h"

namespace hotshard {
namespace {

// A status as the daemon fills it, every section set.
StatusSnapshot filledSnapshot() {
  StatusSnapshot s{.version = "0.1.0",
                   .pid = 4321,
                   .mount = "/mnt/d",
                   .remote = "/mnt/d",
                   .cache_dir = "/nvme/c",
                   .overmount = true,
                   .passthrough = true,
                   .passthrough_reason = "kernel passthrough active",
                   .consistency = "strict"};
  s.fuse = FuseStatus{.requests = std::map<std::string, uint64_t>{{"lookup", 3}, {"open", 2}},
                      .inodes = 4,
                      .opens_passthrough = 2,
                      .opens_userspace = 0,
                      .opens_cache = 1,
                      .opens_remote = 1,
                      .cache_conflicts = 0,
                      .userspace_read_bytes = 0};
  s.cache = CacheStatus{.used_bytes = 1 << 20, .capacity_bytes = 1 << 30, .objects = 2};
  s.cache->promoter = PromoterStatus{.started = 3, .failed_no_space = 1, .bytes_copied = 99};
  s.cache->scrub = ScrubStatus{.passes = 1, .objects_checked = 2, .objects_dropped = 0};
  s.probes = ProbeStatus{.mode = "bpf",
                         .events = 10,
                         .lost_updates = 0,
                         .attached = 1,
                         .programs = std::vector<std::string>{"filemap:x:tp_btf"},
                         .skipped = std::vector<std::string>{}};
  s.heat = HeatStatus{.bytes_read_remote = 5, .bytes_missed_remote = 4, .shards = 1};
  s.jobs = std::vector<JobStatus>{{.cgroup = "/a", .bytes_read = 7, .bytes_missed = 6}};
  s.policy = PolicyStatus{.name = "lfu",
                          .spec = "lfu;half_life=60",
                          .params = std::map<std::string, std::string>{{"half_life", "60"}},
                          .counters = std::map<std::string, double>{{"admits", 2}}};
  s.placement = PlacementStatus{.automatic = true, .tick_seconds = 0.5, .ticks = 8};
  s.top = std::vector<ShardRow>{{.path = "a.bin", .heat = 1.5, .size = 9, .state = "cached"}};
  return s;
}

TEST(StatusSnapshot, KeepsTodaysJsonKeys) {
  json j = filledSnapshot();
  EXPECT_EQ(j["cache"]["used_bytes"], 1 << 20);
  EXPECT_EQ(j["cache"]["promoter"]["failed_no_space"], 1);
  EXPECT_EQ(j["cache"]["scrub"]["objects_checked"], 2);
  EXPECT_EQ(j["fuse"]["opens_passthrough"], 2);
  EXPECT_EQ(j["fuse"]["requests"]["lookup"], 3);
  EXPECT_EQ(j["probes"]["mode"], "bpf");
  EXPECT_EQ(j["probes"]["programs"][0], "filemap:x:tp_btf");
  EXPECT_TRUE(j["probes"]["skipped"].is_array());
  EXPECT_EQ(j["heat"]["bytes_missed_remote"], 4);
  EXPECT_EQ(j["jobs"][0]["cgroup"], "/a");
  EXPECT_EQ(j["policy"]["params"]["half_life"], "60");
  EXPECT_EQ(j["policy"]["counters"]["admits"], 2.0);
  EXPECT_EQ(j["placement"]["tick_seconds"], 0.5);
  EXPECT_EQ(j["top"][0]["remote_miss_bytes"], 0);
  EXPECT_EQ(j["top"][0]["state"], "cached");
  EXPECT_EQ(j["passthrough_reason"], "kernel passthrough active");
  EXPECT_EQ(j["pid"], 4321);
  // Absent fields are absent, not zero.
  EXPECT_FALSE(j["cache"].contains("evictions"));
  EXPECT_FALSE(j["probes"].contains("reason"));
  EXPECT_FALSE(j["policy"].contains("available"));
}

TEST(StatusSnapshot, RoundTripsThroughJson) {
  json j = filledSnapshot();
  auto back = j.get<StatusSnapshot>();
  EXPECT_EQ(json(back), j);
  EXPECT_EQ(back.cache->used_bytes, 1u << 20);
  EXPECT_EQ(back.fuse->opens_passthrough, 2u);
  EXPECT_EQ(back.probes->mode, "bpf");
  EXPECT_EQ(back.top->at(0).heat, 1.5);

  // The metrics fixture (every field the daemon's JSON has) reads back whole too,
  // but for its number-valued policy parameter, which reads as its JSON text.
  json full = testing::fullStatusFixture();
  json again = full.get<StatusSnapshot>();
  full["policy"]["params"]["weight"] = "2";
  full["top"] = again["top"];  // rows are always complete: defaults filled in
  EXPECT_EQ(again, full);
}

TEST(StatusSnapshot, ReadsWrongTypesAsAbsentWithoutThrowing) {
  for (const json& j : {json(), json::array({1}), json("x"), json(7)}) {
    StatusSnapshot s = j.get<StatusSnapshot>();
    EXPECT_EQ(json(s), json::object());
  }
  json odd = {{"pid", "many"},
              {"cache", {{"used_bytes", -1}, {"objects", true}, {"promoter", 7}}},
              {"jobs", json::array({1, json{{"cgroup", "/a"}}})},
              {"fuse", {{"requests", {{"read", "x"}, {"open", 2}}}}}};
  auto s = odd.get<StatusSnapshot>();
  EXPECT_FALSE(s.pid);
  EXPECT_FALSE(s.cache->used_bytes);
  EXPECT_EQ(s.cache->objects, 1u);
  EXPECT_FALSE(s.cache->promoter);
  ASSERT_EQ(s.jobs->size(), 1u);
  EXPECT_EQ(s.jobs->at(0).cgroup, "/a");
  EXPECT_EQ(s.fuse->requests, (std::map<std::string, uint64_t>{{"open", 2}}));
}

TEST(StatusSnapshot, TopReplyKeepsItsShape) {
  TopReply r{.shards = {ShardRow{.path = "a", .opens = 2}}};
  r.status.heat = HeatStatus{.shards = 1};
  json j = r;
  EXPECT_EQ(j["shards"][0]["opens"], 2);
  EXPECT_EQ(j["status"]["heat"]["shards"], 1);
  EXPECT_FALSE(j["status"].contains("cache"));
  EXPECT_EQ(json(j.get<TopReply>()), j);
}

TEST(ControlProtocol, NamesEveryCommandOnce) {
  const auto& names = control::commandNames();
  std::set<std::string_view> unique(names.begin(), names.end());
  EXPECT_EQ(unique.size(), names.size());
  EXPECT_EQ(control::request(control::kPolicyShow), json({{"cmd", "policy_show"}}));
}

}  // namespace
}  // namespace hotshard
