// tools/: the `hotshard` command line. Every subcommand is added by one function
// here, called in order by main() (tools/main.cc), so `hotshard --help` lists
// them in that order and nothing depends on static initialization. `run` starts
// the daemon (daemon/); every other command but `policy simulate|generate|
// convert|list`, `cache` and `probe` (which work offline) is a client of a
// running daemon's control socket.
//
// Each add function adds its subcommand(s) to `app` and sets their callbacks; a
// callback that fails throws CLI::RuntimeError with one of the exit codes below.
// main() applies the table: any other CLI11 error (a parse or validation error,
// a missing subcommand or argument, CLI::ValidationError thrown by a callback)
// exits kExitUsage with CLI11's message.
#pragma once

#include <CLI/CLI.hpp>

namespace hotshard::cli {

// Exit codes shared by all commands (docs/user-guide.md lists them).
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitNoDaemon = 3;

void addRunCommand(CLI::App& app);     // run_command.cc
void addStatusCommand(CLI::App& app);  // status_command.cc
void addStopCommand(CLI::App& app);    // stop_command.cc
void addRestartCommand(CLI::App& app);  // restart_command.cc
// cache_commands.cc: warm, evict, pin/unpin, stat, verify
void addWarmCommand(CLI::App& app);
void addEvictCommand(CLI::App& app);
void addPinCommand(CLI::App& app, bool pin);  // pin, or unpin when !pin
void addStatCommand(CLI::App& app);
void addVerifyCommand(CLI::App& app);
// heat_commands.cc: top, trace record, and `policy show|set` under `policy`
void addTopCommand(CLI::App& app);
void addTraceCommand(CLI::App& app);
void addPolicyLiveCommands(CLI::App* policy);
// policy_cli.cc: `policy simulate|generate|convert|list`; returns `policy`
CLI::App* addPolicyCommand(CLI::App& app);
void addCacheCommand(CLI::App& app);  // cache_cli.cc: offline `cache ls|verify|promote`
void addProbeCommand(CLI::App& app);  // probe_command.cc: the probes alone, no daemon
// man_command.cc: hidden `man [PAGE]`, the manual pages in roff from the commands
// above (and runConfigItems()); added last, so it sees them all.
void addManCommand(CLI::App& app);

// Adds every command above, in `hotshard --help` order.
void addAllCommands(CLI::App& app);

}  // namespace hotshard::cli
