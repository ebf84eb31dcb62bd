// The supervisor: `hotshard run` as a small process that holds the mounted
// /dev/fuse connection and runs the daemon proper (the worker) as a child, so
// that a worker that crashes, or is replaced by `hotshard restart`, leaves the
// mount in place: a successor adopts the live connection (docs/restart.md).
//
// The supervisor mounts (fuse::mountFuse) after every check `run` makes, keeps
// the device fd, and starts the worker by exec of the hotshard binary with the
// finalized config as flags plus (hidden options, the worker's side is in
// daemon.cc and fuse/):
//   --fuse-fd=N    the mounted /dev/fuse fd, inherited; the worker does not mount
//   --remote-fd=K  the remote directory opened O_PATH before the mount covered it
//   --ready-fd=M   the worker writes "ready\n" there once it serves requests
//   --takeover     every worker after the first: adopt the live connection from
//                  the state the predecessor left in --state-dir (removed when
//                  the supervisor ends, with the mount)
// and in its environment HOTSHARD_SUPERVISOR_PID, HOTSHARD_TAKEOVERS (how many
// workers ran before it) and HOTSHARD_LAST_TAKEOVER (why the last one went), which
// the worker shows in `hotshard status` and as hotshard_takeovers_total.
//
// Worker exits: 0 (it unmounted: SIGTERM, `hotshard stop`, or someone unmounted)
// ends the supervisor with 0; 2 (bad configuration) and 3 (no takeover state)
// give up; 75 (EX_TEMPFAIL: handed over on SIGUSR2) starts a successor; any
// other exit or a signal is a crash, answered at once by a successor with
// --takeover, unless it is a crash loop (below: then give up). To give
// up is to abort the connection through fusectl, unmount lazily and exit 1 (2
// or 3 as the worker did), with a message naming the last crash.
//
// Which binary: the one this process runs is opened at start (/proc/self/exe)
// and a crash is answered by exec of that very file (fexecve), even if a package
// upgrade has replaced the file at its path since: a crash is no moment to try
// new code. `hotshard restart` execs the path it is given (default: the path
// the supervisor was started from, so an upgrade in place is picked up there).
//
// Signals: SIGTERM and SIGINT are forwarded (the worker unmounts and exits 0),
// SIGHUP too (log reopen), after the supervisor reopened its own log. The worker
// runs with PR_SET_PDEATHSIG(SIGKILL): a kill -9 of the supervisor ends the
// worker, and the connection with the last fd of it (supervisor death = mount
// death, as a daemon's death was before). One thread: signalfd, pidfd_open(2)
// (Linux >= 5.3) and poll(2).
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "base/result.h"
#include "daemon/config.h"

namespace hotshard {

// Exit codes of a worker, as the supervisor reads them.
inline constexpr int kExitBadConfig = 2;
inline constexpr int kExitNoTakeoverState = 3;
inline constexpr int kExitHandedOver = 75;  // EX_TEMPFAIL (sysexits.h)

// Crash loops: a worker that dies before it said "ready" is an early crash;
// kMaxEarlyCrashes of them in a row end the mount (a binary or a state that
// cannot start). Crashes of workers that served are answered as long as they
// stay under kMaxCrashes within kCrashWindow (one that dies at its first
// request, over and over).
inline constexpr unsigned kMaxEarlyCrashes = 10;
inline constexpr unsigned kMaxCrashes = 100;
inline constexpr std::chrono::seconds kCrashWindow{60};

// What a worker knows of the supervisor that started it, from its environment.
struct SupervisorInfo {
  int64_t pid = 0;            // the supervisor's pid
  uint64_t takeovers = 0;     // workers that ran on this mount before this one
  std::string last_takeover;  // why the previous worker went, e.g. "worker 812 killed by SIGKILL"
};
std::optional<SupervisorInfo> supervisorInfoFromEnv();

// Where the supervisor of the daemon with this control socket listens for
// `hotshard restart`: /run/hotshard/<mount>.supervisor beside <mount>.sock.
std::string supervisorSocketFor(const std::string& control_socket);

// `hotshard restart`: one JSON line each way on the supervisor socket (0600).
// Request {"restart": {"binary": PATH, "ready_timeout_ms": N}} (binary empty:
// the supervisor's own path); the reply comes when the new worker is ready or
// the old one is back: {"ok", "error", "old_pid", "new_pid", "old_binary",
// "new_binary", "rolled_back", "ready_ms"}.
struct RestartReply {
  bool ok = false;
  std::string error;  // why the restart failed (and, after a rollback, what runs)
  int64_t old_pid = 0, new_pid = 0;
  std::string old_binary, new_binary;
  bool rolled_back = false;
  // From SIGUSR2 to the old worker to "ready" of the one serving now. An upper
  // bound of the time requests waited: a worker serves FUSE before it is ready
  // (its heat probes, placement and control socket come after).
  int64_t ready_ms = 0;
};
void to_json(nlohmann::json& j, const RestartReply& r);
void from_json(const nlohmann::json& j, RestartReply& r);

// What the supervisor needs of the process around it (daemon.cc's runDaemon).
struct SupervisorHooks {
  // Called once: "ok" when the first worker is ready, or why the start failed.
  std::function<void(const std::string&)> report_start;
  std::function<void()> reopen_log;  // on SIGHUP, before it is forwarded
};

// Runs the supervisor until the mount ends; returns the process exit code.
// cfg is finalized and checked (runDaemon's prepareRun); remote_fd is the remote
// root, opened before the mount covers it. Signals SIGINT, SIGTERM, SIGHUP and
// SIGCHLD must be blocked in the calling (only) thread.
int runSupervisor(const RunConfig& cfg, int remote_fd, SupervisorHooks hooks);

}  // namespace hotshard
