// The binary's error paths: clear messages and exit codes, no mount left behind.
#include <signal.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

TEST(IntegrationCli, HelpEndsWithExamples) {
  for (const char* cmd : {"run", "status"}) {
    CommandResult r = runCommand({hotshardBinary(), cmd, "--help"});
    EXPECT_EQ(r.exit_code, 0) << cmd;
    EXPECT_NE(r.out.find("Examples:"), std::string::npos) << cmd << r.out;
  }
  CommandResult r = runCommand({hotshardBinary(), "run", "--help"});
  for (const char* opt : {"--remote", "--mount", "--cache", "--consistency", "--foreground",
                          "--config", "--passthrough"}) {
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
  }
}

TEST(IntegrationCli, BadInvocationsSayWhatIsWrong) {
  TempDir tmp;
  fs::create_directories(tmp / "r");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"run", "--cache", tmp / "c"}, "--remote DIR is required"},
      {{"run", "--remote", tmp / "r"}, "--cache DIR is required"},
      {{"run", "--remote", tmp / "missing", "--cache", tmp / "c"}, "No such file or directory"},
      {{"run", "--remote", tmp / "r", "--cache", tmp / "c", "--consistency", "eventual"},
       "expected strict, ttl=SECONDS (> 0) or immutable"},
      {{"run", "--remote", tmp / "r", "--cache", tmp / "c", "--mount", tmp / "nodir"},
       "mount point"},
      {{"bogus"}, "bogus"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {hotshardBinary()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = runCommand(argv);
    EXPECT_NE(r.exit_code, 0) << c.message;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << "want '" << c.message << "' in:\n" << r.out;
  }
}

TEST(IntegrationCli, StatusWithoutADaemonSaysSo) {
  TempDir tmp;
  CommandResult r = runCommand({hotshardBinary(), "status", "--socket", tmp / "none.sock"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.out.find("no hotshard daemon answers"), std::string::npos) << r.out;
}

TEST(IntegrationCli, ACrashedDaemonsMountIsNamedAndNotStackedOn) {
  HS_REQUIRE_ROOT();
  TempDir tmp;
  fs::create_directories(tmp / "remote");
  fs::create_directories(tmp / "mnt");
  DaemonProcess daemon({.remote = tmp / "remote", .mount = tmp / "mnt", .cache = tmp / "cache"},
                       tmp.path());
  ASSERT_TRUE(daemon.start());
  // kill -9: the mount stays, dead (ENOTCONN).
  json st = daemon.status();
  pid_t pid = st["pid"].get<pid_t>();
  ::kill(pid, SIGKILL);
  daemon.stop(/*keep_dead_mount=*/true);  // reaps; the dead mount stays
  CommandResult r = runCommand({hotshardBinary(), "run", "--foreground", "--remote", tmp / "remote",
                                "--mount", tmp / "mnt", "--cache", tmp / "cache", "--control-socket",
                                tmp / "again.sock"},
                                /*timeout_s=*/20);
  EXPECT_NE(r.exit_code, 0);
  bool named = r.out.find("umount -l") != std::string::npos ||
               r.out.find("already covered by a hotshard mount") != std::string::npos;
  EXPECT_TRUE(named) << r.out;
}

// Group- or world-writable paths below `root` (itself included), one a line.
std::string writableByOthers(const std::string& root) {
  std::string found;
  std::error_code ec;
  auto check = [&](const fs::path& p) {
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0 && !S_ISLNK(st.st_mode) && (st.st_mode & 022) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", st.st_mode & 07777);
      found += p.string() + " " + mode + "\n";
    }
  };
  check(root);
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    check(it->path());
  }
  return found;
}

// The daemon runs with umask 0 (a file made through the mount gets exactly the
// caller's mode), so each path it makes for itself needs an explicit mode: its
// run and log directories, its log, its cache and a recorded trace are never
// group- or world-writable, whatever the umask it was started with.
TEST(IntegrationCli, NothingTheDaemonCreatesIsWritableByOthers) {
  HS_REQUIRE_ROOT();
  HS_REQUIRE(::access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse");
  TempDir tmp;
  fs::create_directories(tmp / "remote");
  fs::create_directories(tmp / "mnt");
  writeFile(tmp / "remote/f", "data");
  const std::string sock = tmp / "run/hs/ctl.sock";
  mode_t old_umask = ::umask(0);
  CommandResult r = runCommand({hotshardBinary(), "run", "--remote", tmp / "remote", "--mount",
                                tmp / "mnt", "--cache", tmp / "cache/hs", "--control-socket", sock,
                                "--log-file", tmp / "log/hs/daemon.log", "--metrics", "off"},
                               /*timeout_s=*/30);
  ::umask(old_umask);
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto client = ControlClient::connect(sock);
  ASSERT_TRUE(client.ok()) << client.error().message;
  auto st = client->call(json{{"cmd", "status"}});
  ASSERT_TRUE(st.ok()) << st.error().message;
  const pid_t pid = (*st)["pid"].get<pid_t>();
  if ((*st)["probes"].value("mode", "") == "bpf") {  // trace record needs the probes
    CommandResult t = runCommand({hotshardBinary(), "trace", "record", "--out", tmp / "t.trace",
                                  "--duration", "300ms", "--socket", sock});
    EXPECT_EQ(t.exit_code, 0) << t.out;
    EXPECT_EQ(writableByOthers(tmp / "t.trace"), "");
  }
  ASSERT_TRUE(fs::exists(tmp / "log/hs/daemon.log"));
  for (const char* dir : {"run", "log", "cache"}) EXPECT_EQ(writableByOthers(tmp / dir), "");

  ::kill(pid, SIGTERM);
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; i++) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (::kill(pid, SIGKILL) == 0) ADD_FAILURE() << "the daemon did not stop on SIGTERM";
}

// One grammar for units everywhere (base/units.h): a daemon started with them
// runs with what they say.
class IntegrationUnits : public MountFixture {};

TEST_F(IntegrationUnits, RunTakesSizesAndDurationsWithUnits) {
  HS_REQUIRE_ROOT();
  startDaemonWith({.mount = mnt_,
                   .consistency = "ttl=5m",
                   .extra_args = {"--tick", "250ms", "--promote-chunk", "1.5MiB"}});
  ASSERT_TRUE(daemon_->running());
  json s = daemon_->status();
  EXPECT_EQ(s.value("consistency", ""), "ttl=300") << s.dump();
  EXPECT_DOUBLE_EQ(s["placement"].value("tick_seconds", 0.0), 0.25) << s.dump();
  CommandResult r = runCommand({hotshardBinary(), "run", "--remote", remote_, "--cache",
                                tmp_ / "c2", "--tick", "5ms"});
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("tick '5ms': expected 10ms to 1h"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace hotshard::testing
