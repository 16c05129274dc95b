#!/usr/bin/env bash
# Start the one-node development Slurm cluster "basis" with accounting:
#   munged (user munge) → mariadbd (user mysql, 127.0.0.1 only) → slurmdbd →
#   slurmctld → slurmd -N localhost, all but munged and mariadbd as root.
# Idempotent: returns at once when the cluster already answers, and otherwise
# starts only the daemons that are not running, so it is safe to re-run after a
# crash, a stop.sh or a reboot (stale pid records are ignored).
# Env: BASIS_SLURM_STATE (state and logs, default /var/tmp/basis-slurm),
#      BASIS_SLURM_DB_PORT (MariaDB TCP port, default 3307, beside a system MariaDB).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

DB_PORT=${BASIS_SLURM_DB_PORT:-3307}
DB_SOCKET=$STATE/mysqld/mysqld.sock
NODE_WAIT_S=60

log() { echo "start.sh: $*"; }
die() {
  echo "start.sh: error: $*" >&2
  echo "start.sh: logs are in $LOGS" >&2
  exit 1
}

# The node takes jobs and accounting answers: nothing to do.
# sinfo retries for ~9 s when slurmctld is down, so probe its port first.
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
node_state() { timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null; }
node_usable() {
  local state
  port_open 6817 || return 1
  state=$(node_state) || return 1
  # A trailing * means slurmd stopped answering, so "idle*" is not usable.
  [[ $state =~ ^(idle|mixed|allocated|completing)$ ]]
}
accounting_answers() {
  local clusters
  clusters=$(timeout 10 sacctmgr -n -P list cluster format=cluster 2>/dev/null) || return 1
  grep -qx "$CLUSTER" <<<"$clusters"
}

# Every daemon start.sh recorded still runs: sinfo alone would keep reporting a
# killed slurmd's node as idle for minutes.
recorded_alive() {
  local name
  for name in "${DAEMONS[@]}"; do
    if [[ -e $PIDS/$name.pid && -z $(recorded_pid "$name") ]]; then
      return 1
    fi
  done
}

cluster_up() { recorded_alive && node_usable && accounting_answers; }

print_status() {
  local name pid
  sinfo
  for name in "${DAEMONS[@]}"; do
    pid=$(recorded_pid "$name")
    echo "  $name: ${pid:+pid }${pid:-not started by start.sh}"
  done
  echo "state: $STATE   logs: $LOGS   stop: $HERE/stop.sh"
}

if cluster_up; then
  log "cluster $CLUSTER already up"
  print_status
  exit 0
fi

[[ $(id -u) == 0 ]] || die "run me as root (the daemons run as root, munge and mysql)"
take_lock
# Another start.sh may have brought the cluster up while we waited for the lock.
if cluster_up; then
  log "cluster $CLUSTER already up"
  print_status
  exit 0
fi

"$HERE/install.sh"

t0=$SECONDS

# --- folders ---------------------------------------------------------------
# The state folder must be traversable by munge and mysql; its parts are not.
install -d -m 755 "$STATE"
install -d -m 755 "$PIDS" "$LOGS" "$STATE/run"
install -d -m 700 "$STATE/slurmctld" "$STATE/slurmd"
install -d -o mysql -g mysql -m 755 "$STATE/mysqld"
# munged checks that its socket, seed and key folders belong to it.
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 711 /var/lib/munge
install -d -o munge -g munge -m 700 /etc/munge
install -d -m 755 /etc/slurm

# --- configuration -----------------------------------------------------------
# The DB password is made once and kept, so a re-run matches the existing DB user.
if [[ ! -s $STATE/db_password ]]; then
  (umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/db_password")
fi
DB_PASS=$(<"$STATE/db_password")
[[ $STATE != *'|'* ]] || die "BASIS_SLURM_STATE must not contain '|'"

# Write $1.in to $2 with mode $3 atomically: running daemons may read it any time.
render() {
  local tmp
  tmp=$(mktemp "$2.XXXXXX")
  chmod "$3" "$tmp"
  sed -e "s|@STATE@|$STATE|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
    "$HERE/$1.in" >"$tmp"
  chown root:root "$tmp"
  mv -f "$tmp" "$2"
}
render slurm.conf /etc/slurm/slurm.conf 644
# slurmdbd refuses a config that others can read: it holds the DB password.
render slurmdbd.conf /etc/slurm/slurmdbd.conf 600

if [[ ! -s /etc/munge/munge.key ]]; then
  log "creating /etc/munge/munge.key"
  (umask 077 && dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none)
fi
chown munge:munge /etc/munge/munge.key
chmod 600 /etc/munge/munge.key

# --- launching -------------------------------------------------------------
# Start "$@" as daemon $1 in its own session (so a closing terminal or a killed
# test process group does not take it down), logging to $LOGS/$1.out, and record
# its pid. setsid and setpriv exec in place, so $! is the daemon's own pid.
launch() {
  local name=$1 pid
  shift
  rm -f "$PIDS/$name.pid"
  setsid "$@" >>"$LOGS/$name.out" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$PIDS/$name.pid"
  log "$name started (pid $pid)"
}

# Wait up to $2 s for "${@:3}" to succeed; fail early when daemon $1 has died.
wait_for() {
  local name=$1 secs=$2 pid
  shift 2
  local deadline=$((SECONDS + secs))
  pid=$(<"$PIDS/$name.pid")
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      tail -n 20 "$LOGS/$name.out" "$LOGS/$name.log" 2>/dev/null >&2 || true
      die "$name (pid $pid) exited during start-up"
    fi
    ((SECONDS < deadline)) || die "$name did not answer within $secs s"
    sleep 0.5
  done
}

# Print the pid of a live (not zombie) process named $1, if any.
running_named() {
  local pid
  for pid in $(pgrep -x "$1" || true); do
    if alive "$pid"; then
      echo "$pid"
      return 0
    fi
  done
}

# Start daemon $1 with "${@:2}" unless start.sh's record of it still runs.
ensure() {
  local name=$1 pid
  pid=$(recorded_pid "$name")
  if [[ -n $pid ]]; then
    log "$name already running (pid $pid)"
    return 1
  fi
  # A running copy this script did not start would fight ours for its port or
  # socket: say so instead of failing obscurely (it is never killed from here).
  # mariadbd is exempt: ours has its own datadir, socket and port.
  [[ $name == mariadbd ]] || pid=$(running_named "$name")
  if [[ -n $pid ]]; then
    die "a $name this script did not start is running (pid $pid); stop it first"
  fi
  shift
  launch "$name" "$@"
}

# --- munged ------------------------------------------------------------------
munge_answers() { munge -n </dev/null | unmunge >/dev/null; }
if [[ -z $(recorded_pid munged) ]] && munge_answers 2>/dev/null; then
  # e.g. started by the munge package: use it, and leave it to its owner.
  log "munged already answers (not started by start.sh): using it"
  rm -f "$PIDS/munged.pid"
elif ensure munged setpriv --reuid=munge --regid=munge --init-groups munged -F; then
  wait_for munged 20 munge_answers
fi

# --- mariadbd ----------------------------------------------------------------
DATADIR=$STATE/mysql
if [[ ! -e $DATADIR/.basis-initialised ]]; then
  # A half-initialised datadir (interrupted first run) is ours to redo.
  log "initialising MariaDB data folder $DATADIR"
  rm -rf "$DATADIR"
  install -d -o mysql -g mysql -m 700 "$DATADIR"
  mariadb-install-db --no-defaults --user=mysql --datadir="$DATADIR" \
    --auth-root-authentication-method=socket --skip-test-db \
    >>"$LOGS/mariadb-install-db.log" 2>&1 ||
    die "mariadb-install-db failed, see $LOGS/mariadb-install-db.log"
  touch "$DATADIR/.basis-initialised"
fi

MARIADBD=$(command -v mariadbd || command -v mysqld)
SQL_CLIENT=$(command -v mariadb || command -v mysql)
ADMIN=$(command -v mariadb-admin || command -v mysqladmin)
db_answers() { "$ADMIN" --no-defaults --socket="$DB_SOCKET" -u root ping; }
# --no-defaults: ignore /etc/mysql, so a system MariaDB's settings never leak in.
# innodb_lock_wait_timeout=900 is what slurmdbd asks for; it also asks for a bigger
# buffer pool (and logs an error without one), which a dev DB does not need.
if ensure mariadbd "$MARIADBD" --no-defaults --user=mysql --datadir="$DATADIR" \
  --socket="$DB_SOCKET" --pid-file="$STATE/mysqld/mariadbd.pid" \
  --bind-address=127.0.0.1 --port="$DB_PORT" --skip-name-resolve \
  --innodb-lock-wait-timeout=900 --innodb-buffer-pool-size=128M; then
  wait_for mariadbd 60 db_answers
fi
# Root logs in through the unix socket as the OS root; slurmdbd over TCP as slurm.
"$SQL_CLIENT" --no-defaults --socket="$DB_SOCKET" -u root <<SQL || die "creating the DB user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# --- slurmdbd ----------------------------------------------------------------
dbd_answers() { timeout 10 sacctmgr -n -P list cluster format=cluster; }
if ensure slurmdbd slurmdbd -D; then
  # The first start creates the accounting tables, which takes a while.
  wait_for slurmdbd 90 dbd_answers
fi
if ! accounting_answers; then
  # slurmctld registers with slurmdbd only if the cluster exists there.
  out=$(sacctmgr -i add cluster "$CLUSTER" 2>&1) || [[ $out == *"already exists"* ]] ||
    die "sacctmgr add cluster $CLUSTER failed: $out"
fi

# --- slurmctld, slurmd ---------------------------------------------------------
ctld_answers() { timeout 10 scontrol ping | grep -q UP; }
if ensure slurmctld slurmctld -D; then
  wait_for slurmctld 60 ctld_answers
fi
ensure slurmd slurmd -D -N "$NODE" || true

# The node registers within seconds; a down or drained one (left by a previous
# run) is resumed, which ReturnToService=2 alone does not do for a drain.
deadline=$((SECONDS + NODE_WAIT_S))
until node_usable; do
  state=$(node_state || true)
  if [[ $state =~ ^(down|drain|drained|draining|fail|failing)$ ]]; then
    log "node $NODE is $state: resuming it"
    scontrol update nodename="$NODE" state=resume || true
  fi
  if [[ -z $(recorded_pid slurmd) ]]; then
    tail -n 20 "$LOGS/slurmd.log" "$LOGS/slurmd.out" 2>/dev/null >&2 || true
    die "slurmd exited during start-up"
  fi
  ((SECONDS < deadline)) || die "node $NODE not idle within ${NODE_WAIT_S}s (state: ${state:-?})"
  sleep 1
done

log "cluster $CLUSTER up in $((SECONDS - t0)) s"
print_status
