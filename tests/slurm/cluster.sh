#!/bin/bash
# A real single-node SLURM cluster with accounting, under one directory, for nfebench's `slurm` tests.
#
#   tests/slurm/cluster.sh install          apt-get the Debian packages (slurm-wlm 22.05, munge, slurmdbd, MariaDB)
#   tests/slurm/cluster.sh start DIR        start munged, a private MariaDB, slurmdbd, slurmctld and slurmd under DIR;
#                                           prints `export SLURM_CONF=DIR/slurm.conf` (clients and jobs read it)
#   tests/slurm/cluster.sh stop DIR         stop every daemon started under DIR (by the pids in its pid files)
#
# Needs root (slurmd runs jobs as their user; SlurmUser=root). No systemd or cgroups: the daemons run as plain
# background processes, ProctrackType=proctrack/linuxproc, TaskPlugin=task/none. The node advertises more than
# this machine has (SlurmdParameters=config_overrides): NODE_CPUS (16), NODE_MEM_MB (65536) and NODE_GPUS (2) fake
# GPUs (character devices equal to /dev/null), so that the shipped launcher defaults (1 GPU, 8 CPUs, 32 GB) are
# accepted; jobs then see CUDA_VISIBLE_DEVICES but no real GPU. Measured facts: docs/cluster.md.
set -euo pipefail

cmd=${1:-}
dir=${2:-}
PACKAGES="slurmctld slurmd slurm-client slurmdbd munge mariadb-server"

pidof_file() { [ -s "$1" ] && cat "$1" || true; }

stop_pid() {  # stop_pid PIDFILE: TERM, wait up to 10 s, then KILL (only the process named in the file)
    local pid
    pid=$(pidof_file "$1")
    [ -n "$pid" ] || return 0
    kill "$pid" 2>/dev/null || { rm -f "$1"; return 0; }
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$1"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local what=$2 end=$((SECONDS + $1))
    shift 2
    while [ $SECONDS -lt $end ]; do timeout 5 "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "cluster.sh: $what did not come up within $t s (logs: $dir/log)" >&2
    return 1
}

case "$cmd" in
install)
    [ "$(id -u)" = 0 ] || { echo "cluster.sh: install needs root" >&2; exit 2; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null
    ;;
start)
    [ -n "$dir" ] || { echo "usage: cluster.sh start DIR" >&2; exit 2; }
    [ "$(id -u)" = 0 ] || { echo "cluster.sh: start needs root" >&2; exit 2; }
    for b in munged mariadbd mariadb-install-db slurmdbd slurmctld slurmd sbatch sacct sacctmgr; do
        command -v "$b" >/dev/null || { echo "cluster.sh: $b not found (run: cluster.sh install)" >&2; exit 2; }
    done
    mkdir -p "$dir"/{log,state,spool,munge,dev}
    dir=$(cd "$dir" && pwd)
    trap 'echo "cluster.sh: start failed; stopping what started" >&2; "$0" stop "$dir"' ERR
    host=$(hostname -s)
    cpus=${NODE_CPUS:-16}; mem=${NODE_MEM_MB:-65536}; gpus=${NODE_GPUS:-2}
    ctld_port=$(free_port); d_port=$(free_port); dbd_port=$(free_port); db_port=$(free_port)

    # munge: its own key and socket (munged refuses to run as root; the munge user owns its directory)
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=128 status=none
    chown -R munge:munge "$dir/munge"; chmod 711 "$dir/munge"; chmod 400 "$dir/munge/munge.key"
    chmod 755 "$dir"  # the munge user must reach its directory
    runuser -u munge -- munged --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    wait_for 10 munged test -S "$dir/munge/munge.socket"

    # a private MariaDB for slurmdbd: own datadir, TCP on 127.0.0.1 only, no grant tables
    mariadb-install-db --datadir="$dir/mysql" --user=root --auth-root-authentication-method=normal \
        --skip-test-db >"$dir/log/mariadb-install.log" 2>&1
    mariadbd --no-defaults --datadir="$dir/mysql" --user=root --bind-address=127.0.0.1 --port="$db_port" \
        --socket="$dir/mysql.sock" --pid-file="$dir/mariadb.pid" --skip-grant-tables --log-error="$dir/log/mariadb.log" \
        --innodb-buffer-pool-size=32M --innodb-log-file-size=8M --performance-schema=OFF >/dev/null 2>&1 &
    wait_for 60 mariadb mariadb-admin --no-defaults --socket="$dir/mysql.sock" ping

    # fake GPUs: character devices equal to /dev/null, advertised in gres.conf
    for i in $(seq 0 $((gpus - 1))); do [ -e "$dir/dev/nvidia$i" ] || mknod "$dir/dev/nvidia$i" c 1 3; done
    gres=""
    [ "$gpus" -gt 0 ] && gres="Gres=gpu:$gpus" && echo "NodeName=$host Name=gpu File=$dir/dev/nvidia[0-$((gpus - 1))]" >"$dir/gres.conf"
    [ "$gpus" -gt 0 ] || : >"$dir/gres.conf"

    cat >"$dir/slurmdbd.conf" <<EOF
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=root
StorageLoc=slurm_acct_db
PidFile=$dir/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
EOF
    chmod 600 "$dir/slurmdbd.conf"

    cat >"$dir/slurm.conf" <<EOF
ClusterName=nfebench
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
EnforcePartLimits=ALL
KillWait=2
MinJobAge=300
ReturnToService=2
SlurmdParameters=config_overrides
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$dbd_port
AccountingStoragePass=$dir/munge/munge.socket
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem $gres State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster nfebench >/dev/null 2>&1 || true
    slurmctld
    wait_for 30 slurmctld scontrol ping
    slurmd -N "$host"
    wait_for 30 "slurmd (node idle)" bash -c "sinfo -h -o %T | grep -qx idle"
    trap - ERR
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;
stop)
    [ -n "$dir" ] || { echo "usage: cluster.sh stop DIR" >&2; exit 2; }
    [ -d "$dir" ] || exit 0
    for f in slurmd.pid slurmctld.pid slurmdbd.pid mariadb.pid munge/munged.pid; do stop_pid "$dir/$f"; done
    ;;
*)
    echo "usage: cluster.sh install | start DIR | stop DIR" >&2
    exit 2
    ;;
esac
