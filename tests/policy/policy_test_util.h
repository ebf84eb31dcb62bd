// Helpers for the policy/ suites: small traces built by hand, and runs of them.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "policy/generate.h"
#include "policy/registry.h"
#include "policy/simulator.h"
#include "policy/trace.h"

namespace hotshard::policy::testing {

// Whole reads from the remote of the given ids, all of `size` bytes, 1 ms apart.
inline std::vector<Request> wholeReads(const std::vector<ObjectId>& ids, std::uint64_t size = 1) {
  std::vector<Request> out;
  for (ObjectId id : ids) {
    Request r;
    r.time_ns = out.size() * 1000000;
    r.id = id;
    r.size = size;
    r.bytes_read = size;
    r.bytes_missed = size;
    out.push_back(r);
  }
  return out;
}

// The ids of the objects `p` holds, sorted.
inline std::vector<ObjectId> residentIds(const Policy& p) {
  std::vector<Resident> r;
  p.residents(r);
  std::vector<ObjectId> ids;
  for (const auto& x : r) ids.push_back(x.id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

inline std::vector<ObjectId> range(ObjectId from, ObjectId to) {  // [from, to)
  std::vector<ObjectId> out;
  for (ObjectId id = from; id < to; ++id) out.push_back(id);
  return out;
}

inline std::vector<ObjectId> concat(std::initializer_list<std::vector<ObjectId>> parts) {
  std::vector<ObjectId> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

inline std::vector<ObjectId> repeat(const std::vector<ObjectId>& ids, int times) {
  std::vector<ObjectId> out;
  for (int i = 0; i < times; ++i) out.insert(out.end(), ids.begin(), ids.end());
  return out;
}

// A trace of a generator family (policy/generate.h), in memory.
inline std::vector<Request> generated(const std::string& family,
                                      const std::vector<KeyValue>& params, std::uint64_t seed) {
  std::vector<Request> out;
  auto st = generateTrace(family, params, seed, [&](const Request& r) {
    out.push_back(r);
    return Status();
  });
  EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message);
  return out;
}

inline std::unique_ptr<Policy> makePolicy(const std::string& spec, std::uint64_t capacity) {
  auto p = createPolicy(spec, capacity);
  EXPECT_TRUE(p.ok()) << (p.ok() ? "" : p.error().message);
  return p.ok() ? std::move(*p) : nullptr;
}

// A run of `trace` through `spec`; the instant model unless `options` says otherwise
// (simulate()'s two-argument form).
inline SimResult run(const std::string& spec, std::uint64_t capacity,
                     const std::vector<Request>& trace,
                     const SimOptions& options = SimOptions{.instant = true}) {
  auto policy = makePolicy(spec, capacity);
  auto reader = makeMemoryReader(trace);
  auto result = simulate(*reader, *policy, options);
  EXPECT_TRUE(result.ok());
  return result.ok() ? *result : SimResult{};
}

inline SimResult runOpt(std::uint64_t capacity, const std::vector<Request>& trace) {
  auto reader = makeMemoryReader(trace);
  auto result = simulateOpt(*reader, capacity);
  EXPECT_TRUE(result.ok());
  return result.ok() ? *result : SimResult{};
}

}  // namespace hotshard::policy::testing
