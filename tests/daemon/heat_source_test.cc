// ProbeHeatSource over the real eBPF probes: what an open through the mount
// tells them (daemon/heat_source.h).
#include "daemon/heat_source.h"

#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "bpf/heat_probes.h"
#include "tests/test_util.h"

namespace hotshard::testing {
namespace {

// Each open of a file tells the probes; the served-files set gets the file
// once, however often it is opened (a map update per reopen would also make
// every CPU's memo of the set stale).
TEST(ProbeHeatSource, AFileOpenedTwiceIsWatchedOnce) {
  HS_REQUIRE_ROOT();
  if (::access("/sys/kernel/tracing/events", F_OK) != 0) {
    ::mount("nodev", "/sys/kernel/tracing", "tracefs", 0, nullptr);
  }
  auto loaded = bpf::HeatProbes::load({});
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  bpf::HeatProbes* probes = loaded->get();
  ProbeHeatSource source(std::move(*loaded), 0);

  char dir[] = "/var/tmp/hotshard-heat-source-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  struct RemoveOnExit {
    const char* path;
    ~RemoveOnExit() { std::filesystem::remove_all(path); }
  } remove_dir{dir};
  std::string a = std::string(dir) + "/a", b = std::string(dir) + "/b";
  writeFile(a, "a");
  writeFile(b, "b");
  struct stat sa {}, sb {};
  ASSERT_EQ(::stat(a.c_str(), &sa), 0);
  ASSERT_EQ(::stat(b.c_str(), &sb), 0);

  source.noteOpen(sa, false, false);
  source.noteOpen(sa, true, false);
  EXPECT_EQ(source.watchedFiles(), 1u);
  source.noteOpen(sb, false, false);
  EXPECT_EQ(source.watchedFiles(), 2u);
  // In the probes' map, once each: unwatched once, then not there.
  EXPECT_TRUE(probes->unwatchFile(sa.st_dev, sa.st_ino).ok());
  EXPECT_FALSE(probes->unwatchFile(sa.st_dev, sa.st_ino).ok());
  EXPECT_TRUE(probes->unwatchFile(sb.st_dev, sb.st_ino).ok());
}

}  // namespace
}  // namespace hotshard::testing
