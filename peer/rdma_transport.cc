#include "peer/rdma_transport.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>

namespace hotshard::peer {
namespace {

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<uint8_t, FreeDeleter>;

Buffer pageAligned(size_t bytes) {
  return Buffer(static_cast<uint8_t*>(std::aligned_alloc(4096, bytes)));
}

constexpr size_t kPoolBytes = ((kRdmaSlotBytes * kRdmaDepth + 4095) / 4096) * 4096;

class RdmaChannel final : public Channel {
 public:
  explicit RdmaChannel(std::unique_ptr<VerbsQueuePair> qp)
      : qp_(std::move(qp)), peer_(qp_->peerAddress()) {}

  ~RdmaChannel() override {
    qp_->disconnect();
    if (send_mr_.handle != nullptr || send_mr_.addr != nullptr) qp_->deregisterMemory(send_mr_);
    if (recv_mr_.handle != nullptr || recv_mr_.addr != nullptr) qp_->deregisterMemory(recv_mr_);
    qp_.reset();
  }

  Status setUp(Deadline deadline) {
    send_buf_ = pageAligned(kPoolBytes);
    recv_buf_ = pageAligned(kPoolBytes);
    if (!send_buf_ || !recv_buf_)
      return makeError(Errc::kNoSpace, "rdma channel: no memory for buffers");
    ASSIGN_OR_RETURN(send_mr_, qp_->registerMemory(send_buf_.get(), kPoolBytes));
    ASSIGN_OR_RETURN(recv_mr_, qp_->registerMemory(recv_buf_.get(), kPoolBytes));
    for (uint32_t slot = 0; slot < kRdmaDepth; ++slot) {
      RETURN_IF_ERROR(qp_->postRecv(slot, recv_mr_, slot * kRdmaSlotBytes, kRdmaSlotBytes));
      free_send_.push_back(slot);
    }
    return qp_->establish(deadline);
  }

  Status sendAll(const void* data, size_t len, Deadline deadline) override {
    auto* p = static_cast<const uint8_t*>(data);
    while (len > 0) {
      ASSIGN_OR_RETURN(uint32_t slot, acquire(2, deadline));
      size_t n = len < kRdmaChunkBytes ? len : kRdmaChunkBytes;
      std::memcpy(sendSlot(slot) + kRdmaHeaderBytes, p, n);
      RETURN_IF_ERROR(post(slot, static_cast<uint32_t>(n)));
      p += n, len -= n;
    }
    return reapReady();
  }

  Result<size_t> recvSome(void* buf, size_t len, Deadline deadline) override {
    while (ready_.empty()) {
      RETURN_IF_ERROR(maybeGrant(deadline));
      RETURN_IF_ERROR(progress(deadline));
    }
    Received& r = ready_.front();
    size_t n = std::min<size_t>(len, r.len - r.consumed);
    std::memcpy(buf, recvSlot(r.slot) + kRdmaHeaderBytes + r.consumed, n);
    r.consumed += static_cast<uint32_t>(n);
    if (r.consumed == r.len) {
      uint32_t slot = r.slot;
      ready_.pop_front();
      RETURN_IF_ERROR(repost(slot));
      RETURN_IF_ERROR(maybeGrant(deadline));
    }
    return n;
  }

  Status sendFile(int fd, uint64_t offset, uint64_t len, Deadline deadline) override {
    while (len > 0) {
      ASSIGN_OR_RETURN(uint32_t slot, acquire(2, deadline));
      size_t n = len < kRdmaChunkBytes ? static_cast<size_t>(len) : kRdmaChunkBytes;
      RETURN_IF_ERROR(preadAll(fd, sendSlot(slot) + kRdmaHeaderBytes, n, offset, slot));
      RETURN_IF_ERROR(post(slot, static_cast<uint32_t>(n)));
      offset += n, len -= n;
    }
    return reapReady();
  }

  void close() override {
    if (!closed_.exchange(true)) qp_->disconnect();
  }
  const char* transport() const override { return "rdma"; }
  std::string peerAddress() const override { return peer_; }

 private:
  struct Received {
    uint32_t slot;
    uint32_t len;
    uint32_t consumed;
  };

  uint8_t* sendSlot(uint32_t slot) { return send_buf_.get() + slot * kRdmaSlotBytes; }
  uint8_t* recvSlot(uint32_t slot) { return recv_buf_.get() + slot * kRdmaSlotBytes; }

  Error fail(std::string why) {
    if (!failed_)
      failed_ = makeError(Errc::kIo, "rdma channel with " + peer_ + ": " + std::move(why));
    return *failed_;
  }

  Status preadAll(int fd, uint8_t* out, size_t n, uint64_t offset, uint32_t slot) {
    size_t got = 0;
    while (got < n) {
      ssize_t r = ::pread(fd, out + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        free_send_.push_back(slot);
        if (r < 0) return lastSysError("pread served object for rdma peer " + peer_);
        return makeError(Errc::kIo,
                         "sendfile to rdma peer " + peer_ + ": short: the file ended early");
      }
      got += static_cast<size_t>(r);
    }
    return Ok{};
  }

  // Reaps completions, waiting until at least one arrives or the deadline.
  Status progress(Deadline deadline) {
    if (failed_) return *failed_;
    if (closed_) return makeError(Errc::kIo, "rdma channel with " + peer_ + ": channel closed");
    auto wcs = qp_->pollCompletions(2 * kRdmaDepth, deadline);
    if (!wcs.ok()) return fail(wcs.error().message);
    if (wcs->empty()) return makeError(Errc::kIo, "rdma channel with " + peer_ + ": timed out");
    for (const WorkCompletion& wc : *wcs) RETURN_IF_ERROR(handle(wc));
    return Ok{};
  }

  Status handle(const WorkCompletion& wc) {
    if (!wc.ok)
      return fail(std::string(wc.op == WorkOp::kSend ? "send" : "receive") +
                  " completion: " + wc.status);
    if (wc.wr_id >= kRdmaDepth)
      return fail("completion for unknown work request " + std::to_string(wc.wr_id));
    uint32_t slot = static_cast<uint32_t>(wc.wr_id);
    if (wc.op == WorkOp::kSend) {
      free_send_.push_back(slot);
      return Ok{};
    }
    uint32_t header[2];
    if (wc.byte_len < kRdmaHeaderBytes) return fail("message shorter than its header");
    std::memcpy(header, recvSlot(slot), sizeof header);
    if (header[0] > kRdmaChunkBytes || wc.byte_len != kRdmaHeaderBytes + header[0])
      return fail("message length disagrees with its completion");
    if (header[1] > kRdmaDepth - credits_) return fail("peer granted more credits than it holds");
    credits_ += header[1];
    if (header[0] == 0) return repost(slot);  // credit-only
    ready_.push_back(Received{slot, header[0], 0});
    return Ok{};
  }

  // Handles completions already queued, without waiting: a SEND that failed
  // is reported by the send call that posted it where it is known by then.
  Status reapReady() {
    if (failed_) return *failed_;
    auto wcs = qp_->pollCompletions(2 * kRdmaDepth, std::chrono::steady_clock::now());
    if (!wcs.ok()) return fail(wcs.error().message);
    for (const WorkCompletion& wc : *wcs) RETURN_IF_ERROR(handle(wc));
    return Ok{};
  }

  // A free send slot, once `credits` credits are at hand.
  Result<uint32_t> acquire(uint32_t credits, Deadline deadline) {
    while (free_send_.empty() || credits_ < credits) RETURN_IF_ERROR(progress(deadline));
    uint32_t slot = free_send_.back();
    free_send_.pop_back();
    return slot;
  }

  Status post(uint32_t slot, uint32_t len) {
    uint32_t header[2] = {len, pending_grants_};
    std::memcpy(sendSlot(slot), header, sizeof header);
    Status st = qp_->postSend(slot, send_mr_, slot * kRdmaSlotBytes, kRdmaHeaderBytes + len);
    if (!st.ok()) return fail(st.error().message);
    pending_grants_ = 0;
    credits_--;
    return Ok{};
  }

  Status repost(uint32_t slot) {
    Status st = qp_->postRecv(slot, recv_mr_, slot * kRdmaSlotBytes, kRdmaSlotBytes);
    if (!st.ok()) return fail(st.error().message);
    pending_grants_++;
    return Ok{};
  }

  // Returns credits with a credit-only message once half the window waits
  // for them (and a credit is at hand to carry them).
  Status maybeGrant(Deadline deadline) {
    if (pending_grants_ < kRdmaDepth / 2 || credits_ < 1) return Ok{};
    ASSIGN_OR_RETURN(uint32_t slot, acquire(1, deadline));
    return post(slot, 0);
  }

  std::unique_ptr<VerbsQueuePair> qp_;
  std::string peer_;
  Buffer send_buf_, recv_buf_;
  MemoryRegion send_mr_, recv_mr_;
  std::vector<uint32_t> free_send_;
  std::deque<Received> ready_;
  uint32_t credits_ = kRdmaDepth;
  uint32_t pending_grants_ = 0;
  std::optional<Error> failed_;
  std::atomic<bool> closed_{false};
};

class RdmaListener final : public Listener {
 public:
  RdmaListener(std::unique_ptr<VerbsListener> listener, RdmaOptions options)
      : listener_(std::move(listener)), options_(options) {}
  Result<std::unique_ptr<Channel>> accept() override {
    ASSIGN_OR_RETURN(std::unique_ptr<VerbsQueuePair> qp, listener_->accept());
    return makeRdmaChannel(std::move(qp), deadlineIn(options_.setup_timeout));
  }
  std::string boundAddress() const override { return listener_->boundAddress(); }
  void close() override { listener_->close(); }

 private:
  std::unique_ptr<VerbsListener> listener_;
  RdmaOptions options_;
};

class RdmaConnector final : public Connector {
 public:
  RdmaConnector(Verbs& verbs, RdmaOptions options) : verbs_(verbs), options_(options) {}
  Result<std::unique_ptr<Channel>> connect(const std::string& address, Deadline deadline) override {
    RETURN_IF_ERROR(verbs_.probe());
    ASSIGN_OR_RETURN(std::unique_ptr<VerbsQueuePair> qp, verbs_.resolve(address, deadline));
    Deadline setup = deadlineIn(options_.setup_timeout);
    return makeRdmaChannel(std::move(qp), setup < deadline ? setup : deadline);
  }

 private:
  Verbs& verbs_;
  RdmaOptions options_;
};

}  // namespace

Result<std::unique_ptr<Channel>> makeRdmaChannel(std::unique_ptr<VerbsQueuePair> qp,
                                                 Deadline deadline) {
  auto channel = std::make_unique<RdmaChannel>(std::move(qp));
  RETURN_IF_ERROR(channel->setUp(deadline));
  return std::unique_ptr<Channel>(std::move(channel));
}

Result<std::unique_ptr<Listener>> listenRdma(Verbs& verbs, const std::string& address,
                                             RdmaOptions options) {
  RETURN_IF_ERROR(verbs.probe());
  ASSIGN_OR_RETURN(std::unique_ptr<VerbsListener> listener, verbs.listen(address));
  return std::unique_ptr<Listener>(std::make_unique<RdmaListener>(std::move(listener), options));
}

std::unique_ptr<Connector> makeRdmaConnector(Verbs& verbs, RdmaOptions options) {
  return std::make_unique<RdmaConnector>(verbs, options);
}

}  // namespace hotshard::peer
