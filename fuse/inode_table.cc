#include "fuse/inode_table.h"

#include <fcntl.h>
#include <limits.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include "fuse/passthrough_shim.h"

namespace hotshard::fuse {

std::string procPath(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

namespace {
// The kernel's name of what fd refers to ("" when it cannot say).
std::string kernelNameOf(int fd) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(procPath(fd).c_str(), buf, sizeof(buf) - 1);
  return n > 0 ? std::string(buf, static_cast<size_t>(n)) : std::string();
}
}  // namespace

InodeTable::InodeTable(int remote_root_fd, PassthroughShim* shim) : shim_(shim) {
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
  // is left; close it all the same rather than leak.
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

std::string InodeTable::relPathOf(const Inode& inode) const {
  if (isRoot(inode)) return "";
  std::string path = kernelNameOf(inode.fd);
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
  if (rel.empty()) rel = under(kernelNameOf(root_->fd));
  return rel;
}

}  // namespace hotshard::fuse
