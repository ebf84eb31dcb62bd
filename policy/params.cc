#include "policy/params.h"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace hotshard::policy {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return s;
}

}  // namespace

Result<KeyValue> parseKeyValue(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return makeError(Errc::kInvalidArgument, "expected k=v, got '" + std::string(text) + "'");
  }
  auto key = trim(text.substr(0, eq));
  auto value = trim(text.substr(eq + 1));
  if (key.empty() || value.empty()) {
    return makeError(Errc::kInvalidArgument, "expected k=v, got '" + std::string(text) + "'");
  }
  return KeyValue{std::string(key), std::string(value)};
}

Result<PolicySpec> parsePolicySpec(std::string_view spec) {
  PolicySpec out;
  bool first = true;
  while (true) {
    auto semi = spec.find(';');
    auto part = trim(spec.substr(0, semi));
    if (first) {
      if (part.empty()) return makeError(Errc::kInvalidArgument, "empty policy name");
      out.name = std::string(part);
      first = false;
    } else if (!part.empty()) {
      auto kv = parseKeyValue(part);
      if (!kv)
        return makeError(Errc::kInvalidArgument,
                         "policy '" + out.name + "': " + kv.error().message);
      out.params.push_back(std::move(*kv));
    }
    if (semi == std::string_view::npos) break;
    spec.remove_prefix(semi + 1);
  }
  return out;
}

Result<double> parseDouble(std::string_view text) {
  text = trim(text);
  double v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(v)) {
    return makeError(Errc::kInvalidArgument, "not a number: '" + std::string(text) + "'");
  }
  return v;
}

Result<std::uint64_t> parseUint(std::string_view text) {
  text = trim(text);
  std::uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return makeError(Errc::kInvalidArgument,
                     "not a non-negative integer: '" + std::string(text) + "'");
  }
  return v;
}

std::string formatDouble(double value) {
  char buf[64];
  if (value == std::trunc(value) && std::fabs(value) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", value);  // 320, not 3.2e+02
    return buf;
  }
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    double back = 0;
    std::from_chars(buf, buf + std::char_traits<char>::length(buf), back);
    if (back == value) break;
  }
  return buf;
}

ParamTable& ParamTable::add(std::string name, double* field, std::string doc) {
  entries_.push_back({std::move(name), field, nullptr, std::move(doc)});
  return *this;
}

ParamTable& ParamTable::add(std::string name, std::uint64_t* field, std::string doc) {
  entries_.push_back({std::move(name), nullptr, field, std::move(doc)});
  return *this;
}

std::string ParamTable::value(const Entry& e) const {
  return e.real != nullptr ? formatDouble(*e.real) : std::to_string(*e.integer);
}

Status ParamTable::apply(std::string_view owner, const std::vector<KeyValue>& params) const {
  for (const auto& kv : params) {
    const Entry* found = nullptr;
    for (const auto& e : entries_) {
      if (e.name == kv.key) found = &e;
    }
    if (found == nullptr) {
      std::string accepted;
      for (const auto& e : entries_) accepted += (accepted.empty() ? "" : ", ") + e.name;
      return makeError(Errc::kInvalidArgument,
                       std::string(owner) + ": no parameter '" + kv.key +
                           "' (accepted: " + (accepted.empty() ? "none" : accepted) + ")");
    }
    if (found->real != nullptr) {
      auto v = parseDouble(kv.value);
      if (!v)
        return makeError(Errc::kInvalidArgument,
                         std::string(owner) + ": parameter " + kv.key + ": " + v.error().message);
      *found->real = *v;
    } else {
      auto v = parseUint(kv.value);
      if (!v)
        return makeError(Errc::kInvalidArgument,
                         std::string(owner) + ": parameter " + kv.key + ": " + v.error().message);
      *found->integer = *v;
    }
  }
  return {};
}

std::vector<std::string> ParamTable::current() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.name + "=" + value(e));
  return out;
}

std::vector<std::string> ParamTable::describe() const {
  std::vector<std::string> out;
  for (const auto& e : entries_) out.push_back(e.name + " (default " + value(e) + "): " + e.doc);
  return out;
}

}  // namespace hotshard::policy
