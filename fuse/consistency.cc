#include "fuse/consistency.h"

#include <string_view>

#include "base/units.h"

namespace hotshard::fuse {

namespace {

// strict's parameters after "strict;": ac=DURATION and acdir=DURATION.
Status parseStrictParams(std::string_view params, Consistency& c) {
  bool acdir_given = false;
  for (size_t pos = 0, end = 0; end != std::string_view::npos; pos = end + 1) {
    end = params.find(';', pos);
    std::string_view item =
        params.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    size_t eq = item.find('=');
    std::string_view key = item.substr(0, eq);
    if (eq == std::string_view::npos || (key != "ac" && key != "acdir")) {
      return makeError(Errc::kInvalidArgument,
                       "'" + std::string(item) + "': strict takes ac=DURATION and acdir=DURATION");
    }
    auto seconds = parseDurationSeconds(item.substr(eq + 1));
    if (!seconds.ok() || *seconds < 0) {
      return makeError(Errc::kInvalidArgument,
                       "'" + std::string(item) + "': a duration >= 0 (e.g. 3s, 500ms, 0)");
    }
    if (key == "acdir") {
      c.acdir_seconds = *seconds;
      acdir_given = true;
    } else {
      c.ac_seconds = *seconds;
      if (!acdir_given) c.acdir_seconds = *seconds;
    }
  }
  return Ok{};
}

std::string secondsText(double seconds) {
  std::string s = std::to_string(seconds);
  s.erase(s.find_last_not_of('0') + 1);
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

}  // namespace

Result<Consistency> Consistency::parse(const std::string& text) {
  Consistency c;
  if (text == "strict") return c;
  if (text.rfind("strict;", 0) == 0) {
    Status st = parseStrictParams(std::string_view(text).substr(7), c);
    if (!st.ok()) return makeError(Errc::kInvalidArgument, "consistency '" + text + "': " + st.error().message);
    return c;
  }
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
  return makeError(Errc::kInvalidArgument,
                   "consistency '" + text +
                       "': expected strict[;ac=DURATION][;acdir=DURATION], ttl=SECONDS (> 0) or "
                       "immutable; durations take units, e.g. ttl=250ms, ttl=5m, strict;ac=1s");
}

std::string Consistency::toString() const {
  switch (mode) {
    case Mode::kStrict:
      if (ac_seconds == kDefaultAcSeconds && acdir_seconds == kDefaultAcdirSeconds) return "strict";
      return "strict;ac=" + secondsText(ac_seconds) + ";acdir=" + secondsText(acdir_seconds);
    case Mode::kImmutable: return "immutable";
    case Mode::kTtl: return "ttl=" + secondsText(ttl_seconds);
  }
  return "strict";
}

// Immutable datasets never change in place: the kernel may keep what it knows
// of a file for as long as it likes. New names can still appear, so negative
// entries are not cached; listings are revalidated at each opendir
// (keepsListing), and a changed directory makes the kernel look its names up
// again (FileSystem::opendir).
static constexpr double kImmutableTimeout = 86400.0 * 365;

double Consistency::attrTimeout(const struct stat& attr) const {
  if (mode == Mode::kStrict) return S_ISDIR(attr.st_mode) ? acdir_seconds : ac_seconds;
  return mode == Mode::kTtl ? ttl_seconds : kImmutableTimeout;
}
double Consistency::entryTimeout(const struct stat& attr) const {
  if (mode == Mode::kStrict && !S_ISDIR(attr.st_mode) && attr.st_nlink > 1) return 0;
  return attrTimeout(attr);
}
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
