//! Disk images made, refused, and grown at `prepare begin`.

use crate::fixture::*;
use kvmroll_core::sqlite::SqliteStore;
use kvmroll_core::{OpenMode, Store};

#[test]
fn missing_disks_are_made_at_prepare_begin_and_never_again() {
    let fx = Fx::new();
    fx.set_disks(&[
        "qcow2:{root}/vm/a.qcow2,vda,virtio,2",
        "raw:{root}/vm/b.img,vdb,virtio,1",
    ]);
    let a = fx.disk_root().join("vm/a.qcow2");
    let b = fx.disk_root().join("vm/b.img");
    // No other stage makes anything.
    for (op, subop) in [("start", "begin"), ("release", "end")] {
        let out = fx.hook(VM, op, subop, &fx.xml());
        assert_eq!(out.status.code(), Some(0), "{op}: {}", stderr(&out));
    }
    assert!(!fx.disk_root().join("vm").exists());
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(out.stderr.is_empty() && out.stdout.is_empty());
    let header = std::fs::read(&a).unwrap();
    assert_eq!(&header[..4], b"QFI\xfb");
    assert_eq!(&header[24..32], &(2u64 << 30).to_be_bytes(), "virtual size");
    let raw = std::fs::metadata(&b).unwrap();
    assert_eq!(raw.len(), 1 << 30);
    assert_eq!(
        std::os::unix::fs::MetadataExt::blocks(&raw),
        0,
        "not sparse"
    );
    let made: Vec<String> = fx
        .events(VM)
        .into_iter()
        .filter(|e| e.message.contains("made"))
        .map(|e| e.message)
        .collect();
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(
        made[0].contains("made qcow2 image") && made[0].contains("2 GiB"),
        "{made:?}"
    );
    let store = SqliteStore::open(&fx.db(), OpenMode::ReadOnly).unwrap();
    let recorded: Vec<String> = store
        .made_images(VM)
        .unwrap()
        .into_iter()
        .map(|m| m.path)
        .collect();
    assert_eq!(recorded, [a.display().to_string(), b.display().to_string()]);
    // A guest writes; the next start leaves its image alone.
    std::fs::write(&b, b"guest data").unwrap();
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&b).unwrap(), b"guest data");
    assert_eq!(std::fs::read(&a).unwrap(), header);
    let made_again = fx
        .events(VM)
        .iter()
        .filter(|e| e.message.contains("made"))
        .count();
    assert_eq!(made_again, 2);
}

#[test]
fn a_disk_that_cannot_be_made_refuses_the_start_in_one_line() {
    let fx = Fx::new();
    let outside = fx.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let cases = [
        ("qcow2:{root}/nosize.qcow2,vda,virtio", "give it a size"),
        (
            &format!("qcow2:{}/x.qcow2,vda,virtio,1", outside.display()),
            "kvm_disk_roots",
        ),
        ("qcow2:{root}/link/x.qcow2,vda,virtio,1", "symlink"),
        (
            "block:/dev/kvmroll-no-such-disk,vda,virtio",
            "/dev/kvmroll-no-such-disk",
        ),
    ];
    fx.set_disks(&[]);
    std::os::unix::fs::symlink(&outside, fx.disk_root().join("link")).unwrap();
    for (spec, said) in cases {
        // A good disk before the bad one is made; the start is refused.
        fx.set_disks(&["raw:{root}/ok.img,vdb,virtio,1", spec]);
        let out = fx.hook(VM, "prepare", "begin", &fx.xml());
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{spec}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{spec}: {err}");
        assert!(
            err.contains("disk vda") && err.contains(said),
            "{spec}: {err}"
        );
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "{spec}");
    }
    let mut left: Vec<String> = std::fs::read_dir(fx.disk_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["link", "ok.img"]);
}

#[test]
fn a_grow_asked_for_is_done_at_the_next_prepare_begin() {
    let fx = Fx::new();
    fx.set_disks(&["raw:{root}/g.img,vda,virtio,1"]);
    let g = fx.disk_root().join("g.img");
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::write(&g, b"data").unwrap();
    let mut store = SqliteStore::open(&fx.db(), OpenMode::ReadWrite).unwrap();
    store.grow_disk(VM, "vda", 3).unwrap();
    drop(store);
    let out = fx.hook(VM, "prepare", "begin", &fx.xml());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::metadata(&g).unwrap().len(), 3 << 30);
    assert_eq!(&std::fs::read(&g).unwrap()[..4], b"data");
    let store = SqliteStore::open(&fx.db(), OpenMode::ReadOnly).unwrap();
    assert!(!store.vm_disks(VM).unwrap()[0].grow, "the grow still waits");
}
