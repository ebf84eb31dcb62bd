// Hard links through the real mount: two names of one remote file share one
// copy in the cache (docs/cache.md "Hard links"), are both served from it,
// are never served stale after a write through either name, and stay shared
// across a daemon restart.
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

class IntegrationHardLinks : public MountFixture {
 protected:
  void startDaemon() {
    startDaemonWith(
        {.mount = mnt_, .extra_args = {"--scrub-rate", "0", "--placement", "manual"}});
  }

  struct stat objectStat(const std::string& mount_path) {
    json st = statOf(mount_path);
    struct stat out {};
    EXPECT_EQ(st["state"], "cached") << mount_path << ": " << st.dump();
    if (st["state"] != "cached") return out;
    EXPECT_EQ(::stat(st["object"].get<std::string>().c_str(), &out), 0) << st.dump();
    return out;
  }

  // remote/data/a.bin (`size` random bytes) and b.bin, a hard link of it: the
  // content's sha256, or "" (with a failure) when the link cannot be made.
  std::string linkedPair(uint64_t size, uint64_t seed) {
    writeRandomFile(remote_ + "/data/a.bin", size, seed);
    if (::link((remote_ + "/data/a.bin").c_str(), (remote_ + "/data/b.bin").c_str()) != 0) {
      ADD_FAILURE() << "link: " << std::strerror(errno);
      return "";
    }
    return sha256File(remote_ + "/data/a.bin");
  }

  // The cache's used bytes must be exactly one copy of the file.
  void expectOneCopy(const struct stat& object, uint64_t objects) {
    json cache = daemon_->status()["cache"];
    EXPECT_EQ(cache["objects"], objects) << cache.dump();
    EXPECT_EQ(cache["used_bytes"].get<uint64_t>(), static_cast<uint64_t>(object.st_blocks) * 512)
        << cache.dump();
  }
};

TEST_F(IntegrationHardLinks, TwoNamesOfOneRemoteFileShareOneCopy) {
  constexpr uint64_t kSize = 6 << 20;
  const std::string want = linkedPair(kSize, 31);
  ASSERT_FALSE(want.empty());
  startDaemon();

  CommandResult warm = hs({"warm", mnt_ + "/data"});
  ASSERT_EQ(warm.exit_code, 0) << warm.out;
  struct stat oa = objectStat(mnt_ + "/data/a.bin"), ob = objectStat(mnt_ + "/data/b.bin");
  EXPECT_EQ(oa.st_ino, ob.st_ino) << "two copies of one remote file";
  EXPECT_EQ(oa.st_nlink, 2u);
  EXPECT_EQ(statOf(mnt_ + "/data/b.bin")["links"], 2);
  CommandResult text = hs({"stat", mnt_ + "/data/a.bin"});
  EXPECT_NE(text.out.find("(one copy for 2 names)"), std::string::npos) << text.out;
  EXPECT_GE(static_cast<uint64_t>(oa.st_blocks) * 512, kSize);
  expectOneCopy(oa, 2);
  json promoter = daemon_->status()["cache"]["promoter"];
  EXPECT_EQ(promoter["published"], 1) << promoter.dump();
  EXPECT_EQ(promoter["linked"], 1) << promoter.dump();
  EXPECT_EQ(promoter["bytes_copied"], kSize) << promoter.dump();

  // Both names are served from the one copy, with the remote's bytes.
  uint64_t opens_cache = daemon_->status()["fuse"]["opens_cache"].get<uint64_t>();
  EXPECT_EQ(sha256File(mnt_ + "/data/b.bin"), want);
  EXPECT_EQ(sha256File(mnt_ + "/data/a.bin"), want);
  EXPECT_EQ(daemon_->status()["fuse"]["opens_cache"].get<uint64_t>(), opens_cache + 2);

  // A restart finds both names and counts the bytes once.
  ASSERT_EQ(daemon_->stop(), 0) << daemon_->log();
  startDaemon();
  oa = objectStat(mnt_ + "/data/a.bin");
  ob = objectStat(mnt_ + "/data/b.bin");
  EXPECT_EQ(oa.st_ino, ob.st_ino);
  expectOneCopy(oa, 2);
  opens_cache = daemon_->status()["fuse"]["opens_cache"].get<uint64_t>();
  EXPECT_EQ(sha256File(mnt_ + "/data/a.bin"), want);
  EXPECT_EQ(sha256File(mnt_ + "/data/b.bin"), want);
  EXPECT_EQ(daemon_->status()["fuse"]["opens_cache"].get<uint64_t>(), opens_cache + 2);

  // A write through one name changes both: neither is served stale.
  std::string object_a = statOf(mnt_ + "/data/a.bin")["object"];
  writeFile(mnt_ + "/data/b.bin", "written through b");
  EXPECT_EQ(readFile(remote_ + "/data/a.bin"), "written through b");
  EXPECT_EQ(readFile(mnt_ + "/data/a.bin"), "written through b");
  EXPECT_EQ(readFile(mnt_ + "/data/b.bin"), "written through b");
  EXPECT_EQ(statOf(mnt_ + "/data/a.bin")["state"], "remote");
  EXPECT_EQ(statOf(mnt_ + "/data/b.bin")["state"], "remote");
  EXPECT_FALSE(std::filesystem::exists(object_a));
  json cache = daemon_->status()["cache"];
  EXPECT_EQ(cache["objects"], 0) << cache.dump();
  EXPECT_EQ(cache["used_bytes"], 0) << cache.dump();

  // Warmed again, then a truncate through the other name.
  ASSERT_EQ(hs({"warm", mnt_ + "/data"}).exit_code, 0);
  oa = objectStat(mnt_ + "/data/a.bin");
  expectOneCopy(oa, 2);
  ASSERT_EQ(::truncate((mnt_ + "/data/a.bin").c_str(), 7), 0);
  EXPECT_EQ(readFile(mnt_ + "/data/b.bin"), "written");
  EXPECT_EQ(readFile(mnt_ + "/data/a.bin"), "written");
  EXPECT_EQ(statOf(mnt_ + "/data/b.bin")["state"], "remote");
  EXPECT_EQ(daemon_->status()["cache"]["used_bytes"], 0);
}

// Only one name was warmed: an open of the other shares its copy at once (no
// copy made, nothing read from the remote for it).
TEST_F(IntegrationHardLinks, AnOpenOfAnotherNameSharesTheCachedCopy) {
  constexpr uint64_t kSize = 3 << 20;
  const std::string want = linkedPair(kSize, 32);
  ASSERT_FALSE(want.empty());
  startDaemon();
  CommandResult warm = hs({"warm", mnt_ + "/data/a.bin"});
  ASSERT_EQ(warm.exit_code, 0) << warm.out;
  EXPECT_EQ(statOf(mnt_ + "/data/b.bin")["state"], "remote");

  uint64_t opens_cache = daemon_->status()["fuse"]["opens_cache"].get<uint64_t>();
  EXPECT_EQ(sha256File(mnt_ + "/data/b.bin"), want);
  EXPECT_EQ(daemon_->status()["fuse"]["opens_cache"].get<uint64_t>(), opens_cache + 1)
      << "the other name was not served from the copy";
  struct stat oa = objectStat(mnt_ + "/data/a.bin"), ob = objectStat(mnt_ + "/data/b.bin");
  EXPECT_EQ(oa.st_ino, ob.st_ino) << "two copies of one remote file";
  expectOneCopy(oa, 2);
  EXPECT_EQ(daemon_->status()["cache"]["promoter"]["published"], 1);
}

}  // namespace
}  // namespace hotshard::testing
