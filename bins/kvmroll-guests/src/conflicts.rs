//! What would duel with kvmroll-guests over the same VMs at shutdown and boot:
//! an enabled libvirt-guests service, or libvirt's own `auto_shutdown_*`
//! settings in qemu.conf (libvirt 10.x's virtqemud). Either one saves or
//! shuts down every VM on its own, so kvmroll-guests refuses to run beside
//! them and says how to turn them off.

use std::path::Path;

/// The first conflict found, as a message that says how to fix it.
pub fn find(root: &Path) -> Option<String> {
    libvirt_guests_enabled(root).or_else(|| auto_shutdown(root))
}

fn libvirt_guests_enabled(root: &Path) -> Option<String> {
    // systemd: a symlink in some *.wants folder; sysvinit: an S link.
    let systemd = root.join("etc/systemd/system");
    if let Ok(dirs) = std::fs::read_dir(&systemd) {
        for d in dirs.filter_map(Result::ok) {
            let link = d.path().join("libvirt-guests.service");
            if d.file_name().to_string_lossy().ends_with(".wants")
                && link.symlink_metadata().is_ok()
            {
                return Some(format!(
                    "libvirt-guests is enabled ({}): it would save or shut down the same VMs; \
                     turn it off with `systemctl disable --now libvirt-guests`",
                    link.display()
                ));
            }
        }
    }
    for level in 2..=5 {
        let dir = root.join(format!("etc/rc{level}.d"));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.filter_map(Result::ok) {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('S') && name.ends_with("libvirt-guests") {
                    return Some(format!(
                        "libvirt-guests is enabled ({}): it would save or shut down the same VMs; \
                         turn it off with `update-rc.d libvirt-guests disable`",
                        e.path().display()
                    ));
                }
            }
        }
    }
    None
}

/// The `auto_shutdown_*` settings of qemu.conf that are on.
fn auto_shutdown(root: &Path) -> Option<String> {
    let path = root.join("etc/libvirt/qemu.conf");
    let text = std::fs::read_to_string(&path).ok()?;
    let on: Vec<String> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
        .filter(|(k, _)| k.starts_with("auto_shutdown_"))
        .filter(|(_, v)| !matches!(*v, "none" | "0" | "" | "false"))
        .map(|(k, v)| format!("{k} = {v}"))
        .collect();
    if on.is_empty() {
        return None;
    }
    Some(format!(
        "libvirt's own auto-shutdown is on in {} ({}): it would act on the same VMs; \
         set these to \"none\" (auto_shutdown_poweroff to 0) and restart libvirt",
        path.display(),
        on.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_each_conflict() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(find(r), None);
        std::fs::create_dir_all(r.join("etc/libvirt")).unwrap();
        std::fs::write(
            r.join("etc/libvirt/qemu.conf"),
            "user = \"root\"\n#auto_shutdown_try_save = \"all\"\nauto_shutdown_poweroff = 0\n",
        )
        .unwrap();
        assert_eq!(find(r), None);
        std::fs::write(
            r.join("etc/libvirt/qemu.conf"),
            "auto_shutdown_try_save = \"persistent\"\n",
        )
        .unwrap();
        assert!(find(r)
            .unwrap()
            .contains("auto_shutdown_try_save = persistent"));
        let wants = r.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).unwrap();
        std::os::unix::fs::symlink(
            "/lib/systemd/system/libvirt-guests.service",
            wants.join("libvirt-guests.service"),
        )
        .unwrap();
        assert!(find(r)
            .unwrap()
            .contains("systemctl disable --now libvirt-guests"));
    }
}
