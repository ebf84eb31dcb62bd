// Subcommands of the one `hotshard` binary register themselves here, so each room
// adds its commands in its own file and daemon/main.cc needs no edit.
//
//   static hotshard::cli::Registration reg(20, [](CLI::App& app) {
//     auto* cmd = app.add_subcommand("status", "Show the daemon's state");
//     cmd->callback([] { ...; throw CLI::RuntimeError(exit_code); });
//   });
#pragma once

#include <CLI/CLI.hpp>

#include <functional>

namespace hotshard::cli {

using Setup = std::function<void(CLI::App&)>;

// `order` fixes where the command appears in `hotshard --help`.
struct Registration {
  Registration(int order, Setup setup);
};

// Adds every registered subcommand to `app`, in order.
void addRegisteredCommands(CLI::App& app);

// Exit codes shared by all commands.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNoDaemon = 3;

}  // namespace hotshard::cli
