#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine (munged + slurmctld + slurmd, Debian's
# slurm-wlm), to test synfed's Slurm recipes for real. Needs root and the packages
# `slurm-wlm munge` (apt-get install -y slurm-wlm munge).
#
#   deploy/slurm/local-cluster.sh start DIR    # writes DIR/slurm.conf, starts the daemons
#   deploy/slurm/local-cluster.sh stop DIR
#
# Exit status 3: the daemons could not start here. Then `export SLURM_CONF=DIR/slurm.conf` and use sbatch/squeue/sacct as on any cluster. The
# node advertises CPUS (default 8) even on a smaller machine (config_overrides), so that a
# 3-task array and a 4-task federation fit at once; jobs oversubscribe the real cores.
set -euo pipefail
action=${1:?start or stop}
dir=$(realpath -m "${2:?state folder}")
cpus=${CPUS:-8}
case "$action" in
start)
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  host=$(hostname -s)
  mem=$(($(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024))
  cat > "$dir/slurm.conf" <<CONF
ClusterName=synfed-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmdSpoolDir=$dir/spool
StateSaveLocation=$dir/state
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  # munge: the package's key; a daemon of our own unless one runs already
  if ! pgrep -x munged > /dev/null; then
    mkdir -p /run/munge && chown munge:munge /run/munge
    su -s /bin/sh munge -c "/usr/sbin/munged" || /usr/sbin/munged --force
  fi
  export SLURM_CONF="$dir/slurm.conf"
  /usr/sbin/slurmctld -f "$SLURM_CONF" || exit 3
  /usr/sbin/slurmd -f "$SLURM_CONF" || exit 3
  for _ in $(seq 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      sinfo
      exit 0
    fi
    sleep 1
  done
  echo "the node did not come up; logs in $dir/log" >&2
  tail -20 "$dir/log/"*.log >&2
  exit 3
  ;;
stop)
  for daemon in slurmd slurmctld; do
    if [[ -f "$dir/$daemon.pid" ]]; then
      kill "$(cat "$dir/$daemon.pid")" 2>/dev/null || true
    fi
  done
  sleep 1
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
