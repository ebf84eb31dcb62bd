// The metrics against a real Prometheus server (Debian's `prometheus`): it
// scrapes an exporter, answers queries on its series, renders the console
// template and evaluates every expression of the Grafana dashboard. And, once
// daemon.cc starts the exporter, the daemon's own endpoint.
#include "daemon/metrics.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <regex>
#include <set>
#include <thread>

#include "tests/daemon/metrics_test_util.h"
#include "tests/integration/harness.h"

namespace hotshard::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr const char* kPrometheus = "/usr/bin/prometheus";
constexpr const char* kConsoleLibraries = "/usr/share/doc/prometheus/examples/console_libraries";

std::string repoRoot() { return fs::path(hotshardBinary()).parent_path().parent_path().string(); }

std::string urlEncode(const std::string& s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

// One prometheus process on a free loopback port, scraping one target every
// second; killed and its directory removed on destruction, pass or fail.
class PrometheusServer {
 public:
  PrometheusServer(const std::string& dir, const std::string& target) : dir_(dir) {
    port_ = freeLoopbackPort();
    fs::create_directories(dir_ + "/consoles");
    writeFile(dir_ + "/prometheus.yml",
              "global:\n"
              "  scrape_interval: 1s\n"
              "  evaluation_interval: 1s\n"
              "scrape_configs:\n"
              "  - job_name: hotshard\n"
              "    scrape_interval: 1s\n"
              "    scrape_timeout: 900ms\n"
              "    static_configs:\n"
              "      - targets: ['" +
                  target + "']\n");
    fs::copy_file(repoRoot() + "/docs/dashboards/hotshard.console.html",
                  dir_ + "/consoles/hotshard.console.html");
    std::vector<std::string> argv = {kPrometheus,
                                     "--config.file=" + dir_ + "/prometheus.yml",
                                     "--storage.tsdb.path=" + dir_ + "/data",
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port_),
                                     "--web.console.templates=" + dir_ + "/consoles",
                                     "--web.console.libraries=" + std::string(kConsoleLibraries),
                                     "--log.level=warn"};
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a crashed test binary
      int log = ::open((dir_ + "/prometheus.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(log, STDOUT_FILENO);
      ::dup2(log, STDERR_FILENO);
      std::vector<char*> args;
      for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
      args.push_back(nullptr);
      ::execv(args[0], args.data());
      ::_exit(127);
    }
  }

  ~PrometheusServer() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    int status;
    for (int i = 0; i < 500; i++) {  // 5 s
      if (::waitpid(pid_, &status, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
  }

  uint16_t port() const { return port_; }
  std::string log() const { return readFile(dir_ + "/prometheus.log"); }

  // Waits until the server is ready and has scraped the target successfully.
  ::testing::AssertionResult waitForScrape(int timeout_s) {
    auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    while (Clock::now() < deadline) {
      int status;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return ::testing::AssertionFailure() << "prometheus exited:\n" << log();
      }
      json r = query("up{job=\"hotshard\"}");
      if (r.value("status", "") == "success" && !r["data"]["result"].empty() &&
          r["data"]["result"][0]["value"][1] == "1") {
        return ::testing::AssertionSuccess();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    return ::testing::AssertionFailure() << "no successful scrape in " << timeout_s << " s:\n"
                                         << log();
  }

  // The API's reply to an instant query ({"status": "success"|"error", ...}).
  json query(const std::string& expr) {
    HttpReply reply = httpGet(port_, "/api/v1/query?query=" + urlEncode(expr));
    if (reply.status == 0) return json{{"status", "unreachable"}};
    json j = json::parse(reply.body, nullptr, /*allow_exceptions=*/false);
    return j.is_discarded() ? json{{"status", "bad reply"}, {"body", reply.body}} : j;
  }

 private:
  std::string dir_;
  uint16_t port_ = 0;
  pid_t pid_ = -1;
};

// An exporter whose counters grow at each scrape, so that rate() is not zero.
class GrowingStatus {
 public:
  json operator()() {
    int n = ++scrapes_;
    json s = fullStatusFixture();
    s["heat"]["bytes_read_cache"] = 8000 + 3000 * n;
    s["heat"]["bytes_missed_cache"] = 6000 + 2000 * n;
    s["heat"]["bytes_read_remote"] = 3000 + 1000 * n;
    s["heat"]["bytes_missed_remote"] = 1000 + 500 * n;
    s["heat"]["remote_bytes_avoided"] = 6000 + 2000 * n;
    s["cache"]["promoter"]["published"] = 10 + n;
    s["cache"]["promoter"]["read_page_cache_bytes"] = 100000000 + 4000 * n;
    s["cache"]["promoter"]["read_remote_bytes"] = 23456789 + 1000 * n;
    s["cache"]["evictions"] = 4 + n;
    s["fuse"]["requests"]["lookup"] = 11 + 7 * n;
    s["probes"]["events"] = 1000 + 100 * n;
    s["cluster"]["fetched"][0]["bytes"] = 7340032 + 65536 * n;
    s["cluster"]["fetch_failures"]["io"] = 2 + n;
    s["cluster"]["served_bytes"] = 5242880 + 65536 * n;
    return s;
  }

 private:
  std::atomic<int> scrapes_{0};
};

class IntegrationMetrics : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::access(kPrometheus, X_OK) != 0 || !fs::is_directory(kConsoleLibraries)) return;
    status_ = new GrowingStatus;
    auto exporter =
        MetricsExporter::start("127.0.0.1:0", [] { return (*status_)().get<StatusSnapshot>(); });
    if (!exporter.ok()) {
      setup_error_ = exporter.error().message;
      return;
    }
    exporter_ = exporter->release();
    exporter_->observePromotion(0.4, 3 << 20);
    exporter_->observePromotion(7, 512 << 20);
    exporter_->observeFuseOp("lookup", 0.00015);
    exporter_->observeFuseOp("getattr", 0.00004);
    exporter_->observePeerFetch(0.02);
    dir_ = new TempDir;
    server_ = new PrometheusServer(dir_->path() + "/prometheus",
                                   "127.0.0.1:" + std::to_string(exporter_->port()));
    auto ready = server_->waitForScrape(10);
    if (!ready) setup_error_ = ready.message();
  }
  static void TearDownTestSuite() {
    delete server_;  // stops prometheus before its directory goes
    delete dir_;
    delete exporter_;
    delete status_;
    server_ = nullptr;
    dir_ = nullptr;
    exporter_ = nullptr;
    status_ = nullptr;
  }
  void SetUp() override {
    HS_REQUIRE(::access(kPrometheus, X_OK) == 0, "prometheus missing (tools/deps.sh installs it)");
    HS_REQUIRE(fs::is_directory(kConsoleLibraries),
               std::string(kConsoleLibraries) + " missing (package prometheus)");
    ASSERT_EQ(setup_error_, "");
  }

  // Waits (up to timeout_s) until expr returns at least one sample; returns the reply.
  static json queryUntilNonEmpty(const std::string& expr, int timeout_s = 5) {
    auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
    json r;
    do {
      r = server_->query(expr);
      if (r.value("status", "") != "success") return r;
      if (!r["data"]["result"].empty()) return r;
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    } while (Clock::now() < deadline);
    return r;
  }

  static inline GrowingStatus* status_ = nullptr;
  static inline MetricsExporter* exporter_ = nullptr;
  static inline TempDir* dir_ = nullptr;
  static inline PrometheusServer* server_ = nullptr;
  static inline std::string setup_error_;
};

TEST_F(IntegrationMetrics, PrometheusScrapesTheExporter) {
  json r = server_->query("hotshard_cache_capacity_bytes");
  ASSERT_EQ(r.value("status", ""), "success") << r.dump();
  ASSERT_EQ(r["data"]["result"].size(), 1u) << r.dump();
  const json& sample = r["data"]["result"][0];
  EXPECT_EQ(sample["metric"]["job"], "hotshard");
  EXPECT_EQ(sample["metric"]["instance"], "127.0.0.1:" + std::to_string(exporter_->port()));
  EXPECT_EQ(sample["value"][1], "1000000000");

  r = server_->query("sum by (backing) (hotshard_opens_total)");
  ASSERT_EQ(r.value("status", ""), "success") << r.dump();
  std::map<std::string, std::string> opens;
  for (const auto& s : r["data"]["result"]) opens[s["metric"]["backing"]] = s["value"][1];
  EXPECT_EQ(opens, (std::map<std::string, std::string>{{"cache", "7"}, {"remote", "5"}}));

  r = server_->query("hotshard_build_info");
  ASSERT_EQ(r["data"]["result"].size(), 1u) << r.dump();
  EXPECT_EQ(r["data"]["result"][0]["metric"]["version"], "0.1.0");

  // Counters grow at every scrape: once two samples are in, rates are positive.
  r = queryUntilNonEmpty(R"(rate(hotshard_bytes_read_total{source="cache"}[1m]) > 0)");
  EXPECT_EQ(r["data"]["result"].size(), 1u) << r.dump();
  r = queryUntilNonEmpty(R"(hotshard_promotion_duration_seconds_count)");
  ASSERT_EQ(r["data"]["result"].size(), 1u) << r.dump();
  EXPECT_EQ(r["data"]["result"][0]["value"][1], "2");
}

// Every expression of the Grafana dashboard parses and finds series.
TEST_F(IntegrationMetrics, GrafanaDashboardQueriesWork) {
  std::string text = readFile(repoRoot() + "/docs/dashboards/hotshard.grafana.json");
  json dash = json::parse(text, nullptr, false);
  ASSERT_FALSE(dash.is_discarded()) << "hotshard.grafana.json is not JSON";

  // The data source is an input of the import, never a fixed uid.
  ASSERT_TRUE(dash.contains("__inputs"));
  EXPECT_EQ(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
  EXPECT_EQ(dash["__inputs"][0]["pluginId"], "prometheus");

  std::vector<std::string> exprs;
  std::set<std::string> titles;
  std::function<void(const json&)> walk = [&](const json& panels) {
    for (const auto& p : panels) {
      titles.insert(p.value("title", ""));
      if (p.contains("panels")) walk(p["panels"]);
      if (p.value("type", "") != "row") {
        EXPECT_EQ(p["datasource"]["uid"], "${DS_PROMETHEUS}") << p.value("title", "");
      }
      for (const auto& t : p.value("targets", json::array())) exprs.push_back(t.value("expr", ""));
    }
  };
  walk(dash["panels"]);
  for (const char* want :
       {"Hit ratio by bytes", "Bytes read by source", "Remote bytes avoided",
        "Promotions and evictions", "Cache fill", "Probe health", "FUSE latency (user space)",
        "Cluster members", "Bytes from peers and the remote", "Peer fetch failures by reason"}) {
    EXPECT_TRUE(titles.count(want)) << "no panel '" << want << "'";
  }
  ASSERT_GE(exprs.size(), 10u);

  for (std::string expr : exprs) {
    std::string original = expr;
    expr = std::regex_replace(expr, std::regex(R"(\$__rate_interval|\$__interval)"), "1m");
    expr = std::regex_replace(expr, std::regex(R"(\$__range)"), "5m");
    expr = std::regex_replace(expr, std::regex(R"(\$\{?instance\}?)"), ".+");
    ASSERT_EQ(expr.find('$'), std::string::npos) << "unknown variable in " << original;
    json r = queryUntilNonEmpty(expr);
    EXPECT_EQ(r.value("status", ""), "success") << original << "\n" << r.dump();
    EXPECT_FALSE(r["data"]["result"].empty()) << "no series for " << original;
  }
}

// The console template renders with the console libraries, and the
// expressions of its graphs work.
TEST_F(IntegrationMetrics, ConsoleTemplateRenders) {
  HttpReply page = httpGet(server_->port(), "/consoles/hotshard.console.html");
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_EQ(page.body.find("error"), std::string::npos) << page.body;
  EXPECT_NE(page.body.find("127.0.0.1:" + std::to_string(exporter_->port())), std::string::npos)
      << "the instance table lists the exporter\n"
      << page.body;
  EXPECT_NE(page.body.find("953.7Mi"), std::string::npos) << "cache capacity, humanized\n"
                                                          << page.body;

  // The graphs' expressions: in the <script> blocks, the quoted strings that
  // name a hotshard series.
  std::string html = readFile(repoRoot() + "/docs/dashboards/hotshard.console.html");
  std::string scripts;
  std::regex script_re(R"re(<script>([\s\S]*?)</script>)re");
  for (auto it = std::sregex_iterator(html.begin(), html.end(), script_re);
       it != std::sregex_iterator(); ++it) {
    scripts += (*it)[1].str();
  }
  std::regex expr_re(R"re("([^"]*hotshard_[^"]*)")re");
  int n = 0;
  for (auto it = std::sregex_iterator(scripts.begin(), scripts.end(), expr_re);
       it != std::sregex_iterator(); ++it) {
    std::string expr = (*it)[1];
    json r = queryUntilNonEmpty(expr);
    EXPECT_EQ(r.value("status", ""), "success") << expr << "\n" << r.dump();
    EXPECT_FALSE(r["data"]["result"].empty()) << "no series for " << expr;
    n++;
  }
  EXPECT_GE(n, 8);
}

// The PromQL examples of docs/metrics.md: ```promql blocks, one expression per
// paragraph.
TEST_F(IntegrationMetrics, DocumentedQueriesWork) {
  std::string md = readFile(repoRoot() + "/docs/metrics.md");
  std::regex block_re(R"re(```promql\n([\s\S]*?)```)re");
  int n = 0;
  for (auto it = std::sregex_iterator(md.begin(), md.end(), block_re); it != std::sregex_iterator();
       ++it) {
    std::string block = (*it)[1];
    size_t start = 0;
    while (start < block.size()) {
      size_t end = block.find("\n\n", start);
      if (end == std::string::npos) end = block.size();
      std::string expr = block.substr(start, end - start);
      start = end + 2;
      if (expr.find_first_not_of(" \n") == std::string::npos) continue;
      json r = queryUntilNonEmpty(expr);
      EXPECT_EQ(r.value("status", ""), "success") << expr << "\n" << r.dump();
      EXPECT_FALSE(r["data"]["result"].empty()) << "no series for " << expr;
      n++;
    }
  }
  EXPECT_GE(n, 9);
}

// The daemon's own endpoint, end to end.
TEST(IntegrationMetricsDaemon, DaemonServesItsStatus) {
  HS_REQUIRE_ROOT();
  HS_REQUIRE(::access("/dev/fuse", R_OK | W_OK) == 0, "needs /dev/fuse");
  TempDir dir;
  fs::create_directories(dir / "remote");
  writeRandomFile(dir / "remote/shard-0.bin", 1 << 20, 1);
  uint16_t port = freeLoopbackPort();
  std::string addr = "127.0.0.1:" + std::to_string(port);
  DaemonProcess daemon({.remote = dir / "remote",
                        .mount = dir / "mnt",
                        .cache = dir / "cache",
                        .extra_args = {"--metrics", addr}},
                       dir.path());
  fs::create_directories(dir / "mnt");
  ASSERT_TRUE(daemon.start());
  EXPECT_EQ(sha256File(dir / "mnt/shard-0.bin"), sha256File(dir / "remote/shard-0.bin"));

  HttpReply reply = httpGet(port, "/metrics");
  ASSERT_EQ(reply.status, 200) << daemon.log();
  json status = daemon.status();
  auto m = parseMetricsText(reply.body);
  EXPECT_EQ(m["hotshard_cache_capacity_bytes"], status["cache"]["capacity_bytes"].get<double>());
  EXPECT_EQ(
      m.count("hotshard_build_info{version=\"" + status["version"].get<std::string>() + "\"}"), 1u);
  EXPECT_GE(m[R"(hotshard_fuse_requests_total{op="lookup"})"], 1);
  EXPECT_GE(m[R"(hotshard_opens_total{backing="remote"})"] +
                m[R"(hotshard_opens_total{backing="cache"})"],
            1);
  EXPECT_EQ(m["hotshard_passthrough_active"], status["passthrough"].get<bool>() ? 1 : 0);

  // A second daemon on the same metrics address refuses to start, and says why.
  fs::create_directories(dir / "remote2");
  fs::create_directories(dir / "mnt2");
  fs::create_directories(dir / "work2");
  DaemonProcess second({.remote = dir / "remote2",
                        .mount = dir / "mnt2",
                        .cache = dir / "cache2",
                        .extra_args = {"--metrics", addr}},
                       dir / "work2");
  auto started = second.start();
  ASSERT_FALSE(started);
  EXPECT_NE(std::string(started.message()).find("metrics " + addr + ": address in use"),
            std::string::npos)
      << started.message();
}

// The histograms are fed from inside the daemon: FUSE requests timed in the
// passthrough shim, promotions timed by the promoter.
class IntegrationMetricsHistograms : public MountFixture {};

TEST_F(IntegrationMetricsHistograms, FuseLatencyAndPromotionsAreObserved) {
  writeRandomFile(remote_ + "/a.bin", 3 << 20, 1);
  writeRandomFile(remote_ + "/b.bin", 1 << 20, 2);
  uint16_t port = freeLoopbackPort();
  startDaemonWith({.mount = mnt_,
                   .extra_args = {"--metrics", "127.0.0.1:" + std::to_string(port), "--placement",
                                  "manual", "--scrub-rate", "0"}});
  (void)fs::file_size(mnt_ + "/a.bin");  // lookup, getattr
  ASSERT_EQ(hs({"warm", mnt_}).exit_code, 0);
  auto m = parseMetricsText(httpGet(port, "/metrics").body);
  EXPECT_GE(m["hotshard_fuse_request_duration_seconds_count{op=\"lookup\"}"], 1);
  EXPECT_GT(m["hotshard_fuse_request_duration_seconds_sum{op=\"lookup\"}"], 0);
  EXPECT_EQ(m["hotshard_promotion_duration_seconds_count"], 2);
  EXPECT_EQ(m["hotshard_promotion_size_bytes_sum"], (3 << 20) + (1 << 20));
  EXPECT_GE(m["hotshard_promotions_total{result=\"published\"}"], 2);
}

}  // namespace
}  // namespace hotshard::testing
