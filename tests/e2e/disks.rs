//! End to end against the real libvirtd and its installed kvmroll hook: VM
//! disks made at the first `virsh start`, as Rocks made them, and the faults
//! that refuse a start without leaving anything half-made.
//!
//! The database is the end-to-end one the installed hook reads, shared with
//! the other tests running at the same time: each VM is named after this
//! process and test, its disks live in a temporary folder that only its own
//! `kvm_disk_roots` (set on the VM) names, and its guard removes it all.
//!
//! On the cluster rig, a VM defined from the frontend gets its disk made
//! on its container, not on the frontend: tests/e2e/cluster/
//! (`a_missing_disk_is_made_on_its_container_not_on_the_frontend`).

use kvmroll_tests::{bin, installed_hook, ok, prefix, virsh, virsh_ok, Kvmroll};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const GIB: u64 = 1 << 30;

/// This machine as a VM container in the hook's database, and a folder for
/// this test's disks; `None` to skip (never under `KVMROLL_E2E`).
struct Fx {
    k: Kvmroll,
    host: String,
    dir: tempfile::TempDir,
}

impl Fx {
    fn get(test: &str) -> Option<Fx> {
        let conf = installed_hook(test)?;
        let k = Kvmroll::new(&conf.db);
        let host = k.local_container();
        let dir = tempfile::tempdir().unwrap();
        Some(Fx { k, host, dir })
    }

    fn path(&self, rel: &str) -> String {
        self.dir.path().join(rel).to_string_lossy().into_owned()
    }

    /// A VM whose kvm_disk_roots is `roots` (this test's folder when
    /// `None`), with these disks, defined in libvirt.
    fn vm(&self, test: &str, roots: Option<&str>, disks: &[String]) -> TestVm {
        let vm = TestVm {
            name: format!("{}-{test}", prefix("disks")),
            k: self.k.clone(),
        };
        self.k.add_small_vm(&vm.name, &self.host);
        let roots = roots.map_or_else(|| self.path(""), str::to_string);
        self.k
            .ok(&["attr", "set", &vm.name, "kvm_disk_roots", &roots]);
        for d in disks {
            self.k.ok(&["vm", "disk", "add", &vm.name, d]);
        }
        self.k.ok(&["vm", "define", &vm.name]);
        vm
    }
}

/// Destroys, undefines and removes the VM when dropped, even when the test
/// fails.
struct TestVm {
    name: String,
    k: Kvmroll,
}

impl Drop for TestVm {
    fn drop(&mut self) {
        let _ = virsh(&["destroy", &self.name]);
        let _ = virsh(&["undefine", &self.name, "--managed-save"]);
        let _ = bin("kvmroll")
            .arg("--db")
            .arg(&self.k.db)
            .args(["--no-sync", "vm", "remove", &self.name])
            .output();
    }
}

/// A tmpfs mounted for a test, unmounted when dropped (also on failure).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        ok(out, "mount -t tmpfs");
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, opts: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .output()
            .unwrap();
        ok(out, "mount -o remount");
    }

    /// Every name on it.
    fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn qemu_img(args: &[&str]) -> String {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img runs (scripts/deps.sh installs qemu-utils)");
    ok(out, &format!("qemu-img {args:?}"))
}

fn sha256(path: &str) -> String {
    ok(
        Command::new("sha256sum").arg(path).output().unwrap(),
        "sha256sum",
    )
}

/// The hook's own line in a refused `virsh start`'s error: libvirt puts it
/// after "unexpected exit status 1: ".
fn hook_line(out: &Output) -> String {
    assert!(!out.status.success(), "the start was not refused");
    let err = String::from_utf8_lossy(&out.stderr);
    let (_, said) = err
        .split_once("unexpected exit status 1: ")
        .unwrap_or_else(|| panic!("not a hook refusal: {err}"));
    assert_eq!(said.trim().lines().count(), 1, "not one line: {said}");
    said.trim().to_string()
}

#[test]
fn missing_disks_are_made_at_the_first_virsh_start() {
    let t = "missing_disks_are_made_at_the_first_virsh_start";
    let Some(fx) = Fx::get(t) else { return };
    let (a, b) = (fx.path("vm/vda.qcow2"), fx.path("vm/vdb.img"));
    let vm = fx.vm(
        "first",
        None,
        &[
            format!("qcow2:{a},vda,virtio,2"),
            format!("raw:{b},vdb,virtio,1"),
        ],
    );
    assert!(!Path::new(&a).exists());
    virsh_ok(&["start", &vm.name]);
    assert_eq!(virsh_ok(&["domstate", &vm.name]).trim(), "running");
    // QEMU holds the image: -U reads it beside the running guest.
    let info = qemu_img(&["info", "-U", "--output=json", &a]);
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 2 * GIB)),
        "{info}"
    );
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    let raw = std::fs::metadata(&b).unwrap();
    assert_eq!(raw.len(), GIB);
    assert!(
        raw.blocks() * 512 < 1 << 20,
        "the raw image is not sparse: {} blocks",
        raw.blocks()
    );
    // libvirt sees them at the sizes the database holds.
    let blk = virsh_ok(&["domblkinfo", &vm.name, "vda"]);
    assert!(blk.contains(&format!("{}", 2 * GIB)), "{blk}");
    let events = fx.k.ok(&["events", "--vm", &vm.name, "--json"]);
    assert!(events.contains("made qcow2 image"), "{events}");
    assert!(events.contains("made raw image"), "{events}");
    virsh_ok(&["destroy", &vm.name]);
    let check = qemu_img(&["check", "--output=json", &a]);
    assert!(check.contains("\"check-errors\": 0"), "{check}");
}

#[test]
fn an_existing_image_with_data_is_untouched_by_a_start() {
    let t = "an_existing_image_with_data_is_untouched_by_a_start";
    let Some(fx) = Fx::get(t) else { return };
    let (a, b) = (fx.path("old.qcow2"), fx.path("old.img"));
    qemu_img(&["create", "-q", "-f", "qcow2", &a, "1G"]);
    let io = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 1M", &a])
        .output()
        .unwrap();
    ok(io, "qemu-io write");
    std::fs::write(&b, vec![0x7eu8; 1 << 20]).unwrap();
    let before = (sha256(&a), sha256(&b));
    // The database's sizes are larger: an image that exists is used as it
    // is, never resized to match.
    let vm = fx.vm(
        "existing",
        None,
        &[
            format!("qcow2:{a},vda,virtio,2"),
            format!("raw:{b},vdb,virtio,2"),
        ],
    );
    virsh_ok(&["start", &vm.name]);
    virsh_ok(&["destroy", &vm.name]);
    assert_eq!((sha256(&a), sha256(&b)), before);
    assert_eq!(std::fs::metadata(&b).unwrap().len(), 1 << 20);
    let events = fx.k.ok(&["events", "--vm", &vm.name, "--json"]);
    assert!(!events.contains("made"), "{events}");
}

#[test]
fn paths_outside_the_roots_are_refused_also_through_a_symlink() {
    let t = "paths_outside_the_roots_are_refused_also_through_a_symlink";
    let Some(fx) = Fx::get(t) else { return };
    let outside = tempfile::tempdir().unwrap();
    let vm = fx.vm("outside", None, &[]);
    // Set outside the roots: refused by kvmroll, naming the attribute.
    let spec = format!("qcow2:{}/x.qcow2,vda,virtio,1", outside.path().display());
    let out = fx.k.run(&["vm", "disk", "add", &vm.name, &spec]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("kvm_disk_roots"), "{err}");
    // Inside as written, outside through a symlink: refused at the start.
    std::os::unix::fs::symlink(outside.path(), fx.dir.path().join("link")).unwrap();
    let spec = format!("qcow2:{},vda,virtio,1", fx.path("link/x.qcow2"));
    fx.k.ok(&["vm", "disk", "add", &vm.name, &spec]);
    let said = hook_line(&virsh(&["start", &vm.name]));
    assert!(said.contains("symlink"), "{said}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(virsh_ok(&["domstate", &vm.name]).trim(), "shut off");
}

#[test]
fn a_full_or_read_only_file_system_refuses_the_start_and_keeps_nothing() {
    let t = "a_full_or_read_only_file_system_refuses_the_start_and_keeps_nothing";
    let Some(fx) = Fx::get(t) else { return };
    let fs = Tmpfs::mount(&fx.dir.path().join("small"), "1M");
    let root = fs.0.to_string_lossy().into_owned();
    // Fill it: writes go until the file system is full.
    let fill = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={root}/fill"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&fill.stderr).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&fill.stderr)
    );
    let vm = fx.vm(
        "full",
        Some(&root),
        &[
            format!("qcow2:{root}/vm/vda.qcow2,vda,virtio,1"),
            format!("raw:{root}/vm/vdb.img,vdb,virtio,1"),
        ],
    );
    let said = hook_line(&virsh(&["start", &vm.name]));
    assert!(
        said.contains("disk vda") && said.contains("no room"),
        "{said}"
    );
    assert_eq!(fs.names(), ["fill"], "something half-made remained");
    // Room again, but read-only: refused as well, nothing made.
    std::fs::remove_file(fs.0.join("fill")).unwrap();
    fs.remount("ro");
    let said = hook_line(&virsh(&["start", &vm.name]));
    assert!(said.contains("Read-only file system"), "{said}");
    fs.remount("rw");
    assert!(fs.names().is_empty(), "{:?}", fs.names());
    // And writable again, the start makes both.
    virsh_ok(&["start", &vm.name]);
    virsh_ok(&["destroy", &vm.name]);
    assert_eq!(fs.names(), ["vm"]);
}

#[test]
fn disks_grow_live_or_at_the_next_start_and_removal_deletes_only_what_kvmroll_made() {
    let t = "disks_grow_live_or_at_the_next_start_and_removal_deletes_only_what_kvmroll_made";
    let Some(fx) = Fx::get(t) else { return };
    let (a, b, c) = (
        fx.path("g/vda.qcow2"),
        fx.path("g/vdb.img"),
        fx.path("theirs.img"),
    );
    std::fs::write(&c, b"not kvmroll's").unwrap();
    let mut vm = fx.vm(
        "grow",
        None,
        &[
            format!("qcow2:{a},vda,virtio,2"),
            format!("raw:{b},vdb,virtio,1"),
            format!("raw:{c},vdc,virtio,1"),
        ],
    );
    virsh_ok(&["start", &vm.name]);
    // While it runs: libvirt's block resize.
    let out = fx.k.run(&["vm", "disk", "resize", &vm.name, "vda", "3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("grown while it runs"),
        "{err}"
    );
    let blk = virsh_ok(&["domblkinfo", &vm.name, "vda"]);
    assert!(blk.contains(&format!("{}", 3 * GIB)), "{blk}");
    let info = qemu_img(&["info", "-U", "--output=json", &a]);
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 3 * GIB)),
        "{info}"
    );
    virsh_ok(&["destroy", &vm.name]);
    // Stopped: at the next start.
    let out = fx.k.run(&["vm", "disk", "resize", &vm.name, "vdb", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("at its next start"),
        "{err}"
    );
    assert_eq!(std::fs::metadata(&b).unwrap().len(), GIB);
    virsh_ok(&["start", &vm.name]);
    assert_eq!(std::fs::metadata(&b).unwrap().len(), 2 * GIB);
    virsh_ok(&["destroy", &vm.name]);
    // Removed with --delete-disks: the images it made go, the other stays.
    let name = std::mem::take(&mut vm.name);
    let out = fx.k.run(&["vm", "remove", &name, "--delete-disks"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!Path::new(&a).exists() && !Path::new(&b).exists(), "{err}");
    assert_eq!(std::fs::read(&c).unwrap(), b"not kvmroll's");
    assert!(
        err.contains(&format!("{c} was not made by kvmroll")),
        "{err}"
    );
    assert!(
        !virsh(&["domstate", &name]).status.success(),
        "still defined"
    );
}

#[test]
fn a_removed_vm_keeps_its_images_without_the_flag() {
    let t = "a_removed_vm_keeps_its_images_without_the_flag";
    let Some(fx) = Fx::get(t) else { return };
    let a = fx.path("keep/vda.qcow2");
    let mut vm = fx.vm("keep", None, &[format!("qcow2:{a},vda,virtio,1")]);
    virsh_ok(&["start", &vm.name]);
    virsh_ok(&["destroy", &vm.name]);
    let name = std::mem::take(&mut vm.name);
    let out = fx.k.run(&["vm", "remove", &name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("stay") && err.contains(&a), "{err}");
    assert!(Path::new(&a).exists());
}
