//! Who a new image belongs to: qemu.conf's `dynamic_ownership`, `user`
//! and `group`, looked up in the system root's passwd and group files.

use super::*;

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
