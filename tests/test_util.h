// Helpers shared by the test suites.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace hotshard::testing {

// True when running under CI (CI=true): there a missing facility is a failure,
// never a silent skip.
inline bool inCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// Writes content to path, creating the parent directories.
inline void writeFile(const std::string& path, const std::string& content) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(content.data(), static_cast<std::streamsize>(content.size()));
  ASSERT_TRUE(f.good()) << "write " << path;
}

inline std::string readFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace hotshard::testing

// Tests that need a facility (root, /dev/fuse, BPF) call this first: it fails
// under CI and skips, saying why, on a developer's machine.
#define HS_REQUIRE(cond, why)                                                   \
  do {                                                                          \
    if (!(cond)) {                                                              \
      if (::hotshard::testing::inCi()) FAIL() << "required in CI: " << (why);   \
      GTEST_SKIP() << (why);                                                    \
    }                                                                           \
  } while (0)

#define HS_REQUIRE_ROOT() HS_REQUIRE(::geteuid() == 0, "needs root")
