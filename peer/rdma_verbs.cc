// systemVerbs(): the Verbs seam of peer/rdma_transport.h over rdma-core
// (librdmacm for connection management, libibverbs for the data path).
#include <arpa/inet.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <netdb.h>
#include <poll.h>
#include <rdma/rdma_cma.h>
#include <sys/eventfd.h>

#include <algorithm>
#include <atomic>
#include <cstring>

#include "base/fd.h"
#include "peer/rdma_transport.h"

namespace hotshard::peer {
namespace {

Status setNonBlocking(int fd, const char* what) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return lastSysError(what);
  return Ok{};
}

// Waits for the next event on `channel` and checks it is `want`.
Status waitCmEvent(rdma_event_channel* channel, rdma_cm_event_type want, Deadline deadline,
                   const char* what) {
  pollfd p{channel->fd, POLLIN, 0};
  int r = ::poll(&p, 1, pollTimeoutMs(deadline));
  if (r == 0) return makeError(Errc::kIo, std::string("rdma ") + what + ": timed out");
  if (r < 0) return lastSysError(std::string("poll rdma event channel for ") + what);
  rdma_cm_event* event = nullptr;
  if (rdma_get_cm_event(channel, &event) != 0)
    return lastSysError(std::string("rdma_get_cm_event for ") + what);
  rdma_cm_event_type got = event->event;
  int status = event->status;
  rdma_ack_cm_event(event);
  if (got != want)
    return makeError(Errc::kIo, std::string("rdma ") + what + ": " + rdma_event_str(got) +
                                    " (status " + std::to_string(status) + ")");
  return Ok{};
}

// The resources of one connection, released in reverse order of creation.
class RealQueuePair final : public VerbsQueuePair {
 public:
  RealQueuePair(rdma_event_channel* events, rdma_cm_id* id, bool server)
      : events_(events), id_(id), server_(server) {}

  ~RealQueuePair() override {
    if (id_->qp != nullptr) rdma_destroy_qp(id_);
    if (cq_ != nullptr) ibv_destroy_cq(cq_);
    if (comp_ != nullptr) ibv_destroy_comp_channel(comp_);
    if (pd_ != nullptr) ibv_dealloc_pd(pd_);
    rdma_destroy_id(id_);
    rdma_destroy_event_channel(events_);
  }

  Status create() {
    pd_ = ibv_alloc_pd(id_->verbs);
    if (pd_ == nullptr) return lastSysError("ibv_alloc_pd");
    comp_ = ibv_create_comp_channel(id_->verbs);
    if (comp_ == nullptr) return lastSysError("ibv_create_comp_channel");
    RETURN_IF_ERROR(setNonBlocking(comp_->fd, "completion channel O_NONBLOCK"));
    cq_ = ibv_create_cq(id_->verbs, 2 * kRdmaDepth, nullptr, comp_, 0);
    if (cq_ == nullptr) return lastSysError("ibv_create_cq");
    if (ibv_req_notify_cq(cq_, 0) != 0) return lastSysError("ibv_req_notify_cq");
    ibv_qp_init_attr attr{};
    attr.send_cq = cq_;
    attr.recv_cq = cq_;
    attr.qp_type = IBV_QPT_RC;
    attr.cap.max_send_wr = kRdmaDepth;
    attr.cap.max_recv_wr = kRdmaDepth;
    attr.cap.max_send_sge = 1;
    attr.cap.max_recv_sge = 1;
    if (rdma_create_qp(id_, pd_, &attr) != 0) return lastSysError("rdma_create_qp");
    return Ok{};
  }

  Result<MemoryRegion> registerMemory(void* addr, size_t length) override {
    ibv_mr* mr = ibv_reg_mr(pd_, addr, length, IBV_ACCESS_LOCAL_WRITE);
    if (mr == nullptr) return lastSysError("ibv_reg_mr of " + std::to_string(length) + " bytes");
    return MemoryRegion{static_cast<uint8_t*>(addr), length, mr->lkey, mr};
  }
  void deregisterMemory(const MemoryRegion& region) override {
    if (region.handle != nullptr) ibv_dereg_mr(static_cast<ibv_mr*>(region.handle));
  }

  Status postRecv(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                  size_t length) override {
    ibv_sge sge{reinterpret_cast<uint64_t>(region.addr + offset), static_cast<uint32_t>(length),
                region.lkey};
    ibv_recv_wr wr{};
    ibv_recv_wr* bad = nullptr;
    wr.wr_id = wr_id, wr.sg_list = &sge, wr.num_sge = 1;
    int rc = ibv_post_recv(id_->qp, &wr, &bad);
    return rc == 0 ? Status(Ok{}) : sysError(rc, "ibv_post_recv");
  }

  Status postSend(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                  size_t length) override {
    ibv_sge sge{reinterpret_cast<uint64_t>(region.addr + offset), static_cast<uint32_t>(length),
                region.lkey};
    ibv_send_wr wr{};
    ibv_send_wr* bad = nullptr;
    wr.wr_id = wr_id, wr.sg_list = &sge, wr.num_sge = 1;
    wr.opcode = IBV_WR_SEND, wr.send_flags = IBV_SEND_SIGNALED;
    int rc = ibv_post_send(id_->qp, &wr, &bad);
    return rc == 0 ? Status(Ok{}) : sysError(rc, "ibv_post_send");
  }

  Result<std::vector<WorkCompletion>> pollCompletions(size_t max, Deadline deadline) override {
    for (;;) {
      auto reaped = reap(max);
      if (!reaped.ok() || !reaped->empty()) return reaped;
      // Nothing queued: re-arm, look once more (a completion may have raced
      // the arming), then sleep on the completion channel.
      if (ibv_req_notify_cq(cq_, 0) != 0) return lastSysError("ibv_req_notify_cq");
      reaped = reap(max);
      if (!reaped.ok() || !reaped->empty()) return reaped;
      pollfd p{comp_->fd, POLLIN, 0};
      int r = ::poll(&p, 1, pollTimeoutMs(deadline));
      if (r == 0) return std::vector<WorkCompletion>{};
      if (r < 0 && errno != EINTR) return lastSysError("poll completion channel");
      ibv_cq* cq = nullptr;
      void* context = nullptr;
      if (r > 0 && ibv_get_cq_event(comp_, &cq, &context) == 0) ibv_ack_cq_events(cq, 1);
    }
  }

  Status establish(Deadline deadline) override {
    rdma_conn_param param{};
    param.retry_count = 7;
    param.rnr_retry_count = 7;
    if (server_ ? rdma_accept(id_, &param) != 0 : rdma_connect(id_, &param) != 0)
      return lastSysError(server_ ? "rdma_accept" : "rdma_connect");
    return waitCmEvent(events_, RDMA_CM_EVENT_ESTABLISHED, deadline, "connect");
  }

  void disconnect() override {
    if (!disconnected_.exchange(true)) rdma_disconnect(id_);
  }

  std::string peerAddress() const override { return formatSockaddr(rdma_get_peer_addr(id_)); }

 private:
  Result<std::vector<WorkCompletion>> reap(size_t max) {
    std::vector<ibv_wc> wcs(max);
    int n = ibv_poll_cq(cq_, static_cast<int>(max), wcs.data());
    if (n < 0) return makeError(Errc::kIo, "ibv_poll_cq failed");
    std::vector<WorkCompletion> out;
    for (int i = 0; i < n; ++i) {
      const ibv_wc& wc = wcs[i];
      out.push_back(
          WorkCompletion{wc.wr_id, wc.opcode == IBV_WC_RECV ? WorkOp::kRecv : WorkOp::kSend,
                         wc.status == IBV_WC_SUCCESS, wc.byte_len, ibv_wc_status_str(wc.status)});
      // A failed completion's opcode is undefined: the channel ends on it anyway.
    }
    return out;
  }

  rdma_event_channel* events_;
  rdma_cm_id* id_;
  bool server_;
  ibv_pd* pd_ = nullptr;
  ibv_comp_channel* comp_ = nullptr;
  ibv_cq* cq_ = nullptr;
  std::atomic<bool> disconnected_{false};
};

Result<rdma_event_channel*> newEventChannel() {
  rdma_event_channel* ch = rdma_create_event_channel();
  if (ch == nullptr) return lastSysError("rdma_create_event_channel");
  Status st = setNonBlocking(ch->fd, "rdma event channel O_NONBLOCK");
  if (!st.ok()) {
    rdma_destroy_event_channel(ch);
    return st.takeError();
  }
  return ch;
}

// A CM id on a fresh event channel; the caller owns both.
Result<std::pair<rdma_event_channel*, rdma_cm_id*>> newCmId() {
  ASSIGN_OR_RETURN(rdma_event_channel * events, newEventChannel());
  rdma_cm_id* id = nullptr;
  if (rdma_create_id(events, &id, nullptr, RDMA_PS_TCP) != 0) {
    Error e = lastSysError("rdma_create_id");
    rdma_destroy_event_channel(events);
    return e;
  }
  return std::make_pair(events, id);
}

class RealListener final : public VerbsListener {
 public:
  RealListener(rdma_event_channel* events, rdma_cm_id* id, UniqueFd wake)
      : events_(events), id_(id), wake_(std::move(wake)) {}
  ~RealListener() override {
    rdma_destroy_id(id_);
    rdma_destroy_event_channel(events_);
  }

  Result<std::unique_ptr<VerbsQueuePair>> accept() override {
    for (;;) {
      pollfd p[2] = {{events_->fd, POLLIN, 0}, {wake_.get(), POLLIN, 0}};
      if (closed_) return makeError(Errc::kIo, "rdma listener closed");
      int r = ::poll(p, 2, -1);
      if (closed_ || (r > 0 && (p[1].revents & POLLIN)))
        return makeError(Errc::kIo, "rdma listener closed");
      if (r < 0 && errno != EINTR) return lastSysError("poll rdma listener");
      rdma_cm_event* event = nullptr;
      if (r <= 0 || rdma_get_cm_event(events_, &event) != 0) continue;
      rdma_cm_id* conn = event->event == RDMA_CM_EVENT_CONNECT_REQUEST ? event->id : nullptr;
      rdma_ack_cm_event(event);
      if (conn != nullptr) return admit(conn);
    }
  }

  std::string boundAddress() const override { return formatSockaddr(rdma_get_local_addr(id_)); }
  void close() override {
    if (closed_.exchange(true)) return;
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
  }

 private:
  // The connection gets its own event channel, so that its ESTABLISHED and
  // DISCONNECTED events never mix with the listener's requests.
  Result<std::unique_ptr<VerbsQueuePair>> admit(rdma_cm_id* conn) {
    auto events = newEventChannel();
    if (!events.ok() || rdma_migrate_id(conn, *events) != 0) {
      Error e = events.ok() ? lastSysError("rdma_migrate_id") : events.takeError();
      if (events.ok()) rdma_destroy_event_channel(*events);
      rdma_reject(conn, nullptr, 0);
      rdma_destroy_id(conn);
      return e;
    }
    auto qp = std::make_unique<RealQueuePair>(*events, conn, true);
    RETURN_IF_ERROR(qp->create());
    return std::unique_ptr<VerbsQueuePair>(std::move(qp));
  }

  rdma_event_channel* events_;
  rdma_cm_id* id_;
  UniqueFd wake_;
  std::atomic<bool> closed_{false};
};

class RealVerbs final : public Verbs {
 public:
  Status probe() override {
    int n = 0;
    ibv_device** list = ibv_get_device_list(&n);
    if (list == nullptr)
      return makeError(Errc::kUnsupported,
                       std::string("no RDMA device: ibv_get_device_list: ") + std::strerror(errno));
    ibv_free_device_list(list);
    if (n == 0)
      return makeError(Errc::kUnsupported, "no RDMA device (ibv_get_device_list found none)");
    return Ok{};
  }

  Result<std::unique_ptr<VerbsQueuePair>> resolve(const std::string& address,
                                                  Deadline deadline) override {
    ASSIGN_OR_RETURN(AddrInfoPtr addrs, resolveHostPort(address, false));
    ASSIGN_OR_RETURN(auto cm, newCmId());
    auto [events, id] = cm;
    auto qp = std::make_unique<RealQueuePair>(events, id, false);  // owns events and id from here
    int timeout_ms = std::max(1, pollTimeoutMs(deadline));
    if (rdma_resolve_addr(id, nullptr, addrs->ai_addr, timeout_ms) != 0)
      return lastSysError("rdma_resolve_addr " + address);
    RETURN_IF_ERROR(waitCmEvent(events, RDMA_CM_EVENT_ADDR_RESOLVED, deadline, "resolve address"));
    if (rdma_resolve_route(id, std::max(1, pollTimeoutMs(deadline))) != 0)
      return lastSysError("rdma_resolve_route " + address);
    RETURN_IF_ERROR(waitCmEvent(events, RDMA_CM_EVENT_ROUTE_RESOLVED, deadline, "resolve route"));
    RETURN_IF_ERROR(qp->create());
    return std::unique_ptr<VerbsQueuePair>(std::move(qp));
  }

  Result<std::unique_ptr<VerbsListener>> listen(const std::string& address) override {
    ASSIGN_OR_RETURN(AddrInfoPtr addrs, resolveHostPort(address, true));
    UniqueFd wake(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake) return lastSysError("eventfd for rdma listener");
    ASSIGN_OR_RETURN(auto cm, newCmId());
    auto [events, id] = cm;
    auto listener = std::make_unique<RealListener>(events, id, std::move(wake));
    if (rdma_bind_addr(id, addrs->ai_addr) != 0) return lastSysError("rdma_bind_addr " + address);
    if (rdma_listen(id, 128) != 0) return lastSysError("rdma_listen " + address);
    return std::unique_ptr<VerbsListener>(std::move(listener));
  }
};

}  // namespace

Verbs& systemVerbs() {
  static RealVerbs verbs;
  return verbs;
}

}  // namespace hotshard::peer
