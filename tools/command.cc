#include "tools/command.h"

#include <algorithm>
#include <vector>

namespace hotshard::cli {
namespace {

struct Entry {
  int order;
  Setup setup;
};

std::vector<Entry>& registry() {
  static std::vector<Entry> entries;
  return entries;
}

}  // namespace

Registration::Registration(int order, Setup setup) {
  registry().push_back({order, std::move(setup)});
}

void addRegisteredCommands(CLI::App& app) {
  auto entries = registry();
  std::stable_sort(entries.begin(), entries.end(),
                   [](const Entry& a, const Entry& b) { return a.order < b.order; });
  for (auto& e : entries) e.setup(app);
}

}  // namespace hotshard::cli
