#include "peer/protocol.h"

#include <cstring>

namespace hotshard::peer {
namespace {

void putU16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}
void putU32(std::string& out, uint32_t v) {
  putU16(out, static_cast<uint16_t>(v >> 16));
  putU16(out, static_cast<uint16_t>(v));
}
void putU64(std::string& out, uint64_t v) {
  putU32(out, static_cast<uint32_t>(v >> 32));
  putU32(out, static_cast<uint32_t>(v));
}

// Reads big-endian integers from a bounded view; every read checks what is left.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u16(uint16_t& v) { return take(2, v); }
  bool u32(uint32_t& v) { return take(4, v); }
  bool u64(uint64_t& v) { return take(8, v); }
  bool bytes(size_t n, std::string& out) {
    if (in_.size() - pos_ < n) return false;
    out.assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool done() const { return pos_ == in_.size(); }

 private:
  template <typename T>
  bool take(size_t n, T& v) {
    if (in_.size() - pos_ < n) return false;
    uint64_t acc = 0;
    for (size_t i = 0; i < n; ++i) acc = (acc << 8) | static_cast<uint8_t>(in_[pos_ + i]);
    pos_ += n;
    v = static_cast<T>(acc);
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
};

Error protocolError(std::string what) {
  return makeError(Errc::kProtocol, "peer protocol: " + std::move(what));
}

bool knownType(uint8_t t) { return t >= 1 && t <= 7; }

Status validateRelpath(std::string_view path) {
  if (path.empty() || path.size() > kMaxRelpathBytes)
    return protocolError("relpath length out of 1..4096");
  if (path.find('\0') != std::string_view::npos) return protocolError("relpath holds a NUL byte");
  if (path.front() == '/') return protocolError("relpath is absolute");
  size_t start = 0;
  while (start <= path.size()) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    std::string_view part = path.substr(start, slash - start);
    if (part.empty() || part == "." || part == "..")
      return protocolError("relpath has an empty, '.' or '..' component");
    start = slash + 1;
  }
  return Ok{};
}

}  // namespace

const char* frameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kHello:
      return "HELLO";
    case FrameType::kChallenge:
      return "CHALLENGE";
    case FrameType::kAuth:
      return "AUTH";
    case FrameType::kAuthOk:
      return "AUTH_OK";
    case FrameType::kFetch:
      return "FETCH";
    case FrameType::kOk:
      return "OK";
    case FrameType::kErr:
      return "ERR";
  }
  return "?";
}

std::string encodeFrame(FrameType type, std::string_view payload) {
  std::string out;
  out.reserve(kFrameHeaderBytes + payload.size());
  putU32(out, kProtocolMagic);
  putU16(out, kProtocolVersion);
  out.push_back(static_cast<char>(type));
  out.push_back(0);
  putU32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  return out;
}

Result<FrameHeader> decodeFrameHeader(const uint8_t (&bytes)[kFrameHeaderBytes]) {
  Reader r(std::string_view(reinterpret_cast<const char*>(bytes), kFrameHeaderBytes));
  uint32_t magic = 0, length = 0;
  uint16_t version = 0, type_flags = 0;
  r.u32(magic), r.u16(version), r.u16(type_flags), r.u32(length);
  if (magic != kProtocolMagic) return protocolError("bad magic");
  if (version != kProtocolVersion)
    return protocolError("unsupported version " + std::to_string(version));
  uint8_t type = static_cast<uint8_t>(type_flags >> 8);
  if (!knownType(type)) return protocolError("unknown frame type " + std::to_string(type));
  if ((type_flags & 0xff) != 0) return protocolError("reserved flags set");
  if (length > kMaxFramePayload)
    return protocolError("frame length " + std::to_string(length) + " over 64 KiB");
  return FrameHeader{static_cast<FrameType>(type), length};
}

std::string encodeFetch(const ObjectRequest& request) {
  std::string out;
  putU64(out, request.size);
  putU64(out, static_cast<uint64_t>(request.mtime_ns));
  putU16(out, static_cast<uint16_t>(request.ns.size()));
  putU16(out, static_cast<uint16_t>(request.relpath.size()));
  out.append(request.ns);
  out.append(request.relpath);
  return out;
}

Status validateRequest(const ObjectRequest& request) {
  if (request.ns.empty() || request.ns.size() > kMaxNamespaceBytes)
    return protocolError("namespace length out of 1..255");
  if (request.ns.find('\0') != std::string::npos)
    return protocolError("namespace holds a NUL byte");
  return validateRelpath(request.relpath);
}

Result<ObjectRequest> decodeFetch(std::string_view payload) {
  Reader r(payload);
  ObjectRequest req;
  uint64_t mtime = 0;
  uint16_t ns_len = 0, path_len = 0;
  if (!r.u64(req.size) || !r.u64(mtime) || !r.u16(ns_len) || !r.u16(path_len))
    return protocolError("FETCH shorter than its fixed fields");
  if (ns_len > kMaxNamespaceBytes || path_len > kMaxRelpathBytes)
    return protocolError("FETCH name too long");
  if (payload.size() != kFetchFixedBytes + ns_len + path_len)
    return protocolError("FETCH length does not match its names");
  r.bytes(ns_len, req.ns);
  r.bytes(path_len, req.relpath);
  req.mtime_ns = static_cast<int64_t>(mtime);
  RETURN_IF_ERROR(validateRequest(req));
  return req;
}

std::string encodeOk(const ObjectMeta& meta) {
  std::string out;
  putU64(out, meta.size);
  putU64(out, static_cast<uint64_t>(meta.mtime_ns));
  putU64(out, meta.xxh3);
  return out;
}

Result<ObjectMeta> decodeOk(std::string_view payload) {
  if (payload.size() != kOkBytes) return protocolError("OK payload is not 24 bytes");
  Reader r(payload);
  ObjectMeta meta;
  uint64_t mtime = 0;
  r.u64(meta.size), r.u64(mtime), r.u64(meta.xxh3);
  meta.mtime_ns = static_cast<int64_t>(mtime);
  return meta;
}

std::string encodeErr(const Error& error) {
  WireError code = WireError::kIo;
  switch (error.code) {
    case Errc::kNotFound:
      code = WireError::kNotFound;
      break;
    case Errc::kStale:
      code = WireError::kStale;
      break;
    case Errc::kBusy:
      code = WireError::kBusy;
      break;
    case Errc::kProtocol:
      code = WireError::kProtocol;
      break;
    case Errc::kInternal:
      code = WireError::kInternal;
      break;
    default:
      break;
  }
  std::string_view msg(error.message);
  msg = msg.substr(0, kMaxErrorMessageBytes);
  std::string out;
  putU16(out, static_cast<uint16_t>(code));
  putU16(out, static_cast<uint16_t>(msg.size()));
  out.append(msg);
  return out;
}

Error decodeErr(std::string_view payload) {
  Reader r(payload);
  uint16_t code = 0, len = 0;
  if (!r.u16(code) || !r.u16(len) || len > kMaxErrorMessageBytes || payload.size() != 4u + len)
    return protocolError("malformed ERR");
  std::string msg;
  r.bytes(len, msg);
  Errc errc;
  switch (static_cast<WireError>(code)) {
    case WireError::kNotFound:
      errc = Errc::kNotFound;
      break;
    case WireError::kStale:
      errc = Errc::kStale;
      break;
    case WireError::kBusy:
      errc = Errc::kBusy;
      break;
    case WireError::kIo:
      errc = Errc::kIo;
      break;
    case WireError::kProtocol:
      errc = Errc::kProtocol;
      break;
    case WireError::kInternal:
      errc = Errc::kInternal;
      break;
    default:
      return protocolError("unknown ERR code " + std::to_string(code));
  }
  return makeError(errc, "peer: " + msg);
}

Status sendFrame(Channel& channel, FrameType type, std::string_view payload, Deadline deadline) {
  if (payload.size() > kMaxFramePayload)
    return makeError(Errc::kInternal, "peer frame over 64 KiB");
  std::string frame = encodeFrame(type, payload);
  return channel.sendAll(frame.data(), frame.size(), deadline);
}

Result<Frame> recvFrame(Channel& channel, Deadline deadline) {
  uint8_t raw[kFrameHeaderBytes];
  RETURN_IF_ERROR(recvAll(channel, raw, sizeof raw, deadline));
  ASSIGN_OR_RETURN(FrameHeader header, decodeFrameHeader(raw));
  Frame frame{header.type, std::string(header.length, '\0')};
  if (header.length > 0)
    RETURN_IF_ERROR(recvAll(channel, frame.payload.data(), header.length, deadline));
  return frame;
}

}  // namespace hotshard::peer
