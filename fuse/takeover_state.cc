#include "fuse/takeover_state.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <unordered_map>

#include "base/paths.h"

namespace hotshard::fuse {
namespace {

constexpr char kMagic[8] = {'H', 'S', 'T', 'A', 'K', 'E', 'O', 'V'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderSize = 4096;
constexpr size_t kInitialSlots = 1024;

struct Header {
  char magic[8];
  uint32_t version;
  uint32_t slot_size;
  uint64_t conn_dev;
  uint32_t passthrough;
  uint32_t init_size;
  uint8_t init[TakeoverState::kInitMax];
  uint32_t mount_path_size;
  char mount_path[3072];
};
static_assert(sizeof(Header) <= kHeaderSize);

size_t fileSizeFor(size_t capacity) { return kHeaderSize + capacity * sizeof(TakeoverSlot); }

Header* headerOf(void* map) { return static_cast<Header*>(map); }

// The id is what makes a slot valid: stored last, cleared first.
void storeId(TakeoverSlot& s, uint64_t id) {
  std::atomic_ref<uint64_t>(s.id).store(id, std::memory_order_release);
}

}  // namespace

TakeoverState::TakeoverState(std::string path, UniqueFd fd)
    : path_(std::move(path)), fd_(std::move(fd)) {}

TakeoverState::~TakeoverState() {
  if (map_ != nullptr) ::munmap(map_, map_size_);
}

Status TakeoverState::mapLocked(size_t capacity) {
  size_t size = fileSizeFor(capacity);
  if (map_ == nullptr) {
    void* m = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd_.get(), 0);
    if (m == MAP_FAILED) return lastSysError("mmap " + path_);
    map_ = m;
  } else if (size != map_size_) {
    void* m = ::mremap(map_, map_size_, size, MREMAP_MAYMOVE);
    if (m == MAP_FAILED) return lastSysError("mremap " + path_);
    map_ = m;
  }
  map_size_ = size;
  capacity_ = capacity;
  return Ok{};
}

Result<std::unique_ptr<TakeoverState>> TakeoverState::create(const std::string& dir,
                                                             const ConnectionId& conn) {
  RETURN_IF_ERROR(makeDirectories(dir, 0700));
  std::string path = dir + "/state";
  std::string tmp = path + ".new";
  ::unlink(tmp.c_str());
  UniqueFd fd(::open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) return lastSysError("create " + tmp);
  if (::ftruncate(fd.get(), fileSizeFor(kInitialSlots)) < 0) return lastSysError("size " + tmp);
  std::unique_ptr<TakeoverState> st(new TakeoverState(path, std::move(fd)));
  {
    std::lock_guard lock(st->mu_);
    RETURN_IF_ERROR(st->mapLocked(kInitialSlots));
    Header* h = headerOf(st->map_);
    h->version = kVersion;
    h->slot_size = sizeof(TakeoverSlot);
    h->conn_dev = conn.dev;
    h->mount_path_size =
        static_cast<uint32_t>(std::min(conn.mount_path.size(), sizeof(h->mount_path)));
    std::memcpy(h->mount_path, conn.mount_path.data(), h->mount_path_size);
    std::memcpy(h->magic, kMagic, sizeof(kMagic));  // complete from here
  }
  // Whole or not at all at the path: a successor never reads half a header.
  if (::rename(tmp.c_str(), path.c_str()) < 0) return lastSysError("rename " + tmp);
  return st;
}

Result<std::unique_ptr<TakeoverState>> TakeoverState::adopt(const std::string& dir,
                                                            const ConnectionId& conn) {
  std::string path = dir + "/state";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return makeError(Errc::kNotFound, "no takeover state at " + path);
    return lastSysError("open " + path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) < 0) return lastSysError("stat " + path);
  if (static_cast<size_t>(st.st_size) < fileSizeFor(0) ||
      (st.st_size - kHeaderSize) % sizeof(TakeoverSlot) != 0) {
    return makeError(Errc::kCorrupt, path + ": a short or torn state file (" +
                                         std::to_string(st.st_size) + " bytes)");
  }
  std::unique_ptr<TakeoverState> state(new TakeoverState(path, std::move(fd)));
  std::lock_guard lock(state->mu_);
  RETURN_IF_ERROR(state->mapLocked((st.st_size - kHeaderSize) / sizeof(TakeoverSlot)));
  const Header* h = headerOf(state->map_);
  if (std::memcmp(h->magic, kMagic, sizeof(kMagic)) != 0) {
    return makeError(Errc::kCorrupt, path + ": not a takeover state");
  }
  if (h->version != kVersion || h->slot_size != sizeof(TakeoverSlot)) {
    return makeError(Errc::kStale, path + ": state version " + std::to_string(h->version) +
                                       ", this binary reads " + std::to_string(kVersion));
  }
  std::string mount(h->mount_path, std::min<size_t>(h->mount_path_size, sizeof(h->mount_path)));
  if (h->conn_dev != conn.dev || mount != conn.mount_path) {
    return makeError(Errc::kStale, path + ": the state of another connection (" + mount +
                                       ", device " + std::to_string(h->conn_dev) + "), not of " +
                                       conn.mount_path + " (device " + std::to_string(conn.dev) +
                                       ")");
  }
  if (h->init_size == 0 || h->init_size > kInitMax) {
    return makeError(Errc::kCorrupt, path +
                                         ": no FUSE_INIT saved (the predecessor never "
                                         "answered it)");
  }
  return state;
}

Result<ConnectionId> TakeoverState::connectionOf(const std::string& dir) {
  std::string path = dir + "/state";
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) {
    if (errno == ENOENT) return makeError(Errc::kNotFound, "no takeover state at " + path);
    return lastSysError("open " + path);
  }
  Header h;
  ssize_t n = ::pread(fd.get(), &h, sizeof(h), 0);
  if (n < 0) return lastSysError("read " + path);
  if (static_cast<size_t>(n) < sizeof(h) || std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
    return makeError(Errc::kCorrupt, path + ": not a takeover state");
  }
  return ConnectionId{
      .dev = static_cast<dev_t>(h.conn_dev),
      .mount_path = std::string(h.mount_path, std::min<size_t>(h.mount_path_size, sizeof(h.mount_path)))};
}

void TakeoverState::saveInit(const void* request, size_t size, bool passthrough) {
  std::lock_guard lock(mu_);
  Header* h = headerOf(map_);
  size = std::min(size, kInitMax);
  std::memcpy(h->init, request, size);
  h->passthrough = passthrough ? 1 : 0;
  h->init_size = static_cast<uint32_t>(size);
}

std::vector<uint8_t> TakeoverState::initRequest() const {
  std::lock_guard lock(mu_);
  const Header* h = headerOf(map_);
  size_t n = std::min<size_t>(h->init_size, kInitMax);
  return std::vector<uint8_t>(h->init, h->init + n);
}

bool TakeoverState::passthrough() const {
  std::lock_guard lock(mu_);
  return headerOf(map_)->passthrough != 0;
}

TakeoverSlot* TakeoverState::slotLocked(uint64_t id) {
  if (id >= capacity_) return nullptr;
  return reinterpret_cast<TakeoverSlot*>(static_cast<char*>(map_) + kHeaderSize) + id;
}

Status TakeoverState::put(uint64_t id, uint64_t parent, std::string_view name, dev_t dev, ino_t ino,
                          uint32_t type, uint64_t generation, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  if (id >= capacity_) {
    size_t capacity = std::max(capacity_ * 2, static_cast<size_t>(id) + 1);
    if (::ftruncate(fd_.get(), fileSizeFor(capacity)) < 0) {
      return lastSysError("grow " + path_ + " to " + std::to_string(capacity) + " slots");
    }
    RETURN_IF_ERROR(mapLocked(capacity));
  }
  TakeoverSlot& s = *slotLocked(id);
  bool fresh = s.id != id;
  if (fresh) storeId(s, 0);
  s.parent = parent;
  s.dev = dev;
  s.ino = ino;
  s.type = type;
  s.generation = generation;
  s.nlookup = nlookup;
  size_t n = std::min(name.size(), kTakeoverNameMax);
  std::memcpy(s.name, name.data(), n);
  s.name[n] = '\0';
  s.name_len = static_cast<uint16_t>(n);
  if (fresh) {
    s.backing_id = -1;
    s.backing_flags = 0;
    s.nopen = 0;
    s.mode = 0;
    s.owner_hash = 0;
    storeId(s, id);
  }
  return Ok{};
}

void TakeoverState::setLookups(uint64_t id, uint64_t nlookup) {
  std::lock_guard lock(mu_);
  if (TakeoverSlot* s = slotLocked(id); s != nullptr && s->id == id) s->nlookup = nlookup;
}

void TakeoverState::setBacking(uint64_t id, int32_t backing_id, uint32_t flags) {
  std::lock_guard lock(mu_);
  if (TakeoverSlot* s = slotLocked(id); s != nullptr && s->id == id) {
    s->backing_id = backing_id;
    s->backing_flags = flags;
  }
}

void TakeoverState::setOpens(uint64_t id, int32_t nopen) {
  std::lock_guard lock(mu_);
  if (TakeoverSlot* s = slotLocked(id); s != nullptr && s->id == id) s->nopen = nopen;
}

void TakeoverState::setAttrs(uint64_t id, uint16_t mode, uint32_t owner_hash) {
  std::lock_guard lock(mu_);
  if (TakeoverSlot* s = slotLocked(id); s != nullptr && s->id == id) {
    s->mode = mode;
    s->owner_hash = owner_hash;
  }
}

uint32_t ownerHash(uint32_t uid, uint32_t gid) {
  const uint32_t both[2] = {uid, gid};
  return static_cast<uint32_t>(XXH3_64bits(both, sizeof(both)));
}

void TakeoverState::release(uint64_t id) {
  std::lock_guard lock(mu_);
  if (TakeoverSlot* s = slotLocked(id); s != nullptr) storeId(*s, 0);
}

std::vector<TakeoverSlot> TakeoverState::slots() const {
  std::lock_guard lock(mu_);
  std::vector<TakeoverSlot> out;
  const auto* base = reinterpret_cast<const TakeoverSlot*>(static_cast<char*>(map_) + kHeaderSize);
  for (size_t i = 2; i < capacity_; i++) {
    const TakeoverSlot& s = base[i];
    if (s.id != i || s.name_len > kTakeoverNameMax) continue;
    out.push_back(s);
  }
  return out;
}

Status TakeoverState::sync() {
  std::lock_guard lock(mu_);
  if (::msync(map_, map_size_, MS_SYNC) < 0) return lastSysError("msync " + path_);
  return Ok{};
}

std::vector<std::string> adoptedCopyPaths(const std::vector<TakeoverSlot>& slots) {
  std::unordered_map<uint64_t, const TakeoverSlot*> by_id;
  for (const TakeoverSlot& slot : slots) by_id[slot.id] = &slot;
  std::vector<std::string> paths;
  for (const TakeoverSlot& slot : slots) {
    if ((slot.backing_flags & kBackingAdopted) == 0 || slot.nopen <= 0) continue;
    std::vector<std::string_view> names;
    const TakeoverSlot* at = &slot;
    // At most one step per slot: a cycle in a torn state ends the walk.
    for (size_t steps = 0; at != nullptr && steps <= slots.size(); ++steps) {
      if (at->name_len == 0) break;
      names.push_back(at->nameView());
      if (at->parent == 1) {  // FUSE_ROOT_ID
        std::string rel;
        for (auto it = names.rbegin(); it != names.rend(); ++it) {
          if (!rel.empty()) rel += '/';
          rel += *it;
        }
        paths.push_back(std::move(rel));
        break;
      }
      auto parent = by_id.find(at->parent);
      at = parent == by_id.end() ? nullptr : parent->second;
    }
  }
  return paths;
}

}  // namespace hotshard::fuse
