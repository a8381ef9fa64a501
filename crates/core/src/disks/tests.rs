//! Unit tests of [`super`] (disks), kept beside it so the module reads
//! on its own.

use super::image::{qcow2, CLUSTER};
use super::walk::open_dir;
use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn disk(spec: &str) -> Disk {
    Disk::parse(spec).unwrap()
}

struct Fx {
    dir: tempfile::TempDir,
    roots: Roots,
}

fn place<'a>(sysroot: &'a Path, qemu_img: &'a str) -> Place<'a> {
    Place {
        sysroot,
        vm: "v",
        qemu_img: Path::new(qemu_img),
        deadline: Instant::now() + Duration::from_secs(30),
    }
}

impl Fx {
    fn new() -> Fx {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(dir.path().join("sys")).unwrap();
        let roots = Roots::parse(&root.to_string_lossy()).unwrap();
        Fx { dir, roots }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn at(&self, rel: &str) -> String {
        self.root().join(rel).to_string_lossy().into_owned()
    }
    fn sys(&self) -> PathBuf {
        self.dir.path().join("sys")
    }
    fn prepare(&self, d: &Disk, grow: bool) -> Result<Done, DiskError> {
        prepare(d, grow, &self.roots, &place(&self.sys(), "qemu-img"))
    }
    /// Every name in the root, recursively, hidden ones included.
    fn names(&self) -> Vec<String> {
        fn walk(d: &Path, base: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                out.push(p.strip_prefix(base).unwrap().to_string_lossy().into_owned());
                if p.is_dir() && !p.is_symlink() {
                    walk(&p, base, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.root(), &self.root(), &mut out);
        out.sort();
        out
    }
}

fn qemu_img(args: &[&str]) -> Option<String> {
    let out = Command::new("qemu-img").args(args).output().ok()?;
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn roots_parse_and_contain_paths_as_written() {
    let r = Roots::parse("/a/disks: /b/images/ ").unwrap();
    assert_eq!(r.to_string(), "/a/disks:/b/images/");
    assert!(r.contains("/a/disks/x.qcow2"));
    assert!(r.contains("/b/images//vm/./x.img"));
    assert!(!r.contains("/a/disks"), "the root itself is no image");
    assert!(!r.contains("/a/disksX/x.qcow2"));
    assert!(!r.contains("/tmp/x.qcow2"));
    for bad in ["", ":", "relative", "/", "/a/../b"] {
        assert!(Roots::parse(bad).is_err(), "{bad:?} was taken");
    }
    assert_eq!(Roots::of(None).unwrap().to_string(), DEFAULT_ROOTS);
    let e = r
        .check(&disk("qcow2:/tmp/nd/x.qcow2,vda,virtio,2"))
        .unwrap_err();
    assert!(e.to_string().contains(ROOTS_ATTR), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    r.check(&disk("block:/dev/sdb,vdb,virtio")).unwrap();
    r.check(&disk("raw:/a/disks/x.img,vdb,virtio,1")).unwrap();
}

#[test]
fn a_missing_qcow2_is_made_thin_and_qemu_img_reads_it() {
    let fx = Fx::new();
    let path = fx.at("vm/vda.qcow2");
    let d = disk(&format!("qcow2:{path},vda,virtio,2"));
    assert_eq!(fx.prepare(&d, false).unwrap(), Done::Made);
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.uid(), nix::unistd::geteuid().as_raw());
    assert!(
        meta.blocks() * 512 <= 4 * CLUSTER,
        "{} blocks",
        meta.blocks()
    );
    let folder = std::fs::metadata(fx.at("vm")).unwrap();
    assert_eq!(folder.permissions().mode() & 0o777, 0o711);
    assert_eq!(fx.names(), ["vm", "vm/vda.qcow2"], "a temporary remained");
    let Some(info) = qemu_img(&["info", "--output=json", &path]) else {
        eprintln!("qemu-img is not installed: the image's format is not checked");
        return;
    };
    assert!(info.contains("\"virtual-size\": 2147483648"), "{info}");
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    assert!(info.contains("\"compat\": \"1.1\""), "{info}");
    let check = qemu_img(&["check", "--output=json", &path]).unwrap();
    assert!(check.contains("\"check-errors\": 0"), "{check}");
    assert!(!check.contains("leaks"), "{check}");
    // QEMU's own block layer writes and reads it back, past the first
    // L2 table's reach.
    let io = Command::new("qemu-io")
        .args([
            "-f",
            "qcow2",
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "write -P 0xcd 1536M 64k",
        ])
        .args([
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "read -P 0xcd 1536M 64k",
            &path,
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&io.stdout);
    assert!(
        io.status.success() && !said.contains("Pattern verification failed"),
        "{said}"
    );
    let check = qemu_img(&["check", "--output=json", &path]).unwrap();
    assert!(check.contains("\"check-errors\": 0"), "{check}");
}

#[test]
fn qcow2_images_of_any_size_pass_qemu_img_check() {
    let fx = Fx::new();
    for gib in [1u32, 513, 5000] {
        let path = fx.at(&format!("x{gib}.qcow2"));
        let d = disk(&format!("qcow2:{path},vda,virtio,{gib}"));
        assert_eq!(fx.prepare(&d, false).unwrap(), Done::Made);
        let Some(check) = qemu_img(&["check", "--output=json", &path]) else {
            return;
        };
        assert!(check.contains("\"check-errors\": 0"), "{gib}: {check}");
        let info = qemu_img(&["info", "--output=json", &path]).unwrap();
        let want = format!("\"virtual-size\": {}", gib_bytes(gib));
        assert!(info.contains(&want), "{gib}: {info}");
    }
    assert!(qcow2(u64::MAX).is_none());
    assert!(qcow2(3 << 50).is_none(), "3 PiB is past QEMU's L1 limit");
}

#[test]
fn raw_and_file_images_are_sparse_files_of_their_size() {
    let fx = Fx::new();
    for kind in ["raw", "file"] {
        let path = fx.at(&format!("{kind}.img"));
        let d = disk(&format!("{kind}:{path},vdb,virtio,1"));
        assert_eq!(fx.prepare(&d, false).unwrap(), Done::Made);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), GIB);
        assert_eq!(meta.blocks(), 0, "not sparse");
    }
}

#[test]
fn an_existing_file_is_never_touched() {
    let fx = Fx::new();
    let path = fx.at("old.qcow2");
    std::fs::write(&path, b"the guest's data").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let before = std::fs::metadata(&path).unwrap();
    let d = disk(&format!("qcow2:{path},vda,virtio,2"));
    assert_eq!(fx.prepare(&d, false).unwrap(), Done::Present);
    // Not even a larger size in the database grows it, unless asked.
    let raw = disk(&format!("raw:{path},vda,virtio,2"));
    assert_eq!(fx.prepare(&raw, false).unwrap(), Done::Present);
    assert_eq!(std::fs::read(&path).unwrap(), b"the guest's data");
    let after = std::fs::metadata(&path).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!(after.mtime_nsec(), before.mtime_nsec());
    assert_eq!(after.ino(), before.ino());
}

#[test]
fn a_disk_without_a_size_or_outside_the_roots_is_not_made() {
    let fx = Fx::new();
    let path = fx.at("nosize.qcow2");
    let e = fx
        .prepare(&disk(&format!("qcow2:{path},vda,virtio")), false)
        .unwrap_err();
    assert!(matches!(e, DiskError::NoSize { .. }), "{e}");
    assert!(e.to_string().contains("give it a size"), "{e}");
    let outside = fx.dir.path().join("elsewhere/x.qcow2");
    let e = fx
        .prepare(
            &disk(&format!("qcow2:{},vda,virtio,1", outside.display())),
            false,
        )
        .unwrap_err();
    assert!(e.to_string().contains(ROOTS_ATTR), "{e}");
    assert!(!fx.dir.path().join("elsewhere").exists());
    // Existing images outside the roots are used as they are.
    let there = fx.dir.path().join("there.img");
    std::fs::write(&there, b"x").unwrap();
    let d = disk(&format!("raw:{},vda,virtio,1", there.display()));
    assert_eq!(fx.prepare(&d, false).unwrap(), Done::Present);
    assert!(matches!(fx.prepare(&d, true).unwrap(), Done::NotGrown(_)));
    assert_eq!(std::fs::read(&there).unwrap(), b"x");
    assert!(fx.names().is_empty(), "{:?}", fx.names());
}

#[test]
fn nothing_is_made_through_a_symlink_out_of_a_root() {
    let fx = Fx::new();
    let outside = fx.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, fx.root().join("link")).unwrap();
    for rel in ["link/x.qcow2", "link/deeper/x.qcow2"] {
        let d = disk(&format!("qcow2:{},vda,virtio,1", fx.at(rel)));
        let e = fx.prepare(&d, false).unwrap_err();
        assert!(matches!(e, DiskError::Symlink { .. }), "{rel}: {e}");
        assert!(e.to_string().contains("link"), "{e}");
    }
    // Nor as the image's own name.
    std::os::unix::fs::symlink(outside.join("y.img"), fx.root().join("y.img")).unwrap();
    let d = disk(&format!("raw:{},vda,virtio,1", fx.at("y.img")));
    assert_eq!(fx.prepare(&d, false).unwrap(), Done::Present);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // An image that is there through a link is used, never grown.
    std::fs::write(outside.join("z.img"), b"z").unwrap();
    let d = disk(&format!("raw:{},vda,virtio,1", fx.at("link/z.img")));
    assert_eq!(fx.prepare(&d, false).unwrap(), Done::Present);
    assert!(matches!(fx.prepare(&d, true).unwrap(), Done::NotGrown(_)));
    assert_eq!(std::fs::read(outside.join("z.img")).unwrap(), b"z");
}

#[test]
fn a_missing_root_or_block_device_refuses() {
    let fx = Fx::new();
    let gone = fx.dir.path().join("gone");
    let roots = Roots::parse(&gone.to_string_lossy()).unwrap();
    let sys = fx.sys();
    let place = place(&sys, "qemu-img");
    let d = disk(&format!("qcow2:{}/x.qcow2,vda,virtio,1", gone.display()));
    let e = prepare(&d, false, &roots, &place).unwrap_err();
    assert!(matches!(e, DiskError::Root { .. }), "{e}");
    assert!(!gone.exists());
    let e = prepare(
        &disk("block:/dev/kvmroll-no-such-disk,vdb,virtio"),
        false,
        &roots,
        &place,
    )
    .unwrap_err();
    assert!(e.to_string().contains("/dev/kvmroll-no-such-disk"), "{e}");
    assert!(e.to_string().contains("never creates"), "{e}");
    assert!(!Path::new("/dev/kvmroll-no-such-disk").exists());
}

#[test]
fn a_failed_make_leaves_no_image_and_no_folder() {
    let fx = Fx::new();
    // A file where a folder must be: the make fails below the new folder.
    std::fs::create_dir(fx.root().join("a")).unwrap();
    std::fs::write(fx.root().join("a/b"), b"").unwrap();
    let d = disk(&format!("qcow2:{},vda,virtio,1", fx.at("a/b/c/x.qcow2")));
    let e = fx.prepare(&d, false).unwrap_err();
    assert!(matches!(e, DiskError::NotAFolder { .. }), "{e}");
    // A failure after folders were made takes them away again.
    let mut walk = Walk::start(&fx.root()).unwrap();
    let folders = ["p".to_string(), "q".to_string()];
    walk.down(&folders, true, "x").unwrap();
    assert!(fx.root().join("p/q").is_dir());
    walk.undo();
    assert_eq!(fx.names(), ["a", "a/b"]);
}

#[test]
fn a_saved_guest_does_not_get_a_blank_disk() {
    let fx = Fx::new();
    let save = fx.sys().join("var/lib/libvirt/qemu/save");
    std::fs::create_dir_all(&save).unwrap();
    std::fs::write(save.join("v.save"), b"state").unwrap();
    let d = disk(&format!("qcow2:{},vda,virtio,1", fx.at("x.qcow2")));
    let e = fx.prepare(&d, false).unwrap_err();
    assert!(e.to_string().contains("managedsave-remove"), "{e}");
    assert!(fx.names().is_empty());
}

#[test]
fn a_race_with_another_maker_keeps_the_first_image() {
    let fx = Fx::new();
    let dir = open_dir(None, &fx.root().to_string_lossy(), true).unwrap();
    std::fs::write(fx.root().join("x.img"), b"first").unwrap();
    let image = Image::new(DiskKind::Raw, GIB, 1).unwrap();
    assert!(!image.write(&dir, "x.img", "x.img", None).unwrap());
    assert_eq!(std::fs::read(fx.root().join("x.img")).unwrap(), b"first");
    assert_eq!(fx.names(), ["x.img"], "the temporary stayed");
}

#[test]
fn grows_raw_images_and_never_shrinks_them() {
    let fx = Fx::new();
    let path = fx.at("g.img");
    std::fs::write(&path, b"data").unwrap();
    let d = disk(&format!("raw:{path},vda,virtio,1"));
    assert_eq!(
        fx.prepare(&d, true).unwrap(),
        Done::Grown { from: 4, to: GIB }
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), GIB);
    assert_eq!(&std::fs::read(&path).unwrap()[..4], b"data");
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(2 * GIB)
        .unwrap();
    assert_eq!(fx.prepare(&d, true).unwrap(), Done::Present);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * GIB);
}

#[test]
fn grows_qcow2_images_with_qemu_img() {
    let fx = Fx::new();
    let path = fx.at("g.qcow2");
    let small = disk(&format!("qcow2:{path},vda,virtio,1"));
    assert_eq!(fx.prepare(&small, false).unwrap(), Done::Made);
    if qemu_img(&["--version"]).is_none() {
        return;
    }
    let big = disk(&format!("qcow2:{path},vda,virtio,3"));
    assert_eq!(
        fx.prepare(&big, true).unwrap(),
        Done::Grown {
            from: GIB,
            to: 3 * GIB
        }
    );
    let info = qemu_img(&["info", "--output=json", &path]).unwrap();
    assert!(
        info.contains(&format!("\"virtual-size\": {}", 3 * GIB)),
        "{info}"
    );
    assert_eq!(fx.prepare(&small, true).unwrap(), Done::Present);
    // Without qemu-img the grow is refused in one line naming it.
    let huge = disk(&format!("qcow2:{path},vda,virtio,4"));
    let e = prepare(
        &huge,
        true,
        &fx.roots,
        &place(&fx.sys(), "/nonexistent/qemu-img"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("qemu-utils"), "{e}");
}

#[test]
fn qemu_conf_decides_the_owner_only_without_dynamic_ownership() {
    let fx = Fx::new();
    let sys = fx.sys();
    std::fs::create_dir_all(sys.join("etc/libvirt")).unwrap();
    assert_eq!(
        image_owner(&sys).unwrap(),
        None,
        "no qemu.conf: libvirt relabels"
    );
    std::fs::write(
        sys.join("etc/passwd"),
        "root:x:0:0::/root:/bin/sh\nlibvirt-qemu:x:64055:108::/var/lib/libvirt:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(sys.join("etc/group"), "root:x:0:\nkvm:x:104:\n").unwrap();
    let conf = sys.join("etc/libvirt/qemu.conf");
    std::fs::write(&conf, "user = \"libvirt-qemu\"\n#dynamic_ownership = 0\n").unwrap();
    assert_eq!(image_owner(&sys).unwrap(), None);
    std::fs::write(
        &conf,
        "dynamic_ownership = 0 # off\nuser = \"libvirt-qemu\"\n",
    )
    .unwrap();
    assert_eq!(image_owner(&sys).unwrap(), Some((64055, 108)));
    std::fs::write(
        &conf,
        "dynamic_ownership = 0\nuser = \"libvirt-qemu\"\ngroup = \"kvm\"\n",
    )
    .unwrap();
    assert_eq!(image_owner(&sys).unwrap(), Some((64055, 104)));
    std::fs::write(&conf, "dynamic_ownership = 0\nuser = \"+107\"\n").unwrap();
    assert_eq!(image_owner(&sys).unwrap(), Some((107, 107)));
    std::fs::write(&conf, "dynamic_ownership = 0\nuser = \"nobody-here\"\n").unwrap();
    let e = image_owner(&sys).unwrap_err();
    assert!(e.to_string().contains("nobody-here"), "{e}");
    // And the image made gets that owner.
    std::fs::write(
        &conf,
        "dynamic_ownership = 0\nuser = \"+4321\"\ngroup = \"+8765\"\n",
    )
    .unwrap();
    let path = fx.at("owned.img");
    fx.prepare(&disk(&format!("raw:{path},vda,virtio,1")), false)
        .unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4321, 8765));
}
