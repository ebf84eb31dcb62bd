#include "daemon/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <vector>

#include "base/fd.h"
#include "base/paths.h"
#include "fuse/mount.h"

extern char** environ;

namespace hotshard {

using json = nlohmann::json;

void to_json(json& j, const RestartReply& r) {
  j = json{{"ok", r.ok},
           {"error", r.error},
           {"old_pid", r.old_pid},
           {"new_pid", r.new_pid},
           {"old_binary", r.old_binary},
           {"new_binary", r.new_binary},
           {"rolled_back", r.rolled_back},
           {"ready_ms", r.ready_ms}};
}

void from_json(const json& j, RestartReply& r) {
  r.ok = j.value("ok", false);
  r.error = j.value("error", "");
  r.old_pid = j.value("old_pid", int64_t{0});
  r.new_pid = j.value("new_pid", int64_t{0});
  r.old_binary = j.value("old_binary", "");
  r.new_binary = j.value("new_binary", "");
  r.rolled_back = j.value("rolled_back", false);
  r.ready_ms = j.value("ready_ms", int64_t{0});
}

std::optional<SupervisorInfo> supervisorInfoFromEnv() {
  const char* pid = std::getenv("HOTSHARD_SUPERVISOR_PID");
  if (pid == nullptr) return std::nullopt;
  SupervisorInfo info;
  info.pid = std::strtoll(pid, nullptr, 10);
  if (const char* n = std::getenv("HOTSHARD_TAKEOVERS")) info.takeovers = std::strtoull(n, nullptr, 10);
  if (const char* why = std::getenv("HOTSHARD_LAST_TAKEOVER")) info.last_takeover = why;
  return info;
}

std::string supervisorSocketFor(const std::string& control_socket) {
  std::string base = control_socket;
  if (base.size() > 5 && base.compare(base.size() - 5, 5, ".sock") == 0) base.resize(base.size() - 5);
  return base + ".supervisor";  // not *.sock: the CLI takes those for daemons
}

namespace {

using Clock = std::chrono::steady_clock;

constexpr auto kReadyTimeout = std::chrono::minutes(5);     // a worker's start (the unit's TimeoutStartSec)
constexpr auto kHandoverTimeout = std::chrono::seconds(10);  // SIGUSR2 to exit 75
constexpr auto kStopTimeout = std::chrono::seconds(25);      // SIGTERM to exit (under TimeoutStopSec)

// "worker 812 killed by SIGKILL", "worker 812 exited 1".
std::string describeExit(pid_t pid, const siginfo_t& si) {
  std::string who = "worker " + std::to_string(pid);
  if (si.si_code == CLD_EXITED) return who + " exited " + std::to_string(si.si_status);
  const char* name = sigabbrev_np(si.si_status);
  return who + " killed by " + (name != nullptr ? "SIG" + std::string(name)
                                                  : "signal " + std::to_string(si.si_status));
}

// The binary a worker runs: an open file, so that the very same code runs
// again after a crash whatever happens at its path meanwhile.
struct Exe {
  UniqueFd fd;
  std::string path;
};

// Opens a binary to run as root: a regular, executable file owned by root and
// writable by no one else (or, when we are not root, owned by us or root).
Result<Exe> openExe(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return lastSysError("binary " + path);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return lastSysError("binary " + path + ": fstat");
  if (!S_ISREG(st.st_mode)) return makeError(Errc::kInvalidArgument, "binary " + path + ": not a regular file");
  if ((st.st_mode & S_IXUSR) == 0) return makeError(Errc::kInvalidArgument, "binary " + path + ": not executable");
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    return makeError(Errc::kPermission, "binary " + path + ": owned by uid " +
                                            std::to_string(st.st_uid) + ", not by root");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return makeError(Errc::kPermission, "binary " + path + ": writable by group or others");
  }
  return Exe{std::move(fd), path};
}

// The path this process was started from; " (deleted)" when replaced meanwhile.
std::string selfPath() {
  std::error_code ec;
  std::string p = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  const std::string deleted = " (deleted)";
  if (p.size() > deleted.size() && p.compare(p.size() - deleted.size(), deleted.size(), deleted) == 0) {
    p.resize(p.size() - deleted.size());
  }
  return p;
}

struct Worker {
  pid_t pid = -1;
  UniqueFd pidfd;
  UniqueFd ready;  // read end of the worker's --ready-fd, until it said "ready"
  bool is_ready = false;
  std::string binary;
};

enum class Phase {
  kStarting,     // the first worker, on a fresh connection
  kTakingOver,   // a successor after a crash
  kServing,
  kHandingOver,  // restart: SIGUSR2 sent, waiting for exit 75
  kStartingNew,  // restart: the new binary is adopting the connection
  kRollingBack,  // restart: the new binary failed, the old one is adopting it again
  kStopping,     // SIGTERM/SIGINT forwarded
};

class Supervisor {
 public:
  Supervisor(const RunConfig& cfg, int remote_fd, SupervisorHooks hooks)
      : cfg_(cfg), remote_fd_(remote_fd), hooks_(std::move(hooks)) {}
  int run();

 private:
  Status start();
  Status listen();
  Result<Worker> spawn(const Exe& exe, const std::string& cause);
  [[noreturn]] void execWorker(const Exe& exe, const std::vector<std::string>& args,
                               int ready_fd, const std::string& cause);
  std::vector<std::string> workerArgs(int ready_fd, bool takeover) const;
  void loop();
  void onSignal();
  void onReady();
  void onWorkerExit();
  void onCrash(const std::string& what, int code, bool early);
  void onRequest();
  Status beginRestart(const json& request);
  void startSuccessor(const Exe& exe, const std::string& cause, Phase phase);
  void rollBack(const std::string& why);
  void answer(RestartReply reply);
  void giveUp(const std::string& why, int code);
  void unmountIfOurs();
  void killWorker();
  void finish(int code) { exit_code_ = code; }

  const RunConfig& cfg_;
  const int remote_fd_;
  SupervisorHooks hooks_;
  Exe exe_;       // what workers run
  Exe next_exe_;  // restart: what the new worker runs
  UniqueFd sigfd_, devfd_, listen_fd_, client_;
  std::string mount_path_, socket_path_;
  dev_t conn_dev_ = 0;
  Worker worker_;
  Phase phase_ = Phase::kStarting;
  std::optional<Clock::time_point> deadline_;  // when it passes: SIGKILL the worker
  std::deque<Clock::time_point> crashes_;  // within kCrashWindow
  unsigned early_crashes_ = 0;              // in a row
  uint64_t takeovers_ = 0;
  std::string last_cause_;
  bool served_ = false;  // a worker was ready once: the connection is initialized
  bool reported_ = false;
  std::string start_error_;  // what the last worker that failed to start said
  // The restart in progress.
  RestartReply reply_;
  Clock::time_point handover_since_;
  Clock::duration restart_ready_timeout_{};
  int exit_code_ = -1;
};

// ---- start ----------------------------------------------------------------------

Status Supervisor::start() {
  ASSIGN_OR_RETURN(exe_, openExe("/proc/self/exe"));
  exe_.path = selfPath();
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGINT, SIGTERM, SIGHUP, SIGCHLD}) sigaddset(&sigs, s);
  sigfd_.reset(::signalfd(-1, &sigs, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sigfd_) return lastSysError("supervisor: signalfd");
  std::error_code ec;
  auto resolved = std::filesystem::canonical(cfg_.mount, ec);
  mount_path_ = ec ? cfg_.mount : resolved.string();
  auto devfd = fuse::mountFuse(cfg_.mount, "hotshard:" + cfg_.remote);
  if (!devfd.ok()) return devfd.takeError();
  devfd_.reset(*devfd);
  // The connection is named after the mount's device (fusectl): from the mount
  // table, as a stat of the mount point would wait for a worker.
  if (auto table = fuse::readMountTable(); table.ok()) {
    if (auto top = fuse::topMountAt(*table, mount_path_)) conn_dev_ = top->dev;
  }
  if (Status st = listen(); !st.ok()) {
    giveUp(st.error().message, 1);
    return st;
  }
  auto w = spawn(exe_, "");
  if (!w.ok()) {
    giveUp(w.error().message, 1);
    return w.takeError();
  }
  worker_ = std::move(*w);
  deadline_ = Clock::now() + kReadyTimeout;
  spdlog::info("supervisor {}: mounted {}, worker {} starting", ::getpid(), cfg_.mount, worker_.pid);
  return Ok{};
}

// The restart socket: 0600, beside the control socket.
Status Supervisor::listen() {
  socket_path_ = supervisorSocketFor(cfg_.control_socket);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path_.size() >= sizeof(addr.sun_path)) {
    return makeError(Errc::kInvalidArgument, "supervisor socket path too long: " + socket_path_);
  }
  std::memcpy(addr.sun_path, socket_path_.c_str(), socket_path_.size() + 1);
  RETURN_IF_ERROR(makeDirectories(std::filesystem::path(socket_path_).parent_path().string(), 0755));
  listen_fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listen_fd_) return lastSysError("supervisor socket");
  ::unlink(socket_path_.c_str());  // the mount was free (checked): a socket left by a crash
  mode_t old = ::umask(0177);      // born 0600
  int rc = ::bind(listen_fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::umask(old);
  if (rc < 0) return lastSysError("bind supervisor socket " + socket_path_);
  if (::listen(listen_fd_.get(), 4) < 0) return lastSysError("listen " + socket_path_);
  return Ok{};
}

std::vector<std::string> Supervisor::workerArgs(int ready_fd, bool takeover) const {
  std::vector<std::string> args = {"hotshard", "run"};
  // The finalized config, where it differs from the defaults: the worker checks
  // it again, and a new binary keeps its own defaults for the rest.
  const RunConfig defaults;
  for (const auto& item : runConfigItems()) {
    std::string v = item.get(cfg_);
    if (item.name == "no-supervisor" || v == item.get(defaults)) continue;
    args.push_back("--" + item.name + "=" + v);
  }
  args.push_back("--fuse-fd=" + std::to_string(devfd_.get()));
  args.push_back("--remote-fd=" + std::to_string(remote_fd_));
  args.push_back("--ready-fd=" + std::to_string(ready_fd));
  args.push_back("--state-dir=" + cfg_.worker.state_dir);
  if (takeover) args.push_back("--takeover");
  return args;
}

Result<Worker> Supervisor::spawn(const Exe& exe, const std::string& cause) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) < 0) return lastSysError("supervisor: pipe");
  UniqueFd rd(fds[0]), wr(fds[1]);
  std::vector<std::string> args = workerArgs(wr.get(), !cause.empty());
  pid_t pid = ::fork();
  if (pid < 0) return lastSysError("supervisor: fork");
  if (pid == 0) execWorker(exe, args, wr.get(), cause);
  Worker w;
  w.pid = pid;
  w.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!w.pidfd) {
    Error e = lastSysError("supervisor: pidfd_open");
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return e;
  }
  w.ready = std::move(rd);
  w.binary = exe.path;
  if (!cause.empty()) {
    takeovers_++;
    last_cause_ = cause;
    spdlog::warn("takeover {}: worker {} ({}) adopts the connection; the last one: {}", takeovers_,
                 pid, exe.path, cause);
  }
  return w;
}

void Supervisor::execWorker(const Exe& exe, const std::vector<std::string>& args, int ready_fd,
                            const std::string& cause) {
  // The worker dies with us: a kill -9 of the supervisor ends the mount, as it
  // ended the single daemon's (and nothing is left holding the connection).
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) ::_exit(127);  // we died already
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int fd : {devfd_.get(), remote_fd_, ready_fd}) ::fcntl(fd, F_SETFD, 0);
  ::setenv("HOTSHARD_SUPERVISOR_PID", std::to_string(::getppid()).c_str(), 1);
  ::setenv("HOTSHARD_TAKEOVERS", std::to_string(cause.empty() ? takeovers_ : takeovers_ + 1).c_str(), 1);
  if (cause.empty()) {
    ::unsetenv("HOTSHARD_LAST_TAKEOVER");
  } else {
    ::setenv("HOTSHARD_LAST_TAKEOVER", cause.c_str(), 1);
  }
  ::unsetenv("NOTIFY_SOCKET");  // READY=1 comes from the supervisor, the main pid
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::syscall(SYS_execveat, exe.fd.get(), "", argv.data(), environ, AT_EMPTY_PATH);
  // A script cannot be run through a close-on-exec fd (its interpreter opens
  // /dev/fd/N after the exec): by its path.
  ::execv(exe.path.c_str(), argv.data());
  std::fprintf(stderr, "hotshard supervisor: exec %s: %s\n", exe.path.c_str(), std::strerror(errno));
  ::_exit(127);
}

// ---- the loop -------------------------------------------------------------------

int Supervisor::run() {
  if (Status st = start(); !st.ok()) {
    spdlog::error("{}", st.error().message);
    if (!reported_ && hooks_.report_start) hooks_.report_start(st.error().message);
    return 1;
  }
  while (exit_code_ < 0) loop();
  if (!socket_path_.empty()) ::unlink(socket_path_.c_str());
  // The mount has ended: no successor will adopt the workers' state.
  ::unlink((cfg_.worker.state_dir + "/state").c_str());
  ::rmdir(cfg_.worker.state_dir.c_str());
  return exit_code_;
}

void Supervisor::loop() {
  enum { kSig, kPid, kReady, kListen, kClient, kCount };
  pollfd fds[kCount] = {};
  fds[kSig] = {sigfd_.get(), POLLIN, 0};
  fds[kPid] = {worker_.pidfd.get(), POLLIN, 0};  // -1 (no worker): ignored by poll
  fds[kReady] = {worker_.ready.get(), POLLIN, 0};
  fds[kListen] = {listen_fd_.get(), POLLIN, 0};
  fds[kClient] = {client_.get(), POLLIN, 0};  // the restart client hung up
  int timeout_ms = -1;
  if (deadline_) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline_ - Clock::now());
    timeout_ms = static_cast<int>(std::max<int64_t>(0, left.count()) + 1);
  }
  int n = ::poll(fds, kCount, timeout_ms);
  if (n < 0 && errno != EINTR) {
    giveUp(std::string("poll: ") + std::strerror(errno), 1);
    return;
  }
  if (deadline_ && Clock::now() >= *deadline_) {
    deadline_.reset();
    spdlog::warn("worker {}: deadline passed in its phase; killing it", worker_.pid);
    killWorker();
  }
  if (n <= 0) return;
  if (fds[kSig].revents != 0) onSignal();
  if (fds[kReady].revents != 0 && worker_.ready) onReady();
  if (fds[kPid].revents != 0 && worker_.pid > 0) onWorkerExit();
  if (fds[kListen].revents != 0 && exit_code_ < 0) onRequest();
  if (fds[kClient].revents != 0 && client_) {
    spdlog::info("restart: the client went; the restart goes on");
    client_.reset();
  }
}

void Supervisor::onSignal() {
  signalfd_siginfo si;
  while (::read(sigfd_.get(), &si, sizeof(si)) == sizeof(si)) {
    int sig = static_cast<int>(si.ssi_signo);
    if (sig == SIGCHLD) continue;  // the pidfd says which
    if (sig == SIGHUP) {
      if (hooks_.reopen_log) hooks_.reopen_log();
      if (worker_.pid > 0) ::kill(worker_.pid, SIGHUP);
      continue;
    }
    spdlog::info("supervisor: received {}; the worker unmounts", strsignal(sig));
    if (cfg_.foreground) (void)sd_notify(0, "STOPPING=1");
    phase_ = Phase::kStopping;
    if (worker_.pid > 0) {
      ::kill(worker_.pid, sig);
      deadline_ = Clock::now() + kStopTimeout;
    } else {
      unmountIfOurs();
      finish(0);
    }
  }
}

void Supervisor::onReady() {
  char buf[512];
  ssize_t n = ::read(worker_.ready.get(), buf, sizeof(buf));
  if (n <= 0) {  // closed without a word: its exit follows
    worker_.ready.reset();
    return;
  }
  std::string line(buf, static_cast<size_t>(n));
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.pop_back();
  worker_.ready.reset();
  if (line != "ready") {
    spdlog::error("worker {}: {}", worker_.pid, line);
    start_error_ = line;
    return;  // it failed to start and exits
  }
  worker_.is_ready = true;
  if (phase_ != Phase::kStopping) deadline_.reset();
  if (!served_) {
    served_ = true;
    reported_ = true;
    if (hooks_.report_start) hooks_.report_start("ok");
    // Under systemd (Type=notify, NotifyAccess=main) we are the main pid.
    if (cfg_.foreground) (void)sd_notify(0, "READY=1");
  }
  spdlog::info("worker {} serves {}", worker_.pid, cfg_.mount);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - handover_since_);
  if (phase_ == Phase::kStartingNew) {
    exe_ = std::move(next_exe_);
    reply_.ok = true;
    reply_.new_pid = worker_.pid;
    reply_.ready_ms = took.count();
    answer(reply_);
  } else if (phase_ == Phase::kRollingBack) {
    reply_.new_pid = worker_.pid;
    reply_.ready_ms = took.count();
    answer(reply_);
  }
  if (phase_ != Phase::kStopping) phase_ = Phase::kServing;
}

void Supervisor::onWorkerExit() {
  siginfo_t si{};
  if (::waitid(P_PID, static_cast<id_t>(worker_.pid), &si, WEXITED | WNOHANG) != 0 || si.si_pid == 0) {
    return;
  }
  std::string what = describeExit(worker_.pid, si);
  bool early = !worker_.is_ready;
  worker_ = Worker{};
  deadline_.reset();
  int code = si.si_code == CLD_EXITED ? si.si_status : -1;
  switch (phase_) {
    case Phase::kStopping:
      spdlog::info("{}", what);
      unmountIfOurs();
      return finish(code == 0 ? 0 : 1);
    case Phase::kHandingOver:  // exit 75, or killed at the deadline: the new binary adopts
      if (code == 0) break;
      return startSuccessor(next_exe_, "restart: " + what, Phase::kStartingNew);
    case Phase::kStartingNew:
      return rollBack("the new worker failed: " + what);
    case Phase::kRollingBack:
      reply_.error += "; the old binary failed too: " + what;
      answer(reply_);
      break;
    default:
      break;
  }
  onCrash(what, code, early);
}

// A worker went on its own: at the end of the mount (0), for good (2, 3, or
// before it served at all), or crashed: a successor at once, unless it loops.
void Supervisor::onCrash(const std::string& what, int code, bool early) {
  if (code == 0) {
    spdlog::info("{}: the mount has ended", what);
    unmountIfOurs();
    return finish(0);
  }
  if (code == kExitBadConfig || code == kExitNoTakeoverState) return giveUp(what, code);
  if (!served_) {
    return giveUp(start_error_.empty() ? what + " before it served the mount" : start_error_,
                  code > 0 ? code : 1);
  }
  if (code != kExitHandedOver) {
    early_crashes_ = early ? early_crashes_ + 1 : 0;
    if (early_crashes_ >= kMaxEarlyCrashes) {
      return giveUp(std::to_string(early_crashes_) +
                        " workers in a row died before they served; the last: " + what,
                    1);
    }
    auto now = Clock::now();
    crashes_.push_back(now);
    while (!crashes_.empty() && now - crashes_.front() > kCrashWindow) crashes_.pop_front();
    if (crashes_.size() >= kMaxCrashes) {
      return giveUp(std::to_string(crashes_.size()) + " worker crashes within " +
                        std::to_string(kCrashWindow.count()) + " s; the last: " + what,
                    1);
    }
    spdlog::error("{}: a successor takes over the connection", what);
  }
  startSuccessor(exe_, what, Phase::kTakingOver);
}

void Supervisor::startSuccessor(const Exe& exe, const std::string& cause, Phase phase) {
  auto w = spawn(exe, cause);
  if (!w.ok()) {
    if (phase == Phase::kStartingNew) return rollBack(w.error().message);
    return giveUp(w.error().message, 1);
  }
  worker_ = std::move(*w);
  phase_ = phase;
  auto timeout = phase == Phase::kStartingNew ? restart_ready_timeout_ : Clock::duration(kReadyTimeout);
  deadline_ = Clock::now() + timeout;
}

void Supervisor::rollBack(const std::string& why) {
  spdlog::error("restart: {}; rolling back to {}", why, exe_.path);
  reply_.ok = false;
  reply_.rolled_back = true;
  reply_.error = why;
  next_exe_ = Exe{};
  startSuccessor(exe_, "rollback: " + why, Phase::kRollingBack);
}

// ---- restart ----------------------------------------------------------------------

void Supervisor::onRequest() {
  UniqueFd c(::accept4(listen_fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!c) return;
  timeval tv{.tv_sec = 2, .tv_usec = 0};  // the CLI writes its request at once
  ::setsockopt(c.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ::setsockopt(c.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  std::string line;
  char ch;
  while (line.size() < 8192 && ::read(c.get(), &ch, 1) == 1 && ch != '\n') line.push_back(ch);
  json request = json::parse(line, nullptr, /*allow_exceptions=*/false);
  Status st = Ok{};
  if (phase_ != Phase::kServing || client_) {
    st = makeError(Errc::kBusy, "the supervisor is busy (a start, takeover, restart or stop is "
                                "under way); try again");
  } else if (!request.is_object() || !request.contains("restart")) {
    st = makeError(Errc::kInvalidArgument, "unknown request: " + line.substr(0, 200));
  }
  if (st.ok()) {
    client_ = std::move(c);
    st = beginRestart(request["restart"]);
    if (st.ok()) return;
    c = std::move(client_);
  }
  RestartReply r;
  r.error = st.error().message;
  std::string out = json(r).dump() + "\n";
  (void)!::send(c.get(), out.data(), out.size(), MSG_NOSIGNAL);
}

Status Supervisor::beginRestart(const json& request) {
  std::string binary = request.value("binary", "");
  if (binary.empty()) binary = exe_.path;
  ASSIGN_OR_RETURN(next_exe_, openExe(binary));  // nothing is stopped when it fails
  int64_t timeout_ms = request.value("ready_timeout_ms", int64_t{60000});
  restart_ready_timeout_ = std::chrono::milliseconds(std::clamp<int64_t>(timeout_ms, 100, 3600000));
  reply_ = RestartReply{};
  reply_.old_pid = worker_.pid;
  reply_.old_binary = exe_.path;
  reply_.new_binary = next_exe_.path;
  spdlog::info("restart: worker {} hands over to {}", worker_.pid, next_exe_.path);
  handover_since_ = Clock::now();
  ::kill(worker_.pid, SIGUSR2);
  phase_ = Phase::kHandingOver;
  deadline_ = Clock::now() + kHandoverTimeout;
  return Ok{};
}

void Supervisor::answer(RestartReply reply) {
  if (reply.ok) {
    spdlog::info("restart: worker {} ({}) is ready {} ms after the hand-over began",
                 reply.new_pid, reply.new_binary, reply.ready_ms);
  }
  if (!client_) return;
  std::string out = json(reply).dump() + "\n";
  (void)!::send(client_.get(), out.data(), out.size(), MSG_NOSIGNAL);
  client_.reset();
}

// ---- ending -------------------------------------------------------------------------

void Supervisor::killWorker() {
  if (worker_.pid > 0) ::kill(worker_.pid, SIGKILL);
}

void Supervisor::unmountIfOurs() {
  auto table = fuse::readMountTable();
  if (!table.ok()) return;
  auto top = fuse::topMountAt(*table, mount_path_);
  if (!top || conn_dev_ == 0 || top->dev != conn_dev_) return;  // gone already
  auto how = fuse::unmountFuse(mount_path_);
  if (how.ok() && *how == "unmounted") return;
  spdlog::warn("{}: {}", cfg_.mount, how.ok() ? *how : how.error().message);
  fuse::abortConnection(conn_dev_);  // files still open: end them, never hang them
}

void Supervisor::giveUp(const std::string& why, int code) {
  spdlog::error("supervisor: giving up: {}; aborting the FUSE connection and unmounting {}", why,
                cfg_.mount);
  // Abort first: a worker blocked on its own mount is woken either way.
  if (worker_.pid > 0) ::kill(worker_.pid, SIGKILL);
  if (conn_dev_ != 0) fuse::abortConnection(conn_dev_);
  if (worker_.pid > 0) {
    ::waitpid(worker_.pid, nullptr, 0);
    worker_ = Worker{};
  }
  unmountIfOurs();
  if (!reported_ && hooks_.report_start) {
    reported_ = true;
    hooks_.report_start(why);
  }
  if (client_) {
    reply_.ok = false;
    reply_.error += (reply_.error.empty() ? "" : "; ") + std::string("the supervisor gave up: ") + why;
    answer(reply_);
  }
  finish(code);
}

}  // namespace

int runSupervisor(const RunConfig& cfg, int remote_fd, SupervisorHooks hooks) {
  Supervisor s(cfg, remote_fd, std::move(hooks));
  return s.run();
}

}  // namespace hotshard
