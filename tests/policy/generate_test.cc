// The shape of each workload family of policy/generate.h beyond the first four
// (those are in trace_test.cc): what each one must read, write and delete.
#include "policy/generate.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

namespace hotshard::policy {
namespace {

std::vector<Request> generate(const std::string& family, std::vector<KeyValue> params) {
  std::vector<Request> out;
  auto st = generateTrace(family, params, 5, [&](const Request& r) {
    out.push_back(r);
    return Status();
  });
  EXPECT_TRUE(st.ok()) << st.error().message;
  return out;
}

std::map<ObjectId, int> readsPerObject(const std::vector<Request>& t) {
  std::map<ObjectId, int> reads;
  for (const auto& r : t)
    if (isRead(r.flags)) ++reads[r.id];
  return reads;
}

TEST(TraceFamilies, MultiJobDataSetsGrowAndOverlapInTime) {
  auto t =
      generate("multijob", {{"jobs", "3"}, {"shards", "10"}, {"epochs", "2"}, {"stagger", "5"}});
  ASSERT_EQ(t.size(), (10u + 20 + 30) * 2);
  std::map<ObjectId, int> per_job;  // job = id / 1000000
  for (const auto& [id, n] : readsPerObject(t)) {
    EXPECT_EQ(n, 2) << id;  // every shard once per epoch
    ++per_job[id / 1000000];
  }
  EXPECT_EQ(per_job, (std::map<ObjectId, int>{{1, 10}, {2, 20}, {3, 30}}));
  // Job 3 starts before job 1 ends: the jobs overlap.
  std::size_t first3 = 0, last1 = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i].id / 1000000 == 3 && first3 == 0) first3 = i;
    if (t[i].id / 1000000 == 1) last1 = i;
  }
  EXPECT_LT(first3, last1);
  for (std::size_t i = 1; i < t.size(); ++i) EXPECT_GT(t[i].time_ns, t[i - 1].time_ns);
  // Each job's data set sits in a directory of its own (Request::dataset).
  for (const auto& r : t) EXPECT_EQ(r.dataset, r.id / 1000000) << r.id;
}

TEST(TraceFamilies, DataSetsAreTheDirectoriesTheFilesWouldSitIn) {
  auto shift = generate("shift", {{"objects", "50"}, {"requests", "400"}});
  for (std::size_t i = 0; i < shift.size(); ++i) EXPECT_EQ(shift[i].dataset, i < 200 ? 1u : 2u);
  // Training data, checkpoints: two directories; every record, writes too, has one.
  std::set<std::uint32_t> ckpt_sets;
  for (const auto& r : generate("checkpoint", {{"shards", "20"}, {"every", "10"}}))
    ckpt_sets.insert(r.dataset);
  EXPECT_EQ(ckpt_sets, (std::set<std::uint32_t>{1, 2}));
  // Two jobs of epoch read one data set.
  for (const auto& r : generate("epoch", {{"shards", "10"}, {"epochs", "1"}}))
    EXPECT_EQ(r.dataset, 1u);
}

TEST(TraceFamilies, InferenceReplicasLoadTheSameModelInABurst) {
  auto t = generate("inference", {{"models", "3"},
                                  {"shards_per_model", "2"},
                                  {"deployments", "20"},
                                  {"max_replicas", "4"},
                                  {"background_between", "5"}});
  // Each deployment: replicas x 2 shard reads of one model, then 5 small reads.
  std::size_t i = 0, bursts_with_rereads = 0;
  for (int d = 0; d < 20; ++d) {
    std::set<ObjectId> model;
    std::size_t reads = 0;
    for (; i < t.size() && t[i].id < 1000000000; ++i, ++reads) model.insert(t[i].id);
    ASSERT_EQ(model.size(), 2u) << d;
    EXPECT_EQ((*model.begin() - 1) / 2, (*model.rbegin() - 1) / 2) << "one model per burst";
    EXPECT_EQ(reads % 2, 0u);
    EXPECT_LE(reads, 8u);
    bursts_with_rereads += reads > 2;
    for (int b = 0; b < 5; ++b, ++i) ASSERT_GE(t[i].id, 1000000000u);
  }
  EXPECT_EQ(i, t.size());
  EXPECT_GT(bursts_with_rereads, 5u);
}

TEST(TraceFamilies, KvSpillWritesThenRereadsSoonThenDeletes) {
  auto t = generate("kvspill", {{"chunks", "300"}, {"live", "8"}, {"max_rereads", "4"}});
  std::map<ObjectId, std::size_t> written, unlinked;
  std::size_t reads = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const auto& r = t[i];
    EXPECT_GE(r.size, 2u << 20);
    EXPECT_LE(r.size, 64u << 20);
    if (r.flags & kFlagWrite) {
      EXPECT_FALSE(written.count(r.id));
      written[r.id] = i;
    } else if (r.flags & kFlagUnlink) {
      unlinked[r.id] = i;
    } else {
      ASSERT_TRUE(written.count(r.id) && !unlinked.count(r.id)) << "read outside its life";
      ++reads;
    }
  }
  EXPECT_EQ(written.size(), 300u);
  EXPECT_EQ(unlinked.size(), 300u);
  EXPECT_GT(reads, 300u * 2);  // 1..4 reads each, 2.5 on average
  EXPECT_LT(reads, 300u * 3);
  // Soon: with 8 chunks live, a chunk's life spans few records.
  double span = 0;
  for (const auto& [id, at] : written) span += double(unlinked[id] - at);
  EXPECT_LT(span / 300, 40.0);
}

TEST(TraceFamilies, CheckpointsOverwriteTwoSlotsAndAreReadAfterWriting) {
  auto t = generate("checkpoint", {{"shards", "100"},
                                   {"epochs", "2"},
                                   {"every", "20"},
                                   {"ckpt_files", "2"},
                                   {"eval_share", "1"},
                                   {"restart_share", "0"}});
  std::set<ObjectId> ckpt_ids;
  int writes = 0;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (!(t[i].flags & kFlagWrite)) continue;
    ++writes;
    ckpt_ids.insert(t[i].id);
  }
  EXPECT_EQ(writes, 200 / 20 * 2);
  EXPECT_EQ(ckpt_ids.size(), 4u);  // two slots of two files, overwritten in turn
  // eval_share 1: every checkpoint file is read once after each write of it.
  for (ObjectId id : ckpt_ids) EXPECT_EQ(readsPerObject(t)[id], 5) << id;
}

TEST(TraceFamilies, WebdatasetEvalSetIsRereadEveryPeriod) {
  auto t =
      generate("webdataset",
               {{"shards", "60"}, {"epochs", "2"}, {"eval_shards", "4"}, {"eval_every", "30"}});
  auto reads = readsPerObject(t);
  for (const auto& [id, n] : reads) EXPECT_EQ(n, id >= 1000000000 ? 4 : 2) << id;
  EXPECT_EQ(reads.size(), 64u);
}

TEST(TraceFamilies, ShiftChangesTheHotDataSetAtTheGivenShare) {
  auto t = generate("shift", {{"objects", "100"}, {"requests", "1000"}, {"shift_at", "0.3"}});
  ASSERT_EQ(t.size(), 1000u);
  for (std::size_t i = 0; i < t.size(); ++i) EXPECT_EQ(t[i].id > 100, i >= 300) << i;
}

TEST(TraceFamilies, SmallFilesBesideShards) {
  auto t =
      generate("smallfiles",
               {{"files", "200"}, {"file_epochs", "3"}, {"shards", "10"}, {"shard_epochs", "2"}});
  auto reads = readsPerObject(t);
  int small = 0, large = 0;
  for (const auto& [id, n] : reads) {
    bool is_large = id >= 1000000000;
    EXPECT_EQ(n, is_large ? 2 : 3) << id;
    (is_large ? large : small)++;
  }
  EXPECT_EQ(small, 200);
  EXPECT_EQ(large, 10);
  for (const auto& r : t) EXPECT_EQ(r.size < (1u << 20), r.id < 1000000000) << r.id;
}

}  // namespace
}  // namespace hotshard::policy
