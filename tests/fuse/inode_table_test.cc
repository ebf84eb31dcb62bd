// fuse/inode_table.h without a mount: lookup counts, hard links, forget,
// retire, and paths under the remote root, over a temporary directory.
#include "fuse/inode_table.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "fuse/passthrough_shim.h"
#include "tests/test_util.h"

namespace hotshard::fuse {
namespace {

namespace fs = std::filesystem;

class InodeTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hotshard-inode-table-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    testing::writeFile(dir_ + "/a/file", "x");
    ASSERT_EQ(::link((dir_ + "/a/file").c_str(), (dir_ + "/hardlink").c_str()), 0);
    root_fd_ = ::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(root_fd_, 0);
  }
  void TearDown() override {
    if (root_fd_ >= 0) ::close(root_fd_);
    fs::remove_all(dir_);
  }
  // What FileSystem::doLookup does before the table: an O_PATH fd and its stat.
  Inode& lookUp(InodeTable& table, Inode& parent, const char* name) {
    int fd = ::openat(parent.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    EXPECT_GE(fd, 0) << name;
    struct stat st {};
    ::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    return table.addLookup(fd, st);
  }

  std::string dir_;
  int root_fd_ = -1;
  PassthroughShim shim_{false};
};

TEST_F(InodeTableTest, LookupsCountAndTheLastForgetFrees) {
  InodeTable table(root_fd_, &shim_);
  EXPECT_EQ(table.size(), 1u);  // the root
  Inode& a = lookUp(table, table.root(), "a");
  Inode& again = lookUp(table, table.root(), "a");
  EXPECT_EQ(&a, &again);
  EXPECT_EQ(a.nlookup, 2u);
  EXPECT_EQ(a.type, static_cast<mode_t>(S_IFDIR));
  EXPECT_EQ(table.size(), 2u);
  EXPECT_EQ(&table.inodeOf(table.idOf(a)), &a);
  table.forget(a, 1);
  EXPECT_EQ(table.size(), 2u);
  table.forget(a, 1);
  EXPECT_EQ(table.size(), 1u);
}

TEST_F(InodeTableTest, AHardLinkIsTheSameInodeAndDotDotAtTheTopIsTheRoot) {
  InodeTable table(root_fd_, &shim_);
  Inode& a = lookUp(table, table.root(), "a");
  Inode& file = lookUp(table, a, "file");
  Inode& link = lookUp(table, table.root(), "hardlink");
  EXPECT_EQ(&file, &link);
  EXPECT_EQ(file.nlookup, 2u);
  Inode& top = lookUp(table, a, "..");
  EXPECT_TRUE(table.isRoot(top));
  EXPECT_EQ(table.idOf(top), static_cast<fuse_ino_t>(FUSE_ROOT_ID));
  table.forget(top, 5);  // the root is never forgotten
  EXPECT_EQ(&table.inodeOf(FUSE_ROOT_ID), &table.root());
}

TEST_F(InodeTableTest, ARetiredInodeLeavesTheTableAndLookupsMakeANewOne) {
  InodeTable table(root_fd_, &shim_);
  Inode& a = lookUp(table, table.root(), "a");
  Inode& old = lookUp(table, a, "file");
  table.retire(old);
  EXPECT_TRUE(old.retired);
  Inode& fresh = lookUp(table, a, "file");
  EXPECT_NE(&old, &fresh);
  EXPECT_NE(old.generation, fresh.generation);
  EXPECT_EQ(table.size(), 4u);  // root, a, old (retired), fresh
  table.forget(old, 1);          // freed on its last forget
  EXPECT_EQ(table.size(), 3u);
}

// Idle backings (kept after the last release): at most `cap`, the least
// recently idled closed first; closed on forget, on retire, and when the store
// drops the copy they are.
TEST_F(InodeTableTest, IdleBackingsAreBoundedAndClosedWhenTheirCopyGoes) {
  InodeTable table(root_fd_, &shim_);
  std::vector<Inode*> files;
  for (const char* name : {"f0", "f1", "f2", "f3"}) {
    testing::writeFile(dir_ + "/" + name, name);
    files.push_back(&lookUp(table, table.root(), name));
  }
  auto goIdle = [&](Inode& inode, const char* cached_rel) {
    {
      std::lock_guard lock(inode.mu);
      inode.backing_fd = ::open((dir_ + "/f0").c_str(), O_RDONLY | O_CLOEXEC);
      inode.backing_is_cache = cached_rel != nullptr;
      inode.cached_rel = cached_rel ? cached_rel : "";
    }
    table.noteIdle(inode, 2);
  };
  auto idle = [](Inode& inode) {
    std::lock_guard lock(inode.mu);
    return hasIdleBacking(inode);
  };
  goIdle(*files[0], nullptr);
  goIdle(*files[1], "f1");
  EXPECT_EQ(table.idleCount(), 2u);
  goIdle(*files[2], "f2");  // over the cap: f0, the least recently idled, closes
  EXPECT_FALSE(idle(*files[0]));
  EXPECT_TRUE(idle(*files[1]));
  EXPECT_TRUE(idle(*files[2]));
  EXPECT_EQ(files[0]->backing_fd, -1);

  table.closeIdleCopies({"f2", "elsewhere"});  // the store dropped f2's copy
  EXPECT_FALSE(idle(*files[2]));
  EXPECT_TRUE(idle(*files[1]));
  EXPECT_EQ(table.idleCount(), 1u);

  {
    std::lock_guard lock(files[1]->mu);
    files[1]->nopen = 1;  // open again: not closed by the cap nor by a drop
  }
  table.closeIdleCopies({"f1"});
  goIdle(*files[3], nullptr);
  goIdle(*files[0], nullptr);
  EXPECT_GE(files[1]->backing_fd, 0);
  {
    std::lock_guard lock(files[1]->mu);
    files[1]->nopen = 0;
    ::close(files[1]->backing_fd);
    files[1]->backing_fd = -1;
  }

  table.retire(*files[3]);
  goIdle(*files[3], nullptr);  // retired: no open reaches it again
  EXPECT_FALSE(idle(*files[3]));
  table.forget(*files[0], 1);  // frees it, idle backing and all, and unlists it
  EXPECT_EQ(table.idleCount(), 0u);
  goIdle(*files[2], nullptr);
  table.noteIdle(*files[2], 0);  // cap 0: none kept
  EXPECT_FALSE(idle(*files[2]));
}

TEST_F(InodeTableTest, RelPathIsUnderTheRemoteRootAndEmptyOnceDeleted) {
  InodeTable table(root_fd_, &shim_);
  Inode& a = lookUp(table, table.root(), "a");
  Inode& file = lookUp(table, a, "file");
  EXPECT_EQ(table.relPathOf(table.root()), "");
  EXPECT_EQ(table.relPathOf(a), "a");
  EXPECT_EQ(table.relPathOf(file), "a/file");
  fs::rename(dir_ + "/a/file", dir_ + "/a/renamed");
  EXPECT_EQ(table.relPathOf(file), "a/renamed");
  fs::remove(dir_ + "/a/renamed");
  fs::remove(dir_ + "/hardlink");
  EXPECT_EQ(table.relPathOf(file), "");
}

}  // namespace
}  // namespace hotshard::fuse
