// Prometheus metrics of one daemon: an HTTP endpoint (http://HOST:PORT/metrics,
// prometheus-cpp's pull Exposer) whose series are the daemon's status snapshot
// (daemon/status.h, what `hotshard status --json` prints), converted at every
// scrape, plus histograms the daemon observes in process (promotion durations,
// FUSE request latency).
//
// The status stays the one source of truth: a counter in it (a total that only
// grows) becomes a `_total` counter here, a level becomes a gauge. Fields that
// are absent produce no series; nothing in a status can crash a scrape.
// docs/metrics.md lists every series; metricCatalog() is the same list in code.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "daemon/status.h"

namespace hotshard {

using json = nlohmann::json;

// "HOST:PORT" with an IPv4 literal HOST, or "[IPv6]:PORT".
struct MetricsAddress {
  std::string host;  // without brackets
  uint16_t port = 0;
  bool ipv6 = false;
  std::string text() const;  // "127.0.0.1:9464", "[::1]:9464"
};

// Parses the `metrics` option (not "off"). Ports are 1..65535, or 0 (any free
// port) when allow_any_port.
Result<MetricsAddress> parseMetricsAddress(const std::string& text, bool allow_any_port = false);

struct MetricInfo {
  std::string name;
  std::string type;  // counter | gauge | histogram
  std::vector<std::string> labels;
  std::string help;
};
// Every family this exporter can emit, in documentation order.
const std::vector<MetricInfo>& metricCatalog();

// s as a Prometheus label value: valid UTF-8 (invalid bytes become U+FFFD), at
// most 200 bytes, cut between characters.
std::string metricsLabelValue(const std::string& s);

// The Prometheus text exposition of one status snapshot, without the in-process
// histograms (for tests and tools). Stateless: each call starts afresh.
std::string statusMetricsText(const StatusSnapshot& status);
// The same for a status as JSON (`hotshard status --json`), read with from_json:
// fields that are absent or of the wrong type give no series.
std::string statusMetricsText(const json& status);

class MetricsExporter {
 public:
  // The daemon's status now; it may throw (the scrape then counts a failure).
  using Snapshot = std::function<StatusSnapshot()>;

  // addr: "HOST:PORT", "[IPv6]:PORT" (port 0: any free port, see port()), or
  // "off": no HTTP endpoint, and the observe methods do nothing.
  // snapshot is called on the exporter's HTTP threads, once per scrape, and
  // must be safe to call concurrently with everything else in the daemon.
  // Errors name the address: "metrics 127.0.0.1:9464: address in use".
  static Result<std::unique_ptr<MetricsExporter>> start(const std::string& addr, Snapshot snapshot);
  ~MetricsExporter();  // stops serving; an in-flight scrape finishes first

  bool enabled() const;
  uint16_t port() const;    // the bound port, 0 when off
  std::string url() const;  // "http://127.0.0.1:9464/metrics", "" when off

  // One finished promotion: its wall time and the bytes it copied. Thread-safe,
  // cheap; call it from the promoter's completion path.
  void observePromotion(double seconds, uint64_t bytes) noexcept;
  // One FUSE request handled in user space (op as in the status JSON's
  // fuse.requests: "lookup", "read", ...; unknown ops count as "other").
  // Thread-safe, lock-free after the first request of each op.
  void observeFuseOp(std::string_view op, double seconds) noexcept;
  // One successful fetch from a peer (daemon/peer_service.h), request to
  // publish, seconds. Thread-safe; the histogram appears at the first one.
  void observePeerFetch(double seconds) noexcept;

  struct Impl;

 private:
  explicit MetricsExporter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace hotshard
