#!/usr/bin/env bash
# Bring a real libvirtd (monolithic, Debian 12 / libvirt 9) up or down by hand,
# on machines without systemd as PID 1: what that needs is in tests/README.md,
# "A real libvirtd on a bare machine".
#
#   scripts/libvirtd.sh up       idempotent: prepare the host, start virtlogd and
#                                libvirtd unless running, wait until
#                                `virsh -c qemu:///system version` answers,
#                                ensure the bridge kvmrollbr0 exists and is up
#   scripts/libvirtd.sh down     stop libvirtd then virtlogd by their pid files
#                                (SIGTERM, up to 15 s, then SIGKILL); guests and
#                                the bridge are left alone
#   scripts/libvirtd.sh status   one line per daemon and for the bridge;
#                                exit 0 if both daemons run, 3 if not
#
# Environment:
#   KVMROLL_LIBVIRTD_RESTART=1   `up` restarts a running libvirtd (needed after
#                                installing /etc/libvirt/hooks/qemu: libvirtd
#                                looks for hooks only when it starts). `up` also
#                                restarts it when it had to change qemu.conf.
#                                Running guests survive a restart.
#   KVMROLL_BRIDGE=NAME          bridge to ensure (default kvmrollbr0; empty: none)
#   KVMROLL_LIBVIRTD_WAIT=SECS   how long `up` waits for virsh (default 60)
#
# stdout: exactly one line (up/down) or three lines (status). Everything else,
# errors included, goes to stderr. Needs root (status does not). The daemons
# log warnings and errors to /var/log/libvirt/{libvirtd,virtlogd}.log (unless
# LIBVIRT_LOG_OUTPUTS is set) and run with a clean environment, cwd /, and
# PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin (the PATH
# hooks see).
set -euo pipefail

PROG=libvirtd.sh
LIBVIRTD_PIDFILE=/run/libvirtd.pid
VIRTLOGD_PIDFILE=/run/virtlogd.pid
VIRTLOGD_SOCK=/run/libvirt/virtlogd-sock
QEMU_CONF=/etc/libvirt/qemu.conf
LOG_DIR=/var/log/libvirt
LOCK_FILE=/run/kvmroll-libvirtd.lock
URI=qemu:///system
BRIDGE=${KVMROLL_BRIDGE-kvmrollbr0}
WAIT_SECS=${KVMROLL_LIBVIRTD_WAIT:-60}
STOP_SECS=15
DAEMON_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH="$DAEMON_PATH:$PATH"

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $PROG up|down|status" >&2
    exit 2
}

now_ms() { date +%s%3N; }

# Seconds with one decimal between two now_ms values.
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fs", (b - a) / 1000 }'; }

# alive PID NAME: PID is a live (not zombie) process whose comm is NAME.
alive() {
    local pid=$1 name=$2 stat comm
    [ -r "/proc/$pid/stat" ] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    # Field 3 (state) follows the parenthesised comm, which may contain spaces.
    stat=${stat##*) }
    case "${stat%% *}" in Z | X | x) return 1 ;; esac
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$name" ]
}

# running NAME PIDFILE: print the pid and succeed if the pid file names a live NAME.
running() {
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 1
    pid=$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')
    [ -n "$pid" ] || return 1
    alive "$pid" "$name" || return 1
    echo "$pid"
}

# spawn_daemon LOGFILE CMD...: run a self-daemonising command with a clean
# environment, cwd /, stdio on /dev/null/LOGFILE and no inherited descriptors
# (so callers capturing our stdout, and our lock, are not held by the daemon).
spawn_daemon() {
    local logfile=$1
    shift
    (
        cd /
        for fd in /proc/self/fd/*; do
            fd=${fd##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        env_args=(PATH="$DAEMON_PATH" HOME=/root LC_ALL=C
            LIBVIRT_LOG_OUTPUTS="${LIBVIRT_LOG_OUTPUTS:-3:file:$logfile}")
        [ -n "${LIBVIRT_LOG_FILTERS:-}" ] && env_args+=(LIBVIRT_LOG_FILTERS="$LIBVIRT_LOG_FILTERS")
        [ -n "${LIBVIRT_DEBUG:-}" ] && env_args+=(LIBVIRT_DEBUG="$LIBVIRT_DEBUG")
        exec env -i "${env_args[@]}" "$@" </dev/null >/dev/null 2>>"$logfile"
    )
}

# stop_daemon NAME PIDFILE: SIGTERM, wait up to STOP_SECS, then SIGKILL.
# Prints what happened (a phrase) on stdout.
stop_daemon() {
    local name=$1 pidfile=$2 pid i
    if ! pid=$(running "$name" "$pidfile"); then
        if [ -e "$pidfile" ]; then
            rm -f "$pidfile"
            echo "$name not running (removed stale $pidfile)"
        else
            echo "$name not running"
        fi
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$(($(now_ms) + STOP_SECS * 1000))
    while alive "$pid" "$name" && [ "$(now_ms)" -lt "$deadline" ]; do
        sleep 0.1
    done
    local how="stopped"
    if alive "$pid" "$name"; then
        kill -KILL "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" "$name" || break
            sleep 0.1
        done
        alive "$pid" "$name" && die "$name (pid $pid) survived SIGKILL"
        how="killed (SIGKILL after ${STOP_SECS}s)"
    fi
    # libvirt removes its pid file on a clean exit; not after SIGKILL.
    if [ -e "$pidfile" ] && ! running "$name" "$pidfile" >/dev/null; then
        rm -f "$pidfile"
    fi
    echo "$name $how (pid $pid)"
}

ensure_user() {
    if ! getent group libvirt-qemu >/dev/null; then
        groupadd --system libvirt-qemu 2>/dev/null || getent group libvirt-qemu >/dev/null ||
            die "cannot create group libvirt-qemu"
    fi
    if ! getent passwd libvirt-qemu >/dev/null; then
        useradd --system --gid libvirt-qemu --home-dir /var/lib/libvirt --no-create-home \
            --shell /usr/sbin/nologin --comment "Libvirt Qemu" libvirt-qemu 2>/dev/null ||
            getent passwd libvirt-qemu >/dev/null || die "cannot create user libvirt-qemu"
    fi
}

# set_conf KEY VALUE FILE: make FILE contain exactly `KEY = "VALUE"` for KEY
# (replacing uncommented settings of KEY, else appending). Prints "changed" if
# the file was modified.
set_conf() {
    local key=$1 value=$2 file=$3 want
    want="$key = \"$value\""
    if grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$file"; then
        if grep -E "^[[:space:]]*${key}[[:space:]]*=" "$file" | grep -qvxF "$want"; then
            sed -i -E "s|^[[:space:]]*${key}[[:space:]]*=.*$|$want|" "$file"
            echo changed
        fi
    else
        # Make sure we start on a new line if the file lacks a trailing newline.
        if [ -s "$file" ] && [ -n "$(tail -c1 "$file")" ]; then echo >>"$file"; fi
        echo "$want" >>"$file"
        echo changed
    fi
}

ensure_qemu_conf() {
    local changed=""
    mkdir -p "$(dirname "$QEMU_CONF")"
    if [ ! -e "$QEMU_CONF" ]; then
        printf '%s\n' "# Written by kvmroll scripts/libvirtd.sh: /dev/kvm is 0600 root here." >"$QEMU_CONF"
        chmod 0600 "$QEMU_CONF"
    fi
    local c1 c2
    c1=$(set_conf user root "$QEMU_CONF")
    c2=$(set_conf group root "$QEMU_CONF")
    changed="$c1$c2"
    [ -n "$changed" ] && echo changed
    return 0
}

# ensure_bridge: prints "created", "set up" or nothing.
ensure_bridge() {
    [ -n "$BRIDGE" ] || return 0
    local what=""
    if ! ip link show dev "$BRIDGE" >/dev/null 2>&1; then
        local err
        if ! err=$(ip link add "$BRIDGE" type bridge 2>&1); then
            # Lost a race with someone else creating it? Fine; anything else is not.
            ip link show dev "$BRIDGE" >/dev/null 2>&1 || die "cannot create bridge $BRIDGE: $err"
        else
            what="created"
        fi
    fi
    [ -d "/sys/class/net/$BRIDGE/bridge" ] || die "$BRIDGE exists but is not a bridge"
    if ! ip -o link show dev "$BRIDGE" | grep -q '[<,]UP[,>]'; then
        ip link set dev "$BRIDGE" up 2>/dev/null || die "cannot bring bridge $BRIDGE up"
        [ -n "$what" ] || what="set up"
    fi
    echo "$what"
}

start_virtlogd() {
    local pid i
    if pid=$(running virtlogd "$VIRTLOGD_PIDFILE"); then
        if [ -S "$VIRTLOGD_SOCK" ]; then
            echo "virtlogd running (pid $pid)"
            return 0
        fi
        die "virtlogd runs (pid $pid) but $VIRTLOGD_SOCK is missing; run '$0 down' first"
    fi
    spawn_daemon "$LOG_DIR/virtlogd.log" virtlogd -d ||
        die "virtlogd -d failed: $(tail -n1 "$LOG_DIR/virtlogd.log" 2>/dev/null)"
    for ((i = 0; i < 100; i++)); do
        if pid=$(running virtlogd "$VIRTLOGD_PIDFILE") && [ -S "$VIRTLOGD_SOCK" ]; then
            echo "virtlogd started (pid $pid)"
            return 0
        fi
        sleep 0.1
    done
    die "virtlogd did not come up within 10s: $(tail -n1 "$LOG_DIR/virtlogd.log" 2>/dev/null)"
}

# wait_virsh PID: poll `virsh version` until it answers, libvirtd dies, or WAIT_SECS pass.
wait_virsh() {
    local pid=$1 deadline err
    deadline=$(($(date +%s) + WAIT_SECS))
    err=$(mktemp)
    while :; do
        if timeout -k 2 20 virsh -q -c "$URI" version >/dev/null 2>"$err"; then
            rm -f "$err"
            return 0
        fi
        if ! alive "$pid" libvirtd; then
            rm -f "$err"
            die "libvirtd (pid $pid) exited while starting: $(tail -n1 "$LOG_DIR/libvirtd.log" 2>/dev/null)"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            local last
            last=$(grep -v '^$' "$err" | tail -n1)
            rm -f "$err"
            die "libvirtd (pid $pid) did not answer 'virsh -c $URI version' within ${WAIT_SECS}s: $last"
        fi
        sleep 0.2
    done
}

start_libvirtd() {
    local pid i t0 t1
    t0=$(now_ms)
    spawn_daemon "$LOG_DIR/libvirtd.log" libvirtd -d ||
        die "libvirtd -d failed: $(tail -n1 "$LOG_DIR/libvirtd.log" 2>/dev/null)"
    pid=""
    for ((i = 0; i < 100; i++)); do
        pid=$(running libvirtd "$LIBVIRTD_PIDFILE") && break
        sleep 0.1
    done
    [ -n "$pid" ] || die "libvirtd wrote no live pid to $LIBVIRTD_PIDFILE: $(tail -n1 "$LOG_DIR/libvirtd.log" 2>/dev/null)"
    wait_virsh "$pid"
    t1=$(now_ms)
    echo "pid $pid, answered after $(elapsed "$t0" "$t1")"
}

cmd_up() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    for b in libvirtd virtlogd virsh; do
        command -v "$b" >/dev/null 2>&1 || die "$b not found: run scripts/deps.sh first"
    done
    [ -z "$BRIDGE" ] || command -v ip >/dev/null 2>&1 || die "ip not found: run scripts/deps.sh first"

    mkdir -p "$LOG_DIR"
    ensure_user
    local conf_changed bridge_what parts=() pid res
    conf_changed=$(ensure_qemu_conf)
    [ -n "$conf_changed" ] && parts+=("set user/group root in $QEMU_CONF")

    res=$(start_virtlogd)
    parts+=("$res")

    if pid=$(running libvirtd "$LIBVIRTD_PIDFILE"); then
        local why=""
        if [ "${KVMROLL_LIBVIRTD_RESTART:-0}" = 1 ]; then
            why="KVMROLL_LIBVIRTD_RESTART=1"
        elif [ -n "$conf_changed" ]; then
            why="$QEMU_CONF changed"
        fi
        if [ -n "$why" ]; then
            stop_daemon libvirtd "$LIBVIRTD_PIDFILE" >/dev/null
            res=$(start_libvirtd)
            parts+=("libvirtd restarted ($why; was pid $pid, now $res)")
        else
            wait_virsh "$pid"
            parts+=("libvirtd running (pid $pid)")
        fi
    else
        res=$(start_libvirtd)
        parts+=("libvirtd started ($res)")
    fi

    if [ -n "$BRIDGE" ]; then
        bridge_what=$(ensure_bridge)
        parts+=("bridge $BRIDGE ${bridge_what:-up}")
    fi

    local line="" p
    for p in "${parts[@]}"; do
        line+="${line:+; }$p"
    done
    echo "$PROG up: $line"
}

cmd_down() {
    [ "$(id -u)" -eq 0 ] || die "must run as root"
    local a b
    local f gpid guests=""
    for f in /run/libvirt/qemu/*.pid; do
        [ "$f" = /run/libvirt/qemu/driver.pid ] && continue
        [ -s "$f" ] || continue
        gpid=$(head -n1 "$f" | tr -dc '0-9')
        [ -n "$gpid" ] && [ -d "/proc/$gpid" ] && guests+=" $(basename "$f" .pid)"
    done
    if [ -n "$guests" ]; then
        echo "$PROG: warning: QEMU guests keep running without libvirtd:$guests" >&2
    fi
    a=$(stop_daemon libvirtd "$LIBVIRTD_PIDFILE")
    b=$(stop_daemon virtlogd "$VIRTLOGD_PIDFILE")
    echo "$PROG down: $a; $b"
}

cmd_status() {
    local pid rc=0
    if pid=$(running libvirtd "$LIBVIRTD_PIDFILE"); then
        echo "libvirtd: running (pid $pid)"
    else
        echo "libvirtd: not running"
        rc=3
    fi
    if pid=$(running virtlogd "$VIRTLOGD_PIDFILE"); then
        echo "virtlogd: running (pid $pid)"
    else
        echo "virtlogd: not running"
        rc=3
    fi
    if [ -n "$BRIDGE" ]; then
        if [ -d "/sys/class/net/$BRIDGE/bridge" ]; then
            if ip -o link show dev "$BRIDGE" 2>/dev/null | grep -q '[<,]UP[,>]'; then
                echo "bridge $BRIDGE: up"
            else
                echo "bridge $BRIDGE: down"
            fi
        else
            echo "bridge $BRIDGE: absent"
        fi
    fi
    return "$rc"
}

[ $# -eq 1 ] || usage
case "$1" in
up | down)
    # Serialise concurrent up/down; the daemons do not inherit this descriptor.
    exec 9>>"$LOCK_FILE"
    flock -w 120 9 || die "timed out waiting for $LOCK_FILE"
    "cmd_$1"
    ;;
status) cmd_status ;;
-h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' ;;
*) usage ;;
esac
