// Trace formats round-trip, reject damaged input with a useful message, and the
// generators are deterministic and shaped as documented.
#include "policy/trace.h"

#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <set>
#include <sstream>

#include "policy/generate.h"
#include "policy/params.h"

namespace hotshard::policy {
namespace {

std::vector<Request> sample() {
  return {
      {.time_ns = 1000000000,
       .id = 7,
       .size = 4096,
       .offset = 0,
       .bytes_read = 4096,
       .bytes_missed = 4096,
       .flags = 0},
      {.time_ns = 2000000000,
       .id = 1ull << 40,
       .size = 1ull << 20,
       .offset = 512,
       .bytes_read = 1024,
       .bytes_missed = 0,
       .flags = 0,
       .dataset = 0xfeedbeef},
      {.time_ns = 3000000000,
       .id = 7,
       .size = 4096,
       .offset = 0,
       .bytes_read = 4096,
       .bytes_missed = 100,
       .flags = kFlagWrite},
  };
}

std::string write(TraceFormat format, const std::vector<Request>& requests) {
  std::stringstream out;
  auto writer = makeTraceWriter(format, out);
  for (const auto& r : requests) EXPECT_TRUE(writer->write(r).ok());
  EXPECT_TRUE(writer->finish().ok());
  return out.str();
}

Result<std::vector<Request>> read(TraceFormat format, const std::string& bytes) {
  std::istringstream in(bytes);
  auto reader = makeTraceReader(format, in, "t");
  return readAll(*reader);
}

TEST(TraceFormat, NativeAndCsvRoundTrip) {
  for (auto format : {TraceFormat::kNative, TraceFormat::kCsv}) {
    auto back = read(format, write(format, sample()));
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(*back, sample()) << traceFormatName(format);
  }
  EXPECT_EQ(write(TraceFormat::kNative, sample()).size(),
            kNativeHeaderSize + 3 * kNativeRecordSize);
}

TEST(TraceFormat, NativeRewindReadsAgain) {
  std::istringstream in(write(TraceFormat::kNative, sample()));
  auto reader = makeTraceReader(TraceFormat::kNative, in, "t");
  ASSERT_TRUE(readAll(*reader).ok());
  ASSERT_TRUE(reader->rewind().ok());
  auto again = readAll(*reader);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->size(), 3u);
}

TEST(TraceFormat, OracleGeneralLayoutAndNextAccess) {
  std::vector<Request> in = sample();
  in[2].flags = 0;
  std::string bytes = write(TraceFormat::kOracleGeneral, in);
  ASSERT_EQ(bytes.size(), 3 * kOracleRecordSize);
  // Record 0: u32 time 1 s, u64 id 7, u32 size 4096, i64 next = 2 (request index).
  std::uint32_t t, size;
  std::uint64_t id;
  std::int64_t next0, next1;
  std::memcpy(&t, bytes.data(), 4);
  std::memcpy(&id, bytes.data() + 4, 8);
  std::memcpy(&size, bytes.data() + 12, 4);
  std::memcpy(&next0, bytes.data() + 16, 8);
  std::memcpy(&next1, bytes.data() + 24 + 16, 8);
  EXPECT_EQ(t, 1u);
  EXPECT_EQ(id, 7u);
  EXPECT_EQ(size, 4096u);
  EXPECT_EQ(next0, 2);
  EXPECT_EQ(next1, -1);
  auto back = read(TraceFormat::kOracleGeneral, bytes);
  ASSERT_TRUE(back.ok());
  ASSERT_EQ(back->size(), 3u);
  EXPECT_EQ((*back)[1].id, 1ull << 40);
  EXPECT_EQ((*back)[1].bytes_read, 1ull << 20);  // whole-object reads
  EXPECT_EQ((*back)[2].time_ns, 3000000000u);
}

TEST(TraceFormat, OracleGeneralRefusesObjectsOver4GiB) {
  std::stringstream out;
  auto writer = makeTraceWriter(TraceFormat::kOracleGeneral, out);
  Request big{.time_ns = 0,
              .id = 1,
              .size = 5ull << 30,
              .offset = 0,
              .bytes_read = 1,
              .bytes_missed = 1,
              .flags = 0};
  EXPECT_FALSE(writer->write(big).ok());
}

TEST(TraceFormat, TruncatedBinaryTracesAreErrors) {
  std::string native = write(TraceFormat::kNative, sample());
  auto cut = read(TraceFormat::kNative, native.substr(0, native.size() - 10));
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.error().message.find("truncated trace: record 2 has 46 of 56 bytes"),
            std::string::npos)
      << cut.error().message;
  auto short_by_one =
      read(TraceFormat::kNative, native.substr(0, native.size() - kNativeRecordSize));
  ASSERT_FALSE(short_by_one.ok());
  EXPECT_NE(short_by_one.error().message.find("header says 3 records, found 2"), std::string::npos);
  auto header_only = read(TraceFormat::kNative, native.substr(0, 20));
  ASSERT_FALSE(header_only.ok());
  EXPECT_NE(header_only.error().message.find("shorter than its 32-byte header"), std::string::npos);
  auto not_native = read(TraceFormat::kNative, std::string(64, 'x'));
  ASSERT_FALSE(not_native.ok());
  EXPECT_NE(not_native.error().message.find("bad magic"), std::string::npos);
  std::string oracle = write(TraceFormat::kOracleGeneral, {sample()[0], sample()[1]});
  auto oracle_cut = read(TraceFormat::kOracleGeneral, oracle.substr(0, oracle.size() - 1));
  ASSERT_FALSE(oracle_cut.ok());
  EXPECT_NE(oracle_cut.error().message.find("record 1 has 23 of 24 bytes"), std::string::npos)
      << oracle_cut.error().message;
}

TEST(TraceFormat, CsvDefaultsCommentsAndHeader) {
  auto r = read(TraceFormat::kCsv,
                "time_ns,object_id,object_size\n# a comment\n\n5,9,100\n6, 10 "
                ",200,50,20\r\n7,11,300,0,30,10,1\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 3u);
  EXPECT_EQ((*r)[0].bytes_read, 100u);
  EXPECT_EQ((*r)[0].bytes_missed, 100u);
  EXPECT_EQ((*r)[1].id, 10u);
  EXPECT_EQ((*r)[1].offset, 50u);
  EXPECT_EQ((*r)[1].bytes_missed, 20u);
  EXPECT_EQ((*r)[2].flags, kFlagWrite);
}

TEST(TraceFormat, CsvDataSetIsAnOptionalEighthField) {
  auto r = read(TraceFormat::kCsv, "1,2,3,0,3,3,0,42\n4,5,6,0,6,6,0\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_EQ(r->size(), 2u);
  EXPECT_EQ((*r)[0].dataset, 42u);
  EXPECT_EQ((*r)[1].dataset, 0u);  // an older trace: unknown
  auto wide = read(TraceFormat::kCsv, "1,2,3,0,3,3,0,4294967296\n");
  ASSERT_FALSE(wide.ok());
  EXPECT_EQ(wide.error().message, "t:1: field dataset: larger than 32 bits");
  auto nine = read(TraceFormat::kCsv, "1,2,3,0,3,3,0,4,5\n");
  ASSERT_FALSE(nine.ok());
  EXPECT_NE(nine.error().message.find("more than 8 fields"), std::string::npos);
}

TEST(TraceFormat, NativeRecordsOfOldWritersReadAsDataSetZero) {
  // Before the data set, bytes 52..55 of a record were a reserved zero.
  std::string bytes = write(TraceFormat::kNative, {sample()[1]});
  ASSERT_EQ(bytes.size(), kNativeHeaderSize + kNativeRecordSize);
  EXPECT_EQ(bytes.substr(kNativeHeaderSize + 52, 4), std::string("\xef\xbe\xed\xfe", 4));
  std::memset(bytes.data() + kNativeHeaderSize + 52, 0, 4);
  auto back = read(TraceFormat::kNative, bytes);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ((*back)[0].dataset, 0u);
  EXPECT_EQ((*back)[0].bytes_read, 1024u);
}

TEST(TraceFormat, DataSetIsTheTopLevelDirectory) {
  EXPECT_EQ(datasetOf("imagenet/train/00001.tar"), datasetOf("imagenet/val/x.jpg"));
  EXPECT_EQ(datasetOf("/imagenet/a"), datasetOf("imagenet/b"));
  EXPECT_NE(datasetOf("imagenet/a"), datasetOf("coco/a"));
  EXPECT_NE(datasetOf("imagenet/a"), 0u);
  EXPECT_EQ(datasetOf("model.safetensors"), 0u);  // no directory: unknown
  EXPECT_EQ(datasetOf(""), 0u);
}

TEST(TraceFormat, CsvErrorsNameTheLine) {
  auto bad_number = read(TraceFormat::kCsv, "1,2,3\n# ok\n4,x,6\n");
  ASSERT_FALSE(bad_number.ok());
  EXPECT_EQ(bad_number.error().message, "t:3: field object_id: not a non-negative integer: 'x'");
  auto too_few = read(TraceFormat::kCsv, "1,2\n");
  ASSERT_FALSE(too_few.ok());
  EXPECT_NE(too_few.error().message.find("t:1: expected at least 3 fields"), std::string::npos);
  auto missed = read(TraceFormat::kCsv, "1,2,3,0,10,11\n");
  ASSERT_FALSE(missed.ok());
  EXPECT_EQ(missed.error().message, "t:1: bytes_missed is larger than bytes_read");
  auto negative = read(TraceFormat::kCsv, "1,2,-3\n");
  EXPECT_FALSE(negative.ok());
}

TEST(TraceFormat, ScanCountsTheWorkingSet) {
  auto reader = makeMemoryReader(sample());
  auto stats = scanTrace(*reader);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->requests, 2u);  // the write of 7 is not a read
  EXPECT_EQ(stats->other_records, 1u);
  EXPECT_EQ(stats->unique_objects, 2u);
  EXPECT_EQ(stats->working_set_bytes, 4096u + (1u << 20));
  EXPECT_EQ(stats->first_read_bytes, 4096u + 1024u);
}

TEST(TraceFormat, WorkingSetLeavesOutWhatIsOnlyWrittenAndMissSamples) {
  auto trace = sample();
  // A checkpoint written and unlinked, never read: not in the working set.
  trace.push_back({.time_ns = 4, .id = 99, .size = 1ull << 30, .flags = kFlagWrite});
  trace.push_back({.time_ns = 5, .id = 99, .size = 1ull << 30, .flags = kFlagUnlink});
  // A sampled page-cache miss of bytes already read: no second read.
  trace.push_back({.time_ns = 6,
                   .id = 7,
                   .size = 4096,
                   .bytes_read = 4096,
                   .bytes_missed = 4096,
                   .flags = kFlagMissSample});
  auto reader = makeMemoryReader(trace);
  auto stats = scanTrace(*reader);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->requests, 2u);
  EXPECT_EQ(stats->other_records, 4u);
  EXPECT_EQ(stats->working_set_bytes, 4096u + (1u << 20));
  EXPECT_EQ(stats->bytes_read, 4096u + 1024u);
}

std::vector<Request> generate(const std::string& family, std::uint64_t seed,
                              std::vector<KeyValue> params = {}) {
  std::vector<Request> out;
  auto st = generateTrace(family, params, seed, [&](const Request& r) {
    out.push_back(r);
    return Status();
  });
  EXPECT_TRUE(st.ok()) << st.error().message;
  return out;
}

TEST(TraceGenerate, SameSeedSameTraceOtherSeedOtherTrace) {
  for (const auto& g : listGenerators()) {
    std::vector<KeyValue> small;
    if (g.name == "zipf") small = {{"requests", "2000"}};
    if (g.name == "scan")
      small = {{"requests", "2000"}, {"objects", "3000"}, {"scan_every", "1000"}};
    if (g.name == "modelload") small = {{"restarts", "3"}, {"background_between", "100"}};
    if (g.name == "epoch") small = {{"shards", "100"}};
    if (g.name == "multijob") small = {{"shards", "20"}, {"stagger", "10"}};
    if (g.name == "inference") small = {{"deployments", "5"}, {"background_between", "10"}};
    if (g.name == "kvspill") small = {{"chunks", "200"}};
    if (g.name == "checkpoint") small = {{"shards", "100"}, {"every", "50"}};
    if (g.name == "webdataset") small = {{"shards", "100"}, {"eval_every", "50"}};
    if (g.name == "shift") small = {{"requests", "2000"}};
    if (g.name == "smallfiles") small = {{"files", "500"}, {"shards", "20"}};
    auto a = generate(g.name, 1, small), b = generate(g.name, 1, small),
         c = generate(g.name, 2, small);
    EXPECT_FALSE(a.empty()) << g.name;
    EXPECT_EQ(a, b) << g.name;
    EXPECT_NE(a, c) << g.name;
  }
}

TEST(TraceGenerate, EpochReadsEveryShardOncePerEpochPerJob) {
  auto t = generate("epoch", 3, {{"shards", "50"}, {"epochs", "4"}, {"jobs", "3"}});
  ASSERT_EQ(t.size(), 50u * 4 * 3);
  std::map<ObjectId, int> reads;
  for (const auto& r : t) ++reads[r.id];
  EXPECT_EQ(reads.size(), 50u);
  for (const auto& [id, n] : reads) EXPECT_EQ(n, 12) << id;
}

TEST(TraceGenerate, ModelLoadRereadsTheSameShards) {
  auto t = generate("modelload", 3,
                    {{"model_shards", "4"}, {"restarts", "5"}, {"background_between", "10"}});
  ASSERT_EQ(t.size(), 5u * (4 + 10));
  for (int restart = 0; restart < 5; ++restart) {
    for (int s = 0; s < 4; ++s) EXPECT_EQ(t[restart * 14 + s].id, static_cast<ObjectId>(s + 1));
  }
}

TEST(TraceGenerate, ScanReadsEverythingPeriodically) {
  auto t = generate(
      "scan", 3,
      {{"objects", "100"}, {"hot_objects", "10"}, {"requests", "50"}, {"scan_every", "20"}});
  ASSERT_EQ(t.size(), 50u + 2 * 100);
  std::set<ObjectId> hot;
  for (int i = 0; i < 20; ++i) hot.insert(t[i].id);
  EXPECT_LE(hot.size(), 10u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(t[20 + i].id, static_cast<ObjectId>(i + 1));
}

TEST(TraceGenerate, UnknownFamilyAndParameterListWhatIsAccepted) {
  auto st = generateTrace("nope", {}, 1, [](const Request&) { return Status(); });
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("known: zipf, epoch, modelload, scan"), std::string::npos);
  st = generateTrace("zipf", {{"alpah", "1"}}, 1, [](const Request&) { return Status(); });
  ASSERT_FALSE(st.ok());
  EXPECT_NE(
      st.error().message.find("zipf: no parameter 'alpah' (accepted: objects, requests, alpha"),
      std::string::npos)
      << st.error().message;
}

}  // namespace
}  // namespace hotshard::policy
