// Building blocks shared by the policies: an id -> slot hash index, a slab of nodes
// addressed by 32-bit slots, an intrusive doubly linked list over such slots, and an
// indexed min-heap. Slots instead of pointers keep nodes small and the simulator fast.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "policy/policy.h"

namespace hotshard::policy::detail {

using Slot = std::uint32_t;

// A cache hint for the simulator's look-ahead; compiles to nothing elsewhere.
inline void prefetchAddress(const void* p) noexcept {
#if defined(__GNUC__)
  __builtin_prefetch(p);
#else
  (void)p;
#endif
}
inline constexpr Slot kNoSlot = std::numeric_limits<Slot>::max();

// Open addressing, linear probing, backward-shift deletion. Any 64-bit id is a key.
class IdIndex {
 public:
  IdIndex() { rehash(64); }

  Slot find(ObjectId id) const noexcept {
    for (std::size_t i = home(id);; i = (i + 1) & mask_) {
      const auto& c = cells_[i];
      if (c.slot == kNoSlot) return kNoSlot;
      if (c.id == id) return c.slot;
    }
  }

  void insert(ObjectId id, Slot slot) {
    if ((size_ + 1) * 2 > cells_.size()) rehash(cells_.size() * 2);
    place(id, slot);
    ++size_;
  }

  void erase(ObjectId id) noexcept {
    std::size_t i = home(id);
    while (cells_[i].slot != kNoSlot && cells_[i].id != id) i = (i + 1) & mask_;
    if (cells_[i].slot == kNoSlot) return;
    // Shift later members of the run back so lookups never stop early.
    std::size_t hole = i;
    for (std::size_t j = (i + 1) & mask_; cells_[j].slot != kNoSlot; j = (j + 1) & mask_) {
      std::size_t h = home(cells_[j].id);
      bool movable = hole <= j ? (h <= hole || h > j) : (h <= hole && h > j);
      if (movable) {
        cells_[hole] = cells_[j];
        hole = j;
      }
    }
    cells_[hole].slot = kNoSlot;
    --size_;
  }

  std::size_t size() const noexcept { return size_; }

  // Starts loading the cell where `id` would be found (a hint; no effect on results).
  void prefetch(ObjectId id) const noexcept { prefetchAddress(&cells_[home(id)]); }

 private:
  struct Cell {
    ObjectId id = 0;
    Slot slot = kNoSlot;
  };
  std::size_t home(ObjectId id) const noexcept {
    std::uint64_t h = id * 0x9E3779B97F4A7C15ull;
    return static_cast<std::size_t>(h >> shift_);
  }
  void place(ObjectId id, Slot slot) noexcept {
    std::size_t i = home(id);
    while (cells_[i].slot != kNoSlot) i = (i + 1) & mask_;
    cells_[i] = {id, slot};
  }
  void rehash(std::size_t n) {
    std::vector<Cell> old = std::move(cells_);
    cells_.assign(n, Cell{});
    mask_ = n - 1;
    shift_ = 64;
    for (std::size_t m = n; m > 1; m >>= 1) --shift_;
    for (const auto& c : old) {
      if (c.slot != kNoSlot) place(c.id, c.slot);
    }
  }
  std::vector<Cell> cells_;
  std::size_t mask_ = 0;
  int shift_ = 64;
  std::size_t size_ = 0;
};

// Nodes addressed by slot, with a free list. T needs a default constructor.
template <typename T>
class Slab {
 public:
  Slot alloc() {
    if (!free_.empty()) {
      Slot s = free_.back();
      free_.pop_back();
      nodes_[s] = T{};
      return s;
    }
    nodes_.emplace_back();
    return static_cast<Slot>(nodes_.size() - 1);
  }
  void release(Slot s) { free_.push_back(s); }
  T& operator[](Slot s) noexcept { return nodes_[s]; }
  const T& operator[](Slot s) const noexcept { return nodes_[s]; }

 private:
  std::vector<T> nodes_;
  std::vector<Slot> free_;
};

// Intrusive doubly linked list of slab nodes that have `Slot prev, next` members.
// front = most recently inserted.
template <typename T>
class List {
 public:
  explicit List(Slab<T>& slab) : slab_(&slab) {}

  void pushFront(Slot s) noexcept {
    T& n = (*slab_)[s];
    n.prev = kNoSlot;
    n.next = head_;
    if (head_ != kNoSlot) (*slab_)[head_].prev = s;
    head_ = s;
    if (tail_ == kNoSlot) tail_ = s;
    ++size_;
  }
  void erase(Slot s) noexcept {
    T& n = (*slab_)[s];
    if (n.prev != kNoSlot)
      (*slab_)[n.prev].next = n.next;
    else
      head_ = n.next;
    if (n.next != kNoSlot)
      (*slab_)[n.next].prev = n.prev;
    else
      tail_ = n.prev;
    n.prev = n.next = kNoSlot;
    --size_;
  }
  void moveToFront(Slot s) noexcept {
    if (head_ == s) return;
    erase(s);
    pushFront(s);
  }
  Slot front() const noexcept { return head_; }
  Slot back() const noexcept { return tail_; }
  Slot prevOf(Slot s) const noexcept { return (*slab_)[s].prev; }  // towards the front
  bool empty() const noexcept { return size_ == 0; }
  std::size_t size() const noexcept { return size_; }

 private:
  Slab<T>* slab_;
  Slot head_ = kNoSlot;
  Slot tail_ = kNoSlot;
  std::size_t size_ = 0;
};

// Binary min-heap of slots keyed by a double, with positions tracked so a key can
// change in place.
class MinHeap {
 public:
  bool contains(Slot s) const noexcept { return s < pos_.size() && pos_[s] != kNoSlot; }
  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  Slot top() const noexcept { return heap_.front().slot; }
  double topKey() const noexcept { return heap_.front().key; }
  double keyOf(Slot s) const noexcept { return heap_[pos_[s]].key; }
  Slot at(std::size_t i) const noexcept { return heap_[i].slot; }  // i < size(), heap order

  void push(Slot s, double key) {
    if (s >= pos_.size()) pos_.resize(s + 1, kNoSlot);
    heap_.push_back({key, s});
    pos_[s] = static_cast<Slot>(heap_.size() - 1);
    up(heap_.size() - 1);
  }
  void update(Slot s, double key) noexcept {
    std::size_t i = pos_[s];
    double old = heap_[i].key;
    heap_[i].key = key;
    if (key < old)
      up(i);
    else
      down(i);
  }
  void erase(Slot s) noexcept {
    std::size_t i = pos_[s];
    pos_[s] = kNoSlot;
    if (i + 1 != heap_.size()) {
      heap_[i] = heap_.back();
      pos_[heap_[i].slot] = static_cast<Slot>(i);
      heap_.pop_back();
      up(i);
      down(i);
    } else {
      heap_.pop_back();
    }
  }
  // The k smallest slots, smallest first, without changing the heap (best-first walk).
  template <typename Visit>
  void visitAscending(Visit&& visit) const {
    if (heap_.empty()) return;
    auto& frontier = frontier_;
    frontier.clear();
    frontier.push_back({heap_[0].key, 0});
    auto cmp = [](const auto& a, const auto& b) { return a.first > b.first; };
    while (!frontier.empty()) {
      std::pop_heap(frontier.begin(), frontier.end(), cmp);
      auto [key, i] = frontier.back();
      frontier.pop_back();
      if (!visit(heap_[i].slot)) return;
      for (std::size_t c = 2 * i + 1; c <= 2 * i + 2 && c < heap_.size(); ++c) {
        frontier.push_back({heap_[c].key, c});
        std::push_heap(frontier.begin(), frontier.end(), cmp);
      }
    }
  }

  // Slots from the smallest key up until their sizes cover `bytes`.
  template <typename SizeOf>
  void collectAscending(std::uint64_t bytes, std::vector<Slot>& out, SizeOf&& sizeOf) const {
    std::uint64_t covered = 0;
    visitAscending([&](Slot s) {
      if (covered >= bytes) return false;
      out.push_back(s);
      covered += sizeOf(s);
      return true;
    });
  }

 private:
  struct Entry {
    double key;
    Slot slot;
  };
  void up(std::size_t i) noexcept {
    Entry e = heap_[i];
    while (i > 0) {
      std::size_t p = (i - 1) / 2;
      if (!(e.key < heap_[p].key)) break;
      heap_[i] = heap_[p];
      pos_[heap_[i].slot] = static_cast<Slot>(i);
      i = p;
    }
    heap_[i] = e;
    pos_[e.slot] = static_cast<Slot>(i);
  }
  void down(std::size_t i) noexcept {
    Entry e = heap_[i];
    std::size_t n = heap_.size();
    while (true) {
      std::size_t c = 2 * i + 1;
      if (c >= n) break;
      if (c + 1 < n && heap_[c + 1].key < heap_[c].key) ++c;
      if (!(heap_[c].key < e.key)) break;
      heap_[i] = heap_[c];
      pos_[heap_[i].slot] = static_cast<Slot>(i);
      i = c;
    }
    heap_[i] = e;
    pos_[e.slot] = static_cast<Slot>(i);
  }
  std::vector<Entry> heap_;
  std::vector<Slot> pos_;
  mutable std::vector<std::pair<double, std::size_t>> frontier_;  // visitAscending's, reused
};

}  // namespace hotshard::policy::detail

#include <cmath>

namespace hotshard::policy::detail {

// Decayed counters kept in the log2 domain against a growing clock: a contribution w
// at clock t is stored as log2(w) + t, so every counter decays by the same factor as
// the clock advances and their order never needs a rescan; the value now is
// 2^(stored - now). Doubles keep this exact enough for ~2^40 half-lives.
inline constexpr double kLogZero = -std::numeric_limits<double>::infinity();

inline double logAdd(double a, double b) noexcept {
  if (a < b) std::swap(a, b);
  if (b == kLogZero || a - b > 60) return a;
  return a + std::log2(1.0 + std::exp2(b - a));
}

inline double logValueNow(double stored, double clock) noexcept {
  return stored == kLogZero ? 0.0 : std::exp2(stored - clock);
}

}  // namespace hotshard::policy::detail
