#include "base/units.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace hotshard {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

struct Unit {
  std::string_view suffix;
  double factor;
};

// Splits "1.5 GiB" into 1.5 and "GiB"; false without a leading non-negative finite number.
bool splitNumber(std::string_view text, double* value, std::string_view* unit) {
  text = trim(text);
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), *value);
  if (ec != std::errc() || !std::isfinite(*value) || *value < 0) return false;
  *unit = trim(text.substr(static_cast<size_t>(ptr - text.data())));
  return true;
}

const Unit* findUnit(std::string_view unit, const Unit* begin, const Unit* end) {
  for (const Unit* u = begin; u != end; ++u) {
    if (u->suffix == unit) return u;
  }
  return nullptr;
}

constexpr Unit kSizeUnits[] = {
    {"", 1.0},         {"B", 1.0},         {"K", 1024.0},         {"KiB", 1024.0},
    {"KB", 1e3},       {"M", 1048576.0},   {"MiB", 1048576.0},    {"MB", 1e6},
    {"G", 1073741824.0}, {"GiB", 1073741824.0}, {"GB", 1e9},      {"T", 1099511627776.0},
    {"TiB", 1099511627776.0}, {"TB", 1e12},
};

constexpr Unit kDurationUnits[] = {
    {"", 1.0}, {"s", 1.0}, {"ms", 1e-3}, {"us", 1e-6}, {"ns", 1e-9}, {"m", 60.0}, {"h", 3600.0},
};

}  // namespace

Result<uint64_t> parseSize(std::string_view text, std::optional<uint64_t> percent_of) {
  auto bad = [&](const std::string& why) {
    return makeError(Errc::kInvalidArgument, "size '" + std::string(text) + "': " + why);
  };
  double value = 0;
  std::string_view unit;
  if (!splitNumber(text, &value, &unit)) {
    return bad(std::string("expected a number with an optional unit (B, KiB, MiB, GiB, TiB, KB, "
                           "MB, GB, TB") +
               (percent_of ? ", %" : "") + "), e.g. 64MiB");
  }
  double bytes = 0;
  if (unit == "%") {
    if (!percent_of) return bad("a percentage needs a reference size here");
    bytes = value / 100.0 * static_cast<double>(*percent_of);
  } else if (const Unit* u = findUnit(unit, std::begin(kSizeUnits), std::end(kSizeUnits))) {
    bytes = value * u->factor;
  } else {
    return bad("unknown unit '" + std::string(unit) +
               "': expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB, e.g. 64MiB");
  }
  if (bytes >= 1.8e19) return bad("too large");
  return static_cast<uint64_t>(std::llround(bytes));
}

Result<Duration> parseDuration(std::string_view text) {
  double value = 0;
  std::string_view unit;
  const Unit* u = nullptr;
  if (splitNumber(text, &value, &unit)) {
    u = findUnit(unit, std::begin(kDurationUnits), std::end(kDurationUnits));
  }
  if (u == nullptr) {
    return makeError(Errc::kInvalidArgument,
                     "duration '" + std::string(text) +
                         "': expected a number with an optional unit (ns, us, ms, s, m, h), e.g. "
                         "30s or 250ms");
  }
  double ns = value * u->factor * 1e9;
  if (ns >= 9.2e18) {
    return makeError(Errc::kInvalidArgument, "duration '" + std::string(text) + "': too long");
  }
  return Duration(static_cast<int64_t>(std::llround(ns)));
}

Result<double> parseDurationSeconds(std::string_view text) {
  ASSIGN_OR_RETURN(Duration d, parseDuration(text));
  return toSeconds(d);
}

std::string formatBytes(uint64_t bytes) {
  static constexpr const char* kNames[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int i = 0;
  while (v >= 1024.0 && i < 5) {
    v /= 1024.0;
    ++i;
  }
  char buf[32];
  if (i == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kNames[i]);
  }
  return buf;
}

std::string formatDuration(Duration d) {
  int64_t ns = d.count();
  char buf[48];
  auto exact = [&](int64_t per, const char* name) {
    if (ns % per != 0) return false;
    std::snprintf(buf, sizeof buf, "%lld%s", static_cast<long long>(ns / per), name);
    return true;
  };
  if (ns == 0) return "0s";
  if (exact(3600'000'000'000, "h") || exact(60'000'000'000, "m") || exact(1'000'000'000, "s") ||
      exact(1'000'000, "ms") || exact(1'000, "us")) {
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%lldns", static_cast<long long>(ns));
  return buf;
}

}  // namespace hotshard
