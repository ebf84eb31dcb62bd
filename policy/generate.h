// Seeded, deterministic synthetic traces for the workloads hotshard is built for.
// Same family, parameters and seed: the same trace, byte for byte, on any platform
// (own PRNG and samplers, no <random> distributions, whose output is
// implementation-defined). Parameters use the policies' k=v syntax. Every record
// carries the data set (Request::dataset, 1, 2, ...) of the top-level directory its file
// would sit in: one per training job, models apart from other files, checkpoints apart
// from training data (docs/policies.md lists them per family).
//
//   zipf       Zipf-popular reads over shards of mixed (log-uniform) sizes.
//   epoch      Epoch-shuffled training: each job reads every shard once per epoch in a
//              fresh random order; several jobs interleaved at random.
//   modelload  Model-load bursts: each restart reads the same N large shards whole,
//              with Zipf background reads of smaller files in between.
//   scan       A Zipf hot set, interrupted periodically by a full scan of all objects.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/params.h"
#include "policy/policy.h"
#include "policy/trace.h"

namespace hotshard::policy {

struct GeneratorInfo {
  std::string name;
  std::string summary;
  std::vector<std::string> params;  // "k (default v): doc"
};

const std::vector<GeneratorInfo>& listGenerators();

using RequestSink = std::function<Status(const Request&)>;

// Unknown families or parameters are errors that list what is accepted.
Status generateTrace(std::string_view family, const std::vector<KeyValue>& params,
                     std::uint64_t seed, const RequestSink& sink);

// SplitMix64 (Steele et al., "Fast splittable pseudorandom number generators", 2014).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() noexcept {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1).
  double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  // Uniform in [0, n), n > 0.
  std::uint64_t below(std::uint64_t n) noexcept {
    return static_cast<std::uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }

 private:
  std::uint64_t state_;
};

// Ranks 0..n-1 with P(k) proportional to 1 / (k+1)^alpha, by inverse CDF.
class ZipfSampler {
 public:
  ZipfSampler(std::uint64_t n, double alpha);
  std::uint64_t sample(Rng& rng) const noexcept;

 private:
  std::vector<double> cdf_;
};

}  // namespace hotshard::policy
