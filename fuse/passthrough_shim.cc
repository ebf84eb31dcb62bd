#include "fuse/passthrough_shim.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/uio.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>

#include "fuse/fuse_compat.h"

namespace hotshard::fuse {

namespace compat = hotshard::fusecompat;

Status PassthroughShim::attach(struct fuse_session* se, int devfd) {
  static const fuse_custom_io io = {
      .writev = &PassthroughShim::ioWritev,
      .read = &PassthroughShim::ioRead,
      .splice_receive = nullptr,
      .splice_send = nullptr,
  };
  devfd_ = devfd;
  // libfuse 3.14 hands the custom I/O the session's userdata (a SessionUserdata).
  if (fuse_session_custom_io(se, &io, devfd) != 0) {
    return makeError(Errc::kInternal, "fuse_session_custom_io failed");
  }
  return Ok{};
}

bool PassthroughShim::waitForInit(int timeout_ms) {
  std::unique_lock lock(init_mu_);
  return init_cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] { return init_done_; });
}

void PassthroughShim::markInitDone() {
  {
    std::lock_guard lock(init_mu_);
    init_done_ = true;
  }
  init_cv_.notify_all();
}

void PassthroughShim::stopReading() {
  {
    std::lock_guard lock(init_mu_);  // a reader waiting for the INIT reply sees it
    stop_reading_.store(true);
  }
  init_cv_.notify_all();
}

std::string PassthroughShim::reason() const {
  std::lock_guard lock(reason_mu_);
  return reason_;
}

void PassthroughShim::disable(std::string why) {
  bool was = active_.exchange(false);
  {
    std::lock_guard lock(reason_mu_);
    reason_ = why;
  }
  if (was) spdlog::warn("passthrough disabled, serving reads in user space: {}", why);
}

Result<int> PassthroughShim::openBacking(int fd) {
  compat::BackingMap map{.fd = fd, .flags = 0, .padding = 0};
  int id = ioctl(devfd_, compat::kDevIocBackingOpen, &map);
  if (id < 0) return lastSysError("FUSE_DEV_IOC_BACKING_OPEN");
  return id;
}

void PassthroughShim::closeBacking(int backing_id) {
  uint32_t id = static_cast<uint32_t>(backing_id);
  if (ioctl(devfd_, compat::kDevIocBackingClose, &id) != 0) {
    spdlog::warn("FUSE_DEV_IOC_BACKING_CLOSE {}: {}", backing_id, std::strerror(errno));
  }
}

Status PassthroughShim::notify(int32_t code, const void* payload, size_t size, const char* what) {
  fuse_out_header out{
      .len = static_cast<uint32_t>(sizeof(fuse_out_header) + size), .error = code, .unique = 0};
  struct iovec iov[2] = {{&out, sizeof(out)}, {const_cast<void*>(payload), size}};
  if (::writev(devfd_, iov, size > 0 ? 2 : 1) != static_cast<ssize_t>(out.len)) {
    return lastSysError(what);
  }
  return Ok{};
}

Status PassthroughShim::invalidateAllEntries() {
  return notify(compat::kNotifyIncEpoch, nullptr, 0, "FUSE_NOTIFY_INC_EPOCH");
}

Status PassthroughShim::invalidateInode(uint64_t nodeid) {
  fuse_notify_inval_inode_out arg{.ino = nodeid, .off = 0, .len = 0};
  return notify(FUSE_NOTIFY_INVAL_INODE, &arg, sizeof(arg), "FUSE_NOTIFY_INVAL_INODE");
}

Status PassthroughShim::invalidateAttrs(uint64_t nodeid) {
  fuse_notify_inval_inode_out arg{.ino = nodeid, .off = -1, .len = 0};
  return notify(FUSE_NOTIFY_INVAL_INODE, &arg, sizeof(arg), "FUSE_NOTIFY_INVAL_INODE (attributes)");
}

namespace {
const char* opcodeName(uint32_t op) {
  switch (op) {
    case FUSE_LOOKUP: return "lookup";
    case FUSE_GETATTR: return "getattr";
    case FUSE_SETATTR: return "setattr";
    case FUSE_OPEN: return "open";
    case FUSE_CREATE: return "create";
    case FUSE_TMPFILE: return "tmpfile";
    case FUSE_READ: return "read";
    case FUSE_WRITE: return "write";
    case FUSE_FLUSH: return "flush";
    case FUSE_RELEASE: return "release";
    case FUSE_FSYNC: return "fsync";
    case FUSE_OPENDIR: return "opendir";
    case FUSE_READDIR: return "readdir";
    case FUSE_READDIRPLUS: return "readdirplus";
    case FUSE_STATFS: return "statfs";
    default: return "other";
  }
}
// A cap on requests being timed: replies that never pass through writev (none
// today) cannot grow the table without bound.
constexpr size_t kMaxPending = 1 << 16;
}  // namespace

void PassthroughShim::setLatencyObserver(LatencyObserver observer) {
  latency_observer_ = std::move(observer);
  timing_.store(latency_observer_ != nullptr);
}

std::vector<std::pair<std::string, uint64_t>> PassthroughShim::requestCounts() const {
  static const std::pair<const char*, uint32_t> kOps[] = {
      {"lookup", FUSE_LOOKUP},   {"getattr", FUSE_GETATTR}, {"setattr", FUSE_SETATTR},
      {"open", FUSE_OPEN},       {"create", FUSE_CREATE},   {"read", FUSE_READ},
      {"write", FUSE_WRITE},     {"flush", FUSE_FLUSH},     {"release", FUSE_RELEASE},
      {"fsync", FUSE_FSYNC},     {"opendir", FUSE_OPENDIR}, {"readdir", FUSE_READDIR},
      {"readdirplus", FUSE_READDIRPLUS}, {"statfs", FUSE_STATFS}, {"forget", FUSE_FORGET},
      {"batch_forget", FUSE_BATCH_FORGET}};
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& [name, op] : kOps) out.emplace_back(name, requestCount(op));
  return out;
}

namespace {

uint32_t openFlags(const fuse_file_info& fi) {
  uint32_t flags = 0;
  if (fi.direct_io) flags |= FOPEN_DIRECT_IO;
  if (fi.keep_cache) flags |= FOPEN_KEEP_CACHE;
  if (fi.nonseekable) flags |= FOPEN_NONSEEKABLE;
  if (fi.cache_readdir) flags |= FOPEN_CACHE_DIR;
  if (fi.noflush) flags |= FOPEN_NOFLUSH;
  return flags;
}

void splitTimeout(double t, uint64_t* sec, uint32_t* nsec) {
  if (t <= 0) {
    *sec = 0;
    *nsec = 0;
    return;
  }
  double whole = std::floor(t);
  *sec = static_cast<uint64_t>(whole);
  *nsec = static_cast<uint32_t>((t - whole) * 1e9);
}

compat::OpenOut makeOpenOut(const fuse_file_info& fi, int backing_id) {
  compat::OpenOut out{};
  out.fh = fi.fh;
  // The kernel fails a passthrough open that also asks for FOPEN_KEEP_CACHE or
  // FOPEN_DIRECT_IO with EIO (seen on 6.18); neither means anything here, since
  // reads and mmaps use the backing file's own page cache.
  out.open_flags = (openFlags(fi) & ~uint32_t{FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE}) |
                   compat::kOpenPassthrough;
  out.backing_id = backing_id;
  return out;
}

}  // namespace

int PassthroughShim::replyOpen(fuse_req_t req, const fuse_file_info& fi, int backing_id) {
  if (backing_id < 0) return fuse_reply_open(req, &fi);
  compat::OpenOut out = makeOpenOut(fi, backing_id);
  return fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof(out));
}

int PassthroughShim::replyCreate(fuse_req_t req, const fuse_entry_param& e,
                                 const fuse_file_info& fi, int backing_id) {
  if (backing_id < 0) return fuse_reply_create(req, &e, &fi);
  struct {
    fuse_entry_out entry;
    compat::OpenOut open;
  } out{};
  out.entry.nodeid = e.ino;
  out.entry.generation = e.generation;
  splitTimeout(e.entry_timeout, &out.entry.entry_valid, &out.entry.entry_valid_nsec);
  splitTimeout(e.attr_timeout, &out.entry.attr_valid, &out.entry.attr_valid_nsec);
  fuse_attr& a = out.entry.attr;
  const struct stat& st = e.attr;
  a.ino = st.st_ino;
  a.size = st.st_size;
  a.blocks = st.st_blocks;
  a.atime = st.st_atim.tv_sec;
  a.mtime = st.st_mtim.tv_sec;
  a.ctime = st.st_ctim.tv_sec;
  a.atimensec = st.st_atim.tv_nsec;
  a.mtimensec = st.st_mtim.tv_nsec;
  a.ctimensec = st.st_ctim.tv_nsec;
  a.mode = st.st_mode;
  a.nlink = st.st_nlink;
  a.uid = st.st_uid;
  a.gid = st.st_gid;
  a.rdev = st.st_rdev;
  a.blksize = st.st_blksize;
  out.open = makeOpenOut(fi, backing_id);
  return fuse_reply_buf(req, reinterpret_cast<const char*>(&out), sizeof(out));
}

static PassthroughShim* shimOf(void* userdata) {
  return static_cast<SessionUserdata*>(userdata)->shim;
}

// The custom I/O hooks are called from libfuse's C frames: nothing may throw
// out of them (std::bad_alloc from the pending table, a throwing latency
// observer). Bookkeeping that fails is dropped; the request or reply itself
// always goes through, exactly once.

namespace {
// FUSE_TMPFILE as a FUSE_CREATE of the name "" (isTmpfileCreate): the request
// keeps its unique id, credentials and fuse_create_in; the name "/" becomes "".
void disguiseTmpfile(fuse_in_header* in, size_t n) {
  if (n < sizeof(fuse_in_header) + sizeof(fuse_create_in) + 1) return;  // libfuse: ENOSYS
  in->opcode = FUSE_CREATE;
  reinterpret_cast<char*>(in + 1)[sizeof(fuse_create_in)] = '\0';
}
}  // namespace

// The unique of the FUSE_INIT a successor replays: even (as the kernel's, whose
// bit 0 marks interrupts) and far above any the kernel hands out.
constexpr uint64_t kAdoptInitUnique = 1ull << 62;

void PassthroughShim::adopt(std::vector<uint8_t> init_request, bool passthrough) {
  std::lock_guard lock(init_mu_);
  if (init_request.size() >= sizeof(fuse_in_header)) {
    reinterpret_cast<fuse_in_header*>(init_request.data())->unique = kAdoptInitUnique;
  }
  adopt_init_ = std::move(init_request);
  adopt_passthrough_ = passthrough;
  adopting_.store(true);
}

Status PassthroughShim::resendUnanswered() {
  return notify(compat::kNotifyResend, nullptr, 0, "FUSE_NOTIFY_RESEND");
}

bool PassthroughShim::swallowResentRelease(int fd, const fuse_in_header* in) {
  if ((in->unique & compat::kUniqueResend) == 0 ||
      (in->opcode != FUSE_RELEASE && in->opcode != FUSE_RELEASEDIR)) {
    return false;
  }
  fuse_out_header out{.len = sizeof(fuse_out_header), .error = 0, .unique = in->unique};
  (void)!::write(fd, &out, sizeof(out));
  return true;
}

ssize_t PassthroughShim::ioRead(int fd, void* buf, size_t len, void* userdata) {
  PassthroughShim* self = shimOf(userdata);
  if (self->adopting_.load()) {
    std::unique_lock lock(self->init_mu_);
    if (!self->adopt_init_.empty() && self->adopt_init_.size() <= len) {
      std::memcpy(buf, self->adopt_init_.data(), self->adopt_init_.size());
      ssize_t n = static_cast<ssize_t>(self->adopt_init_.size());
      self->adopt_init_.clear();
      return n;
    }
    // The replayed INIT is out but not yet answered. The kernel, initialized
    // long ago, has real requests queued (callers waited through the
    // hand-over), and libfuse starts a second worker as soon as the first
    // takes a request: one read now would reach libfuse before its INIT is
    // done, which answers it EIO (fuse_lowlevel.c, got_init), or reach the
    // file system before passthrough is confirmed (an open then served in
    // user space). So every other reader waits for the INIT reply
    // (markInitDone), bounded as startLoop's own wait for it.
    self->init_cv_.wait_for(lock, std::chrono::seconds(10), [&] {
      return self->init_done_ || self->stop_reading_.load();
    });
  }
  ssize_t n;
  while (true) {
    // Handing over: end this worker's loop as if the connection were gone
    // (libfuse ends the session on ENODEV) without taking a request.
    if (self->stop_reading_.load()) {
      errno = ENODEV;
      return -1;
    }
    n = ::read(fd, buf, len);
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return n;
    if (!self->swallowResentRelease(fd, static_cast<fuse_in_header*>(buf))) break;
  }
  auto* in = static_cast<fuse_in_header*>(buf);
  try {
    self->noteRequest(in, static_cast<size_t>(n));
  } catch (...) {
  }
  if (in->opcode == compat::kOpTmpfile) disguiseTmpfile(in, static_cast<size_t>(n));
  return n;
}

void PassthroughShim::noteRequest(const fuse_in_header* in, size_t n) {
  if (in->opcode < kMaxOpcode) counts_[in->opcode].fetch_add(1, std::memory_order_relaxed);
  if (in->opcode == FUSE_INIT && n >= sizeof(fuse_in_header) + sizeof(fuse_init_in)) {
    const auto* init = reinterpret_cast<const fuse_init_in*>(in + 1);
    bool offers = (init->flags & compat::kInitExt) && (init->flags2 & compat::kInitFlags2Passthrough);
    kernel_offers_.store(offers);
    init_unique_.store(in->unique);
    std::lock_guard lock(init_mu_);
    const auto* bytes = reinterpret_cast<const uint8_t*>(in);
    init_request_.assign(bytes, bytes + n);
  }
  if (timing_.load(std::memory_order_relaxed) && in->opcode != FUSE_FORGET &&
      in->opcode != FUSE_BATCH_FORGET && in->opcode != FUSE_INTERRUPT) {
    std::lock_guard lock(pending_mu_);
    if (pending_.size() >= kMaxPending) pending_.clear();
    pending_[in->unique] = {in->opcode, std::chrono::steady_clock::now()};
  }
}

ssize_t PassthroughShim::ioWritev(int fd, struct iovec* iov, int count, void* userdata) {
  PassthroughShim* self = shimOf(userdata);
  if (count >= 1 && iov[0].iov_len >= sizeof(fuse_out_header) &&
      static_cast<const fuse_out_header*>(iov[0].iov_base)->unique == kAdoptInitUnique) {
    // The replayed INIT's reply: the kernel had the predecessor's already.
    ssize_t total = 0;
    for (int i = 0; i < count; i++) total += static_cast<ssize_t>(iov[i].iov_len);
    self->adopting_.store(false);
    if (self->adopt_passthrough_ && self->want_) {
      self->confirmPassthrough();
    } else {
      self->disable(self->want_ ? "the predecessor's connection has no passthrough"
                                : "disabled by configuration (--passthrough=off)");
    }
    self->markInitDone();
    return total;
  }
  uint64_t init_unique = self->init_unique_.load();
  bool is_init_reply = init_unique != 0 && count >= 2 &&
                       iov[0].iov_len >= sizeof(fuse_out_header) &&
                       static_cast<const fuse_out_header*>(iov[0].iov_base)->unique == init_unique;
  if (!is_init_reply) {
    ssize_t n = ::writev(fd, iov, count);
    try {
      self->observeReply(iov, count);
    } catch (...) {
    }
    return n;
  }
  self->init_unique_.store(0);
  compat::InitOut patched{};
  bool asked = false;
  try {
    asked = self->patchInitReply(iov, patched);
    if (self->init_observer_) {
      std::lock_guard lock(self->init_mu_);
      self->init_observer_(self->init_request_.data(), self->init_request_.size(), asked);
    }
  } catch (...) {
  }
  ssize_t n = ::writev(fd, iov, count);
  if (n >= 0 && asked) {
    try {
      self->confirmPassthrough();
    } catch (...) {
    }
  }
  self->markInitDone();
  return n;
}

void PassthroughShim::observeReply(const struct iovec* iov, int count) {
  if (!timing_.load(std::memory_order_relaxed) || count < 1 ||
      iov[0].iov_len < sizeof(fuse_out_header)) {
    return;
  }
  uint64_t unique = static_cast<const fuse_out_header*>(iov[0].iov_base)->unique;
  Pending p{};
  {
    std::lock_guard lock(pending_mu_);
    auto it = pending_.find(unique);
    if (it == pending_.end()) return;
    p = it->second;
    pending_.erase(it);
  }
  latency_observer_(opcodeName(p.opcode),
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - p.start).count());
}

bool PassthroughShim::patchInitReply(struct iovec* iov, compat::InitOut& patched) {
  const auto* hdr = static_cast<const fuse_out_header*>(iov[0].iov_base);
  if (hdr->error != 0 || iov[1].iov_len < sizeof(patched)) return false;
  std::memcpy(&patched, iov[1].iov_base, sizeof(patched));
  if (!want_) {
    disable("disabled by configuration (--passthrough=off)");
    return false;
  }
  if (!kernel_offers_.load()) {
    disable(
        "the kernel does not offer FUSE_PASSTHROUGH (needs Linux >= 6.9 with "
        "CONFIG_FUSE_PASSTHROUGH)");
    return false;
  }
  if (patched.flags & FUSE_WRITEBACK_CACHE) {
    disable("writeback cache is on; the kernel refuses passthrough with it");
    return false;
  }
  patched.flags |= compat::kInitExt;
  patched.flags2 |= compat::kInitFlags2Passthrough;
  patched.max_stack_depth = 1;
  iov[1].iov_base = &patched;
  return true;
}

void PassthroughShim::confirmPassthrough() {
  // The kernel took the reply; a backing open tells whether this process may use
  // passthrough at all (it needs CAP_SYS_ADMIN in the initial user namespace).
  int probe = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  auto id = openBacking(probe);
  if (probe >= 0) ::close(probe);
  // Only EPERM is a verdict on this process; newer kernels turn /dev/null down
  // with EINVAL (not a regular file) after the capability check passed.
  if (!id.ok() && id.error().sys_errno == EPERM) {
    disable("the kernel refused a backing file (" + id.error().message +
            "; needs CAP_SYS_ADMIN in the initial user namespace)");
    return;
  }
  if (id.ok()) closeBacking(*id);
  active_.store(true, std::memory_order_release);
  std::lock_guard lock(reason_mu_);
  reason_ = "kernel passthrough active";
}

}  // namespace hotshard::fuse
