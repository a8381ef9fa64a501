#!/usr/bin/env bash
# The quick-start demonstration: a small cluster put into kvmroll's embedded
# SQLite database, its VMs rendered, defined and started on a real local
# libvirtd, and what happened shown.
#
#   scripts/demo.sh
#
# Needs root. Uses its own database (/var/lib/kvmroll/demo.db, made anew) and
# VMs named demo-vm-*, which it leaves defined and running for you to look at
# (`virsh list`); run it again to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "installing what is missing, building, installing the hook, starting libvirtd"
scripts/deps.sh
scripts/build.sh --release
BIN=$PWD/target/release
export PATH="$BIN:$PATH"
export KVMROLL_DB=/var/lib/kvmroll/demo.db
PLUGINS=/var/lib/kvmroll/demo/etc
CONTAINER=$(hostname -s)
# The hook reads /etc/kvmroll/kvmroll.conf: this demo's database and plugins.
scripts/hook-setup.sh release "$KVMROLL_DB" "$PLUGINS"

# Start over: VMs of an earlier run go, with their definitions.
for vm in demo-vm-0 demo-vm-1; do
    virsh -q destroy "$vm" >/dev/null 2>&1 || true
    virsh -q undefine "$vm" --managed-save >/dev/null 2>&1 || true
done
rm -f "$KVMROLL_DB" "$KVMROLL_DB-wal" "$KVMROLL_DB-shm"
rm -rf /var/lib/kvmroll/demo/guests "$PLUGINS/plugins" "$PLUGINS/vms"
mkdir -p /var/lib/kvmroll/demo "$PLUGINS/plugins/allocate.d" "$PLUGINS/plugins/shutdown.d"
chmod 755 /var/lib/kvmroll/demo "$PLUGINS" "$PLUGINS/plugins" "$PLUGINS/plugins/allocate.d" "$PLUGINS/plugins/shutdown.d"
# Two plugins, as a site would write them: allocate logs the placement,
# shutdown logs the release. They run from libvirt's own events.
cat > "$PLUGINS/plugins/allocate.d/10-log" <<'PLUGIN'
#!/bin/sh
echo "allocate: $KVMROLL_VM ($KVMROLL_UUID) on $KVMROLL_CONTAINER" >> /var/lib/kvmroll/demo/plugins.log
PLUGIN
cat > "$PLUGINS/plugins/shutdown.d/10-log" <<'PLUGIN'
#!/bin/sh
echo "shutdown: $KVMROLL_VM released" >> /var/lib/kvmroll/demo/plugins.log
PLUGIN
chmod 755 "$PLUGINS/plugins/allocate.d/10-log" "$PLUGINS/plugins/shutdown.d/10-log"
rm -f /var/lib/kvmroll/demo/plugins.log
ISO=/var/lib/kvmroll/demo/rescue.iso
truncate -s 1M "$ISO"

say "the cluster: this machine as a VM container, two VMs"
run kvmroll host add "$CONTAINER" --appliance vm-container --cpus "$(nproc)"
run kvmroll attr set "$CONTAINER" libvirt_uri qemu:///system
run kvmroll attr set --global kvm_graphics none
run kvmroll vm add demo-vm-0 --container "$CONTAINER" --mem 128 --cpus 1 --nic bridge:kvmrollbr0
run kvmroll vm add demo-vm-1 --container "$CONTAINER" --mem 128 --cpus 1 --nic bridge:kvmrollbr0
# The inner-XML form of cpu_mode: nested KVM here cannot set the
# IA32_ARCH_CAPABILITIES MSR, so the passed-through CPU goes without it.
run kvmroll attr set --appliance hosted-vm cpu_mode \
    "host-passthrough: <feature policy='disable' name='arch-capabilities'/>"
run kvmroll attr set demo-vm-0 kvm_cpu_pinning pin_auto
run kvmroll attr set demo-vm-1 kvm_cpu_pinning pin_auto
run kvmroll vm cdrom demo-vm-1 "$ISO"
run kvmroll vm list
run kvmroll attr list demo-vm-0

say "bad input is refused, and changes nothing"
run kvmroll vm add ../etc --container "$CONTAINER" || true
run kvmroll vm cdrom demo-vm-0 relative.iso || true
run kvmroll attr set demo-vm-0 cpu_mode 'custom: <model>x</model></cpu><devices>' || true

say "rendered domain XML (kvmroll-gen domain demo-vm-1)"
run kvmroll-gen domain demo-vm-1

say "defined in libvirt and started"
run kvmroll vm define --all
run virsh start demo-vm-0
run virsh start demo-vm-1
run virsh list

say "what libvirt runs: cpu, pinning, boot order, cdrom"
for vm in demo-vm-0 demo-vm-1; do
    echo "-- $vm"
    virsh dumpxml "$vm" | grep -E "<cpu |vcpupin|<boot |device='cdrom'|<source file" | sed 's/^ */   /'
done

say "a change in the database refreshes libvirt's definition (next power cycle)"
run kvmroll vm cdrom demo-vm-1 none
printf '$ virsh dumpxml --inactive demo-vm-1 | grep -c cdrom\n'
virsh dumpxml --inactive demo-vm-1 | grep -c "device='cdrom'" || true

say "host shutdown and boot: kvm_autostart VMs saved, then restored"
run kvmroll attr set demo-vm-0 kvm_autostart true
run kvmroll attr set demo-vm-1 kvm_autostart true
run kvmroll attr set "$CONTAINER" kvm_guests_shutdown_timeout 5
run kvmroll-guests --state-dir /var/lib/kvmroll/demo/guests stop
run kvmroll-guests --state-dir /var/lib/kvmroll/demo/guests status
run kvmroll-guests --state-dir /var/lib/kvmroll/demo/guests start
for vm in demo-vm-0 demo-vm-1; do
    pid=$(cat "/run/libvirt/qemu/$vm.pid")
    if tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- -incoming; then
        echo "   $vm: restored from its saved image (QEMU started with -incoming)"
    else
        echo "   $vm: cold-booted"
    fi
done

say "the hook ran the plugins at libvirt's events, and recorded them"
run cat /var/lib/kvmroll/demo/plugins.log
run kvmroll events --limit 12

say "making a node a VM container (kvmroll-enable), and what its install gets"
run kvmroll host add compute-0-3 --cpus 8
run kvmroll attr set --global kvm_reinstall_command "echo ipmitool -H {host}-ipmi chassis power cycle"
run kvmroll-enable compute-0-3 --dry-run
run kvmroll-enable compute-0-3
run kvmroll host show compute-0-3
printf '$ kvmroll-gen kickstart compute-0-3 | head -12\n'
kvmroll-gen kickstart compute-0-3 | head -12

say "done: the VMs run on; virsh list shows them, scripts/demo.sh starts over"
