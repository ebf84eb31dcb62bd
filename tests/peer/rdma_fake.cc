#include "tests/peer/rdma_fake.h"

#include <algorithm>

namespace hotshard::peer::testing {
namespace {

WorkCompletion failed(uint64_t wr_id, WorkOp op, const char* status) {
  return WorkCompletion{wr_id, op, false, 0, status};
}

}  // namespace

FakeQueuePair::~FakeQueuePair() {
  std::lock_guard lock(fabric_.mu_);
  disconnected_ = true;
  if (peer_ != nullptr) {
    peer_->disconnected_ = true;
    peer_->flushLocked();
    peer_->peer_ = nullptr;
  }
  for (auto& [address, listener] : fabric_.listeners_) std::erase(listener->requests_, this);
  for (FakeQueuePair* qp : fabric_.qps_)
    if (qp->pending_client_ == this) qp->pending_client_ = nullptr;
  std::erase(fabric_.qps_, this);
  fabric_.counters_.live_regions -= regions_.size();
  fabric_.cv_.notify_all();
}

Result<MemoryRegion> FakeQueuePair::registerMemory(void* addr, size_t length) {
  std::lock_guard lock(fabric_.mu_);
  if (fabric_.fail_registration)
    return makeError(Errc::kIo, "ibv_reg_mr: Cannot allocate memory (fake)");
  if (std::find(fabric_.qps_.begin(), fabric_.qps_.end(), this) == fabric_.qps_.end())
    fabric_.qps_.push_back(this);
  uint32_t lkey = fabric_.next_lkey_++;
  regions_[lkey] = {static_cast<uint8_t*>(addr), length};
  fabric_.counters_.registrations++;
  fabric_.counters_.live_regions++;
  return MemoryRegion{static_cast<uint8_t*>(addr), length, lkey, nullptr};
}

void FakeQueuePair::deregisterMemory(const MemoryRegion& region) {
  std::lock_guard lock(fabric_.mu_);
  if (regions_.erase(region.lkey) == 1) {
    fabric_.counters_.deregistrations++;
    fabric_.counters_.live_regions--;
  }
}

bool FakeQueuePair::inRegion(const MemoryRegion& region, size_t offset, size_t length) const {
  auto it = regions_.find(region.lkey);
  return it != regions_.end() && it->second.first == region.addr && offset <= it->second.second &&
         length <= it->second.second - offset;
}

void FakeQueuePair::flushLocked() {
  for (const Posted& p : recvs_) {
    cq_.push_back(failed(p.wr_id, WorkOp::kRecv, "Work Request Flushed Error"));
    fabric_.counters_.flushed++;
  }
  recvs_.clear();
}

Status FakeQueuePair::postRecv(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                               size_t length) {
  std::lock_guard lock(fabric_.mu_);
  if (!inRegion(region, offset, length)) {
    fabric_.counters_.protection_errors++;
    cq_.push_back(failed(wr_id, WorkOp::kRecv, "local protection error"));
  } else if (disconnected_) {
    cq_.push_back(failed(wr_id, WorkOp::kRecv, "Work Request Flushed Error"));
  } else {
    recvs_.push_back(Posted{wr_id, region.addr + offset, length});
    fabric_.counters_.recvs_posted++;
  }
  fabric_.cv_.notify_all();
  return Ok{};
}

Status FakeQueuePair::postSend(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                               size_t length) {
  std::lock_guard lock(fabric_.mu_);
  FakeVerbs::Counters& c = fabric_.counters_;
  fabric_.cv_.notify_all();
  if (!inRegion(region, offset, length)) {
    c.protection_errors++;
    cq_.push_back(failed(wr_id, WorkOp::kSend, "local protection error"));
    return Ok{};
  }
  if (!established_ || disconnected_ || peer_ == nullptr) {
    cq_.push_back(failed(wr_id, WorkOp::kSend, "Work Request Flushed Error"));
    return Ok{};
  }
  uint64_t number = ++c.sends;
  if (number == fabric_.fail_send_number) {
    cq_.push_back(failed(wr_id, WorkOp::kSend, "transport retry counter exceeded"));
    return Ok{};
  }
  if (fabric_.stall_from_send_number != 0 && number >= fabric_.stall_from_send_number) return Ok{};
  if (peer_->recvs_.empty()) {
    c.rnr_errors++;
    cq_.push_back(failed(wr_id, WorkOp::kSend, "RNR retry counter exceeded"));
    return Ok{};
  }
  Posted recv = peer_->recvs_.front();
  peer_->recvs_.pop_front();
  if (recv.length < length) {
    cq_.push_back(failed(wr_id, WorkOp::kSend, "remote invalid request error"));
    peer_->cq_.push_back(failed(recv.wr_id, WorkOp::kRecv, "local length error"));
    return Ok{};
  }
  std::memcpy(recv.addr, region.addr + offset, length);
  peer_->cq_.push_back(
      WorkCompletion{recv.wr_id, WorkOp::kRecv, true, static_cast<uint32_t>(length), ""});
  cq_.push_back(WorkCompletion{wr_id, WorkOp::kSend, true, 0, ""});
  c.delivered_bytes += length;
  if (length == kRdmaHeaderBytes) c.credit_only++;
  return Ok{};
}

Result<std::vector<WorkCompletion>> FakeQueuePair::pollCompletions(size_t max, Deadline deadline) {
  std::unique_lock lock(fabric_.mu_);
  fabric_.cv_.wait_until(lock, deadline, [&] { return !cq_.empty(); });
  std::vector<WorkCompletion> out;
  while (!cq_.empty() && out.size() < max) {
    out.push_back(cq_.front());
    cq_.pop_front();
  }
  return out;
}

Status FakeQueuePair::establish(Deadline deadline) {
  std::unique_lock lock(fabric_.mu_);
  if (std::find(fabric_.qps_.begin(), fabric_.qps_.end(), this) == fabric_.qps_.end())
    fabric_.qps_.push_back(this);
  if (target_.empty()) {  // server: link the waiting client
    if (pending_client_ == nullptr || pending_client_->disconnected_)
      return makeError(Errc::kIo, "rdma_accept: the client went away (fake)");
    peer_ = pending_client_;
    peer_->peer_ = this;
    established_ = peer_->established_ = true;
    fabric_.counters_.connections++;
    fabric_.cv_.notify_all();
    return Ok{};
  }
  auto it = fabric_.listeners_.find(target_);
  if (it == fabric_.listeners_.end() || it->second->closed_)
    return makeError(Errc::kIo, "rdma connect " + target_ + ": rejected (fake)");
  it->second->requests_.push_back(this);
  fabric_.cv_.notify_all();
  if (!fabric_.cv_.wait_until(lock, deadline, [&] { return established_ || disconnected_; })) {
    for (auto& [address, listener] : fabric_.listeners_) std::erase(listener->requests_, this);
    for (FakeQueuePair* qp : fabric_.qps_)
      if (qp->pending_client_ == this) qp->pending_client_ = nullptr;
    return makeError(Errc::kIo, "rdma connect " + target_ + ": timed out");
  }
  if (disconnected_) return makeError(Errc::kIo, "rdma connect " + target_ + ": rejected (fake)");
  return Ok{};
}

void FakeQueuePair::disconnect() {
  std::lock_guard lock(fabric_.mu_);
  if (disconnected_) return;
  disconnected_ = true;
  flushLocked();
  if (peer_ != nullptr && !peer_->disconnected_) {
    peer_->disconnected_ = true;
    peer_->flushLocked();
  }
  fabric_.cv_.notify_all();
}

FakeListener::~FakeListener() {
  std::lock_guard lock(fabric_.mu_);
  fabric_.listeners_.erase(address_);
  for (FakeQueuePair* client : requests_) client->disconnected_ = true;
  fabric_.cv_.notify_all();
}

Result<std::unique_ptr<VerbsQueuePair>> FakeListener::accept() {
  std::unique_lock lock(fabric_.mu_);
  fabric_.cv_.wait(lock, [&] { return closed_ || !requests_.empty(); });
  if (closed_) return makeError(Errc::kIo, "rdma listener closed");
  FakeQueuePair* client = requests_.front();
  requests_.pop_front();
  auto qp = std::make_unique<FakeQueuePair>(fabric_, "fake-client-of-" + address_);
  qp->pending_client_ = client;
  fabric_.qps_.push_back(qp.get());
  return std::unique_ptr<VerbsQueuePair>(std::move(qp));
}

void FakeListener::close() {
  std::lock_guard lock(fabric_.mu_);
  closed_ = true;
  fabric_.cv_.notify_all();
}

}  // namespace hotshard::peer::testing
