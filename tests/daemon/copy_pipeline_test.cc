// The copy pipeline on both engines, through an engine decorator that injects
// short transfers and errno completions at chosen requests: every copy must
// come out byte-exact with the xxh3 of its source, and the O_DIRECT fallbacks
// must happen exactly where the kernel (here, the decorator) asks for them.
#include "daemon/copy_pipeline.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <deque>
#include <map>

#include "base/fd.h"
#include "tests/daemon/store_fixture.h"

namespace hotshard {
namespace {

using testing::randomBytes;

// One fault, fired once: at the first submission of `op` whose count (from 0,
// retries included) is at least `nth` and, with only_direct, whose fd has
// O_DIRECT on at that moment.
struct Fault {
  IoOp op = IoOp::kRead;
  unsigned nth = 0;
  int err = 0;             // != 0: nothing is submitted; the completion is -err
  uint32_t short_len = 0;  // err == 0: the request is cut to this many bytes (an
                           // O_DIRECT write, which cannot be cut unaligned, is
                           // done whole but reported as this many)
  bool only_direct = false;
  bool fired = false;
};

struct WriteSeen {
  uint64_t offset;
  uint32_t len;
  bool direct;  // the fd had O_DIRECT when the write was submitted
  bool faulted;
};

// Wraps a real engine; everything not faulted goes to it untouched. `faults`
// and `writes` (every write submitted, in order) belong to the test: the
// pipeline destroys its engine before returning.
class FaultyEngine final : public IoEngine {
 public:
  FaultyEngine(std::unique_ptr<IoEngine> inner, std::vector<Fault>* faults,
               std::vector<WriteSeen>* writes)
      : inner_(std::move(inner)), faults_(faults), writes_(writes) {}

  const char* name() const override { return inner_->name(); }
  unsigned depth() const override { return inner_->depth(); }
  unsigned inFlight() const override {
    return inner_->inFlight() + static_cast<unsigned>(injected_.size());
  }
  Status registerBuffers(const std::vector<iovec>& buffers) override {
    return inner_->registerBuffers(buffers);
  }

  Status submit(const IoRequest& req) override {
    if (inFlight() >= depth()) return makeError(Errc::kBusy, "faulty engine: queue full");
    unsigned n = submitted_[req.op]++;
    int fl = ::fcntl(req.fd, F_GETFL);
    bool direct = fl >= 0 && (fl & O_DIRECT) != 0;
    Fault* f = match(req.op, n, direct);
    if (req.op == IoOp::kWrite)
      writes_->push_back(WriteSeen{req.offset, req.len, direct, f != nullptr});
    if (f == nullptr) return inner_->submit(req);
    f->fired = true;
    if (f->err != 0) {
      injected_.push_back(IoCompletion{req.user_data, -static_cast<int64_t>(f->err)});
      return Ok{};
    }
    if (req.op == IoOp::kWrite && direct) {
      report_short_[req.user_data] = f->short_len;
      return inner_->submit(req);
    }
    IoRequest shorter = req;
    shorter.len = std::min(req.len, f->short_len);
    return inner_->submit(shorter);
  }

  Result<size_t> reap(std::vector<IoCompletion>* out, unsigned min_complete) override {
    size_t n = injected_.size();
    out->insert(out->end(), injected_.begin(), injected_.end());
    injected_.clear();
    size_t first = out->size();
    // Injected completions are ready: do not wait for the real ones then.
    auto r = inner_->reap(out, n > 0 ? 0 : min_complete);
    if (!r.ok()) return r.takeError();
    for (size_t i = first; i < out->size(); ++i) {
      auto it = report_short_.find((*out)[i].user_data);
      if (it == report_short_.end()) continue;
      if ((*out)[i].result > it->second) (*out)[i].result = it->second;
      report_short_.erase(it);
    }
    return n + *r;
  }

 private:
  Fault* match(IoOp op, unsigned n, bool direct) {
    for (auto& f : *faults_) {
      if (!f.fired && f.op == op && n >= f.nth && (!f.only_direct || direct)) return &f;
    }
    return nullptr;
  }

  std::unique_ptr<IoEngine> inner_;
  std::vector<Fault>* faults_;
  std::vector<WriteSeen>* writes_;
  std::map<IoOp, unsigned> submitted_;
  std::deque<IoCompletion> injected_;
  std::map<uint64_t, uint32_t> report_short_;
};

constexpr uint32_t kChunk = 64 * 1024;
constexpr unsigned kDepth = 4;
// Not a multiple of 4096: the O_DIRECT tail is padded, then truncated.
constexpr size_t kSize = 9 * kChunk + 12345;

class CopyPipelineTest : public ::testing::TestWithParam<IoEngineKind> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hotshard-copy-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    content_ = randomBytes(kSize, 42);
    testing::writeFile(dir_ + "/src", content_);
    src_.reset(::open((dir_ + "/src").c_str(), O_RDONLY | O_CLOEXEC));
    ASSERT_TRUE(src_.valid());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // The destination, with O_DIRECT when asked (the test fails if refused).
  void openDst(bool direct) {
    int flags = O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | (direct ? O_DIRECT : 0);
    dst_.reset(::open((dir_ + "/dst").c_str(), flags, 0600));
    ASSERT_TRUE(dst_.valid()) << std::strerror(errno);
    direct_ = direct;
  }

  std::unique_ptr<IoEngine> engine() {
    if (GetParam() == IoEngineKind::kSync) return makeSyncEngine(kDepth);
    auto uring = makeUringEngine(kDepth);
    EXPECT_TRUE(uring.ok()) << uring.error().message;
    return uring.ok() ? std::move(uring).value() : nullptr;
  }

  // Copies src to dst through a FaultyEngine over the engine under test.
  Result<CopyResult> copy(size_t size = kSize, CopyFault* fault = nullptr) {
    writes_.clear();
    progress_ = 0;
    std::unique_ptr<IoEngine> inner = engine();
    if (inner == nullptr) return makeError(Errc::kUnsupported, "no engine to test");
    auto faulty = std::make_unique<FaultyEngine>(std::move(inner), &faults_, &writes_);
    CopyRequest req{.src_fd = src_.get(),
                    .dst_fd = dst_.get(),
                    .size = size,
                    .dst_direct = direct_,
                    .chunk_bytes = kChunk,
                    .label = "test",
                    .src_name = "src",
                    .dst_name = "dst",
                    .before_read = before_read_,
                    .progress = [&](uint64_t copied, uint64_t total) {
                      EXPECT_EQ(total, size);
                      EXPECT_GT(copied, progress_);
                      progress_ = copied;
                    }};
    return runCopyPipeline(std::move(faulty), req, fault);
  }

  // The copy is the source, byte for byte, and its checksum is the source's.
  // With `resubmits` >= 0, that many requests were retried.
  void expectExactCopy(const Result<CopyResult>& r, int resubmits = -1) {
    ASSERT_TRUE(r.ok()) << r.error().message;
    if (resubmits >= 0) {
      EXPECT_EQ(r->resubmits, static_cast<uint64_t>(resubmits));
    }
    std::string got = testing::readFile(dir_ + "/dst");  // dst_ is write-only
    EXPECT_EQ(got.size(), kSize);
    EXPECT_TRUE(got == content_) << "copy differs from its source";
    EXPECT_EQ(r->checksum, XXH3_64bits(content_.data(), content_.size()));
    EXPECT_EQ(r->bytes, kSize);
    EXPECT_EQ(progress_, kSize);
    for (const auto& f : faults_) EXPECT_TRUE(f.fired) << "a planned fault never fired";
  }

  // An exact copy that turned O_DIRECT off on the destination at the faulted
  // write: writes are direct up to it; its retry (at `skip` bytes past it) and
  // every write after that are buffered. Writes submitted between the two were
  // in flight before the fault was seen and may be either.
  void expectFallbackToBuffered(const Result<CopyResult>& r, uint64_t skip) {
    expectExactCopy(r);
    ASSERT_TRUE(r.ok());
    EXPECT_TRUE(r->fell_back_to_buffered);
    EXPECT_EQ(::fcntl(dst_.get(), F_GETFL) & O_DIRECT, 0) << "O_DIRECT still on";
    auto faulted = std::find_if(writes_.begin(), writes_.end(), [](auto& w) { return w.faulted; });
    ASSERT_NE(faulted, writes_.end());
    for (auto w = writes_.begin(); w != faulted; ++w) EXPECT_TRUE(w->direct) << w->offset;
    EXPECT_TRUE(faulted->direct);
    auto retry = std::find_if(faulted + 1, writes_.end(),
                              [&](auto& w) { return w.offset == faulted->offset + skip; });
    ASSERT_NE(retry, writes_.end()) << "the faulted write was never retried";
    for (auto w = retry; w != writes_.end(); ++w) EXPECT_FALSE(w->direct) << w->offset;
  }

  std::string dir_, content_;
  UniqueFd src_, dst_;
  bool direct_ = false;
  std::vector<Fault> faults_;
  std::vector<WriteSeen> writes_;
  std::function<Status(uint64_t, uint32_t)> before_read_;
  uint64_t progress_ = 0;
};

TEST_P(CopyPipelineTest, PlainCopyIsExact) {
  openDst(false);
  auto r = copy();
  expectExactCopy(r, 0);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->fell_back_to_buffered);
}

TEST_P(CopyPipelineTest, ShortReadsAreResumedWhereTheyStopped) {
  openDst(false);
  faults_ = {Fault{.op = IoOp::kRead, .nth = 0, .short_len = 1000},
             Fault{.op = IoOp::kRead, .nth = 3, .short_len = 1},
             Fault{.op = IoOp::kRead, .nth = 6, .short_len = 4097}};
  expectExactCopy(copy(), 3);
}

TEST_P(CopyPipelineTest, ShortWritesAreResumedWhereTheyStopped) {
  openDst(false);
  faults_ = {Fault{.op = IoOp::kWrite, .nth = 0, .short_len = 777},
             Fault{.op = IoOp::kWrite, .nth = 4, .short_len = 8192}};
  expectExactCopy(copy(), 2);
}

TEST_P(CopyPipelineTest, EintrAndEagainAreResubmitted) {
  openDst(false);
  faults_ = {Fault{.op = IoOp::kRead, .nth = 0, .err = EINTR},
             Fault{.op = IoOp::kRead, .nth = 2, .err = EAGAIN},
             Fault{.op = IoOp::kWrite, .nth = 1, .err = EINTR},
             Fault{.op = IoOp::kWrite, .nth = 3, .err = EAGAIN}};
  expectExactCopy(copy(), 4);
}

TEST_P(CopyPipelineTest, DirectCopyPadsAndTruncatesTheTail) {
  openDst(true);
  auto r = copy();
  expectExactCopy(r);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->fell_back_to_buffered);
  ASSERT_FALSE(writes_.empty());
  for (const auto& w : writes_) EXPECT_TRUE(w.direct) << "write at " << w.offset;
}

TEST_P(CopyPipelineTest, EinvalOnDirectWriteFallsBackToBuffered) {
  openDst(true);
  faults_ = {Fault{.op = IoOp::kWrite, .nth = 1, .err = EINVAL, .only_direct = true}};
  expectFallbackToBuffered(copy(), 0);
}

TEST_P(CopyPipelineTest, UnalignedShortDirectWriteFallsBackToBuffered) {
  openDst(true);
  faults_ = {Fault{.op = IoOp::kWrite, .nth = 2, .short_len = 1000, .only_direct = true}};
  expectFallbackToBuffered(copy(), 1000);
}

TEST_P(CopyPipelineTest, EinvalOnBufferedWriteIsAnError) {
  openDst(false);
  faults_ = {Fault{.op = IoOp::kWrite, .nth = 0, .err = EINVAL}};
  CopyFault fault = CopyFault::kNone;
  auto r = copy(kSize, &fault);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(fault, CopyFault::kDestination);
  EXPECT_EQ(r.error().sys_errno, EINVAL);
  EXPECT_EQ(r.error().message, "test: pwrite dst: Invalid argument");
}

TEST_P(CopyPipelineTest, ErrorsNameTheSideThatFailed) {
  struct Case {
    Fault fault;
    CopyFault side;
    Errc code;
    std::string message;
  };
  for (const Case& c :
       {Case{Fault{.op = IoOp::kRead, .nth = 2, .err = EIO}, CopyFault::kSource, Errc::kIo,
             "test: read src at offset 131072: Input/output error"},
        Case{Fault{.op = IoOp::kWrite, .nth = 0, .err = ENOSPC}, CopyFault::kDestination,
             Errc::kNoSpace, "test: pwrite dst: No space left on device"},
        Case{Fault{.op = IoOp::kWrite, .nth = 0, .err = EDQUOT}, CopyFault::kDestination,
             Errc::kNoSpace, "test: pwrite dst: No space left on device"}}) {
    SCOPED_TRACE(c.message);
    openDst(false);
    faults_ = {c.fault};
    CopyFault fault = CopyFault::kNone;
    auto r = copy(kSize, &fault);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(faults_[0].fired);
    EXPECT_EQ(fault, c.side);
    EXPECT_EQ(r.error().code, c.code);
    EXPECT_EQ(r.error().message, c.message);
  }
}

TEST_P(CopyPipelineTest, SourceEndingEarlyIsStale) {
  openDst(false);
  CopyFault fault = CopyFault::kNone;
  auto r = copy(kSize + 5000, &fault);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(fault, CopyFault::kSourceShrank);
  EXPECT_EQ(r.error().code, Errc::kStale);
  EXPECT_NE(
      r.error().message.find("src shrank during the copy (end of file at " + std::to_string(kSize)),
      std::string::npos)
      << r.error().message;
}

TEST_P(CopyPipelineTest, BeforeReadCancelsAndNothingIsLeftInFlight) {
  openDst(false);
  unsigned calls = 0;
  before_read_ = [&](uint64_t offset, uint32_t len) -> Status {
    EXPECT_EQ(offset, uint64_t{calls} * kChunk);
    EXPECT_EQ(len, kChunk);
    if (++calls == 6) return makeError(Errc::kBusy, "test: cancelled");
    return Ok{};
  };
  CopyFault fault = CopyFault::kNone;
  auto r = copy(kSize, &fault);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(fault, CopyFault::kCancelled);
  EXPECT_EQ(r.error().message, "test: cancelled");
  EXPECT_EQ(calls, 6u);
}

// A promoter worker keeps one kit for many files: a copy that failed midway
// leaves nothing in flight, and the next copy through the same buffers is exact.
TEST_P(CopyPipelineTest, OneKitServesManyCopiesAfterAFailure) {
  openDst(false);
  auto kit = CopyKit::create(engine(), kChunk, /*register_buffers=*/true);
  ASSERT_TRUE(kit.ok()) << kit.error().message;
  EXPECT_EQ((*kit)->slots(), kDepth);
  EXPECT_EQ((*kit)->bufferBytes(), uint64_t{kDepth} * kChunk);
  EXPECT_EQ((*kit)->fixed(), GetParam() == IoEngineKind::kUring);
  for (int round = 0; round < 3; ++round) {
    unsigned calls = 0;
    progress_ = 0;
    CopyRequest req{.src_fd = src_.get(),
                    .dst_fd = dst_.get(),
                    .size = kSize,
                    .chunk_bytes = kChunk,
                    .label = "test",
                    .src_name = "src",
                    .dst_name = "dst",
                    .before_read = [&](uint64_t, uint32_t) -> Status {
                      if (round == 1 && ++calls == 6) return makeError(Errc::kBusy, "cancelled");
                      return Ok{};
                    },
                    .progress = [&](uint64_t copied, uint64_t) { progress_ = copied; }};
    ASSERT_EQ(::ftruncate(dst_.get(), 0), 0);
    CopyFault fault = CopyFault::kNone;
    auto r = runCopyPipeline(**kit, req, &fault);
    EXPECT_EQ((*kit)->engine().inFlight(), 0u) << "round " << round;
    EXPECT_TRUE((*kit)->usable());
    if (round == 1) {
      EXPECT_FALSE(r.ok());
      EXPECT_EQ(fault, CopyFault::kCancelled);
    } else {
      expectExactCopy(r);
    }
  }
  // A chunk larger than the kit's buffers is refused, not overrun.
  CopyRequest big{.src_fd = src_.get(), .dst_fd = dst_.get(), .size = kSize,
                  .chunk_bytes = 2 * kChunk, .label = "test"};
  CopyFault fault = CopyFault::kNone;
  auto r = runCopyPipeline(**kit, big, &fault);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(fault, CopyFault::kInternal);
}

INSTANTIATE_TEST_SUITE_P(Engines, CopyPipelineTest,
                         ::testing::Values(IoEngineKind::kUring, IoEngineKind::kSync),
                         [](const auto& info) {
                           return std::string(ioEngineKindName(info.param));
                         });

}  // namespace
}  // namespace hotshard
