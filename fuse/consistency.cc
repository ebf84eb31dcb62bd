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
// of a file for as long as it likes. New names can still appear, so negative
// entries are not cached; listings are revalidated at each opendir
// (keepsListing), and a changed directory makes the kernel look its names up
// again (FileSystem::opendir).
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

bool sameDirectoryVersion(const struct stat& a, const struct stat& b) {
  return a.st_ino == b.st_ino && a.st_dev == b.st_dev && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
         a.st_mtim.tv_nsec == b.st_mtim.tv_nsec && a.st_ctim.tv_sec == b.st_ctim.tv_sec &&
         a.st_ctim.tv_nsec == b.st_ctim.tv_nsec;
}

bool Consistency::keepsListing(const struct stat& listed, double listed_at,
                               const struct stat& now) const {
  if (mode == Mode::kStrict || listed_at <= 0 || !sameDirectoryVersion(listed, now)) return false;
  double changed_at = static_cast<double>(listed.st_ctim.tv_sec) + listed.st_ctim.tv_nsec * 1e-9;
  return changed_at <= listed_at - kQuietListingSeconds;
}

}  // namespace hotshard::fuse
