#include "tools/client.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "base/paths.h"
#include "daemon/config.h"
#include "daemon/control_protocol.h"
#include "fuse/mount.h"
#include "tools/commands.h"

namespace hotshard::cli {

void addTargetOptions(CLI::App* cmd, DaemonTarget& target) {
  cmd->add_option("--mount", target.mount,
                  "Mount point (or a path under it) of the daemon to ask (default: the one "
                  "serving the paths given, else the only one running)");
  cmd->add_option("--socket", target.socket, "Control socket path (overrides --mount)");
  cmd->add_flag("--json", target.json, "Print JSON for scripts");
}

namespace {

// The hotshard mount that serves `path` (the deepest mount covering it, the
// last mounted at that point), from this process's mount table; "" if none.
std::string hotshardMountServing(const std::string& path) {
  auto table = fuse::readMountTable();
  if (!table.ok()) return "";
  std::string p = normalPath(path);
  const fuse::MountEntry* best = nullptr;
  for (const auto& e : *table) {
    if (!pathIsWithin(p, e.mountpoint)) continue;
    if (best == nullptr || e.mountpoint.size() >= best->mountpoint.size()) best = &e;
  }
  return best != nullptr && best->fstype == fuse::kFsType ? best->mountpoint : "";
}

}  // namespace

// --socket; else the daemon of the hotshard mount that serves --mount or, with
// no --mount, the request's first path: its socket, or the link to it, is at
// controlSocketFor(mount point) (docs/user-guide.md); else the only one running.
Result<std::string> findSocket(const DaemonTarget& target, const json& request) {
  if (!target.socket.empty()) return target.socket;
  std::string path = target.mount;
  const json paths = request.value(control::kPaths, json::array());
  if (path.empty() && !paths.empty() && paths[0].is_string()) path = paths[0];
  if (!path.empty()) {
    std::string mount = hotshardMountServing(path);
    if (!mount.empty()) return controlSocketFor(mount);
    if (!target.mount.empty()) return controlSocketFor(target.mount);
  }
  std::vector<std::string> sockets;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(kRunDir, ec)) {
    // A link whose socket is gone was left by a daemon killed with SIGKILL.
    if (entry.path().extension() == ".sock" && std::filesystem::exists(entry.path(), ec)) {
      sockets.push_back(entry.path().string());
    }
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

json callDaemon(const std::string& cmd_name, const DaemonTarget& target, const json& request,
                const std::function<void(const json&)>& on_progress, int timeout_ms) {
  auto fail = [&](const std::string& why, int code) -> json {
    std::fprintf(stderr, "hotshard %s: %s\n", cmd_name.c_str(), why.c_str());
    throw CLI::RuntimeError(code);
  };
  auto socket = findSocket(target, request);
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
