// `hotshard stop [PATH]`: stops a running daemon as SIGTERM does (it unmounts,
// finishes what it is doing and exits 0), and waits until it has.
#include <chrono>
#include <cstdio>
#include <thread>

#include "base/paths.h"
#include "daemon/control_protocol.h"
#include "fuse/mount.h"
#include "tools/client.h"
#include "tools/commands.h"

namespace hotshard::cli {
namespace {

struct StopArgs {
  DaemonTarget target;
  std::string path;  // PATH: --mount by another name
  int timeout_s = 30;
};

// Whether the hotshard mount (dev) is still on top at mount.
bool stillMounted(const std::string& mount, dev_t dev) {
  auto table = fuse::readMountTable();
  if (!table.ok()) return false;
  auto top = fuse::topMountAt(*table, mount);
  return top && top->fstype == fuse::kFsType && (dev == 0 || top->dev == dev);
}

bool socketAnswers(const std::string& socket) { return ControlClient::connect(socket).ok(); }

void stopDaemon(const StopArgs& args) {
  DaemonTarget target = args.target;
  if (target.mount.empty() && !args.path.empty()) target.mount = normalPath(args.path);
  auto socket = findSocket(target, control::request(control::kStop));
  // callDaemon reports a missing daemon with its exit code.
  json status = callDaemon(control::kStop, target, control::request(control::kStatus));
  std::string mount = status.value("mount", "");
  long pid = status.value(control::kPid, 0L);
  dev_t dev = 0;
  if (auto table = fuse::readMountTable(); table.ok()) {
    if (auto top = fuse::topMountAt(*table, mount)) dev = top->dev;
  }
  callDaemon(control::kStop, target, control::request(control::kStop));
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(args.timeout_s);
  while (stillMounted(mount, dev) || (socket.ok() && socketAnswers(*socket))) {
    if (std::chrono::steady_clock::now() >= deadline) {
      std::fprintf(stderr,
                   "hotshard stop: the daemon (pid %ld) has not stopped within %d s; %s is %s "
                   "(see its log; 'kill -9 %ld' and 'umount -l %s' force it)\n",
                   pid, args.timeout_s, mount.c_str(),
                   stillMounted(mount, dev) ? "still mounted" : "unmounted", pid, mount.c_str());
      throw CLI::RuntimeError(kExitFailure);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (target.json) {
    std::printf("%s\n", json{{"stopped", true}, {"pid", pid}, {"mount", mount}}.dump().c_str());
  } else {
    std::printf("stopped hotshard (pid %ld); %s is unmounted\n", pid, mount.c_str());
  }
}

}  // namespace

void addStopCommand(CLI::App& app) {
  auto args = std::make_shared<StopArgs>();
  auto* cmd = app.add_subcommand(
      "stop", "Stop a running hotshard daemon cleanly (as SIGTERM does) and wait until it is gone");
  cmd->add_option("path", args->path,
                  "Mount point (or a path under it) of the daemon to stop (default: the only "
                  "one running)");
  addTargetOptions(cmd, args->target);
  cmd->add_option("--timeout", args->timeout_s, "Seconds to wait for the daemon to go")
      ->default_val(30)
      ->check(CLI::Range(1, 3600));
  cmd->footer(
      "Examples:\n"
      "  hotshard stop /mnt/datasets\n"
      "  hotshard stop            # the only daemon running");
  cmd->callback([args] { stopDaemon(*args); });
}

}  // namespace hotshard::cli
