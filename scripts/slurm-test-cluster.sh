#!/usr/bin/env bash
# A real single-node Slurm cluster on loopback, for tests and for developers.
#
#   scripts/slurm-test-cluster.sh [start] [DIR]   install (if missing), configure, start, wait idle
#   scripts/slurm-test-cluster.sh stop [DIR]      cancel the cluster's jobs, stop its daemons
#   scripts/slurm-test-cluster.sh status [DIR]    exit 0 when all daemons run and the node is up
#   scripts/slurm-test-cluster.sh env [DIR]       print the variables only
#
# DIR defaults to $SLURM_TEST_DIR, else /tmp/agora-slurm. Everything lives there: slurm.conf, a
# private munged (own key and socket), state, spool, logs (DIR/log/*.log), and the job completion
# file read by `sacct --completion`. `start` prints, on stdout only, lines to eval:
#
#   eval "$(scripts/slurm-test-cluster.sh start)"     # export SLURM_CONF=DIR/slurm.conf
#
# `start` is idempotent: daemons already running are left alone; a changed configuration
# restarts them. Ports: $SLURM_TEST_CTLD_PORT (16817) and $SLURM_TEST_SLURMD_PORT (16818), off
# the standard ones so a real Slurm on the host is not disturbed; a setting left unset keeps
# the value DIR was configured with (so a second cluster in another DIR keeps its own ports).
# Needs root (slurmd launches jobs, apt installs packages). Daemons are started directly: no
# systemd needed.
#
# Partitions: debug (default) and batch, both on the one node. There is deliberately no `gpu`.
# Finished jobs: `squeue -t all` / `scontrol show job` keep them for MinJobAge (300 s) after they
# end. After that, by $SLURM_TEST_ACCOUNTING:
#   jobcomp (default)  no database: jobcomp/filetxt writes DIR/jobcomp.txt, read by
#                      `sacct --completion` (-c) only; plain sacct says accounting is disabled.
#   slurmdbd           full accounting as on a real cluster: a private MariaDB server (datadir
#                      DIR/mariadb, 127.0.0.1:$SLURM_TEST_DB_PORT, 16306) and slurmdbd
#                      (127.0.0.1:$SLURM_TEST_DBD_PORT, 16819); plain `sacct` works. Installs
#                      mariadb-server and slurmdbd when missing. `sacct -c` works too.
#   unset              the mode the cluster in DIR was configured with, else jobcomp.
set -euo pipefail

cmd="start"
case "${1:-}" in
  start | stop | status | env | restart) cmd="$1"; shift ;;
  -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 0 ;;
esac
DIR="$(realpath -m "${1:-${SLURM_TEST_DIR:-/tmp/agora-slurm}}")"
CONF="$DIR/slurm.conf"
# Settings left unset keep the value DIR's configuration has, else take the default.
configured() { # file key default
  local value
  value="$(sed -n "s/^$2=//p" "$1" 2>/dev/null | head -n1)"
  echo "${value:-$3}"
}
CTLD_PORT="${SLURM_TEST_CTLD_PORT:-$(configured "$CONF" SlurmctldPort 16817)}"
SLURMD_PORT="${SLURM_TEST_SLURMD_PORT:-$(configured "$CONF" SlurmdPort 16818)}"
DBD_PORT="${SLURM_TEST_DBD_PORT:-$(configured "$DIR/slurmdbd.conf" DbdPort 16819)}"
DB_PORT="${SLURM_TEST_DB_PORT:-$(configured "$DIR/slurmdbd.conf" StoragePort 16306)}"
ACCOUNTING="${SLURM_TEST_ACCOUNTING:-}"
if [ -z "$ACCOUNTING" ]; then
  ACCOUNTING=jobcomp
  grep -qs '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF" && ACCOUNTING=slurmdbd
fi
case "$ACCOUNTING" in
  jobcomp | slurmdbd) ;;
  *) echo "SLURM_TEST_ACCOUNTING must be jobcomp or slurmdbd, not '$ACCOUNTING'" >&2; exit 2 ;;
esac
MUNGE_DIR="$DIR/munge"
MUNGE_SOCKET="$MUNGE_DIR/munge.socket.2"
export SLURM_CONF="$CONF"

log() { echo "slurm-test-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

running() { # daemon name: its pid file names a live process of that name (not a reused pid)
  local pidfile="$DIR/run/$1.pid" pid
  [ -s "$pidfile" ] || return 1
  pid="$(cat "$pidfile")"
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ]
}

install_packages() {
  local missing=()
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmctld >/dev/null || missing+=(slurmctld)
  command -v slurmd >/dev/null || missing+=(slurmd)
  command -v sbatch >/dev/null || missing+=(slurm-client)
  if [ "$ACCOUNTING" = slurmdbd ]; then
    command -v slurmdbd >/dev/null || missing+=(slurmdbd)
    command -v mariadbd >/dev/null || missing+=(mariadb-server)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]}: run as root, or apt-get install them"
  log "installing from Debian's packages: ${missing[*]}"
  # Keep the packages' init scripts from starting system-wide daemons (no systemd here).
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && added_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
    >"$DIR/apt.log" 2>&1 || { [ -z "$added_policy" ] || rm -f "$policy"; cat "$DIR/apt.log" >&2
    die "apt-get install ${missing[*]} failed"; }
  [ -z "$added_policy" ] || rm -f "$policy"
}

write_conf() { # prints the configuration for this host
  local host node_hw
  host="$(hostname -s)"
  # The node's real hardware, e.g. "CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2
  # ThreadsPerCore=1 RealMemory=24105", so --cpus-per-task and --mem are checked for real.
  node_hw="$(slurmd -C 2>/dev/null | head -n1 | tr ' ' '\n' \
    | grep -E '^(CPUs|Boards|SocketsPerBoard|CoresPerSocket|ThreadsPerCore|RealMemory)=' \
    | tr '\n' ' ')"
  if [ -z "$node_hw" ]; then
    node_hw="CPUs=$(nproc) RealMemory=$(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) "
  fi
  cat <<EOF
# Written by scripts/slurm-test-cluster.sh: a single-node test cluster on loopback.
ClusterName=agora-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
PlugStackConfig=$DIR/plugstack.conf
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$(accounting_conf)
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
EnforcePartLimits=ALL
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
SlurmdTimeout=10
SlurmctldTimeout=10
MessageTimeout=5
InactiveLimit=0
KillWait=2
MinJobAge=300
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1,batch_sched_delay=0,sched_min_interval=100000
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host ${node_hw}State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=batch Nodes=$host Default=NO MaxTime=INFINITE State=UP
EOF
}

accounting_conf() {
  if [ "$ACCOUNTING" = slurmdbd ]; then
    cat <<EOF
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$DBD_PORT
AccountingStoragePass=$MUNGE_SOCKET
EOF
  else
    printf '%s\n' "JobAcctGatherType=jobacct_gather/none" \
      "AccountingStorageType=accounting_storage/none"
  fi
}

# slurmdbd reads slurmdbd.conf from the directory of $SLURM_CONF.
write_dbd_conf() {
  cat <<EOF
# Written by scripts/slurm-test-cluster.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$DIR/log/slurmdbd.log
PidFile=$DIR/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
}

daemons() { # the daemons of this mode, in start order
  if [ "$ACCOUNTING" = slurmdbd ]; then
    echo munged mariadbd slurmdbd slurmctld slurmd
  else
    echo munged slurmctld slurmd
  fi
}

all_running() {
  local name
  for name in $(daemons); do running "$name" || return 1; done
}

wait_for() { # seconds description command...: poll every 0.05 s
  local tries=$(($1 * 20)) what="$2" _
  shift 2
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
  die "$what not ready after $tries polls: see $DIR/log"
}

db() { mariadb --no-defaults -S "$DIR/run/mysqld.sock" -uroot "$@"; }

start_mariadbd() {
  running mariadbd && return 0
  if [ ! -d "$DIR/mariadb/mysql" ]; then
    rm -rf "$DIR/mariadb"
    mariadb-install-db --no-defaults --datadir="$DIR/mariadb" --user=root \
      --auth-root-authentication-method=socket --skip-test-db \
      >"$DIR/log/mariadb-install.log" 2>&1 \
      || die "mariadb-install-db failed: see $DIR/log/mariadb-install.log"
  fi
  port_in_use "$DB_PORT" && die "port $DB_PORT is in use: set SLURM_TEST_DB_PORT"
  # Detached (own session), like the daemons that fork themselves.
  setsid mariadbd --no-defaults --datadir="$DIR/mariadb" --user=root \
    --socket="$DIR/run/mysqld.sock" --port="$DB_PORT" --bind-address=127.0.0.1 \
    --pid-file="$DIR/run/mariadbd.pid" --log-error="$DIR/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --innodb-flush-log-at-trx-commit=0 --skip-log-bin \
    </dev/null >/dev/null 2>&1 &
  wait_for 30 "mariadbd" db -e "SELECT 1"
  db -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"
}

start_slurmdbd() {
  running slurmdbd && return 0
  port_in_use "$DBD_PORT" && die "port $DBD_PORT is in use: set SLURM_TEST_DBD_PORT"
  slurmdbd || die "slurmdbd did not start: see $DIR/log/slurmdbd.log"
  wait_for 30 "slurmdbd" sacctmgr -n list cluster
  if [ -z "$(sacctmgr -n -P list cluster agora-test format=cluster 2>/dev/null)" ]; then
    sacctmgr -i add cluster agora-test >/dev/null
  fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

node_state() { sinfo -h -N -o '%t' 2>/dev/null | head -n1; }

print_env() { echo "export SLURM_CONF=$CONF"; }

stop_daemons() { # name... : SIGTERM them all at once, then wait (SIGKILL after 5 s)
  local name pid pids=() _
  for name in "$@"; do
    if running "$name"; then
      pid="$(cat "$DIR/run/$name.pid")"
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
  done
  for _ in $(seq 1 100); do
    [ ${#pids[@]} -eq 0 ] && break
    local left=()
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    pids=("${left[@]+"${left[@]}"}")
    sleep 0.05
  done
  for pid in "${pids[@]+"${pids[@]}"}"; do
    log "pid $pid ignored SIGTERM for 5 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  done
  for name in "$@"; do rm -f "$DIR/run/$name.pid"; done
}

do_stop() {
  if running slurmctld && running slurmd; then
    # Cancel this cluster's jobs so no job step outlives its slurmd.
    local jobs _
    jobs="$(squeue -h -o '%i' 2>/dev/null || true)"
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 1 50); do
        [ -z "$(squeue -h -t running,completing -o '%i' 2>/dev/null || true)" ] && break
        sleep 0.1
      done
    fi
  fi
  # All at once: each takes ~2 s (slurmctld ~4 s without its slurmdbd). Whatever the controller
  # could not send slurmdbd it keeps in its state (dbd.messages) and sends at its next start.
  stop_daemons slurmd slurmctld slurmdbd mariadbd munged
  log "stopped (files kept in $DIR)"
}

start_munged() {
  running munged && return 0
  mkdir -p "$MUNGE_DIR" && chmod 755 "$MUNGE_DIR"
  [ -s "$MUNGE_DIR/munge.key" ] || mungekey --create --keyfile="$MUNGE_DIR/munge.key"
  chmod 600 "$MUNGE_DIR/munge.key"
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  munged --socket="$MUNGE_SOCKET" --key-file="$MUNGE_DIR/munge.key" \
    --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" \
    --seed-file="$MUNGE_DIR/munged.seed" --num-threads=4 \
    || die "munged did not start: see $DIR/log/munged.log"
  local _
  for _ in $(seq 1 50); do [ -S "$MUNGE_SOCKET" ] && return 0; sleep 0.1; done
  die "munged created no socket: see $DIR/log/munged.log"
}

do_start() {
  [ "$(id -u)" -eq 0 ] || die "the test cluster needs root (slurmd launches the jobs)"
  mkdir -p "$DIR"
  install_packages
  mkdir -p "$DIR/state" "$DIR/spool" "$DIR/run" "$DIR/log"
  chmod 755 "$DIR"
  local new new_dbd=""
  new="$(write_conf)"
  [ "$ACCOUNTING" = slurmdbd ] && new_dbd="$(write_dbd_conf)"
  if [ ! -f "$CONF" ] || [ "$new" != "$(cat "$CONF")" ] \
    || [ "$new_dbd" != "$(cat "$DIR/slurmdbd.conf" 2>/dev/null || true)" ]; then
    if running slurmctld || running slurmd || running slurmdbd; then
      log "configuration changed: restarting"
      do_stop
    fi
    printf '%s\n' "$new" >"$CONF"
    rm -f "$DIR/slurmdbd.conf"
    if [ -n "$new_dbd" ]; then
      (umask 077 && printf '%s\n' "$new_dbd" >"$DIR/slurmdbd.conf")
    fi
  fi
  [ -f "$DIR/plugstack.conf" ] || : >"$DIR/plugstack.conf"
  touch "$DIR/jobcomp.txt"

  if all_running; then
    case "$(node_state)" in idle | mix | alloc) print_env; return 0 ;; esac
  fi
  # Refuse to start on ports another daemon holds (another cluster dir, a real Slurm).
  if ! running slurmctld && port_in_use "$CTLD_PORT"; then
    die "port $CTLD_PORT is in use: stop the other cluster or set SLURM_TEST_CTLD_PORT"
  fi
  if ! running slurmd && port_in_use "$SLURMD_PORT"; then
    die "port $SLURMD_PORT is in use: stop the other cluster or set SLURM_TEST_SLURMD_PORT"
  fi
  start_munged
  if [ "$ACCOUNTING" = slurmdbd ]; then
    start_mariadbd
    start_slurmdbd
  fi
  if ! running slurmctld; then
    slurmctld -f "$CONF" || die "slurmctld did not start: see $DIR/log/slurmctld.log"
  fi
  # A slurmd that registers before the controller listens is only seen at its next try, ~20 s on.
  wait_for 30 "slurmctld" scontrol ping
  # The node is up once this slurmd has registered (the controller may recover it as idle from
  # its saved state before that).
  local since=0
  if ! running slurmd; then
    since="$(date +%s)"
    slurmd -f "$CONF" -N "$(hostname -s)" || die "slurmd did not start: see $DIR/log/slurmd.log"
  fi
  local _ state="" registered
  for _ in $(seq 1 300); do
    state="$(node_state)"
    case "$state" in
      idle | mix | alloc)
        registered="$(scontrol -o show node "$(hostname -s)" 2>/dev/null \
          | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2)"
        registered="$(date -d "$registered" +%s 2>/dev/null || echo 0)"
        [ "$registered" -ge "$since" ] && break
        state="unregistered" ;;
      drain* | down* | fail*)
        # A node left down by an earlier run comes back at once.
        scontrol update nodename="$(hostname -s)" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 0.1
  done
  case "$state" in
    idle | mix | alloc) ;;
    *)
      tail -n 20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
      die "node not idle after 30 s (state '${state}'): see $DIR/log" ;;
  esac
  log "running in $DIR (node $(hostname -s) $state)"
  print_env
}

do_status() {
  local rc=0 name
  for name in $(daemons); do
    if running "$name"; then
      echo "$name: running (pid $(cat "$DIR/run/$name.pid"))"
    else
      echo "$name: stopped"; rc=3
    fi
  done
  if [ $rc -eq 0 ]; then
    sinfo -o '%P %a %D %t %c %m %N' || rc=3
  fi
  echo "SLURM_CONF=$CONF"
  return $rc
}

case "$cmd" in
  start) do_start ;;
  stop) do_stop ;;
  restart) do_stop; do_start ;;
  status) do_status ;;
  env) print_env ;;
esac
