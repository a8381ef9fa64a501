//! The unit's order against the VMs' storage: a drop-in
//! (`/etc/systemd/system/kvmroll-guests.service.d/50-vm-storage.conf`)
//! with `RequiresMountsFor=` the folders of every disk and cdrom of this
//! container's VMs, as the database holds them, so that systemd mounts them
//! before a restore and unmounts them only after the last save.
//!
//! `start` writes it (only when it changed) from the database it has read
//! anyway. systemd reads a drop-in at its next load (a daemon-reload, the
//! next boot): storage added during a boot orders the next boot's start and
//! shutdown. Block devices (`/dev/...`) need no mount and are left out.

use kvmroll_core::Cluster;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where the drop-in goes, under the system root.
pub fn drop_in_path(root: &Path) -> PathBuf {
    root.join("etc/systemd/system/kvmroll-guests.service.d/50-vm-storage.conf")
}

/// The folders of the disks and cdroms of the VMs placed on `host`.
pub fn storage_folders(cluster: &Cluster, host: &str) -> BTreeSet<String> {
    let paths = cluster.vms_on(host).flat_map(|vm| {
        vm.disks
            .iter()
            .map(|d| d.path.clone())
            .chain(vm.cdrom.clone())
            .collect::<Vec<_>>()
    });
    paths
        .map(PathBuf::from)
        .filter(|p| p.is_absolute() && !p.starts_with("/dev"))
        .filter_map(|p| p.parent().map(|d| d.to_string_lossy().into_owned()))
        .filter(|d| d != "/")
        .collect()
}

/// A path as a word of a unit file: `%` doubled (specifiers), quoted with
/// C escapes when it holds a space, a quote or a backslash.
fn unit_word(path: &str) -> String {
    let path = path.replace('%', "%%");
    if !path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        return path;
    }
    let mut q = String::from("\"");
    for c in path.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            c if c.is_whitespace() => q.push_str(&format!("\\x{:02x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// The drop-in's text for these folders.
pub fn drop_in(folders: &BTreeSet<String>) -> String {
    let mut text = String::from(
        "# Written by kvmroll-guests start from the kvmroll database: the folders of\n\
         # this container's VM disks and cdroms. Do not edit; it is rewritten.\n\
         [Unit]\n",
    );
    for f in folders {
        text.push_str(&format!("RequiresMountsFor={}\n", unit_word(f)));
    }
    text
}

/// Writes the drop-in when its text changed; says so in the log.
pub fn refresh(root: &Path, cluster: &Cluster, host: &str) {
    let path = drop_in_path(root);
    let text = drop_in(&storage_folders(cluster, host));
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return;
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| kvmroll_core::sys::write_atomic(&path, text.as_bytes(), 0o644));
    match written {
        Ok(()) => log::info!(
            "{}: the VMs' storage folders, for systemd's next load",
            path.display()
        ),
        Err(e) => log::warn!("cannot write {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_folder_is_one_requires_mounts_for_line() {
        let folders: BTreeSet<String> =
            ["/state/partition1/kvm/disks", "/isos", "/srv/my vms/100%"]
                .map(String::from)
                .into();
        assert_eq!(
            drop_in(&folders),
            "# Written by kvmroll-guests start from the kvmroll database: the folders of\n\
             # this container's VM disks and cdroms. Do not edit; it is rewritten.\n\
             [Unit]\n\
             RequiresMountsFor=/isos\n\
             RequiresMountsFor=/srv/my\\x20vms/100%%\n\
             RequiresMountsFor=/state/partition1/kvm/disks\n"
                .replace("/srv/my\\x20vms/100%%", "\"/srv/my\\x20vms/100%%\"")
        );
    }
}
