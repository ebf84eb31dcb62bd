#include "policy/s3fifo.h"

namespace hotshard::policy {

Status S3FifoPolicy::Config::validate() const {
  if (!(small_ratio > 0 && small_ratio < 1))
    return makeError(Errc::kInvalidArgument, "s3fifo: small_ratio must be in (0, 1)");
  if (!(ghost_ratio >= 0))
    return makeError(Errc::kInvalidArgument, "s3fifo: ghost_ratio must be >= 0");
  if (move_to_main < 1 || move_to_main > 3)
    return makeError(Errc::kInvalidArgument, "s3fifo: move_to_main must be 1..3");
  return {};
}

S3FifoPolicy::S3FifoPolicy(std::uint64_t capacity, Config config)
    : Policy(capacity), config_(config) {}

bool S3FifoPolicy::contains(ObjectId id) const noexcept {
  detail::Slot s = index_.find(id);
  return s != detail::kNoSlot && nodes_[s].where != kGhost;
}

double S3FifoPolicy::heat(ObjectId id) const noexcept {
  return contains(id) ? 1.0 + nodes_[index_.find(id)].freq : 0.0;
}

void S3FifoPolicy::link(detail::Slot s, Where where) noexcept {
  nodes_[s].where = where;
  lists_[where].pushFront(s);
  bytes_[where] += nodes_[s].size;
}

void S3FifoPolicy::unlink(detail::Slot s) noexcept {
  lists_[nodes_[s].where].erase(s);
  bytes_[nodes_[s].where] -= nodes_[s].size;
}

void S3FifoPolicy::drop(detail::Slot s) noexcept {
  if (nodes_[s].where != kGhost) accountRemove(nodes_[s].size);
  unlink(s);
  index_.erase(nodes_[s].id);
  nodes_.release(s);
}

void S3FifoPolicy::recordAccess(const Access& access) noexcept {
  detail::Slot s = index_.find(access.id);
  if (s != detail::kNoSlot && nodes_[s].where != kGhost && nodes_[s].freq < 3) ++nodes_[s].freq;
}

ObjectId S3FifoPolicy::evictOne() noexcept {
  auto small_limit =
      static_cast<std::uint64_t>(config_.small_ratio * static_cast<double>(capacity()));
  while (true) {
    if (!lists_[kSmall].empty() && (bytes_[kSmall] >= small_limit || lists_[kMain].empty())) {
      detail::Slot t = lists_[kSmall].back();
      unlink(t);
      if (nodes_[t].freq >= config_.move_to_main) {
        nodes_[t].freq = 0;
        link(t, kMain);
        continue;
      }
      accountRemove(nodes_[t].size);
      link(t, kGhost);
      auto ghost_limit =
          static_cast<std::uint64_t>(config_.ghost_ratio * static_cast<double>(capacity()));
      while (bytes_[kGhost] > ghost_limit) drop(lists_[kGhost].back());
      countEviction();
      return nodes_[t].id;
    }
    detail::Slot t = lists_[kMain].back();
    if (nodes_[t].freq > 0) {
      --nodes_[t].freq;
      lists_[kMain].moveToFront(t);
      continue;
    }
    ObjectId id = nodes_[t].id;
    drop(t);
    countEviction();
    return id;
  }
}

bool S3FifoPolicy::admit(const Access& access, std::vector<ObjectId>& victims) noexcept {
  detail::Slot s = index_.find(access.id);
  if (access.size > capacity() || (s != detail::kNoSlot && nodes_[s].where != kGhost)) {
    countAdmit(false);
    return false;
  }
  bool ghost_hit = s != detail::kNoSlot;
  if (ghost_hit) {
    unlink(s);
  } else {
    s = nodes_.alloc();
    nodes_[s].id = access.id;
    index_.insert(access.id, s);
  }
  // Park the newcomer outside every queue while making room.
  while (used() + access.size > capacity()) victims.push_back(evictOne());
  nodes_[s].size = access.size;
  nodes_[s].freq = 0;
  link(s, ghost_hit ? kMain : kSmall);
  accountAdd(access.size);
  countAdmit(true);
  return true;
}

void S3FifoPolicy::add(ObjectId id, std::uint64_t size, TimeNs) noexcept {
  detail::Slot s = index_.find(id);
  if (s != detail::kNoSlot) {
    if (nodes_[s].where != kGhost) return;
    unlink(s);
  } else {
    s = nodes_.alloc();
    nodes_[s].id = id;
    index_.insert(id, s);
  }
  nodes_[s].size = size;
  nodes_[s].freq = 0;
  link(s, kMain);  // restored objects were worth keeping once already
  accountAdd(size);
}

void S3FifoPolicy::remove(ObjectId id) noexcept {
  detail::Slot s = index_.find(id);
  if (s != detail::kNoSlot) drop(s);
}

void S3FifoPolicy::evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept {
  // Unhit objects of S, then objects of M without hits left, oldest first; then the rest.
  std::uint64_t freed = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (Where w : {kSmall, kMain}) {
      for (detail::Slot s = lists_[w].back(); s != detail::kNoSlot; s = lists_[w].prevOf(s)) {
        if (freed >= bytes) return;
        if ((nodes_[s].freq == 0) == (pass == 0))
          out.push_back(nodes_[s].id), freed += nodes_[s].size;
      }
    }
  }
}

void S3FifoPolicy::residents(std::vector<Resident>& out) const {
  for (Where w : {kSmall, kMain}) {
    for (detail::Slot s = lists_[w].back(); s != detail::kNoSlot; s = lists_[w].prevOf(s)) {
      out.push_back({nodes_[s].id, nodes_[s].size});
    }
  }
}

void S3FifoPolicy::visitExtraCounters(const CounterVisitor& visit) const {
  visit("s3fifo_small_bytes", static_cast<double>(bytes_[kSmall]));
  visit("s3fifo_main_bytes", static_cast<double>(bytes_[kMain]));
  visit("s3fifo_ghost_bytes", static_cast<double>(bytes_[kGhost]));
}

}  // namespace hotshard::policy
