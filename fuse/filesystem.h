// fuse/: the namespace hotshard mounts over a remote directory. Every object is
// reached through an O_PATH fd opened relative to the remote root's fd (taken
// before the mount, so mounting over the remote's own path works); every regular
// file open is answered with kernel passthrough to a backing file.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/result.h"
#include "fuse/cache_hooks.h"
#include "fuse/passthrough_shim.h"

namespace hotshard::fuse {

// How long the kernel may trust what it learnt from us.
struct Consistency {
  enum class Mode { kStrict, kTtl, kImmutable };
  Mode mode = Mode::kStrict;
  double ttl_seconds = 0;  // kTtl only

  static Result<Consistency> parse(const std::string& text);  // strict | ttl=N | immutable
  std::string toString() const;
  double entryTimeout() const;
  double attrTimeout() const;
  double negativeTimeout() const;
  bool keepCache() const { return mode != Mode::kStrict; }
};

// One remote object the kernel knows. Lock order: FileSystem::table_mu_ before
// Inode::mu; never take table_mu_ while holding an Inode::mu.
struct Inode {
  int fd = -1;  // O_PATH, owned
  dev_t src_dev = 0;
  ino_t src_ino = 0;
  mode_t type = 0;  // S_IFMT bits
  uint64_t generation = 0;
  uint64_t nlookup = 0;  // guarded by FileSystem::table_mu_
  // Out of the table: lookups now make a new inode for the same remote object
  // (see FileSystem::retire). Guarded by FileSystem::table_mu_.
  bool retired = false;

  // Open state, guarded by mu. The kernel lets one FUSE inode have one backing
  // file at a time, so all opens share it: opened on first open, read-write
  // when the remote allows, closed on last release.
  std::mutex mu;
  int nopen = 0;
  int backing_fd = -1;
  int backing_id = -1;  // >= 0 when registered with the kernel for passthrough
  bool backing_writable = false;
  int backing_rw_errno = 0;  // why a read-write open was refused
  // The backing file is the cache's copy of cached_rel (read-only), not the remote,
  // made from the remote as it was in cached_against.
  bool backing_is_cache = false;
  std::string cached_rel;
  struct stat cached_against {};
  // One entry per open for writing: the path it began writing at (endWrite must
  // name the same one, even if the file was renamed since).
  std::vector<std::string> writer_rels;
  // The remote's attributes as last seen (lookup, getattr, open); what the
  // ttl and immutable modes validate the cached copy against.
  struct stat last_stat {};
  double last_stat_time = 0;  // CLOCK_MONOTONIC seconds; 0 = never
};

struct FileSystemOptions {
  int remote_root_fd = -1;  // O_PATH|O_DIRECTORY, borrowed
  Consistency consistency;
  CacheHooks* cache = nullptr;  // borrowed; nullptr: every open goes to the remote
};

class FileSystem {
 public:
  FileSystem(const FileSystemOptions& opts, PassthroughShim* shim);
  ~FileSystem();
  FileSystem(const FileSystem&) = delete;
  FileSystem& operator=(const FileSystem&) = delete;

  static const fuse_lowlevel_ops& ops();
  SessionUserdata* userdata() { return &userdata_; }

  PassthroughShim& shim() { return *shim_; }
  const Consistency& consistency() const { return opts_.consistency; }
  size_t inodeCount() const;
  uint64_t userspaceReadBytes() const { return userspace_read_bytes_.load(); }
  uint64_t passthroughOpens() const { return passthrough_opens_.load(); }
  uint64_t userspaceOpens() const { return userspace_opens_.load(); }
  uint64_t cacheOpens() const { return cache_opens_.load(); }
  uint64_t remoteOpens() const { return remote_opens_.load(); }
  uint64_t cacheConflicts() const { return cache_conflicts_.load(); }

  // The handlers; each replies exactly once. Public for the static trampolines.
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, uint64_t nlookup);
  void getattr(fuse_req_t req, fuse_ino_t ino);
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name);
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name);
  void rmdir(fuse_req_t req, fuse_ino_t parent, const char* name);
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi);
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
  void write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off);
  void flush(fuse_req_t req, fuse_ino_t ino);
  void release(fuse_req_t req, fuse_ino_t ino, uint64_t fh);
  void fsync(fuse_req_t req, fuse_ino_t ino, int datasync);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi,
               bool plus);
  void releasedir(fuse_req_t req, fuse_file_info* fi);
  void fsyncdir(fuse_req_t req, fuse_file_info* fi, int datasync);
  void statfs(fuse_req_t req);
  void access(fuse_req_t req, fuse_ino_t ino, int mask);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags);
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

 private:
  Inode& inodeOf(fuse_ino_t ino);
  // Looks up name under parent, adds one kernel reference and fills e.
  Status doLookup(fuse_ino_t parent, const char* name, fuse_entry_param* e);
  void forgetOne(Inode& inode, uint64_t n);
  void replyEntryOrErr(fuse_req_t req, fuse_ino_t parent, const char* name, int err);
  // Opens (or reuses) the inode's backing file: the cache's valid copy for a
  // read-only first open when there is one, else the remote file. On success
  // nopen is incremented; the result is the backing id (-1: no passthrough).
  Result<int> acquireBacking(Inode& inode, int flags);
  void releaseBacking(Inode& inode, bool was_writer);
  // rel_path of an inode, from the kernel's name for its O_PATH fd ("" if it
  // is not (or no longer) under the remote root, e.g. deleted).
  std::string relPathOf(const Inode& inode) const;
  std::string childRelPath(fuse_ino_t parent, const char* name);
  void invalidate(const std::string& rel);
  void invalidateTree(const std::string& rel);
  // Attributes to validate a cached copy against, per the consistency mode.
  Result<struct stat> remoteAttrsForOpen(Inode& inode);
  void rememberStat(Inode& inode, const struct stat& st);
  // Takes the inode out of the table so that the next lookup of its name makes
  // a new kernel inode, free to have another backing file. Its open files keep
  // theirs; it is freed on its last forget.
  void retire(Inode& inode);

  FileSystemOptions opts_;
  PassthroughShim* shim_;
  SessionUserdata userdata_;
  std::unique_ptr<Inode> root_;
  mutable std::mutex table_mu_;
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<Inode>> inodes_;  // guarded by table_mu_
  std::map<Inode*, std::unique_ptr<Inode>> retired_;                  // guarded by table_mu_
  std::atomic<uint64_t> next_generation_{1};
  std::atomic<uint64_t> userspace_read_bytes_{0};
  std::atomic<uint64_t> passthrough_opens_{0};
  std::atomic<uint64_t> userspace_opens_{0};
  std::atomic<uint64_t> cache_opens_{0};
  std::atomic<uint64_t> remote_opens_{0};
  std::atomic<uint64_t> cache_conflicts_{0};
  std::string remote_prefix_;  // the kernel's name of the remote root, for relPathOf
};

}  // namespace hotshard::fuse
