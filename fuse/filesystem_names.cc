// FileSystem's use of the persistent namespace (namespace_cache.h): lookups
// and getattrs answered from it, what the remote answers recorded into it, and
// changes through the mount dropping what they touch. The directory side
// (opendir/readdir from a listing) sits with the other directory handlers in
// filesystem.cc.
#include <spdlog/spdlog.h>

#include <cstring>

#include "base/clock.h"
#include "fuse/backing.h"
#include "fuse/filesystem.h"
#include "fuse/takeover_state.h"

namespace hotshard::fuse {

namespace {
double wallSeconds() { return static_cast<double>(wallNs()) * 1e-9; }
bool isDotName(const char* name) {
  return name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'));
}
}  // namespace

std::optional<std::string> FileSystem::namesRel(const Inode& inode) const {
  if (table_.isRoot(inode)) return std::string();
  std::string rel = table_.relPathOf(inode);
  if (rel.empty()) return std::nullopt;  // no name left (unlinked, O_TMPFILE)
  return rel;
}

std::optional<std::string> FileSystem::namesRel(fuse_ino_t parent, const char* name) {
  if (isDotName(name)) return std::nullopt;
  auto dir = namesRel(inodeOf(parent));
  if (!dir) return std::nullopt;
  return dir->empty() ? std::string(name) : *dir + "/" + name;
}

bool FileSystem::fresh(const NamespaceEntry& entry) const {
  if (opts_.consistency.mode == Consistency::Mode::kImmutable) return true;
  return opts_.consistency.mode == Consistency::Mode::kTtl &&
         wallSeconds() - entry.learnt_at < opts_.consistency.ttl_seconds;
}

std::optional<NamespaceEntry> FileSystem::freshEntry(const std::string& rel) const {
  auto entry = names()->get(rel);
  if (!entry || !entry->attrs_known || !fresh(*entry)) return std::nullopt;
  return entry;
}

struct stat FileSystem::attrOf(const NamespaceEntry& entry) {
  struct stat st = entry.attr;
  st.st_dev = table_.root().src_dev;  // as a fresh stat of the remote now would say
  return st;
}

bool FileSystem::lookupFromNames(fuse_ino_t parent, const char* name, fuse_entry_param* e) {
  if (names() == nullptr) return false;
  auto rel = namesRel(parent, name);
  if (!rel) return false;
  auto entry = freshEntry(*rel);
  if (!entry) return false;
  e->attr = attrOf(*entry);
  Inode& inode = table_.addNamedLookup(inodeOf(parent), name, e->attr);
  rememberFromNames(inode, *entry);
  e->ino = table_.idOf(inode);
  e->generation = inode.generation;
  overlayAdoptedCopy(inode, e->attr);
  setEntryTimeouts(name, inode, e);
  return true;
}

void FileSystem::rememberFromNames(Inode& inode, const NamespaceEntry& entry) {
  struct stat st = attrOf(entry);
  std::lock_guard lock(inode.mu);
  if (inode.last_stat_time != 0) return;
  // What an open validates a cached copy against: learnt_at, on the monotonic clock.
  inode.last_stat = st;
  inode.last_stat_time = std::max(monotonicSeconds() - (wallSeconds() - entry.learnt_at), 1e-9);
}

void FileSystem::adoptInodes(const std::vector<TakeoverSlot>& slots) {
  table_.adoptInodes(slots);
  // The predecessor's remembered attributes went with it. Without them an open
  // of a cached file would stat the remote first, and a successor started while
  // the remote hangs could not serve its copies (docs/restart.md).
  if (names() == nullptr) return;
  for (const TakeoverSlot& slot : slots) {
    Inode& inode = inodeOf(slot.id);
    if (inode.type != S_IFREG) continue;
    auto rel = namesRel(inode);
    auto entry = rel ? freshEntry(*rel) : std::nullopt;
    if (entry && (entry->attr.st_mode & S_IFMT) == S_IFREG) rememberFromNames(inode, *entry);
  }
}

bool FileSystem::getattrFromNames(fuse_req_t req, Inode& inode) {
  if (names() == nullptr) return false;
  {
    std::lock_guard lock(inode.mu);
    if (!inode.writer_rels.empty() || inode.copy_adopted) return false;  // the remote's, or the copy's
  }
  auto rel = namesRel(inode);
  if (!rel) return false;
  auto entry = freshEntry(*rel);
  if (!entry) return false;
  struct stat st = attrOf(*entry);
  fuse_reply_attr(req, &st, opts_.consistency.attrTimeout(st));
  return true;
}

void FileSystem::learn(Inode& inode, const struct stat& st, uint64_t epoch) {
  if (names() == nullptr) return;
  {
    std::lock_guard lock(inode.mu);
    if (!inode.writer_rels.empty() || inode.copy_adopted) return;
  }
  auto rel = namesRel(inode);
  if (!rel) return;
  NamespaceEntry entry{.attr = st, .learnt_at = wallSeconds()};
  entry.attr.st_dev = 0;
  (void)names()->put(*rel, entry, epoch);
}

FileSystem::NamesChange::~NamesChange() {
  if (fs == nullptr) return;
  Status st = fs->dropNames(rels);
  if (!st.ok()) spdlog::error("namespace: {}", st.error().message);
}

Status FileSystem::beginNamesChange(NamesChange& change,
                                    std::vector<std::optional<std::string>> rels) {
  if (names() == nullptr) return Ok{};
  for (auto& rel : rels) {
    if (rel) change.rels.push_back(std::move(*rel));
  }
  // Not served stale: a change whose old records cannot be dropped is not made.
  Status st = dropNames(change.rels);
  if (!st.ok()) return sysError(EIO, st.error().message);
  change.fs = this;
  return Ok{};
}

Status FileSystem::dropNames(const std::vector<std::string>& rels) {
  for (const auto& rel : rels) RETURN_IF_ERROR(names()->drop(rel));
  return Ok{};
}

void FileSystem::forgetStaleNames(Inode& inode, const Error& walk_error) {
  if (names() == nullptr || walk_error.sys_errno != ESTALE) return;
  auto rel = namesRel(inode);
  if (!rel || rel->empty()) return;
  Status st = names()->drop(*rel);
  if (!st.ok()) spdlog::error("namespace: {}", st.error().message);
}

Result<PathFd> FileSystem::pathForOpen(Inode& inode, int flags) {
  if (PathFd fd = table_.cachedPathFd(inode)) return fd;
  if (names() == nullptr || opts_.cache == nullptr || opensForWrite(flags) || (flags & O_TRUNC)) {
    return pathFd(inode);
  }
  struct stat remote;
  bool trusted;
  {
    std::lock_guard lock(inode.mu);
    remote = inode.last_stat;
    trusted = opts_.consistency.trustsRememberedAttrs(inode.last_stat_time, monotonicSeconds());
  }
  std::string rel = relPathOf(inode);
  if (trusted && !rel.empty() && S_ISREG(remote.st_mode) && opts_.cache->hasValidCopy(rel, remote)) {
    return PathFd();  // served from the store alone: no walk to the remote
  }
  return pathFd(inode);
}

}  // namespace hotshard::fuse
