// The peer tier end to end (issue 15, "What it must show"): three hosts, each
// in its own network namespace with its own daemon, joined by a bridge; the
// remote an sshfs served from a fourth namespace through a rate-limited link;
// etcd started here (tests/integration/cluster_topology.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <map>
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
      sha256_[rel] = sha256File(topo_->exportDir() + "/" + rel);
    }
    return rels;
  }

  std::string hostDir(int n) const { return tmp_ / ("h" + std::to_string(n)); }
  std::string mnt(int n) const { return hostDir(n) + "/mnt"; }

  // Starts host n's daemon in its namespace over its sshfs mount.
  ::testing::AssertionResult startHost(int n, std::vector<std::string> extra_args) {
    fs::create_directories(mnt(n));
    if (daemons_.size() < static_cast<size_t>(n)) daemons_.resize(n);
    daemons_[n - 1] = std::make_unique<DaemonProcess>(
        DaemonProcess::Options{.remote = topo_->hostRemote(n),
                               .mount = mnt(n),
                               .cache = hostDir(n) + "/cache",
                               .extra_args = std::move(extra_args),
                               .netns = topo_->hostNetns(n)},
        hostDir(n));
    return daemons_[n - 1]->start();
  }

  // Reads every file through host n's mount; each must hash as the source does.
  ::testing::AssertionResult readAll(int n, const std::vector<std::string>& rels) {
    for (const auto& rel : rels) {
      std::string got = sha256File(mnt(n) + "/" + rel);
      if (got != sha256_.at(rel)) {
        return ::testing::AssertionFailure() << "host " << n << " read " << rel << " as " << got;
      }
    }
    return ::testing::AssertionSuccess();
  }

  TempDir tmp_;
  std::unique_ptr<ClusterTopology> topo_;
  std::vector<std::unique_ptr<DaemonProcess>> daemons_;  // host n at [n - 1]
  std::map<std::string, std::string> sha256_;             // of each source file
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

// Today without the cluster: each host copies from the remote on its own, so
// the remote serves the data set once per host (the contrast to the peer tier).
TEST_F(IntegrationCluster, WithoutTheClusterEachHostReadsTheRemote) {
  constexpr uint64_t kSize = 512 << 10;
  auto rels = writeDataSet("solo", 32, kSize, 200);
  const uint64_t data_bytes = rels.size() * kSize;
  for (int n = 1; n <= topo_->hosts(); n++) ASSERT_TRUE(startHost(n, {}));
  for (int n = 1; n <= topo_->hosts(); n++) ASSERT_TRUE(readAll(n, rels));
  EXPECT_EQ(topo_->remoteFileBytes(), topo_->hosts() * data_bytes);
}

}  // namespace
}  // namespace hotshard::testing
