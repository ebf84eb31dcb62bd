#include "daemon/units.h"

#include <gtest/gtest.h>

namespace hotshard {
namespace {

TEST(Units, ParsesSizes) {
  EXPECT_EQ(*parseSize("4096"), 4096u);
  EXPECT_EQ(*parseSize("64MiB"), 64u << 20);
  EXPECT_EQ(*parseSize("1.5GiB"), 3ull << 29);
  EXPECT_EQ(*parseSize("2GB"), 2000000000u);
  EXPECT_EQ(*parseSize("8K"), 8192u);
  EXPECT_FALSE(parseSize("").ok());
  EXPECT_FALSE(parseSize("-1MiB").ok());
  EXPECT_FALSE(parseSize("12 parsecs").ok());
  EXPECT_NE(parseSize("x").error().message.find("e.g. 64MiB"), std::string::npos);
}

TEST(Units, ParsesDurations) {
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("30"), 30);
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("30s"), 30);
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("250ms"), 0.25);
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("5m"), 300);
  EXPECT_FALSE(parseDurationSeconds("soon").ok());
}

TEST(Units, FormatsBytes) {
  EXPECT_EQ(formatBytes(512), "512 B");
  EXPECT_EQ(formatBytes(3ull << 29), "1.5 GiB");
}

}  // namespace
}  // namespace hotshard
