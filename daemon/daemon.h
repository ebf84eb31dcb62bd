// `hotshard run`: one process holding the FUSE session, the control socket and
// (as they land) the probes, placement loop, promoter and metrics.
#pragma once

#include "daemon/config.h"

namespace hotshard {

// Runs the daemon until SIGINT/SIGTERM or until the mount goes away; returns
// the process exit code. Without cfg.foreground, returns in the parent once the
// mount is ready (0) or has failed (1), and the child carries on.
int runDaemon(RunConfig cfg);

}  // namespace hotshard
