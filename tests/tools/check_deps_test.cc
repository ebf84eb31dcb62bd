// tools/check-deps.sh: the floor plan holds on this tree, and an include planted
// against it (up or sideways) is caught and named. tools/check-length.sh: no
// function over 80 lines, and a planted one is caught.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <string>

#include "tests/test_util.h"

namespace hotshard {
namespace {

namespace fs = std::filesystem;

struct ScriptRun {
  int rc = -1;
  std::string output;  // stdout and stderr together
};

ScriptRun runScript(const std::string& command) {
  ScriptRun run;
  FILE* p = ::popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) return run;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) run.output.append(buf.data(), n);
  int status = ::pclose(p);
  run.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return run;
}

ScriptRun checkDeps(const std::string& args) { return runScript("tools/check-deps.sh " + args); }

// A copy of the rooms' sources in a temporary directory, to plant includes in.
class PlantedTree : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("hotshard-deps-" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    for (const char* room : {"base", "policy", "fuse", "bpf", "daemon", "tools"}) {
      fs::copy(room, root_ / room, fs::copy_options::recursive);
    }
  }
  void TearDown() override { fs::remove_all(root_); }

  void plant(const std::string& file, const std::string& include) {
    testing::writeFile((root_ / file).string(), "#pragma once\n#include \"" + include + "\"\n");
  }

  fs::path root_;
};

TEST(CheckDeps, ThisTreeFollowsTheFloorPlan) {
  ScriptRun run = checkDeps("");
  EXPECT_EQ(run.rc, 0) << run.output;
  EXPECT_NE(run.output.find("every include follows the floor plan"), std::string::npos)
      << run.output;
}

TEST_F(PlantedTree, TheCopyPassesBeforeAnythingIsPlanted) {
  ScriptRun run = checkDeps(root_.string());
  EXPECT_EQ(run.rc, 0) << run.output;
}

TEST_F(PlantedTree, AnUpwardIncludeFails) {
  plant("fuse/planted.h", "daemon/config.h");
  ScriptRun run = checkDeps(root_.string());
  EXPECT_EQ(run.rc, 1) << run.output;
  EXPECT_NE(run.output.find("fuse/planted.h:2: fuse -> daemon is not in the floor plan"),
            std::string::npos)
      << run.output;
}

TEST_F(PlantedTree, ASidewaysIncludeFails) {
  plant("bpf/planted.h", "fuse/mount.h");
  ScriptRun run = checkDeps(root_.string());
  EXPECT_EQ(run.rc, 1) << run.output;
  EXPECT_NE(run.output.find("bpf -> fuse"), std::string::npos) << run.output;
}

TEST_F(PlantedTree, ThePureBaseIncludesNoRoom) {
  plant("base/planted.h", "policy/policy.h");
  ScriptRun run = checkDeps(root_.string());
  EXPECT_EQ(run.rc, 1) << run.output;
  EXPECT_NE(run.output.find("base -> policy"), std::string::npos) << run.output;
}

TEST(CheckDeps, GraphListsTheEdgesFoundInTheCode) {
  ScriptRun run = checkDeps("--graph");
  EXPECT_EQ(run.rc, 0) << run.output;
  EXPECT_NE(run.output.find("graph TD"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("  daemon --> fuse\n"), std::string::npos) << run.output;
  // Every edge points down: no room below daemon/ has an edge to it.
  std::istringstream lines(run.output);
  for (std::string line; std::getline(lines, line);) {
    if (line.ends_with("> daemon") || line.ends_with("> tools")) {
      EXPECT_TRUE(line.starts_with("  tools -->") || line.starts_with("  daemon -->")) << line;
    }
  }
}

TEST(CheckLength, NoFunctionInThisTreeIsOverEightyLines) {
  ScriptRun run = runScript("tools/check-length.sh");
  EXPECT_EQ(run.rc, 0) << run.output;
}

TEST_F(PlantedTree, ALongFunctionFailsTheLengthCheck) {
  std::string body = "int planted(int x) {\n";
  for (int i = 0; i < 85; i++) body += "  x += " + std::to_string(i) + ";\n";
  body += "  return x;\n}\n";
  testing::writeFile((root_ / "daemon/planted.cc").string(), body);
  ScriptRun run = runScript("tools/check-length.sh 80 " + root_.string());
  EXPECT_EQ(run.rc, 1) << run.output;
  EXPECT_NE(run.output.find("daemon/planted.cc:1 planted"), std::string::npos) << run.output;
  run = runScript("tools/check-length.sh 90 " + root_.string());
  EXPECT_EQ(run.rc, 0) << run.output;
}

// docs/architecture.md shows the graph the code has: regenerate it with
// `make deps-graph` when an arrow appears or goes.
TEST(CheckDeps, TheDocumentedGraphIsTheCodesGraph) {
  ScriptRun run = checkDeps("--graph");
  ASSERT_EQ(run.rc, 0) << run.output;
  std::string doc = testing::readFile("docs/architecture.md");
  EXPECT_NE(doc.find(run.output), std::string::npos)
      << "docs/architecture.md does not hold the current graph; run 'make deps-graph' and "
         "paste:\n"
      << run.output;
}

}  // namespace
}  // namespace hotshard
