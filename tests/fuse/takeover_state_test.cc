// fuse/takeover_state.h: the state a successor adopts, as a file: round trip,
// growth past the first size, a short or torn file, another connection's state.
#include "fuse/takeover_state.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

namespace hotshard::fuse {
namespace {

namespace fs = std::filesystem;

class TakeoverStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/hotshard-takeover-state-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = std::string(tmpl) + "/run/takeover/abc";
    top_ = tmpl;
  }
  void TearDown() override { fs::remove_all(top_); }

  std::string top_, dir_;
  const ConnectionId conn_{.dev = 0x2c, .mount_path = "/mnt/data"};
};

TEST_F(TakeoverStateTest, RoundTripsSlotsInitAndPassthrough) {
  {
    auto st = TakeoverState::create(dir_, conn_);
    ASSERT_TRUE(st.ok()) << st.error().message;
    const char init[] = "an INIT request, flags2 and all";
    (*st)->saveInit(init, sizeof(init), true);
    ASSERT_TRUE((*st)->put(2, 1, "dir", 7, 100, S_IFDIR, 1, 3).ok());
    ASSERT_TRUE((*st)->put(3, 2, "file.bin", 7, 101, S_IFREG, 2, 1).ok());
    ASSERT_TRUE((*st)->put(4, 2, "gone", 7, 102, S_IFREG, 3, 1).ok());
    (*st)->setBacking(3, 5, kBackingCache | kBackingWritable);
    (*st)->setOpens(3, 2);
    (*st)->setLookups(2, 4);
    (*st)->release(4);
    ASSERT_TRUE((*st)->sync().ok());
  }
  struct stat dir_st, file_st;
  ASSERT_EQ(::stat(dir_.c_str(), &dir_st), 0);
  ASSERT_EQ(::stat((dir_ + "/state").c_str(), &file_st), 0);
  EXPECT_EQ(dir_st.st_mode & 07777, 0700u);
  EXPECT_EQ(file_st.st_mode & 07777, 0600u);

  auto st = TakeoverState::adopt(dir_, conn_);
  ASSERT_TRUE(st.ok()) << st.error().message;
  EXPECT_TRUE((*st)->passthrough());
  auto init = (*st)->initRequest();
  EXPECT_EQ(std::string(init.begin(), init.end() - 1), "an INIT request, flags2 and all");
  auto slots = (*st)->slots();
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[0].id, 2u);
  EXPECT_EQ(slots[0].nameView(), "dir");
  EXPECT_EQ(slots[0].nlookup, 4u);
  EXPECT_EQ(slots[0].backing_id, -1);
  EXPECT_EQ(slots[1].id, 3u);
  EXPECT_EQ(slots[1].parent, 2u);
  EXPECT_EQ(slots[1].nameView(), "file.bin");
  EXPECT_EQ(slots[1].ino, 101u);
  EXPECT_EQ(slots[1].type, static_cast<uint32_t>(S_IFREG));
  EXPECT_EQ(slots[1].generation, 2u);
  EXPECT_EQ(slots[1].backing_id, 5);
  EXPECT_EQ(slots[1].backing_flags, kBackingCache | kBackingWritable);
  EXPECT_EQ(slots[1].nopen, 2);
}

// What the kernel was told of a node's access travels to a successor; a slot
// put afresh knows none (mode 0), and the owner hash tells owners apart.
TEST_F(TakeoverStateTest, KeepsTheModeAndOwnerTheKernelWasTold) {
  {
    auto st = TakeoverState::create(dir_, conn_);
    ASSERT_TRUE(st.ok()) << st.error().message;
    const char init[] = "init";
    (*st)->saveInit(init, sizeof(init), true);
    ASSERT_TRUE((*st)->put(2, 1, "told", 7, 100, S_IFREG, 1, 1).ok());
    ASSERT_TRUE((*st)->put(3, 1, "untold", 7, 101, S_IFREG, 2, 1).ok());
    (*st)->setAttrs(2, S_IFREG | 0640, ownerHash(1000, 100));
    (*st)->setAttrs(3, S_IFREG | 0600, ownerHash(0, 0));
    (*st)->release(3);
    ASSERT_TRUE((*st)->put(3, 1, "again", 7, 102, S_IFREG, 3, 1).ok());  // reused id
    ASSERT_TRUE((*st)->sync().ok());
  }
  auto st = TakeoverState::adopt(dir_, conn_);
  ASSERT_TRUE(st.ok()) << st.error().message;
  auto slots = (*st)->slots();
  ASSERT_EQ(slots.size(), 2u);
  EXPECT_EQ(slots[0].mode, static_cast<uint16_t>(S_IFREG | 0640));
  EXPECT_EQ(slots[0].owner_hash, ownerHash(1000, 100));
  EXPECT_EQ(slots[1].mode, 0u);
  EXPECT_NE(ownerHash(1000, 100), ownerHash(100, 1000));
  EXPECT_NE(ownerHash(1000, 100), ownerHash(1001, 100));
}

TEST_F(TakeoverStateTest, GrowsPastItsFirstSizeAndKeepsWhatItHad) {
  auto st = TakeoverState::create(dir_, conn_);
  ASSERT_TRUE(st.ok()) << st.error().message;
  (*st)->saveInit("x", 1, false);
  for (uint64_t id = 2; id < 5000; id += 7) {
    ASSERT_TRUE((*st)->put(id, 1, "n" + std::to_string(id), 1, id, S_IFREG, id, 1).ok());
  }
  ASSERT_TRUE((*st)->put(100000, 1, std::string(255, 'z'), 1, 9, S_IFREG, 1, 1).ok());
  st->reset();
  auto again = TakeoverState::adopt(dir_, conn_);
  ASSERT_TRUE(again.ok()) << again.error().message;
  auto slots = (*again)->slots();
  ASSERT_EQ(slots.size(), (5000 - 2 + 6) / 7 + 1);
  for (const auto& s : slots) {
    if (s.id == 100000) {
      EXPECT_EQ(s.nameView(), std::string(255, 'z'));
    } else {
      EXPECT_EQ(s.nameView(), "n" + std::to_string(s.id));
      EXPECT_EQ(s.ino, s.id);
    }
  }
}

TEST_F(TakeoverStateTest, RefusesAnotherConnectionsState) {
  {
    auto st = TakeoverState::create(dir_, conn_);
    ASSERT_TRUE(st.ok());
    (*st)->saveInit("x", 1, false);
  }
  auto other_dev = TakeoverState::adopt(dir_, {.dev = 0x2d, .mount_path = "/mnt/data"});
  ASSERT_FALSE(other_dev.ok());
  EXPECT_EQ(other_dev.error().code, Errc::kStale);
  auto other_path = TakeoverState::adopt(dir_, {.dev = 0x2c, .mount_path = "/mnt/other"});
  ASSERT_FALSE(other_path.ok());
  EXPECT_EQ(other_path.error().code, Errc::kStale);
  auto none = TakeoverState::adopt(top_ + "/nowhere", conn_);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::kNotFound);
}

TEST_F(TakeoverStateTest, ConnectionOfReadsTheHeaderAlone) {
  {
    auto st = TakeoverState::create(dir_, conn_);
    ASSERT_TRUE(st.ok());
  }
  auto conn = TakeoverState::connectionOf(dir_);
  ASSERT_TRUE(conn.ok()) << conn.error().message;
  EXPECT_EQ(conn->dev, conn_.dev);
  EXPECT_EQ(conn->mount_path, conn_.mount_path);
  auto none = TakeoverState::connectionOf(top_ + "/nowhere");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, Errc::kNotFound);
  fs::resize_file(dir_ + "/state", 100);
  auto torn = TakeoverState::connectionOf(dir_);
  ASSERT_FALSE(torn.ok());
  EXPECT_EQ(torn.error().code, Errc::kCorrupt);
}

TEST_F(TakeoverStateTest, RefusesAShortOrTornFileAndOneWithoutInit) {
  {
    auto st = TakeoverState::create(dir_, conn_);
    ASSERT_TRUE(st.ok());
  }
  auto no_init = TakeoverState::adopt(dir_, conn_);
  ASSERT_FALSE(no_init.ok());
  EXPECT_EQ(no_init.error().code, Errc::kCorrupt) << no_init.error().message;
  std::string path = dir_ + "/state";
  ASSERT_EQ(::truncate(path.c_str(), 4096 + 100), 0);  // half a slot
  auto torn = TakeoverState::adopt(dir_, conn_);
  ASSERT_FALSE(torn.ok());
  EXPECT_EQ(torn.error().code, Errc::kCorrupt);
  ASSERT_EQ(::truncate(path.c_str(), 10), 0);
  auto short_file = TakeoverState::adopt(dir_, conn_);
  ASSERT_FALSE(short_file.ok());
  EXPECT_EQ(short_file.error().code, Errc::kCorrupt);
}

TEST_F(TakeoverStateTest, DropsASlotWhoseIdWasNotWritten) {
  auto st = TakeoverState::create(dir_, conn_);
  ASSERT_TRUE(st.ok());
  (*st)->saveInit("x", 1, false);
  ASSERT_TRUE((*st)->put(2, 1, "a", 1, 2, S_IFREG, 1, 1).ok());
  ASSERT_TRUE((*st)->put(3, 1, "b", 1, 3, S_IFREG, 1, 1).ok());
  (*st)->release(2);  // as a SIGKILL between clearing the id and rewriting the slot leaves it
  auto slots = (*st)->slots();
  ASSERT_EQ(slots.size(), 1u);
  EXPECT_EQ(slots[0].nameView(), "b");
}

TakeoverSlot slotOf(uint64_t id, uint64_t parent, const std::string& name, uint32_t flags,
                    int32_t nopen) {
  TakeoverSlot s;
  s.id = id;
  s.parent = parent;
  s.name_len = static_cast<uint16_t>(name.size());
  std::memcpy(s.name, name.data(), name.size());
  s.backing_flags = flags;
  s.nopen = nopen;
  return s;
}

// The copies a successor's store keeps adopted: only adopted backings with opens
// left, named by their path from the root; a name whose parent the state lost,
// or a cycle of a torn state, names none.
TEST(TakeoverAdoptedCopyPaths, NamesOpenAdoptedCopiesFromTheRoot) {
  const uint32_t adopted = kBackingCache | kBackingWritable | kBackingAdopted;
  std::vector<TakeoverSlot> slots = {
      slotOf(2, 1, "d", 0, 0),
      slotOf(3, 2, "f", adopted, 1),
      slotOf(4, 1, "top", adopted, 2),
      slotOf(5, 2, "closed", adopted, 0),
      slotOf(6, 2, "reader", kBackingCache, 1),
      slotOf(7, 42, "orphan", adopted, 1),
      slotOf(8, 9, "loop", adopted, 1),
      slotOf(9, 8, "back", 0, 0),
  };
  EXPECT_EQ(adoptedCopyPaths(slots), (std::vector<std::string>{"d/f", "top"}));
}

}  // namespace
}  // namespace hotshard::fuse
