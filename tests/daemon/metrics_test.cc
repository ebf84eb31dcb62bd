// The Prometheus exporter: address parsing, the status-JSON conversion, and the
// HTTP endpoint on a free loopback port, checked with promtool.
#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <sstream>

#include "daemon/config.h"
#include "tests/daemon/metrics_test_util.h"
#include "tests/test_util.h"

namespace hotshard {
namespace {

using testing::fullStatusFixture;
using testing::fullStatusSnapshot;
using testing::httpGet;
using testing::parseMetricsText;

TEST(MetricsAddress, AcceptsIpLiteralsWithPorts) {
  auto v4 = parseMetricsAddress("127.0.0.1:9464");
  ASSERT_TRUE(v4.ok()) << v4.error().message;
  EXPECT_EQ(v4->host, "127.0.0.1");
  EXPECT_EQ(v4->port, 9464);
  EXPECT_FALSE(v4->ipv6);
  EXPECT_EQ(v4->text(), "127.0.0.1:9464");

  auto v6 = parseMetricsAddress("[::1]:9464");
  ASSERT_TRUE(v6.ok()) << v6.error().message;
  EXPECT_EQ(v6->host, "::1");
  EXPECT_TRUE(v6->ipv6);
  EXPECT_EQ(v6->text(), "[::1]:9464");

  EXPECT_TRUE(parseMetricsAddress("0.0.0.0:65535").ok());
  EXPECT_FALSE(parseMetricsAddress("127.0.0.1:0").ok());
  EXPECT_TRUE(parseMetricsAddress("127.0.0.1:0", /*allow_any_port=*/true).ok());
}

TEST(MetricsAddress, RejectsMalformedAddressesClearly) {
  for (const char* bad : {"", "9464", ":9464", "localhost:9464", "127.0.0.1", "127.0.0.1:",
                          "127.0.0.1:65536", "127.0.0.1:-1", "127.0.0.1:9a", "::1:9464",
                          "[::1]9464", "[::1]:", "[zz]:9464", "[::1:9464", "1.2.3:9464"}) {
    auto a = parseMetricsAddress(bad);
    ASSERT_FALSE(a.ok()) << "accepted '" << bad << "'";
    EXPECT_EQ(a.error().code, Errc::kInvalidArgument);
    EXPECT_NE(a.error().message.find("expected HOST:PORT"), std::string::npos) << a.error().message;
    EXPECT_NE(a.error().message.find(std::string("metrics '") + bad + "'"), std::string::npos)
        << a.error().message;
  }
}

TEST(MetricsConfig, ItemDefaultsToLoopbackAndValidates) {
  const auto& items = runConfigItems();
  auto it = std::find_if(items.begin(), items.end(),
                         [](const ConfigItem& i) { return i.name == "metrics"; });
  ASSERT_NE(it, items.end());
  RunConfig cfg;
  EXPECT_EQ(it->get(cfg), "127.0.0.1:9464");
  EXPECT_TRUE(it->set(cfg, "off").ok());
  EXPECT_EQ(cfg.metrics, "off");
  EXPECT_TRUE(it->set(cfg, "[::1]:9000").ok());
  EXPECT_EQ(cfg.metrics, "[::1]:9000");
  Status st = it->set(cfg, "localhost:9464");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message.find("metrics 'localhost:9464'"), std::string::npos)
      << st.error().message;
  EXPECT_EQ(cfg.metrics, "[::1]:9000");  // unchanged by a rejected value
}

TEST(MetricsConversion, FullSnapshotGivesEverySeries) {
  auto m = parseMetricsText(statusMetricsText(fullStatusFixture()));
  std::map<std::string, double> want = {
      {R"(hotshard_build_info{version="0.1.0"})", 1},
      {R"(hotshard_passthrough_active)", 1},
      {R"(hotshard_passthrough_info{reason="kernel passthrough"})", 1},
      {R"(hotshard_fuse_requests_total{op="lookup"})", 11},
      {R"(hotshard_fuse_requests_total{op="read"})", 3},
      {R"(hotshard_fuse_inodes)", 42},
      {R"(hotshard_opens_total{backing="cache"})", 7},
      {R"(hotshard_opens_total{backing="remote"})", 5},
      {R"(hotshard_opens_served_total{via="passthrough"})", 12},
      {R"(hotshard_opens_served_total{via="userspace"})", 0},
      {R"(hotshard_cache_conflicts_total)", 1},
      {R"(hotshard_userspace_read_bytes_total)", 4096},
      {R"(hotshard_cache_used_bytes)", 600000000},
      {R"(hotshard_cache_capacity_bytes)", 1000000000},
      {R"(hotshard_cache_objects)", 9},
      {R"(hotshard_cache_healthy)", 0},
      {R"(hotshard_cache_pinned_objects)", 2},
      {R"(hotshard_promotions_in_flight)", 1},
      {R"(hotshard_promotions_queued)", 3},
      {R"(hotshard_evictions_total)", 4},
      {R"(hotshard_cache_drops_total{reason="stale"})", 5},
      {R"(hotshard_cache_drops_total{reason="invalidated"})", 6},
      {R"(hotshard_cache_drops_total{reason="corrupt"})", 1},
      {R"(hotshard_promotions_started_total)", 20},
      {R"(hotshard_promotions_total{result="published"})", 10},
      {R"(hotshard_promotions_total{result="already_cached"})", 2},
      {R"(hotshard_promotions_total{result="linked"})", 7},
      {R"(hotshard_promotions_total{result="vanished"})", 5},
      {R"(hotshard_promotions_total{result="failed"})", 10},  // vanished is no failure
      {R"(hotshard_promotion_failures_total{reason="stale"})", 1},
      {R"(hotshard_promotion_failures_total{reason="no_space"})", 2},
      {R"(hotshard_promotion_failures_total{reason="remote_io"})", 3},
      {R"(hotshard_promotion_failures_total{reason="cache_io"})", 4},
      {R"(hotshard_promoted_bytes_total)", 123456789},
      {R"(hotshard_promotion_read_bytes_total{source="page_cache"})", 100000000},
      {R"(hotshard_promotion_read_bytes_total{source="remote"})", 23456789},
      {R"(hotshard_promotion_yields_total)", 7},
      {R"(hotshard_scrub_passes_total)", 2},
      {R"(hotshard_scrub_objects_checked_total)", 18},
      {R"(hotshard_scrub_objects_dropped_total)", 1},
      {R"(hotshard_probes_active)", 1},
      {R"(hotshard_probes_info{mode="bpf",reason="tp_btf"})", 1},
      {R"(hotshard_probes_attached)", 6},
      {R"(hotshard_probe_events_total)", 1000},
      {R"(hotshard_probe_lost_updates_total)", 0},
      {R"(hotshard_bytes_requested_total{backing="cache"})", 8000},
      {R"(hotshard_bytes_requested_total{backing="remote"})", 3000},
      {R"(hotshard_bytes_read_total{source="remote"})", 1000},
      {R"(hotshard_bytes_read_total{source="cache"})", 6000},
      {R"(hotshard_bytes_read_total{source="page_cache"})", 4000},
      {R"(hotshard_remote_bytes_avoided_total)", 6000},
      {R"(hotshard_job_bytes_read_total{cgroup="/system.slice/train.service"})", 9000},
      {R"(hotshard_job_bytes_missed_total{cgroup="/system.slice/train.service"})", 5000},
      {R"(hotshard_job_bytes_read_total{cgroup="other"})", 2000},
      {R"(hotshard_policy_info{params="decay=30s;weight=2",policy="hotshard"})", 1},
      {R"(hotshard_unattributed_bytes_total)", 77},
      {R"(hotshard_heat_shards)", 15},
      {R"(hotshard_policy_admits_total)", 14},
      {R"(hotshard_policy_rejects_total)", 6},
      {R"(hotshard_placement_automatic)", 1},
      {R"(hotshard_placement_tick_seconds)", 0.5},
      {R"(hotshard_placement_promotion_failures_total)", 2},
      {R"(hotshard_placement_ticks_total)", 100},
      {R"(hotshard_placement_promotions_total)", 12},
      {R"(hotshard_placement_evictions_total)", 3},
      {R"(hotshard_peer_members)", 2},
      {R"(hotshard_peer_connected)", 0},
      {R"(hotshard_peer_fetch_bytes_total{peer="host-b",transport="tcp"})", 7340032},
      {R"(hotshard_peer_fetches_total{peer="host-b",transport="tcp"})", 3},
      {R"(hotshard_peer_fetch_failures_total{reason="io"})", 2},
      {R"(hotshard_peer_fetch_failures_total{reason="stale"})", 1},
      {R"(hotshard_peer_owner_promotions_total)", 4},
      {R"(hotshard_peer_served_bytes_total)", 5242880},
      {R"(hotshard_peer_served_objects_total)", 2},
      {R"(hotshard_peer_refused_total)", 1},
      {R"(hotshard_peer_protocol_errors_total)", 3},
      {R"(hotshard_peer_not_served_total)", 5},
  };
  for (const auto& [series, value] : want) {
    auto it = m.find(series);
    if (it == m.end()) {
      ADD_FAILURE() << "missing " << series;
      continue;
    }
    EXPECT_DOUBLE_EQ(it->second, value) << series;
  }
  EXPECT_EQ(
      m.count(
          R"(hotshard_mount_info{cache_dir="/nvme/cache",consistency="strict",mount="/mnt/data",overmount="true",remote="/mnt/data"})"),
      1u);
}

TEST(MetricsConversion, EveryEmittedFamilyIsInTheCatalog) {
  std::string text = statusMetricsText(fullStatusFixture());
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) != 0) continue;
    std::istringstream words(line.substr(7));
    std::string name, type;
    words >> name >> type;
    const auto& c = metricCatalog();
    auto it = std::find_if(c.begin(), c.end(), [&](const MetricInfo& i) { return i.name == name; });
    ASSERT_NE(it, c.end()) << name;
    EXPECT_EQ(it->type, type) << name;
    EXPECT_TRUE(name.rfind("hotshard_", 0) == 0) << name;
    EXPECT_EQ(type == "counter", name.size() > 6 && name.substr(name.size() - 6) == "_total")
        << name;
  }
}

TEST(MetricsConversion, MissingAndMistypedFieldsGiveNoSeriesAndNoCrash) {
  EXPECT_EQ(statusMetricsText(json::object()), "");
  EXPECT_EQ(statusMetricsText(json()), "");
  EXPECT_EQ(statusMetricsText(json::array({1, 2})), "");
  EXPECT_EQ(statusMetricsText(json("status")), "");

  json odd = {{"passthrough", "yes"},
              {"fuse", {{"requests", {{"read", "many"}, {"open", 2}}}, {"inodes", nullptr}}},
              {"cache", {{"used_bytes", json::array()}, {"capacity_bytes", 100}, {"promoter", 7}}},
              {"probes", {{"events", {{"x", 1}}}}},
              {"heat", {{"bytes_read_remote", 10}}},  // its partners missing
              {"jobs", {{"not", "an array"}}},
              {"policy", {{"params", {{"a", 1}}}}}};  // no name
  auto m = parseMetricsText(statusMetricsText(odd));
  std::map<std::string, double> want = {
      {R"(hotshard_fuse_requests_total{op="open"})", 2},
      {R"(hotshard_cache_capacity_bytes)", 100},
      {R"(hotshard_bytes_requested_total{backing="remote"})", 10}};
  EXPECT_EQ(m, want);

  // Jobs entries of the wrong shape are skipped; past the bound, the rest is summed.
  json jobs = json::array({1, "x", json{{"cgroup", "/a"}, {"bytes_read", 5}}});
  for (int i = 0; i < 120; i++) {
    jobs.push_back({{"cgroup", "/j" + std::to_string(i)}, {"bytes_read", 1}, {"bytes_missed", 1}});
  }
  auto mj = parseMetricsText(statusMetricsText(json{{"jobs", jobs}}));
  EXPECT_EQ(mj[R"(hotshard_job_bytes_read_total{cgroup="/a"})"], 5);
  EXPECT_EQ(mj.count(R"(hotshard_job_bytes_missed_total{cgroup="/a"})"), 0u);
  EXPECT_EQ(mj[R"(hotshard_job_bytes_read_total{cgroup="other_overflow"})"], 21);
  size_t job_series = std::count_if(mj.begin(), mj.end(), [](const auto& kv) {
    return kv.first.rfind("hotshard_job_bytes_read_total{", 0) == 0;
  });
  EXPECT_EQ(job_series, 101u);
}

TEST(MetricsConversion, LabelValuesAreValidUtf8AndBounded) {
  EXPECT_EQ(metricsLabelValue("/mnt/datasets"), "/mnt/datasets");
  EXPECT_EQ(metricsLabelValue("caf\xC3\xA9"), "caf\xC3\xA9");  // é stays
  EXPECT_EQ(metricsLabelValue("a\xFF"
                              "b"),
            "a\xEF\xBF\xBD"
            "b");                                                        // stray byte
  EXPECT_EQ(metricsLabelValue("a\xC3"), "a\xEF\xBF\xBD");                // cut sequence
  EXPECT_EQ(metricsLabelValue("\xC0\xAF"), "\xEF\xBF\xBD\xEF\xBF\xBD");  // overlong '/'
  EXPECT_EQ(metricsLabelValue("\xED\xA0\x80"),
            "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");  // surrogate
  EXPECT_EQ(metricsLabelValue(std::string(300, 'x')), std::string(200, 'x'));
  // 199 ASCII bytes and a 2-byte character: the character does not fit and is not cut.
  EXPECT_EQ(metricsLabelValue(std::string(199, 'x') + "\xC3\xA9"), std::string(199, 'x'));

  // A mount path with a bad byte still gives a scrape Prometheus can parse.
  json s = {{"version", "0.1.0"}, {"mount", "/mnt/d\xFF"}, {"remote", "/r"}};
  std::string text = statusMetricsText(s);
  EXPECT_NE(text.find(R"(mount="/mnt/d)"
                      "\xEF\xBF\xBD"
                      R"(")"),
            std::string::npos)
      << text;
}

TEST(MetricsExporter, ServesTheSnapshotAndHistogramsOverHttp) {
  std::atomic<int> calls{0};
  auto exporter = MetricsExporter::start("127.0.0.1:0", [&] {
    calls++;
    return fullStatusSnapshot();
  });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  MetricsExporter& e = **exporter;
  ASSERT_TRUE(e.enabled());
  ASSERT_NE(e.port(), 0);
  EXPECT_EQ(e.url(), "http://127.0.0.1:" + std::to_string(e.port()) + "/metrics");

  e.observePromotion(0.3, 5 << 20);
  e.observePromotion(12, 1 << 30);
  e.observeFuseOp("lookup", 0.0002);
  e.observeFuseOp("lookup", 0.003);
  e.observeFuseOp("mknod", 0.5);  // not a known op: "other"

  auto reply = httpGet(e.port(), "/metrics");
  ASSERT_EQ(reply.status, 200) << reply.body;
  EXPECT_EQ(calls.load(), 1);
  auto m = parseMetricsText(reply.body);
  EXPECT_EQ(m["hotshard_cache_capacity_bytes"], 1e9);
  EXPECT_EQ(m[R"(hotshard_opens_total{backing="cache"})"], 7);
  EXPECT_EQ(m["hotshard_metrics_snapshot_failures_total"], 0);
  EXPECT_EQ(m["hotshard_promotion_duration_seconds_count"], 2);
  EXPECT_DOUBLE_EQ(m["hotshard_promotion_duration_seconds_sum"], 12.3);
  EXPECT_EQ(m[R"(hotshard_promotion_duration_seconds_bucket{le="0.5"})"], 1);
  EXPECT_EQ(m[R"(hotshard_promotion_duration_seconds_bucket{le="+Inf"})"], 2);
  EXPECT_EQ(m["hotshard_promotion_size_bytes_count"], 2);
  EXPECT_EQ(m[R"(hotshard_promotion_size_bytes_bucket{le="16777216"})"], 1);
  EXPECT_EQ(m[R"(hotshard_fuse_request_duration_seconds_count{op="lookup"})"], 2);
  EXPECT_EQ(m[R"(hotshard_fuse_request_duration_seconds_bucket{op="lookup",le="0.00025"})"], 1);
  EXPECT_EQ(m[R"(hotshard_fuse_request_duration_seconds_count{op="other"})"], 1);
  EXPECT_EQ(m.count(R"(hotshard_fuse_request_duration_seconds_count{op="read"})"), 0u)
      << "ops never observed export no series";
}

TEST(MetricsExporter, PageCacheBytesStayACounterAcrossScrapes) {
  // requested - missed dips when readahead runs ahead of the reader.
  std::atomic<int> scrape{0};
  auto exporter = MetricsExporter::start("127.0.0.1:0", [&] {
    static const int kMissed[] = {100, 400, 150};
    int i = std::min(scrape++, 2);
    return json{{"heat",
                 {{"bytes_read_remote", 500 + 100 * i},
                  {"bytes_missed_remote", kMissed[i]},
                  {"bytes_read_cache", 0},
                  {"bytes_missed_cache", 0}}}}
        .get<StatusSnapshot>();
  });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  std::vector<double> seen;
  for (int i = 0; i < 3; i++) {
    auto reply = httpGet((*exporter)->port(), "/metrics");
    ASSERT_EQ(reply.status, 200);
    seen.push_back(
        parseMetricsText(reply.body)[R"(hotshard_bytes_read_total{source="page_cache"})"]);
  }
  EXPECT_EQ(seen, (std::vector<double>{400, 400, 550}));
}

TEST(MetricsExporter, SnapshotFailureIsCountedNotFatal) {
  auto exporter = MetricsExporter::start(
      "127.0.0.1:0", []() -> StatusSnapshot { throw std::runtime_error("boom"); });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  for (int i = 1; i <= 2; i++) {
    auto reply = httpGet((*exporter)->port(), "/metrics");
    ASSERT_EQ(reply.status, 200);
    auto m = parseMetricsText(reply.body);
    EXPECT_EQ(m["hotshard_metrics_snapshot_failures_total"], i);
    EXPECT_EQ(m.count("hotshard_cache_capacity_bytes"), 0u);
  }
}

TEST(MetricsExporter, PortInUseIsAClearError) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sin);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sin), len), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len), 0);
  std::string addr = "127.0.0.1:" + std::to_string(ntohs(sin.sin_port));

  auto taken = MetricsExporter::start(addr, [] { return StatusSnapshot{}; });
  ::close(fd);
  ASSERT_FALSE(taken.ok());
  EXPECT_EQ(taken.error().message, "metrics " + addr + ": address in use");
  EXPECT_EQ(taken.error().code, Errc::kBusy);

  // And against another exporter.
  auto first = MetricsExporter::start("127.0.0.1:0", [] { return StatusSnapshot{}; });
  ASSERT_TRUE(first.ok()) << first.error().message;
  std::string first_addr = "127.0.0.1:" + std::to_string((*first)->port());
  auto second = MetricsExporter::start(first_addr, [] { return StatusSnapshot{}; });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().message, "metrics " + first_addr + ": address in use");
  EXPECT_EQ(httpGet((*first)->port(), "/metrics").status, 200) << "the first one still serves";
}

TEST(MetricsExporter, BadAddressIsAClearError) {
  auto nonsense = MetricsExporter::start("nonsense", [] { return StatusSnapshot{}; });
  ASSERT_FALSE(nonsense.ok());
  EXPECT_NE(nonsense.error().message.find("metrics 'nonsense'"), std::string::npos)
      << nonsense.error().message;

  // TEST-NET-1 (RFC 5737) is never an address of this host (unless the host
  // allows binding foreign addresses).
  if (testing::readFile("/proc/sys/net/ipv4/ip_nonlocal_bind").rfind("0", 0) == 0) {
    auto foreign = MetricsExporter::start("192.0.2.1:9464", [] { return StatusSnapshot{}; });
    ASSERT_FALSE(foreign.ok());
    EXPECT_EQ(foreign.error().message,
              "metrics 192.0.2.1:9464: address not available on this host");
  }

  // IPv6 works where the HTTP server supports it; otherwise it says so.
  auto v6 = MetricsExporter::start("[::1]:0", [] { return StatusSnapshot{}; });
  if (!v6.ok()) {
    EXPECT_NE(v6.error().message.find("metrics [::1]:0: "), std::string::npos)
        << v6.error().message;
    EXPECT_NE(v6.error().message.find("IPv6"), std::string::npos) << v6.error().message;
  }
}

TEST(MetricsExporter, OffServesNothingAndIgnoresObservations) {
  bool called = false;
  auto exporter = MetricsExporter::start("off", [&] {
    called = true;
    return StatusSnapshot{};
  });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  EXPECT_FALSE((*exporter)->enabled());
  EXPECT_EQ((*exporter)->port(), 0);
  EXPECT_EQ((*exporter)->url(), "");
  (*exporter)->observePromotion(1, 1);
  (*exporter)->observeFuseOp("read", 0.001);
  EXPECT_FALSE(called);
}

TEST(MetricsPromtool, CheckMetricsReportsNothing) {
  HS_REQUIRE(::access("/usr/bin/promtool", X_OK) == 0,
             "promtool missing (tools/deps.sh installs prometheus)");
  auto exporter = MetricsExporter::start("127.0.0.1:0", [] { return fullStatusSnapshot(); });
  ASSERT_TRUE(exporter.ok()) << exporter.error().message;
  (*exporter)->observePromotion(0.3, 5 << 20);
  (*exporter)->observeFuseOp("getattr", 0.0001);
  auto reply = httpGet((*exporter)->port(), "/metrics");
  ASSERT_EQ(reply.status, 200);

  std::string path = "/tmp/hotshard-metrics-test." + std::to_string(::getpid()) + ".txt";
  testing::writeFile(path, reply.body);
  std::string cmd = "/usr/bin/promtool check metrics < " + path + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[4096];
  while (size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  int status = ::pclose(p);
  std::filesystem::remove(path);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_EQ(out, "") << reply.body;
}

TEST(MetricsDocs, EveryMetricIsDocumented) {
  auto docs = std::filesystem::read_symlink("/proc/self/exe").parent_path().parent_path() /
              "docs/metrics.md";
  std::string text = testing::readFile(docs.string());
  HS_REQUIRE(!text.empty(), "docs/metrics.md not found next to the build directory");
  for (const auto& m : metricCatalog()) {
    EXPECT_NE(text.find("`" + m.name + "`"), std::string::npos)
        << m.name << " is not in docs/metrics.md";
  }
}

}  // namespace
}  // namespace hotshard
