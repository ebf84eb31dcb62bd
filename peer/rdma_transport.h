// The RDMA transport (rdma-core: librdmacm + libibverbs): the same byte
// channel as TCP (peer/transport.h), carried by SEND/RECV of chunks over one
// reliable-connected (RC) queue pair per connection.
//
// Design (both sides run the same code once connected):
//   * Set-up: librdmacm resolves the address and route (client:
//     rdma_resolve_addr, rdma_resolve_route; server: rdma_listen, then a
//     CONNECT_REQUEST), creates a protection domain, a completion channel, one
//     completion queue for sends and receives and an RC queue pair; the
//     channel registers its buffers (ibv_reg_mr), posts all its receives, and
//     only then connects (rdma_connect / rdma_accept, waiting for
//     ESTABLISHED), so that no SEND of the peer ever finds no receive posted.
//     The server listens on the same port number as its TCP listener, in the
//     RDMA CM port space (RDMA_PS_TCP), and sets each connection up inside
//     Listener::accept(), bounded by RdmaOptions::setup_timeout. A client
//     that cannot connect over RDMA falls back to TCP (PeerClient).
//   * Buffers: kRdmaDepth send slots and kRdmaDepth receive slots, each
//     kRdmaSlotBytes = an 8-byte header + up to kRdmaChunkBytes (64 KiB) of
//     payload, in two registered regions (LOCAL_WRITE; nothing is exposed to
//     remote access: no RDMA READ/WRITE, no rkey ever leaves the host).
//   * Message: header {payload_len u32, credits u32} (host order: both ends
//     are this code on the same architecture family; a length over 64 KiB or
//     a completion whose byte count disagrees with the header ends the channel).
//   * Credit-based flow control: a side may post one SEND per credit; it
//     starts with kRdmaDepth (the peer posted that many receives before
//     connecting). A receiver reposts a slot once its bytes are consumed and
//     returns the credit in the `credits` field of its next message; when it
//     holds kRdmaDepth / 2 credits to return and has nothing to send, it sends
//     a credit-only message (payload_len 0). Data needs two credits, so the
//     last one is always left for a credit-only message: credits can always
//     flow back. The peer protocol is half-duplex (request, then reply), so a
//     receiver always ends up consuming what the sender sent; were both sides
//     to send without reading, they would stop at their deadlines, not hang.
//   * Completions: one completion queue, armed with ibv_req_notify_cq and
//     waited on through its completion channel's fd with poll(2) until the
//     call's deadline. Any completion in error (e.g. IBV_WC_WR_FLUSH_ERR after
//     a disconnect, IBV_WC_RETRY_EXC_ERR when the peer died) ends the channel
//     with kIo naming the status.
//   * sendFile preads the file straight into a registered send slot (no bounce
//     buffer); the HCA DMAs it from there.
//
// Verbs is the seam that unit tests replace with an in-process fake that moves
// bytes between two endpoints' registered buffers (tests/peer/rdma_fake.h).
// What ran where: the RDMA code paths above (set-up order, registration,
// chunking, credits, completion handling and errors) are unit-tested through
// that fake; systemVerbs() is rdma-core, and on a host without an RDMA device
// it reports kUnsupported. Nothing has run on real RDMA hardware yet.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/result.h"
#include "peer/transport.h"

namespace hotshard::peer {

inline constexpr size_t kRdmaChunkBytes = 64 * 1024;
inline constexpr size_t kRdmaHeaderBytes = 8;
inline constexpr size_t kRdmaSlotBytes = kRdmaHeaderBytes + kRdmaChunkBytes;
inline constexpr uint32_t kRdmaDepth = 16;

// A registered memory region (ibv_mr): where it is and its local key.
struct MemoryRegion {
  uint8_t* addr = nullptr;
  size_t length = 0;
  uint32_t lkey = 0;
  void* handle = nullptr;  // the implementation's (struct ibv_mr*)
};

enum class WorkOp { kSend, kRecv };

// One work completion (struct ibv_wc), reduced to what the channel uses.
struct WorkCompletion {
  uint64_t wr_id = 0;
  WorkOp op = WorkOp::kRecv;
  bool ok = false;
  uint32_t byte_len = 0;  // bytes received (receives only)
  std::string status;     // ibv_wc_status_str() when !ok
};

// One RC queue pair with its protection domain, completion queue and
// completion channel, made by resolve() or VerbsListener::accept(): not
// connected until establish().
class VerbsQueuePair {
 public:
  virtual ~VerbsQueuePair() = default;
  // ibv_reg_mr(LOCAL_WRITE). Errors: kIo (with errno), kInvalidArgument.
  virtual Result<MemoryRegion> registerMemory(void* addr, size_t length) = 0;
  virtual void deregisterMemory(const MemoryRegion& region) = 0;
  // ibv_post_recv / ibv_post_send (IBV_WR_SEND, signaled) of one sge
  // [offset, offset + length) of `region`. Errors: kIo.
  virtual Status postRecv(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                          size_t length) = 0;
  virtual Status postSend(uint64_t wr_id, const MemoryRegion& region, size_t offset,
                          size_t length) = 0;
  // Up to `max` completions; waits (completion channel) until at least one
  // or the deadline: an empty vector then. Errors: kIo.
  virtual Result<std::vector<WorkCompletion>> pollCompletions(size_t max, Deadline deadline) = 0;
  // Client: rdma_connect; server: rdma_accept; then waits for ESTABLISHED.
  // Errors: kIo (rejected, unreachable, deadline).
  virtual Status establish(Deadline deadline) = 0;
  // rdma_disconnect: posted work completes in error. Thread-safe, idempotent.
  virtual void disconnect() = 0;
  virtual std::string peerAddress() const = 0;
};

class VerbsListener {
 public:
  virtual ~VerbsListener() = default;
  // The next connection request, with its queue pair made, not yet accepted.
  // Errors: kIo ("closed" after close()).
  virtual Result<std::unique_ptr<VerbsQueuePair>> accept() = 0;
  virtual std::string boundAddress() const = 0;
  virtual void close() = 0;  // wakes accept(); thread-safe
};

class Verbs {
 public:
  virtual ~Verbs() = default;
  // Ok when an RDMA device is usable. Errors: kUnsupported
  // (ibv_get_device_list found no device).
  virtual Status probe() = 0;
  // Client side: address and route resolved, queue pair made, not connected.
  // Errors: kInvalidArgument, kIo, kUnsupported.
  virtual Result<std::unique_ptr<VerbsQueuePair>> resolve(const std::string& address,
                                                          Deadline deadline) = 0;
  virtual Result<std::unique_ptr<VerbsListener>> listen(const std::string& address) = 0;
};

// rdma-core on this host (one instance per process).
Verbs& systemVerbs();

struct RdmaOptions {
  std::chrono::milliseconds setup_timeout{5000};  // register, post, connect/accept
};

// The channel over a made (not yet established) queue pair: registers its
// buffers, posts its receives, establishes. Errors: kIo, kUnsupported.
Result<std::unique_ptr<Channel>> makeRdmaChannel(std::unique_ptr<VerbsQueuePair> qp,
                                                 Deadline deadline);

Result<std::unique_ptr<Listener>> listenRdma(Verbs& verbs, const std::string& address,
                                             RdmaOptions options);
std::unique_ptr<Connector> makeRdmaConnector(Verbs& verbs, RdmaOptions options);

}  // namespace hotshard::peer
