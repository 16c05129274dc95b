# Shared by start.sh and stop.sh (sourced, not run): paths and the pid records.
# shellcheck shell=bash

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# Everything the cluster writes at run time lives here; `rm -rf` it to reset.
STATE=${BASIS_SLURM_STATE:-/var/tmp/basis-slurm}
PIDS=$STATE/pid
LOGS=$STATE/log
CLUSTER=basis
NODE=localhost

# Daemons in start order; stop.sh walks them backwards.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

# True while process $1 runs. A zombie (exited, but not reaped by a parent that
# may never reap it) counts as gone, where kill -0 would still succeed.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat:0:1} != Z ]]
}

# Print the pid of daemon $1 if start.sh recorded it and that process still runs
# the same program; print nothing for a missing or stale record (dead process, or
# its pid reused by something else), so a stale record is never signalled.
recorded_pid() {
  local name=$1 file=$PIDS/$1.pid pid comm
  [[ -r $file ]] || return 0
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] || return 0
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 0
  alive "$pid" || return 0
  # mariadbd runs as "mysqld" where only the old binary name exists.
  if [[ $comm == "$name" || ($name == mariadbd && $comm == mysqld) ]]; then
    echo "$pid"
  fi
}

# Serialise start.sh and stop.sh runs (two test sessions may start the cluster at
# once). fd 9 must not leak into the daemons, or they would hold the lock forever.
take_lock() {
  mkdir -p "$STATE"
  exec 9>"$STATE/lock"
  if ! flock -w 300 9; then
    echo "$(basename "$0"): another start.sh/stop.sh holds $STATE/lock" >&2
    exit 1
  fi
}
