// S3-FIFO: three FIFO queues. New objects enter a small queue S (10% of the bytes);
// when S is over its share, its oldest object moves to the main queue M if it was hit
// while in S, and is otherwise evicted with its id kept in a ghost queue G. A miss
// that hits G goes straight to M. M is a CLOCK-like FIFO: an object with hits left
// (a 2-bit counter) is reinserted with one less. One-hit wonders and scans leave
// through S without disturbing M. Yang et al., "FIFO queues are all you need for
// cache eviction", SOSP 2023.
#pragma once

#include "policy/detail.h"
#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

class S3FifoPolicy final : public Policy {
 public:
  struct Config {
    double small_ratio = 0.1;  // share of the capacity for the small queue S
    double ghost_ratio =
        0.9;  // ghost ids kept, in bytes of the objects they stood for, over capacity
    std::uint64_t move_to_main = 1;  // hits while in S that earn a move to M
    void bind(ParamTable& t) {
      t.add("small_ratio", &small_ratio, "share of the capacity for the small FIFO, in (0, 1)")
          .add("ghost_ratio", &ghost_ratio,
               "ghost history, as bytes of evicted objects over the capacity, >= 0")
          .add("move_to_main", &move_to_main,
               "hits in the small FIFO needed to move to the main FIFO, 1..3");
    }
    Status validate() const;
  };

  S3FifoPolicy(std::uint64_t capacity, Config config);
  explicit S3FifoPolicy(std::uint64_t capacity) : S3FifoPolicy(capacity, Config()) {}

  std::string_view name() const noexcept override { return "s3fifo"; }
  std::vector<std::string> params() const override { return currentParams(config_); }
  void recordAccess(const Access& access) noexcept override;
  bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept override;
  void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept override;
  void remove(ObjectId id) noexcept override;
  void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept override;
  bool contains(ObjectId id) const noexcept override;
  // 1 + the access count (0..3) a resident has for its next pass; 0 otherwise.
  double heat(ObjectId id) const noexcept override;
  void residents(std::vector<Resident>& out) const override;
  void visitExtraCounters(const CounterVisitor& visit) const override;

 private:
  enum Where : std::uint8_t { kSmall, kMain, kGhost };
  struct Node {
    ObjectId id = 0;
    std::uint64_t size = 0;
    std::uint8_t freq = 0;
    Where where = kSmall;
    detail::Slot prev = detail::kNoSlot, next = detail::kNoSlot;
  };
  void link(detail::Slot s, Where where) noexcept;
  void unlink(detail::Slot s) noexcept;
  void drop(detail::Slot s) noexcept;
  // Evicts exactly one resident (moving others between queues on the way).
  ObjectId evictOne() noexcept;

  Config config_;
  detail::IdIndex index_;
  detail::Slab<Node> nodes_;
  detail::List<Node> lists_[3] = {detail::List<Node>(nodes_), detail::List<Node>(nodes_),
                                  detail::List<Node>(nodes_)};
  std::uint64_t bytes_[3] = {0, 0, 0};
};

}  // namespace hotshard::policy
