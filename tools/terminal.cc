#include "tools/terminal.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>
#include <string_view>

namespace hotshard::cli {
namespace {

// The settings to restore; saved before raw mode is entered.
struct termios g_saved;
volatile bool g_raw = false;

}  // namespace

size_t terminalColumns(int fd) {
  struct winsize ws {};
  if (::isatty(fd) && ::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

std::string ellipsize(const std::string& text, size_t columns) {
  if (text.size() <= columns) return text;
  if (columns <= 3) return text.substr(0, columns);
  return text.substr(0, columns - 3) + "...";
}

std::string ellipsizeFront(const std::string& text, size_t columns) {
  if (text.size() <= columns) return text;
  if (columns <= 3) return text.substr(text.size() - columns);
  return "..." + text.substr(text.size() - (columns - 3));
}

namespace {

// The length of the valid UTF-8 sequence (RFC 3629 §4) that starts s[i], 0 when
// none does: no overlong forms, no surrogates, nothing past U+10FFFF.
size_t utf8SequenceAt(const std::string& s, size_t i) {
  auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  unsigned char b = byte(i);
  size_t len = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc2 ? 2 : 0;
  if (b > 0xf4 || len == 0 || i + len > s.size()) return 0;
  for (size_t k = 1; k < len; k++) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
  }
  unsigned char b1 = byte(i + 1);
  if ((b == 0xe0 && b1 < 0xa0) || (b == 0xed && b1 > 0x9f) || (b == 0xf0 && b1 < 0x90) ||
      (b == 0xf4 && b1 > 0x8f)) {
    return 0;
  }
  return len;
}

}  // namespace

std::string quoteEscape(const std::string& name) {
  static constexpr std::string_view kCLetters = "abtnvfr";  // of '\a' (7) to '\r' (13)
  std::string out;
  for (size_t i = 0; i < name.size();) {
    auto c = static_cast<unsigned char>(name[i]);
    if (c >= 0x80) {
      if (size_t len = utf8SequenceAt(name, i)) {
        out.append(name, i, len);
        i += len;
        continue;
      }
    }
    i++;
    if (c == '\\' || c == ' ') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c >= '\a' && c <= '\r') {
      out += '\\';
      out += kCLetters[c - '\a'];
    } else if (c < 0x20 || c >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\%03o", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string formatEta(double seconds) {
  if (!(seconds >= 0) || seconds > 99 * 3600) return "--";
  auto s = static_cast<unsigned long long>(seconds + 0.5);
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%llus", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%llum%02llus", s / 60, s % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lluh%02llum", s / 3600, s / 60 % 60);
  }
  return buf;
}

TopKey topKey(char c) {
  switch (c) {
    case 'q':
    case 'Q':
    case 3:  // ^C in raw mode (ISIG is kept, but some terminals pass it through)
      return TopKey::kQuit;
    case ' ':
    case 'r':
      return TopKey::kRefresh;
    default:
      return TopKey::kNone;
  }
}

RawInput::RawInput() {
  if (!::isatty(STDIN_FILENO) || ::tcgetattr(STDIN_FILENO, &g_saved) != 0) return;
  struct termios raw = g_saved;
  raw.c_lflag &= ~(ICANON | ECHO);  // ISIG stays: ^C still raises SIGINT
  raw.c_cc[VMIN] = 0;
  raw.c_cc[VTIME] = 0;
  if (::tcsetattr(STDIN_FILENO, TCSANOW, &raw) != 0) return;
  g_raw = true;
  active_ = true;
}

RawInput::~RawInput() {
  if (active_) restoreTerminal();
}

void RawInput::restoreTerminal() {
  if (g_raw) {
    ::tcsetattr(STDIN_FILENO, TCSANOW, &g_saved);
    g_raw = false;
  }
}

char RawInput::readKey(int timeout_ms) {
  if (!active_) return 0;
  struct pollfd p = {STDIN_FILENO, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) <= 0) return 0;
  char c = 0;
  if (::read(STDIN_FILENO, &c, 1) != 1) return 0;
  return c;
}

}  // namespace hotshard::cli
