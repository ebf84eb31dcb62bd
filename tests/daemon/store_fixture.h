// Shared helpers for the cache store, promoter, io engine and verify tests:
// a temporary remote directory and cache directory, deterministic file
// contents, and tmpfs mounts that are always taken down.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "daemon/cache_store.h"
#include "daemon/promoter.h"
#include "tests/test_util.h"

namespace hotshard::testing {

inline std::string randomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, 8);
  }
  for (; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

inline std::string readFd(int fd) {
  std::string out;
  char buf[1 << 16];
  off_t off = 0;
  for (;;) {
    ssize_t n = ::pread(fd, buf, sizeof buf, off);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    off += n;
  }
  return out;
}

inline size_t countEntries(const std::string& dir) {
  size_t n = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}

inline Validator validatorOfPath(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return validatorOf(st);
}

// remote/ and cache/ under a fresh temporary directory. Subclasses may mount
// tmpfs somewhere below; TearDown unmounts them, even after a failure.
class StoreFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hotshard-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
    remote_ = root_ + "/remote";
    cache_ = root_ + "/cache";
    std::filesystem::create_directories(remote_);
    remote_fd_ = ::open(remote_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(remote_fd_, 0);
  }

  void TearDown() override {
    promoter_.reset();
    store_.reset();
    for (auto it = mounts_.rbegin(); it != mounts_.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    if (remote_fd_ >= 0) ::close(remote_fd_);
    std::error_code ec;
    std::filesystem::remove_all(root_, ec);
  }

  // Mounts a tmpfs of `size` (e.g. "8m") on dir, remembered for TearDown.
  void mountTmpfs(const std::string& dir, const std::string& size) {
    std::filesystem::create_directories(dir);
    std::string opts = "size=" + size;
    ASSERT_EQ(::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()), 0)
        << "mount tmpfs on " << dir << ": " << std::strerror(errno);
    mounts_.push_back(dir);
  }

  CacheStoreOptions storeOptions(uint64_t capacity = 1ull << 30) const {
    return CacheStoreOptions{
        .dir = cache_, .remote_id = "test-remote@1", .capacity_bytes = capacity};
  }

  void openStore(uint64_t capacity = 1ull << 30) {
    store_.reset();
    auto s = CacheStore::open(storeOptions(capacity));
    ASSERT_TRUE(s.ok()) << s.error().message;
    store_ = std::move(s).value();
  }

  PromoterOptions promoterOptions(IoEngineKind kind = IoEngineKind::kUring) const {
    PromoterOptions o;
    o.remote_root_fd = remote_fd_;
    o.io_engine = kind;
    return o;
  }

  void makePromoter(PromoterOptions o) {
    promoter_.reset();
    auto p = Promoter::create(store_.get(), std::move(o));
    ASSERT_TRUE(p.ok()) << p.error().message;
    promoter_ = std::move(p).value();
  }

  // Writes remote/<rel> with `size` deterministic bytes and returns them.
  std::string makeRemote(const std::string& rel, size_t size, uint64_t seed = 1) {
    std::string content = randomBytes(size, seed ^ std::hash<std::string>{}(rel));
    writeFile(remote_ + "/" + rel, content);
    return content;
  }

  // Publishes `content` as rel's copy, as the promoter would.
  Status publishBytes(const std::string& rel, const std::string& content, const Validator& v) {
    ASSIGN_OR_RETURN(auto p, store_->beginPromotion(rel, content.size(), false));
    if (!content.empty() && ::pwrite(p->fd(), content.data(), content.size(), 0) !=
                                static_cast<ssize_t>(content.size())) {
      return lastSysError("pwrite");
    }
    return store_->publish(std::move(p), v, XXH3_64bits(content.data(), content.size()));
  }

  // The cached copy's bytes, or "<error>" when openIfValid refuses.
  std::string cachedBytes(const std::string& rel) {
    auto fd = store_->openIfValid(rel, validatorOfPath(remote_ + "/" + rel));
    if (!fd.ok()) return "<" + fd.error().message + ">";
    std::string out = readFd(*fd);
    ::close(*fd);
    store_->release(rel);
    return out;
  }

  std::string root_, remote_, cache_;
  int remote_fd_ = -1;
  std::vector<std::string> mounts_;
  std::unique_ptr<CacheStore> store_;
  std::unique_ptr<Promoter> promoter_;
};

}  // namespace hotshard::testing
