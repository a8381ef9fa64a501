#!/usr/bin/env bash
# Installs the built kvmroll hook as /etc/libvirt/hooks/qemu with a
# configuration for the given database and plugin root, then (re)starts
# libvirtd so it sees the hook: libvirtd looks for hooks only when it starts.
#
#   scripts/hook-setup.sh PROFILE DB ROOT
#
#   PROFILE  debug or release: which build to install (scripts/build.sh
#            builds both the binaries and the static hook installed here)
#   DB       the database the hook reads (/etc/kvmroll/kvmroll.conf: db)
#   ROOT     the plugin root (plugins/STAGE.d, vms/VM/STAGE.d)
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 3 ] || { echo "usage: $0 debug|release DB ROOT" >&2; exit 2; }
profile=$1 db=$2 root=$3
bin=$PWD/target/$profile
case $profile in release) flag=--release ;; *) flag= ;; esac
hook=$(scripts/build.sh --hook-path $flag)
for b in "$bin/kvmroll" "$hook"; do
    [ -x "$b" ] || { echo "hook-setup.sh: $b is not built: run scripts/build.sh $flag" >&2; exit 1; }
done

mkdir -p "$(dirname "$db")"
# Folders made here get mode 755 (the hook runs only plugins whose folders
# no one but root can write); one that was there already keeps its mode.
for d in /etc/kvmroll "$root" "$root/plugins" "$root/vms"; do
    [ -d "$d" ] || install -d -m 755 "$d"
done
tmp=$(mktemp /etc/kvmroll/.kvmroll.conf.XXXXXX)
cat >"$tmp" <<CONF
# Written by scripts/hook-setup.sh
db = $db
root = $root
kvmroll = $bin/kvmroll
CONF
chmod 644 "$tmp"
sync "$tmp"
mv -f "$tmp" /etc/kvmroll/kvmroll.conf

"$hook" install --force >/dev/null
KVMROLL_LIBVIRTD_RESTART=1 scripts/libvirtd.sh up
