//! `kvmroll-hook install`: puts this binary where libvirtd looks for its qemu
//! hook, atomically (a temporary file, synced, renamed), and says whether
//! libvirtd must be restarted to see it: libvirtd looks for hook scripts only
//! when it starts or is sent SIGHUP.

use kvmroll_core::error_chain;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Options {
    dropin: bool,
    root: PathBuf,
    force: bool,
}

/// Why the hook was not installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--root {} must be an absolute path", .0.display())]
    RelativeRoot(PathBuf),
    #[error("cannot find this binary")]
    FindSelf(#[source] std::io::Error),
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} exists and is not kvmroll's hook; install with --dropin to run beside it, or --force to replace it", .0.display())]
    Foreign(PathBuf),
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn install(o: &Options) -> Result<String, InstallError> {
    let hooks = o.root.join("etc/libvirt/hooks");
    let dest = if o.dropin {
        hooks.join("qemu.d/kvmroll")
    } else {
        hooks.join("qemu")
    };
    let me = std::env::current_exe().map_err(InstallError::FindSelf)?;
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| InstallError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let bytes = read(&me)?;
    let existed = dest.exists();
    if existed && !o.force {
        let ours = read(&dest)?
            .windows(crate::MARKER.len())
            .any(|w| w == crate::MARKER.as_bytes());
        if !ours {
            return Err(InstallError::Foreign(dest));
        }
    }
    // `dest` is a file under `hooks`, so it has a folder.
    let dir = dest.parent().unwrap_or(&hooks);
    std::fs::create_dir_all(dir).map_err(|source| InstallError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    for d in [&hooks, &dir.to_path_buf()] {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
    }
    kvmroll_core::sys::write_atomic(&dest, &bytes, 0o755).map_err(|source| {
        InstallError::Write {
            path: dest.clone(),
            source,
        }
    })?;
    let note = if o.root != Path::new("/") {
        "packaged under the given root; libvirtd sees it when it next starts (or is sent SIGHUP)"
            .to_string()
    } else if existed {
        "it replaced the previous kvmroll hook, which libvirtd runs from the file each time: no restart needed".to_string()
    } else {
        "libvirtd looks for hooks only when it starts: restart it, or send it SIGHUP (kill -HUP $(cat /run/libvirtd.pid))".to_string()
    };
    Ok(format!("installed {}; {note}", dest.display()))
}

/// `kvmroll-hook install`: what was installed, and whether libvirtd must
/// be restarted to see it.
pub fn run(dropin: bool, root: &Path, force: bool) -> Result<String, InstallError> {
    if !root.is_absolute() {
        return Err(InstallError::RelativeRoot(root.to_path_buf()));
    }
    install(&Options {
        dropin,
        root: root.to_path_buf(),
        force,
    })
}

/// The installation, reported: its line on stdout, or its error's on stderr.
pub fn main(dropin: bool, root: &Path, force: bool) -> u8 {
    match run(dropin, root, force) {
        Ok(msg) => {
            // Done whether or not anyone reads the line (a closed pipe).
            let _ = writeln!(kvmroll_cli::output::stdout(), "{msg}");
            0
        }
        Err(e) => {
            eprintln!("kvmroll-hook: install: {}", error_chain(&e));
            1
        }
    }
}
