//! Walks down real paths one component at a time with `openat`
//! (`O_NOFOLLOW`), checking each open folder with `fstat`, so what is
//! checked is what was opened. A link is read with `readlinkat` from a
//! folder that was checked already and its target resolved the same way.

use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

/// How many symbolic links one resolution may follow: Linux's own bound
/// (MAXSYMLINKS), so a loop ends as it would for the kernel.
const MAX_LINKS: u32 = 40;

/// Why a file or folder is unsafe for root to run from, if it is. A sticky
/// folder that others may write is let through here; the walk decides
/// whether that is enough.
pub(crate) fn unsafe_because(
    st: &FileStat,
    path: &Path,
    owner: u32,
    sticky_ok: bool,
) -> Option<String> {
    if st.st_uid != owner {
        return Some(format!(
            "{} is owned by uid {}, not {owner}",
            path.display(),
            st.st_uid
        ));
    }
    let mode = st.st_mode & 0o7777;
    if mode & 0o022 != 0 && !(sticky_ok && mode & 0o1000 != 0) {
        return Some(format!(
            "{} is writable by group or others (mode {mode:o})",
            path.display()
        ));
    }
    None
}

/// A folder reached on the real path, held open.
#[derive(Debug)]
pub(crate) struct Folder {
    pub(crate) fd: OwnedFd,
    /// Its real path, for messages.
    pub(crate) path: PathBuf,
    /// Others may write it (it is sticky and root's, or it is refused).
    pub(crate) open: bool,
}

/// Where a resolution stopped short.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Nothing there (or not a folder where one is needed): nothing to run.
    Absent,
    /// Something there that cannot be resolved safely; the reason.
    Broken(String),
}

/// A file reached by a walk, open.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) fd: OwnedFd,
    pub(crate) st: FileStat,
    pub(crate) path: PathBuf,
}

/// A walk down real paths: the open folders from `/` to where it stands (so
/// `..` returns to a folder already checked, never asks the file system),
/// the first reason it is unsafe, and the links it has followed.
#[derive(Debug, Clone)]
pub(crate) struct Walk {
    stack: Vec<Rc<Folder>>,
    pub(crate) fault: Option<String>,
    links: u32,
    pub(crate) owner: u32,
}

/// Takes ownership of a descriptor nix returned.
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful open and is owned by
    // nothing else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
/// A plugin is opened without following a link, without blocking on a FIFO
/// and without becoming anyone's terminal; the flags stay on this descriptor,
/// the executed program opens its own.
const FILE_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

impl Walk {
    /// A walk standing at `/`.
    pub(crate) fn at_root(owner: u32) -> Result<Walk, Stop> {
        let fd = nix::fcntl::open("/", DIR_FLAGS, Mode::empty())
            .map_err(|e| Stop::Broken(format!("cannot open /: {e}")))?;
        let mut walk = Walk {
            stack: Vec::new(),
            fault: None,
            links: 0,
            owner,
        };
        walk.enter(owned(fd), PathBuf::from("/"))?;
        Ok(walk)
    }

    /// The folder the walk stands in.
    pub(crate) fn here(&self) -> Rc<Folder> {
        // The stack always holds `/` at least.
        Rc::clone(&self.stack[self.stack.len() - 1])
    }

    /// Checks an open folder and stands in it.
    fn enter(&mut self, fd: OwnedFd, path: PathBuf) -> Result<(), Stop> {
        let st = fstat(fd.as_raw_fd())
            .map_err(|e| Stop::Broken(format!("cannot inspect {}: {e}", path.display())))?;
        if let Some(why) = unsafe_because(&st, &path, self.owner, true) {
            self.fault.get_or_insert(why);
        }
        self.stack.push(Rc::new(Folder {
            fd,
            path,
            open: st.st_mode & 0o022 != 0,
        }));
        Ok(())
    }

    /// Follows `path` from where the walk stands (from `/` when absolute),
    /// one component at a time. Folders on the way are entered and checked;
    /// the last component is entered too, or, with `file`, opened as a file
    /// and returned.
    pub(crate) fn follow(&mut self, path: &Path, file: bool) -> Result<Option<Opened>, Stop> {
        let mut todo: VecDeque<OsString> = VecDeque::new();
        self.queue(path, &mut todo);
        while let Some(name) = todo.pop_front() {
            if name == ".." {
                if self.stack.len() > 1 {
                    self.stack.pop();
                }
                continue;
            }
            let last = todo.is_empty();
            let dir = self.here();
            let shown = dir.path.join(&name);
            let flags = if last && file { FILE_FLAGS } else { DIR_FLAGS };
            match openat(
                Some(dir.fd.as_raw_fd()),
                name.as_os_str(),
                flags,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let fd = owned(fd);
                    if last && file {
                        let st = fstat(fd.as_raw_fd()).map_err(|e| {
                            Stop::Broken(format!("cannot inspect {}: {e}", shown.display()))
                        })?;
                        return Ok(Some(Opened {
                            fd,
                            st,
                            path: shown,
                        }));
                    }
                    self.enter(fd, shown)?;
                }
                // O_NOFOLLOW met a link (ELOOP), or O_DIRECTORY a
                // non-folder (ENOTDIR): a link is read and followed.
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let rest = self.link(&dir, &name, &shown)?;
                    todo = rest.into_iter().chain(todo).collect();
                }
                Err(Errno::ENOENT) => return Err(Stop::Absent),
                Err(e) => {
                    return Err(Stop::Broken(format!(
                        "cannot open {}: {e}",
                        shown.display()
                    )))
                }
            }
        }
        // The path ended on a folder (`.`, `..`, a link to a folder).
        if file {
            Err(Stop::Absent)
        } else {
            Ok(None)
        }
    }

    /// Reads the link `name` of `dir` and returns the components of its
    /// target, to be resolved before what was left of the path.
    fn link(
        &mut self,
        dir: &Folder,
        name: &OsString,
        shown: &Path,
    ) -> Result<VecDeque<OsString>, Stop> {
        let target = match readlinkat(Some(dir.fd.as_raw_fd()), name.as_os_str()) {
            Ok(t) => t,
            // Not a link: a file where a folder was needed.
            Err(Errno::EINVAL) => return Err(Stop::Absent),
            Err(e) => {
                return Err(Stop::Broken(format!(
                    "cannot read the link {}: {e}",
                    shown.display()
                )))
            }
        };
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(Stop::Broken(format!(
                "{}: more than {MAX_LINKS} symbolic links on the way",
                shown.display()
            )));
        }
        if target.is_empty() {
            return Err(Stop::Absent);
        }
        // In a folder others may write (sticky), only a link of root's own
        // cannot be replaced.
        if dir.open {
            self.check_entry(dir, name, shown);
        }
        let mut rest = VecDeque::new();
        self.queue(Path::new(&target), &mut rest);
        Ok(rest)
    }

    /// The components of `path` to resolve; an absolute path starts again
    /// from `/`.
    fn queue(&mut self, path: &Path, todo: &mut VecDeque<OsString>) {
        for c in path.components() {
            match c {
                Component::RootDir => self.stack.truncate(1),
                Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => todo.push_back("..".into()),
                Component::Normal(n) => todo.push_back(n.to_os_string()),
            }
        }
    }

    /// Records a fault when an entry of a folder others may write is not
    /// root's (the sticky bit protects only root's own entries).
    fn check_entry(&mut self, dir: &Folder, name: &OsString, shown: &Path) {
        let lst = fstatat(
            Some(dir.fd.as_raw_fd()),
            name.as_os_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        match lst {
            Ok(st) if st.st_uid == self.owner => {}
            Ok(st) => {
                self.fault.get_or_insert(format!(
                    "{} is owned by uid {}, not {}, in {}, which others may write",
                    shown.display(),
                    st.st_uid,
                    self.owner,
                    dir.path.display()
                ));
            }
            Err(e) => {
                self.fault
                    .get_or_insert(format!("cannot inspect {}: {e}", shown.display()));
            }
        }
    }
}
