#!/usr/bin/env bash
# Install the Debian packages of the one-node development Slurm cluster.
# Idempotent: when every binary start.sh needs is present it returns at once.
set -euo pipefail

# Daemons live in sbin, which a non-login root shell may not have on PATH.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
for bin in slurmctld slurmd slurmdbd sinfo sacct sacctmgr scontrol munged munge unmunge \
           mariadb-install-db; do
  have "$bin" || missing+=("$bin")
done
# The server binary was renamed from mysqld to mariadbd; either will do.
have mariadbd || have mysqld || missing+=(mariadbd)
# The client is named mariadb (new) or mysql (old); start.sh uses whichever exists.
have mariadb || have mysql || missing+=(mariadb)

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) != 0 ]]; then
  echo "install.sh: missing ${missing[*]}; run me as root to apt-get install them" >&2
  exit 1
fi

echo "install.sh: missing ${missing[*]}; installing the Slurm, munge and MariaDB packages"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  slurmctld slurmd slurm-client munge slurmdbd mariadb-server
