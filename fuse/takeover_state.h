// fuse/takeover_state: what a successor needs to adopt a live FUSE connection
// (docs/restart.md, "The worker: adopting a live connection"), kept where a
// SIGKILL cannot take it: a file under the state dir (on /run, a tmpfs) mapped
// MAP_SHARED, so every update is a plain store into pages that belong to the
// file, not to the process.
//
// Layout (host byte order; the successor is on the same host):
//   [0, 4096)      TakeoverHeader: magic, version, the connection it belongs to
//                  (the mount's device number in /proc/self/mountinfo and the
//                  mount path), the kernel's FUSE_INIT request as it was read
//                  (fuse_in_header + fuse_init_in, flags2 included) and whether
//                  the kernel agreed to passthrough;
//   [4096, ...)    TakeoverSlot[capacity], indexed by FUSE node id: one slot per
//                  node id the kernel may still use (slot 1, FUSE_ROOT_ID, is
//                  unused: the root is the remote root). Grown by ftruncate +
//                  mremap, doubling.
// A slot is valid when its `id` equals its index: put() writes every other
// field first and the id last, release() clears the id first, so a slot torn
// by a SIGKILL mid-update is invalid (dropped by the successor) or names an
// object the table verifies by (st_dev, st_ino, type) before any use.
// The file and its directories are created 0600 / 0700 (open(2) and mkdir(2)
// with those modes; no umask change needed: a umask only removes bits).
// Thread-safety: every call takes mu_ (a leaf lock), so it may be called under
// InodeTable::mu_ or an Inode::mu.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "base/fd.h"
#include "base/result.h"

namespace hotshard::fuse {

inline constexpr size_t kTakeoverNameMax = 255;  // NAME_MAX

struct TakeoverSlot {
  uint64_t id = 0;      // the FUSE node id == the slot's index; 0: free
  uint64_t parent = 0;  // the parent's node id (FUSE_ROOT_ID for the top); 0: no name
  uint64_t dev = 0;     // the remote object's st_dev, st_ino, S_IFMT bits
  uint64_t ino = 0;
  uint64_t generation = 0;
  uint64_t nlookup = 0;  // lookups the kernel holds (FORGET takes them back)
  uint32_t type = 0;
  int32_t backing_id = -1;     // FUSE_DEV_IOC_BACKING_OPEN's id; -1: none
  uint32_t backing_flags = 0;  // kBacking* below
  int32_t nopen = 0;           // opens not yet released
  uint16_t name_len = 0;
  // What the kernel was last told of the object's access (setAttrs): its
  // st_mode (type and permission bits fit in 16), and ownerHash(st_uid,
  // st_gid). mode 0: not known (a slot written before these existed).
  uint16_t mode = 0;
  uint32_t owner_hash = 0;
  char name[kTakeoverNameMax + 1] = {};
  std::string_view nameView() const { return {name, name_len}; }
};
static_assert(sizeof(TakeoverSlot) == 328, "the slot layout is part of the file format");

inline constexpr uint32_t kBackingCache = 1u << 0;     // the cache's copy, not the remote file
inline constexpr uint32_t kBackingWritable = 1u << 1;  // opened read-write
// TakeoverSlot::owner_hash: 32 bits of xxh3 over (uid, gid). A changed owner
// reads as unchanged once in 2^32, which only matters for a change made on the
// remote while a takeover happens. Pure.
uint32_t ownerHash(uint32_t uid, uint32_t gid);

// A writer adopted the cache copy as its write-back buffer (docs/cache.md, "one
// file, one truth"); a successor carries that on (docs/restart.md, "Files open
// across a takeover").
inline constexpr uint32_t kBackingAdopted = 1u << 2;

// The relative paths (under the remote root, '/'-separated, as
// InodeTable::relPathOf) of the slots whose backing is an adopted cache copy
// with opens not yet released: the copies a successor's store must keep as
// adopted at its start instead of recovering them as after a crash. A slot whose
// names do not lead up to the root is left out (its copy is recovered as before).
std::vector<std::string> adoptedCopyPaths(const std::vector<TakeoverSlot>& slots);

// Which FUSE connection a state belongs to.
struct ConnectionId {
  dev_t dev = 0;           // the mount's device number (/proc/self/mountinfo)
  std::string mount_path;  // as the mount table names it
};

class TakeoverState {
 public:
  // A new state for a fresh connection in `dir` (created 0700 with its
  // parents): replaces any file there. Errors name the path.
  static Result<std::unique_ptr<TakeoverState>> create(const std::string& dir,
                                                       const ConnectionId& conn);
  // The state a predecessor left in `dir` for this very connection. Errors:
  // kNotFound (no state), kStale (another connection's, or an unknown
  // version), kCorrupt (a short or torn file).
  static Result<std::unique_ptr<TakeoverState>> adopt(const std::string& dir,
                                                      const ConnectionId& conn);
  // Which connection the state in `dir` belongs to, from its header alone (no
  // slot is read, nothing is mapped): to tell a stale state (its mount is gone)
  // from a live one. Errors as adopt's: kNotFound, kCorrupt (no complete header).
  static Result<ConnectionId> connectionOf(const std::string& dir);
  ~TakeoverState();
  TakeoverState(const TakeoverState&) = delete;
  TakeoverState& operator=(const TakeoverState&) = delete;

  // The kernel's FUSE_INIT request (at most kInitMax bytes are kept) and the
  // passthrough decision; empty before saveInit.
  static constexpr size_t kInitMax = 256;
  void saveInit(const void* request, size_t size, bool passthrough);
  std::vector<uint8_t> initRequest() const;
  bool passthrough() const;

  // Writes a slot's identity, name and lookups (not its backing or opens).
  // Grows the file when id is past its end. Errors: the ftruncate/mremap one.
  Status put(uint64_t id, uint64_t parent, std::string_view name, dev_t dev, ino_t ino,
             uint32_t type, uint64_t generation, uint64_t nlookup);
  void setLookups(uint64_t id, uint64_t nlookup);
  void setBacking(uint64_t id, int32_t backing_id, uint32_t flags);
  void setOpens(uint64_t id, int32_t nopen);
  // The mode and ownerHash() the kernel's attributes of the node id carry now.
  void setAttrs(uint64_t id, uint16_t mode, uint32_t owner_hash);
  // The kernel forgot the node id: its slot is free.
  void release(uint64_t id);
  // Valid slots, by id.
  std::vector<TakeoverSlot> slots() const;
  // msync: the state is on its file for a successor (a SIGKILL keeps it too).
  Status sync();
  const std::string& path() const { return path_; }

 private:
  TakeoverState(std::string path, UniqueFd fd);
  Status mapLocked(size_t capacity);
  TakeoverSlot* slotLocked(uint64_t id);

  const std::string path_;
  UniqueFd fd_;
  mutable std::mutex mu_;  // a leaf
  void* map_ = nullptr;    // guarded by mu_
  size_t map_size_ = 0;
  size_t capacity_ = 0;  // slots
};

}  // namespace hotshard::fuse
