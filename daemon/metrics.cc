#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <prometheus/collectable.h>
#include <prometheus/exposer.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

namespace hotshard {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using Labels = std::vector<ClientMetric::Label>;

// ---- the catalog ------------------------------------------------------------------

// Bounds on label sets that come from the JSON rather than from this file.
constexpr size_t kMaxOps = 64;
constexpr size_t kMaxJobs = 100;
constexpr size_t kMaxLabelValue = 200;

// clang-format off
const std::vector<MetricInfo> kCatalog = {
    {"hotshard_build_info", "gauge", {"version"}, "Always 1; the daemon's version as a label."},
    {"hotshard_mount_info", "gauge", {"mount", "remote", "cache_dir", "consistency", "overmount"},
     "Always 1; what this daemon serves, and how."},
    {"hotshard_passthrough_active", "gauge", {},
     "1 when opens are answered with kernel FUSE passthrough, 0 when reads go through user space."},
    {"hotshard_passthrough_info", "gauge", {"reason"},
     "Always 1; why passthrough is on or off, as the daemon states it."},
    {"hotshard_fuse_requests_total", "counter", {"op"}, "FUSE requests received, by operation."},
    {"hotshard_fuse_inodes", "gauge", {}, "Inodes the kernel currently knows through the mount."},
    {"hotshard_opens_total", "counter", {"backing"},
     "File opens, by the file that backs them: the local cache copy or the remote file."},
    {"hotshard_opens_served_total", "counter", {"via"},
     "File opens, by how their I/O is served: kernel passthrough or user space."},
    {"hotshard_cache_conflicts_total", "counter", {},
     "Opens that could not use a valid cached copy because a writer held the file."},
    {"hotshard_userspace_read_bytes_total", "counter", {},
     "Bytes the daemon read on behalf of opens served in user space."},
    {"hotshard_remote_call_failures_total", "counter", {"reason"},
     "Remote calls of FUSE requests that failed for want of an answer: past --remote-timeout "
     "(timeout, ETIMEDOUT) or refused at once while every remote worker was blocked (blocked, EIO)."},
    {"hotshard_remote_calls_blocked", "gauge", {},
     "Remote calls still blocked in the remote after their request was answered."},
    {"hotshard_cache_healthy", "gauge", {},
     "1 while the cache disk answers; 0 from its first I/O error (EIO, EROFS, ...) until a probe "
     "succeeds: opens go to the remote and promotions pause meanwhile."},
    {"hotshard_cache_used_bytes", "gauge", {}, "Bytes the cache store holds."},
    {"hotshard_cache_capacity_bytes", "gauge", {}, "Bytes the cache store may hold."},
    {"hotshard_cache_objects", "gauge", {}, "Objects (cached files) in the cache store."},
    {"hotshard_cache_pinned_objects", "gauge", {}, "Cached objects pinned against eviction."},
    {"hotshard_promotions_in_flight", "gauge", {}, "Promotions copying right now."},
    {"hotshard_promotions_queued", "gauge", {}, "Promotions waiting for a promoter slot."},
    {"hotshard_evictions_total", "counter", {}, "Objects evicted from the cache store."},
    {"hotshard_cache_drops_total", "counter", {"reason"},
     "Cached objects dropped without eviction: stale (the remote changed), invalidated (a "
     "write through the mount), corrupt (failed verification)."},
    {"hotshard_promotions_started_total", "counter", {}, "Promotions started."},
    {"hotshard_promotions_total", "counter", {"result"},
     "Finished promotions by result: published, already_cached, linked (shared a hard link's "
     "copy, nothing copied), vanished (the remote file went before or during the copy; no "
     "failure), failed."},
    {"hotshard_promotion_failures_total", "counter", {"reason"},
     "Failed promotions by reason (stale, no_space, remote_io, cache_io, ...)."},
    {"hotshard_promoted_bytes_total", "counter", {}, "Bytes copied into the cache by promotions."},
    {"hotshard_promotion_read_bytes_total", "counter", {"source"},
     "Bytes promotions read, by source: page_cache (the jobs' reads had brought them in) or "
     "remote."},
    {"hotshard_promotion_yields_total", "counter", {},
     "Promotion chunks that waited for the jobs' reads of the remote."},
    {"hotshard_scrub_passes_total", "counter", {}, "Completed passes of the background scrub."},
    {"hotshard_scrub_objects_checked_total", "counter", {},
     "Objects whose checksum the scrub verified."},
    {"hotshard_scrub_objects_dropped_total", "counter", {},
     "Objects the scrub found corrupt and dropped."},
    {"hotshard_probes_active", "gauge", {},
     "1 when the eBPF heat probes run, 0 when the daemon runs degraded without them."},
    {"hotshard_probes_info", "gauge", {"mode", "reason"},
     "Always 1; the probes' mode (bpf or degraded) and why."},
    {"hotshard_probes_attached", "gauge", {}, "Tracepoint programs attached."},
    {"hotshard_probe_events_total", "counter", {}, "Tracepoint events counted on watched devices."},
    {"hotshard_probe_lost_updates_total", "counter", {},
     "Probe counter updates dropped in the kernel (map full, range too wide)."},
    {"hotshard_bytes_requested_total", "counter", {"backing"},
     "Bytes jobs read through the mount, by the file backing them (cache or remote), page-cache "
     "hits included."},
    {"hotshard_bytes_read_total", "counter", {"source"},
     "Bytes jobs read, by where they came from: remote (fetched from the remote), cache (read "
     "from the NVMe copy), page_cache (requested but fetched from neither)."},
    {"hotshard_unattributed_bytes_total", "counter", {},
     "Bytes the probes saw on watched devices that no file of the mount accounts for."},
    {"hotshard_heat_shards", "gauge", {}, "Files the placement loop keeps heat for."},
    {"hotshard_remote_bytes_avoided_total", "counter", {},
     "Bytes served from the cache that would otherwise have been fetched from the remote."},
    {"hotshard_job_bytes_read_total", "counter", {"cgroup"},
     "Bytes read through the mount per job (cgroup); the top jobs and \"other\"."},
    {"hotshard_job_bytes_missed_total", "counter", {"cgroup"},
     "Bytes per job (cgroup) that missed the page cache and came from the backing store."},
    {"hotshard_policy_info", "gauge", {"policy", "params"},
     "Always 1; the placement policy and its parameters (k=v;k=v)."},
    {"hotshard_policy_admits_total", "counter", {}, "Objects the placement policy admitted."},
    {"hotshard_policy_rejects_total", "counter", {}, "Objects the placement policy refused to admit."},
    {"hotshard_placement_automatic", "gauge", {},
     "1 when placement promotes and evicts by heat, 0 when only warm/evict/pin do (manual)."},
    {"hotshard_placement_tick_seconds", "gauge", {}, "The placement loop's tick."},
    {"hotshard_placement_ticks_total", "counter", {}, "Placement loop ticks."},
    {"hotshard_placement_promotions_total", "counter", {},
     "Promotions the placement loop queued."},
    {"hotshard_placement_promotion_failures_total", "counter", {},
     "Promotions the placement loop queued that then failed."},
    {"hotshard_placement_evictions_total", "counter", {},
     "Evictions the placement loop decided on."},
    {"hotshard_takeovers_total", "counter", {},
     "Daemon processes replaced without unmounting (crashes and restarts) since the mount."},
    {"hotshard_peer_members", "gauge", {},
     "Live members of this host's cluster namespace, this host included (1 when alone)."},
    {"hotshard_peer_connected", "gauge", {},
     "1 while etcd answers and this host's lease is alive; 0 while it goes on alone."},
    {"hotshard_peer_fetch_bytes_total", "counter", {"peer", "transport"},
     "Bytes of objects fetched from peers and published, by peer id and transport."},
    {"hotshard_peer_fetches_total", "counter", {"peer", "transport"},
     "Objects fetched from peers and published, by peer id and transport."},
    {"hotshard_peer_fetch_failures_total", "counter", {"reason"},
     "Fetches from peers that failed, after which the open read the remote, by reason "
     "(busy also counts the owner's opens that outlasted the wait for its own copy)."},
    {"hotshard_peer_owner_promotions_total", "counter", {},
     "Opens of files this host owns that promoted from the remote at once."},
    {"hotshard_peer_served_bytes_total", "counter", {},
     "Bytes of objects this host served to peers."},
    {"hotshard_peer_served_objects_total", "counter", {}, "Objects this host served to peers."},
    {"hotshard_peer_refused_total", "counter", {},
     "Peer connections refused: they did not authenticate with the cluster token."},
    {"hotshard_peer_protocol_errors_total", "counter", {},
     "Malformed frames or requests on the peer listener."},
    {"hotshard_peer_not_served_total", "counter", {},
     "Peer requests answered without an object (not found, stale, busy)."},
    {"hotshard_metrics_snapshot_failures_total", "counter", {},
     "Scrapes at which the daemon's status could not be read; the status series are missing "
     "from those scrapes."},
    {"hotshard_promotion_duration_seconds", "histogram", {}, "Wall time of finished promotions."},
    {"hotshard_promotion_size_bytes", "histogram", {}, "Bytes copied by finished promotions."},
    {"hotshard_fuse_request_duration_seconds", "histogram", {"op"},
     "Time to handle FUSE requests in user space, by operation."},
    {"hotshard_peer_fetch_seconds", "histogram", {},
     "Wall time of successful fetches from peers, request to publish."},
};
// clang-format on

const MetricInfo& info(std::string_view name) {
  for (const auto& m : kCatalog) {
    if (m.name == name) return m;
  }
  std::abort();  // a name missing from kCatalog is a bug in this file
}

// ---- building families --------------------------------------------------------------

class Families {
 public:
  // value nullopt: no sample (the field was absent).
  void add(std::string_view name, Labels labels, std::optional<double> value) {
    if (!value) return;
    const MetricInfo& m = info(name);
    auto [it, inserted] = index_.try_emplace(m.name, families_.size());
    if (inserted) {
      MetricFamily f;
      f.name = m.name;
      f.help = m.help;
      f.type = m.type == "counter" ? MetricType::Counter : MetricType::Gauge;
      families_.push_back(std::move(f));
    }
    MetricFamily& f = families_[it->second];
    ClientMetric metric;
    metric.label = std::move(labels);
    if (f.type == MetricType::Counter) {
      metric.counter.value = *value;
    } else {
      metric.gauge.value = *value;
    }
    f.metric.push_back(std::move(metric));
  }
  std::vector<MetricFamily> take() { return std::move(families_); }

 private:
  std::vector<MetricFamily> families_;
  std::map<std::string, size_t, std::less<>> index_;
};

// A field's value as a sample; nullopt (no sample) when the field is absent.
std::optional<double> num(const Opt<uint64_t>& v) {
  return v ? std::optional<double>(static_cast<double>(*v)) : std::nullopt;
}
std::optional<double> num(const Opt<double>& v) { return v; }
std::optional<double> num(const Opt<bool>& v) {
  return v ? std::optional<double>(*v ? 1.0 : 0.0) : std::nullopt;
}

// A label value Prometheus accepts: valid UTF-8 (one bad byte would fail the
// whole scrape, and paths and cgroup names are bytes), at most kMaxLabelValue
// bytes, cut between characters. Invalid bytes become U+FFFD.
std::string labelValue(const std::string& v) {
  static const char kReplacement[] = "\xEF\xBF\xBD";
  std::string out;
  size_t i = 0;
  while (i < v.size()) {
    auto c = static_cast<unsigned char>(v[i]);
    size_t len = c < 0x80           ? 1
                 : (c >> 5) == 0x6  ? 2
                 : (c >> 4) == 0xE  ? 3
                 : (c >> 3) == 0x1E ? 4
                                    : 0;
    bool valid = len > 0 && i + len <= v.size();
    for (size_t k = 1; valid && k < len; k++) {
      valid = (static_cast<unsigned char>(v[i + k]) & 0xC0) == 0x80;
    }
    if (valid && len > 1) {
      // Overlong forms, surrogates and code points past U+10FFFF are invalid too.
      auto c1 = static_cast<unsigned char>(v[i + 1]);
      valid = !(c == 0xC0 || c == 0xC1 || (c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 >= 0xA0) ||
                (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 >= 0x90) || c > 0xF4);
    }
    std::string_view piece = valid ? std::string_view(v).substr(i, len) : kReplacement;
    if (out.size() + piece.size() > kMaxLabelValue) break;
    out += piece;
    i += valid ? len : 1;
  }
  return out;
}

std::optional<double> sum(std::initializer_list<std::optional<double>> parts) {
  std::optional<double> total;
  for (const auto& p : parts) {
    if (p) total = total.value_or(0) + *p;
  }
  return total;
}

// Policy parameters as one label value, "k=v;k=v" (the policies' own syntax).
std::string paramsText(const Opt<std::map<std::string, std::string>>& params) {
  std::string out;
  if (!params) return out;
  for (const auto& [k, v] : *params) out += (out.empty() ? "" : ";") + k + "=" + v;
  return out;
}

// What the conversion remembers between scrapes: the page-cache byte count is
// a difference of two counters and is held monotonic (see addHeat).
struct ConversionState {
  double page_cache_bytes = 0;
};

void addIdentity(const StatusSnapshot& s, Families& f) {
  if (s.version) f.add("hotshard_build_info", {{"version", labelValue(*s.version)}}, 1);
  if (s.mount) {
    f.add("hotshard_mount_info",
          {{"cache_dir", labelValue(s.cache_dir.value_or(""))},
           {"consistency", labelValue(s.consistency.value_or(""))},
           {"mount", labelValue(*s.mount)},
           {"overmount", s.overmount ? (*s.overmount ? "true" : "false") : ""},
           {"remote", labelValue(s.remote.value_or(""))}},
          1);
  }
  f.add("hotshard_passthrough_active", {}, num(s.passthrough));
  if (s.passthrough_reason) {
    f.add("hotshard_passthrough_info", {{"reason", labelValue(*s.passthrough_reason)}}, 1);
  }
}

void addFuse(const FuseStatus& fu, Families& f) {
  if (fu.requests) {
    size_t n = 0;
    for (const auto& [op, count] : *fu.requests) {
      if (n++ >= kMaxOps) break;
      f.add("hotshard_fuse_requests_total", {{"op", labelValue(op)}}, static_cast<double>(count));
    }
  }
  f.add("hotshard_fuse_inodes", {}, num(fu.inodes));
  f.add("hotshard_opens_total", {{"backing", "cache"}}, num(fu.opens_cache));
  f.add("hotshard_opens_total", {{"backing", "remote"}}, num(fu.opens_remote));
  f.add("hotshard_opens_served_total", {{"via", "passthrough"}}, num(fu.opens_passthrough));
  f.add("hotshard_opens_served_total", {{"via", "userspace"}}, num(fu.opens_userspace));
  f.add("hotshard_cache_conflicts_total", {}, num(fu.cache_conflicts));
  f.add("hotshard_userspace_read_bytes_total", {}, num(fu.userspace_read_bytes));
  f.add("hotshard_remote_call_failures_total", {{"reason", "timeout"}}, num(fu.remote_timeouts));
  f.add("hotshard_remote_call_failures_total", {{"reason", "blocked"}}, num(fu.remote_refused));
  f.add("hotshard_remote_calls_blocked", {}, num(fu.remote_calls_blocked));
}

// Every failed_X field of the promoter is one failure reason X.
void addPromoter(const PromoterStatus& p, Families& f) {
  f.add("hotshard_promotions_started_total", {}, num(p.started));
  f.add("hotshard_promotions_total", {{"result", "published"}}, num(p.published));
  f.add("hotshard_promotions_total", {{"result", "already_cached"}}, num(p.already_cached));
  f.add("hotshard_promotions_total", {{"result", "linked"}}, num(p.linked));
  f.add("hotshard_promotions_total", {{"result", "vanished"}}, num(p.vanished));
  std::optional<double> failed;
  PromoterStatus::fields(p, [&](std::string_view key, const Opt<uint64_t>& v) {
    if (!key.starts_with("failed_") || !v) return;
    f.add("hotshard_promotion_failures_total", {{"reason", labelValue(std::string(key.substr(7)))}},
          num(v));
    failed = failed.value_or(0) + static_cast<double>(*v);
  });
  f.add("hotshard_promotions_total", {{"result", "failed"}}, failed);
  f.add("hotshard_promoted_bytes_total", {}, num(p.bytes_copied));
  f.add("hotshard_promotion_read_bytes_total", {{"source", "page_cache"}},
        num(p.read_page_cache_bytes));
  f.add("hotshard_promotion_read_bytes_total", {{"source", "remote"}}, num(p.read_remote_bytes));
  f.add("hotshard_promotion_yields_total", {}, num(p.yields));
  f.add("hotshard_promotions_queued", {}, num(p.queued));
}

void addCache(const CacheStatus& c, Families& f) {
  if (c.disk_healthy) f.add("hotshard_cache_healthy", {}, *c.disk_healthy ? 1 : 0);
  f.add("hotshard_cache_used_bytes", {}, num(c.used_bytes));
  f.add("hotshard_cache_capacity_bytes", {}, num(c.capacity_bytes));
  f.add("hotshard_cache_objects", {}, num(c.objects));
  f.add("hotshard_cache_pinned_objects", {}, num(c.pinned_objects));
  f.add("hotshard_promotions_in_flight", {}, num(c.promotions_in_flight));
  f.add("hotshard_evictions_total", {}, num(c.evictions));
  f.add("hotshard_cache_drops_total", {{"reason", "stale"}}, num(c.stale_drops));
  f.add("hotshard_cache_drops_total", {{"reason", "invalidated"}}, num(c.invalidations));
  f.add("hotshard_cache_drops_total", {{"reason", "corrupt"}}, num(c.corrupt_drops));
  if (c.promoter) addPromoter(*c.promoter, f);
  if (c.scrub) {
    f.add("hotshard_scrub_passes_total", {}, num(c.scrub->passes));
    f.add("hotshard_scrub_objects_checked_total", {}, num(c.scrub->objects_checked));
    f.add("hotshard_scrub_objects_dropped_total", {}, num(c.scrub->objects_dropped));
  }
}

void addProbes(const ProbeStatus& p, Families& f) {
  if (p.mode) {
    f.add("hotshard_probes_active", {}, *p.mode == "bpf" ? 1 : 0);
    f.add("hotshard_probes_info",
          {{"mode", labelValue(*p.mode)}, {"reason", labelValue(p.reason.value_or(""))}}, 1);
  }
  f.add("hotshard_probes_attached", {}, num(p.attached));
  f.add("hotshard_probe_events_total", {}, num(p.events));
  f.add("hotshard_probe_lost_updates_total", {}, num(p.lost_updates));
}

// bytes_read_X are the bytes jobs requested from files backed by X,
// bytes_missed_X the part that missed the page cache and was read from X.
void addHeat(const HeatStatus& h, Families& f, ConversionState& state) {
  f.add("hotshard_bytes_requested_total", {{"backing", "cache"}}, num(h.bytes_read_cache));
  f.add("hotshard_bytes_requested_total", {{"backing", "remote"}}, num(h.bytes_read_remote));
  f.add("hotshard_bytes_read_total", {{"source", "remote"}}, num(h.bytes_missed_remote));
  f.add("hotshard_bytes_read_total", {{"source", "cache"}}, num(h.bytes_missed_cache));
  auto requested = sum({num(h.bytes_read_remote), num(h.bytes_read_cache)});
  auto missed = sum({num(h.bytes_missed_remote), num(h.bytes_missed_cache)});
  if (requested && missed) {
    // Readahead can put pages into the page cache before they are requested,
    // so requested - missed may dip for a moment; hold it monotonic so that it
    // stays a counter (a dip would read as a counter reset to rate()).
    state.page_cache_bytes = std::max(state.page_cache_bytes, *requested - *missed);
    f.add("hotshard_bytes_read_total", {{"source", "page_cache"}}, state.page_cache_bytes);
  }
  f.add("hotshard_remote_bytes_avoided_total", {}, num(h.remote_bytes_avoided));
  f.add("hotshard_unattributed_bytes_total", {}, num(h.unattributed_bytes));
  f.add("hotshard_heat_shards", {}, num(h.shards));
}

// Already bounded by the daemon (top N and "other"); bounded again here. The
// label is "cgroup", not "job": Prometheus owns "job" (the scrape job) and would
// rename ours to exported_job.
void addJobs(const std::vector<JobStatus>& jobs, Families& f) {
  std::optional<double> extra_read, extra_missed;
  size_t n = 0;
  for (const auto& job : jobs) {
    std::string name = labelValue(job.cgroup.value_or(""));
    if (name.empty()) name = "unknown";
    if (n++ >= kMaxJobs) {
      extra_read = sum({extra_read, num(job.bytes_read)});
      extra_missed = sum({extra_missed, num(job.bytes_missed)});
      continue;
    }
    f.add("hotshard_job_bytes_read_total", {{"cgroup", name}}, num(job.bytes_read));
    f.add("hotshard_job_bytes_missed_total", {{"cgroup", name}}, num(job.bytes_missed));
  }
  f.add("hotshard_job_bytes_read_total", {{"cgroup", "other_overflow"}}, extra_read);
  f.add("hotshard_job_bytes_missed_total", {{"cgroup", "other_overflow"}}, extra_missed);
}

void addPolicy(const PolicyStatus& p, Families& f) {
  if (p.name) {
    f.add("hotshard_policy_info",
          {{"params", labelValue(paramsText(p.params))}, {"policy", labelValue(*p.name)}}, 1);
  }
  if (p.counters) {
    auto counter = [&](const char* name) -> std::optional<double> {
      auto it = p.counters->find(name);
      return it == p.counters->end() ? std::nullopt : std::optional<double>(it->second);
    };
    f.add("hotshard_policy_admits_total", {}, counter("admits"));
    f.add("hotshard_policy_rejects_total", {}, counter("rejects"));
  }
}

void addPlacement(const PlacementStatus& p, Families& f) {
  f.add("hotshard_placement_automatic", {}, num(p.automatic));
  f.add("hotshard_placement_tick_seconds", {}, num(p.tick_seconds));
  f.add("hotshard_placement_ticks_total", {}, num(p.ticks));
  f.add("hotshard_placement_promotions_total", {}, num(p.promotions));
  f.add("hotshard_placement_promotion_failures_total", {}, num(p.promotion_failures));
  f.add("hotshard_placement_evictions_total", {}, num(p.evictions));
}

void addCluster(const ClusterStatus& c, Families& f) {
  if (c.members) f.add("hotshard_peer_members", {}, static_cast<double>(c.members->size()));
  f.add("hotshard_peer_connected", {}, num(c.connected));
  for (const auto& t : c.fetched.value_or(std::vector<PeerTrafficStatus>{})) {
    if (!t.peer || !t.transport) continue;
    Labels labels = {{"peer", labelValue(*t.peer)}, {"transport", labelValue(*t.transport)}};
    f.add("hotshard_peer_fetch_bytes_total", labels, num(t.bytes));
    f.add("hotshard_peer_fetches_total", labels, num(t.fetches));
  }
  for (const auto& [reason, n] : c.fetch_failures.value_or(std::map<std::string, uint64_t>{})) {
    f.add("hotshard_peer_fetch_failures_total", {{"reason", labelValue(reason)}},
          static_cast<double>(n));
  }
  f.add("hotshard_peer_owner_promotions_total", {}, num(c.owner_promotions));
  f.add("hotshard_peer_served_bytes_total", {}, num(c.served_bytes));
  f.add("hotshard_peer_served_objects_total", {}, num(c.served_objects));
  f.add("hotshard_peer_refused_total", {}, num(c.refused));
  f.add("hotshard_peer_protocol_errors_total", {}, num(c.protocol_errors));
  f.add("hotshard_peer_not_served_total", {}, num(c.not_served));
}

void convertStatus(const StatusSnapshot& s, Families& f, ConversionState& state) {
  addIdentity(s, f);
  if (s.fuse) addFuse(*s.fuse, f);
  if (s.cache) addCache(*s.cache, f);
  if (s.probes) addProbes(*s.probes, f);
  if (s.heat) addHeat(*s.heat, f, state);
  if (s.jobs) addJobs(*s.jobs, f);
  if (s.policy) addPolicy(*s.policy, f);
  if (s.placement) addPlacement(*s.placement, f);
  if (s.cluster) addCluster(*s.cluster, f);
  if (s.supervisor) f.add("hotshard_takeovers_total", {}, num(s.supervisor->takeovers));
}

// ---- the exporter -------------------------------------------------------------------

// The FUSE operations of the status JSON; anything else is "other".
constexpr std::array<const char*, 17> kFuseOps = {
    "lookup",      "getattr", "setattr", "open",         "create",  "read",
    "write",       "flush",   "release", "fsync",        "opendir", "readdir",
    "readdirplus", "statfs",  "forget",  "batch_forget", "other"};

class StatusCollectable : public prometheus::Collectable {
 public:
  explicit StatusCollectable(MetricsExporter::Snapshot snapshot) : snapshot_(std::move(snapshot)) {}

  std::vector<MetricFamily> Collect() const override {
    StatusSnapshot status;
    bool failed = false;
    try {
      status = snapshot_();
    } catch (...) {
      failed = true;
    }
    Families f;
    std::lock_guard lock(mu_);
    if (failed) snapshot_failures_++;
    if (!failed) convertStatus(status, f, state_);
    f.add("hotshard_metrics_snapshot_failures_total", {}, static_cast<double>(snapshot_failures_));
    return f.take();
  }

 private:
  MetricsExporter::Snapshot snapshot_;
  mutable std::mutex mu_;
  mutable ConversionState state_;
  mutable uint64_t snapshot_failures_ = 0;
};

std::string errnoText(int err) {
  switch (err) {
    case EADDRINUSE:
      return "address in use";
    case EADDRNOTAVAIL:
      return "address not available on this host";
    case EACCES:
      return "permission denied (ports below 1024 need privileges)";
    default:
      return std::strerror(err);
  }
}

socklen_t toSockaddr(const MetricsAddress& a, uint16_t port, sockaddr_storage* ss) {
  *ss = {};
  if (a.ipv6) {
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(ss);
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    ::inet_pton(AF_INET6, a.host.c_str(), &sin6->sin6_addr);
    return sizeof(*sin6);
  }
  auto* sin = reinterpret_cast<sockaddr_in*>(ss);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  ::inet_pton(AF_INET, a.host.c_str(), &sin->sin_addr);
  return sizeof(*sin);
}

// civetweb says only "possible problem binding to port"; find out why first,
// with a socket of our own (SO_REUSEADDR, as civetweb binds).
Status probeBind(const MetricsAddress& a) {
  sockaddr_storage ss;
  socklen_t len = toSockaddr(a, a.port, &ss);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return makeError(Errc::kIo, "metrics " + a.text() + ": socket: " + errnoText(errno));
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (a.ipv6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  int rc = ::bind(fd, reinterpret_cast<sockaddr*>(&ss), len);
  int err = errno;
  ::close(fd);
  if (rc != 0) {
    Error e = sysError(err, "metrics " + a.text());
    e.code = err == EADDRINUSE ? Errc::kBusy : Errc::kIo;
    e.message = "metrics " + a.text() + ": " + errnoText(err);
    return e;
  }
  return Ok{};
}

// Connects to the exporter and hangs up at once.
void knock(const MetricsAddress& a, uint16_t port) {
  sockaddr_storage ss;
  socklen_t len = toSockaddr(a, port, &ss);
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return;
  (void)::connect(fd, reinterpret_cast<sockaddr*>(&ss), len);
  ::close(fd);
}

// Whether the civetweb this process loaded was built with IPv6 (feature 8).
bool httpServerHasIpv6() {
  using CheckFeature = unsigned (*)(unsigned);
  auto fn = reinterpret_cast<CheckFeature>(::dlsym(RTLD_DEFAULT, "mg_check_feature"));
  return fn == nullptr || fn(8) != 0;  // unknown: let it try
}

}  // namespace

struct MetricsExporter::Impl {
  MetricsAddress address;
  bool enabled = false;
  uint16_t port = 0;
  std::shared_ptr<prometheus::Registry> registry;
  std::shared_ptr<StatusCollectable> status;
  prometheus::Histogram* promotion_seconds = nullptr;
  prometheus::Histogram* promotion_bytes = nullptr;
  prometheus::Family<prometheus::Histogram>* fuse_family = nullptr;
  std::array<std::atomic<prometheus::Histogram*>, kFuseOps.size()> fuse_ops{};
  std::mutex fuse_mu;                            // creating a FUSE op's histogram
  std::atomic<prometheus::Histogram*> peer_fetch{nullptr};  // made at the first peer fetch
  std::mutex peer_mu;                                       // making it
  std::unique_ptr<prometheus::Exposer> exposer;  // last: stops first

  ~Impl() {
    if (!exposer) return;
    // civetweb's listener polls for 2 s before it looks at its stop flag; a
    // connection wakes it, so stopping takes milliseconds instead.
    std::atomic<bool> stopped{false};
    std::thread waker([&] {
      while (!stopped.load()) {
        knock(address, port);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    });
    exposer.reset();
    stopped = true;
    waker.join();
  }
};

std::string MetricsAddress::text() const {
  return (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

Result<MetricsAddress> parseMetricsAddress(const std::string& text, bool allow_any_port) {
  auto bad = [&](const std::string& why) {
    return makeError(Errc::kInvalidArgument,
                     "metrics '" + text + "': " + why +
                         " (expected HOST:PORT with an IP address, [IPv6]:PORT, or off)");
  };
  MetricsAddress a;
  std::string port;
  if (!text.empty() && text[0] == '[') {
    size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return bad("no ']:' after an IPv6 address");
    }
    a.host = text.substr(1, close - 1);
    a.ipv6 = true;
    port = text.substr(close + 2);
    in6_addr addr6;
    if (::inet_pton(AF_INET6, a.host.c_str(), &addr6) != 1) return bad("not an IPv6 address");
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string::npos) return bad("no port");
    a.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (a.host.find(':') != std::string::npos) return bad("IPv6 addresses go in brackets");
    in_addr addr4;
    if (::inet_pton(AF_INET, a.host.c_str(), &addr4) != 1) {
      return bad("'" + a.host + "' is not an IPv4 address");
    }
  }
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    return bad("bad port");
  }
  unsigned long n = std::stoul(port);
  if (n > 65535 || (n == 0 && !allow_any_port)) return bad("port out of range 1-65535");
  a.port = static_cast<uint16_t>(n);
  return a;
}

const std::vector<MetricInfo>& metricCatalog() { return kCatalog; }

std::string metricsLabelValue(const std::string& s) { return labelValue(s); }

std::string statusMetricsText(const json& status) {
  return statusMetricsText(status.get<StatusSnapshot>());
}

std::string statusMetricsText(const StatusSnapshot& status) {
  Families f;
  ConversionState state;
  convertStatus(status, f, state);
  return prometheus::TextSerializer().Serialize(f.take());
}

MetricsExporter::MetricsExporter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
MetricsExporter::~MetricsExporter() = default;

Result<std::unique_ptr<MetricsExporter>> MetricsExporter::start(const std::string& addr,
                                                                Snapshot snapshot) {
  auto impl = std::make_unique<Impl>();
  if (addr == "off") return std::unique_ptr<MetricsExporter>(new MetricsExporter(std::move(impl)));
  ASSIGN_OR_RETURN(impl->address, parseMetricsAddress(addr, /*allow_any_port=*/true));
  const MetricsAddress& a = impl->address;
  if (a.ipv6 && !httpServerHasIpv6()) {
    return makeError(Errc::kUnsupported,
                     "metrics " + a.text() +
                         ": this build's HTTP server (civetweb) has no IPv6 support; use an "
                         "IPv4 address such as 127.0.0.1:" +
                         std::to_string(a.port));
  }
  if (a.port != 0) RETURN_IF_ERROR(probeBind(a));

  impl->registry = std::make_shared<prometheus::Registry>();
  impl->status = std::make_shared<StatusCollectable>(std::move(snapshot));
  impl->promotion_seconds =
      &prometheus::BuildHistogram()
           .Name("hotshard_promotion_duration_seconds")
           .Help(info("hotshard_promotion_duration_seconds").help)
           .Register(*impl->registry)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                                                            10, 30, 60, 120, 300, 600});
  impl->promotion_bytes =
      &prometheus::BuildHistogram()
           .Name("hotshard_promotion_size_bytes")
           .Help(info("hotshard_promotion_size_bytes").help)
           .Register(*impl->registry)
           .Add({}, prometheus::Histogram::BucketBoundaries{
                        65536.0, 1048576.0, 16777216.0, 67108864.0, 268435456.0, 1073741824.0,
                        4294967296.0, 17179869184.0, 68719476736.0});
  impl->fuse_family = &prometheus::BuildHistogram()
                           .Name("hotshard_fuse_request_duration_seconds")
                           .Help(info("hotshard_fuse_request_duration_seconds").help)
                           .Register(*impl->registry);
  try {
    impl->exposer = std::make_unique<prometheus::Exposer>(a.text(), 2);
  } catch (const std::exception& e) {
    return makeError(Errc::kIo, "metrics " + a.text() + ": cannot listen: " + e.what());
  }
  auto ports = impl->exposer->GetListeningPorts();
  impl->port = ports.empty() ? a.port : static_cast<uint16_t>(ports.front());
  impl->exposer->RegisterCollectable(impl->status);
  impl->exposer->RegisterCollectable(impl->registry);
  impl->enabled = true;
  return std::unique_ptr<MetricsExporter>(new MetricsExporter(std::move(impl)));
}

bool MetricsExporter::enabled() const { return impl_->enabled; }
uint16_t MetricsExporter::port() const { return impl_->port; }

std::string MetricsExporter::url() const {
  if (!impl_->enabled) return "";
  MetricsAddress a = impl_->address;
  a.port = impl_->port;
  return "http://" + a.text() + "/metrics";
}

void MetricsExporter::observePromotion(double seconds, uint64_t bytes) noexcept {
  if (!impl_->enabled) return;
  impl_->promotion_seconds->Observe(seconds);
  impl_->promotion_bytes->Observe(static_cast<double>(bytes));
}

void MetricsExporter::observePeerFetch(double seconds) noexcept {
  if (!impl_->enabled) return;
  prometheus::Histogram* h = impl_->peer_fetch.load(std::memory_order_acquire);
  if (h == nullptr) {
    // Made on first use: a daemon outside a cluster exports no such series.
    std::lock_guard lock(impl_->peer_mu);
    h = impl_->peer_fetch.load(std::memory_order_relaxed);
    if (h == nullptr) {
      try {
        h = &prometheus::BuildHistogram()
                 .Name("hotshard_peer_fetch_seconds")
                 .Help(info("hotshard_peer_fetch_seconds").help)
                 .Register(*impl_->registry)
                 .Add({}, prometheus::Histogram::BucketBoundaries{0.001, 0.005, 0.01, 0.025, 0.05,
                                                                  0.1, 0.25, 0.5, 1, 2.5, 5, 10,
                                                                  30, 60});
      } catch (...) {
        return;  // out of memory: drop the observation
      }
      impl_->peer_fetch.store(h, std::memory_order_release);
    }
  }
  h->Observe(seconds);
}

void MetricsExporter::observeFuseOp(std::string_view op, double seconds) noexcept {
  if (!impl_->enabled) return;
  size_t i = 0;
  while (i + 1 < kFuseOps.size() && op != kFuseOps[i]) i++;  // the last is "other"
  prometheus::Histogram* h = impl_->fuse_ops[i].load(std::memory_order_acquire);
  if (h == nullptr) {
    // Created on first use, so that ops never seen export no series.
    std::lock_guard lock(impl_->fuse_mu);
    h = impl_->fuse_ops[i].load(std::memory_order_relaxed);
    if (h == nullptr) {
      try {
        h = &impl_->fuse_family->Add({{"op", kFuseOps[i]}},
                                     prometheus::Histogram::BucketBoundaries{
                                         0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                         0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5, 10});
      } catch (...) {
        return;  // out of memory: drop the observation
      }
      impl_->fuse_ops[i].store(h, std::memory_order_release);
    }
  }
  h->Observe(seconds);
}

}  // namespace hotshard
