// The binary's error paths: clear messages and exit codes, no mount left behind.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <thread>

#include "daemon/config.h"
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
       "expected strict[;ac=DURATION][;acdir=DURATION], ttl=SECONDS (> 0) or immutable"},
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
  // kill -9 of `hotshard run` (the supervisor; its worker goes with it): the
  // mount stays, dead (ENOTCONN).
  ::kill(daemon.pid(), SIGKILL);
  daemon.stop(/*keep_dead_mount=*/true);  // reaps; the dead mount stays
  CommandResult r = runCommand({hotshardBinary(), "run", "--foreground", "--remote", tmp / "remote",
                                "--mount", tmp / "mnt", "--cache", tmp / "cache", "--control-socket",
                                tmp / "again.sock"},
                                /*timeout_s=*/20);
  EXPECT_NE(r.exit_code, 0);
  bool named = r.out.find("umount -l") != std::string::npos ||
               r.out.find("already covered by a hotshard mount") != std::string::npos;
  EXPECT_TRUE(named) << r.out;
  ::unlink(controlSocketFor(tmp / "mnt").c_str());  // the link a SIGKILL left behind
  // The takeover state of a supervisor killed with -9 stays too (nothing ends
  // that mount): gone with the dead mount, or TempDir fails the test.
  ::umount2((tmp / "mnt").c_str(), MNT_DETACH);
  daemon.forgetTakeoverState(128 + SIGKILL);
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

// Every command's --help ends with its own examples, never the top-level ones.
TEST(IntegrationCli, EachCommandsHelpShowsItsOwnExamples) {
  const std::string top_level = "Run 'hotshard COMMAND --help'";
  CommandResult top = runCommand({hotshardBinary(), "--help"});
  ASSERT_NE(top.out.find(top_level), std::string::npos) << top.out;
  for (const char* name : {"run", "status", "stop", "warm", "evict", "pin", "unpin", "stat",
                           "verify", "top", "trace", "trace record", "policy", "policy show",
                           "policy set", "policy simulate", "cache", "probe"}) {
    std::vector<std::string> cmd = {hotshardBinary()};
    std::istringstream words(name);
    for (std::string w; words >> w;) cmd.push_back(w);
    cmd.push_back("--help");
    CommandResult r = runCommand(cmd);
    EXPECT_EQ(r.exit_code, 0) << name;
    EXPECT_NE(r.out.find("Examples:\n  hotshard " + cmd[1]), std::string::npos) << name << r.out;
    EXPECT_EQ(r.out.find(top_level), std::string::npos) << name << " shows the top-level examples";
  }
  CommandResult trace = runCommand({hotshardBinary(), "trace", "--help"});
  EXPECT_NE(trace.out.find("hotshard trace record --out"), std::string::npos) << trace.out;
}

// The small promises of the client commands, against a running daemon.
class IntegrationCliDaemon : public MountFixture {
 protected:
  void startDaemon() {
    startDaemonWith({.mount = mnt_, .extra_args = {"--placement", "manual", "--scrub-rate", "0"}});
  }
};

TEST_F(IntegrationCliDaemon, EvictOfAFileNotCachedIsANoOpThatSaysSo) {
  writeFile(remote_ + "/f", "remote only");
  startDaemon();
  CommandResult r = hs({"evict", mnt_ + "/f"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("f: not cached, nothing to evict"), std::string::npos) << r.out;
  r = hs({"evict", mnt_ + "/f", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json j = json::parse(r.out, nullptr, false)["results"][0];
  EXPECT_FALSE(j.value("evicted", true)) << r.out;
  EXPECT_FALSE(j.contains("error")) << r.out;
  ASSERT_EQ(hs({"warm", mnt_ + "/f"}).exit_code, 0);
  r = hs({"evict", mnt_ + "/f"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("evicted  f"), std::string::npos) << r.out;
}

// top fits 80 columns when stdout is not a terminal, long paths cut at the front.
TEST_F(IntegrationCliDaemon, TopLinesFitEightyColumnsWithLongPaths) {
  std::string deep = "a-rather-long-directory-name/another-long-directory-name-for-shards/";
  writeFile(remote_ + "/" + deep + "shard-000042-of-001024.tar", std::string(1 << 16, 'x'));
  startDaemonWith({.mount = mnt_,
                   .extra_args = {"--placement", "manual", "--scrub-rate", "0", "--tick", "100ms"}});
  ASSERT_EQ(readFile(mnt_ + "/" + deep + "shard-000042-of-001024.tar").size(), 1u << 16);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  CommandResult r = hs({"top", "--iterations", "1", "-n", "100"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("...-of-001024.tar"), std::string::npos) << r.out;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    EXPECT_LE(line.size(), 80u) << line;
  }
}

// On a terminal, q quits top (here long before its 60 s refresh), and the
// terminal is left as it was (canonical mode and echo back on).
TEST_F(IntegrationCliDaemon, TopQuitsOnQAndRestoresTheTerminal) {
  startDaemon();
  std::string top = hotshardBinary() + " top --delay 60s --socket " + daemon_->socket();
  auto t0 = std::chrono::steady_clock::now();
  CommandResult r = runCommand(
      {"sh", "-c",
       "(sleep 2; printf q; sleep 2) | timeout 20 script -qec '" + top + "; stty -a' /dev/null"},
      30);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_LT(seconds, 15) << r.out;
  EXPECT_NE(r.out.find("hotshard top"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" icanon"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" echo "), std::string::npos) << r.out;
}

TEST_F(IntegrationCliDaemon, StatusPrintsNoEmptyRequestsLineWhenIdle) {
  writeFile(remote_ + "/f", "x");
  startDaemon();
  auto requestsLine = [&]() -> std::string {
    CommandResult r = hs({"status"});
    EXPECT_EQ(r.exit_code, 0) << r.out;
    size_t at = r.out.find("  requests");
    return at == std::string::npos ? "" : r.out.substr(at, r.out.find('\n', at) - at);
  };
  EXPECT_EQ(requestsLine(), "") << "an idle daemon has no requests to list";
  EXPECT_EQ(readFile(mnt_ + "/f"), "x");
  EXPECT_NE(requestsLine().find("lookup="), std::string::npos);
}

// The harness's daemons keep their control socket in their own directory,
// outside /run/hotshard: the CLI finds them from the mount table alone.
TEST_F(IntegrationCliDaemon, StatusAndStatFindTheDaemonServingAPathWhereverItsSocket) {
  writeFile(remote_ + "/d/f", "x");
  startDaemon();
  ASSERT_EQ(daemon_->socket().rfind(kRunDir, 0), std::string::npos) << daemon_->socket();
  CommandResult r = runCommand({hotshardBinary(), "status", "--mount", mnt_, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out, nullptr, false).value("mount", ""), mnt_) << r.out;
  r = runCommand({hotshardBinary(), "status", "--mount", mnt_ + "/d"});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  r = runCommand({hotshardBinary(), "stat", mnt_ + "/d/f", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out, nullptr, false).value("state", ""), "remote") << r.out;
  std::string link = controlSocketFor(mnt_);
  EXPECT_TRUE(fs::is_symlink(link)) << link;
  EXPECT_EQ(daemon_->stop(), 0);
  EXPECT_FALSE(fs::exists(fs::symlink_status(link))) << link << " outlived its daemon";
  r = runCommand({hotshardBinary(), "status", "--mount", mnt_});
  EXPECT_EQ(r.exit_code, 3) << r.out;
}

// Lines of `log` at level error.
std::string errorLines(const std::string& log) {
  std::string out, line;
  std::istringstream in(log);
  while (std::getline(in, line)) {
    if (line.find("[error]") != std::string::npos) out += line + "\n";
  }
  return out;
}

// Someone else's umount is a clean stop: no error in the log, whether the
// daemon notices alone or a SIGTERM races it, and a lazy umount with a file
// still open, then SIGTERM, unmounts nothing else at that path.
TEST_F(IntegrationCliDaemon, AnExternalUmountLogsNoError) {
  writeFile(remote_ + "/f", "x");
  startDaemon();
  ASSERT_EQ(::umount2(mnt_.c_str(), 0), 0) << std::strerror(errno);
  EXPECT_EQ(daemon_->stop(), 0);  // SIGTERM right behind the umount
  EXPECT_EQ(errorLines(daemon_->log()), "") << daemon_->log();

  startDaemon();
  int fd = ::open((mnt_ + "/f").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ASSERT_EQ(::umount2(mnt_.c_str(), MNT_DETACH), 0) << std::strerror(errno);
  ASSERT_FALSE(isHotshardMount(mnt_));
  EXPECT_EQ(daemon_->stop(), 0);  // the loop still serves the open file
  ::close(fd);
  EXPECT_EQ(errorLines(daemon_->log()), "") << daemon_->log();
  EXPECT_NE(daemon_->log().find("was unmounted already"), std::string::npos) << daemon_->log();
}

// logrotate: move the file away, SIGHUP, and the daemon goes on in a new one.
TEST_F(IntegrationCliDaemon, SighupReopensTheLogFile) {
  std::string log = tmp_ / "hs.log", sock = tmp_ / "hs.sock";
  CommandResult r = runCommand({hotshardBinary(), "run", "--remote", remote_, "--mount", mnt_,
                                "--cache", cache_, "--control-socket", sock, "--log-file", log,
                                "--metrics", "off", "--log-level", "debug"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  CommandResult st = runCommand({hotshardBinary(), "status", "--socket", sock, "--json"});
  ASSERT_EQ(st.exit_code, 0) << st.out;
  pid_t pid = json::parse(st.out, nullptr, false).value("pid", 0);
  ASSERT_GT(pid, 0) << st.out;
  ASSERT_EQ(::rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_EQ(::kill(pid, SIGHUP), 0);
  for (int i = 0; i < 500 && !fs::exists(log); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(fs::exists(log)) << "no new log file after SIGHUP";
  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(::kill(pid, 0), 0) << "the daemon did not stop";
  std::string fresh = readFile(log);
  EXPECT_NE(fresh.find("reopened the log file"), std::string::npos) << fresh;
  EXPECT_NE(fresh.find("stopped;"), std::string::npos) << fresh;
  EXPECT_EQ(readFile(log + ".1").find("stopped;"), std::string::npos);
  EXPECT_FALSE(isHotshardMount(mnt_));
}

// `hotshard stop`: the same clean stop as SIGTERM, and it waits for it.
TEST_F(IntegrationCliDaemon, StopStopsTheDaemonAndWaitsUntilTheMountIsGone) {
  writeFile(remote_ + "/d/f", "x");
  startDaemon();
  CommandResult r = runCommand({hotshardBinary(), "stop", "--mount", mnt_});
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("is unmounted"), std::string::npos) << r.out;
  EXPECT_FALSE(isHotshardMount(mnt_)) << "stop returned before the mount went";
  EXPECT_EQ(daemon_->waitExit(10), 0) << daemon_->log();
  EXPECT_EQ(readFile(mnt_ + "/d/f"), "") << "the mount point is as before: empty";
  r = runCommand({hotshardBinary(), "stop", mnt_});
  EXPECT_EQ(r.exit_code, 3) << r.out;  // no daemon serves it any more
}

TEST_F(IntegrationCliDaemon, StopTakesAPathUnderTheMount) {
  writeFile(remote_ + "/d/f", "x");
  startDaemon();
  CommandResult r = runCommand({hotshardBinary(), "stop", mnt_ + "/d", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out, nullptr, false).value("mount", ""), mnt_) << r.out;
  EXPECT_FALSE(isHotshardMount(mnt_));
  EXPECT_EQ(daemon_->waitExit(10), 0) << daemon_->log();
}

// `stat DIR` walks it as warm does: every regular file below, one line each.
TEST_F(IntegrationCliDaemon, StatOfADirectoryShowsEveryFileBelowIt) {
  writeFile(remote_ + "/d/a", "1");
  writeFile(remote_ + "/d/sub/b", "22");
  writeFile(remote_ + "/d/sub/deeper/c", "333");
  writeFile(remote_ + "/one/only", "4444");
  startDaemon();
  CommandResult r = hs({"stat", mnt_ + "/d"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const char* f : {"/d/a", "/d/sub/b", "/d/sub/deeper/c"}) {
    EXPECT_NE(r.out.find("remote     " + mnt_ + f + "  "), std::string::npos) << f << r.out;
  }
  EXPECT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 3) << r.out;
  r = hs({"stat", mnt_ + "/d", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  json j = json::parse(r.out, nullptr, false);
  ASSERT_TRUE(j.is_array()) << r.out;
  ASSERT_EQ(j.size(), 3u) << r.out;
  EXPECT_EQ(j[2].value("path", ""), mnt_ + "/d/sub/deeper/c");
  EXPECT_EQ(j[2].value("rel", ""), "d/sub/deeper/c");
  EXPECT_EQ(j[2].value("size", 0), 3);
  // A directory holding one file is still a directory: an array.
  j = json::parse(hs({"stat", mnt_ + "/one", "--json"}).out, nullptr, false);
  EXPECT_TRUE(j.is_array() && j.size() == 1) << j.dump();
  // One file: the object itself, as before.
  j = json::parse(hs({"stat", mnt_ + "/one/only", "--json"}).out, nullptr, false);
  EXPECT_EQ(j.value("size", 0), 4) << j.dump();
}

// The daemon raises its soft descriptor limit (1024 here) to the hard one, and
// logs it; a walk of 3,000 files sees them all (inode_fds_test.cc: at a hard
// limit of 1024 too).
TEST_F(IntegrationCliDaemon, TheDaemonRaisesItsDescriptorLimitForBigTrees) {
  struct rlimit rl;
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &rl), 0);
  HS_REQUIRE(rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= 8192, "needs a hard limit >= 8192");
  for (int d = 0; d < 30; d++) {
    fs::create_directories(remote_ + "/t/d" + std::to_string(d));
    for (int f = 0; f < 100; f++) {
      std::string p = remote_ + "/t/d" + std::to_string(d) + "/f" + std::to_string(f);
      int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ASSERT_GE(fd, 0) << p;
      ::close(fd);
    }
  }
  startDaemonWith({.mount = mnt_,
                   .extra_args = {"--placement", "manual", "--scrub-rate", "0"},
                   .fd_soft_limit = 1024});
  auto t0 = std::chrono::steady_clock::now();
  int seen = 0;
  std::string first_error;
  for (int d = 0; d < 30; d++) {
    for (int f = 0; f < 100; f++) {
      std::string p = mnt_ + "/t/d" + std::to_string(d) + "/f" + std::to_string(f);
      struct stat st;
      if (::stat(p.c_str(), &st) == 0) {
        seen++;
      } else if (first_error.empty()) {
        first_error = p + ": " + std::strerror(errno);
      }
    }
  }
  EXPECT_EQ(seen, 3000) << first_error;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_NE(daemon_->log().find("descriptor limit"), std::string::npos);
}

}  // namespace
}  // namespace hotshard::testing
