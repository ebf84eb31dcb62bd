// `hotshard policy simulate|generate|list`, run in-process through the command registry.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tools/commands.h"

namespace hotshard::policy {
namespace {

struct CliRun {
  int code = 0;
  std::string out, err;
};

CliRun runCli(std::vector<std::string> args) {
  CLI::App app{"hotshard", "hotshard"};
  app.require_subcommand(1);
  cli::addAllCommands(app);
  args.insert(args.begin(), "hotshard");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  CliRun run;
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  try {
    app.parse(static_cast<int>(argv.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    run.code = e.get_exit_code();
  }
  run.out = ::testing::internal::GetCapturedStdout();
  run.err = ::testing::internal::GetCapturedStderr();
  return run;
}

std::string tempPath(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("hotshard-policy-test-" + name)).string();
}

TEST(SimCli, JsonHasTheDocumentedShapeAndTheGoldenNumbers) {
  auto r = runCli({"policy", "simulate", "--trace", "tests/policy/data/small.csv", "--capacity",
                   "10%", "--policy", "hotshard,lru", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["policy"], "hotshard");
  EXPECT_DOUBLE_EQ(j["results"][0]["hit_ratio"].get<double>(), 1463.0 / 2100);  // golden_test.cc
  EXPECT_EQ(j["results"][0]["promoted_bytes"].get<std::uint64_t>(), 6439299u);
  EXPECT_TRUE(j["results"][1].contains("byte_hit_ratio"));
  EXPECT_DOUBLE_EQ(j["opt"]["hit_ratio"].get<double>(), 1506.0 / 2100);
  EXPECT_TRUE(j["opt"].contains("byte_hit_ratio"));
  EXPECT_EQ(j["capacity_bytes"].get<std::uint64_t>(), 6409513u);
}

TEST(SimCli, ChargedByDefaultInstantOnRequestWithWindows) {
  // A 1 GiB file read at 0 s, 0.5 s and 2 s: charged (1 GiB/s, one copy at a time), the
  // read at 0.5 s comes during the copy and misses; instant, it hits.
  std::string path = tempPath("charged.csv");
  {
    std::ofstream out(path);
    out << "0,1,1073741824\n500000000,1,1073741824\n2000000000,1,1073741824\n";
  }
  auto charged = runCli({"policy", "simulate", "--trace", path, "--capacity", "2GiB", "--policy",
                         "lru", "--promote-rate", "1GiB", "--promote-concurrency", "1",
                         "--windows", "3", "--json"});
  auto instant = runCli(
      {"policy", "simulate", "--trace", path, "--capacity", "2GiB", "--policy", "lru", "--instant",
       "--json"});
  std::filesystem::remove(path);
  ASSERT_EQ(charged.code, 0) << charged.err;
  ASSERT_EQ(instant.code, 0) << instant.err;
  auto c = nlohmann::json::parse(charged.out), i = nlohmann::json::parse(instant.out);
  EXPECT_EQ(c["model"], "charged");
  EXPECT_EQ(i["model"], "instant");
  EXPECT_EQ(c["results"][0]["hits"].get<int>(), 1);
  EXPECT_EQ(i["results"][0]["hits"].get<int>(), 2);
  EXPECT_EQ(c["results"][0]["remote_bytes"].get<std::uint64_t>(), 3ull << 30);
  EXPECT_EQ(i["results"][0]["remote_bytes"].get<std::uint64_t>(), 1ull << 30);
  EXPECT_EQ(c["results"][0]["nvme_bytes_written"].get<std::uint64_t>(), 1ull << 30);
  ASSERT_EQ(c["results"][0]["windows"].size(), 3u);
  EXPECT_EQ(c["results"][0]["windows"][1]["byte_hit_ratio"].get<double>(), 0.0);
  EXPECT_EQ(c["results"][0]["windows"][2]["byte_hit_ratio"].get<double>(), 1.0);
  EXPECT_EQ(c["opt"]["windows"].size(), 3u);
}

TEST(SimCli, SweepAndParamsMakeVariants) {
  auto r = runCli({"policy", "simulate", "--trace", "tests/policy/data/small.csv", "--capacity",
                   "1MiB", "--policy", "hotshard,lru", "--param", "hotshard:margin=2", "--sweep",
                   "hysteresis=0..1:0.5", "--json", "--no-opt"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  std::vector<std::string> labels;
  for (const auto& x : j["results"]) labels.push_back(x["policy"]);
  EXPECT_EQ(labels, (std::vector<std::string>{"hotshard;margin=2;hysteresis=0",
                                              "hotshard;margin=2;hysteresis=0.5",
                                              "hotshard;margin=2;hysteresis=1", "lru"}));
  EXPECT_TRUE(j["opt"].is_null());
}

TEST(SimCli, BadInputsSayWhat) {
  std::string csv = tempPath("bad.csv");
  std::ofstream(csv) << "1,2,3\n4,5,six\n";
  auto bad = runCli({"policy", "simulate", "--trace", csv, "--capacity", "1MiB"});
  EXPECT_EQ(bad.code, cli::kExitFailure);
  EXPECT_NE(bad.err.find(csv + ":2: field object_size: not a non-negative integer: 'six'"),
            std::string::npos)
      << bad.err;
  auto missing =
      runCli({"policy", "simulate", "--trace", tempPath("none.trace"), "--capacity", "1MiB"});
  EXPECT_EQ(missing.code, cli::kExitFailure);
  EXPECT_NE(missing.err.find("cannot open trace"), std::string::npos);
  auto policy = runCli({"policy", "simulate", "--trace", "tests/policy/data/small.csv",
                        "--capacity", "5%", "--policy", "lru,nope"});
  EXPECT_EQ(policy.code, cli::kExitUsage);
  EXPECT_NE(policy.err.find("unknown policy 'nope' (known: hotshard, lru"), std::string::npos);
  auto sweep = runCli({"policy", "simulate", "--trace", "tests/policy/data/small.csv", "--capacity",
                       "5%", "--policy", "lru", "--sweep", "hysteresis=0..1:0.5"});
  EXPECT_EQ(sweep.code, cli::kExitUsage);
  EXPECT_NE(sweep.err.find("no policy in --policy has parameter hysteresis"), std::string::npos);
  std::filesystem::remove(csv);
}

TEST(SimCli, GenerateThenSimulateEveryFormat) {
  for (std::string format : {"native", "csv", "oracleGeneral"}) {
    std::string path = tempPath("gen." + format);
    auto gen =
        runCli({"policy", "generate", "epoch", "--out", path, "--format", format, "--seed", "3",
                "--param", "shards=50", "--param", "max_size=64MiB", "--param", "min_size=1MiB"});
    ASSERT_EQ(gen.code, 0) << gen.err;
    EXPECT_NE(gen.err.find("wrote 500 requests"), std::string::npos) << gen.err;
    auto sim = runCli(
        {"policy", "simulate", "--trace", path, "--format", format, "--capacity", "20%", "--json"});
    ASSERT_EQ(sim.code, 0) << sim.err;
    EXPECT_EQ(nlohmann::json::parse(sim.out)["requests"], 500) << format;
    std::filesystem::remove(path);
  }
  auto list = runCli({"policy", "list"});
  EXPECT_NE(list.out.find("hysteresis (default 0.5)"), std::string::npos);
  EXPECT_NE(list.out.find("modelload"), std::string::npos);
}

}  // namespace
}  // namespace hotshard::policy

namespace hotshard::policy {
namespace {

TEST(SimCli, ConvertKeepsEveryRequest) {
  std::string native = tempPath("small.native");
  std::string back = tempPath("small-back.csv");
  auto to_native = runCli({"policy", "convert", "--in", "tests/policy/data/small.csv", "--out", native});
  ASSERT_EQ(to_native.code, 0) << to_native.err;
  EXPECT_NE(to_native.err.find("converted 2100 requests"), std::string::npos) << to_native.err;
  auto to_csv = runCli({"policy", "convert", "--in", native, "--out", back});
  ASSERT_EQ(to_csv.code, 0) << to_csv.err;
  // Same simulation either way.
  auto a = runCli({"policy", "simulate", "--trace", native, "--capacity", "10%", "--json"});
  auto b = runCli({"policy", "simulate", "--trace", back, "--capacity", "10%", "--json"});
  ASSERT_EQ(a.code, 0);
  ASSERT_EQ(b.code, 0);
  EXPECT_EQ(nlohmann::json::parse(a.out)["results"], nlohmann::json::parse(b.out)["results"]);
  std::filesystem::remove(native);
  std::filesystem::remove(back);
}

}  // namespace
}  // namespace hotshard::policy
