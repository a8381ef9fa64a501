//! What the unit tests of discovery and running share: scripts and
//! folders in a temporary tree with the modes the checks look at.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The uid the tests' files belong to, as `owner`.
pub(crate) fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A shell script `dir/name` running `body`, with `mode`.
pub(crate) fn script(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    // Written by a child process, never through a descriptor of this one:
    // a test thread that forks while this process holds the file open for
    // writing would make its exec fail with ETXTBSY ("Text file busy") in
    // another test, until that child execs.
    let mut cat = std::process::Command::new("sh")
        .args(["-c", "cat >\"$1\"", "sh"])
        .arg(&p)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = cat.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, format!("#!/bin/sh\n{body}\n").as_bytes()).unwrap();
    drop(input);
    assert!(
        cat.wait().unwrap().success(),
        "cannot write {}",
        p.display()
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// A temporary folder only its owner may write.
pub(crate) fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::set_permissions(t.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// Sets the mode of `path`.
pub(crate) fn mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
