#include "daemon/io_engine.h"

#include <liburing.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <deque>

namespace hotshard {
namespace {

class SyncEngine final : public IoEngine {
 public:
  explicit SyncEngine(unsigned depth) : depth_(depth == 0 ? 1 : depth) {}
  const char* name() const override { return "sync"; }
  unsigned depth() const override { return depth_; }
  unsigned inFlight() const override { return static_cast<unsigned>(done_.size()); }

  Status registerBuffers(const std::vector<iovec>&) override {
    return makeError(Errc::kUnsupported, "sync engine: no registered buffers");
  }

  Status submit(const IoRequest& req) override {
    if (done_.size() >= depth_) return makeError(Errc::kBusy, "sync engine: queue full");
    ssize_t n;
    do {
      n = req.op == IoOp::kRead
              ? ::pread(req.fd, req.buf, req.len, static_cast<off_t>(req.offset))
              : ::pwrite(req.fd, req.buf, req.len, static_cast<off_t>(req.offset));
    } while (n < 0 && errno == EINTR);
    done_.push_back(IoCompletion{req.user_data, n < 0 ? -static_cast<int64_t>(errno) : n});
    return Ok{};
  }

  Result<size_t> reap(std::vector<IoCompletion>* out, unsigned) override {
    size_t n = done_.size();
    for (auto& c : done_) out->push_back(c);
    done_.clear();
    return n;
  }

 private:
  unsigned depth_;
  std::deque<IoCompletion> done_;
};

class UringEngine final : public IoEngine {
 public:
  explicit UringEngine(unsigned depth) : depth_(depth) {}
  ~UringEngine() override {
    // Buffers of requests still in flight belong to the caller, who frees them
    // after destroying us: the kernel must be done with them first.
    std::vector<IoCompletion> sink;
    while (in_flight_ > 0) {
      auto r = reap(&sink, in_flight_);
      if (!r.ok()) break;
      sink.clear();
    }
    io_uring_queue_exit(&ring_);
  }

  Status init() {
    int rc = io_uring_queue_init(depth_, &ring_, 0);
    if (rc < 0) return sysError(-rc, "io_uring_queue_init(" + std::to_string(depth_) + ")");
    return Ok{};
  }

  const char* name() const override { return "uring"; }

  Status registerBuffers(const std::vector<iovec>& buffers) override {
    if (registered_) return makeError(Errc::kBusy, "uring engine: buffers already registered");
    int rc =
        io_uring_register_buffers(&ring_, buffers.data(), static_cast<unsigned>(buffers.size()));
    if (rc < 0) return sysError(-rc, "io_uring_register_buffers");
    registered_ = true;
    return Ok{};
  }
  unsigned depth() const override { return depth_; }
  unsigned inFlight() const override { return in_flight_; }

  Status submit(const IoRequest& req) override {
    if (in_flight_ >= depth_) return makeError(Errc::kBusy, "uring engine: queue full");
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) return makeError(Errc::kInternal, "uring engine: no free SQE");
    bool fixed = req.buf_index >= 0 && registered_;
    if (req.op == IoOp::kRead) {
      if (fixed) {
        io_uring_prep_read_fixed(sqe, req.fd, req.buf, req.len, req.offset, req.buf_index);
      } else {
        io_uring_prep_read(sqe, req.fd, req.buf, req.len, req.offset);
      }
    } else if (fixed) {
      io_uring_prep_write_fixed(sqe, req.fd, req.buf, req.len, req.offset, req.buf_index);
    } else {
      io_uring_prep_write(sqe, req.fd, req.buf, req.len, req.offset);
    }
    io_uring_sqe_set_data64(sqe, req.user_data);
    int rc;
    do {
      rc = io_uring_submit(&ring_);
    } while (rc == -EINTR);
    if (rc < 0) return sysError(-rc, "io_uring_submit");
    ++in_flight_;
    return Ok{};
  }

  Result<size_t> reap(std::vector<IoCompletion>* out, unsigned min_complete) override {
    if (in_flight_ == 0) return size_t{0};
    unsigned want = std::min(min_complete, in_flight_);
    io_uring_cqe* cqe = nullptr;
    if (want > 0) {
      int rc;
      do {
        rc = io_uring_wait_cqe_nr(&ring_, &cqe, want);
      } while (rc == -EINTR);
      if (rc < 0) return sysError(-rc, "io_uring_wait_cqe");
    }
    size_t n = 0;
    while (io_uring_peek_cqe(&ring_, &cqe) == 0 && cqe != nullptr) {
      out->push_back(IoCompletion{io_uring_cqe_get_data64(cqe), cqe->res});
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
      ++n;
    }
    return n;
  }

 private:
  unsigned depth_;
  unsigned in_flight_ = 0;
  bool registered_ = false;
  io_uring ring_{};
};

}  // namespace

Result<IoEngineKind> parseIoEngineKind(std::string_view name) {
  if (name == "uring") return IoEngineKind::kUring;
  if (name == "sync") return IoEngineKind::kSync;
  return makeError(Errc::kInvalidArgument,
                   "io_engine \"" + std::string(name) + "\": expected \"uring\" or \"sync\"");
}

const char* ioEngineKindName(IoEngineKind kind) {
  return kind == IoEngineKind::kUring ? "uring" : "sync";
}

std::unique_ptr<IoEngine> makeSyncEngine(unsigned depth) {
  return std::make_unique<SyncEngine>(depth);
}

Result<std::unique_ptr<IoEngine>> makeUringEngine(unsigned depth) {
  auto engine = std::make_unique<UringEngine>(depth == 0 ? 1 : depth);
  RETURN_IF_ERROR(engine->init());
  return std::unique_ptr<IoEngine>(std::move(engine));
}

std::unique_ptr<IoEngine> makeIoEngine(IoEngineKind kind, unsigned depth) {
  if (kind == IoEngineKind::kUring) {
    auto uring = makeUringEngine(depth);
    if (uring.ok()) return std::move(uring).value();
    static std::atomic<bool> logged{false};
    if (!logged.exchange(true)) {
      spdlog::warn("io_engine uring unavailable ({}); falling back to sync pread/pwrite",
                   uring.error().message);
    }
  }
  return makeSyncEngine(depth);
}

}  // namespace hotshard
