// fuse/namespace_cache.h: the persistent namespace of the immutable and ttl
// modes, on its own (the mount's use of it: tests/integration/namespace_test.cc).
#include "fuse/namespace_cache.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/clock.h"

namespace hotshard::fuse {
namespace {

namespace fs = std::filesystem;

class FuseNamespaceCache : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hs-ns-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/namespace.mdb";
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::unique_ptr<NamespaceCache> open(const std::string& remote = "/remote",
                                       const std::string& mode = "immutable") {
    auto nc = NamespaceCache::open(
        {.path = path_, .remote_id = remote, .mode = mode, .sync_seconds = 0});
    EXPECT_TRUE(nc.ok()) << nc.error().message;
    return nc.ok() ? std::move(*nc) : nullptr;
  }
  static NamespaceEntry file(off_t size, ino_t ino) {
    NamespaceEntry e;
    e.attr.st_mode = S_IFREG | 0644;
    e.attr.st_size = size;
    e.attr.st_ino = ino;
    e.attr.st_nlink = 1;
    e.attr.st_mtim = {.tv_sec = 1700000000, .tv_nsec = 123456789};
    e.learnt_at = static_cast<double>(wallNs()) * 1e-9;
    return e;
  }
  static struct stat dirAttr(int64_t mtime) {
    struct stat st {};
    st.st_mode = S_IFDIR | 0755;
    st.st_mtim = {.tv_sec = mtime, .tv_nsec = 0};
    st.st_ctim = st.st_mtim;
    return st;
  }
  std::string dir_, path_;
};

TEST_F(FuseNamespaceCache, KeysPutEachDirectorysChildrenTogether) {
  EXPECT_EQ(namespaceKey(""), std::string(1, '\0'));
  EXPECT_EQ(namespaceKey("a"), std::string("\0a", 2));
  EXPECT_EQ(namespaceKey("a/b/c"), std::string("a/b\0c", 5));
}

TEST_F(FuseNamespaceCache, RecordsSurviveAReopenWithEveryField) {
  NamespaceEntry want = file(4096, 77);
  want.attr.st_uid = 1000;
  want.attr.st_gid = 100;
  want.attr.st_blocks = 8;
  want.attr.st_ctim = {.tv_sec = 1700000001, .tv_nsec = 5};
  {
    auto nc = open();
    ASSERT_TRUE(nc->put("d/f", want, nc->epoch()));
  }
  auto nc = open();
  EXPECT_EQ(nc->droppedReason(), "");
  auto got = nc->get("d/f");
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->attr.st_size, 4096);
  EXPECT_EQ(got->attr.st_ino, 77u);
  EXPECT_EQ(got->attr.st_uid, 1000u);
  EXPECT_EQ(got->attr.st_gid, 100u);
  EXPECT_EQ(got->attr.st_blocks, 8);
  EXPECT_EQ(got->attr.st_mtim.tv_nsec, 123456789);
  EXPECT_EQ(got->attr.st_ctim.tv_sec, 1700000001);
  EXPECT_EQ(got->attr.st_mode, S_IFREG | 0644u);
  EXPECT_NEAR(got->learnt_at, want.learnt_at, 1e-6);
  EXPECT_FALSE(nc->get("d/g").has_value());
  EXPECT_FALSE(nc->get("d").has_value());
}

TEST_F(FuseNamespaceCache, AListingIsServedOnlyWhenComplete) {
  auto nc = open();
  EXPECT_FALSE(nc->listing("d").has_value());
  ASSERT_TRUE(nc->put("d/a", file(1, 2), nc->epoch()));
  EXPECT_FALSE(nc->listing("d").has_value()) << "a record is not a listing";
  NamespaceEntry b = file(0, 3);
  b.attrs_known = false;
  ASSERT_TRUE(nc->putListing("d", dirAttr(100), {{"a", file(1, 2)}, {"b", b}}, nc->epoch()));
  auto l = nc->listing("d");
  ASSERT_TRUE(l.has_value());
  ASSERT_EQ(l->size(), 2u);
  EXPECT_EQ((*l)[0].name, "a");
  EXPECT_TRUE((*l)[0].entry.attrs_known);
  EXPECT_EQ((*l)[1].name, "b");
  EXPECT_FALSE((*l)[1].entry.attrs_known);
  auto d = nc->get("d");
  ASSERT_TRUE(d && d->listed);
  EXPECT_EQ(d->listed_mtime.tv_sec, 100);
  // The root's children, apart from the root's own key.
  ASSERT_TRUE(nc->putListing("", dirAttr(5), {{"d", *d}}, nc->epoch()));
  auto root = nc->listing("");
  ASSERT_TRUE(root.has_value());
  ASSERT_EQ(root->size(), 1u);
  EXPECT_EQ((*root)[0].name, "d");
}

TEST_F(FuseNamespaceCache, AListingDropsNamesGoneAndTheirSubtrees) {
  auto nc = open();
  NamespaceEntry sub;
  sub.attr = dirAttr(1);
  ASSERT_TRUE(nc->putListing("d", dirAttr(1), {{"x", sub}, {"f", file(1, 2)}}, nc->epoch()));
  ASSERT_TRUE(nc->put("d/x/deep", file(3, 4), nc->epoch()));
  ASSERT_TRUE(nc->put("d/x/deeper/y", file(3, 5), nc->epoch()));
  ASSERT_TRUE(nc->putListing("d", dirAttr(2), {{"f", file(1, 2)}}, nc->epoch()));
  EXPECT_FALSE(nc->get("d/x").has_value());
  EXPECT_FALSE(nc->get("d/x/deep").has_value());
  EXPECT_FALSE(nc->get("d/x/deeper/y").has_value());
  EXPECT_TRUE(nc->get("d/f").has_value());
  EXPECT_EQ(nc->listing("d")->size(), 1u);
}

// The mount's order: each name looked up (attributes), then the listing; then
// the directory read again without one of them.
TEST_F(FuseNamespaceCache, AListingDropsANameLookedUpBefore) {
  auto nc = open();
  NamespaceEntry listed = file(0, 0);
  listed.attrs_known = false;
  for (const char* n : {"s0", "s1", "s2"}) ASSERT_TRUE(nc->put(std::string("ds/") + n, file(1, 2), nc->epoch()));
  ASSERT_TRUE(nc->putListing("ds", dirAttr(1), {{"s0", listed}, {"s1", listed}, {"s2", listed}},
                             nc->epoch()));
  EXPECT_TRUE(nc->get("ds/s1")->attrs_known) << "a listing keeps what a lookup learnt";
  ASSERT_TRUE(nc->putListing("ds", dirAttr(2), {{"s0", listed}, {"s2", listed}}, nc->epoch()));
  EXPECT_FALSE(nc->get("ds/s1").has_value());
  EXPECT_EQ(nc->listing("ds")->size(), 2u);
}

TEST_F(FuseNamespaceCache, DropTakesTheSubtreeAndTheParentsListing) {
  auto nc = open();
  NamespaceEntry sub;
  sub.attr = dirAttr(1);
  ASSERT_TRUE(nc->putListing("d", dirAttr(1), {{"x", sub}, {"xy", file(1, 9)}}, nc->epoch()));
  ASSERT_TRUE(nc->put("d/x/f", file(1, 3), nc->epoch()));
  ASSERT_TRUE(nc->drop("d/x").ok());
  EXPECT_FALSE(nc->get("d/x").has_value());
  EXPECT_FALSE(nc->get("d/x/f").has_value());
  EXPECT_TRUE(nc->get("d/xy").has_value()) << "a sibling whose name starts the same stays";
  EXPECT_FALSE(nc->listing("d").has_value()) << "d's listing lacks a change now";
  EXPECT_TRUE(nc->get("d").has_value());
}

TEST_F(FuseNamespaceCache, AnAnswerFromBeforeADropIsNotRecorded) {
  auto nc = open();
  uint64_t before = nc->epoch();
  ASSERT_TRUE(nc->drop("d/f").ok());
  EXPECT_FALSE(nc->put("d/f", file(1, 2), before));
  EXPECT_FALSE(nc->putListing("d", dirAttr(1), {}, before));
  EXPECT_FALSE(nc->get("d/f").has_value());
  EXPECT_TRUE(nc->put("d/f", file(1, 2), nc->epoch()));
}

TEST_F(FuseNamespaceCache, ANameNewToACompleteListingEndsIt) {
  auto nc = open();
  ASSERT_TRUE(nc->putListing("d", dirAttr(1), {{"f", file(1, 2)}}, nc->epoch()));
  ASSERT_TRUE(nc->put("d/f", file(2, 2), nc->epoch()));
  EXPECT_TRUE(nc->listing("d").has_value()) << "a known name keeps the listing";
  ASSERT_TRUE(nc->put("d/g", file(1, 3), nc->epoch()));
  EXPECT_FALSE(nc->listing("d").has_value());
}

TEST_F(FuseNamespaceCache, AChangedDirectoryLosesItsListingOnPut) {
  auto nc = open();
  ASSERT_TRUE(nc->putListing("d", dirAttr(1), {{"f", file(1, 2)}}, nc->epoch()));
  NamespaceEntry same;
  same.attr = dirAttr(1);
  ASSERT_TRUE(nc->put("d", same, nc->epoch()));
  EXPECT_TRUE(nc->listing("d").has_value());
  NamespaceEntry changed;
  changed.attr = dirAttr(2);
  ASSERT_TRUE(nc->put("d", changed, nc->epoch()));
  EXPECT_FALSE(nc->listing("d").has_value());
}

TEST_F(FuseNamespaceCache, AnotherRemoteOrModeIsDropped) {
  {
    auto nc = open("/remote", "immutable");
    ASSERT_TRUE(nc->put("f", file(1, 2), nc->epoch()));
  }
  {
    auto nc = open("/elsewhere", "immutable");
    EXPECT_NE(nc->droppedReason(), "");
    EXPECT_FALSE(nc->get("f").has_value());
    ASSERT_TRUE(nc->put("f", file(1, 2), nc->epoch()));
  }
  auto nc = open("/elsewhere", "ttl");
  EXPECT_NE(nc->droppedReason(), "");
  EXPECT_EQ(nc->size(), 0u);
}

TEST_F(FuseNamespaceCache, ACorruptFileIsDroppedNotServed) {
  {
    auto nc = open();
    ASSERT_TRUE(nc->put("f", file(1, 2), nc->epoch()));
  }
  {
    // Both LMDB meta pages (the first two 4 KiB pages) overwritten.
    int fd = ::open(path_.c_str(), O_WRONLY);
    ASSERT_GE(fd, 0);
    std::string junk(8192, 'x');
    ASSERT_EQ(::pwrite(fd, junk.data(), junk.size(), 0), 8192);
    ::close(fd);
  }
  auto nc = open();
  EXPECT_NE(nc->droppedReason(), "");
  EXPECT_FALSE(nc->get("f").has_value());
}

TEST_F(FuseNamespaceCache, ADamagedRecordReadsAsMissing) {
  {
    auto nc = open();
    NamespaceEntry e = file(0x5a5a5a5a, 2);
    ASSERT_TRUE(nc->put("f", e, nc->epoch()));
  }
  {
    // Flip a byte of the record's size field where it lies in the file.
    std::fstream io(path_, std::ios::in | std::ios::out | std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(io)), {});
    auto at = all.find(std::string("\x5a\x5a\x5a\x5a", 4));
    ASSERT_NE(at, std::string::npos);
    io.seekp(static_cast<std::streamoff>(at));
    io.put('\x5b');
  }
  auto nc = open();
  EXPECT_FALSE(nc->get("f").has_value());
}

TEST_F(FuseNamespaceCache, AMarkerOfAnotherBootDropsTheDatabase) {
  {
    auto nc = open();
    ASSERT_TRUE(nc->put("f", file(1, 2), nc->epoch()));
    // While unsynced, the marker names this boot; it stays over a sync that
    // found new commits, and goes at the next quiet one.
    EXPECT_TRUE(fs::exists(path_ + "-dirty"));
    nc->sync();
    EXPECT_TRUE(fs::exists(path_ + "-dirty"));
    nc->sync();
    EXPECT_FALSE(fs::exists(path_ + "-dirty"));
    ASSERT_TRUE(nc->put("g", file(1, 3), nc->epoch()));
    EXPECT_TRUE(fs::exists(path_ + "-dirty"));
    nc->syncNow();
    EXPECT_FALSE(fs::exists(path_ + "-dirty"));
  }
  {
    auto nc = open();
    EXPECT_EQ(nc->droppedReason(), "");
    EXPECT_TRUE(nc->get("f").has_value());
  }
  std::ofstream(path_ + "-dirty") << "another-boot\n";
  auto nc = open();
  EXPECT_NE(nc->droppedReason(), "");
  EXPECT_FALSE(nc->get("f").has_value());
}

}  // namespace
}  // namespace hotshard::fuse
