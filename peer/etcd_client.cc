#include "peer/etcd_client.h"

#include <curl/curl.h>
#include <openssl/evp.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

namespace hotshard::peer {

using json = nlohmann::json;

namespace {

// A membership range is small; anything larger than this is not the gateway talking.
constexpr size_t kMaxResponseBytes = 16u << 20;

void initCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t appendBody(char* data, size_t size, size_t nmemb, void* userp) {
  auto* body = static_cast<std::string*>(userp);
  const size_t n = size * nmemb;
  if (body->size() + n > kMaxResponseBytes) return 0;  // curl then fails with CURLE_WRITE_ERROR
  body->append(data, n);
  return n;
}

struct CurlDeleter {
  void operator()(CURL* c) const { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};

struct Attempt {
  bool reached = false;  // an HTTP answer came back
  long http_status = 0;
  std::string body;
  std::string failure;  // when !reached: what curl said
};

// One bounded POST; never throws.
Attempt post(const std::string& url, const std::string& body, std::chrono::milliseconds budget) {
  Attempt a;
  std::unique_ptr<CURL, CurlDeleter> curl(curl_easy_init());
  if (!curl) {
    a.failure = "curl_easy_init failed";
    return a;
  }
  std::unique_ptr<curl_slist, SlistDeleter> headers(
      curl_slist_append(nullptr, "Content-Type: application/json"));
  char errbuf[CURL_ERROR_SIZE] = {0};
  const long ms = std::max<long>(1, static_cast<long>(budget.count()));
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, appendBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &a.body);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  const CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    a.failure = errbuf[0] != '\0' ? std::string(errbuf) : std::string(curl_easy_strerror(rc));
    if (rc == CURLE_WRITE_ERROR) a.failure = "answer larger than 16 MiB";
    return a;
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &a.http_status);
  a.reached = true;
  return a;
}

// int64 fields come as decimal strings (proto3 JSON); accept numbers too. 0 when absent.
Result<int64_t> int64Field(const json& obj, const char* name) {
  auto it = obj.find(name);
  if (it == obj.end() || it->is_null()) return int64_t{0};
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    try {
      size_t used = 0;
      const long long v = std::stoll(s, &used);
      if (used == s.size()) return static_cast<int64_t>(v);
    } catch (const std::exception&) {
    }
  }
  return makeError(Errc::kProtocol, std::string("field ") + name + " is not an int64: " + it->dump());
}

// The error etcd answered with: {"error": "...", "message": "...", "code": N}
// (unary calls) or {"error": {"grpc_code": N, "message": "..."}} (streams).
Error etcdError(const char* what, const std::string& endpoint, const json& body, long http_status) {
  std::string message;
  int64_t code = -1;
  const json* err = body.is_object() && body.contains("error") ? &body["error"] : nullptr;
  if (err != nullptr && err->is_object()) {
    message = err->value("message", std::string());
    code = err->value("grpc_code", int64_t{-1});
  } else if (body.is_object()) {
    message = body.value("message", err != nullptr && err->is_string() ? err->get<std::string>() : "");
    code = body.value("code", int64_t{-1});
  }
  if (message.empty()) message = "HTTP " + std::to_string(http_status);
  Errc errc = Errc::kInternal;
  if (code == 5) errc = Errc::kNotFound;  // gRPC NOT_FOUND
  if (code == 3) errc = Errc::kInvalidArgument;  // INVALID_ARGUMENT
  return makeError(errc, std::string("etcd ") + what + ": " + endpoint + ": " + message);
}

}  // namespace

struct EtcdClient::Response {
  std::string endpoint;
  json body;
};

EtcdClient::EtcdClient(EtcdClientOptions options) : options_(std::move(options)) { initCurlOnce(); }

Result<EtcdClient::Response> EtcdClient::call(const char* what, const std::string& path,
                                              const std::string& body) {
  const size_t n = options_.endpoints.size();
  if (n == 0) return makeError(Errc::kInvalidArgument, std::string("etcd ") + what + ": no endpoints");
  const auto deadline = std::chrono::steady_clock::now() + options_.call_timeout;
  const size_t start = preferred_.load() % n;
  std::string failures;
  for (size_t i = 0; i < n; ++i) {
    const size_t index = (start + i) % n;
    const std::string& endpoint = options_.endpoints[index];
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (!failures.empty()) failures += "; ";
    if (left.count() <= 0) {
      failures += endpoint + ": not tried, the call's " +
                  std::to_string(options_.call_timeout.count()) + " ms were spent";
      continue;
    }
    const auto budget = left / static_cast<long>(n - i);
    Attempt a = post(endpoint + path, body, budget);
    if (!a.reached) {
      failures += endpoint + ": " + a.failure;
      continue;
    }
    json parsed = json::parse(a.body, nullptr, /*allow_exceptions=*/false);
    if (a.http_status >= 500) {  // unavailable, no leader, timeout: another member may answer
      failures += etcdError(what, endpoint, parsed, a.http_status).message;
      continue;
    }
    preferred_.store(index);
    if (a.http_status != 200 || (parsed.is_object() && parsed.contains("error"))) {
      return etcdError(what, endpoint, parsed, a.http_status);
    }
    if (!parsed.is_object()) {
      return makeError(Errc::kProtocol, std::string("etcd ") + what + ": " + endpoint +
                                            ": answer is not a JSON object: " + a.body.substr(0, 200));
    }
    return Response{endpoint, std::move(parsed)};
  }
  return makeError(Errc::kIo, std::string("etcd ") + what + ": no endpoint answered: " + failures);
}

Result<int64_t> EtcdClient::leaseGrant(std::chrono::seconds ttl) {
  if (ttl.count() <= 0) return makeError(Errc::kInvalidArgument, "etcd lease grant: ttl must be > 0 s");
  ASSIGN_OR_RETURN(Response r, call("lease grant", "/v3/lease/grant",
                                    json{{"TTL", std::to_string(ttl.count())}, {"ID", "0"}}.dump()));
  ASSIGN_OR_RETURN(int64_t id, int64Field(r.body, "ID"));
  if (id == 0) return makeError(Errc::kProtocol, "etcd lease grant: " + r.endpoint + ": no lease ID in " + r.body.dump());
  return id;
}

Result<int64_t> EtcdClient::leaseKeepAlive(int64_t lease) {
  ASSIGN_OR_RETURN(Response r, call("lease keepalive", "/v3/lease/keepalive",
                                    json{{"ID", std::to_string(lease)}}.dump()));
  // A stream answer: {"result": {"ID": ..., "TTL": ...}}; TTL absent (0) when the lease is gone.
  const json result = r.body.value("result", json::object());
  if (!result.is_object()) return makeError(Errc::kProtocol, "etcd lease keepalive: " + r.endpoint + ": " + r.body.dump());
  ASSIGN_OR_RETURN(int64_t ttl, int64Field(result, "TTL"));
  if (ttl <= 0) {
    return makeError(Errc::kNotFound, "etcd lease keepalive: " + r.endpoint + ": lease " +
                                          std::to_string(lease) + " expired or was revoked");
  }
  return ttl;
}

Status EtcdClient::leaseRevoke(int64_t lease) {
  RETURN_IF_ERROR(call("lease revoke", "/v3/lease/revoke", json{{"ID", std::to_string(lease)}}.dump()));
  return Ok{};
}

Status EtcdClient::put(std::string_view key, std::string_view value, int64_t lease) {
  if (key.empty()) return makeError(Errc::kInvalidArgument, "etcd put: empty key");
  json body{{"key", base64Encode(key)}, {"value", base64Encode(value)}};
  if (lease != 0) body["lease"] = std::to_string(lease);
  RETURN_IF_ERROR(call("put", "/v3/kv/put", body.dump()));
  return Ok{};
}

Result<std::vector<EtcdKeyValue>> EtcdClient::rangePrefix(std::string_view prefix) {
  if (prefix.empty()) return makeError(Errc::kInvalidArgument, "etcd range: empty prefix");
  ASSIGN_OR_RETURN(Response r, call("range", "/v3/kv/range",
                                    json{{"key", base64Encode(prefix)},
                                         {"range_end", base64Encode(prefixRangeEnd(prefix))}}
                                        .dump()));
  std::vector<EtcdKeyValue> out;
  const json kvs = r.body.value("kvs", json::array());
  if (!kvs.is_array()) return makeError(Errc::kProtocol, "etcd range: " + r.endpoint + ": kvs is not an array");
  for (const json& kv : kvs) {
    if (!kv.is_object()) return makeError(Errc::kProtocol, "etcd range: " + r.endpoint + ": a kv is not an object");
    EtcdKeyValue e;
    ASSIGN_OR_RETURN(e.key, base64Decode(kv.value("key", "")));
    ASSIGN_OR_RETURN(e.value, base64Decode(kv.value("value", "")));
    ASSIGN_OR_RETURN(e.lease, int64Field(kv, "lease"));
    ASSIGN_OR_RETURN(e.mod_revision, int64Field(kv, "mod_revision"));
    out.push_back(std::move(e));
  }
  return out;
}

Result<int64_t> EtcdClient::deleteKey(std::string_view key) {
  if (key.empty()) return makeError(Errc::kInvalidArgument, "etcd delete: empty key");
  ASSIGN_OR_RETURN(Response r, call("delete", "/v3/kv/deleterange", json{{"key", base64Encode(key)}}.dump()));
  return int64Field(r.body, "deleted");
}

std::string base64Encode(std::string_view bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(bytes.data()), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

Result<std::string> base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return makeError(Errc::kInvalidArgument, "base64: length " + std::to_string(text.size()) + " is not a multiple of 4");
  }
  std::string out(text.size() / 4 * 3 + 1, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return makeError(Errc::kInvalidArgument, "base64: not valid base64");
  // EVP_DecodeBlock counts the padding as zero bytes of output.
  size_t pad = 0;
  if (!text.empty() && text.back() == '=') pad = text.size() >= 2 && text[text.size() - 2] == '=' ? 2 : 1;
  out.resize(static_cast<size_t>(n) - pad);
  return out;
}

std::string prefixRangeEnd(std::string_view prefix) {
  std::string end(prefix);
  while (!end.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(end.back());
    if (last < 0xff) {
      ++last;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');
}

}  // namespace hotshard::peer
