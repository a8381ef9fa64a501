//! The disk's own direct-I/O bandwidth: the floor a save and a restore are
//! held to.

use super::*;

/// A folder on the save folder's file system for dd's file.
pub(crate) fn dd_dir(tmp: &Path) -> PathBuf {
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    if dev(tmp).is_some() && dev(tmp) == dev(Path::new(SAVE_DIR)) {
        return tmp.to_path_buf();
    }
    let dir = Path::new(SAVE_DIR).join(format!(".kvmroll-bench-dd-{}", std::process::id()));
    leftovers(|l| l.paths.push(dir.clone()));
    std::fs::create_dir_all(&dir).expect("mkdir in the save folder");
    dir
}

/// dd with direct I/O: (write, read) bandwidth in bytes per second.
pub(crate) fn disk_bandwidth(dir: &Path, bytes: u64) -> (f64, f64) {
    let file = dir.join("dd.bin");
    let count = bytes.div_ceil(BLOCK);
    let total = (count * BLOCK) as f64;
    let t = Instant::now();
    must(
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", file.display()))
            .arg("bs=4M")
            .arg(format!("count={count}"))
            .args(["oflag=direct", "conv=fsync", "status=none"]),
    );
    let write = total / secs(t.elapsed());
    let t = Instant::now();
    must(
        Command::new("dd")
            .arg(format!("if={}", file.display()))
            .args(["of=/dev/null", "bs=4M", "iflag=direct", "status=none"]),
    );
    let read = total / secs(t.elapsed());
    std::fs::remove_file(&file).expect("remove dd's file");
    (write, read)
}

pub(crate) fn free_bytes(path: &Path) -> u64 {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    s.blocks_available() * s.fragment_size()
}
