//! `kvmroll-hook install`, and the binary's own dependencies.

use crate::fixture::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn install_puts_the_hook_in_place_atomically_and_guards_a_foreign_one() {
    let fx = Fx::new();
    let root = fx.dir.path().join("pkgroot");
    let install = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvmroll-hook"))
            .arg("install")
            .args(["--root", root.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = install(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let hook = root.join("etc/libvirt/hooks/qemu");
    let meta = std::fs::metadata(&hook).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o755);
    assert_eq!(
        std::fs::read(&hook).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_kvmroll-hook")).unwrap()
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed"));
    // A hook that is not kvmroll's is not replaced without --force.
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    let out = install(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is not kvmroll's hook"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap(),
        "#!/bin/sh\nexit 0\n"
    );
    let out = install(&["--dropin"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(root.join("etc/libvirt/hooks/qemu.d/kvmroll").exists());
    let leftovers: Vec<_> = std::fs::read_dir(root.join("etc/libvirt/hooks"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty());
    let out = install(&["--root-typo"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_hook_never_links_libvirt() {
    let out = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_kvmroll-hook"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let libs = String::from_utf8_lossy(&out.stdout);
    assert!(!libs.contains("libvirt"), "{libs}");
    // Nor depends on the crate that does, at any depth.
    let tree = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "kvmroll-hook",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&tree.stdout);
    assert!(tree.contains("kvmroll-core"), "{tree}");
    assert!(
        !tree.contains("kvmroll-virt") && !tree.lines().any(|l| l.starts_with("virt ")),
        "{tree}"
    );
}
