// The policy factory: every policy registered by name, built from k=v parameters in
// the one syntax shared by the CLI, the config file and the simulator:
//   createPolicy("hotshard;hysteresis=0.3;half_life=32", capacity)
//   createPolicy("s3fifo", {"small_ratio=0.2"}, capacity)
// Unknown names and bad values are errors that list what is accepted.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "policy/params.h"
#include "policy/policy.h"

namespace hotshard::policy {

inline constexpr std::string_view kDefaultPolicy = "hotshard";

struct PolicyInfo {
  std::string name;
  std::string summary;
  std::vector<std::string> params;  // "k (default v): doc"
};

// Every registered policy, in a fixed order (the default first).
const std::vector<PolicyInfo>& listPolicies();
std::vector<std::string> policyNames();

Result<std::unique_ptr<Policy>> createPolicy(std::string_view spec, std::uint64_t capacity_bytes);
Result<std::unique_ptr<Policy>> createPolicy(std::string_view name,
                                             const std::vector<std::string>& params,
                                             std::uint64_t capacity_bytes);
Result<std::unique_ptr<Policy>> createPolicy(const PolicySpec& spec, std::uint64_t capacity_bytes);

// "name;k=v;k=v" with the policy's current parameters; createPolicy() of it rebuilds
// an equivalent (empty) policy.
std::string describePolicy(const Policy& policy);

// Live swap: builds `spec` with `old`'s capacity and re-adds every object resident in
// `old` (what the daemon's `policy set` needs). History is not carried over.
Result<std::unique_ptr<Policy>> rebuildPolicy(const Policy& old, std::string_view spec, TimeNs now);

}  // namespace hotshard::policy
