// The supervisor's small pieces that need no mount: where it listens, what a
// worker learns of it, the restart reply. The supervisor itself is tested for
// real in tests/integration/takeover_test.cc.
#include "daemon/supervisor.h"

#include <gtest/gtest.h>
#include <stdlib.h>

namespace hotshard {
namespace {

using json = nlohmann::json;

TEST(Supervisor, ListensBesideTheControlSocketUnderANameTheCliDoesNotTakeForADaemon) {
  EXPECT_EQ(supervisorSocketFor("/run/hotshard/mnt_ds.sock"), "/run/hotshard/mnt_ds.supervisor");
  EXPECT_EQ(supervisorSocketFor("/tmp/x/control"), "/tmp/x/control.supervisor");
  // The CLI lists /run/hotshard/*.sock as daemons (tools/client.cc).
  EXPECT_NE(supervisorSocketFor("/run/hotshard/a.sock").substr(19), ".sock");
}

TEST(Supervisor, AWorkerReadsWhatItsSupervisorSaysInTheEnvironment) {
  ::unsetenv("HOTSHARD_SUPERVISOR_PID");
  EXPECT_FALSE(supervisorInfoFromEnv().has_value()) << "--no-supervisor: none";
  ::setenv("HOTSHARD_SUPERVISOR_PID", "812", 1);
  ::setenv("HOTSHARD_TAKEOVERS", "3", 1);
  ::setenv("HOTSHARD_LAST_TAKEOVER", "worker 977 killed by SIGKILL", 1);
  auto info = supervisorInfoFromEnv();
  ::unsetenv("HOTSHARD_SUPERVISOR_PID");
  ::unsetenv("HOTSHARD_TAKEOVERS");
  ::unsetenv("HOTSHARD_LAST_TAKEOVER");
  ASSERT_TRUE(info.has_value());
  EXPECT_EQ(info->pid, 812);
  EXPECT_EQ(info->takeovers, 3u);
  EXPECT_EQ(info->last_takeover, "worker 977 killed by SIGKILL");
}

TEST(Supervisor, TheRestartReplyRoundTripsAndReadsMissingKeysAsFailure) {
  RestartReply r{.ok = true,
                 .old_pid = 10,
                 .new_pid = 11,
                 .old_binary = "/usr/bin/hotshard",
                 .new_binary = "/usr/bin/hotshard.new",
                 .ready_ms = 42};
  auto back = json(r).get<RestartReply>();
  EXPECT_TRUE(back.ok);
  EXPECT_EQ(back.old_pid, 10);
  EXPECT_EQ(back.new_pid, 11);
  EXPECT_EQ(back.new_binary, "/usr/bin/hotshard.new");
  EXPECT_EQ(back.ready_ms, 42);
  EXPECT_FALSE(back.rolled_back);
  auto empty = json::object().get<RestartReply>();
  EXPECT_FALSE(empty.ok);
}

}  // namespace
}  // namespace hotshard
