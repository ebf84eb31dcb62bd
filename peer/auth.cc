#include "peer/auth.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include <cstring>
#include <memory>

#include "peer/protocol.h"

namespace hotshard::peer {
namespace {

constexpr std::string_view kServerLabel = "hotshard-peer-v1 server";
constexpr std::string_view kClientLabel = "hotshard-peer-v1 client";

Result<Nonce> freshNonce() {
  Nonce n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1)
    return makeError(Errc::kInternal, "peer auth: RAND_bytes failed");
  return n;
}

bool proofEquals(const Proof& want, std::string_view got) {
  return got.size() == want.size() && CRYPTO_memcmp(want.data(), got.data(), want.size()) == 0;
}

Error refused(std::string why) {
  return makeError(Errc::kPermission, "peer authentication: " + std::move(why));
}

// The frame we expect next, or kProtocol naming what came instead.
Result<std::string> expectFrame(Channel& channel, FrameType type, size_t payload_bytes,
                                Deadline deadline) {
  ASSIGN_OR_RETURN(Frame frame, recvFrame(channel, deadline));
  if (frame.type != type)
    return makeError(Errc::kProtocol, std::string("peer protocol: expected ") +
                                          frameTypeName(type) + ", got " +
                                          frameTypeName(frame.type));
  if (frame.payload.size() != payload_bytes)
    return makeError(Errc::kProtocol,
                     std::string("peer protocol: ") + frameTypeName(type) + " of wrong length");
  return std::move(frame.payload);
}

std::string_view view(const std::array<uint8_t, 32>& a) {
  return std::string_view(reinterpret_cast<const char*>(a.data()), a.size());
}

}  // namespace

Proof authProof(std::string_view token, AuthRole role, const Nonce& client_nonce,
                const Nonce& server_nonce) {
  std::string_view label = role == AuthRole::kServer ? kServerLabel : kClientLabel;
  std::unique_ptr<EVP_MAC, decltype(&EVP_MAC_free)> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr),
                                                        EVP_MAC_free);
  std::unique_ptr<EVP_MAC_CTX, decltype(&EVP_MAC_CTX_free)> ctx(
      mac ? EVP_MAC_CTX_new(mac.get()) : nullptr, EVP_MAC_CTX_free);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_END};
  Proof out{};
  size_t out_len = 0;
  bool ok = ctx &&
            EVP_MAC_init(ctx.get(), reinterpret_cast<const unsigned char*>(token.data()),
                         token.size(), params) == 1 &&
            EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(label.data()),
                           label.size()) == 1 &&
            EVP_MAC_update(ctx.get(), client_nonce.data(), client_nonce.size()) == 1 &&
            EVP_MAC_update(ctx.get(), server_nonce.data(), server_nonce.size()) == 1 &&
            EVP_MAC_final(ctx.get(), out.data(), &out_len, out.size()) == 1 &&
            out_len == out.size();
  // A failing libcrypto yields a random proof: it matches nothing, so the
  // handshake fails closed.
  if (!ok) RAND_bytes(out.data(), static_cast<int>(out.size()));
  return out;
}

Status authenticateAsClient(Channel& channel, std::string_view token, Deadline deadline) {
  ASSIGN_OR_RETURN(Nonce client_nonce, freshNonce());
  RETURN_IF_ERROR(sendFrame(channel, FrameType::kHello, view(client_nonce), deadline));
  ASSIGN_OR_RETURN(std::string challenge, expectFrame(channel, FrameType::kChallenge,
                                                      kNonceBytes + kProofBytes, deadline));
  Nonce server_nonce{};
  std::memcpy(server_nonce.data(), challenge.data(), kNonceBytes);
  Proof want = authProof(token, AuthRole::kServer, client_nonce, server_nonce);
  if (!proofEquals(want, std::string_view(challenge).substr(kNonceBytes)))
    return refused("the peer " + channel.peerAddress() + " does not hold our cluster token");
  Proof ours = authProof(token, AuthRole::kClient, client_nonce, server_nonce);
  RETURN_IF_ERROR(sendFrame(channel, FrameType::kAuth, view(ours), deadline));
  auto ok = expectFrame(channel, FrameType::kAuthOk, 0, deadline);
  if (!ok.ok() && ok.error().code == Errc::kIo)
    return refused("the peer " + channel.peerAddress() + " refused our proof (" +
                   ok.error().message + ")");
  if (!ok.ok()) return ok.takeError();
  return Ok{};
}

Status authenticateAsServer(Channel& channel, std::string_view token, Deadline deadline) {
  ASSIGN_OR_RETURN(std::string hello,
                   expectFrame(channel, FrameType::kHello, kNonceBytes, deadline));
  Nonce client_nonce{};
  std::memcpy(client_nonce.data(), hello.data(), kNonceBytes);
  ASSIGN_OR_RETURN(Nonce server_nonce, freshNonce());
  Proof ours = authProof(token, AuthRole::kServer, client_nonce, server_nonce);
  std::string challenge(view(server_nonce));
  challenge.append(view(ours));
  RETURN_IF_ERROR(sendFrame(channel, FrameType::kChallenge, challenge, deadline));
  auto auth = expectFrame(channel, FrameType::kAuth, kProofBytes, deadline);
  if (!auth.ok() && auth.error().code == Errc::kIo)
    return refused(channel.peerAddress() + " did not prove itself (" + auth.error().message + ")");
  if (!auth.ok()) return auth.takeError();
  Proof want = authProof(token, AuthRole::kClient, client_nonce, server_nonce);
  if (!proofEquals(want, *auth))
    return refused(channel.peerAddress() + " does not hold our cluster token");
  return sendFrame(channel, FrameType::kAuthOk, {}, deadline);
}

}  // namespace hotshard::peer
