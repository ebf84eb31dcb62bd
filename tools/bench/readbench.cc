// hotshard-readbench: the read patterns `make bench` compares through the mount
// and natively. Prints one JSON object per run.
//
//   hotshard-readbench seq   FILE [--block 1MiB]
//   hotshard-readbench rand  FILE [--block 4KiB] [--ops N] [--seed S]
//   hotshard-readbench whole DIR  [--block 4KiB]        every file under DIR, read whole
//   hotshard-readbench stat  DIR                        stat every file under DIR
//   hotshard-readbench opens DIR  [--read 16KiB] [--passes N]
//                         open(O_RDONLY)+close of every file in DIR, N passes; with
//                         --read, one read of up to that many bytes between them.
//                         Reports us_per_open (wall time per open+close pair).
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "base/units.h"

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "hotshard-readbench: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

uint64_t sizeArg(const char* s) {
  auto bytes = hotshard::parseSize(s);
  if (!bytes.ok() || *bytes == 0) {
    std::fprintf(stderr, "hotshard-readbench: --block: %s\n",
                 bytes.ok() ? "must be more than 0" : bytes.error().message.c_str());
    std::exit(2);
  }
  return *bytes;
}

// The files under dir, subdirectories' too (deep trees: one stat walks every
// component of the path), sorted.
void addFiles(const std::string& dir, std::vector<std::string>& files) {
  DIR* d = ::opendir(dir.c_str());
  if (!d) die("opendir " + dir);
  std::vector<std::string> subdirs;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    (e->d_type == DT_DIR ? subdirs : files).push_back(dir + "/" + e->d_name);
  }
  ::closedir(d);
  for (const auto& sub : subdirs) addFiles(sub, files);
}

std::vector<std::string> listFiles(const std::string& dir) {
  std::vector<std::string> files;
  addFiles(dir, files);
  std::sort(files.begin(), files.end());
  return files;
}

// CPU time (user + system) of this process so far: for loops that never wait
// on a device it is the cost of the reads, whatever else the machine is running.
double cpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

void report(const char* mode, double seconds, double cpu, uint64_t bytes, uint64_t ops) {
  std::printf("{\"mode\":\"%s\",\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"bytes\":%llu,"
              "\"ops\":%llu,\"mib_per_s\":%.2f,\"ops_per_s\":%.1f,\"ops_per_cpu_s\":%.1f}\n",
              mode, seconds, cpu, static_cast<unsigned long long>(bytes),
              static_cast<unsigned long long>(ops), bytes / seconds / (1 << 20), ops / seconds,
              ops / cpu);
}

// open(O_RDONLY) [+ one read of read_bytes] + close of every file in dir, passes times.
void runOpens(const std::string& dir, uint64_t passes, uint64_t read_bytes, std::vector<char>& buf) {
  std::vector<std::string> files = listFiles(dir);
  if (files.empty()) die("no files in " + dir);
  uint64_t bytes = 0, done = 0;
  double c0 = cpuSeconds();
  auto t0 = Clock::now();
  for (uint64_t p = 0; p < passes; p++) {
    for (const auto& f : files) {
      int fd = ::open(f.c_str(), O_RDONLY);
      if (fd < 0) die("open " + f);
      if (read_bytes > 0) {
        ssize_t n = ::read(fd, buf.data(), read_bytes);
        if (n < 0) die("read " + f);
        bytes += n;
      }
      if (::close(fd) < 0) die("close " + f);
      done++;
    }
  }
  double s = std::chrono::duration<double>(Clock::now() - t0).count();
  double cpu = cpuSeconds() - c0;
  std::printf("{\"mode\":\"opens\",\"seconds\":%.6f,\"cpu_seconds\":%.6f,\"bytes\":%llu,"
              "\"ops\":%llu,\"us_per_open\":%.3f,\"cpu_us_per_open\":%.3f}\n",
              s, cpu, static_cast<unsigned long long>(bytes), static_cast<unsigned long long>(done),
              s * 1e6 / done, cpu * 1e6 / done);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr,
                 "usage: hotshard-readbench seq|rand|whole|stat|opens PATH [--block SIZE] [--ops N] "
                 "[--seed S] [--read SIZE] [--passes N]\n");
    return 2;
  }
  std::string mode = argv[1], path = argv[2];
  uint64_t block = mode == "seq" ? 1 << 20 : 4096, ops = 100000, seed = 1;
  uint64_t read_bytes = 0, passes = 1;
  for (int i = 3; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--block") block = sizeArg(argv[i + 1]);
    if (k == "--read") read_bytes = block = sizeArg(argv[i + 1]);
    if (k == "--passes") passes = std::max<uint64_t>(1, std::strtoull(argv[i + 1], nullptr, 10));
    if (k == "--ops") ops = std::strtoull(argv[i + 1], nullptr, 10);
    if (k == "--seed") seed = std::strtoull(argv[i + 1], nullptr, 10);
  }
  std::vector<char> buf(block);

  if (mode == "seq" || mode == "rand") {
    int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) die("open " + path);
    struct stat st;
    ::fstat(fd, &st);
    uint64_t bytes = 0, done = 0;
    double c0 = cpuSeconds();
    auto t0 = Clock::now();
    if (mode == "seq") {
      ssize_t n;
      while ((n = ::read(fd, buf.data(), block)) > 0) {
        bytes += n;
        done++;
      }
      if (n < 0) die("read " + path);
    } else {
      std::mt19937_64 rng(seed);
      uint64_t blocks = st.st_size / block;
      for (; done < ops; done++) {
        off_t off = static_cast<off_t>((rng() % blocks) * block);
        ssize_t n = ::pread(fd, buf.data(), block, off);
        if (n < 0) die("pread " + path);
        bytes += n;
      }
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    double cpu = cpuSeconds() - c0;
    ::close(fd);
    report(mode.c_str(), s, cpu, bytes, done);
  } else if (mode == "whole" || mode == "stat") {
    std::vector<std::string> files = listFiles(path);
    uint64_t bytes = 0;
    double c0 = cpuSeconds();
    auto t0 = Clock::now();
    for (const auto& f : files) {
      if (mode == "stat") {
        struct stat st;
        if (::stat(f.c_str(), &st) < 0) die("stat " + f);
        continue;
      }
      int fd = ::open(f.c_str(), O_RDONLY);
      if (fd < 0) die("open " + f);
      ssize_t n;
      while ((n = ::read(fd, buf.data(), block)) > 0) bytes += n;
      if (n < 0) die("read " + f);
      ::close(fd);
    }
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    report(mode.c_str(), s, cpuSeconds() - c0, bytes, files.size());
  } else if (mode == "opens") {
    runOpens(path, passes, read_bytes, buf);
  } else {
    std::fprintf(stderr, "hotshard-readbench: unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  return 0;
}
