// Mounting /dev/fuse ourselves (libfuse 3.14 would hide the device fd that the
// passthrough ioctls need) and reading the mount table.
//
// Kernel interface: mount(2) of type "fuse.hotshard" with "fd=N,rootmode=...,
// user_id=,group_id=" options (fs/fuse/inode.c), which needs CAP_SYS_ADMIN;
// umount2(2), falling back to MNT_DETACH on EBUSY; the fusectl file system's
// connections/<dev>/abort (fs/fuse/control.c); /proc/self/mountinfo.
// Errors keep the errno and name the path: "mount fuse.hotshard on /mnt/x: ...".
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "base/result.h"

namespace hotshard::fuse {

inline constexpr const char* kFsType = "fuse.hotshard";

// Opens /dev/fuse and mounts it on `mountpoint` (allow_other, default_permissions:
// the kernel checks permissions against the remote's modes). Returns the device fd.
Result<int> mountFuse(const std::string& mountpoint, const std::string& source);

// Unmounts; when busy, detaches lazily and says so in the result message.
Result<std::string> unmountFuse(const std::string& mountpoint);

// Aborts the FUSE connection of the file system with device `dev` through fusectl,
// so requests still in flight on a lazily detached mount fail instead of hanging.
void abortConnection(dev_t dev);

struct MountEntry {
  dev_t dev = 0;
  std::string mountpoint;
  std::string fstype;
  std::string source;
};

Result<std::vector<MountEntry>> readMountTable();

// The mount that is on top at exactly `path` (already absolute and normal), if any.
std::optional<MountEntry> topMountAt(const std::vector<MountEntry>& table, const std::string& path);

}  // namespace hotshard::fuse
