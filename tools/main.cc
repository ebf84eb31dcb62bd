// The `hotshard` binary: `run` starts the daemon, every other subcommand is a
// client of its control socket or works offline (tools/commands.h).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "tools/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"hotshard: a kernel-passthrough read cache for remote datasets", "hotshard"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("hotshard 0.1.0"));
  hotshard::cli::addAllCommands(app);
  // After the commands: CLI11 hands a parent's footer to subcommands added
  // later, and each command's --help ends with its own examples.
  app.footer(
      "Examples:\n"
      "  hotshard run --remote /mnt/datasets --cache /var/cache/hotshard\n"
      "  hotshard status --json\n"
      "Run 'hotshard COMMAND --help' for a command's options.");
  std::string known;
  bool found = false;
  for (const auto* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    known += (known.empty() ? "" : ", ") + sub->get_name();
    found = found || (argc > 1 && sub->get_name() == argv[1]);
  }
  if (argc > 1 && argv[1][0] != '-' && !found) {
    std::fprintf(stderr, "hotshard: unknown command '%s' (commands: %s)\n", argv[1], known.c_str());
    return hotshard::cli::kExitUsage;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::RuntimeError& e) {
    // A command failed and said why; its code is one of tools/commands.h's.
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    // Help and version are successes; every parse or validation error is a
    // usage error, whatever CLI11's own code for it (app.exit prints it).
    int code = app.exit(e);
    return code == 0 ? hotshard::cli::kExitOk : hotshard::cli::kExitUsage;
  }
  return hotshard::cli::kExitOk;
}
