#!/usr/bin/env bash
# Stop the daemons that start.sh started, and only those: each by the pid that
# start.sh recorded (never by name), in reverse start order, waiting for each to
# exit. State (job ids, accounting DB) is kept; see README.md to reset it.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

[[ $(id -u) == 0 ]] || { echo "stop.sh: run me as root" >&2; exit 1; }
[[ -d $PIDS ]] || { echo "stop.sh: nothing recorded in $PIDS"; exit 0; }
take_lock

# SIGTERM daemon $1, wait up to $2 s for it to exit, then SIGKILL it.
stop_one() {
  local name=$1 secs=$2 pid deadline killed=0
  pid=$(recorded_pid "$name")
  if [[ -z $pid ]]; then
    [[ ! -e $PIDS/$name.pid ]] || echo "stop.sh: $name not running (stale record removed)"
    rm -f "$PIDS/$name.pid"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + secs))
  while alive "$pid"; do
    if ((SECONDS >= deadline)); then
      if ((killed)); then
        echo "stop.sh: $name (pid $pid) survives SIGKILL; giving up on it" >&2
        return 1
      fi
      echo "stop.sh: $name (pid $pid) ignored SIGTERM for ${secs}s: killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
      deadline=$((SECONDS + 10))
    fi
    sleep 0.2
  done
  rm -f "$PIDS/$name.pid"
  stopped=$((stopped + 1))
  echo "stop.sh: $name stopped (pid $pid)"
}

# Keep going past a daemon that will not die, so the others still stop.
failed=0
stopped=0
stop_one slurmd 30 || failed=1
stop_one slurmctld 30 || failed=1
stop_one slurmdbd 30 || failed=1
# InnoDB flushes on a clean shutdown; give it time rather than forcing recovery.
stop_one mariadbd 120 || failed=1
stop_one munged 10 || failed=1
((stopped)) || echo "stop.sh: no running daemon recorded in $PIDS"
exit "$failed"
