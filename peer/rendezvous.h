// peer/: ownership of objects by rendezvous (highest-random-weight) hashing,
// Thaler & Ravishankar, "Using name-based mappings to increase hit rates",
// IEEE/ACM ToN 6(1), 1998 (tech report 1996).
//
// Every host computes, for an object key, a score per live member and names
// the member with the highest score the owner. Hosts that agree on the live
// set agree on the owner without talking; when a member joins it takes only
// the keys it now scores highest on (about 1/N of them), and when a member
// leaves only its own keys move, each to its next-best member.
//
// Score: score(member, key) = XXH3_64bits_withSeed(key, XXH3_64bits(member.id))
// (xxHash 0.8 XXH3, 64-bit): the member id's hash seeds the hash of the key, so
// a score needs one pass over the key and no concatenation. Equal scores (a
// 2^-64 event) go to the lower id, bytewise, so the answer never depends on
// the order of `live`. The rule is part of the cluster's wire contract: every
// host of a cluster must run the same one.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "peer/peer.h"

namespace hotshard::peer {

// The rendezvous score of `member_id` for `key` (see above).
uint64_t rendezvousScore(std::string_view member_id, std::string_view key);

// The owner of `key`: the member of `live` with the highest score, ties to the
// lower id. nullptr when `live` is empty. The pointer points into `live`.
const Member* ownerOf(std::string_view key, const std::vector<Member>& live);

// All members of `live`, best first (the owner, then the next home if the
// owner fails, ...). Empty when `live` is empty. Pointers point into `live`.
std::vector<const Member*> rankedOwners(std::string_view key, const std::vector<Member>& live);

}  // namespace hotshard::peer
