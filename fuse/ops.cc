// The libfuse operation table: one trampoline per op, each finding the
// FileSystem through fuse_req_userdata() and running its handler in
// guardRequest() (reply.h), so no exception reaches libfuse's C frames and each
// request gets exactly one reply.
#include "fuse/filesystem.h"
#include "fuse/reply.h"

namespace hotshard::fuse {

namespace {

FileSystem& fsOf(void* userdata) {
  return *static_cast<FileSystem*>(static_cast<SessionUserdata*>(userdata)->fs);
}
FileSystem& fsOf(fuse_req_t req) { return fsOf(fuse_req_userdata(req)); }

// Runs fs.method(req, args...) in the guard, named `op` in logs.
#define HS_GUARDED(op, method, ...) \
  guardRequest(req, op, [&] { return fsOf(req).method(req, ##__VA_ARGS__); })

void opInit(void* userdata, fuse_conn_info* conn) {
  guardNoReply("init", [&] { fsOf(userdata).init(conn); });
}
void opLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  HS_GUARDED("lookup", lookup, parent, name);
}
void opForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  guardNoReply("forget", [&] { fsOf(req).forget(ino, nlookup); });
  fuse_reply_none(req);
}
void opForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  guardNoReply("batch_forget", [&] {
    for (size_t i = 0; i < count; i++) fsOf(req).forget(forgets[i].ino, forgets[i].nlookup);
  });
  fuse_reply_none(req);
}
void opGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  HS_GUARDED("getattr", getattr, ino);
}
void opSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  HS_GUARDED("setattr", setattr, ino, attr, valid, fi);
}
void opReadlink(fuse_req_t req, fuse_ino_t ino) { HS_GUARDED("readlink", readlink, ino); }
void opMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  HS_GUARDED("mknod", mknod, parent, name, mode, rdev);
}
void opMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  HS_GUARDED("mkdir", mkdir, parent, name, mode);
}
void opSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  HS_GUARDED("symlink", symlink, link, parent, name);
}
void opLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t parent, const char* name) {
  HS_GUARDED("link", link, ino, parent, name);
}
void opUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  HS_GUARDED("unlink", unlink, parent, name);
}
void opRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  HS_GUARDED("rmdir", rmdir, parent, name);
}
void opRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  HS_GUARDED("rename", rename, parent, name, newparent, newname, flags);
}
void opOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) { HS_GUARDED("open", open, ino, fi); }
void opCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  HS_GUARDED("create", create, parent, name, mode, fi);
}
void opRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  HS_GUARDED("read", read, ino, size, off);
}
void opWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
             fuse_file_info*) {
  HS_GUARDED("write", write, ino, buf, size, off);
}
void opFlush(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) { HS_GUARDED("flush", flush, ino); }
void opRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  HS_GUARDED("release", release, ino, fi->fh);
}
void opFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  HS_GUARDED("fsync", fsync, ino, datasync);
}
void opFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                 fuse_file_info*) {
  HS_GUARDED("fallocate", fallocate, ino, mode, offset, length);
}
void opLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  HS_GUARDED("lseek", lseek, ino, off, whence);
}
void opIoctl(fuse_req_t req, fuse_ino_t ino, unsigned int cmd, void*, fuse_file_info*,
             unsigned flags, const void* in_buf, size_t in_bufsz, size_t out_bufsz) {
  HS_GUARDED("ioctl", ioctl, ino, cmd, flags, in_buf, in_bufsz, out_bufsz);
}
void opOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  HS_GUARDED("opendir", opendir, ino, fi);
}
void opReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  HS_GUARDED("readdir", readdir, ino, size, off, fi, false);
}
void opReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  HS_GUARDED("readdirplus", readdir, ino, size, off, fi, true);
}
void opReleasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  HS_GUARDED("releasedir", releasedir, fi);
}
void opFsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi) {
  HS_GUARDED("fsyncdir", fsyncdir, ino, fi, datasync);
}
void opStatfs(fuse_req_t req, fuse_ino_t) { HS_GUARDED("statfs", statfs); }
void opAccess(fuse_req_t req, fuse_ino_t ino, int mask) { HS_GUARDED("access", access, ino, mask); }
void opGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  HS_GUARDED("getxattr", getxattr, ino, name, size);
}
void opListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  HS_GUARDED("listxattr", listxattr, ino, size);
}
void opSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  HS_GUARDED("setxattr", setxattr, ino, name, value, size, flags);
}
void opRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  HS_GUARDED("removexattr", removexattr, ino, name);
}

#undef HS_GUARDED

fuse_lowlevel_ops makeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = opInit;
  ops.lookup = opLookup;
  ops.forget = opForget;
  ops.forget_multi = opForgetMulti;
  ops.getattr = opGetattr;
  ops.setattr = opSetattr;
  ops.readlink = opReadlink;
  ops.mknod = opMknod;
  ops.mkdir = opMkdir;
  ops.symlink = opSymlink;
  ops.link = opLink;
  ops.unlink = opUnlink;
  ops.rmdir = opRmdir;
  ops.rename = opRename;
  ops.open = opOpen;
  ops.create = opCreate;
  ops.read = opRead;
  ops.write = opWrite;
  ops.flush = opFlush;
  ops.release = opRelease;
  ops.fsync = opFsync;
  ops.fallocate = opFallocate;
  ops.lseek = opLseek;
  ops.ioctl = opIoctl;
  ops.opendir = opOpendir;
  ops.readdir = opReaddir;
  ops.readdirplus = opReaddirplus;
  ops.releasedir = opReleasedir;
  ops.fsyncdir = opFsyncdir;
  ops.statfs = opStatfs;
  ops.access = opAccess;
  ops.getxattr = opGetxattr;
  ops.listxattr = opListxattr;
  ops.setxattr = opSetxattr;
  ops.removexattr = opRemovexattr;
  return ops;
}

}  // namespace

const fuse_lowlevel_ops& FileSystem::ops() {
  static const fuse_lowlevel_ops table = makeOps();
  return table;
}

}  // namespace hotshard::fuse
