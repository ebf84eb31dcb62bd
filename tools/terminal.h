// Terminal helpers for the interactive commands (warm's progress line, top):
// the width to fit, text cut to it, and a raw-mode stdin for single keys.
#pragma once

#include <termios.h>

#include <cstddef>
#include <string>

namespace hotshard::cli {

// Columns of the terminal on fd; 80 when fd is not a terminal (or says 0).
size_t terminalColumns(int fd);

// text cut to at most `columns` characters, its end replaced by "..." when cut.
std::string ellipsize(const std::string& text, size_t columns);
// The same, cutting the front ("...tail"): for paths, whose end tells them apart.
std::string ellipsizeFront(const std::string& text, size_t columns);

// A name (any bytes) as one line of text, as `ls --quoting-style=escape` (GNU
// coreutils, quotearg.c's escape_quoting_style) writes it: backslash, space and
// the C escapes (\a \b \f \n \r \t \v) backslashed, other control bytes, DEL
// and bytes that are not part of valid UTF-8 as \ooo (octal); valid UTF-8
// characters as they are. "a b\n\xff" -> "a\ b\n\377".
std::string quoteEscape(const std::string& name);

// "3s", "2m05s", "1h02m": a compact ETA.
std::string formatEta(double seconds);

// What a key typed at top does.
enum class TopKey { kNone, kQuit, kRefresh };
TopKey topKey(char c);

// stdin in raw mode (no echo, no line buffering) while it lives, when stdin is a
// terminal; restored by the destructor, and by restoreTerminal() (async-signal-safe,
// for a SIGINT handler).
class RawInput {
 public:
  RawInput();
  ~RawInput();
  RawInput(const RawInput&) = delete;
  RawInput& operator=(const RawInput&) = delete;
  bool active() const { return active_; }
  // Waits up to timeout_ms for a key; 0 when none came (or not active).
  char readKey(int timeout_ms);
  static void restoreTerminal();

 private:
  bool active_ = false;
};

}  // namespace hotshard::cli
