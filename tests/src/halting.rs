//! Guests whose memory is full of data, for the save and restore
//! benchmarks: a multiboot kernel that only halts
//! (`benches/guests/halt.S`), booted with a large random initrd that QEMU
//! copies into guest RAM, so that a save has real size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Assembles and links benches/guests/halt.S into `dir` (binutils' `as`
/// and `ld`); the kernel's path.
pub fn build_kernel(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/guests/halt.S");
    let (obj, elf) = (dir.join("halt.o"), dir.join("halt.elf"));
    let must = |cmd: &mut Command| {
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
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
pub fn random_file(path: &Path, bytes: u64, seed: u64) {
    const BLOCK: usize = 4 << 20;
    let mut f = std::io::BufWriter::with_capacity(
        BLOCK,
        std::fs::File::create(path).expect("create initrd"),
    );
    let mut x = seed | 1;
    let mut buf = vec![0u8; BLOCK];
    let mut left = bytes;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            word.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(BLOCK as u64);
        f.write_all(&buf[..n as usize]).expect("write initrd");
        left -= n;
    }
    f.flush().expect("write initrd");
}

/// A guest booting `kernel` with `initrd`: one vCPU, `mem_mib` of RAM, a
/// serial console, no balloon (it would give the filled RAM back).
pub fn domain_xml(name: &str, mem_mib: u64, kernel: &Path, initrd: &Path) -> String {
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
