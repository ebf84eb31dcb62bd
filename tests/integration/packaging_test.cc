// Packaging: `make install` lays out the binary, the systemd unit, the example
// config and the logrotate snippet; systemd accepts the unit; the daemon tells
// systemd (NOTIFY_SOCKET) it is ready only once the mount answers, and that it
// is stopping on SIGTERM. Run from the repository root, as the tests are.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;

// `make install` (or another target) of this checkout, installing the binary
// under test as it is: -o keeps make from rebuilding it.
CommandResult makeTarget(const std::string& target, const std::vector<std::string>& vars) {
  std::vector<std::string> argv = {"make",
                                   "-C",
                                   fs::current_path().string(),
                                   "--no-print-directory",
                                   "-o",
                                   hotshardBinary(),
                                   "BIN=" + hotshardBinary(),
                                   target};
  argv.insert(argv.end(), vars.begin(), vars.end());
  return runCommand(argv, 120);
}

mode_t modeOf(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

class IntegrationPackaging : public ::testing::Test {
 protected:
  void SetUp() override {
    HS_REQUIRE_ROOT();
    ASSERT_TRUE(fs::exists("tools/packaging/hotshard@.service"))
        << "run the tests from the repository root";
  }
  TempDir tmp_;
};

TEST_F(IntegrationPackaging, InstallNeedsNoTestsNoPackagesOnlyTheBinary) {
  auto dry = runCommand({"make", "-C", fs::current_path().string(), "--no-print-directory", "-n",
                         "install", "DESTDIR=" + tmp_.path()});
  ASSERT_EQ(dry.exit_code, 0) << dry.out;
  EXPECT_EQ(dry.out.find("deps.sh"), std::string::npos) << dry.out;
  EXPECT_EQ(dry.out.find("apt-get"), std::string::npos) << dry.out;
  EXPECT_EQ(dry.out.find("hotshard-tests"), std::string::npos) << dry.out;
  EXPECT_EQ(dry.out.find("hotshard-readbench"), std::string::npos) << dry.out;
}

TEST_F(IntegrationPackaging, InstallLaysOutEverythingAndUninstallRemovesIt) {
  const std::string root = tmp_.path();
  auto r = makeTarget("install", {"DESTDIR=" + root, "PREFIX=/usr"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string bin = root + "/usr/bin/hotshard",
                    unit = root + "/usr/lib/systemd/system/hotshard@.service",
                    example = root + "/etc/hotshard/hotshard.toml.example",
                    logrotate = root + "/etc/logrotate.d/hotshard";
  EXPECT_EQ(modeOf(bin), 0755u);
  EXPECT_EQ(readFile(bin), readFile(hotshardBinary()));
  EXPECT_EQ(modeOf(unit), 0644u);
  EXPECT_EQ(modeOf(example), 0644u);
  EXPECT_EQ(modeOf(logrotate), 0644u);
  const std::string unit_text = readFile(unit);
  EXPECT_NE(unit_text.find("\nExecStart=/usr/bin/hotshard run --foreground --config "
                           "/etc/hotshard/%i.toml\n"),
            std::string::npos)
      << unit_text;
  EXPECT_EQ(unit_text.find("/usr/local"), std::string::npos) << unit_text;
  EXPECT_NE(unit_text.find("\nType=notify\n"), std::string::npos);
  EXPECT_EQ(readFile(example), readFile("tools/packaging/hotshard.toml.example"));
  const std::string helper = root + "/sbin/mount.hotshard";
  EXPECT_EQ(modeOf(helper), 0755u);
  EXPECT_NE(readFile(helper).find("HOTSHARD=${HOTSHARD:-/usr/bin/hotshard}"), std::string::npos);
  const std::string fuse_helper = root + "/sbin/mount.fuse.hotshard";
  EXPECT_TRUE(fs::is_symlink(fuse_helper));
  if (fs::is_symlink(fuse_helper)) EXPECT_EQ(fs::read_symlink(fuse_helper), "mount.hotshard");
  const std::string man1 = root + "/usr/share/man/man1/", man5 = root + "/usr/share/man/man5/";
  std::vector<std::string> man_pages;
  for (const auto& e : fs::directory_iterator("tools/packaging/man")) {
    const std::string name = e.path().filename().string();
    man_pages.push_back((name.back() == '5' ? man5 : man1) + name);
    EXPECT_EQ(modeOf(man_pages.back()), 0644u) << man_pages.back();
    EXPECT_EQ(readFile(man_pages.back()), readFile(e.path())) << name;
  }
  EXPECT_TRUE(fs::exists(man1 + "hotshard.1"));
  EXPECT_TRUE(fs::exists(man1 + "hotshard-run.1"));
  EXPECT_TRUE(fs::exists(man5 + "hotshard.toml.5"));
  const std::string rotate = readFile(logrotate);
  EXPECT_NE(rotate.find("/var/log/hotshard/*.log"), std::string::npos) << rotate;
  EXPECT_NE(rotate.find("pkill -HUP"), std::string::npos) << rotate;

  // A config of one's own next to the example stays on uninstall.
  writeFile(root + "/etc/hotshard/mine.toml", "remote = \"/r\"\n");
  r = makeTarget("uninstall", {"DESTDIR=" + root, "PREFIX=/usr"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  for (const auto& p : {bin, unit, example, logrotate, helper}) EXPECT_FALSE(fs::exists(p)) << p;
  EXPECT_FALSE(fs::exists(fs::symlink_status(fuse_helper))) << fuse_helper;
  for (const auto& p : man_pages) EXPECT_FALSE(fs::exists(p)) << p;
  EXPECT_TRUE(fs::exists(root + "/etc/hotshard/mine.toml"));
}

// systemd-analyze checks that ExecStart's binary exists, so the unit is
// installed with PREFIX inside the temporary directory (it names that path).
TEST_F(IntegrationPackaging, SystemdAnalyzeVerifyAcceptsTheUnit) {
  HS_REQUIRE(::access("/usr/bin/systemd-analyze", X_OK) == 0, "needs systemd-analyze");
  const std::string prefix = tmp_ / "usr";
  auto r = makeTarget("install", {"PREFIX=" + prefix, "SYSCONFDIR=" + (tmp_ / "etc")});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::string unit = prefix + "/lib/systemd/system/hotshard@.service";
  ASSERT_NE(readFile(unit).find("ExecStart=" + prefix + "/bin/hotshard run"), std::string::npos);
  // Unknown keys are only warnings: any output at all fails the test.
  auto v = runCommand({"systemd-analyze", "verify", unit + ":hotshard@test.service"});
  EXPECT_EQ(v.exit_code, 0) << v.out;
  EXPECT_EQ(v.out, "") << v.out;
  // And it would notice a binary that is not there.
  fs::remove(prefix + "/bin/hotshard");
  v = runCommand({"systemd-analyze", "verify", unit + ":hotshard@test.service"});
  EXPECT_NE(v.exit_code, 0) << v.out;
}

TEST(IntegrationCli, PrintConfigPrintsTheShippedExample) {
  auto r = runCommand({hotshardBinary(), "run", "--print-config"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(r.out, readFile("tools/packaging/hotshard.toml.example"));
}

// A unix datagram socket as systemd's notify socket.
class NotifySocket {
 public:
  explicit NotifySocket(std::string path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~NotifySocket() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return ok_; }
  // The next message, or "" after timeout.
  std::string next(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return "";
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool ok_ = false;
};

class IntegrationNotify : public MountFixture {};

TEST_F(IntegrationNotify, ReadyOnlyOnceTheMountAnswersAndStoppingOnSigterm) {
  NotifySocket notify(tmp_ / "notify.sock");
  ASSERT_TRUE(notify.ok()) << std::strerror(errno);
  writeFile(remote_ + "/hello", "hello\n");
  const std::string sock = tmp_ / "control.sock", log = tmp_ / "daemon.log";
  std::vector<std::string> argv = {hotshardBinary(),
                                   "run",
                                   "--foreground",
                                   "--remote",
                                   remote_,
                                   "--mount",
                                   mnt_,
                                   "--cache",
                                   cache_,
                                   "--metrics",
                                   "off",
                                   "--control-socket",
                                   sock};
  const std::string env = "NOTIFY_SOCKET=" + (tmp_ / "notify.sock");
  pid_t pid = ::fork();
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    ::putenv(const_cast<char*>(env.c_str()));
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ASSERT_GT(pid, 0);
  // The first message is READY=1, and when it comes the mount serves and the
  // control socket answers.
  std::string msg = notify.next(std::chrono::seconds(20));
  bool mounted = isHotshardMount(mnt_);
  std::string hello = readFile(mnt_ + "/hello");
  auto status = runCommand({hotshardBinary(), "status", "--socket", sock});
  ::kill(pid, SIGTERM);
  std::string stopping = notify.next(std::chrono::seconds(10));
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  if (isHotshardMount(mnt_)) ::umount2(mnt_.c_str(), MNT_DETACH);
  EXPECT_EQ(msg, "READY=1") << readFile(log);
  EXPECT_TRUE(mounted);
  EXPECT_EQ(hello, "hello\n");
  EXPECT_EQ(status.exit_code, 0) << status.out;
  EXPECT_EQ(stopping, "STOPPING=1") << readFile(log);
  EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) << readFile(log);
  EXPECT_FALSE(isHotshardMount(mnt_));
  EXPECT_EQ(notify.next(std::chrono::milliseconds(100)), "") << "nothing after STOPPING=1";
}

class IntegrationLogrotate : public MountFixture {};

// The shipped logrotate snippet, run by logrotate on a background daemon's log:
// its postrotate pattern names the daemon, and the daemon goes on in a fresh
// file. The test points the snippet at its own directory and, so as not to
// signal other tests' daemons, turns the pkill into a kill of this one.
TEST_F(IntegrationLogrotate, TheShippedSnippetRotatesABackgroundDaemonsLog) {
  HS_REQUIRE(::access("/usr/sbin/logrotate", X_OK) == 0, "needs logrotate");
  const std::string logs = tmp_ / "logs", log = logs + "/hs.log", sock = tmp_ / "hs.sock";
  fs::create_directories(logs);
  ::chmod(logs.c_str(), 0750);  // logrotate refuses a directory others may write
  auto r = runCommand({hotshardBinary(), "run", "--remote", remote_, "--mount", mnt_, "--cache",
                       cache_, "--control-socket", sock, "--log-file", log, "--metrics", "off"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  auto st = runCommand({hotshardBinary(), "status", "--socket", sock, "--json"});
  pid_t pid = json::parse(st.out, nullptr, false).value("pid", 0);
  ASSERT_GT(pid, 0) << st.out;

  std::string snippet = readFile("tools/packaging/hotshard.logrotate");
  const std::string pkill = "pkill -HUP -f ";
  size_t at = snippet.find(pkill), end = snippet.find(" || true", at);
  ASSERT_NE(at, std::string::npos) << snippet;
  std::string pattern = snippet.substr(at + pkill.size() + 1, end - at - pkill.size() - 2);
  auto matched = runCommand({"pgrep", "-f", pattern});
  EXPECT_NE(("\n" + matched.out).find("\n" + std::to_string(pid) + "\n"), std::string::npos)
      << "'" << pattern << "' does not match the daemon: " << matched.out;
  snippet.replace(at, end - at, "kill -HUP " + std::to_string(pid));
  const std::string pat = "/var/log/hotshard/*.log";
  snippet.replace(snippet.find(pat), pat.size(), logs + "/*.log");
  writeFile(tmp_ / "logrotate.conf", snippet);
  auto rot =
      runCommand({"logrotate", "-f", "-s", tmp_ / "logrotate.state", tmp_ / "logrotate.conf"});
  EXPECT_EQ(rot.exit_code, 0) << rot.out;
  for (int i = 0; i < 500 && readFile(log).find("reopened") == std::string::npos; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(fs::exists(log + ".1")) << rot.out;
  EXPECT_NE(readFile(log).find("SIGHUP: reopened the log file"), std::string::npos)
      << readFile(log);
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(::kill(pid, 0), 0) << "the daemon did not stop";
  EXPECT_FALSE(isHotshardMount(mnt_));
}

class IntegrationMountHelper : public MountFixture {
 protected:
  // tools/packaging/mount.hotshard REMOTE MNT ARGS..., as mount(8) runs it.
  CommandResult helper(std::vector<std::string> args) {
    std::vector<std::string> argv = {"env", "HOTSHARD=" + hotshardBinary(),
                                     "tools/packaging/mount.hotshard", remote_, mnt_};
    argv.insert(argv.end(), args.begin(), args.end());
    return runCommand(argv);
  }
  // umount(8) of the mount, which stops the daemon `pid`.
  void umountExpectingStop(pid_t pid) {
  auto um = runCommand({"umount", mnt_});
  EXPECT_EQ(um.exit_code, 0) << um.out;
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_NE(::kill(pid, 0), 0) << "the daemon did not stop after umount";
  EXPECT_FALSE(isHotshardMount(mnt_));
  }
};

// An fstab line's options: hotshard's as KEY=VALUE, mount's own skipped; the
// helper returns with the mount ready, and an umount stops the daemon.
TEST_F(IntegrationMountHelper, MountsWithFstabOptionsAndUmountStopsIt) {
  writeFile(remote_ + "/hello", "hello\n");
  const std::string sock = tmp_ / "hs.sock";
  auto r =
      helper({"-n", "-o",
              "rw,_netdev,nofail,x-systemd.automount,cache=" + cache_ + ",control-socket=" + sock +
                  ",log-file=" + (tmp_ / "hs.log") + ",metrics=off,consistency=ttl=30"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(isHotshardMount(mnt_));
  EXPECT_EQ(readFile(mnt_ + "/hello"), "hello\n");
  auto st = runCommand({hotshardBinary(), "status", "--socket", sock, "--json"});
  auto status = json::parse(st.out, nullptr, false);
  pid_t pid = status.value("pid", 0);
  ASSERT_GT(pid, 0) << st.out;
  EXPECT_NE(st.out.find("ttl=30"), std::string::npos) << st.out;
  umountExpectingStop(pid);
}

TEST_F(IntegrationMountHelper, RefusesWhatItCannotHonourAndMountsNothing) {
  for (const std::string& opts : {"ro", "cache", "user", "mount=/x", "noexec", "bogus-key=1"}) {
    auto r = helper({"-o", "cache=" + cache_ + ",metrics=off," + opts});
    EXPECT_NE(r.exit_code, 0) << opts << ": " << r.out;
    EXPECT_NE(r.out.find(opts.substr(0, opts.find('='))), std::string::npos)
        << opts << ": " << r.out;
    EXPECT_FALSE(isHotshardMount(mnt_)) << opts;
  }
  EXPECT_EQ(helper({"-f", "-o", "cache=" + cache_}).exit_code, 0);  // -f: pretend
  EXPECT_FALSE(isHotshardMount(mnt_));
}

// `mount -t fuse.hotshard REMOTE MNT -o ...` (or type fuse.hotshard in fstab):
// mount(8) runs /sbin/mount.fuse.hotshard, which `make install` lays out as a
// link to mount.hotshard. mount(8) looks in /sbin only, so this runs the link
// installed into a DESTDIR as mount(8) would (util-linux may add -t TYPE).
TEST_F(IntegrationMountHelper, FuseDotHotshardTypeMountsServesAndUmountsCleanly) {
  TempDir root;
  auto inst = runCommand({"make", "-C", fs::current_path().string(), "--no-print-directory", "-o",
                          hotshardBinary(), "BIN=" + hotshardBinary(), "install",
                          "DESTDIR=" + root.path(), "PREFIX=/usr"},
                         120);
  ASSERT_EQ(inst.exit_code, 0) << inst.out;
  writeFile(remote_ + "/hello", "hello\n");
  const std::string sock = tmp_ / "hs.sock", log = tmp_ / "hs.log";
  auto r = runCommand({"env", "HOTSHARD=" + hotshardBinary(), root.path() + "/sbin/mount.fuse.hotshard",
                       remote_, mnt_, "-o",
                       "cache=" + cache_ + ",consistency=immutable,control-socket=" + sock +
                           ",log-file=" + log + ",metrics=off",
                       "-t", "fuse.hotshard"});
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_TRUE(isHotshardMount(mnt_));
  EXPECT_EQ(readFile(mnt_ + "/hello"), "hello\n");
  auto status = json::parse(
      runCommand({hotshardBinary(), "status", "--socket", sock, "--json"}).out, nullptr, false);
  EXPECT_TRUE(status.value("passthrough", false)) << status.dump();
  EXPECT_GE(status["fuse"].value("opens_passthrough", uint64_t{0}), 1u) << status.dump();
  EXPECT_NE(status.dump().find("immutable"), std::string::npos) << status.dump();
  pid_t pid = status.value("pid", 0);
  ASSERT_GT(pid, 0) << status.dump();
  umountExpectingStop(pid);
  std::string errors, line;
  std::istringstream in(readFile(log));
  while (std::getline(in, line)) {
    if (line.find("[error]") != std::string::npos) errors += line + "\n";
  }
  EXPECT_EQ(errors, "") << readFile(log);
}

// Without NOTIFY_SOCKET (the plain foreground run the other tests make) nothing
// changes: covered by every DaemonProcess test; in the background the daemon
// never notifies, as its parent is told "ok" instead.

}  // namespace
}  // namespace hotshard::testing
