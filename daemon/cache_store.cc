#include "daemon/cache_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstring>

#include "base/clock.h"
#include "base/fd.h"
#include "base/file_copy.h"

namespace hotshard {
namespace {

constexpr int kFormatVersion = 1;
constexpr char kFormatMagic[] = "hotshard-cache ";
constexpr char kXattrPath[] = "user.hotshard.path";
constexpr char kXattrValidator[] = "user.hotshard.validator";
constexpr char kXattrChecksum[] = "user.hotshard.checksum";
constexpr char kXattrDirty[] = "user.hotshard.dirty";
constexpr char kLostFound[] = "lost+found";

// Names in a directory, without "." and "..".
Result<std::vector<std::string>> listDir(int dir_fd, const std::string& what) {
  int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return lastSysError("list " + what);
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    int err = errno;
    ::close(fd);
    return sysError(err, "list " + what);
  }
  std::vector<std::string> names;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(std::move(name));
    errno = 0;
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return sysError(err, "list " + what);
  return names;
}

Result<std::string> readWholeFile(int dir_fd, const char* name, const std::string& what) {
  UniqueFd fd(::openat(dir_fd, name, O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return lastSysError("open " + what);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lastSysError("read " + what);
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
  }
}

// Writes `content` to dir/name atomically: name.tmp, fsync, rename, fsync dir.
Status writeFileAtomic(int dir_fd, const std::string& name, const std::string& content,
                       const std::string& what) {
  std::string tmp = name + ".tmp";
  UniqueFd fd(::openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (fd.get() < 0) return lastSysError("create " + what + ".tmp");
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd.get(), content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lastSysError("write " + what + ".tmp");
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0) return lastSysError("fsync " + what + ".tmp");
  if (::renameat(dir_fd, tmp.c_str(), dir_fd, name.c_str()) != 0)
    return lastSysError("rename " + what + ".tmp to " + what);
  if (::fsync(dir_fd) != 0) return lastSysError("fsync directory of " + what);
  return Ok{};
}

// Up to XATTR_SIZE_MAX (64 KiB, xattr(7)): a shared object's path list may
// be longer than one path.
Result<std::string> getXattr(int fd, const char* name) {
  std::string buf(8192, '\0');
  for (;;) {
    ssize_t n = ::fgetxattr(fd, name, buf.data(), buf.size());
    if (n >= 0) return buf.substr(0, static_cast<size_t>(n));
    if (errno != ERANGE || buf.size() >= 65536) return lastSysError(std::string("getxattr ") + name);
    buf.resize(65536);
  }
}

// The path xattr: one relative path, or the NUL-separated names of a shared
// object (CacheStore::linkCopy). A single path is exactly the format before
// objects were shared, so older caches read unchanged.
std::vector<std::string> splitPathList(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    size_t end = s.find('\0', start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) return out;
    start = end + 1;
  }
}

std::string joinPathList(const std::vector<std::string>& paths) {
  std::string out;
  for (const auto& p : paths) {
    if (!out.empty()) out.push_back('\0');
    out.append(p);
  }
  return out;
}

bool validPathList(const std::vector<std::string>& paths) {
  return std::all_of(paths.begin(), paths.end(),
                     [](const std::string& p) { return checkRelPath(p).ok(); });
}

bool parseValidator(const std::string& s, Validator* v) {
  unsigned long long size, ino, dev;
  long long mtime, ctime;
  int consumed = -1;
  if (std::sscanf(s.c_str(), "size=%llu mtime_ns=%lld ctime_ns=%lld ino=%llu dev=%llu%n", &size,
                  &mtime, &ctime, &ino, &dev, &consumed) != 5 ||
      consumed != static_cast<int>(s.size())) {
    return false;
  }
  *v = Validator{size, mtime, ctime, ino, dev};
  return true;
}

bool parseChecksum(const std::string& s, uint64_t* out) {
  if (s.size() != 16) return false;
  uint64_t v = 0;
  for (char c : s) {
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = v << 4 | static_cast<uint64_t>(d);
  }
  *out = v;
  return true;
}

bool isHex(const std::string& s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// ---- init() steps ----

// A directory without a FORMAT file becomes a cache only if it holds nothing
// but what an interrupted first start leaves.
Status checkEmptyForNewCache(int dir_fd, const std::string& dir) {
  ASSIGN_OR_RETURN(auto names, listDir(dir_fd, "cache dir " + dir));
  for (const auto& n : names) {
    if (n != "LOCK" && n != "objects" && n != "tmp" && n != "FORMAT.tmp" && n != kLostFound) {
      return makeError(Errc::kInvalidArgument,
                       fmt::format("cache dir {}: not a hotshard cache (no FORMAT file) and not "
                                   "empty (found \"{}\"); refusing to use it",
                                   dir, n));
    }
  }
  return Ok{};
}

Status checkFormatVersion(const std::string& f, const std::string& dir) {
  int version = -1;
  if (f.rfind(kFormatMagic, 0) == 0) {
    std::string rest = f.substr(sizeof(kFormatMagic) - 1);
    char* end = nullptr;
    long v = std::strtol(rest.c_str(), &end, 10);
    if (end != rest.c_str() && (*end == '\n' || *end == '\0')) version = static_cast<int>(v);
  }
  if (version < 0) {
    return makeError(Errc::kCorrupt, fmt::format("cache dir {}: FORMAT file is garbled; not a "
                                                 "hotshard cache this build can read",
                                                 dir));
  }
  if (version != kFormatVersion) {
    return makeError(Errc::kUnsupported,
                     fmt::format("cache dir {}: format version {} is not supported by this "
                                 "build (reads version {}); use another cache dir or remove it",
                                 dir, version, kFormatVersion));
  }
  return Ok{};
}

// Whether the directory is a new cache (true: FORMAT still to be written).
Result<bool> checkFormat(int dir_fd, const std::string& dir) {
  auto format = readWholeFile(dir_fd, "FORMAT", dir + "/FORMAT");
  if (format.ok()) {
    RETURN_IF_ERROR(checkFormatVersion(*format, dir));
    return false;
  }
  if (format.error().sys_errno != ENOENT) return format.takeError();
  RETURN_IF_ERROR(checkEmptyForNewCache(dir_fd, dir));
  return true;
}

// The LOCK file, flock'ed: one process per cache directory. Opened read-only
// (flock needs no write access), so that the cache holds no file open for
// writing at rest and its file system can go read-only under it (an ext4
// errors=remount-ro, or a read-only remount) without EBUSY.
Result<int> takeLock(int dir_fd, const std::string& dir) {
  UniqueFd fd(::openat(dir_fd, "LOCK", O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return lastSysError("open " + dir + "/LOCK");
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      return makeError(Errc::kBusy, "cache dir " + dir + " is in use by another hotshard process");
    }
    return lastSysError("lock " + dir + "/LOCK");
  }
  return fd.release();
}

Result<int> openSubdir(int dir_fd, const std::string& dir, const char* sub) {
  if (::mkdirat(dir_fd, sub, 0700) != 0 && errno != EEXIST)
    return lastSysError(fmt::format("create {}/{}", dir, sub));
  int fd = ::openat(dir_fd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return lastSysError(fmt::format("open {}/{}", dir, sub));
  return fd;
}

// Objects describe themselves in user xattrs: a file system without them
// (some FUSE or network file systems) cannot hold a cache.
Status checkXattrSupport(int tmp_fd, const std::string& dir) {
  UniqueFd probe(::openat(tmp_fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
  if (probe && ::fsetxattr(probe.get(), kXattrPath, "probe", 5, 0) != 0 &&
      (errno == EOPNOTSUPP || errno == ENOTSUP)) {
    return makeError(Errc::kUnsupported,
                     fmt::format("cache dir {}: its file system does not support user xattrs "
                                 "(user.hotshard.*); put the cache on ext4, xfs, btrfs or tmpfs",
                                 dir));
  }
  return Ok{};
}

// ---- recover() steps ----

// Removes everything in tmp/; returns how many entries went.
Result<uint64_t> sweepTmp(int tmp_fd, const std::string& dir) {
  ASSIGN_OR_RETURN(auto names, listDir(tmp_fd, dir + "/tmp"));
  uint64_t swept = 0;
  for (const auto& n : names) {
    if (::unlinkat(tmp_fd, n.c_str(), 0) != 0 && errno != ENOENT) {
      // Not ours (a directory someone made?): leave it, it is never served.
      spdlog::warn("cache: sweep {}/tmp/{}: {}", dir, n, std::strerror(errno));
      continue;
    }
    ++swept;
  }
  return swept;
}

// The pins file: NUL-separated relative paths; a missing file is no pins.
Result<std::unordered_set<std::string>> readPins(int dir_fd, const std::string& dir) {
  std::unordered_set<std::string> pins;
  auto all = readWholeFile(dir_fd, "pins", dir + "/pins");
  if (!all.ok() && all.error().sys_errno != ENOENT) return all.takeError();
  if (!all.ok()) return pins;
  size_t start = 0;
  while (start < all->size()) {
    size_t end = all->find('\0', start);
    if (end == std::string::npos) break;  // a torn tail cannot happen (atomic rewrite)
    std::string p = all->substr(start, end - start);
    if (checkRelPath(p).ok()) pins.insert(std::move(p));
    start = end + 1;
  }
  return pins;
}

// What an object file says it is a copy of; the error's message says why it
// cannot be trusted.
struct ObjectFile {
  std::vector<std::string> paths;  // the path xattr's list (several for a shared object)
  Validator validator;
  uint64_t checksum = 0;
  struct stat st {};
};

Result<ObjectFile> readObjectFile(int fan_fd, const std::string& name) {
  auto untrusted = [](std::string why) { return makeError(Errc::kCorrupt, std::move(why)); };
  ObjectFile obj;
  UniqueFd fd(::openat(fan_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd || ::fstat(fd.get(), &obj.st) != 0 || !S_ISREG(obj.st.st_mode))
    return untrusted("not a readable regular file");
  auto path = getXattr(fd.get(), kXattrPath);
  auto vstr = getXattr(fd.get(), kXattrValidator);
  auto cstr = getXattr(fd.get(), kXattrChecksum);
  if (!path.ok() || !vstr.ok() || !cstr.ok()) return untrusted("missing xattrs");
  obj.paths = splitPathList(*path);
  if (!validPathList(obj.paths) || !parseValidator(*vstr, &obj.validator) ||
      !parseChecksum(*cstr, &obj.checksum)) {
    return untrusted("garbled xattrs");
  }
  return obj;
}

// An object that writers joined (user.hotshard.dirty): the paths its path
// xattr lists (the one it holds writes to among them) and the remote's
// validator they were made against. A dirty object with garbled xattrs has no
// paths (kept aside, never unlinked).
bool readDirtyMark(int fan_fd, const std::string& name, std::vector<std::string>* paths,
                   Validator* base) {
  UniqueFd fd(::openat(fan_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return false;
  auto dirty = getXattr(fd.get(), kXattrDirty);
  if (!dirty.ok()) return false;
  auto path = getXattr(fd.get(), kXattrPath);
  paths->clear();
  if (path.ok() && parseValidator(*dirty, base)) *paths = splitPathList(*path);
  if (!validPathList(*paths)) paths->clear();
  return true;
}

// ---- publish() steps ----

// Makes the tmp file an object in all but its name: checks its size, sets
// the xattrs, fsyncs. Returns the bytes it occupies and its inode number.
struct Sealed {
  uint64_t allocated = 0, ino = 0;
};
Result<Sealed> sealTmpFile(int fd, const std::string& rel, const std::string& tmp,
                             const Validator& v, uint64_t checksum) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return lastSysError(fmt::format("promote {}: stat {}", rel, tmp));
  if (static_cast<uint64_t>(st.st_size) != v.size) {
    return makeError(Errc::kCorrupt, fmt::format("promote {}: {} has {} bytes, remote had {}", rel,
                                                 tmp, st.st_size, v.size));
  }
  std::string vstr = toString(v);
  std::string cstr = fmt::format("{:016x}", checksum);
  using Attr = std::pair<const char*, const std::string*>;
  for (auto [name, value] :
       {Attr{kXattrPath, &rel}, Attr{kXattrValidator, &vstr}, Attr{kXattrChecksum, &cstr}}) {
    if (::fsetxattr(fd, name, value->data(), value->size(), 0) != 0)
      return lastSysError(fmt::format("promote {}: setxattr {} on {}", rel, name, tmp));
  }
  if (::fsync(fd) != 0) return lastSysError(fmt::format("promote {}: fsync {}", rel, tmp));
  if (::fstat(fd, &st) != 0) return lastSysError(fmt::format("promote {}: stat {}", rel, tmp));
  return Sealed{static_cast<uint64_t>(st.st_blocks) * 512, static_cast<uint64_t>(st.st_ino)};
}

// Sets the path xattr of a promotion's tmp file. A path that does not fit
// (ext4 keeps all of a file's xattrs in its inode and one block, so about 4 KiB
// there: ENOSPC while the disk has room; E2BIG past XATTR_SIZE_MAX, 64 KiB, on
// any file system, xattr(7)) is kInvalidArgument, not a full disk: its file is
// served from the remote.
bool xattrTooLong(int fd, int err) {
  struct statvfs vfs {};
  bool room = err == ENOSPC && ::fstatvfs(fd, &vfs) == 0 && vfs.f_bavail > 0;
  return err == E2BIG || err == ERANGE || room;
}

Status labelTmpFile(int fd, const std::string& rel, const std::string& tmp,
                    const std::string& dir) {
  if (::fsetxattr(fd, kXattrPath, rel.data(), rel.size(), 0) == 0) return Ok{};
  int err = errno;
  if (xattrTooLong(fd, err)) {
    return Error{Errc::kInvalidArgument, err,
                 fmt::format("promote {}: its path of {} bytes is longer than an xattr of the "
                             "cache's file system holds ({}: {}); it is read from the remote",
                             rel, rel.size(), dir, std::strerror(err))};
  }
  errno = err;
  return lastSysError(fmt::format("promote {}: setxattr {} on {}", rel, kXattrPath, tmp));
}

// objects/<fan>, created (and made durable) if missing.
Status makeFanDir(int objects_fd, const std::string& fan, const std::string& rel,
                  const std::string& dir) {
  if (::mkdirat(objects_fd, fan.c_str(), 0700) != 0) {
    if (errno == EEXIST) return Ok{};
    return lastSysError(fmt::format("promote {}: mkdir {}/objects/{}", rel, dir, fan));
  }
  if (::fsync(objects_fd) != 0)
    return lastSysError(fmt::format("promote {}: fsync {}/objects", rel, dir));
  return Ok{};
}

// ---- verify() steps ----

struct Digest {
  uint64_t checksum = 0;
  uint64_t bytes = 0;
  Status io_error = Ok{};  // reading stopped there
};

// The xxh3-64 of the whole file; kBusy when read_hook cancels.
Result<Digest> checksumFile(int fd, const std::function<bool(uint64_t)>& read_hook,
                            const std::string& rel, const std::string& display) {
  struct HashState {
    XXH3_state_t* s = XXH3_createState();
    ~HashState() { XXH3_freeState(s); }
  } hash;
  XXH3_64bits_reset(hash.s);
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  Digest d;
  for (;;) {
    if (read_hook && !read_hook(kChunk))
      return makeError(Errc::kBusy, "verify " + rel + ": cancelled");
    ssize_t n = ::pread(fd, buf.get(), kChunk, static_cast<off_t>(d.bytes));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      d.io_error = lastSysError(fmt::format("verify {}: read {}", rel, display));
      break;
    }
    if (n == 0) break;
    XXH3_64bits_update(hash.s, buf.get(), static_cast<size_t>(n));
    d.bytes += static_cast<uint64_t>(n);
  }
  d.checksum = XXH3_64bits_digest(hash.s);
  return d;
}

}  // namespace

Result<uint64_t> objectChecksum(int object_fd) {
  auto text = getXattr(object_fd, kXattrChecksum);
  uint64_t sum = 0;
  if (!text.ok() || !parseChecksum(*text, &sum)) {
    return makeError(Errc::kCorrupt,
                     std::string("cache object: no checksum (") + kXattrChecksum + ")");
  }
  return sum;
}

Validator validatorOf(const struct stat& st) {
  return Validator{static_cast<uint64_t>(st.st_size), timespecNs(st.st_mtim), timespecNs(st.st_ctim),
                   static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_dev)};
}

std::string toString(const Validator& v) {
  return fmt::format("size={} mtime_ns={} ctime_ns={} ino={} dev={}", v.size, v.mtime_ns,
                     v.ctime_ns, v.ino, v.dev);
}

bool servesFor(const Validator& copy, const Validator& now) {
  return copy.size == now.size && copy.mtime_ns == now.mtime_ns && copy.ctime_ns == now.ctime_ns;
}

Result<std::string> remoteIdOf(int remote_root_fd, const std::string& canonical_path) {
  // AT_STATX_DONT_SYNC: a check of the fd, not a question to a remote that may hang.
  struct statx stx {};
  if (::statx(remote_root_fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE, &stx) != 0) {
    return lastSysError("stat remote root " + canonical_path);
  }
  return canonical_path;
}

Status checkRelPath(const std::string& rel_path) {
  auto bad = [&](const char* why) {
    return makeError(Errc::kInvalidArgument, fmt::format("path \"{}\": {}", rel_path, why));
  };
  if (rel_path.empty()) return bad("empty");
  if (rel_path.front() == '/') return bad("must be relative to the remote root");
  if (rel_path.find('\0') != std::string::npos) return bad("contains NUL");
  size_t start = 0;
  while (start <= rel_path.size()) {
    size_t end = rel_path.find('/', start);
    if (end == std::string::npos) end = rel_path.size();
    std::string_view comp(rel_path.data() + start, end - start);
    if (comp.empty()) return bad("empty component");
    if (comp == "." || comp == "..") return bad("\".\" or \"..\" component");
    start = end + 1;
  }
  return Ok{};
}

// ---- cache disk health ------------------------------------------------------

bool CacheStore::isDiskFault(int err) {
  switch (err) {
    case EIO:
    case EROFS:
    case ENXIO:
    case ENODEV:
    case EUCLEAN:
    case EBADMSG:
    case EREMOTEIO:
      return true;
    default:
      return false;
  }
}

CacheStore::Health CacheStore::health() const {
  std::lock_guard lock(health_mu_);
  return health_;
}

void CacheStore::noteIoError(const Error& e) {
  if (!isDiskFault(e.sys_errno)) return;
  std::lock_guard lock(health_mu_);
  ++health_.faults;
  if (!health_.healthy) return;
  health_ = Health{.healthy = false, .reason = e.message, .since_ns = wallNs(),
                   .faults = health_.faults};
  healthy_.store(false, std::memory_order_release);
  spdlog::error("cache disk {} FAILED: {}; new opens go to the remote and promotions pause until "
                "it answers again (probed every second)",
                opts_.dir, e.message);
}

namespace {
// One probe of the cache disk: write, fsync, drop the pages, read back.
Status probeDisk(int tmp_fd, const std::string& display) {
  constexpr char kName[] = "health-probe";
  std::string block(4096, '\0');
  std::string stamp = fmt::format("hotshard health probe {}\n", wallNs());
  block.replace(0, stamp.size(), stamp);
  UniqueFd fd(::openat(tmp_fd, kName, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return lastSysError("health probe: create " + display);
  if (::pwrite(fd.get(), block.data(), block.size(), 0) != static_cast<ssize_t>(block.size()))
    return lastSysError("health probe: write " + display);
  if (::fsync(fd.get()) != 0) return lastSysError("health probe: fsync " + display);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_DONTNEED);  // the read below goes to the disk
  std::string back(block.size(), '\1');
  if (::pread(fd.get(), back.data(), back.size(), 0) != static_cast<ssize_t>(back.size()))
    return lastSysError("health probe: read " + display);
  if (back != block) return makeError(Errc::kCorrupt, "health probe: " + display + " reads back wrong");
  if (::unlinkat(tmp_fd, kName, 0) != 0) return lastSysError("health probe: unlink " + display);
  return Ok{};
}
}  // namespace

Status CacheStore::probeHealth() {
  Status s = probeDisk(tmp_fd_, opts_.dir + "/tmp/health-probe");
  if (!s.ok()) {
    noteIoError(s.error());
    return s;
  }
  {
    std::lock_guard lock(mu_);
    for (auto it = undead_.begin(); it != undead_.end();) {
      if (::unlinkat(objects_fd_, it->c_str(), 0) != 0 && errno != ENOENT) break;
      it = undead_.erase(it);
    }
  }
  std::lock_guard lock(health_mu_);
  if (!health_.healthy) {
    spdlog::warn("cache disk {} answers again (failed since {}: {}); serving copies and promoting "
                 "again",
                 opts_.dir, health_.since_ns / 1000000000, health_.reason);
    health_ = Health{.healthy = true, .since_ns = wallNs(), .faults = health_.faults};
    healthy_.store(true, std::memory_order_release);
  }
  return Ok{};
}

// ---------------------------------------------------------------------------

CacheStore::CacheStore(const CacheStoreOptions& options) : opts_(options) {}

CacheStore::~CacheStore() {
  for (int fd : {objects_fd_, tmp_fd_, lock_fd_, dir_fd_}) {
    if (fd >= 0) ::close(fd);
  }
}

Result<std::unique_ptr<CacheStore>> CacheStore::open(const CacheStoreOptions& options) {
  if (options.dir.empty()) return makeError(Errc::kInvalidArgument, "cache dir: empty path");
  if (options.capacity_bytes == 0)
    return makeError(Errc::kInvalidArgument, "cache " + options.dir + ": capacity must be > 0");
  if (options.remote_id.empty())
    return makeError(Errc::kInvalidArgument, "cache " + options.dir + ": empty remote id");
  if (!(options.low_watermark > 0 && options.low_watermark <= options.high_watermark &&
        options.high_watermark <= 1.0)) {
    return makeError(Errc::kInvalidArgument,
                     fmt::format("cache {}: watermarks must satisfy 0 < low ({}) <= high ({}) <= 1",
                                 options.dir, options.low_watermark, options.high_watermark));
  }
  std::unique_ptr<CacheStore> store(new CacheStore(options));
  RETURN_IF_ERROR(store->init());
  RETURN_IF_ERROR(store->recover());
  return store;
}

Status CacheStore::init() {
  const std::string& dir = opts_.dir;
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
    return lastSysError("create cache dir " + dir);
  dir_fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd_ < 0) return lastSysError("open cache dir " + dir);
  ASSIGN_OR_RETURN(bool fresh, checkFormat(dir_fd_, dir));
  ASSIGN_OR_RETURN(lock_fd_, takeLock(dir_fd_, dir));
  ASSIGN_OR_RETURN(objects_fd_, openSubdir(dir_fd_, dir, "objects"));
  ASSIGN_OR_RETURN(tmp_fd_, openSubdir(dir_fd_, dir, "tmp"));
  RETURN_IF_ERROR(checkXattrSupport(tmp_fd_, dir));
  if (fresh) {
    RETURN_IF_ERROR(writeFileAtomic(
        dir_fd_, "FORMAT", fmt::format("{}{}\n", kFormatMagic, kFormatVersion), dir + "/FORMAT"));
  }
  return Ok{};
}

Status CacheStore::recover() {
  BuryOnExit bury{this};
  const std::string& dir = opts_.dir;
  // In-flight promotions of a previous run can never be published.
  ASSIGN_OR_RETURN(uint64_t swept, sweepTmp(tmp_fd_, dir));
  stats_.recovery_tmp_swept += swept;

  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(pins_, readPins(dir_fd_, dir));
  ASSIGN_OR_RETURN(auto fans, listDir(objects_fd_, dir + "/objects"));
  for (const auto& fan : fans) {
    UniqueFd fan_fd(::openat(objects_fd_, fan.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fan_fd || fan.size() != 2 || !isHex(fan)) {
      spdlog::warn("cache {}: ignoring unexpected entry {}/objects/{}", dir, dir, fan);
      continue;
    }
    RETURN_IF_ERROR(recoverFanLocked(fan_fd.get(), fan));
  }
  groupLinksLocked();
  if (stats_.recovery_drops > 0 || stats_.recovery_tmp_swept > 0 || stats_.recovery_rekeyed > 0) {
    spdlog::info(
        "cache {}: recovered {} objects ({} bytes); dropped {}, swept {} tmp files, renamed {} "
        "from their path@st_dev key",
        dir, index_.size(), used_bytes_, stats_.recovery_drops, stats_.recovery_tmp_swept,
        stats_.recovery_rekeyed);
  }
  if (used_bytes_ > opts_.capacity_bytes * opts_.high_watermark) {
    evictLocked(static_cast<uint64_t>(opts_.capacity_bytes * opts_.low_watermark));
  }
  return Ok{};
}

// Indexes the objects of objects/<fan>; unlinks those that cannot be trusted.
Status CacheStore::recoverFanLocked(int fan_fd, const std::string& fan) {
  const std::string fan_display = opts_.dir + "/objects/" + fan;
  ASSIGN_OR_RETURN(auto names, listDir(fan_fd, fan_display));
  for (const auto& name : names) {
    DirtyFound dirty{.obj = fan + "/" + name};
    std::vector<std::string> listed;
    if (readDirtyMark(fan_fd, name, &listed, &dirty.base)) {
      // The name it holds writes for: the only one listed, or the one whose
      // key names this file (a shared object adopted through one name).
      if (listed.size() == 1) dirty.rel_path = listed[0];
      for (const auto& p : listed) {
        if (listed.size() > 1 && keyOf(p) == fan + name) dirty.rel_path = p;
      }
      dirty_found_.push_back(std::move(dirty));  // not indexed: recoverDirty()
      continue;
    }
    auto obj = readObjectFile(fan_fd, name);
    std::string rel, key, why;
    if (obj.ok()) {
      // Which of the listed names this file is (a shared object has one
      // file name per listed path; a name a crash left unlinked is skipped).
      for (const auto& p : obj->paths) {
        if (fan + name == keyOf(p) || fan + name == legacyKeyOf(p, obj->validator.dev)) rel = p;
      }
      auto known = index_.find(rel);
      if (!rel.empty() && known != index_.end() && known->second.key == fan + name)
        continue;  // re-keyed here
    }
    if (!obj.ok()) {
      why = obj.error().message;
    } else if (rel.empty()) {
      why = "name does not match its path's key (another remote, or garbled)";
    } else if (static_cast<uint64_t>(obj->st.st_size) != obj->validator.size) {
      why = fmt::format("size {} but its remote had {}", obj->st.st_size, obj->validator.size);
    } else if (index_.count(rel) != 0) {
      why = "duplicate";
    } else if (fan + name != (key = keyOf(rel)) && !rekeyLocked(fan_fd, name, key)) {
      why = "cannot rename it from its former \"path@st_dev\" key";
    }
    if (!why.empty()) {
      spdlog::warn("cache: dropping object {}/{}: {}", fan_display, name, why);
      if (::unlinkat(fan_fd, name.c_str(), 0) != 0 && errno != ENOENT)
        spdlog::error("cache: unlink {}/{}: {}", fan_display, name, std::strerror(errno));
      ++stats_.recovery_drops;
      continue;
    }
    Entry e;
    e.key = std::move(key);
    e.validator = obj->validator;
    e.checksum = obj->checksum;
    e.allocated = static_cast<uint64_t>(obj->st.st_blocks) * 512;
    e.last_open_ns = timespecNs(obj->st.st_atim);
    e.serial = next_serial_++;
    e.obj_ino = static_cast<uint64_t>(obj->st.st_ino);
    used_bytes_ += e.allocated;  // once per object file: groupLinksLocked()
    indexLocked(rel, std::move(e));
  }
  return Ok{};
}

// Names whose files are links of one inode (objects/ is one file system)
// share it: a group, counted once.
void CacheStore::groupLinksLocked() {
  std::unordered_map<uint64_t, std::vector<std::string>> by_ino;
  for (const auto& [path, e] : index_) by_ino[e.obj_ino].push_back(path);
  for (auto& [ino, names] : by_ino) {
    if (names.size() < 2) continue;
    std::sort(names.begin(), names.end());
    uint64_t extra = (names.size() - 1) * index_.at(names[0]).allocated;
    used_bytes_ -= std::min(used_bytes_, extra);
    links_[ino] = std::move(names);
  }
}

namespace {
std::string hashKey(const std::string& remote_id, const std::string& rel_path) {
  std::string input;
  input.reserve(remote_id.size() + 1 + rel_path.size());
  input.append(remote_id).push_back('\0');
  input.append(rel_path);
  XXH128_hash_t h = XXH3_128bits(input.data(), input.size());
  return fmt::format("{:016x}{:016x}", h.high64, h.low64);
}
}  // namespace

std::string CacheStore::keyOf(const std::string& rel_path) const {
  return hashKey(opts_.remote_id, rel_path);
}

std::string CacheStore::legacyKeyOf(const std::string& rel_path, uint64_t dev) const {
  return hashKey(fmt::format("{}@{}", opts_.remote_id, dev), rel_path);
}

// A copy named under the former key of this remote's path is the same copy:
// it keeps its validator, which servesFor() checks on every open as for any
// other copy, so re-keying never serves anything stale.
bool CacheStore::rekeyLocked(int fan_fd, const std::string& name, const std::string& key) {
  std::string fan = key.substr(0, 2), to = fan + "/" + key.substr(2);
  if (makeFanDir(objects_fd_, fan, name, opts_.dir).ok() &&
      ::renameat(fan_fd, name.c_str(), objects_fd_, to.c_str()) == 0 && ::fsync(fan_fd) == 0) {
    UniqueFd to_fan(::openat(objects_fd_, fan.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (to_fan && ::fsync(to_fan.get()) == 0) {
      ++stats_.recovery_rekeyed;
      return true;
    }
  }
  spdlog::warn("cache {}: rename object {} to objects/{}: {}", opts_.dir, name, to,
               std::strerror(errno));
  return false;
}

std::string CacheStore::objectPathFor(const std::string& rel_path) const {
  std::string key = keyOf(rel_path);
  return "objects/" + key.substr(0, 2) + "/" + key.substr(2);
}

// ---- FUSE layer -------------------------------------------------------------

Result<int> CacheStore::openIfValid(const std::string& rel_path, const Validator& current) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  auto it = index_.find(rel_path);
  if (it == index_.end()) return makeError(Errc::kNotFound, "not cached: " + rel_path);
  if (!healthy()) {
    return makeError(Errc::kIo, fmt::format("cached copy of {} unusable: cache disk {} failed",
                                            rel_path, opts_.dir));
  }
  if (!servesFor(it->second.validator, current)) {
    ++stats_.stale_drops;
    dropLocked(rel_path, "stale");
    return makeError(Errc::kStale, "cached copy of " + rel_path + " is stale; dropped");
  }
  std::string obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  int fd = ::openat(objects_fd_, obj.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    Error err =
        lastSysError(fmt::format("open cached copy {}/objects/{} of {}", opts_.dir, obj, rel_path));
    if (err.sys_errno == ENOENT) dropLocked(rel_path, "vanished");
    noteIoError(err);
    return err;
  }
  it->second.last_open_ns = wallNs();
  ++opens_[rel_path];
  return fd;
}

bool CacheStore::reopenIfValid(const std::string& rel_path, const Validator& current,
                               const struct stat& copy) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  auto it = index_.find(rel_path);
  if (it == index_.end()) return false;
  if (!(it->second.validator == current)) {
    ++stats_.stale_drops;
    dropLocked(rel_path, "stale");
    return false;
  }
  std::string obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  struct stat st;
  if (::fstatat(objects_fd_, obj.c_str(), &st, AT_SYMLINK_NOFOLLOW) < 0 ||
      st.st_dev != copy.st_dev || st.st_ino != copy.st_ino) {
    return false;  // replaced since (its drop was reported), or gone: open it afresh
  }
  it->second.last_open_ns = wallNs();
  ++opens_[rel_path];
  return true;
}

void CacheStore::setDropListener(DropListener listener) {
  std::unique_lock lock(listener_mu_);
  drop_listener_ = std::move(listener);
}

void CacheStore::release(const std::string& rel_path) {
  std::lock_guard lock(mu_);
  auto it = opens_.find(rel_path);
  if (it == opens_.end()) return;
  if (--it->second <= 0) opens_.erase(it);
}

bool CacheStore::isOpenLocked(const std::string& rel_path) const {
  return opens_.count(rel_path) != 0;
}

Status CacheStore::invalidate(const std::string& rel_path) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  invalidateLocked(rel_path);
  return Ok{};
}

void CacheStore::invalidateLocked(const std::string& rel_path) {
  bool did = false;
  auto fl = in_flight_.find(rel_path);
  if (fl != in_flight_.end()) {
    ++fl->second.generation;
    did = true;
  }
  if (index_.count(rel_path) != 0) {
    dropLocked(rel_path, "invalidated");
    did = true;
  }
  if (did) ++stats_.invalidations;
}

Status CacheStore::beginWrite(const std::string& rel_path) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  ++writers_[rel_path];
  invalidateLocked(rel_path);
  return Ok{};
}

void CacheStore::endWrite(const std::string& rel_path) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  auto it = writers_.find(rel_path);
  if (it != writers_.end() && --it->second <= 0) writers_.erase(it);
  // Writes may have landed up to the close: whatever started meanwhile is
  // fenced (it could not start, but a copy is cheap to refuse twice).
  invalidateLocked(rel_path);
}

Status CacheStore::invalidateTree(const std::string& rel_dir) {
  BuryOnExit bury{this};
  RETURN_IF_ERROR(checkRelPath(rel_dir));
  const std::string prefix = rel_dir + "/";
  auto under = [&](const std::string& p) { return p == rel_dir || p.rfind(prefix, 0) == 0; };
  std::lock_guard lock(mu_);
  bool did = false;
  for (auto& [path, fl] : in_flight_) {
    if (under(path)) {
      ++fl.generation;
      did = true;
    }
  }
  std::vector<std::string> doomed;
  for (const auto& [path, e] : index_) {
    if (under(path)) doomed.push_back(path);
  }
  for (const auto& path : doomed) dropLocked(path, "invalidated");
  if (did || !doomed.empty()) ++stats_.invalidations;
  return Ok{};
}

void CacheStore::indexLocked(const std::string& rel_path, Entry e) {
  by_remote_.emplace(std::make_pair(e.validator.dev, e.validator.ino), rel_path);
  index_[rel_path] = std::move(e);
}

void CacheStore::unindexLocked(std::unordered_map<std::string, Entry>::iterator it) {
  auto [from, to] =
      by_remote_.equal_range(std::make_pair(it->second.validator.dev, it->second.validator.ino));
  for (auto r = from; r != to; ++r) {
    if (r->second == it->first) {
      by_remote_.erase(r);
      break;
    }
  }
  index_.erase(it);
}

const std::vector<std::string>* CacheStore::linksOfLocked(const std::string& rel_path,
                                                          const Entry& e) const {
  auto l = links_.find(e.obj_ino);
  if (l == links_.end()) return nullptr;
  // An inode number is only reused once its file is gone, and a group goes
  // with its last name; checking membership all the same costs little.
  bool member = std::find(l->second.begin(), l->second.end(), rel_path) != l->second.end();
  return member ? &l->second : nullptr;
}

bool CacheStore::groupHeldLocked(const std::string& rel_path, const Entry& e, bool open) const {
  auto held = [&](const std::string& p) {
    return pins_.count(p) != 0 || (open && isOpenLocked(p));
  };
  const std::vector<std::string>* group = linksOfLocked(rel_path, e);
  if (group == nullptr) return held(rel_path);
  return std::any_of(group->begin(), group->end(), held);
}

void CacheStore::dropLocked(const std::string& rel_path, const char* why, std::string* left) {
  auto it = index_.find(rel_path);
  if (it == index_.end()) return;
  uint64_t allocated = it->second.allocated;
  std::vector<std::string> names{rel_path};
  if (linksOfLocked(rel_path, it->second) != nullptr) {
    auto l = links_.find(it->second.obj_ino);
    names = std::move(l->second);
    links_.erase(l);
  }
  for (const auto& name : names) dropNameLocked(name, why, left);
  used_bytes_ -= std::min(used_bytes_, allocated);  // the object file, once
}

void CacheStore::dropNameLocked(const std::string& rel_path, const char* why, std::string* left) {
  auto it = index_.find(rel_path);
  if (it == index_.end()) return;
  std::string obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  // Out of objects/ at once (a rename is quick), unlinked later by buryDead()
  // without the lock; a crash in between leaves it to the tmp/ sweep.
  std::string dead = fmt::format("dead.{}", next_serial_++);
  if (::renameat(objects_fd_, obj.c_str(), tmp_fd_, dead.c_str()) == 0) {
    graveyard_.push_back(std::move(dead));
  } else if (errno != ENOENT && ::unlinkat(objects_fd_, obj.c_str(), 0) != 0 && errno != ENOENT) {
    Error err = lastSysError(fmt::format("drop {} ({}): unlink {}/objects/{}", rel_path, why,
                                         opts_.dir, obj));
    spdlog::error("cache: {}; left on disk, never served, unlinked when the disk answers again",
                  err.message);
    noteIoError(err);
    undead_.insert(obj);
    if (left != nullptr) *left = err.message;
  }
  unindexLocked(it);
  dropped_.push_back(rel_path);
  if (eviction_order_set_) removed_.push_back(rel_path);
}

void CacheStore::buryDead() {
  std::vector<std::string> dead, dropped;
  {
    std::lock_guard lock(mu_);
    dead.swap(graveyard_);
    dropped.swap(dropped_);
  }
  for (const auto& name : dead) {
    if (::unlinkat(tmp_fd_, name.c_str(), 0) != 0 && errno != ENOENT) {
      Error err = lastSysError(fmt::format("unlink {}/tmp/{}", opts_.dir, name));
      spdlog::warn("cache: {}", err.message);
      noteIoError(err);
    }
  }
  if (dropped.empty()) return;
  std::shared_lock lock(listener_mu_);
  if (drop_listener_) drop_listener_(dropped);
}

CacheStore::ObjectInfo CacheStore::info(const std::string& rel_path) const {
  std::lock_guard lock(mu_);
  bool pinned = pins_.count(rel_path) != 0;
  auto it = index_.find(rel_path);
  if (it != index_.end()) {
    const std::vector<std::string>* group = linksOfLocked(rel_path, it->second);
    return ObjectInfo{State::kCached, pinned, it->second.validator.size,
                      group == nullptr ? 1 : group->size()};
  }
  if (in_flight_.count(rel_path) != 0) return ObjectInfo{State::kPromoting, pinned, 0};
  return ObjectInfo{State::kRemote, pinned, 0};
}

bool CacheStore::isCached(const std::string& rel_path, const Validator& v) const {
  std::lock_guard lock(mu_);
  auto it = index_.find(rel_path);
  return it != index_.end() && servesFor(it->second.validator, v);
}

Status CacheStore::pin(const std::string& rel_path, bool pinned) {
  RETURN_IF_ERROR(checkRelPath(rel_path));
  std::lock_guard lock(mu_);
  bool had = pins_.count(rel_path) != 0;
  if (had == pinned) return Ok{};
  if (pinned) {
    pins_.insert(rel_path);
  } else {
    pins_.erase(rel_path);
  }
  Status s = savePinsLocked();
  if (!s.ok()) {  // keep memory and disk in agreement
    if (pinned) {
      pins_.erase(rel_path);
    } else {
      pins_.insert(rel_path);
    }
  }
  return s;
}

Status CacheStore::savePinsLocked() {
  std::vector<std::string> sorted(pins_.begin(), pins_.end());
  std::sort(sorted.begin(), sorted.end());
  std::string content;
  for (const auto& p : sorted) content.append(p).push_back('\0');
  Status s = writeFileAtomic(dir_fd_, "pins", content, opts_.dir + "/pins");
  if (!s.ok()) noteIoError(s.error());
  return s;
}

CacheStore::Stats CacheStore::stats() const {
  std::lock_guard lock(mu_);
  Stats s = stats_;
  s.used_bytes = used_bytes_;
  s.capacity_bytes = opts_.capacity_bytes;
  s.objects = index_.size();
  s.promotions_in_flight = in_flight_.size();
  s.reserved_bytes = reserved_bytes_;
  s.high_watermark = opts_.high_watermark;
  s.low_watermark = opts_.low_watermark;
  s.adopted_objects = adopted_.size();
  s.pinned_objects = 0;
  for (const auto& p : pins_) s.pinned_objects += index_.count(p);
  return s;
}

// ---- promoter -----------------------------------------------------------------

CacheStore::Pending::~Pending() {
  if (store_ != nullptr && !done_) store_->abandon(*this);
}

void CacheStore::abandon(Pending& p) {
  if (p.fd_ >= 0) ::close(p.fd_);
  p.fd_ = -1;
  if (::unlinkat(tmp_fd_, p.tmp_name_.c_str(), 0) != 0 && errno != ENOENT) {
    Error err = lastSysError("remove " + p.tmp_display_);
    spdlog::error("cache: {}", err.message);
    noteIoError(err);
  }
  p.done_ = true;
  std::lock_guard lock(mu_);
  reserved_bytes_ -= std::min(reserved_bytes_, std::exchange(p.reserved_, 0));
  auto it = in_flight_.find(p.rel_path_);
  if (it != in_flight_.end() && it->second.token == reinterpret_cast<uintptr_t>(&p))
    in_flight_.erase(it);
}

Result<std::unique_ptr<CacheStore::Pending>> CacheStore::beginPromotion(const std::string& rel_path,
                                                                        uint64_t expected_size,
                                                                        bool direct_io) {
  BuryOnExit bury{this};
  RETURN_IF_ERROR(checkRelPath(rel_path));
  std::unique_ptr<Pending> p(new Pending());
  p->store_ = this;
  p->rel_path_ = rel_path;
  {
    std::lock_guard lock(mu_);
    if (expected_size > opts_.capacity_bytes * opts_.high_watermark) {
      return makeError(Errc::kNoSpace,
                       fmt::format("promote {}: {} bytes can never fit in cache {} ({} bytes at "
                                   "high watermark {})",
                                   rel_path, expected_size, opts_.dir, opts_.capacity_bytes,
                                   opts_.high_watermark));
    }
    if (!healthy()) {
      return makeError(Errc::kIo, fmt::format("promote {}: cache disk {} failed; promotions "
                                              "paused until it answers again",
                                              rel_path, opts_.dir));
    }
    if (in_flight_.count(rel_path) != 0) {
      return makeError(Errc::kBusy, "promote " + rel_path + ": already in flight");
    }
    if (writers_.count(rel_path) != 0 || adopted_.count(rel_path) != 0) {
      return makeError(Errc::kBusy, "promote " + rel_path + ": open for writing through the mount");
    }
    // Room for the copy is made (and reserved) now, not after copying it.
    uint64_t reserve = (expected_size + 4095) / 4096 * 4096;
    std::string why;
    if (!makeRoomLocked(reserve, &why).ok()) {
      return makeError(Errc::kNoSpace,
                       fmt::format("promote {}: cache {} full: {}", rel_path, opts_.dir, why));
    }
    reserved_bytes_ += reserve;
    p->reserved_ = reserve;
    InFlight& fl = in_flight_[rel_path];
    fl.token = reinterpret_cast<uintptr_t>(p.get());
    p->generation_ = fl.generation;
    p->tmp_name_ = fmt::format("{}.{}", keyOf(rel_path), next_serial_++);
  }
  p->tmp_display_ = opts_.dir + "/tmp/" + p->tmp_name_;
  int flags = O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC;
  int fd = direct_io ? ::openat(tmp_fd_, p->tmp_name_.c_str(), flags | O_DIRECT, 0600) : -1;
  if (fd >= 0) {
    p->direct_ = true;
  } else {
    fd = ::openat(tmp_fd_, p->tmp_name_.c_str(), flags, 0600);
  }
  if (fd < 0) {
    Error err = lastSysError(fmt::format("promote {}: create {}", rel_path, p->tmp_display_));
    noteIoError(err);
    p->done_ = true;
    std::lock_guard lock(mu_);
    in_flight_.erase(rel_path);
    reserved_bytes_ -= std::min(reserved_bytes_, p->reserved_);
    return err;
  }
  p->fd_ = fd;
  // The path xattr first, before any byte is copied: a path longer than the
  // cache file system keeps in an xattr can never be an object.
  Status labelled = labelTmpFile(fd, rel_path, p->tmp_display_, opts_.dir);
  if (!labelled.ok()) {
    noteIoError(labelled.error());
    return labelled.takeError();
  }
  return p;
}

Status CacheStore::publish(std::unique_ptr<Pending> p, const Validator& v, uint64_t checksum) {
  Status s = publishSteps(std::move(p), v, checksum);
  if (!s.ok()) noteIoError(s.error());
  return s;
}

Status CacheStore::publishSteps(std::unique_ptr<Pending> p, const Validator& v,
                                uint64_t checksum) {
  BuryOnExit bury{this};
  const std::string& rel = p->rel_path_;
  // Every early return below destroys `p`, which removes the tmp file.
  ASSIGN_OR_RETURN(Sealed sealed, sealTmpFile(p->fd_, rel, p->tmp_display_, v, checksum));
  std::string key = keyOf(rel);
  std::string fan = key.substr(0, 2);
  RETURN_IF_ERROR(makeFanDir(objects_fd_, fan, rel, opts_.dir));
  {
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(commitLocked(*p, key, v, checksum, sealed.allocated, sealed.ino));
  }
  ::close(p->fd_);
  p->fd_ = -1;
  p->done_ = true;
  // Durability of the name. The object is already complete and served; if
  // this fails, a crash may forget it, which is harmless for a cache.
  UniqueFd fan_fd(::openat(objects_fd_, fan.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fan_fd.get() < 0 || ::fsync(fan_fd.get()) != 0) {
    spdlog::warn("cache: fsync {}/objects/{} after publishing {}: {}", opts_.dir, fan, rel,
                 std::strerror(errno));
  }
  return Ok{};
}

// Renames the sealed tmp file into objects/ and indexes it, unless the path
// was invalidated since beginPromotion or no room can be made for it.
Status CacheStore::commitLocked(Pending& p, const std::string& key, const Validator& v,
                                uint64_t checksum, uint64_t allocated, uint64_t obj_ino) {
  const std::string& rel = p.rel_path_;
  auto fl = in_flight_.find(rel);
  if (fl == in_flight_.end() || fl->second.token != reinterpret_cast<uintptr_t>(&p) ||
      fl->second.generation != p.generation_ || adopted_.count(rel) != 0) {
    return makeError(Errc::kStale, fmt::format("promote {}: invalidated (written, renamed or "
                                               "unlinked through the mount) while copying; not "
                                               "published",
                                               rel));
  }
  // A previous copy of the same path (stale, not yet dropped) is replaced.
  if (index_.count(rel) != 0) dropLocked(rel, "replaced");
  // The reservation becomes the real allocation (usually the same).
  reserved_bytes_ -= std::min(reserved_bytes_, std::exchange(p.reserved_, 0));
  std::string why;
  if (!makeRoomLocked(allocated, &why).ok()) {
    return makeError(Errc::kNoSpace,
                     fmt::format("promote {}: cache {} full: {}", rel, opts_.dir, why));
  }
  std::string obj = key.substr(0, 2) + "/" + key.substr(2);
  undead_.erase(obj);  // the rename below replaces a copy a drop could not unlink
  if (::renameat(tmp_fd_, p.tmp_name_.c_str(), objects_fd_, obj.c_str()) != 0) {
    return lastSysError(
        fmt::format("promote {}: rename {} to {}/objects/{}", rel, p.tmp_display_, opts_.dir, obj));
  }
  Entry e;
  e.key = key;
  e.validator = v;
  e.checksum = checksum;
  e.allocated = allocated;
  e.last_open_ns = wallNs();
  e.serial = next_serial_++;
  e.obj_ino = obj_ino;
  used_bytes_ += allocated;
  indexLocked(rel, std::move(e));
  in_flight_.erase(fl);
  ++stats_.published;
  return Ok{};
}

// ---- hard links -------------------------------------------------------------------

struct CacheStore::LinkPlan {
  std::string rel, key, obj;         // the name to cache, its key, its objects/ab/cdef...
  std::string sibling, sibling_obj;  // the cached name whose object it shares
  uint64_t sibling_serial = 0, obj_ino = 0;
  uint64_t generation = 0, token = 0;  // its in_flight_ record, as a promotion's
  std::string tmp_name;                // tmp/link.<n>: the new link until its rename
};

Status CacheStore::linkCopy(const std::string& rel_path, const Validator& v) {
  BuryOnExit bury{this};  // declared first: runs after both locks are released
  RETURN_IF_ERROR(checkRelPath(rel_path));
  std::lock_guard link_lock(link_mu_);
  LinkPlan plan;
  {
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(planLinkLocked(rel_path, v, &plan));
  }
  Status linked = linkObjectFile(plan);
  if (linked.ok()) {
    std::lock_guard lock(mu_);
    linked = commitLinkLocked(plan);
  }
  if (!linked.ok()) {
    if (!plan.tmp_name.empty()) ::unlinkat(tmp_fd_, plan.tmp_name.c_str(), 0);  // if made
    noteIoError(linked.error());
    std::lock_guard lock(mu_);
    auto fl = in_flight_.find(rel_path);
    if (fl != in_flight_.end() && fl->second.token == plan.token) in_flight_.erase(fl);
    return linked;
  }
  // Durability of the new name, as publish(): a crash that forgets it loses
  // a name, never a byte.
  std::string fan = plan.key.substr(0, 2);
  UniqueFd fan_fd(::openat(objects_fd_, fan.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fan_fd.get() < 0 || ::fsync(fan_fd.get()) != 0) {
    spdlog::warn("cache: fsync {}/objects/{} after linking {}: {}", opts_.dir, fan, rel_path,
                 std::strerror(errno));
  }
  return Ok{};
}

// The sibling to share with, and rel_path marked in flight (invalidate()
// fences it as it fences a promotion).
Status CacheStore::planLinkLocked(const std::string& rel, const Validator& v, LinkPlan* plan) {
  if (!healthy()) {
    return makeError(Errc::kIo, fmt::format("link {}: cache disk {} failed; promotions paused "
                                            "until it answers again",
                                            rel, opts_.dir));
  }
  if (in_flight_.count(rel) != 0 || writers_.count(rel) != 0 || adopted_.count(rel) != 0)
    return makeError(Errc::kBusy, "link " + rel + ": being promoted or written through the mount");
  if (auto it = index_.find(rel); it != index_.end() && it->second.validator == v)
    return makeError(Errc::kBusy, "link " + rel + ": already cached");
  auto [from, to] = by_remote_.equal_range(std::make_pair(v.dev, v.ino));
  for (auto r = from; r != to && plan->sibling.empty(); ++r) {
    const Entry& e = index_.at(r->second);
    if (r->second == rel || !(e.validator == v)) continue;
    plan->sibling = r->second;
    plan->sibling_obj = e.key.substr(0, 2) + "/" + e.key.substr(2);
    plan->sibling_serial = e.serial;
    plan->obj_ino = e.obj_ino;
  }
  if (plan->sibling.empty()) {
    return makeError(Errc::kNotFound,
                     fmt::format("link {}: no hard link of it is cached from {}", rel, toString(v)));
  }
  plan->rel = rel;
  plan->key = keyOf(rel);
  plan->obj = plan->key.substr(0, 2) + "/" + plan->key.substr(2);
  InFlight& fl = in_flight_[rel];
  fl.token = plan->token = next_serial_++;  // never a Pending's address
  plan->generation = fl.generation;
  plan->tmp_name = fmt::format("link.{}", next_serial_++);
  return Ok{};
}

// Without mu_ (an fsync): the sibling's object lists rel in its path xattr,
// durably, before tmp/<link> names it; a crash before the rename leaves the
// list naming a file that does not exist, which recover() ignores.
Status CacheStore::linkObjectFile(const LinkPlan& plan) {
  const std::string& rel = plan.rel;
  const std::string display = opts_.dir + "/objects/" + plan.sibling_obj;
  RETURN_IF_ERROR(makeFanDir(objects_fd_, plan.key.substr(0, 2), rel, opts_.dir));
  UniqueFd fd(::openat(objects_fd_, plan.sibling_obj.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || static_cast<uint64_t>(st.st_ino) != plan.obj_ino) {
    return makeError(Errc::kStale,
                     fmt::format("link {}: {} (the copy of {}) left the cache meanwhile", rel,
                                 display, plan.sibling));
  }
  auto listed = getXattr(fd.get(), kXattrPath);
  if (!listed.ok()) {
    return sysError(listed.error().sys_errno,
                    fmt::format("link {}: getxattr {} on {}", rel, kXattrPath, display));
  }
  std::vector<std::string> paths = splitPathList(*listed);
  if (std::find(paths.begin(), paths.end(), rel) == paths.end()) paths.push_back(rel);
  std::string value = joinPathList(paths);
  if (::fsetxattr(fd.get(), kXattrPath, value.data(), value.size(), 0) != 0) {
    int err = errno;
    if (xattrTooLong(fd.get(), err)) {
      return Error{Errc::kNotFound, err,
                   fmt::format("link {}: {} names would be longer ({} bytes) than an xattr of the "
                               "cache's file system holds; it gets a copy of its own",
                               rel, paths.size(), value.size())};
    }
    return sysError(err, fmt::format("link {}: setxattr {} on {}", rel, kXattrPath, display));
  }
  if (::fsync(fd.get()) != 0) return lastSysError(fmt::format("link {}: fsync {}", rel, display));
  if (::linkat(objects_fd_, plan.sibling_obj.c_str(), tmp_fd_, plan.tmp_name.c_str(), 0) != 0) {
    return lastSysError(
        fmt::format("link {}: link {} to {}/tmp/{}", rel, display, opts_.dir, plan.tmp_name));
  }
  return Ok{};
}

// The new link becomes rel's object and rel joins the sibling's group, unless
// rel was invalidated or the sibling left since planLinkLocked().
Status CacheStore::commitLinkLocked(const LinkPlan& plan) {
  const std::string& rel = plan.rel;
  auto fl = in_flight_.find(rel);
  if (fl == in_flight_.end() || fl->second.token != plan.token ||
      fl->second.generation != plan.generation) {
    return makeError(Errc::kStale, fmt::format("link {}: invalidated (written, renamed or unlinked "
                                               "through the mount) meanwhile; not linked",
                                               rel));
  }
  auto sib = index_.find(plan.sibling);
  if (sib == index_.end() || sib->second.serial != plan.sibling_serial) {
    return makeError(Errc::kStale,
                     fmt::format("link {}: {} left the cache meanwhile; not linked", rel,
                                 plan.sibling));
  }
  // A stale copy of rel (never in the sibling's group: its validator differs).
  if (index_.count(rel) != 0) dropLocked(rel, "replaced");
  undead_.erase(plan.obj);  // the rename below replaces a copy a drop could not unlink
  if (::renameat(tmp_fd_, plan.tmp_name.c_str(), objects_fd_, plan.obj.c_str()) != 0) {
    return lastSysError(fmt::format("link {}: rename {}/tmp/{} to {}/objects/{}", rel, opts_.dir,
                                    plan.tmp_name, opts_.dir, plan.obj));
  }
  Entry e = index_.at(plan.sibling);
  e.key = plan.key;
  e.serial = next_serial_++;
  e.last_open_ns = wallNs();
  std::vector<std::string>& group = links_[e.obj_ino];
  if (group.empty()) group.push_back(plan.sibling);
  group.push_back(rel);
  indexLocked(rel, std::move(e));  // no bytes: the sibling's are counted
  in_flight_.erase(fl);
  ++stats_.linked;
  return Ok{};
}

// ---- capacity -------------------------------------------------------------------

Status CacheStore::makeRoomLocked(uint64_t incoming, std::string* why) {
  double cap = static_cast<double>(opts_.capacity_bytes);
  // Promotions in flight hold reservations: count them as used.
  uint64_t extra = incoming + reserved_bytes_;
  if (static_cast<double>(used_bytes_ + extra) <= cap * opts_.high_watermark) return Ok{};
  uint64_t low = static_cast<uint64_t>(cap * opts_.low_watermark);
  uint64_t target = low > extra ? low - extra : 0;
  evictLocked(target);
  if (static_cast<double>(used_bytes_ + extra) <= cap * opts_.high_watermark) return Ok{};
  *why = fmt::format(
      "{} bytes used + {} reserved by promotions in flight + {} incoming exceeds "
      "the high watermark ({} of {} bytes) and the rest is pinned or open",
      used_bytes_, reserved_bytes_, incoming, opts_.high_watermark, opts_.capacity_bytes);
  return makeError(Errc::kNoSpace, *why);
}

uint64_t CacheStore::evictLocked(uint64_t target_used) {
  if (used_bytes_ <= target_used) return 0;
  struct Candidate {
    size_t rank;  // place in the policy's order; unnamed ones after every named one
    int64_t last_open_ns;
    const std::string* path;
  };
  std::vector<Candidate> candidates;
  auto rankOf = [&](const std::string& path) {
    auto r = eviction_rank_.find(path);
    return r == eviction_rank_.end() ? SIZE_MAX : r->second;
  };
  for (const auto& [path, e] : index_) {
    if (groupHeldLocked(path, e, true)) continue;
    Candidate c{rankOf(path), e.last_open_ns, &path};
    // A shared object goes as late as its hottest name would.
    if (const std::vector<std::string>* group = linksOfLocked(path, e)) {
      for (const auto& name : *group) {
        c.rank = std::max(c.rank, rankOf(name));
        c.last_open_ns = std::max(c.last_open_ns, index_.at(name).last_open_ns);
      }
    }
    candidates.push_back(c);
  }
  std::sort(candidates.begin(), candidates.end(), [](const auto& a, const auto& b) {
    return a.rank != b.rank ? a.rank < b.rank : a.last_open_ns < b.last_open_ns;
  });
  std::vector<std::string> order;  // copied: dropLocked() erases the index entries
  for (const auto& c : candidates) order.push_back(*c.path);
  uint64_t freed = 0;
  for (const auto& path : order) {
    if (used_bytes_ <= target_used) break;
    uint64_t before = used_bytes_;
    dropLocked(path, "evicted");
    freed += before - used_bytes_;
    ++stats_.evictions;
  }
  return freed;
}

std::vector<std::string> CacheStore::updateEvictionOrder(
    const std::vector<std::string>& coldest_first) {
  std::unordered_map<std::string, size_t> rank;
  rank.reserve(coldest_first.size());
  for (size_t i = 0; i < coldest_first.size(); ++i) rank.emplace(coldest_first[i], i);
  std::lock_guard lock(mu_);
  eviction_rank_ = std::move(rank);
  eviction_order_set_ = true;
  return std::exchange(removed_, {});
}

void CacheStore::clearEvictionOrder() {
  std::lock_guard lock(mu_);
  eviction_rank_.clear();
  eviction_order_set_ = false;
  removed_.clear();
}

uint64_t CacheStore::enforceWatermarks() {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  double cap = static_cast<double>(opts_.capacity_bytes);
  if (static_cast<double>(used_bytes_) <= cap * opts_.high_watermark) return 0;
  return evictLocked(static_cast<uint64_t>(cap * opts_.low_watermark));
}

void CacheStore::setCapacity(uint64_t capacity_bytes) {
  {
    std::lock_guard lock(mu_);
    opts_.capacity_bytes = capacity_bytes;
  }
  enforceWatermarks();
}

Status CacheStore::evict(const std::string& rel_path) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  auto it = index_.find(rel_path);
  if (it == index_.end()) return makeError(Errc::kNotFound, "not cached: " + rel_path);
  if (groupHeldLocked(rel_path, it->second, false)) {
    return makeError(Errc::kBusy, "evict " + rel_path + ": pinned, or shares its copy with a "
                                  "pinned hard link; unpin it first");
  }
  dropLocked(rel_path, "evicted");
  ++stats_.evictions;
  return Ok{};
}

Status CacheStore::evictIdle(const std::string& rel_path) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  auto it = index_.find(rel_path);
  if (it == index_.end()) return makeError(Errc::kNotFound, "not cached: " + rel_path);
  if (pins_.count(rel_path) != 0) return makeError(Errc::kBusy, "evict " + rel_path + ": pinned");
  if (isOpenLocked(rel_path)) return makeError(Errc::kBusy, "evict " + rel_path + ": open");
  if (groupHeldLocked(rel_path, it->second, true)) {
    return makeError(Errc::kBusy,
                     "evict " + rel_path + ": shares its copy with a pinned or open hard link");
  }
  dropLocked(rel_path, "evicted");
  ++stats_.evictions;
  return Ok{};
}

// ---- verify -----------------------------------------------------------------------

struct CacheStore::VerifyTarget {
  uint64_t serial = 0, expected = 0;
  std::string display;  // <cache dir>/objects/ab/cdef...
  UniqueFd fd;
  bool in_use = false;
};

Status CacheStore::verify(const std::string& rel_path,
                          const std::function<bool(uint64_t)>& read_hook) {
  BuryOnExit bury{this};
  VerifyTarget t;
  {
    std::lock_guard lock(mu_);
    RETURN_IF_ERROR(openForVerifyLocked(rel_path, &t));
  }
  ASSIGN_OR_RETURN(Digest d, checksumFile(t.fd.get(), read_hook, rel_path, t.display));
  // A scrub must not fill the page cache at the jobs' expense; but pages of
  // a copy being read right now are the jobs' own.
  if (!t.in_use) ::posix_fadvise(t.fd.get(), 0, 0, POSIX_FADV_DONTNEED);

  std::lock_guard lock(mu_);
  auto it = index_.find(rel_path);
  if (it == index_.end() || it->second.serial != t.serial) return Ok{};  // replaced meanwhile
  if (!d.io_error.ok()) {
    noteIoError(d.io_error.error());
    std::string left;
    dropLocked(rel_path, "unreadable", &left);
    ++stats_.corrupt_drops;
    if (left.empty()) return d.io_error;
    return Error{d.io_error.error().code, d.io_error.error().sys_errno,
                 d.io_error.error().message + "; dropped from the index, but " + left};
  }
  if (d.checksum != t.expected || d.bytes != it->second.validator.size) {
    std::string left;
    dropLocked(rel_path, "checksum mismatch", &left);
    ++stats_.corrupt_drops;
    spdlog::error(
        "cache: {} ({}) failed verification (checksum {:016x}, expected {:016x}, {} bytes); "
        "dropped",
        rel_path, t.display, d.checksum, t.expected, d.bytes);
    return makeError(Errc::kCorrupt,
                     fmt::format("verify {}: checksum mismatch in {} ({:016x} != {:016x}); dropped{}",
                                 rel_path, t.display, d.checksum, t.expected,
                                 left.empty() ? "" : " from the index, but " + left +
                                                         " (left on disk, never served)"));
  }
  return Ok{};
}

// What verify() reads and what it expects; an object that cannot be opened
// is dropped.
Status CacheStore::openForVerifyLocked(const std::string& rel_path, VerifyTarget* t) {
  auto it = index_.find(rel_path);
  if (it == index_.end()) return makeError(Errc::kNotFound, "not cached: " + rel_path);
  t->serial = it->second.serial;
  t->expected = it->second.checksum;
  t->in_use = groupHeldLocked(rel_path, it->second, true);
  std::string obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  t->display = opts_.dir + "/objects/" + obj;
  t->fd.reset(::openat(objects_fd_, obj.c_str(), O_RDONLY | O_CLOEXEC));
  if (!t->fd) {
    Error err = lastSysError(fmt::format("verify {}: open {}", rel_path, t->display));
    noteIoError(err);
    dropLocked(rel_path, "unreadable");
    ++stats_.corrupt_drops;
    return err;
  }
  return Ok{};
}

CacheStore::VerifyReport CacheStore::verifyAll(const std::function<bool(uint64_t)>& read_hook) {
  VerifyReport report;
  std::unordered_set<uint64_t> shared_seen;  // a shared object is read once, by its first name
  for (const auto& o : list()) {
    if (o.links > 1 && !shared_seen.insert(o.object_ino).second) continue;
    Status s = verify(o.rel_path, read_hook);
    if (!s.ok() && s.error().code == Errc::kBusy) break;  // cancelled
    if (!s.ok() && s.error().code == Errc::kNotFound) continue;
    ++report.checked;
    report.bytes += o.validator.size;
    if (!s.ok()) ++report.dropped;
  }
  return report;
}

std::vector<CacheStore::ObjectSummary> CacheStore::list() const {
  std::lock_guard lock(mu_);
  std::vector<ObjectSummary> out;
  out.reserve(index_.size());
  for (const auto& [path, e] : index_) {
    const std::vector<std::string>* group = linksOfLocked(path, e);
    out.push_back(ObjectSummary{path, "objects/" + e.key.substr(0, 2) + "/" + e.key.substr(2),
                                e.validator, e.checksum, e.allocated, e.last_open_ns,
                                pins_.count(path) != 0, isOpenLocked(path),
                                group == nullptr ? 1 : group->size(), e.obj_ino});
  }
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.rel_path < b.rel_path; });
  return out;
}

}  // namespace hotshard

namespace hotshard {

// ---- copies that writers joined ----------------------------------------------

Status CacheStore::writeDirtyMark(const std::string& obj, const std::string& rel,
                                  const Validator& base, bool relabel) {
  std::string display = opts_.dir + "/objects/" + obj;
  UniqueFd fd(::openat(objects_fd_, obj.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return lastSysError(fmt::format("mark {} dirty: open {}", rel, display));
  // Before the mark: a dirty copy names the one remote path it is written back to.
  if (relabel && ::fsetxattr(fd.get(), kXattrPath, rel.data(), rel.size(), 0) != 0)
    return lastSysError(fmt::format("mark {} dirty: setxattr {} on {}", rel, kXattrPath, display));
  std::string mark = toString(base);
  if (::fsetxattr(fd.get(), kXattrDirty, mark.data(), mark.size(), 0) != 0)
    return lastSysError(fmt::format("mark {} dirty: setxattr {} on {}", rel, kXattrDirty, display));
  if (::fsync(fd.get()) != 0) return lastSysError(fmt::format("mark {} dirty: fsync {}", rel, display));
  return Ok{};
}

Status CacheStore::adopt(const std::string& rel_path, dev_t copy_dev, ino_t copy_ino,
                         const Validator& base) {
  BuryOnExit bury{this};
  std::string obj;
  bool shared = false;
  {
    std::lock_guard lock(mu_);
    auto it = index_.find(rel_path);
    if (it == index_.end()) return makeError(Errc::kNotFound, "not cached: " + rel_path);
    obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
    struct stat st {};
    if (::fstatat(objects_fd_, obj.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 ||
        st.st_dev != copy_dev || st.st_ino != copy_ino) {
      return makeError(Errc::kNotFound, "the open copy of " + rel_path + " is no longer cached");
    }
    // A shared object becomes this name's alone: the other names leave
    // objects/ (its bytes stay, counted once), so that the dirty copy names
    // exactly one remote path to write back to.
    if (linksOfLocked(rel_path, it->second) != nullptr) {
      auto l = links_.find(it->second.obj_ino);
      std::vector<std::string> names = std::move(l->second);
      links_.erase(l);
      for (const auto& name : names) {
        if (name != rel_path) dropNameLocked(name, "its copy became a hard link's write buffer", nullptr);
      }
      shared = true;
      it = index_.find(rel_path);
    }
    adopted_[rel_path] = it->second;
    unindexLocked(it);
    if (eviction_order_set_) removed_.push_back(rel_path);
  }
  // Outside mu_: an fsync. Nothing else touches an adopted entry meanwhile.
  Status marked = writeDirtyMark(obj, rel_path, base, shared);
  if (!marked.ok()) noteIoError(marked.error());
  if (!marked.ok()) {
    std::lock_guard lock(mu_);
    auto it = adopted_.find(rel_path);
    if (it != adopted_.end()) {
      indexLocked(rel_path, std::move(it->second));
      adopted_.erase(it);
      dropLocked(rel_path, "dirty mark failed");
    }
  }
  return marked;
}

Status CacheStore::markWrittenBack(const std::string& rel_path, const Validator& base) {
  std::string obj;
  {
    std::lock_guard lock(mu_);
    auto it = adopted_.find(rel_path);
    if (it == adopted_.end()) return makeError(Errc::kNotFound, "not adopted: " + rel_path);
    obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  }
  return writeDirtyMark(obj, rel_path, base);
}

void CacheStore::releaseAdopted(const std::string& rel_path, bool written_back) {
  BuryOnExit bury{this};
  std::lock_guard lock(mu_);
  auto it = adopted_.find(rel_path);
  if (it == adopted_.end()) return;
  std::string obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  used_bytes_ -= std::min(used_bytes_, it->second.allocated);
  adopted_.erase(it);
  if (!written_back) {
    keepAsideLocked(obj, rel_path, "its last write-back to the remote failed");
    return;
  }
  std::string dead = fmt::format("dead.{}", next_serial_++);
  if (::renameat(objects_fd_, obj.c_str(), tmp_fd_, dead.c_str()) == 0) {
    graveyard_.push_back(std::move(dead));
  } else if (errno != ENOENT) {
    spdlog::error("cache: drop written-back copy of {}: rename {}/objects/{}: {}", rel_path,
                  opts_.dir, obj, std::strerror(errno));
  }
}

void CacheStore::keepAsideLocked(const std::string& obj, const std::string& rel_path,
                                 const std::string& why) {
  std::string from = opts_.dir + "/objects/" + obj;
  if (::mkdirat(dir_fd_, kLostFound, 0700) != 0 && errno != EEXIST) {
    spdlog::error("cache: {} holds writes to {} that are not on the remote ({}); left in place: "
                  "mkdir {}/{}: {}",
                  from, rel_path, why, opts_.dir, kLostFound, std::strerror(errno));
    return;
  }
  std::string name = fmt::format("{}.{}", obj.substr(0, 2) + obj.substr(3), wallNs());
  std::string to = fmt::format("{}/{}/{}", opts_.dir, kLostFound, name);
  UniqueFd lf(::openat(dir_fd_, kLostFound, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!lf || ::renameat(objects_fd_, obj.c_str(), lf.get(), name.c_str()) != 0) {
    spdlog::error("cache: {} holds writes to {} that are not on the remote ({}); left in place: "
                  "rename to {}: {}",
                  from, rel_path, why, to, std::strerror(errno));
    return;
  }
  ::fsync(lf.get());
  spdlog::error("cache: writes to {} (remote {}) could not be written back: {}; the copy is kept "
                "as {}",
                rel_path, opts_.remote_id, why, to);
}

// Requires mu_. A dirty copy found at open becomes adopted again (see adopt()).
bool CacheStore::keepAdoptedLocked(const DirtyFound& d) {
  struct stat st {};
  if (d.rel_path.empty() || adopted_.count(d.rel_path) != 0 ||
      ::fstatat(objects_fd_, d.obj.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return false;
  }
  Entry e;
  e.key = d.obj.substr(0, 2) + d.obj.substr(3);
  e.validator = d.base;
  e.allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  used_bytes_ += e.allocated;
  adopted_[d.rel_path] = std::move(e);
  ++stats_.adopted_objects;
  spdlog::info("cache: {} is still open for writing through a predecessor's mount: its copy "
               "{}/objects/{} stays the write-back buffer",
               d.rel_path, opts_.dir, d.obj);
  return true;
}

Result<int> CacheStore::openAdopted(const std::string& rel_path) {
  std::lock_guard lock(mu_);
  auto it = adopted_.find(rel_path);
  if (it == adopted_.end()) return makeError(Errc::kNotFound, "not adopted: " + rel_path);
  std::string obj = it->second.key.substr(0, 2) + "/" + it->second.key.substr(2);
  int fd = ::openat(objects_fd_, obj.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_LARGEFILE);
  if (fd < 0) return lastSysError(fmt::format("open {}/objects/{}", opts_.dir, obj));
  return fd;
}

// Outside mu_. The remote part of one dirty copy's write-back at start, under
// the deadline of `remote` (recoverDirty). Returns why the copy was not written
// back, "" when it was. Sets hung when the remote did not answer in time.
std::string CacheStore::writeBackAtStart(fuse::RemoteCalls& remote, int remote_root_fd, int obj_fd,
                                         const DirtyFound& d, DirtyRecovery& r, bool& hung) {
  // What the call owns (it may outlive this function) and tells its caller.
  struct Call {
    UniqueFd root, obj;
    std::mutex mu;
    bool given_up = false;  // by the caller: the call must not start writing
    bool writing = false;   // copyFileInPlace began
    struct stat st {};      // the remote file's, when writing
  };
  auto call = std::make_shared<Call>();
  call->root.reset(::fcntl(remote_root_fd, F_DUPFD_CLOEXEC, 0));
  call->obj.reset(::fcntl(obj_fd, F_DUPFD_CLOEXEC, 0));
  if (!call->root || !call->obj) return fmt::format("dup: {}", std::strerror(errno));
  fuse::RemoteCalls::Lane lane;
  Result<std::string> done = remote.runInLane<std::string>(
      lane, "write back " + d.rel_path + " at start",
      [call, rel = d.rel_path, base = d.base]() -> Result<std::string> {
        UniqueFd file(::openat(call->root.get(), rel.c_str(),
                               O_WRONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
        struct stat st {};
        if (!file || ::fstat(file.get(), &st) != 0) {
          return fmt::format("open remote file: {}", std::strerror(errno));
        }
        if (!(validatorOf(st) == base)) {
          return fmt::format("the remote changed underneath (now {}, writes were made against {})",
                             toString(validatorOf(st)), toString(base));
        }
        {
          std::lock_guard lock(call->mu);
          if (call->given_up) return std::string("given up before writing");
          call->writing = true;
          call->st = st;
        }
        Status c = copyFileInPlace(call->obj.get(), file.get());
        return c.ok() ? std::string() : c.error().message;
      });
  if (done.ok()) return *done;
  hung = true;
  ++r.timed_out;
  std::lock_guard lock(call->mu);
  call->given_up = true;
  if (!call->writing) return done.error().message + "; nothing was written to the remote file";
  r.writing.push_back({.rel_path = d.rel_path, .dev = call->st.st_dev, .ino = call->st.st_ino,
                       .lane = lane});
  return done.error().message +
         "; the write-back had begun and goes on: it may still land on the remote file later "
         "(the file's writers wait for it)";
}

CacheStore::DirtyRecovery CacheStore::recoverDirty(int remote_root_fd,
                                                   const std::vector<std::string>& keep_adopted,
                                                   double remote_timeout_seconds) {
  std::vector<DirtyFound> found;
  DirtyRecovery r;
  {
    std::lock_guard lock(mu_);
    for (DirtyFound& d : dirty_found_) {
      bool keep = std::find(keep_adopted.begin(), keep_adopted.end(), d.rel_path) !=
                  keep_adopted.end();
      if (keep && keepAdoptedLocked(d)) {
        ++r.kept_adopted;
      } else {
        found.push_back(std::move(d));
      }
    }
    dirty_found_.clear();
  }
  // One worker: once a call is past its deadline, no other is tried.
  fuse::RemoteCalls remote({.timeout_seconds = remote_timeout_seconds, .max_workers = 1});
  bool hung = false;
  for (const DirtyFound& d : found) {
    std::string why;
    UniqueFd obj(::openat(objects_fd_, d.obj.c_str(), O_RDONLY | O_CLOEXEC));
    if (d.rel_path.empty()) {
      why = "its xattrs are garbled";
    } else if (!obj) {
      why = fmt::format("open {}/objects/{}: {}", opts_.dir, d.obj, std::strerror(errno));
    } else if (hung) {
      ++r.timed_out;
      why = fmt::format("not tried: the remote did not answer within {} s an earlier write-back "
                        "of this start",
                        remote_timeout_seconds);
    } else {
      why = writeBackAtStart(remote, remote_root_fd, obj.get(), d, r, hung);
    }
    // A process that had the file open through the crashed daemon's mount may
    // still write into the copy (passthrough needs no daemon). Whatever it writes
    // from now on must not land in an unlinked file: a write lease is refused
    // while any other open file exists (fcntl(2) F_SETLEASE, fs/locks.c
    // check_conflicting_open), and such a copy is kept aside, not removed.
    if (why.empty() && ::fcntl(obj.get(), F_SETLEASE, F_WRLCK) != 0) {
      why = fmt::format(
          "written back, but still open by a process from before the crash ({}): "
          "what it writes from now on stays in this copy",
          std::strerror(errno));
    }
    std::lock_guard lock(mu_);
    if (!why.empty()) {
      keepAsideLocked(d.obj, d.rel_path, why);
      ++r.kept_aside;
      continue;
    }
    if (::unlinkat(objects_fd_, d.obj.c_str(), 0) != 0 && errno != ENOENT) {
      spdlog::warn("cache: unlink written-back {}/objects/{}: {}", opts_.dir, d.obj,
                   std::strerror(errno));
    }
    spdlog::info("cache: wrote back {} (writes made before a crash) from {}/objects/{}",
                 d.rel_path, opts_.dir, d.obj);
    ++r.written_back;
  }
  return r;
}

}  // namespace hotshard
