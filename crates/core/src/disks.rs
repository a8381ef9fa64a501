//! VM disk images on their container: made the first time the VM starts, at
//! the size the database holds, as Rocks made them (`rocks start host vm` ran
//! `rocks-create-vm-disks` on the container when libvirt reported a missing
//! disk: rocksclusters/kvm, src/rocks-command/rocks-create-vm-disks); grown
//! when the database asks; never destroyed.
//!
//! - **Only where disks belong.** Images are made, and grown, only inside the
//!   folders of `kvm_disk_roots`, reached from the root one folder at a time
//!   with `O_NOFOLLOW`: a symlink below a root stops the walk, so nothing is
//!   made through one. A root itself must exist (a missing root is storage
//!   that is not mounted); missing folders below it are made, mode 0711 (QEMU
//!   may pass through, nobody may list), as Rocks made them.
//! - **Never destroys.** An existing file is never truncated, replaced or
//!   resized, except grown when the database asks (`kvmroll vm disk resize`).
//!   An image is written under a temporary name in its folder, synced, and
//!   given its name with `RENAME_NOREPLACE` (or `link`, which never replaces
//!   either, where the file system lacks it), so a half-made image never has
//!   the real name; a failure removes it and the folders made for it.
//! - **Formats.** qcow2 is written here: a v3 header, a refcount table and
//!   block, and an empty L1 table (QEMU's docs/interop/qcow2.txt), four
//!   clusters and no subprocess; raw and file images are sparse files. Growing
//!   a qcow2 image, which may hold data, snapshots or a larger L1 table to
//!   move, is left to `qemu-img resize`.
//! - **Owner.** Images are root's, mode 0600: libvirt's DAC driver hands each
//!   disk to QEMU's user when the VM starts and back when it stops (qemu.conf
//!   `dynamic_ownership`, on by default). Where qemu.conf turns that off, the
//!   image is given to qemu.conf's `user` and `group` when it is made.
//!
//! No libvirt here: the hook calls this at `prepare begin`, while libvirtd
//! waits for it.

use crate::model::{check_abs_path, Disk, DiskKind, ValidationError};
use kvmroll_plugins::{self as plugins, RunSpec};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod image;
mod owner;
mod walk;

use image::{grow_image, Image};
pub use owner::{image_owner, QemuConf};
use walk::{Reached, Walk};

/// The attribute listing the folders disks are made in, colon-separated.
pub const ROOTS_ATTR: &str = "kvm_disk_roots";

/// Rocks' disk folder on its containers, and libvirt's own.
pub const DEFAULT_ROOTS: &str = "/state/partition1/kvm/disks:/var/lib/libvirt/images";

const GIB: u64 = 1 << 30;

/// The bytes of a size given in GiB.
pub fn gib_bytes(gib: u32) -> u64 {
    u64::from(gib) * GIB
}

/// Path components, without empty ones (`//`) and `.`; `..` was refused when
/// the path was set ([`check_abs_path`]).
fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// The folders of `kvm_disk_roots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    roots: Vec<String>,
}

impl Roots {
    /// Parses a colon-separated list of absolute folders other than `/`.
    pub fn parse(value: &str) -> Result<Roots, String> {
        let mut roots = Vec::new();
        for root in value.split(':').filter(|r| !r.trim().is_empty()) {
            let root = root.trim();
            check_abs_path(root).map_err(|e| e.to_string())?;
            if components(root).is_empty() {
                return Err("/ cannot be a disk root: name the folders disks belong in".into());
            }
            roots.push(root.to_string());
        }
        if roots.is_empty() {
            return Err("no folder given: expected absolute folders separated by ':'".into());
        }
        Ok(Roots { roots })
    }

    /// The roots a VM's resolved attribute names, or the default.
    pub fn of(value: Option<&str>) -> Result<Roots, String> {
        Roots::parse(value.unwrap_or(DEFAULT_ROOTS))
    }

    /// The root `path` is inside, as it is written (no link is followed), and
    /// the components below it; `None` outside every root.
    fn locate(&self, path: &str) -> Option<(&str, Vec<String>)> {
        let want = components(path);
        self.roots.iter().find_map(|root| {
            let root_parts = components(root);
            (want.len() > root_parts.len() && want[..root_parts.len()] == root_parts[..]).then(
                || {
                    let below = want[root_parts.len()..]
                        .iter()
                        .map(|c| c.to_string())
                        .collect();
                    (root.as_str(), below)
                },
            )
        })
    }

    /// Whether `path`, as written, is inside a root.
    pub fn contains(&self, path: &str) -> bool {
        self.locate(path).is_some()
    }

    /// Refuses an image path outside the roots; block devices are never made,
    /// so they may be anywhere.
    pub fn check(&self, disk: &Disk) -> Result<(), ValidationError> {
        if disk.kind == DiskKind::Block || self.contains(&disk.path) {
            return Ok(());
        }
        Err(ValidationError::Value {
            what: "disk path".into(),
            value: disk.path.clone(),
            why: format!(
                "it is outside {ROOTS_ATTR} ({self}), the folders kvmroll makes disks in; \
                 add its folder to {ROOTS_ATTR}, or give --force to use an image kvmroll never makes"
            ),
        })
    }
}

impl fmt::Display for Roots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.roots.join(":"))
    }
}

/// Why a disk could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("block device {path} does not exist; kvmroll never creates block devices")]
    BlockMissing { path: String },
    #[error("{path} does not exist and the disk has no size: give it a size (kvmroll vm disk resize) or create the image")]
    NoSize { path: String },
    #[error("{path} does not exist and is outside {ROOTS_ATTR} ({roots}), where kvmroll makes disks: create it, or put the disk under a root")]
    Outside { path: String, roots: String },
    #[error("{path} does not exist and reaches through the symlink {link}: kvmroll makes disks only inside {ROOTS_ATTR}, following no symlink there")]
    Symlink { path: String, link: PathBuf },
    #[error("{path} cannot be made: {at} is not a folder")]
    NotAFolder { path: String, at: PathBuf },
    #[error("cannot open the disk root {root} (is its storage mounted?)")]
    Root {
        root: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot look at {path}")]
    Inspect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the folder {path}")]
    MakeFolder {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no room for {path}: its file system has {free} bytes free, {need} are needed")]
    NoSpace { path: String, free: u64, need: u64 },
    #[error("cannot make {path}")]
    Make {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is missing, but VM {vm} has a saved state that expects its data: put the image back, or discard the saved state (virsh managedsave-remove {vm})")]
    SavedState { path: String, vm: String },
    #[error("a qcow2 image of {gib} GiB is beyond QEMU's limits")]
    TooLarge { gib: u32 },
    #[error("cannot grow {path}")]
    Grow {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot grow {path} to {bytes} bytes: {why}")]
    GrowQcow2 {
        path: String,
        bytes: u64,
        why: String,
    },
    #[error("cannot read {path}")]
    ReadConf {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{conf} names {what} {name:?}, which {file} does not have")]
    UnknownOwner {
        conf: PathBuf,
        what: &'static str,
        name: String,
        file: PathBuf,
    },
}

/// What [`prepare`] did to one disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// It was there, and is used as it is.
    Present,
    /// Made now.
    Made,
    /// Grown from one size to another (bytes).
    Grown { from: u64, to: u64 },
    /// A grow was asked for but is not kvmroll's to do; the image is used
    /// as it is.
    NotGrown(String),
}

/// The system the images are made on, taken as values so tests can run on a
/// fake one.
#[derive(Debug, Clone)]
pub struct Place<'a> {
    /// `/` on a container: qemu.conf, passwd, group and libvirt's save folder
    /// are read below it.
    pub sysroot: &'a Path,
    /// The VM the disks belong to.
    pub vm: &'a str,
    /// The program that grows qcow2 images (`qemu-img`, from PATH).
    pub qemu_img: &'a Path,
    /// When the stage's time is up; a `qemu-img` still running is killed.
    pub deadline: Instant,
}

/// Makes `disk` ready for a start: made when it is missing (see the module
/// documentation for where and how), grown when `grow` is set and the
/// database's size is larger than the image, and otherwise left as it is.
pub fn prepare(
    disk: &Disk,
    grow: bool,
    roots: &Roots,
    place: &Place<'_>,
) -> Result<Done, DiskError> {
    let path = disk.path.as_str();
    if disk.kind == DiskKind::Block {
        return block_device(path);
    }
    let target = disk.size_gib.map(gib_bytes);
    let Some((root, below)) = roots.locate(path) else {
        return outside_roots(path, grow, roots);
    };
    let (name, folders) = below.split_last().expect("a path inside a root has a name");
    let mut walk = Walk::start(Path::new(root))?;
    match walk.down(folders, false, path)? {
        Reached::Folder => {}
        Reached::Missing => {
            return make_missing(disk, target, Path::new(root), folders, name, place)
        }
        Reached::Link(link) => {
            // An image that is there, through a link, is used as it is.
            return match std::fs::metadata(path) {
                Ok(_) if grow => Ok(Done::NotGrown(format!(
                    "{path} is reached through the symlink {}; kvmroll changes no image there",
                    link.display()
                ))),
                Ok(_) => Ok(Done::Present),
                Err(_) => Err(DiskError::Symlink {
                    path: path.into(),
                    link,
                }),
            };
        }
    }
    let dir = walk.dir();
    let here = walk.here.join(name);
    match nix::sys::stat::fstatat(
        Some(dir.as_raw_fd()),
        name.as_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(st) => {
            let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
            match target {
                Some(bytes) if grow && regular => {
                    grow_image(dir, name, path, disk.kind, bytes, place)
                }
                Some(_) if grow => Ok(Done::NotGrown(format!(
                    "{path} is not a regular file; kvmroll changes no such image"
                ))),
                _ => Ok(Done::Present),
            }
        }
        Err(Errno::ENOENT) => make_missing(disk, target, Path::new(root), folders, name, place),
        Err(e) => Err(DiskError::Inspect {
            path: here,
            source: e.into(),
        }),
    }
}

/// A block device disk: used as it is, refused when it is not there.
fn block_device(path: &str) -> Result<Done, DiskError> {
    // libvirt follows /dev/disk/by-* links; so does this look.
    match std::fs::metadata(path) {
        Ok(_) => Ok(Done::Present),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(DiskError::BlockMissing { path: path.into() })
        }
        Err(source) => Err(DiskError::Inspect {
            path: path.into(),
            source,
        }),
    }
}

/// An image outside every root: used as it is, never made nor grown.
fn outside_roots(path: &str, grow: bool, roots: &Roots) -> Result<Done, DiskError> {
    match std::fs::symlink_metadata(path) {
        Ok(_) if grow => Ok(Done::NotGrown(format!(
            "{path} is outside {ROOTS_ATTR} ({roots}); kvmroll changes no image there"
        ))),
        Ok(_) => Ok(Done::Present),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DiskError::Outside {
            path: path.into(),
            roots: roots.to_string(),
        }),
        Err(source) => Err(DiskError::Inspect {
            path: path.into(),
            source,
        }),
    }
}

/// Whether the disk's image is there and smaller than the disk's size (a
/// raw file's length, a qcow2 image's virtual size): a grow may wait for it.
/// A look only, without the walk [`prepare`] takes: nothing is changed.
pub fn smaller_than_its_size(disk: &Disk) -> bool {
    let Some(gib) = disk.size_gib else {
        return false;
    };
    if disk.kind == DiskKind::Block {
        return false;
    }
    let Ok(file) = File::open(&disk.path) else {
        return false;
    };
    let bytes = if disk.kind == DiskKind::Qcow2 {
        let mut header = [0u8; 32];
        match file.read_exact_at(&mut header, 0) {
            Ok(()) if &header[..4] == b"QFI\xfb" => {
                u64::from_be_bytes(header[24..32].try_into().expect("eight bytes"))
            }
            _ => return false,
        }
    } else {
        match file.metadata() {
            Ok(m) if m.is_file() => m.len(),
            _ => return false,
        }
    };
    bytes < gib_bytes(gib)
}

/// Makes a missing image: the missing ones of its folders below `root`,
/// then the image.
fn make_missing(
    disk: &Disk,
    target: Option<u64>,
    root: &Path,
    folders: &[String],
    name: &str,
    place: &Place<'_>,
) -> Result<Done, DiskError> {
    let path = disk.path.as_str();
    let bytes = target.ok_or_else(|| DiskError::NoSize { path: path.into() })?;
    // A guest saved with this disk expects its data on it, not a blank disk.
    let save = place
        .sysroot
        .join("var/lib/libvirt/qemu/save")
        .join(format!("{}.save", place.vm));
    if save.exists() {
        return Err(DiskError::SavedState {
            path: path.into(),
            vm: place.vm.into(),
        });
    }
    let image = Image::new(disk.kind, bytes, disk.size_gib.unwrap_or_default())?;
    let owner = image_owner(place.sysroot)?;
    let mut walk = Walk::start(root)?;
    let result = walk
        .down(folders, true, path)
        .and_then(|_| image.write(walk.dir(), name, path, owner));
    match result {
        Ok(true) => Ok(Done::Made),
        // Another start made it meanwhile: it is used, and is not ours.
        Ok(false) => {
            walk.made.clear();
            Ok(Done::Present)
        }
        Err(e) => {
            walk.undo();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
