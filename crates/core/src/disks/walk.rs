//! The walk from a root down to an image's folder, one folder at a time
//! with `O_NOFOLLOW`, making missing folders and undoing them on failure.

use super::*;

/// A walk down from a root, one folder at a time, never following a link.
pub(super) struct Walk {
    /// The folders opened so far, the root first.
    dirs: Vec<OwnedFd>,
    /// Where the walk stands, as a path for messages.
    pub(super) here: PathBuf,
    /// Folders this walk made: (index of the parent in `dirs`, name).
    pub(super) made: Vec<(usize, String)>,
}

pub(super) enum Reached {
    Folder,
    /// A folder on the way does not exist (the walk stands above it).
    Missing,
    /// A folder on the way is a symlink.
    Link(PathBuf),
}

/// Opens a folder below `dir` (or `path` itself without `dir`); below a
/// root, a symlink is refused (`ELOOP`).
pub(super) fn open_dir(dir: Option<&OwnedFd>, path: &str, follow: bool) -> nix::Result<OwnedFd> {
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
    pub(super) fn start(root: &Path) -> Result<Walk, DiskError> {
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

    pub(super) fn dir(&self) -> &OwnedFd {
        self.dirs.last().expect("a walk holds its root")
    }

    /// Goes down through `folders`, making the missing ones when `make`.
    pub(super) fn down(
        &mut self,
        folders: &[String],
        make: bool,
        path: &str,
    ) -> Result<Reached, DiskError> {
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
    pub(super) fn undo(&mut self) {
        while let Some((parent, name)) = self.made.pop() {
            let _ = nix::unistd::unlinkat(
                Some(self.dirs[parent].as_raw_fd()),
                name.as_str(),
                nix::unistd::UnlinkatFlags::RemoveDir,
            );
        }
    }
}
