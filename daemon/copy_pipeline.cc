#include "daemon/copy_pipeline.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cstdlib>
#include <cstring>
#include <vector>

namespace hotshard {
namespace {

constexpr uint32_t kAlign = 4096;

// One chunk in flight: read into buf, hashed in file order, then written.
struct Slot {
  char* buf = nullptr;  // the kit's
  bool busy = false;
  uint64_t off = 0;
  uint32_t len = 0;     // data bytes of this chunk
  uint32_t wlen = 0;    // bytes to write (len rounded up for O_DIRECT)
  uint32_t filled = 0;  // bytes read so far
  uint32_t written = 0;
  bool read_done = false, hashed = false, write_done = false;
  bool write_direct = false;  // O_DIRECT was on when the write was submitted
};

struct HashState {
  HashState() { XXH3_64bits_reset(s); }
  ~HashState() { XXH3_freeState(s); }
  XXH3_state_t* s = XXH3_createState();
};

// Completions carry the slot index and whether they are a write.
uint64_t tagOf(unsigned slot, bool write) { return uint64_t{slot} << 1 | (write ? 1 : 0); }

class Pipeline {
 public:
  Pipeline(CopyKit& kit, const CopyRequest& req)
      : req_(req), direct_(req.dst_direct), kit_(kit), engine_(&kit.engine()) {}

  Result<CopyResult> run(CopyFault* fault);

 private:
  Status allocate();
  void drain();
  void fillSlots();
  void onCompletion(const IoCompletion& c);
  void onRead(unsigned i, int64_t res);
  void onWrite(unsigned i, int64_t res);
  Status submitRead(unsigned i);
  Status submitWrite(unsigned i);
  void hashInOrder();
  bool clearDirect();
  Status truncateToSize();
  void fail(CopyFault f, Error e);
  std::string dstWhat(const char* what) const {
    return fmt::format("{}: {} {}", req_.label, what, req_.dst_name);
  }

  const CopyRequest& req_;
  bool direct_;
  CopyKit& kit_;
  IoEngine* engine_;  // the kit's
  bool fixed_ = false;
  uint64_t next_off_ = 0, hash_off_ = 0, done_bytes_ = 0;
  CopyResult result_;
  CopyFault fault_ = CopyFault::kNone;
  Error error_;
  HashState hash_;
  std::vector<Slot> slots_;
};

void Pipeline::fail(CopyFault f, Error e) {
  if (fault_ != CopyFault::kNone) return;  // the first failure is the one to report
  fault_ = f;
  error_ = std::move(e);
}

// Slots over the kit's buffers; fixed-buffer requests only when this copy
// asked for them and the kit has them registered.
Status Pipeline::allocate() {
  if (req_.chunk_bytes == 0 || req_.chunk_bytes > kit_.chunkBytes() ||
      engine_->inFlight() != 0) {
    return makeError(Errc::kInternal,
                     fmt::format("{}: chunk {} bytes on a kit of {}-byte buffers ({} in flight)",
                                 req_.label, req_.chunk_bytes, kit_.chunkBytes(),
                                 engine_->inFlight()));
  }
  slots_.resize(kit_.slots());
  for (unsigned i = 0; i < kit_.slots(); ++i) slots_[i].buf = kit_.buffer(i);
  fixed_ = kit_.fixed() && req_.register_buffers;
  return Ok{};
}

// Reaps what is still in flight, so that the kit's buffers are free for the
// next copy; a kit whose engine cannot reap is not used again.
void Pipeline::drain() {
  std::vector<IoCompletion> sink;
  while (engine_->inFlight() > 0) {
    auto r = engine_->reap(&sink, engine_->inFlight());
    if (!r.ok()) {
      kit_.markUnusable();
      return;
    }
    sink.clear();
  }
}

Status Pipeline::submitRead(unsigned i) {
  Slot& s = slots_[i];
  return engine_->submit(IoRequest{IoOp::kRead, req_.src_fd, s.buf + s.filled,
                                   s.len - s.filled, s.off + s.filled, tagOf(i, false),
                                   fixed_ ? static_cast<int>(i) : -1});
}

Status Pipeline::submitWrite(unsigned i) {
  Slot& s = slots_[i];
  s.write_direct = direct_;
  return engine_->submit(IoRequest{IoOp::kWrite, req_.dst_fd, s.buf + s.written,
                                   s.wlen - s.written, s.off + s.written, tagOf(i, true),
                                   fixed_ ? static_cast<int>(i) : -1});
}

// Starts reading the next chunks into every free slot.
void Pipeline::fillSlots() {
  while (fault_ == CopyFault::kNone && next_off_ < req_.size) {
    unsigned i = 0;
    while (i < slots_.size() && slots_[i].busy) ++i;
    if (i == slots_.size()) return;
    uint32_t len =
        static_cast<uint32_t>(std::min<uint64_t>(req_.chunk_bytes, req_.size - next_off_));
    if (req_.before_read) {
      Status go = req_.before_read(next_off_, len);
      if (!go.ok()) return fail(CopyFault::kCancelled, go.takeError());
    }
    Slot& s = slots_[i];
    s.busy = true;
    s.off = next_off_;
    s.len = len;
    s.filled = s.written = 0;
    s.read_done = s.hashed = s.write_done = false;
    Status sub = submitRead(i);
    if (!sub.ok()) return fail(CopyFault::kInternal, sub.takeError());
    next_off_ += len;
  }
}

void Pipeline::hashInOrder() {
  for (bool progressed = true; progressed;) {
    progressed = false;
    for (auto& s : slots_) {
      if (s.busy && s.read_done && !s.hashed && s.off == hash_off_) {
        XXH3_64bits_update(hash_.s, s.buf, s.len);
        hash_off_ += s.len;
        s.hashed = true;
        if (s.write_done) s.busy = false;
        progressed = true;
      }
    }
  }
}

void Pipeline::onCompletion(const IoCompletion& c) {
  unsigned i = static_cast<unsigned>(c.user_data >> 1);
  if (fault_ != CopyFault::kNone) {  // only reaping what is still in flight
    slots_[i].busy = false;
    return;
  }
  if ((c.user_data & 1) != 0) {
    onWrite(i, c.result);
  } else {
    onRead(i, c.result);
  }
}

void Pipeline::onRead(unsigned i, int64_t res) {
  Slot& s = slots_[i];
  Status sub = Ok{};
  if (res == -EINTR || res == -EAGAIN) {
    ++result_.resubmits;
    sub = submitRead(i);
  } else if (res < 0) {
    return fail(CopyFault::kSource,
                sysError(static_cast<int>(-res), fmt::format("{}: read {} at offset {}", req_.label,
                                                             req_.src_name, s.off + s.filled)));
  } else if (res == 0) {
    return fail(CopyFault::kSourceShrank,
                makeError(Errc::kStale,
                          fmt::format("{}: {} shrank during the copy (end of file at {}, expected "
                                      "{} bytes)",
                                      req_.label, req_.src_name, s.off + s.filled, req_.size)));
  } else if ((s.filled += static_cast<uint32_t>(res)) < s.len) {
    ++result_.resubmits;
    sub = submitRead(i);
  } else {
    s.read_done = true;
    s.wlen = s.len;
    if (direct_ && s.len % kAlign != 0) {
      // Unaligned tail: pad with zeros; the file is truncated to size at the end.
      s.wlen = (s.len + kAlign - 1) / kAlign * kAlign;
      std::memset(s.buf + s.len, 0, s.wlen - s.len);
    }
    hashInOrder();
    sub = submitWrite(i);
  }
  if (!sub.ok()) fail(CopyFault::kInternal, sub.takeError());
}

// Turns O_DIRECT off on the destination, from now on; false (errno set) if
// fcntl failed.
bool Pipeline::clearDirect() {
  direct_ = false;
  result_.fell_back_to_buffered = true;
  int fl = ::fcntl(req_.dst_fd, F_GETFL);
  return fl >= 0 && ::fcntl(req_.dst_fd, F_SETFL, fl & ~O_DIRECT) == 0;
}

void Pipeline::onWrite(unsigned i, int64_t res) {
  Slot& s = slots_[i];
  Status sub = Ok{};
  if (res == -EINVAL && s.write_direct) {
    // The destination's file system refused O_DIRECT for this request: go buffered.
    if (direct_) {
      if (!clearDirect())
        return fail(CopyFault::kDestination, writeSideError(errno, dstWhat("clear O_DIRECT on")));
      spdlog::info("{}: O_DIRECT write refused on {}; using buffered writes", req_.label,
                   req_.dst_name);
    }
    ++result_.resubmits;
    sub = submitWrite(i);
  } else if (res == -EINTR || res == -EAGAIN) {
    ++result_.resubmits;
    sub = submitWrite(i);
  } else if (res < 0) {
    return fail(CopyFault::kDestination, writeSideError(static_cast<int>(-res), dstWhat("pwrite")));
  } else if ((s.written += static_cast<uint32_t>(res)) < s.wlen) {
    // The rest cannot go on aligned. Should clearing fail, the next write
    // meets EINVAL, which ends the copy as before.
    if (direct_ && s.written % kAlign != 0) (void)clearDirect();
    ++result_.resubmits;
    sub = submitWrite(i);
  } else {
    s.write_done = true;
    done_bytes_ += s.len;
    if (s.hashed) s.busy = false;
    if (req_.progress) req_.progress(done_bytes_, req_.size);
  }
  if (!sub.ok()) fail(CopyFault::kInternal, sub.takeError());
}

// O_DIRECT padding may have left the file longer than the data.
Status Pipeline::truncateToSize() {
  struct stat st {};
  if (::fstat(req_.dst_fd, &st) != 0) return writeSideError(errno, dstWhat("stat"));
  if (static_cast<uint64_t>(st.st_size) != req_.size &&
      ::ftruncate(req_.dst_fd, static_cast<off_t>(req_.size)) != 0) {
    return writeSideError(errno, dstWhat("ftruncate"));
  }
  return Ok{};
}

Result<CopyResult> Pipeline::run(CopyFault* fault) {
  if (Status mem = allocate(); !mem.ok()) {
    if (fault != nullptr) *fault = CopyFault::kInternal;
    return mem.takeError();
  }
  std::vector<IoCompletion> completions;
  for (;;) {
    fillSlots();
    if (engine_->inFlight() == 0) break;
    completions.clear();
    auto reaped = engine_->reap(&completions, 1);
    if (!reaped.ok()) {
      fail(CopyFault::kInternal, reaped.takeError());
      break;
    }
    for (const auto& c : completions) onCompletion(c);
  }
  drain();  // all requests are done with the buffers
  if (fault_ == CopyFault::kNone && hash_off_ != req_.size) {
    fail(CopyFault::kInternal,
         makeError(Errc::kInternal,
                   fmt::format("{}: hashed {} of {} bytes", req_.label, hash_off_, req_.size)));
  }
  if (fault_ == CopyFault::kNone) {
    if (Status t = truncateToSize(); !t.ok()) fail(CopyFault::kDestination, t.takeError());
  }
  if (fault != nullptr) *fault = fault_;
  if (fault_ != CopyFault::kNone) return std::move(error_);
  result_.checksum = XXH3_64bits_digest(hash_.s);
  result_.bytes = done_bytes_;
  return result_;
}

}  // namespace

Error writeSideError(int err, std::string what) {
  return sysError(err == EDQUOT ? ENOSPC : err, std::move(what));
}

Result<std::unique_ptr<CopyKit>> CopyKit::create(std::unique_ptr<IoEngine> engine,
                                                 uint32_t chunk_bytes, bool register_buffers) {
  if (engine == nullptr) return makeError(Errc::kInvalidArgument, "copy kit: no I/O engine");
  if (chunk_bytes == 0 || chunk_bytes % kAlign != 0) {
    return makeError(Errc::kInvalidArgument,
                     fmt::format("copy kit: chunk {} bytes is not a multiple of {}", chunk_bytes,
                                 kAlign));
  }
  std::unique_ptr<CopyKit> kit(new CopyKit());
  kit->chunk_bytes_ = chunk_bytes;
  for (unsigned i = 0; i < engine->depth(); ++i) {
    void* mem = ::mmap(nullptr, chunk_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
    if (mem == MAP_FAILED) {
      Error e = lastSysError(fmt::format("copy kit: mmap {}-byte buffer", chunk_bytes));
      e.code = Errc::kInternal;
      return e;
    }
    kit->buffers_.push_back(static_cast<char*>(mem));
  }
  kit->engine_ = std::move(engine);
  if (register_buffers) {
    std::vector<iovec> iov;
    for (char* b : kit->buffers_) iov.push_back(iovec{b, chunk_bytes});
    Status reg = kit->engine_->registerBuffers(iov);
    kit->fixed_ = reg.ok();
    // kUnsupported: an engine without the notion (sync); nothing to say.
    if (!reg.ok() && reg.error().code != Errc::kUnsupported)
      spdlog::debug("copy kit: {}; plain buffers", reg.error().message);
  }
  return kit;
}

CopyKit::~CopyKit() {
  engine_.reset();  // waits for what is in flight: the kernel is done with the buffers
  for (char* b : buffers_) ::munmap(b, chunk_bytes_);
}

Result<CopyResult> runCopyPipeline(CopyKit& kit, const CopyRequest& req, CopyFault* fault) {
  Pipeline pipeline(kit, req);
  return pipeline.run(fault);
}

Result<CopyResult> runCopyPipeline(std::unique_ptr<IoEngine> engine, const CopyRequest& req,
                                   CopyFault* fault) {
  auto kit = CopyKit::create(std::move(engine), req.chunk_bytes, req.register_buffers);
  if (!kit.ok()) {
    if (fault != nullptr) *fault = CopyFault::kInternal;
    Error e = kit.takeError();
    e.message = req.label + ": " + e.message;
    return e;
  }
  return runCopyPipeline(**kit, req, fault);
}

}  // namespace hotshard
