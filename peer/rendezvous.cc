#include "peer/rendezvous.h"

#include <xxhash.h>

#include <algorithm>
#include <utility>

namespace hotshard::peer {

uint64_t rendezvousScore(std::string_view member_id, std::string_view key) {
  const XXH64_hash_t seed = XXH3_64bits(member_id.data(), member_id.size());
  return XXH3_64bits_withSeed(key.data(), key.size(), seed);
}

namespace {

// True when (score_a, a) ranks before (score_b, b): higher score, then lower id.
bool ranksBefore(uint64_t score_a, const Member& a, uint64_t score_b, const Member& b) {
  if (score_a != score_b) return score_a > score_b;
  return a.id < b.id;
}

}  // namespace

const Member* ownerOf(std::string_view key, const std::vector<Member>& live) {
  const Member* best = nullptr;
  uint64_t best_score = 0;
  for (const Member& m : live) {
    const uint64_t score = rendezvousScore(m.id, key);
    if (best == nullptr || ranksBefore(score, m, best_score, *best)) {
      best = &m;
      best_score = score;
    }
  }
  return best;
}

std::vector<const Member*> rankedOwners(std::string_view key, const std::vector<Member>& live) {
  std::vector<std::pair<uint64_t, const Member*>> scored;
  scored.reserve(live.size());
  for (const Member& m : live) scored.emplace_back(rendezvousScore(m.id, key), &m);
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    return ranksBefore(a.first, *a.second, b.first, *b.second);
  });
  std::vector<const Member*> ranked;
  ranked.reserve(scored.size());
  for (const auto& [score, member] : scored) ranked.push_back(member);
  return ranked;
}

}  // namespace hotshard::peer
