// An in-process RDMA fabric for the RDMA transport's unit tests: Verbs whose
// queue pairs really move bytes from a sender's registered region into the
// receiver's posted receive buffers, check every work request against the
// registered regions (lkey, bounds), complete work on completion queues that
// the channel polls with deadlines, and fail the way hardware does: a SEND
// without a posted receive (RNR), flushes after a disconnect, injected
// completion errors and stalls.
#pragma once

#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <vector>

#include "peer/rdma_transport.h"

namespace hotshard::peer::testing {

class FakeVerbs;

class FakeQueuePair final : public VerbsQueuePair {
 public:
  FakeQueuePair(FakeVerbs& fabric, std::string peer_address)
      : fabric_(fabric), peer_address_(std::move(peer_address)) {}
  ~FakeQueuePair() override;
  Result<MemoryRegion> registerMemory(void* addr, size_t length) override;
  void deregisterMemory(const MemoryRegion& region) override;
  Status postRecv(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                  size_t length) override;
  Status postSend(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                  size_t length) override;
  Result<std::vector<WorkCompletion>> pollCompletions(size_t max, Deadline deadline) override;
  Status establish(Deadline deadline) override;
  void disconnect() override;
  std::string peerAddress() const override { return peer_address_; }

 private:
  friend class FakeVerbs;
  friend class FakeListener;
  struct Posted {
    uint64_t wr_id;
    uint8_t* addr;
    size_t length;
  };
  bool inRegion(const MemoryRegion& region, size_t offset, size_t length) const;
  void flushLocked();

  FakeVerbs& fabric_;
  std::string peer_address_;
  std::string target_;                       // client: the listener's address
  FakeQueuePair* pending_client_ = nullptr;  // server: the client to link at establish()
  FakeQueuePair* peer_ = nullptr;            // set when both ends are established
  bool established_ = false;
  bool disconnected_ = false;
  std::map<uint32_t, std::pair<uint8_t*, size_t>> regions_;  // lkey -> (addr, length)
  std::deque<Posted> recvs_;
  std::deque<WorkCompletion> cq_;
};

class FakeListener final : public VerbsListener {
 public:
  FakeListener(FakeVerbs& fabric, std::string address)
      : fabric_(fabric), address_(std::move(address)) {}
  ~FakeListener() override;
  Result<std::unique_ptr<VerbsQueuePair>> accept() override;
  std::string boundAddress() const override { return address_; }
  void close() override;

 private:
  friend class FakeVerbs;
  friend class FakeQueuePair;
  FakeVerbs& fabric_;
  std::string address_;
  bool closed_ = false;
  std::deque<FakeQueuePair*> requests_;  // clients waiting in establish()
};

class FakeVerbs final : public Verbs {
 public:
  // Knobs, set before use.
  bool has_device = true;
  bool fail_registration = false;
  // The send with this 1-based number (over the fabric) completes in error
  // (IBV_WC_RETRY_EXC_ERR) and delivers nothing; 0: never.
  uint64_t fail_send_number = 0;
  // From the send with this number on, sends are taken but never delivered
  // nor completed (a peer that stopped answering); 0: never.
  uint64_t stall_from_send_number = 0;

  // What happened, read by tests.
  struct Counters {
    uint64_t registrations = 0, deregistrations = 0, live_regions = 0;
    uint64_t sends = 0, recvs_posted = 0, delivered_bytes = 0, credit_only = 0;
    uint64_t rnr_errors = 0, protection_errors = 0, flushed = 0;
    uint64_t connections = 0;
  };
  Counters counters() {
    std::lock_guard lock(mu_);
    return counters_;
  }

  Status probe() override {
    if (!has_device) return makeError(Errc::kUnsupported, "no RDMA device (fake)");
    return Ok{};
  }
  Result<std::unique_ptr<VerbsQueuePair>> resolve(const std::string& address, Deadline) override {
    std::lock_guard lock(mu_);
    if (!listeners_.count(address))
      return makeError(Errc::kIo, "rdma resolve address " + address + ": no route (fake)");
    auto qp = std::make_unique<FakeQueuePair>(*this, address);
    qp->target_ = address;
    return std::unique_ptr<VerbsQueuePair>(std::move(qp));
  }
  Result<std::unique_ptr<VerbsListener>> listen(const std::string& address) override {
    std::lock_guard lock(mu_);
    if (listeners_.count(address))
      return makeError(Errc::kIo, "rdma_bind_addr " + address + ": in use (fake)");
    auto listener = std::make_unique<FakeListener>(*this, address);
    listeners_[address] = listener.get();
    return std::unique_ptr<VerbsListener>(std::move(listener));
  }

 private:
  friend class FakeQueuePair;
  friend class FakeListener;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, FakeListener*> listeners_;
  std::vector<FakeQueuePair*> qps_;  // live ones, so a dying one unlinks itself
  uint32_t next_lkey_ = 1;
  Counters counters_;
};

}  // namespace hotshard::peer::testing
