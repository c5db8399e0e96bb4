#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for tests and CI (Debian/Ubuntu, root, no systemd needed).
#
#   scripts/slurm/local_cluster.sh up      install slurm-wlm + munge if missing, start munged/slurmctld/slurmd
#   scripts/slurm/local_cluster.sh down    stop only the daemons that `up` started (by pid)
#   scripts/slurm/local_cluster.sh status  exit 0 when the node is idle/allocated/mixed
#   scripts/slurm/local_cluster.sh env     print the `export SLURM_CONF=...` line clients need
#   scripts/slurm/local_cluster.sh settings  print the slurm.conf lines shared by every test cluster
#   scripts/slurm/local_cluster.sh install   only install slurm-wlm + munge if missing (tests/multinode)
#
# Every client (sinfo, sbatch, srun, scontrol, submitit) needs SLURM_CONF=$ROOT/etc/slurm.conf.
# State, logs and the config live under $LAZYDET_SLURM_ROOT (default /tmp/lazydet-slurm).
# Tuned for tests: a requeued job restarts after ~10 s (AuthInfo=cred_expire=10, sched_interval=1).
set -euo pipefail

ROOT=${LAZYDET_SLURM_ROOT:-/tmp/lazydet-slurm}
CTLD_PORT=${LAZYDET_SLURMCTLD_PORT:-6817}
SLURMD_PORT=${LAZYDET_SLURMD_PORT:-6818}
export SLURM_CONF=$ROOT/etc/slurm.conf
MUNGE_PID=/run/munge/munged.pid

log() { echo "local_cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

alive() {  # alive PIDFILE NAME: the pid in PIDFILE runs a process called NAME
  [ -s "$1" ] || return 1
  local pid
  pid=$(cat "$1")
  kill -0 "$pid" 2>/dev/null && grep -qs "$2" "/proc/$pid/comm"
}

install_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "slurm-wlm/munge are missing and installing them needs root (apt-get)"
  log "installing slurm-wlm and munge with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  local pkgs=(slurm-wlm munge)
  if ! apt-get install -y --no-install-recommends "${pkgs[@]}" >"$ROOT/log/apt.log" 2>&1; then
    log "apt-get install failed; running apt-get update and retrying"
    apt-get update >>"$ROOT/log/apt.log" 2>&1 || die "apt-get update failed, see $ROOT/log/apt.log"
    apt-get install -y --no-install-recommends "${pkgs[@]}" >>"$ROOT/log/apt.log" 2>&1 \
      || die "apt-get install slurm-wlm munge failed, see $ROOT/log/apt.log"
  fi
}

test_settings() {  # the slurm.conf lines every test cluster shares (also tests/multinode's two-node cluster)
  cat <<'CONF'
SlurmUser=root
AuthType=auth/munge
# cred_expire is also how long a requeued job waits before it may start again (default 120 s)
AuthInfo=cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# main scheduling loop every 1 s (default 60) so requeued jobs start promptly
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
ReturnToService=2
KillWait=5
MinJobAge=600
CONF
}

write_config() {
  # Node line from the hardware, named localhost; RealMemory at 90% so the node never drains as "Low RealMemory".
  local node mem
  node=$(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+/NodeName=localhost NodeAddr=127.0.0.1/')
  mem=$(sed -E 's/.*RealMemory=([0-9]+).*/\1/' <<<"$node")
  node=$(sed -E "s/RealMemory=[0-9]+/RealMemory=$((mem * 9 / 10))/" <<<"$node")
  cat >"$SLURM_CONF" <<CONF
ClusterName=lazydet-ci
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
StateSaveLocation=$ROOT/state
SlurmdSpoolDir=$ROOT/spool
SlurmctldPidFile=$ROOT/run/slurmctld.pid
SlurmdPidFile=$ROOT/run/slurmd.pid
SlurmctldLogFile=$ROOT/log/slurmctld.log
SlurmdLogFile=$ROOT/log/slurmd.log
JobCompLoc=$ROOT/log/jobcomp.log
$(test_settings)
$node State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
}

node_ready() {
  local state
  state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
  case "$state" in idle|mixed|allocated|completing) return 0 ;; *) return 1 ;; esac
}

wait_for() {  # wait_for SECONDS COMMAND...: poll every 0.25 s
  local tries=$(($1 * 4))
  shift
  for _ in $(seq 1 "$tries"); do "$@" && return 0; sleep 0.25; done
  return 1
}

start_munged() {
  if alive "$MUNGE_PID" munged; then
    log "munged already running (pid $(cat "$MUNGE_PID")); leaving it alone"
    return 0
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- mungekey --create >/dev/null 2>&1 || die "no /etc/munge/munge.key and mungekey failed"
  fi
  runuser -u munge -- /usr/sbin/munged || die "munged failed to start (see /var/log/munge/munged.log)"
  wait_for 10 alive "$MUNGE_PID" munged || die "munged did not write $MUNGE_PID"
  cp "$MUNGE_PID" "$ROOT/run/started.munged"
}

start_daemon() {  # start_daemon NAME ARGS...: start unless our own copy already runs; remember its pid
  local name=$1
  shift
  if alive "$ROOT/run/$name.pid" "$name"; then
    log "$name already running (pid $(cat "$ROOT/run/$name.pid"))"
    return 0
  fi
  rm -f "$ROOT/run/$name.pid"
  "$name" "$@" || die "$name failed to start, see $ROOT/log/$name.log"
  wait_for 10 alive "$ROOT/run/$name.pid" "$name" || die "$name did not start, see $ROOT/log/$name.log"
  cp "$ROOT/run/$name.pid" "$ROOT/run/started.$name"
}

up() {
  mkdir -p "$ROOT"/{etc,state,spool,log,run}
  install_packages
  [ "$(id -u)" = 0 ] || die "starting munged/slurmd needs root"
  write_config
  start_munged
  start_daemon slurmctld
  start_daemon slurmd -N localhost
  wait_for 30 node_ready || die "node localhost not ready: $(sinfo -h -n localhost -o '%T %E' 2>&1)"
  log "cluster up: $(sinfo -h -o '%P %a %D %T %N')"
  echo "export SLURM_CONF=$SLURM_CONF"
}

down() {
  local f name pid
  for name in slurmd slurmctld munged; do
    f=$ROOT/run/started.$name
    [ -s "$f" ] || continue
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null && grep -qs "$name" "/proc/$pid/comm"; then
      kill "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      log "stopped $name (pid $pid)"
    fi
    rm -f "$f"
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) command -v sinfo >/dev/null && [ -s "$SLURM_CONF" ] && node_ready ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  settings) test_settings ;;
  install) mkdir -p "$ROOT/log" && install_packages ;;
  *) echo "usage: $0 up|down|status|env|settings|install" >&2; exit 2 ;;
esac
