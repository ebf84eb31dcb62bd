#include "fuse/inode_table.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <spdlog/spdlog.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fuse/passthrough_shim.h"
#include "fuse/takeover_state.h"

namespace hotshard::fuse {

std::string procPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

Result<std::vector<UniqueFd>> walkPath(const PathWalk& walk) {
  std::vector<UniqueFd> fds;
  int at = walk.from->get();
  for (const PathWalk::Step& step : walk.steps) {
    UniqueFd fd(::openat(at, step.name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    int err = errno;
    if (!fd && (err == ENOENT || err == ENOTDIR || err == ELOOP)) {
      return sysError(ESTALE, "resolve " + step.name + ": " + std::strerror(err));
    }
    if (!fd) return lastSysError("resolve " + step.name);
    struct stat st;
    if (::fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
      return lastSysError("resolve " + step.name + ": stat");
    }
    bool named_only = step.dev == kNamedDev;  // no remote identity known (addNamedLookup)
    if ((!named_only && (st.st_dev != step.dev || st.st_ino != step.ino)) ||
        (st.st_mode & S_IFMT) != step.type) {
      return sysError(ESTALE, "resolve " + step.name + ": another object has the name now");
    }
    at = fd.get();
    fds.push_back(std::move(fd));
  }
  return fds;
}

InodeTable::InodeTable(int remote_root_fd, PassthroughShim* shim, size_t fd_cap)
    : shim_(shim), fd_cap_(std::max<size_t>(fd_cap, 1)) {
  root_ = std::make_unique<Inode>();
  root_->path_fd = std::make_shared<const UniqueFd>(
      ::openat(remote_root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  // The root's identity as the kernel has it (AT_STATX_DONT_SYNC): a successor
  // starts without waiting on a remote that hangs (docs/restart.md).
  struct statx stx {};
  if (root_->path_fd->valid()) {
    ::statx(root_->path_fd->get(), "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_INO, &stx);
  }
  root_->src_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
  root_->src_ino = stx.stx_ino;
  root_->type = S_IFDIR;
  root_->nlookup = 2;  // never forgotten
  root_->fd_pins = 1;  // never closed
  root_->id = FUSE_ROOT_ID;
  stale_ = std::make_unique<Inode>();
  stale_->nlookup = 1;  // never freed: forget() ignores it
}

InodeTable::~InodeTable() {
  std::lock_guard lock(mu_);
  for (auto& [key, inode] : inodes_) closeBackings(*inode);
  for (auto& [ptr, inode] : retired_) closeBackings(*inode);
}

void closeIdleBacking(Inode& inode, PassthroughShim& shim, const RemoteFdCloser& close_remote) {
  if (!hasIdleBacking(inode)) return;
  if (inode.backing_id >= 0) shim.closeBacking(inode.backing_id);
  if (inode.backing_is_cache || !close_remote) {
    ::close(inode.backing_fd);  // a copy on the cache disk: nothing to wait for
  } else {
    close_remote(inode.backing_fd);
  }
  inode.backing_id = -1;
  inode.backing_fd = -1;
  inode.backing_writable = false;
  inode.backing_rw_errno = 0;
  inode.backing_is_cache = false;
  inode.cached_rel.clear();
  inode.backing_against_known = false;
}

void InodeTable::closeBackings(Inode& inode) {
  auto closeRemote = [this](int fd) {
    if (close_remote_) {
      close_remote_(fd);
    } else {
      ::close(fd);
    }
  };
  if (inode.backing_id >= 0 && !keep_backings_.load()) shim_->closeBacking(inode.backing_id);
  if (inode.backing_fd >= 0) {
    if (inode.backing_is_cache) {
      ::close(inode.backing_fd);
    } else {
      closeRemote(inode.backing_fd);
    }
  }
  // An adopted copy left here (teardown with files open) stays dirty in the
  // cache: the next start's recovery writes it back (docs/cache.md).
  if (inode.remote_wb_fd >= 0) closeRemote(inode.remote_wb_fd);
  inode.backing_id = -1;
  inode.backing_fd = -1;
  inode.remote_wb_fd = -1;
  inode.backing_against_known = false;
}

Inode& InodeTable::inodeOf(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return *root_;
  if (ino < kMaxIds) {
    const std::atomic<Inode*>* chunk =
        id_chunks_[ino >> kIdChunkBits].load(std::memory_order_acquire);
    if (chunk != nullptr) {
      if (Inode* inode = chunk[ino & ((1u << kIdChunkBits) - 1)].load(std::memory_order_acquire)) {
        return *inode;
      }
    }
  }
  spdlog::error("node id {} is not in the inode table: answering ESTALE", ino);
  return *stale_;
}

fuse_ino_t InodeTable::idOf(const Inode& inode) const { return inode.id; }

// ---- node ids ---------------------------------------------------------------

void InodeTable::setIdLocked(uint64_t id, Inode* inode) {
  auto& top = id_chunks_[id >> kIdChunkBits];
  std::atomic<Inode*>* chunk = top.load(std::memory_order_relaxed);
  if (chunk == nullptr) {
    if (inode == nullptr) return;
    id_chunk_owners_.emplace_back(new std::atomic<Inode*>[1u << kIdChunkBits]());
    chunk = id_chunk_owners_.back().get();
    top.store(chunk, std::memory_order_release);
  }
  chunk[id & ((1u << kIdChunkBits) - 1)].store(inode, std::memory_order_release);
}

void InodeTable::assignIdLocked(Inode& inode) {
  uint64_t id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = next_id_++;
    if (id >= kMaxIds) {
      // 2^32 inodes at once: past what the kernel's memory would hold.
      spdlog::critical("node ids exhausted");
      std::abort();
    }
  }
  inode.id = id;
  setIdLocked(id, &inode);
}

void InodeTable::freeIdLocked(Inode& inode) {
  if (inode.id == 0) return;
  if (TakeoverState* st = state_.load(std::memory_order_acquire)) st->release(inode.id);
  setIdLocked(inode.id, nullptr);
  free_ids_.push_back(inode.id);
  inode.id = 0;
}

void InodeTable::recordLocked(const Inode& inode) {
  TakeoverState* st = state_.load(std::memory_order_acquire);
  if (st == nullptr || isRoot(inode) || inode.id == 0) return;
  Status put = st->put(inode.id, inode.parent != nullptr ? inode.parent->id : 0, inode.name,
                       inode.src_dev, inode.src_ino, inode.type, inode.generation, inode.nlookup);
  if (!put.ok()) spdlog::error("takeover state: {}", put.error().message);
}

void InodeTable::noteAttrs(const Inode& inode, const struct stat& st) {
  TakeoverState* state = state_.load(std::memory_order_acquire);
  if (state == nullptr || inode.id == 0) return;
  state->setAttrs(inode.id, static_cast<uint16_t>(st.st_mode), ownerHash(st.st_uid, st.st_gid));
}

void InodeTable::noteBacking(const Inode& inode) {
  TakeoverState* st = state_.load(std::memory_order_acquire);
  if (st == nullptr || inode.id == 0) return;
  uint32_t flags = (inode.backing_is_cache ? kBackingCache : 0) |
                   (inode.backing_writable ? kBackingWritable : 0) |
                   (inode.copy_adopted ? kBackingAdopted : 0);
  st->setBacking(inode.id, inode.backing_id, flags);
  st->setOpens(inode.id, inode.nopen);
}

void InodeTable::setTakeoverState(TakeoverState* state) {
  std::lock_guard lock(mu_);
  state_.store(state, std::memory_order_release);
  if (state == nullptr) return;
  auto record = [&](Inode& inode) {
    recordLocked(inode);
    std::lock_guard inode_lock(inode.mu);
    noteBacking(inode);
  };
  for (auto& [key, inode] : inodes_) record(*inode);
  for (auto& [ptr, inode] : retired_) record(*inode);
}

void InodeTable::adoptInodes(const std::vector<TakeoverSlot>& slots) {
  std::lock_guard lock(mu_);
  std::map<uint64_t, Inode*> by_id;
  for (const TakeoverSlot& slot : slots) {
    auto inode = std::make_unique<Inode>();
    inode->id = slot.id;
    inode->src_dev = static_cast<dev_t>(slot.dev);
    inode->src_ino = static_cast<ino_t>(slot.ino);
    inode->type = slot.type;
    inode->generation = slot.generation;
    inode->nlookup = slot.nlookup;
    inode->backing_id = slot.backing_id;
    inode->backing_is_cache = (slot.backing_flags & kBackingCache) != 0;
    inode->backing_writable = (slot.backing_flags & kBackingWritable) != 0;
    inode->nopen = std::max(slot.nopen, 0);
    inode->told_mode = slot.mode;
    inode->told_owner_hash = slot.owner_hash;
    inode->fd_pins = inode->nopen;  // as each open pinned its fd (released with it)
    // Its copy is the write-back buffer still: the store kept it (adoptedCopyPaths).
    inode->inherited_adopted = (slot.backing_flags & kBackingAdopted) != 0 && inode->nopen > 0;
    if (inode->backing_id >= 0 && inode->nopen == 0) {
      // Kept idle by the predecessor: no open file uses it, and this process
      // has no fd for it. Its release would have closed it.
      shim_->closeBacking(inode->backing_id);
      inode->backing_id = -1;
    }
    next_generation_ = std::max<uint64_t>(next_generation_.load(), slot.generation + 1);
    next_id_ = std::max<uint64_t>(next_id_, slot.id + 1);
    if (inode->src_dev == kNamedDev) next_named_ = std::max(next_named_, inode->src_ino + 1);
    setIdLocked(slot.id, inode.get());
    by_id[slot.id] = inode.get();
    auto key = std::make_pair(inode->src_dev, inode->src_ino);
    if (inodes_.count(key) == 0) {
      inodes_.emplace(key, std::move(inode));
    } else {
      Inode* raw = inode.get();
      raw->retired = true;  // a retired one's twin: the first one stays the object's
      retired_.emplace(raw, std::move(inode));
    }
  }
  for (const TakeoverSlot& slot : slots) {
    Inode* inode = by_id[slot.id];
    Inode* parent = slot.parent == FUSE_ROOT_ID     ? root_.get()
                    : by_id.count(slot.parent) != 0 ? by_id[slot.parent]
                                                    : nullptr;
    // A name under a parent the state lost is no way back: nameless (ESTALE).
    if (parent != nullptr && slot.name_len > 0) {
      inode->parent = parent;
      inode->name.assign(slot.nameView());
      parent->nchildren++;
      names_.insert(inode);
    }
  }
  for (uint64_t id = FUSE_ROOT_ID + 1; id < next_id_; id++) {
    if (by_id.count(id) == 0) free_ids_.push_back(id);
  }
}

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return inodes_.size() + retired_.size() + 1;
}

bool InodeTable::visit(dev_t dev, ino_t ino, const std::function<void(Inode&)>& fn) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find(std::make_pair(dev, ino));
  if (it == inodes_.end()) return false;
  fn(*it->second);
  return true;
}

namespace {
// "." and ".." name no object of their own (an export's ".." lookup).
bool isDotName(std::string_view name) { return name == "." || name == ".."; }
}  // namespace

Inode& InodeTable::addLookup(int newfd, const struct stat& attr, Inode* parent,
                             std::string_view name) {
  UniqueFd fd(newfd);
  std::lock_guard lock(mu_);
  auto key = std::make_pair(attr.st_dev, attr.st_ino);
  Inode* inode;
  if (key.first == root_->src_dev && key.second == root_->src_ino) {
    return *root_;  // ".." at the top, or a bind of the root
  } else if (auto it = inodes_.find(key); it != inodes_.end()) {
    inode = it->second.get();  // same object under another name (a hard link): one fd is enough
    std::lock_guard fds_lock(fds_mu_);
    if (!inode->path_fd) setPathFdLocked(*inode, std::make_shared<const UniqueFd>(std::move(fd)));
  } else {
    auto fresh = std::make_unique<Inode>();
    fresh->src_dev = key.first;
    fresh->src_ino = key.second;
    fresh->type = attr.st_mode & S_IFMT;
    fresh->generation = next_generation_.fetch_add(1);
    inode = fresh.get();
    assignIdLocked(*inode);
    inodes_.emplace(key, std::move(fresh));
    std::lock_guard fds_lock(fds_mu_);
    setPathFdLocked(*inode, std::make_shared<const UniqueFd>(std::move(fd)));
  }
  inode->nlookup++;
  if (parent != nullptr && !isDotName(name)) {
    setNameLocked(*inode, parent, name);
  } else if (inode->parent == nullptr) {
    setNameLocked(*inode, nullptr, {});  // pins its fd: there is no other way back
  }
  recordLocked(*inode);        // before the reply hands the id to the kernel
  std::vector<PathFd> closed;  // closed after the lock
  std::lock_guard fds_lock(fds_mu_);
  evictFdsLocked(closed);
  return *inode;
}

Inode* InodeTable::addLookupIfKnown(const struct stat& attr, Inode* parent,
                                    std::string_view name) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(attr.st_dev, attr.st_ino);
  if (key.first == root_->src_dev && key.second == root_->src_ino) return root_.get();
  auto it = inodes_.find(key);
  if (it == inodes_.end()) return nullptr;
  Inode* inode = it->second.get();
  inode->nlookup++;
  // The name the kernel just found it by leads to it: the way back from now
  // on (it follows renames on the remote that the kernel looked up since).
  if (parent != nullptr && !isDotName(name)) setNameLocked(*inode, parent, name);
  recordLocked(*inode);
  return inode;
}

Inode& InodeTable::addNamedLookup(Inode& parent, std::string_view name, const struct stat& attr) {
  std::lock_guard lock(mu_);
  Inode* inode = childLocked(parent, name);
  if (inode == nullptr || inode->retired || inode->type != (attr.st_mode & S_IFMT)) {
    auto fresh = std::make_unique<Inode>();
    fresh->src_dev = kNamedDev;
    fresh->src_ino = next_named_++;
    fresh->type = attr.st_mode & S_IFMT;
    fresh->generation = next_generation_.fetch_add(1);
    inode = fresh.get();
    assignIdLocked(*inode);
    inodes_.emplace(std::make_pair(fresh->src_dev, fresh->src_ino), std::move(fresh));
    setNameLocked(*inode, &parent, name);
  }
  inode->nlookup++;
  recordLocked(*inode);  // before the reply hands the id to the kernel
  return *inode;
}

void InodeTable::forget(Inode& inode, uint64_t n) {
  if (isRoot(inode) || &inode == stale_.get()) return;
  std::lock_guard lock(mu_);
  if (n > inode.nlookup) {
    spdlog::error("forget of {} references on inode {} that has {}", n, inode.src_ino,
                  inode.nlookup);
    n = inode.nlookup;
  }
  inode.nlookup -= n;
  if (inode.nlookup > 0) {
    if (TakeoverState* st = state_.load(std::memory_order_acquire)) {
      st->setLookups(inode.id, inode.nlookup);
    }
    return;
  }
  // The kernel forgets an inode only after its last release, so no open state
  // is left but an idle backing; close it all the same rather than leak.
  unlistIdleLocked(inode);
  closeBackings(inode);
  freeIfUnusedLocked(&inode);
}

void InodeTable::freeIfUnusedLocked(Inode* inode) {
  while (inode != nullptr && !isRoot(*inode) && inode->nlookup == 0 && inode->nchildren == 0) {
    Inode* parent = inode->parent;
    if (parent != nullptr) {
      if (auto it = names_.find(inode); it != names_.end() && *it == inode) names_.erase(it);
      parent->nchildren--;
    }
    std::vector<PathFd> closed;
    {
      std::lock_guard fds_lock(fds_mu_);
      dropFdLocked(*inode, closed);
    }
    freeIdLocked(*inode);
    if (inode->retired) {
      retired_.erase(inode);
    } else {
      inodes_.erase(std::make_pair(inode->src_dev, inode->src_ino));
    }
    inode = parent;
  }
}

void InodeTable::retire(Inode& inode) {
  std::lock_guard lock(mu_);
  if (inode.retired || isRoot(inode)) return;
  auto it = inodes_.find(std::make_pair(inode.src_dev, inode.src_ino));
  if (it == inodes_.end() || it->second.get() != &inode) return;
  inode.retired = true;
  retired_.emplace(&inode, std::move(it->second));
  inodes_.erase(it);
}

void InodeTable::unlistIdleLocked(Inode& inode) {
  if (!inode.idle_listed) return;
  idle_.erase(inode.idle_pos);
  inode.idle_listed = false;
}

void InodeTable::noteIdle(Inode& inode, size_t cap) {
  std::lock_guard lock(mu_);
  if (inode.retired || cap == 0) {
    unlistIdleLocked(inode);
    std::lock_guard inode_lock(inode.mu);
    closeIdleBacking(inode, *shim_, close_remote_);
    return;
  }
  if (inode.idle_listed) {
    idle_.splice(idle_.end(), idle_, inode.idle_pos);
  } else {
    inode.idle_pos = idle_.insert(idle_.end(), &inode);
    inode.idle_listed = true;
  }
  while (idle_.size() > cap) {
    Inode& oldest = *idle_.front();
    unlistIdleLocked(oldest);
    std::lock_guard inode_lock(oldest.mu);
    // Nothing if it is open again: listed anew at its release.
    closeIdleBacking(oldest, *shim_, close_remote_);
  }
}

void InodeTable::closeIdleCopies(const std::vector<std::string>& rel_paths) {
  std::lock_guard lock(mu_);
  for (auto it = idle_.begin(); it != idle_.end();) {
    Inode& inode = **it++;
    std::lock_guard inode_lock(inode.mu);
    if (!hasIdleBacking(inode) || !inode.backing_is_cache) continue;
    if (std::find(rel_paths.begin(), rel_paths.end(), inode.cached_rel) == rel_paths.end()) continue;
    closeIdleBacking(inode, *shim_);
    unlistIdleLocked(inode);
  }
}

size_t InodeTable::idleCount() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (Inode* inode : idle_) {
    std::lock_guard inode_lock(inode->mu);
    n += hasIdleBacking(*inode) ? 1 : 0;
  }
  return n;
}

std::string InodeTable::relPathOf(const Inode& inode) const {
  std::lock_guard lock(mu_);
  std::vector<const std::string*> names;
  const Inode* at = &inode;
  for (; at->parent != nullptr; at = at->parent) names.push_back(&at->name);
  if (!isRoot(*at)) return "";  // a name on the way is gone
  std::string rel;
  for (auto it = names.rbegin(); it != names.rend(); ++it) {
    if (!rel.empty()) rel += '/';
    rel += **it;
  }
  return rel;
}


// ---- names ------------------------------------------------------------------

Inode* InodeTable::childLocked(Inode& parent, std::string_view name) {
  auto it = names_.find(ByName::Key{&parent, name});
  return it == names_.end() ? nullptr : *it;
}

void InodeTable::setNameLocked(Inode& inode, Inode* parent, std::string_view name) {
  if (isRoot(inode) || (inode.parent == parent && inode.name == name && parent != nullptr)) return;
  for (Inode* up = parent; up != nullptr; up = up->parent) {
    if (up == &inode) return;  // a directory below itself: the remote changed under us
  }
  Inode* old_parent = inode.parent;
  if (old_parent != nullptr) {
    names_.erase(&inode);
    old_parent->nchildren--;
  }
  inode.parent = parent;
  inode.name.assign(name);
  bool nameless = parent == nullptr;
  if (!nameless) {
    parent->nchildren++;
    if (Inode* had = childLocked(*parent, name)) setNameLocked(*had, nullptr, {});
    names_.insert(&inode);
  }
  {
    std::lock_guard fds_lock(fds_mu_);
    // Without a name its fd is the only way back: kept for as long as the inode.
    if (nameless && !inode.nameless_pin && inode.path_fd) {
      inode.nameless_pin = true;
      pinLocked(inode);
    } else if (!nameless && inode.nameless_pin) {
      inode.nameless_pin = false;
      unpinLocked(inode);
    }
  }
  recordLocked(inode);
  if (old_parent != nullptr && old_parent != parent) freeIfUnusedLocked(old_parent);
}

Inode* InodeTable::holdChild(Inode& parent, std::string_view name) {
  std::lock_guard lock(mu_);
  Inode* child = childLocked(parent, name);
  if (child != nullptr) child->nlookup++;  // taken back by a forget(): not recorded
  return child;
}

void InodeTable::unlinked(Inode& parent, std::string_view name, const PathFd& held) {
  names_epoch_.fetch_add(1);
  std::lock_guard lock(mu_);
  Inode* child = childLocked(parent, name);
  if (child == nullptr) return;
  {
    std::lock_guard fds_lock(fds_mu_);
    if (!child->path_fd && held) setPathFdLocked(*child, held);
  }
  setNameLocked(*child, nullptr, {});
}

void InodeTable::renamed(Inode& parent, std::string_view name, Inode& newparent,
                         std::string_view newname, unsigned int flags, const PathFd& held_target) {
  names_epoch_.fetch_add(1);
  std::lock_guard lock(mu_);
  Inode* moved = childLocked(parent, name);
  Inode* target = childLocked(newparent, newname);
  if (target == moved) return;  // the same object under both names: rename does nothing
  if (target != nullptr) {
    std::lock_guard fds_lock(fds_mu_);
    if (!target->path_fd && held_target && !(flags & RENAME_EXCHANGE)) {
      setPathFdLocked(*target, held_target);
    }
  }
  // Each name is taken from its old holder (setNameLocked): the replaced target
  // is left without one, or under RENAME_EXCHANGE takes the moved one's.
  if (target != nullptr) setNameLocked(*target, nullptr, {});
  if (moved != nullptr) setNameLocked(*moved, &newparent, newname);
  if (target != nullptr && (flags & RENAME_EXCHANGE)) setNameLocked(*target, &parent, name);
}

// ---- the O_PATH fd cache ------------------------------------------------------

void InodeTable::setPathFdLocked(Inode& inode, PathFd fd) {
  if (!fd || !fd->valid()) return;
  if (!inode.path_fd) fd_count_++;
  inode.path_fd = std::move(fd);
  if (inode.nameless_pin) return;
  if (!inode.nameless_pin && inode.parent == nullptr && !isRoot(inode)) {
    inode.nameless_pin = true;  // an fd arriving at an inode without a name stays
    pinLocked(inode);
    return;
  }
  touchFdLocked(inode);
}

void InodeTable::touchFdLocked(Inode& inode) {
  if (inode.fd_pins > 0 || !inode.path_fd) return;
  if (inode.fd_listed) {
    fds_.splice(fds_.end(), fds_, inode.fd_pos);
  } else {
    inode.fd_pos = fds_.insert(fds_.end(), &inode);
    inode.fd_listed = true;
  }
}

void InodeTable::pinLocked(Inode& inode) {
  if (inode.fd_pins++ == 0 && inode.fd_listed) {
    fds_.erase(inode.fd_pos);
    inode.fd_listed = false;
  }
}

void InodeTable::unpinLocked(Inode& inode) {
  if (inode.fd_pins == 0) {
    spdlog::error("unpin of inode {} that has no pins", inode.src_ino);
    return;
  }
  if (--inode.fd_pins == 0) touchFdLocked(inode);
}

void InodeTable::dropFdLocked(Inode& inode, std::vector<PathFd>& closed) {
  if (inode.fd_listed) {
    fds_.erase(inode.fd_pos);
    inode.fd_listed = false;
  }
  if (inode.path_fd) {
    fd_count_--;
    closed.push_back(std::move(inode.path_fd));
    inode.path_fd.reset();
  }
}

void InodeTable::evictFdsLocked(std::vector<PathFd>& closed) {
  while (fds_.size() > fd_cap_) dropFdLocked(*fds_.front(), closed);
}

PathFd InodeTable::cachedPathFd(Inode& inode) {
  std::lock_guard fds_lock(fds_mu_);
  touchFdLocked(inode);
  return inode.path_fd;
}

Result<PathFd> InodeTable::planWalk(Inode& inode, PathWalk* walk) {
  std::lock_guard lock(mu_);
  std::lock_guard fds_lock(fds_mu_);
  walk->names_epoch = names_epoch_.load();
  walk->steps.clear();
  for (Inode* at = &inode;; at = at->parent) {
    if (at->path_fd) {
      touchFdLocked(*at);
      if (at == &inode) return at->path_fd;
      walk->from = at->path_fd;
      break;
    }
    if (at->parent == nullptr) {
      return sysError(ESTALE, "inode " + std::to_string(inode.src_ino) + " has no name left");
    }
    walk->steps.push_back({.name = at->name, .dev = at->src_dev, .ino = at->src_ino,
                           .type = at->type});
  }
  std::reverse(walk->steps.begin(), walk->steps.end());
  return PathFd();
}

PathFd InodeTable::installWalk(Inode& inode, const PathWalk& walk, std::vector<UniqueFd> fds) {
  std::vector<PathFd> closed;  // closed after the locks
  std::lock_guard lock(mu_);
  std::lock_guard fds_lock(fds_mu_);
  PathFd last;
  for (size_t i = 0; i < fds.size() && i < walk.steps.size(); i++) {
    auto fd = std::make_shared<const UniqueFd>(std::move(fds[i]));
    const PathWalk::Step& step = walk.steps[i];
    Inode* at = nullptr;
    if (i + 1 == walk.steps.size()) {
      at = &inode;  // the caller's reference keeps it, retired or not
    } else if (auto it = inodes_.find(std::make_pair(step.dev, step.ino)); it != inodes_.end()) {
      at = it->second.get();
    }
    if (at != nullptr && !at->path_fd) setPathFdLocked(*at, fd);
    last = at != nullptr && at->path_fd ? at->path_fd : fd;
  }
  evictFdsLocked(closed);
  return last;
}

void InodeTable::pinPathFd(Inode& inode, const PathFd& fd) {
  std::lock_guard fds_lock(fds_mu_);
  if (!inode.path_fd) setPathFdLocked(inode, fd);
  pinLocked(inode);
}

void InodeTable::unpinPathFd(Inode& inode) {
  std::vector<PathFd> closed;
  std::lock_guard fds_lock(fds_mu_);
  unpinLocked(inode);
  evictFdsLocked(closed);
}

size_t InodeTable::pathFdCount() const {
  std::lock_guard fds_lock(fds_mu_);
  return fd_count_;
}

void InodeTable::dropUnpinnedFds() {
  std::vector<PathFd> closed;
  std::lock_guard fds_lock(fds_mu_);
  while (!fds_.empty()) dropFdLocked(*fds_.front(), closed);
}

}  // namespace hotshard::fuse
