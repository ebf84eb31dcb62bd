// `hotshard run`: every item of the daemon's config as a flag, plus --config FILE.
#include <cstdio>
#include <map>
#include <set>

#include "daemon/config.h"
#include "daemon/daemon.h"
#include "tools/commands.h"

namespace hotshard::cli {
namespace {

}  // namespace

void addRunCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("run", "Mount a remote directory through hotshard and serve it");
  auto config_file = std::make_shared<std::string>();
  auto values = std::make_shared<std::map<std::string, std::string>>();
  auto flags = std::make_shared<std::map<std::string, bool>>();
  cmd->add_option("--config", *config_file, "TOML file with any of the options below")
      ->check(CLI::ExistingFile);
  auto print_config = std::make_shared<bool>(false);
  cmd->add_flag("--print-config", *print_config,
                "Print an example TOML file with every option and its default, and exit");
  for (const auto& item : runConfigItems()) {
    if (item.is_flag) {
      cmd->add_flag("--" + item.name, (*flags)[item.name], item.help);
    } else {
      cmd->add_option("--" + item.name, (*values)[item.name], item.help);
    }
  }
  // The supervisor's worker options (docs/restart.md): hidden from --help.
  auto worker = std::make_shared<RunConfig::Worker>();
  cmd->add_option("--fuse-fd", worker->fuse_fd, "Inherited /dev/fuse fd, mounted at --mount")
      ->group("");
  cmd->add_option("--remote-fd", worker->remote_fd, "Inherited fd of the remote directory")
      ->group("");
  cmd->add_option("--ready-fd", worker->ready_fd, "Inherited fd that gets 'ready' when serving")
      ->group("");
  cmd->add_flag("--takeover", worker->takeover, "Adopt the live connection of --fuse-fd")
      ->group("");
  cmd->add_option("--state-dir", worker->state_dir, "Where the state a successor adopts lives")
      ->group("");
  cmd->footer(
      "Examples:\n"
      "  hotshard run --remote /mnt/datasets --cache /nvme/hotshard\n"
      "      mount over /mnt/datasets itself: jobs keep their paths\n"
      "  hotshard run --remote /mnt/nfs/ds --mount /data/ds --cache /nvme/hs --consistency ttl=30\n"
      "  hotshard run --config /etc/hotshard/datasets.toml --foreground\n"
      "  hotshard run --remote /mnt/nfs/ds --cache /nvme/hs --cluster train-a \\\n"
      "      --etcd http://10.0.0.11:2379 --peer-listen 10.0.1.23:7464 --namespace ds \\\n"
      "      --cluster-token-file /etc/hotshard/cluster.token\n"
      "      join the peer tier: a file leaves the remote once per cluster (docs/cluster.md)\n"
      "Stop with SIGINT/SIGTERM (Ctrl-C in the foreground): the mount is removed and the\n"
      "path is left exactly as before.");
  cmd->callback([cmd, config_file, values, flags, print_config, worker] {
    if (*print_config) {
      std::fputs(exampleConfigToml().c_str(), stdout);
      return;
    }
    RunConfig cfg;
    std::set<std::string> given;
    for (const auto& item : runConfigItems()) {
      if (cmd->count("--" + item.name) == 0) continue;
      given.insert(item.name);
      std::string v = item.is_flag ? ((*flags)[item.name] ? "true" : "false") : (*values)[item.name];
      if (Status st = item.set(cfg, v); !st.ok()) {
        throw CLI::ValidationError("--" + item.name, st.error().message);
      }
    }
    if (!config_file->empty()) {
      if (Status st = applyConfigFile(*config_file, given, cfg); !st.ok()) {
        throw CLI::ValidationError("--config", st.error().message);
      }
    }
    cfg.worker = *worker;
    int rc = runDaemon(cfg);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace hotshard::cli
