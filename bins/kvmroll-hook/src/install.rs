//! `kvmroll-hook install`: puts this binary where libvirtd looks for its qemu
//! hook, atomically (a temporary file, synced, renamed), and says whether
//! libvirtd must be restarted to see it: libvirtd looks for hook scripts only
//! when it starts or is sent SIGHUP.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

struct Options {
    dropin: bool,
    root: PathBuf,
    force: bool,
}

fn install(o: &Options) -> Result<String, String> {
    let hooks = o.root.join("etc/libvirt/hooks");
    let dest = if o.dropin {
        hooks.join("qemu.d/kvmroll")
    } else {
        hooks.join("qemu")
    };
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let bytes = std::fs::read(&me).map_err(|e| format!("cannot read {}: {e}", me.display()))?;
    let existed = dest.exists();
    if existed && !o.force {
        let old =
            std::fs::read(&dest).map_err(|e| format!("cannot read {}: {e}", dest.display()))?;
        let ours = old
            .windows(crate::MARKER.len())
            .any(|w| w == crate::MARKER.as_bytes());
        if !ours {
            return Err(format!(
                "{} exists and is not kvmroll's hook; install with --dropin to run beside it, or --force to replace it",
                dest.display()
            ));
        }
    }
    let dir = dest.parent().ok_or("no hooks folder")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for d in [&hooks, &dir.to_path_buf()] {
        let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
    }
    kvmroll_core::sys::write_atomic(&dest, &bytes, 0o755)
        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
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

pub fn main(dropin: bool, root: &Path, force: bool) -> u8 {
    if !root.is_absolute() {
        eprintln!(
            "kvmroll-hook: install: --root {} must be an absolute path",
            root.display()
        );
        return 1;
    }
    let o = Options {
        dropin,
        root: root.to_path_buf(),
        force,
    };
    match install(&o) {
        Ok(msg) => {
            println!("{msg}");
            0
        }
        Err(e) => {
            eprintln!("kvmroll-hook: install: {e}");
            1
        }
    }
}
