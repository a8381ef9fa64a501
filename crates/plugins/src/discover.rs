//! Finds the plugins of a stage: `ROOT/plugins/STAGE.d/*` then
//! `ROOT/vms/VM/STAGE.d/*`, each opened and checked on the way (`walk`).
//!
//! Plugins run in byte order of their names, global ones first, as
//! `run-parts` orders them; names that are hidden or look like
//! package-manager or editor leftovers are skipped, as `run-parts` skips them.

use crate::walk::{unsafe_because, Folder, Stop, Walk};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

#[cfg(test)]
mod tests;

/// A plugin that passed its checks, held open: what runs is this file.
#[derive(Debug)]
pub struct Plugin {
    /// Where it was found (in its stage folder, before any link).
    pub(crate) path: PathBuf,
    /// The file itself, opened read-only and checked through this descriptor.
    pub(crate) file: OwnedFd,
}

impl Plugin {
    /// Where the plugin was found (its name in its stage folder).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// What was found in a stage folder.
#[derive(Debug)]
pub enum Found {
    /// A plugin to run.
    Run(Plugin),
    /// Not run, for a reason that must be reported (unsafe ownership or
    /// mode on its way, a name that is not a name).
    Refused { path: PathBuf, why: String },
}

/// The VM whose own plugins are looked for, as its caller judged its name
/// (kvmroll's naming rules live with the model): the name, or why it is
/// not a valid one.
pub type VmName<'a> = Result<&'a str, String>;

/// Names `run-parts` would not run either.
fn skipped_name(name: &str) -> bool {
    name.starts_with('.')
        || name.ends_with('~')
        || [
            ".dpkg-",
            ".rpmsave",
            ".rpmnew",
            ".rpmorig",
            ".swp",
            ".disabled",
            ".bak",
        ]
        .iter()
        .any(|s| name.contains(s))
}

/// Whatever its caller checked, a VM name made into a path must be one
/// folder name: with `/`, or as `.` or `..`, it would reach folders outside
/// ROOT.
fn one_folder(vm: &str) -> VmName<'_> {
    if vm.is_empty() || vm == "." || vm == ".." || vm.contains(['/', '\0']) {
        return Err(format!(
            "invalid VM name {vm:?}: it is not the name of one folder"
        ));
    }
    Ok(vm)
}

/// The stage folder `rel` below the walk's place, checked and entered; its
/// listing decides what runs. `None` when there is none.
fn stage_folder(base: &Walk, rel: &Path, shown: &Path) -> Result<Option<Walk>, Found> {
    let refused = |why| Found::Refused {
        path: shown.to_path_buf(),
        why,
    };
    let mut walk = base.clone();
    match walk.follow(rel, false) {
        Ok(_) => {}
        Err(Stop::Absent) => return Ok(None),
        Err(Stop::Broken(why)) => return Err(refused(why)),
    }
    let dir = walk.here();
    // Its listing decides what runs: no sticky exception here.
    if dir.open {
        walk.fault.get_or_insert(format!(
            "{} is writable by group or others",
            dir.path.display()
        ));
    }
    match walk.fault.take() {
        // A whole folder is refused when anyone else could add to it, or
        // swap it, even if it holds nothing to run yet.
        Some(why) => Err(refused(why)),
        None => Ok(Some(walk)),
    }
}

/// The names in a checked folder that may be plugins, in byte order.
fn listing(dir: &Folder) -> Result<Vec<OsString>, String> {
    use nix::dir::Type;
    let mut listing = nix::dir::Dir::openat(
        Some(dir.fd.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("cannot list {}: {e}", dir.path.display()))?;
    let mut names: Vec<OsString> = listing
        .iter()
        .filter_map(Result::ok)
        // What cannot be a plugin is not even opened.
        .filter(|e| matches!(e.file_type(), None | Some(Type::File) | Some(Type::Symlink)))
        .map(|e| std::ffi::OsStr::from_bytes(e.file_name().to_bytes()).to_os_string())
        .filter(|n| !skipped_name(&n.to_string_lossy()))
        .collect();
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// One entry of a checked stage folder, opened and checked on its real
/// path; `None` when there is nothing to run there.
fn entry(walk: &Walk, name: &OsString, path: PathBuf) -> Option<Found> {
    let mut entry = walk.clone();
    let opened = match entry.follow(Path::new(name), true) {
        Ok(Some(o)) => o,
        Ok(None) | Err(Stop::Absent) => {
            log::debug!("{}: nothing to run there, skipped", path.display());
            return None;
        }
        Err(Stop::Broken(why)) => return Some(Found::Refused { path, why }),
    };
    let st = &opened.st;
    if st.st_mode & nix::libc::S_IFMT != nix::libc::S_IFREG || st.st_mode & 0o111 == 0 {
        log::debug!("{}: not an executable file, skipped", path.display());
        return None;
    }
    let fault = entry
        .fault
        .take()
        .or_else(|| unsafe_because(st, &opened.path, walk.owner, false));
    Some(match fault {
        Some(why) => Found::Refused { path, why },
        None => Found::Run(Plugin {
            path,
            file: opened.fd,
        }),
    })
}

/// The plugins of one stage folder, `rel` below the walk's place, in byte
/// order of their names. `shown` is the folder's path for messages.
fn scan(base: &Walk, rel: &Path, shown: &Path, out: &mut Vec<Found>) {
    let walk = match stage_folder(base, rel, shown) {
        Ok(Some(walk)) => walk,
        Ok(None) => return,
        Err(refused) => return out.push(refused),
    };
    let names = match listing(&walk.here()) {
        Ok(names) => names,
        Err(why) => {
            return out.push(Found::Refused {
                path: shown.to_path_buf(),
                why,
            })
        }
    };
    for name in names {
        out.extend(entry(&walk, &name, shown.join(&name)));
    }
}

/// The plugins of a stage: `ROOT/plugins/STAGE.d/*` then
/// `ROOT/vms/VM/STAGE.d/*`, each opened and checked. `owner` is the uid
/// that must own them and every folder on their way (root).
///
/// The VM's own folder is not looked at when its name was refused (`vm`
/// is an error) or is not one folder name (with `/` or `..` it would reach
/// folders outside ROOT): a refusal then comes first in the list, before
/// any global plugin, so that a stage that aborts on a refusal runs nothing.
pub fn discover(root: &Path, stage: &str, vm: VmName<'_>, owner: u32) -> Vec<Found> {
    let mut out = Vec::new();
    let folder = format!("{stage}.d");
    let vm = match vm.and_then(one_folder) {
        Ok(vm) => Some(vm),
        Err(why) => {
            out.push(Found::Refused {
                path: root.join("vms"),
                why: format!("{why}: the VM's own plugins are not looked for"),
            });
            None
        }
    };
    if stage.contains('/') {
        out.push(Found::Refused {
            path: root.to_path_buf(),
            why: format!("{stage:?} is not a stage name"),
        });
        return out;
    }
    // Folders above a relative root count too.
    let root = match root.is_relative().then(std::env::current_dir) {
        Some(Ok(cwd)) => cwd.join(root),
        _ => root.to_path_buf(),
    };
    let mut base = match Walk::at_root(owner) {
        Ok(w) => w,
        Err(Stop::Absent) => return out,
        Err(Stop::Broken(why)) => {
            out.push(Found::Refused { path: root, why });
            return out;
        }
    };
    // The root is resolved once, from `/`; both stage folders, and every
    // plugin in them, go on from there.
    match base.follow(&root, false) {
        Ok(_) => {}
        Err(Stop::Absent) => return out,
        Err(Stop::Broken(why)) => {
            out.push(Found::Refused { path: root, why });
            return out;
        }
    }
    let global = Path::new("plugins").join(&folder);
    scan(&base, &global, &root.join(&global), &mut out);
    if let Some(vm) = vm {
        let own = Path::new("vms").join(vm).join(&folder);
        scan(&base, &own, &root.join(&own), &mut out);
    }
    out
}
