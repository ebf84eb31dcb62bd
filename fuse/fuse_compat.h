// Kernel FUSE ABI that Debian 12's <linux/fuse.h> (7.38) and libfuse 3.14
// predate or do not wire up: passthrough (Linux >= 6.9, protocol 7.40), the
// FUSE_TMPFILE request (7.37, which libfuse 3.14 answers ENOSYS) and the
// FUSE_NOTIFY_INC_EPOCH notification (Linux >= 6.16, 7.44). One place, so a
// newer header or libfuse >= 3.17 replaces it wholesale.
#pragma once

#include <linux/fuse.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace hotshard::fusecompat {

// fuse_init_out.flags2 bit 5 == FUSE_PASSTHROUGH (1ULL << 37) of the 64-bit flags.
inline constexpr uint32_t kInitFlags2Passthrough = 1u << 5;
inline constexpr uint32_t kInitExt = 1u << 30;  // FUSE_INIT_EXT
// fuse_open_out.open_flags
inline constexpr uint32_t kOpenPassthrough = 1u << 7;  // FOPEN_PASSTHROUGH

// 7.40 layout of fuse_init_out: the u32 after flags2 is max_stack_depth.
struct InitOut {
  uint32_t major;
  uint32_t minor;
  uint32_t max_readahead;
  uint32_t flags;
  uint16_t max_background;
  uint16_t congestion_threshold;
  uint32_t max_write;
  uint32_t time_gran;
  uint16_t max_pages;
  uint16_t map_alignment;
  uint32_t flags2;
  uint32_t max_stack_depth;
  uint32_t unused[6];
};
static_assert(sizeof(InitOut) == 64, "fuse_init_out is 64 bytes since 7.23");

// 7.40 layout of fuse_open_out: the former padding is the backing id.
struct OpenOut {
  uint64_t fh;
  uint32_t open_flags;
  int32_t backing_id;
};
static_assert(sizeof(OpenOut) == sizeof(struct fuse_open_out));

// FUSE_TMPFILE (opcode 51): fuse_create_in + the name "/" (the tmpfile dentry's
// name, fs/namei.c vfs_tmpfile), answered with fuse_entry_out + fuse_open_out
// as FUSE_CREATE is (fs/fuse/dir.c fuse_create_open). No FUSE_INIT flag asks for
// it; an ENOSYS answer makes the kernel fail every later O_TMPFILE open on the
// connection with EOPNOTSUPP (fs/fuse/dir.c fuse_tmpfile, fc->no_tmpfile).
inline constexpr uint32_t kOpTmpfile = 51;
static_assert(kOpTmpfile == FUSE_TMPFILE);

// A notification (fuse_out_header.unique == 0, .error == the code, no payload):
// every dentry the kernel holds is invalid from now on, so the next path walk
// through it looks the name up again (fs/fuse/dir.c fuse_dentry_revalidate
// compares the dentry's epoch with fc->epoch). Linux < 6.16 answers EINVAL.
inline constexpr int32_t kNotifyIncEpoch = 8;

// FUSE_NOTIFY_RESEND (Linux >= 6.9, 7.40): a notification with no payload; the
// kernel moves every request that was read but not answered back to its
// pending queue, with FUSE_UNIQUE_RESEND set in its unique, so a process that
// adopts the connection reads them again (fs/fuse/dev.c fuse_resend). Older
// kernels answer the write with an error (ENOSYS in fuse_notify's default).
inline constexpr int32_t kNotifyResend = 7;
inline constexpr uint64_t kUniqueResend = 1ull << 63;

struct BackingMap {
  int32_t fd;
  uint32_t flags;
  uint64_t padding;
};

inline constexpr unsigned long kDevIocBackingOpen = _IOW(229, 1, BackingMap);
inline constexpr unsigned long kDevIocBackingClose = _IOW(229, 2, uint32_t);

}  // namespace hotshard::fusecompat
