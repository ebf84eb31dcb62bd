#include "fuse/consistency.h"

#include <string_view>

#include "base/units.h"

namespace hotshard::fuse {

Result<Consistency> Consistency::parse(const std::string& text) {
  Consistency c;
  if (text == "strict") return c;
  if (text == "immutable") {
    c.mode = Mode::kImmutable;
    return c;
  }
  if (text.rfind("ttl=", 0) == 0) {
    auto ttl = parseDurationSeconds(std::string_view(text).substr(4));
    if (ttl.ok() && *ttl > 0) {
      c.mode = Mode::kTtl;
      c.ttl_seconds = *ttl;
      return c;
    }
  }
  return makeError(Errc::kInvalidArgument, "consistency '" + text +
                                               "': expected strict, ttl=SECONDS (> 0) or immutable; ttl takes units too, e.g. ttl=250ms or ttl=5m");
}

std::string Consistency::toString() const {
  switch (mode) {
    case Mode::kStrict: return "strict";
    case Mode::kImmutable: return "immutable";
    case Mode::kTtl: {
      std::string s = std::to_string(ttl_seconds);
      s.erase(s.find_last_not_of('0') + 1);
      if (!s.empty() && s.back() == '.') s.pop_back();
      return "ttl=" + s;
    }
  }
  return "strict";
}

// Immutable datasets never change in place: the kernel may keep what it knows
// for as long as it likes. New names can still appear, so negative entries are
// not cached.
static constexpr double kImmutableTimeout = 86400.0 * 365;

double Consistency::entryTimeout() const {
  return mode == Mode::kStrict ? 0 : mode == Mode::kTtl ? ttl_seconds : kImmutableTimeout;
}
double Consistency::attrTimeout() const { return entryTimeout(); }
double Consistency::negativeTimeout() const { return mode == Mode::kTtl ? ttl_seconds : 0; }

bool Consistency::trustsRememberedAttrs(double remembered_at, double now) const {
  if (mode == Mode::kStrict || remembered_at <= 0) return false;
  return mode == Mode::kImmutable || now - remembered_at < ttl_seconds;
}

}  // namespace hotshard::fuse
