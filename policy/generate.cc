#include "policy/generate.h"

#include <algorithm>
#include <cmath>

namespace hotshard::policy {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;
constexpr TimeNs kStepNs = 1000000;       // at least 1 ms between requests
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
  // `dataset`: Request::dataset, the top-level directory the file would sit in; 0: none.
  Status read(ObjectId id, std::uint64_t size, std::uint32_t dataset = 0) {
    return emit(id, size, size, 0, dataset);
  }
  // The whole object written through the mount (its cached copy is invalidated).
  Status write(ObjectId id, std::uint64_t size, std::uint32_t dataset = 0) {
    return emit(id, size, size, kFlagWrite, dataset);
  }
  Status unlink(ObjectId id, std::uint64_t size, std::uint32_t dataset = 0) {
    return emit(id, size, 0, kFlagUnlink, dataset);
  }
  // Time passes with no request (a pause between phases).
  void idle(TimeNs ns) { now_ += ns; }

 private:
  Status emit(ObjectId id, std::uint64_t size, std::uint64_t bytes, std::uint32_t flags,
              std::uint32_t dataset = 0) {
    Request r;
    r.dataset = dataset;
    r.time_ns = now_;
    r.id = id;
    r.size = size;
    r.bytes_read = flags == 0 ? bytes : 0;
    r.bytes_missed = r.bytes_read;
    r.flags = flags;
    now_ += std::max<TimeNs>(kStepNs,
                             static_cast<TimeNs>(static_cast<double>(bytes) / kReadRate * 1e9));
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
      RETURN_IF_ERROR(out.read(obj + 1, sizes[obj], 1));
    }
    return {};
  }
};

// One job reading a data set in epochs, each a fresh shuffle of its files.
struct ShuffledJob {
  ObjectId base = 0;  // ids base + 0 .. base + n - 1
  std::uint32_t dataset = 0;  // Request::dataset of its reads
  const std::vector<std::uint64_t>* sizes = nullptr;
  std::uint64_t epochs = 1;
  std::vector<std::uint32_t> order;
  std::uint64_t pos = 0, epoch = 0;

  ShuffledJob(Rng& rng, ObjectId first, const std::vector<std::uint64_t>& files, std::uint64_t n)
      : base(first), sizes(&files), epochs(n), order(permutation(rng, files.size())) {}
  bool done() const { return epoch >= epochs; }
  Status step(Rng& rng, Emitter& out) {
    std::uint32_t f = order[pos];
    RETURN_IF_ERROR(out.read(base + f, (*sizes)[f], dataset));
    if (++pos == order.size()) {
      pos = 0;
      if (++epoch < epochs) order = permutation(rng, sizes->size());
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
    std::vector<ShuffledJob> running;
    for (std::uint64_t j = 0; j < jobs; ++j) {
      running.emplace_back(rng, 1, sizes, epochs);
      running.back().dataset = 1;  // one data set, read by every job
    }
    while (!running.empty()) {
      std::size_t k = rng.below(running.size());
      RETURN_IF_ERROR(running[k].step(rng, out));
      if (running[k].done()) running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
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
        RETURN_IF_ERROR(out.read(s + 1, model_shard_size, 1));  // models/ and data/
      for (std::uint64_t i = 0; i < background_between; ++i) {
        std::uint32_t obj = rank_to_object[zipf.sample(rng)];
        RETURN_IF_ERROR(out.read(kBackgroundBase + obj, sizes[obj], 2));
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
        for (std::uint64_t o = 0; o < objects; ++o)
          RETURN_IF_ERROR(out.read(o + 1, sizes[o], 1));
      }
      std::uint32_t obj = order[zipf.sample(rng)];
      RETURN_IF_ERROR(out.read(obj + 1, sizes[obj], 1));
    }
    return {};
  }
};

// Several training jobs on different data sets, started one after another so they
// overlap: job j reads shards * (j + 1) shards, so the first job's smaller data set is
// reread most often. Each step, a random running job reads its next shard.
struct MultiJobConfig {
  std::uint64_t jobs = 3;
  std::uint64_t shards = 300;  // of the first job's data set
  std::uint64_t epochs = 4;
  std::uint64_t stagger = 600;  // reads before the next job starts
  std::uint64_t min_size = 64 * kMiB;
  std::uint64_t max_size = 256 * kMiB;
  void bind(ParamTable& t) {
    t.add("jobs", &jobs, "training jobs, each on its own data set")
        .add("shards", &shards, "shards of the first job's data set; job j has (j + 1) x")
        .add("epochs", &epochs, "epochs per job")
        .add("stagger", &stagger, "reads between two job starts")
        .add("min_size", &min_size, "smallest shard, bytes (uniform)")
        .add("max_size", &max_size, "largest shard, bytes");
  }
  Status validate() const {
    if (jobs == 0 || shards == 0 || epochs == 0)
      return makeError(Errc::kInvalidArgument, "multijob: need jobs, shards, epochs > 0");
    return checkSizes("multijob", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    std::vector<std::vector<std::uint64_t>> sets(jobs);
    for (std::uint64_t j = 0; j < jobs; ++j) {
      sets[j].resize(shards * (j + 1));
      for (auto& size : sets[j]) size = min_size + rng.below(max_size - min_size + 1);
    }
    std::vector<ShuffledJob> running;
    std::uint64_t started = 0;
    for (std::uint64_t i = 0; started < jobs || !running.empty(); ++i) {
      if (started < jobs && (i >= started * stagger || running.empty())) {
        running.emplace_back(rng, (started + 1) * 1000000, sets[started], epochs);
        running.back().dataset = static_cast<std::uint32_t>(started + 1);  // its own directory
        ++started;
      }
      std::size_t k = rng.below(running.size());
      RETURN_IF_ERROR(running[k].step(rng, out));
      if (running[k].done()) running.erase(running.begin() + static_cast<std::ptrdiff_t>(k));
    }
    return {};
  }
};

// LLM inference cold starts: each deployment picks a model (Zipf over models) and
// `replicas` replicas load it whole within seconds (their shard reads interleaved),
// with small Zipf reads (configs, tokenizers, other files) between deployments.
struct InferenceConfig {
  std::uint64_t models = 12;
  std::uint64_t shards_per_model = 4;
  std::uint64_t deployments = 300;
  std::uint64_t max_replicas = 8;
  double model_alpha = 1.0;
  std::uint64_t background_between = 200;
  std::uint64_t background_objects = 20000;
  std::uint64_t min_size = 256 * kMiB;  // model shard sizes (log-uniform per model)
  std::uint64_t max_size = 4 * kGiB;
  void bind(ParamTable& t) {
    t.add("models", &models, "models deployed")
        .add("shards_per_model", &shards_per_model, "files per model, read whole at every load")
        .add("deployments", &deployments, "deployments (bursts of replica loads)")
        .add("max_replicas", &max_replicas, "replicas per deployment: 1..max, uniform")
        .add("model_alpha", &model_alpha, "Zipf skew of which model is deployed")
        .add("background_between", &background_between, "small reads between deployments")
        .add("background_objects", &background_objects, "small files (64 KiB..16 MiB)")
        .add("min_size", &min_size, "smallest model shard, bytes (log-uniform)")
        .add("max_size", &max_size, "largest model shard, bytes");
  }
  Status validate() const {
    if (models == 0 || shards_per_model == 0 || max_replicas == 0 || background_objects == 0)
      return makeError(Errc::kInvalidArgument,
                       "inference: need models, shards_per_model, max_replicas, "
                       "background_objects > 0");
    return checkSizes("inference", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    auto shard_sizes = logUniformSizes(rng, models * shards_per_model, min_size, max_size);
    auto small = logUniformSizes(rng, background_objects, 64 * 1024, 16 * kMiB);
    ZipfSampler pick_model(models, model_alpha), pick_small(background_objects, 0.9);
    auto model_rank = permutation(rng, models);
    for (std::uint64_t d = 0; d < deployments; ++d) {
      std::uint64_t m = model_rank[pick_model.sample(rng)];
      std::uint64_t replicas = 1 + rng.below(max_replicas);
      // Replica r starts r shard-reads after the first: interleaved, seconds apart.
      for (std::uint64_t t = 0; t < shards_per_model + replicas - 1; ++t) {
        for (std::uint64_t r = 0; r < replicas; ++r) {
          if (t < r || t - r >= shards_per_model) continue;
          std::uint64_t f = m * shards_per_model + (t - r);
          RETURN_IF_ERROR(out.read(f + 1, shard_sizes[f], 1));  // models/ and data/
        }
      }
      for (std::uint64_t i = 0; i < background_between; ++i) {
        std::uint64_t o = pick_small.sample(rng);
        RETURN_IF_ERROR(out.read(1000000000 + o, small[o], 2));
      }
    }
    return {};
  }
};

// KV-cache spill: an inference server writes KV chunks of 2..64 MiB to files and
// rereads them soon (the next turns of a conversation, a prefix shared by requests),
// then deletes them. `live` chunks are in use at once; each is reread 1..max_rereads
// times (uniform) at random moments while live, then unlinked and replaced.
struct KvSpillConfig {
  std::uint64_t chunks = 20000;
  std::uint64_t live = 48;
  std::uint64_t max_rereads = 6;
  std::uint64_t min_size = 2 * kMiB;
  std::uint64_t max_size = 64 * kMiB;
  void bind(ParamTable& t) {
    t.add("chunks", &chunks, "chunks written over the trace")
        .add("live", &live, "chunks in use at once")
        .add("max_rereads", &max_rereads, "reads per chunk: 1..max, uniform")
        .add("min_size", &min_size, "smallest chunk, bytes (log-uniform)")
        .add("max_size", &max_size, "largest chunk, bytes");
  }
  Status validate() const {
    if (chunks == 0 || live == 0 || max_rereads == 0)
      return makeError(Errc::kInvalidArgument, "kvspill: need chunks, live, max_rereads > 0");
    return checkSizes("kvspill", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    struct Chunk {
      ObjectId id;
      std::uint64_t size, reads_left;
    };
    std::vector<Chunk> in_use;
    std::uint64_t written = 0;
    while (written < chunks || !in_use.empty()) {
      while (in_use.size() < live && written < chunks) {
        Chunk c{++written, logUniform(rng, min_size, max_size), 1 + rng.below(max_rereads)};
        RETURN_IF_ERROR(out.write(c.id, c.size, 1));
        in_use.push_back(c);
      }
      std::size_t k = rng.below(in_use.size());
      RETURN_IF_ERROR(out.read(in_use[k].id, in_use[k].size, 1));
      if (--in_use[k].reads_left == 0) {
        RETURN_IF_ERROR(out.unlink(in_use[k].id, in_use[k].size, 1));
        in_use[k] = in_use.back();
        in_use.pop_back();
      }
    }
    return {};
  }
};

// Training with checkpoints: a job reads its data set in shuffled epochs and every
// `every` reads writes a checkpoint (ckpt_files files) over the older of two slots (the
// same paths, overwritten). After a checkpoint, an evaluation job reads it whole with
// probability eval_share, and a restart (probability restart_share) reads it again.
struct CheckpointConfig {
  std::uint64_t shards = 1500;
  std::uint64_t epochs = 4;
  std::uint64_t every = 400;
  std::uint64_t ckpt_files = 8;
  std::uint64_t ckpt_file_size = kGiB;
  double eval_share = 0.5;
  double restart_share = 0.2;
  std::uint64_t min_size = 64 * kMiB;
  std::uint64_t max_size = 256 * kMiB;
  void bind(ParamTable& t) {
    t.add("shards", &shards, "shards of the data set")
        .add("epochs", &epochs, "epochs")
        .add("every", &every, "data reads between two checkpoints")
        .add("ckpt_files", &ckpt_files, "files per checkpoint")
        .add("ckpt_file_size", &ckpt_file_size, "bytes per checkpoint file")
        .add("eval_share", &eval_share, "chance that an evaluation reads a new checkpoint")
        .add("restart_share", &restart_share, "chance that a restart reads it (again)")
        .add("min_size", &min_size, "smallest data shard, bytes (uniform)")
        .add("max_size", &max_size, "largest data shard, bytes");
  }
  Status validate() const {
    if (shards == 0 || epochs == 0 || every == 0 || ckpt_files == 0 || ckpt_file_size == 0)
      return makeError(Errc::kInvalidArgument, "checkpoint: need every count > 0");
    return checkSizes("checkpoint", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    std::vector<std::uint64_t> sizes(shards);
    for (auto& size : sizes) size = min_size + rng.below(max_size - min_size + 1);
    ShuffledJob job(rng, 1, sizes, epochs);
    job.dataset = 1;  // data/; the checkpoints go to ckpt/ (2)
    for (std::uint64_t i = 1, ckpt = 0; !job.done(); ++i) {
      RETURN_IF_ERROR(job.step(rng, out));
      if (i % every != 0) continue;
      ObjectId slot = 1000000000 + (ckpt++ % 2) * 1000;  // two slots, overwritten in turn
      for (std::uint64_t f = 0; f < ckpt_files; ++f)
        RETURN_IF_ERROR(out.write(slot + f, ckpt_file_size, 2));
      int readers = (rng.unit() < eval_share) + (rng.unit() < restart_share);
      for (int r = 0; r < readers; ++r) {
        for (std::uint64_t f = 0; f < ckpt_files; ++f)
          RETURN_IF_ERROR(out.read(slot + f, ckpt_file_size, 2));
      }
    }
    return {};
  }
};

// Webdataset training: tar shards read whole in shuffled epochs, and an eval set of
// smaller shards read whole every eval_every training reads.
struct WebdatasetConfig {
  std::uint64_t shards = 1500;
  std::uint64_t epochs = 4;
  std::uint64_t eval_shards = 40;
  std::uint64_t eval_every = 300;
  std::uint64_t min_size = 256 * kMiB;
  std::uint64_t max_size = 1 * kGiB;
  void bind(ParamTable& t) {
    t.add("shards", &shards, "training shards")
        .add("epochs", &epochs, "epochs over the training shards")
        .add("eval_shards", &eval_shards, "eval shards (a quarter of a training shard's size)")
        .add("eval_every", &eval_every, "training reads between two evaluations")
        .add("min_size", &min_size, "smallest training shard, bytes (uniform)")
        .add("max_size", &max_size, "largest training shard, bytes");
  }
  Status validate() const {
    if (shards == 0 || epochs == 0 || eval_every == 0)
      return makeError(Errc::kInvalidArgument, "webdataset: need shards, epochs, eval_every > 0");
    return checkSizes("webdataset", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    std::vector<std::uint64_t> sizes(shards), eval(eval_shards);
    for (auto& size : sizes) size = min_size + rng.below(max_size - min_size + 1);
    for (auto& size : eval) size = (min_size + rng.below(max_size - min_size + 1)) / 4;
    ShuffledJob job(rng, 1, sizes, epochs);
    job.dataset = 1;  // train/; the eval shards sit in eval/ (2)
    for (std::uint64_t i = 1; !job.done(); ++i) {
      RETURN_IF_ERROR(job.step(rng, out));
      if (i % eval_every != 0) continue;
      for (std::uint64_t e = 0; e < eval_shards; ++e)
        RETURN_IF_ERROR(out.read(1000000000 + e, eval[e], 2));
    }
    return {};
  }
};

// A popularity shift: Zipf reads over one data set, then, from `shift_at` (a share of
// the reads) on, over another one of the same shape: the hot data set changes.
struct ShiftConfig {
  std::uint64_t objects = 10000;
  std::uint64_t requests = 400000;
  double alpha = 0.9;
  double shift_at = 0.5;
  std::uint64_t min_size = kMiB;
  std::uint64_t max_size = 64 * kMiB;
  void bind(ParamTable& t) {
    t.add("objects", &objects, "objects per data set")
        .add("requests", &requests, "reads")
        .add("alpha", &alpha, "Zipf skew")
        .add("shift_at", &shift_at, "share of the reads before the shift, 0..1")
        .add("min_size", &min_size, "smallest object, bytes (log-uniform)")
        .add("max_size", &max_size, "largest object, bytes");
  }
  Status validate() const {
    if (objects == 0 || alpha < 0 || !(shift_at >= 0 && shift_at <= 1))
      return makeError(Errc::kInvalidArgument, "shift: need objects > 0, 0 <= shift_at <= 1");
    return checkSizes("shift", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    auto sizes = logUniformSizes(rng, 2 * objects, min_size, max_size);
    auto before = permutation(rng, objects), after = permutation(rng, objects);
    ZipfSampler zipf(objects, alpha);
    auto shift = static_cast<std::uint64_t>(shift_at * static_cast<double>(requests));
    for (std::uint64_t i = 0; i < requests; ++i) {
      std::uint64_t o = i < shift ? before[zipf.sample(rng)] : objects + after[zipf.sample(rng)];
      RETURN_IF_ERROR(out.read(o + 1, sizes[o], o < objects ? 1 : 2));  // a directory each
    }
    return {};
  }
};

// Small files beside large shards: an image data set of many small files read in
// shuffled epochs by one job, while another job reads large shards in shuffled epochs;
// each step one of the two reads, in proportion to their file counts over a pass.
struct SmallFilesConfig {
  std::uint64_t files = 60000;
  std::uint64_t file_epochs = 6;
  std::uint64_t min_file = 32 * 1024;
  std::uint64_t max_file = 512 * 1024;
  std::uint64_t shards = 400;
  std::uint64_t shard_epochs = 3;
  std::uint64_t min_size = 256 * kMiB;
  std::uint64_t max_size = 1 * kGiB;
  void bind(ParamTable& t) {
    t.add("files", &files, "small files of the image data set")
        .add("file_epochs", &file_epochs, "epochs over the small files")
        .add("min_file", &min_file, "smallest small file, bytes (log-uniform)")
        .add("max_file", &max_file, "largest small file, bytes")
        .add("shards", &shards, "large shards of the other job")
        .add("shard_epochs", &shard_epochs, "epochs over the shards")
        .add("min_size", &min_size, "smallest shard, bytes (uniform)")
        .add("max_size", &max_size, "largest shard, bytes");
  }
  Status validate() const {
    if (files == 0 || file_epochs == 0 || shards == 0 || shard_epochs == 0)
      return makeError(Errc::kInvalidArgument, "smallfiles: need counts > 0");
    RETURN_IF_ERROR(checkSizes("smallfiles", min_file, max_file));
    return checkSizes("smallfiles", min_size, max_size);
  }
  Status run(Rng& rng, Emitter& out) const {
    auto small = logUniformSizes(rng, files, min_file, max_file);
    std::vector<std::uint64_t> large(shards);
    for (auto& size : large) size = min_size + rng.below(max_size - min_size + 1);
    ShuffledJob images(rng, 1, small, file_epochs), tars(rng, 1000000000, large, shard_epochs);
    images.dataset = 1;  // images/ and shards/
    tars.dataset = 2;
    const double image_share = static_cast<double>(files * file_epochs) /
                               static_cast<double>(files * file_epochs + shards * shard_epochs);
    while (!images.done() || !tars.done()) {
      bool image = tars.done() || (!images.done() && rng.unit() < image_share);
      RETURN_IF_ERROR(image ? images.step(rng, out) : tars.step(rng, out));
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
      family<MultiJobConfig>("multijob", "overlapping training jobs on different data sets"),
      family<InferenceConfig>("inference",
                              "model cold starts: bursts of replicas loading the same model"),
      family<KvSpillConfig>("kvspill", "KV-cache chunks written, reread soon, deleted"),
      family<CheckpointConfig>("checkpoint",
                               "training reads with checkpoints written, evaluated, reloaded"),
      family<WebdatasetConfig>("webdataset", "tar shards in shuffled epochs and an eval set"),
      family<ShiftConfig>("shift", "Zipf reads whose hot data set changes midway"),
      family<SmallFilesConfig>("smallfiles", "a small-file image data set beside large shards"),
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
