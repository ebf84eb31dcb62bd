// What every client subcommand shares: finding the daemon's control socket
// (--socket, --mount, or the only one running) and calling it.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "daemon/control.h"

namespace hotshard::cli {

struct DaemonTarget {
  std::string mount;   // --mount DIR
  std::string socket;  // --socket PATH
  bool json = false;   // --json
};

// Adds --mount, --socket and --json to cmd.
void addTargetOptions(CLI::App* cmd, DaemonTarget& target);

// The control socket of the daemon to ask: --socket; else that of the hotshard
// mount serving --mount or, without it, the request's first path; else the only
// one running (kNotFound when none is).
Result<std::string> findSocket(const DaemonTarget& target, const json& request);

// Sends request to the chosen daemon; on failure prints "hotshard CMD: why" and
// throws CLI::RuntimeError with the matching exit code.
json callDaemon(const std::string& cmd_name, const DaemonTarget& target, const json& request,
                const std::function<void(const json&)>& on_progress = nullptr,
                int timeout_ms = 30000);

}  // namespace hotshard::cli
