#include "fuse/inode_table.h"

#include <fcntl.h>
#include <limits.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>

#include "fuse/passthrough_shim.h"

namespace hotshard::fuse {

std::string procPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

namespace {
// The kernel's name of what fd refers to ("" when it cannot say). proc_fd_dir:
// /proc/self/fd opened O_PATH, so the readlink walks one component, not four
// (every open asks: relPathOf); -1 walks the whole /proc/self/fd/N.
std::string kernelNameOf(int fd, int proc_fd_dir = -1) {
  char buf[PATH_MAX];
  ssize_t n = proc_fd_dir >= 0
                  ? ::readlinkat(proc_fd_dir, std::to_string(fd).c_str(), buf, sizeof(buf) - 1)
                  : ::readlink(procPath(fd).c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}
}  // namespace

InodeTable::InodeTable(int remote_root_fd, PassthroughShim* shim)
    : shim_(shim), proc_fd_dir_(::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC)) {
  root_ = std::make_unique<Inode>();
  root_->fd = ::openat(remote_root_fd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
  struct stat st {};
  if (root_->fd >= 0) ::fstat(root_->fd, &st);
  root_->src_dev = st.st_dev;
  root_->src_ino = st.st_ino;
  root_->type = S_IFDIR;
  root_->nlookup = 2;  // never forgotten
  remote_prefix_ = kernelNameOf(remote_root_fd);
}

InodeTable::~InodeTable() {
  std::lock_guard lock(mu_);
  for (auto& [key, inode] : inodes_) closeAll(*inode);
  for (auto& [ptr, inode] : retired_) closeAll(*inode);
  if (root_->fd >= 0) ::close(root_->fd);
  if (proc_fd_dir_ >= 0) ::close(proc_fd_dir_);
}

void closeIdleBacking(Inode& inode, PassthroughShim& shim) {
  if (!hasIdleBacking(inode)) return;
  if (inode.backing_id >= 0) shim.closeBacking(inode.backing_id);
  ::close(inode.backing_fd);
  inode.backing_id = -1;
  inode.backing_fd = -1;
  inode.backing_writable = false;
  inode.backing_rw_errno = 0;
  inode.backing_is_cache = false;
  inode.cached_rel.clear();
}

void InodeTable::closeAll(Inode& inode) {
  if (inode.backing_id >= 0) shim_->closeBacking(inode.backing_id);
  if (inode.backing_fd >= 0) ::close(inode.backing_fd);
  // An adopted copy left here (teardown with files open) stays dirty in the
  // cache: the next start's recovery writes it back (docs/cache.md).
  if (inode.remote_wb_fd >= 0) ::close(inode.remote_wb_fd);
  ::close(inode.fd);
}

Inode& InodeTable::inodeOf(fuse_ino_t ino) {
  if (ino == FUSE_ROOT_ID) return *root_;
  return *reinterpret_cast<Inode*>(ino);
}

fuse_ino_t InodeTable::idOf(const Inode& inode) const {
  return isRoot(inode) ? FUSE_ROOT_ID : reinterpret_cast<fuse_ino_t>(&inode);
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

Inode& InodeTable::addLookup(int newfd, const struct stat& attr) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(attr.st_dev, attr.st_ino);
  Inode* inode;
  if (key.first == root_->src_dev && key.second == root_->src_ino) {
    inode = root_.get();  // ".." at the top, or a bind of the root
    ::close(newfd);
  } else if (auto it = inodes_.find(key); it != inodes_.end()) {
    inode = it->second.get();
    ::close(newfd);  // same object under another name (a hard link): keep the first fd
  } else {
    auto fresh = std::make_unique<Inode>();
    fresh->fd = newfd;
    fresh->src_dev = key.first;
    fresh->src_ino = key.second;
    fresh->type = attr.st_mode & S_IFMT;
    fresh->generation = next_generation_.fetch_add(1);
    inode = fresh.get();
    inodes_.emplace(key, std::move(fresh));
  }
  if (inode != root_.get()) inode->nlookup++;
  return *inode;
}

Inode* InodeTable::addLookupIfKnown(const struct stat& attr) {
  std::lock_guard lock(mu_);
  auto key = std::make_pair(attr.st_dev, attr.st_ino);
  if (key.first == root_->src_dev && key.second == root_->src_ino) return root_.get();
  auto it = inodes_.find(key);
  if (it == inodes_.end()) return nullptr;
  it->second->nlookup++;
  return it->second.get();
}

void InodeTable::forget(Inode& inode, uint64_t n) {
  if (isRoot(inode)) return;
  std::lock_guard lock(mu_);
  if (n > inode.nlookup) {
    spdlog::error("forget of {} references on inode {} that has {}", n, inode.src_ino,
                  inode.nlookup);
    n = inode.nlookup;
  }
  inode.nlookup -= n;
  if (inode.nlookup > 0) return;
  // The kernel forgets an inode only after its last release, so no open state
  // is left but an idle backing; close it all the same rather than leak.
  unlistIdleLocked(inode);
  closeAll(inode);
  if (inode.retired) {
    retired_.erase(&inode);
  } else {
    inodes_.erase(std::make_pair(inode.src_dev, inode.src_ino));
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
    closeIdleBacking(inode, *shim_);
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
    closeIdleBacking(oldest, *shim_);  // nothing if it is open again: listed anew at its release
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
  if (isRoot(inode)) return "";
  std::string path = kernelNameOf(inode.fd, proc_fd_dir_);
  static const std::string kDeleted = " (deleted)";
  if (path.empty() || (path.size() > kDeleted.size() &&
                       path.compare(path.size() - kDeleted.size(), kDeleted.size(), kDeleted) == 0)) {
    return "";
  }
  auto under = [&](const std::string& root) -> std::string {
    std::string prefix = root == "/" ? "/" : root + "/";
    return path.compare(0, prefix.size(), prefix) == 0 ? path.substr(prefix.size()) : "";
  };
  std::string rel = under(remote_prefix_);
  // The kernel's name of the remote root changes when the remote's mount is
  // detached (a FUSE remote whose server died unmounts itself): ask again.
  if (rel.empty()) rel = under(kernelNameOf(root_->fd, proc_fd_dir_));
  return rel;
}

}  // namespace hotshard::fuse
