#include "peer/membership.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace hotshard::peer {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

bool sameMember(const Member& a, const Member& b) {
  return a.id == b.id && a.address == b.address && a.transports == b.transports &&
         a.capacity_bytes == b.capacity_bytes && a.ns == b.ns;
}

bool sameMembers(const std::vector<Member>& a, const std::vector<Member>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), sameMember);
}

Status checkOptions(const MembershipOptions& o) {
  auto bad = [](std::string what) { return makeError(Errc::kInvalidArgument, "membership: " + what); };
  if (o.cluster.empty() || o.cluster.find('/') != std::string::npos) {
    return bad("cluster name '" + o.cluster + "' must be non-empty and without '/'");
  }
  if (o.self.id.empty() || o.self.id.find('/') != std::string::npos) {
    return bad("member id '" + o.self.id + "' must be non-empty and without '/'");
  }
  if (o.endpoints.empty()) return bad("no etcd endpoints");
  if (o.lease_ttl < std::chrono::seconds(1)) return bad("lease ttl must be at least 1 s");
  if (o.call_timeout <= milliseconds(0)) return bad("etcd call timeout must be > 0");
  if (o.poll_interval <= milliseconds(0)) return bad("poll interval must be > 0");
  return Ok{};
}

}  // namespace

std::string membersPrefix(std::string_view cluster) {
  return "/hotshard/" + std::string(cluster) + "/members/";
}

std::string memberToJson(const Member& m) {
  return json{{"id", m.id},
              {"address", m.address},
              {"transports", m.transports},
              {"capacity_bytes", m.capacity_bytes},
              {"ns", m.ns}}
      .dump();
}

Result<Member> memberFromJson(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const char* why) {
    return makeError(Errc::kProtocol, std::string("member registration ") + why + ": " +
                                          std::string(text.substr(0, 200)));
  };
  if (!j.is_object()) return bad("is not a JSON object");
  for (const char* field : {"id", "address", "ns"}) {
    if (!j.contains(field) || !j[field].is_string()) return bad("lacks a string field");
  }
  if (!j.contains("transports") || !j["transports"].is_array()) return bad("lacks a transports array");
  if (!j.contains("capacity_bytes") || !j["capacity_bytes"].is_number_unsigned()) {
    return bad("lacks an unsigned capacity_bytes");
  }
  Member m;
  m.id = j["id"].get<std::string>();
  m.address = j["address"].get<std::string>();
  m.ns = j["ns"].get<std::string>();
  m.capacity_bytes = j["capacity_bytes"].get<uint64_t>();
  for (const json& t : j["transports"]) {
    if (!t.is_string()) return bad("has a transport that is not a string");
    m.transports.push_back(t.get<std::string>());
  }
  if (m.id.empty()) return bad("has an empty id");
  return m;
}

Membership::Membership(MembershipOptions options)
    : options_(std::move(options)),
      prefix_(membersPrefix(options_.cluster)),
      key_(prefix_ + options_.self.id),
      value_(memberToJson(options_.self)),
      client_(EtcdClientOptions{.endpoints = options_.endpoints, .call_timeout = options_.call_timeout}) {
  state_.live = {options_.self};
  state_.last_error = "not registered yet";
}

Membership::~Membership() { stop(); }

Status Membership::start() {
  RETURN_IF_ERROR(checkOptions(options_));
  std::lock_guard lock(mu_);
  if (thread_.joinable() || stopping_) {
    return makeError(Errc::kBusy, "membership: already started (or stopped)");
  }
  thread_ = std::thread([this] { run(); });
  return Ok{};
}

void Membership::stop() { halt(/*revoke=*/true); }
void Membership::abandon() { halt(/*revoke=*/false); }

void Membership::halt(bool revoke) {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (lease_ != 0 && revoke) (void)client_.leaseRevoke(lease_);  // bounded by call_timeout
  lease_ = 0;
  publish(false, {options_.self}, "stopped");
}

bool Membership::stopping() const {
  std::lock_guard lock(mu_);
  return stopping_;
}

MembershipState Membership::state() const {
  std::lock_guard lock(mu_);
  return state_;
}

void Membership::publish(bool connected, std::vector<Member> live, std::string error) {
  std::lock_guard lock(mu_);
  if (connected != state_.connected || !sameMembers(live, state_.live)) ++state_.generation;
  state_.connected = connected;
  state_.live = std::move(live);
  state_.last_error = std::move(error);
}

void Membership::run() {
  const milliseconds first_backoff = std::min(options_.poll_interval, milliseconds(200));
  const milliseconds max_backoff =
      std::max(options_.poll_interval, std::chrono::duration_cast<milliseconds>(options_.lease_ttl) / 3);
  milliseconds backoff = first_backoff;
  Clock::time_point next_keepalive = Clock::now();
  while (!stopping()) {
    Status s = round(next_keepalive);
    Clock::time_point wake_at;
    if (s.ok()) {
      backoff = first_backoff;
      wake_at = std::min(Clock::now() + options_.poll_interval, next_keepalive);
    } else {
      if (stopping()) break;
      publish(false, {options_.self}, s.error().message);
      wake_at = Clock::now() + backoff;
      backoff = std::min(backoff * 2, max_backoff);
    }
    std::unique_lock lock(mu_);
    wake_.wait_until(lock, wake_at, [this] { return stopping_; });
  }
}

Status Membership::round(Clock::time_point& next_keepalive) {
  const auto renew_every = std::chrono::duration_cast<milliseconds>(options_.lease_ttl) / 3;
  if (lease_ == 0) {
    RETURN_IF_ERROR(registerSelf());
    next_keepalive = Clock::now() + renew_every;
  } else if (Clock::now() >= next_keepalive) {
    Result<int64_t> ttl = client_.leaseKeepAlive(lease_);
    if (!ttl.ok()) {
      // Expired (etcd saw no keepalive for a whole ttl): the others dropped us; register anew.
      if (ttl.error().code == Errc::kNotFound) lease_ = 0;
      return ttl.takeError();
    }
    next_keepalive = Clock::now() + renew_every;
  }
  if (stopping()) return Ok{};
  return refresh();
}

Status Membership::registerSelf() {
  ASSIGN_OR_RETURN(int64_t lease, client_.leaseGrant(options_.lease_ttl));
  // If the put fails the new lease is left to expire by itself: revoking it
  // would be one more call to an etcd that just failed.
  RETURN_IF_ERROR(client_.put(key_, value_, lease));
  lease_ = lease;
  return Ok{};
}

Status Membership::refresh() {
  ASSIGN_OR_RETURN(std::vector<EtcdKeyValue> kvs, client_.rangePrefix(prefix_));
  std::vector<Member> live = {options_.self};
  bool registered = false;
  for (const EtcdKeyValue& kv : kvs) {
    if (kv.key == key_) {
      registered = kv.lease == lease_;
      continue;
    }
    Result<Member> m = memberFromJson(kv.value);
    // A registration this version cannot read is not a member it could talk to.
    if (!m.ok() || m->ns != options_.self.ns || m->id == options_.self.id) continue;
    live.push_back(std::move(m).value());
  }
  if (!registered) {
    // Our key is gone while our lease lives (deleted by hand, or etcd restored
    // from an older snapshot): put it back.
    if (stopping()) return Ok{};
    RETURN_IF_ERROR(client_.put(key_, value_, lease_));
  }
  std::sort(live.begin(), live.end(), [](const Member& a, const Member& b) { return a.id < b.id; });
  publish(true, std::move(live), "");
  return Ok{};
}

}  // namespace hotshard::peer
