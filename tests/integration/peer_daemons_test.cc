// Two daemons on one host form a cluster (docs/cluster.md): two mounts of the
// same remote directory, each with its own cache and peer port, one real etcd.
// A file read through one mount is fetched from that daemon by the other
// instead of the remote; a peer that stops answering leaves readers on the
// remote with the right bytes; etcd going away leaves both alone, and they
// rejoin when it returns. (Three hosts in network namespaces behind a shaped
// link: tests/integration/peer_cluster_test.cc on branch peer-cluster-test.)
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "peer/peer.h"
#include "peer/rendezvous.h"
#include "tests/integration/harness.h"
#include "tests/peer/etcd_fixture.h"

namespace hotshard {
namespace {

namespace fs = std::filesystem;
using testing::DaemonProcess;
using testing::runCommand;
using testing::sha256File;
using testing::TempDir;
using testing::writeFile;
using testing::writeRandomFile;
using Clock = std::chrono::steady_clock;

constexpr const char* kNamespace = "ds";

// The member (of "a", "b") that owns rel: rendezvous over the ids alone.
std::string ownerOf(const std::string& rel) {
  std::vector<peer::Member> live = {peer::Member{.id = "a"}, peer::Member{.id = "b"}};
  const peer::Member* m =
      peer::ownerOf(peer::objectKey(peer::ObjectRequest{.ns = kNamespace, .relpath = rel}), live);
  return m ? m->id : "";
}

// The first "NAME-<i>.bin" that `id` owns.
std::string fileOwnedBy(const std::string& name, const std::string& id) {
  for (int i = 0;; i++) {
    std::string rel = name + "-" + std::to_string(i) + ".bin";
    if (ownerOf(rel) == id) return rel;
  }
}

uint64_t at(const json& j, const json::json_pointer& p) {
  return j.contains(p) && j[p].is_number_unsigned() ? j[p].get<uint64_t>() : 0;
}

class PeerDaemons : public testing::EtcdTest {
 protected:
  void SetUp() override {
    HS_REQUIRE_ROOT();
    HS_REQUIRE(::access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse");
    EtcdTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    remote_ = tmp_ / "remote";
    fs::create_directories(remote_);
    ::chmod(remote_.c_str(), 0755);
    token_ = tmp_ / "cluster.token";
    writeFile(token_, "s3cret-cluster-token\n");
    ASSERT_EQ(::chmod(token_.c_str(), 0600), 0);
    for (const char* id : {"a", "b"}) {
      fs::create_directories(tmp_ / (std::string("mnt-") + id));
      fs::create_directories(tmp_ / (std::string("work-") + id));
    }
  }

  std::unique_ptr<DaemonProcess> startMember(const std::string& id,
                                             const std::string& peer_timeout = "3s",
                                             const std::vector<std::string>& more = {}) {
    std::vector<std::string> args = {
        "--cluster", "t", "--etcd", etcd_.endpoint(), "--peer-listen", "127.0.0.1:0",
        "--namespace", kNamespace, "--cluster-token-file", token_, "--peer-id", id,
        "--peer-transports", "tcp", "--peer-timeout", peer_timeout, "--placement", "manual"};
    args.insert(args.end(), more.begin(), more.end());
    auto d = std::make_unique<DaemonProcess>(
        DaemonProcess::Options{
            .remote = remote_,
            .mount = tmp_ / ("mnt-" + id),
            .cache = tmp_ / ("cache-" + id),
            .extra_args = args},
        tmp_ / ("work-" + id));
    auto started = d->start();
    EXPECT_TRUE(started) << d->log();
    if (!started) return nullptr;
    return d;
  }

  // Polls d's status until pred holds (at most timeout); the last status.
  static json waitStatus(DaemonProcess& d, const std::function<bool(const json&)>& pred,
                         std::chrono::seconds timeout = std::chrono::seconds(30)) {
    auto until = Clock::now() + timeout;
    json s;
    do {
      s = d.status();
      if (pred(s)) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    } while (Clock::now() < until);
    return s;
  }
  static bool sees(const json& s, size_t members, bool connected) {
    return s.contains("cluster") && s["cluster"].value("connected", !connected) == connected &&
           s["cluster"].contains("members") && s["cluster"]["members"].size() == members;
  }

  // Reads the whole file through a mount (as a job would) and returns its sha256.
  static std::string readThrough(const std::string& path) { return sha256File(path); }

  TempDir tmp_;
  std::string remote_, token_;
};

TEST_F(PeerDaemons, FetchFromThePeerFallBackAndGoOnAloneWithoutEtcd) {
  auto a = startMember("a");
  auto b = startMember("b");
  ASSERT_TRUE(a && b);
  json sa = waitStatus(*a, [](const json& s) { return sees(s, 2, true); });
  json sb = waitStatus(*b, [](const json& s) { return sees(s, 2, true); });
  ASSERT_TRUE(sees(sa, 2, true)) << sa.dump(2) << a->log();
  ASSERT_TRUE(sees(sb, 2, true)) << sb.dump(2) << b->log();

  // A file A owns, read on A: A promotes it at the open; then B fetches it from A.
  const std::string mine = fileOwnedBy("a-owns", "a");
  writeRandomFile(remote_ + "/" + mine, (8 << 20) + 123, 1);
  const std::string want = sha256File(remote_ + "/" + mine);
  EXPECT_EQ(readThrough(a->mountpoint() + "/" + mine), want);
  sa = a->status();
  EXPECT_EQ(at(sa, "/cluster/owner_promotions"_json_pointer), 1u) << sa.dump(2);
  EXPECT_EQ(readThrough(b->mountpoint() + "/" + mine), want);
  sb = b->status();
  EXPECT_EQ(at(sb, "/cluster/fetched_bytes"_json_pointer), (8u << 20) + 123) << sb.dump(2);
  EXPECT_EQ(at(sb, "/fuse/opens_remote"_json_pointer), 0u) << "B never opened the remote file";
  EXPECT_EQ(at(sb, "/cache/promoter/read_remote_bytes"_json_pointer), 0u) << sb.dump(2);
  EXPECT_EQ(at(sb, "/cache/promoter/started"_json_pointer), 0u);
  EXPECT_GE(at(a->status(), "/cluster/served_bytes"_json_pointer), (8u << 20) + 123);
  std::string text = runCommand({testing::hotshardBinary(), "status", "--socket", b->socket()}).out;
  EXPECT_NE(text.find("connected"), std::string::npos) << text;
  EXPECT_NE(text.find("8.0 MiB from peers"), std::string::npos) << text;
  // top names each hot file's owner.
  text = runCommand({testing::hotshardBinary(), "top", "--iterations", "1", "--socket",
                     b->socket()})
             .out;
  EXPECT_NE(text.find("OWNER"), std::string::npos) << text;
  EXPECT_NE(text.find(" a "), std::string::npos) << text;

  // A file B owns, read on A first: A asks B, B promotes it once and serves it.
  const std::string theirs = fileOwnedBy("b-owns", "b");
  writeRandomFile(remote_ + "/" + theirs, (3 << 20) + 7, 2);
  EXPECT_EQ(readThrough(a->mountpoint() + "/" + theirs), sha256File(remote_ + "/" + theirs));
  sb = b->status();
  EXPECT_EQ(at(sb, "/cache/promoter/published"_json_pointer), 1u) << sb.dump(2);
  EXPECT_EQ(at(a->status(), "/cluster/fetched_bytes"_json_pointer), (3u << 20) + 7);

  // etcd goes away: both go on alone and say so; reads go on.
  etcd_.stop();
  sa = waitStatus(*a, [](const json& s) { return sees(s, 1, false); });
  sb = waitStatus(*b, [](const json& s) { return sees(s, 1, false); });
  ASSERT_TRUE(sees(sa, 1, false)) << sa.dump(2);
  ASSERT_TRUE(sees(sb, 1, false)) << sb.dump(2);
  EXPECT_FALSE(sb["cluster"].value("alone_reason", "").empty()) << sb.dump(2);
  text = runCommand({testing::hotshardBinary(), "status", "--socket", b->socket()}).out;
  EXPECT_NE(text.find("ALONE ("), std::string::npos) << text;
  const std::string alone = "alone.bin";
  writeRandomFile(remote_ + "/" + alone, 1 << 20, 3);
  EXPECT_EQ(readThrough(b->mountpoint() + "/" + alone), sha256File(remote_ + "/" + alone));

  // etcd returns: they rejoin.
  ASSERT_TRUE(etcd_.restart());
  sa = waitStatus(*a, [](const json& s) { return sees(s, 2, true); });
  sb = waitStatus(*b, [](const json& s) { return sees(s, 2, true); });
  ASSERT_TRUE(sees(sa, 2, true)) << sa.dump(2);
  ASSERT_TRUE(sees(sb, 2, true)) << sb.dump(2);

  // A stops answering mid-fetch (SIGSTOP: its socket accepts, nothing comes
  // back), then dies: B's read falls back to the remote after --peer-timeout,
  // with the right bytes and nothing half-written left in its cache.
  const std::string cold = fileOwnedBy("cold", "a");
  writeRandomFile(remote_ + "/" + cold, (5 << 20) + 9, 4);
  const pid_t pid_a = static_cast<pid_t>(sa.value("pid", 0));
  ASSERT_GT(pid_a, 0);
  ASSERT_EQ(::kill(pid_a, SIGSTOP), 0);
  auto t0 = Clock::now();
  EXPECT_EQ(readThrough(b->mountpoint() + "/" + cold), sha256File(remote_ + "/" + cold));
  EXPECT_LT(Clock::now() - t0, std::chrono::seconds(20)) << "bounded by --peer-timeout";
  ::kill(pid_a, SIGKILL);
  a->stop();
  sb = b->status();
  EXPECT_GE(at(sb, "/cluster/fetch_failures/io"_json_pointer), 1u) << sb.dump(2);
  // Alone, B owned alone.bin and promoted it at the open: only the fallback
  // opened the remote file as a backing.
  EXPECT_EQ(at(sb, "/fuse/opens_remote"_json_pointer), 1u) << sb.dump(2);
  std::error_code ec;
  size_t tmp_files = 0;
  for (const auto& e : fs::directory_iterator(tmp_ / "cache-b/tmp", ec)) {
    (void)e;
    tmp_files++;
  }
  EXPECT_EQ(tmp_files, 0u) << "a failed fetch leaves nothing in tmp/";
  // Its bytes are right the next time too (a copy, or the remote).
  EXPECT_EQ(readThrough(b->mountpoint() + "/" + cold), sha256File(remote_ + "/" + cold));
}

// A cold file opened through both mounts at once: its owner promotes it once,
// the other daemon waits on that copy and fetches it; the remote file is read
// by one promotion in total, and neither open is backed by the remote.
TEST_F(PeerDaemons, ColdFileOpenedOnBothAtOnceLeavesTheRemoteOnce) {
  auto a = startMember("a");
  auto b = startMember("b");
  ASSERT_TRUE(a && b);
  for (auto* d : {a.get(), b.get()}) {
    json s = waitStatus(*d, [](const json& s) { return sees(s, 2, true); });
    ASSERT_TRUE(sees(s, 2, true)) << s.dump(2);
  }
  const uint64_t size = (32u << 20) + 5;
  writeRandomFile(remote_ + "/cold.bin", size, 6);
  testing::dropPageCache(remote_ + "/cold.bin");
  const std::string want = sha256File(remote_ + "/cold.bin");
  std::string got_a, got_b;
  std::thread ta([&] { got_a = readThrough(a->mountpoint() + "/cold.bin"); });
  std::thread tb([&] { got_b = readThrough(b->mountpoint() + "/cold.bin"); });
  ta.join();
  tb.join();
  EXPECT_EQ(got_a, want);
  EXPECT_EQ(got_b, want);
  json sa = a->status(), sb = b->status();
  auto promoted = [](const json& s) {
    return at(s, "/cache/promoter/read_remote_bytes"_json_pointer) +
           at(s, "/cache/promoter/read_page_cache_bytes"_json_pointer);
  };
  EXPECT_EQ(promoted(sa) + promoted(sb), size) << sa.dump(2) << sb.dump(2);
  EXPECT_EQ(at(sa, "/cache/promoter/started"_json_pointer) +
                at(sb, "/cache/promoter/started"_json_pointer),
            1u);
  EXPECT_EQ(at(sa, "/cluster/fetched_bytes"_json_pointer) +
                at(sb, "/cluster/fetched_bytes"_json_pointer),
            size);
  EXPECT_EQ(at(sa, "/fuse/opens_remote"_json_pointer), 0u);
  EXPECT_EQ(at(sb, "/fuse/opens_remote"_json_pointer), 0u);
}

// The owner's own copy is slow (--promote-rate 1 MiB/s stands for a slow
// remote; issue 15): an open on the owner waits for it at most --peer-timeout,
// then reads the remote, with the right bytes; the copy goes on in the
// background, is published, and serves the next open. A peer asking the owner
// meanwhile is answered busy within the owner's bound and reads its remote.
TEST_F(PeerDaemons, SlowOwnerCopyHoldsNoOpenPastThePeerTimeout) {
  auto a = startMember("a", "1s", {"--promote-rate", "1MiB"});
  auto b = startMember("b", "1s");
  ASSERT_TRUE(a && b);
  for (auto* d : {a.get(), b.get()}) {
    json s = waitStatus(*d, [](const json& s) { return sees(s, 2, true); });
    ASSERT_TRUE(sees(s, 2, true)) << s.dump(2);
  }
  const auto bound = std::chrono::milliseconds(1000 + 2500);  // --peer-timeout + margin
  const std::string rel = fileOwnedBy("slow", "a");
  writeRandomFile(remote_ + "/" + rel, (8 << 20) + 1, 8);  // ~8 s to copy
  const std::string want = sha256File(remote_ + "/" + rel);
  auto t0 = Clock::now();
  EXPECT_EQ(readThrough(a->mountpoint() + "/" + rel), want);
  EXPECT_LT(Clock::now() - t0, bound) << "the open waited for the whole copy";
  json sa = a->status();
  EXPECT_EQ(at(sa, "/fuse/opens_remote"_json_pointer), 1u) << sa.dump(2);
  EXPECT_EQ(at(sa, "/cache/promoter/published"_json_pointer), 0u) << sa.dump(2);
  EXPECT_EQ(at(sa, "/cluster/fetch_failures/busy"_json_pointer), 1u) << sa.dump(2);
  EXPECT_EQ(at(sa, "/cluster/owner_promotions"_json_pointer), 0u) << sa.dump(2);

  // B asks A for another file A owns, while A's copy of it is slow: busy.
  const std::string theirs = fileOwnedBy("slow-b", "a");
  writeRandomFile(remote_ + "/" + theirs, (2 << 20) + 3, 9);
  t0 = Clock::now();
  EXPECT_EQ(readThrough(b->mountpoint() + "/" + theirs), sha256File(remote_ + "/" + theirs));
  EXPECT_LT(Clock::now() - t0, bound) << "B's open waited on A's copy";
  json sb = b->status();
  EXPECT_GE(at(sb, "/cluster/fetch_failures/busy"_json_pointer), 1u) << sb.dump(2);
  EXPECT_EQ(at(sb, "/cluster/fetched_bytes"_json_pointer), 0u) << sb.dump(2);

  // Both copies finish in the background and are published, once each.
  sa = waitStatus(
      *a, [](const json& s) { return at(s, "/cache/promoter/published"_json_pointer) >= 2; },
      std::chrono::seconds(20));
  EXPECT_EQ(at(sa, "/cache/promoter/published"_json_pointer), 2u) << sa.dump(2);
  EXPECT_EQ(at(sa, "/cache/promoter/started"_json_pointer), 2u) << sa.dump(2);
  testing::CommandResult verify =
      runCommand({testing::hotshardBinary(), "verify", "--socket", a->socket()}, 60);
  EXPECT_EQ(verify.exit_code, 0) << verify.out;
  EXPECT_NE(verify.out.find("verified 2 cached objects, dropped 0"), std::string::npos)
      << verify.out;
  EXPECT_EQ(readThrough(a->mountpoint() + "/" + rel), want);
  sa = a->status();
  EXPECT_EQ(at(sa, "/fuse/opens_cache"_json_pointer), 1u) << sa.dump(2);
  EXPECT_EQ(at(sa, "/fuse/opens_remote"_json_pointer), 1u) << sa.dump(2);
}

// etcd down never blocks a start: the daemon serves alone, says why, and
// joins once etcd answers.
TEST_F(PeerDaemons, StartsAloneWithoutEtcdAndJoinsLater) {
  etcd_.stop();
  auto a = startMember("a");
  ASSERT_TRUE(a);
  json s = a->status();
  ASSERT_TRUE(sees(s, 1, false)) << s.dump(2);
  EXPECT_FALSE(s["cluster"].value("alone_reason", "").empty()) << s.dump(2);
  writeRandomFile(remote_ + "/x.bin", 1 << 20, 7);
  EXPECT_EQ(readThrough(a->mountpoint() + "/x.bin"), sha256File(remote_ + "/x.bin"));
  ASSERT_TRUE(etcd_.restart());
  auto b = startMember("b");
  ASSERT_TRUE(b);
  s = waitStatus(*a, [](const json& s) { return sees(s, 2, true); });
  EXPECT_TRUE(sees(s, 2, true)) << s.dump(2);
}

// A peer with the wrong token is refused and counted; the asker reads the
// remote, with the right bytes.
TEST_F(PeerDaemons, WrongTokenIsRefusedAndTheRemoteServes) {
  auto a = startMember("a");
  ASSERT_TRUE(a);
  writeFile(token_, "another-token\n");
  ASSERT_EQ(::chmod(token_.c_str(), 0600), 0);
  auto b = startMember("b");
  ASSERT_TRUE(b);
  json sb = waitStatus(*b, [](const json& s) { return sees(s, 2, true); });
  ASSERT_TRUE(sees(sb, 2, true)) << sb.dump(2);
  const std::string rel = fileOwnedBy("guarded", "a");
  writeRandomFile(remote_ + "/" + rel, 1 << 20, 5);
  EXPECT_EQ(readThrough(b->mountpoint() + "/" + rel), sha256File(remote_ + "/" + rel));
  sb = b->status();
  EXPECT_EQ(at(sb, "/cluster/fetched_bytes"_json_pointer), 0u) << sb.dump(2);
  EXPECT_GE(at(sb, "/cluster/fetch_failures/refused"_json_pointer), 1u) << sb.dump(2);
  EXPECT_GE(at(a->status(), "/cluster/refused"_json_pointer), 1u);
}

// A token file others may read is refused at start, naming the file.
TEST_F(PeerDaemons, GroupReadableTokenFileIsRefused) {
  ASSERT_EQ(::chmod(token_.c_str(), 0640), 0);
  testing::CommandResult r = runCommand(
      {testing::hotshardBinary(), "run", "--foreground", "--remote", remote_, "--mount",
       tmp_ / "mnt-a", "--cache", tmp_ / "cache-a", "--metrics", "off", "--control-socket",
       tmp_ / "work-a/control.sock", "--cluster", "t", "--etcd", etcd_.endpoint(),
       "--peer-listen", "127.0.0.1:0", "--namespace", kNamespace, "--cluster-token-file", token_},
      30);
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("cluster token " + token_), std::string::npos) << r.out;
  EXPECT_FALSE(testing::isHotshardMount(tmp_ / "mnt-a"));
}

}  // namespace
}  // namespace hotshard
