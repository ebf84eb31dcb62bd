#include "fuse/namespace_cache.h"

#include <fcntl.h>
#include <lmdb.h>
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <xxhash.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <set>

#include "base/clock.h"
#include "base/fd.h"

namespace hotshard::fuse {

namespace {

constexpr uint32_t kRecordMagic = 0x4e534831;  // "NSH1"
constexpr const char* kFormat = "hotshard-namespace-1";

// One record as stored: fixed-width fields, the checksum over the rest last.
struct Record {
  uint32_t magic;
  uint32_t flags;  // kAttrsKnown | kListed
  uint32_t mode, uid, gid;
  uint32_t listed_at_s;  // CLOCK_REALTIME seconds when listed (directories)
  uint64_t nlink, rdev, ino;
  int64_t size, blocks;
  int64_t atime_ns, mtime_ns, ctime_ns;
  int64_t learnt_at_ns;
  int64_t listed_mtime_ns, listed_ctime_ns;
  uint64_t checksum;  // XXH3-64 of the bytes before it
};
static_assert(sizeof(Record) == 120, "the on-disk record layout");
constexpr uint32_t kAttrsKnown = 1, kListed = 2;

int64_t ns(const timespec& ts) { return timespecNs(ts); }
timespec ts(int64_t v) {
  return {.tv_sec = static_cast<time_t>(v / 1'000'000'000), .tv_nsec = v % 1'000'000'000};
}

Record encode(const NamespaceEntry& e) {
  Record r{};
  r.magic = kRecordMagic;
  r.flags = (e.attrs_known ? kAttrsKnown : 0) | (e.listed ? kListed : 0);
  r.mode = e.attr.st_mode;
  r.uid = e.attr.st_uid;
  r.gid = e.attr.st_gid;
  r.nlink = e.attr.st_nlink;
  r.rdev = e.attr.st_rdev;
  r.ino = e.attr.st_ino;
  r.size = e.attr.st_size;
  r.blocks = e.attr.st_blocks;
  r.atime_ns = ns(e.attr.st_atim);
  r.mtime_ns = ns(e.attr.st_mtim);
  r.ctime_ns = ns(e.attr.st_ctim);
  r.learnt_at_ns = static_cast<int64_t>(e.learnt_at * 1e9);
  r.listed_mtime_ns = ns(e.listed_mtime);
  r.listed_at_s = static_cast<uint32_t>(e.listed_at);
  r.listed_ctime_ns = ns(e.listed_ctime);
  r.checksum = XXH3_64bits(&r, offsetof(Record, checksum));
  return r;
}

// nullopt for anything that is not a whole, intact record.
std::optional<NamespaceEntry> decode(const MDB_val& v) {
  Record r;
  if (v.mv_size != sizeof(r)) return std::nullopt;
  std::memcpy(&r, v.mv_data, sizeof(r));
  if (r.magic != kRecordMagic || r.checksum != XXH3_64bits(&r, offsetof(Record, checksum))) {
    return std::nullopt;
  }
  NamespaceEntry e;
  e.attrs_known = r.flags & kAttrsKnown;
  e.listed = r.flags & kListed;
  e.attr.st_mode = r.mode;
  e.attr.st_uid = r.uid;
  e.attr.st_gid = r.gid;
  e.attr.st_nlink = r.nlink;
  e.attr.st_rdev = r.rdev;
  e.attr.st_ino = r.ino;
  e.attr.st_size = r.size;
  e.attr.st_blocks = r.blocks;
  e.attr.st_blksize = 4096;
  e.attr.st_atim = ts(r.atime_ns);
  e.attr.st_mtim = ts(r.mtime_ns);
  e.attr.st_ctim = ts(r.ctime_ns);
  e.learnt_at = static_cast<double>(r.learnt_at_ns) * 1e-9;
  e.listed_mtime = ts(r.listed_mtime_ns);
  e.listed_at = r.listed_at_s;
  e.listed_ctime = ts(r.listed_ctime_ns);
  return e;
}

// Views of s and r (never of a temporary: MDB_val does not own its bytes).
MDB_val val(const std::string& s) { return {s.size(), const_cast<char*>(s.data())}; }
MDB_val val(std::string&&) = delete;
MDB_val val(Record& r) { return {sizeof(r), &r}; }
std::string str(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

Error mdbError(int rc, const std::string& what) {
  if (rc > 0) return sysError(rc, what + ": " + mdb_strerror(rc));
  return makeError(Errc::kIo, what + ": " + mdb_strerror(rc));
}

std::string parentOf(const std::string& rel) {
  auto slash = rel.rfind('/');
  return slash == std::string::npos ? "" : rel.substr(0, slash);
}

// The prefix of the keys of a directory's children.
std::string childPrefix(const std::string& dir) { return dir + std::string(1, '\0'); }

bool startsWith(const MDB_val& key, const std::string& prefix) {
  return key.mv_size >= prefix.size() && std::memcmp(key.mv_data, prefix.data(), prefix.size()) == 0;
}

std::string bootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return id;
}

// A read-only transaction, aborted on scope exit.
struct ReadTxn {
  MDB_txn* txn = nullptr;
  explicit ReadTxn(MDB_env* env) {
    if (mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) != 0) txn = nullptr;
  }
  ~ReadTxn() {
    if (txn != nullptr) mdb_txn_abort(txn);
  }
};

// A write transaction: committed by commit(), else aborted.
struct WriteTxn {
  MDB_txn* txn = nullptr;
  int rc = 0;
  explicit WriteTxn(MDB_env* env) { rc = mdb_txn_begin(env, nullptr, 0, &txn); }
  ~WriteTxn() {
    if (txn != nullptr) mdb_txn_abort(txn);
  }
  int commit() {
    int r = mdb_txn_commit(txn);
    txn = nullptr;
    return r;
  }
};

// Deletes every key starting with prefix (collected first: a cursor moved by
// its own deletes is easy to get wrong).
int deletePrefix(MDB_txn* txn, MDB_dbi dbi, const std::string& prefix) {
  MDB_cursor* cur;
  if (int rc = mdb_cursor_open(txn, dbi, &cur); rc != 0) return rc;
  std::vector<std::string> keys;
  MDB_val k = val(prefix), v;
  int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  for (; rc == 0 && startsWith(k, prefix); rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    keys.push_back(str(k));
  }
  mdb_cursor_close(cur);
  if (rc != 0 && rc != MDB_NOTFOUND) return rc;
  for (const auto& key : keys) {
    MDB_val dk = val(key);
    if ((rc = mdb_del(txn, dbi, &dk, nullptr)) != 0) return rc;
  }
  return 0;
}

// The record of rel and everything below it.
int deleteTree(MDB_txn* txn, MDB_dbi dbi, const std::string& rel) {
  if (rel.empty()) return mdb_drop(txn, dbi, 0);
  const std::string key = namespaceKey(rel);  // outlives k, which points into it
  MDB_val k = val(key);
  int rc = mdb_del(txn, dbi, &k, nullptr);
  if (rc != 0 && rc != MDB_NOTFOUND) return rc;
  if ((rc = deletePrefix(txn, dbi, childPrefix(rel))) != 0) return rc;
  return deletePrefix(txn, dbi, rel + "/");
}

// Clears the listing flag of dir's record, if it has one.
int unlist(MDB_txn* txn, MDB_dbi dbi, const std::string& dir) {
  std::string key = namespaceKey(dir);
  MDB_val k = val(key), v;
  int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return rc;
  auto e = decode(v);
  if (e && !e->listed) return 0;
  if (!e) return mdb_del(txn, dbi, &k, nullptr);
  e->listed = false;
  Record r = encode(*e);
  MDB_val nv = val(r);
  return mdb_put(txn, dbi, &k, &nv, 0);
}

}  // namespace

std::string namespaceKey(const std::string& rel) {
  if (rel.empty()) return std::string(1, '\0');
  auto slash = rel.rfind('/');
  if (slash == std::string::npos) return std::string(1, '\0') + rel;
  return rel.substr(0, slash) + std::string(1, '\0') + rel.substr(slash + 1);
}

bool NamespaceCache::remove(const std::string& path) {
  bool had = ::unlink(path.c_str()) == 0;
  ::unlink((path + "-lock").c_str());
  ::unlink((path + "-dirty").c_str());
  return had;
}

Result<std::unique_ptr<NamespaceCache>> NamespaceCache::open(const NamespaceCacheOptions& opts) {
  std::unique_ptr<NamespaceCache> nc(new NamespaceCache());
  nc->path_ = opts.path;
  std::string why;
  std::string dirty = opts.path + "-dirty";
  if (std::ifstream in(dirty); in) {
    std::string boot;
    std::getline(in, boot);
    if (boot != bootId()) why = "written when the system went down (may be torn)";
  }
  if (why.empty()) {
    Status st = nc->openEnv(opts);
    if (st.ok()) st = nc->checkMeta(opts);
    if (st.ok()) {
      nc->startSyncer(opts.sync_seconds);
      return nc;
    }
    why = st.error().message;
    if (nc->env_ != nullptr) mdb_env_close(nc->env_);
    nc->env_ = nullptr;
  }
  spdlog::warn("namespace {}: dropped, not served: {}", opts.path, why);
  remove(opts.path);
  nc->dropped_reason_ = why;
  RETURN_IF_ERROR(nc->openEnv(opts));
  RETURN_IF_ERROR(nc->checkMeta(opts));
  nc->startSyncer(opts.sync_seconds);
  return nc;
}

Status NamespaceCache::openEnv(const NamespaceCacheOptions& opts) {
  if (int rc = mdb_env_create(&env_); rc != 0) return mdbError(rc, "mdb_env_create");
  mdb_env_set_maxdbs(env_, 2);
  mdb_env_set_mapsize(env_, kMapBytes);
  // MDB_NOTLS: read transactions are not tied to threads (FUSE's worker pool).
  unsigned flags = MDB_NOSUBDIR | MDB_NOSYNC | MDB_NOTLS;
  if (int rc = mdb_env_open(env_, opts.path.c_str(), flags, 0600); rc != 0) {
    return mdbError(rc, "open " + opts.path);
  }
  int stale = 0;
  mdb_reader_check(env_, &stale);  // reader slots of a process that died (a crash)
  WriteTxn w(env_);
  if (w.rc != 0) return mdbError(w.rc, "begin");
  MDB_dbi attrs, meta;
  if (int rc = mdb_dbi_open(w.txn, "attrs", MDB_CREATE, &attrs); rc != 0) {
    return mdbError(rc, "open attrs");
  }
  if (int rc = mdb_dbi_open(w.txn, "meta", MDB_CREATE, &meta); rc != 0) {
    return mdbError(rc, "open meta");
  }
  if (int rc = w.commit(); rc != 0) return mdbError(rc, "commit");
  attrs_dbi_ = attrs;
  meta_dbi_ = meta;
  return Ok{};
}

Status NamespaceCache::checkMeta(const NamespaceCacheOptions& opts) {
  const std::string want = std::string(kFormat) + '\0' + opts.remote_id + '\0' + opts.mode;
  WriteTxn w(env_);
  if (w.rc != 0) return mdbError(w.rc, "begin");
  std::string owner_key = "owner";
  MDB_val k = val(owner_key), v;
  int rc = mdb_get(w.txn, meta_dbi_, &k, &v);
  if (rc == 0) {
    if (str(v) == want) return Ok{};
    std::string had = str(v);
    for (char& c : had) c = c == '\0' ? ' ' : c;
    return makeError(Errc::kStale, "belongs to another remote or mode (" + had + ")");
  }
  if (rc != MDB_NOTFOUND) return mdbError(rc, "read owner");
  // A new database: no records may predate the owner.
  MDB_stat st;
  if (mdb_stat(w.txn, attrs_dbi_, &st) == 0 && st.ms_entries > 0) {
    return makeError(Errc::kStale, "records without an owner");
  }
  MDB_val nv = val(want);
  if ((rc = mdb_put(w.txn, meta_dbi_, &k, &nv, 0)) != 0) return mdbError(rc, "write owner");
  if ((rc = w.commit()) != 0) return mdbError(rc, "commit owner");
  if ((rc = mdb_env_sync(env_, 1)) != 0) return mdbError(rc, "sync");
  return Ok{};
}

NamespaceCache::~NamespaceCache() {
  {
    std::lock_guard lock(sync_mu_);
    stopping_ = true;
  }
  sync_cv_.notify_all();
  if (syncer_.joinable()) syncer_.join();
  if (env_ != nullptr) {
    syncNow();
    mdb_env_close(env_);
  }
}

std::optional<NamespaceEntry> NamespaceCache::get(const std::string& rel) const {
  ReadTxn r(env_);
  if (r.txn == nullptr) return std::nullopt;
  std::string key = namespaceKey(rel);
  MDB_val k = val(key), v;
  if (mdb_get(r.txn, attrs_dbi_, &k, &v) != 0) return std::nullopt;
  return decode(v);
}

std::optional<std::vector<NamespaceChild>> NamespaceCache::listing(const std::string& dir) const {
  ReadTxn r(env_);
  if (r.txn == nullptr) return std::nullopt;
  std::string key = namespaceKey(dir);
  MDB_val k = val(key), v;
  if (mdb_get(r.txn, attrs_dbi_, &k, &v) != 0) return std::nullopt;
  auto self = decode(v);
  if (!self || !self->listed) return std::nullopt;
  MDB_cursor* cur;
  if (mdb_cursor_open(r.txn, attrs_dbi_, &cur) != 0) return std::nullopt;
  std::vector<NamespaceChild> out;
  const std::string prefix = childPrefix(dir);
  k = val(prefix);
  bool intact = true;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && startsWith(k, prefix);
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size == prefix.size()) continue;  // the root's own key ("\0")
    auto e = decode(v);
    if (!e) {
      intact = false;  // a damaged record: the listing is not served
      break;
    }
    out.push_back({.name = str(k).substr(prefix.size()), .entry = *e});
  }
  mdb_cursor_close(cur);
  if (!intact) return std::nullopt;
  return out;
}

Status NamespaceCache::markDirty() {
  if (dirty_) return Ok{};
  std::string dirty = path_ + "-dirty";
  UniqueFd fd(::open(dirty.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return lastSysError("create " + dirty);
  std::string boot = bootId() + "\n";
  if (::write(fd.get(), boot.data(), boot.size()) != static_cast<ssize_t>(boot.size()) ||
      ::fsync(fd.get()) != 0) {
    return lastSysError("write " + dirty);
  }
  dirty_ = true;
  return Ok{};
}

Status NamespaceCache::drop(const std::string& rel) {
  epoch_.fetch_add(1);
  std::lock_guard lock(write_mu_);
  RETURN_IF_ERROR(markDirty());
  WriteTxn w(env_);
  if (w.rc != 0) return mdbError(w.rc, "namespace drop " + rel);
  int rc = deleteTree(w.txn, attrs_dbi_, rel);
  if (rc == 0 && !rel.empty()) rc = unlist(w.txn, attrs_dbi_, parentOf(rel));
  if (rc == 0) rc = w.commit();
  if (rc != 0) return mdbError(rc, "namespace drop " + rel);
  commits_++;
  epoch_.fetch_add(1);  // a put that read the epoch during the drop is refused too
  return Ok{};
}

bool NamespaceCache::put(const std::string& rel, const NamespaceEntry& entry, uint64_t epoch) {
  std::lock_guard lock(write_mu_);
  if (epoch_.load() != epoch || !markDirty().ok()) return false;
  WriteTxn w(env_);
  if (w.rc != 0) return false;
  std::string key = namespaceKey(rel);
  MDB_val k = val(key), v;
  NamespaceEntry e = entry;
  int found = mdb_get(w.txn, attrs_dbi_, &k, &v);
  if (found == MDB_NOTFOUND && !rel.empty()) {
    // A name its directory's complete listing lacks: that listing is out of date.
    if (unlist(w.txn, attrs_dbi_, parentOf(rel)) != 0) return false;
  }
  if (found == 0) {
    auto had = decode(v);
    // Unchanged directory: its listing still holds.
    if (had && had->listed && S_ISDIR(e.attr.st_mode) && S_ISDIR(had->attr.st_mode) &&
        ns(had->listed_mtime) == ns(e.attr.st_mtim) && ns(had->listed_ctime) == ns(e.attr.st_ctim)) {
      e.listed = true;
      e.listed_mtime = had->listed_mtime;
      e.listed_ctime = had->listed_ctime;
      e.listed_at = had->listed_at;
    }
    // Another object now: what was below it goes.
    if (had && (had->attr.st_mode & S_IFMT) != (e.attr.st_mode & S_IFMT)) {
      if (deleteTree(w.txn, attrs_dbi_, rel) != 0) return false;
    }
  }
  Record r = encode(e);
  MDB_val nv = val(r);
  int rc = mdb_put(w.txn, attrs_dbi_, &k, &nv, 0);
  if (rc == 0) {
    rc = w.commit();
  } else {
    mdb_txn_abort(w.txn);
    w.txn = nullptr;
  }
  if (rc == MDB_MAP_FULL) clearFullLocked();
  if (rc != 0) return false;
  commits_++;
  return true;
}

void NamespaceCache::clearFullLocked() {
  spdlog::warn("namespace {}: full ({} bytes), every record dropped", path_, kMapBytes);
  WriteTxn w(env_);
  if (w.rc == 0 && mdb_drop(w.txn, attrs_dbi_, 0) == 0 && w.commit() == 0) commits_++;
}

bool NamespaceCache::putListing(const std::string& dir, const struct stat& dir_attr,
                                const std::vector<NamespaceChild>& children, uint64_t epoch) {
  std::lock_guard lock(write_mu_);
  if (epoch_.load() != epoch || !markDirty().ok()) return false;
  WriteTxn w(env_);
  if (w.rc != 0) return false;
  std::set<std::string> names;
  for (const auto& c : children) names.insert(c.name);
  // Names gone from the listing, and what was below them.
  std::vector<std::string> gone;
  {
    MDB_cursor* cur;
    if (mdb_cursor_open(w.txn, attrs_dbi_, &cur) != 0) return false;
    const std::string prefix = childPrefix(dir);
    MDB_val k = val(prefix), v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && startsWith(k, prefix);
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      std::string name = str(k).substr(prefix.size());
      if (!name.empty() && !names.contains(name)) gone.push_back(name);
    }
    mdb_cursor_close(cur);
  }
  auto childRel = [&](const std::string& name) { return dir.empty() ? name : dir + "/" + name; };
  for (const auto& name : gone) {
    if (deleteTree(w.txn, attrs_dbi_, childRel(name)) != 0) return false;
  }
  for (const auto& c : children) {
    std::string key = namespaceKey(childRel(c.name));
    MDB_val k = val(key), v;
    if (mdb_get(w.txn, attrs_dbi_, &k, &v) == 0) {
      auto had = decode(v);
      if (had && (had->attr.st_mode & S_IFMT) == (c.entry.attr.st_mode & S_IFMT)) continue;
      if (deleteTree(w.txn, attrs_dbi_, childRel(c.name)) != 0) return false;
    }
    Record r = encode(c.entry);
    MDB_val nv = val(r);
    if (int rc = mdb_put(w.txn, attrs_dbi_, &k, &nv, 0); rc != 0) {
      if (rc == MDB_MAP_FULL) {
        mdb_txn_abort(w.txn);
        w.txn = nullptr;
        clearFullLocked();
      }
      return false;
    }
  }
  const double now = static_cast<double>(wallNs()) * 1e-9;
  NamespaceEntry self{.attr = dir_attr, .learnt_at = now, .listed = true,
                      .listed_mtime = dir_attr.st_mtim, .listed_ctime = dir_attr.st_ctim,
                      .listed_at = std::floor(now)};
  self.attr.st_dev = 0;
  Record r = encode(self);
  std::string key = namespaceKey(dir);
  MDB_val k = val(key), nv = val(r);
  if (mdb_put(w.txn, attrs_dbi_, &k, &nv, 0) != 0) return false;
  if (w.commit() != 0) return false;
  commits_++;
  return true;
}

size_t NamespaceCache::size() const {
  ReadTxn r(env_);
  MDB_stat st;
  if (r.txn == nullptr || mdb_stat(r.txn, attrs_dbi_, &st) != 0) return 0;
  return st.ms_entries;
}

void NamespaceCache::sync() {
  uint64_t synced;
  {
    std::lock_guard lock(write_mu_);
    if (!dirty_) return;
    synced = commits_;
  }
  if (mdb_env_sync(env_, 1) != 0) return;
  std::lock_guard lock(write_mu_);
  if (commits_ != synced || synced != synced_commits_) {
    // Commits came since the last sync: the marker stays, so that the next
    // burst of them does not wait for its fsync (quiet for a whole sync period
    // first, it goes).
    synced_commits_ = synced;
    return;
  }
  std::string dirty = path_ + "-dirty";
  ::unlink(dirty.c_str());
  dirty_ = false;
}

void NamespaceCache::syncNow() {
  if (mdb_env_sync(env_, 1) != 0) return;
  std::lock_guard lock(write_mu_);
  ::unlink((path_ + "-dirty").c_str());
  dirty_ = false;
}

void NamespaceCache::startSyncer(double period_seconds) {
  if (period_seconds > 0) syncer_ = std::thread([this, period_seconds] { syncLoop(period_seconds); });
}

void NamespaceCache::syncLoop(double period_seconds) {
  std::unique_lock lock(sync_mu_);
  while (!stopping_) {
    sync_cv_.wait_for(lock, std::chrono::duration<double>(period_seconds));
    if (stopping_) break;
    lock.unlock();
    sync();
    lock.lock();
  }
}

}  // namespace hotshard::fuse
