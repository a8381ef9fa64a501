# kvmroll's package scripts: what the .deb's postinst, prerm and postrm and
# the .rpm's %post, %preun and %postun do, written once. scripts/package.sh
# puts this text at the top of each. POSIX sh; nothing here needs a network,
# and a step that fails says so and lets the package operation go on.

KVMROLL_UNITS="kvmroll-guests.service kvmroll-events-prune.timer"
KVMROLL_HOOKS=/etc/libvirt/hooks
KVMROLL_CONF=/etc/kvmroll/kvmroll.conf
# The text every kvmroll hook binary holds (bins/kvmroll-hook/src/main.rs).
KVMROLL_MARKER="kvmroll-hook: the libvirt qemu hook of kvmroll"

kvmroll_say() {
    echo "kvmroll: $*"
}

kvmroll_systemd_runs() {
    [ -d /run/systemd/system ]
}

kvmroll_daemon_reload() {
    if kvmroll_systemd_runs; then
        systemctl daemon-reload >/dev/null 2>&1 || kvmroll_say "warning: systemctl daemon-reload failed"
    fi
}

# At the first installation only, so that an administrator's disable holds
# across upgrades. systemctl enables without a running systemd too (a
# kickstart's chroot). kvmroll-guests is not started: its start would boot
# every kvm_autostart VM that is off; it acts from the next boot.
kvmroll_enable_units() {
    command -v systemctl >/dev/null 2>&1 || return 0
    for unit in $KVMROLL_UNITS; do
        systemctl enable "$unit" >/dev/null 2>&1 || kvmroll_say "warning: could not enable $unit"
    done
    if kvmroll_systemd_runs; then
        systemctl start kvmroll-events-prune.timer >/dev/null 2>&1 || true
        kvmroll_say "kvmroll-guests.service is enabled and acts from the next boot; to have this host's VMs saved at its next shutdown already, run: systemctl start kvmroll-guests (it also starts the kvm_autostart VMs that are off)"
    fi
    if systemctl is-enabled --quiet libvirt-guests.service 2>/dev/null; then
        kvmroll_say "libvirt-guests.service is enabled: kvmroll-guests refuses to run beside it; turn it off with: systemctl disable --now libvirt-guests"
    fi
}

kvmroll_disable_units() {
    command -v systemctl >/dev/null 2>&1 || return 0
    # Never stop kvmroll-guests here: its stop saves or shuts down every VM.
    if kvmroll_systemd_runs; then
        systemctl stop kvmroll-events-prune.timer >/dev/null 2>&1 || true
    fi
    for unit in $KVMROLL_UNITS; do
        systemctl disable "$unit" >/dev/null 2>&1 || true
    done
}

# Upgrades an SQLite database that exists (the conf's db line, else the
# default path): kvmroll db init never makes one here, as only a first
# `kvmroll db init` or `host add` should. A PostgreSQL database is the
# frontend's to upgrade. Its first use would upgrade it anyway.
kvmroll_db_upgrade() {
    db=/var/lib/kvmroll/kvmroll.db
    if [ -f "$KVMROLL_CONF" ]; then
        line=$(sed -n 's/#.*//; s/^[[:space:]]*db[[:space:]]*=[[:space:]]*//p' "$KVMROLL_CONF" |
            sed 's/[[:space:]]*$//' | tail -n 1)
        [ -n "$line" ] && db=$line
    fi
    case $db in
    /*) ;;
    *) return 0 ;;
    esac
    [ -f "$db" ] || return 0
    if said=$(timeout 60 /usr/bin/kvmroll --no-sync --db "$db" db init 2>&1); then
        kvmroll_say "$said"
    else
        kvmroll_say "warning: $db was not upgraded now ($said); its first use upgrades it"
    fi
}

# libvirt runs /etc/libvirt/hooks/qemu, then every executable of qemu.d/.
# A host's own qemu hook is never touched, only reported.
kvmroll_hook_report() {
    [ -e "$KVMROLL_HOOKS/qemu" ] || return 0
    if grep -qF "$KVMROLL_MARKER" "$KVMROLL_HOOKS/qemu" 2>/dev/null; then
        kvmroll_say "warning: $KVMROLL_HOOKS/qemu is a copy of kvmroll's hook installed by hand: libvirt runs it and the package's $KVMROLL_HOOKS/qemu.d/kvmroll, so plugins run twice; it was left as it is: remove it (rm $KVMROLL_HOOKS/qemu)"
    else
        kvmroll_say "$KVMROLL_HOOKS/qemu, this host's own hook, was left as it is: libvirt runs it first, then kvmroll's $KVMROLL_HOOKS/qemu.d/kvmroll"
    fi
}

# libvirtd looks for hooks only when it starts. Where it started with no
# qemu hook, it must restart to run kvmroll's: done where systemd runs it
# and no VM runs; said otherwise.
kvmroll_libvirtd_restart() {
    [ -x "$KVMROLL_HOOKS/qemu" ] && return 0
    for f in "$KVMROLL_HOOKS"/qemu.d/*; do
        [ "$f" != "$KVMROLL_HOOKS/qemu.d/kvmroll" ] && [ -x "$f" ] && return 0
    done
    why="libvirtd looks for hooks only when it starts: kvmroll's hook runs once libvirtd (or virtqemud) has been restarted"
    if kvmroll_systemd_runs; then
        for svc in virtqemud.service libvirtd.service; do
            systemctl is-active --quiet "$svc" 2>/dev/null || continue
            if command -v virsh >/dev/null 2>&1 &&
                names=$(timeout 20 virsh -q -c qemu:///system list --name 2>/dev/null) &&
                [ -z "$(printf '%s' "$names" | tr -d '[:space:]')" ]; then
                if systemctl try-restart "$svc" >/dev/null 2>&1; then
                    kvmroll_say "restarted $svc (no VM was running) so that it runs kvmroll's hook"
                    return 0
                fi
            fi
            kvmroll_say "$why; $svc was not restarted as VMs run (or could not be asked): restart it when none does"
            return 0
        done
    fi
    kvmroll_say "$why"
}

# After the files are in place. $1: yes at the first installation.
kvmroll_configured() {
    kvmroll_daemon_reload
    [ "$1" = yes ] && kvmroll_enable_units
    kvmroll_db_upgrade
    kvmroll_hook_report
    [ "$1" = yes ] && kvmroll_libvirtd_restart
    return 0
}
