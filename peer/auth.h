// Mutual authentication of two peers that share the cluster token, before any
// FETCH: a challenge-response over both sides' random nonces, so that the
// token itself never travels and a recorded exchange cannot be replayed.
//
//   client -> HELLO     Nc                      (32 bytes, RAND_bytes)
//   server -> CHALLENGE Ns, HMAC(K, "hotshard-peer-v1 server" | Nc | Ns)
//   client    checks the server's proof; a wrong one: kPermission, hang up
//   client -> AUTH      HMAC(K, "hotshard-peer-v1 client" | Nc | Ns)
//   server    checks the client's proof; a wrong one: kPermission, hang up
//   server -> AUTH_OK
//
// K is the cluster token, HMAC is HMAC-SHA256 (RFC 2104, FIPS 198-1, computed
// with OpenSSL's EVP_MAC), proofs are compared with CRYPTO_memcmp (constant
// time). The two labels keep a server's proof from ever serving as a client's
// (no reflection); fresh nonces on both sides keep old proofs from being
// replayed. The channel itself is not encrypted: object bytes travel in the
// clear, as they would from an NFS or sshfs-less remote (docs/cluster.md).
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

#include "base/result.h"
#include "peer/transport.h"

namespace hotshard::peer {

inline constexpr size_t kNonceBytes = 32;
inline constexpr size_t kProofBytes = 32;
using Nonce = std::array<uint8_t, kNonceBytes>;
using Proof = std::array<uint8_t, kProofBytes>;

enum class AuthRole { kServer, kClient };

// HMAC-SHA256(token, label(role) | client_nonce | server_nonce).
Proof authProof(std::string_view token, AuthRole role, const Nonce& client_nonce,
                const Nonce& server_nonce);

// Runs the client's side. Errors: kPermission (the server's proof is wrong,
// or it hung up on ours), kProtocol (malformed or unexpected frame), kIo.
Status authenticateAsClient(Channel& channel, std::string_view token, Deadline deadline);
// Runs the server's side. Errors: kPermission (wrong proof, or the client hung
// up before proving itself: it refused our proof), kProtocol, kIo.
Status authenticateAsServer(Channel& channel, std::string_view token, Deadline deadline);

}  // namespace hotshard::peer
