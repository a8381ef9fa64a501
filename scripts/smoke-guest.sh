#!/usr/bin/env bash
# Smoke-test a guest definition against the running libvirtd (scripts/libvirtd.sh up):
# define, start, managedsave, start again (must restore: the QEMU process has
# -incoming on its command line), destroy, undefine --managed-save.
# Prints one line per step with its duration; always cleans up the domain.
#
#   scripts/smoke-guest.sh [--start-only] [FILE.xml]
#
# FILE.xml defaults to tests/fixtures/tiny-guest.xml. --start-only: define,
# start, destroy, undefine (no save/restore). Exit 0 if every step passed.
set -euo pipefail

PROG=smoke-guest.sh
URI=qemu:///system
HERE=$(cd "$(dirname "$0")" && pwd)
START_ONLY=0
if [ "${1:-}" = "--start-only" ]; then
    START_ONLY=1
    shift
fi
XML=${1:-$HERE/../tests/fixtures/tiny-guest.xml}
[ -r "$XML" ] || { echo "$PROG: cannot read $XML" >&2; exit 2; }

virsh_() { virsh -q -c "$URI" "$@"; }

NAME=$(sed -n 's:.*<name>\(.*\)</name>.*:\1:p' "$XML" | head -n1)
[ -n "$NAME" ] || { echo "$PROG: no <name> in $XML" >&2; exit 2; }

cleanup() {
    virsh_ destroy "$NAME" >/dev/null 2>&1 || true
    virsh_ undefine --managed-save "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT

if virsh_ dominfo "$NAME" >/dev/null 2>&1; then
    echo "$PROG: domain $NAME already exists; refusing to touch it" >&2
    trap - EXIT
    exit 1
fi

now_ms() { date +%s%3N; }

# step LABEL CMD...: run, print "LABEL: N.NNs", or the error and fail.
step() {
    local label=$1 t0 t1 out
    shift
    t0=$(now_ms)
    if ! out=$("$@" 2>&1); then
        echo "$label: FAILED: $(echo "$out" | grep -v '^$' | tr '\n' ' ')"
        exit 1
    fi
    t1=$(now_ms)
    awk -v l="$label" -v a="$t0" -v b="$t1" 'BEGIN { printf "%s: %.2fs\n", l, (b - a) / 1000 }'
}

qemu_pid() { cat "/run/libvirt/qemu/$NAME.pid" 2>/dev/null; }

has_incoming() {
    local pid
    pid=$(qemu_pid) || return 2
    tr '\0' '\n' <"/proc/$pid/cmdline" | grep -qx -- '-incoming'
}

step define virsh_ define --validate "$XML"
step start virsh_ start "$NAME"
if has_incoming; then
    echo "cold start: FAILED: QEMU (pid $(qemu_pid)) has -incoming"
    exit 1
fi
echo "cold start: QEMU pid $(qemu_pid), no -incoming"
if [ "$START_ONLY" = 0 ]; then
    step managedsave virsh_ managedsave "$NAME"
    [ "$(virsh_ domstate "$NAME")" = "shut off" ] || { echo "managedsave: FAILED: state $(virsh_ domstate "$NAME")"; exit 1; }
    img=/var/lib/libvirt/qemu/save/$NAME.save
    [ -f "$img" ] && echo "save image: $(du -h "$img" | cut -f1)"
    step "start (restore)" virsh_ start "$NAME"
    if ! has_incoming; then
        echo "restore: FAILED: QEMU (pid $(qemu_pid)) has no -incoming"
        exit 1
    fi
    echo "restore: QEMU pid $(qemu_pid), -incoming present"
    [ "$(virsh_ domstate "$NAME")" = "running" ] || { echo "restore: FAILED: state $(virsh_ domstate "$NAME")"; exit 1; }
fi
step destroy virsh_ destroy "$NAME"
step "undefine --managed-save" virsh_ undefine --managed-save "$NAME"
trap - EXIT
echo "ok: $NAME"
