// The daemon stays small: warming many small files must not grow it by what
// each copy used (issue 16: 20,000 files once took it from 8.5 MB to 1.49 GB).
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/integration/harness.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

// "VmRSS" or "VmHWM" of /proc/PID/status, in KiB; 0 if absent.
uint64_t procStatusKiB(int64_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.compare(0, field.size() + 1, field + ":") == 0)
      return std::stoull(line.substr(field.size() + 1));
  }
  return 0;
}

class IntegrationMemory : public MountFixture {};

// 20,000 files of 4 KiB in 20 directories, warmed at the defaults (io_uring,
// registered buffers, 2 promotions of 8 x 1 MiB): the daemon's resident set
// afterwards, and its peak, stay within 64 MiB (the budget in docs/cache.md).
TEST_F(IntegrationMemory, WarmingTwentyThousandFilesStaysWithinTheBudget) {
  constexpr int kDirs = 20, kPerDir = 1000;
  constexpr uint64_t kBudgetKiB = 64 * 1024;
  const std::string block(4096, 'x');
  for (int d = 0; d < kDirs; ++d) {
    std::string dir = remote_ + "/d" + std::to_string(d);
    std::filesystem::create_directories(dir);
    for (int i = 0; i < kPerDir; ++i) {
      std::string path = dir + "/f" + std::to_string(i);
      int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0) << path;
      std::string content = block;
      content.replace(0, path.size(), path);  // no two files alike
      ASSERT_EQ(::write(fd, content.data(), content.size()), ssize_t(content.size()));
      ::close(fd);
    }
  }
  startDaemonWith({.mount = mnt_});  // the defaults
  json st = daemon_->status();
  ASSERT_TRUE(st.contains("pid")) << st.dump();
  const int64_t pid = st["pid"].get<int64_t>();
  const uint64_t before = procStatusKiB(pid, "VmRSS");
  ASSERT_GT(before, 0u);

  CommandResult warm = hs({"warm", mnt_});
  ASSERT_EQ(warm.exit_code, 0) << warm.out.substr(warm.out.size() > 2000 ? warm.out.size() - 2000 : 0);
  EXPECT_NE(warm.out.find("warmed 20000 of 20000 files"), std::string::npos)
      << warm.out.substr(warm.out.size() > 500 ? warm.out.size() - 500 : 0);
  st = daemon_->status();
  EXPECT_EQ(st["cache"]["objects"], kDirs * kPerDir) << st["cache"].dump();

  const uint64_t after = procStatusKiB(pid, "VmRSS");
  const uint64_t peak = procStatusKiB(pid, "VmHWM");
  RecordProperty("rss_before_kib", std::to_string(before));
  RecordProperty("rss_after_kib", std::to_string(after));
  RecordProperty("rss_peak_kib", std::to_string(peak));
  EXPECT_LE(after, kBudgetKiB) << "daemon RSS after warming: " << after << " KiB (before: "
                               << before << " KiB)";
  EXPECT_LE(peak, kBudgetKiB) << "daemon peak RSS while warming: " << peak << " KiB";
  // The copies are what they were copied from.
  for (int d : {0, kDirs - 1}) {
    std::string rel = "/d" + std::to_string(d) + "/f" + std::to_string(kPerDir - 1);
    json f = statOf(mnt_ + rel);
    ASSERT_EQ(f["state"], "cached") << f.dump();
    EXPECT_EQ(readFile(f["object"].get<std::string>()), readFile(remote_ + rel));
  }
}

}  // namespace
}  // namespace hotshard::testing
