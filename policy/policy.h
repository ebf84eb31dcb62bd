// policy/: the placement brain of hotshard, a pure library (the standard library and base/
// only; no syscalls, no clocks: time is passed in), so the same code decides in the daemon
// and replays traces in the simulator, deterministically.
//
// The contract every policy implements (CacheLib MMContainer style):
//
//   recordAccess(sample)      every read sample of an object, resident or not
//   admit(sample, victims)    after a miss: promote the object? If yes, the policy has
//                             already taken it into its books and moved `victims` out
//                             of them; the caller deletes the victims' copies and
//                             promotes (and calls remove() if the promotion fails)
//   add(id, size, now)        make an object resident without asking (restore after a
//                             restart, policy swap, operator `warm`/`pin`)
//   remove(id)                the object left the cache (evicted by the caller,
//                             invalidated, failed promotion)
//   evictionCandidates(n, out)
//                             residents to drop first to free n bytes, coldest first,
//                             without dropping them (watermark eviction by the daemon)
//   heat(id)                  the value the policy ranks `id` by, higher is kept longer;
//                             0 for objects it does not know. Comparable only within one
//                             policy (`hotshard top` shows it). Never changes decisions.
//
// A policy owns the accounting of its resident bytes against the capacity it was built
// with; admit() never makes `used() > capacity()`. add() may overshoot (an operator
// asked for it); evictionCandidates() then tells what to drop.
//
// What can fail here (bad parameters, bad trace files) returns base's Result<T> or
// Status: Errc::kInvalidArgument for parameters, specs and names, kCorrupt for
// malformed trace files, kIo for streams that fail, kUnsupported for what a format or
// OPT cannot hold. Messages name the policy, parameter or trace ("lfu: no parameter
// 'x' (accepted: half_life)", "t.csv:3: field object_id: ...").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "base/result.h"

namespace hotshard::policy {

using ObjectId = std::uint64_t;
using TimeNs = std::uint64_t;

// One read sample of an object (one trace record, or one tick's probe counts).
struct Access {
  ObjectId id = 0;
  std::uint64_t size = 0;          // the object's size in bytes
  std::uint64_t bytes_read = 0;    // bytes the jobs read
  // Of those, bytes that missed the page cache: fetched from the remote, or from the NVMe
  // copy for a resident object (what would come from the remote if it were evicted).
  std::uint64_t bytes_missed = 0;
  TimeNs time_ns = 0;
  // The data set the object belongs to: a hash of its top-level directory under the
  // mount (datasetOf() in policy/trace.h), so one training job's files, or one model's,
  // share an id. 0: unknown (old traces, files at the top level); policies treat every
  // unknown object alike and never call its data set finished.
  std::uint32_t dataset = 0;
};

// Counters are handed to a visitor, so only daemon/ knows Prometheus.
using CounterVisitor = std::function<void(std::string_view name, double value)>;

// A resident object, for swapping policies (construct the new one, add() these).
struct Resident {
  ObjectId id = 0;
  std::uint64_t size = 0;
};

class Policy {
 public:
  explicit Policy(std::uint64_t capacity_bytes) noexcept : capacity_(capacity_bytes) {}
  virtual ~Policy() = default;
  Policy(const Policy&) = delete;
  Policy& operator=(const Policy&) = delete;

  virtual std::string_view name() const noexcept = 0;
  // The policy's parameters as k=v strings, in the factory's syntax.
  virtual std::vector<std::string> params() const = 0;

  virtual void recordAccess(const Access& access) noexcept = 0;
  // Call after recordAccess() of a sample whose object is not resident.
  virtual bool admit(const Access& access, std::vector<ObjectId>& victims) noexcept = 0;
  virtual void add(ObjectId id, std::uint64_t size, TimeNs now) noexcept = 0;
  virtual void remove(ObjectId id) noexcept = 0;
  virtual void evictionCandidates(std::uint64_t bytes, std::vector<ObjectId>& out) noexcept = 0;
  virtual bool contains(ObjectId id) const noexcept = 0;
  virtual double heat(ObjectId id) const noexcept = 0;
  // A hint that `id` will be accessed soon, so a policy may start loading its metadata:
  // stage 0 comes first (far ahead), stage 1 later (near). Never changes decisions.
  virtual void prefetch(ObjectId id, int stage) const noexcept {
    (void)id;
    (void)stage;
  }
  // Every resident object, in no particular order.
  virtual void residents(std::vector<Resident>& out) const = 0;
  // Policy-specific counters; the common ones (capacity, used, objects, admits,
  // rejects, evictions) are added by visitCounters().
  virtual void visitExtraCounters(const CounterVisitor&) const {}

  void visitCounters(const CounterVisitor& visit) const;

  std::uint64_t capacity() const noexcept { return capacity_; }
  std::uint64_t used() const noexcept { return used_; }
  std::uint64_t objects() const noexcept { return objects_; }

 protected:
  // The classic admission: every miss that fits is admitted, after evicting the
  // objects pickVictim() names (one per call) until it fits.
  template <typename PickVictim>
  bool admitEvicting(const Access& access, std::vector<ObjectId>& victims,
                     PickVictim&& pickVictim) noexcept {
    if (access.size > capacity() || contains(access.id)) {
      countAdmit(false);
      return false;
    }
    while (used() + access.size > capacity()) {
      ObjectId victim = pickVictim();
      remove(victim);
      victims.push_back(victim);
      countEviction();
    }
    add(access.id, access.size, access.time_ns);
    countAdmit(true);
    return true;
  }

  // Bookkeeping helpers for implementations.
  void accountAdd(std::uint64_t size) noexcept { used_ += size, ++objects_; }
  void accountRemove(std::uint64_t size) noexcept { used_ -= size, --objects_; }
  void countAdmit(bool admitted) noexcept { ++(admitted ? admits_ : rejects_); }
  void countEviction() noexcept { ++evictions_; }

 private:
  std::uint64_t capacity_;
  std::uint64_t used_ = 0;
  std::uint64_t objects_ = 0;
  std::uint64_t admits_ = 0;
  std::uint64_t rejects_ = 0;
  std::uint64_t evictions_ = 0;
};

}  // namespace hotshard::policy
