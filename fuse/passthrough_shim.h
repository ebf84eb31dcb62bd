// The passthrough shim: everything hotshard needs from the kernel's FUSE
// passthrough, on top of libfuse 3.14, which has no API for it.
//
//  * custom I/O on /dev/fuse: read() sees every request (counted by opcode, and the
//    FUSE_INIT request tells whether the kernel offers passthrough); writev() patches
//    the INIT reply to ask for it (FUSE_INIT_EXT, FUSE_PASSTHROUGH, max_stack_depth=1);
//  * openBacking()/closeBacking(): FUSE_DEV_IOC_BACKING_OPEN/CLOSE on the device fd;
//  * replyOpen()/replyCreate(): raw fuse_open_out with FOPEN_PASSTHROUGH + backing id;
//  * FUSE_TMPFILE, which libfuse 3.14 would answer ENOSYS, reaches the create
//    handler as a FUSE_CREATE with an empty name (isTmpfileCreate());
//  * takeover (docs/restart.md): the kernel's FUSE_INIT request goes to an
//    observer before its reply is written (the takeover state keeps it); a
//    successor hands libfuse that request again (adopt(): a synthetic unique,
//    its reply swallowed, never written), then FUSE_NOTIFY_RESEND
//    (resendUnanswered()) queues again what the predecessor read but never
//    answered; a RELEASE so resent may have been processed already and is
//    answered here without reaching the file system (a backing then stays
//    registered until the inode's forget, never closed while in use);
//  * invalidateAllEntries(), invalidateInode(): FUSE_NOTIFY_INC_EPOCH and
//    FUSE_NOTIFY_INVAL_INODE, raw on the device fd (libfuse 3.14 has no call for
//    the first and no session at hand for the second).
//
// When the kernel does not offer passthrough, or refuses a backing file, the
// caller serves reads and writes in user space; reason() says why.
//
// Kernel rules it follows (fs/fuse/passthrough.c, inode.c, iomode.c, Linux >= 6.9):
//  * passthrough is offered in FUSE_INIT only with FUSE_INIT_EXT; it excludes the
//    writeback cache, and needs max_stack_depth >= 1 in the reply;
//  * FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN in the initial user
//    namespace (EPERM otherwise): checked once after INIT with /dev/null;
//  * a passthrough open that also asks for FOPEN_KEEP_CACHE or FOPEN_DIRECT_IO
//    fails with EIO (seen on 6.18): the open reply drops both;
//  * one backing file per inode at a time (iomode.c: EBUSY for another).
// Threads: the I/O hooks run on every libfuse worker; counters are atomics,
// pending_mu_, init_mu_ and reason_mu_ are leaves (never held together).
// No exception leaves the I/O hooks (they are called from libfuse's C frames).
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <string_view>
#include <unordered_map>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "base/result.h"

struct fuse_in_header;  // <linux/fuse.h>
namespace hotshard::fusecompat {
struct InitOut;
}

namespace hotshard::fuse {

inline constexpr size_t kMaxOpcode = 64;

class PassthroughShim;

// Is this FUSE_CREATE a FUSE_TMPFILE (open(dir, O_TMPFILE)) in disguise? The shim
// rewrites FUSE_TMPFILE (same fuse_create_in, same entry + open reply) into a
// FUSE_CREATE with the name "" (the kernel sends "/"), a name no real CREATE
// carries, so the handler gets a fuse_req_t with the caller's credentials and
// answers it exactly once through libfuse.
inline bool isTmpfileCreate(const char* name) { return name[0] == '\0'; }

// What fuse_session_new() gets as userdata: the shim's I/O hooks and the file
// system's handlers both find their object through it.
struct SessionUserdata {
  PassthroughShim* shim;
  void* fs;
};

class PassthroughShim {
 public:
  // want == false: never ask the kernel for passthrough (the userspace path, for
  // tests and hosts where passthrough misbehaves).
  explicit PassthroughShim(bool want) : want_(want) {}

  // Installs the custom I/O on `se` for the already-mounted /dev/fuse fd.
  // libfuse owns devfd afterwards (closed by fuse_session_destroy).
  Status attach(struct fuse_session* se, int devfd);

  // Called with the kernel's FUSE_INIT request (fuse_in_header + fuse_init_in)
  // and whether the reply asks for passthrough, just before the reply is
  // written. Set before the session runs.
  using InitObserver = std::function<void(const void* request, size_t size, bool passthrough)>;
  void setInitObserver(InitObserver observer) { init_observer_ = std::move(observer); }
  // A successor on a live connection: the first read hands libfuse `request`
  // (the predecessor's FUSE_INIT, with a unique of our own) and its reply is
  // not written; passthrough is as the predecessor's kernel agreed. Before the
  // session runs.
  void adopt(std::vector<uint8_t> init_request, bool passthrough);
  // FUSE_NOTIFY_RESEND (after adopt's INIT was processed). An error on kernels
  // before 6.9: requests the predecessor read then wait until their callers
  // give up (an interrupted syscall) or the connection is aborted.
  Status resendUnanswered();
  // Hand-over: after this, ioRead reads nothing more (returns as if the
  // session ended) once the current read returns.
  void stopReading();

  // Blocks until the reply to FUSE_INIT has been written (the connection is
  // live and the passthrough decision made); false on timeout.
  bool waitForInit(int timeout_ms);

  // After FUSE_INIT: did the kernel agree to passthrough?
  bool active() const { return active_.load(std::memory_order_acquire); }
  std::string reason() const;

  // Registers fd as a backing file; returns the backing id.
  Result<int> openBacking(int fd);
  void closeBacking(int backing_id);

  // Replies to FUSE_OPEN / FUSE_CREATE with passthrough to backing_id
  // (backing_id < 0: no passthrough, fi's flags as usual).
  int replyOpen(fuse_req_t req, const fuse_file_info& fi, int backing_id);
  int replyCreate(fuse_req_t req, const fuse_entry_param& e, const fuse_file_info& fi,
                  int backing_id);

  // FUSE_NOTIFY_INC_EPOCH: every name the kernel caches is looked up again on
  // its next use (see fuse_compat.h). Safe inside a handler (the kernel takes no
  // lock for it). An error on kernels before 6.16 (EINVAL).
  Status invalidateAllEntries();
  // FUSE_NOTIFY_INVAL_INODE over the whole file: the kernel drops the inode's
  // cached attributes and pages (for a directory, its cached listing;
  // fs/fuse/inode.c fuse_reverse_inval_inode). Safe inside a handler (no inode
  // lock taken).
  Status invalidateInode(uint64_t nodeid);
  // FUSE_NOTIFY_INVAL_INODE with a negative offset: the cached attributes
  // alone, the pages kept (fuse_reverse_inval_inode). Safe inside a handler.
  Status invalidateAttrs(uint64_t nodeid);

  // Requests read from /dev/fuse, by opcode (FUSE_READ == 15, ...).
  uint64_t requestCount(uint32_t opcode) const {
    return opcode < kMaxOpcode ? counts_[opcode].load(std::memory_order_relaxed) : 0;
  }

  // The opcodes worth reporting, by name ("read" -> FUSE_READ), with their counts.
  std::vector<std::pair<std::string, uint64_t>> requestCounts() const;

  // Called with each request's opcode name and the time from reading it off
  // /dev/fuse to writing its reply (requests without replies are not timed).
  using LatencyObserver = std::function<void(std::string_view op, double seconds)>;
  void setLatencyObserver(LatencyObserver observer);

  // The refusal of a backing file downgrades the whole connection to the
  // userspace path (the kernel lets one inode have only one kind of open).
  void disable(std::string why);

 private:
  // Writes a notification (unique 0, error = code) with its payload.
  Status notify(int32_t code, const void* payload, size_t size, const char* what);
  static ssize_t ioRead(int fd, void* buf, size_t len, void* self);
  static ssize_t ioWritev(int fd, struct iovec* iov, int count, void* self);
  // ioRead's bookkeeping: counts, the FUSE_INIT offer, the start of timing.
  void noteRequest(const fuse_in_header* in, size_t n);
  // ioWritev's: the time from reading a request to writing its reply.
  void observeReply(const struct iovec* iov, int count);
  // Rewrites the FUSE_INIT reply in iov to ask for passthrough (into `patched`);
  // false, and reason() says why, when it does not ask.
  bool patchInitReply(struct iovec* iov, fusecompat::InitOut& patched);
  // After the kernel took the patched INIT reply: may this process register
  // backing files (CAP_SYS_ADMIN)? Sets active() or says why not.
  void confirmPassthrough();

  const bool want_;
  int devfd_ = -1;
  std::atomic<bool> active_{false};
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> kernel_offers_{false};
  std::array<std::atomic<uint64_t>, kMaxOpcode> counts_{};
  struct Pending {
    uint32_t opcode;
    std::chrono::steady_clock::time_point start;
  };
  std::mutex pending_mu_;
  std::unordered_map<uint64_t, Pending> pending_;  // by request unique; guarded by pending_mu_
  LatencyObserver latency_observer_;               // set before the session runs
  std::atomic<bool> timing_{false};
  std::mutex init_mu_;
  std::condition_variable init_cv_;
  bool init_done_ = false;  // guarded by init_mu_
  void markInitDone();
  InitObserver init_observer_;  // set before the session runs
  std::vector<uint8_t> init_request_;  // the FUSE_INIT read; guarded by init_mu_
  std::vector<uint8_t> adopt_init_;    // adopt(): handed to libfuse once; init_mu_
  std::atomic<bool> adopting_{false};
  bool adopt_passthrough_ = false;
  std::atomic<bool> stop_reading_{false};
  // A resent RELEASE: answered here (see the header comment). True if handled.
  bool swallowResentRelease(int fd, const fuse_in_header* in);
  mutable std::mutex reason_mu_;
  std::string reason_ = "FUSE_INIT not yet seen";
};

}  // namespace hotshard::fuse
