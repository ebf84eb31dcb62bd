// tools/terminal.h: what top and warm's progress line fit to the terminal.
#include "tools/terminal.h"

#include <gtest/gtest.h>

#include <unistd.h>

namespace hotshard::cli {
namespace {

TEST(CliTerminal, QAndCtrlCQuitTopSpaceRefreshesOtherKeysDoNothing) {
  EXPECT_EQ(topKey('q'), TopKey::kQuit);
  EXPECT_EQ(topKey('Q'), TopKey::kQuit);
  EXPECT_EQ(topKey(3), TopKey::kQuit);
  EXPECT_EQ(topKey(' '), TopKey::kRefresh);
  EXPECT_EQ(topKey('x'), TopKey::kNone);
  EXPECT_EQ(topKey(0), TopKey::kNone);
}

TEST(CliTerminal, EllipsizeCutsToTheWidthAtEitherEnd) {
  EXPECT_EQ(ellipsize("short", 80), "short");
  EXPECT_EQ(ellipsize("abcdefghij", 8), "abcde...");
  EXPECT_EQ(ellipsizeFront("dir/sub/file.bin", 10), "...ile.bin");
  EXPECT_EQ(ellipsizeFront("dir/sub/file.bin", 10).size(), 10u);
  EXPECT_EQ(ellipsize("abc", 2), "ab");
}

TEST(CliTerminal, NotATerminalIs80ColumnsAndRawInputStaysOff) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  EXPECT_EQ(terminalColumns(fds[1]), 80u);
  ::close(fds[0]);
  ::close(fds[1]);
  if (!::isatty(STDIN_FILENO)) {
    RawInput raw;
    EXPECT_FALSE(raw.active());
    EXPECT_EQ(raw.readKey(10), 0);
  }
}

// As `ls --quoting-style=escape` prints the same names (coreutils 9.1).
TEST(CliTerminal, QuoteEscapeWritesNamesAsLsEscapeStyleDoes) {
  EXPECT_EQ(quoteEscape("shard-0001.tar"), "shard-0001.tar");
  EXPECT_EQ(quoteEscape(std::string("a b\nc\xff\td\\e\x01\xc3\xa9")),
            "a\\ b\\nc\\377\\td\\\\e\\001\xc3\xa9");
  EXPECT_EQ(quoteEscape("\a\b\f\r\v\x7f"), "\\a\\b\\f\\r\\v\\177");
  // Not UTF-8: a lone continuation byte, an overlong '/', a surrogate, a cut sequence.
  EXPECT_EQ(quoteEscape("\x80\xc0\xaf\xed\xa0\x80\xe2\x82"),
            "\\200\\300\\257\\355\\240\\200\\342\\202");
  EXPECT_EQ(quoteEscape("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");  // U+1F600 as it is
}

TEST(CliTerminal, EtaIsCompact) {
  EXPECT_EQ(formatEta(3.2), "3s");
  EXPECT_EQ(formatEta(125), "2m05s");
  EXPECT_EQ(formatEta(3720), "1h02m");
  EXPECT_EQ(formatEta(-1), "--");
}

}  // namespace
}  // namespace hotshard::cli
