#include "daemon/units.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

namespace hotshard {
namespace {

// Splits "1.5GiB" into 1.5 and "GiB"; false when there is no leading number.
bool splitNumber(const std::string& text, double* value, std::string* unit) {
  const char* begin = text.c_str();
  char* end = nullptr;
  *value = std::strtod(begin, &end);
  if (end == begin || !std::isfinite(*value) || *value < 0) return false;
  while (*end == ' ') end++;
  *unit = end;
  return true;
}

}  // namespace

Result<uint64_t> parseSize(const std::string& text) {
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1},        {"B", 1},       {"K", 1024.0},  {"KiB", 1024.0},
      {"KB", 1e3},    {"M", 1048576.0}, {"MiB", 1048576.0}, {"MB", 1e6},
      {"G", 1073741824.0}, {"GiB", 1073741824.0}, {"GB", 1e9},
      {"T", 1099511627776.0}, {"TiB", 1099511627776.0}, {"TB", 1e12},
  };
  double v;
  std::string unit;
  if (splitNumber(text, &v, &unit)) {
    for (const auto& [name, mult] : kUnits) {
      if (unit == name) {
        double bytes = std::round(v * mult);
        if (bytes < 1.8e19) return static_cast<uint64_t>(bytes);
      }
    }
  }
  return makeError(Errc::kInvalidArgument,
                   "size '" + text + "': expected a number with an optional unit (B, KiB, MiB, "
                   "GiB, TiB, KB, MB, GB, TB), e.g. 64MiB");
}

Result<double> parseDurationSeconds(const std::string& text) {
  static const std::pair<const char*, double> kUnits[] = {
      {"", 1}, {"s", 1}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}, {"m", 60}, {"h", 3600},
  };
  double v;
  std::string unit;
  if (splitNumber(text, &v, &unit)) {
    for (const auto& [name, mult] : kUnits) {
      if (unit == name) return v * mult;
    }
  }
  return makeError(Errc::kInvalidArgument,
                   "duration '" + text + "': expected a number with an optional unit "
                   "(ns, us, ms, s, m, h), e.g. 30s");
}

std::string formatBytes(uint64_t bytes) {
  static const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int i = 0;
  while (v >= 1024 && i < 5) {
    v /= 1024;
    i++;
  }
  char buf[32];
  if (i == 0) {
    std::snprintf(buf, sizeof(buf), "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof(buf), "%.1f %s", v, kNames[i]);
  }
  return buf;
}

}  // namespace hotshard
