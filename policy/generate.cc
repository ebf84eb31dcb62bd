#include "policy/generate.h"

#include <algorithm>
#include <cmath>

namespace hotshard::policy {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;
constexpr TimeNs kStepNs = 1000000;  // at least 1 ms between requests
constexpr double kReadRate = 4.0 * kGiB;  // bytes/s the jobs read, all together

std::uint64_t logUniform(Rng& rng, std::uint64_t lo, std::uint64_t hi) {
  double l = std::log(static_cast<double>(lo)), h = std::log(static_cast<double>(hi));
  return static_cast<std::uint64_t>(std::llround(std::exp(l + rng.unit() * (h - l))));
}

std::vector<std::uint64_t> logUniformSizes(Rng& rng, std::uint64_t n, std::uint64_t lo,
                                           std::uint64_t hi) {
  std::vector<std::uint64_t> sizes(n);
  for (auto& s : sizes) s = logUniform(rng, lo, hi);
  return sizes;
}

// A random permutation of 0..n-1 (Fisher-Yates).
std::vector<std::uint32_t> permutation(Rng& rng, std::uint64_t n) {
  std::vector<std::uint32_t> p(n);
  for (std::uint64_t i = 0; i < n; ++i) p[i] = static_cast<std::uint32_t>(i);
  for (std::uint64_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
  return p;
}

// Emits whole-object reads, all from the remote. Time advances by what the read takes
// at kReadRate, at least kStepNs, so copies (policy/simulator.h, charged) compete with
// reads on a realistic time scale.
class Emitter {
 public:
  explicit Emitter(const RequestSink& sink) : sink_(sink) {}
  Status read(ObjectId id, std::uint64_t size) { return emit(id, size, size, 0); }
  // The whole object written through the mount (its cached copy is invalidated).
  Status write(ObjectId id, std::uint64_t size) { return emit(id, size, size, kFlagWrite); }
  Status unlink(ObjectId id, std::uint64_t size) { return emit(id, size, 0, kFlagUnlink); }
  // Time passes with no request (a pause between phases).
  void idle(TimeNs ns) { now_ += ns; }

 private:
  Status emit(ObjectId id, std::uint64_t size, std::uint64_t bytes, std::uint32_t flags) {
    Request r;
    r.time_ns = now_;
    r.id = id;
    r.size = size;
    r.bytes_read = flags == 0 ? bytes : 0;
    r.bytes_missed = r.bytes_read;
    r.flags = flags;
    now_ += std::max<TimeNs>(kStepNs, static_cast<TimeNs>(static_cast<double>(bytes) /
                                                          kReadRate * 1e9));
    return sink_(r);
  }

  const RequestSink& sink_;
  TimeNs now_ = 0;
};

Status checkSizes(std::string_view family, std::uint64_t lo, std::uint64_t hi) {
  if (lo == 0 || hi < lo)
    return makeError(Errc::kInvalidArgument,
                     std::string(family) + ": need 0 < min_size <= max_size");
  return {};
}

struct ZipfConfig {
  std::uint64_t objects = 20000;
  std::uint64_t requests = 1000000;
  double alpha = 0.9;
  std::uint64_t min_size = 64 * 1024;
  std::uint64_t max_size = 256 * kMiB;
  void bind(ParamTable& t) {
    t.add("objects", &objects, "number of shards")
        .add("requests", &requests, "number of reads")
        .add("alpha", &alpha, "Zipf skew (0 = uniform)")
        .add("min_size", &min_size, "smallest shard, bytes (sizes are log-uniform)")
        .add("max_size", &max_size, "largest shard, bytes");
  }
  Status validate() const {
    if (objects == 0 || alpha < 0)
      return makeError(Errc::kInvalidArgument, "zipf: need objects > 0 and alpha >= 0");
    return checkSizes("zipf", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    auto sizes = logUniformSizes(rng, objects, min_size, max_size);
    auto rank_to_object = permutation(rng, objects);  // popularity independent of size
    ZipfSampler zipf(objects, alpha);
    for (std::uint64_t i = 0; i < requests; ++i) {
      std::uint32_t obj = rank_to_object[zipf.sample(rng)];
      RETURN_IF_ERROR(out.read(obj + 1, sizes[obj]));
    }
    return {};
  }
};

struct EpochConfig {
  std::uint64_t shards = 2000;
  std::uint64_t epochs = 5;
  std::uint64_t jobs = 2;
  std::uint64_t min_size = 128 * kMiB;
  std::uint64_t max_size = 256 * kMiB;
  void bind(ParamTable& t) {
    t.add("shards", &shards, "shards in the dataset")
        .add("epochs", &epochs, "epochs per job")
        .add("jobs", &jobs, "concurrent jobs, interleaved at random")
        .add("min_size", &min_size, "smallest shard, bytes (sizes are uniform)")
        .add("max_size", &max_size, "largest shard, bytes");
  }
  Status validate() const {
    if (shards == 0 || epochs == 0 || jobs == 0)
      return makeError(Errc::kInvalidArgument, "epoch: need shards, epochs, jobs > 0");
    return checkSizes("epoch", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    std::vector<std::uint64_t> sizes(shards);
    for (auto& s : sizes) s = min_size + rng.below(max_size - min_size + 1);
    struct Job {
      std::vector<std::uint32_t> order;
      std::uint64_t pos = 0, epoch = 0;
    };
    std::vector<Job> running(jobs);
    for (auto& j : running) j.order = permutation(rng, shards);
    while (!running.empty()) {
      std::size_t k = rng.below(running.size());
      Job& job = running[k];
      std::uint32_t shard = job.order[job.pos];
      RETURN_IF_ERROR(out.read(shard + 1, sizes[shard]));
      if (++job.pos == shards) {
        job.pos = 0;
        if (++job.epoch == epochs) {
          running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
        } else {
          job.order = permutation(rng, shards);  // a fresh shuffle every epoch
        }
      }
    }
    return {};
  }
};

struct ModelLoadConfig {
  std::uint64_t model_shards = 8;
  std::uint64_t model_shard_size = 2 * kGiB;
  std::uint64_t restarts = 50;
  std::uint64_t background_objects = 20000;
  std::uint64_t background_between = 2000;
  double background_alpha = 0.8;
  std::uint64_t min_size = kMiB;
  std::uint64_t max_size = 16 * kMiB;
  void bind(ParamTable& t) {
    t.add("model_shards", &model_shards, "shards of the model, read whole at every restart")
        .add("model_shard_size", &model_shard_size, "bytes per model shard")
        .add("restarts", &restarts, "number of restarts (model loads)")
        .add("background_objects", &background_objects, "other files read between loads")
        .add("background_between", &background_between, "background reads between two loads")
        .add("background_alpha", &background_alpha, "Zipf skew of the background reads")
        .add("min_size", &min_size, "smallest background file, bytes (log-uniform)")
        .add("max_size", &max_size, "largest background file, bytes");
  }
  Status validate() const {
    if (model_shards == 0 || model_shard_size == 0 || background_objects == 0 ||
        background_alpha < 0) {
      return makeError(Errc::kInvalidArgument,
                       "modelload: need model_shards, model_shard_size, background_objects > 0");
    }
    return checkSizes("modelload", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    auto sizes = logUniformSizes(rng, background_objects, min_size, max_size);
    auto rank_to_object = permutation(rng, background_objects);
    ZipfSampler zipf(background_objects, background_alpha);
    constexpr ObjectId kBackgroundBase = 1000000000;
    for (std::uint64_t restart = 0; restart < restarts; ++restart) {
      for (std::uint64_t s = 0; s < model_shards; ++s)
        RETURN_IF_ERROR(out.read(s + 1, model_shard_size));
      for (std::uint64_t i = 0; i < background_between; ++i) {
        std::uint32_t obj = rank_to_object[zipf.sample(rng)];
        RETURN_IF_ERROR(out.read(kBackgroundBase + obj, sizes[obj]));
      }
    }
    return {};
  }
};

struct ScanConfig {
  std::uint64_t objects = 20000;
  std::uint64_t hot_objects = 1500;
  std::uint64_t requests = 400000;
  std::uint64_t scan_every = 20000;
  double alpha = 0.6;
  std::uint64_t min_size = kMiB;
  std::uint64_t max_size = 16 * kMiB;
  void bind(ParamTable& t) {
    t.add("objects", &objects, "objects in the data set (each scan reads them all)")
        .add("hot_objects", &hot_objects, "objects of the hot set")
        .add("requests", &requests, "hot-set reads (scans come on top)")
        .add("scan_every", &scan_every, "hot-set reads between two full scans")
        .add("alpha", &alpha, "Zipf skew within the hot set")
        .add("min_size", &min_size, "smallest object, bytes (log-uniform)")
        .add("max_size", &max_size, "largest object, bytes");
  }
  Status validate() const {
    if (objects == 0 || hot_objects == 0 || hot_objects > objects || scan_every == 0 || alpha < 0) {
      return makeError(Errc::kInvalidArgument,
                       "scan: need 0 < hot_objects <= objects and scan_every > 0");
    }
    return checkSizes("scan", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    auto sizes = logUniformSizes(rng, objects, min_size, max_size);
    auto order = permutation(rng, objects);  // the first hot_objects of it are hot
    ZipfSampler zipf(hot_objects, alpha);
    for (std::uint64_t i = 0; i < requests; ++i) {
      if (i > 0 && i % scan_every == 0) {
        for (std::uint64_t o = 0; o < objects; ++o) RETURN_IF_ERROR(out.read(o + 1, sizes[o]));
      }
      std::uint32_t obj = order[zipf.sample(rng)];
      RETURN_IF_ERROR(out.read(obj + 1, sizes[obj]));
    }
    return {};
  }
};

struct Family {
  GeneratorInfo info;
  std::function<Status(const std::vector<KeyValue>&, Rng&, Emitter&)> generate;
};

template <typename Config>
Family family(std::string name, std::string summary) {
  Config config;
  ParamTable table;
  config.bind(table);
  return Family{{name, std::move(summary), table.describe()},
                [name](const std::vector<KeyValue>& params, Rng& rng, Emitter& out) -> Status {
                  Config c;
                  ParamTable t;
                  c.bind(t);
                  RETURN_IF_ERROR(t.apply(name, params));
                  RETURN_IF_ERROR(c.validate());
                  return c.run(rng, out);
                }};
}

const std::vector<Family>& families() {
  static const std::vector<Family> f = {
      family<ZipfConfig>("zipf", "Zipf-popular reads over shards of mixed sizes"),
      family<EpochConfig>("epoch", "epoch-shuffled training reads, several jobs interleaved"),
      family<ModelLoadConfig>("modelload",
                              "the same large model shards read whole at every restart"),
      family<ScanConfig>("scan", "a hot set under periodic full scans"),
  };
  return f;
}

}  // namespace

ZipfSampler::ZipfSampler(std::uint64_t n, double alpha) : cdf_(n) {
  double sum = 0;
  for (std::uint64_t k = 0; k < n; ++k)
    cdf_[k] = sum += std::pow(static_cast<double>(k + 1), -alpha);
  for (auto& c : cdf_) c /= sum;
}

std::uint64_t ZipfSampler::sample(Rng& rng) const noexcept {
  double u = rng.unit();
  auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
  return std::min<std::uint64_t>(static_cast<std::uint64_t>(it - cdf_.begin()), cdf_.size() - 1);
}

const std::vector<GeneratorInfo>& listGenerators() {
  static const std::vector<GeneratorInfo> infos = [] {
    std::vector<GeneratorInfo> v;
    for (const auto& f : families()) v.push_back(f.info);
    return v;
  }();
  return infos;
}

Status generateTrace(std::string_view name, const std::vector<KeyValue>& params, std::uint64_t seed,
                     const RequestSink& sink) {
  for (const auto& f : families()) {
    if (f.info.name == name) {
      Rng rng(seed);
      Emitter out(sink);
      return f.generate(params, rng, out);
    }
  }
  std::string names;
  for (const auto& f : families()) names += (names.empty() ? "" : ", ") + f.info.name;
  return makeError(Errc::kInvalidArgument,
                   "unknown trace family '" + std::string(name) + "' (known: " + names + ")");
}

}  // namespace hotshard::policy
