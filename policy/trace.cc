#include "policy/trace.h"

#include <bit>
#include <charconv>
#include <cstring>
#include <istream>
#include <limits>
#include <ostream>

#include "policy/detail.h"

namespace hotshard::policy {
namespace {

static_assert(std::endian::native == std::endian::little,
              "trace formats are little-endian; add byte swaps");

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void store(char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

constexpr std::uint64_t kUnknownCount = std::numeric_limits<std::uint64_t>::max();

// Fixed-size binary records read in batches.
class BinaryReader : public TraceReader {
 public:
  BinaryReader(std::istream& in, std::string source, std::size_t header_size,
               std::size_t record_size)
      : in_(in), source_(std::move(source)), header_size_(header_size), record_size_(record_size) {}

  Status rewind() override {
    in_.clear();
    in_.seekg(0);
    if (!in_) return error_ = makeError(Errc::kIo, source_ + ": cannot rewind the input");
    index_ = 0, pos_ = 0, end_ = 0, eof_ = false, started_ = false;
    error_ = {};
    return {};
  }

 protected:
  // Reads the header on first use; returns false on error.
  virtual bool readHeader() { return true; }
  virtual void decode(const char* record, Request& out) = 0;
  virtual std::uint64_t expectedCount() const { return kUnknownCount; }

  bool fail(std::string message) {
    error_ = makeError(Errc::kCorrupt, source_ + ": " + message);
    return false;
  }

  bool nextRecord(Request& out) {
    if (!started_) {
      started_ = true;
      if (!readHeader()) return false;
    }
    if (pos_ == end_ && !fill()) return false;
    decode(buffer_.data() + pos_, out);
    pos_ += record_size_;
    ++index_;
    return true;
  }

  std::istream& in_;
  std::string source_;
  std::size_t header_size_;
  std::size_t record_size_;
  std::uint64_t index_ = 0;

 private:
  bool fill() {
    if (eof_) return finishAtEnd();
    buffer_.resize(record_size_ * 4096);
    in_.read(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
    auto got = static_cast<std::size_t>(in_.gcount());
    if (got < buffer_.size()) eof_ = true;
    std::size_t whole = got - got % record_size_;
    if (got % record_size_ != 0 && whole == 0) {
      return fail("truncated trace: record " + std::to_string(index_) + " has " +
                  std::to_string(got) + " of " + std::to_string(record_size_) + " bytes");
    }
    if (got % record_size_ != 0) {
      // Serve the whole records first; the partial tail is reported on the next fill.
      partial_tail_ = got - whole;
    }
    pos_ = 0;
    end_ = whole;
    if (end_ == 0) return finishAtEnd();
    return true;
  }
  bool finishAtEnd() {
    if (partial_tail_ != 0) {
      auto tail = partial_tail_;
      partial_tail_ = 0;
      return fail("truncated trace: record " + std::to_string(index_) + " has " +
                  std::to_string(tail) + " of " + std::to_string(record_size_) + " bytes");
    }
    std::uint64_t expected = expectedCount();
    if (expected != kUnknownCount && index_ != expected) {
      return fail("truncated trace: header says " + std::to_string(expected) + " records, found " +
                  std::to_string(index_));
    }
    return false;
  }

  std::vector<char> buffer_;
  std::size_t pos_ = 0, end_ = 0, partial_tail_ = 0;
  bool eof_ = false;
  bool started_ = false;
};

class NativeReader final : public BinaryReader {
 public:
  NativeReader(std::istream& in, std::string source)
      : BinaryReader(in, std::move(source), kNativeHeaderSize, kNativeRecordSize) {}
  bool next(Request& out) override { return nextRecord(out); }

 private:
  bool readHeader() override {
    char h[kNativeHeaderSize];
    in_.read(h, sizeof h);
    if (in_.gcount() != static_cast<std::streamsize>(sizeof h)) {
      return fail("not a hotshard native trace: shorter than its 32-byte header");
    }
    if (std::memcmp(h, kNativeMagic, sizeof kNativeMagic) != 0) {
      return fail("not a hotshard native trace: bad magic (expected HSTRACE1)");
    }
    auto version = load<std::uint32_t>(h + 8);
    auto record_size = load<std::uint32_t>(h + 12);
    if (version != kNativeVersion)
      return fail("unsupported native trace version " + std::to_string(version));
    if (record_size != kNativeRecordSize)
      return fail("unsupported native record size " + std::to_string(record_size));
    count_ = load<std::uint64_t>(h + 16);
    return true;
  }
  void decode(const char* r, Request& out) override {
    out.time_ns = load<std::uint64_t>(r);
    out.id = load<std::uint64_t>(r + 8);
    out.size = load<std::uint64_t>(r + 16);
    out.offset = load<std::uint64_t>(r + 24);
    out.bytes_read = load<std::uint64_t>(r + 32);
    out.bytes_missed = load<std::uint64_t>(r + 40);
    out.flags = load<std::uint32_t>(r + 48);
    out.dataset = load<std::uint32_t>(r + 52);
  }
  std::uint64_t expectedCount() const override { return count_; }
  std::uint64_t count_ = kUnknownCount;
};

class OracleReader final : public BinaryReader {
 public:
  OracleReader(std::istream& in, std::string source)
      : BinaryReader(in, std::move(source), 0, kOracleRecordSize) {}
  bool next(Request& out) override { return nextRecord(out); }

 private:
  void decode(const char* r, Request& out) override {
    out.time_ns = static_cast<std::uint64_t>(load<std::uint32_t>(r)) * 1000000000ull;
    out.id = load<std::uint64_t>(r + 4);
    out.size = load<std::uint32_t>(r + 12);
    out.offset = 0;
    out.bytes_read = out.size;
    out.bytes_missed = out.size;
    out.flags = 0;
    out.dataset = 0;
  }
};

class CsvReader final : public TraceReader {
 public:
  CsvReader(std::istream& in, std::string source) : in_(in), source_(std::move(source)) {}

  bool next(Request& out) override {
    while (std::getline(in_, line_)) {
      ++line_no_;
      std::string_view line = line_;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      std::size_t first = line.find_first_not_of(" \t");
      if (first == std::string_view::npos || line[first] == '#') continue;
      if (!seen_data_ && line.substr(first).starts_with("time")) {
        seen_data_ = true;  // header line
        continue;
      }
      seen_data_ = true;
      return parse(line, out);
    }
    if (in_.bad())
      error_ =
          makeError(Errc::kIo, source_ + ": read error after line " + std::to_string(line_no_));
    return false;
  }

  Status rewind() override {
    in_.clear();
    in_.seekg(0);
    if (!in_) return error_ = makeError(Errc::kIo, source_ + ": cannot rewind the input");
    line_no_ = 0;
    seen_data_ = false;
    error_ = {};
    return {};
  }

 private:
  static constexpr const char* kFields[] = {"time_ns",    "object_id",    "object_size", "offset",
                                            "bytes_read", "bytes_missed", "flags",
                                            "dataset"};

  bool fail(std::string message) {
    error_ = makeError(Errc::kCorrupt, source_ + ":" + std::to_string(line_no_) + ": " + message);
    return false;
  }

  bool parse(std::string_view line, Request& out) {
    std::uint64_t v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int n = 0;
    while (true) {
      auto comma = line.find(',');
      std::string_view field = line.substr(0, comma);
      while (!field.empty() && (field.front() == ' ' || field.front() == '\t'))
        field.remove_prefix(1);
      while (!field.empty() && (field.back() == ' ' || field.back() == '\t'))
        field.remove_suffix(1);
      if (n == 8) return fail("more than 8 fields (" + std::string(kFieldList) + ")");
      auto [ptr, ec] = std::from_chars(field.data(), field.data() + field.size(), v[n]);
      if (field.empty() || ec != std::errc() || ptr != field.data() + field.size()) {
        return fail(std::string("field ") + kFields[n] + ": not a non-negative integer: '" +
                    std::string(field) + "'");
      }
      ++n;
      if (comma == std::string_view::npos) break;
      line.remove_prefix(comma + 1);
    }
    if (n < 3)
      return fail("expected at least 3 fields (" + std::string(kFieldList) + "), got " +
                  std::to_string(n));
    out.time_ns = v[0];
    out.id = v[1];
    out.size = v[2];
    out.offset = n > 3 ? v[3] : 0;
    out.bytes_read = n > 4 ? v[4] : out.size;
    out.bytes_missed = n > 5 ? v[5] : out.bytes_read;
    out.flags = n > 6 ? static_cast<std::uint32_t>(v[6]) : 0;
    if (n > 6 && v[6] > std::numeric_limits<std::uint32_t>::max())
      return fail("field flags: larger than 32 bits");
    out.dataset = n > 7 ? static_cast<std::uint32_t>(v[7]) : 0;
    if (n > 7 && v[7] > std::numeric_limits<std::uint32_t>::max())
      return fail("field dataset: larger than 32 bits");
    if (out.bytes_missed > out.bytes_read) return fail("bytes_missed is larger than bytes_read");
    return true;
  }

  static constexpr const char* kFieldList =
      "time_ns,object_id,object_size[,offset[,bytes_read[,bytes_missed[,flags[,dataset]]]]]";
  std::istream& in_;
  std::string source_;
  std::string line_;
  std::uint64_t line_no_ = 0;
  bool seen_data_ = false;
};

class NativeWriter final : public TraceWriter {
 public:
  explicit NativeWriter(std::ostream& out) : out_(out) {
    start_ = out_.tellp();
    char h[kNativeHeaderSize] = {};
    std::memcpy(h, kNativeMagic, sizeof kNativeMagic);
    store<std::uint32_t>(h + 8, kNativeVersion);
    store<std::uint32_t>(h + 12, kNativeRecordSize);
    store<std::uint64_t>(h + 16, kUnknownCount);
    out_.write(h, sizeof h);
  }
  Status write(const Request& r) override {
    char b[kNativeRecordSize] = {};
    store<std::uint64_t>(b, r.time_ns);
    store<std::uint64_t>(b + 8, r.id);
    store<std::uint64_t>(b + 16, r.size);
    store<std::uint64_t>(b + 24, r.offset);
    store<std::uint64_t>(b + 32, r.bytes_read);
    store<std::uint64_t>(b + 40, r.bytes_missed);
    store<std::uint32_t>(b + 48, r.flags);
    store<std::uint32_t>(b + 52, r.dataset);
    out_.write(b, sizeof b);
    ++count_;
    return out_ ? Status()
                : makeError(Errc::kIo,
                            "write failed after " + std::to_string(count_ - 1) + " records");
  }
  Status finish() override {
    if (start_ != std::streampos(-1)) {
      auto end = out_.tellp();
      out_.seekp(start_ + std::streamoff(16));
      char c[8];
      store<std::uint64_t>(c, count_);
      out_.write(c, sizeof c);
      out_.seekp(end);
    }
    out_.flush();
    return out_ ? Status() : makeError(Errc::kIo, "write failed while finishing the trace");
  }

 private:
  std::ostream& out_;
  std::streampos start_;
  std::uint64_t count_ = 0;
};

class CsvWriter final : public TraceWriter {
 public:
  explicit CsvWriter(std::ostream& out) : out_(out) {
    out_ << "time_ns,object_id,object_size,offset,bytes_read,bytes_missed,flags,dataset\n";
  }
  Status write(const Request& r) override {
    out_ << r.time_ns << ',' << r.id << ',' << r.size << ',' << r.offset << ',' << r.bytes_read
         << ',' << r.bytes_missed << ',' << r.flags << ',' << r.dataset << '\n';
    return out_ ? Status() : makeError(Errc::kIo, "write failed");
  }
  Status finish() override {
    out_.flush();
    return out_ ? Status() : makeError(Errc::kIo, "write failed while finishing the trace");
  }

 private:
  std::ostream& out_;
};

class OracleWriter final : public TraceWriter {
 public:
  explicit OracleWriter(std::ostream& out) : out_(out) {}
  Status write(const Request& r) override {
    if (r.size > std::numeric_limits<std::uint32_t>::max()) {
      return makeError(Errc::kUnsupported, "oracleGeneral cannot hold object " +
                                               std::to_string(r.id) + " of " +
                                               std::to_string(r.size) + " bytes (32-bit sizes)");
    }
    requests_.push_back(r);
    return {};
  }
  Status finish() override {
    std::vector<std::int64_t> next(requests_.size(), -1);
    detail::IdIndex last;
    for (std::size_t i = requests_.size(); i-- > 0;) {
      detail::Slot s = last.find(requests_[i].id);
      if (s != detail::kNoSlot) {
        next[i] = s;
        last.erase(requests_[i].id);
      }
      last.insert(requests_[i].id, static_cast<detail::Slot>(i));
    }
    for (std::size_t i = 0; i < requests_.size(); ++i) {
      char b[kOracleRecordSize];
      store<std::uint32_t>(b, static_cast<std::uint32_t>(requests_[i].time_ns / 1000000000ull));
      store<std::uint64_t>(b + 4, requests_[i].id);
      store<std::uint32_t>(b + 12, static_cast<std::uint32_t>(requests_[i].size));
      store<std::int64_t>(b + 16, next[i]);
      out_.write(b, sizeof b);
    }
    out_.flush();
    return out_ ? Status() : makeError(Errc::kIo, "write failed");
  }

 private:
  std::ostream& out_;
  std::vector<Request> requests_;
};

class MemoryReader final : public TraceReader {
 public:
  explicit MemoryReader(std::vector<Request> requests) : requests_(std::move(requests)) {}
  bool next(Request& out) override {
    if (pos_ == requests_.size()) return false;
    out = requests_[pos_++];
    return true;
  }
  Status rewind() override {
    pos_ = 0;
    return {};
  }

 private:
  std::vector<Request> requests_;
  std::size_t pos_ = 0;
};

}  // namespace

std::unique_ptr<TraceReader> makeMemoryReader(std::vector<Request> requests) {
  return std::make_unique<MemoryReader>(std::move(requests));
}

std::uint32_t datasetOf(std::string_view path) noexcept {
  while (!path.empty() && path.front() == '/') path.remove_prefix(1);
  auto slash = path.find('/');
  if (slash == std::string_view::npos || slash == 0) return 0;
  std::uint32_t h = 2166136261u;  // FNV-1a, 32 bits (Fowler, Noll, Vo)
  for (char c : path.substr(0, slash)) h = (h ^ static_cast<unsigned char>(c)) * 16777619u;
  return h == 0 ? 1 : h;
}

Result<TraceFormat> parseTraceFormat(std::string_view name) {
  if (name == "native") return TraceFormat::kNative;
  if (name == "csv") return TraceFormat::kCsv;
  if (name == "oracleGeneral") return TraceFormat::kOracleGeneral;
  return makeError(Errc::kInvalidArgument, "unknown trace format '" + std::string(name) +
                                               "' (known: native, csv, oracleGeneral)");
}

std::string_view traceFormatName(TraceFormat format) {
  switch (format) {
    case TraceFormat::kNative:
      return "native";
    case TraceFormat::kCsv:
      return "csv";
    case TraceFormat::kOracleGeneral:
      return "oracleGeneral";
  }
  return "?";
}

std::unique_ptr<TraceReader> makeTraceReader(TraceFormat format, std::istream& in,
                                             std::string source) {
  switch (format) {
    case TraceFormat::kNative:
      return std::make_unique<NativeReader>(in, std::move(source));
    case TraceFormat::kCsv:
      return std::make_unique<CsvReader>(in, std::move(source));
    case TraceFormat::kOracleGeneral:
      return std::make_unique<OracleReader>(in, std::move(source));
  }
  return nullptr;
}

std::unique_ptr<TraceWriter> makeTraceWriter(TraceFormat format, std::ostream& out) {
  switch (format) {
    case TraceFormat::kNative:
      return std::make_unique<NativeWriter>(out);
    case TraceFormat::kCsv:
      return std::make_unique<CsvWriter>(out);
    case TraceFormat::kOracleGeneral:
      return std::make_unique<OracleWriter>(out);
  }
  return nullptr;
}

Result<std::vector<Request>> readAll(TraceReader& reader) {
  std::vector<Request> out;
  Request r;
  while (reader.next(r)) out.push_back(r);
  if (!reader.status()) return reader.status().error();
  return out;
}

Result<TraceStats> scanTrace(TraceReader& reader) {
  TraceStats stats;
  detail::IdIndex seen;
  std::vector<std::uint64_t> sizes;
  Request r;
  while (reader.next(r)) {
    if (!isRead(r.flags)) {
      ++stats.other_records;
      continue;
    }
    ++stats.requests;
    stats.bytes_read += r.bytes_read;
    detail::Slot s = seen.find(r.id);
    if (s == detail::kNoSlot) {
      seen.insert(r.id, static_cast<detail::Slot>(sizes.size()));
      sizes.push_back(r.size);
      stats.first_read_bytes += r.bytes_read;
    } else if (r.size > sizes[s]) {
      sizes[s] = r.size;
    }
  }
  if (!reader.status()) return reader.status().error();
  stats.unique_objects = sizes.size();
  for (auto size : sizes) stats.working_set_bytes += size;
  return stats;
}

}  // namespace hotshard::policy
