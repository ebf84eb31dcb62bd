// The binary's error paths: clear messages and exit codes, no mount left behind.
#include <signal.h>

#include <filesystem>

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

// One exit-code table (tools/commands.h): 0 ok, 1 failure, 2 usage, 3 no daemon;
// CLI11's own codes never leak out, and its message stays.
TEST(IntegrationCli, EveryUsageErrorExitsTwoWithItsMessage) {
  TempDir tmp;
  writeFile(tmp / "bad.toml", "remote = \"/x\"\ncache_size = \"lots\"\n");
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"status", "--jsn"}, "--jsn"},
      {{"warm"}, "path"},
      {{"top", "-n", "abc"}, "abc"},
      {{"run", "--config", tmp / "missing.toml"}, "missing.toml"},
      {{"run", "--config", tmp / "bad.toml"}, tmp / "bad.toml:2: "},
      {{}, "subcommand"},
      {{"bogus"}, "unknown command 'bogus'"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> argv = {hotshardBinary()};
    argv.insert(argv.end(), c.args.begin(), c.args.end());
    CommandResult r = runCommand(argv);
    std::string what = argv.size() > 1 ? argv[1] + " " + (argv.size() > 2 ? argv[2] : "") : "";
    EXPECT_EQ(r.exit_code, 2) << what << "\n" << r.out;
    EXPECT_NE(r.out.find(c.message), std::string::npos) << "want '" << c.message << "' in:\n"
                                                         << r.out;
  }
  for (const char* help : {"--help", "--version"}) {
    EXPECT_EQ(runCommand({hotshardBinary(), help}).exit_code, 0) << help;
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
