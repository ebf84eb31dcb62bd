#include "tools/terminal.h"

#include <poll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdio>

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
