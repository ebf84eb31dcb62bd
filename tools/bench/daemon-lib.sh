# shellcheck shell=bash
# Stopping the daemon a bench started, for the bench scripts (sourced from the
# repository root). Needs MNT; a script sets daemon_pid when it starts
# `hotshard run --foreground ... &`. stop_daemon: SIGTERM, up to 10 s, then
# SIGKILL; a mount left behind is detached lazily.
daemon_pid=
stop_daemon() {
  if [[ -n $daemon_pid ]]; then
    kill -TERM "$daemon_pid" 2>/dev/null || true
    for _ in $(seq 100); do [[ -d /proc/$daemon_pid ]] || break; sleep 0.1; done
    kill -KILL "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=
  fi
  if mountpoint -q "$MNT" 2>/dev/null; then umount -l "$MNT" || true; fi
}
