// A real etcd for tests: started on free ports with a fresh data dir, killed
// and its dir removed on destruction (also when the test fails). Shared by the
// peer tests and the cluster integration test.
//
//   class MyTest : public hotshard::testing::EtcdTest {};   // etcd_ is running in the body
//   TEST_F(MyTest, X) { ... etcd_.endpoint() ...; etcd_.stop(); ...; ASSERT_TRUE(etcd_.restart()); }
//
// Or by hand: HS_REQUIRE_ETCD(); EtcdServer etcd({.host = "10.0.0.1", .wrap = {"ip", "netns",
// "exec", "hs-etcd"}}); ASSERT_TRUE(etcd.start());
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <chrono>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace hotshard::testing {

// The etcd binary: $HS_ETCD if set, else `etcd` on PATH; "" when there is none.
std::string etcdBinary();

// A TCP port on host (IPv4) that nothing listens on now (bound to :0 and
// released), 0 when none could be had. Connecting to it is refused.
int freePort(const std::string& host = "127.0.0.1");

class EtcdServer {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // where the client and peer URLs listen (an IPv4 address)
    // A command prefix, e.g. {"ip", "netns", "exec", "NS"}: etcd runs under it
    // (it must exec etcd, so that killing the pid kills etcd). The test process
    // must still reach host (the readiness probe is an HTTP GET from here).
    std::vector<std::string> wrap;
    std::chrono::milliseconds ready_timeout{20000};  // start() and restart() wait this long at most
  };

  EtcdServer();
  explicit EtcdServer(Options options);
  ~EtcdServer();  // kills etcd, waits for it, removes the data dir
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  // Picks two free ports on host (client, peer), starts a one-member etcd with
  // a fresh data dir and waits until GET /health says true (it has a leader).
  ::testing::AssertionResult start();
  // SIGKILL and wait: an outage as a crash leaves it (the data dir stays).
  void stop();
  // Starts it again on the same ports with the same data dir (keys and leases
  // survive; etcd extends surviving leases by their TTL on recovery).
  ::testing::AssertionResult restart();

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  std::string endpoint() const;  // "http://HOST:PORT"
  const std::string& dataDir() const { return data_dir_; }
  std::string log() const;  // etcd's own output, for failure messages

 private:
  ::testing::AssertionResult launch();
  ::testing::AssertionResult waitReady();

  Options options_;
  std::string dir_;       // the temp dir: data/ and etcd.log inside
  std::string data_dir_;
  std::string log_path_;
  int client_port_ = 0;
  int peer_port_ = 0;
  pid_t pid_ = -1;
};

// A loopback HTTP endpoint that accepts connections (the kernel completes the
// handshake on a listening socket) and never answers: an etcd that hangs.
class SilentEndpoint {
 public:
  SilentEndpoint();  // check url() is not empty
  ~SilentEndpoint();
  SilentEndpoint(const SilentEndpoint&) = delete;
  SilentEndpoint& operator=(const SilentEndpoint&) = delete;
  std::string url() const;  // "http://127.0.0.1:PORT"; "" when the socket could not be set up

 private:
  int fd_ = -1;
  int port_ = 0;
};

// A test with a running etcd in etcd_; fails under CI=true (skips elsewhere)
// when the etcd binary is missing.
class EtcdTest : public ::testing::Test {
 protected:
  void SetUp() override;
  EtcdServer etcd_;
};

}  // namespace hotshard::testing

#define HS_REQUIRE_ETCD() \
  HS_REQUIRE(!::hotshard::testing::etcdBinary().empty(), "needs etcd (make deps installs etcd-server)")
