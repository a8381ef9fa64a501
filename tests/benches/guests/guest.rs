//! The halting kernel (`halt.S` beside this file), its initrd, the guests'
//! domain XML and their state.

use super::*;

/// Assembles and links tests/benches/guests/halt.S into `dir`.
pub(crate) fn build_kernel(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/guests/halt.S");
    let (obj, elf) = (dir.join("halt.o"), dir.join("halt.elf"));
    must(Command::new("as").arg("--32").arg("-o").arg(&obj).arg(&src));
    must(
        Command::new("ld")
            .args(["-m", "elf_i386", "-Ttext=0x100000", "-o"])
            .arg(&elf)
            .arg(&obj),
    );
    elf
}

/// Writes `bytes` of pseudo-random data (xorshift64*: no page is zero, so
/// the save stream skips none).
pub(crate) fn random_file(path: &Path, bytes: u64, seed: u64) {
    let mut f = std::io::BufWriter::with_capacity(
        BLOCK as usize,
        std::fs::File::create(path).expect("create initrd"),
    );
    let mut x = seed | 1;
    let mut buf = vec![0u8; BLOCK as usize];
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            word.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(BLOCK);
        f.write_all(&buf[..n as usize]).expect("write initrd");
        left -= n;
    }
    f.flush().expect("write initrd");
}

pub(crate) fn domain_xml(name: &str, mem_mib: u64, kernel: &Path, initrd: &Path) -> String {
    format!(
        "<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>{mem_mib}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
  </os>
  <cpu mode='host-passthrough'>
    <feature policy='disable' name='arch-capabilities'/>
  </cpu>
  <on_poweroff>destroy</on_poweroff>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    <memballoon model='none'/>
  </devices>
</domain>
",
        kernel.display(),
        initrd.display()
    )
}

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
