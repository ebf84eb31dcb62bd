// fuse/inode_table.h without a mount: lookup counts, hard links, forget,
// retire, paths under the remote root, and the bounded O_PATH fd cache (walks
// that open an inode again, checked to reach the same object), over a
// temporary directory.
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
    auto dir = resolve(table, parent);
    EXPECT_TRUE(dir.ok()) << name;
    int fd = ::openat(dir.ok() ? (*dir)->get() : -1, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    EXPECT_GE(fd, 0) << name;
    struct stat st {};
    ::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    return table.addLookup(fd, st, &parent, name);
  }
  // What FileSystem::pathFd does: the cached fd, or a walk to open it again.
  static Result<PathFd> resolve(InodeTable& table, Inode& inode) {
    PathWalk walk;
    ASSIGN_OR_RETURN(PathFd cached, table.planWalk(inode, &walk));
    if (cached) return cached;
    ASSIGN_OR_RETURN(std::vector<UniqueFd> fds, walkPath(walk));
    return table.installWalk(inode, walk, std::move(fds));
  }
  static struct stat statOfFd(const PathFd& fd) {
    struct stat st {};
    EXPECT_EQ(::fstatat(fd->get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW), 0);
    return st;
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

// A remote file's backing fd is closed through the table's closer (which
// never waits on the remote: RemoteCalls::closeLater), a cache copy's at once.
TEST_F(InodeTableTest, RemoteBackingsCloseThroughTheCloserCopiesAtOnce) {
  InodeTable table(root_fd_, &shim_);
  std::vector<int> handed;
  table.setRemoteFdCloser([&](int fd) {
    handed.push_back(fd);
    ::close(fd);
  });
  testing::writeFile(dir_ + "/r", "r");
  testing::writeFile(dir_ + "/c", "c");
  Inode& remote = lookUp(table, table.root(), "r");
  Inode& copy = lookUp(table, table.root(), "c");
  auto goIdle = [&](Inode& inode, bool is_cache) {
    int fd = ::open((dir_ + "/r").c_str(), O_RDONLY | O_CLOEXEC);
    {
      std::lock_guard lock(inode.mu);
      inode.backing_fd = fd;
      inode.backing_is_cache = is_cache;
      inode.cached_rel = is_cache ? "c" : "";
    }
    table.noteIdle(inode, 0);  // cap 0: closed at once
    return fd;
  };
  int remote_fd = goIdle(remote, false);
  EXPECT_EQ(handed, std::vector<int>{remote_fd});
  EXPECT_EQ(remote.backing_fd, -1);
  goIdle(copy, true);
  EXPECT_EQ(handed.size(), 1u) << "a cache copy went through the remote closer";
  EXPECT_EQ(copy.backing_fd, -1);
  // An open's write-back fd and backing, when the inode is forgotten.
  {
    std::lock_guard lock(remote.mu);
    remote.backing_fd = ::open((dir_ + "/r").c_str(), O_RDONLY | O_CLOEXEC);
    remote.remote_wb_fd = ::open((dir_ + "/r").c_str(), O_RDONLY | O_CLOEXEC);
  }
  int backing = remote.backing_fd, wb = remote.remote_wb_fd;
  table.forget(remote, 1);
  EXPECT_EQ(handed, (std::vector<int>{remote_fd, backing, wb}));
}

TEST_F(InodeTableTest, RelPathFollowsRenamesAndUnlinksThroughTheMount) {
  InodeTable table(root_fd_, &shim_);
  Inode& a = lookUp(table, table.root(), "a");
  Inode& file = lookUp(table, a, "file");
  EXPECT_EQ(table.relPathOf(table.root()), "");
  EXPECT_EQ(table.relPathOf(a), "a");
  EXPECT_EQ(table.relPathOf(file), "a/file");
  fs::rename(dir_ + "/a/file", dir_ + "/a/renamed");
  table.renamed(a, "file", a, "renamed", 0, nullptr);
  EXPECT_EQ(table.relPathOf(file), "a/renamed");
  fs::rename(dir_ + "/a", dir_ + "/b");
  table.renamed(table.root(), "a", table.root(), "b", 0, nullptr);
  EXPECT_EQ(table.relPathOf(file), "b/renamed");
  fs::remove(dir_ + "/b/renamed");
  table.unlinked(a, "renamed", nullptr);
  EXPECT_EQ(table.relPathOf(file), "");
  EXPECT_TRUE(resolve(table, file).ok());  // its fd is kept: the only way back
  // A lookup under another name (the hard link) gives it a name again.
  EXPECT_EQ(&lookUp(table, table.root(), "hardlink"), &file);
  EXPECT_EQ(table.relPathOf(file), "hardlink");
}

TEST_F(InodeTableTest, RenameOverAKnownNameLeavesTheReplacedInodeNamelessWithItsFd) {
  InodeTable table(root_fd_, &shim_, 1);
  testing::writeFile(dir_ + "/x", "x");
  testing::writeFile(dir_ + "/y", "y");
  Inode& x = lookUp(table, table.root(), "x");
  Inode& y = lookUp(table, table.root(), "y");
  auto held = resolve(table, y);
  ASSERT_TRUE(held.ok());
  fs::rename(dir_ + "/x", dir_ + "/y");
  table.renamed(table.root(), "x", table.root(), "y", 0, *held);
  EXPECT_EQ(table.relPathOf(x), "y");
  EXPECT_EQ(table.relPathOf(y), "");
  for (const char* name : {"f0", "f1", "f2"}) {  // cap 1: evicts what it may
    testing::writeFile(dir_ + "/" + name, name);
    lookUp(table, table.root(), name);
  }
  auto fd = resolve(table, y);
  ASSERT_TRUE(fd.ok()) << fd.error().message;
  EXPECT_EQ(statOfFd(*fd).st_ino, y.src_ino);  // the replaced file, unlinked, still reached
  auto xfd = resolve(table, x);
  ASSERT_TRUE(xfd.ok()) << xfd.error().message;
  EXPECT_EQ(statOfFd(*xfd).st_ino, x.src_ino);
}

// At most fd_cap unpinned fds; an inode whose fd was closed is opened again
// from its names, and reaches the same object.
TEST_F(InodeTableTest, FdsAreBoundedAndAClosedOneIsOpenedAgainByItsNames) {
  InodeTable table(root_fd_, &shim_, 4);
  std::vector<Inode*> files;
  for (int d = 0; d < 3; d++) {
    std::string dir = "d" + std::to_string(d);
    fs::create_directories(dir_ + "/" + dir);
    Inode& di = lookUp(table, table.root(), dir.c_str());
    for (int i = 0; i < 10; i++) {
      std::string name = "f" + std::to_string(i);
      testing::writeFile(dir_ + "/" + dir + "/" + name, name);
      files.push_back(&lookUp(table, di, name.c_str()));
      EXPECT_LE(table.pathFdCount(), 1u + 4u);
    }
  }
  EXPECT_EQ(table.size(), 1u + 3u + 30u);
  EXPECT_LE(table.pathFdCount(), 1u + 4u);
  for (Inode* file : files) {
    auto fd = resolve(table, *file);
    ASSERT_TRUE(fd.ok()) << fd.error().message;
    struct stat st = statOfFd(*fd);
    EXPECT_EQ(st.st_ino, file->src_ino);
    EXPECT_EQ(st.st_dev, file->src_dev);
    EXPECT_LE(table.pathFdCount(), 1u + 4u);
  }
  // Pinned (open) fds are kept beyond the cap, and go back under it when unpinned.
  std::vector<PathFd> pins;
  for (int i = 0; i < 6; i++) {
    pins.push_back(*resolve(table, *files[i]));
    table.pinPathFd(*files[i], pins.back());
  }
  for (int i = 10; i < 20; i++) ASSERT_TRUE(resolve(table, *files[i]).ok());
  for (int i = 0; i < 6; i++) EXPECT_EQ(table.cachedPathFd(*files[i]), pins[i]);
  EXPECT_LE(table.pathFdCount(), 1u + 4u + 6u);
  for (int i = 0; i < 6; i++) table.unpinPathFd(*files[i]);
  EXPECT_LE(table.pathFdCount(), 1u + 4u);
}

// A name changed on the remote behind the table: the inode's walk answers
// ESTALE, never another object's fd.
TEST_F(InodeTableTest, AWalkToANameThatLeadsElsewhereIsStale) {
  InodeTable table(root_fd_, &shim_, 1);
  testing::writeFile(dir_ + "/d/one", "one");
  testing::writeFile(dir_ + "/d/two", "two");
  Inode& d = lookUp(table, table.root(), "d");
  Inode& one = lookUp(table, d, "one");
  Inode& two = lookUp(table, d, "two");
  lookUp(table, table.root(), "a");  // cap 1: one's and two's fds are closed
  lookUp(table, table.root(), "hardlink");
  EXPECT_FALSE(table.cachedPathFd(one));
  fs::rename(dir_ + "/d/one", dir_ + "/d/moved");  // one is gone from its name
  fs::rename(dir_ + "/d/two", dir_ + "/d/one");    // and another file has it
  auto fd = resolve(table, one);
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().sys_errno, ESTALE) << fd.error().message;
  auto gone = resolve(table, two);
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().sys_errno, ESTALE) << gone.error().message;
  // A lookup of the new name finds the known object and gives it that name.
  EXPECT_EQ(&lookUp(table, d, "moved"), &one);
  auto again = resolve(table, one);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(statOfFd(*again).st_ino, one.src_ino);
}

}  // namespace
}  // namespace hotshard::fuse
