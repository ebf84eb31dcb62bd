#include "policy/registry.h"

#include <functional>

#include "policy/arc.h"
#include "policy/hotshard.h"
#include "policy/lfu.h"
#include "policy/lru.h"
#include "policy/s3fifo.h"
#include "policy/sieve.h"

namespace hotshard::policy {
namespace {

using Maker =
    std::function<Result<std::unique_ptr<Policy>>(const std::vector<KeyValue>&, std::uint64_t)>;

struct Entry {
  PolicyInfo info;
  Maker make;
};

template <typename P>
Result<std::unique_ptr<Policy>> make(std::string_view name, const std::vector<KeyValue>& params,
                                     std::uint64_t capacity) {
  typename P::Config config;
  ParamTable table;
  config.bind(table);
  RETURN_IF_ERROR(table.apply(name, params));
  RETURN_IF_ERROR(config.validate());
  return std::unique_ptr<Policy>(std::make_unique<P>(capacity, config));
}

template <typename P>
Entry entry(std::string name, std::string summary) {
  typename P::Config config;
  ParamTable table;
  config.bind(table);
  return Entry{{name, std::move(summary), table.describe()},
               [name](const std::vector<KeyValue>& params, std::uint64_t capacity) {
                 return make<P>(name, params, capacity);
               }};
}

struct Registry {
  std::vector<Entry> entries;
  std::vector<PolicyInfo> infos;
};

const Registry& registry() {
  static const Registry r = [] {
    Registry r;
    r.entries = {
        entry<HotshardPolicy>("hotshard",
                              "heat per byte, remote misses weighted, admission with "
                              "hysteresis (default)"),
        entry<LruPolicy>("lru", "least recently used"),
        entry<LfuPolicy>("lfu", "least frequently used, exponentially decayed counts"),
        entry<ArcPolicy>("arc", "adaptive replacement cache (Megiddo & Modha)"),
        entry<S3FifoPolicy>("s3fifo", "small/main/ghost FIFO queues (Yang et al.)"),
        entry<SievePolicy>("sieve", "FIFO with a visited bit and a sweeping hand (Zhang et al.)"),
    };
    for (const auto& e : r.entries) r.infos.push_back(e.info);
    return r;
  }();
  return r;
}

}  // namespace

const std::vector<PolicyInfo>& listPolicies() { return registry().infos; }

std::vector<std::string> policyNames() {
  std::vector<std::string> names;
  for (const auto& info : listPolicies()) names.push_back(info.name);
  return names;
}

Result<std::unique_ptr<Policy>> createPolicy(const PolicySpec& spec, std::uint64_t capacity_bytes) {
  for (const auto& e : registry().entries) {
    if (e.info.name == spec.name) return e.make(spec.params, capacity_bytes);
  }
  std::string names;
  for (const auto& n : policyNames()) names += (names.empty() ? "" : ", ") + n;
  return makeError(Errc::kInvalidArgument,
                   "unknown policy '" + spec.name + "' (known: " + names + ")");
}

Result<std::unique_ptr<Policy>> createPolicy(std::string_view spec, std::uint64_t capacity_bytes) {
  auto parsed = parsePolicySpec(spec);
  if (!parsed) return parsed.takeError();
  return createPolicy(*parsed, capacity_bytes);
}

Result<std::unique_ptr<Policy>> createPolicy(std::string_view name,
                                             const std::vector<std::string>& params,
                                             std::uint64_t capacity_bytes) {
  PolicySpec spec{std::string(name), {}};
  for (const auto& p : params) {
    auto kv = parseKeyValue(p);
    if (!kv)
      return makeError(Errc::kInvalidArgument, "policy '" + spec.name + "': " + kv.error().message);
    spec.params.push_back(std::move(*kv));
  }
  return createPolicy(spec, capacity_bytes);
}

std::string describePolicy(const Policy& policy) {
  std::string out(policy.name());
  for (const auto& kv : policy.params()) out += ";" + kv;
  return out;
}

Result<std::unique_ptr<Policy>> rebuildPolicy(const Policy& old, std::string_view spec,
                                              TimeNs now) {
  auto fresh = createPolicy(spec, old.capacity());
  if (!fresh) return fresh;
  std::vector<Resident> residents;
  old.residents(residents);
  for (const auto& r : residents) (*fresh)->add(r.id, r.size, now);
  return fresh;
}

}  // namespace hotshard::policy
