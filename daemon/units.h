// Sizes and durations as people write them: "64MiB", "1.5GiB", "4096", "30s", "5m".
#pragma once

#include <cstdint>
#include <string>

#include "daemon/result.h"

namespace hotshard {

// B, K/KB/KiB, M/MB/MiB, G/GB/GiB, T/TB/TiB; decimal units are powers of 1000.
Result<uint64_t> parseSize(const std::string& text);
// ns, us, ms, s (the default), m, h.
Result<double> parseDurationSeconds(const std::string& text);
std::string formatBytes(uint64_t bytes);  // "1.5 GiB"

}  // namespace hotshard
