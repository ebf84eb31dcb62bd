// The peer protocol, version 1: how one host asks another for an object and
// gets its bytes. Versioned, length-prefixed binary frames over any Channel
// (peer/transport.h); every integer big-endian (network order).
//
// Frame header (12 bytes), then `length` payload bytes:
//
//   offset  size  field
//   0       4     magic    0x48535057 ("HSPW")
//   4       2     version  1 (a receiver refuses any other: kProtocol)
//   6       1     type     FrameType below
//   7       1     flags    0 (reserved; non-zero: kProtocol)
//   8       4     length   payload bytes, <= kMaxFramePayload (64 KiB)
//
// Payloads (a payload whose length does not match its fields: kProtocol):
//
//   type  name       dir   payload
//   1     HELLO      c->s  client_nonce[32]
//   2     CHALLENGE  s->c  server_nonce[32] server_proof[32]
//   3     AUTH       c->s  client_proof[32]
//   4     AUTH_OK    s->c  (empty)
//   5     FETCH      c->s  size u64, mtime_ns i64, ns_len u16, path_len u16, ns, relpath
//   6     OK         s->c  size u64, mtime_ns i64, xxh3 u64; then exactly `size`
//                          raw body bytes follow, outside any frame
//   7     ERR        s->c  code u16 (WireError), msg_len u16, message (<= 1024 bytes)
//
// A connection: HELLO, CHALLENGE, AUTH, AUTH_OK (peer/auth.h), then any
// number of FETCH, each answered by one OK + body or one ERR. Names: ns is
// 1..255 bytes, relpath 1..4096 bytes (PATH_MAX), relative ("a/b", no leading
// '/', no "." or ".." component, no NUL); a FETCH that breaks these is
// answered ERR protocol and the connection goes on (its frame boundary is
// known). A bad header, an unexpected frame type or an oversized length ends
// the connection: framing is lost. Parsing never trusts a length before
// checking it against these bounds.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/result.h"
#include "peer/peer.h"
#include "peer/transport.h"

namespace hotshard::peer {

inline constexpr uint32_t kProtocolMagic = 0x48535057;  // "HSPW"
inline constexpr uint16_t kProtocolVersion = 1;
inline constexpr size_t kFrameHeaderBytes = 12;
inline constexpr size_t kMaxFramePayload = 64 * 1024;
inline constexpr size_t kMaxNamespaceBytes = 255;
inline constexpr size_t kMaxRelpathBytes = 4096;
inline constexpr size_t kMaxErrorMessageBytes = 1024;
inline constexpr size_t kFetchFixedBytes = 8 + 8 + 2 + 2;
inline constexpr size_t kOkBytes = 8 + 8 + 8;

enum class FrameType : uint8_t {
  kHello = 1,
  kChallenge = 2,
  kAuth = 3,
  kAuthOk = 4,
  kFetch = 5,
  kOk = 6,
  kErr = 7,
};
const char* frameTypeName(FrameType type);

// ERR codes on the wire; each maps to one Errc both ways (unknown: kProtocol).
enum class WireError : uint16_t {
  kNotFound = 1,
  kStale = 2,
  kBusy = 3,
  kIo = 4,
  kProtocol = 5,
  kInternal = 6,
};

struct FrameHeader {
  FrameType type = FrameType::kHello;
  uint32_t length = 0;
};

struct Frame {
  FrameType type = FrameType::kHello;
  std::string payload;
};

// Header + payload. The payload must be <= kMaxFramePayload (checked: callers
// build payloads from bounded fields).
std::string encodeFrame(FrameType type, std::string_view payload);
// Errors: kProtocol (magic, version, flags, unknown type, length > 64 KiB).
Result<FrameHeader> decodeFrameHeader(const uint8_t (&bytes)[kFrameHeaderBytes]);

// Errors of decode*: kProtocol, with what was wrong.
std::string encodeFetch(const ObjectRequest& request);
Result<ObjectRequest> decodeFetch(std::string_view payload);
// Checks the bounds and the shape of ns and relpath (table above). Errors: kProtocol.
Status validateRequest(const ObjectRequest& request);
std::string encodeOk(const ObjectMeta& meta);
Result<ObjectMeta> decodeOk(std::string_view payload);
// An error becomes ERR{code, message}: kNotFound, kStale, kBusy, kProtocol
// keep their code, kInternal stays internal, everything else is io; the
// message is cut to kMaxErrorMessageBytes.
std::string encodeErr(const Error& error);
// The error the peer reported ("peer: MESSAGE") with its code; a malformed
// payload or an unknown code is itself a kProtocol error.
Error decodeErr(std::string_view payload);

// One frame, whole, on `channel`. Errors: kIo.
Status sendFrame(Channel& channel, FrameType type, std::string_view payload, Deadline deadline);
// The next frame, header checked before the payload is read. Errors: kIo
// (channel), kProtocol (header).
Result<Frame> recvFrame(Channel& channel, Deadline deadline);

}  // namespace hotshard::peer
