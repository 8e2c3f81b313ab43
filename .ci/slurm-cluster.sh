#!/usr/bin/env bash
# A throwaway single-node SLURM cluster (Debian's SLURM 22.05) for testing the
# workflow's SLURM profile end to end on one machine, e.g. a CI runner.
#
#   .ci/slurm-cluster.sh install             install slurmctld, slurmd, slurm-client, munge
#   .ci/slurm-cluster.sh packages            print those Debian package names (for one apt-get call)
#   .ci/slurm-cluster.sh start STATE_DIR     configure and start munged, slurmctld, slurmd
#   .ci/slurm-cluster.sh env STATE_DIR       print `export SLURM_CONF=...` (optional, see below)
#   .ci/slurm-cluster.sh stop STATE_DIR      cancel jobs, stop the daemons started by `start`
#
# Everything the cluster writes (slurm.conf, gres.conf, munge key and socket,
# controller state, slurmd spool, PID files, logs, job completion records)
# stays inside STATE_DIR. The one exception: /etc/slurm/slurm.conf and
# /etc/slurm/gres.conf become symlinks to STATE_DIR while the cluster runs,
# because Snakemake's job-step executor removes SLURM_CONF from the environment
# of the `srun` it runs inside every job, so that srun only finds the default
# path. `start` refuses to replace a real (non-symlink) /etc/slurm/slurm.conf,
# and `stop` removes the links again. Example:
#
#   .ci/slurm-cluster.sh start "$RUNNER_TEMP/slurm"
#   sbatch --wrap 'hostname'; srun --gpus=1 env | grep CUDA_VISIBLE_DEVICES
#   .ci/slurm-cluster.sh stop "$RUNNER_TEMP/slurm"
#
# The node is the local host (`hostname -s`, address 127.0.0.1) with `nproc`
# CPUs, 90% of the memory `slurmd -C` reports and one fake GPU backed by
# /dev/null, so `--gpus=1` jobs are schedulable and get CUDA_VISIBLE_DEVICES=0
# even on a machine without a GPU (PyTorch still sees no CUDA there).
# No cgroups, no accounting database: jobs are tracked with proctrack/linuxproc,
# finished jobs are listed in STATE_DIR/jobcomp.log (jobcomp/filetxt), and `sacct`
# does not work, so Snakemake must use `slurm-status-command: squeue`.
#
# install/start/stop need root; when run as another user they re-run themselves
# through sudo. Environment knobs:
#   HKD_SLURMCTLD_PORT (default 6817), HKD_SLURMD_PORT (default 6818)
#   HKD_SLURM_PARTITION (default main), HKD_SLURM_START_TIMEOUT (default 60 s)
set -euo pipefail

PACKAGES=(slurmctld slurmd slurm-client munge)
CTLD_PORT="${HKD_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${HKD_SLURMD_PORT:-6818}"
PARTITION="${HKD_SLURM_PARTITION:-main}"
START_TIMEOUT="${HKD_SLURM_START_TIMEOUT:-60}"
# Daemons in the order they are started; `stop` goes through them backwards.
DAEMONS=(munged slurmctld slurmd)

log() { printf '[slurm-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "must run as root (and sudo is not available)"
        exec sudo --preserve-env=HKD_SLURMCTLD_PORT,HKD_SLURMD_PORT,HKD_SLURM_PARTITION,HKD_SLURM_START_TIMEOUT \
            bash "$(readlink -f "$0")" "$@"
    fi
}

state_dir_arg() {
    [ -n "${1:-}" ] || usage
    readlink -m -- "$1"
}

# ---------------------------------------------------------------- install ---
cmd_install() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if [ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" != "install ok installed" ]; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "already installed: ${PACKAGES[*]}"
        return 0
    fi
    log "installing ${missing[*]}"
    local aptlog
    aptlog="$(mktemp)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
            >"$aptlog" 2>&1; then
        cat "$aptlog" >&2
        rm -f "$aptlog"
        die "apt-get install failed"
    fi
    rm -f "$aptlog"
    log "installed: $(slurmctld -V)"
}

# ------------------------------------------------------------------ start ---
elapsed_since() {  # elapsed_since T0_NS: seconds since T0 with one decimal
    local ms=$(( ($(date +%s%N) - $1) / 1000000 ))
    printf '%d.%d' $(( ms / 1000 )) $(( ms % 1000 / 100 ))
}

pid_alive() {  # pid_alive NAME PIDFILE: the recorded process exists and is NAME
    local pid
    [ -s "$2" ] || return 1
    pid="$(cat "$2")"
    [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$1" ]
}

wait_exec() {  # wait_exec NAME PIDFILE: wait until the launched process has become NAME
    local pid i
    pid="$(cat "$2")"
    for i in $(seq 1 100); do  # setsid/setpriv exec into the daemon within milliseconds
        [ -d "/proc/$pid" ] || return 1
        pid_alive "$1" "$2" && return 0
        sleep 0.05
    done
    return 1
}

print_logs() {
    local state="$1" f
    # *.log: the daemons' log files; *.out: their stderr, which also holds what
    # went wrong before a log file was opened (e.g. configuration errors).
    for f in "$state/munged.out" "$state/slurmctld.log" "$state/slurmd.log" \
             "$state/slurmctld.out" "$state/slurmd.out"; do
        [ -s "$f" ] || continue
        printf '===== %s (last 40 lines) =====\n' "$f" >&2
        tail -n 40 "$f" >&2 || true
    done
}

write_configs() {
    local state="$1" node="$2" cpus="$3" mem="$4"
    cat >"$state/slurm.conf" <<EOF
# Single-node test cluster written by .ci/slurm-cluster.sh; do not edit by hand.
ClusterName=hkd-ci
SlurmctldHost=${node}(127.0.0.1)
SlurmctldPort=${CTLD_PORT}
SlurmdPort=${SLURMD_PORT}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${state}/munge/munge.socket

StateSaveLocation=${state}/slurmctld-state
SlurmdSpoolDir=${state}/slurmd-spool
SlurmctldPidFile=${state}/run/slurmctld.pid
SlurmdPidFile=${state}/run/slurmd.pid
SlurmctldLogFile=${state}/slurmctld.log
SlurmdLogFile=${state}/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups and no accounting database.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=${state}/jobcomp.log
MpiDefault=none
MailProg=/bin/true

SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
DefMemPerCPU=256
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes (Snakemake polls with squeue).
MinJobAge=300

GresTypes=gpu
NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} Gres=gpu:1 State=UNKNOWN
PartitionName=${PARTITION} Nodes=${node} Default=YES MaxTime=INFINITE State=UP
EOF
    # One fake GPU: File= must name a character device, /dev/null does.
    cat >"$state/gres.conf" <<EOF
AutoDetect=off
NodeName=${node} Name=gpu File=/dev/null
EOF
    chmod 0644 "$state/slurm.conf" "$state/gres.conf"
}

SYSTEM_CONF_DIR=/etc/slurm

link_system_config() {  # /etc/slurm/{slurm,gres}.conf -> STATE_DIR
    local state="$1" f target
    mkdir -p "$SYSTEM_CONF_DIR"
    for f in slurm.conf gres.conf; do
        target="$SYSTEM_CONF_DIR/$f"
        if [ -e "$target" ] && [ ! -L "$target" ]; then
            die "$target exists and is not a link made by this script; not replacing it"
        fi
        if [ -L "$target" ] && [ "$(readlink "$target")" != "$state/$f" ]; then
            log "replacing stale link $target -> $(readlink "$target")"
        fi
        ln -sfn "$state/$f" "$target"
    done
}

unlink_system_config() {  # remove the links if they point into STATE_DIR
    local state="$1" f target
    for f in slurm.conf gres.conf; do
        target="$SYSTEM_CONF_DIR/$f"
        if [ -L "$target" ] && [ "$(readlink "$target")" = "$state/$f" ]; then
            rm -f "$target"
        fi
    done
}

start_munged() {
    local state="$1" m="$1/munge"
    install -d -m 0755 -o munge -g munge "$m"
    if [ ! -s "$m/munge.key" ]; then
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$m/munge.key" >/dev/null
        else
            dd if=/dev/urandom of="$m/munge.key" bs=1024 count=1 status=none
        fi
    fi
    chown munge:munge "$m/munge.key"
    chmod 0600 "$m/munge.key"
    # The socket directory must be reachable by job-submitting users, hence 0755.
    # --force: a throwaway cluster may live below a group-writable directory,
    # which munged would otherwise refuse.
    setsid setpriv --reuid=munge --regid=munge --init-groups \
        munged --foreground --force \
        --key-file="$m/munge.key" --socket="$m/munge.socket" \
        --pid-file="$m/munged.pid" --seed-file="$m/munged.seed" \
        </dev/null >"$state/munged.out" 2>&1 &
    echo $! >"$state/munged.pid"
    wait_exec munged "$state/munged.pid" || return 1
    local i
    for i in $(seq 1 50); do
        if munge -n -S "$m/munge.socket" 2>/dev/null | unmunge -S "$m/munge.socket" >/dev/null 2>&1; then
            return 0
        fi
        pid_alive munged "$state/munged.pid" || break
        sleep 0.2
    done
    return 1
}

cmd_start() {
    local state="$1"
    command -v slurmctld >/dev/null 2>&1 || die "SLURM is not installed; run '$0 install' first"
    mkdir -p "$state"
    chmod 0755 "$state"
    local d all_up=1 any_up=0
    for d in "${DAEMONS[@]}"; do
        if pid_alive "$d" "$state/$d.pid"; then any_up=1; else all_up=0; fi
    done
    if [ "$all_up" -eq 1 ]; then
        log "already running in $state"
        return 0
    fi
    [ "$any_up" -eq 0 ] || die "a partial cluster is running in $state; run '$0 stop $state' first"

    local t0 node cpus hw_mem mem
    t0="$(date +%s%N)"
    node="$(hostname -s)"
    cpus="$(nproc)"
    hw_mem="$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
    [ -n "$hw_mem" ] || die "could not read RealMemory from 'slurmd -C'"
    mem=$(( hw_mem * 9 / 10 ))
    mkdir -p "$state/run" "$state/slurmctld-state" "$state/slurmd-spool"
    rm -f "$state"/*.out
    write_configs "$state" "$node" "$cpus" "$mem"
    export SLURM_CONF="$state/slurm.conf"

    # From here on, a failure stops whatever was started and shows the logs.
    trap 'rc=$?; if [ $rc -ne 0 ]; then log "start failed; logs follow"; print_logs "$state"; cmd_stop "$state" || true; fi' EXIT
    link_system_config "$state"

    start_munged "$state" || die "munged did not come up"

    setsid slurmctld -D -c -f "$state/slurm.conf" </dev/null >"$state/slurmctld.out" 2>&1 &
    echo $! >"$state/slurmctld.pid"
    wait_exec slurmctld "$state/slurmctld.pid" || die "slurmctld did not start"
    setsid slurmd -D -f "$state/slurm.conf" </dev/null >"$state/slurmd.out" 2>&1 &
    echo $! >"$state/slurmd.pid"
    wait_exec slurmd "$state/slurmd.pid" || die "slurmd did not start"

    local deadline nodestate=""
    deadline=$(( $(date +%s) + START_TIMEOUT ))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        for d in "${DAEMONS[@]}"; do
            pid_alive "$d" "$state/$d.pid" || die "$d exited during start-up"
        done
        nodestate="$(sinfo -h -N -n "$node" -o '%T' 2>/dev/null | head -n 1 || true)"
        if [ "$nodestate" = "idle" ]; then
            log "node $node idle (${cpus} CPUs, ${mem} MB, gpu:1, partition ${PARTITION}) after $(elapsed_since "$t0") s"
            log "config: $state/slurm.conf (linked from $SYSTEM_CONF_DIR/slurm.conf)"
            trap - EXIT
            return 0
        fi
        sleep 0.5
    done
    die "node $node not idle after ${START_TIMEOUT} s (state: '${nodestate:-unknown}')"
}

# ------------------------------------------------------------------- stop ---
stop_pid() {  # stop_pid NAME PIDFILE
    local name="$1" pidfile="$2" pid i
    if ! pid_alive "$name" "$pidfile"; then
        rm -f "$pidfile"
        return 0
    fi
    pid="$(cat "$pidfile")"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 60); do
        [ -d "/proc/$pid" ] || break
        sleep 0.25
    done
    if [ -d "/proc/$pid" ]; then
        log "$name ($pid) ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 0.5
    fi
    rm -f "$pidfile"
    log "stopped $name ($pid)"
}

cmd_stop() {
    local state="$1" i jobs
    [ -d "$state" ] || die "no such state directory: $state"
    if pid_alive slurmctld "$state/slurmctld.pid" && [ -f "$state/slurm.conf" ]; then
        # Cancel what is still queued or running, so no job steps outlive slurmd.
        jobs="$(SLURM_CONF="$state/slurm.conf" squeue -h -o '%i' -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null || true)"
        if [ -n "$jobs" ]; then
            log "cancelling jobs: $(echo $jobs)"
            # shellcheck disable=SC2086
            SLURM_CONF="$state/slurm.conf" scancel $jobs 2>/dev/null || true
            for i in $(seq 1 40); do
                [ -z "$(SLURM_CONF="$state/slurm.conf" squeue -h -o '%i' -t PENDING,RUNNING,SUSPENDED,COMPLETING 2>/dev/null || true)" ] && break
                sleep 0.25
            done
        fi
    fi
    for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do
        stop_pid "${DAEMONS[$i]}" "$state/${DAEMONS[$i]}.pid"
    done
    unlink_system_config "$state"
}

cmd_env() {
    local state="$1"
    [ -f "$state/slurm.conf" ] || die "no slurm.conf in $state; run '$0 start $state' first"
    printf 'export SLURM_CONF=%q\n' "$state/slurm.conf"
}

# ------------------------------------------------------------------- main ---
[ $# -ge 1 ] || usage
case "$1" in
    install) need_root "$@"; cmd_install ;;
    packages) echo "${PACKAGES[*]}" ;;
    start)   need_root "$@"; cmd_start "$(state_dir_arg "${2:-}")" ;;
    stop)    need_root "$@"; cmd_stop "$(state_dir_arg "${2:-}")" ;;
    env)     cmd_env "$(state_dir_arg "${2:-}")" ;;
    -h|--help|help) usage ;;
    *) usage ;;
esac
