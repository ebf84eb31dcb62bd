// k=v parameters shared by the CLI, the config file and the simulator, in one syntax:
// "name;k=v;k=v" (RocksDB Cache::CreateFromString style). Sizes with units are
// base/units.h's.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "policy/policy.h"

namespace hotshard::policy {

struct KeyValue {
  std::string key;
  std::string value;
};

struct PolicySpec {
  std::string name;
  std::vector<KeyValue> params;
};

// "k=v" -> {k, v}; both sides trimmed, neither may be empty.
Result<KeyValue> parseKeyValue(std::string_view text);
// "name;k=v;k=v" -> {name, params}.
Result<PolicySpec> parsePolicySpec(std::string_view spec);

Result<double> parseDouble(std::string_view text);
Result<std::uint64_t> parseUint(std::string_view text);
// Shortest text that parses back to the same double ("0.5", "64", "1e-06").
std::string formatDouble(double value);

// Binds parameter names to the fields of a policy's Config, so the factory can apply
// k=v lists and report the current values without per-policy parsing code.
class ParamTable {
 public:
  ParamTable& add(std::string name, double* field, std::string doc);
  ParamTable& add(std::string name, std::uint64_t* field, std::string doc);

  // Unknown keys and unparsable values are errors that name `owner` (a policy or a
  // trace family) and list what is accepted.
  Status apply(std::string_view owner, const std::vector<KeyValue>& params) const;
  // "k=v" for every parameter, in declaration order.
  std::vector<std::string> current() const;
  // "k (default v): doc" lines.
  std::vector<std::string> describe() const;

 private:
  struct Entry {
    std::string name;
    double* real = nullptr;
    std::uint64_t* integer = nullptr;
    std::string doc;
  };
  std::string value(const Entry& e) const;
  std::vector<Entry> entries_;
};

// A policy's current parameters as k=v strings, from its Config.
template <typename Config>
std::vector<std::string> currentParams(Config config) {
  ParamTable table;
  config.bind(table);
  return table.current();
}

}  // namespace hotshard::policy
