//! Writing a new image whole (qcow2 by hand, raw sparse) under a
//! temporary name and giving it its name without replacing anything, and
//! growing an existing one.

use super::*;

/// qcow2's cluster: 64 KiB, QEMU's default.
const CLUSTER_BITS: u32 = 16;
pub(super) const CLUSTER: u64 = 1 << CLUSTER_BITS;

/// QEMU opens no L1 table larger than 32 MiB (qcow2.txt, "size").
const MAX_L1_BYTES: u64 = 32 << 20;

/// An image's bytes: what to write where, and the file's length (the rest
/// reads as zeros, and takes no room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Image {
    pieces: Vec<(u64, Vec<u8>)>,
    length: u64,
}

impl Image {
    pub(super) fn new(kind: DiskKind, bytes: u64, gib: u32) -> Result<Image, DiskError> {
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
    pub(super) fn written(&self) -> u64 {
        let data: u64 = self.pieces.iter().map(|(_, b)| b.len() as u64).sum();
        data.max(CLUSTER)
    }

    /// Writes the image as `name` in `dir`: under a temporary name, synced,
    /// then linked in place without replacing anything. `Ok(false)` when
    /// another process made `name` meanwhile (ours is removed).
    pub(super) fn write(
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
pub(super) fn qcow2(size: u64) -> Option<Image> {
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
pub(super) fn grow_image(
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
