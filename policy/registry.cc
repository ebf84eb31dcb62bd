#include "policy/registry.h"

#include "policy/arc.h"
#include "policy/hotshard.h"
#include "policy/lfu.h"
#include "policy/lru.h"
#include "policy/s3fifo.h"
#include "policy/sieve.h"

namespace hotshard::policy {
namespace {

using Maker = Expected<std::unique_ptr<Policy>> (*)(const std::vector<KeyValue>&, std::uint64_t);

struct Entry {
  PolicyInfo info;
  Maker make;
};

template <typename P>
Expected<std::unique_ptr<Policy>> make(std::string_view name, const std::vector<KeyValue>& params,
                                       std::uint64_t capacity) {
  typename P::Config config;
  ParamTable table;
  config.bind(table);
  POLICY_RETURN_IF_ERROR(table.apply(name, params));
  POLICY_RETURN_IF_ERROR(config.validate());
  return std::unique_ptr<Policy>(std::make_unique<P>(capacity, config));
}

template <typename P>
Entry entry(std::string name, std::string summary) {
  typename P::Config config;
  ParamTable table;
  config.bind(table);
  return Entry{{name, std::move(summary), table.describe()}, nullptr};
}

struct Registry {
  std::vector<Entry> entries;
  std::vector<PolicyInfo> infos;
};

const Registry& registry() {
  static const Registry r = [] {
    Registry r;
    auto add = [&](Entry e, Maker m) {
      e.make = m;
      r.infos.push_back(e.info);
      r.entries.push_back(std::move(e));
    };
    add(entry<HotshardPolicy>("hotshard", "heat per byte, remote misses weighted, admission with hysteresis (default)"),
        [](const std::vector<KeyValue>& p, std::uint64_t c) { return make<HotshardPolicy>("hotshard", p, c); });
    add(entry<LruPolicy>("lru", "least recently used"),
        [](const std::vector<KeyValue>& p, std::uint64_t c) { return make<LruPolicy>("lru", p, c); });
    add(entry<LfuPolicy>("lfu", "least frequently used, exponentially decayed counts"),
        [](const std::vector<KeyValue>& p, std::uint64_t c) { return make<LfuPolicy>("lfu", p, c); });
    add(entry<ArcPolicy>("arc", "adaptive replacement cache (Megiddo & Modha)"),
        [](const std::vector<KeyValue>& p, std::uint64_t c) { return make<ArcPolicy>("arc", p, c); });
    add(entry<S3FifoPolicy>("s3fifo", "small/main/ghost FIFO queues (Yang et al.)"),
        [](const std::vector<KeyValue>& p, std::uint64_t c) { return make<S3FifoPolicy>("s3fifo", p, c); });
    add(entry<SievePolicy>("sieve", "FIFO with a visited bit and a sweeping hand (Zhang et al.)"),
        [](const std::vector<KeyValue>& p, std::uint64_t c) { return make<SievePolicy>("sieve", p, c); });
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

Expected<std::unique_ptr<Policy>> createPolicy(const PolicySpec& spec, std::uint64_t capacity_bytes) {
  for (const auto& e : registry().entries) {
    if (e.info.name == spec.name) return e.make(spec.params, capacity_bytes);
  }
  std::string names;
  for (const auto& n : policyNames()) names += (names.empty() ? "" : ", ") + n;
  return Expected<std::unique_ptr<Policy>>::error("unknown policy '" + spec.name + "' (known: " + names + ")");
}

Expected<std::unique_ptr<Policy>> createPolicy(std::string_view spec, std::uint64_t capacity_bytes) {
  auto parsed = parsePolicySpec(spec);
  if (!parsed) return parsed.status();
  return createPolicy(*parsed, capacity_bytes);
}

Expected<std::unique_ptr<Policy>> createPolicy(std::string_view name, const std::vector<std::string>& params,
                                               std::uint64_t capacity_bytes) {
  PolicySpec spec{std::string(name), {}};
  for (const auto& p : params) {
    auto kv = parseKeyValue(p);
    if (!kv) return Expected<std::unique_ptr<Policy>>::error("policy '" + spec.name + "': " + kv.message());
    spec.params.push_back(std::move(*kv));
  }
  return createPolicy(spec, capacity_bytes);
}

std::string describePolicy(const Policy& policy) {
  std::string out(policy.name());
  for (const auto& kv : policy.params()) out += ";" + kv;
  return out;
}

Expected<std::unique_ptr<Policy>> rebuildPolicy(const Policy& old, std::string_view spec, TimeNs now) {
  auto fresh = createPolicy(spec, old.capacity());
  if (!fresh) return fresh;
  std::vector<Resident> residents;
  old.residents(residents);
  for (const auto& r : residents) (*fresh)->add(r.id, r.size, now);
  return fresh;
}

}  // namespace hotshard::policy
