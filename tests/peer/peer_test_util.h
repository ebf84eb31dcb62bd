// Fixtures shared by the peer tests: temp dirs, an ObjectSource over temp
// files, random content and fd helpers.
#pragma once

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>

#include "base/fd.h"
#include "peer/peer.h"
#include "tests/daemon/store_fixture.h"
#include "tests/test_util.h"

namespace hotshard::peer::testing {

using ::hotshard::testing::randomBytes;
using ::hotshard::testing::readFd;

inline constexpr char kToken[] = "correct horse battery staple";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "hs-peer-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// An anonymous file to fetch into (the daemon uses a file in its store's tmp/).
inline UniqueFd tempDest() { return UniqueFd(::memfd_create("hs-peer-dest", MFD_CLOEXEC)); }

inline uint64_t fileSize(int fd) { return static_cast<uint64_t>(::lseek(fd, 0, SEEK_END)); }

// Serves temp files by relpath; each entry may carry a lie or an error.
class FileSource final : public ObjectSource {
 public:
  explicit FileSource(std::string dir) : dir_(std::move(dir)) {}

  // Adds `content` as `relpath` with mtime_ns `mtime`; returns its request.
  ObjectRequest add(const std::string& relpath, const std::string& content,
                    int64_t mtime = 1'700'000'000'123'456'789) {
    std::string path = dir_ + "/" + std::to_string(entries_.size());
    ::hotshard::testing::writeFile(path, content);
    std::lock_guard lock(mu_);
    entries_[relpath] = Entry{
        path, ObjectMeta{content.size(), mtime, XXH3_64bits(content.data(), content.size())}, {}};
    return ObjectRequest{"ds", relpath, content.size(), mtime};
  }
  void setMeta(const std::string& relpath, ObjectMeta meta) {
    std::lock_guard lock(mu_);
    entries_[relpath].meta = meta;
  }
  void setError(const std::string& relpath, Error error) {
    std::lock_guard lock(mu_);
    entries_[relpath].error = std::move(error);
  }
  // Called (outside the lock) at each openForPeer, e.g. to stall.
  void onOpen(std::function<void()> hook) {
    std::lock_guard lock(mu_);
    on_open_ = std::move(hook);
  }
  int opens() {
    std::lock_guard lock(mu_);
    return opens_;
  }

  Result<ServedObject> openForPeer(const ObjectRequest& request) override {
    std::function<void()> hook;
    {
      std::lock_guard lock(mu_);
      opens_++;
      hook = on_open_;
    }
    if (hook) hook();
    std::lock_guard lock(mu_);
    auto it = entries_.find(request.relpath);
    if (request.ns != "ds" || it == entries_.end())
      return makeError(Errc::kNotFound, "no copy of " + request.relpath);
    if (it->second.error) return *it->second.error;
    UniqueFd fd(::open(it->second.path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return lastSysError("open " + it->second.path);
    return ServedObject{std::move(fd), it->second.meta};
  }

 private:
  struct Entry {
    std::string path;
    ObjectMeta meta;
    std::optional<Error> error;
  };
  std::string dir_;
  std::mutex mu_;
  std::map<std::string, Entry> entries_;
  std::function<void()> on_open_;
  int opens_ = 0;
};

// Waits up to `timeout` for `pred`.
inline bool eventually(const std::function<bool()>& pred,
                       std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return pred();
}

}  // namespace hotshard::peer::testing
