#include "daemon/config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>

#include "fuse/filesystem.h"
#include "tests/integration/harness.h"

namespace hotshard {
namespace {

using testing::TempDir;
using testing::writeFile;

const ConfigItem& item(const std::string& name) {
  const auto& items = runConfigItems();
  return *std::find_if(items.begin(), items.end(), [&](const ConfigItem& i) { return i.name == name; });
}

TEST(Config, FileValuesApplyUnlessAFlagOverrides) {
  TempDir tmp;
  writeFile(tmp / "hs.toml",
            "remote = \"/data/remote\"\ncache = \"/nvme/cache\"\nconsistency = \"ttl=30\"\n"
            "fuse_threads = 8\nforeground = true\n");
  RunConfig cfg;
  ASSERT_TRUE(item("consistency").set(cfg, "immutable").ok());
  Status st = applyConfigFile(tmp / "hs.toml", {"consistency"}, cfg);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_EQ(cfg.remote, "/data/remote");
  EXPECT_EQ(cfg.consistency.toString(), "immutable");  // the flag wins
  EXPECT_EQ(cfg.fuse_threads, 8u);
  EXPECT_TRUE(cfg.foreground);
  ASSERT_TRUE(finalizeRunConfig(cfg).ok());
  EXPECT_EQ(cfg.mount, "/data/remote");  // over the remote by default
  EXPECT_EQ(cfg.control_socket, "/run/hotshard/data_remote.sock");
  EXPECT_EQ(cfg.log_file, "/var/log/hotshard/data_remote.log");
}

TEST(Config, BadFilesAreRefusedWithFileAndKey) {
  TempDir tmp;
  RunConfig cfg;
  writeFile(tmp / "unknown.toml", "remot = \"/x\"\n");
  Status st = applyConfigFile(tmp / "unknown.toml", {}, cfg);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("unknown key 'remot'"), std::string::npos);
  EXPECT_NE(st.error().message.find("remote"), std::string::npos);  // lists the known ones

  writeFile(tmp / "syntax.toml", "remote = \n");
  st = applyConfigFile(tmp / "syntax.toml", {}, cfg);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("syntax.toml:1"), std::string::npos) << st.error().message;

  writeFile(tmp / "value.toml", "consistency = \"sometimes\"\n");
  st = applyConfigFile(tmp / "value.toml", {}, cfg);
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("strict, ttl=SECONDS"), std::string::npos);

  writeFile(tmp / "threads.toml", "fuse-threads = 0\n");
  EXPECT_FALSE(applyConfigFile(tmp / "threads.toml", {}, cfg).ok());
}

TEST(Config, EveryComplaintAboutAFileNamesItsLine) {
  TempDir tmp;
  RunConfig cfg;
  struct Case {
    std::string text, want;
  } cases[] = {
      {"remote = \"/x\"\n\nremot = \"/x\"\n", "unknown key 'remot'"},
      {"# header\nremote = \"/x\"\nconsistency = \"sometimes\"\n", "strict, ttl=SECONDS"},
      {"\n\nforeground = [1, 2]\n", "must be a string, number or bool"},
  };
  for (const auto& c : cases) {
    writeFile(tmp / "hs.toml", c.text);
    Status st = applyConfigFile(tmp / "hs.toml", {}, cfg);
    ASSERT_FALSE(st.ok()) << c.text;
    EXPECT_NE(st.error().message.find(tmp / "hs.toml:3: "), std::string::npos)
        << st.error().message;
    EXPECT_NE(st.error().message.find(c.want), std::string::npos) << st.error().message;
  }
}

TEST(Config, FinalizeChecksRequiredAndOverlappingPaths) {
  RunConfig cfg;
  EXPECT_FALSE(finalizeRunConfig(cfg).ok());
  cfg.remote = "/r";
  EXPECT_NE(finalizeRunConfig(cfg).error().message.find("--cache"), std::string::npos);
  cfg.cache = "/r/cache";  // inside the mount (the remote itself, by default)
  EXPECT_NE(finalizeRunConfig(cfg).error().message.find("must not be inside"), std::string::npos);
  cfg.cache = "/c/";
  cfg.mount = "/m//x/../y/";
  ASSERT_TRUE(finalizeRunConfig(cfg).ok());
  EXPECT_EQ(cfg.mount, "/m/y");
  EXPECT_EQ(cfg.cache, "/c");
}

// Where the paths really lead counts: a symlink does not smuggle the cache into
// the mount or the remote, and a cache inside the remote is refused even when the
// mount is elsewhere (hotshard would cache its own copies).
TEST(Config, FinalizeRefusesACacheInsideTheRemoteOrMountThroughSymlinks) {
  TempDir tmp;
  std::filesystem::create_directories(tmp / "remote/inside");
  std::filesystem::create_directories(tmp / "mnt");
  std::filesystem::create_symlink(tmp / "remote/inside", tmp / "to-inside");
  std::filesystem::create_symlink(tmp / "remote", tmp / "to-remote");
  std::filesystem::create_symlink(tmp / "mnt", tmp / "to-mnt");
  auto refusal = [&](const std::string& mount, const std::string& cache) {
    RunConfig cfg;
    cfg.remote = tmp / "remote";
    cfg.mount = mount;
    cfg.cache = cache;
    Status st = finalizeRunConfig(cfg);
    return st.ok() ? std::string() : st.error().message;
  };
  // Over the remote: the cache through a link into it, existing or not yet made.
  EXPECT_NE(refusal("", tmp / "to-inside").find("must not be inside the mount"), std::string::npos);
  EXPECT_NE(refusal("", tmp / "to-inside/cache/new").find("must not be inside the mount"),
            std::string::npos);
  EXPECT_NE(refusal("", tmp / "to-remote").find(tmp / "remote"), std::string::npos);
  // A separate mount: the cache in the remote, as written or through a link.
  for (const std::string& cache : {tmp / "remote/cache", tmp / "to-inside/c", tmp / "to-remote"}) {
    std::string why = refusal(tmp / "mnt", cache);
    EXPECT_NE(why.find("must not be inside the remote " + tmp / "remote"), std::string::npos)
        << cache << ": " << why;
  }
  // ... or in the mount through a link.
  EXPECT_NE(refusal(tmp / "mnt", tmp / "to-mnt/cache").find("inside the mount"), std::string::npos);
  // Outside both, also through a link that stays outside.
  std::filesystem::create_directories(tmp / "local");
  std::filesystem::create_symlink(tmp / "local", tmp / "to-local");
  EXPECT_EQ(refusal(tmp / "mnt", tmp / "to-local/cache"), "");
  EXPECT_EQ(refusal("", tmp / "local/cache"), "");
}

TEST(Consistency, ParsesTheThreeModes) {
  using fuse::Consistency;
  EXPECT_EQ(Consistency::parse("strict")->entryTimeout(), 0);
  auto ttl = Consistency::parse("ttl=2.5");
  ASSERT_TRUE(ttl.ok());
  EXPECT_DOUBLE_EQ(ttl->attrTimeout(), 2.5);
  EXPECT_EQ(ttl->toString(), "ttl=2.5");
  EXPECT_EQ(Consistency::parse("ttl=30s")->toString(), "ttl=30");
  auto imm = Consistency::parse("immutable");
  EXPECT_GT(imm->entryTimeout(), 86400);
  EXPECT_EQ(imm->negativeTimeout(), 0);
  EXPECT_TRUE(imm->keepCache());
  for (const char* bad : {"", "ttl=", "ttl=0", "ttl=-1", "ttl=abc", "Strict"}) {
    EXPECT_FALSE(Consistency::parse(bad).ok()) << bad;
  }
}

// One grammar for units wherever an option takes one (base/units.h), flags and
// TOML keys alike.
TEST(Config, SizesAndDurationsTakeUnits) {
  RunConfig cfg;
  ASSERT_TRUE(item("promote-chunk").set(cfg, "1.5MiB").ok());
  EXPECT_EQ(cfg.promote_chunk, 1572864u);
  ASSERT_TRUE(item("consistency").set(cfg, "ttl=5m").ok());
  EXPECT_EQ(cfg.consistency.mode, fuse::Consistency::Mode::kTtl);
  EXPECT_DOUBLE_EQ(cfg.consistency.ttl_seconds, 300);
  ASSERT_TRUE(item("tick").set(cfg, "250ms").ok());
  EXPECT_EQ(cfg.tick, std::chrono::milliseconds(250));
  EXPECT_EQ(item("tick").get(cfg), "250ms");
  ASSERT_TRUE(item("promote-rate").set(cfg, "2GB").ok());
  EXPECT_EQ(cfg.promote_rate, 2000000000u);
  EXPECT_FALSE(item("promote-chunk").set(cfg, "1.1MiB").ok());  // not a multiple of 4 KiB
  EXPECT_FALSE(item("tick").set(cfg, "5ms").ok());               // below 10 ms
  EXPECT_FALSE(item("consistency").set(cfg, "ttl=0s").ok());

  TempDir tmp;
  writeFile(tmp / "units.toml", "tick = \"2m\"\nconsistency = \"ttl=250ms\"\ncache_size = \"1.5GiB\"\n");
  ASSERT_TRUE(applyConfigFile(tmp / "units.toml", {}, cfg).ok());
  EXPECT_EQ(cfg.tick, std::chrono::minutes(2));
  EXPECT_DOUBLE_EQ(cfg.consistency.ttl_seconds, 0.25);
  EXPECT_EQ(cfg.cache_size, 3ull << 29);
}

// A chunk over 4 GiB used to wrap through a 32-bit cast (4GiB+4KiB became 4KiB);
// the item now refuses what the promoter cannot take, and names the limit.
TEST(Config, PromoteChunkIsRangeChecked) {
  RunConfig cfg;
  ASSERT_TRUE(item("promote-chunk").set(cfg, "1GiB").ok());
  EXPECT_EQ(cfg.promote_chunk, 1ull << 30);
  for (const char* too_big : {"4294971392", "4GiB", "2GiB", "1073745920"}) {
    Status st = item("promote-chunk").set(cfg, too_big);
    ASSERT_FALSE(st.ok()) << too_big;
    EXPECT_NE(st.error().message.find("at most 1"), std::string::npos) << st.error().message;
  }
  EXPECT_EQ(cfg.promote_chunk, 1ull << 30);  // unchanged by refused values
  Status zero = item("promote-chunk").set(cfg, "0");
  ASSERT_FALSE(zero.ok());
  EXPECT_NE(zero.error().message.find("at least 4"), std::string::npos) << zero.error().message;

  TempDir tmp;
  writeFile(tmp / "chunk.toml", "promote_chunk = \"5GiB\"\n");
  Status file = applyConfigFile(tmp / "chunk.toml", {}, cfg);
  ASSERT_FALSE(file.ok());
  EXPECT_NE(file.error().message.find("promote-chunk"), std::string::npos) << file.error().message;
}

// The shipped example (installed as /etc/hotshard/hotshard.toml.example) is the
// generated one, so it names every option with its current help and default.
TEST(ConfigExample, ShippedFileEqualsTheGeneratedOne) {
  ASSERT_TRUE(std::filesystem::exists("tools/packaging/hotshard.toml.example"))
      << "run the tests from the repository root";
  EXPECT_EQ(testing::readFile("tools/packaging/hotshard.toml.example"), exampleConfigToml())
      << "regenerate: build/hotshard run --print-config > tools/packaging/hotshard.toml.example";
}

TEST(ConfigExample, NamesEveryItemOnceWithItsHelp) {
  const std::string text = exampleConfigToml();
  for (const auto& i : runConfigItems()) {
    const std::string key = "\n# " + i.name + " = ";
    size_t at = text.find(key);
    ASSERT_NE(at, std::string::npos) << i.name;
    EXPECT_EQ(text.find(key, at + 1), std::string::npos) << i.name << " twice";
    EXPECT_NE(text.find("# " + i.help + key), std::string::npos) << i.name << ": help not above it";
  }
}

// Every key uncommented, the file loads as `hotshard run --config` reads it and
// sets each item to its default.
TEST(ConfigExample, UncommentedItLoadsAndGivesTheDefaults) {
  std::string text = exampleConfigToml(), loaded;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    bool key =
        line.size() > 2 && line.rfind("# ", 0) == 0 && line.find(" = ") != std::string::npos &&
        std::islower(static_cast<unsigned char>(line[2])) && line.find(' ', 2) == line.find(" = ");
    loaded += (key ? line.substr(2) : line) + "\n";
  }
  TempDir tmp;
  writeFile(tmp / "all.toml", loaded);
  RunConfig cfg, defaults;
  cfg.fuse_threads = 3;  // to see the file set it back
  Status st = applyConfigFile(tmp / "all.toml", {}, cfg);
  ASSERT_TRUE(st.ok()) << st.error().message << "\n" << loaded;
  for (const auto& i : runConfigItems()) EXPECT_EQ(i.get(cfg), i.get(defaults)) << i.name;
  size_t keys = 0;
  for (size_t at = 0; (at = loaded.find(" = ", at)) != std::string::npos; at++) keys++;
  EXPECT_EQ(keys, runConfigItems().size()) << loaded;
}

}  // namespace
}  // namespace hotshard

namespace hotshard {
namespace {

RunConfig clusterConfig() {
  RunConfig cfg;
  cfg.remote = "/data/remote";
  cfg.cache = "/nvme/cache";
  cfg.cluster = "train-a";
  cfg.etcd = "http://10.0.0.11:2379, http://10.0.0.12:2379";
  cfg.peer_listen = "10.0.1.23:7464";
  cfg.ns = "datasets";
  cfg.cluster_token_file = "/etc/hotshard/cluster.token";
  return cfg;
}

std::string finalizeError(RunConfig cfg) {
  Status st = finalizeRunConfig(cfg);
  return st.ok() ? "" : st.error().message;
}

TEST(ClusterConfig, OffUnlessClusterIsGivenAndThenComplete) {
  RunConfig plain;
  plain.remote = "/data/remote";
  plain.cache = "/nvme/cache";
  ASSERT_TRUE(finalizeRunConfig(plain).ok());
  EXPECT_TRUE(plain.cluster.empty());
  EXPECT_TRUE(plain.peer_id.empty()) << "no cluster: no id is made up";

  RunConfig stray = plain;
  stray.etcd = "http://e:2379";
  EXPECT_NE(finalizeError(stray).find("--etcd is for the peer tier: give --cluster NAME"),
            std::string::npos)
      << finalizeError(stray);

  RunConfig ok = clusterConfig();
  ASSERT_TRUE(finalizeRunConfig(ok).ok()) << finalizeError(clusterConfig());
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(ok.peer_id, host) << "the hostname by default";
  EXPECT_EQ(splitList(ok.etcd),
            (std::vector<std::string>{"http://10.0.0.11:2379", "http://10.0.0.12:2379"}));

  using Needed = std::pair<std::string RunConfig::*, const char*>;
  for (auto [field, flag] : {Needed{&RunConfig::etcd, "--cluster needs --etcd"},
                             Needed{&RunConfig::peer_listen, "--cluster needs --peer-listen"},
                             Needed{&RunConfig::ns, "--cluster needs --namespace"},
                             Needed{&RunConfig::cluster_token_file,
                                    "--cluster needs --cluster-token-file"}}) {
    RunConfig missing = clusterConfig();
    missing.*field = "";
    EXPECT_NE(finalizeError(missing).find(flag), std::string::npos) << finalizeError(missing);
  }
}

TEST(ClusterConfig, BadValuesAreRefusedClearly) {
  auto with = [](auto field, std::string value) {
    RunConfig cfg = clusterConfig();
    cfg.*field = std::move(value);
    return finalizeError(cfg);
  };
  EXPECT_NE(with(&RunConfig::cluster, "a/b").find("cluster 'a/b'"), std::string::npos);
  EXPECT_NE(with(&RunConfig::ns, "..").find("namespace '..'"), std::string::npos);
  EXPECT_NE(with(&RunConfig::etcd, "10.0.0.1:2379").find("etcd '10.0.0.1:2379': expected http://"),
            std::string::npos);
  EXPECT_NE(with(&RunConfig::peer_listen, "7464").find("peer-listen '7464'"), std::string::npos);
  EXPECT_NE(with(&RunConfig::peer_listen, "h:99999").find("port 1 to 65535"), std::string::npos);
  // Binding every address needs the address others dial.
  EXPECT_NE(with(&RunConfig::peer_listen, "0.0.0.0:7464").find("give --peer-advertise"),
            std::string::npos);
  RunConfig advertised = clusterConfig();
  advertised.peer_listen = "0.0.0.0:7464";
  advertised.peer_advertise = "10.0.1.23:7464";
  EXPECT_EQ(finalizeError(advertised), "");
  EXPECT_NE(with(&RunConfig::peer_advertise, "10.0.1.23:0").find("peer-advertise"),
            std::string::npos);
  EXPECT_NE(with(&RunConfig::peer_id, "a b").find("peer-id 'a b'"), std::string::npos);

  RunConfig cfg;
  Status st = item("peer-transports").set(cfg, "tcp,ib");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("unknown transport 'ib'"), std::string::npos);
  EXPECT_TRUE(item("peer-transports").set(cfg, "tcp").ok());
  EXPECT_EQ(cfg.peer_transports, "tcp");
  EXPECT_FALSE(item("peer-timeout").set(cfg, "10ms").ok());
  ASSERT_TRUE(item("peer-timeout").set(cfg, "5s").ok());
  EXPECT_EQ(cfg.peer_timeout, std::chrono::seconds(5));
}

TEST(ClusterConfig, KeysLoadFromTheConfigFile) {
  TempDir tmp;
  writeFile(tmp / "hs.toml",
            "remote = \"/data/remote\"\ncache = \"/nvme/cache\"\ncluster = \"train-a\"\n"
            "etcd = \"http://e1:2379\"\npeer_listen = \"0.0.0.0:7464\"\n"
            "peer_advertise = \"10.0.1.23:7464\"\nnamespace = \"datasets\"\n"
            "cluster_token_file = \"/etc/hotshard/cluster.token\"\npeer_id = \"gpu-17\"\n"
            "peer_transports = \"tcp\"\npeer_timeout = \"10s\"\n");
  RunConfig cfg;
  Status st = applyConfigFile(tmp / "hs.toml", {}, cfg);
  ASSERT_TRUE(st.ok()) << st.error().message;
  ASSERT_TRUE(finalizeRunConfig(cfg).ok()) << finalizeError(cfg);
  EXPECT_EQ(cfg.cluster, "train-a");
  EXPECT_EQ(cfg.ns, "datasets");
  EXPECT_EQ(cfg.peer_id, "gpu-17");
  EXPECT_EQ(cfg.peer_advertise, "10.0.1.23:7464");
  EXPECT_EQ(cfg.peer_timeout, std::chrono::seconds(10));
}

}  // namespace
}  // namespace hotshard
