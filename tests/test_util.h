// Helpers shared by the test suites.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace hotshard::testing {

// True when running under CI (CI=true): there a missing facility is a failure,
// never a silent skip.
inline bool inCi() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
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
