#include "base/file_copy.h"

#include <sys/stat.h>
#include <unistd.h>

#include <memory>

namespace hotshard {

Status copyFileInPlace(int src_fd, int dst_fd) {
  struct stat st {};
  if (::fstat(src_fd, &st) != 0) return lastSysError("stat copy");
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  off_t off = 0;
  while (off < st.st_size) {
    ssize_t n = ::pread(src_fd, buf.get(), kChunk, off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return lastSysError("read copy");
    if (n == 0) break;  // shrunk meanwhile: the truncate below follows what was read
    for (ssize_t done = 0; done < n;) {
      ssize_t w = ::pwrite(dst_fd, buf.get() + done, static_cast<size_t>(n - done), off + done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return lastSysError("write remote");
      done += w;
    }
    off += n;
  }
  if (::ftruncate(dst_fd, off) != 0) return lastSysError("truncate remote");
  if (::fsync(dst_fd) != 0) return lastSysError("fsync remote");
  return Ok{};
}

}  // namespace hotshard
