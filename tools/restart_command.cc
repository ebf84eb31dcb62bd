// `hotshard restart [--binary PATH]`: hands the live mount to a new worker
// process, possibly of a new binary, without unmounting (docs/restart.md). The
// binary is checked here first (it runs `--version`), then the supervisor of
// the mount does the hand-over on its own socket and answers when the new
// worker serves, or when the old binary serves again after a rollback.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "base/fd.h"
#include "daemon/config.h"
#include "daemon/control_protocol.h"
#include "daemon/supervisor.h"
#include "tools/client.h"
#include "tools/commands.h"

namespace hotshard::cli {
namespace {

struct RestartArgs {
  DaemonTarget target;
  std::string config;  // --config FILE: the daemon's TOML file names its mount
  std::string binary;
  int timeout_s = 60;
};

[[noreturn]] void fail(const std::string& why, int code = kExitFailure) {
  std::fprintf(stderr, "hotshard restart: %s\n", why.c_str());
  throw CLI::RuntimeError(code);
}

// `PATH --version`, bounded: its first line, or why it is no hotshard binary.
Result<std::string> versionOf(const std::string& path) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) return lastSysError("pipe");
  UniqueFd rd(fds[0]), wr(fds[1]);
  pid_t pid = ::fork();
  if (pid < 0) return lastSysError("fork");
  if (pid == 0) {
    ::dup2(wr.get(), STDOUT_FILENO);
    ::dup2(wr.get(), STDERR_FILENO);
    ::execl(path.c_str(), path.c_str(), "--version", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  wr.reset();
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  char buf[256];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{rd.get(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return makeError(Errc::kIo, path + " --version: no answer within 10 s");
    }
    ssize_t n = ::read(rd.get(), buf, sizeof(buf));
    if (n <= 0) break;
    if (out.size() < 4096) out.append(buf, static_cast<size_t>(n));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  std::string line = out.substr(0, out.find('\n'));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return makeError(Errc::kInvalidArgument,
                     path + " --version failed (" +
                         (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                            : std::string("killed by a signal")) +
                         "): " + line);
  }
  return line;
}

// What the supervisor checks again before it runs it (daemon/supervisor.h).
Status checkBinary(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return lastSysError("binary " + path);
  if (!S_ISREG(st.st_mode) || ::access(path.c_str(), X_OK) != 0) {
    return makeError(Errc::kInvalidArgument, "binary " + path + " is not an executable file");
  }
  if (::geteuid() == 0 && st.st_uid != 0) {
    return makeError(Errc::kPermission, "binary " + path + " is owned by uid " +
                                            std::to_string(st.st_uid) + ", not root");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return makeError(Errc::kPermission, "binary " + path + " is writable by group or others");
  }
  return Ok{};
}

// The supervisor's answer to one restart request, waited for at most timeout_ms.
Result<RestartReply> askSupervisor(const std::string& socket, const json& request, int timeout_ms) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket.size() >= sizeof(addr.sun_path)) return makeError(Errc::kInvalidArgument, "socket path too long");
  std::memcpy(addr.sun_path, socket.c_str(), socket.size() + 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return makeError(Errc::kNotFound, "no supervisor answers on " + socket + " (" +
                                          std::strerror(errno) +
                                          "): is the daemon running with --no-supervisor?");
  }
  std::string line = request.dump() + "\n";
  if (::send(fd.get(), line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    return lastSysError("send to " + socket);
  }
  std::string reply;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  char c;
  while (reply.find('\n') == std::string::npos) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    pollfd p{fd.get(), POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) {
      return makeError(Errc::kIo, "the supervisor did not answer within " +
                                           std::to_string(timeout_ms / 1000) + " s");
    }
    if (::read(fd.get(), &c, 1) != 1) {
      return makeError(Errc::kIo, "the supervisor closed the connection without an answer");
    }
    reply.push_back(c);
  }
  json j = json::parse(reply, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return makeError(Errc::kIo, "bad answer from the supervisor: " + reply);
  return j.get<RestartReply>();
}

// The daemon's status, waited for (the new worker's control socket may be a
// moment behind its first request served).
StatusSnapshot statusAfter(const std::string& socket) {
  for (int i = 0; i < 100; i++) {
    if (auto c = ControlClient::connect(socket); c.ok()) {
      if (auto r = c->call(control::request(control::kStatus)); r.ok()) return r->get<StatusSnapshot>();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return StatusSnapshot{};
}

// The control socket a `hotshard run --config FILE` daemon listens on.
std::string socketOfConfig(const std::string& file) {
  RunConfig cfg;
  if (Status st = applyConfigFile(file, {}, cfg); !st.ok()) fail(st.error().message, kExitUsage);
  if (Status st = finalizeRunConfig(cfg); !st.ok()) fail(file + ": " + st.error().message, kExitUsage);
  return cfg.control_socket;
}

void restart(RestartArgs args) {
  if (!args.config.empty() && args.target.socket.empty()) {
    args.target.socket = socketOfConfig(args.config);
  }
  auto socket = findSocket(args.target, control::request(control::kStatus));
  if (!socket.ok()) {
    fail(socket.error().message, socket.error().code == Errc::kNotFound ? kExitNoDaemon : kExitUsage);
  }
  json before_json = callDaemon("restart", args.target, control::request(control::kStatus));
  auto before = before_json.get<StatusSnapshot>();
  std::string new_version;
  if (!args.binary.empty()) {
    if (Status st = checkBinary(args.binary); !st.ok()) fail(st.error().message + "; nothing was stopped");
    auto v = versionOf(args.binary);
    if (!v.ok()) fail(v.error().message + "; nothing was stopped");
    new_version = *v;
  }
  std::error_code ec;
  auto real = std::filesystem::canonical(*socket, ec);  // the default path may be a link
  std::string sup_socket = supervisorSocketFor(ec ? *socket : real.string());
  json request = {{"restart",
                   {{"binary", args.binary}, {"ready_timeout_ms", int64_t{args.timeout_s} * 1000}}}};
  // The hand-over, the new worker's start and a rollback's, with a margin.
  auto reply = askSupervisor(sup_socket, request, (2 * args.timeout_s + 20) * 1000);
  if (!reply.ok()) fail(reply.error().message);
  StatusSnapshot after = reply->new_pid != 0 ? statusAfter(*socket) : StatusSnapshot{};
  if (args.target.json) {
    json out = *reply;
    out["old_version"] = before.version.value_or("");
    out["new_version"] = after.version.value_or("");
    std::printf("%s\n", out.dump().c_str());
  } else if (reply->ok) {
    std::printf("restarted %s: pid %lld (hotshard %s, %s) -> pid %lld (hotshard %s, %s), ready "
                "%lld ms after the hand-over began (it served requests before)\n",
                before.mount.value_or("").c_str(), static_cast<long long>(reply->old_pid),
                before.version.value_or("?").c_str(), reply->old_binary.c_str(),
                static_cast<long long>(reply->new_pid), after.version.value_or("?").c_str(),
                reply->new_binary.c_str(), static_cast<long long>(reply->ready_ms));
  }
  if (!reply->ok) {
    std::string what = reply->error;
    if (reply->rolled_back && reply->new_pid != 0) {
      what += "; rolled back: pid " + std::to_string(reply->new_pid) + " runs " +
              reply->old_binary + " again (ready after " + std::to_string(reply->ready_ms) + " ms)";
    }
    fail(what);
  }
}

}  // namespace

void addRestartCommand(CLI::App& app) {
  auto args = std::make_shared<RestartArgs>();
  auto* cmd = app.add_subcommand(
      "restart",
      "Hand the live mount to a new daemon process, possibly of a new binary, without unmounting");
  addTargetOptions(cmd, args->target);
  cmd->add_option("--config", args->config,
                  "The daemon's TOML file (as given to 'hotshard run --config'): the mount to "
                  "restart is the one it names")
      ->check(CLI::ExistingFile);
  cmd->add_option("--binary", args->binary,
                  "The hotshard binary the new process runs (default: the path the daemon was "
                  "started from, so an upgrade installed there is picked up); it must pass "
                  "'--version' and, as root, be owned by root and writable by no one else");
  cmd->add_option("--timeout", args->timeout_s,
                  "Seconds the new process has to serve the mount before the old binary is "
                  "started again")
      ->default_val(60)
      ->check(CLI::Range(1, 3600));
  cmd->footer(
      "Jobs keep their open files and see no error; new requests wait while no process serves\n"
      "(a fraction of a second). If the new process fails, the old binary takes the mount back\n"
      "and the command exits 1.\n"
      "Examples:\n"
      "  hotshard restart --mount /mnt/datasets\n"
      "  hotshard restart --mount /mnt/datasets --binary /usr/local/bin/hotshard.new\n"
      "  hotshard restart --config /etc/hotshard/datasets.toml\n"
      "  systemctl reload hotshard@datasets     # runs the line above (hotshard@.service)");
  cmd->callback([args] { restart(*args); });
}

}  // namespace hotshard::cli
