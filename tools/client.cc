#include "tools/client.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "daemon/config.h"
#include "tools/commands.h"

namespace hotshard::cli {

void addTargetOptions(CLI::App* cmd, DaemonTarget& target) {
  cmd->add_option("--mount", target.mount,
                  "Mount point of the daemon to ask (default: the only one running)");
  cmd->add_option("--socket", target.socket, "Control socket path (overrides --mount)");
  cmd->add_flag("--json", target.json, "Print JSON for scripts");
}

namespace {

Result<std::string> findSocket(const DaemonTarget& target) {
  if (!target.socket.empty()) return target.socket;
  if (!target.mount.empty()) return controlSocketFor(target.mount);
  std::vector<std::string> sockets;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kRunDir, ec)) {
    if (entry.path().extension() == ".sock") sockets.push_back(entry.path().string());
  }
  if (sockets.empty()) {
    return makeError(Errc::kNotFound, std::string("no hotshard daemon is running (no socket in ") +
                                          kRunDir + "); start one with 'hotshard run'");
  }
  if (sockets.size() > 1) {
    std::string list;
    for (const auto& s : sockets) list += "\n  " + s;
    return makeError(Errc::kInvalidArgument,
                     "several hotshard daemons are running; choose one with --mount DIR or "
                     "--socket PATH:" + list);
  }
  return sockets.front();
}

}  // namespace

json callDaemon(const std::string& cmd_name, const DaemonTarget& target, const json& request,
                const std::function<void(const json&)>& on_progress, int timeout_ms) {
  auto fail = [&](const std::string& why, int code) -> json {
    std::fprintf(stderr, "hotshard %s: %s\n", cmd_name.c_str(), why.c_str());
    throw CLI::RuntimeError(code);
  };
  auto socket = findSocket(target);
  if (!socket.ok()) {
    return fail(socket.error().message,
                socket.error().code == Errc::kNotFound ? kExitNoDaemon : kExitUsage);
  }
  auto client = ControlClient::connect(*socket);
  if (!client.ok()) {
    int err = client.error().sys_errno;
    if (err == ENOENT || err == ECONNREFUSED) {
      return fail("no hotshard daemon answers on " + *socket +
                      (target.mount.empty() ? "" : " (is one running for " + target.mount + "?)"),
                  kExitNoDaemon);
    }
    return fail(client.error().message, kExitFailure);
  }
  auto reply = client->call(request, on_progress, timeout_ms);
  if (!reply.ok()) return fail(reply.error().message, kExitFailure);
  return *reply;
}

}  // namespace hotshard::cli
