//! The halting kernel (`halt.S` beside this file), its initrd, the guests'
//! domain XML and their state.

use super::*;

pub(crate) use kvmroll_tests::halting::{build_kernel, domain_xml, random_file};

pub(crate) fn state(name: &str) -> String {
    kvmroll_tests::virsh_ok(&["domstate", name])
        .trim()
        .to_string()
}

/// The guest's QEMU process, from libvirt's pid file.
pub(crate) fn qemu_pid(name: &str) -> Option<u32> {
    std::fs::read_to_string(Path::new(PID_DIR).join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the QEMU process was started to receive a saved image.
pub(crate) fn incoming(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"-incoming"))
}

/// Whether the guest's vCPU sits in the halt loop of halt.S (at 0x10000c):
/// the initrd has been copied into its RAM.
pub(crate) fn halted(name: &str) -> bool {
    let out = kvmroll_tests::virsh(&["qemu-monitor-command", "--hmp", name, "info registers"]);
    let regs = String::from_utf8_lossy(&out.stdout);
    let eip = regs
        .split_whitespace()
        .find_map(|w| w.strip_prefix("EIP="))
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    regs.contains("HLT=1") && eip.is_some_and(|e| (0x10_0000..0x10_0040).contains(&e))
}

/// Running guests that are not this benchmark's.
pub(crate) fn other_guests() -> Vec<String> {
    kvmroll_tests::virsh_ok(&["list", "--name"])
        .lines()
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with(PREFIX))
        .map(String::from)
        .collect()
}
