#!/usr/bin/env bash
# A two-node Slurm cluster on this machine for the tests: munge, slurmctld and two slurmd (nodes n1 and n2) on
# loopback, CPU only, one partition `debug`. Both slurmd run on this host, each with its own node name (`-N`),
# port, spool folder, pid file and log, as a Slurm built with --enable-multiple-slurmd allows (Debian's is:
# `scontrol show config` says MULTIPLE_SLURMD = Yes), on one host (NodeHostname shared, NodeAddr 127.0.0.1);
# n1 and n2 resolve to 127.0.0.1 through /etc/hosts, as a cluster's node names resolve, so that a job's first
# node can serve as the rendezvous address (Lightning's SLURM environment). Each node has every CPU of the
# machine (oversubscribed), so a one-node job gets as many CPUs as before and a job of one task on each of two
# nodes fits. `scripts/slurm.sh start` installs Debian's slurm-wlm and munge where missing and is idempotent;
# `scripts/slurm.sh stop` ends the daemons. Needs root (apt-get, /etc/slurm, /etc/munge, /etc/hosts).
set -euo pipefail
HOST="$(hostname -s)"
CONF=/etc/slurm/slurm.conf
NODES=(n1 n2)
PORTS=(17001 17002)

# True when the controller answers and lists both nodes of this cluster, each idle, mixed or allocated.
cluster_up() {
  local states
  states="$(sinfo -h -N -o '%N %T' 2>/dev/null)" || return 1
  for node in "${NODES[@]}"; do
    grep -qE "^${node} (idle|mix|alloc)" <<<"$states" || return 1
  done
}

slurmd_running() {  # NODE: its slurmd's pid file names a live process
  local pid_file="/run/slurmd-$1.pid"
  [ -s "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null
}

write_conf() {
  local cpus memory
  cpus="$(nproc)"
  memory=$(( $(free -m | awk '/Mem:/ {print $2}') * 3 / 8 ))  # three quarters of memory, shared by the two
  cat > "$CONF" <<CONF
ClusterName=alignmix
SlurmctldHost=${HOST}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd/%n
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd-%n.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd-%n.log
NodeName=${NODES[0]} NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=${PORTS[0]} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
NodeName=${NODES[1]} NodeHostname=${HOST} NodeAddr=127.0.0.1 Port=${PORTS[1]} CPUs=${cpus} RealMemory=${memory} State=UNKNOWN
PartitionName=debug Nodes=${NODES[0]},${NODES[1]} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
}

start() {
  if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null
  fi
  if cluster_up && slurmd_running "${NODES[0]}" && slurmd_running "${NODES[1]}"; then
    echo "slurm: already running (nodes ${NODES[*]}, partition debug)"; return
  fi
  stop >/dev/null  # a partial or older (one-node) cluster: start again from its configuration
  mkdir -p /etc/slurm /etc/munge /var/spool/slurmctld /var/log/slurm /run/munge /var/lib/munge /var/log/munge
  for node in "${NODES[@]}"; do
    mkdir -p "/var/spool/slurmd/${node}"
    grep -qE "^127\.0\.0\.1([[:space:]].*)?[[:space:]]${node}([[:space:]]|$)" /etc/hosts \
      || echo "127.0.0.1 ${node}" >> /etc/hosts
  done
  [ -s /etc/munge/munge.key ] || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
  chmod 0700 /etc/munge && chmod 0400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || su -s /bin/sh munge -c "munged" || munged --force
  write_conf
  slurmctld
  for node in "${NODES[@]}"; do slurmd -N "$node"; done
  for _ in $(seq 1 30); do
    if cluster_up; then echo "slurm: nodes ${NODES[*]} up, partition debug"; return; fi
    sleep 1
  done
  echo "error: slurm: the nodes did not come up; see /var/log/slurm/ ($(sinfo -h -N -o '%N %T' 2>&1 | xargs));" \
    "two slurmd on one host need a Slurm built with --enable-multiple-slurmd" \
    "($(scontrol show config 2>/dev/null | grep -E '^MULTIPLE_SLURMD' | xargs || echo 'MULTIPLE_SLURMD unknown'))" >&2
  exit 1
}

# Ends the daemons this script starts, by their pid files, then any slurmd or slurmctld left without one (an
# older configuration's), and munged.
stop() {
  local pid_file
  for pid_file in /run/slurmd-*.pid /run/slurmd.pid /run/slurmctld.pid; do
    [ -s "$pid_file" ] && kill "$(cat "$pid_file")" 2>/dev/null || true
  done
  pkill -x slurmd 2>/dev/null || true
  pkill -x slurmctld 2>/dev/null || true
  for _ in $(seq 1 20); do pgrep -x slurmd >/dev/null || pgrep -x slurmctld >/dev/null || break; sleep 0.5; done
  rm -f /run/slurmd-*.pid /run/slurmd.pid /run/slurmctld.pid
  pkill -x munged 2>/dev/null || true
  echo "slurm: stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
