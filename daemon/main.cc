// The `hotshard` binary: `run` starts the daemon, every other subcommand is a
// client of its control socket (tools/). Subcommands register themselves.
#include <CLI/CLI.hpp>

#include "tools/command.h"

int main(int argc, char** argv) {
  CLI::App app{"hotshard: a kernel-passthrough read cache for remote datasets", "hotshard"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("hotshard 0.1.0"));
  app.footer(
      "Examples:\n"
      "  hotshard run --remote /mnt/datasets --cache /var/cache/hotshard\n"
      "  hotshard status --json\n"
      "Run 'hotshard COMMAND --help' for a command's options.");
  hotshard::cli::addRegisteredCommands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  return 0;
}
