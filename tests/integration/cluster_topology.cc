#include "tests/integration/cluster_topology.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <thread>

namespace hotshard::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr const char* kNetnsDir = "/run/netns";
constexpr const char* kSftpServer = "/usr/lib/openssh/sftp-server";

bool isExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0;
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    if (::access((std::string(dir) + "/" + name).c_str(), X_OK) == 0) return true;
  }
  return false;
}

::testing::AssertionResult ran(const CommandResult& r, const std::string& what) {
  if (r.exit_code == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": exit " << r.exit_code << ": " << r.out;
}

// Polls until pred() holds or timeout passes; pred's last answer.
template <typename Pred>
bool waitFor(Pred pred, std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

}  // namespace

// ---- background processes ------------------------------------------------------

BackgroundProcess::~BackgroundProcess() { stop(); }

::testing::AssertionResult BackgroundProcess::start(const std::vector<std::string>& argv,
                                                    const std::string& netns,
                                                    const std::string& log) {
  stop();
  pid_ = ::fork();
  if (pid_ < 0) return ::testing::AssertionFailure() << "fork: " << std::strerror(errno);
  if (pid_ == 0) {
    ::setsid();
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int null = ::open("/dev/null", O_RDONLY);
    if (fd < 0 || null < 0) ::_exit(125);
    ::dup2(null, STDIN_FILENO);
    ::dup2(fd, STDOUT_FILENO);
    ::dup2(fd, STDERR_FILENO);
    if (!netns.empty()) {
      int ns = ::open(netns.c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) {
        std::fprintf(stderr, "setns %s: %s\n", netns.c_str(), std::strerror(errno));
        ::_exit(126);
      }
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "exec %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  return ::testing::AssertionSuccess();
}

bool BackgroundProcess::running() {
  if (pid_ <= 0) return false;
  siginfo_t info{};
  if (::waitid(P_PID, pid_, &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
  return info.si_pid == 0;
}

void BackgroundProcess::stop(int sig, int grace_ms) {
  if (pid_ <= 0) return;
  ::kill(-pid_, sig);
  auto deadline = Clock::now() + std::chrono::milliseconds(grace_ms);
  while (running() && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  // The leader is a zombie (or still runs) and unreaped, so its pid and process
  // group cannot have been reused: what it forked dies with it.
  ::kill(-pid_, SIGKILL);
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
}

// ---- topology -----------------------------------------------------------------

ClusterTopology::ClusterTopology(Options options, std::string workdir)
    : options_(std::move(options)), workdir_(std::move(workdir)) {
  prefix_ = "hsc" + std::to_string(::getpid());
  export_ = workdir_ + "/export";
  sftp_log_ = workdir_ + "/sftp.log";
}

ClusterTopology::~ClusterTopology() { down(); }

std::string ClusterTopology::missingTools() {
  std::string missing;
  for (const char* tool : {"ip", "tc", "socat", "sshfs", "etcd", "etcdctl", kSftpServer}) {
    if (!isExecutable(tool)) missing += std::string(missing.empty() ? "" : " ") + tool;
  }
  return missing;
}

std::string ClusterTopology::hostNetns(int n) const {
  return std::string(kNetnsDir) + "/" + nsName("h" + std::to_string(n));
}
std::string ClusterTopology::hostAddress(int n) const { return options_.base + "." + std::to_string(n); }
std::string ClusterTopology::hostRemote(int n) const {
  return workdir_ + "/h" + std::to_string(n) + "/remote";
}
std::string ClusterTopology::bridgeAddress() const { return options_.base + ".254"; }
std::string ClusterTopology::etcdUrl() const {
  return "http://" + bridgeAddress() + ":" + std::to_string(options_.etcd_port);
}

CommandResult ClusterTopology::runIn(const std::string& ns, std::vector<std::string> argv,
                                     int timeout_s) {
  argv.insert(argv.begin(), {"ip", "netns", "exec", nsName(ns)});
  return runCommand(argv, timeout_s);
}

void ClusterTopology::sweepStale() {
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(kNetnsDir, ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind("hsc", 0) != 0 || name.find('-') == std::string::npos) continue;
    pid_t owner = static_cast<pid_t>(std::atol(name.c_str() + 3));
    if (owner <= 0 || owner == ::getpid() || ::kill(owner, 0) == 0) continue;
    // The processes a crashed run left in it (sftp-server, sshfs, etcd, daemons).
    CommandResult pids = runCommand({"ip", "netns", "pids", name});
    std::istringstream in(pids.out);
    for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);
    runCommand({"ip", "netns", "delete", name});
  }
}

::testing::AssertionResult ClusterTopology::buildLinks() {
  const std::string br = nsName("br");
  auto ip = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "ip");
    return ran(runCommand(args), args.size() > 4 ? args[1] + " " + args[2] + " " + args[3] + " " + args[4] : "ip");
  };
  for (int n = 0; n <= options_.hosts + 1; n++) {
    std::string suffix = n == 0 ? "br" : n <= options_.hosts ? "h" + std::to_string(n) : "r";
    auto r = ip({"netns", "add", nsName(suffix)});
    if (!r) return r;
    namespaces_.push_back(nsName(suffix));
    if (!(r = ip({"-n", nsName(suffix), "link", "set", "lo", "up"}))) return r;
  }
  ::testing::AssertionResult r = ip({"-n", br, "link", "add", "br0", "type", "bridge"});
  if (!r || !(r = ip({"-n", br, "addr", "add", bridgeAddress() + "/24", "dev", "br0"})) ||
      !(r = ip({"-n", br, "link", "set", "br0", "up"}))) {
    return r;
  }
  for (int n = 1; n <= options_.hosts + 1; n++) {
    std::string port = n <= options_.hosts ? "h" + std::to_string(n) : "r";
    std::string ns = nsName(port);
    if (!(r = ip({"-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns})) ||
        !(r = ip({"-n", br, "link", "set", port, "master", "br0", "up"})) ||
        !(r = ip({"-n", ns, "addr", "add", options_.base + "." + std::to_string(n) + "/24", "dev", "eth0"})) ||
        !(r = ip({"-n", ns, "link", "set", "eth0", "up"}))) {
      return r;
    }
  }
  // The remote's link, shaped at both ends: its egress carries the data, the
  // bridge port's egress the requests.
  std::vector<std::string> tbf = {"root", "tbf", "rate", options_.remote_rate, "burst", "512kb", "latency", "50ms"};
  std::vector<std::string> at_remote = {"tc", "qdisc", "replace", "dev", "eth0"};
  std::vector<std::string> at_bridge = {"tc", "qdisc", "replace", "dev", "r"};
  at_remote.insert(at_remote.end(), tbf.begin(), tbf.end());
  at_bridge.insert(at_bridge.end(), tbf.begin(), tbf.end());
  if (!(r = ran(runIn("r", at_remote), "tc on the remote")) ||
      !(r = ran(runIn("br", at_bridge), "tc on the bridge"))) {
    return r;
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTopology::startSftp() {
  // One sftp-server per connection, logging every read it serves.
  const std::string wrapper = workdir_ + "/sftp-server.sh";
  writeFile(wrapper, "#!/bin/bash\nexec " + std::string(kSftpServer) + " -e -l DEBUG1 2>>" +
                         sftp_log_ + "\n");
  ::chmod(wrapper.c_str(), 0755);
  const std::string remote_ip = options_.base + "." + std::to_string(options_.hosts + 1);
  const std::string port = std::to_string(options_.sftp_port);
  auto r = sftp_.start({"socat", "TCP-LISTEN:" + port + ",bind=" + remote_ip + ",reuseaddr,fork",
                        "EXEC:" + wrapper},
                       std::string(kNetnsDir) + "/" + nsName("r"), workdir_ + "/socat.log");
  if (!r) return r;
  bool listening = waitFor(
      [&] {
        return runIn("h1", {"socat", "-u", "OPEN:/dev/null", "TCP:" + remote_ip + ":" + port +
                                                                  ",connect-timeout=1"})
                   .exit_code == 0;
      },
      std::chrono::seconds(10));
  if (!listening) {
    return ::testing::AssertionFailure() << "the SFTP listener did not come up: "
                                         << readFile(workdir_ + "/socat.log");
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTopology::mountRemote(int n) {
  const std::string mnt = hostRemote(n);
  fs::create_directories(mnt);
  const std::string remote_ip = options_.base + "." + std::to_string(options_.hosts + 1);
  // noforget: SFTP has no inode numbers; without it sshfs makes up new ones
  // for a file it forgot. reconnect: a connection lost under load comes back.
  auto process = std::make_unique<BackgroundProcess>();
  auto r = process->start({"sshfs", "-f", "-o",
                           "directport=" + std::to_string(options_.sftp_port) +
                               ",allow_other,noforget,reconnect",
                           remote_ip + ":" + export_, mnt},
                          hostNetns(n), workdir_ + "/sshfs-h" + std::to_string(n) + ".log");
  sshfs_.push_back(std::move(process));
  if (!r) return r;
  bool mounted = waitFor(
      [&] {
        struct stat st {};
        return mountDevice(mnt) != 0 && ::stat(mnt.c_str(), &st) == 0;
      },
      std::chrono::seconds(20));
  if (!mounted) {
    return ::testing::AssertionFailure() << "sshfs of host " << n << " did not mount: "
                                         << readFile(workdir_ + "/sshfs-h" + std::to_string(n) + ".log");
  }
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult ClusterTopology::up() {
  sweepStale();
  fs::create_directories(export_);
  ::chmod(export_.c_str(), 0755);
  auto r = buildLinks();
  if (!r || !(r = startSftp())) return r;
  for (int n = 1; n <= options_.hosts; n++) {
    if (!(r = mountRemote(n))) return r;
  }
  return ::testing::AssertionSuccess();
}

void ClusterTopology::down() {
  stopEtcd();
  for (int n = 1; n <= static_cast<int>(sshfs_.size()); n++) {
    // Detach first: a reader blocked in it is let go, and sshfs then exits.
    if (mountDevice(hostRemote(n)) != 0) ::umount2(hostRemote(n).c_str(), MNT_DETACH);
  }
  for (auto& p : sshfs_) p->stop();
  sshfs_.clear();
  sftp_.stop();
  // Deleting a namespace deletes its veth ends, and with them the pairs.
  for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) {
    CommandResult pids = runCommand({"ip", "netns", "pids", *it});
    std::istringstream in(pids.out);
    for (pid_t pid; in >> pid;) ::kill(pid, SIGKILL);  // nothing should be left; if so, not for long
    runCommand({"ip", "netns", "delete", *it});
  }
  namespaces_.clear();
}

uint64_t ClusterTopology::remoteFileBytes() const {
  std::string log = readFile(sftp_log_);
  std::map<std::string, uint64_t> sizes;
  uint64_t total = 0;
  const std::string key = "read \"";
  for (size_t at = log.find(key); at != std::string::npos; at = log.find(key, at + 1)) {
    size_t end = log.find("\" (handle ", at + key.size());
    size_t o = end == std::string::npos ? end : log.find(" off ", end);
    unsigned long long off = 0, len = 0;
    if (o == std::string::npos || std::sscanf(log.c_str() + o, " off %llu len %llu", &off, &len) != 2) {
      ADD_FAILURE() << "unreadable sftp-server log line at " << at;
      continue;
    }
    std::string path = log.substr(at + key.size(), end - at - key.size());
    auto it = sizes.find(path);
    if (it == sizes.end()) {
      struct stat st {};
      it = sizes.emplace(path, ::stat(path.c_str(), &st) == 0 ? st.st_size : UINT64_MAX).first;
    }
    if (off < it->second) total += std::min<uint64_t>(len, it->second - off);
  }
  return total;
}

uint64_t ClusterTopology::remoteLinkBytes() {
  CommandResult r = runIn("r", {"tc", "-s", "qdisc", "show", "dev", "eth0"});
  size_t at = r.out.find(" Sent ");
  return at == std::string::npos ? 0 : std::strtoull(r.out.c_str() + at + 6, nullptr, 10);
}

uint64_t ClusterTopology::hostTxBytes(int n) {
  CommandResult r = runIn("h" + std::to_string(n), {"cat", "/sys/class/net/eth0/statistics/tx_bytes"});
  return r.exit_code == 0 ? std::strtoull(r.out.c_str(), nullptr, 10) : 0;
}

::testing::AssertionResult ClusterTopology::shapeHost(int n, const std::string& rate) {
  const std::string port = "h" + std::to_string(n);
  std::vector<std::string> at_host = {"tc", "qdisc", rate.empty() ? "del" : "replace", "dev", "eth0", "root"};
  std::vector<std::string> at_bridge = {"tc", "qdisc", rate.empty() ? "del" : "replace", "dev", port, "root"};
  if (!rate.empty()) {
    for (auto* v : {&at_host, &at_bridge}) {
      v->insert(v->end(), {"tbf", "rate", rate, "burst", "512kb", "latency", "50ms"});
    }
  }
  auto r = ran(runIn(port, at_host), "tc on host " + std::to_string(n));
  if (!r) return r;
  return ran(runIn("br", at_bridge), "tc on the bridge port of host " + std::to_string(n));
}

::testing::AssertionResult ClusterTopology::startEtcd() {
  const std::string url = etcdUrl();
  const std::string peer = "http://127.0.0.1:2380";
  fs::create_directories(workdir_ + "/etcd");
  ::chmod((workdir_ + "/etcd").c_str(), 0700);
  auto r = etcd_.start({"etcd", "--name", "hs", "--data-dir", workdir_ + "/etcd/data",
                        "--listen-client-urls", url, "--advertise-client-urls", url,
                        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                        "--initial-cluster", "hs=" + peer},
                       std::string(kNetnsDir) + "/" + nsName("br"), workdir_ + "/etcd/etcd.log");
  if (!r) return r;
  bool healthy = waitFor(
      [&] {
        return etcd_.running() &&
               runIn("br", {"etcdctl", "--endpoints", url, "--dial-timeout", "1s",
                            "--command-timeout", "2s", "endpoint", "health"})
                       .exit_code == 0;
      },
      std::chrono::seconds(30));
  if (!healthy) {
    return ::testing::AssertionFailure() << "etcd did not answer at " << url << ":\n"
                                         << readFile(workdir_ + "/etcd/etcd.log");
  }
  return ::testing::AssertionSuccess();
}

void ClusterTopology::stopEtcd() { etcd_.stop(SIGTERM, 10000); }

}  // namespace hotshard::testing
