#!/bin/bash
# PID 1 of one test-rig sandbox (tests/src/rig/sandbox.rs): makes the
# sandbox's private mounts, says it is ready, then waits for its lifeline (its
# stdin, a pipe whose only writer is the test process) to close. When it
# returns, the kernel kills every other process of the PID namespace and the
# mount, network, UTS and IPC namespaces vanish with them.
#
# Usage: init.sh DIR [HOSTNAME]
#   DIR/mounts   lines "overlay<TAB>DIR<TAB>UPPER<TAB>WORK" (a folder made
#                writable in this namespace only), "bind<TAB>SRC<TAB>TARGET"
#                and "tmpfs<TAB>TARGET<TAB>OPTIONS", in order; written by the
#                rig, every target already there
#   DIR/ready    made once the mounts are done
set -euo pipefail
dir=$1
if [ $# -ge 2 ]; then
    hostname "$2"
    ip link set lo up
fi
# POSIX shared memory (PostgreSQL's, QEMU's) dies with the namespace too.
mount -t tmpfs -o mode=1777 kvmroll-rig-shm /dev/shm
if [ -e "$dir/mounts" ]; then
    while IFS=$'\t' read -r kind a b c; do
        case $kind in
        overlay) mount -t overlay kvmroll-rig -o "lowerdir=$a,upperdir=$b,workdir=$c" "$a" ;;
        bind) mount --bind "$a" "$b" ;;
        tmpfs) mount -t tmpfs -o "$b" kvmroll-rig "$a" ;;
        *)
            echo "init.sh: unknown mount line '$kind'" >&2
            exit 1
            ;;
        esac
    done <"$dir/mounts"
fi
: >"$dir/ready"
# Lines on the lifeline mean nothing; its end is the signal.
while read -r _; do :; done
