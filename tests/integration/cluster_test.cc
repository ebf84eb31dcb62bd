// The peer tier end to end (issue 15, "What it must show"): three hosts, each
// in its own network namespace with its own daemon, joined by a bridge; the
// remote an sshfs served from a fourth namespace through a rate-limited link;
// etcd started here (tests/integration/cluster_topology.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/cluster_topology.h"
#include "tests/integration/harness.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

class IntegrationCluster : public ::testing::Test {
 protected:
  void SetUp() override {
    HS_REQUIRE_ROOT();
    HS_REQUIRE(::access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse");
    std::string missing = ClusterTopology::missingTools();
    HS_REQUIRE(missing.empty(), "needs " + missing + " (make deps)");
    topo_ = std::make_unique<ClusterTopology>(ClusterTopology::Options{}, tmp_.path());
    ASSERT_TRUE(topo_->up());
  }
  void TearDown() override {
    for (auto& d : daemons_) {
      if (d) d->stop();
    }
    daemons_.clear();
    if (topo_) topo_->down();
  }

  // A data set of `count` files of `size` random bytes under export/DIR.
  std::vector<std::string> writeDataSet(const std::string& dir, int count, uint64_t size,
                                        uint64_t seed) {
    std::vector<std::string> rels;
    for (int i = 0; i < count; i++) {
      char name[32];
      std::snprintf(name, sizeof(name), "shard-%03d.bin", i);
      std::string rel = dir + "/" + name;
      writeRandomFile(topo_->exportDir() + "/" + rel, size, seed + i);
      rels.push_back(rel);
    }
    return rels;
  }

  std::string hostDir(int n) const { return tmp_ / ("h" + std::to_string(n)); }

  TempDir tmp_;
  std::unique_ptr<ClusterTopology> topo_;
  std::vector<std::unique_ptr<DaemonProcess>> daemons_;
};

// The fixture's own check: what hosts read straight from their sshfs mounts is
// counted once per host on the remote's side, exactly (file bytes) and with
// headers (link bytes), and the link is as slow as it is shaped.
TEST_F(IntegrationCluster, TheRemoteCountsWhatEachHostReads) {
  constexpr uint64_t kSize = 1 << 20;
  auto rels = writeDataSet("check", 8, kSize, 100);
  const uint64_t data_bytes = rels.size() * kSize;
  const uint64_t link_before = topo_->remoteLinkBytes();
  auto start = std::chrono::steady_clock::now();
  for (int n = 1; n <= topo_->hosts(); n++) {
    for (const auto& rel : rels) {
      ASSERT_EQ(sha256File(topo_->hostRemote(n) + "/" + rel), sha256File(topo_->exportDir() + "/" + rel));
    }
  }
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(topo_->remoteFileBytes(), topo_->hosts() * data_bytes);
  const uint64_t link = topo_->remoteLinkBytes() - link_before;
  EXPECT_GE(link, topo_->hosts() * data_bytes);
  EXPECT_LT(link, topo_->hosts() * data_bytes * 11 / 10);
  // 200 Mbit/s is 25 MB/s: 24 MiB take at least ~1 s through the shaped link.
  EXPECT_GT(seconds, 0.9 * topo_->hosts() * data_bytes / 25e6);
  RecordProperty("seconds", std::to_string(seconds));
}

}  // namespace
}  // namespace hotshard::testing
