//! Checks before anything is made.

use super::*;

pub(crate) fn preflight(largest_set: u64) {
    if !nix::unistd::geteuid().is_root() {
        refuse("it must run as root (it drives qemu:///system and libvirt-guests.sh)");
    }
    for (tool, package) in [
        ("as", "binutils"),
        ("ld", "binutils"),
        ("virsh", "libvirt-clients"),
        ("dd", "coreutils"),
    ] {
        if !on_path(tool) {
            refuse(&format!("`{tool}` is missing: apt-get install {package}"));
        }
    }
    for (file, package) in [
        (LG_SCRIPT, "libvirt-daemon"),
        ("/usr/bin/gettext.sh", "gettext-base"),
        ("/lib/lsb/init-functions", "lsb-base"),
    ] {
        if !Path::new(file).exists() {
            refuse(&format!(
                "{file} is missing (libvirt-guests.sh needs it): apt-get install {package}"
            ));
        }
    }
    if !Path::new("/dev/kvm").exists() {
        refuse("no /dev/kvm: the guests are KVM guests");
    }
    if !kvmroll_tests::libvirtd_available("guests bench") {
        std::process::exit(0);
    }
    let others = other_guests();
    if !others.is_empty() {
        refuse(&format!(
            "other guests run on qemu:///system ({}); kvmroll-guests and libvirt-guests would save or \
             shut them down: stop them first",
            others.join(", ")
        ));
    }
    if Path::new(LG_LISTFILE).exists() {
        refuse(&format!(
            "{LG_LISTFILE} exists: libvirt-guests has guests of its own to bring back \
             (run its start, or remove the file)"
        ));
    }
    // Images and dd's file in turn, plus the initrd.
    let need_disk = largest_set + 2 * GIB;
    let free = free_bytes(Path::new(SAVE_DIR)).min(free_bytes(&std::env::temp_dir()));
    if free < need_disk {
        refuse(&format!(
            "{:.1} GiB free where {:.1} GiB is needed (images, dd's file, initrd)",
            gib(free),
            gib(need_disk)
        ));
    }
    // At first boot each QEMU keeps a copy of its initrd besides the RAM.
    let need_mem = largest_set * 2 + 2 * GIB;
    if meminfo("MemAvailable") < need_mem {
        refuse(&format!(
            "{:.1} GiB of memory available where {:.1} GiB is needed",
            gib(meminfo("MemAvailable")),
            gib(need_mem)
        ));
    }
    // Guests of an earlier run that died without cleaning up: ours by name.
    let all = kvmroll_tests::virsh_ok(&["list", "--all", "--name"]);
    for name in all.lines().map(str::trim).filter(|n| n.starts_with(PREFIX)) {
        println!("removing {name}, left by an earlier run");
        let _ = kvmroll_tests::virsh(&["destroy", name]);
        let _ = kvmroll_tests::virsh(&["undefine", name, "--managed-save"]);
    }
    let original = std::fs::read(LG_DEFAULTS).ok();
    leftovers(|l| {
        l.listfile = true;
        l.lock_existed = Some(Path::new(LG_LOCK).exists());
        l.defaults = Some(original);
    });
    std::fs::write(LG_DEFAULTS, LG_SETTINGS).expect("write /etc/default/libvirt-guests");
}
