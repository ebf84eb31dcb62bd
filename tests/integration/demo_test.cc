// make run (tools/run-demo.sh): two demos with two folders run side by side
// (each its own control socket, metrics off), and Ctrl-C, which the terminal
// sends to the whole process group, unmounts and ends the script with 0, so
// make reports no "Error 130". SAMPLE=tiny keeps the generated dataset small.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

// tools/run-demo.sh with DEMO=dir, in a process group of its own (as a
// terminal's foreground job), its output into dir.out.
pid_t startDemo(const std::string& dir) {
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::setsid();
  ::setenv("DEMO", dir.c_str(), 1);
  ::setenv("SAMPLE", "tiny", 1);
  ::setenv("HOTSHARD", hotshardBinary().c_str(), 1);
  ::unsetenv("REMOTE");
  ::unsetenv("MOUNT");
  ::unsetenv("CACHE");
  ::unsetenv("METRICS");
  FILE* out = std::freopen((dir + ".out").c_str(), "w", stdout);
  if (out == nullptr || ::dup2(STDOUT_FILENO, STDERR_FILENO) < 0) ::_exit(126);
  ::execl("tools/run-demo.sh", "run-demo.sh", static_cast<char*>(nullptr));
  ::_exit(127);
}

bool waitFor(const std::string& file, const std::string& text, pid_t pid) {
  for (int i = 0; i < 600; ++i) {
    if (readFile(file).find(text) != std::string::npos) return true;
    if (::waitpid(pid, nullptr, WNOHANG) == pid) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

// Exit status of pid within 30 s, or -1 (then the group is killed).
int exitStatus(pid_t pid) {
  for (int i = 0; i < 600; ++i) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  ::kill(-pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  return -1;
}

TEST(IntegrationDemo, TwoDemosRunSideBySideAndCtrlCEndsEachWithZero) {
  HS_REQUIRE_ROOT();
  TempDir tmp;
  const std::string a = tmp / "a", b = tmp / "b";
  pid_t pa = startDemo(a), pb = startDemo(b);
  ASSERT_GT(pa, 0);
  ASSERT_GT(pb, 0);
  const bool up_a = waitFor(a + ".out", "hotshard is serving", pa);
  const bool up_b = waitFor(b + ".out", "hotshard is serving", pb);
  EXPECT_TRUE(up_a) << readFile(a + ".out");
  EXPECT_TRUE(up_b) << readFile(b + ".out");
  if (up_a && up_b) {
    for (const std::string& d : {a, b}) {
      EXPECT_TRUE(isHotshardMount(d + "/mnt")) << d;
      EXPECT_EQ(readFile(d + "/mnt/README.txt"), readFile(d + "/remote/README.txt"));
      auto st = runCommand({hotshardBinary(), "status", "--socket", d + "/control.sock"});
      EXPECT_EQ(st.exit_code, 0) << st.out;
      EXPECT_NE(st.out.find(d + "/mnt"), std::string::npos) << st.out;
    }
  }
  // Ctrl-C: SIGINT to the foreground process group, the script and the daemon.
  ::kill(-pa, SIGINT);
  ::kill(-pb, SIGINT);
  EXPECT_EQ(exitStatus(pa), 0) << readFile(a + ".out");
  EXPECT_EQ(exitStatus(pb), 0) << readFile(b + ".out");
  EXPECT_FALSE(isHotshardMount(a + "/mnt"));
  EXPECT_FALSE(isHotshardMount(b + "/mnt"));
  EXPECT_EQ(readFile(a + ".out").find("[error]"), std::string::npos) << readFile(a + ".out");
}

}  // namespace
}  // namespace hotshard::testing
