// base/: the vocabulary every room shares. Sizes and durations as people write
// them, with one grammar everywhere a flag, a config key, a policy parameter or
// a CLI option takes one:
//   sizes      "4096", "64MiB", "1.5GiB", "2GB", "8K" (K/M/G/T are binary, KB/MB/GB/TB
//              decimal), and "5%" where the caller names what 100% is;
//   durations  "30", "30s", "250ms", "5m", "1.5h", "100us", "10ns" (a bare number is seconds).
// White space between the number and the unit is allowed; negative numbers are not.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"

namespace hotshard {

// Nanosecond durations, the one duration type across rooms.
using Duration = std::chrono::nanoseconds;

// Bytes from `text`. `percent_of`: what "100%" is; without it a percentage is an
// error. Errors (Errc::kInvalidArgument) quote the text and list the units.
Result<uint64_t> parseSize(std::string_view text, std::optional<uint64_t> percent_of = {});

// A duration from `text` (ns, us, ms, s, m, h; bare: seconds). Errors
// (Errc::kInvalidArgument) quote the text and list the units.
Result<Duration> parseDuration(std::string_view text);
// The same, in seconds, for options kept as doubles.
Result<double> parseDurationSeconds(std::string_view text);

inline double toSeconds(Duration d) { return std::chrono::duration<double>(d).count(); }

// "512 B", "1.5 GiB": binary units, one decimal.
std::string formatBytes(uint64_t bytes);
// "250ms", "30s", "5m", "1.5h": the shortest text parseDuration reads back to
// the same value, in the largest unit that divides it.
std::string formatDuration(Duration d);

}  // namespace hotshard
