#include "tests/peer/etcd_fixture.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

namespace hotshard::testing {
namespace {

// The absolute path of `name` on PATH (or name itself when it has a '/'); "" if none.
std::string findExecutable(const std::string& name) {
  if (name.find('/') != std::string::npos) return ::access(name.c_str(), X_OK) == 0 ? name : "";
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t pos = 0;
  while (pos <= dirs.size()) {
    size_t end = dirs.find(':', pos);
    if (end == std::string::npos) end = dirs.size();
    const std::string candidate = dirs.substr(pos, end - pos) + "/" + name;
    if (end > pos && ::access(candidate.c_str(), X_OK) == 0) return candidate;
    pos = end + 1;
  }
  return "";
}

size_t appendTo(char* data, size_t size, size_t nmemb, void* userp) {
  static_cast<std::string*>(userp)->append(data, size * nmemb);
  return size * nmemb;
}

// True when GET url answers {"health":"true"} within timeout.
bool healthy(const std::string& url, std::chrono::milliseconds timeout) {
  CURL* c = curl_easy_init();
  if (c == nullptr) return false;
  std::string body;
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, appendTo);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
  const bool ok = curl_easy_perform(c) == CURLE_OK && body.find("\"health\":\"true\"") != std::string::npos;
  curl_easy_cleanup(c);
  return ok;
}

}  // namespace

int freePort(const std::string& host) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  ::inet_pton(AF_INET, host.c_str(), &addr.sin_addr);
  socklen_t len = sizeof(addr);
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

std::string etcdBinary() {
  const char* env = std::getenv("HS_ETCD");
  return findExecutable(env != nullptr && *env != '\0' ? env : "etcd");
}

EtcdServer::EtcdServer() : EtcdServer(Options{}) {}
EtcdServer::EtcdServer(Options options) : options_(std::move(options)) {}

EtcdServer::~EtcdServer() {
  stop();
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

std::string EtcdServer::endpoint() const {
  return "http://" + options_.host + ":" + std::to_string(client_port_);
}

std::string EtcdServer::log() const { return readFile(log_path_); }

::testing::AssertionResult EtcdServer::start() {
  if (running()) return ::testing::AssertionFailure() << "etcd already running";
  char templ[] = "/var/tmp/hotshard-etcd-XXXXXX";
  if (::mkdtemp(templ) == nullptr) return ::testing::AssertionFailure() << "mkdtemp: " << strerror(errno);
  dir_ = templ;
  data_dir_ = dir_ + "/data";
  log_path_ = dir_ + "/etcd.log";
  // A port found free may be taken before etcd binds it; then etcd exits and we try others.
  ::testing::AssertionResult result = ::testing::AssertionFailure();
  for (int attempt = 0; attempt < 3; ++attempt) {
    client_port_ = freePort(options_.host);
    peer_port_ = freePort(options_.host);
    if (client_port_ == 0 || peer_port_ == 0 || client_port_ == peer_port_) continue;
    std::error_code ec;
    std::filesystem::remove_all(data_dir_, ec);
    result = restart();
    if (result) return result;
  }
  return result << "\netcd log:\n" << log();
}

::testing::AssertionResult EtcdServer::restart() {
  if (running()) return ::testing::AssertionFailure() << "etcd already running";
  if (dir_.empty()) return ::testing::AssertionFailure() << "restart() before start()";
  ::testing::AssertionResult launched = launch();
  if (!launched) return launched;
  return waitReady();
}

::testing::AssertionResult EtcdServer::launch() {
  const std::string binary = etcdBinary();
  if (binary.empty()) return ::testing::AssertionFailure() << "no etcd binary (install etcd-server)";
  const std::string client = "http://" + options_.host + ":" + std::to_string(client_port_);
  const std::string peer = "http://" + options_.host + ":" + std::to_string(peer_port_);
  std::vector<std::string> args = options_.wrap;
  if (!args.empty()) {
    args[0] = findExecutable(args[0]);
    if (args[0].empty()) return ::testing::AssertionFailure() << "wrap command not found: " << options_.wrap[0];
  }
  // Short heartbeat and election timeouts: a one-member cluster has a leader in well under a second.
  for (const std::string& a :
       {binary, std::string("--name=hs-test"), "--data-dir=" + data_dir_, "--listen-client-urls=" + client,
        "--advertise-client-urls=" + client, "--listen-peer-urls=" + peer,
        "--initial-advertise-peer-urls=" + peer, "--initial-cluster=hs-test=" + peer,
        std::string("--heartbeat-interval=50"), std::string("--election-timeout=250"),
        std::string("--log-level=warn"), std::string("--logger=zap")}) {
    args.push_back(a);
  }
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const int log_fd = ::open(log_path_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (log_fd < 0) return ::testing::AssertionFailure() << "open " << log_path_ << ": " << strerror(errno);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls here: the test process has threads.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the test binary dies -> etcd dies
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(log_fd, STDERR_FILENO);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (pid < 0) return ::testing::AssertionFailure() << "fork: " << strerror(errno);
  pid_ = pid;
  return ::testing::AssertionSuccess();
}

::testing::AssertionResult EtcdServer::waitReady() {
  const auto deadline = std::chrono::steady_clock::now() + options_.ready_timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      return ::testing::AssertionFailure() << "etcd exited (status " << status << ") before it was ready";
    }
    if (healthy(endpoint() + "/health", std::chrono::milliseconds(500))) return ::testing::AssertionSuccess();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  stop();
  return ::testing::AssertionFailure() << "etcd at " << endpoint() << " not healthy within "
                                       << options_.ready_timeout.count() << " ms";
}

void EtcdServer::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

SilentEndpoint::SilentEndpoint() {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 && ::listen(fd_, 64) == 0 &&
      ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port_ = ntohs(addr.sin_port);
  }
}

SilentEndpoint::~SilentEndpoint() {
  if (fd_ >= 0) ::close(fd_);
}

std::string SilentEndpoint::url() const { return port_ == 0 ? "" : "http://127.0.0.1:" + std::to_string(port_); }

void EtcdTest::SetUp() {
  HS_REQUIRE_ETCD();
  ASSERT_TRUE(etcd_.start());
}

}  // namespace hotshard::testing
