// The peer protocol's frames and bounds, the cluster token file, the
// authentication proofs.
#include "peer/protocol.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>

#include "peer/auth.h"
#include "peer/token.h"
#include "tests/peer/peer_test_util.h"

namespace hotshard::peer {
namespace {

using testing::TempDir;

FrameHeader headerOf(const std::string& frame, Errc* error = nullptr) {
  uint8_t raw[kFrameHeaderBytes];
  std::memcpy(raw, frame.data(), kFrameHeaderBytes);
  auto h = decodeFrameHeader(raw);
  if (error != nullptr) *error = h.ok() ? Errc::kInternal : h.error().code;
  return h.ok() ? *h : FrameHeader{};
}

TEST(PeerProtocol, FrameHeaderIsTheDocumentedLayout) {
  std::string frame = encodeFrame(FrameType::kFetch, "abc");
  ASSERT_EQ(frame.size(), kFrameHeaderBytes + 3);
  const uint8_t want[] = {'H', 'S', 'P', 'W', 0, 1, 5, 0, 0, 0, 0, 3, 'a', 'b', 'c'};
  EXPECT_EQ(0, std::memcmp(frame.data(), want, sizeof want));
  FrameHeader h = headerOf(frame);
  EXPECT_EQ(h.type, FrameType::kFetch);
  EXPECT_EQ(h.length, 3u);
}

TEST(PeerProtocol, BadHeadersAreProtocolErrors) {
  std::string good = encodeFrame(FrameType::kHello, std::string(32, 'n'));
  auto expectBad = [&](size_t at, uint8_t value) {
    std::string f = good;
    f[at] = static_cast<char>(value);
    Errc code;
    headerOf(f, &code);
    EXPECT_EQ(code, Errc::kProtocol) << "byte " << at << " = " << int(value);
  };
  expectBad(0, 'X');  // magic
  expectBad(5, 2);    // version
  expectBad(6, 0);    // type 0
  expectBad(6, 8);    // unknown type
  expectBad(7, 1);    // reserved flags
  expectBad(9, 1);    // length 64 KiB * 4
  std::string max = good;
  max[8] = 0, max[9] = 1, max[10] = 0, max[11] = 0;  // exactly 64 KiB: allowed
  Errc code;
  EXPECT_EQ(headerOf(max, &code).length, kMaxFramePayload);
  max[11] = 1;  // 64 KiB + 1
  headerOf(max, &code);
  EXPECT_EQ(code, Errc::kProtocol);
}

TEST(PeerProtocol, FetchRoundTripsAndChecksItsNames) {
  ObjectRequest req{"imagenet", "train/shard-0042.tar", 5 << 20, -17};
  auto back = decodeFetch(encodeFetch(req));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->ns, req.ns);
  EXPECT_EQ(back->relpath, req.relpath);
  EXPECT_EQ(back->size, req.size);
  EXPECT_EQ(back->mtime_ns, req.mtime_ns);

  ObjectRequest longest{"ds", std::string(kMaxRelpathBytes, 'a'), 1, 1};
  EXPECT_TRUE(decodeFetch(encodeFetch(longest)).ok());
  for (std::string bad : {std::string(kMaxRelpathBytes + 1, 'a'), std::string("/etc/passwd"),
                          std::string("a/../b"), std::string(".."), std::string("a//b"),
                          std::string("a/"), std::string("a\0b", 3), std::string("")}) {
    ObjectRequest r{"ds", bad, 1, 1};
    auto d = decodeFetch(encodeFetch(r));
    ASSERT_FALSE(d.ok()) << bad;
    EXPECT_EQ(d.error().code, Errc::kProtocol) << bad;
  }
  EXPECT_FALSE(decodeFetch(encodeFetch(ObjectRequest{"", "a", 1, 1})).ok());
  EXPECT_FALSE(decodeFetch(encodeFetch(ObjectRequest{std::string(256, 'n'), "a", 1, 1})).ok());
}

TEST(PeerProtocol, FetchLengthsAreNeverTrusted) {
  std::string p = encodeFetch(ObjectRequest{"ds", "a/b", 1, 1});
  for (size_t cut = 0; cut < p.size(); ++cut)
    EXPECT_EQ(decodeFetch(p.substr(0, cut)).error().code, Errc::kProtocol) << cut;
  EXPECT_EQ(decodeFetch(p + "x").error().code, Errc::kProtocol);
  std::string huge = p;
  huge[18] = '\xff', huge[19] = '\xff';  // path_len 65535
  EXPECT_EQ(decodeFetch(huge).error().code, Errc::kProtocol);
}

TEST(PeerProtocol, OkAndErrRoundTrip) {
  ObjectMeta meta{12345, 678, 0xdeadbeefcafef00dULL};
  auto back = decodeOk(encodeOk(meta));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->size, meta.size);
  EXPECT_EQ(back->mtime_ns, meta.mtime_ns);
  EXPECT_EQ(back->xxh3, meta.xxh3);
  EXPECT_EQ(decodeOk(encodeOk(meta).substr(1)).error().code, Errc::kProtocol);

  for (Errc code :
       {Errc::kNotFound, Errc::kStale, Errc::kBusy, Errc::kIo, Errc::kProtocol, Errc::kInternal}) {
    Error e = decodeErr(encodeErr(makeError(code, "why")));
    EXPECT_EQ(e.code, code);
    EXPECT_EQ(e.message, "peer: why");
  }
  EXPECT_EQ(decodeErr(encodeErr(makeError(Errc::kNoSpace, "x"))).code, Errc::kIo);
  EXPECT_EQ(decodeErr(encodeErr(makeError(Errc::kIo, std::string(5000, 'm')))).message.size(),
            6 + kMaxErrorMessageBytes);
  std::string unknown = encodeErr(makeError(Errc::kBusy, "x"));
  unknown[1] = 99;
  EXPECT_EQ(decodeErr(unknown).code, Errc::kProtocol);
  EXPECT_EQ(decodeErr(encodeErr(makeError(Errc::kBusy, "xyz")).substr(0, 5)).code, Errc::kProtocol);
}

TEST(PeerAuth, ProofIsHmacSha256OverLabelAndBothNonces) {
  Nonce cn{}, sn{};
  for (size_t i = 0; i < 32; ++i)
    cn[i] = static_cast<uint8_t>(i), sn[i] = static_cast<uint8_t>(32 + i);
  auto hex = [](const Proof& p) {
    std::string s;
    char b[3];
    for (uint8_t c : p) std::snprintf(b, sizeof b, "%02x", c), s += b;
    return s;
  };
  // Known answers from Python: hmac.new(b'Jefe', label + cn + sn, sha256).
  EXPECT_EQ(hex(authProof("Jefe", AuthRole::kServer, cn, sn)),
            "c25f05521b225759426e8b032b7def89ccbac11813ba7a638b26d70a1888f555");
  EXPECT_EQ(hex(authProof("Jefe", AuthRole::kClient, cn, sn)),
            "156b9fe291c592b4b2c960439e446850034da8ce31fd36ac3bb423352effb582");
  EXPECT_NE(authProof("Jefe", AuthRole::kClient, sn, cn),
            authProof("Jefe", AuthRole::kClient, cn, sn));
}

class ClusterToken : public ::testing::Test {
 protected:
  std::string write(const std::string& content, mode_t mode) {
    std::string path = dir_.path() + "/token" + std::to_string(n_++);
    ::hotshard::testing::writeFile(path, content);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  TempDir dir_;
  int n_ = 0;
};

TEST_F(ClusterToken, ReadsAnOwnerOnlyFileAndTrimsOneNewline) {
  auto t = readClusterToken(write("s3cret\n", 0600));
  ASSERT_TRUE(t.ok()) << t.error().message;
  EXPECT_EQ(*t, "s3cret");
  EXPECT_EQ(*readClusterToken(write("s3cret\r\n", 0400)), "s3cret");
  EXPECT_EQ(*readClusterToken(write("two\n\n", 0600)), "two\n");
}

TEST_F(ClusterToken, RefusesFilesOthersCanReadOrThatAreNotOurs) {
  EXPECT_EQ(readClusterToken(write("s3cret", 0640)).error().code, Errc::kPermission);
  EXPECT_EQ(readClusterToken(write("s3cret", 0604)).error().code, Errc::kPermission);
  EXPECT_EQ(readClusterToken(write("s3cret", 0620)).error().code, Errc::kPermission);
  EXPECT_EQ(readClusterToken(dir_.path()).error().code, Errc::kPermission);  // a directory
  std::string theirs = write("s3cret", 0600);
  if (::geteuid() == 0) {
    ASSERT_EQ(::chown(theirs.c_str(), 65534, 65534), 0);
    EXPECT_EQ(readClusterToken(theirs).error().code, Errc::kPermission);
  }
  std::string link = dir_.path() + "/link";
  ASSERT_EQ(::symlink(write("s3cret", 0600).c_str(), link.c_str()), 0);
  EXPECT_FALSE(readClusterToken(link).ok());  // O_NOFOLLOW: ELOOP
}

TEST_F(ClusterToken, RefusesEmptyHugeAndMissingFiles) {
  EXPECT_EQ(readClusterToken(write("", 0600)).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(readClusterToken(write("\n", 0600)).error().code, Errc::kInvalidArgument);
  EXPECT_EQ(readClusterToken(write(std::string(kMaxTokenBytes + 1, 't'), 0600)).error().code,
            Errc::kInvalidArgument);
  EXPECT_TRUE(readClusterToken(write(std::string(kMaxTokenBytes, 't'), 0600)).ok());
  EXPECT_EQ(readClusterToken(dir_.path() + "/none").error().code, Errc::kNotFound);
}

}  // namespace
}  // namespace hotshard::peer
