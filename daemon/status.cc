#include "daemon/status.h"

namespace hotshard::status_json {

bool read(const json& j, std::string& v) {
  if (j.is_string()) {
    v = j.get<std::string>();
  } else if (j.is_boolean() || j.is_number()) {
    v = j.dump();
  } else {
    return false;
  }
  return true;
}

bool read(const json& j, uint64_t& v) {
  if (j.is_number_unsigned()) {
    v = j.get<uint64_t>();
  } else if (j.is_number() && j.get<double>() >= 0) {
    v = static_cast<uint64_t>(j.get<double>());
  } else if (j.is_boolean()) {
    v = j.get<bool>() ? 1 : 0;
  } else {
    return false;
  }
  return true;
}

bool read(const json& j, int64_t& v) {
  if (j.is_number_integer()) {
    v = j.get<int64_t>();
  } else if (j.is_number()) {
    v = static_cast<int64_t>(j.get<double>());
  } else {
    return false;
  }
  return true;
}

bool read(const json& j, double& v) {
  if (j.is_number()) {
    v = j.get<double>();
  } else if (j.is_boolean()) {
    v = j.get<bool>() ? 1.0 : 0.0;
  } else {
    return false;
  }
  return true;
}

bool read(const json& j, bool& v) {
  if (j.is_boolean()) {
    v = j.get<bool>();
  } else if (j.is_number()) {
    v = j.get<double>() != 0;
  } else {
    return false;
  }
  return true;
}

}  // namespace hotshard::status_json
