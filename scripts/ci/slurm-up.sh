#!/usr/bin/env bash
# A one-node SLURM cluster from Debian's packages, for the tests marked `slurm` (.ci/run):
# munged, MariaDB + slurmdbd (so that sacct works: submitit reads job states from it),
# slurmctld and slurmd, all started here without systemd or cgroups; their pids, logs and
# state live in $XENTLAB_SLURM_DIR. scripts/ci/slurm-down.sh stops them by pid.
#   apt-get install slurmctld slurmd slurm-client munge slurmdbd mariadb-server   # as root
#   scripts/ci/slurm-up.sh && sinfo
set -euo pipefail
D=${XENTLAB_SLURM_DIR:-/tmp/xentlab-slurm}
if timeout 3 sinfo -h >/dev/null 2>&1; then echo "slurm-up: a cluster already answers (sinfo); nothing started"; exit 0; fi
rm -rf "$D" && mkdir -p "$D"/ctld "$D"/d "$D"/db "$D"/munge /run/munge /etc/slurm
chown munge:munge /run/munge "$D"/munge
chown mysql:mysql "$D"/db

wait_for() {  # wait_for <seconds> <what> <command...>: until the command succeeds
  local limit=$1 what=$2; shift 2
  for _ in $(seq $((limit * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "slurm-up: $what did not come up within ${limit} s; logs in $D" >&2; exit 1
}

[ -s /etc/munge/munge.key ] || runuser -u munge -- mungekey --create
runuser -u munge -- munged --pid-file="$D"/munge/munged.pid --socket=/run/munge/munge.socket.2 \
  --log-file="$D"/munge/munged.log
wait_for 10 munged munge -n

mariadb-install-db --user=mysql --datadir="$D"/db --auth-root-authentication-method=socket >"$D"/mariadb-install.log 2>&1
mariadbd --user=mysql --datadir="$D"/db --socket="$D"/db/mysql.sock --bind-address=127.0.0.1 --port=13306 \
  --skip-name-resolve --log-error="$D"/db/mariadbd.log &
echo $! >"$D"/mariadbd.pid
wait_for 30 mariadbd mariadb --socket="$D"/db/mysql.sock -e "select 1"
mariadb --socket="$D"/db/mysql.sock -e "CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

node=$(slurmd -C | head -1)
cat >/etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$D/slurmdbd.pid
LogFile=$D/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=13306
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
chmod 600 /etc/slurm/slurmdbd.conf
cat >/etc/slurm/slurm.conf <<EOF
ClusterName=xentlab
SlurmctldHost=$(hostname -s)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/d
SlurmctldPidFile=$D/slurmctld.pid
SlurmdPidFile=$D/slurmd.pid
SlurmctldLogFile=$D/slurmctld.log
SlurmdLogFile=$D/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
EnforcePartLimits=ALL
MpiDefault=none
ReturnToService=2
SchedulerParameters=sched_interval=2
$node
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

slurmdbd
wait_for 30 slurmdbd sacctmgr -n list cluster
slurmctld
slurmd
wait_for 60 "the node (idle in sinfo)" bash -c 'sinfo -h -o %T | grep -qx idle'
sinfo
