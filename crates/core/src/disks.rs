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
        // libvirt follows /dev/disk/by-* links; so does this look.
        return match std::fs::metadata(path) {
            Ok(_) => Ok(Done::Present),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(DiskError::BlockMissing { path: path.into() })
            }
            Err(source) => Err(DiskError::Inspect {
                path: path.into(),
                source,
            }),
        };
    }
    let target = disk.size_gib.map(gib_bytes);
    let Some((root, below)) = roots.locate(path) else {
        return match std::fs::symlink_metadata(path) {
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
        };
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

/// A walk down from a root, one folder at a time, never following a link.
struct Walk {
    /// The folders opened so far, the root first.
    dirs: Vec<OwnedFd>,
    /// Where the walk stands, as a path for messages.
    here: PathBuf,
    /// Folders this walk made: (index of the parent in `dirs`, name).
    made: Vec<(usize, String)>,
}

enum Reached {
    Folder,
    /// A folder on the way does not exist (the walk stands above it).
    Missing,
    /// A folder on the way is a symlink.
    Link(PathBuf),
}

/// Opens a folder below `dir` (or `path` itself without `dir`); below a
/// root, a symlink is refused (`ELOOP`).
fn open_dir(dir: Option<&OwnedFd>, path: &str, follow: bool) -> nix::Result<OwnedFd> {
    let mut flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    if !follow {
        flags |= OFlag::O_NOFOLLOW;
    }
    let fd = nix::fcntl::openat(dir.map(AsRawFd::as_raw_fd), path, flags, Mode::empty())?;
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl Walk {
    /// Opens the root; the root itself may be reached through links (the
    /// administrator named it).
    fn start(root: &Path) -> Result<Walk, DiskError> {
        let fd = open_dir(None, &root.to_string_lossy(), true).map_err(|e| DiskError::Root {
            root: root.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Walk {
            dirs: vec![fd],
            here: root.to_path_buf(),
            made: Vec::new(),
        })
    }

    fn dir(&self) -> &OwnedFd {
        self.dirs.last().expect("a walk holds its root")
    }

    /// Goes down through `folders`, making the missing ones when `make`.
    fn down(&mut self, folders: &[String], make: bool, path: &str) -> Result<Reached, DiskError> {
        for name in folders {
            let at = self.here.join(name);
            let opened = match open_dir(Some(self.dir()), name, false) {
                Err(Errno::ENOENT) if make => {
                    match nix::sys::stat::mkdirat(
                        Some(self.dir().as_raw_fd()),
                        name.as_str(),
                        Mode::from_bits_truncate(0o711),
                    ) {
                        Ok(()) => self.made.push((self.dirs.len() - 1, name.clone())),
                        // Made by another start meanwhile.
                        Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(DiskError::MakeFolder {
                                path: at,
                                source: e.into(),
                            })
                        }
                    }
                    open_dir(Some(self.dir()), name, false)
                }
                other => other,
            };
            match opened {
                Ok(fd) => {
                    self.dirs.push(fd);
                    self.here = at;
                }
                Err(Errno::ENOENT) => return Ok(Reached::Missing),
                Err(Errno::ELOOP) => return Ok(Reached::Link(at)),
                Err(Errno::ENOTDIR) => {
                    let link = nix::sys::stat::fstatat(
                        Some(self.dir().as_raw_fd()),
                        name.as_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .is_ok_and(|st| {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
                    });
                    return if link {
                        Ok(Reached::Link(at))
                    } else {
                        Err(DiskError::NotAFolder {
                            path: path.into(),
                            at,
                        })
                    };
                }
                Err(e) => {
                    return Err(DiskError::Inspect {
                        path: at,
                        source: e.into(),
                    })
                }
            }
        }
        Ok(Reached::Folder)
    }

    /// Removes the folders this walk made, deepest first.
    fn undo(&mut self) {
        while let Some((parent, name)) = self.made.pop() {
            let _ = nix::unistd::unlinkat(
                Some(self.dirs[parent].as_raw_fd()),
                name.as_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
        }
    }
}

/// qcow2's cluster: 64 KiB, QEMU's default.
const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;

/// QEMU opens no L1 table larger than 32 MiB (qcow2.txt, "size").
const MAX_L1_BYTES: u64 = 32 << 20;

/// An image's bytes: what to write where, and the file's length (the rest
/// reads as zeros, and takes no room).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image {
    pieces: Vec<(u64, Vec<u8>)>,
    length: u64,
}

impl Image {
    fn new(kind: DiskKind, bytes: u64, gib: u32) -> Result<Image, DiskError> {
        match kind {
            DiskKind::Qcow2 => qcow2(bytes).ok_or(DiskError::TooLarge { gib }),
            _ => Ok(Image {
                pieces: Vec::new(),
                length: bytes,
            }),
        }
    }

    /// The bytes written (for the free-space check): one cluster at least,
    /// so a full file system refuses even a sparse image that would fail at
    /// the guest's first write.
    fn written(&self) -> u64 {
        let data: u64 = self.pieces.iter().map(|(_, b)| b.len() as u64).sum();
        data.max(CLUSTER)
    }

    /// Writes the image as `name` in `dir`: under a temporary name, synced,
    /// then linked in place without replacing anything. `Ok(false)` when
    /// another process made `name` meanwhile (ours is removed).
    fn write(
        &self,
        dir: &OwnedFd,
        name: &str,
        path: &str,
        owner: Option<(u32, u32)>,
    ) -> Result<bool, DiskError> {
        let fail = |source: std::io::Error| DiskError::Make {
            path: path.into(),
            source,
        };
        let vfs = nix::sys::statvfs::fstatvfs(dir.as_fd()).map_err(|e| fail(e.into()))?;
        let free = vfs.blocks_available().saturating_mul(vfs.fragment_size());
        if free < self.written() {
            return Err(DiskError::NoSpace {
                path: path.into(),
                free,
                need: self.written(),
            });
        }
        let (tmp, file) = temp_file(dir, name).map_err(fail)?;
        let result = (|| -> std::io::Result<bool> {
            for (at, bytes) in &self.pieces {
                file.write_all_at(bytes, *at)?;
            }
            file.set_len(self.length)?;
            if let Some((uid, gid)) = owner {
                nix::unistd::fchown(
                    file.as_raw_fd(),
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )?;
            }
            nix::sys::stat::fchmod(file.as_raw_fd(), Mode::from_bits_truncate(0o600))?;
            file.sync_all()?;
            let placed = link_no_replace(dir, &tmp, name)?;
            if placed {
                nix::unistd::fsync(dir.as_raw_fd())?;
            }
            Ok(placed)
        })();
        // The temporary name goes, whatever happened; where the image was
        // placed by rename it is gone already.
        let _ = nix::unistd::unlinkat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        result.map_err(fail)
    }
}

/// A new file in `dir` under a name no one else uses, mode 0600.
fn temp_file(dir: &OwnedFd, name: &str) -> std::io::Result<(String, File)> {
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for n in 0..100u32 {
        // Hidden, and ignored by libvirt's dir pools refreshing the folder.
        let tmp = format!(".{name}.kvmroll-{}-{nanos:x}-{n}", std::process::id());
        match nix::fcntl::openat(
            Some(dir.as_raw_fd()),
            tmp.as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        ) {
            // SAFETY: openat just returned this descriptor; nothing else owns it.
            Ok(fd) => return Ok((tmp, unsafe { File::from_raw_fd(fd) })),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}

/// Gives `tmp` the name `name` unless `name` exists; false when it does.
fn link_no_replace(dir: &OwnedFd, tmp: &str, name: &str) -> std::io::Result<bool> {
    let fd = Some(dir.as_raw_fd());
    match nix::fcntl::renameat2(fd, tmp, fd, name, nix::fcntl::RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST) => Ok(false),
        // A file system without RENAME_NOREPLACE (NFS): link never replaces.
        Err(Errno::EINVAL | Errno::ENOSYS) => {
            match nix::unistd::linkat(fd, tmp, fd, name, AtFlags::empty()) {
                Ok(()) => Ok(true),
                Err(Errno::EEXIST) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// An empty qcow2 v3 image of `size` bytes (rounded up to 512): cluster 0 the
/// header, 1 the refcount table, 2 its one refcount block, then the L1
/// table, all zero (no L2 table yet: every guest cluster unallocated).
/// `None` beyond QEMU's L1 limit.
fn qcow2(size: u64) -> Option<Image> {
    let size = size.checked_add(511)? / 512 * 512;
    // One L2 table (a cluster of 8-byte entries) maps this many bytes.
    let per_l2 = CLUSTER * (CLUSTER / 8);
    let l1_entries = size.div_ceil(per_l2);
    let l1_bytes = l1_entries * 8;
    if l1_bytes > MAX_L1_BYTES {
        return None;
    }
    let l1_clusters = l1_bytes.div_ceil(CLUSTER).max(1);
    let clusters = 3 + l1_clusters;
    let mut header = Vec::with_capacity(104);
    header.extend_from_slice(b"QFI\xfb");
    header.extend_from_slice(&3u32.to_be_bytes()); // version
    header.extend_from_slice(&0u64.to_be_bytes()); // backing_file_offset
    header.extend_from_slice(&0u32.to_be_bytes()); // backing_file_size
    header.extend_from_slice(&CLUSTER_BITS.to_be_bytes());
    header.extend_from_slice(&size.to_be_bytes());
    header.extend_from_slice(&0u32.to_be_bytes()); // crypt_method
    header.extend_from_slice(&u32::try_from(l1_entries).ok()?.to_be_bytes());
    header.extend_from_slice(&(3 * CLUSTER).to_be_bytes()); // l1_table_offset
    header.extend_from_slice(&CLUSTER.to_be_bytes()); // refcount_table_offset
    header.extend_from_slice(&1u32.to_be_bytes()); // refcount_table_clusters
    header.extend_from_slice(&0u32.to_be_bytes()); // nb_snapshots
    header.extend_from_slice(&0u64.to_be_bytes()); // snapshots_offset
    header.extend_from_slice(&0u64.to_be_bytes()); // incompatible_features
    header.extend_from_slice(&0u64.to_be_bytes()); // compatible_features
    header.extend_from_slice(&0u64.to_be_bytes()); // autoclear_features
    header.extend_from_slice(&4u32.to_be_bytes()); // refcount_order: 16-bit counts
    header.extend_from_slice(&104u32.to_be_bytes()); // header_length
    debug_assert_eq!(header.len(), 104);
    // The header extensions that follow are none: the zeros after the
    // header end them. The refcount table points at its block in cluster 2;
    // the block counts one reference for each metadata cluster (a block of
    // 16-bit counts covers 32768 clusters, far more than there are).
    let table = (2 * CLUSTER).to_be_bytes().to_vec();
    let block: Vec<u8> = (0..clusters).flat_map(|_| 1u16.to_be_bytes()).collect();
    Some(Image {
        pieces: vec![(0, header), (CLUSTER, table), (2 * CLUSTER, block)],
        length: clusters * CLUSTER,
    })
}

/// Grows an existing image to `bytes` when it is smaller; never shrinks.
fn grow_image(
    dir: &OwnedFd,
    name: &str,
    path: &str,
    kind: DiskKind,
    bytes: u64,
    place: &Place<'_>,
) -> Result<Done, DiskError> {
    let fail = |source: std::io::Error| DiskError::Grow {
        path: path.into(),
        source,
    };
    let fd = nix::fcntl::openat(
        Some(dir.as_raw_fd()),
        name,
        OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    // SAFETY: openat just returned this descriptor; nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    if kind != DiskKind::Qcow2 {
        let from = file.metadata().map_err(fail)?.len();
        if from >= bytes {
            return Ok(Done::Present);
        }
        file.set_len(bytes).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        return Ok(Done::Grown { from, to: bytes });
    }
    let mut header = [0u8; 32];
    file.read_exact_at(&mut header, 0).map_err(fail)?;
    if &header[..4] != b"QFI\xfb" {
        return Err(DiskError::GrowQcow2 {
            path: path.into(),
            bytes,
            why: "it is not a qcow2 image".into(),
        });
    }
    let from = u64::from_be_bytes(header[24..32].try_into().expect("eight bytes"));
    if from >= bytes {
        return Ok(Done::Present);
    }
    drop(file);
    let args = [
        "resize".to_string(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        path.to_string(),
        bytes.to_string(),
    ];
    let timeout = place.deadline.saturating_duration_since(Instant::now());
    let spec = RunSpec {
        path: place.qemu_img,
        args: &args,
        env: &[],
        stdin: b"",
        timeout: timeout.max(Duration::from_millis(1)),
    };
    let why = match plugins::run(&spec) {
        Ok(r) if r.success() => return Ok(Done::Grown { from, to: bytes }),
        Ok(r) if r.timed_out => "qemu-img ran past the stage's time limit".to_string(),
        Ok(r) => format!(
            "qemu-img failed: {}",
            crate::events::first_lines(&String::from_utf8_lossy(&r.stderr), 1, 300)
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "{} is not installed (package qemu-utils, or qemu-img)",
            place.qemu_img.display()
        ),
        Err(e) => format!("{} could not be started: {e}", place.qemu_img.display()),
    };
    Err(DiskError::GrowQcow2 {
        path: path.into(),
        bytes,
        why,
    })
}

/// What qemu.conf says about the owner of QEMU's disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConf {
    /// libvirt hands each disk to QEMU's user at start (default true).
    pub dynamic_ownership: bool,
    pub user: Option<String>,
    pub group: Option<String>,
}

impl QemuConf {
    /// Reads the settings kvmroll needs from qemu.conf's `key = value`
    /// lines (libvirt's configuration syntax: `#` comments, quoted strings,
    /// numbers).
    pub fn parse(text: &str) -> QemuConf {
        let mut conf = QemuConf {
            dynamic_ownership: true,
            user: None,
            group: None,
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim().trim_matches('"').to_string();
            match key.trim() {
                "dynamic_ownership" => conf.dynamic_ownership = value != "0",
                "user" => conf.user = Some(value),
                "group" => conf.group = Some(value),
                _ => {}
            }
        }
        conf
    }
}

/// The id of `name` in a passwd or group file (`+N` is the number N, as
/// qemu.conf allows), with the passwd entry's primary group.
fn lookup(text: &str, name: &str) -> Option<(u32, u32)> {
    if let Some(n) = name.strip_prefix('+') {
        let id = n.parse().ok()?;
        return Some((id, id));
    }
    text.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next()? == name).then_some(())?;
        let id = f.nth(1)?.parse().ok()?;
        let gid = f.next().and_then(|g| g.parse().ok()).unwrap_or(id);
        Some((id, gid))
    })
}

/// Who a new image belongs to: `None` for root (libvirt relabels it at each
/// start); qemu.conf's user and group where `dynamic_ownership = 0`. Names
/// are looked up in `sysroot`'s /etc/passwd and /etc/group, not through
/// NSS: the hook is a static binary.
pub fn image_owner(sysroot: &Path) -> Result<Option<(u32, u32)>, DiskError> {
    let conf_path = sysroot.join("etc/libvirt/qemu.conf");
    let read = |path: PathBuf| match std::fs::read_to_string(&path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(DiskError::ReadConf { path, source }),
    };
    let conf = QemuConf::parse(&read(conf_path.clone())?);
    if conf.dynamic_ownership {
        return Ok(None);
    }
    let Some(user) = &conf.user else {
        // libvirt's built-in user is a build choice kvmroll cannot know.
        log::warn!(
            "{} turns dynamic_ownership off and names no user: new disk images stay root's",
            conf_path.display()
        );
        return Ok(None);
    };
    let passwd = sysroot.join("etc/passwd");
    let (uid, primary) =
        lookup(&read(passwd.clone())?, user).ok_or_else(|| DiskError::UnknownOwner {
            conf: conf_path.clone(),
            what: "user",
            name: user.clone(),
            file: passwd,
        })?;
    let gid = match &conf.group {
        None => primary,
        Some(g) => {
            let group = sysroot.join("etc/group");
            lookup(&read(group.clone())?, g)
                .ok_or_else(|| DiskError::UnknownOwner {
                    conf: conf_path.clone(),
                    what: "group",
                    name: g.clone(),
                    file: group,
                })?
                .0
        }
    };
    Ok(Some((uid, gid)))
}

#[cfg(test)]
mod tests {
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
}
