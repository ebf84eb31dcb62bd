// peer/: a small etcd v3 client for membership: leases, put, range over a
// prefix, delete. Nothing else of etcd is used.
//
// Why etcd's v3 JSON gateway over libcurl, not the gRPC API over grpc++:
// the gateway (POST /v3/<service>/<method>, JSON bodies; etcd docs "Why gRPC
// gateway", dev-guide/api_grpc_gateway) is etcd's documented API for clients
// that are not Go, served by every etcd >= 3.3 on its client port; Debian 12
// packages no etcd .proto stubs, so gRPC would mean generating and building
// them with protoc and grpc++ (a large build and link cost); libcurl is on every
// host already. The gateway encodes keys and values as base64 (proto3 JSON
// mapping of `bytes`) and 64-bit integers as decimal strings.
//
// Bounds: each call takes at most `call_timeout` in all. The endpoints are
// tried in turn, starting with the one that answered last; each attempt gets
// an equal share of the time left (CURLOPT_TIMEOUT_MS and
// CURLOPT_CONNECTTIMEOUT_MS), so one that hangs cannot take the whole budget
// from the next. CURLOPT_NOSIGNAL: no SIGALRM in a threaded daemon. Proxies
// from the environment are ignored (an etcd cluster is reached directly).
// The next endpoint is tried when one cannot be reached, times out or answers
// 5xx; an answer from etcd itself (e.g. "lease not found") ends the call.
// TLS: https:// endpoints are verified against the system's CAs; client
// certificates and etcd's own user/password auth are not supported (yet).
//
// Errors: kInvalidArgument (no endpoints, bad argument), kNotFound (the lease
// does not exist or expired), kIo (no endpoint answered: the message names each
// endpoint and what failed), kProtocol (an answer that is not the JSON the
// gateway sends), kInternal (any other error etcd returned, with its message).
// Thread-safe: each call uses its own curl handle.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"

namespace hotshard::peer {

struct EtcdClientOptions {
  std::vector<std::string> endpoints;  // "http://HOST:PORT" (or https://), tried in turn
  std::chrono::milliseconds call_timeout{2000};
};

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t lease = 0;  // 0: not attached to a lease
  int64_t mod_revision = 0;
};

class EtcdClient {
 public:
  explicit EtcdClient(EtcdClientOptions options);

  // Grants a lease of `ttl` seconds (etcd may round it up to its minimum);
  // returns the lease id.
  Result<int64_t> leaseGrant(std::chrono::seconds ttl);
  // Renews the lease once (one message on /v3/lease/keepalive); returns the TTL
  // in seconds it now has. kNotFound when it expired or was revoked.
  Result<int64_t> leaseKeepAlive(int64_t lease);
  // Revokes the lease: the keys attached to it are deleted now. kNotFound when
  // it had already expired.
  Status leaseRevoke(int64_t lease);
  // Puts key = value, attached to `lease` (0: none). kNotFound when the lease
  // does not exist.
  Status put(std::string_view key, std::string_view value, int64_t lease = 0);
  // Every key that starts with `prefix` (non-empty), in key order.
  Result<std::vector<EtcdKeyValue>> rangePrefix(std::string_view prefix);
  // Deletes `key` (no error if it did not exist); returns how many were deleted.
  Result<int64_t> deleteKey(std::string_view key);

  const EtcdClientOptions& options() const { return options_; }

 private:
  struct Response;
  // POSTs `body` to `path` on the endpoints in turn (see Bounds above).
  Result<Response> call(const char* what, const std::string& path, const std::string& body);

  EtcdClientOptions options_;
  std::atomic<size_t> preferred_{0};  // index of the endpoint that answered last
};

// Base64 (RFC 4648 §4, with padding), as the gateway encodes `bytes` fields.
std::string base64Encode(std::string_view bytes);
// kInvalidArgument on anything that is not padded base64.
Result<std::string> base64Decode(std::string_view text);
// The range_end that selects every key starting with `prefix` (etcd's
// clientv3.GetPrefixRangeEnd): the prefix with its last byte below 0xff
// incremented and what follows it dropped; "\0" (all keys) when every byte is 0xff.
std::string prefixRangeEnd(std::string_view prefix);

}  // namespace hotshard::peer
