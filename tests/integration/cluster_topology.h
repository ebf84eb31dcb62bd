// A cluster of hosts on one machine, for the peer tier's integration tests:
// network namespaces joined by a bridge, a remote served over SFTP from a
// namespace of its own through a rate-limited link, and etcd.
//
//   namespace PREFIX-br: bridge br0, BASE.254 (etcd listens here)
//     port hN  <-- veth -->  namespace PREFIX-hN: eth0 BASE.N     (N = 1..hosts)
//     port r   <-- veth -->  namespace PREFIX-r:  eth0 BASE.(hosts+1)
//                            socat TCP-LISTEN:7022 -> sftp-server -e -l DEBUG1
//
// Both ends of the remote's link are shaped with tc tbf (this kernel has no
// netem: bandwidth only, no added delay), so remote bytes take measurable time.
// Each host mounts the remote with its own sshfs, whose process runs in that
// host's network namespace (setns(2) of the net namespace only: the mount
// lands in ours, at hostRemote(N)), so every byte a host reads from the remote
// crosses the shaped link and is counted on the remote's side: by the
// sftp-server log (file bytes) and by tbf (link bytes). sshfs speaks SFTP
// straight to the port (-o directport, as tools/bench/slow-remote.sh does), so
// no ssh encryption limits the rate.
//
// Namespaces are named hsc<pid>-*; what a crashed earlier run left behind
// (namespaces of a pid that no longer runs, and the processes in them) is
// removed by up(). down() (and the destructor) tolerate a half-built state.
#pragma once

#include <gtest/gtest.h>
#include <sys/types.h>

#include <csignal>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tests/integration/harness.h"

namespace hotshard::testing {

// A process started in the background, in its own session (so its process
// group holds it and what it forks), optionally in a network namespace.
class BackgroundProcess {
 public:
  BackgroundProcess() = default;
  BackgroundProcess(const BackgroundProcess&) = delete;
  BackgroundProcess& operator=(const BackgroundProcess&) = delete;
  ~BackgroundProcess();  // stop()

  // Starts argv with stdout and stderr appended to log; netns "" = ours.
  ::testing::AssertionResult start(const std::vector<std::string>& argv, const std::string& netns,
                                   const std::string& log);
  // Signals the whole group, waits up to grace_ms, then SIGKILLs it; reaps.
  void stop(int sig = SIGTERM, int grace_ms = 5000);
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

class ClusterTopology {
 public:
  struct Options {
    int hosts = 3;
    std::string remote_rate = "200mbit";  // tbf rate of the remote's link, each direction
    std::string base = "10.77.0";         // /24 inside the namespaces only: never clashes
    uint16_t sftp_port = 7022;
    uint16_t etcd_port = 2379;
  };

  // workdir: an existing directory that holds the export, the mounts, the logs.
  ClusterTopology(Options options, std::string workdir);
  ClusterTopology(const ClusterTopology&) = delete;
  ClusterTopology& operator=(const ClusterTopology&) = delete;
  ~ClusterTopology();  // down()

  // Builds the namespaces and links, starts the SFTP server and mounts one
  // sshfs per host. Fails (saying what) if a tool is missing or a step fails.
  ::testing::AssertionResult up();
  // Unmounts, stops every process started here, deletes the namespaces.
  void down();

  // Tools the topology needs, missing ones named ("" when all are there).
  static std::string missingTools();

  int hosts() const { return options_.hosts; }
  // Host n is 1-based, as in the namespace names.
  std::string hostNetns(int n) const;       // "/run/netns/hsc<pid>-hN"
  std::string hostAddress(int n) const;     // "BASE.N"
  std::string hostRemote(int n) const;      // host n's sshfs mount of the export
  std::string exportDir() const { return export_; }  // what the remote serves
  std::string bridgeAddress() const;        // "BASE.254"
  std::string etcdUrl() const;              // "http://BASE.254:PORT"

  // `ip netns exec NAME argv...` with NAME = "br", "r" or "hN".
  CommandResult runIn(const std::string& ns, std::vector<std::string> argv, int timeout_s = 30);

  // Content bytes the sftp-server sent so far, from its log (`read "PATH"
  // (handle N) off OFF len LEN`), each read clipped to the file's current size.
  uint64_t remoteFileBytes() const;
  // Bytes the remote's end of its link sent so far (tbf's counter, with headers).
  uint64_t remoteLinkBytes();
  // Bytes host n's end of its link sent so far (the veth's tx counter).
  uint64_t hostTxBytes(int n);
  // Shapes (rate "400mbit") or unshapes (rate "") the egress of both ends of
  // host n's link.
  ::testing::AssertionResult shapeHost(int n, const std::string& rate);

  // etcd on the bridge namespace, data under workdir/etcd (kept across a
  // stop and start, as a restarted etcd server keeps it). start waits until it
  // answers a health check.
  ::testing::AssertionResult startEtcd();
  void stopEtcd();
  bool etcdRunning() { return etcd_.running(); }

 private:
  std::string nsName(const std::string& suffix) const { return prefix_ + "-" + suffix; }
  ::testing::AssertionResult buildLinks();
  ::testing::AssertionResult startSftp();
  ::testing::AssertionResult mountRemote(int n);
  static void sweepStale();

  Options options_;
  std::string workdir_;
  std::string prefix_;
  std::string export_;
  std::string sftp_log_;
  std::vector<std::string> namespaces_;  // created so far
  BackgroundProcess sftp_;
  std::vector<std::unique_ptr<BackgroundProcess>> sshfs_;
  BackgroundProcess etcd_;
};

}  // namespace hotshard::testing
