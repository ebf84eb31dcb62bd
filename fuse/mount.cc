#include "fuse/mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace hotshard::fuse {

Result<int> mountFuse(const std::string& mountpoint, const std::string& source) {
  struct stat st;
  if (::stat(mountpoint.c_str(), &st) < 0) return lastSysError("stat mount point " + mountpoint);
  if (!S_ISDIR(st.st_mode)) {
    return makeError(Errc::kInvalidArgument, "mount point " + mountpoint + " is not a directory");
  }
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return lastSysError("open /dev/fuse");
  std::string opts = "fd=" + std::to_string(fd) + ",rootmode=" +
                     (std::ostringstream() << std::oct << (st.st_mode & S_IFMT)).str() +
                     ",user_id=" + std::to_string(::geteuid()) +
                     ",group_id=" + std::to_string(::getegid()) +
                     ",allow_other,default_permissions";
  if (::mount(source.c_str(), mountpoint.c_str(), kFsType, MS_NOSUID | MS_NODEV, opts.c_str()) <
      0) {
    Error err = lastSysError("mount " + std::string(kFsType) + " on " + mountpoint);
    ::close(fd);
    return err;
  }
  return fd;
}

Result<std::string> unmountFuse(const std::string& mountpoint) {
  if (::umount2(mountpoint.c_str(), UMOUNT_NOFOLLOW) == 0) return std::string("unmounted");
  if (errno != EBUSY) return lastSysError("umount " + mountpoint);
  if (::umount2(mountpoint.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) < 0) {
    return lastSysError("umount -l " + mountpoint);
  }
  return std::string("files were still open: detached lazily");
}

void abortConnection(dev_t dev) {
  const char* dir = "/sys/fs/fuse/connections";
  struct stat st;
  if (::stat((std::string(dir) + "/" + std::to_string(dev)).c_str(), &st) < 0) {
    ::mount("fusectl", dir, "fusectl", 0, nullptr);  // absent on some hosts until mounted
  }
  std::ofstream abort(std::string(dir) + "/" + std::to_string(dev) + "/abort");
  if (abort) abort << "1";
}

namespace {

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); i++) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; k++) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out.push_back(static_cast<char>(v));
        i += 3;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

}  // namespace

Result<std::vector<MountEntry>> readMountTable() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return lastSysError("open /proc/self/mountinfo");
  std::vector<MountEntry> table;
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mountpoint options [optional...] - fstype source superopts
    std::istringstream fields(line);
    std::string id, parent, devno, root, mountpoint, word;
    fields >> id >> parent >> devno >> root >> mountpoint;
    while (fields >> word && word != "-") {
    }
    MountEntry e;
    fields >> e.fstype >> e.source;
    unsigned major = 0, minor = 0;
    if (std::sscanf(devno.c_str(), "%u:%u", &major, &minor) == 2) e.dev = makedev(major, minor);
    e.mountpoint = unescape(mountpoint);
    e.source = unescape(e.source);
    table.push_back(std::move(e));
  }
  return table;
}

std::optional<MountEntry> topMountAt(const std::vector<MountEntry>& table,
                                     const std::string& path) {
  std::optional<MountEntry> top;
  for (const auto& e : table) {
    if (e.mountpoint == path) top = e;  // later lines are mounted on top
  }
  return top;
}

}  // namespace hotshard::fuse
