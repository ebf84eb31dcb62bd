#include "tools/commands.h"

namespace hotshard::cli {

void addAllCommands(CLI::App& app) {
  addRunCommand(app);
  addStatusCommand(app);
  addStopCommand(app);
  addRestartCommand(app);
  addWarmCommand(app);
  addEvictCommand(app);
  addPinCommand(app, /*pin=*/true);
  addPinCommand(app, /*pin=*/false);
  addStatCommand(app);
  addVerifyCommand(app);
  addTopCommand(app);
  addTraceCommand(app);
  CLI::App* policy = addPolicyCommand(app);
  addPolicyLiveCommands(policy);
  addCacheCommand(app);
  addProbeCommand(app);
  addManCommand(app);
}

}  // namespace hotshard::cli
