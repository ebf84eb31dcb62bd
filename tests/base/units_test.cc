#include "base/units.h"

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
  // What policy/params.cc's parser accepted (the simulator's --capacity and --param).
  EXPECT_EQ(*parseSize("64KiB"), 64u << 10);
  EXPECT_EQ(*parseSize("10GiB"), 10ull << 30);
  EXPECT_EQ(*parseSize("1.5 GiB"), 3ull << 29);
  EXPECT_EQ(*parseSize("2TB"), 2000000000000ull);
  EXPECT_EQ(*parseSize("1.5MiB"), 1572864u);
  EXPECT_EQ(*parseSize("5%", 1000), 50u);
  EXPECT_EQ(*parseSize("12.5%", 1ull << 40), 1ull << 37);
  EXPECT_FALSE(parseSize("5%").ok());
  EXPECT_FALSE(parseSize("ten GiB").ok());
  EXPECT_FALSE(parseSize("-1").ok());
  EXPECT_FALSE(parseSize("1e400").ok());
  EXPECT_FALSE(parseSize("99999999TiB").ok());
}

TEST(Units, ParsesDurations) {
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("30"), 30);
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("30s"), 30);
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("250ms"), 0.25);
  EXPECT_DOUBLE_EQ(*parseDurationSeconds("5m"), 300);
  EXPECT_FALSE(parseDurationSeconds("soon").ok());
  EXPECT_EQ(*parseDuration("1.5h"), std::chrono::minutes(90));
  EXPECT_EQ(*parseDuration("100us"), std::chrono::microseconds(100));
  EXPECT_EQ(*parseDuration("10 ns"), std::chrono::nanoseconds(10));
  EXPECT_FALSE(parseDuration("-1s").ok());
  EXPECT_FALSE(parseDuration("5 days").ok());
  EXPECT_FALSE(parseDuration("").ok());
  EXPECT_NE(parseDuration("x").error().message.find("250ms"), std::string::npos);
}

TEST(Units, FormatsDurationsThatParseBack) {
  EXPECT_EQ(formatDuration(std::chrono::milliseconds(250)), "250ms");
  EXPECT_EQ(formatDuration(std::chrono::minutes(5)), "5m");
  EXPECT_EQ(formatDuration(std::chrono::seconds(90)), "90s");
  EXPECT_EQ(formatDuration(Duration(0)), "0s");
  for (int64_t ns : {int64_t{1}, int64_t{999}, int64_t{1500}, int64_t{2'000'000'001},
                     int64_t{3'600'000'000'000}}) {
    EXPECT_EQ(parseDuration(formatDuration(Duration(ns)))->count(), ns) << ns;
  }
}

TEST(Units, FormatsBytes) {
  EXPECT_EQ(formatBytes(512), "512 B");
  EXPECT_EQ(formatBytes(3ull << 29), "1.5 GiB");
}

}  // namespace
}  // namespace hotshard
